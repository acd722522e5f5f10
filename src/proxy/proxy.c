/*
 * proxy.c - one proxied request, start to finish (see proxy.h).
 *
 * on_request() decides everything that can refuse a request before a byte
 * leaves: canonical target, vendor, vault token, key state, endpoint policy,
 * body transcoding, cost reservation. Only then does it hand the request to
 * the upstream client, whose callbacks stream the answer back (on_head,
 * on_body) and settle the cost (on_done). A client that goes away mid-way
 * is noticed by the connection's close callback (client_closed).
 *
 * Writes go through the group-commit writer: a request is admitted by one
 * job (rate limit, reservation, audit record) and settled by another (cost,
 * completion record); refusals are answered once their record is durable.
 *
 * Ownership: struct preq owns everything of one request and is freed in
 * exactly one place, preq_free(). The HTTP server owns the kb_hreq; once a
 * reply is sent (or the client is gone) we never touch it again.
 */
#include "proxy/proxy.h"

#include <event2/event.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/money.h"
#include "core/runtime.h"
#include "audit/audit.h"
#include "meter/meter.h"
#include "net/http.h"
#include "net/httpd.h"
#include "policy/canon.h"
#include "policy/pattern.h"
#include "proxy/canonical.h"
#include "proxy/hygiene.h"
#include "proxy/keycache.h"
#include "proxy/upstream.h"
#include "store/store.h"
#include "store/writer.h"

/* Pause the upstream when this much is waiting to go to a slow client. */
#define CLIENT_HIGH_WATER (256 * 1024)
/* Compiled endpoint policies kept per worker, direct-mapped by key seq. A
 * key's allowed_endpoints never change after issuance, so an entry is
 * valid for as long as it stays; a collision just recompiles. */
#define POLICY_CACHE_SLOTS 4096

/* How often requests in flight are checked for a revoked key: a revoked
 * key's streams are cut within this (issue: "within one second"). */
#define REVOCATION_WATCH_MS 250
#define KEY_CACHE_SLOTS 4096 /* per worker; ~200 KiB of slots plus the keys */

struct kb_proxy {
    struct event_base *base;               /* borrowed */
    const struct kb_runtime *rt;           /* borrowed */
    struct kb_store *store;                /* borrowed; this worker's read connection */
    struct kb_writer_port *port;           /* borrowed; group-commit writes from this worker */
    struct kb_upstream *up;                /* owned */
    const struct kb_upstream_base **bases; /* owned array; per vendor index, owned by up */
    char **inject;                         /* owned; per vendor index, the credential header line */
    struct event *watch;                   /* owned; revocation watch timer */
    struct kb_keycache *keys;              /* owned; keys by token hash */
    struct kb_hmac *token_mac;             /* owned; HMAC under the server key, pads precomputed */
    struct {
        int64_t seq;              /* key seq, 0 when empty */
        struct kb_policy *policy; /* owned */
    } policies[POLICY_CACHE_SLOTS];
    struct preq *inflight; /* requests in flight, doubly linked */
    int ninflight;
    int unflushed; /* replies not yet written out to their client */
    bool draining;
    kb_drained_cb drained_cb;
    void *drained_arg;
    int worker;
    uint32_t seed;    /* random per worker: request ids differ across restarts */
    uint64_t counter; /* request ids within this worker */
};

/* What is still owed to the client once the settlement is durable. */
enum reply_after {
    REPLY_NONE = 0,   /* already answered or cut */
    REPLY_FINISH = 1, /* end the streamed answer */
    REPLY_ERROR = 2,  /* answer with the error r->fail */
};

/* A request moves through these stages; in each, exactly one party may
 * finish it: the writer's callback (ADMIT, SETTLE) or the upstream client
 * and the client connection (UPSTREAM). */
enum preq_stage {
    ST_ADMIT = 0,    /* reservation + audit record queued for commit */
    ST_UPSTREAM = 1, /* forwarded; the vendor transfer runs */
    ST_SETTLE = 2,   /* settlement + completion record queued for commit */
};

struct preq {
    struct kb_proxy *px; /* borrowed */
    enum preq_stage stage;
    struct kb_hreq *req;            /* borrowed; NULL once replied or gone */
    struct kb_upstream_req *up;     /* owned while the transfer runs */
    const struct kb_key *key;       /* shared with the key cache (keycache_put) */
    const struct kb_vendor *vendor; /* borrowed from the config */
    struct kb_meter *meter;         /* owned */
    char *body;                     /* owned when rewritten, else NULL */
    int64_t reserved;               /* micro-dollars reserved on `day` */
    int64_t day;                    /* UTC day of the reservation */
    int64_t remaining;              /* cap left after the reservation */
    int status;                     /* upstream status, 0 until known */
    bool head_sent;                 /* reply headers went to the client */
    bool paused;                    /* upstream paused for a slow client */
    bool client_gone;               /* the client connection closed */
    bool outcome_unknown;           /* the vendor may have acted; charged its worst case */
    char id[40];                    /* request id */
    char *resp_ctype;               /* owned; the vendor's Content-Type */
    const char *method;             /* static string */
    char *path;                     /* owned; canonical vendor path, no query */
    const char *query;              /* borrowed from the target, after its '?'; NULL: none */
    struct kb_buf headers;          /* owned until handed to the upstream client */
    const char *fwd_body;           /* borrowed: r->body or the request's body */
    size_t fwd_len;
    int64_t ts_ms;          /* arrival, wall clock */
    int64_t start_us;       /* arrival, monotonic */
    int64_t audit_seq;      /* the request's audit record */
    enum kb_err outcome;    /* admission: KB_OK, CAP_EXHAUSTED or RATE_LIMITED */
    int64_t retry_ms;       /* RATE_LIMITED: until one request fits */
    int64_t bytes_in;       /* request body bytes as the client sent them */
    int64_t bytes_out;      /* response body bytes sent to the client */
    int64_t actual;         /* settled cost */
    int64_t latency_us;     /* arrival to settlement */
    enum kb_err fail;       /* completion failure, KB_OK when whole */
    int64_t up_start_us;    /* forwarded at, monotonic; 0 if never */
    enum reply_after reply; /* what settlement must still send the client */
    struct preq *prev, *next;
};

