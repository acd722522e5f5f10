/*
 * httpd.c - the HTTP/1.1 server (see httpd.h).
 *
 * A connection reads into one flat buffer and parses in place: the head is
 * searched for its blank line, split into NUL-terminated names and values
 * (kept as offsets while the buffer may still grow), and the body is read
 * behind it, chunked bodies decoded where they lie. When a request is
 * whole the buffer is handed to it and the connection starts a fresh one
 * with whatever was pipelined after it, so a request's bytes never move
 * while its handler holds them.
 *
 * Events: the read event stays registered for the connection's life
 * (reading also notices a client that leaves mid-request); the write event
 * is registered only while the kernel refuses bytes, which on loopback is
 * almost never: an answer is written straight from the handler's call.
 *
 * A connection is freed only when none of our callbacks for it is on the
 * stack (`depth`); closing inside one marks it and the outermost frees it.
 */
#include "net/httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/metrics.h"
#include "net/h1.h"

#define RBUF_INIT 4096
/* Longest chunk-size line (with extensions) a chunked body may use. */
#define MAX_CHUNK_LINE 1024
/* How long a connection closed after an error keeps swallowing what the
 * client still sends, so that our answer is not destroyed by a reset. */
#define LINGER_MS 2000
#define OVERLOADED_MSG                                                                             \
    "the server holds as many request bodies as limits.max_buffered_body_bytes allows; retry "   \
    "later"

enum conn_state {
    C_READING = 0,  /* reading a request */
    C_HANDLING = 1, /* a request is with the handler or its answer is going out */
    C_LINGER = 2,   /* answered and half-closed; discarding input until EOF */
    C_CLOSED = 3,   /* closed; freed once no callback of ours is on the stack */
};

enum chunk_state {
    CH_SIZE = 0,     /* expecting a chunk-size line */
    CH_DATA = 1,     /* inside a chunk's data */
    CH_DATA_END = 2, /* expecting the CRLF after a chunk's data */
    CH_TRAILER = 3,  /* trailer lines until the blank one */
};

struct hoff {
    uint32_t name, value; /* offsets into the read buffer */
};

struct hconn {
    struct kb_httpd *h; /* borrowed */
    int fd;             /* owned */
    char peer[48];      /* the client's address ("127.0.0.1"), "" if unknown */
    int source_slot;    /* its per-source counter, -1 when not counted */
    bool trusted;       /* a request on it carried valid credentials (hreq_trust) */
    enum conn_state state;
    struct event *rev, *wev, *timer; /* owned */
    char *rbuf;                      /* owned until handed to a request */
    size_t rlen, rcap;
    char *spare; /* owned; a RBUF_INIT buffer back from the last request */
    size_t charged; /* body bytes of rbuf charged to the budget (moves with rbuf) */
    /* the request being read */
    size_t scanned;    /* head bytes already searched for the blank line */
    size_t head_len;   /* the head's length once whole, else 0 */
    struct hoff *hoff; /* owned; header offsets */
    size_t nh, hcap;
    uint32_t target_off;
    enum kb_method method;
    int minor;
    bool line_ok; /* the request line was read */
    bool keepalive;
    bool expect_continue;
    bool chunked;
    int64_t clen; /* Content-Length, 0 when none */
    enum chunk_state ch;
    size_t body_end;   /* chunked: end of the decoded body */
    size_t cursor;     /* chunked: next raw byte */
    size_t chunk_left; /* chunked: data bytes left in the current chunk */
    size_t trailer;    /* chunked: trailer bytes so far */
    /* the answer */
    struct evbuffer *out; /* owned */
    struct kb_hreq *req;  /* the request being handled or answered */
    bool eof;             /* the client sent FIN */
    bool reading;         /* rev is registered */
    bool writing;         /* wev is registered */
    bool flush_soon;      /* wev was made active: a flush at the end of this loop turn */
    int depth;            /* our callbacks for it on the stack */
    struct hconn *prev, *next;
};

