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
 *
 * Three files: this one (the API, request batches, cancel, life cycle),
 * upstream_conn.c (origins, DNS, connections, TLS, I/O) and
 * upstream_parse.c (reading the answer); upstream_int.h is what they share.
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

/* ---- starting requests ---- */

void upstream__req_fail(struct kb_upstream_req *r, enum kb_err err, const char *why)
{
    kb_log(KB_LOG_DEBUG, "upstream transfer failed", "error", why, NULL);
    upstream__req_finish(r, err);
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
            upstream__req_fail(r, KB_E_UPSTREAM_UNREACHABLE, "bad vendor URL");
            continue;
        }
        struct conn *c = r->o->idle;
        if (!c) {
            upstream__req_connect(r);
            continue;
        }
        upstream__pool_unlink(c);
        c->state = C_ACTIVE;
        c->req = r;
        r->c = c;
        r->where = W_CONN;
        upstream__conn_arm(c, u->opts.idle_timeout_ms, u->idle_tv);
        upstream__conn_send(c);
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
    struct origin *o = upstream__origin_get(u, url, &at);
    const char *target = url + at;
    size_t tlen = o ? strlen(target) : 0;
    return req_start(u, o, method, &target, &tlen, 1, headers, body, body_len, ops, arg);
}

const struct kb_upstream_base *upstream_base(struct kb_upstream *u, const char *base_url)
{
    size_t at = 0;
    struct origin *o = upstream__origin_get(u, base_url, &at);
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
    upstream__conn_watch(c, (short)(EV_READ | (r->sent < r->out_len + r->body_len ? EV_WRITE : 0)));
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

bool upstream_wrote(const struct kb_upstream_req *r)
{
    return r && r->wrote;
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
        upstream__conn_release(r->c, false); /* mid-request: not reusable */
        break;
    case W_NONE:
        break;
    }
    upstream__req_free(r);
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
    u->connect_tv = upstream__common_timeout(base, o->connect_timeout_ms);
    u->idle_tv = upstream__common_timeout(base, o->idle_timeout_ms);
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
            upstream__conn_close(r->c);
        upstream__req_free(r);
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
            upstream__conn_close(o->idle);
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
