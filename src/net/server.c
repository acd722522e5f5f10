/*
 * server.c - binding, worker threads and graceful stop (see server.h).
 *
 * Each thread owns an event_base, an HTTP server and its service's instance
 * (struct kb_service: the proxy or the admin API, handed in by main.c), all
 * created here on the main thread before the thread starts and freed here
 * after it is joined, so no two threads ever touch the same one. Stopping
 * is a write to the thread's eventfd; the thread then stops accepting and
 * exits its loop once its in-flight requests are done or the shutdown
 * timeout passes.
 *
 * The proxy port is bound once, without SO_REUSEPORT, and the workers
 * accept from that one socket (each through its own dup): a second process
 * cannot bind the port, and a connection queues once for whichever worker
 * accepts it first.
 */
#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/runtime.h"
#include "net/httpd.h"

struct thread {
    struct kb_server *srv; /* borrowed */
    int index;             /* worker number; -1 for admin */
    pthread_t tid;
    bool started;
    struct event_base *base;      /* owned */
    struct kb_httpd *http;        /* owned */
    const struct kb_service *svc; /* borrowed; what serves this thread's listener */
    void *state;                  /* owned; its instance */
    int stop_fd;                  /* owned; eventfd */
    struct event *stop_ev;        /* owned */
    struct event *deadline;       /* owned; shutdown timeout */
    bool deadline_hit;            /* the shutdown timeout passed */
};

struct kb_server {
    const struct kb_runtime *rt;        /* borrowed */
    const struct kb_service *proxy_svc; /* borrowed */
    const struct kb_service *admin_svc; /* borrowed */
    struct thread *workers;             /* owned */
    int nworkers;
    struct thread admin;
    _Atomic int64_t proxy_conns;                       /* open proxy connections, all workers */
    _Atomic int32_t proxy_sources[HTTPD_SOURCE_SLOTS]; /* open proxy connections per address */
    _Atomic int64_t admin_conns;                       /* open admin connections */
    _Atomic int32_t admin_sources[HTTPD_SOURCE_SLOTS]; /* open admin connections per address */
    _Atomic int64_t buffered; /* request body bytes in memory, both listeners */
    char proxy_addr[64];
    char admin_addr[64];
};

/* Splits "host:port" and binds a listening socket; *port gets the bound
 * port (the chosen one when asked for 0). A port another socket listens on
 * is refused (EADDRINUSE), whoever holds it. */
static int bind_listener(const char *hostport, int *port, char **errmsg)
{
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport) {
        kb_set_errmsg(errmsg, "listen address \"%s\" must be host:port", hostport);
        return -1;
    }
    char host[256];
    size_t hlen = (size_t)(colon - hostport);
    if (hlen >= sizeof host) {
        kb_set_errmsg(errmsg, "listen host too long");
        return -1;
    }
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%s", colon + 1);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        kb_set_errmsg(errmsg, "cannot resolve listen address \"%s\": %s", hostport,
                      gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    /* SO_REUSEADDR only lets us rebind past TIME_WAIT: Linux still refuses
     * a second listener on a port in LISTEN. No SO_REUSEPORT: with it any
     * process of the same user could bind the port too and take a share of
     * the connections (a second daemon on another data dir, or worse). */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        if (errno == EADDRINUSE)
            kb_set_errmsg(errmsg,
                          "cannot listen on %s: port %s is already in use (by another "
                          "keybrake or another program)",
                          hostport, portstr);
        else
            kb_set_errmsg(errmsg, "cannot listen on %s: %s", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void format_addr(char *out, size_t size, const char *hostport, int port)
{
    const char *colon = strrchr(hostport, ':');
    snprintf(out, size, "%.*s:%d", (int)(colon - hostport), hostport, port);
}

static void loop_exit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct thread *t = arg;
    t->deadline_hit = true;
    event_base_loopexit(t->base, NULL);
}

