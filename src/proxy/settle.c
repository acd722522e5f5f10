/*
 * settle.c - the actual cost replaces the reservation and the audit record
 * is completed, in one writer job; only once that is durable does the
 * client get the end of its answer, so what it reads of the key's usage
 * after the answer already includes it.
 */
#include <event2/event.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/money.h"
#include "core/runtime.h"
#include "audit/audit.h"
#include "meter/meter.h"
#include "net/http.h"
#include "net/httpd.h"
#include "proxy/proxy_int.h"
#include "store/audit_store.h"
#include "store/store.h"
#include "store/writer.h"

void proxy__rec_fill(const struct preq *r, struct kb_audit_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->kind = KB_AUDIT_PROXY;
    rec->ts_ms = r->ts_ms;
    memcpy(rec->request_id, r->id, sizeof rec->request_id);
    rec->action = "proxy.request";
    rec->key_id = r->key->id;
    rec->label = r->key->label;
    rec->tenant = r->key->tenant; /* NULL: root's key */
    rec->vendor = r->vendor->name;
    rec->method = r->method;
    rec->path = r->path;
    rec->reserved = r->reserved;
    rec->bytes_in = r->bytes_in;
}

/* Writer thread: one settlement's ledger entries and audit completion,
 * once its cost is settled. */
static enum kb_err settle_record(struct kb_store *s, struct preq *r)
{
    /* the objects this answer paid for, for the key's later requests */
    int64_t max_age = 0, total = 0, now = clock_now();
    meter_ledger_object(r->meter, &max_age);
    const char *id;
    for (size_t i = 0; (id = meter_ledger_entry(r->meter, i, &total)) != NULL; i++)
        if (store_object_charge_set(s, r->key->seq, id, total, now, max_age ? now - max_age : 0) !=
            KB_OK)
            return KB_E_STORE;
    struct kb_audit_rec rec;
    proxy__rec_fill(r, &rec);
    rec.decision = "allowed";
    rec.code = r->fail != KB_OK ? kb_strerror(r->fail) : NULL;
    rec.status = r->status;
    rec.settled = r->actual;
    rec.latency_us = r->latency_us;
    rec.bytes_out = r->bytes_out;
    if (r->outcome_unknown)
        rec.detail = "{\"outcome\":\"unknown\"}";
    return audit_complete(s, r->audit_seq, &rec);
}

/* Writer thread: a run of settlements (writer_submit_group): the actual
 * costs replace the reservations and the audit records are completed, in
 * one transaction. */
static enum kb_err settle_run(struct kb_store *s, void *const *args, size_t n)
{
#ifdef KB_TEST_HOOKS
    /* KEYBRAKE_TEST_FAIL_SETTLES=N: the first N settlements fail, as on a
     * full disk, so the retry of settle_done is tested */
    static _Atomic long failed = 0;
    const char *fail = getenv("KEYBRAKE_TEST_FAIL_SETTLES");
    if (fail && atomic_fetch_add(&failed, (long)n) < strtol(fail, NULL, 10))
        return KB_E_STORE;
#endif
    struct kb_settle stack[16] = {0};
    struct kb_settle *v = n <= 16 ? stack : kb_calloc(n, sizeof *v);
    size_t m = 0;
    enum kb_err err = KB_OK;
    for (size_t i = 0; i < n; i++) {
        struct preq *r = args[i];
        /* A retry of a settlement whose earlier attempt may have committed
         * after all (its answer lost with its connection, a backend that
         * could not tell in time): applied once, so a second one never
         * takes another request's part of the reservations. */
        r->settle_done_already = false;
        if (r->settle_again && r->audit_seq > 0) {
            err = store_audit_completed(s, r->audit_seq);
            if (err == KB_OK) {
                r->settle_done_already = true;
                continue;
            }
            if (err != KB_E_NOT_FOUND)
                break;
            err = KB_OK;
        }
        v[m++] = (struct kb_settle){.key_seq = r->key->seq,
                                    .day = r->day,
                                    .reserved = r->reserved,
                                    .actual = r->actual,
                                    .holds = r->holds,
                                    .nholds = r->nholds};
    }
    if (err == KB_OK && m > 0)
        err = store_settle(s, v, m);
    if (v != stack)
        free(v);
    if (err != KB_OK)
        return KB_E_STORE;
    for (size_t i = 0; i < n && err == KB_OK; i++)
        if (!((struct preq *)args[i])->settle_done_already)
            err = settle_record(s, args[i]);
    return err;
}

static const struct kb_job_group settle_group = {settle_run, 0};

static void settle_done(void *arg, enum kb_err err);

/* Timer: a settlement that did not commit goes to the writer again. */
static void settle_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct preq *r = arg;
    writer_submit_group(r->px->port, &settle_group, settle_done, r);
}

