/*
 * secrets.c - a tenant's own vendor secrets (docs/tenants.md).
 *
 *   PUT    /v1/tenants/{id}/vendors/{vendor}   set {secret, account?}
 *   GET    /v1/tenants/{id}/vendors/{vendor}   whether one is set, its key id, when
 *   GET    /v1/tenants/{id}/vendors            the same for each vendor set
 *   DELETE /v1/tenants/{id}/vendors/{vendor}   erase it
 *   POST   /v1/secrets/reencrypt               (root) reseal every secret under
 *                                              the current master key
 *
 * The secret is sealed (AES-256-GCM, vendor/secrets.h) on the admin loop
 * before it is queued and never leaves the handler in clear: no answer,
 * log line or audit record holds it, only the vendor, the master key's id
 * and the time. A change is published to every worker's key cache (and,
 * on a shared store, to the other nodes through the key change log) before
 * it is answered, so the next request of the tenant's keys uses it.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/runtime.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/revlog.h"
#include "store/store.h"
#include "vendor/secrets.h"

#define SECRET_MAX 4096 /* bytes of a vendor secret */

static json_t *secret_json(const struct kb_tenant_secret *sec)
{
    char at[32];
    json_t *o = json_pack("{s:s, s:b, s:s, s:s}", "vendor", sec->vendor, "set", 1, "key_id",
                          sec->key_id, "updated_at", clock_rfc3339(sec->updated_at, at, sizeof at));
    json_object_set_new(o, "account", sec->account ? json_string(sec->account) : json_null());
    return o;
}

static void sec_free(void *arg)
{
    store_tenant_secret_free(arg);
}

static enum kb_err put_op(struct kb_store *s, void *arg)
{
    return store_tenant_secret_put(s, arg);
}

static enum kb_err delete_op(struct kb_store *s, void *arg)
{
    const struct kb_tenant_secret *sec = arg;
    return store_tenant_secret_delete(s, sec->tenant, sec->vendor);
}

/* Every worker forgets the keys it holds: the tenant's will read their
 * credential again (a secret change is rare; the caches refill). */
static void published(struct kb_admin *a)
{
    revlog_publish_all(a->rt->revlog);
}

static void put_done(struct kb_admin *a, struct kb_hreq *req, enum kb_err err, void *arg)
{
    const struct kb_tenant_secret *sec = arg;
    if (err != KB_OK) {
        http_reply_error(req, err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err, NULL, NULL);
        return;
    }
    published(a);
    kb_log(KB_LOG_INFO, "tenant secret set", "tenant", sec->tenant, "vendor", sec->vendor, "key_id",
           sec->key_id, NULL);
    http_reply_json(req, 200, secret_json(sec));
}

static void delete_done(struct kb_admin *a, struct kb_hreq *req, enum kb_err err, void *arg)
{
    const struct kb_tenant_secret *sec = arg;
    if (err == KB_OK) {
        published(a);
        kb_log(KB_LOG_INFO, "tenant secret deleted", "tenant", sec->tenant, "vendor", sec->vendor,
               NULL);
        http_reply_json(req, 204, NULL);
    } else if (err == KB_E_NOT_FOUND) {
        http_reply_error(req, err, "no secret is set for this vendor", NULL);
    } else {
        http_reply_error(req, err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err, NULL, NULL);
    }
}

