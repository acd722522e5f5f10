/* admin_int.h - shared between the admin API's files only. */
#ifndef KB_ADMIN_ADMIN_INT_H
#define KB_ADMIN_ADMIN_INT_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "store/store.h"

struct kb_hreq;
struct evkeyvalq;
struct kb_runtime;
struct kb_store;
struct kb_writer_port;
struct kb_audit_retention;

/* Who sent the request being routed (admin.c, set by the token check):
 * valid while its handler runs on the admin loop; a job that needs it
 * later copies it. */
struct admin__caller {
    bool root;         /* a root token: every tenant's objects */
    char tenant[32];   /* a scoped token's tenant ("" for root) */
    char token_id[32]; /* the token's public id */
};

struct kb_admin {
    struct admin__caller who;    /* the request being routed (see above) */
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
/* /v1/budgets and /v1/budgets/{name} (budgets.c); rest as for keys. */
void admin__budgets(struct kb_admin *a, struct kb_hreq *req, const char *rest,
                    struct evkeyvalq *query);

/* 1..max bytes of printable UTF-8 (no control, bidi, zero-width or line
 * separator characters): key labels and budget names (text.c). */
bool admin__valid_text(const char *s, size_t max);
#define ADMIN_NAME_MSG                                                                             \
    "name must be a string of 1-256 bytes of printable UTF-8 (no control, bidi, zero-width or "    \
    "line-separator characters)"

/* "day", "month" or "total" into *out (budgets.c). */
bool admin__budget_window(const char *s, enum kb_budget_window *out);
/* A budget as the API shows it, with its usage (budgets.c). */
json_t *admin__budget_json(const struct kb_budget *b);

/* Budgets named at key issuance ("budgets": names, or objects that create
 * one unless the name exists), parsed on the admin loop, linked on the
 * writer thread in the issuing transaction (budgets.c). */
struct admin__issue_budget {
    struct kb_budget def; /* name (owned), and when `define`: cap, window, parent (owned) */
    bool define;          /* an object: create it unless the name exists */
    char *detail;         /* owned; its budget.created audit detail, once created */
};
struct admin__key_budgets {
    struct admin__issue_budget *v; /* owned; n of them */
    size_t n;
    char *err;        /* owned; why one could not be linked (writer thread) */
    char *key_detail; /* owned; the key.issued audit detail, NULL without budgets */
};
/* false with *field and *msg (caller frees) on a bad "budgets" member. */
bool admin__key_budgets_parse(json_t *body, struct admin__key_budgets *kb, const char **field,
                              char **msg);
/* Writer thread: creates the defined ones that do not exist (each with a
 * budget.created record made from tmpl) and links all to key; KB_E_INVALID
 * with kb->err when one cannot be. */
struct kb_audit_rec;
enum kb_err admin__key_budgets_link(struct kb_store *s, struct admin__key_budgets *kb,
                                    const struct kb_key *key, const struct kb_audit_rec *tmpl);
void admin__key_budgets_cleanup(struct admin__key_budgets *kb);
/* Puts the names (and parents) of kb in tenant's namespace (NULL: root's,
 * unchanged): admin__budget_store_name. */
void admin__key_budgets_scope(struct admin__key_budgets *kb, const char *tenant);

/* PATCH /v1/keys/{id}'s body (keys_patch.c): *c from "daily_usd_cap" and
 * "expires_in" (from `now`, within max_ttl), *detail (caller frees) the
 * audit detail. false with *field and *msg (caller frees) on an unknown
 * field, a bad value or an empty change. */
struct kb_key_change;
bool admin__key_patch_parse(struct kb_admin *a, const char *raw, size_t rawlen, json_t *body,
                            int64_t now, struct kb_key_change *c, char **detail, const char **field,
                            char **msg);

/* Issuance's narrower scopes (keys_patch.c): "allowed_models" (an openai
 * or anthropic key: exact model ids) and "max_amount_per_request" (a
 * stripe key: exact USD, > 0; raw is the body's text) into k (k->vendor
 * set). false with
 * *field and *msg (caller frees) on a bad one. */
struct kb_key;
bool admin__key_scopes_parse(const char *raw, size_t rawlen, json_t *body, struct kb_key *k,
                             const char **field, char **msg);

/* GET /v1/usage: daily spend grouped and paged (usage.c). */
void admin__usage(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *query);
/* GET /v1/alerts: webhook deliveries, newest first (alerts.c). */
void admin__alerts(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *query);
/* The caller's tenant: NULL for a root token (admin.c). */
const char *admin__scope(const struct kb_admin *a);
/*
 * The tenant a request acts for: a scoped token's own; for root, the
 * `asked` tenant (a body field or ?tenant=; NULL: root's own). false (the
 * answer sent: 404 no such tenant) when a scoped token names another
 * tenant, or the tenant asked for does not exist. *out is a copy (caller
 * frees; NULL for root's own).
 */
bool admin__acting_tenant(struct kb_admin *a, struct kb_hreq *req, const char *asked, char **out);
/* As admin__acting_tenant for the body's "tenant" member (a string or
 * null); 400 when it is neither. */
bool admin__body_tenant(struct kb_admin *a, struct kb_hreq *req, json_t *body, char **out);
/* Whether the caller may see key `id`: false with the answer sent (404 for
 * an unknown key or another tenant's, 503 when the store fails); else
 * *tenant (caller frees) is the key's tenant, NULL for root's. */
bool admin__key_visible(struct kb_admin *a, struct kb_hreq *req, const char *id, char **tenant);
/* Writer thread: KB_OK when tenant `id` exists (not deleted), in the
 * caller's transaction; KB_E_NOT_FOUND. */
enum kb_err admin__tenant_alive(struct kb_store *s, const char *id);
/* A budget's name in the store: a tenant's budgets live in their own
 * namespace, "<tenant id>\x1f<name>" (no API name holds a control
 * character); root's keep their plain name. Caller frees. */
char *admin__budget_store_name(const char *tenant, const char *name);
/* The API's name of a stored budget name (a pointer into stored). */
const char *admin__budget_api_name(const char *stored);
/* The tenant of a stored budget name into out (size bytes); false for root's. */
bool admin__budget_tenant(const char *stored, char *out, size_t size);
/* Removes every "<tenant>\x1f" from msg in place (store messages). */
void admin__budget_unscope_msg(char *msg);

/* One write of the tenants and admin-tokens resources and its audit
 * record, committed together by the store writer (tenants.c). op runs on
 * the writer thread; done on the admin loop answers req. The write owns
 * arg only if free_arg is set. */
typedef enum kb_err (*admin__op_fn)(struct kb_store *s, void *arg);
typedef void (*admin__done_fn)(struct kb_admin *a, struct kb_hreq *req, enum kb_err err, void *arg);
struct kb_audit_rec;
void admin__write(struct kb_admin *a, struct kb_hreq *req, admin__op_fn op, admin__done_fn done,
                  void *arg, void (*free_arg)(void *), const char *action, const char *tenant,
                  const char *label, json_t *detail);

/* /v1/tenants and /v1/tenants/{id}[/vendors/{vendor}] (tenants.c). */
void admin__tenants(struct kb_admin *a, struct kb_hreq *req, const char *rest,
                    struct evkeyvalq *query);
/* /v1/tenants/{id}/vendors/{vendor}: a tenant's vendor secret (secrets.c);
 * id is a tenant the caller may see, rest the path after /vendors/. */
void admin__tenant_secrets(struct kb_admin *a, struct kb_hreq *req, const char *id,
                           const char *rest);
/* POST /v1/secrets/reencrypt (root only; secrets.c). */
void admin__secrets_reencrypt(struct kb_admin *a, struct kb_hreq *req);
/* /v1/admin-tokens and /v1/admin-tokens/{id} (tokens.c). */
void admin__tokens(struct kb_admin *a, struct kb_hreq *req, const char *rest,
                   struct evkeyvalq *query);

/* GET /v1/audit: records filtered and paged (audit.c). */
void admin__audit(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *query);
/* GET /metrics: Prometheus text (metrics.c). */
void admin__metrics(struct kb_admin *a, struct kb_hreq *req);
/* GET /ui and /ui/...: the dashboard's embedded files (ui.c); rest is the
 * path after /ui ("", "/" or "/name"). Needs no token. */
void admin__ui(struct kb_admin *a, struct kb_hreq *req, const char *rest);
void admin__healthz(struct kb_admin *a, struct kb_hreq *req);
void admin__readyz(struct kb_admin *a, struct kb_hreq *req);

#endif
