/*
 * finish.c - how a request ends in the logs and metrics, and refusals:
 * answered only once their audit record is durable (no record, no answer
 * but 503 audit_unavailable).
 */
#include <event2/event.h>
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
#include "store/store.h"
#include "store/writer.h"

void proxy__finish(const struct proxy__end *e)
{
    if (e->upstream_us >= 0) {
        /* admitted: the time spent in Keybrake is what the vendor did not take */
        int64_t up = e->upstream_us > e->latency_us ? e->latency_us : e->upstream_us;
        if (up > 0)
            metrics_observe(KB_H_UPSTREAM, up);
        metrics_observe(KB_H_OVERHEAD, e->latency_us - up);
    }
    metrics_request(e->vendor, e->code, e->status, e->cost);
    if (!log_enabled(KB_LOG_INFO))
        return;
    char st[8], c[32], ms[32];
    snprintf(st, sizeof st, "%d", e->status);
    snprintf(ms, sizeof ms, "%.3f", (double)e->latency_us / 1000.0);
    kb_log(KB_LOG_INFO, "access", "request_id", e->id, "key_id", e->key_id ? e->key_id : "-",
           "vendor", e->vendor_name ? e->vendor_name : "-", "method", e->method ? e->method : "-",
           "path", e->path ? e->path : "-", "status", st, "code", kb_strerror(e->code), "cost_usd",
           money_format(e->cost, c, sizeof c), "latency_ms", ms, NULL);
}

/* A refusal, answered only once its audit record is durable. */
struct refusal {
    struct kb_proxy *px; /* borrowed */
    struct kb_hreq *req; /* borrowed until replied */
    enum kb_err err;
    char *msg;                                 /* owned; may be NULL */
    int vendor;                                /* vendor index for metrics, -1 if unknown */
    struct kb_audit_rec rec;                   /* strings below, or static */
    char *key_id, *label, *vendor_name, *path, *tenant; /* owned copies */
    int64_t start_us;                          /* arrival, monotonic */
};

static enum kb_err refusal_job(struct kb_store *s, void *arg)
{
    struct refusal *f = arg;
    return audit_append(s, &f->rec, NULL);
}

static void refusal_done(void *arg, enum kb_err err)
{
    struct refusal *f = arg;
    /* no durable record, no answer but this one (fail closed) */
    enum kb_err code = err != KB_OK ? KB_E_AUDIT_UNAVAILABLE : f->err;
    struct proxy__end e = {.id = f->rec.request_id,
                           .key_id = f->key_id,
                           .vendor_name = f->vendor_name,
                           .method = f->rec.method,
                           .path = f->path,
                           .vendor = f->vendor,
                           .code = code,
                           .latency_us = clock_mono_us() - f->start_us,
                           .upstream_us = -1};
    proxy__finish(&e);
    http_reply_proxy_error(f->req, code, err != KB_OK ? NULL : f->msg);
    free(f->msg);
    free(f->key_id);
    free(f->label);
    free(f->tenant);
    free(f->vendor_name);
    free(f->path);
    free(f);
}

/* A refused path as the audit and the log can carry it: printable ASCII as
 * is, every other byte (a control byte, invalid UTF-8, a space) as %XX, so
 * the record keeps the path and a JSON log line stays valid. */
static char *path_printable(const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = kb_malloc(3 * n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch > 0x20 && ch < 0x7f) {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}

void proxy__refuse(struct kb_proxy *px, struct kb_hreq *req, enum kb_err err, char *msg,
                   const char *id, int64_t start_us, const char *method, const struct kb_key *key,
                   const struct kb_vendor *vendor, const char *path, size_t path_len)
{
    kb_log(KB_LOG_DEBUG, "request refused", "request_id", id, "code", kb_strerror(err), NULL);
    if (!key) {
        /* Never authenticated: counted per source and recorded aggregated
         * (strangers.c), answered at once, never one durable write each. */
        proxy__stranger_note(px, hreq_peer(req), err);
        struct proxy__end e = {.id = id,
                               .vendor_name = vendor ? vendor->name : NULL,
                               .method = method,
                               .vendor = proxy__vendor_index(px, vendor),
                               .code = err,
                               .latency_us = clock_mono_us() - start_us,
                               .upstream_us = -1};
        proxy__finish(&e);
        http_reply_proxy_error(req, err, msg);
        free(msg);
        return;
    }
    struct refusal *f = kb_calloc(1, sizeof *f);
    f->px = px;
    f->req = req;
    f->err = err;
    f->msg = msg;
    f->key_id = key ? kb_strdup(key->id) : NULL;
    f->label = key ? kb_strdup(key->label) : NULL;
    f->tenant = key && key->tenant ? kb_strdup(key->tenant) : NULL;
    f->vendor_name = vendor ? kb_strdup(vendor->name) : NULL;
    f->vendor = proxy__vendor_index(px, vendor);
    f->start_us = start_us;
    f->path = path ? path_printable(path, path_len > 512 ? 512 : path_len) : NULL;
    f->rec.kind = KB_AUDIT_PROXY;
    f->rec.ts_ms = clock_now_ms();
    memcpy(f->rec.request_id, id, sizeof f->rec.request_id);
    f->rec.action = "proxy.request";
    f->rec.key_id = f->key_id;
    f->rec.label = f->label;
    f->rec.tenant = f->tenant;
    f->rec.vendor = f->vendor_name;
    f->rec.method = method;
    f->rec.path = f->path;
    f->rec.decision = "refused";
    f->rec.code = kb_strerror(err);
    size_t bytes_in;
    hreq_body(req, &bytes_in);
    f->rec.bytes_in = (int64_t)bytes_in;
    writer_submit_unguarded(px->port, refusal_job, refusal_done, f);
}
