/*
 * config.c - the settings table and its three layers (see config.h).
 *
 * Adding a setting is one row in `settings[]` plus a field in struct
 * kb_config: parsing, validation, environment override and the printed
 * table all follow from the row.
 */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/duration.h"
#include "core/money.h"
#include "vendor/profile.h"

enum setting_type {
    T_STR = 0,      /* string, "" means unset (NULL) when nullable */
    T_INT = 1,      /* integer in [min, max] */
    T_DURATION = 2, /* duration_parse_ms text, stored as ms */
    T_SIZE = 3,     /* integer bytes, with optional k/m suffix (KiB/MiB) */
};

struct setting {
    const char *section; /* INI section */
    const char *name;    /* INI key */
    const char *env;     /* environment override */
    enum setting_type type;
    size_t offset;    /* into struct kb_config */
    const char *def;  /* default as text; NULL: unset */
    int64_t min, max; /* range for numbers (after unit conversion) */
    const char *help; /* one line for docs */
};

#define OFF(f) offsetof(struct kb_config, f)
static const struct setting settings[] = {
    {"server", "data_dir", "KEYBRAKE_DATA_DIR", T_STR, OFF(data_dir), "./var", 0, 0,
     "directory of the embedded store, server key and admin token"},
    {"server", "proxy_listen", "KEYBRAKE_PROXY_LISTEN", T_STR, OFF(proxy_listen), "127.0.0.1:8420",
     0, 0, "proxy listener host:port (port 0 picks a free port)"},
    {"server", "admin_listen", "KEYBRAKE_ADMIN_LISTEN", T_STR, OFF(admin_listen), "127.0.0.1:8421",
     0, 0, "admin API listener host:port"},
    {"server", "admin_token", "KEYBRAKE_ADMIN_TOKEN", T_STR, OFF(admin_token), NULL, 0, 0,
     "root admin token to accept; unset: one is generated into <data_dir>/admin-token"},
    {"server", "tls_cert", "KEYBRAKE_TLS_CERT", T_STR, OFF(tls_cert), NULL, 0, 0,
     "PEM certificate chain (leaf first) for the proxy listener; with tls_key, the listener "
     "speaks only TLS (1.2 or later); re-read on SIGHUP"},
    {"server", "tls_key", "KEYBRAKE_TLS_KEY", T_STR, OFF(tls_key), NULL, 0, 0,
     "PEM private key of tls_cert (both or neither); re-read on SIGHUP"},
    {"server", "admin_tls_cert", "KEYBRAKE_ADMIN_TLS_CERT", T_STR, OFF(admin_tls_cert), NULL, 0, 0,
     "PEM certificate chain for the admin listener; unset: the admin listener uses tls_cert and "
     "tls_key (plain HTTP only when those are unset too)"},
    {"server", "admin_tls_key", "KEYBRAKE_ADMIN_TLS_KEY", T_STR, OFF(admin_tls_key), NULL, 0, 0,
     "PEM private key of admin_tls_cert (both or neither)"},
    {"server", "tls_handshake_timeout", "KEYBRAKE_TLS_HANDSHAKE_TIMEOUT", T_DURATION,
     OFF(tls_handshake_timeout_ms), "10s", 100, 600000,
     "deadline for a client's TLS handshake, both listeners; then client_timeout for the request"},
    {"server", "server_key", "KEYBRAKE_SERVER_KEY", T_STR, OFF(server_key), NULL, 0, 0,
     "64 hex characters of HMAC key; unset: <data_dir>/server.key, created on first start"},
    {"server", "workers", "KEYBRAKE_WORKERS", T_INT, OFF(workers), "0", 0, 256,
     "proxy worker threads, each with its own event loop; 0 = one per core"},
    {"server", "shutdown_timeout", "KEYBRAKE_SHUTDOWN_TIMEOUT", T_DURATION,
     OFF(shutdown_timeout_ms), "10s", 0, 3600000, "how long SIGTERM waits for in-flight requests"},
    {"server", "max_ttl", "KEYBRAKE_MAX_TTL", T_DURATION, OFF(max_ttl_ms), "24h", 1000,
     INT64_C(366) * 86400000, "longest expires_in a vault key may ask for"},
    {"server", "log_level", "KEYBRAKE_LOG_LEVEL", T_STR, OFF(log_level), "info", 0, 0,
     "debug, info, warn or error"},
    {"server", "log_format", "KEYBRAKE_LOG_FORMAT", T_STR, OFF(log_format), "logfmt", 0, 0,
     "logfmt or json"},
    {"server", "log_file", "KEYBRAKE_LOG_FILE", T_STR, OFF(log_file), NULL, 0, 0,
     "file the log is appended to (and stderr with it), reopened on SIGHUP for logrotate; "
     "unset: stderr as inherited"},
    {"server", "pricing_file", "KEYBRAKE_PRICING_FILE", T_STR, OFF(pricing_file), NULL, 0, 0,
     "JSON file whose prices replace the embedded pricing.json entry by entry"},
    {"store", "url", "KEYBRAKE_STORE_URL", T_STR, OFF(store_url), NULL, 0, 0,
     "where the store lives: sqlite:PATH or a file path (default <data_dir>/keybrake.db), or "
     "postgres://USER@HOST:PORT/DB for several nodes on one PostgreSQL (docs/cluster.md)"},
    {"store", "synchronous", "KEYBRAKE_STORE_SYNCHRONOUS", T_STR, OFF(store_synchronous), "normal",
     0, 0, "SQLite synchronous setting: normal (survives crashes) or full (power loss)"},
    {"audit", "sink", "KEYBRAKE_AUDIT_SINK", T_STR, OFF(audit_sink), NULL, 0, 0,
     "append-only JSONL file that receives every audit record too (for a SIEM)"},
    {"audit", "checkpoint_every", "KEYBRAKE_AUDIT_CHECKPOINT_EVERY", T_INT,
     OFF(audit_checkpoint_every), "1000", 1, 1000000,
     "audit records between checkpoints signed with the server key"},
    {"audit", "retention", "KEYBRAKE_AUDIT_RETENTION", T_DURATION, OFF(audit_retention_ms), NULL, 0,
     INT64_C(36500) * 86400000,
     "age after which audit records are archived to archive_dir and pruned from the store, at "
     "a signed checkpoint (e.g. 30d); unset or 0: keep everything"},
    {"audit", "archive_dir", "KEYBRAKE_AUDIT_ARCHIVE_DIR", T_STR, OFF(audit_archive_dir), NULL, 0,
     0,
     "directory of the JSONL files pruned records are archived to (default "
     "<data_dir>/audit-archive)"},
    {"store", "max_batch", "KEYBRAKE_STORE_MAX_BATCH", T_INT, OFF(writer_max_batch), "512", 1,
     100000, "most writes grouped into one commit"},
    {"cluster", "node_id", "KEYBRAKE_NODE_ID", T_STR, OFF(node_id), NULL, 0, 0,
     "this node's name on a store several nodes share (postgres://): its audit chain and its "
     "reservations' owner; default <hostname>-<8 hex>, kept in <data_dir>/node-id"},
    {"cluster", "heartbeat", "KEYBRAKE_CLUSTER_HEARTBEAT", T_DURATION, OFF(cluster_heartbeat_ms),
     "1s", 100, 60000, "how often a node on a shared store says it is alive"},
    {"cluster", "dead_after", "KEYBRAKE_CLUSTER_DEAD_AFTER", T_DURATION, OFF(cluster_dead_after_ms),
     "5s", 2000, 3600000,
     "a node silent this long, whose database session is gone, is dead: another node settles "
     "its open reservations at their worst case"},
    {"alerts", "webhook_url", "KEYBRAKE_ALERTS_WEBHOOK_URL", T_STR, OFF(alerts_webhook_url), NULL,
     0, 0,
     "http:// or https:// URL that budget threshold alerts are POSTed to, signed with "
     "webhook_secret (docs/budgets.md); unset: alerts are recorded, not sent"},
    {"alerts", "webhook_secret", "KEYBRAKE_ALERTS_WEBHOOK_SECRET", T_STR,
     OFF(alerts_webhook_secret), NULL, 0, 0,
     "the HMAC-SHA256 key of the Keybrake-Signature header, at least 16 characters; required "
     "with webhook_url"},
    {"alerts", "max_attempts", "KEYBRAKE_ALERTS_MAX_ATTEMPTS", T_INT, OFF(alerts_max_attempts), "6",
     1, 20, "attempts per alert before it is recorded as failed"},
    {"alerts", "backoff", "KEYBRAKE_ALERTS_BACKOFF", T_DURATION, OFF(alerts_backoff_ms), "2s", 10,
     3600000, "wait before the first retry; doubled before each next one, at most 1h"},
    {"alerts", "timeout", "KEYBRAKE_ALERTS_TIMEOUT", T_DURATION, OFF(alerts_timeout_ms), "10s", 100,
     600000, "connect and answer deadline of one attempt"},
    {"upstream", "connect_timeout", "KEYBRAKE_UPSTREAM_CONNECT_TIMEOUT", T_DURATION,
     OFF(upstream_connect_timeout_ms), "10s", 1, 600000, "TCP+TLS connect timeout to a vendor"},
    {"upstream", "timeout", "KEYBRAKE_UPSTREAM_TIMEOUT", T_DURATION, OFF(upstream_timeout_ms),
     "300s", 1, 3600000, "longest silence from a vendor before the request fails (504)"},
    {"upstream", "ca_file", "KEYBRAKE_CA_FILE", T_STR, OFF(ca_file), NULL, 0, 0,
     "CA bundle for vendor TLS; unset: the system store"},
    {"limits", "max_body_bytes", "KEYBRAKE_MAX_BODY_BYTES", T_SIZE, OFF(max_body_bytes), "10m", 0,
     INT64_C(1) << 32, "largest request body accepted (413 body_too_large)"},
    {"limits", "max_header_bytes", "KEYBRAKE_MAX_HEADER_BYTES", T_SIZE, OFF(max_header_bytes),
     "32k", 1024, 1 << 24, "largest request header block accepted"},
    {"limits", "max_headers", "KEYBRAKE_MAX_HEADERS", T_INT, OFF(max_headers), "100", 1, 10000,
     "most request header lines accepted"},
    {"limits", "max_path_bytes", "KEYBRAKE_MAX_PATH_BYTES", T_SIZE, OFF(max_path_bytes), "2k", 16,
     65536, "longest request path accepted (400 bad_path)"},
    {"limits", "max_connections", "KEYBRAKE_MAX_CONNECTIONS", T_INT, OFF(max_connections), "4096",
     1, 1000000,
     "most open proxy client connections, all workers together (503 too_many_connections)"},
    {"limits", "max_connections_per_source", "KEYBRAKE_MAX_CONNECTIONS_PER_SOURCE", T_INT,
     OFF(max_connections_per_source), "1024", 1, 1000000,
     "most open proxy connections from one client address (503 too_many_connections)"},
    {"limits", "max_buffered_body_bytes", "KEYBRAKE_MAX_BUFFERED_BODY_BYTES", T_SIZE,
     OFF(max_buffered_body_bytes), "256m", 1024, INT64_C(1) << 40,
     "request body bytes held in memory at once, all connections and both listeners together "
     "(503 overloaded); at least max_body_bytes"},
    {"limits", "admin_max_connections", "KEYBRAKE_ADMIN_MAX_CONNECTIONS", T_INT,
     OFF(admin_max_connections), "256", 2, 100000,
     "most open admin client connections; when full, a new one evicts the oldest that never "
     "presented a valid admin token"},
    {"limits", "admin_max_connections_per_source", "KEYBRAKE_ADMIN_MAX_CONNECTIONS_PER_SOURCE",
     T_INT, OFF(admin_max_connections_per_source), "64", 1, 100000,
     "most open admin connections from one client address (evicting as above)"},
    {"limits", "client_timeout", "KEYBRAKE_CLIENT_TIMEOUT", T_DURATION, OFF(client_timeout_ms),
     "30s", 1000, 3600000,
     "deadline for a whole request to arrive (and for an idle keep-alive connection); longest "
     "write stall"},
    {"secrets", "master_key_file", "KEYBRAKE_MASTER_KEY_FILE", T_STR, OFF(master_key_file), NULL,
     0, 0, "file holding the master key (64 hex digits) that seals tenants' vendor secrets"},
    {"secrets", "master_key", "KEYBRAKE_MASTER_KEY", T_STR, OFF(master_key), NULL, 0, 0,
     "the master key itself, 64 hex digits (prefer the environment to a config file)"},
    {"secrets", "previous_master_key_files", "KEYBRAKE_PREVIOUS_MASTER_KEY_FILES", T_STR,
     OFF(previous_master_key_files), NULL, 0, 0,
     "comma-separated files of earlier master keys: they only decrypt (docs/tenants.md)"},
    {"secrets", "tenant_fallback", "KEYBRAKE_TENANT_FALLBACK", T_STR, OFF(tenant_fallback),
     "global", 0, 0,
     "a tenant's key without the tenant's own vendor secret uses the global one (global) or is "
     "refused with 403 tenant_secret_missing (refuse)"},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

static char **str_field(struct kb_config *c, const struct setting *s)
{
    return (char **)((char *)c + s->offset);
}

static int64_t *int_field(struct kb_config *c, const struct setting *s)
{
    return (int64_t *)((char *)c + s->offset);
}

static bool parse_int(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || !isdigit((unsigned char)*v))
        return false;
    *out = n;
    return true;
}

