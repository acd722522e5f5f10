/*
 * keycache.h - a proxy worker's cache of vault keys by token hash, so that
 * the request path does not read the store for a key it has seen.
 *
 * A key row changes in one way after issuance: it is revoked. The process
 * keeps one revocation counter (kb_runtime.key_epoch); the admin API bumps
 * it after a revocation committed and before it answers. A cache that sees
 * the counter move drops every entry before it answers anything, so a
 * request sent after DELETE returned reads the store and finds the key
 * revoked, exactly as without the cache. Unknown tokens are not cached: a
 * new key is found at once.
 *
 * Revocations made by another process writing the same store file (there
 * is none: the admin API is the only writer of keys while the daemon runs)
 * would not be seen; a store shared by several nodes needs its own signal.
 *
 * One cache per worker, used from that worker's thread only.
 */
#ifndef KB_PROXY_KEYCACHE_H
#define KB_PROXY_KEYCACHE_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"

struct kb_key;
struct kb_keycache;
struct kb_store;

/* A cache of `slots` keys (rounded up to a power of two) watching `epoch`
 * (borrowed; outlives the cache). */
struct kb_keycache *keycache_new(size_t slots, const _Atomic uint64_t *epoch);
void keycache_free(struct kb_keycache *c);

/*
 * The key whose token hashes to `hash`, from the cache or else from store
 * `s` (store_key_by_hash); KB_E_NOT_FOUND, KB_E_STORE. *out is shared with
 * the cache, read-only, until the caller hands it back with keycache_put;
 * it stays valid after its slot is reused or the cache is freed. Its usage
 * fields (spent, reserved, requests) are those read with it, not current:
 * the proxy's reservation reads the store's counters itself.
 */
KB_MUSTCHECK enum kb_err keycache_get(struct kb_keycache *c, struct kb_store *s,
                                      const uint8_t hash[KB_HASH_LEN], const struct kb_key **out);
/* Hands back a key from keycache_get (NULL: nothing). Same thread. */
void keycache_put(const struct kb_key *k);

#endif
