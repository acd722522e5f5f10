/*
 * httpd_parse.c - one HTTP/1.1 request out of a connection's read buffer
 * (see httpd.h for the rules; httpd_int.h for the parts).
 *
 * The head is searched for its blank line, split into NUL-terminated names
 * and values (kept as offsets while the buffer may still grow) and checked
 * strictly: anything whose framing could be read two ways is refused. The
 * on_head gate and the body budget see the head before any body byte is
 * read; the body is then read behind it, a chunked one decoded where it
 * lies. A whole (or refused) request takes the buffer and goes to the
 * handler; the connection keeps reading into a fresh one.
 *
 * Linear work: every byte is scanned for the head's end once (`scanned`),
 * and a chunked body's framing is compacted away as it is decoded.
 */
#include "net/httpd.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "net/h1.h"
#include "net/httpd_int.h"

static const char *const method_names[] = {"GET",    "POST",    "HEAD", "PUT",
                                           "DELETE", "OPTIONS", "PATCH"};

const char *http_method_text(enum kb_method m)
{
    return m < KB_M_OTHER ? method_names[m] : NULL;
}

void httpd__parse_reset(struct hconn *c)
{
    c->scanned = 0;
    c->head_len = 0;
    c->nh = 0;
    c->target_off = 0;
    c->method = KB_M_OTHER;
    c->minor = 1;
    c->line_ok = false;
    c->keepalive = true;
    c->expect_continue = false;
    c->chunked = false;
    c->clen = 0;
    c->ch = CH_SIZE;
    c->body_end = 0;
    c->cursor = 0;
    c->chunk_left = 0;
    c->trailer = 0;
}

/* Hands the read buffer (its first `consumed` bytes are the request) to a
 * new request and gives the connection a fresh buffer with the rest. */
static struct kb_hreq *take_request(struct hconn *c, size_t consumed, size_t nh)
{
    struct kb_hreq *r = kb_calloc(1, sizeof *r + nh * sizeof r->hdrs[0]);
    r->conn = c;
    memcpy(r->peer, c->peer, sizeof r->peer);
    r->buf = c->rbuf;
    r->bufcap = c->rcap;
    r->budget = c->h->o.buffered;
    r->charged = c->charged; /* the charge goes with the bytes */
    c->charged = 0;
    size_t left = c->rlen - consumed;
    c->rcap = left > RBUF_INIT ? left : RBUF_INIT;
    if (c->rcap == RBUF_INIT && c->spare) {
        c->rbuf = c->spare; /* no allocation per request on a kept-alive connection */
        c->spare = NULL;
    } else {
        c->rbuf = kb_malloc(c->rcap);
    }
    memcpy(c->rbuf, r->buf + consumed, left);
    c->rlen = left;
    r->method = c->method;
    r->minor = c->minor;
    r->method_name = c->line_ok ? r->buf : "";
    r->target = c->line_ok ? r->buf + c->target_off : NULL;
    r->nh = nh;
    for (size_t i = 0; i < nh; i++) {
        r->hdrs[i].name = r->buf + c->hoff[i].name;
        r->hdrs[i].value = r->buf + c->hoff[i].value;
    }
    return r;
}

static void dispatch(struct hconn *c, struct kb_hreq *r)
{
    c->req = r;
    c->state = C_HANDLING;
    if (!c->keepalive)
        r->close_after = true;
    httpd__parse_reset(c);
    evtimer_del(c->timer);
    c->h->o.on_request(r, c->h->o.arg);
}

void httpd__dispatch_error(struct hconn *c, enum kb_err err, const char *msg)
{
    struct kb_hreq *r = take_request(c, c->rlen, c->head_len ? c->nh : 0);
    c->rlen = 0; /* nothing after a refused request is read as a request */
    r->error = err;
    r->errmsg = msg;
    r->close_after = true;
    dispatch(c, r);
}

/* ---- parsing ---- */

static size_t find_head_end(struct hconn *c)
{
    size_t i = c->scanned;
    while (i < c->rlen) {
        char *lf = memchr(c->rbuf + i, '\n', c->rlen - i);
        if (!lf)
            break;
        size_t at = (size_t)(lf - c->rbuf);
        if (at + 1 < c->rlen && c->rbuf[at + 1] == '\n')
            return at + 2;
        if (at + 2 < c->rlen && c->rbuf[at + 1] == '\r' && c->rbuf[at + 2] == '\n')
            return at + 3;
        if (at + 2 >= c->rlen) {
            c->scanned = at; /* the blank line may still be arriving */
            return 0;
        }
        i = at + 1;
    }
    c->scanned = c->rlen;
    return 0;
}

bool http_token_in_list(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = v; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if ((size_t)(e - p) == n && strncasecmp(p, tok, n) == 0)
            return true;
        p = e;
    }
    return false;
}

