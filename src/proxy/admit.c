/*
 * admit.c - a request is admitted by one writer job (rate limit,
 * reservation, audit record, committed together) before a byte of it goes
 * to the vendor; then it is forwarded with the headers built here.
 */
#include <event2/event.h>
#include <jansson.h>
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
#include "proxy/canonical.h"
#include "proxy/upstream.h"
#include "proxy/proxy_int.h"
#include "store/store.h"
#include "store/writer.h"
#include "vendor/profile.h"

/* Never forwarded, whatever a vendor's list says: framing and hop-by-hop
 * headers (we frame the request ourselves), the client's credentials (the
 * vendor gets exactly one, ours), and headers that make a server act on
 * another method or URL than the one that was checked and metered. Beyond
 * these, only the headers the vendor's list names are forwarded
 * (vendor/profile.h). */
static const char *const strip_request[] = {"host",
                                            "content-length",
                                            "transfer-encoding",
                                            "connection",
                                            "keep-alive",
                                            "proxy-connection",
                                            "te",
                                            "trailer",
                                            "upgrade",
                                            "expect",
                                            "authorization",
                                            "proxy-authorization",
                                            "x-api-key",
                                            "cookie",
                                            "forwarded",
                                            "x-http-method-override",
                                            "x-http-method",
                                            "x-method-override",
                                            "x-original-method",
                                            "x-original-url",
                                            "x-rewrite-url",
                                            "x-override-url",
                                            NULL};
void proxy__build_headers(const struct kb_hreq *req, const struct kb_vendor *v,
                          const struct kb_cred *cred, const struct kb_canon_req *c,
                          struct kb_buf *out)
{
    const char *conn = hreq_header(req, "Connection");
    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    buf_reserve(out, 512);
    for (size_t i = 0; i < nh; i++) {
        const char *name = h[i].name, *value = h[i].value;
        size_t nlen = strlen(name);
        /* names compared as a server that maps '_' to '-' reads them */
        if (canonical_folded_in(name, strip_request) ||
            canonical_name_is(name, "keybrake-", false) ||
            canonical_name_is(name, "x-forwarded-", false) ||
            (v->auth == KB_AUTH_HEADER && canonical_name_is(name, v->auth_header, true)) ||
            (conn && http_token_in_list(conn, name)) || canonical_replaces_header(c, name, nlen) ||
            !vendor_forwards_header(v, name, nlen))
            continue;
        buf_puts(out, name);
        buf_append(out, ": ", 2);
        buf_puts(out, value);
        buf_append(out, "\r\n", 2);
    }
    if (c->body_rewritten && c->content_type) {
        buf_puts(out, "Content-Type: ");
        buf_puts(out, c->content_type);
        buf_append(out, "\r\n", 2);
    }
    /* only codings the meter reads; none must be said: a request without
     * Accept-Encoding accepts any coding (RFC 9110 12.5.3) */
    buf_puts(out, "Accept-Encoding: ");
    buf_puts(out, c->accept[0] ? c->accept : "identity");
    buf_append(out, "\r\n", 2);
    buf_puts(out, cred->inject); /* ends in CRLF */
}

/* The ledger's reservation for a request (struct kb_admit's ledger). */
static int64_t ledger_reserve(void *meter, int64_t charged)
{
    return meter_ledger_reserve(meter, charged);
}

/* Writer thread: one admission's audit record, once it is decided. */
static enum kb_err admit_record(struct kb_store *s, struct preq *r)
{
    struct kb_audit_rec rec;
    proxy__rec_fill(r, &rec);
    rec.decision = r->outcome == KB_OK ? "allowed" : "refused";
    rec.code = r->outcome == KB_OK ? NULL : kb_strerror(r->outcome);
    rec.settled = r->outcome == KB_OK ? -1 : 0;
    if (r->outcome == KB_E_BUDGET_EXHAUSTED && r->exhausted) {
        /* a tenant's budget is stored as "<tenant>\x1f<name>" (a key names
         * only its own tenant's): the agent and the record get the name its
         * tenant's API uses */
        char *sep = strchr(r->exhausted, '\x1f');
        if (sep)
            memmove(r->exhausted, sep + 1, strlen(sep + 1) + 1);
        json_t *d = json_pack("{s:s}", "budget", r->exhausted);
        r->refusal = d ? json_dumps(d, JSON_COMPACT) : NULL;
        json_decref(d);
        rec.detail = r->refusal;
    }
    return audit_append(s, &rec, &r->audit_seq);
}

/* Writer thread: a run of admissions (writer_submit_group): revocation,
 * expiry and cap (as committed), rate limit, reservation and each one's
 * audit record, committed together before a byte goes to the vendor. A
 * refusal is recorded as one (r->outcome says what happened). Revocations
 * are committed by the same writer, so an admission is ordered after every
 * revocation committed before its batch, and one in the same batch before
 * it: the worker's key cache may be stale, this is not. */
