/*
 * keycache.c - direct-mapped key cache (see keycache.h).
 *
 * The token hash is an HMAC, so its first bytes pick a slot uniformly; a
 * slot holds one key and a newer key for the same slot replaces it. The
 * whole cache is a fixed array: its memory is bounded whatever the number
 * of live keys, and a lookup is one slot, one memcmp.
 */
#include "proxy/keycache.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "store/store.h"

struct slot {
    uint8_t hash[KB_HASH_LEN];
    struct kb_key *key; /* owned; NULL when empty */
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

static void drop_all(struct kb_keycache *c)
{
    for (size_t i = 0; i <= c->mask; i++) {
        store_key_free(c->slots[i].key);
        c->slots[i].key = NULL;
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

/* The fields the proxy reads; strings copied, usage and metadata left out. */
static struct kb_key *key_copy(const struct kb_key *k)
{
    struct kb_key *d = kb_malloc(sizeof *d);
    *d = *k;
    d->label = kb_strdup(k->label);
    d->vendor = kb_strdup(k->vendor);
    d->allowed_endpoints = kb_strdup(k->allowed_endpoints);
    d->metadata = NULL;
    d->usage_day = d->spent = d->reserved = d->requests = 0;
    return d;
}

enum kb_err keycache_get(struct kb_keycache *c, struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                         struct kb_key **out)
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
    if (sl->key && memcmp(sl->hash, hash, KB_HASH_LEN) == 0) {
        *out = key_copy(sl->key);
        return KB_OK;
    }
    struct kb_key *k = NULL;
    enum kb_err err = store_key_by_hash(s, hash, clock_day(clock_now()), &k);
    if (err != KB_OK)
        return err;
    store_key_free(sl->key);
    memcpy(sl->hash, hash, KB_HASH_LEN);
    sl->key = k;
    *out = key_copy(k);
    return KB_OK;
}