/* Parses the head [0, end): request line, headers, framing. Names and
 * values are NUL-terminated in place. On refusal *msg says why. */
static enum kb_err parse_head(struct hconn *c, size_t end, const char **msg)
{
    char *b = c->rbuf, *e = b + end;
    char *lf = memchr(b, '\n', end);
    char *le = lf > b && lf[-1] == '\r' ? lf - 1 : lf;
    /* request line: method SP target SP HTTP/1.x, nothing else */
    size_t mlen, toff, tlen;
    bool bad_version;
    if (!h1_request_line(b, (size_t)(le - b), &mlen, &toff, &tlen, &c->minor, &bad_version)) {
        *msg =
            bad_version ? "only HTTP/1.0 and HTTP/1.1 are served" : "the request line is malformed";
        return KB_E_BAD_REQUEST;
    }
    b[mlen] = '\0';
    c->method = KB_M_OTHER;
    for (int m = 0; m < KB_M_OTHER; m++)
        if (strcmp(b, method_names[m]) == 0)
            c->method = (enum kb_method)m;
    b[toff + tlen] = '\0';
    c->target_off = (uint32_t)toff;
    c->keepalive = c->minor == 1;
    c->line_ok = true;

    char *p;
    int ncl = 0, nte = 0;
    for (p = lf + 1; p < e;) {
        lf = memchr(p, '\n', (size_t)(e - p));
        le = lf > p && lf[-1] == '\r' ? lf - 1 : lf;
        if (le == p)
            break; /* the blank line */
        size_t nlen, voff, vlen;
        switch (h1_field_line(p, (size_t)(le - p), &nlen, &voff, &vlen)) {
        case H1_FIELD_OK:
            break;
        case H1_FIELD_FOLD:
            *msg = "a folded header line (obs-fold) is not accepted";
            return KB_E_BAD_REQUEST;
        case H1_FIELD_NAME:
            *msg = "a request header name is not a valid token";
            return KB_E_BAD_REQUEST;
        case H1_FIELD_CTL:
            *msg = "a request header value contains a control byte";
            return KB_E_BAD_REQUEST;
        }
        char *n = p, *v = p + voff, *ve = v + vlen;
        n[nlen] = '\0';
        *ve = '\0';
        if (c->nh >= httpd__limz(c->h->o.max_headers)) {
            *msg = "too many request headers";
            return KB_E_HEADERS_TOO_LARGE;
        }
        if (c->nh == c->hcap) {
            c->hcap = c->hcap ? c->hcap * 2 : 16;
            c->hoff = kb_realloc(c->hoff, c->hcap * sizeof *c->hoff);
        }
        c->hoff[c->nh].name = (uint32_t)(n - b);
        c->hoff[c->nh].value = (uint32_t)(v - b);
        c->nh++;
        if (strcasecmp(n, "content-length") == 0) {
            int64_t len;
            if (++ncl > 1 || !h1_content_length(v, vlen, &len)) {
                *msg = "Content-Length must appear once, as plain digits";
                return KB_E_BAD_REQUEST;
            }
            c->clen = len;
        } else if (strcasecmp(n, "transfer-encoding") == 0) {
            if (++nte > 1 || strcasecmp(v, "chunked") != 0 || c->minor == 0) {
                *msg = "Transfer-Encoding must be a single \"chunked\" on HTTP/1.1";
                return KB_E_BAD_REQUEST;
            }
            c->chunked = true;
        } else if (strcasecmp(n, "connection") == 0) {
            if (http_token_in_list(v, "close"))
                c->keepalive = false;
            else if (c->minor == 0 && http_token_in_list(v, "keep-alive"))
                c->keepalive = true;
        } else if (strcasecmp(n, "expect") == 0) {
            c->expect_continue = strcasecmp(v, "100-continue") == 0;
        }
        p = lf + 1;
    }
    if (ncl && nte) {
        *msg = "Content-Length and Transfer-Encoding together";
        return KB_E_BAD_REQUEST;
    }
    return KB_OK;
}

enum dechunk {
    DC_WAIT = 0, /* needs more bytes */
    DC_DONE = 1, /* the body is whole */
    DC_BAD = 2,  /* refused; *err, *msg set */
};

/* Decodes what has arrived of a chunked body, moving data down to
 * body_end so the decoded body lies contiguous after the head. */
