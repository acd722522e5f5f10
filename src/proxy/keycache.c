/*
 * keycache.c - direct-mapped key cache (see keycache.h).
 *
 * The token hash is an HMAC, so its first bytes pick a slot uniformly; a
 * slot holds one key and a newer key for the same slot replaces it. The
 * whole cache is a fixed array: its memory is bounded whatever the number
 * of live keys, and a lookup is one slot, one memcmp. A revocation names
 * its key's slot (the log's hint), so forgetting it is one slot too. A key
 * is shared, not copied: the slot and each request using it hold a
 * reference, so a request costs no allocation for its key.
 */
#include "proxy/keycache.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/revlog.h"
#include "store/store.h"

/* A key and its holders: the slot that caches it and the requests using it.
 * One worker thread only, so a plain count. */
struct entry {
    struct kb_key key; /* strings owned */
    int refs;
};

struct slot {
    uint8_t hash[KB_HASH_LEN];
    struct entry *e; /* one reference; NULL when empty */
};

struct kb_keycache {
    const struct kb_revlog *log; /* borrowed */
    uint64_t seen;               /* the log position the entries are valid for */
    size_t mask;
    struct slot *slots;
};

struct kb_keycache *keycache_new(size_t slots, const struct kb_revlog *log)
{
    size_t n = 1;
    while (n < slots)
        n <<= 1;
    struct kb_keycache *c = kb_calloc(1, sizeof *c);
    c->log = log;
    c->seen = revlog_head(log);
    c->mask = n - 1;
    c->slots = kb_calloc(n, sizeof *c->slots);
    return c;
}

void keycache_put(const struct kb_key *k)
{
    if (!k)
        return;
    struct entry *e = (struct entry *)((char *)k - offsetof(struct entry, key));
    if (--e->refs > 0)
        return;
    store_key_clear(&e->key);
    free(e);
}

static void drop_slot(struct slot *sl)
{
    if (sl->e)
        keycache_put(&sl->e->key);
    sl->e = NULL;
}

static void drop_all(struct kb_keycache *c)
{
    for (size_t i = 0; i <= c->mask; i++)
        drop_slot(&c->slots[i]);
}

void keycache_free(struct kb_keycache *c)
{
    if (!c)
        return;
    drop_all(c);
    free(c->slots);
    free(c);
}

static void forget(void *arg, int64_t seq, uint64_t hint)
{
    struct kb_keycache *c = arg;
    struct slot *sl = &c->slots[hint & c->mask];
    if (sl->e && sl->e->key.seq == seq)
        drop_slot(sl);
}

/* Drops what was revoked since the last call. */
static void follow(struct kb_keycache *c)
{
    uint64_t head = revlog_head(c->log);
    if (head == c->seen)
        return;
    if (!revlog_read(c->log, c->seen, head, forget, c))
        drop_all(c);
    c->seen = head;
}

enum kb_err keycache_find(struct kb_keycache *c, const uint8_t hash[KB_HASH_LEN],
                          const struct kb_key **out)
{
    follow(c);
    struct slot *sl = &c->slots[revlog_hint(hash) & c->mask];
    if (!sl->e || memcmp(sl->hash, hash, KB_HASH_LEN) != 0)
        return KB_E_NOT_FOUND;
    sl->e->refs++;
    *out = &sl->e->key;
    return KB_OK;
}

uint64_t keycache_mark(const struct kb_keycache *c)
{
    return revlog_head(c->log);
}

struct revoked_since {
    int64_t seq;
    bool hit;
};

static void match(void *arg, int64_t seq, uint64_t hint)
{
    (void)hint;
    struct revoked_since *r = arg;
    r->hit = r->hit || seq == r->seq;
}

const struct kb_key *keycache_add(struct kb_keycache *c, const uint8_t hash[KB_HASH_LEN],
                                  struct kb_key *k, uint64_t mark)
{
    follow(c);
    struct entry *e = kb_malloc(sizeof *e);
    e->key = *k; /* takes the strings */
    e->refs = 1; /* the caller's */
    free(k);
    struct revoked_since r = {e->key.seq, false};
    if (!revlog_read(c->log, mark, c->seen, match, &r) || r.hit)
        return &e->key; /* maybe revoked after it was read: used once, not kept */
    struct slot *sl = &c->slots[revlog_hint(hash) & c->mask];
    drop_slot(sl);
    memcpy(sl->hash, hash, KB_HASH_LEN);
    sl->e = e;
    e->refs++;
    return &e->key;
}
