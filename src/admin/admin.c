/*
 * admin.c - admin API routing and authentication (see admin.h).
 *
 * Authentication happens once here, before any route runs: the bearer
 * token is HMACed under the server key and looked up; a wrong, missing or
 * malformed token all get the same 401 body.
 */
#include "admin/admin.h"

#include <jansson.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin_int.h"
#include "audit/retention.h"
#include "core/config.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/runtime.h"
#include "net/http.h"
#include "net/httpd.h"
#include "core/config.h"
#include "store/store.h"
#include "store/writer.h"

/* Reads the token's row on every request (no cache): a revocation
 * committed by any node stops the token at its next request. KB_OK,
 * KB_E_UNAUTHORIZED, or KB_E_STORE when the row could not be read (an
 * unreachable store is not a bad token). */
static enum kb_err authorized(struct kb_admin *a, const struct kb_hdr *h, size_t nh)
{
    memset(&a->who, 0, sizeof a->who);
    const char *auth = NULL;
    int n = 0;
    for (size_t i = 0; i < nh; i++)
        if (strcasecmp(h[i].name, "authorization") == 0)
            auth = h[i].value, n++;
    if (n != 1 || strncasecmp(auth, "Bearer ", 7) != 0)
        return KB_E_UNAUTHORIZED;
    const char *tok = auth + 7;
    size_t len = strlen(tok);
    if (len < 16 || len > 256)
        return KB_E_UNAUTHORIZED;
    uint8_t hash[KB_HASH_LEN];
    crypto_hmac(a->rt->server_key, KB_HASH_LEN, tok, len, hash);
    struct kb_admin_token *t = NULL;
    enum kb_err err = store_admin_token_lookup(a->store, hash, &t);
    if (err != KB_OK)
        return err == KB_E_NOT_FOUND ? KB_E_UNAUTHORIZED : KB_E_STORE;
    a->who.root = t->tenant == NULL;
    snprintf(a->who.tenant, sizeof a->who.tenant, "%s", t->tenant ? t->tenant : "");
    snprintf(a->who.token_id, sizeof a->who.token_id, "%s", t->id);
    store_admin_token_free(t);
    return KB_OK;
}

const char *admin__scope(const struct kb_admin *a)
{
    return a->who.root ? NULL : a->who.tenant;
}

bool admin__acting_tenant(struct kb_admin *a, struct kb_hreq *req, const char *asked, char **out)
{
    const char *scope = admin__scope(a);
    *out = NULL;
    if (scope) {
        if (asked && strcmp(asked, scope) != 0) {
            http_reply_error(req, KB_E_NOT_FOUND, "no such tenant", "tenant");
            return false;
        }
        *out = kb_strdup(scope);
        return true;
    }
    if (!asked)
        return true;
    struct kb_tenant *t = NULL;
    enum kb_err err = store_tenant_get(a->store, asked, &t);
    store_tenant_free(t);
    if (err != KB_OK) {
        http_reply_error(req, err == KB_E_NOT_FOUND ? KB_E_NOT_FOUND : KB_E_STORE,
                         err == KB_E_NOT_FOUND ? "no such tenant" : NULL, "tenant");
        return false;
    }
    *out = kb_strdup(asked);
    return true;
}