static void drained(void *arg)
{
    struct thread *t = arg;
    event_base_loopexit(t->base, NULL);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct thread *t = arg;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    (void)n;
    /* stop accepting: the socket closes, new connections go elsewhere */
    httpd_stop_accepting(t->http);
    int64_t ms = runtime_limit(&t->srv->rt->limits.shutdown_timeout_ms);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    t->deadline = evtimer_new(t->base, loop_exit, t);
    evtimer_add(t->deadline, &tv);
    t->svc->drain(t->state, drained, t); /* answer what is in flight */
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    for (;;) {
        event_base_dispatch(t->base);
        if (t->deadline_hit || !t->svc->busy || !t->svc->busy(t->state))
            break;
        /* a request came in on an open connection in the same loop turn
         * that found the thread drained: serve it to the end too */
        t->svc->drain(t->state, drained, t);
    }
    return NULL;
}

static void thread_cleanup(struct thread *t)
{
    /* the handlers first: they let go of their requests; then the server
     * frees what is left without calling back into them */
    if (t->svc && t->state)
        t->svc->free(t->state);
    httpd_free(t->http);
    if (t->stop_ev)
        event_free(t->stop_ev);
    if (t->deadline)
        event_free(t->deadline);
    if (t->stop_fd > 0)
        close(t->stop_fd);
    if (t->base)
        event_base_free(t->base);
}

static enum kb_err thread_init(struct kb_server *srv, struct thread *t, int index, int fd,
                               char **errmsg)
{
    const struct kb_config *cfg = srv->rt->cfg;
    enum kb_err err;
    t->srv = srv;
    t->index = index;
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    t->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!t->base) {
        kb_set_errmsg(errmsg, "cannot create an event loop");
        close(fd);
        return KB_E_INTERNAL;
    }
    t->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    t->stop_ev = event_new(t->base, t->stop_fd, EV_READ, on_stop, t);
    event_add(t->stop_ev, NULL);
    t->svc = index >= 0 ? srv->proxy_svc : srv->admin_svc;
    if ((err = t->svc->create(t->base, srv->rt, index >= 0 ? index : 0, &t->state, errmsg)) !=
        KB_OK) {
        t->state = NULL;
        close(fd);
        return err;
    }
    struct kb_httpd_opts o = {0};
    if (index >= 0) {
        const struct kb_live_limits *l = &srv->rt->limits;
        o.max_header_bytes = &l->max_header_bytes;
        o.max_headers = &l->max_headers;
        o.max_body_bytes = &l->max_body_bytes;
        o.timeout_ms = cfg->client_timeout_ms;
        o.max_conns = &l->max_connections;
        o.conns = &srv->proxy_conns;
        o.buffered = &srv->buffered;
        o.max_buffered = &l->max_buffered_body_bytes;
        o.max_per_source = &l->max_connections_per_source;
        o.per_source = srv->proxy_sources;
        o.listener = KB_L_PROXY;
    } else {
        /* the admin API's own requests are small and its own */
        static const _Atomic int64_t admin_header_bytes = 32 * 1024, admin_headers = 100,
                                     admin_body_bytes = 1024 * 1024;
        const struct kb_live_limits *l = &srv->rt->limits;
        o.max_header_bytes = &admin_header_bytes;
        o.max_headers = &admin_headers;
        o.max_body_bytes = &admin_body_bytes;
        o.timeout_ms = 30 * 1000;
        o.max_conns = &l->admin_max_connections;
        o.conns = &srv->admin_conns;
        o.max_per_source = &l->admin_max_connections_per_source;
        o.per_source = srv->admin_sources;
        /* one admin thread serves the listener, so it sees every connection
         * and can make room: a stranger holding idle connections never
         * keeps a revocation out */
        o.evict_untrusted = true;
        o.buffered = &srv->buffered;
        o.max_buffered = &l->max_buffered_body_bytes;
        o.listener = KB_L_ADMIN;
    }
    o.tls = index >= 0 ? srv->rt->tls_proxy : srv->rt->tls_admin;
    o.handshake_timeout_ms = cfg->tls_handshake_timeout_ms;
    o.on_request = t->svc->on_request;
    o.on_head = t->svc->on_head;
    o.arg = t->state;
    t->http = httpd_new(t->base, fd, &o);
    if (!t->http) {
        kb_set_errmsg(errmsg, "cannot accept on the listening socket");
        return KB_E_INTERNAL;
    }
    return KB_OK;
}

