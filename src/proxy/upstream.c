/*
 * upstream.c - the proxy's HTTP/1.1 client (see upstream.h).
 *
 * It replaced libcurl's multi interface, whose per-transfer work (~29 µs
 * of CPU per request in the profile, more than nginx's whole request) kept
 * the proxy far from the target. What makes this one cheap:
 *
 * - A pooled connection stays registered for reading from open to close,
 *   so a request on it costs one sendmsg() and one read() and no
 *   epoll_ctl. An idle connection that turns readable was closed by the
 *   vendor (or sent a TLS ticket, which is read and kept) and is dropped
 *   as soon as the loop sees it. Bytes that arrive after the loop's last
 *   poll and before a request picks the connection are read as that
 *   request's answer: the race of every HTTP/1.1 pool (nginx's is built
 *   the same way); only a vendor that sends unasked-for bytes can hit it.
 *   A vendor's close in that window fails the request (it is retried on a
 *   new connection only when not one byte of it was written).
 * - Requests start from one event made active per batch, not from inside
 *   upstream_start() or upstream_send(): callbacks never run under the
 *   caller, and every request admitted by one commit goes out in one pass.
 * - The proxy sends to a base URL parsed once (upstream_base), so no URL
 *   is built or parsed per request.
 * - The idle deadline is a timestamp updated per read; the timer (a
 *   libevent common timeout, O(1) to add and remove) is armed once per
 *   request and re-armed only when it fires early.
 *
 * States of a connection: CONNECTING (TCP), HANDSHAKE (TLS), ACTIVE (one
 * request on it), IDLE (in its origin's pool). A request is first STARTING
 * (in the batch), then WAITING for its origin's address, then on a
 * connection. Every path that frees a connection or a request while a
 * callback of the caller may be on the stack goes through the `in_cb` /
 * `cancelled` pair, as libcurl's did.
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
#include "net/h1.h"

#define MAX_ADDRS 4            /* addresses tried per connection attempt */
#define MAX_HEAD (64 * 1024)   /* response status line and headers */
#define READ_BUF (16 * 1024)   /* read buffer of a connection */
#define DNS_TTL_MS (60 * 1000) /* an origin's addresses are looked up again after this */
#define MAX_INTERIM 16         /* 1xx blocks before the final answer */

enum conn_state { C_CONNECTING, C_HANDSHAKE, C_ACTIVE, C_IDLE };

/* where the parser stands in the response */
enum pstate {
    P_STATUS,     /* status line */
    P_HEADER,     /* header lines */
    P_LENGTH,     /* Content-Length body */
    P_EOF,        /* body up to the connection's end */
    P_CHUNK_SIZE, /* chunk size line */
    P_CHUNK_DATA, /* chunk bytes */
    P_CHUNK_END,  /* the CRLF after a chunk */
    P_TRAILER,    /* trailer lines after the last chunk */
};

struct origin {
    char *key; /* owned; "scheme://authority" as the URLs spell it */
    size_t keylen;
    char *host;    /* owned; brackets removed */
    char *hosthdr; /* owned; the Host header's value */
    int port;
    bool tls;
    bool literal; /* the host is an IP address */
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlen[MAX_ADDRS];
    int naddrs;
    int64_t resolved_ms;                   /* monotonic; 0 until looked up */
    bool resolving;                        /* a lookup runs */
    struct evdns_getaddrinfo_request *dns; /* the lookup, while it runs */
    struct kb_upstream_req *waiting;       /* requests waiting for it */
    struct conn *idle;                     /* pooled connections, most recent first */
    struct kb_upstream *u;                 /* borrowed */
    struct origin *next;
};

struct conn {
    struct kb_upstream *u; /* borrowed */
    struct origin *o;      /* borrowed */
    int fd;
    SSL *ssl;            /* owned; NULL for http */
    struct event *ev;    /* owned; the socket */
    struct event *timer; /* owned; connect or idle deadline */
    short watching;      /* EV_READ / EV_WRITE registered */
    enum conn_state state;
    int addr;                    /* index of the address being tried */
    bool reused;                 /* served a whole response before */
    bool read_wants_write;       /* TLS: SSL_read asked for writability */
    int64_t deadline_ms;         /* connect deadline, or last I/O + idle timeout */
    struct kb_upstream_req *req; /* the request on it, NULL when idle */
    char *buf;                   /* owned; read buffer */
    size_t start, end, cap;      /* unparsed bytes are buf[start, end) */
    struct conn *prev, *next;    /* in the origin's pool */
};

