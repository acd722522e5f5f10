/*
 * forward.c - the vendor's answer, streamed back as it arrives and metered
 * as it passes: header, status, body chunks (with back-pressure from a slow
 * client), and the end, which hands the request to settle.c with what it
 * cost. A client that leaves, a key revoked mid-stream and a vendor that
 * fails after the request went out all end here, charged fail-closed.
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
#include "proxy/upstream.h"
#include "proxy/proxy_int.h"
#include "store/store.h"
#include "store/writer.h"

static const char *const strip_response[] = {"connection", "keep-alive", "proxy-connection",
                                             "te",         "trailer",    "transfer-encoding",
                                             "upgrade",    NULL};

static void on_header(void *arg, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct preq *r = arg;
    /* Keybrake-* belongs to the proxy alone: a vendor (or anything in
     * front of it) must not speak for it, e.g. with its own cost header */
    if (r->client_gone || proxy__in_list(strip_response, name, nlen) ||
        (nlen >= 9 && strncasecmp(name, "keybrake-", 9) == 0))
        return;
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0 && !r->resp_ctype)
        r->resp_ctype = kb_strndup(value, vlen); /* the meter reads it */
    if (nlen == 16 && strncasecmp(name, "content-encoding", 16) == 0) {
        /* the meter decodes what it can; a second header makes a list,
         * which it does not read (blind: the reservation is charged) */
        char *prev = r->resp_cenc;
        r->resp_cenc =
            prev ? kb_asprintf("%s, %.*s", prev, (int)vlen, value) : kb_strndup(value, vlen);
        free(prev);
    }
    if (nlen == 14 && strncasecmp(name, "content-length", 14) == 0) {
        /* digits only: the upstream client checked them */
        r->resp_clen = 0;
        for (size_t i = 0; i < vlen && r->resp_clen < INT64_MAX / 10 - 9; i++)
            r->resp_clen = r->resp_clen * 10 + (value[i] - '0');
    }
    const struct kb_scrub *sc = &r->cred->scrub;
    if (sc->n) {
        /* a header echoing the secret is masked, in its value and in its
         * name ('*' is a token byte, so the name stays a valid one) */
        char *ncopy = kb_strndup(name, nlen);
        char *copy = kb_strndup(value, vlen);
        scrub_all(sc, ncopy, nlen);
        scrub_all(sc, copy, vlen);
        hreq_add_header(r->req, ncopy, nlen, copy, vlen);
        free(ncopy);
        free(copy);
        return;
    }
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
    meter_response_encoding(r->meter, r->resp_cenc);
    add_cost_headers(r, r->reserved);
    if (r->resp_clen >= 0) {
        /* framed by Content-Length: the head waits for the first body chunk
         * that is not the last, or for the settlement (on_body), so that a
         * small answer goes out whole, in one write, once its cost is
         * durable */
        r->head_deferred = true;
        return;
    }
    proxy__reply_start(r);
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
    if (r->client_gone || !r->status)
        return true;
    bool last = r->resp_clen >= 0 && r->bytes_out + (int64_t)len == r->resp_clen;
    if (r->head_deferred && !last)
        proxy__reply_start(r); /* a longer answer streams as it comes */
    if (r->head_sent && hreq_pending(r->req) > CLIENT_HIGH_WATER) {
        r->paused = true; /* client_drained resumes once the client caught up */
        hreq_set_drain_cb(r->req, client_drained, r);
        return false;
    }
    meter_response_data(r->meter, data, len);
    r->bytes_out += (int64_t)len;
    /* the vendor's secret never reaches the client, even when echoed */
    const char *safe;
    size_t n;
    scrub_feed(&r->cred->scrub, &r->hold, data, len,
               &r->scratch, &safe, &n);
    if (last && n > 0) {
        /* The answer's last chunk waits for its settlement's commit (like
         * the end of a chunked one): a client that has the whole answer
         * can read its cost in the key's usage at once. */
        struct kb_buf tail = KB_BUF_INIT;
        buf_reserve(&tail, n + r->hold.len);
        buf_append(&tail, safe, n);
        buf_append(&tail, r->hold.data ? r->hold.data : "", r->hold.len);
        buf_cleanup(&r->hold);
        r->hold = tail;
        n = 0;
    }
    if (n)
        hreq_reply_chunk(r->req, safe, n);
    return true;
}

