/*
 * httpd_reply.c - what a request's handler calls (see httpd.h): the
 * request's getters, response headers, whole and streamed replies, abort.
 *
 * An answer is queued on the connection's output buffer and written at
 * once (a whole reply) or at the end of the loop turn (a streamed one, so
 * the chunks a vendor delivered in one read leave in one write). A request
 * whose client has left (`conn` NULL) is detached: replies to it only
 * finish it and free it. The framing headers (Content-Length,
 * Transfer-Encoding, Connection) are ours alone.
 */
#include "net/httpd.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "net/httpd_int.h"

/* ---- the request API ---- */

enum kb_method hreq_method(const struct kb_hreq *r)
{
    return r->method;
}

const char *hreq_method_name(const struct kb_hreq *r)
{
    return r->method_name;
}

const char *hreq_target(const struct kb_hreq *r)
{
    return r->target;
}

const char *hreq_peer(const struct kb_hreq *r)
{
    return r->peer;
}

enum kb_err hreq_error(const struct kb_hreq *r, const char **msg)
{
    if (msg)
        *msg = r->errmsg;
    return r->error;
}

size_t hreq_headers(const struct kb_hreq *r, const struct kb_hdr **out)
{
    *out = r->hdrs;
    return r->nh;
}

const char *hreq_header(const struct kb_hreq *r, const char *name)
{
    for (size_t i = 0; i < r->nh; i++)
        if (strcasecmp(r->hdrs[i].name, name) == 0)
            return r->hdrs[i].value;
    return NULL;
}

const char *hreq_body(const struct kb_hreq *r, size_t *len)
{
    *len = r->body_len;
    return r->body;
}

static bool clean(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return false;
    return true;
}

void hreq_add_header(struct kb_hreq *r, const char *name, size_t nlen, const char *value,
                     size_t vlen)
{
    if (r->started || nlen == 0 || !clean(name, nlen) || !clean(value, vlen))
        return;
    /* the connection's framing is ours alone */
    if (nlen == 10 && strncasecmp(name, "connection", 10) == 0) {
        if (vlen == 5 && strncasecmp(value, "close", 5) == 0)
            r->close_after = true;
        return;
    }
    if (nlen == 17 && strncasecmp(name, "transfer-encoding", 17) == 0)
        return;
    if (nlen == 14 && strncasecmp(name, "content-length", 14) == 0)
        r->has_clen = true;
    if (nlen == 4 && strncasecmp(name, "date", 4) == 0)
        r->has_date = true;
    buf_append(&r->head, name, nlen);
    buf_append(&r->head, ": ", 2);
    buf_append(&r->head, value, vlen);
    buf_append(&r->head, "\r\n", 2);
}

void hreq_add_header_z(struct kb_hreq *r, const char *name, const char *value)
{
    hreq_add_header(r, name, strlen(name), value, strlen(value));
}

void hreq_reset_headers(struct kb_hreq *r)
{
    if (r->started)
        return;
    buf_reset(&r->head);
    r->has_clen = false;
    r->has_date = false;
}

void hreq_trust(struct kb_hreq *r)
{
    if (r->conn)
        r->conn->trusted = true;
}

void hreq_close_after(struct kb_hreq *r)
{
    r->close_after = true;
}

void hreq_set_complete_cb(struct kb_hreq *r, kb_hreq_cb cb, void *arg)
{
    r->complete_cb = cb;
    r->complete_arg = arg;
}

void hreq_set_close_cb(struct kb_hreq *r, kb_hreq_cb cb, void *arg)
{
    r->close_cb = cb;
    r->close_arg = arg;
}

void hreq_set_drain_cb(struct kb_hreq *r, kb_hreq_cb cb, void *arg)
{
    r->drain_cb = cb;
    r->drain_arg = arg;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 300   ? "OK"
               : status < 400 ? "Redirect"
               : status < 500 ? "Client Error"
                              : "Server Error";
    }
}

/* The Date header, formatted once per second per thread. */
static const char *http_date(void)
{
    static _Thread_local time_t last;
    static _Thread_local char text[40];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return text;
}