/* which list a request is on */
enum where { W_NONE, W_STARTING, W_DNS, W_CONN };

struct kb_upstream_req {
    struct kb_upstream *u;             /* borrowed */
    struct origin *o;                  /* borrowed; NULL until started */
    struct conn *c;                    /* borrowed; the connection it is on */
    const struct kb_upstream_ops *ops; /* borrowed */
    void *arg;                         /* borrowed */
    enum where where;
    char *out; /* owned; request line and headers */
    size_t out_len;
    const char *body; /* borrowed */
    size_t body_len;
    size_t sent; /* bytes of out + body written */
    bool no_body;
    enum pstate ps;
    int status;
    int64_t remaining; /* of the Content-Length body or of the chunk */
    int64_t clen;      /* Content-Length, -1 when none */
    bool chunked;
    bool te;                           /* a Transfer-Encoding came: it frames, not Content-Length */
    int interim;                       /* 1xx blocks so far */
    bool keep_alive;                   /* the connection may serve another request */
    bool got_bytes;                    /* some byte of the answer arrived */
    bool head_sent;                    /* on_head fired */
    size_t head_bytes;                 /* of the header block so far */
    bool paused;                       /* on_body refused */
    bool retried;                      /* already moved off a dead pooled connection */
    bool wrote;                        /* a byte of the request was written: never re-sent */
    bool cancelled;                    /* upstream_cancel inside a callback */
    int in_cb;                         /* depth of the caller's callbacks on the stack */
    struct kb_upstream_req *next_wait; /* in the origin's or the batch's list */
    struct kb_upstream_req *prev, *next; /* every live request */
};

struct kb_upstream {
    struct event_base *base; /* borrowed */
    struct evdns_base *dns;  /* owned */
    SSL_CTX *tls;            /* owned */
    struct kb_upstream_opts opts;
    const struct timeval *connect_tv, *idle_tv; /* libevent common timeouts */
    struct event *kick;                         /* owned; starts the batch */
    struct kb_upstream_req *starting, **starting_tail;
    struct kb_upstream_req *reqs;   /* every live request */
    struct origin *origins;         /* owned */
    struct kb_upstream_base *bases; /* owned */
    long nidle;                     /* pooled connections over all origins */
};

/* A base URL, parsed once: its origin and the path that prefixes every
 * request's target. */
struct kb_upstream_base {
    struct origin *o; /* borrowed from the origin list */
    char *prefix;     /* owned; what follows the authority */
    size_t prefix_len;
    struct kb_upstream_base *next;
};

static void conn_cb(evutil_socket_t fd, short what, void *arg);
static void conn_open(struct kb_upstream_req *r);
static bool conn_process(struct conn *c);
static void req_fail(struct kb_upstream_req *r, enum kb_err err, const char *why);

/* ---- helpers ---- */

static const struct timeval *common_timeout(struct event_base *base, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    const struct timeval *ct = event_base_init_common_timeout(base, &tv);
    static const struct timeval fallback = {1, 0};
    return ct ? ct : &fallback;
}

static void conn_watch(struct conn *c, short what)
{
    if (c->watching == what)
        return;
    if (c->watching)
        event_del(c->ev);
    c->watching = what;
    if (what) {
        event_assign(c->ev, c->u->base, c->fd, (short)(what | EV_PERSIST), conn_cb, c);
        event_add(c->ev, NULL);
    }
}

static void conn_arm(struct conn *c, int64_t ms, const struct timeval *tv)
{
    c->deadline_ms = clock_mono_ms() + ms;
    event_add(c->timer, tv);
}

static void pool_unlink(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->o->idle = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->u->nidle--;
}

static void conn_close(struct conn *c)
{
    if (c->state == C_IDLE)
        pool_unlink(c);
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0) {
        event_del(c->ev);
        close(c->fd);
    }
    event_free(c->ev);
    event_free(c->timer);
    free(c->buf);
    free(c);
}