enum kb_err server_start(const struct kb_runtime *rt, const struct kb_service *proxy,
                         const struct kb_service *admin, struct kb_server **out, char **errmsg)
{
    const struct kb_config *cfg = rt->cfg;
    if (cfg->max_buffered_body_bytes < cfg->max_body_bytes) {
        kb_set_errmsg(errmsg,
                      "limits.max_buffered_body_bytes (%lld) must be at least "
                      "limits.max_body_bytes (%lld): a largest body could never be admitted",
                      (long long)cfg->max_buffered_body_bytes, (long long)cfg->max_body_bytes);
        return KB_E_CONFIG;
    }
    struct kb_server *srv = kb_calloc(1, sizeof *srv);
    srv->rt = rt;
    srv->proxy_svc = proxy;
    srv->admin_svc = admin;
    enum kb_err err = KB_OK;
    metrics_watch_body_budget(&srv->buffered, &srv->rt->limits.max_buffered_body_bytes);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    srv->nworkers = cfg->workers > 0 ? (int)cfg->workers : (int)(cores > 0 ? cores : 1);
    srv->workers = kb_calloc((size_t)srv->nworkers, sizeof *srv->workers);

    int port = 0;
    /* One listening socket, one accept queue: each worker watches its own
     * dup of it (its own fd to close, the same open file), so no worker
     * ever binds the port and nobody else can join it. */
    int lfd = bind_listener(cfg->proxy_listen, &port, errmsg);
    if (lfd < 0) {
        err = KB_E_CONFIG;
        goto fail;
    }
    for (int i = 0; i < srv->nworkers; i++) {
        int fd = i == srv->nworkers - 1 ? lfd : fcntl(lfd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            kb_set_errmsg(errmsg, "cannot share the proxy listener: %s", strerror(errno));
            close(lfd);
            err = KB_E_INTERNAL;
            goto fail;
        }
        if ((err = thread_init(srv, &srv->workers[i], i, fd, errmsg)) != KB_OK) {
            if (fd != lfd)
                close(lfd);
            goto fail;
        }
    }
    format_addr(srv->proxy_addr, sizeof srv->proxy_addr, cfg->proxy_listen, port);
    int afd = bind_listener(cfg->admin_listen, &port, errmsg);
    if (afd < 0) {
        err = KB_E_CONFIG;
        goto fail;
    }
    if ((err = thread_init(srv, &srv->admin, -1, afd, errmsg)) != KB_OK)
        goto fail;
    format_addr(srv->admin_addr, sizeof srv->admin_addr, cfg->admin_listen, port);

    for (int i = 0; i < srv->nworkers; i++) {
        if (pthread_create(&srv->workers[i].tid, NULL, thread_main, &srv->workers[i]) != 0) {
            kb_set_errmsg(errmsg, "cannot start worker thread: %s", strerror(errno));
            err = KB_E_INTERNAL;
            goto fail;
        }
        srv->workers[i].started = true;
    }
    if (pthread_create(&srv->admin.tid, NULL, thread_main, &srv->admin) != 0) {
        kb_set_errmsg(errmsg, "cannot start admin thread: %s", strerror(errno));
        err = KB_E_INTERNAL;
        goto fail;
    }
    srv->admin.started = true;
    *out = srv;
    return KB_OK;
fail:
    server_stop(srv);
    return err;
}

const char *server_proxy_addr(const struct kb_server *s)
{
    return s->proxy_addr;
}

const char *server_admin_addr(const struct kb_server *s)
{
    return s->admin_addr;
}

static void signal_stop(struct thread *t)
{
    uint64_t one = 1;
    if (t->started && write(t->stop_fd, &one, sizeof one) < 0)
        kb_log(KB_LOG_ERROR, "cannot signal a thread to stop", NULL);
}

void server_stop(struct kb_server *srv)
{
    if (!srv)
        return;
    signal_stop(&srv->admin);
    for (int i = 0; i < srv->nworkers; i++)
        signal_stop(&srv->workers[i]);
    if (srv->admin.started)
        pthread_join(srv->admin.tid, NULL);
    for (int i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].started)
            pthread_join(srv->workers[i].tid, NULL);
    thread_cleanup(&srv->admin);
    for (int i = 0; i < srv->nworkers; i++)
        thread_cleanup(&srv->workers[i]);
    free(srv->workers);
    metrics_watch_body_budget(NULL, 0); /* the gauge must not outlive the counter */
    free(srv);
}