static void settle_done(void *arg, enum kb_err err)
{
    struct preq *r = arg;
    if (r->ended)
        goto answered; /* a retry: logged, counted and answered already */
    r->ended = true;
    struct proxy__end e = {.id = r->id,
                           .key_id = r->key->id,
                           .vendor_name = r->vendor->name,
                           .method = r->method,
                           .path = r->path,
                           .vendor = proxy__vendor_index(r->px, r->vendor),
                           .status = r->status,
                           .code = r->fail,
                           .cost = r->actual,
                           .latency_us = r->latency_us,
                           .upstream_us = r->up_start_us ? clock_mono_us() - r->up_start_us : 0};
    proxy__finish(&e);
    /* an answer ends only once its cost and audit completion are durable,
     * so what a client reads in the key's usage or the audit log after the
     * answer already includes it */
    if (r->reply != REPLY_NONE && r->req && !r->client_gone) {
        hreq_set_close_cb(r->req, NULL, NULL);
        if (r->reply == REPLY_FINISH) {
            if (r->head_deferred)
                proxy__reply_start(r);                           /* head and body in one write */
            hreq_reply_chunk(r->req, r->hold.data, r->hold.len); /* no-op when empty */
            hreq_reply_end(r->req);
        } else {
            /* a vendor that failed inside its head left some of its headers
             * (a Content-Length among them): the error answer is ours alone */
            hreq_reset_headers(r->req);
            hreq_add_header_z(r->req, "Keybrake-Request-Id", r->id);
            http_reply_proxy_error(r->req, r->fail, NULL);
        }
    }
    r->req = NULL;
answered:
    if (err != KB_OK && err != KB_E_NOT_FOUND) {
        /* The reservation stays until the settlement commits (fail
         * closed), and it is retried until it does: a reservation left
         * behind would block spend that did not happen. The answer went
         * out; the request stays in flight (a drain waits for it). */
        r->settle_again = true;
        r->settle_backoff_ms =
            r->settle_backoff_ms
                ? (r->settle_backoff_ms * 2 > 5000 ? 5000 : r->settle_backoff_ms * 2)
                : 50;
        kb_log(KB_LOG_ERROR, "settlement not committed; retried", "request_id", r->id, "key_id",
               r->key->id, "code", kb_strerror(err), NULL);
        if (!r->retry)
            r->retry = evtimer_new(r->px->base, settle_retry, r);
        struct timeval tv = {(time_t)(r->settle_backoff_ms / 1000),
                             (suseconds_t)(r->settle_backoff_ms % 1000) * 1000};
        evtimer_add(r->retry, &tv);
        return;
    }
    proxy__preq_free(r);
}

void proxy__settle(struct preq *r, int64_t actual, enum kb_err fail, enum reply_after reply)
{
    r->stage = ST_SETTLE;
    r->actual = actual;
    r->fail = fail;
    r->reply = reply;
    r->latency_us = clock_mono_us() - r->start_us;
    writer_submit_group(r->px->port, &settle_group, settle_done, r);
}

/* A settlement that outlives its request (shutdown): everything the job
 * needs, copied, so the request can be freed at once. */
struct detached {
    int64_t key_seq, day, reserved, actual, cap, audit_seq;
    bool again;                   /* an earlier attempt failed (settle_again) */
    struct kb_budget_hold *holds; /* owned; nholds of them */
    size_t nholds;
    struct kb_audit_rec rec;                                /* strings below */
    char *key_id, *label, *vendor, *path, *detail, *tenant; /* owned copies */
};

/* Writer thread: settle and complete, then free (fire and forget). */
static enum kb_err detached_job(struct kb_store *s, void *arg)
{
    struct detached *d = arg;
    /* applied once, as settle_run's retries */
    enum kb_err err =
        d->again && d->audit_seq > 0 ? store_audit_completed(s, d->audit_seq) : KB_E_NOT_FOUND;
    if (err == KB_E_NOT_FOUND)
        err = store_spend_settle(s, d->key_seq, d->day, d->reserved, d->actual, d->cap, NULL);
    else if (err == KB_OK)
        goto out; /* settled already */
    if (err == KB_OK)
        err = store_budget_settle(s, d->holds, d->nholds, d->reserved, d->actual);
    if (err == KB_OK)
        err = audit_complete(s, d->audit_seq, &d->rec);
out:
    free(d->holds);
    free(d->key_id);
    free(d->label);
    free(d->tenant);
    free(d->vendor);
    free(d->path);
    free(d->detail);
    free(d);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

void proxy__settle_detached(struct preq *r, int64_t actual, enum kb_err fail)
{
    struct detached *d = kb_calloc(1, sizeof *d);
    d->key_seq = r->key->seq;
    d->day = r->day;
    d->reserved = r->reserved;
    d->actual = actual;
    d->cap = r->key->daily_cap;
    d->audit_seq = r->audit_seq;
    d->again = r->settle_again;
    d->holds = r->holds; /* taken: r is freed at once */
    d->nholds = r->nholds;
    r->holds = NULL;
    r->nholds = 0;
    proxy__rec_fill(r, &d->rec);
    d->rec.key_id = d->key_id = kb_strdup(r->key->id);
    d->rec.label = d->label = kb_strdup(r->key->label);
    d->rec.tenant = d->tenant = r->key->tenant ? kb_strdup(r->key->tenant) : NULL;
    d->rec.vendor = d->vendor = kb_strdup(r->vendor->name);
    d->rec.path = d->path = kb_strdup(r->path);
    d->rec.decision = "allowed";
    d->rec.code = fail != KB_OK ? kb_strerror(fail) : NULL; /* static */
    d->rec.status = r->status;
    d->rec.settled = actual;
    d->rec.latency_us = clock_mono_us() - r->start_us;
    d->rec.bytes_out = r->bytes_out;
    if (r->outcome_unknown)
        d->rec.detail = d->detail = kb_strdup("{\"outcome\":\"unknown\"}");
    writer_submit_unguarded(r->px->port, detached_job, NULL, d);
}