static bool parse_size(const char *v, int64_t *out)
{
    size_t len = strlen(v);
    int64_t mult = 1;
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, v, len + 1);
    char last = (char)tolower((unsigned char)buf[len - 1]);
    if (last == 'k' || last == 'm') {
        mult = last == 'k' ? 1024 : 1024 * 1024;
        buf[len - 1] = '\0';
    }
    int64_t n;
    if (!parse_int(buf, &n) || n > INT64_MAX / mult)
        return false;
    *out = n * mult;
    return true;
}

/* Sets one setting from text; `where` names the source for the message. */
static enum kb_err apply(struct kb_config *c, const struct setting *s, const char *v,
                         const char *where, char **errmsg)
{
    int64_t n = 0;
    switch (s->type) {
    case T_STR:
        free(*str_field(c, s));
        *str_field(c, s) = *v ? kb_strdup(v) : NULL;
        return KB_OK;
    case T_INT:
        if (!parse_int(v, &n))
            goto bad;
        break;
    case T_DURATION:
        if (duration_parse_ms(v, strlen(v), &n) != KB_OK)
            goto bad;
        break;
    case T_SIZE:
        if (!parse_size(v, &n))
            goto bad;
        break;
    }
    if (n < s->min || n > s->max) {
        kb_set_errmsg(errmsg, "%s: %s.%s = \"%s\" is out of range [%lld, %lld]", where, s->section,
                      s->name, v, (long long)s->min, (long long)s->max);
        return KB_E_CONFIG;
    }
    *int_field(c, s) = n;
    return KB_OK;
bad:
    kb_set_errmsg(errmsg, "%s: %s.%s = \"%s\" is not a valid %s", where, s->section, s->name, v,
                  s->type == T_DURATION ? "duration (e.g. 30s, 5m, 2h)"
                  : s->type == T_SIZE   ? "size (e.g. 512, 32k, 10m)"
                                        : "integer");
    return KB_E_CONFIG;
}

