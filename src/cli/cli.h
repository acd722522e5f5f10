/*
 * cli.h - start-up steps shared by `keybrake` sub-commands: the data
 * directory, the server key and the first admin token.
 */
#ifndef KB_CLI_CLI_H
#define KB_CLI_CLI_H
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"
#include "store/store.h"

struct kb_config;
struct kb_store;

/*
 * Creates the data directory (mode 0700) if needed and fills `key` with the
 * server key: from server_key in the config (64 hex characters), else from
 * <data_dir>/server.key, created (mode 0600) with 32 CSPRNG bytes on first
 * start. A malformed key file is an error, never silently replaced: every
 * stored token hash depends on it.
 */
KB_MUSTCHECK enum kb_err cli_prepare_data_dir(const struct kb_config *cfg, uint8_t key[KB_HASH_LEN],
                                              char **errmsg);

/* This node's id on a shared store: [cluster] node_id, else the one kept
 * in <data_dir>/node-id, made at the first start from the host name and
 * 8 random hex digits. */
KB_MUSTCHECK enum kb_err cli_node_id(const struct kb_config *cfg, char out[KB_NODE_ID_MAX + 1],
                                     char **errmsg);

/*
 * Takes the data directory for this process alone: an exclusive flock on
 * <data_dir>/keybrake.pid, which then holds our pid. A second daemon on the
 * same data dir fails (KB_E_CONFIG) with a message naming the holder's pid:
 * it would settle the first one's in-flight reservations as orphans and
 * serve revoked keys from its own cache. *fd stays open (and the lock held)
 * until the process exits. An embedded store outside the data dir
 * ([store] url) is locked too (*store_fd, its file + ".lock"); *store_fd is
 * left alone otherwise. `keybrake serve` only; the read-only commands
 * (audit verify, export) do not take it.
 */
KB_MUSTCHECK enum kb_err cli_lock_data_dir(const struct kb_config *cfg, int *fd, int *store_fd,
                                           char **errmsg);

/*
 * Makes sure an admin token exists: the configured admin_token is added (by
 * HMAC) if set; otherwise, on an empty store, a new token is generated and
 * written once to <data_dir>/admin-token (mode 0600). Prints where it is.
 */
KB_MUSTCHECK enum kb_err cli_bootstrap_admin_token(const struct kb_config *cfg,
                                                   struct kb_store *store,
                                                   const uint8_t key[KB_HASH_LEN], char **errmsg);

#endif