static void req_unlink(struct kb_upstream_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        r->u->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void req_free(struct kb_upstream_req *r)
{
    req_unlink(r);
    free(r->out);
    free(r);
}

/* Ends the request: frees it, then tells the caller (unless it cancelled). */
static void req_finish(struct kb_upstream_req *r, enum kb_err err)
{
    const struct kb_upstream_ops *ops = r->ops;
    void *arg = r->arg;
    bool cancelled = r->cancelled, wrote = r->wrote;
    if (err == KB_OK && !r->head_sent)
        err = KB_E_UPSTREAM_ERROR;
    req_free(r);
    if (!cancelled)
        ops->on_done(arg, err, wrote);
}

/* Takes the request off its connection; the connection is closed unless
 * `pool` and it can serve another request. */
static void conn_release(struct conn *c, bool pool)
{
    struct kb_upstream *u = c->u;
    struct kb_upstream_req *r = c->req;
    if (r) {
        r->c = NULL;
        r->where = W_NONE;
    }
    c->req = NULL;
    event_del(c->timer);
    if (!pool || c->start != c->end || u->nidle >= u->opts.max_connections) {
        conn_close(c);
        return;
    }
    c->state = C_IDLE;
    c->reused = true;
    c->start = c->end = 0;
    c->read_wants_write = false;
    if (c->cap > READ_BUF) { /* grown for a large head: give it back */
        free(c->buf);
        c->buf = kb_malloc(READ_BUF);
        c->cap = READ_BUF;
    }
    conn_watch(c, EV_READ); /* the vendor closing it shows as readable */
    c->next = c->o->idle;
    if (c->next)
        c->next->prev = c;
    c->o->idle = c;
    u->nidle++;
}

/* ---- URLs and origins ---- */

static bool parse_url(const char *url, bool *tls, const char **host, size_t *hlen, int *port,
                      size_t *authority_end)
{
    const char *p;
    if (strncmp(url, "http://", 7) == 0) {
        *tls = false;
        p = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        *tls = true;
        p = url + 8;
    } else {
        return false;
    }
    size_t alen = strcspn(p, "/?#");
    if (alen == 0 || memchr(p, '@', alen))
        return false;
    const char *end = p + alen, *colon;
    if (*p == '[') {
        const char *rb = memchr(p, ']', alen);
        if (!rb || rb == p + 1)
            return false;
        *host = p + 1;
        *hlen = (size_t)(rb - p - 1);
        colon = rb + 1 < end ? rb + 1 : NULL;
        if (colon && *colon != ':')
            return false;
    } else {
        colon = memchr(p, ':', alen);
        *host = p;
        *hlen = (size_t)((colon ? colon : end) - p);
        if (*hlen == 0)
            return false;
    }
    *port = *tls ? 443 : 80;
    if (colon) {
        long v = 0;
        const char *d = colon + 1;
        if (d == end)
            return false;
        for (; d < end; d++) {
            if (*d < '0' || *d > '9')
                return false;
            v = v * 10 + (*d - '0');
            if (v > 65535)
                return false;
        }
        if (v == 0)
            return false;
        *port = (int)v;
    }
    *authority_end = (size_t)(end - url);
    return true;
}

static struct origin *origin_get(struct kb_upstream *u, const char *url, size_t *target_at)
{
    bool tls;
    const char *host;
    size_t hlen, aend;
    int port;
    if (!parse_url(url, &tls, &host, &hlen, &port, &aend))
        return NULL;
    *target_at = aend;
    for (struct origin *o = u->origins; o; o = o->next)
        if (o->keylen == aend && memcmp(o->key, url, aend) == 0)
            return o;
    struct origin *o = kb_calloc(1, sizeof *o);
    o->u = u;
    o->key = kb_strndup(url, aend);
    o->keylen = aend;
    o->host = kb_strndup(host, hlen);
    o->port = port;
    o->tls = tls;
    bool v6 = memchr(host, ':', hlen) != NULL;
    if (port == (tls ? 443 : 80))
        o->hosthdr = v6 ? kb_asprintf("[%s]", o->host) : kb_strdup(o->host);
    else
        o->hosthdr = kb_asprintf(v6 ? "[%s]:%d" : "%s:%d", o->host, port);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&o->addrs[0];
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&o->addrs[0];
    if (inet_pton(AF_INET, o->host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        o->addrlen[0] = sizeof *s4;
        o->naddrs = 1;
        o->literal = true;
    } else if (inet_pton(AF_INET6, o->host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        o->addrlen[0] = sizeof *s6;
        o->naddrs = 1;
        o->literal = true;
    }
    o->next = u->origins;
    u->origins = o;
    return o;
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    if (result == EVUTIL_EAI_CANCEL)
        return; /* upstream_free: the origin may be gone */
    struct origin *o = arg;
    o->resolving = false;
    o->dns = NULL;
    if (result == 0) {
        int n = 0;
        for (struct evutil_addrinfo *ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                ai->ai_addrlen > sizeof o->addrs[0])
                continue;
            memcpy(&o->addrs[n], ai->ai_addr, ai->ai_addrlen);
            o->addrlen[n] = (socklen_t)ai->ai_addrlen;
            n++;
        }
        if (n > 0) {
            o->naddrs = n;
            o->resolved_ms = clock_mono_ms();
        }
    } else {
        /* keep what an earlier lookup found: a flaky resolver should not
         * take down a vendor whose address has not changed */
        kb_log(KB_LOG_WARN, "vendor host lookup failed", "host", o->host, "error",
               evutil_gai_strerror(result), NULL);
    }
    if (res)
        evutil_freeaddrinfo(res);
    struct kb_upstream_req *w;
    while ((w = o->waiting)) {
        o->waiting = w->next_wait;
        w->next_wait = NULL;
        w->where = W_NONE;
        if (o->naddrs > 0)
            conn_open(w);
        else
            req_fail(w, KB_E_UPSTREAM_UNREACHABLE, "host lookup failed");
    }
}

/* The request needs a new connection: open one when the origin's
 * addresses are known and fresh, else wait for them. */
static void req_connect(struct kb_upstream_req *r)
{
    struct origin *o = r->o;
    if (o->literal || (o->naddrs > 0 && clock_mono_ms() - o->resolved_ms < DNS_TTL_MS)) {
        conn_open(r);
        return;
    }
    r->next_wait = o->waiting;
    o->waiting = r;
    r->where = W_DNS;
    if (o->resolving)
        return;
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    char port[8];
    snprintf(port, sizeof port, "%d", o->port);
    o->resolving = true;
    /* may answer (hosts file) before it returns */
    struct evdns_getaddrinfo_request *q =
        evdns_getaddrinfo(r->u->dns, o->host, port, &hints, dns_cb, o);
    if (o->resolving)
        o->dns = q;
}

/* ---- connections ---- */

static void conn_fail(struct conn *c, enum kb_err err, const char *why)
{
    struct kb_upstream_req *r = c->req;
    conn_release(c, false);
    if (r)
        req_fail(r, err, why);
}

static void conn_send(struct conn *c);

static void conn_ready(struct conn *c)
{
    c->state = C_ACTIVE;
    conn_arm(c, c->u->opts.idle_timeout_ms, c->u->idle_tv);
    conn_send(c);
}

static void tls_handshake(struct conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        event_del(c->timer);
        conn_ready(c);
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        conn_watch(c, EV_READ);
    } else if (e == SSL_ERROR_WANT_WRITE) {
        conn_watch(c, EV_WRITE);
    } else {
        long v = SSL_get_verify_result(c->ssl);
        const char *why =
            v != X509_V_OK ? X509_verify_cert_error_string(v) : "TLS handshake failed";
        kb_log(KB_LOG_WARN, "vendor TLS handshake failed", "host", c->o->host, "error", why, NULL);
        conn_fail(c, KB_E_UPSTREAM_UNREACHABLE, why);
    }
}

static void conn_connected(struct conn *c)
{
    if (!c->o->tls) {
        event_del(c->timer);
        conn_ready(c);
        return;
    }
    c->ssl = SSL_new(c->u->tls);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
        conn_fail(c, KB_E_UPSTREAM_UNREACHABLE, "TLS setup failed");
        return;
    }
    if (c->o->literal) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->o->host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, c->o->host);
        SSL_set1_host(c->ssl, c->o->host);
    }
    SSL_set_connect_state(c->ssl);
    c->state = C_HANDSHAKE;
    tls_handshake(c);
}

