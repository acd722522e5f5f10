/*
 * runtime.h - what every thread reads and nobody writes after start: the
 * configuration, the prices and the server key. Built by main.c, passed
 * down by pointer; immutable while threads run, except the revocation log
 * (which only the admin thread publishes to), the prices and the vendor credentials, which SIGHUP
 * may replace as a whole (read them with runtime_pricing() and
 * runtime_creds()).
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

#endif