static enum dechunk dechunk(struct hconn *c, enum kb_err *err, const char **msg)
{
    char *b = c->rbuf;
    size_t max = c->body_max;
    for (;;) {
        size_t avail = c->rlen - c->cursor;
        if (c->ch == CH_SIZE || c->ch == CH_TRAILER) {
            char *lf = memchr(b + c->cursor, '\n', avail);
            size_t linemax = c->ch == CH_SIZE ? MAX_CHUNK_LINE : c->header_max;
            if (!lf) {
                if (avail > linemax)
                    goto too_long;
                break;
            }
            char *p = b + c->cursor, *le = lf > p && lf[-1] == '\r' ? lf - 1 : lf;
            size_t line = (size_t)(lf - p) + 1;
            if (c->ch == CH_TRAILER) {
                c->trailer += line;
                if (c->trailer > c->header_max)
                    goto too_long;
                c->cursor += line;
                if (le == p)
                    return DC_DONE; /* trailers are read and dropped */
                continue;
            }
            int64_t size64;
            if (!h1_chunk_size(p, (size_t)(le - p), &size64)) {
                *err = KB_E_BAD_REQUEST;
                *msg = "a chunk size is malformed";
                return DC_BAD;
            }
            size_t size = (size_t)size64;
            size_t used = c->body_end - c->head_len;
            if (used > max || size > max - used) {
                *err = KB_E_BODY_TOO_LARGE;
                *msg = NULL;
                return DC_BAD;
            }
            c->cursor += line;
            if (size == 0) {
                c->ch = CH_TRAILER;
            } else {
                c->chunk_left = size;
                c->ch = CH_DATA;
            }
        } else if (c->ch == CH_DATA) {
            size_t n = avail < c->chunk_left ? avail : c->chunk_left;
            if (n == 0)
                break;
            memmove(b + c->body_end, b + c->cursor, n);
            c->body_end += n;
            c->cursor += n;
            c->chunk_left -= n;
            if (c->chunk_left == 0)
                c->ch = CH_DATA_END;
        } else { /* CH_DATA_END */
            if (avail >= 1 && b[c->cursor] == '\n') {
                c->cursor += 1;
            } else if (avail >= 2 && b[c->cursor] == '\r' && b[c->cursor + 1] == '\n') {
                c->cursor += 2;
            } else if (avail >= 2 || (avail == 1 && b[c->cursor] != '\r')) {
                *err = KB_E_BAD_REQUEST;
                *msg = "chunk data is not followed by CRLF";
                return DC_BAD;
            } else {
                break;
            }
            c->ch = CH_SIZE;
        }
    }
    /* keep the raw tail right behind the decoded body: framing never piles up */
    if (c->cursor > c->body_end) {
        memmove(b + c->body_end, b + c->cursor, c->rlen - c->cursor);
        c->rlen -= c->cursor - c->body_end;
        c->cursor = c->body_end;
    }
    return DC_WAIT;
too_long:
    *err = c->ch == CH_TRAILER ? KB_E_HEADERS_TOO_LARGE : KB_E_BAD_REQUEST;
    *msg =
        c->ch == CH_TRAILER ? "the chunked trailer is too large" : "a chunk size line is too long";
    return DC_BAD;
}

size_t httpd__read_limit(const struct hconn *c)
{
    const struct kb_httpd_opts *o = &c->h->o;
    if (c->state != C_READING)
        return c->rcap; /* a request is being served: only notice EOF */
    if (c->head_len && c->chunked &&
        c->head_len + c->body_max + MAX_CHUNK_LINE + c->header_max < c->rcap)
        return c->rcap; /* never below what the buffer already holds */
    if (!c->head_len)
        return httpd__limz(o->max_header_bytes) + 1;
    if (c->chunked)
        return c->head_len + c->body_max + MAX_CHUNK_LINE + c->header_max;
    return c->head_len + (size_t)c->clen;
}

static void send_continue(struct hconn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    evbuffer_add(c->out, cont, sizeof cont - 1);
    httpd__conn_flush(c);
}

/* Shows the parsed head to the on_head gate before the body is read. */
static enum kb_err head_gate(struct hconn *c)
{
    struct kb_hdr stackh[32], *h = c->nh <= 32 ? stackh : kb_calloc(c->nh, sizeof *h);
    for (size_t i = 0; i < c->nh; i++) {
        h[i].name = c->rbuf + c->hoff[i].name;
        h[i].value = c->rbuf + c->hoff[i].value;
    }
    enum kb_err err = c->h->o.on_head(
        (struct kb_hgate *)c, c->line_ok ? c->rbuf + c->target_off : "", h, c->nh, c->h->o.arg);
    if (h != stackh)
        free(h);
    return err;
}

/* The head is accepted (by the gate, or there was none to ask): charge its
 * body to the budget and get ready to read it. False when the request was
 * answered instead. */