/* Connects to address c->addr and on; false when none is left. */
static bool conn_try(struct conn *c)
{
    struct origin *o = c->o;
    for (; c->addr < o->naddrs; c->addr++) {
        const struct sockaddr *sa = (const struct sockaddr *)&o->addrs[c->addr];
        if (c->fd >= 0) {
            conn_watch(c, 0);
            close(c->fd);
        }
        c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (c->fd < 0)
            continue;
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, sa, o->addrlen[c->addr]) == 0) {
            conn_connected(c);
            return true;
        }
        if (errno == EINPROGRESS) {
            conn_watch(c, EV_WRITE);
            return true;
        }
    }
    return false;
}

static void conn_open(struct kb_upstream_req *r)
{
    struct kb_upstream *u = r->u;
    struct conn *c = kb_calloc(1, sizeof *c);
    c->u = u;
    c->o = r->o;
    c->fd = -1;
    c->state = C_CONNECTING;
    c->ev = event_new(u->base, -1, 0, conn_cb, c);
    c->timer = evtimer_new(u->base, conn_cb, c);
    c->buf = kb_malloc(READ_BUF);
    c->cap = READ_BUF;
    c->req = r;
    r->c = c;
    r->where = W_CONN;
    conn_arm(c, u->opts.connect_timeout_ms, u->connect_tv);
    if (!conn_try(c))
        conn_fail(c, KB_E_UPSTREAM_UNREACHABLE, "connect failed");
}