static bool valid_vendor_name(const char *n, size_t len)
{
    if (len == 0 || len > 32)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(islower((unsigned char)n[i]) || isdigit((unsigned char)n[i]) || n[i] == '_' ||
              n[i] == '-'))
            return false;
    return true;
}

static struct kb_vendor *vendor_get(struct kb_config *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->nvendors; i++)
        if (strlen(c->vendors[i].name) == len && memcmp(c->vendors[i].name, name, len) == 0)
            return &c->vendors[i];
    return NULL;
}

static struct kb_vendor *vendor_add(struct kb_config *c, const char *name, size_t len)
{
    c->vendors = kb_realloc(c->vendors, (c->nvendors + 1) * sizeof *c->vendors);
    struct kb_vendor *v = &c->vendors[c->nvendors++];
    memset(v, 0, sizeof *v);
    v->name = kb_strndup(name, len);
    v->auth = KB_AUTH_BEARER;
    return v;
}

static void set_str(char **f, const char *v)
{
    free(*f);
    *f = *v ? kb_strdup(v) : NULL;
}

static void trim_slash(char *url)
{
    size_t n = url ? strlen(url) : 0;
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
}

/* "POST /v1/things 0.05": pattern, then the USD amount as the last word. */
static enum kb_err add_cost(struct kb_vendor *v, const char *value, const char *where,
                            char **errmsg)
{
    const char *sp = strrchr(value, ' ');
    int64_t micros;
    char *perr = NULL;
    if (!sp || sp == value || money_parse(sp + 1, strlen(sp + 1), &micros, &perr) != KB_OK) {
        kb_set_errmsg(errmsg, "%s: vendor.%s cost \"%s\" must be \"<pattern> <usd>\"%s%s", where,
                      v->name, value, perr ? ": " : "", perr ? perr : "");
        free(perr);
        return KB_E_CONFIG;
    }
    v->costs = kb_realloc(v->costs, (v->ncosts + 1) * sizeof *v->costs);
    v->costs[v->ncosts].pattern = kb_strndup(value, (size_t)(sp - value));
    v->costs[v->ncosts].micros = micros;
    v->ncosts++;
    return KB_OK;
}

