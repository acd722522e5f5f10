/*
 * lookup.c - the key of a request the worker's cache does not have is
 * read off the loop (store/reader.h): the request (or the head waiting at
 * the gate) waits, parked, while the worker serves others, and goes on
 * where it left when the answer comes. A waiter that leaves meanwhile
 * (proxy__key_read_forget) lets its read finish unanswered; a worker that
 * stops drops the reads still in flight (their answers are freed on
 * arrival, by the mailbox).
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/clock.h"
#include "core/mailbox.h"
#include "core/metrics.h"
#include "core/runtime.h"
#include "net/httpd.h"
#include "proxy/keycache.h"
#include "proxy/proxy_int.h"
#include "store/reader.h"
#include "store/store.h"
#include "vendor/creds.h"
#include "vendor/secrets.h"

struct proxy__key_read {
    struct kb_read rd; /* first: the reader's */
    /* loop thread */
    struct kb_proxy *px;
    void *waiter; /* NULL once it left */
    proxy__key_cb resume;
    void (*detach)(void *waiter); /* lets go of the waiter's hook on us */
    struct proxy__key_read *prev, *next;
    /* set before submitting, read by the reader */
    uint8_t hash[KB_HASH_LEN];
    uint64_t mark;
    int64_t day;
    /* the reader's answer */
    struct kb_key *key;
    enum kb_err err;
};

static void tenant_cred_free(void *arg)
{
    struct proxy__tenant_cred *tc = arg;
    creds_one_free(tc->cred);
    free(tc);
}

/* Reader thread: a tenant key's own secret for its vendor, opened here,
 * off the worker's loop, and carried to the worker with the key. A
 * changed or deleted secret reaches the next request: the admin API
 * publishes it as a change of the tenant's keys (keycache forgets them). */
static void tenant_cred_attach(struct kb_store *s, const struct kb_proxy *px, struct kb_key *k)
{
    struct proxy__tenant_cred *tc = kb_calloc(1, sizeof *tc);
    k->ext = tc;
    k->ext_free = tenant_cred_free;
    struct kb_tenant_secret *sec = NULL;
    enum kb_err err = store_tenant_secret_get(s, k->tenant, k->vendor, &sec);
    if (err == KB_E_NOT_FOUND)
        return; /* none of its own */
    if (err != KB_OK) {
        tc->err = KB_E_STORE;
        return;
    }
    char *plain = NULL;
    err = secrets_open(sec->tenant, sec->vendor, sec->key_id, sec->sealed, sec->sealed_len, &plain);
    const struct kb_vendor *v = config_vendor(px->rt->cfg, k->vendor, strlen(k->vendor));
    if (err == KB_OK && v) {
        char *msg = NULL;
        err = creds_one(v, plain, sec->account, &tc->cred, &msg);
        free(msg);
    } else if (err == KB_OK) {
        err = KB_E_VENDOR_NOT_CONFIGURED;
    }
    if (err != KB_OK) {
        /* never the secret: its tenant, vendor and key id only */
        kb_log(KB_LOG_ERROR, "tenant secret cannot be used", "tenant", k->tenant, "vendor",
               k->vendor, "key_id", sec->key_id, "error", kb_strerror(err), NULL);
        tc->err = err == KB_E_SECRET_UNAVAILABLE ? err : KB_E_INTERNAL;
    }
    if (plain) {
        crypto_wipe(plain, strlen(plain));
        free(plain);
    }
    store_tenant_secret_free(sec);
}

static void run(struct kb_store *s, struct kb_read *rd)
{
    struct proxy__key_read *l = (struct proxy__key_read *)rd;
    l->err = store_key_by_hash(s, l->hash, l->day, &l->key);
    if (l->err == KB_OK && l->key->tenant) {
        tenant_cred_attach(s, l->px, l->key);
        /* a store that failed reading the secret fails the lookup: the
         * key is not cached with a passing error (the next request reads
         * both again) */
        const struct proxy__tenant_cred *tc = l->key->ext;
        if (tc && tc->err == KB_E_STORE)
            l->err = KB_E_STORE;
    }
    metrics_key_read();
}

const struct kb_cred *proxy__cred_for(const struct kb_proxy *px, const struct kb_key *key,
                                      size_t vi, enum kb_err *err)
{
    const struct kb_cred *global = &runtime_creds(px->rt)->v[vi];
    if (key->tenant) {
        const struct proxy__tenant_cred *tc = key->ext;
        if (tc && tc->err != KB_OK) {
            *err = tc->err;
            return NULL;
        }
        if (tc && tc->cred)
            return tc->cred;
        if (!secrets_fallback_global()) {
            *err = KB_E_TENANT_SECRET_MISSING;
            return NULL;
        }
    }
    if (!global->inject) {
        *err = KB_E_VENDOR_NOT_CONFIGURED;
        return NULL;
    }
    return global;
}

static void drop(struct kb_read *rd)
{
    struct proxy__key_read *l = (struct proxy__key_read *)rd;
    store_key_free(l->key);
    free(l);
}

static void unlink_read(struct proxy__key_read *l)
{
    struct kb_proxy *px = l->px;
    if (l->prev)
        l->prev->next = l->next;
    else
        px->reads = l->next;
    if (l->next)
        l->next->prev = l->prev;
    px->nreads--;
}

static void done(struct kb_read *rd)
{
    struct proxy__key_read *l = (struct proxy__key_read *)rd;
    struct kb_proxy *px = l->px;
    void *waiter = l->waiter;
    unlink_read(l);
    const struct kb_key *key = NULL;
    enum kb_err err = l->err;
    if (err == KB_OK) {
        key = keycache_add(px->keys, l->hash, l->key, l->mark); /* takes it */
        l->key = NULL;
    }
    if (waiter)
        l->detach(waiter);
    proxy__key_cb resume = l->resume;
    drop(rd);
    if (!waiter) {
        keycache_put(key);
        proxy__maybe_drained(px);
        return;
    }
    resume(px, waiter, key,
           err == KB_OK            ? KB_OK
           : err == KB_E_NOT_FOUND ? KB_E_INVALID_TOKEN
                                   : KB_E_STORE);
    proxy__maybe_drained(px); /* a drain may have waited on this read alone */
}

void proxy__key_read_forget(struct proxy__key_read *l)
{
    l->waiter = NULL;
}

struct proxy__key_read *proxy__key_read(struct kb_proxy *px, const uint8_t hash[KB_HASH_LEN],
                                        proxy__key_cb resume, void *waiter,
                                        void (*detach)(void *waiter))
{
    struct proxy__key_read *l = kb_calloc(1, sizeof *l);
    l->rd.run = run;
    l->rd.done = done;
    l->rd.drop = drop;
    l->px = px;
    l->waiter = waiter;
    l->resume = resume;
    l->detach = detach;
    memcpy(l->hash, hash, KB_HASH_LEN);
    l->mark = keycache_mark(px->keys);
    l->day = clock_day(clock_now());
    if (!reader_submit(px->rt->reader, px->mailbox, &l->rd)) {
        free(l);
        return NULL;
    }
    l->next = px->reads;
    if (px->reads)
        px->reads->prev = l;
    px->reads = l;
    px->nreads++;
    return l;
}

void proxy__key_reads_orphan(struct kb_proxy *px)
{
    /* the mailbox, closed next, frees them when their answers arrive */
    for (struct proxy__key_read *l = px->reads; l; l = l->next)
        if (l->waiter)
            l->detach(l->waiter);
    px->reads = NULL;
    px->nreads = 0;
}
