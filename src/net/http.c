/* http.c - JSON and error replies (see http.h). */
#include "net/http.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "net/httpd.h"

static int dump_to_buf(const char *p, size_t n, void *arg)
{
    buf_append(arg, p, n);
    return 0;
}

void http_reply_json(struct kb_hreq *req, int status, json_t *body)
{
    struct kb_buf b = KB_BUF_INIT;
    if (body) {
        hreq_add_header_z(req, "Content-Type", "application/json");
        if (json_dump_callback(body, dump_to_buf, &b, JSON_COMPACT) == 0)
            buf_putc(&b, '\n');
        else
            buf_reset(&b);
        json_decref(body);
    }
    hreq_reply(req, status, b.data, b.len);
    buf_cleanup(&b);
}

static json_t *error_body(enum kb_err err, const char *message, const char *field)
{
    json_t *o = json_object();
    json_object_set_new(o, "code", json_string(kb_strerror(err)));
    /* a message quoting bad input may not be UTF-8: fall back to the default */
    json_t *m = message ? json_string(message) : NULL;
    json_object_set_new(o, "message", m ? m : json_string(kb_errmsg(err)));
    if (field)
        json_object_set_new(o, "field", json_string(field));
    return o;
}

/* Refusals that a wait cures say how long to wait. */
static void retry_after(struct kb_hreq *req, enum kb_err err)
{
    if (err == KB_E_OVERLOADED)
        hreq_add_header_z(req, "Retry-After", "1");
}

void http_reply_error(struct kb_hreq *req, enum kb_err err, const char *message, const char *field)
{
    json_t *o = error_body(err, message, field);
    retry_after(req, err);
    hreq_add_header_z(req, "Keybrake-Error", kb_strerror(err));
    http_reply_json(req, kb_err_status(err), o);
}

/* A refusal that the same request will meet again: the vendor SDKs that
 * honour these headers (openai, anthropic: x-should-retry; stripe-node:
 * stripe-should-retry) then make one call, not three. Rate limits and our
 * own 5xx are transient and keep the SDKs' retry (with Retry-After where
 * waiting helps). */
static bool permanent(enum kb_err err)
{
    int st = kb_err_status(err);
    return st >= 400 && st < 500 && err != KB_E_RATE_LIMITED && err != KB_E_CLIENT_CLOSED;
}

void http_reply_proxy_error(struct kb_hreq *req, enum kb_err err, const char *message)
{
    http_reply_proxy_error_with(req, err, message, NULL);
}

void http_reply_proxy_error_with(struct kb_hreq *req, enum kb_err err, const char *message,
                                 json_t *extra)
{
    if (permanent(err)) {
        hreq_add_header_z(req, "x-should-retry", "false");
        hreq_add_header_z(req, "Stripe-Should-Retry", "false");
    }
    retry_after(req, err);
    json_t *o = error_body(err, message, NULL);
    json_t *e = json_pack("{s:s, s:O, s:O}", "type", "keybrake_error", "code",
                          json_object_get(o, "code"), "message", json_object_get(o, "message"));
    if (extra) {
        json_object_update(o, extra);
        json_object_update(e, extra);
    }
    json_object_set_new(o, "error", e);
    hreq_add_header_z(req, "Keybrake-Error", kb_strerror(err));
    http_reply_json(req, kb_err_status(err), o);
}
