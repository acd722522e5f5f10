/*
 * upstream_conn.c - the upstream client's connections (see upstream.c for
 * the design): origins and their DNS answers, connecting (TCP, then TLS
 * with the vendor's name verified), the idle pool, writing a request and
 * reading its answer into the connection's buffer, timeouts. What the
 * bytes mean is upstream_parse.c's business.
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

static void conn_cb(evutil_socket_t fd, short what, void *arg);
static void conn_open(struct kb_upstream_req *r);

/* ---- helpers ---- */

const struct timeval *upstream__common_timeout(struct event_base *base, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    const struct timeval *ct = event_base_init_common_timeout(base, &tv);
    static const struct timeval fallback = {1, 0};
    return ct ? ct : &fallback;
}

void upstream__conn_watch(struct conn *c, short what)
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

void upstream__conn_arm(struct conn *c, int64_t ms, const struct timeval *tv)
{
    c->deadline_ms = clock_mono_ms() + ms;
    event_add(c->timer, tv);
}

void upstream__pool_unlink(struct conn *c)
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

void upstream__conn_close(struct conn *c)
{
    if (c->state == C_IDLE)
        upstream__pool_unlink(c);
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

void upstream__req_free(struct kb_upstream_req *r)
{
    req_unlink(r);
    free(r->out);
    free(r);
}

/* Ends the request: frees it, then tells the caller (unless it cancelled). */
void upstream__req_finish(struct kb_upstream_req *r, enum kb_err err)
{
    const struct kb_upstream_ops *ops = r->ops;
    void *arg = r->arg;
    bool cancelled = r->cancelled, wrote = r->wrote;
    if (err == KB_OK && !r->head_sent)
        err = KB_E_UPSTREAM_ERROR;
    upstream__req_free(r);
    if (!cancelled)
        ops->on_done(arg, err, wrote);
}

/* Takes the request off its connection; the connection is closed unless
 * `pool` and it can serve another request. */
void upstream__conn_release(struct conn *c, bool pool)
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
        upstream__conn_close(c);
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
    upstream__conn_watch(c, EV_READ); /* the vendor closing it shows as readable */
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

struct origin *upstream__origin_get(struct kb_upstream *u, const char *url, size_t *target_at)
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
            upstream__req_fail(w, KB_E_UPSTREAM_UNREACHABLE, "host lookup failed");
    }
}

/* The request needs a new connection: open one when the origin's
 * addresses are known and fresh, else wait for them. */
void upstream__req_connect(struct kb_upstream_req *r)
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

void upstream__conn_fail(struct conn *c, enum kb_err err, const char *why)
{
    struct kb_upstream_req *r = c->req;
    upstream__conn_release(c, false);
    if (r)
        upstream__req_fail(r, err, why);
}

static void conn_ready(struct conn *c)
{
    c->state = C_ACTIVE;
    upstream__conn_arm(c, c->u->opts.idle_timeout_ms, c->u->idle_tv);
    upstream__conn_send(c);
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
        upstream__conn_watch(c, EV_READ);
    } else if (e == SSL_ERROR_WANT_WRITE) {
        upstream__conn_watch(c, EV_WRITE);
    } else {
        long v = SSL_get_verify_result(c->ssl);
        const char *why =
            v != X509_V_OK ? X509_verify_cert_error_string(v) : "TLS handshake failed";
        kb_log(KB_LOG_WARN, "vendor TLS handshake failed", "host", c->o->host, "error", why, NULL);
        upstream__conn_fail(c, KB_E_UPSTREAM_UNREACHABLE, why);
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
        upstream__conn_fail(c, KB_E_UPSTREAM_UNREACHABLE, "TLS setup failed");
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
            upstream__conn_watch(c, 0);
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
            upstream__conn_watch(c, EV_WRITE);
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
    upstream__conn_arm(c, u->opts.connect_timeout_ms, u->connect_tv);
    if (!conn_try(c))
        upstream__conn_fail(c, KB_E_UPSTREAM_UNREACHABLE, "connect failed");
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
void upstream__conn_send(struct conn *c)
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
            upstream__conn_watch(c, EV_READ | EV_WRITE);
            return;
        }
        if (io == IO_ERR) {
            /* the answer may be readable still (a vendor refusing early) */
            upstream__conn_watch(c, EV_READ);
            r->sent = total;
            r->keep_alive = false;
            return;
        }
        r->sent += n;
        r->wrote = r->wrote || n > 0;
        c->deadline_ms = clock_mono_ms() + c->u->opts.idle_timeout_ms;
    }
    upstream__conn_watch(c, EV_READ);
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
        upstream__conn_watch(c, EV_READ | EV_WRITE);
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
    upstream__conn_close(c);
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
        upstream__conn_release(c, false);
        upstream__req_finish(r, KB_OK);
        return;
    }
    if (c->reused && !r->got_bytes && !r->retried && !r->wrote) {
        upstream__conn_release(c, false);
        r->retried = true;
        r->sent = 0;
        r->keep_alive = true;
        upstream__req_connect(r);
        return;
    }
    upstream__conn_fail(c, KB_E_UPSTREAM_ERROR,
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
                upstream__conn_fail(c, KB_E_UPSTREAM_ERROR, "response head too large");
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
        if (!upstream__conn_process(c))
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
    upstream__conn_fail(c, KB_E_UPSTREAM_TIMEOUT,
                        c->state == C_ACTIVE ? "vendor idle" : "connect timed out");
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
            upstream__conn_fail(c, KB_E_UPSTREAM_ERROR, "connection reset");
            return;
        }
        c->addr++;
        if (!conn_try(c))
            upstream__conn_fail(c, KB_E_UPSTREAM_UNREACHABLE, "connect failed");
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
        upstream__conn_send(c);
    if ((what & EV_READ) || c->read_wants_write) {
        if (c->read_wants_write) {
            /* TLS wanted to write inside a read: watch writes no longer
             * than that, or a writable socket wakes the loop every turn */
            c->read_wants_write = false;
            upstream__conn_watch(
                c, (short)(EV_READ | (r->sent < r->out_len + r->body_len ? EV_WRITE : 0)));
        }
        if (c->start < c->end && !r->paused && !upstream__conn_process(c))
            return; /* bytes held back by a pause ended or paused it */
        conn_readable(c);
    }
}
