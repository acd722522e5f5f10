/*
 * cluster.h - a node's life on a store several nodes share (a backend
 * with KB_STORE_SHARED: PostgreSQL). docs/cluster.md.
 *
 * One thread with its own connection, which holds the node's lock for the
 * node's life. It joins at start (refusing a second live process with the
 * same node id, or another server key), then, every heartbeat: refreshes
 * the node's heartbeat, settles the open reservations of nodes found dead
 * (silent for dead_after and their session gone) at their worst case, and
 * relays the keys other nodes revoked or changed into the revocation log,
 * at once when the store notifies it, so that caches forget them and the
 * watch cuts their streams. Admission never depends on it: the writer
 * reads each key's state in the transaction that admits.
 */
#ifndef KB_STORE_CLUSTER_H
#define KB_STORE_CLUSTER_H
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"

struct kb_cluster;
struct kb_revlog;

/*
 * Opens the cluster connection to `url`, joins (store_node_join: settles
 * this node's earlier starts' reservations; *orphans counts them) and
 * starts the thread. Main thread, before the writer starts.
 */
KB_MUSTCHECK enum kb_err cluster_start(const char *url, const uint8_t key_check[KB_HASH_LEN],
                                       struct kb_revlog *rl, int64_t heartbeat_ms,
                                       int64_t dead_after_ms, int64_t *orphans,
                                       struct kb_cluster **out, char **errmsg);
/* Stops the thread (within about 100 ms) and closes its connection, which
 * frees the node's lock. NULL-safe. Main thread. */
void cluster_stop(struct kb_cluster *c);

/* HMAC-SHA256(server key, "keybrake cluster"): what every node of a
 * cluster must share. */
void cluster_key_check(const uint8_t server_key[KB_HASH_LEN], uint8_t out[KB_HASH_LEN]);

#endif
