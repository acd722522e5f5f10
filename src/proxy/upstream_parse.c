/*
 * upstream_parse.c - reading a vendor's answer off a connection's buffer:
 * status line, headers (the line grammar is net/h1.c, shared with the
 * server), interim 1xx blocks, then a body framed by Content-Length, by
 * chunks or by the close, handed to the caller's callbacks as it comes.
 */
#include "proxy/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "proxy/upstream_int.h"

/* ---- the response parser (the line grammar is net/h1.c, shared with the server) ---- */

static bool token_in(const char *v, size_t vlen, const char *tok)
{
    size_t tlen = strlen(tok);
    for (size_t i = 0; i + tlen <= vlen; i++) {
        if (strncasecmp(v + i, tok, tlen) != 0)
            continue;
        size_t a = i, b = i + tlen;
        while (a > 0 && (v[a - 1] == ' ' || v[a - 1] == '\t'))
            a--;
        while (b < vlen && (v[b] == ' ' || v[b] == '\t'))
            b++;
        if ((a == 0 || v[a - 1] == ',') && (b == vlen || v[b] == ','))
            return true;
    }
    return false;
}

/* The last coding of a Transfer-Encoding value is chunked. */
static bool ends_chunked(const char *v, size_t vlen)
{
    const char *comma = NULL;
    for (size_t i = 0; i < vlen; i++)
        if (v[i] == ',')
            comma = v + i;
    const char *p = comma ? comma + 1 : v;
    size_t n = (size_t)(v + vlen - p);
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    return n == 7 && strncasecmp(p, "chunked", 7) == 0;
}

/* One line from buf[start, end), without its CRLF (or LF); NULL when it
 * has not arrived whole. */
static const char *take_line(struct conn *c, size_t *len)
{
    char *p = c->buf + c->start;
    char *nl = memchr(p, '\n', c->end - c->start);
    if (!nl)
        return NULL;
    size_t l = (size_t)(nl - p);
    c->start += l + 1;
    if (l && p[l - 1] == '\r')
        l--;
    *len = l;
    return p;
}

enum step { S_MORE, S_STOP, S_ERROR };

static enum step status_line(struct kb_upstream_req *r, const char *l, size_t n)
{
    int minor, st;
    if (!h1_status_line(l, n, &minor, &st))
        return S_ERROR;
    r->status = st;
    r->keep_alive = minor == 1;
    r->clen = -1;
    r->chunked = false;
    r->te = false;
    return S_MORE;
}

/* Calls back the caller; false when it cancelled meanwhile. */
#define CALL(r, expr) ((r)->in_cb++, (expr), (r)->in_cb--, !(r)->cancelled)

static enum step header_line(struct kb_upstream_req *r, const char *l, size_t n)
{
    size_t i, voff, vlen;
    if (h1_field_line(l, n, &i, &voff, &vlen) != H1_FIELD_OK)
        return S_ERROR; /* obs-fold, a space before the colon, no name, a control byte */
    const char *v = l + voff;
    if (i == 14 && strncasecmp(l, "content-length", 14) == 0) {
        int64_t len = 0;
        if (!h1_content_length(v, vlen, &len))
            return S_ERROR;
        if (r->clen >= 0 && r->clen != len)
            return S_ERROR;
        r->clen = len;
        return S_MORE; /* head_end reports the one framing that holds */
    } else if (i == 17 && strncasecmp(l, "transfer-encoding", 17) == 0) {
        r->te = true;
        r->chunked = ends_chunked(v, vlen);
        if (!r->chunked)
            r->keep_alive = false; /* framed by the connection's end */
        return S_MORE;
    } else if (i == 10 && strncasecmp(l, "connection", 10) == 0) {
        if (token_in(v, vlen, "close"))
            r->keep_alive = false;
    }
    if (r->status >= 200 && !CALL(r, r->ops->on_header(r->arg, l, i, v, vlen)))
        return S_STOP;
    return S_MORE;
}

