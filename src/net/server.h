/*
 * server.h - listeners and threads. The proxy listener is served by N
 * worker threads, each with its own event loop, store connection and
 * upstream client, all accepting from one listening socket bound without
 * SO_REUSEPORT (no other process can share the port): nothing on the
 * request path is shared between workers. The admin listener has one thread of its own, so that
 * slow admin work never delays proxied requests.
 */
#ifndef KB_NET_SERVER_H
#define KB_NET_SERVER_H

#include "core/err.h"

struct kb_runtime;
struct kb_server;

/*
 * Binds both listeners (port 0 picks a free port; a port in use by any
 * other socket is an error naming it), opens the per-thread store connections and starts the threads.
 * *out is owned by the caller (server_stop frees it). Main thread.
 */
KB_MUSTCHECK enum kb_err server_start(const struct kb_runtime *rt, struct kb_server **out,
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