/* Never forwarded: framing and hop-by-hop headers (we frame the request
 * ourselves), the client's credentials (the vendor gets exactly one, ours),
 * and headers that make a server act on another method or URL than the
 * one that was checked and metered. */
static const char *const strip_request[] = {
    "host",          "content-length",      "transfer-encoding",      "connection",
    "keep-alive",    "proxy-connection",    "te",                     "trailer",
    "upgrade",       "expect",              "authorization",          "proxy-authorization",
    "x-api-key",     "cookie",              "forwarded",              "x-http-method-override",
    "x-http-method", "x-method-override",   "x-original-method",      "x-original-url",
    "x-rewrite-url", "x-override-url",      NULL};
static const char *const strip_response[] = {"connection", "keep-alive", "proxy-connection",
                                             "te",         "trailer",    "transfer-encoding",
                                             "upgrade",    NULL};

static bool in_list(const char *const *list, const char *name, size_t len)
{
    for (; *list; list++)
        if (strlen(*list) == len && strncasecmp(*list, name, len) == 0)
            return true;
    return false;
}

/* A draining worker may stop once no request is in flight and every reply
 * has been written out: exiting earlier would drop replies still buffered. */
static void maybe_drained(struct kb_proxy *px)
{
    if (px->draining && px->ninflight == 0 && px->unflushed == 0 && px->drained_cb) {
        kb_drained_cb cb = px->drained_cb;
        px->drained_cb = NULL;
        cb(px->drained_arg);
    }
}

/* A reply was written out completely (or the client left after it). */
static void reply_flushed(struct kb_hreq *req, void *arg)
{
    (void)req;
    struct kb_proxy *px = arg;
    px->unflushed--;
    maybe_drained(px);
}

/* The answer cannot be completed: what is queued goes out, then the
 * connection closes (no terminating chunk: the client sees it cut short).
 * The server frees the request without calling reply_flushed. */
static void abort_connection(struct preq *r)
{
    hreq_abort(r->req);
    r->req = NULL;
    r->px->unflushed--;
}

static void preq_unlink(struct preq *r)
{
    struct kb_proxy *px = r->px;
    if (r->prev)
        r->prev->next = r->next;
    else
        px->inflight = r->next;
    if (r->next)
        r->next->prev = r->prev;
    px->ninflight--;
}

static void preq_free(struct preq *r)
{
    struct kb_proxy *px = r->px;
    if (r->req)
        hreq_set_close_cb(r->req, NULL, NULL);
    preq_unlink(r);
    metrics_inflight(-1);
    meter_free(r->meter);
    keycache_put(r->key);
    buf_cleanup(&r->headers);
    free(r->body);
    free(r->path);
    free(r->resp_ctype);
    free(r);
    maybe_drained(px);
}

static void rec_fill(const struct preq *r, struct kb_audit_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->kind = KB_AUDIT_PROXY;
    rec->ts_ms = r->ts_ms;
    memcpy(rec->request_id, r->id, sizeof rec->request_id);
    rec->action = "proxy.request";
    rec->key_id = r->key->id;
    rec->label = r->key->label;
    rec->vendor = r->vendor->name;
    rec->method = r->method;
    rec->path = r->path;
    rec->reserved = r->reserved;
    rec->bytes_in = r->bytes_in;
}

/* Writer thread: the actual cost replaces the reservation and the audit
 * record is completed, in one transaction. */