/* The header block ended. */
static enum step head_end(struct kb_upstream_req *r)
{
    if (r->status < 200) {
        if (r->status == 101 || ++r->interim > MAX_INTERIM)
            return S_ERROR; /* nobody asked to switch protocols; or a vendor
                               keeping the request alive with 1xx forever */
        r->ps = P_STATUS;   /* an interim answer: the real one follows */
        r->head_bytes = 0;
        return S_MORE;
    }
    r->head_sent = true;
    /* Content-Length is told only when it is the framing (RFC 9112 6.3:
     * with chunked it must go), once, however the vendor repeated it; the
     * body the caller gets is de-chunked either way */
    if (r->clen >= 0 && !r->te) {
        char n[24];
        int nl = snprintf(n, sizeof n, "%lld", (long long)r->clen);
        if (!CALL(r, r->ops->on_header(r->arg, "Content-Length", 14, n, (size_t)nl)))
            return S_STOP;
    }
    if (!CALL(r, r->ops->on_head(r->arg, r->status)))
        return S_STOP;
    if (r->no_body || r->status == 204 || r->status == 304) {
        r->ps = P_LENGTH;
        r->remaining = 0;
    } else if (r->chunked) {
        if (r->clen >= 0)
            r->keep_alive = false; /* both framings: trust neither afterwards */
        r->ps = P_CHUNK_SIZE;
    } else if (r->clen >= 0 && !r->te) {
        r->ps = P_LENGTH;
        r->remaining = r->clen;
    } else {
        r->ps = P_EOF;
        r->keep_alive = false;
    }
    return S_MORE;
}

/* Hands body bytes to the caller; S_STOP when it paused or cancelled. */
static enum step deliver(struct kb_upstream_req *r, const char *p, size_t n)
{
    if (n == 0)
        return S_MORE;
    bool took = true;
    if (!CALL(r, took = r->ops->on_body(r->arg, p, n)))
        return S_STOP;
    if (!took) {
        r->paused = true;
        upstream__conn_watch(r->c, 0);
        return S_STOP;
    }
    return S_MORE;
}

static enum step chunk_size(struct kb_upstream_req *r, const char *l, size_t n)
{
    int64_t v;
    if (!h1_chunk_size(l, n, &v))
        return S_ERROR;
    r->remaining = v;
    r->ps = v ? P_CHUNK_DATA : P_TRAILER;
    return S_MORE;
}

/* Parses and delivers what the buffer holds. False when the request ended
 * (the connection freed or pooled) or paused: stop reading. */
bool upstream__conn_process(struct conn *c)
{
    struct kb_upstream_req *r = c->req;
    enum step s = S_MORE;
    while (s == S_MORE) {
        const char *l = NULL;
        size_t n = 0, avail = c->end - c->start;
        switch (r->ps) {
        case P_STATUS:
        case P_HEADER:
        case P_CHUNK_SIZE:
        case P_CHUNK_END:
        case P_TRAILER:
            l = take_line(c, &n);
            if (!l) {
                if (avail > MAX_HEAD)
                    s = S_ERROR;
                else
                    goto need_more;
                break;
            }
            if (r->ps == P_STATUS || r->ps == P_HEADER) {
                r->head_bytes += n + 2;
                if (r->head_bytes > MAX_HEAD) {
                    s = S_ERROR;
                    break;
                }
            }
            if (r->ps == P_STATUS) {
                s = status_line(r, l, n);
                r->ps = P_HEADER;
            } else if (r->ps == P_HEADER) {
                s = n == 0 ? head_end(r) : header_line(r, l, n);
            } else if (r->ps == P_CHUNK_SIZE) {
                s = chunk_size(r, l, n);
            } else if (r->ps == P_CHUNK_END) {
                s = n == 0 ? S_MORE : S_ERROR;
                r->ps = P_CHUNK_SIZE;
            } else if (n == 0) { /* P_TRAILER: the blank line ends the response */
                r->ps = P_LENGTH;
                r->remaining = 0;
            }
            break;
        case P_LENGTH:
        case P_CHUNK_DATA: {
            size_t take = avail < (uint64_t)r->remaining ? avail : (size_t)r->remaining;
            s = deliver(r, c->buf + c->start, take);
            if (s != S_MORE)
                break;
            c->start += take;
            r->remaining -= (int64_t)take;
            if (r->remaining > 0)
                goto need_more;
            if (r->ps == P_CHUNK_DATA) {
                r->ps = P_CHUNK_END;
                break;
            }
            /* the response is whole */
            bool pool = r->keep_alive && r->sent == r->out_len + r->body_len;
            upstream__conn_release(c, pool);
            upstream__req_finish(r, KB_OK);
            return false;
        }
        case P_EOF:
            s = deliver(r, c->buf + c->start, avail);
            if (s != S_MORE)
                break;
            c->start += avail;
            goto need_more;
        }
    }
    if (r->cancelled) {
        /* cancelled from a callback: mid-response, the connection cannot
         * be reused */
        upstream__conn_release(c, false);
        upstream__req_free(r);
    } else if (s == S_ERROR) {
        upstream__conn_fail(c, KB_E_UPSTREAM_ERROR, "malformed response");
    }
    return false; /* or paused */
need_more:
    if (c->start == c->end)
        c->start = c->end = 0;
    return true;
}