static void put(struct kb_admin *a, struct kb_hreq *req, const char *tenant, const char *vendor)
{
    size_t len;
    const char *raw = hreq_body(req, &len);
    json_t *body = raw ? json_loadb(raw, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    const char *secret = json_string_value(json_object_get(body, "secret"));
    json_t *account = json_object_get(body, "account");
    const char *key, *unknown = NULL;
    json_t *v;
    json_object_foreach(body, key, v) if (strcmp(key, "secret") != 0 && strcmp(key, "account") != 0)
        unknown = key;
    const struct kb_vendor *vd = config_vendor(a->rt->cfg, vendor, strlen(vendor));
    if (!json_is_object(body)) {
        http_reply_error(req, KB_E_BAD_JSON, NULL, NULL);
    } else if (unknown) {
        char *m = kb_asprintf("unknown field \"%s\"", unknown);
        http_reply_error(req, KB_E_INVALID, m, unknown);
        free(m);
    } else if (!secret || !admin__valid_text(secret, SECRET_MAX)) {
        /* the message never repeats the value */
        http_reply_error(req, KB_E_INVALID,
                         "secret must be a string of 1-4096 bytes of printable UTF-8", "secret");
    } else if (account && !json_is_null(account) &&
               (!json_is_string(account) || !admin__valid_text(json_string_value(account), 256))) {
        http_reply_error(req, KB_E_INVALID, "account must be a string of 1-256 printable bytes",
                         "account");
    } else if (vd && vd->auth == KB_AUTH_BASIC && !json_is_string(account)) {
        http_reply_error(req, KB_E_INVALID, "this vendor's credential needs an account", "account");
    } else if (!secrets_enabled()) {
        http_reply_error(req, KB_E_CONFIG,
                         "no master key is configured: set [secrets] master_key_file or "
                         "KEYBRAKE_MASTER_KEY to store tenants' secrets",
                         NULL);
    } else {
        struct kb_tenant_secret *sec = kb_calloc(1, sizeof *sec);
        char kid[KB_KEY_ID_LEN + 1];
        enum kb_err err = secrets_seal(tenant, vendor, secret, strlen(secret), &sec->sealed,
                                       &sec->sealed_len, kid);
        if (err != KB_OK) {
            free(sec);
            http_reply_error(req, KB_E_INTERNAL, NULL, NULL);
        } else {
            sec->tenant = kb_strdup(tenant);
            sec->vendor = kb_strdup(vendor);
            sec->key_id = kb_strdup(kid);
            sec->account = json_is_string(account) ? kb_strdup(json_string_value(account)) : NULL;
            sec->updated_at = clock_now();
            admin__write(a, req, put_op, put_done, sec, sec_free, "tenant.secret_set", tenant, NULL,
                         json_pack("{s:s, s:s}", "vendor", vendor, "key_id", kid));
        }
    }
    /* the body held the secret in clear */
    if (raw && len)
        crypto_wipe((void *)raw, len);
    json_decref(body);
}

static void list(struct kb_admin *a, struct kb_hreq *req, const char *tenant)
{
    struct kb_tenant_secret *v = NULL;
    size_t n = 0;
    if (store_tenant_secret_list(a->store, tenant, &v, &n) != KB_OK) {
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, secret_json(&v[i]));
    store_tenant_secret_list_free(v, n);
    http_reply_json(req, 200, json_pack("{s:o}", "data", data));
}

void admin__tenant_secrets(struct kb_admin *a, struct kb_hreq *req, const char *id,
                           const char *rest)
{
    enum kb_method cmd = hreq_method(req);
    struct kb_tenant *t = NULL;
    enum kb_err err = store_tenant_get(a->store, id, &t);
    store_tenant_free(t);
    if (err != KB_OK) {
        http_reply_error(req, err == KB_E_NOT_FOUND ? err : KB_E_STORE,
                         err == KB_E_NOT_FOUND ? "no such tenant" : NULL, NULL);
        return;
    }
    if (*rest == '\0') {
        if (cmd == KB_M_GET)
            list(a, req, id);
        else
            http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    const char *vendor = rest + 1;
    if (!config_vendor(a->rt->cfg, vendor, strlen(vendor))) {
        http_reply_error(req, KB_E_NOT_FOUND, "no such vendor", NULL);
    } else if (cmd == KB_M_PUT) {
        put(a, req, id, vendor);
    } else if (cmd == KB_M_GET) {
        struct kb_tenant_secret *sec = NULL;
        err = store_tenant_secret_get(a->store, id, vendor, &sec);
        if (err == KB_OK)
            http_reply_json(req, 200, secret_json(sec));
        else
            http_reply_error(req, err == KB_E_NOT_FOUND ? err : KB_E_STORE,
                             err == KB_E_NOT_FOUND ? "no secret is set for this vendor" : NULL,
                             NULL);
        store_tenant_secret_free(sec);
    } else if (cmd == KB_M_DELETE) {
        struct kb_tenant_secret *sec = kb_calloc(1, sizeof *sec);
        sec->tenant = kb_strdup(id);
        sec->vendor = kb_strdup(vendor);
        admin__write(a, req, delete_op, delete_done, sec, sec_free, "tenant.secret_deleted", id,
                     NULL, json_pack("{s:s}", "vendor", vendor));
    } else {
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
    }
}

/* ---- re-encryption under the current master key ---- */

struct reseal {
    int64_t count;   /* secrets resealed */
    int64_t missing; /* secrets whose key is not configured (left as they are) */
    char *err_tenant, *err_vendor, *err_key; /* owned; the first that could not be opened */
};

static void reseal_free(void *arg)
{
    struct reseal *r = arg;
    free(r->err_tenant);
    free(r->err_vendor);
    free(r->err_key);
    free(r);
}

/* Writer thread: every secret not under the current key is opened and
 * sealed again, in the writer's transaction (all or nothing). */
static enum kb_err reseal_op(struct kb_store *s, void *arg)
{
    struct reseal *r = arg;
    r->count = 0;
    struct kb_tenant_secret *v = NULL;
    size_t n = 0;
    enum kb_err err = store_tenant_secret_list(s, NULL, &v, &n);
    const char *cur = secrets_key_id();
    for (size_t i = 0; err == KB_OK && i < n; i++) {
        if (strcmp(v[i].key_id, cur) == 0)
            continue;
        char *plain = NULL;
        err = secrets_open(v[i].tenant, v[i].vendor, v[i].key_id, v[i].sealed, v[i].sealed_len,
                           &plain);
        if (err != KB_OK) {
            free(r->err_tenant), free(r->err_vendor), free(r->err_key);
            r->err_tenant = kb_strdup(v[i].tenant);
            r->err_vendor = kb_strdup(v[i].vendor);
            r->err_key = kb_strdup(v[i].key_id);
            break;
        }
        struct kb_tenant_secret nw = v[i];
        char kid[KB_KEY_ID_LEN + 1];
        err = secrets_seal(v[i].tenant, v[i].vendor, plain, strlen(plain), &nw.sealed,
                           &nw.sealed_len, kid);
        crypto_wipe(plain, strlen(plain));
        free(plain);
        if (err != KB_OK)
            break;
        nw.key_id = kid;
        nw.updated_at = clock_now();
        err = store_tenant_secret_put(s, &nw);
        crypto_wipe(nw.sealed, nw.sealed_len);
        free(nw.sealed);
        r->count++;
    }
    store_tenant_secret_list_free(v, n);
    return err;
}

static void reseal_done(struct kb_admin *a, struct kb_hreq *req, enum kb_err err, void *arg)
{
    struct reseal *r = arg;
    if (err == KB_OK) {
        if (r->count > 0)
            published(a);
        char n[24];
        snprintf(n, sizeof n, "%lld", (long long)r->count);
        kb_log(KB_LOG_INFO, "tenant secrets re-encrypted", "count", n, "key_id", secrets_key_id(),
               NULL);
        http_reply_json(req, 200,
                        json_pack("{s:I, s:s}", "reencrypted", (json_int_t)r->count, "key_id",
                                  secrets_key_id()));
    } else if (err == KB_E_SECRET_UNAVAILABLE && r->err_key) {
        char *m = kb_asprintf("tenant %s's %s secret is sealed under master key %s, which is not "
                              "configured: nothing was re-encrypted",
                              r->err_tenant, r->err_vendor, r->err_key);
        http_reply_error(req, err, m, NULL);
        free(m);
    } else {
        http_reply_error(req, err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err, NULL, NULL);
    }
}

void admin__secrets_reencrypt(struct kb_admin *a, struct kb_hreq *req)
{
    if (hreq_method(req) != KB_M_POST) {
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
    } else if (!secrets_enabled()) {
        http_reply_error(req, KB_E_CONFIG,
                         "no master key is configured: set [secrets] master_key_file or "
                         "KEYBRAKE_MASTER_KEY",
                         NULL);
    } else {
        struct reseal *r = kb_calloc(1, sizeof *r);
        admin__write(a, req, reseal_op, reseal_done, r, reseal_free, "secrets.reencrypted", NULL,
                     NULL, json_pack("{s:s}", "key_id", secrets_key_id()));
    }
}
