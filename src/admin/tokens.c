/*
 * tokens.c - the admin tokens resource (docs/tenants.md).
 *
 *   POST   /v1/admin-tokens        create {label, tenant?}: the token, shown once
 *   GET    /v1/admin-tokens        list (?tenant= for root)
 *   DELETE /v1/admin-tokens/{id}   revoke: refused from the token's next request
 *
 * A token is root (no tenant) or scoped to one tenant. Only root makes
 * root tokens; a scoped token makes, lists and revokes its own tenant's
 * only, and another tenant's token answers 404. Stored as the HMAC of the
 * token under the server key, like vault keys; every admin request reads
 * the token's row, so a revocation holds at once on every node.
 */
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/runtime.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/store.h"

#define LABEL_MAX 256

static json_t *token_json(const struct kb_admin_token *t)
{
    char created[32], revoked[32];
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", t->id, "label", t->label ? t->label : "",
                          "created_at", clock_rfc3339(t->created_at, created, sizeof created));
    json_object_set_new(o, "tenant", t->tenant ? json_string(t->tenant) : json_null());
    json_object_set_new(o, "revoked_at",
                        t->revoked_at
                            ? json_string(clock_rfc3339(t->revoked_at, revoked, sizeof revoked))
                            : json_null());
    return o;
}

struct create_job {
    struct kb_admin_token tok; /* label, tenant owned */
    uint8_t hash[KB_HASH_LEN];
    char token[KB_TOKEN_MAX]; /* shown once, in the answer */
};

static void create_free(void *arg)
{
    struct create_job *c = arg;
    free(c->tok.label);
    free(c->tok.tenant);
    crypto_wipe(c->token, sizeof c->token);
    free(c);
}

static enum kb_err create_op(struct kb_store *s, void *arg)
{
    struct create_job *c = arg;
    enum kb_err err = c->tok.tenant ? admin__tenant_alive(s, c->tok.tenant) : KB_OK;
    return err == KB_OK ? store_admin_token_insert(s, &c->tok, c->hash) : err;
}

static void create_done(struct kb_admin *a, struct kb_hreq *req, enum kb_err err, void *arg)
{
    struct create_job *c = arg;
    (void)a;
    if (err != KB_OK) {
        http_reply_error(req, err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err,
                         err == KB_E_NOT_FOUND ? "no such tenant" : NULL, NULL);
        return;
    }
    kb_log(KB_LOG_INFO, "admin token created", "token_id", c->tok.id, NULL);
    json_t *o = token_json(&c->tok);
    json_object_set_new(o, "token", json_string(c->token));
    http_reply_json(req, 201, o);
}

static void create(struct kb_admin *a, struct kb_hreq *req)
{
    size_t len;
    const char *raw = hreq_body(req, &len);
    json_t *body = raw ? json_loadb(raw, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *label = json_object_get(body, "label");
    json_t *tenant = json_object_get(body, "tenant");
    const char *key;
    json_t *v;
    const char *unknown = NULL;
    json_object_foreach(body, key, v) if (strcmp(key, "label") != 0 && strcmp(key, "tenant") != 0)
        unknown = key;
    char *t = NULL;
    if (!json_is_object(body)) {
        http_reply_error(req, KB_E_BAD_JSON, NULL, NULL);
    } else if (unknown) {
        char *m = kb_asprintf("unknown field \"%s\"", unknown);
        http_reply_error(req, KB_E_INVALID, m, unknown);
        free(m);
    } else if (!json_is_string(label) || !admin__valid_text(json_string_value(label), LABEL_MAX)) {
        http_reply_error(req, KB_E_INVALID, "label must be a string of 1-256 printable bytes",
                         "label");
    } else if (tenant && !json_is_null(tenant) && !json_is_string(tenant)) {
        http_reply_error(req, KB_E_INVALID, "tenant must be a tenant's id or null", "tenant");
    } else if (admin__acting_tenant(a, req, json_string_value(tenant), &t)) {
        struct create_job *c = kb_calloc(1, sizeof *c);
        crypto_id_new("at_", 24, c->tok.id, sizeof c->tok.id);
        c->tok.label = kb_strdup(json_string_value(label));
        c->tok.tenant = t; /* NULL: a root token, which only root reaches here for */
        c->tok.created_at = clock_now();
        crypto_token_new("kba_", c->token, sizeof c->token);
        crypto_hmac(a->rt->server_key, KB_HASH_LEN, c->token, strlen(c->token), c->hash);
        json_t *d = json_pack("{s:s, s:s}", "token_id", c->tok.id, "label", c->tok.label);
        json_object_set_new(d, "tenant", t ? json_string(t) : json_null());
        admin__write(a, req, create_op, create_done, c, create_free, "admin_token.created", t,
                     c->tok.label, d);
    }
    json_decref(body);
}

static void list(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *q)
{
    const char *scope = admin__scope(a);
    const char *want = evhttp_find_header(q, "tenant");
    bool all = !scope && !want;
    const char *tenant = scope ? scope : want;
    struct kb_admin_token *v = NULL;
    size_t n = 0;
    if (store_admin_token_list(a->store, all, tenant, &v, &n) != KB_OK) {
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, token_json(&v[i]));
    store_admin_token_list_free(v, n);
    http_reply_json(req, 200, json_pack("{s:o, s:n}", "data", data, "next_cursor"));
}

struct revoke_job {
    char id[32];
    char *tenant; /* owned; the caller's scope, NULL: root (any token) */
    int64_t now;
};

static void revoke_free(void *arg)
{
    struct revoke_job *r = arg;
    free(r->tenant);
    free(r);
}

static enum kb_err revoke_op(struct kb_store *s, void *arg)
{
    struct revoke_job *r = arg;
    return store_admin_token_revoke(s, r->id, r->tenant == NULL, r->tenant, r->now);
}

static void revoke_done(struct kb_admin *a, struct kb_hreq *req, enum kb_err err, void *arg)
{
    struct revoke_job *r = arg;
    (void)a;
    if (err == KB_OK) {
        kb_log(KB_LOG_INFO, "admin token revoked", "token_id", r->id, NULL);
        http_reply_json(req, 204, NULL);
    } else if (err == KB_E_NOT_FOUND) {
        http_reply_error(req, err, "no such admin token", NULL);
    } else {
        http_reply_error(req, err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err, NULL, NULL);
    }
}

static bool valid_id(const char *id)
{
    size_t n = strlen(id);
    return n > 3 && n < 32 && strncmp(id, "at_", 3) == 0 &&
           strspn(id + 3, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
               n - 3;
}

void admin__tokens(struct kb_admin *a, struct kb_hreq *req, const char *rest,
                   struct evkeyvalq *query)
{
    enum kb_method cmd = hreq_method(req);
    if (*rest == '\0') {
        if (cmd == KB_M_POST)
            create(a, req);
        else if (cmd == KB_M_GET)
            list(a, req, query);
        else
            http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    const char *id = rest + 1;
    if (!valid_id(id)) {
        http_reply_error(req, KB_E_NOT_FOUND, "no such admin token", NULL);
    } else if (cmd == KB_M_DELETE) {
        struct revoke_job *r = kb_calloc(1, sizeof *r);
        snprintf(r->id, sizeof r->id, "%s", id);
        const char *scope = admin__scope(a);
        r->tenant = scope ? kb_strdup(scope) : NULL;
        r->now = clock_now();
        admin__write(a, req, revoke_op, revoke_done, r, revoke_free, "admin_token.revoked", scope,
                     NULL, json_pack("{s:s}", "token_id", id));
    } else {
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
    }
}