/* The header the secret is sent in (auth = header:<name>): a token, and
 * not one that frames, routes or belongs to a hop, since it is written
 * into every request to the vendor. */
static bool valid_auth_header(const char *n)
{
    static const char tchar[] = "!#$%&'+-.^`|~_0123456789"
                                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    static const char *const reserved[] = {
        "host",    "content-length", "transfer-encoding", "connection", "keep-alive",
        "te",      "trailer",        "upgrade",           "expect",     "proxy-connection",
        "cookie",  "content-type",   "content-encoding",  NULL};
    size_t len = strlen(n);
    if (len == 0 || strspn(n, tchar) != len || strncasecmp(n, "keybrake-", 9) == 0 ||
        strncasecmp(n, "proxy-", 6) == 0)
        return false;
    for (size_t i = 0; reserved[i]; i++)
        if (strcasecmp(n, reserved[i]) == 0)
            return false;
    return true;
}

/* http(s)://host[:port][/path]: a host of visible bytes, a port 1-65535.
 * Checked at load so that an alert is not the first to find out. */
static bool valid_http_url(const char *u)
{
    const char *p = strncmp(u, "http://", 7) == 0    ? u + 7
                    : strncmp(u, "https://", 8) == 0 ? u + 8
                                                     : NULL;
    if (!p)
        return false;
    size_t hl;
    if (*p == '[') {
        const char *e = strchr(p, ']');
        if (!e || e == p + 1)
            return false;
        hl = (size_t)(e - p) + 1;
    } else {
        hl = strcspn(p, ":/?#@");
    }
    if (hl == 0)
        return false;
    for (size_t i = 0; i < hl; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
            return false;
    p += hl;
    if (*p == ':') {
        size_t pl = strspn(p + 1, "0123456789");
        long port = pl && pl <= 5 ? strtol(p + 1, NULL, 10) : 0;
        if (port < 1 || port > 65535)
            return false;
        p += 1 + pl;
    }
    if (*p && *p != '/')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

/* "x-foo, x-bar-*": header names (tchar, lower-cased), a '*' only last. */
static enum kb_err add_forward(struct kb_vendor *v, const char *value, const char *where,
                               char **errmsg)
{
    static const char tchar[] = "!#$%&'+-.^`|~_abcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = 0;
    while (v->forward && v->forward[n])
        n++;
    for (const char *p = value; *p;) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, " \t,");
        if (!len)
            break;
        char *name = kb_strndup(p, len);
        for (char *q = name; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        size_t ok = strspn(name, tchar);
        if (ok == 0 || (ok != len && !(ok == len - 1 && name[ok] == '*'))) {
            kb_set_errmsg(errmsg,
                          "%s: vendor.%s forward_headers: \"%s\" is not a header name (a '*' "
                          "may end it)",
                          where, v->name, name);
            free(name);
            return KB_E_CONFIG;
        }
        v->forward = kb_realloc(v->forward, (n + 2) * sizeof *v->forward);
        v->forward[n++] = name;
        v->forward[n] = NULL;
        p += len;
    }
    return KB_OK;
}

static enum kb_err vendor_set(struct kb_config *c, const char *vname, const char *key,
                              const char *value, const char *where, char **errmsg)
{
    size_t len = strlen(vname);
    if (!valid_vendor_name(vname, len)) {
        kb_set_errmsg(errmsg, "%s: vendor name \"%s\" must be 1-32 of [a-z0-9_-]", where, vname);
        return KB_E_CONFIG;
    }
    struct kb_vendor *v = vendor_get(c, vname, len);
    if (!v)
        v = vendor_add(c, vname, len);
    if (strcmp(key, "base_url") == 0) {
        if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0) {
            kb_set_errmsg(errmsg, "%s: vendor.%s base_url must start with http:// or https://",
                          where, vname);
            return KB_E_CONFIG;
        }
        set_str(&v->base_url, value);
        trim_slash(v->base_url);
    } else if (strcmp(key, "secret") == 0) {
        set_str(&v->secret, value);
    } else if (strcmp(key, "account") == 0) {
        set_str(&v->account, value);
    } else if (strcmp(key, "auth") == 0) {
        if (strcmp(value, "bearer") == 0)
            v->auth = KB_AUTH_BEARER;
        else if (strcmp(value, "basic") == 0)
            v->auth = KB_AUTH_BASIC;
        else if (strncmp(value, "header:", 7) == 0 && valid_auth_header(value + 7)) {
            v->auth = KB_AUTH_HEADER;
            set_str(&v->auth_header, value + 7);
        } else {
            kb_set_errmsg(errmsg,
                          "%s: vendor.%s auth must be bearer, basic or header:<name> (a header "
                          "name that does not frame, route or belong to a hop)",
                          where, vname);
            return KB_E_CONFIG;
        }
    } else if (strcmp(key, "cost") == 0) {
        return add_cost(v, value, where, errmsg);
    } else if (strcmp(key, "forward_headers") == 0) {
        return add_forward(v, value, where, errmsg);
    } else {
        kb_set_errmsg(errmsg, "%s: unknown key \"%s\" in [vendor.%s]", where, key, vname);
        return KB_E_CONFIG;
    }
    return KB_OK;
}

