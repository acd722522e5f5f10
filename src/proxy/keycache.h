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
 * `s` (store_key_by_hash); KB_E_NOT_FOUND, KB_E_STORE. *out is the
 * caller's own copy (store_key_free). Its usage fields (spent, reserved,
 * requests, usage_day) and metadata are not filled: the proxy's reservation
 * reads the store's counters itself, inside the writer's transaction.
 */
KB_MUSTCHECK enum kb_err keycache_get(struct kb_keycache *c, struct kb_store *s,
                                      const uint8_t hash[KB_HASH_LEN], struct kb_key **out);

#endif
