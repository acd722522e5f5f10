/*
 * revlog.c - the revocation ring (see revlog.h).
 *
 * Publishers (the admin thread, and the cluster thread that relays other
 * nodes' revocations) take `pub`, so there is one at a time. The publisher
 * announces an entry's position in `claimed`, then a
 * release fence, then writes the entry, then moves `head`. A reader loads
 * `head` (acquire), reads entries, then an acquire fence and `claimed`: if
 * a read saw an entry's overwrite, the fences pair and `claimed` shows the
 * overwrite's position, so the reader knows the entry was lost (the
 * seqlock pattern).
 */
#include "store/revlog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

#define ALL_KEYS INT64_MIN

struct kb_revlog {
    pthread_mutex_t pub;      /* one publisher at a time; readers never take it */
    _Atomic uint64_t head;    /* entries published */
    _Atomic uint64_t claimed; /* entries being or been written */
    _Atomic int64_t seq[REVLOG_RING];
    _Atomic uint64_t hint[REVLOG_RING];
    _Atomic bool changed[REVLOG_RING]; /* a change (revlog_publish_change), not a revocation */
};

struct kb_revlog *revlog_new(void)
{
    struct kb_revlog *rl = kb_calloc(1, sizeof *rl);
    pthread_mutex_init(&rl->pub, NULL);
    return rl;
}

void revlog_free(struct kb_revlog *rl)
{
    if (rl)
        pthread_mutex_destroy(&rl->pub);
    free(rl);
}

uint64_t revlog_hint(const uint8_t hash[KB_HASH_LEN])
{
    uint64_t h;
    memcpy(&h, hash, sizeof h);
    return h;
}

static void publish(struct kb_revlog *rl, int64_t seq, uint64_t hint, bool changed)
{
    pthread_mutex_lock(&rl->pub);
    uint64_t n = atomic_load_explicit(&rl->head, memory_order_relaxed);
    atomic_store_explicit(&rl->claimed, n + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&rl->seq[n % REVLOG_RING], seq, memory_order_relaxed);
    atomic_store_explicit(&rl->hint[n % REVLOG_RING], hint, memory_order_relaxed);
    atomic_store_explicit(&rl->changed[n % REVLOG_RING], changed, memory_order_relaxed);
    atomic_store_explicit(&rl->head, n + 1, memory_order_release);
    pthread_mutex_unlock(&rl->pub);
}

void revlog_publish(struct kb_revlog *rl, int64_t seq, const uint8_t hash[KB_HASH_LEN])
{
    publish(rl, seq, revlog_hint(hash), false);
}

void revlog_publish_change(struct kb_revlog *rl, int64_t seq, const uint8_t hash[KB_HASH_LEN])
{
    publish(rl, seq, revlog_hint(hash), true);
}

void revlog_publish_all(struct kb_revlog *rl)
{
    publish(rl, ALL_KEYS, 0, false);
}

uint64_t revlog_head(const struct kb_revlog *rl)
{
    return atomic_load_explicit(&rl->head, memory_order_acquire);
}

static bool read_log(const struct kb_revlog *rl, uint64_t from, uint64_t to, bool revoked_only,
                     void (*fn)(void *arg, int64_t seq, uint64_t hint), void *arg)
{
    if (to - from > REVLOG_RING)
        return false;
    for (uint64_t i = from; i < to; i++) {
        int64_t seq = atomic_load_explicit(&rl->seq[i % REVLOG_RING], memory_order_relaxed);
        uint64_t hint = atomic_load_explicit(&rl->hint[i % REVLOG_RING], memory_order_relaxed);
        bool changed = atomic_load_explicit(&rl->changed[i % REVLOG_RING], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&rl->claimed, memory_order_relaxed) - i > REVLOG_RING)
            return false; /* overwritten while (or before) we read it */
        if (seq == ALL_KEYS)
            return false;
        if (!(revoked_only && changed))
            fn(arg, seq, hint);
    }
    return true;
}

bool revlog_read(const struct kb_revlog *rl, uint64_t from, uint64_t to,
                 void (*fn)(void *arg, int64_t seq, uint64_t hint), void *arg)
{
    return read_log(rl, from, to, false, fn, arg);
}

bool revlog_read_revoked(const struct kb_revlog *rl, uint64_t from, uint64_t to,
                         void (*fn)(void *arg, int64_t seq, uint64_t hint), void *arg)
{
    return read_log(rl, from, to, true, fn, arg);
}