struct ini_ctx {
    struct kb_config *cfg;
    const char *path;
    enum kb_err err;
    char *errmsg;
};

/* Debian's inih is built without line numbers in the callback; the line of
 * the first error comes back from ini_parse_file and is added then. */
static int on_ini_line(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *ctx = user;
    const char *where = ctx->path;
    if (ctx->err != KB_OK)
        return 0;
    if (!name) /* a section header alone */
        return 1;
    if (strncmp(section, "vendor.", 7) == 0) {
        ctx->err = vendor_set(ctx->cfg, section + 7, name, value, where, &ctx->errmsg);
        return ctx->err == KB_OK;
    }
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (strcmp(settings[i].section, section) == 0 && strcmp(settings[i].name, name) == 0) {
            ctx->err = apply(ctx->cfg, &settings[i], value, where, &ctx->errmsg);
            return ctx->err == KB_OK;
        }
    }
    kb_set_errmsg(&ctx->errmsg, "%s: unknown setting [%s] %s", where, section, name);
    ctx->err = KB_E_CONFIG;
    return 0;
}

/* KEYBRAKE_<VENDOR>_BASE_URL / _SECRET / _ACCOUNT for every known vendor,
 * and _COST: fixed costs added after the file's, several separated by ';'. */
static enum kb_err vendor_env(struct kb_config *c, char **errmsg)
{
    static const char *const keys[] = {"BASE_URL", "SECRET", "ACCOUNT", "COST", "FORWARD_HEADERS"};
    static const char *const ini[] = {"base_url", "secret", "account", "cost", "forward_headers"};
    for (size_t i = 0; i < c->nvendors; i++) {
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            char env[128];
            int n = snprintf(env, sizeof env, "KEYBRAKE_%s_%s", c->vendors[i].name, keys[k]);
            if (n < 0 || (size_t)n >= sizeof env)
                continue;
            for (char *p = env; *p; p++)
                *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
            const char *v = getenv(env);
            if (v && *v && k == 3) {
                char *list = kb_strdup(v), *save = NULL;
                enum kb_err err = KB_OK;
                for (char *e = list; err == KB_OK && e; e = save) {
                    save = strchr(e, ';');
                    if (save)
                        *save++ = '\0';
                    e += strspn(e, " \t");
                    if (*e)
                        err = vendor_set(c, c->vendors[i].name, ini[k], e, env, errmsg);
                }
                free(list);
                if (err != KB_OK)
                    return err;
            } else if (v && *v) {
                enum kb_err err = vendor_set(c, c->vendors[i].name, ini[k], v, env, errmsg);
                if (err != KB_OK)
                    return err;
            }
        }
    }
    return KB_OK;
}