struct kb_hreq {
    struct hconn *conn; /* borrowed; NULL once the client is gone */
    char *buf;          /* owned; the request's bytes */
    size_t bufcap;      /* its size */
    size_t charged;     /* body bytes of buf charged to *budget; given back by req_free */
    _Atomic int64_t *budget; /* borrowed; the server's body budget, NULL if none */
    enum kb_method method;
    const char *method_name; /* into buf, or "" */
    const char *target;      /* into buf, or NULL */
    int minor;
    enum kb_err error;
    const char *errmsg; /* static */
    const char *body;   /* into buf */
    size_t body_len;
    struct kb_buf head; /* response header lines added by the handler */
    char peer[48];      /* the client's address, "" if unknown */
    bool close_after;
    bool has_clen; /* the handler added Content-Length */
    bool has_date;
    bool started;  /* the response head went out */
    bool chunked;  /* the streamed body is chunk-encoded */
    bool no_body;  /* HEAD, 1xx, 204, 304: no body bytes */
    bool finished; /* the handler made its final reply */
    kb_hreq_cb complete_cb, close_cb, drain_cb;
    void *complete_arg, *close_arg, *drain_arg;
    size_t nh;
    struct kb_hdr hdrs[]; /* nh of them */
};

struct kb_httpd {
    struct event_base *base;         /* borrowed */
    struct evconnlistener *listener; /* owned; NULL once stopped */
    struct kb_httpd_opts o;
    struct timeval read_tv, linger_tv; /* common timeouts */
    struct hconn *conns;               /* open connections, doubly linked */
};

static const char *const method_names[] = {"GET",    "POST",    "HEAD", "PUT",
                                           "DELETE", "OPTIONS", "PATCH"};

const char *http_method_text(enum kb_method m)
{
    return m < KB_M_OTHER ? method_names[m] : NULL;
}

static void conn_free(struct hconn *c);
static void conn_close(struct hconn *c);
static void conn_flush(struct hconn *c);

/* Our callback for `c` returns: the outermost frees a closed connection. */
static void conn_leave(struct hconn *c)
{
    if (--c->depth == 0 && c->state == C_CLOSED)
        conn_free(c);
}

/* ---- timers ---- */

