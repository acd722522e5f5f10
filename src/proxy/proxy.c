/*
 * proxy.c - one proxied request, start to finish (see proxy.h): the spine
 * that runs each step of the request path in order, and the worker's proxy
 * itself (creation, drain, free).
 *
 * proxy_handle() decides everything that can refuse a request before a
 * byte leaves: canonical target, vendor, vault token, key state, the one
 * canonical request, endpoint policy, cost reservation. The steps live in
 * their own files (proxy_int.h lists them in order).
 *
 * Ownership: struct preq owns everything of one request and is freed in
 * exactly one place, proxy__preq_free(). The HTTP server owns the kb_hreq;
 * once a reply is sent (or the client is gone) we never touch it again.
 */
#include "proxy/proxy.h"

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
#include "core/mailbox.h"
#include "core/runtime.h"
#include "audit/audit.h"
#include "meter/meter.h"
#include "net/http.h"
#include "net/httpd.h"
#include "core/crypto.h"
#include "policy/canon.h"
#include "policy/pattern.h"
#include "proxy/canonical.h"
#include "proxy/hygiene.h"
#include "proxy/keycache.h"
#include "store/revlog.h"
#include "proxy/upstream.h"
#include "proxy/proxy_int.h"
#include "store/store.h"
#include "store/writer.h"

bool proxy__in_list(const char *const *list, const char *name, size_t len)
{
    for (; *list; list++)
        if (strlen(*list) == len && strncasecmp(*list, name, len) == 0)
            return true;
    return false;
}

/* A draining worker may stop once no request is in flight and every reply
 * has been written out: exiting earlier would drop replies still buffered. */