enum kb_err config_load(const char *path, struct kb_config **out, char **errmsg)
{
    enum kb_err err = KB_OK;
    struct kb_config *c = kb_calloc(1, sizeof *c);

    for (size_t i = 0; i < NSETTINGS; i++)
        if (settings[i].def &&
            (err = apply(c, &settings[i], settings[i].def, "default", errmsg)) != KB_OK)
            goto out;

    size_t nprof;
    const struct kb_vendor_profile *prof = vendor_profiles(&nprof);
    for (size_t i = 0; i < nprof; i++) {
        const struct kb_vendor_profile *b = &prof[i];
        struct kb_vendor *v = vendor_add(c, b->name, strlen(b->name));
        v->profile = b;
        v->body = b->body;
        v->base_url = kb_strdup(b->base_url);
        v->auth = b->auth;
        v->auth_header = b->auth_header ? kb_strdup(b->auth_header) : NULL;
        const char *s = getenv(b->secret_env);
        v->secret = s && *s ? kb_strdup(s) : NULL;
        const char *a = b->account_env ? getenv(b->account_env) : NULL;
        v->account = a && *a ? kb_strdup(a) : NULL;
    }

    if (path) {
        FILE *f = fopen(path, "r");
        struct stat st;
        if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
            /* fopen succeeds on a directory; it would read as an empty file */
            kb_set_errmsg(errmsg, "cannot read config file %s: %s", path,
                          f ? "not a regular file" : strerror(errno));
            if (f)
                fclose(f);
            err = KB_E_CONFIG;
            goto out;
        }
        struct ini_ctx ctx = {c, path, KB_OK, NULL};
        int rc = ini_parse_file(f, on_ini_line, &ctx);
        fclose(f);
        if (ctx.err != KB_OK) {
            kb_set_errmsg(errmsg, "line %d: %s", rc, ctx.errmsg ? ctx.errmsg : "invalid");
            free(ctx.errmsg);
            err = ctx.err;
            goto out;
        }
        free(ctx.errmsg);
        if (rc != 0) {
            kb_set_errmsg(errmsg, "%s:%d: syntax error", path, rc);
            err = KB_E_CONFIG;
            goto out;
        }
    }

    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if (v && (err = apply(c, &settings[i], v, settings[i].env, errmsg)) != KB_OK)
            goto out;
    }
    if ((err = vendor_env(c, errmsg)) != KB_OK)
        goto out;

    for (size_t i = 0; i < c->nvendors; i++) {
        struct kb_vendor *v = &c->vendors[i];
        if (!v->base_url) {
            kb_set_errmsg(errmsg, "vendor.%s: base_url is required", v->name);
            err = KB_E_CONFIG;
            goto out;
        }
        if (v->auth == KB_AUTH_BASIC && v->secret && !v->account) {
            kb_set_errmsg(errmsg,
                          "vendor.%s: basic auth needs an account (for twilio: "
                          "TWILIO_ACCOUNT_SID)",
                          v->name);
            err = KB_E_CONFIG;
            goto out;
        }
    }
    if (!c->data_dir || !c->proxy_listen || !c->admin_listen) {
        kb_set_errmsg(errmsg, "data_dir, proxy_listen and admin_listen must not be empty");
        err = KB_E_CONFIG;
        goto out;
    }
    if (strcmp(c->store_synchronous ? c->store_synchronous : "", "normal") != 0 &&
        strcmp(c->store_synchronous ? c->store_synchronous : "", "full") != 0) {
        kb_set_errmsg(errmsg, "store.synchronous must be normal or full");
        err = KB_E_CONFIG;
        goto out;
    }
    if (!c->tls_cert != !c->tls_key || !c->admin_tls_cert != !c->admin_tls_key) {
        kb_set_errmsg(errmsg, "%s must be set together with %s",
                      !c->tls_cert != !c->tls_key ? "server.tls_cert" : "server.admin_tls_cert",
                      !c->tls_cert != !c->tls_key ? "server.tls_key" : "server.admin_tls_key");
        err = KB_E_CONFIG;
        goto out;
    }
    if (c->alerts_webhook_url && !valid_http_url(c->alerts_webhook_url)) {
        kb_set_errmsg(errmsg, "alerts.webhook_url must be http(s)://host[:port][/path] (port "
                              "1-65535)");
        err = KB_E_CONFIG;
        goto out;
    }
    if (c->alerts_webhook_url &&
        (!c->alerts_webhook_secret || strlen(c->alerts_webhook_secret) < 16)) {
        kb_set_errmsg(errmsg, "alerts.webhook_secret (or KEYBRAKE_ALERTS_WEBHOOK_SECRET) of at "
                              "least 16 characters is required with alerts.webhook_url");
        err = KB_E_CONFIG;
        goto out;
    }
    if (c->admin_token && strlen(c->admin_token) < 16) {
        kb_set_errmsg(errmsg, "admin_token must be at least 16 characters");
        err = KB_E_CONFIG;
        goto out;
    }
