/*
 * keycache.c - direct-mapped key cache (see keycache.h).
 *
 * The token hash is an HMAC, so its first bytes pick a slot uniformly; a
 * slot holds one key and a newer key for the same slot replaces it. The
 * whole cache is a fixed array: its memory is bounded whatever the number
 * of live keys, and a lookup is one slot, one memcmp. A key is shared,
 * not copied: the slot and each request using it hold a reference, so a
 * request costs no allocation for its key.
 */
#include "proxy/keycache.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
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
    const _Atomic uint64_t *epoch; /* borrowed; bumped by every revocation */
    uint64_t seen;                 /* the epoch the entries are valid for */
    size_t mask;
    struct slot *slots;
};

struct kb_keycache *keycache_new(size_t slots, const _Atomic uint64_t *epoch)
{
    size_t n = 1;
    while (n < slots)
        n <<= 1;
    struct kb_keycache *c = kb_calloc(1, sizeof *c);
    c->epoch = epoch;
    c->seen = atomic_load(epoch);
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

static void drop_all(struct kb_keycache *c)
{
    for (size_t i = 0; i <= c->mask; i++) {
        if (c->slots[i].e)
            keycache_put(&c->slots[i].e->key);
        c->slots[i].e = NULL;
    }
}

void keycache_free(struct kb_keycache *c)
{
    if (!c)
        return;
    drop_all(c);
    free(c->slots);
    free(c);
}

enum kb_err keycache_get(struct kb_keycache *c, struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                         const struct kb_key **out)
{
    /* read before the store: a revocation that commits during the read
     * below moves the epoch past `now`, and the next call drops the entry */
    uint64_t now = atomic_load(c->epoch);
    if (now != c->seen) {
        drop_all(c);
        c->seen = now;
    }
    uint64_t h;
    memcpy(&h, hash, sizeof h);
    struct slot *sl = &c->slots[h & c->mask];
    if (!sl->e || memcmp(sl->hash, hash, KB_HASH_LEN) != 0) {
        struct kb_key *k = NULL;
        enum kb_err err = store_key_by_hash(s, hash, clock_day(clock_now()), &k);
        if (err != KB_OK)
            return err;
        struct entry *e = kb_malloc(sizeof *e);
        e->key = *k; /* takes the strings */
        e->refs = 1;
        free(k);
        if (sl->e)
            keycache_put(&sl->e->key);
        memcpy(sl->hash, hash, KB_HASH_LEN);
        sl->e = e;
    }
    sl->e->refs++;
    *out = &sl->e->key;
    return KB_OK;
}