static void on_done(void *arg, enum kb_err err, bool sent)
{
    struct preq *r = arg;
    r->up = NULL; /* the upstream client freed it */
    if (err == KB_OK) {
        int64_t actual = meter_settle(r->meter, true);
        /* a 5xx the meter charged (a payment that may have gone through) */
        r->outcome_unknown = r->status >= 500 && actual > 0;
        proxy__settle(r, actual, KB_OK, REPLY_FINISH);
    } else if (r->head_sent) {
        /* cut mid-body: the client must not mistake it for a whole answer */
        int64_t actual = meter_settle(r->meter, false);
        proxy__abort_connection(r);
        r->req = NULL;
        kb_log(KB_LOG_WARN, "upstream failed mid-response", "request_id", r->id, "code",
               kb_strerror(err), NULL);
        proxy__settle(r, actual, err, REPLY_NONE);
    } else if (sent) {
        /* The vendor may have read the request and acted on it (a timeout,
         * a reset after the write): only a definite answer releases a
         * reservation, so the worst case is charged and the audit record
         * says the outcome is unknown. */
        r->outcome_unknown = true;
        kb_log(KB_LOG_WARN, "vendor outcome unknown: the reservation is charged", "request_id",
               r->id, "code", kb_strerror(err), NULL);
        proxy__settle(r, r->status ? meter_settle(r->meter, false) : r->reserved, err, REPLY_ERROR);
    } else {
        proxy__settle(r, 0, err, REPLY_ERROR); /* nothing reached the vendor */
    }
}

const struct kb_upstream_ops proxy__upstream_ops = {on_header, on_head, on_body, on_done};

/* Whether the vendor may have read the request: false only when its
 * transfer is known and not one byte of it was written (fails closed). */
static bool may_have_sent(const struct preq *r)
{
    return !r->up || upstream_wrote(r->up);
}

/* The client connection closed while its request was in flight; the
 * server frees the request when this returns. */
void proxy__client_closed(struct kb_hreq *req, void *arg)
{
    (void)req;
    struct preq *r = arg;
    r->client_gone = true;
    r->px->unflushed--; /* its reply will never complete */
    r->req = NULL;
    kb_log(KB_LOG_INFO, "client closed before the response ended", "request_id", r->id, NULL);
    if (r->stage != ST_UPSTREAM)
        return; /* the writer's callback finishes it */
    bool sent = may_have_sent(r);
    if (r->up) {
        upstream_cancel(r->up);
        r->up = NULL;
    }
    /* The vendor may have acted on a request we could not see the end of:
     * charge the worst case unless the meter knows better. A request of
     * which no byte was written (its connection still opening) never
     * reached the vendor: released. */
    r->outcome_unknown = !r->status && sent;
    proxy__settle(r, r->status ? meter_settle(r->meter, false) : sent ? r->reserved : 0,
                  KB_E_CLIENT_CLOSED, REPLY_NONE);
}

/* The key of a request in flight was revoked or expired (why): stop the
 * vendor transfer and end the client's response where it stands. */
void proxy__cut(struct preq *r, enum kb_err why)
{
    bool sent = may_have_sent(r);
    if (r->up) {
        upstream_cancel(r->up);
        r->up = NULL;
    }
    /* the vendor may have acted already: a metered response is charged as
     * a cut stream, an unanswered one at the reservation, one of which no
     * byte was written not at all */
    int64_t actual = r->status ? meter_settle(r->meter, false) : sent ? r->reserved : 0;
    r->outcome_unknown = !r->status && sent;
    kb_log(KB_LOG_INFO, "response cut", "request_id", r->id, "key_id", r->key->id, "code",
           kb_strerror(why), NULL);
    if (!r->head_sent) {
        proxy__settle(r, actual, why, REPLY_ERROR);
        return;
    }
    proxy__abort_connection(r);
    r->req = NULL;
    proxy__settle(r, actual, why, REPLY_NONE);
}