static enum kb_err admit_run(struct kb_store *s, void *const *args, size_t n)
{
    struct kb_admit stack[16];
    struct kb_admit *v = n <= 16 ? stack : kb_calloc(n, sizeof *v);
    int64_t now = clock_now();
    for (size_t i = 0; i < n; i++) {
        struct preq *r = args[i];
        free(r->holds); /* a batch that failed may run the job again */
        free(r->exhausted);
        free(r->refusal);
        r->holds = NULL, r->nholds = 0, r->exhausted = r->refusal = NULL;
        int64_t max_age = 0;
        const char *obj = meter_ledger_object(r->meter, &max_age);
        v[i] = (struct kb_admit){.key_seq = r->key->seq,
                                 .day = r->day,
                                 .now = now,
                                 .ts_ms = r->ts_ms,
                                 .amount = r->reserved,
                                 .rate_requests = r->key->rate_requests,
                                 .rate_period_ms = r->key->rate_period_ms,
                                 .object = obj,
                                 .object_not_before = obj && max_age ? now - max_age : 0,
                                 .ledger = ledger_reserve,
                                 .ledger_ctx = r->meter};
    }
    enum kb_err err = store_admit(s, v, n);
    for (size_t i = 0; i < n; i++) {
        struct preq *r = args[i];
        if (err == KB_OK) {
            r->outcome = v[i].outcome;
            r->reserved = v[i].reserved;
            r->expires_at = v[i].expires_at; /* the watch cuts streams on it */
            r->remaining = v[i].remaining;
            r->retry_ms = v[i].retry_ms;
            r->holds = v[i].holds;
            r->nholds = v[i].nholds;
            r->exhausted = v[i].exhausted;
            err = admit_record(s, r);
        } else {
            free(v[i].holds);
            free(v[i].exhausted);
        }
    }
    if (v != stack)
        free(v);
    return err;
}

const struct kb_job_group proxy__admit_group = {admit_run, 1};

void proxy__admit_done(void *arg, enum kb_err err)
{
    struct preq *r = arg;
    if (r->recheck)
        r->px->watch_lost = true; /* its key changed meanwhile: the watch reads it again */
    if (err != KB_OK || r->outcome != KB_OK) {
        /* nothing was reserved (the batch rolled back, or it did not fit) */
        if (!r->client_gone) {
            if (err == KB_OK && r->outcome == KB_E_RATE_LIMITED) {
                char ra[24];
                snprintf(ra, sizeof ra, "%lld", (long long)((r->retry_ms + 999) / 1000));
                hreq_add_header_z(r->req, "Retry-After", ra);
            }
            hreq_set_close_cb(r->req, NULL, NULL);
            if (err == KB_OK && r->outcome == KB_E_BUDGET_EXHAUSTED && r->exhausted) {
                char *m =
                    kb_asprintf("budget \"%s\" is exhausted for its current window", r->exhausted);
                json_t *extra = json_pack("{s:s}", "budget", r->exhausted);
                http_reply_proxy_error_with(r->req, r->outcome, m, extra);
                json_decref(extra);
                free(m);
            } else {
                http_reply_proxy_error(r->req,
                                       err == KB_E_STORE ? KB_E_STORE
                                       : err != KB_OK    ? KB_E_AUDIT_UNAVAILABLE
                                                         : r->outcome,
                                       NULL);
            }
        }
        enum kb_err code = err == KB_E_STORE ? KB_E_STORE
                           : err != KB_OK    ? KB_E_AUDIT_UNAVAILABLE
                                             : r->outcome;
        struct proxy__end e = {.id = r->id,
                               .key_id = r->key->id,
                               .vendor_name = r->vendor->name,
                               .method = r->method,
                               .path = r->path,
                               .vendor = proxy__vendor_index(r->px, r->vendor),
                               .code = code,
                               .latency_us = clock_mono_us() - r->start_us,
                               .upstream_us = -1};
        proxy__finish(&e);
        r->req = NULL;
        proxy__preq_free(r);
        return;
    }
    if (r->client_gone) {
        /* gone before anything was sent: release it all */
        proxy__settle(r, 0, KB_E_CLIENT_CLOSED, REPLY_NONE);
        return;
    }
    r->stage = ST_UPSTREAM;
    r->up_start_us = clock_mono_us();
    r->up = upstream_send(r->px->up, r->px->bases[proxy__vendor_index(r->px, r->vendor)], r->method,
                          r->path, strlen(r->path), r->query ? r->query - 1 : NULL, &r->headers,
                          r->fwd_body, r->fwd_len, &proxy__upstream_ops,
                          r); /* takes the header bytes */
}
