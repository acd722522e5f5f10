/*
 * runtime.h - what every thread reads and nobody writes after start: the
 * configuration, the prices and the server key. Built by main.c, passed
 * down by pointer; immutable while threads run, except the revocation log
 * (which only the admin thread publishes to), the prices and the vendor
 * credentials, which SIGHUP may replace as a whole (read them with
 * runtime_pricing() and runtime_creds()), and the limits a reload may
 * change (read them with runtime_limit(), not from cfg).
 */
#ifndef KB_CORE_RUNTIME_H
#define KB_CORE_RUNTIME_H
#include <stdatomic.h>
#include <stdint.h>

#include "core/crypto.h"

struct kb_config;
struct kb_creds;
struct kb_pricing;
struct kb_revlog;
struct kb_reader;
struct kb_writer;
struct kb_tls;

/* The limits a SIGHUP reload applies live: read where they are used, per
 * request or at stop, so the new value holds from the next use on. The
 * others are copied into listeners and upstream clients at start. */
struct kb_live_limits {
    _Atomic int64_t max_ttl_ms;          /* longest expires_in a new key may ask for */
    _Atomic int64_t max_path_bytes;      /* longest proxied request target */
    _Atomic int64_t shutdown_timeout_ms; /* the drain deadline SIGTERM starts */
    /* the listeners' (net/httpd.h reads them per request and connection) */
    _Atomic int64_t max_body_bytes;
    _Atomic int64_t max_header_bytes;
    _Atomic int64_t max_headers;
    _Atomic int64_t max_connections;
    _Atomic int64_t max_connections_per_source;
    _Atomic int64_t max_buffered_body_bytes;
    _Atomic int64_t admin_max_connections;
    _Atomic int64_t admin_max_connections_per_source;
};

struct kb_runtime {
    const struct kb_config *cfg;              /* borrowed */
    const struct kb_pricing *_Atomic pricing; /* borrowed; swapped whole by a reload, the old
                                                 table kept (meters in flight point into it) */
    const struct kb_creds *_Atomic creds;     /* borrowed; the vendor credentials
                                                 (vendor/creds.h), swapped like pricing */
    uint8_t server_key[KB_HASH_LEN];          /* HMAC key for tokens */
    const char *store_path;                   /* borrowed; the SQLite file */
    struct kb_writer *writer;                 /* borrowed; group commit (threads take ports) */
    struct kb_reader *reader;                 /* borrowed; store reads off the loops */
    struct kb_revlog *revlog;                 /* borrowed; each committed revocation, published
                                                 before it is answered (store/revlog.h) */
    struct kb_live_limits limits;             /* from cfg at start, then each reload */
    struct kb_tls *tls_proxy;                 /* borrowed; the proxy listener's TLS, NULL: plain */
    struct kb_tls *tls_admin;                 /* borrowed; the admin listener's (may be the same
                                                 object as tls_proxy), NULL: plain */
};

/* The price tables in force (any thread). */
static inline const struct kb_pricing *runtime_pricing(const struct kb_runtime *rt)
{
    return atomic_load_explicit(&rt->pricing, memory_order_acquire);
}

/* The vendor credentials in force (any thread). */
static inline const struct kb_creds *runtime_creds(const struct kb_runtime *rt)
{
    return atomic_load_explicit(&rt->creds, memory_order_acquire);
}

/* One of rt->limits (any thread): runtime_limit(&rt->limits.max_ttl_ms). */
static inline int64_t runtime_limit(const _Atomic int64_t *limit)
{
    return atomic_load_explicit(limit, memory_order_relaxed);
}

#endif
