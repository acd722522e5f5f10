/*
 * httpd.c - the HTTP/1.1 server's connections (see httpd.h; the parts are
 * listed in httpd_int.h).
 *
 * A connection reads into one flat buffer that httpd_parse.c parses in
 * place; when a request is whole the buffer is handed to it and the
 * connection starts a fresh one with whatever was pipelined after it, so
 * a request's bytes never move while its handler holds them.
 *
 * Limits live here: the connection caps per listener and per source
 * address (a listener allowed to evict closes its oldest untrusted
 * connection to make room), and the body budget, charged as a body's
 * buffer is admitted or grows and given back in httpd__req_free, the one
 * place every request ends, or in conn_free for a body still being read.
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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/metrics.h"
#include "net/httpd_int.h"
#include "net/tls.h"

/* Most bytes handed to one SSL_write: one full TLS record. */
#define TLS_WRITE_MAX 16384

static void conn_free(struct hconn *c);
static void refuse_plain_http(int fd);

void httpd__conn_leave(struct hconn *c)
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
    httpd__conn_close(c);
    httpd__conn_leave(c);
}

/* ---- the body budget ---- */

/* A compare-and-swap: two workers racing for the last bytes never both get
 * them, and a refusal never shows as a transient overshoot to a third. */
bool httpd__budget_charge(struct hconn *c, size_t want)
{
    const struct kb_httpd_opts *o = &c->h->o;
    if (!o->buffered || want <= c->charged)
        return true;
    int64_t add = (int64_t)(want - c->charged);
    int64_t cur = atomic_load_explicit(o->buffered, memory_order_relaxed);
    do {
        if (cur + add > httpd__lim(o->max_buffered)) {
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

void httpd__req_free(struct kb_hreq *r)
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
        httpd__req_free(r);
    } else if (r->close_cb) {
        r->close_cb(r, r->close_arg);
        httpd__req_free(r);
    }
    /* else: detached; the handler's reply frees it */
}

/* ---- TLS ---- */

/* One step of the TLS handshake; true once it is done. A client that
 * spoke plain HTTP gets a plain answer saying so; any failure closes. */
static bool handshake(struct hconn *c)
{
    enum kb_tls_hs r = tls_conn_handshake(c->ssl);
    bool want_write = r == TLS_HS_WANT_WRITE;
    if (want_write != c->writing) {
        if (want_write)
            event_add(c->wev, NULL);
        else
            event_del(c->wev);
        c->writing = want_write;
    }
    if (r == TLS_HS_DONE) {
        c->tls_done = true;
        arm(c, &c->h->read_tv); /* the first request's deadline starts now */
        return true;
    }
    if (r == TLS_HS_PLAIN_HTTP) {
        /* answered, then lingering as after any refused request: the rest
         * of what the client sent is swallowed raw, so that closing with it
         * unread does not reset the connection before the answer is read */
        refuse_plain_http(c->fd);
        tls_conn_free(c->ssl, false);
        c->ssl = NULL;
        shutdown(c->fd, SHUT_WR);
        c->state = C_LINGER;
        c->rlen = 0;
        arm(c, &c->h->linger_tv);
    } else if (r == TLS_HS_FAILED) {
        httpd__conn_close(c);
    }
    return false;
}

/* As read(2), through TLS when the connection has it. */
static ssize_t conn_recv(struct hconn *c, void *buf, size_t len)
{
    if (!c->ssl)
        return read(c->fd, buf, len);
    int want_write;
    ssize_t n = tls_conn_read(c->ssl, buf, len, &want_write);
    if (want_write) {
        /* rare (a post-handshake message to answer): read again once the
         * socket takes bytes (on_writable) */
        c->tls_rd_wants_write = true;
        if (!c->writing) {
            event_add(c->wev, NULL);
            c->writing = true;
        }
    }
    return n;
}

int httpd__conn_send(struct hconn *c)
{
    if (!c->ssl)
        return evbuffer_write(c->out, c->fd);
    size_t len = evbuffer_get_length(c->out);
    if (len == 0)
        return 0;
    if (len > TLS_WRITE_MAX)
        len = TLS_WRITE_MAX;
    /* one record from contiguous bytes (a copy only when the buffer is
     * fragmented); a retry after EAGAIN passes the same bytes, or more */
    const unsigned char *p = evbuffer_pullup(c->out, (ev_ssize_t)len);
    int want_read;
    ssize_t n = tls_conn_write(c->ssl, p, len, &want_read);
    if (n > 0)
        evbuffer_drain(c->out, (size_t)n);
    else if (want_read)
        c->tls_wr_wants_read = true; /* on_readable flushes again */
    return (int)n;
}

/* ---- reading ---- */

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct hconn *c = arg;
    bool over_budget = false;
    c->depth++;
    if (c->ssl && !c->tls_done && !handshake(c))
        goto out;
    if (c->tls_wr_wants_read) {
        c->tls_wr_wants_read = false;
        httpd__conn_flush(c);
        if (c->state == C_CLOSED)
            goto out;
    }
    for (;;) {
        if (c->rlen == c->rcap) {
            size_t lim = httpd__read_limit(c);
            size_t ncap = c->rcap * 2 < lim ? c->rcap * 2 : lim;
            /* a body's buffer grows only as far as the budget lets it (a
             * Content-Length was charged whole already: a no-op then) */
            if (c->state == C_READING && c->head_len && ncap > c->rcap &&
                !httpd__budget_charge(c, ncap - c->head_len)) {
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
        ssize_t n = conn_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (n > 0) {
            size_t want = c->rcap - c->rlen;
            c->rlen += (size_t)n;
            if (c->state == C_LINGER)
                c->rlen = 0;
            /* drained: epoll will say when there is more (TLS may hold
             * more of a record it decrypted, which epoll cannot see) */
            if ((size_t)n < want && !(c->ssl && tls_conn_pending(c->ssl) > 0))
                break;
            continue;
        }
        if (n == 0) {
            c->eof = true;
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            httpd__conn_close(c);
            goto out;
        }
        break;
    }
    if (c->state == C_READING) {
        httpd__parse(c);
        /* the body needs more room than the budget has: refuse it before
         * another byte of it is read (what is buffered may have been enough) */
        if (over_budget && c->state == C_READING && !c->gate_held && c->head_len &&
            c->rlen == c->rcap)
            httpd__dispatch_error(c, KB_E_OVERLOADED, OVERLOADED_MSG);
        /* a full buffer at its limit that still holds no whole request will
         * never hold one: answer rather than wait (or spin on the socket) */
        else if (c->state == C_READING && !c->gate_held && c->head_len && c->rlen == c->rcap &&
                 c->rcap >= httpd__read_limit(c))
            httpd__dispatch_error(c, KB_E_BODY_TOO_LARGE, NULL);
    } else if (c->eof && c->state != C_CLOSED) {
        /* a client that sends FIN mid-request has left (as nginx reads it) */
        httpd__conn_close(c);
    }
out:
    httpd__conn_leave(c);
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
    httpd__req_free(r);
    if (c->state == C_CLOSED)
        return;
    if (close) {
        if (!linger || c->eof) {
            httpd__conn_close(c);
            return;
        }
        /* the client may still be sending what we refused to read: take it
         * and drop it for a moment, or the kernel answers it with a reset
         * that can destroy our answer before the client reads it */
        if (c->ssl) {
            /* close_notify, then raw reads: what is swallowed is never
             * decrypted */
            tls_conn_free(c->ssl, true);
            c->ssl = NULL;
        }
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
    if (c->rlen || (c->ssl && tls_conn_pending(c->ssl) > 0))
        event_active(c->rev, EV_READ, 1); /* a pipelined request: next loop turn */
}

void httpd__conn_flush(struct hconn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = httpd__conn_send(c);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        httpd__conn_close(c); /* EPIPE, ECONNRESET: the client is gone */
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
    if (c->ssl && !c->tls_done) {
        if (handshake(c))
            event_active(c->rev, EV_READ, 1); /* the request may be in already */
        httpd__conn_leave(c);
        return;
    }
    if (c->tls_rd_wants_write) {
        c->tls_rd_wants_write = false;
        event_active(c->rev, EV_READ, 1);
    }
    httpd__conn_flush(c);
    if (c->state == C_HANDLING && c->req && !c->req->finished && c->req->drain_cb &&
        evbuffer_get_length(c->out) == 0)
        c->req->drain_cb(c->req, c->req->drain_arg);
    httpd__conn_leave(c);
}

/* ---- connections ---- */

void httpd__conn_read(struct hconn *c, bool on)
{
    if (on && !c->reading && c->state != C_CLOSED)
        event_add(c->rev, NULL);
    else if (!on && c->reading)
        event_del(c->rev);
    c->reading = on && c->state != C_CLOSED;
    if (c->reading && c->ssl && tls_conn_pending(c->ssl) > 0)
        event_active(c->rev, EV_READ, 1);
}

void httpd__conn_close(struct hconn *c)
{
    if (c->state == C_CLOSED)
        return;
    c->state = C_CLOSED;
    if (c->gate_held) {
        /* the gate's owner lets go of the head it was deciding on */
        c->gate_held = false;
        if (c->gate_cancel)
            c->gate_cancel(c->gate_arg);
        c->gate_cancel = NULL;
    }
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
    /* close_notify only at a message boundary: never after an answer cut
     * short or with bytes of one still unsent */
    tls_conn_free(c->ssl, c->tls_done && !c->tls_cut && evbuffer_get_length(c->out) == 0);
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

/* Plain HTTP on a TLS port: a plain answer saying so, best effort (the
 * client reads it as any other 400), then the caller closes. */
static void refuse_plain_http(int fd)
{
    static const char body[] = "{\"code\":\"bad_request\",\"message\":\"this port speaks TLS: "
                               "use https://\"}\n";
    char resp[320];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nKeybrake-Error: bad_request\r\nConnection: close"
                     "\r\n\r\n%s",
                     sizeof body - 1, body);
    ssize_t w = send(fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
}

/* Over the cap: one canned answer, best effort, and close. On a TLS
 * listener just the close: a plain answer would be garbage to a TLS
 * client, and a handshake is the work the cap exists to refuse. */
static void refuse_connection(const struct kb_httpd *h, int fd)
{
    if (h->o.tls) {
        close(fd);
        return;
    }
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
    if (httpd__lim(h->o.max_per_source) <= 0 || !h->o.per_source || !sa)
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
 * carried a trusted request, whatever it is doing: reading a request, idle
 * between two, lingering, or being answered (a stranger who does not read
 * its answers must not hold a slot until the write timeout). To the
 * handler this is a client that left, which it handles anyway. False when
 * there is none. Connections are linked newest first, so the last match
 * is the oldest: a stranger who keeps reconnecting evicts their own older
 * connections before the one an operator just opened. */
static bool evict_one(struct kb_httpd *h, int slot)
{
    struct hconn *victim = NULL;
    for (struct hconn *c = h->conns; c; c = c->next)
        if (!c->trusted && c->depth == 0 && c->state != C_CLOSED &&
            (slot < 0 || c->source_slot == slot))
            victim = c;
    if (!victim)
        return false;
    metrics_connection_evicted();
    httpd__conn_close(victim); /* freed at once: none of its callbacks is running */
    return true;
}

/* Before a connection over a limit is refused, a listener that may evict
 * makes room for it. Only a server that alone serves its listener may:
 * the counts it reads are then its own. */
static void make_room(struct kb_httpd *h, int slot)
{
    if (!h->o.evict_untrusted)
        return;
    if (atomic_load_explicit(h->o.conns, memory_order_relaxed) >= httpd__lim(h->o.max_conns))
        evict_one(h, -1);
    if (slot >= 0 && atomic_load_explicit(&h->o.per_source[slot], memory_order_relaxed) >=
                         httpd__lim(h->o.max_per_source))
        evict_one(h, slot);
}

static void accept_one(struct kb_httpd *h, int fd, struct sockaddr *sa, socklen_t salen)
{
    int slot = source_slot(h, sa);
    make_room(h, slot);
    if (atomic_fetch_add_explicit(h->o.conns, 1, memory_order_relaxed) >=
        httpd__lim(h->o.max_conns)) {
        atomic_fetch_sub_explicit(h->o.conns, 1, memory_order_relaxed);
        metrics_connection_refused();
        refuse_connection(h, fd);
        return;
    }
    if (slot >= 0) {
        if (atomic_fetch_add_explicit(&h->o.per_source[slot], 1, memory_order_relaxed) >=
            httpd__lim(h->o.max_per_source)) {
            /* one address holding many slots cannot starve the others */
            atomic_fetch_sub_explicit(&h->o.per_source[slot], 1, memory_order_relaxed);
            atomic_fetch_sub_explicit(h->o.conns, 1, memory_order_relaxed);
            metrics_connection_refused();
            refuse_connection(h, fd);
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
    if (sa && sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in))
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof c->peer);
    else if (sa && sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6))
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof c->peer);
    c->rcap = RBUF_INIT;
    c->rbuf = kb_malloc(c->rcap);
    c->out = evbuffer_new();
    c->rev = event_new(h->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(h->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    c->timer = evtimer_new(h->base, on_timer, c);
    httpd__parse_reset(c);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    c->state = C_READING;
    event_add(c->rev, NULL);
    c->reading = true;
    if (h->o.tls) {
        /* the handshake has a deadline of its own: a client that opens the
         * connection and never finishes it is dropped like a slow one */
        arm(c, &h->handshake_tv);
        c->ssl = tls_conn_new(h->o.tls, fd);
        if (!c->ssl)
            httpd__conn_close(c);
        return;
    }
    arm(c, &h->read_tv);
}

/* One connection per wakeup, not the whole queue: the workers share one
 * listening socket and all wake for it, so a burst of connections is
 * spread over them instead of landing on whichever woke first (a worker
 * busy serving also comes back to accept less often). */
static void on_listen_readable(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct kb_httpd *h = arg;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return; /* EAGAIN: another worker took it; anything else: the next wakeup retries */
    accept_one(h, fd, (struct sockaddr *)&ss, sl);
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
    int64_t hms = o->handshake_timeout_ms > 0 ? o->handshake_timeout_ms : o->timeout_ms;
    struct timeval hv = {(time_t)(hms / 1000), (suseconds_t)(hms % 1000 * 1000)};
    ct = event_base_init_common_timeout(base, &hv);
    h->handshake_tv = ct ? *ct : hv;
    h->listen_fd = listen_fd;
    h->accept_ev = event_new(base, listen_fd, EV_READ | EV_PERSIST, on_listen_readable, h);
    if (evutil_make_socket_nonblocking(listen_fd) != 0 || !h->accept_ev ||
        event_add(h->accept_ev, NULL) != 0) {
        if (h->accept_ev)
            event_free(h->accept_ev);
        close(listen_fd);
        free(h);
        return NULL;
    }
    return h;
}

void httpd_stop_accepting(struct kb_httpd *h)
{
    if (h && h->accept_ev) {
        event_free(h->accept_ev);
        h->accept_ev = NULL;
        close(h->listen_fd);
        h->listen_fd = -1;
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
            httpd__req_free(c->req);
            c->req = NULL;
        }
        c->depth = 0;
        c->state = C_CLOSED;
        conn_free(c);
    }
    free(h);
}