/* ---- I/O ---- */

enum io { IO_OK, IO_AGAIN, IO_EOF, IO_ERR };

static enum io conn_write(struct conn *c, const char *p, size_t len, size_t *n)
{
    if (!c->ssl) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w >= 0) {
            *n = (size_t)w;
            return IO_OK;
        }
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN : IO_ERR;
    }
    ERR_clear_error();
    int w = SSL_write(c->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
    if (w > 0) {
        *n = (size_t)w;
        return IO_OK;
    }
    int e = SSL_get_error(c->ssl, w);
    return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? IO_AGAIN : IO_ERR;
}

/* Writes what is left of the request; watches for writability if the
 * socket is full. */
static void conn_send(struct conn *c)
{
    struct kb_upstream_req *r = c->req;
    size_t total = r->out_len + r->body_len;
    while (r->sent < total) {
        size_t n = 0;
        enum io io;
        if (!c->ssl && r->sent < r->out_len && r->body_len > 0) {
            /* head and body in one system call */
            struct iovec iov[2] = {{r->out + r->sent, r->out_len - r->sent},
                                   {(void *)r->body, r->body_len}};
            struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
            ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
            if (w >= 0) {
                n = (size_t)w;
                io = IO_OK;
            } else {
                io = errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN : IO_ERR;
            }
        } else if (r->sent < r->out_len) {
            io = conn_write(c, r->out + r->sent, r->out_len - r->sent, &n);
        } else {
            io = conn_write(c, r->body + (r->sent - r->out_len), total - r->sent, &n);
        }
        if (io == IO_AGAIN) {
            conn_watch(c, EV_READ | EV_WRITE);
            return;
        }
        if (io == IO_ERR) {
            /* the answer may be readable still (a vendor refusing early) */
            conn_watch(c, EV_READ);
            r->sent = total;
            r->keep_alive = false;
            return;
        }
        r->sent += n;
        r->wrote = r->wrote || n > 0;
        c->deadline_ms = clock_mono_ms() + c->u->opts.idle_timeout_ms;
    }
    conn_watch(c, EV_READ);
}

static enum io conn_read(struct conn *c, size_t *n)
{
    if (!c->ssl) {
        ssize_t got = read(c->fd, c->buf + c->end, c->cap - c->end);
        if (got > 0) {
            *n = (size_t)got;
            return IO_OK;
        }
        if (got == 0)
            return IO_EOF;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN : IO_ERR;
    }
    ERR_clear_error();
    int got = SSL_read(c->ssl, c->buf + c->end, (int)(c->cap - c->end));
    if (got > 0) {
        *n = (size_t)got;
        return IO_OK;
    }
    int e = SSL_get_error(c->ssl, got);
    if (e == SSL_ERROR_WANT_READ)
        return IO_AGAIN;
    if (e == SSL_ERROR_WANT_WRITE) {
        c->read_wants_write = true;
        conn_watch(c, EV_READ | EV_WRITE);
        return IO_AGAIN;
    }
    return e == SSL_ERROR_ZERO_RETURN ? IO_EOF : IO_ERR;
}

/* A pooled connection turned readable: the vendor closed it (or broke the
 * protocol); a TLS record that carries no data (a session ticket) is fine. */
static void idle_readable(struct conn *c)
{
    char scratch[256];
    if (c->ssl) {
        ERR_clear_error();
        int got = SSL_read(c->ssl, scratch, sizeof scratch);
        if (got <= 0 && SSL_get_error(c->ssl, got) == SSL_ERROR_WANT_READ)
            return;
    } else {
        ssize_t got = recv(c->fd, scratch, sizeof scratch, MSG_DONTWAIT);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
    }
    conn_close(c);
}

/* The connection ended or broke during a request. A pooled connection
 * that died before any byte of the request went out is replaced once: the
 * vendor closed it while it sat idle. Once a byte was written the request
 * is never sent again: the vendor may have read it and acted on it, and a
 * second copy could be billed twice (issue 13). */
static void conn_broken(struct conn *c, bool eof)
{
    struct kb_upstream_req *r = c->req;
    if (eof && r->ps == P_EOF) {
        conn_release(c, false);
        req_finish(r, KB_OK);
        return;
    }
    if (c->reused && !r->got_bytes && !r->retried && !r->wrote) {
        conn_release(c, false);
        r->retried = true;
        r->sent = 0;
        r->keep_alive = true;
        req_connect(r);
        return;
    }
    conn_fail(c, KB_E_UPSTREAM_ERROR,
              eof ? "the vendor closed the connection early" : "connection failed");
}

