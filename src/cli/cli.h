/*
 * cli.h - start-up steps shared by `keybrake` sub-commands: the data
 * directory, the server key and the first admin token.
 */
#ifndef KB_CLI_CLI_H
#define KB_CLI_CLI_H
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"

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

/*
 * Makes sure an admin token exists: the configured admin_token is added (by
 * HMAC) if set; otherwise, on an empty store, a new token is generated and
 * written once to <data_dir>/admin-token (mode 0600). Prints where it is.
 */
KB_MUSTCHECK enum kb_err cli_bootstrap_admin_token(const struct kb_config *cfg,
                                                   struct kb_store *store,
                                                   const uint8_t key[KB_HASH_LEN], char **errmsg);

#endif