void proxy__maybe_drained(struct kb_proxy *px)
{
    if (px->draining && px->ninflight == 0 && px->unflushed == 0 && px->nreads == 0 &&
        px->drained_cb) {
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
    proxy__maybe_drained(px);
}

/* The answer cannot be completed: what is queued goes out, then the
 * connection closes (no terminating chunk: the client sees it cut short).
 * The server frees the request without calling reply_flushed. */
void proxy__abort_connection(struct preq *r)
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

void proxy__preq_free(struct preq *r)
{
    struct kb_proxy *px = r->px;
    if (r->req)
        hreq_set_close_cb(r->req, NULL, NULL);
    preq_unlink(r);
    metrics_inflight(-1);
    meter_free(r->meter);
    keycache_put(r->key);
    buf_cleanup(&r->headers);
    buf_cleanup(&r->hold);
    buf_cleanup(&r->scratch);
    free(r->body);
    free(r->path);
    free(r->resp_ctype);
    free(r->resp_cenc);
    free(r->holds);
    free(r->exhausted);
    free(r->refusal);
    if (r->retry)
        event_free(r->retry);
    free(r);
    proxy__maybe_drained(px);
}

void proxy__reply_start(struct preq *r)
{
    hreq_reply_start(r->req, r->status);
    r->head_sent = true;
    r->head_deferred = false;
}

int proxy__vendor_index(const struct kb_proxy *px, const struct kb_vendor *v)
{
    return v ? (int)(v - px->rt->cfg->vendors) : -1;
}

/* ---- the request path ---- */

/* The request, once its key is known: `found` (a key-cache reference, or
 * NULL) and `found_err` are what proxy__key_find or proxy__key_read said. */
static void serve(struct kb_proxy *px, struct kb_hreq *req, const struct kb_key *found,
                  enum kb_err found_err)
{
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
    size_t max_path = (size_t)runtime_limit(&px->rt->limits.max_path_bytes);
    if ((err = policy_canon_check(target, tlen, max_path, &plen, &msg)) != KB_OK)
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
    int64_t now = clock_now();
    int64_t day = clock_day(now);
    const struct kb_hdr *hdrs;
    size_t nhdrs = hreq_headers(req, &hdrs);
    key = found; /* revoked or expired, it is still the key's refusal */
    found = NULL;
    if ((err = found_err != KB_OK ? found_err : proxy__key_verdict(key, now)) != KB_OK)
        goto refused;
    const struct kb_vendor *kv = config_vendor(cfg, key->vendor, strlen(key->vendor));
    if (prefixed && kv != prefixed) {
        err = KB_E_VENDOR_MISMATCH;
        msg = kb_asprintf("this vault key is for %s, not %s", key->vendor, prefixed->name);
        goto refused;
    }
    vendor = kv;
    /* the credentials in force now serve this request to its end */
    err = KB_E_VENDOR_NOT_CONFIGURED;
    const struct kb_cred *cred =
        vendor ? proxy__cred_for(px, key, (size_t)(vendor - cfg->vendors), &err) : NULL;
    if (!cred)
        goto refused; /* err says why */

    /* 5. the one reading of the request: canonical path, decoded body,
     * query folded where the vendor reads it; everything below is built
     * from it */
    const char *q = memchr(vpath, '?', tlen - (size_t)(vpath - target));
    if ((err = canonical_build(req, vendor, cred->account, key->allowed_accounts, method,
                               plen ? vpath : "/", plen ? plen : 1, q ? q + 1 : NULL,
                               (size_t)runtime_limit(&px->rt->limits.max_body_bytes), &canon,
                               &msg)) != KB_OK)
        goto refused;
    vpath = canon.path; /* refusals from here on record the canonical path */
    plen = canon.path_len;

    /* 6. endpoint policy, on exactly the path that will be forwarded */
    const struct kb_policy *pol = proxy__key_policy(px, key);
    if (!pol || !policy_allows(pol, method, canon.path, canon.path_len)) {
        err = KB_E_ENDPOINT_NOT_ALLOWED;
        goto refused;
    }

    /* 7. worst-case cost, reserved atomically against today's cap */
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
                                .nheaders = nhdrs,
                                .allowed_models = key->allowed_models,
                                .max_amount = key->max_amount};
    int64_t reserve = 0;
    char *metered_body = NULL;
    size_t metered_len = 0;
    err = meter_begin(runtime_pricing(px->rt), &mreq, &meter, &reserve, &metered_body, &metered_len,
                      &msg);
    if (err != KB_OK)
        goto refused;
    if (metered_body) {
        free(canon.owned);
        canon.owned = metered_body;
        canon.body = metered_body;
        canon.body_len = metered_len;
    }

    /* 8. reserve, record, then forward: the writer commits the reservation
     * and the audit record before proxy__admit_done sends anything */
    struct preq *r = kb_calloc(1, sizeof *r);
    r->px = px;
    r->stage = ST_ADMIT;
    r->req = req;
    r->key = key;
    r->vendor = vendor;
    r->cred = cred;
    r->expires_at = key->expires_at;
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
    r->resp_clen = -1;
    r->path = canon.path;
    r->ts_ms = clock_now_ms();
    r->start_us = start_us;
    memcpy(r->id, id, sizeof r->id);
    proxy__build_headers(req, vendor, cred, &canon, &r->headers);
    key = NULL;
    meter = NULL;
    canon.owned = canon.path = NULL;
    r->next = px->inflight;
    if (px->inflight)
        px->inflight->prev = r;
    px->inflight = r;
    px->ninflight++;
    metrics_inflight(1);
    hreq_set_close_cb(req, proxy__client_closed, r);
    writer_submit_group(px->port, &proxy__admit_group, proxy__admit_done, r);
    free(msg);
    return;

refused:
    if (!key && err != KB_E_TOKEN_IN_QUERY) {
        /* refused before its key was looked at (a bad path, a body too
         * large): a valid token still makes it the key's refusal, audited
         * under it, not a stranger's */
        key = found;
        found = NULL;
    }
    proxy__refuse(px, req, err, msg, id, start_us, method, key, vendor, vpath, plen);
    meter_free(meter);
    keycache_put(key);
    keycache_put(found);
    canonical_cleanup(&canon);
}

/* A parked request's key was read. */
static void serve_read(struct kb_proxy *px, void *waiter, const struct kb_key *key, enum kb_err err)
{
    serve(px, waiter, key, err);
}

/* A parked request's client left: its read goes on unanswered. */
static void parked_client_left(struct kb_hreq *req, void *arg)
{
    (void)req;
    proxy__key_read_forget(arg);
}

static void parked_detach(void *waiter)
{
    hreq_set_close_cb(waiter, NULL, NULL);
}

