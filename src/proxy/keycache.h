/*
 * keycache.h - a proxy worker's cache of vault keys by token hash, so that
 * the request path reads no store for a key it has seen, and forgets a key
 * the moment it is revoked.
 *
 * A key row changes in one way after issuance: it is revoked. Whatever
 * commits a revocation publishes it in the revocation log (store/revlog.h)
 * before it is answered; every call here first reads the log's new entries
 * (one atomic load when there are none) and drops exactly the revoked keys
 * (everything, when the log says entries were lost). So a request sent
 * after DELETE returned does not find the key here: it is read again, off
 * the loop (store/reader.h), and found revoked, exactly as without the
 * cache. Unknown tokens are not cached: a new key is found at once.
 *
 * A miss is read by the caller, off the loop: keycache_mark() before the
 * read, keycache_add() with what it found. A revocation published after
 * the mark keeps that key out of the cache (the admission, which re-reads
 * revocation in its transaction, refuses the request anyway).
 *
 * One cache per worker, used from that worker's thread only.
 */
#ifndef KB_PROXY_KEYCACHE_H
#define KB_PROXY_KEYCACHE_H
#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"

struct kb_key;
struct kb_keycache;
struct kb_revlog;

/* A cache of `slots` keys (rounded up to a power of two) following `log`
 * (borrowed; outlives the cache). */
struct kb_keycache *keycache_new(size_t slots, const struct kb_revlog *log);
void keycache_free(struct kb_keycache *c);

/*
 * The cached key whose token hashes to `hash` (KB_OK), or KB_E_NOT_FOUND.
 * *out is shared with the cache, read-only, until the caller hands it back
 * with keycache_put; it stays valid after its slot is reused or the cache
 * is freed. Its usage fields are those read with it, not current: the
 * reservation reads the store's counters itself.
 */
KB_MUSTCHECK enum kb_err keycache_find(struct kb_keycache *c, const uint8_t hash[KB_HASH_LEN],
                                       const struct kb_key **out);

/* The log position to pass to keycache_add: take it before the read. */
uint64_t keycache_mark(const struct kb_keycache *c);

/* Caches k (taken; read from the store after `mark`) under `hash`, unless
 * it was revoked since; returns it shared, as keycache_find does. */
const struct kb_key *keycache_add(struct kb_keycache *c, const uint8_t hash[KB_HASH_LEN],
                                  struct kb_key *k, uint64_t mark);

/* Hands back a key from keycache_find or keycache_add (NULL: nothing). */
void keycache_put(const struct kb_key *k);

#endif