out:
    if (err != KB_OK) {
        config_free(c);
        return err;
    }
    *out = c;
    return KB_OK;
}

void config_free(struct kb_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < NSETTINGS; i++)
        if (settings[i].type == T_STR)
            free(*str_field(c, &settings[i]));
    for (size_t i = 0; i < c->nvendors; i++) {
        struct kb_vendor *v = &c->vendors[i];
        free(v->name);
        free(v->base_url);
        free(v->auth_header);
        free(v->secret);
        free(v->account);
        for (char **f = v->forward; f && *f; f++)
            free(*f);
        free(v->forward);
        for (size_t k = 0; k < v->ncosts; k++)
            free(v->costs[k].pattern);
        free(v->costs);
    }
    free(c->vendors);
    free(c);
}

char *config_archive_dir(const struct kb_config *c)
{
    return c->audit_archive_dir ? kb_strdup(c->audit_archive_dir)
                                : kb_asprintf("%s/audit-archive", c->data_dir);
}

char *config_store_url(const struct kb_config *c)
{
    return c->store_url ? kb_strdup(c->store_url) : kb_asprintf("%s/keybrake.db", c->data_dir);
}

const struct kb_vendor *config_vendor(const struct kb_config *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->nvendors; i++)
        if (strlen(c->vendors[i].name) == len && memcmp(c->vendors[i].name, name, len) == 0)
            return &c->vendors[i];
    return NULL;
}

void config_print_table(void)
{
    printf("| INI `[section] key` | environment | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < NSETTINGS; i++)
        printf("| `[%s] %s` | `%s` | %s%s%s | %s |\n", settings[i].section, settings[i].name,
               settings[i].env, settings[i].def ? "`" : "",
               settings[i].def ? settings[i].def : "(unset)", settings[i].def ? "`" : "",
               settings[i].help);
}

size_t config_changed(const struct kb_config *a, const struct kb_config *b, const char **sections,
                      const char **names, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < NSETTINGS && n < max; i++) {
        const struct setting *s = &settings[i];
        bool same;
        if (s->type == T_STR) {
            const char *x = *str_field((struct kb_config *)a, s);
            const char *y = *str_field((struct kb_config *)b, s);
            same = x == y || (x && y && strcmp(x, y) == 0);
        } else {
            same = *int_field((struct kb_config *)a, s) == *int_field((struct kb_config *)b, s);
        }
        if (!same) {
            sections[n] = s->section;
            names[n++] = s->name;
        }
    }
    return n;
}