static void conn_readable(struct conn *c)
{
    for (;;) {
        struct kb_upstream_req *r = c->req;
        if (r->paused)
            return;
        if (c->end == c->cap) {
            if (c->start > 0) {
                memmove(c->buf, c->buf + c->start, c->end - c->start);
                c->end -= c->start;
                c->start = 0;
            } else if (c->cap < MAX_HEAD) {
                c->cap *= 2;
                c->buf = kb_realloc(c->buf, c->cap);
            } else {
                conn_fail(c, KB_E_UPSTREAM_ERROR, "response head too large");
                return;
            }
        }
        size_t space = c->cap - c->end, n = 0;
        enum io io = conn_read(c, &n);
        if (io == IO_AGAIN)
            return;
        if (io != IO_OK) {
            conn_broken(c, io == IO_EOF);
            return;
        }
        c->end += n;
        r->got_bytes = true;
        c->deadline_ms = clock_mono_ms() + c->u->opts.idle_timeout_ms;
        if (!conn_process(c))
            return; /* ended (c may be gone) or paused */
        /* a short read drained the socket; TLS may hold decrypted bytes */
        if (n < space && !(c->ssl && SSL_pending(c->ssl) > 0))
            return;
    }
}

static void conn_timeout(struct conn *c)
{
    int64_t now = clock_mono_ms();
    struct kb_upstream_req *r = c->req;
    if (c->state == C_ACTIVE && r && (r->paused || now < c->deadline_ms)) {
        /* early (the deadline moved with each read) or paused for a slow
         * client, which is not the vendor's silence */
        if (r->paused)
            c->deadline_ms = now + c->u->opts.idle_timeout_ms;
        struct timeval tv = {(time_t)((c->deadline_ms - now) / 1000),
                             (suseconds_t)((c->deadline_ms - now) % 1000) * 1000};
        event_add(c->timer, &tv);
        return;
    }
    conn_fail(c, KB_E_UPSTREAM_TIMEOUT, c->state == C_ACTIVE ? "vendor idle" : "connect timed out");
}

static void conn_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct conn *c = arg;
    if (what & EV_TIMEOUT) {
        conn_timeout(c);
        return;
    }
    switch (c->state) {
    case C_IDLE:
        idle_readable(c);
        return;
    case C_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0) {
            conn_connected(c);
            return;
        }
        if (err == ECONNRESET || err == EPIPE) {
            /* the vendor accepted, then reset before we saw the connect
             * complete: reached, so the same answer as a reset a moment
             * later (the black-box test saw both orders) */
            conn_fail(c, KB_E_UPSTREAM_ERROR, "connection reset");
            return;
        }
        c->addr++;
        if (!conn_try(c))
            conn_fail(c, KB_E_UPSTREAM_UNREACHABLE, "connect failed");
        return;
    }
    case C_HANDSHAKE:
        tls_handshake(c);
        return;
    case C_ACTIVE:
        break;
    }
    struct kb_upstream_req *r = c->req;
    if ((what & EV_WRITE) && r->sent < r->out_len + r->body_len)
        conn_send(c);
    if ((what & EV_READ) || c->read_wants_write) {
        if (c->read_wants_write) {
            /* TLS wanted to write inside a read: watch writes no longer
             * than that, or a writable socket wakes the loop every turn */
            c->read_wants_write = false;
            conn_watch(c, (short)(EV_READ | (r->sent < r->out_len + r->body_len ? EV_WRITE : 0)));
        }
        if (c->start < c->end && !r->paused && !conn_process(c))
            return; /* bytes held back by a pause ended or paused it */
        conn_readable(c);
    }
}

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
        conn_watch(r->c, 0);
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
static bool conn_process(struct conn *c)
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
            conn_release(c, pool);
            req_finish(r, KB_OK);
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
        conn_release(c, false);
        req_free(r);
    } else if (s == S_ERROR) {
        conn_fail(c, KB_E_UPSTREAM_ERROR, "malformed response");
    }
    return false; /* or paused */
need_more:
    if (c->start == c->end)
        c->start = c->end = 0;
    return true;
}

/* ---- starting requests ---- */

static void req_fail(struct kb_upstream_req *r, enum kb_err err, const char *why)
{
    kb_log(KB_LOG_DEBUG, "upstream transfer failed", "error", why, NULL);
    req_finish(r, err);
}

