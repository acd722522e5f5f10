/*
 * server.h - the transport: listeners and threads. The proxy listener is
 * served by N worker threads, each with its own event loop and its own
 * instance of the proxy service, all accepting from one listening socket
 * bound without SO_REUSEPORT (no other process can share the port): nothing
 * on the request path is shared between workers. The admin listener has
 * one thread of its own, so that slow admin work never delays proxied
 * requests. What runs on each listener is handed in (struct kb_service);
 * main.c is the one place that assembles the daemon.
 */
#ifndef KB_NET_SERVER_H
#define KB_NET_SERVER_H

#include <stdbool.h>

#include "core/err.h"
#include "net/httpd.h"

struct event_base;
struct kb_runtime;
struct kb_server;

/* Called once a service's thread has nothing left in flight. */
typedef void (*kb_drained_cb)(void *arg);

/*
 * What serves a listener, as the transport drives it: one instance per
 * thread (the proxy: one per worker; the admin API: one), created on the
 * main thread before its thread runs and freed after it was joined. The
 * transport knows no service by name: main.c, the composition root, hands
 * them in.
 */
struct kb_service {
    /* the instance of thread `index` (0..n-1) on `base`'s loop */
    enum kb_err (*create)(struct event_base *base, const struct kb_runtime *rt, int index,
                          void **state, char **errmsg);
    kb_hreq_cb on_request;   /* every request */
    kb_hreq_head_cb on_head; /* a body's gate (see kb_hreq_head_cb) */
    /* stop taking work; cb(arg) once nothing is in flight (maybe at once) */
    void (*drain)(void *state, kb_drained_cb cb, void *arg);
    /* after a drained loop ended: work that came in meanwhile (NULL: none can) */
    bool (*busy)(void *state);
    void (*free)(void *state);
};

/*
 * Binds both listeners (port 0 picks a free port; a port in use by any
 * other socket is an error naming it), creates each thread's service
 * instance and starts the threads: `proxy` on the proxy listener's
 * workers, `admin` on the admin listener's thread. *out is owned by the
 * caller (server_stop frees it). Main thread.
 */
KB_MUSTCHECK enum kb_err server_start(const struct kb_runtime *rt, const struct kb_service *proxy,
                                      const struct kb_service *admin, struct kb_server **out,
                                      char **errmsg);

/* The bound "host:port" of the proxy and admin listeners. */
const char *server_proxy_addr(const struct kb_server *s);
const char *server_admin_addr(const struct kb_server *s);

/*
 * Graceful stop: stop accepting, let in-flight requests finish (bounded by
 * shutdown_timeout), join the threads and free everything. Main thread.
 */
void server_stop(struct kb_server *s);

#endif
