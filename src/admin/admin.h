/*
 * admin.h - the admin REST API on its own listener and thread: vault keys
 * (keys.c), health (health.c). Every route but /healthz and /readyz needs
 * `Authorization: Bearer <admin token>`.
 */
#ifndef KB_ADMIN_ADMIN_H
#define KB_ADMIN_ADMIN_H

#include "core/err.h"

struct kb_hreq;
struct kb_runtime;
struct kb_store;
struct kb_admin;

/* The admin API. rt and store are borrowed and must outlive the admin;
 * admin thread only. */
KB_MUSTCHECK enum kb_err admin_new(const struct kb_runtime *rt, struct kb_store *store,
                                   struct kb_admin **out, char **errmsg);
/* The request handler for the admin HTTP server (a kb_hreq_cb; `admin` is
 * the struct kb_admin). */
void admin_handle(struct kb_hreq *req, void *admin);
void admin_free(struct kb_admin *a);

#endif