/* Starts the batch: a pooled connection if the origin has one, else a new
 * connection (after a lookup if need be). */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kb_upstream *u = arg;
    struct kb_upstream_req *r;
    while ((r = u->starting)) {
        u->starting = r->next_wait;
        if (!u->starting)
            u->starting_tail = &u->starting;
        r->next_wait = NULL;
        r->where = W_NONE;
        if (!r->o) {
            req_fail(r, KB_E_UPSTREAM_UNREACHABLE, "bad vendor URL");
            continue;
        }
        struct conn *c = r->o->idle;
        if (!c) {
            req_connect(r);
            continue;
        }
        pool_unlink(c);
        c->state = C_ACTIVE;
        c->req = r;
        r->c = c;
        r->where = W_CONN;
        conn_arm(c, u->opts.idle_timeout_ms, u->idle_tv);
        conn_send(c);
    }
}

/* Queues a request to origin `o` (NULL: a bad URL, failed from the batch)
 * whose target is the concatenation of `parts`, cut at a '#'. */
static struct kb_upstream_req *req_start(struct kb_upstream *u, struct origin *o,
                                         const char *method, const char *const *parts,
                                         const size_t *lens, int nparts, struct kb_buf *headers,
                                         const char *body, size_t body_len,
                                         const struct kb_upstream_ops *ops, void *arg)
{
    struct kb_upstream_req *r = kb_calloc(1, sizeof *r);
    r->u = u;
    r->o = o;
    r->ops = ops;
    r->arg = arg;
    r->body = body;
    r->body_len = body_len;
    r->no_body = strcmp(method, "HEAD") == 0;
    r->ps = P_STATUS;
    r->keep_alive = true;
    r->next = u->reqs;
    if (u->reqs)
        u->reqs->prev = r;
    u->reqs = r;

    struct kb_buf out = KB_BUF_INIT;
    if (o) {
        size_t tlen = 0;
        for (int i = 0; i < nparts; i++)
            tlen += lens[i];
        /* one allocation: request line, Host, the caller's lines, framing */
        buf_reserve(&out, strlen(method) + tlen + strlen(o->hosthdr) + headers->len + 64);
        buf_puts(&out, method);
        buf_putc(&out, ' ');
        const char *first = NULL;
        for (int i = 0; i < nparts && !first; i++)
            first = lens[i] ? parts[i] : NULL;
        if (!first || *first != '/')
            buf_putc(&out, '/'); /* origin-form starts with a slash */
        for (int i = 0; i < nparts; i++) {
            const char *hash = memchr(parts[i], '#', lens[i]);
            buf_append(&out, parts[i], hash ? (size_t)(hash - parts[i]) : lens[i]);
            if (hash)
                break;
        }
        buf_puts(&out, " HTTP/1.1\r\nHost: ");
        buf_puts(&out, o->hosthdr);
        buf_puts(&out, "\r\n");
        if (headers->len)
            buf_append(&out, headers->data, headers->len);
        if (body_len > 0 || strcmp(method, "POST") == 0)
            buf_printf(&out, "Content-Length: %zu\r\n", body_len);
        buf_puts(&out, "\r\n");
    }
    buf_cleanup(headers);
    r->out = buf_take(&out, &r->out_len);
    /* from the batch, never from here: the caller must hold r first */
    r->where = W_STARTING;
    *u->starting_tail = r;
    u->starting_tail = &r->next_wait;
    event_active(u->kick, EV_TIMEOUT, 0);
    return r;
}

struct kb_upstream_req *upstream_start(struct kb_upstream *u, const char *method, const char *url,
                                       struct kb_buf *headers, const char *body, size_t body_len,
                                       const struct kb_upstream_ops *ops, void *arg)
{
    size_t at = 0;
    struct origin *o = origin_get(u, url, &at);
    const char *target = url + at;
    size_t tlen = o ? strlen(target) : 0;
    return req_start(u, o, method, &target, &tlen, 1, headers, body, body_len, ops, arg);
}

const struct kb_upstream_base *upstream_base(struct kb_upstream *u, const char *base_url)
{
    size_t at = 0;
    struct origin *o = origin_get(u, base_url, &at);
    if (!o)
        return NULL;
    struct kb_upstream_base *b = kb_calloc(1, sizeof *b);
    b->o = o;
    b->prefix = kb_strdup(base_url + at);
    b->prefix_len = strlen(b->prefix);
    b->next = u->bases;
    u->bases = b;
    return b;
}