static enum kb_err settle_job(struct kb_store *s, void *arg)
{
    struct preq *r = arg;
    enum kb_err err =
        store_spend_settle(s, r->key->seq, r->day, r->reserved, r->actual, r->key->daily_cap, NULL);
    if (err != KB_OK)
        return KB_E_STORE;
    struct kb_audit_rec rec;
    rec_fill(r, &rec);
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

/* One access log line per request, keyed by its id; never a token, a
 * query or a body (the log escapes every value). */
static void access_log(const char *id, const char *key_id, const char *vendor, const char *method,
                       const char *path, int status, enum kb_err code, int64_t cost,
                       int64_t latency_us)
{
    if (!log_enabled(KB_LOG_INFO))
        return;
    char st[8], c[32], ms[32];
    snprintf(st, sizeof st, "%d", status);
    snprintf(ms, sizeof ms, "%.3f", (double)latency_us / 1000.0);
    kb_log(KB_LOG_INFO, "access", "request_id", id, "key_id", key_id ? key_id : "-", "vendor",
           vendor ? vendor : "-", "method", method ? method : "-", "path", path ? path : "-",
           "status", st, "code", kb_strerror(code), "cost_usd", money_format(cost, c, sizeof c),
           "latency_ms", ms, NULL);
}

static int vendor_index(const struct kb_proxy *px, const struct kb_vendor *v)
{
    return v ? (int)(v - px->rt->cfg->vendors) : -1;
}

static void settle_done(void *arg, enum kb_err err)
{
    struct preq *r = arg;
    int64_t upstream_us = r->up_start_us ? clock_mono_us() - r->up_start_us : 0;
    if (upstream_us > r->latency_us)
        upstream_us = r->latency_us;
    if (r->up_start_us)
        metrics_observe(KB_H_UPSTREAM, upstream_us);
    metrics_observe(KB_H_OVERHEAD, r->latency_us - upstream_us);
    metrics_request(vendor_index(r->px, r->vendor), r->fail, r->status, r->actual);
    access_log(r->id, r->key->id, r->vendor->name, r->method, r->path, r->status, r->fail,
               r->actual, r->latency_us);
    if (err != KB_OK)
        kb_log(KB_LOG_ERROR, "settlement not committed; the reservation stays (fail closed)",
               "request_id", r->id, "key_id", r->key->id, "code", kb_strerror(err), NULL);
    /* an answer ends only once its cost and audit completion are durable,
     * so what a client reads in the key's usage or the audit log after the
     * answer already includes it */
    if (r->reply != REPLY_NONE && r->req && !r->client_gone) {
        hreq_set_close_cb(r->req, NULL, NULL);
        if (r->reply == REPLY_FINISH) {
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
    preq_free(r);
}

/* Ends the request's life: `actual` replaces the reservation; `fail` is the
 * failure for the audit record (KB_OK when the answer was whole); `reply` is
 * what the client is sent after the commit. With REPLY_NONE it was already
 * answered or cut and the connection is let go now. */
static void preq_settle(struct preq *r, int64_t actual, enum kb_err fail, enum reply_after reply)
{
    r->stage = ST_SETTLE;
    r->actual = actual;
    r->fail = fail;
    r->reply = reply;
    r->latency_us = clock_mono_us() - r->start_us;
    writer_submit_unguarded(r->px->port, settle_job, settle_done, r);
}

/* ---- upstream callbacks ---- */

static void on_header(void *arg, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct preq *r = arg;
    /* Keybrake-* belongs to the proxy alone: a vendor (or anything in
     * front of it) must not speak for it, e.g. with its own cost header */
    if (r->client_gone || in_list(strip_response, name, nlen) ||
        (nlen >= 9 && strncasecmp(name, "keybrake-", 9) == 0))
        return;
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0 && !r->resp_ctype)
        r->resp_ctype = kb_strndup(value, vlen); /* the meter reads it */
    hreq_add_header(r->req, name, nlen, value, vlen);
}

static void add_cost_headers(struct preq *r, int64_t cost)
{
    char a[32], b[32];
    hreq_add_header_z(r->req, "Keybrake-Cost-USD", money_format(cost, a, sizeof a));
    hreq_add_header_z(r->req, "Keybrake-Remaining-USD", money_format(r->remaining, b, sizeof b));
}

static void on_head(void *arg, int status)
{
    struct preq *r = arg;
    r->status = status;
    if (r->client_gone)
        return;
    meter_response_status(r->meter, status, r->resp_ctype);
    add_cost_headers(r, r->reserved);
    hreq_reply_start(r->req, status);
    r->head_sent = true;
}

/* The client took everything queued: a paused vendor transfer goes on. */
static void client_drained(struct kb_hreq *req, void *arg)
{
    (void)req;
    struct preq *r = arg;
    if (r->paused && r->up) {
        r->paused = false;
        upstream_resume(r->up);
    }
}

static bool on_body(void *arg, const char *data, size_t len)
{
    struct preq *r = arg;
    if (r->client_gone || !r->head_sent)
        return true;
    if (hreq_pending(r->req) > CLIENT_HIGH_WATER) {
        r->paused = true; /* client_drained resumes once the client caught up */
        hreq_set_drain_cb(r->req, client_drained, r);
        return false;
    }
    meter_response_data(r->meter, data, len);
    r->bytes_out += (int64_t)len;
    hreq_reply_chunk(r->req, data, len);
    return true;
}

static void on_done(void *arg, enum kb_err err, bool sent)
{
    struct preq *r = arg;
    r->up = NULL; /* the upstream client freed it */
    if (err == KB_OK) {
        preq_settle(r, meter_settle(r->meter, true), KB_OK, REPLY_FINISH);
    } else if (r->head_sent) {
        /* cut mid-body: the client must not mistake it for a whole answer */
        int64_t actual = meter_settle(r->meter, false);
        abort_connection(r);
        r->req = NULL;
        kb_log(KB_LOG_WARN, "upstream failed mid-response", "request_id", r->id, "code",
               kb_strerror(err), NULL);
        preq_settle(r, actual, err, REPLY_NONE);
    } else if (sent) {
        /* The vendor may have read the request and acted on it (a timeout,
         * a reset after the write): only a definite answer releases a
         * reservation, so the worst case is charged and the audit record
         * says the outcome is unknown. */
        r->outcome_unknown = true;
        kb_log(KB_LOG_WARN, "vendor outcome unknown: the reservation is charged", "request_id",
               r->id, "code", kb_strerror(err), NULL);
        preq_settle(r, r->status ? meter_settle(r->meter, false) : r->reserved, err, REPLY_ERROR);
    } else {
        preq_settle(r, 0, err, REPLY_ERROR); /* nothing reached the vendor */
    }
}

static const struct kb_upstream_ops upstream_ops = {on_header, on_head, on_body, on_done};

/* The client connection closed while its request was in flight; the
 * server frees the request when this returns. */
static void client_closed(struct kb_hreq *req, void *arg)
{
    (void)req;
    struct preq *r = arg;
    r->client_gone = true;
    r->px->unflushed--; /* its reply will never complete */
    r->req = NULL;
    kb_log(KB_LOG_INFO, "client closed before the response ended", "request_id", r->id, NULL);
    if (r->stage != ST_UPSTREAM)
        return; /* the writer's callback finishes it */
    if (r->up) {
        upstream_cancel(r->up);
        r->up = NULL;
    }
    /* The vendor may have acted on a request we could not see the end of:
     * charge the worst case unless the meter knows better. */
    r->outcome_unknown = !r->status;
    preq_settle(r, r->status ? meter_settle(r->meter, false) : r->reserved, KB_E_CLIENT_CLOSED,
                REPLY_NONE);
}

/* The key of a request in flight was revoked: stop the vendor transfer and
 * end the client's response where it stands. */
static void cut_revoked(struct preq *r)
{
    if (r->up) {
        upstream_cancel(r->up);
        r->up = NULL;
    }
    /* the vendor may have acted already: a metered response is charged as
     * a cut stream, an unanswered one at the reservation */
    int64_t actual = r->status ? meter_settle(r->meter, false) : r->reserved;
    r->outcome_unknown = !r->status;
    kb_log(KB_LOG_INFO, "response cut: key revoked", "request_id", r->id, "key_id", r->key->id,
           NULL);
    if (!r->head_sent) {
        preq_settle(r, actual, KB_E_KEY_REVOKED, REPLY_ERROR);
        return;
    }
    abort_connection(r);
    r->req = NULL;
    preq_settle(r, actual, KB_E_KEY_REVOKED, REPLY_NONE);
}

static void watch_revocations(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kb_proxy *px = arg;
    for (struct preq *r = px->inflight, *next; r; r = next) {
        next = r->next;
        if (r->stage != ST_UPSTREAM)
            continue;
        bool revoked = false;
        if (store_key_revoked(px->store, r->key->seq, &revoked) == KB_OK && revoked)
            cut_revoked(r);
    }
}

/* ---- the request path ---- */

/* Finds the vault token where the vendor's SDK sends it. */
static bool find_token(const struct kb_hreq *req, const struct kb_vendor *v, char *out, size_t size)
{
    const char *auth = NULL, *xkey = NULL;
    int nauth = 0, nkey = 0;
    const char *key_header = v && v->auth == KB_AUTH_HEADER ? v->auth_header : "x-api-key";
    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    for (size_t i = 0; i < nh; i++) {
        if (strcasecmp(h[i].name, "authorization") == 0)
            auth = h[i].value, nauth++;
        else if (strcasecmp(h[i].name, key_header) == 0)
            xkey = h[i].value, nkey++;
    }
    if (nauth > 1 || nkey > 1)
        return false; /* ambiguous: refuse rather than guess */
    const char *tok = NULL;
    size_t len = 0;
    char decoded[256];
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        tok = auth + 7;
        while (*tok == ' ')
            tok++;
        len = strlen(tok);
    } else if (auth && strncasecmp(auth, "Basic ", 6) == 0) {
        const char *b64 = auth + 6;
        size_t blen = strlen(b64);
        if (blen == 0 || blen % 4 || blen / 4 * 3 >= sizeof decoded)
            return false;
        int n = EVP_DecodeBlock((unsigned char *)decoded, (const unsigned char *)b64, (int)blen);
        if (n < 0)
            return false;
        if (blen >= 1 && b64[blen - 1] == '=')
            n--;
        if (blen >= 2 && b64[blen - 2] == '=')
            n--;
        decoded[n] = '\0';
        char *colon = memchr(decoded, ':', (size_t)n);
        if (!colon)
            return false;
        /* Twilio sends SID:token; Stripe's curl style sends token: */
        if (colon[1]) {
            tok = colon + 1;
            len = strlen(tok);
        } else {
            tok = decoded;
            len = (size_t)(colon - decoded);
        }
    } else if (xkey) {
        tok = xkey;
        len = strlen(tok);
    }
    if (!tok || len == 0 || len >= size)
        return false;
    memcpy(out, tok, len);
    out[len] = '\0';
    return true;
}

static void build_headers(struct kb_proxy *px, const struct kb_hreq *req, const struct kb_vendor *v,
                          const struct kb_canon_req *c, struct kb_buf *out)
{
    const char *conn = hreq_header(req, "Connection");
    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    buf_reserve(out, 512);
    for (size_t i = 0; i < nh; i++) {
        const char *name = h[i].name, *value = h[i].value;
        size_t nlen = strlen(name);
        if (in_list(strip_request, name, nlen) || strncasecmp(name, "keybrake-", 9) == 0 ||
            strncasecmp(name, "x-forwarded-", 12) == 0 ||
            (v->auth == KB_AUTH_HEADER && strcasecmp(name, v->auth_header) == 0) ||
            (conn && http_token_in_list(conn, name)) || canonical_replaces_header(c, name, nlen))
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
    if (c->accept[0]) { /* only codings the meter reads; none asks for identity */
        buf_puts(out, "Accept-Encoding: ");
        buf_puts(out, c->accept);
        buf_append(out, "\r\n", 2);
    }
    buf_puts(out, px->inject[v - px->rt->cfg->vendors]); /* ends in CRLF */
}

static struct kb_policy *compile_policy(const char *json_text)
{
    json_t *arr = json_loads(json_text, 0, NULL);
    struct kb_policy *pol = NULL;
    if (arr && json_is_array(arr)) {
        size_t n = json_array_size(arr);
        const char **pats = kb_calloc(n ? n : 1, sizeof *pats);
        for (size_t i = 0; i < n; i++)
            pats[i] = json_string_value(json_array_get(arr, i));
        char *e = NULL;
        if (policy_compile(pats, n, &pol, &e) != KB_OK)
            pol = NULL;
        free(e);
        free(pats);
    }
    json_decref(arr);
    return pol;
}

/* The compiled policy of `key` (borrowed from the cache), or NULL when its
 * stored patterns no longer compile (fail closed). */
static const struct kb_policy *key_policy(struct kb_proxy *px, const struct kb_key *key)
{
    size_t slot = (size_t)key->seq % POLICY_CACHE_SLOTS;
    if (px->policies[slot].seq == key->seq && px->policies[slot].policy)
        return px->policies[slot].policy;
    struct kb_policy *pol = compile_policy(key->allowed_endpoints);
    if (!pol)
        return NULL;
    policy_free(px->policies[slot].policy);
    px->policies[slot].seq = key->seq;
    px->policies[slot].policy = pol;
    return pol;
}

/* A refusal, answered only once its audit record is durable. */
struct refusal {
    struct kb_proxy *px; /* borrowed */
    struct kb_hreq *req; /* borrowed until replied */
    enum kb_err err;
    char *msg;                                 /* owned; may be NULL */
    int vendor;                                /* vendor index for metrics, -1 if unknown */
    struct kb_audit_rec rec;                   /* strings below, or static */
    char *key_id, *label, *vendor_name, *path; /* owned copies */
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
    metrics_request(f->vendor, code, 0, 0);
    access_log(f->rec.request_id, f->key_id, f->vendor_name, f->rec.method, f->path, 0, code, 0,
               clock_mono_us() - f->start_us);
    http_reply_proxy_error(f->req, code, err != KB_OK ? NULL : f->msg);
    free(f->msg);
    free(f->key_id);
    free(f->label);
    free(f->vendor_name);
    free(f->path);
    free(f);
}

/* Refuses `req` with err; msg (may be NULL) is taken. The refusal is audited
 * with what is known of the request: key (may be NULL), vendor, the path
 * without its query (capped), never a token. */
static void refuse(struct kb_proxy *px, struct kb_hreq *req, enum kb_err err, char *msg,
                   const char *id, int64_t start_us, const char *method, const struct kb_key *key,
                   const struct kb_vendor *vendor, const char *path, size_t path_len)
{
    kb_log(KB_LOG_DEBUG, "request refused", "request_id", id, "code", kb_strerror(err), NULL);
    struct refusal *f = kb_calloc(1, sizeof *f);
    f->px = px;
    f->req = req;
    f->err = err;
    f->msg = msg;
    f->key_id = key ? kb_strdup(key->id) : NULL;
    f->label = key ? kb_strdup(key->label) : NULL;
    f->vendor_name = vendor ? kb_strdup(vendor->name) : NULL;
    f->vendor = vendor_index(px, vendor);
    f->start_us = start_us;
    f->path = path ? kb_strndup(path, path_len > 512 ? 512 : path_len) : NULL;
    f->rec.kind = KB_AUDIT_PROXY;
    f->rec.ts_ms = clock_now_ms();
    memcpy(f->rec.request_id, id, sizeof f->rec.request_id);
    f->rec.action = "proxy.request";
    f->rec.key_id = f->key_id;
    f->rec.label = f->label;
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

/* Writer thread: rate limit, reservation and the audit record, committed
 * together before a byte goes to the vendor. A refusal here is recorded as
 * one (the job succeeds; r->outcome says what happened). */
static enum kb_err admit_job(struct kb_store *s, void *arg)
{
    struct preq *r = arg;
    enum kb_err err;
    r->outcome = KB_OK;
    if (r->key->rate_requests) {
        err = store_rate_take(s, r->key->seq, r->key->rate_requests, r->key->rate_period_ms,
                              r->ts_ms, &r->retry_ms);
        if (err == KB_E_RATE_LIMITED)
            r->outcome = err;
        else if (err != KB_OK)
            return KB_E_STORE;
    }
    if (r->outcome == KB_OK) {
        err = store_spend_reserve(s, r->key->seq, r->day, r->reserved, r->key->daily_cap,
                                  &r->remaining);
        if (err == KB_E_CAP_EXHAUSTED)
            r->outcome = err;
        else if (err != KB_OK)
            return KB_E_STORE;
    }
    struct kb_audit_rec rec;
    rec_fill(r, &rec);
    rec.decision = r->outcome == KB_OK ? "allowed" : "refused";
    rec.code = r->outcome == KB_OK ? NULL : kb_strerror(r->outcome);
    rec.settled = r->outcome == KB_OK ? -1 : 0;
    return audit_append(s, &rec, &r->audit_seq);
}

static void admit_done(void *arg, enum kb_err err)
{
    struct preq *r = arg;
    if (err != KB_OK || r->outcome != KB_OK) {
        /* nothing was reserved (the batch rolled back, or it did not fit) */
        if (!r->client_gone) {
            if (err == KB_OK && r->outcome == KB_E_RATE_LIMITED) {
                char ra[24];
                snprintf(ra, sizeof ra, "%lld", (long long)((r->retry_ms + 999) / 1000));
                hreq_add_header_z(r->req, "Retry-After", ra);
            }
            hreq_set_close_cb(r->req, NULL, NULL);
            http_reply_proxy_error(r->req, err != KB_OK ? KB_E_AUDIT_UNAVAILABLE : r->outcome,
                                   NULL);
        }
        enum kb_err code = err != KB_OK ? KB_E_AUDIT_UNAVAILABLE : r->outcome;
        metrics_request(vendor_index(r->px, r->vendor), code, 0, 0);
        access_log(r->id, r->key->id, r->vendor->name, r->method, r->path, 0, code, 0,
                   clock_mono_us() - r->start_us);
        r->req = NULL;
        preq_free(r);
        return;
    }
    if (r->client_gone) {
        /* gone before anything was sent: release it all */
        preq_settle(r, 0, KB_E_CLIENT_CLOSED, REPLY_NONE);
        return;
    }
    r->stage = ST_UPSTREAM;
    r->up_start_us = clock_mono_us();
    r->up = upstream_send(r->px->up, r->px->bases[vendor_index(r->px, r->vendor)], r->method,
                          r->path, strlen(r->path), r->query ? r->query - 1 : NULL, &r->headers,
                          r->fwd_body, r->fwd_len, &upstream_ops, r); /* takes the header bytes */
}

void proxy_handle(struct kb_hreq *req, void *arg)
{
    struct kb_proxy *px = arg;
    const struct kb_config *cfg = px->rt->cfg;
    char id[40];
    snprintf(id, sizeof id, "req_%08x%02x%010llx", px->seed, px->worker & 0xff,
             (unsigned long long)++px->counter);
    enum kb_err err = KB_OK;
    char *msg = NULL;
    const struct kb_key *key = NULL;
    struct kb_meter *meter = NULL;
    struct kb_canon_req canon = {0};
    const char *target = hreq_target(req);
    size_t tlen = target ? strlen(target) : 0, plen = target ? strcspn(target, "?") : 0;
    const struct kb_vendor *vendor = NULL;
    const char *vpath = target;

    int64_t start_us = clock_mono_us();
    px->unflushed++;
    hreq_set_complete_cb(req, reply_flushed, px);
    /* every answer, whatever ends the request, carries its id */
    hreq_add_header_z(req, "Keybrake-Request-Id", id);
    const char *method = http_method_text(hreq_method(req));

    /* 0. a vault token anywhere in the URL: refused before anything else,
     * and the URL is neither logged nor audited (the refusal records no
     * path), whatever else is wrong with the request */
    if (target && hygiene_url_has_token(target, tlen)) {
        err = KB_E_TOKEN_IN_QUERY;
        vpath = NULL;
        plen = 0;
        goto refused;
    }

    /* 1. framing and headers that could be read two ways were refused by
     * the parser (which closes the connection after the answer, so nothing
     * buffered behind them is read) */
    const char *perr;
    if ((err = hreq_error(req, &perr)) != KB_OK) {
        msg = perr ? kb_strdup(perr) : NULL;
        goto refused;
    }
    if (!method) {
        err = KB_E_METHOD_NOT_ALLOWED;
        goto refused;
    }
    if (px->draining) {
        hreq_close_after(req); /* and no further request on this connection */
        err = KB_E_SHUTTING_DOWN;
        goto refused;
    }

    /* 2. the target: canonical, or refused */
    if ((err = policy_canon_check(target, tlen, (size_t)cfg->max_path_bytes, &plen, &msg)) != KB_OK)
        goto refused;
    /* 3. vendor from the first segment, when it names one */
    size_t seg = 1;
    while (seg < plen && target[seg] != '/')
        seg++;
    const struct kb_vendor *prefixed = config_vendor(cfg, target + 1, seg - 1);
    if (prefixed) {
        vendor = prefixed;
        vpath = target + seg; /* "" or "/..." or "?..." */
        plen -= seg;
    }

    /* 4. the vault token and its key */
    char token[KB_TOKEN_MAX + 8];
    if (!find_token(req, vendor, token, sizeof token) ||
        !crypto_token_valid("kb_", token, strlen(token))) {
        err = KB_E_INVALID_TOKEN;
        goto refused;
    }
    uint8_t hash[KB_HASH_LEN];
    crypto_hmac_run(px->token_mac, token, strlen(token), hash);
    int64_t now = clock_now();
    int64_t day = clock_day(now);
    if ((err = keycache_get(px->keys, px->store, hash, &key)) != KB_OK) {
        if (err == KB_E_NOT_FOUND)
            err = KB_E_INVALID_TOKEN;
        goto refused;
    }
    if (key->revoked_at) {
        err = KB_E_KEY_REVOKED;
        goto refused;
    }
    if (now >= key->expires_at) {
        err = KB_E_KEY_EXPIRED;
        goto refused;
    }
    const struct kb_vendor *kv = config_vendor(cfg, key->vendor, strlen(key->vendor));
    if (prefixed && kv != prefixed) {
        err = KB_E_VENDOR_MISMATCH;
        msg = kb_asprintf("this vault key is for %s, not %s", key->vendor, prefixed->name);
        goto refused;
    }
    vendor = kv;
    if (!vendor || !vendor->secret) {
        err = KB_E_VENDOR_NOT_CONFIGURED;
        goto refused;
    }

    /* 5. the one reading of the request: canonical path, decoded body,
     * query folded where the vendor reads it; everything below is built
     * from it */
    const char *q = memchr(vpath, '?', tlen - (size_t)(vpath - target));
    if ((err = canonical_build(req, vendor, method, plen ? vpath : "/", plen ? plen : 1,
                               q ? q + 1 : NULL, (size_t)cfg->max_body_bytes, &canon, &msg)) !=
        KB_OK)
        goto refused;
    vpath = canon.path; /* refusals from here on record the canonical path */
    plen = canon.path_len;

    /* 6. endpoint policy, on exactly the path that will be forwarded */
    const struct kb_policy *pol = key_policy(px, key);
    if (!pol || !policy_allows(pol, method, canon.path, canon.path_len)) {
        err = KB_E_ENDPOINT_NOT_ALLOWED;
        goto refused;
    }

    /* 7. worst-case cost, reserved atomically against today's cap */
    const struct kb_hdr *hdrs;
    size_t nhdrs = hreq_headers(req, &hdrs);
    struct kb_meter_req mreq = {.vendor = vendor->name,
                                .method = method,
                                .path = canon.path,
                                .path_len = canon.path_len,
                                .content_type = canon.content_type,
                                .body = canon.body,
                                .body_len = canon.body_len,
                                .query = canon.query,
                                .query_len = canon.query_len,
                                .headers = hdrs,
                                .nheaders = nhdrs};
    int64_t reserve = 0;
    char *metered_body = NULL;
    size_t metered_len = 0;
    err = meter_begin(px->rt->pricing, &mreq, &meter, &reserve, &metered_body, &metered_len, &msg);
    if (err != KB_OK)
        goto refused;
    if (metered_body) {
        free(canon.owned);
        canon.owned = metered_body;
        canon.body = metered_body;
        canon.body_len = metered_len;
    }

    /* 8. reserve, record, then forward: the writer commits the reservation
     * and the audit record before admit_done sends anything */
    struct preq *r = kb_calloc(1, sizeof *r);
    r->px = px;
    r->stage = ST_ADMIT;
    r->req = req;
    r->key = key;
    r->vendor = vendor;
    r->meter = meter;
    r->body = canon.owned;
    r->fwd_body = canon.body;
    r->fwd_len = canon.body_len;
    size_t raw_len;
    hreq_body(req, &raw_len);
    r->bytes_in = (int64_t)raw_len;
    r->query = canon.query;
    r->reserved = reserve;
    r->day = day;
    r->method = method;
    r->path = canon.path;
    r->ts_ms = clock_now_ms();
    r->start_us = start_us;
    memcpy(r->id, id, sizeof r->id);
    build_headers(px, req, vendor, &canon, &r->headers);
    key = NULL;
    meter = NULL;
    canon.owned = canon.path = NULL;
    r->next = px->inflight;
    if (px->inflight)
        px->inflight->prev = r;
    px->inflight = r;
    px->ninflight++;
    metrics_inflight(1);
    hreq_set_close_cb(req, client_closed, r);
    writer_submit_unguarded(px->port, admit_job, admit_done, r);
    free(msg);
    return;

refused:
    refuse(px, req, err, msg, id, start_us, method, key, vendor, vpath, plen);
    meter_free(meter);
    keycache_put(key);
    canonical_cleanup(&canon);
}

enum kb_err proxy_new(struct event_base *base, const struct kb_runtime *rt, struct kb_store *store,
                      struct kb_writer_port *port, int worker, struct kb_proxy **out, char **errmsg)
{
    const struct kb_config *cfg = rt->cfg;
    for (size_t i = 0; i < cfg->nvendors; i++) {
        const struct kb_vendor *v = &cfg->vendors[i];
        /* the secret goes into a header line as it is */
        if (v->secret && v->secret[strcspn(v->secret, "\r\n")]) {
            kb_set_errmsg(errmsg, "vendor.%s: the secret contains a line break", v->name);
            return KB_E_CONFIG;
        }
    }
    struct kb_proxy *px = kb_calloc(1, sizeof *px);
    px->base = base;
    px->rt = rt;
    px->store = store;
    px->port = port;
    px->worker = worker;
    crypto_random(&px->seed, sizeof px->seed);
    struct kb_upstream_opts o = {cfg->upstream_connect_timeout_ms, cfg->upstream_timeout_ms,
                                 cfg->ca_file, 1024};
    enum kb_err err = upstream_new(base, &o, &px->up, errmsg);
    if (err != KB_OK) {
        free(px);
        return err;
    }
    /* each vendor's base URL, parsed once for every request */
    px->bases = kb_calloc(cfg->nvendors ? cfg->nvendors : 1, sizeof *px->bases);
    for (size_t i = 0; i < cfg->nvendors; i++) {
        if (!(px->bases[i] = upstream_base(px->up, cfg->vendors[i].base_url))) {
            kb_set_errmsg(errmsg, "vendor.%s: base_url must be http(s)://host[:port][/path]",
                          cfg->vendors[i].name);
            upstream_free(px->up);
            free(px->bases);
            free(px);
            return KB_E_CONFIG;
        }
    }
    /* the injected credential of each vendor, built once */
    px->inject = kb_calloc(cfg->nvendors, sizeof *px->inject);
    for (size_t i = 0; i < cfg->nvendors; i++) {
        const struct kb_vendor *v = &cfg->vendors[i];
        if (!v->secret)
            continue;
        if (v->auth == KB_AUTH_BEARER) {
            px->inject[i] = kb_asprintf("Authorization: Bearer %s\r\n", v->secret);
        } else if (v->auth == KB_AUTH_HEADER) {
            px->inject[i] = kb_asprintf("%s: %s\r\n", v->auth_header, v->secret);
        } else {
            char *pair = kb_asprintf("%s:%s", v->account ? v->account : "", v->secret);
            char *b64 = crypto_base64(pair, strlen(pair));
            px->inject[i] = kb_asprintf("Authorization: Basic %s\r\n", b64);
            free(b64);
            free(pair);
        }
    }
    px->keys = keycache_new(KEY_CACHE_SLOTS, rt->key_epoch);
    px->token_mac = crypto_hmac_new(rt->server_key, KB_HASH_LEN);
    px->watch = event_new(base, -1, EV_PERSIST, watch_revocations, px);
    struct timeval tv = {0, REVOCATION_WATCH_MS * 1000};
    event_add(px->watch, &tv);
    *out = px;
    return KB_OK;
}

bool proxy_idle(const struct kb_proxy *px)
{
    return px->ninflight == 0 && px->unflushed == 0;
}

void proxy_drain(struct kb_proxy *px, kb_drained_cb cb, void *arg)
{
    px->draining = true;
    px->drained_cb = cb;
    px->drained_arg = arg;
    maybe_drained(px);
}

void proxy_free(struct kb_proxy *px)
{
    if (!px)
        return;
    px->drained_cb = NULL;
    /* Only after a shutdown timeout are requests still here. Those waiting
     * on the writer are left to it (its job still reads them: they are not
     * freed, a bounded leak at exit); those talking to a vendor are settled
     * at their worst case on this worker's connection, without a completion
     * record (the audit shows them as not completed). */
    for (struct preq *r = px->inflight, *next; r; r = next) {
        next = r->next;
        if (r->req)
            hreq_set_close_cb(r->req, NULL, NULL);
        if (r->stage != ST_UPSTREAM)
            continue;
        upstream_cancel(r->up);
        r->up = NULL;
        if (store_spend_settle(px->store, r->key->seq, r->day, r->reserved, r->reserved,
                               r->key->daily_cap, NULL) != KB_OK)
            kb_log(KB_LOG_ERROR, "settlement at shutdown failed", "request_id", r->id, NULL);
        if (r->req && r->head_sent)
            abort_connection(r); /* cut: the client must not take it as whole */
        r->req = NULL;
        preq_free(r);
    }
    event_free(px->watch);
    keycache_free(px->keys);
    crypto_hmac_free(px->token_mac);
    for (size_t i = 0; i < POLICY_CACHE_SLOTS; i++)
        policy_free(px->policies[i].policy);
    upstream_free(px->up);
    free(px->bases);
    for (size_t i = 0; i < px->rt->cfg->nvendors; i++)
        free(px->inject[i]);
    free(px->inject);
    free(px);
}
