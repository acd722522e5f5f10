/*
 * revlog.h - the revocation signal: which keys were revoked, in order,
 * for the caches and watches that must forget them. The store owns it:
 * whatever commits a revocation publishes it here before the revocation
 * is answered (in-process today; a store shared by several nodes feeds it
 * from the store's change notifications).
 *
 * A ring of the last REVLOG_RING revocations, each the key's seq and a
 * hint (the first 8 bytes of its token hash: the key cache's slot).
 * Publishers on any thread (serialised inside); readers on any thread,
 * lock-free: a reader remembers the position it has seen, and a reader
 * that fell more than the ring behind is told it lost entries (it then
 * forgets everything, as if every key had been revoked). A revocation of
 * many keys at once (by label prefix) may publish one "every key" entry,
 * which reads as lost too. A key changed live (PATCH /v1/keys/{id}) is
 * published as a change: caches forget it as if revoked (the next use
 * reads it again), the revocation watch ignores it.
 */
#ifndef KB_STORE_REVLOG_H
#define KB_STORE_REVLOG_H
#include <stdbool.h>
#include <stdint.h>

#include "core/crypto.h"

#define REVLOG_RING 4096

struct kb_revlog;

struct kb_revlog *revlog_new(void);
void revlog_free(struct kb_revlog *rl);

/* Key `seq`, whose token hashes to `hash`, was revoked (committed). */
void revlog_publish(struct kb_revlog *rl, int64_t seq, const uint8_t hash[KB_HASH_LEN]);

/* Key `seq` was changed (committed: a new cap or expiry): caches must
 * forget it and read it again, but it is not revoked (its streams go on). */
void revlog_publish_change(struct kb_revlog *rl, int64_t seq, const uint8_t hash[KB_HASH_LEN]);

/* Any key may have been revoked. */
void revlog_publish_all(struct kb_revlog *rl);

/* The position after the last entry published: compare with the one a
 * reader has seen (one atomic load). */
uint64_t revlog_head(const struct kb_revlog *rl);

/*
 * Calls fn(arg, seq, hint) for the entries in [from, to) (to from
 * revlog_head). False when some of them are lost (overwritten, or an
 * "every key" entry): the reader must then assume any key was revoked.
 */
bool revlog_read(const struct kb_revlog *rl, uint64_t from, uint64_t to,
                 void (*fn)(void *arg, int64_t seq, uint64_t hint), void *arg);

/* As revlog_read, but calls fn for revocations only (changes are
 * skipped): for the watch that cuts streams of revoked keys. */
bool revlog_read_revoked(const struct kb_revlog *rl, uint64_t from, uint64_t to,
                         void (*fn)(void *arg, int64_t seq, uint64_t hint), void *arg);

/* The hint of a token hash. */
uint64_t revlog_hint(const uint8_t hash[KB_HASH_LEN]);

#endif