struct kb_upstream_req *upstream_send(struct kb_upstream *u, const struct kb_upstream_base *b,
                                      const char *method, const char *path, size_t path_len,
                                      const char *query, struct kb_buf *headers, const char *body,
                                      size_t body_len, const struct kb_upstream_ops *ops, void *arg)
{
    const char *parts[3] = {b->prefix, path, query ? query : ""};
    size_t lens[3] = {b->prefix_len, path_len, query ? strlen(query) : 0};
    return req_start(u, b->o, method, parts, lens, 3, headers, body, body_len, ops, arg);
}

void upstream_resume(struct kb_upstream_req *r)
{
    struct conn *c = r->c;
    if (!r->paused || !c)
        return;
    r->paused = false;
    conn_watch(c, (short)(EV_READ | (r->sent < r->out_len + r->body_len ? EV_WRITE : 0)));
    event_active(c->ev, EV_READ, 0); /* the held-back bytes first */
}

static void list_remove(struct kb_upstream_req **head, struct kb_upstream_req *r)
{
    for (; *head; head = &(*head)->next_wait) {
        if (*head == r) {
            *head = r->next_wait;
            r->next_wait = NULL;
            return;
        }
    }
}

void upstream_cancel(struct kb_upstream_req *r)
{
    if (!r)
        return;
    if (r->in_cb) {
        /* inside one of its own callbacks: the parser frees it when the
         * callback returns */
        r->cancelled = true;
        return;
    }
    struct kb_upstream *u = r->u;
    switch (r->where) {
    case W_STARTING:
        list_remove(&u->starting, r);
        u->starting_tail = &u->starting;
        while (*u->starting_tail)
            u->starting_tail = &(*u->starting_tail)->next_wait;
        break;
    case W_DNS:
        list_remove(&r->o->waiting, r);
        break;
    case W_CONN:
        conn_release(r->c, false); /* mid-request: not reusable */
        break;
    case W_NONE:
        break;
    }
    req_free(r);
}

enum kb_err upstream_new(struct event_base *base, const struct kb_upstream_opts *o,
                         struct kb_upstream **out, char **errmsg)
{
    SSL_CTX *tls = SSL_CTX_new(TLS_client_method());
    if (!tls) {
        kb_set_errmsg(errmsg, "cannot create the TLS context");
        return KB_E_INTERNAL;
    }
    SSL_CTX_set_min_proto_version(tls, TLS1_2_VERSION);
    SSL_CTX_set_verify(tls, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(tls, alpn, sizeof alpn - 1);
    int ok = o->ca_file ? SSL_CTX_load_verify_locations(tls, o->ca_file, NULL)
                        : SSL_CTX_set_default_verify_paths(tls);
    if (ok != 1) {
        kb_set_errmsg(errmsg, "cannot load the CA certificates from %s",
                      o->ca_file ? o->ca_file : "the system store");
        SSL_CTX_free(tls);
        ERR_clear_error();
        return KB_E_CONFIG;
    }
    struct evdns_base *dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!dns) {
        /* no usable resolv.conf: the hosts file and literal addresses work */
        dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (dns)
            evdns_base_load_hosts(dns, NULL);
    }
    if (!dns) {
        SSL_CTX_free(tls);
        kb_set_errmsg(errmsg, "cannot create the DNS resolver");
        return KB_E_INTERNAL;
    }
    struct kb_upstream *u = kb_calloc(1, sizeof *u);
    u->base = base;
    u->dns = dns;
    u->tls = tls;
    u->opts = *o;
    u->connect_tv = common_timeout(base, o->connect_timeout_ms);
    u->idle_tv = common_timeout(base, o->idle_timeout_ms);
    u->kick = event_new(base, -1, 0, kick_cb, u);
    u->starting_tail = &u->starting;
    *out = u;
    return KB_OK;
}

void upstream_free(struct kb_upstream *u)
{
    if (!u)
        return;
    while (u->reqs) {
        struct kb_upstream_req *r = u->reqs;
        if (r->c)
            conn_close(r->c);
        req_free(r);
    }
    while (u->bases) {
        struct kb_upstream_base *b = u->bases;
        u->bases = b->next;
        free(b->prefix);
        free(b);
    }
    while (u->origins) {
        struct origin *o = u->origins;
        u->origins = o->next;
        if (o->dns)
            evdns_getaddrinfo_cancel(o->dns);
        while (o->idle)
            conn_close(o->idle);
        free(o->key);
        free(o->host);
        free(o->hosthdr);
        free(o);
    }
    evdns_base_free(u->dns, 0);
    SSL_CTX_free(u->tls);
    event_free(u->kick);
    free(u);
}