static void arm(struct hconn *c, const struct timeval *tv)
{
    evtimer_add(c->timer, tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct hconn *c = arg;
    c->depth++;
    /* a request never finished, an answer the client does not read, an
     * idle keep-alive connection, or the end of a linger: all just close */
    conn_close(c);
    conn_leave(c);
}

/* ---- the body budget ---- */

/* Raises what `c`'s buffer holds charged to `want` body bytes: false, and
 * nothing charged, when that would pass the budget. A compare-and-swap, so
 * that two workers racing for the last bytes never both get them and a
 * refusal never shows as a transient overshoot to a third. */
static bool budget_charge(struct hconn *c, size_t want)
{
    const struct kb_httpd_opts *o = &c->h->o;
    if (!o->buffered || want <= c->charged)
        return true;
    int64_t add = (int64_t)(want - c->charged);
    int64_t cur = atomic_load_explicit(o->buffered, memory_order_relaxed);
    do {
        if (cur + add > o->max_buffered) {
            metrics_body_refused();
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(o->buffered, &cur, cur + add,
                                                    memory_order_relaxed, memory_order_relaxed));
    c->charged = want;
    return true;
}

static void budget_release(_Atomic int64_t *budget, size_t *charged)
{
    if (budget && *charged)
        atomic_fetch_sub_explicit(budget, (int64_t)*charged, memory_order_relaxed);
    *charged = 0;
}

/* ---- requests ---- */

static void req_free(struct kb_hreq *r)
{
    budget_release(r->budget, &r->charged); /* every way a request ends comes here */
    buf_cleanup(&r->head);
    free(r->buf);
    free(r);
}

/* The client left (or the connection was closed under the request). */
static void req_detach(struct hconn *c)
{
    struct kb_hreq *r = c->req;
    if (!r)
        return;
    c->req = NULL;
    r->conn = NULL;
    if (r->finished) {
        if (r->complete_cb)
            r->complete_cb(r, r->complete_arg);
        req_free(r);
    } else if (r->close_cb) {
        r->close_cb(r, r->close_arg);
        req_free(r);
    }
    /* else: detached; the handler's reply frees it */
}

static void parse_reset(struct hconn *c)
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
    parse_reset(c);
    evtimer_del(c->timer);
    c->h->o.on_request(r, c->h->o.arg);
}

/* The parser refused the request: the handler answers it with `err`, and
 * the connection closes after (what follows cannot be trusted). */
static void dispatch_error(struct hconn *c, enum kb_err err, const char *msg)
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
        if (c->nh >= c->h->o.max_headers) {
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
    size_t max = c->h->o.max_body_bytes;
    for (;;) {
        size_t avail = c->rlen - c->cursor;
        if (c->ch == CH_SIZE || c->ch == CH_TRAILER) {
            char *lf = memchr(b + c->cursor, '\n', avail);
            size_t linemax = c->ch == CH_SIZE ? MAX_CHUNK_LINE : c->h->o.max_header_bytes;
            if (!lf) {
                if (avail > linemax)
                    goto too_long;
                break;
            }
            char *p = b + c->cursor, *le = lf > p && lf[-1] == '\r' ? lf - 1 : lf;
            size_t line = (size_t)(lf - p) + 1;
            if (c->ch == CH_TRAILER) {
                c->trailer += line;
                if (c->trailer > c->h->o.max_header_bytes)
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
            if (size > max - (c->body_end - c->head_len)) {
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

/* How far the read buffer may grow for the request being read. */
static size_t read_limit(const struct hconn *c)
{
    const struct kb_httpd_opts *o = &c->h->o;
    if (c->state != C_READING)
        return c->rcap; /* a request is being served: only notice EOF */
    if (!c->head_len)
        return o->max_header_bytes + 1;
    if (c->chunked)
        return c->head_len + o->max_body_bytes + MAX_CHUNK_LINE + o->max_header_bytes;
    return c->head_len + (size_t)c->clen;
}

static void send_continue(struct hconn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    evbuffer_add(c->out, cont, sizeof cont - 1);
    conn_flush(c);
}

/* Makes what progress the buffered bytes allow on the request being read;
 * dispatches it when whole (or refused). */
/* Shows the parsed head to the on_head gate before the body is read. */
static enum kb_err head_gate(struct hconn *c)
{
    struct kb_hdr stackh[32], *h = c->nh <= 32 ? stackh : kb_calloc(c->nh, sizeof *h);
    for (size_t i = 0; i < c->nh; i++) {
        h[i].name = c->rbuf + c->hoff[i].name;
        h[i].value = c->rbuf + c->hoff[i].value;
    }
    enum kb_err err =
        c->h->o.on_head(c->line_ok ? c->rbuf + c->target_off : "", h, c->nh, c->h->o.arg);
    if (h != stackh)
        free(h);
    return err;
}

static void parse(struct hconn *c)
{
    const struct kb_httpd_opts *o = &c->h->o;
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
            if (c->rlen > o->max_header_bytes)
                dispatch_error(c, KB_E_HEADERS_TOO_LARGE, NULL);
            else if (c->eof)
                conn_close(c);
            return;
        }
        if (end > o->max_header_bytes) {
            dispatch_error(c, KB_E_HEADERS_TOO_LARGE, NULL);
            return;
        }
        const char *msg = NULL;
        enum kb_err err = parse_head(c, end, &msg);
        if (err != KB_OK) {
            dispatch_error(c, err, msg);
            return;
        }
        c->head_len = end;
        if (c->clen > 0 && (uint64_t)c->clen > o->max_body_bytes) {
            dispatch_error(c, KB_E_BODY_TOO_LARGE, NULL);
            return;
        }
        if (o->on_head && (c->chunked || c->clen > 0) && (err = head_gate(c)) != KB_OK) {
            dispatch_error(c, err, NULL); /* the body is never read */
            return;
        }
        /* a Content-Length is charged whole now; a chunked body for the
         * room its buffer already has (read with the head), then as it grows */
        size_t charge = c->clen > 0 ? (size_t)c->clen : c->chunked ? c->rcap - end : 0;
        if (charge && !budget_charge(c, charge)) {
            dispatch_error(c, KB_E_OVERLOADED, OVERLOADED_MSG); /* nor here */
            return;
        }
        c->body_end = c->cursor = end;
        bool has_body = c->chunked || c->clen > 0;
        if (has_body && c->expect_continue && c->minor == 1)
            send_continue(c);
        if (c->state != C_READING)
            return; /* the client left while we wrote */
        if (c->clen > 0 && c->rcap < end + (size_t)c->clen) {
            c->rcap = end + (size_t)c->clen;
            c->rbuf = kb_realloc(c->rbuf, c->rcap);
        }
    }
    size_t consumed, body_len;
    if (c->chunked) {
        enum kb_err err = KB_OK;
        const char *msg = NULL;
        enum dechunk d = dechunk(c, &err, &msg);
        if (d == DC_BAD) {
            dispatch_error(c, err, msg);
            return;
        }
        if (d == DC_WAIT) {
            if (c->eof)
                conn_close(c);
            return;
        }
        consumed = c->cursor;
        body_len = c->body_end - c->head_len;
    } else {
        consumed = c->head_len + (size_t)c->clen;
        if (c->rlen < consumed) {
            if (c->eof)
                conn_close(c);
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

/* ---- reading ---- */

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct hconn *c = arg;
    bool over_budget = false;
    c->depth++;
    for (;;) {
        if (c->rlen == c->rcap) {
            size_t lim = read_limit(c);
            size_t ncap = c->rcap * 2 < lim ? c->rcap * 2 : lim;
            /* a body's buffer grows only as far as the budget lets it (a
             * Content-Length was charged whole already: a no-op then) */
            if (c->state == C_READING && c->head_len && ncap > c->rcap &&
                !budget_charge(c, ncap - c->head_len)) {
                over_budget = true;
                break;
            }
            if (c->rcap >= lim) {
                if (c->state == C_HANDLING || c->state == C_LINGER) {
                    if (c->state == C_LINGER) {
                        c->rlen = 0; /* swallowed */
                        continue;
                    }
                    /* pipelined bytes fill the spare buffer: wait */
                    event_del(c->rev);
                    c->reading = false;
                }
                break;
            }
            c->rbuf = kb_realloc(c->rbuf, ncap);
            c->rcap = ncap;
        }
        ssize_t n = read(fd, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (n > 0) {
            size_t want = c->rcap - c->rlen;
            c->rlen += (size_t)n;
            if (c->state == C_LINGER)
                c->rlen = 0;
            if ((size_t)n < want)
                break; /* drained: epoll will say when there is more */
            continue;
        }
        if (n == 0) {
            c->eof = true;
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            conn_close(c);
            goto out;
        }
        break;
    }
    if (c->state == C_READING) {
        parse(c);
        /* the body needs more room than the budget has: refuse it before
         * another byte of it is read (what is buffered may have been enough) */
        if (over_budget && c->state == C_READING && c->head_len && c->rlen == c->rcap)
            dispatch_error(c, KB_E_OVERLOADED, OVERLOADED_MSG);
    } else if (c->eof && c->state != C_CLOSED) {
        /* a client that sends FIN mid-request has left (as nginx reads it) */
        conn_close(c);
    }
out:
    conn_leave(c);
}

/* ---- writing ---- */

static void response_done(struct hconn *c)
{
    struct kb_hreq *r = c->req;
    c->req = NULL;
    bool close = r->close_after || c->eof;
    bool linger = r->error != KB_OK;
    if (r->complete_cb)
        r->complete_cb(r, r->complete_arg);
    if (!c->spare && r->bufcap == RBUF_INIT) {
        c->spare = r->buf; /* the next request reads into it */
        r->buf = NULL;
    }
    req_free(r);
    if (c->state == C_CLOSED)
        return;
    if (close) {
        if (!linger || c->eof) {
            conn_close(c);
            return;
        }
        /* the client may still be sending what we refused to read: take it
         * and drop it for a moment, or the kernel answers it with a reset
         * that can destroy our answer before the client reads it */
        shutdown(c->fd, SHUT_WR);
        c->state = C_LINGER;
        c->rlen = 0;
        if (!c->reading) {
            event_add(c->rev, NULL);
            c->reading = true;
        }
        arm(c, &c->h->linger_tv);
        return;
    }
    c->state = C_READING;
    arm(c, &c->h->read_tv);
    if (!c->reading) {
        event_add(c->rev, NULL);
        c->reading = true;
    }
    if (c->rlen)
        event_active(c->rev, EV_READ, 1); /* a pipelined request: next loop turn */
}

/* Writes what the kernel takes; registers for more, or finishes. */
static void conn_flush(struct hconn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_close(c); /* EPIPE, ECONNRESET: the client is gone */
        return;
    }
    if (evbuffer_get_length(c->out) > 0) {
        if (!c->writing) {
            event_add(c->wev, NULL);
            c->writing = true;
        }
        arm(c, &c->h->read_tv); /* no progress for that long: the client is gone */
        return;
    }
    if (c->writing) {
        event_del(c->wev);
        c->writing = false;
        if (c->state == C_HANDLING)
            evtimer_del(c->timer);
    }
    if (c->req && c->req->finished)
        response_done(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct hconn *c = arg;
    c->depth++;
    c->flush_soon = false;
    conn_flush(c);
    if (c->state == C_HANDLING && c->req && !c->req->finished && c->req->drain_cb &&
        evbuffer_get_length(c->out) == 0)
        c->req->drain_cb(c->req, c->req->drain_arg);
    conn_leave(c);
}

/* ---- connections ---- */

static void conn_close(struct hconn *c)
{
    if (c->state == C_CLOSED)
        return;
    c->state = C_CLOSED;
    event_del(c->rev);
    event_del(c->wev);
    evtimer_del(c->timer);
    c->reading = c->writing = false;
    req_detach(c);
    if (c->depth == 0)
        conn_free(c);
}

static void conn_free(struct hconn *c)
{
    struct kb_httpd *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->timer);
    evbuffer_free(c->out);
    close(c->fd);
    free(c->rbuf);
    budget_release(h->o.buffered, &c->charged);
    free(c->spare);
    free(c->hoff);
    if (c->source_slot >= 0)
        atomic_fetch_sub_explicit(&h->o.per_source[c->source_slot], 1, memory_order_relaxed);
    free(c);
    atomic_fetch_sub_explicit(h->o.conns, 1, memory_order_relaxed);
    metrics_connections((enum kb_listener)h->o.listener, -1);
}

/* Over the cap: one canned answer, best effort, and close. */
static void refuse_connection(int fd)
{
    char body[160], resp[384];
    int blen =
        snprintf(body, sizeof body, "{\"code\":\"%s\",\"message\":\"%s\"}\n",
                 kb_strerror(KB_E_TOO_MANY_CONNECTIONS), kb_errmsg(KB_E_TOO_MANY_CONNECTIONS));
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\nKeybrake-Error: %s\r\nConnection: close\r\n\r\n%s",
                     blen, kb_strerror(KB_E_TOO_MANY_CONNECTIONS), body);
    ssize_t w = send(fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    close(fd);
}

/* The per-source counter of the client address `sa`, -1 when not counted:
 * FNV-1a of the address bytes (not the port). */
static int source_slot(const struct kb_httpd *h, const struct sockaddr *sa)
{
    if (h->o.max_per_source <= 0 || !h->o.per_source || !sa)
        return -1;
    const unsigned char *a = NULL;
    size_t alen = 0;
    if (sa->sa_family == AF_INET)
        a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, alen = 4;
    else if (sa->sa_family == AF_INET6)
        a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr, alen = 16;
    uint32_t hash = 2166136261u;
    for (size_t i = 0; i < alen; i++)
        hash = (hash ^ a[i]) * 16777619u;
    return (int)(hash % HTTPD_SOURCE_SLOTS);
}

/* Closes the oldest connection (of source `slot`, any when -1) that never
 * carried a trusted request and is not serving one: it is reading a
 * request or idle between two, or lingering after a refusal. False when
 * there is none. Connections are linked newest first, so the last match
 * is the oldest: a stranger who keeps reconnecting evicts their own older
 * connections before the one an operator just opened. */
static bool evict_one(struct kb_httpd *h, int slot)
{
    struct hconn *victim = NULL;
    for (struct hconn *c = h->conns; c; c = c->next)
        if (!c->trusted && c->depth == 0 && (c->state == C_READING || c->state == C_LINGER) &&
            (slot < 0 || c->source_slot == slot))
            victim = c;
    if (!victim)
        return false;
    metrics_connection_evicted();
    conn_close(victim); /* freed at once: none of its callbacks is running */
    return true;
}

/* Before a connection over a limit is refused, a listener that may evict
 * makes room for it. Only a server that alone serves its listener may:
 * the counts it reads are then its own. */
static void make_room(struct kb_httpd *h, int slot)
{
    if (!h->o.evict_untrusted)
        return;
    if (atomic_load_explicit(h->o.conns, memory_order_relaxed) >= h->o.max_conns)
        evict_one(h, -1);
    if (slot >= 0 && atomic_load_explicit(&h->o.per_source[slot], memory_order_relaxed) >=
                         h->o.max_per_source)
        evict_one(h, slot);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    struct kb_httpd *h = arg;
    int slot = source_slot(h, sa);
    make_room(h, slot);
    if (atomic_fetch_add_explicit(h->o.conns, 1, memory_order_relaxed) >= h->o.max_conns) {
        atomic_fetch_sub_explicit(h->o.conns, 1, memory_order_relaxed);
        metrics_connection_refused();
        refuse_connection(fd);
        return;
    }
    if (slot >= 0) {
        if (atomic_fetch_add_explicit(&h->o.per_source[slot], 1, memory_order_relaxed) >=
            h->o.max_per_source) {
            /* one address holding many slots cannot starve the others */
            atomic_fetch_sub_explicit(&h->o.per_source[slot], 1, memory_order_relaxed);
            atomic_fetch_sub_explicit(h->o.conns, 1, memory_order_relaxed);
            metrics_connection_refused();
            refuse_connection(fd);
            return;
        }
    }
    metrics_connections((enum kb_listener)h->o.listener, 1);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct hconn *c = kb_calloc(1, sizeof *c);
    c->h = h;
    c->fd = fd;
    c->source_slot = slot;
    if (sa && sa->sa_family == AF_INET && salen >= (int)sizeof(struct sockaddr_in))
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof c->peer);
    else if (sa && sa->sa_family == AF_INET6 && salen >= (int)sizeof(struct sockaddr_in6))
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof c->peer);
    c->rcap = RBUF_INIT;
    c->rbuf = kb_malloc(c->rcap);
    c->out = evbuffer_new();
    c->rev = event_new(h->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(h->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    c->timer = evtimer_new(h->base, on_timer, c);
    parse_reset(c);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    c->state = C_READING;
    event_add(c->rev, NULL);
    c->reading = true;
    arm(c, &h->read_tv);
}

struct kb_httpd *httpd_new(struct event_base *base, int listen_fd, const struct kb_httpd_opts *o)
{
    struct kb_httpd *h = kb_calloc(1, sizeof *h);
    h->base = base;
    h->o = *o;
    struct timeval tv = {(time_t)(o->timeout_ms / 1000),
                         (suseconds_t)(o->timeout_ms % 1000 * 1000)};
    const struct timeval *ct = event_base_init_common_timeout(base, &tv);
    h->read_tv = ct ? *ct : tv;
    int64_t lms = o->timeout_ms < LINGER_MS ? o->timeout_ms : LINGER_MS;
    struct timeval lv = {(time_t)(lms / 1000), (suseconds_t)(lms % 1000 * 1000)};
    ct = event_base_init_common_timeout(base, &lv);
    h->linger_tv = ct ? *ct : lv;
    h->listener = evconnlistener_new(base, on_accept, h,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, listen_fd);
    if (!h->listener) {
        close(listen_fd);
        free(h);
        return NULL;
    }
    return h;
}

void httpd_stop_accepting(struct kb_httpd *h)
{
    if (h && h->listener) {
        evconnlistener_free(h->listener);
        h->listener = NULL;
    }
}

void httpd_free(struct kb_httpd *h)
{
    if (!h)
        return;
    httpd_stop_accepting(h);
    while (h->conns) {
        struct hconn *c = h->conns;
        /* no callback runs: the handlers were freed first and have let go */
        if (c->req) {
            req_free(c->req);
            c->req = NULL;
        }
        c->depth = 0;
        c->state = C_CLOSED;
        conn_free(c);
    }
    free(h);
}

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
    req_free(r);
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
    conn_flush(c);
    conn_leave(c);
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
    conn_flush(c);
    conn_leave(c);
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
        evbuffer_write(c->out, c->fd);
        c->req = NULL;
        r->conn = NULL;
        conn_close(c);
    }
    req_free(r);
}
