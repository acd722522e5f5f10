/*
 * proxy.h - the per-request path of the proxy listener:
 *   route -> authenticate -> policy -> meter/reserve -> upstream -> settle.
 *
 * One kb_proxy per worker thread, owning that worker's upstream client and
 * using that worker's store connection; everything runs on the worker's
 * event loop.
 */
#ifndef KB_PROXY_PROXY_H
#define KB_PROXY_PROXY_H
#include <stdbool.h>

#include "core/err.h"
#include "core/hdr.h"
#include "net/server.h"

struct event_base;
struct kb_hgate;
struct kb_runtime;
struct kb_store;
struct kb_writer_port;
struct kb_proxy;
struct kb_hreq;

/*
 * A proxy for one worker's event loop: its own upstream client, key cache
 * and group-commit port (reservations, settlements and audit records go
 * through the store writer, key reads through the store readers: the
 * worker opens no store connection). `rt` is borrowed and must outlive the
 * proxy. Worker thread only (created on the main thread before it runs).
 */
KB_MUSTCHECK enum kb_err proxy_new(struct event_base *base, const struct kb_runtime *rt, int worker,
                                   struct kb_proxy **out, char **errmsg);

/* The request handler for the worker's HTTP server (a kb_hreq_cb; `proxy`
 * is the struct kb_proxy). */
void proxy_handle(struct kb_hreq *req, void *proxy);

/* The server's body gate (a kb_hreq_head_cb): a request carrying a body is
 * refused before the body is read unless it has a valid, active vault
 * token, so strangers cannot make the proxy buffer bodies. */
enum kb_err proxy_head_gate(struct kb_hgate *g, const char *target, const struct kb_hdr *hdrs,
                            size_t nh, void *proxy);

/* Stops taking new work; `cb` fires once no request is in flight (maybe at
 * once). */
void proxy_drain(struct kb_proxy *p, kb_drained_cb cb, void *arg);

/* True when no request is in flight and every reply has been written. */
bool proxy_idle(const struct kb_proxy *p);

/* Frees the proxy; requests still in flight are abandoned (their
 * reservations settled at the reserved worst case; their answers cut).
 * Call before httpd_free. */
void proxy_free(struct kb_proxy *p);

#endif