/* Queues the status line and headers. `len` < 0: streamed. */
static void put_head(struct kb_hreq *r, int status, int64_t len)
{
    struct hconn *c = r->conn;
    r->started = true;
    r->no_body = r->method == KB_M_HEAD || status < 200 || status == 204 || status == 304;
    char line[256];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, reason(status));
    evbuffer_add(c->out, line, (size_t)n);
    if (r->head.len)
        evbuffer_add(c->out, r->head.data, r->head.len);
    n = 0;
    if (!r->has_date)
        n += snprintf(line + n, sizeof line - (size_t)n, "Date: %s\r\n", http_date());
    if (len >= 0) {
        if (status >= 200 && status != 204 && status != 304)
            n += snprintf(line + n, sizeof line - (size_t)n, "Content-Length: %lld\r\n",
                          (long long)len);
    } else if (!r->has_clen && !r->no_body) {
        if (r->minor == 1) {
            r->chunked = true;
            n += snprintf(line + n, sizeof line - (size_t)n, "Transfer-Encoding: chunked\r\n");
        } else {
            r->close_after = true; /* HTTP/1.0: the body ends with the connection */
        }
    }
    if (r->close_after)
        n += snprintf(line + n, sizeof line - (size_t)n, "Connection: close\r\n");
    else if (r->minor == 0)
        n += snprintf(line + n, sizeof line - (size_t)n, "Connection: keep-alive\r\n");
    n += snprintf(line + n, sizeof line - (size_t)n, "\r\n");
    evbuffer_add(c->out, line, (size_t)n);
}

/* A streamed answer goes out at the end of this loop turn: the head and
 * the chunks a vendor delivered in one read leave in one write, and a
 * stream's first bytes never wait for more. */
static void flush_soon(struct hconn *c)
{
    if (!c->flush_soon && !c->writing) {
        c->flush_soon = true;
        event_active(c->wev, EV_WRITE, 1);
    }
}

/* The handler's final reply on a request whose client already left. */
static void finish_detached(struct kb_hreq *r)
{
    r->finished = true;
    if (r->complete_cb)
        r->complete_cb(r, r->complete_arg);
    httpd__req_free(r);
}

void hreq_reply(struct kb_hreq *r, int status, const void *body, size_t len)
{
    struct hconn *c = r->conn;
    if (!c) {
        finish_detached(r);
        return;
    }
    put_head(r, status, (int64_t)len);
    if (len && !r->no_body)
        evbuffer_add(c->out, body, len);
    r->finished = true;
    c->depth++;
    httpd__conn_flush(c);
    httpd__conn_leave(c);
}

void hreq_reply_start(struct kb_hreq *r, int status)
{
    if (!r->conn || r->started)
        return;
    put_head(r, status, -1);
    flush_soon(r->conn);
}

void hreq_reply_chunk(struct kb_hreq *r, const void *data, size_t len)
{
    struct hconn *c = r->conn;
    if (!c || !r->started || r->finished || len == 0 || r->no_body)
        return;
    if (r->chunked) {
        char size[24];
        int n = snprintf(size, sizeof size, "%zx\r\n", len);
        evbuffer_add(c->out, size, (size_t)n);
        evbuffer_add(c->out, data, len);
        evbuffer_add(c->out, "\r\n", 2);
    } else {
        evbuffer_add(c->out, data, len);
    }
    flush_soon(c);
}

void hreq_reply_end(struct kb_hreq *r)
{
    struct hconn *c = r->conn;
    if (!c) {
        finish_detached(r);
        return;
    }
    if (!r->started)
        put_head(r, 200, -1);
    if (r->chunked)
        evbuffer_add(c->out, "0\r\n\r\n", 5);
    r->finished = true;
    c->depth++;
    httpd__conn_flush(c);
    httpd__conn_leave(c);
}

size_t hreq_pending(const struct kb_hreq *r)
{
    return r->conn ? evbuffer_get_length(r->conn->out) : 0;
}

void hreq_abort(struct kb_hreq *r)
{
    struct hconn *c = r->conn;
    if (c) {
        /* what is queued goes out first: the client then sees an answer cut
         * short, not a connection that died before answering */
        (void)httpd__conn_send(c);
        c->tls_cut = true;
        c->req = NULL;
        r->conn = NULL;
        httpd__conn_close(c);
    }
    httpd__req_free(r);
}
