/*
 * tenants.c - the tenants resource of the admin API (docs/tenants.md).
 *
 *   POST   /v1/tenants         create {name} (root only)
 *   GET    /v1/tenants         list (a scoped token sees its own tenant)
 *   GET    /v1/tenants/{id}    one tenant
 *   DELETE /v1/tenants/{id}    delete (root only; 409 tenant_in_use while
 *                              it owns an active key)
 *   /v1/tenants/{id}/vendors/{vendor}: the tenant's vendor secrets (secrets.c)
 *
 * Another tenant's objects, and root's own surfaces, answer 404 to a
 * scoped token: never 403, so that a token learns nothing of what it may
 * not see. Also here: the write helper the tenants, tokens and secrets
 * resources share, and the namespacing of a tenant's budget names.
 */
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "audit/audit.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/log.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/store.h"
#include "store/writer.h"

/* ---- budget names of a tenant ---- */

#define NS_SEP '\x1f' /* never in an API name: admin__valid_text refuses controls */

char *admin__budget_store_name(const char *tenant, const char *name)
{
    return tenant ? kb_asprintf("%s%c%s", tenant, NS_SEP, name) : kb_strdup(name);
}

const char *admin__budget_api_name(const char *stored)
{
    const char *sep = stored ? strchr(stored, NS_SEP) : NULL;
    return sep ? sep + 1 : stored;
}

bool admin__budget_tenant(const char *stored, char *out, size_t size)
{
    const char *sep = stored ? strchr(stored, NS_SEP) : NULL;
    if (!sep || (size_t)(sep - stored) >= size)
        return false;
    memcpy(out, stored, (size_t)(sep - stored));
    out[sep - stored] = '\0';
    return true;
}

void admin__budget_unscope_msg(char *msg)
{
    char *sep;
    while (msg && (sep = strchr(msg, NS_SEP)) != NULL) {
        /* the tenant id before it: [A-Za-z0-9_] back to a non-id byte */
        char *start = sep;
        while (start > msg &&
               (start[-1] == '_' || (start[-1] >= '0' && start[-1] <= '9') ||
                (start[-1] >= 'A' && start[-1] <= 'Z') || (start[-1] >= 'a' && start[-1] <= 'z')))
            start--;
        memmove(start, sep + 1, strlen(sep + 1) + 1);
    }
}

/* ---- whose objects the caller sees ---- */

bool admin__body_tenant(struct kb_admin *a, struct kb_hreq *req, json_t *body, char **out)
{
    json_t *t = json_object_get(body, "tenant");
    *out = NULL;
    if (t && !json_is_null(t) && !json_is_string(t)) {
        http_reply_error(req, KB_E_INVALID, "tenant must be a tenant's id or null", "tenant");
        return false;
    }
    return admin__acting_tenant(a, req, json_string_value(t), out);
}

bool admin__key_visible(struct kb_admin *a, struct kb_hreq *req, const char *id, char **tenant)
{
    struct kb_key *k = NULL;
    enum kb_err err = store_key_get(a->store, id, clock_day(clock_now()), &k);
    const char *scope = admin__scope(a);
    /* another tenant's key is not there for a scoped token: as an unknown id */
    if (err == KB_OK && scope && (!k->tenant || strcmp(k->tenant, scope) != 0))
        err = KB_E_NOT_FOUND;
    if (err != KB_OK) {
        store_key_free(k);
        http_reply_error(req, err == KB_E_NOT_FOUND ? err : KB_E_STORE,
                         err == KB_E_NOT_FOUND ? "no such key" : NULL, NULL);
        return false;
    }
    *tenant = k->tenant ? kb_strdup(k->tenant) : NULL;
    store_key_free(k);
    return true;
}

enum kb_err admin__tenant_alive(struct kb_store *s, const char *id)
{
    struct kb_tenant *t = NULL;
    enum kb_err err = store_tenant_get(s, id, &t);
    store_tenant_free(t);
    return err;
}

/* ---- one audited write ---- */

struct write_job {
    struct kb_admin *a;
    struct kb_hreq *req;
    admin__op_fn op;
    admin__done_fn done;
    void *arg;
    void (*free_arg)(void *);
    struct kb_audit_rec rec;
    char *detail, *tenant, *label; /* owned; the record's */
};

