/*
 * secrets.h - the master keys that seal tenants' vendor secrets at rest
 * (docs/tenants.md). AES-256-GCM: a sealed secret is a 12-byte random
 * nonce, the ciphertext and the 16-byte tag, with "<tenant>\n<vendor>" as
 * associated data (a sealed secret copied to another tenant's row does not
 * open). Each sealed secret is stored with the id of the key that sealed it:
 * the first 8 hex digits of SHA-256 of the key, so that the master key can
 * be rotated: the current key seals and opens, previous keys only open.
 *
 * Loaded once at start (secrets_load), before any thread uses them; read
 * only afterwards, from any thread.
 */
#ifndef KB_VENDOR_SECRETS_H
#define KB_VENDOR_SECRETS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct kb_config;

#define KB_KEY_ID_LEN 8 /* hex digits of a master key's id */

/*
 * Reads [secrets] from cfg: master_key (hex) or master_key_file, the
 * previous_master_key_files and tenant_fallback. KB_E_CONFIG with *errmsg
 * for an unreadable file, a key that is not 64 hex digits, both
 * master_key and master_key_file, or an unknown tenant_fallback. No
 * master key at all is not an error: tenants' secrets are then refused
 * (secrets_enabled is false).
 */
KB_MUSTCHECK enum kb_err secrets_load(const struct kb_config *cfg, char **errmsg);
/* Forgets (and wipes) the keys. */
void secrets_unload(void);

/* True when a current master key is configured. */
bool secrets_enabled(void);
/* The current key's id ("" when none); static storage. */
const char *secrets_key_id(void);
/* True when a key with this id is configured (current or previous). */
bool secrets_have_key(const char *key_id);
/* true: a tenant without its own secret uses the global one. */
bool secrets_fallback_global(void);

/*
 * Seals len bytes of plain for tenant's vendor under the current key:
 * *out (caller frees) holds *outlen bytes, key_id the current key's id.
 * KB_E_CONFIG when no master key is configured.
 */
KB_MUSTCHECK enum kb_err secrets_seal(const char *tenant, const char *vendor, const char *plain,
                                      size_t len, uint8_t **out, size_t *outlen,
                                      char key_id[KB_KEY_ID_LEN + 1]);
/*
 * Opens a sealed secret of tenant's vendor sealed under key key_id: *plain
 * (caller frees; crypto_wipe it first) is NUL-terminated.
 * KB_E_SECRET_UNAVAILABLE when no configured key has that id;
 * KB_E_INTERNAL when it does not open (altered, or moved to another row).
 */
KB_MUSTCHECK enum kb_err secrets_open(const char *tenant, const char *vendor, const char *key_id,
                                      const uint8_t *sealed, size_t len, char **plain);

/*
 * At start: KB_E_CONFIG with *errmsg naming the first tenant secret in the
 * store sealed under a key that is not configured (its key id), so that a
 * rotation that dropped a key still needed fails at start, not at a request.
 */
struct kb_store;
KB_MUSTCHECK enum kb_err secrets_check_store(struct kb_store *s, char **errmsg);

#endif
