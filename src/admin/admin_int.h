/* admin_int.h - shared between the admin API's files only. */
#ifndef KB_ADMIN_ADMIN_INT_H
#define KB_ADMIN_ADMIN_INT_H
#include <stddef.h>

struct kb_hreq;
struct evkeyvalq;
struct kb_runtime;
struct kb_store;
struct kb_writer_port;
struct kb_audit_retention;

struct kb_admin {
    const struct kb_runtime *rt; /* borrowed */
    struct kb_store *store;      /* borrowed; the admin thread's connection (reads) */
    struct kb_writer_port *port; /* borrowed; writes go through the store writer */
    int pending;                 /* writes submitted and not yet answered */
    void (*drained)(void *arg);  /* admin_drain's callback, once pending is 0 */
    void *drained_arg;
    struct kb_audit_retention *retention; /* owned; NULL without [audit] retention */
};

/* A write's answer went out (keys.c): completes a drain. */
void admin__job_finished(struct kb_admin *a);

/* One handler per route; `rest` is the path after /v1/keys ("" or "/vk_..."). */
void admin__keys(struct kb_admin *a, struct kb_hreq *req, const char *rest,
                 struct evkeyvalq *query);
/* GET /v1/audit: records filtered and paged (audit.c). */
void admin__audit(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *query);
/* GET /metrics: Prometheus text (metrics.c). */
void admin__metrics(struct kb_admin *a, struct kb_hreq *req);
void admin__healthz(struct kb_admin *a, struct kb_hreq *req);
void admin__readyz(struct kb_admin *a, struct kb_hreq *req);

#endif
