/*
 * config.h - every setting of the daemon, from one table.
 *
 * Values come from the built-in defaults, then the INI file (--config),
 * then KEYBRAKE_* environment variables, each layer overriding the one
 * before. The same table validates values and prints `keybrake config`
 * (docs/configuration.md is generated from it).
 *
 * Vendors: the built-in profiles stripe, openai, anthropic and twilio, plus
 * generic ones declared as INI sections [vendor.NAME]. Secrets come from the
 * vendors' usual environment variables (STRIPE_SECRET_KEY, OPENAI_API_KEY,
 * ANTHROPIC_API_KEY, TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN) or the INI file;
 * KEYBRAKE_<VENDOR>_BASE_URL and KEYBRAKE_<VENDOR>_SECRET override both.
 */
#ifndef KB_CORE_CONFIG_H
#define KB_CORE_CONFIG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

enum kb_auth_style {
    KB_AUTH_BEARER = 0, /* Authorization: Bearer <secret> (Stripe, OpenAI) */
    KB_AUTH_HEADER = 1, /* <auth_header>: <secret> (Anthropic x-api-key) */
    KB_AUTH_BASIC = 2,  /* Authorization: Basic base64(account:secret) (Twilio) */
};

struct kb_vendor_profile;

struct kb_fixed_cost {
    char *pattern;  /* owned; endpoint pattern (policy/pattern.h) */
    int64_t micros; /* cost per matching request */
};

/* How a vendor reads a write's parameters. */
enum kb_body_style {
    KB_BODY_AS_IS = 0,          /* forwarded as sent (JSON APIs, generic vendors) */
    KB_BODY_FORM = 1,           /* a form, whose keys the vendor also reads from the query */
    KB_BODY_FORM_FROM_JSON = 2, /* the same, and JSON from agents is transcoded to a form */
};

struct kb_vendor {
    char *name;              /* owned; lower-case [a-z0-9_-], first path segment */
    char *base_url;          /* owned; no trailing slash */
    enum kb_auth_style auth; /* how the SDK sends, and we inject, the credential */
    char *auth_header;       /* owned; header name for KB_AUTH_HEADER */
    char *secret;            /* owned; the real vendor secret, NULL if unset */
    char *account;           /* owned; Basic username (Twilio account SID), may be NULL */
    const struct kb_vendor_profile *profile; /* the built-in profile (vendor/profile.h), or NULL */
    enum kb_body_style body;                 /* how its writes carry parameters */
    char **forward; /* owned, NULL-terminated or NULL; the operator's forward_headers */
    struct kb_fixed_cost *costs; /* owned; generic vendors' fixed costs */
    size_t ncosts;
};

struct kb_config {
    char *data_dir;     /* owned */
    char *proxy_listen; /* owned; "host:port" */
    char *admin_listen; /* owned; "host:port" */
    char *admin_token;  /* owned; NULL: generate on first start */
    char *server_key;   /* owned; hex, NULL: <data_dir>/server.key */
    int64_t workers;    /* proxy worker threads; 0 = one per core */
    int64_t shutdown_timeout_ms;
    int64_t max_ttl_ms;
    int64_t upstream_connect_timeout_ms;
    int64_t upstream_timeout_ms; /* idle: no byte from upstream for this long */
    int64_t max_body_bytes;
    int64_t max_header_bytes;
    int64_t max_headers;
    int64_t max_path_bytes;
    int64_t max_connections;                  /* per worker */
    int64_t max_connections_per_source;       /* from one client address, all workers */
    int64_t client_timeout_ms;                /* read/write timeout for proxy clients */
    int64_t max_buffered_body_bytes;          /* request bodies in memory, whole process */
    int64_t admin_max_connections;            /* open admin connections */
    int64_t admin_max_connections_per_source; /* admin connections from one address */
    char *log_level;                          /* owned */
    char *log_format;                         /* owned */
    char *log_file;                           /* owned; NULL: stderr as inherited */
    char *pricing_file;                       /* owned; NULL: embedded pricing only */
    char *store_synchronous;                  /* owned; SQLite synchronous: normal|full */
    char *store_url;                          /* owned; NULL: <data_dir>/keybrake.db */
    char *ca_file;                            /* owned; NULL: system CA store */
    char *audit_sink;                         /* owned; NULL: no JSONL sink file */
    int64_t audit_checkpoint_every;           /* records between signed checkpoints */
    int64_t audit_retention_ms;               /* prune records older than this; 0: keep all */
    char *audit_archive_dir;                  /* owned; NULL: <data_dir>/audit-archive */
    int64_t writer_max_batch;                 /* jobs per group-commit transaction */
    char *node_id;                            /* owned; NULL: <data_dir>/node-id */
    int64_t cluster_heartbeat_ms;             /* a shared store's node heartbeat */
    int64_t cluster_dead_after_ms;            /* silent this long (and session gone): dead */
    /* [alerts] (src/alerts/) */
    char *alerts_webhook_url;    /* owned; NULL: alerts recorded, not sent */
    char *alerts_webhook_secret; /* owned; HMAC key of the signature header */
    int64_t alerts_max_attempts; /* attempts before an alert is failed */
    int64_t alerts_backoff_ms;   /* first retry's wait, doubled each time */
    int64_t alerts_timeout_ms;   /* one attempt's connect and answer deadline */

    char *master_key_file;           /* owned; NULL: none ([secrets], docs/tenants.md) */
    char *master_key;                /* owned; hex, NULL: none */
    char *previous_master_key_files; /* owned; comma-separated, NULL: none */
    char *tenant_fallback;           /* owned; "global" or "refuse" */
    struct kb_vendor *vendors;       /* owned */
    size_t nvendors;

    /* TLS (net/tls.h) */
    char *tls_cert;                   /* owned; PEM chain for the proxy listener, NULL: plain */
    char *tls_key;                    /* owned; its PEM key (set together with tls_cert) */
    char *admin_tls_cert;             /* owned; the admin listener's, NULL: tls_cert's pair */
    char *admin_tls_key;              /* owned */
    int64_t tls_handshake_timeout_ms; /* both listeners */
};

/*
 * Builds the configuration: defaults, then `path` (INI, may be NULL), then
 * the environment. Refuses (KB_E_CONFIG, *errmsg names the setting and the
 * file line) unknown sections or keys, values of the wrong type or out of
 * range, unknown auth styles, and vendor names that are not [a-z0-9_-]+.
 * *out is owned by the caller (config_free). Main thread, before start.
 */
KB_MUSTCHECK enum kb_err config_load(const char *path, struct kb_config **out, char **errmsg);
void config_free(struct kb_config *cfg);

/* The store's URL: [store] url, else <data_dir>/keybrake.db (caller frees). */
char *config_store_url(const struct kb_config *cfg);

/* Where pruned audit records are archived: [audit] archive_dir, else
 * <data_dir>/audit-archive (caller frees). */
char *config_archive_dir(const struct kb_config *cfg);

/* The vendor named `name` (len bytes), or NULL. */
const struct kb_vendor *config_vendor(const struct kb_config *cfg, const char *name, size_t len);

/*
 * The settings of the table (not the vendors) whose values differ between
 * a and b: up to max of them, in table order, as INI section and key
 * ("limits", "max_body_bytes"; unique keys, static strings) into sections
 * and names. Returns how many. Any thread.
 */
size_t config_changed(const struct kb_config *a, const struct kb_config *b, const char **sections,
                      const char **names, size_t max);

/* Writes the settings table (name, env, default, help) as Markdown. */
void config_print_table(void);

#endif