/* Writer thread. */
static enum kb_err write_run(struct kb_store *s, void *arg)
{
    struct write_job *j = arg;
    enum kb_err err = j->op(s, j->arg);
    return err == KB_OK ? audit_append(s, &j->rec, NULL) : err;
}

static void write_done(void *arg, enum kb_err err)
{
    struct write_job *j = arg;
    struct kb_admin *a = j->a;
    a->pending--;
    j->done(a, j->req, err, j->arg);
    if (j->free_arg)
        j->free_arg(j->arg);
    free(j->detail);
    free(j->tenant);
    free(j->label);
    free(j);
    admin__job_finished(a);
}

void admin__write(struct kb_admin *a, struct kb_hreq *req, admin__op_fn op, admin__done_fn done,
                  void *arg, void (*free_arg)(void *), const char *action, const char *tenant,
                  const char *label, json_t *detail)
{
    struct write_job *j = kb_calloc(1, sizeof *j);
    j->a = a;
    j->req = req;
    j->op = op;
    j->done = done;
    j->arg = arg;
    j->free_arg = free_arg;
    j->rec.kind = KB_AUDIT_ADMIN;
    j->rec.ts_ms = clock_now_ms();
    crypto_id_new("adm_", 24, j->rec.request_id, sizeof j->rec.request_id);
    j->rec.action = action;
    j->rec.decision = "ok";
    if (a->who.token_id[0]) { /* which token did it */
        if (!detail)
            detail = json_object();
        json_object_set_new(detail, "by", json_string(a->who.token_id));
    }
    if (detail) {
        j->detail = json_dumps(detail, JSON_COMPACT);
        json_decref(detail);
    }
    j->tenant = tenant ? kb_strdup(tenant) : NULL;
    j->label = label ? kb_strdup(label) : NULL;
    j->rec.detail = j->detail;
    j->rec.tenant = j->tenant;
    j->rec.label = j->label;
    a->pending++;
    writer_submit(a->port, write_run, write_done, j);
}

/* ---- tenants ---- */

static json_t *tenant_json(const struct kb_tenant *t)
{
    char created[32];
    return json_pack("{s:s, s:s, s:s}", "id", t->id, "name", t->name, "created_at",
                     clock_rfc3339(t->created_at, created, sizeof created));
}