void admin_handle(struct kb_hreq *req, void *arg)
{
    struct kb_admin *a = arg;
    const char *perr;
    enum kb_err err = hreq_error(req, &perr);
    if (err != KB_OK) {
        http_reply_error(req, err, perr, NULL);
        return;
    }
    const char *target = hreq_target(req);
    size_t plen = strcspn(target, "?");
    if (target[0] != '/' || plen >= 1024) {
        http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL);
        return;
    }
    char path[1024];
    memcpy(path, target, plen);
    path[plen] = '\0';
    const char *q = target[plen] == '?' ? target + plen + 1 : NULL;
    enum kb_method cmd = hreq_method(req);
    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        if (cmd != KB_M_GET && cmd != KB_M_HEAD) {
            http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
            return;
        }
        if (path[1] == 'h')
            admin__healthz(a, req);
        else
            admin__readyz(a, req);
        return;
    }
    /* the dashboard's files hold no data: served without a token; the
     * page's script calls the API below with the one the operator types */
    if (strncmp(path, "/ui", 3) == 0 && (path[3] == '\0' || path[3] == '/')) {
        admin__ui(a, req, path + 3);
        return;
    }
    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    if ((err = authorized(a, h, nh)) != KB_OK) {
        http_reply_error(req, err, NULL, NULL);
        return;
    }
    /* the operator's connection: never closed to make room for another. A
     * tenant's is not trusted: a tenant holding every admin connection
     * open must not lock root (and its kill switch) out */
    if (a->who.root)
        hreq_trust(req);
    /* root's own surfaces: a scoped token finds nothing there */
    if (!a->who.root && (strcmp(path, "/metrics") == 0 || strncmp(path, "/v1/test/", 9) == 0)) {
        http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        if (cmd == KB_M_GET)
            admin__metrics(a, req);
        else
            http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    bool keys = strncmp(path, "/v1/keys", 8) == 0 && (path[8] == '\0' || path[8] == '/');
    bool budgets = strncmp(path, "/v1/budgets", 11) == 0 && (path[11] == '\0' || path[11] == '/');
    bool usage = strcmp(path, "/v1/usage") == 0, alerts = strcmp(path, "/v1/alerts") == 0;
    bool tenants = strncmp(path, "/v1/tenants", 11) == 0 && (path[11] == '\0' || path[11] == '/');
    bool tokens =
        strncmp(path, "/v1/admin-tokens", 16) == 0 && (path[16] == '\0' || path[16] == '/');
    if ((usage || alerts) && !a->who.root) {
        /* usage and alerts span every tenant: root's alone (a scoped
         * token finds no such route, as for /metrics) */
        http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL);
        return;
    }
    if ((usage || alerts) && cmd != KB_M_GET) {
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    if (keys || budgets || tenants || tokens || usage || alerts || strcmp(path, "/v1/audit") == 0) {
        struct evkeyvalq query;
        TAILQ_INIT(&query);
        if (q && evhttp_parse_query_str(q, &query) != 0) {
            evhttp_clear_headers(&query);
            http_reply_error(req, KB_E_INVALID, "malformed query string", NULL);
            return;
        }
        if (keys)
            admin__keys(a, req, path + 8, &query);
        else if (budgets)
            admin__budgets(a, req, path + 11, &query);
        else if (usage)
            admin__usage(a, req, &query);
        else if (alerts)
            admin__alerts(a, req, &query);
        else if (tenants)
            admin__tenants(a, req, path + 11, &query);
        else if (tokens)
            admin__tokens(a, req, path + 16, &query);
        else
            admin__audit(a, req, &query);
        evhttp_clear_headers(&query);
        return;
    }
    if (strcmp(path, "/v1/secrets/reencrypt") == 0) {
        if (a->who.root)
            admin__secrets_reencrypt(a, req);
        else
            http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL); /* root's alone */
        return;
    }
#ifdef KB_TEST_HOOKS
    /* test builds only: move the server clock (day rollover, expiry) */
    if (strcmp(path, "/v1/test/clock") == 0 && cmd == KB_M_POST) {
        size_t len;
        const char *body = hreq_body(req, &len);
        json_t *j = body ? json_loadb(body, len, 0, NULL) : NULL;
        json_t *off = json_object_get(j, "offset_seconds");
        if (!json_is_integer(off)) {
            http_reply_error(req, KB_E_INVALID, "offset_seconds must be an integer",
                             "offset_seconds");
        } else {
            clock_set_offset(json_integer_value(off));
            http_reply_json(req, 200,
                            json_pack("{s:I}", "offset_seconds", (json_int_t)clock_get_offset()));
        }
        json_decref(j);
        return;
    }
#endif
    http_reply_error(req, KB_E_NOT_FOUND, NULL, NULL);
}

enum kb_err admin_head_gate(struct kb_hgate *g, const char *target, const struct kb_hdr *h,
                            size_t nh, void *arg)
{
    (void)g;
    /* every route that reads a body needs the admin token: without it the
     * body is never read (nor charged to the body budget) */
    (void)target;
    return authorized(arg, h, nh);
}

enum kb_err admin_new(struct event_base *base, const struct kb_runtime *rt, struct kb_admin **out,
                      char **errmsg)
{
    struct kb_store *s = NULL;
    enum kb_err err = store_open(rt->store_path, rt->cfg->store_synchronous, false, &s, errmsg);
    if (err != KB_OK)
        return err;
    struct kb_admin *a = kb_calloc(1, sizeof *a);
    a->rt = rt;
    a->store = s;
    a->port = writer_port_new(rt->writer, base);
    /* Audit retention lives with the admin thread (it starts and stops with
     * it) but runs on a thread of its own: archiving is file I/O that must
     * not stall the admin loop, and the delete is a writer job. */
    if (rt->cfg && rt->cfg->audit_retention_ms > 0 && rt->writer) {
        char *dir = config_archive_dir(rt->cfg);
        err = audit_retention_start(rt->store_path, rt->cfg->store_synchronous, rt->writer,
                                    rt->cfg->audit_retention_ms, dir, &a->retention, errmsg);
        free(dir);
        if (err != KB_OK) {
            writer_port_free(a->port);
            store_close(a->store);
            free(a);
            return err;
        }
    }
    *out = a;
    return KB_OK;
}

void admin__job_finished(struct kb_admin *a)
{
    if (a->pending == 0 && a->drained) {
        void (*cb)(void *) = a->drained;
        a->drained = NULL;
        cb(a->drained_arg);
    }
}

void admin_drain(struct kb_admin *a, void (*drained)(void *arg), void *arg)
{
    a->drained = drained;
    a->drained_arg = arg;
    admin__job_finished(a);
}

void admin_free(struct kb_admin *a)
{
    if (!a)
        return;
    audit_retention_stop(a->retention);
    writer_port_free(a->port);
    store_close(a->store);
    free(a);
}