static bool head_admitted(struct hconn *c)
{
    size_t end = c->head_len;
    /* a Content-Length is charged whole now; a chunked body for the room
     * its buffer already has (read with the head), then as it grows */
    size_t charge = c->clen > 0 ? (size_t)c->clen : c->chunked ? c->rcap - end : 0;
    if (charge && !httpd__budget_charge(c, charge)) {
        httpd__dispatch_error(c, KB_E_OVERLOADED, OVERLOADED_MSG); /* not read */
        return false;
    }
    c->body_end = c->cursor = end;
    bool has_body = c->chunked || c->clen > 0;
    if (has_body && c->expect_continue && c->minor == 1)
        send_continue(c);
    if (c->state != C_READING)
        return false; /* the client left while we wrote */
    if (c->clen > 0 && c->rcap < end + (size_t)c->clen) {
        c->rcap = end + (size_t)c->clen;
        c->rbuf = kb_realloc(c->rbuf, c->rcap);
    }
    return true;
}

void httpd_gate_hold(struct kb_hgate *g, kb_hgate_cancel_cb cancel, void *arg)
{
    struct hconn *c = (struct hconn *)g;
    c->gate_held = true;
    c->gate_cancel = cancel;
    c->gate_arg = arg;
}

void httpd_gate_done(struct kb_hgate *g, enum kb_err verdict)
{
    struct hconn *c = (struct hconn *)g;
    c->gate_held = false;
    c->gate_cancel = NULL;
    c->depth++;
    if (verdict != KB_OK) {
        httpd__dispatch_error(c, verdict, NULL); /* the body is never read */
    } else {
        if (c->h->o.evict_untrusted)
            c->trusted = true;
        if (head_admitted(c)) {
            httpd__conn_read(c, true);
            httpd__parse(c); /* what came with the head, maybe all of it */
        }
    }
    httpd__conn_leave(c);
}

void httpd__parse(struct hconn *c)
{
    const struct kb_httpd_opts *o = &c->h->o;
    if (c->gate_held)
        return; /* httpd_gate_done goes on */
    if (!c->head_len) {
        size_t skip = 0; /* blank lines before a request line are ignored */
        while (skip < c->rlen && (c->rbuf[skip] == '\r' || c->rbuf[skip] == '\n'))
            skip++;
        if (skip) {
            memmove(c->rbuf, c->rbuf + skip, c->rlen - skip);
            c->rlen -= skip;
        }
        size_t end = find_head_end(c);
        if (!end) {
            if (c->rlen > httpd__limz(o->max_header_bytes))
                httpd__dispatch_error(c, KB_E_HEADERS_TOO_LARGE, NULL);
            else if (c->eof)
                httpd__conn_close(c);
            return;
        }
        if (end > httpd__limz(o->max_header_bytes)) {
            httpd__dispatch_error(c, KB_E_HEADERS_TOO_LARGE, NULL);
            return;
        }
        const char *msg = NULL;
        enum kb_err err = parse_head(c, end, &msg);
        if (err != KB_OK) {
            httpd__dispatch_error(c, err, msg);
            return;
        }
        c->head_len = end;
        /* one request, one set of limits: a reload holds from the next */
        c->body_max = httpd__limz(o->max_body_bytes);
        c->header_max = httpd__limz(o->max_header_bytes);
        if (c->clen > 0 && (uint64_t)c->clen > c->body_max) {
            httpd__dispatch_error(c, KB_E_BODY_TOO_LARGE, NULL);
            return;
        }
        if (o->on_head && (c->chunked || c->clen > 0)) {
            err = head_gate(c);
            if (c->gate_held) {
                httpd__conn_read(c, false); /* not a byte more until the verdict */
                return;
            }
            if (err != KB_OK) {
                httpd__dispatch_error(c, err, NULL); /* the body is never read */
                return;
            }
            if (o->evict_untrusted)
                c->trusted = true; /* an operator's upload is not evicted mid-body */
        }
        if (!head_admitted(c))
            return;
    }
    size_t consumed, body_len;
    if (c->chunked) {
        enum kb_err err = KB_OK;
        const char *msg = NULL;
        enum dechunk d = dechunk(c, &err, &msg);
        if (d == DC_BAD) {
            httpd__dispatch_error(c, err, msg);
            return;
        }
        if (d == DC_WAIT) {
            if (c->eof)
                httpd__conn_close(c);
            return;
        }
        consumed = c->cursor;
        body_len = c->body_end - c->head_len;
    } else {
        consumed = c->head_len + (size_t)c->clen;
        if (c->rlen < consumed) {
            if (c->eof)
                httpd__conn_close(c);
            return;
        }
        body_len = (size_t)c->clen;
    }
    size_t head_len = c->head_len;
    struct kb_hreq *r = take_request(c, consumed, c->nh);
    r->body = body_len ? r->buf + head_len : NULL;
    r->body_len = body_len;
    dispatch(c, r);
}