static bool valid_tenant_id(const char *id)
{
    size_t n = strlen(id);
    return n > 3 && n < 32 && strncmp(id, "tn_", 3) == 0 &&
           strspn(id + 3, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
               n - 3;
}

static enum kb_err create_op(struct kb_store *s, void *arg)
{
    return store_tenant_insert(s, arg);
}

static void tenant_free(void *arg)
{
    store_tenant_free(arg);
}

static void create_done(struct kb_admin *a, struct kb_hreq *req, enum kb_err err, void *arg)
{
    struct kb_tenant *t = arg;
    (void)a;
    if (err == KB_OK) {
        kb_log(KB_LOG_INFO, "tenant created", "tenant", t->id, NULL);
        http_reply_json(req, 201, tenant_json(t));
    } else if (err == KB_E_EXISTS) {
        http_reply_error(req, err, "a tenant with this name exists already", "name");
    } else {
        http_reply_error(req, err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err, NULL, NULL);
    }
}

static void create(struct kb_admin *a, struct kb_hreq *req)
{
    size_t len;
    const char *raw = hreq_body(req, &len);
    json_t *body = raw ? json_loadb(raw, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    const char *name = json_string_value(json_object_get(body, "name"));
    if (!json_is_object(body)) {
        http_reply_error(req, KB_E_BAD_JSON, NULL, NULL);
    } else if (json_object_size(body) != 1 || !name ||
               !admin__valid_text(name, KB_TENANT_NAME_MAX)) {
        http_reply_error(req, KB_E_INVALID,
                         "give exactly {\"name\"}: 1-256 bytes of printable UTF-8", "name");
    } else {
        struct kb_tenant *t = kb_calloc(1, sizeof *t);
        crypto_id_new("tn_", 16, t->id, sizeof t->id);
        t->name = kb_strdup(name);
        t->created_at = clock_now();
        admin__write(a, req, create_op, create_done, t, tenant_free, "tenant.created", t->id, name,
                     json_pack("{s:s, s:s}", "tenant", t->id, "name", name));
    }
    json_decref(body);
}

static void list(struct kb_admin *a, struct kb_hreq *req)
{
    json_t *data = json_array();
    const char *scope = admin__scope(a);
    if (scope) {
        struct kb_tenant *t = NULL;
        if (store_tenant_get(a->store, scope, &t) == KB_OK)
            json_array_append_new(data, tenant_json(t));
        store_tenant_free(t);
        http_reply_json(req, 200, json_pack("{s:o, s:n}", "data", data, "next_cursor"));
        return;
    }
    int64_t after = 0;
    for (;;) {
        struct kb_tenant *v = NULL;
        size_t n = 0;
        if (store_tenant_list(a->store, after, 1000, &v, &n) != KB_OK) {
            json_decref(data);
            http_reply_error(req, KB_E_STORE, NULL, NULL);
            return;
        }
        for (size_t i = 0; i < n; i++)
            json_array_append_new(data, tenant_json(&v[i]));
        after = n ? v[n - 1].seq : after;
        store_tenant_list_free(v, n);
        if (n < 1000)
            break;
    }
    http_reply_json(req, 200, json_pack("{s:o, s:n}", "data", data, "next_cursor"));
}

struct del {
    char id[32];
    int64_t now;
};

static enum kb_err delete_op(struct kb_store *s, void *arg)
{
    struct del *d = arg;
    return store_tenant_delete(s, d->id, d->now);
}

static void delete_done(struct kb_admin *a, struct kb_hreq *req, enum kb_err err, void *arg)
{
    struct del *d = arg;
    (void)a;
    if (err == KB_OK) {
        kb_log(KB_LOG_INFO, "tenant deleted", "tenant", d->id, NULL);
        http_reply_json(req, 204, NULL);
    } else if (err == KB_E_NOT_FOUND) {
        http_reply_error(req, err, "no such tenant", NULL);
    } else if (err == KB_E_TENANT_IN_USE) {
        http_reply_error(req, err, "the tenant still owns an active key: revoke its keys first",
                         NULL);
    } else {
        http_reply_error(req, err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err, NULL, NULL);
    }
}

void admin__tenants(struct kb_admin *a, struct kb_hreq *req, const char *rest,
                    struct evkeyvalq *query)
{
    (void)query;
    enum kb_method cmd = hreq_method(req);
    const char *scope = admin__scope(a);
    if (*rest == '\0') {
        if (cmd == KB_M_GET)
            list(a, req);
        else if (cmd == KB_M_POST && !scope)
            create(a, req);
        else if (cmd == KB_M_POST)
            http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL); /* root's alone */
        else
            http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    char id[32];
    size_t idlen = strcspn(rest + 1, "/");
    if (idlen >= sizeof id) {
        http_reply_error(req, KB_E_NOT_FOUND, "no such tenant", NULL);
        return;
    }
    memcpy(id, rest + 1, idlen);
    id[idlen] = '\0';
    if (!valid_tenant_id(id) || (scope && strcmp(scope, id) != 0)) {
        http_reply_error(req, KB_E_NOT_FOUND, "no such tenant", NULL);
        return;
    }
    const char *sub = rest + 1 + idlen;
    if (strncmp(sub, "/vendors", 8) == 0 && (sub[8] == '\0' || (sub[8] == '/' && sub[9]))) {
        admin__tenant_secrets(a, req, id, sub + 8);
        return;
    }
    if (*sub != '\0') {
        http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL);
        return;
    }
    if (cmd == KB_M_GET) {
        struct kb_tenant *t = NULL;
        enum kb_err err = store_tenant_get(a->store, id, &t);
        if (err == KB_OK)
            http_reply_json(req, 200, tenant_json(t));
        else
            http_reply_error(req, err == KB_E_NOT_FOUND ? err : KB_E_STORE,
                             err == KB_E_NOT_FOUND ? "no such tenant" : NULL, NULL);
        store_tenant_free(t);
    } else if (cmd == KB_M_DELETE && !scope) {
        struct del *d = kb_calloc(1, sizeof *d);
        snprintf(d->id, sizeof d->id, "%s", id);
        d->now = clock_now();
        admin__write(a, req, delete_op, delete_done, d, free, "tenant.deleted", id, NULL,
                     json_pack("{s:s}", "tenant", id));
    } else if (cmd == KB_M_DELETE) {
        http_reply_error(req, KB_E_NOT_FOUND, "no such tenant", NULL);
    } else {
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
    }
}