void proxy_handle(struct kb_hreq *req, void *arg)
{
    struct kb_proxy *px = arg;
    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    const char *target = hreq_target(req);
    uint8_t hash[KB_HASH_LEN];
    const struct kb_key *key = NULL;
    enum kb_err err = proxy__key_find(px, target ? target : "", h, nh, hash, &key);
    /* the gate already judged this token (a body's head): unknown, or the
     * store's reader queue full; no second read for the same answer. Any
     * other refusal still reads the key, so that it is audited under it */
    const char *perr;
    enum kb_err gate = hreq_error(req, &perr);
    if (err == KB_E_NOT_FOUND && (gate == KB_E_INVALID_TOKEN || gate == KB_E_STORE))
        err = gate;
    if (err == KB_E_NOT_FOUND) {
        struct proxy__key_read *l = proxy__key_read(px, hash, serve_read, req, parked_detach);
        if (l) {
            hreq_set_close_cb(req, parked_client_left, l);
            return; /* serve() goes on once the key was read, off the loop */
        }
        err = KB_E_STORE; /* the reader's queue is full */
    }
    serve(px, req, key, err);
}

enum kb_err proxy_new(struct event_base *base, const struct kb_runtime *rt, int worker,
                      struct kb_proxy **out, char **errmsg)
{
    const struct kb_config *cfg = rt->cfg;
    struct kb_proxy *px = kb_calloc(1, sizeof *px);
    px->base = base;
    px->rt = rt;
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
    px->port = writer_port_new(rt->writer, base);
    px->keys = keycache_new(KEY_CACHE_SLOTS, rt->revlog);
    px->mailbox = mailbox_new(base);
    px->watch_seen = revlog_head(rt->revlog);
    px->token_mac = crypto_hmac_new(rt->server_key, KB_HASH_LEN);
    px->watch = event_new(base, -1, EV_PERSIST, proxy__watch_revocations, px);
    struct timeval tv = {0, REVOCATION_WATCH_MS * 1000};
    event_add(px->watch, &tv);
    proxy__strangers_start(px);
    *out = px;
    return KB_OK;
}

bool proxy_idle(const struct kb_proxy *px)
{
    return px->ninflight == 0 && px->unflushed == 0 && px->nreads == 0;
}

void proxy_drain(struct kb_proxy *px, kb_drained_cb cb, void *arg)
{
    px->draining = true;
    px->drained_cb = cb;
    px->drained_arg = arg;
    proxy__maybe_drained(px);
}

void proxy_free(struct kb_proxy *px)
{
    if (!px)
        return;
    px->drained_cb = NULL;
    /* Only after a shutdown timeout are requests still here. Those waiting
     * on the writer are left to it (its job still reads them: they are not
     * freed, a bounded leak at exit). Those talking to a vendor, and
     * settlements waiting for a retry, are settled by a job of their own,
     * with their completion record: at their worst case (the vendor may
     * have acted; cut answers are audited as outcome unknown), or at the
     * cost already known, or at nothing when no byte of theirs was written. The writer runs them before it stops. */
    for (struct preq *r = px->inflight, *next; r; r = next) {
        next = r->next;
        if (r->req)
            hreq_set_close_cb(r->req, NULL, NULL);
        if (r->retry && evtimer_pending(r->retry, NULL)) {
            proxy__settle_detached(r, r->actual, r->fail);
            proxy__preq_free(r);
            continue;
        }
        if (r->stage != ST_UPSTREAM)
            continue;
        /* not one byte written (the connection still opening): the
         * vendor never saw it, nothing is charged */
        bool sent = !r->up || upstream_wrote(r->up);
        upstream_cancel(r->up);
        r->up = NULL;
        r->outcome_unknown = sent;
        proxy__settle_detached(r, sent ? r->reserved : 0, KB_E_SHUTTING_DOWN);
        if (r->req && r->head_sent)
            proxy__abort_connection(r); /* cut: the client must not take it as whole */
        r->req = NULL;
        proxy__preq_free(r);
    }
    proxy__strangers_stop(px); /* what was counted reaches the audit log */
    event_free(px->watch);
    proxy__key_reads_orphan(px);
    mailbox_close(px->mailbox);
    keycache_free(px->keys);
    crypto_hmac_free(px->token_mac);
    for (size_t i = 0; i < POLICY_CACHE_SLOTS; i++)
        policy_free(px->policies[i].policy);
    upstream_free(px->up);
    free(px->bases);
    writer_port_free(px->port);
    free(px);
}
