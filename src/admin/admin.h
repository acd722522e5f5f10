/*
 * admin.h - the admin REST API on its own listener and thread: vault keys
 * (keys.c), health (health.c). Every route but /healthz and /readyz needs
 * `Authorization: Bearer <admin token>`.
 */
#ifndef KB_ADMIN_ADMIN_H
#define KB_ADMIN_ADMIN_H

#include <stddef.h>

#include "core/err.h"

struct event_base;
struct kb_hdr;
struct kb_hgate;
struct kb_hreq;
struct kb_runtime;
struct kb_store;
struct kb_admin;
struct kb_writer_port;

/* The admin API on `base`'s loop, with its own store connection (reads)
 * and group-commit port (writes, through the store writer). rt is
 * borrowed and must outlive it; admin thread only (created on the main
 * thread before it runs). With [audit] retention set it also starts the
 * audit retention thread (audit/retention.h), stopped by admin_free:
 * KB_E_IO with *errmsg when the archive directory cannot be created. */
KB_MUSTCHECK enum kb_err admin_new(struct event_base *base, const struct kb_runtime *rt,
                                   struct kb_admin **out, char **errmsg);
/* The request handler for the admin HTTP server (a kb_hreq_cb; `admin` is
 * the struct kb_admin). */
void admin_handle(struct kb_hreq *req, void *admin);
/* The head gate for the admin HTTP server (a kb_hreq_head_cb): a request
 * with a body is read only when it carries a valid admin token; otherwise
 * it is answered 401 unauthorized unread. Admin thread. */
enum kb_err admin_head_gate(struct kb_hgate *g, const char *target, const struct kb_hdr *hdrs,
                            size_t nh, void *admin);
/* Stops after the writes in flight are answered: drained(arg) runs on the
 * admin loop when none is left (at once when none is). */
void admin_drain(struct kb_admin *a, void (*drained)(void *arg), void *arg);
/* Writes still in flight (only after a shutdown timeout) are left to the
 * writer, which still reads them: a bounded leak at exit. */
void admin_free(struct kb_admin *a);

#endif
