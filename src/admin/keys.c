/*
 * keys.c - the vault keys resource of the admin API.
 *
 *   POST   /v1/keys          issue a key (the token is shown once)
 *   GET    /v1/keys          list, filtered, newest first, cursor paging
 *   GET    /v1/keys/{id}     one key with today's usage
 *   PATCH  /v1/keys/{id}     change the cap and/or the TTL (keys_patch.c)
 *   DELETE /v1/keys/{id}     revoke (idempotent)
 *   POST   /v1/keys/revoke   revoke every key whose label has a prefix
 *
 * Issuance may name budgets the key spends from ("budgets": names, or
 * {name, usd_cap, window, parent?} objects that create the budget when no
 * budget has that name yet and reuse it as it is otherwise), linked in the
 * transaction that inserts the key (docs/budgets.md).
 *
 * Input is validated field by field; the first bad field is named in a
 * 400, and nothing is written.
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "audit/audit.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/duration.h"
#include "core/log.h"
#include "core/money.h"
#include "core/runtime.h"
#include "net/http.h"
#include "store/revlog.h"
#include "vendor/creds.h"
#include "net/httpd.h"
#include "policy/pattern.h"
#include "store/store.h"
#include "store/writer.h"

#define MAX_LABEL 256
#define MAX_PATTERNS 100
#define MAX_METADATA 4096
#define MAX_ACCOUNTS 16    /* allowed_accounts entries */
#define MAX_ACCOUNT_ID 128 /* bytes of one account id */
#define ACCOUNT_ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

static double usd(int64_t micros)
{
    /* display only: amounts are exact integers everywhere else */
    return (double)micros / (double)KB_MICROS_PER_USD;
}

static const char *key_status(const struct kb_key *k, int64_t now)
{
    return k->revoked_at ? "revoked" : now >= k->expires_at ? "expired" : "active";
}

static json_t *key_json(const struct kb_key *k, int64_t now, bool usage)
{
    char created[32], expires[32], revoked[32];
    json_t *eps = json_loads(k->allowed_endpoints, 0, NULL);
    json_t *meta = json_loads(k->metadata, 0, NULL);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:f, s:s, s:s, s:o, s:s}", "id", k->id, "label",
                          k->label, "vendor", k->vendor, "allowed_endpoints",
                          eps ? eps : json_array(), "daily_usd_cap", usd(k->daily_cap),
                          "created_at", clock_rfc3339(k->created_at, created, sizeof created),
                          "expires_at", clock_rfc3339(k->expires_at, expires, sizeof expires),
                          "metadata", meta ? meta : json_object(), "status", key_status(k, now));
    json_object_set_new(o, "revoked_at",
                        k->revoked_at
                            ? json_string(clock_rfc3339(k->revoked_at, revoked, sizeof revoked))
                            : json_null());
    json_t *acc = k->allowed_accounts ? json_loads(k->allowed_accounts, 0, NULL) : NULL;
    json_object_set_new(o, "allowed_accounts", acc ? acc : json_null());
    json_t *mods = k->allowed_models ? json_loads(k->allowed_models, 0, NULL) : NULL;
    json_object_set_new(o, "allowed_models", mods ? mods : json_null());
    json_object_set_new(o, "max_amount_per_request",
                        k->max_amount ? json_real(usd(k->max_amount)) : json_null());
    json_object_set_new(o, "rate_limit",
                        k->rate_requests
                            ? json_pack("{s:I, s:s}", "requests", (json_int_t)k->rate_requests,
                                        "per", k->rate_period_ms == 1000 ? "second" : "minute")
                            : json_null());
    json_object_set_new(o, "tenant", k->tenant ? json_string(k->tenant) : json_null());
    if (usage) {
        char day[16];
        int64_t left = k->daily_cap - k->spent - k->reserved;
        json_object_set_new(o, "usage",
                            json_pack("{s:s, s:f, s:f, s:f, s:I}", "day",
                                      clock_day_str(k->usage_day, day, sizeof day), "spent_usd",
                                      usd(k->spent), "reserved_usd", usd(k->reserved),
                                      "remaining_usd", usd(left > 0 ? left : 0), "requests",
                                      (json_int_t)k->requests));
    }
    return o;
}

struct field_err {
    const char *field;
    char *msg; /* owned */
};

static bool bad(struct field_err *fe, const char *field, char *msg)
{
    fe->field = field;
    fe->msg = msg;
    return false;
}

/* Validates the issuance body into k; the first bad field goes into fe. */
static bool parse_issue(struct kb_admin *a, const char *raw, size_t rawlen, json_t *body,
                        struct kb_key *k, struct field_err *fe, enum kb_err *err)
{
    static const char *const known[] = {"label",
                                        "vendor",
                                        "allowed_endpoints",
                                        "daily_usd_cap",
                                        "expires_in",
                                        "metadata",
                                        "rate_limit",
                                        "allowed_accounts",
                                        "budgets",
                                        "allowed_models",
                                        "max_amount_per_request",
                                        "tenant",
                                        NULL};
    const char *name;
    json_t *v;
    json_object_foreach(body, name, v)
    {
        bool ok = false;
        for (const char *const *kn = known; *kn && !ok; kn++)
            ok = strcmp(*kn, name) == 0;
        if (!ok)
            return bad(fe, name, kb_asprintf("unknown field \"%s\"", name));
    }

    json_t *label = json_object_get(body, "label");
    if (!json_is_string(label) || !admin__valid_text(json_string_value(label), MAX_LABEL))
        return bad(
            fe, "label",
            kb_asprintf("label must be a string of 1-%d bytes of printable UTF-8 (no control, "
                        "bidi, zero-width or line-separator characters)",
                        MAX_LABEL));
    k->label = kb_strdup(json_string_value(label));

    json_t *vendor = json_object_get(body, "vendor");
    const char *vname = json_string_value(vendor);
    const struct kb_vendor *cv = vname ? config_vendor(a->rt->cfg, vname, strlen(vname)) : NULL;
    if (!cv)
        return bad(fe, "vendor", kb_asprintf("vendor must be one of the configured vendors"));
    if (!runtime_creds(a->rt)->v[cv - a->rt->cfg->vendors].inject) {
        *err = KB_E_VENDOR_NOT_CONFIGURED;
        return bad(fe, "vendor", kb_asprintf("no secret is configured for vendor %s", cv->name));
    }
    k->vendor = kb_strdup(cv->name);

    json_t *eps = json_object_get(body, "allowed_endpoints");
    size_t n = json_array_size(eps);
    if (!json_is_array(eps) || n == 0 || n > MAX_PATTERNS)
        return bad(
            fe, "allowed_endpoints",
            kb_asprintf("allowed_endpoints must be an array of 1-%d patterns", MAX_PATTERNS));
    const char **pats = kb_calloc(n, sizeof *pats);
    for (size_t i = 0; i < n; i++) {
        pats[i] = json_string_value(json_array_get(eps, i));
        if (!pats[i]) {
            free(pats);
            return bad(fe, "allowed_endpoints",
                       kb_asprintf("allowed_endpoints[%zu] is not a string", i));
        }
    }
    struct kb_policy *pol = NULL;
    char *perr = NULL;
    enum kb_err pe = policy_compile(pats, n, &pol, &perr);
    free(pats);
    policy_free(pol);
    if (pe != KB_OK)
        return bad(fe, "allowed_endpoints", perr ? perr : kb_strdup("invalid pattern"));
    k->allowed_endpoints = json_dumps(eps, JSON_COMPACT);

    const char *num;
    size_t numlen;
    char *merr = NULL;
    if (money_json_number(raw, rawlen, "daily_usd_cap", &num, &numlen) != KB_OK ||
        money_parse(num, numlen, &k->daily_cap, &merr) != KB_OK) {
        char *m = kb_asprintf("daily_usd_cap must be a non-negative USD amount with at most 6 "
                              "decimals%s%s",
                              merr ? ": " : "", merr ? merr : "");
        free(merr);
        return bad(fe, "daily_usd_cap", m);
    }

    json_t *ttl = json_object_get(body, "expires_in");
    int64_t ttl_ms = 0;
    bool ttl_ok = false;
    if (json_is_integer(ttl) && json_integer_value(ttl) > 0 &&
        json_integer_value(ttl) <= INT64_MAX / 1000) {
        ttl_ms = json_integer_value(ttl) * 1000;
        ttl_ok = true;
    } else if (json_is_string(ttl)) {
        ttl_ok =
            duration_parse_ms(json_string_value(ttl), json_string_length(ttl), &ttl_ms) == KB_OK &&
            ttl_ms > 0 && ttl_ms % 1000 == 0;
    }
    if (!ttl_ok)
        return bad(fe, "expires_in",
                   kb_asprintf("expires_in is required: whole seconds as an integer, or \"30s\", "
                               "\"5m\", \"2h\""));
    int64_t max_ttl_ms = runtime_limit(&a->rt->limits.max_ttl_ms);
    if (ttl_ms > max_ttl_ms)
        return bad(fe, "expires_in",
                   kb_asprintf("expires_in exceeds the maximum of %lld seconds",
                               (long long)(max_ttl_ms / 1000)));
    k->created_at = clock_now();
    k->expires_at = k->created_at + ttl_ms / 1000;

    json_t *rl = json_object_get(body, "rate_limit");
    if (rl && !json_is_null(rl)) {
        json_t *rq = json_object_get(rl, "requests");
        const char *per = json_string_value(json_object_get(rl, "per"));
        if (!json_is_object(rl) || json_object_size(rl) != 2 || !json_is_integer(rq) ||
            json_integer_value(rq) < 1 || json_integer_value(rq) > 1000000 || !per ||
            (strcmp(per, "second") != 0 && strcmp(per, "minute") != 0))
            return bad(fe, "rate_limit",
                       kb_asprintf("rate_limit must be {\"requests\": 1-1000000, \"per\": "
                                   "\"second\"|\"minute\"}"));
        k->rate_requests = json_integer_value(rq);
        k->rate_period_ms = strcmp(per, "second") == 0 ? 1000 : 60000;
    }

    /* accounts an account selector header may name (Stripe-Account,
     * OpenAI-Organization, OpenAI-Project): ids, never free text */
    json_t *acc = json_object_get(body, "allowed_accounts");
    if (acc && !json_is_null(acc)) {
        size_t na = json_array_size(acc);
        bool ok = json_is_array(acc) && na >= 1 && na <= MAX_ACCOUNTS;
        for (size_t i = 0; ok && i < na; i++) {
            const char *id = json_string_value(json_array_get(acc, i));
            size_t idl = id ? strlen(id) : 0;
            ok = idl >= 1 && idl <= MAX_ACCOUNT_ID && strspn(id, ACCOUNT_ID_CHARS) == idl;
        }
        if (!ok)
            return bad(fe, "allowed_accounts",
                       kb_asprintf("allowed_accounts must be an array of 1-%d account ids "
                                   "(1-%d of [A-Za-z0-9_-])",
                                   MAX_ACCOUNTS, MAX_ACCOUNT_ID));
        k->allowed_accounts = json_dumps(acc, JSON_COMPACT);
    }

    json_t *meta = json_object_get(body, "metadata");
    if (meta && !json_is_null(meta)) {
        char *text = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
        if (!text || strlen(text) > MAX_METADATA) {
            free(text);
            return bad(
                fe, "metadata",
                kb_asprintf("metadata must be a JSON object of at most %d bytes", MAX_METADATA));
        }
        k->metadata = text;
    } else {
        k->metadata = kb_strdup("{}");
    }
    return true;
}

struct kb_buf_view {
    const char *data;
    size_t len;
};

static json_t *read_body(struct kb_hreq *req, struct kb_buf_view *view)
{
    view->data = hreq_body(req, &view->len);
    if (!view->data)
        view->data = "";
    json_t *j = json_loadb(view->data, view->len, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/*
 * One admin write and its audit record, committed together in a batch of
 * the store writer (group commit: concurrent issuances share one commit
 * instead of taking the write lock one by one). The handler returns at
 * once; job_done answers once the batch is durable. The job owns copies of
 * everything its writer-thread function reads.
 */
enum admin_op { OP_ISSUE, OP_REVOKE, OP_BULK_REVOKE, OP_UPDATE };

struct admin_job {
    struct kb_admin *a;
    struct kb_hreq *req; /* answered by job_done (stays valid: no close cb) */
    enum admin_op op;
    int attempt;               /* issue: id or token collisions retried */
    struct kb_key key;         /* issue: the new key; strings owned */
    uint8_t hash[KB_HASH_LEN]; /* issue: its token's HMAC */
    char token[KB_TOKEN_MAX];  /* issue: shown once, in the answer */
    char id[32];               /* revoke: the key id */
    char *prefix;              /* bulk revoke: the label prefix; owned */
    int64_t now;
    int64_t count;                       /* bulk revoke: keys revoked */
    struct kb_revoked_key revoked;       /* revoke: the key, seq 0 if revoked already;
                                            update: the key changed */
    struct kb_key_change change;         /* update: what it sets */
    char *change_detail;                 /* update: owned; its audit detail */
    struct kb_revoked_key *revoked_list; /* bulk revoke: owned; count of them */
    struct kb_audit_rec rec;
    char detail[48];
    struct admin__key_budgets budgets; /* issue: the budgets it names */
};

static void admin_rec(struct admin_job *j, const char *action)
{
    j->rec.kind = KB_AUDIT_ADMIN;
    j->rec.ts_ms = clock_now_ms();
    crypto_id_new("adm_", 24, j->rec.request_id, sizeof j->rec.request_id);
    j->rec.action = action;
    j->rec.decision = "ok";
    j->rec.settled = 0;
}

static int tenant_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Writer thread: root's bulk revocation is in each tenant's audit too:
 * one record per tenant whose keys it revoked (tenant t, {"revoked":n of
 * t's}), besides root's own for the whole. Sorted, so that a revocation of
 * many keys costs n log n, not n squared, on the writer. */
static enum kb_err bulk_tenant_records(struct kb_store *s, struct admin_job *j)
{
    size_t n = 0;
    const char **t = kb_calloc((size_t)j->count + 1, sizeof *t);
    for (int64_t i = 0; i < j->count; i++)
        if (j->revoked_list[i].tenant[0])
            t[n++] = j->revoked_list[i].tenant;
    qsort(t, n, sizeof *t, tenant_cmp);
    enum kb_err err = KB_OK;
    for (size_t i = 0, k; i < n && err == KB_OK; i = k) {
        for (k = i + 1; k < n && strcmp(t[k], t[i]) == 0; k++)
            ;
        char detail[64];
        snprintf(detail, sizeof detail, "{\"revoked\":%zu}", k - i);
        struct kb_audit_rec rec = j->rec;
        rec.tenant = t[i];
        rec.detail = detail;
        err = audit_append(s, &rec, NULL);
    }
    free(t);
    return err;
}

/* Writer thread. */
static enum kb_err job_run(struct kb_store *s, void *arg)
{
    struct admin_job *j = arg;
    enum kb_err err;
    switch (j->op) {
    case OP_ISSUE:
        /* the tenant still there, in the transaction that issues (a
         * deletion and an issuance never interleave) */
        if (j->key.tenant && (err = admin__tenant_alive(s, j->key.tenant)) != KB_OK)
            break;
        err = store_key_insert(s, &j->key, j->hash);
        if (err == KB_OK)
            err = admin__key_budgets_link(s, &j->budgets, &j->key, &j->rec);
        break;
    case OP_REVOKE:
        err = store_key_revoke(s, j->id, j->now, &j->revoked);
        break;
    case OP_UPDATE:
        err = store_key_update(s, j->id, &j->change, j->now, &j->revoked);
        break;
    default:
        free(j->revoked_list); /* a batch that failed may run the job again */
        j->revoked_list = NULL;
        err = store_key_revoke_prefix_in(s, j->key.tenant, j->prefix, j->now, &j->count,
                                         &j->revoked_list);
        if (err == KB_OK) {
            snprintf(j->detail, sizeof j->detail, "{\"revoked\":%lld}", (long long)j->count);
            j->rec.detail = j->detail;
            if (!j->key.tenant && j->revoked_list)
                err = bulk_tenant_records(s, j);
        }
        break;
    }
    return err == KB_OK ? audit_append(s, &j->rec, NULL) : err;
}

static void job_free(struct admin_job *j)
{
    free(j->key.label);
    free(j->key.vendor);
    free(j->key.allowed_endpoints);
    free(j->key.metadata);
    free(j->key.allowed_accounts);
    free(j->key.allowed_models);
    free(j->key.tenant);
    free(j->prefix);
    free(j->change_detail);
    free(j->revoked_list);
    admin__key_budgets_cleanup(&j->budgets);
    free(j);
}

static void job_done(void *arg, enum kb_err err);

static void job_submit(struct admin_job *j)
{
    j->a->pending++;
    writer_submit(j->a->port, job_run, job_done, j);
}

/* Issue: a fresh id and token for each attempt. */
static void issue_attempt(struct admin_job *j)
{
    crypto_id_new("vk_", KB_ID_RANDOM_LEN, j->key.id, sizeof j->key.id);
    crypto_token_new("kb_", j->token, sizeof j->token);
    crypto_hmac(j->a->rt->server_key, KB_HASH_LEN, j->token, strlen(j->token), j->hash);
    j->rec.key_id = j->key.id;
    job_submit(j);
}

/* The error a failed admin write answers with: the store's own failures
 * and an unwritable audit log are one thing to the caller. */
static enum kb_err write_error(enum kb_err err)
{
    return err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err;
}

/* Revocations committed: published before the answer, so that no worker
 * serves a request sent after it from its key cache (proxy/keycache.h),
 * and the streams of those keys are cut (proxy/forward.c). */
static void keys_revoked(struct kb_admin *a, const struct kb_revoked_key *k, int64_t n)
{
#ifdef KB_TEST_HOOKS
    if (n > 0 && getenv("KEYBRAKE_TEST_REVOKE_ALL")) /* the watch's lost-log path */
        n = REVLOG_RING;
#endif
    if (n > REVLOG_RING / 2) {
        revlog_publish_all(a->rt->revlog); /* cheaper than the ring's worth */
        return;
    }
    for (int64_t i = 0; i < n; i++)
        if (k[i].seq)
            revlog_publish(a->rt->revlog, k[i].seq, k[i].hash);
}

static struct admin_job *job_new(struct kb_admin *a, struct kb_hreq *req, enum admin_op op);

/* A change committed (or refused): published as a change before the answer,
 * so every worker reads the key again for its next request; the answer is
 * the key as it now is. */
static void updated(struct kb_admin *a, struct admin_job *j, enum kb_err err)
{
    struct kb_key *k = NULL;
    int64_t now = clock_now();
    if (err == KB_OK)
        revlog_publish_change(a->rt->revlog, j->revoked.seq, j->revoked.hash);
    if (err == KB_OK || err == KB_E_KEY_NOT_ACTIVE) {
        if (store_key_get(a->store, j->id, clock_day(now), &k) != KB_OK) {
            /* committed, but not readable back: say so, not that it failed */
            http_reply_error(j->req, err == KB_OK ? KB_E_STORE : err, NULL, NULL);
            return;
        }
    }
    if (err == KB_OK) {
        kb_log(KB_LOG_INFO, "key updated", "key_id", j->id, "change", j->change_detail, NULL);
        json_t *o = key_json(k, now, true), *arr = json_array();
        char **names = NULL;
        size_t nn = 0;
        if (store_key_budgets(a->store, k->seq, &names, &nn) == KB_OK) {
            for (size_t i = 0; i < nn; i++)
                json_array_append_new(arr, json_string(admin__budget_api_name(names[i])));
            store_names_free(names, nn);
        }
        json_object_set_new(o, "budgets", arr); /* as GET shows the key */
        http_reply_json(j->req, 200, o);
    } else if (err == KB_E_KEY_NOT_ACTIVE) {
        char *m = kb_asprintf("key %s is %s: it cannot be changed", j->id,
                              k->revoked_at ? "revoked" : "expired");
        http_reply_error(j->req, err, m, NULL);
        free(m);
    } else if (err == KB_E_NOT_FOUND) {
        http_reply_error(j->req, err, "no such key", NULL);
    } else if (err == KB_E_INVALID) {
        http_reply_error(j->req, err, NULL, j->change.has_cap ? "daily_usd_cap" : "expires_in");
    } else {
        http_reply_error(j->req, write_error(err), NULL, NULL);
    }
    store_key_free(k);
}

static void update(struct kb_admin *a, struct kb_hreq *req, const char *id, int64_t now,
                   char **tenant)
{
    struct kb_buf_view raw;
    json_t *body = read_body(req, &raw);
    if (!body) {
        http_reply_error(req, KB_E_BAD_JSON, NULL, NULL);
        return;
    }
    struct admin_job *j = job_new(a, req, OP_UPDATE);
    const char *field = NULL;
    char *msg = NULL;
    if (!admin__key_patch_parse(a, raw.data, raw.len, body, now, &j->change, &j->change_detail,
                                &field, &msg)) {
        http_reply_error(req, KB_E_INVALID, msg, field); /* field: borrowed from body */
        free(msg);
        job_free(j);
        json_decref(body);
        return;
    }
    json_decref(body);
    snprintf(j->id, sizeof j->id, "%s", id); /* valid_id: shorter than 32 */
    j->now = now;
    admin_rec(j, "key.updated");
    j->rec.key_id = j->id;
    j->key.tenant = *tenant; /* the record's tenant */
    *tenant = NULL;
    j->rec.tenant = j->key.tenant;
    j->rec.detail = j->change_detail;
    job_submit(j);
}

/* Admin loop, once the job's batch committed (or failed to). */
static void job_done(void *arg, enum kb_err err)
{
    struct admin_job *j = arg;
    struct kb_admin *a = j->a;
    struct kb_hreq *req = j->req;
    a->pending--;
    switch (j->op) {
    case OP_ISSUE:
        if (err == KB_E_EXISTS && ++j->attempt <= 3) {
            issue_attempt(j); /* an id or token hash collided: draw again */
            return;
        }
        if (err == KB_E_INVALID && j->budgets.err) {
            http_reply_error(req, err, j->budgets.err, "budgets");
            break;
        }
        if (err != KB_OK) {
            http_reply_error(req, write_error(err), err == KB_E_NOT_FOUND ? "no such tenant" : NULL,
                             NULL);
            break;
        }
        j->key.usage_day = clock_day(j->key.created_at);
        json_t *o = key_json(&j->key, j->key.created_at, false);
        json_t *names = json_array();
        for (size_t i = 0; i < j->budgets.n; i++)
            json_array_append_new(names,
                                  json_string(admin__budget_api_name(j->budgets.v[i].def.name)));
        json_object_set_new(o, "budgets", names);
        json_object_set_new(o, "token", json_string(j->token));
        kb_log(KB_LOG_INFO, "key issued", "key_id", j->key.id, "label", j->key.label, "vendor",
               j->key.vendor, NULL);
        http_reply_json(req, 201, o);
        break;
    case OP_REVOKE:
        if (err == KB_OK) {
            keys_revoked(a, &j->revoked, 1);
            kb_log(KB_LOG_INFO, "key revoked", "key_id", j->id, NULL);
            http_reply_json(req, 204, NULL);
        } else {
            http_reply_error(req, err == KB_E_NOT_FOUND ? err : write_error(err),
                             err == KB_E_NOT_FOUND ? "no such key" : NULL, NULL);
        }
        break;
    case OP_UPDATE:
        updated(a, j, err);
        break;
    default:
        if (err != KB_OK) {
            http_reply_error(req, write_error(err), NULL, NULL);
            break;
        }
        keys_revoked(a, j->revoked_list, j->count);
        char n[24];
        snprintf(n, sizeof n, "%lld", (long long)j->count);
        kb_log(KB_LOG_INFO, "keys revoked by label prefix", "label_prefix", j->prefix, "count", n,
               NULL);
        http_reply_json(req, 200, json_pack("{s:I}", "revoked", (json_int_t)j->count));
        break;
    }
    job_free(j);
    admin__job_finished(a);
}

static struct admin_job *job_new(struct kb_admin *a, struct kb_hreq *req, enum admin_op op)
{
    struct admin_job *j = kb_calloc(1, sizeof *j);
    j->a = a;
    j->req = req;
    j->op = op;
    return j;
}

static void issue(struct kb_admin *a, struct kb_hreq *req)
{
    struct kb_buf_view raw;
    json_t *body = read_body(req, &raw);
    if (!body) {
        http_reply_error(req, KB_E_BAD_JSON, NULL, NULL);
        return;
    }
    struct admin_job *j = job_new(a, req, OP_ISSUE);
    struct field_err fe = {0};
    enum kb_err err = KB_E_INVALID;
    if (!parse_issue(a, raw.data, raw.len, body, &j->key, &fe, &err) ||
        !admin__key_scopes_parse(raw.data, raw.len, body, &j->key, &fe.field, &fe.msg) ||
        !admin__key_budgets_parse(body, &j->budgets, &fe.field, &fe.msg)) {
        http_reply_error(req, err, fe.msg, fe.field);
        free(fe.msg);
        job_free(j);
    } else if (!admin__body_tenant(a, req, body, &j->key.tenant)) {
        job_free(j); /* answered */
    } else {
        /* a key names only budgets of its own tenant: their names are
         * looked up in the tenant's namespace */
        admin__key_budgets_scope(&j->budgets, j->key.tenant);
        admin_rec(j, "key.issued");
        j->rec.tenant = j->key.tenant;
        j->rec.label = j->key.label;
        j->rec.vendor = j->key.vendor;
        j->rec.detail = j->budgets.key_detail;
        issue_attempt(j);
    }
    json_decref(body);
}

static void bulk_revoke(struct kb_admin *a, struct kb_hreq *req)
{
    struct kb_buf_view raw;
    json_t *body = read_body(req, &raw);
    if (!body) {
        http_reply_error(req, KB_E_BAD_JSON, NULL, NULL);
        return;
    }
    json_t *p = json_object_get(body, "label_prefix");
    if (!json_is_string(p) || !admin__valid_text(json_string_value(p), MAX_LABEL) ||
        json_object_size(body) != 1) {
        http_reply_error(req, KB_E_INVALID, "label_prefix must be a non-empty string",
                         "label_prefix");
        json_decref(body);
        return;
    }
    struct admin_job *j = job_new(a, req, OP_BULK_REVOKE);
    j->prefix = kb_strdup(json_string_value(p));
    j->now = clock_now();
    const char *scope = admin__scope(a); /* a scoped token: its own keys only */
    j->key.tenant = scope ? kb_strdup(scope) : NULL;
    admin_rec(j, "keys.bulk_revoked");
    j->rec.tenant = j->key.tenant;
    j->rec.label = j->prefix;
    json_decref(body);
    job_submit(j);
}

static void list(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *q)
{
    struct kb_key_filter f = {0};
    f.now = clock_now();
    f.label_prefix = evhttp_find_header(q, "label_prefix");
    f.vendor = evhttp_find_header(q, "vendor");
    f.tenant = admin__scope(a) ? admin__scope(a) : evhttp_find_header(q, "tenant");
    const char *status = evhttp_find_header(q, "status");
    const char *limit = evhttp_find_header(q, "limit");
    const char *cursor = evhttp_find_header(q, "cursor");
    if (status) {
        if (strcmp(status, "active") == 0)
            f.status = KB_KEY_ACTIVE;
        else if (strcmp(status, "revoked") == 0)
            f.status = KB_KEY_REVOKED;
        else if (strcmp(status, "expired") == 0)
            f.status = KB_KEY_EXPIRED;
        else {
            http_reply_error(req, KB_E_INVALID, "status must be active, revoked or expired",
                             "status");
            return;
        }
    }
    long long lim = 50;
    if (limit) {
        char *end;
        lim = strtoll(limit, &end, 10);
        if (!*limit || *end || lim < 1 || lim > 200 ||
            strspn(limit, "0123456789") != strlen(limit)) {
            http_reply_error(req, KB_E_INVALID, "limit must be an integer from 1 to 200", "limit");
            return;
        }
    }
    if (cursor) {
        char *end;
        long long c = strtoll(cursor, &end, 10);
        if (!*cursor || *end || c <= 0 || strspn(cursor, "0123456789") != strlen(cursor)) {
            http_reply_error(req, KB_E_INVALID, "cursor is not one this API returned", "cursor");
            return;
        }
        f.before_seq = c;
    }
    f.limit = (int)lim + 1; /* one more tells whether a next page exists */
    struct kb_key *keys = NULL;
    size_t n = 0;
    if (store_key_list(a->store, &f, &keys, &n) != KB_OK) {
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    json_t *data = json_array();
    size_t shown = n > (size_t)lim ? (size_t)lim : n;
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(data, key_json(&keys[i], f.now, false));
    json_t *next = json_null();
    if (n > shown) {
        char c[24];
        snprintf(c, sizeof c, "%lld", (long long)keys[shown - 1].seq);
        json_decref(next);
        next = json_string(c);
    }
    store_key_list_free(keys, n);
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "data", data, "next_cursor", next));
}

static bool valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n < 4 || n >= 32 || strncmp(id, "vk_", 3) != 0)
        return false;
    return strspn(id + 3, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
           n - 3;
}

void admin__keys(struct kb_admin *a, struct kb_hreq *req, const char *rest, struct evkeyvalq *query)
{
    enum kb_method cmd = hreq_method(req);
    if (*rest == '\0') {
        if (cmd == KB_M_POST)
            issue(a, req);
        else if (cmd == KB_M_GET)
            list(a, req, query);
        else
            http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    const char *id = rest + 1;
    if (strcmp(id, "revoke") == 0) {
        if (cmd == KB_M_POST)
            bulk_revoke(a, req);
        else
            http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    if (!valid_id(id)) {
        http_reply_error(req, KB_E_NOT_FOUND, "no such key", NULL);
        return;
    }
    int64_t now = clock_now();
    char *key_tenant = NULL; /* for the audit record */
    if (!admin__key_visible(a, req, id, &key_tenant))
        return; /* answered: 404 for another tenant's key */
    if (cmd == KB_M_GET) {
        struct kb_key *k = NULL;
        enum kb_err err = store_key_get(a->store, id, clock_day(now), &k);
        char **names = NULL;
        size_t nn = 0;
        if (err == KB_OK && (err = store_key_budgets(a->store, k->seq, &names, &nn)) == KB_OK) {
            json_t *o = key_json(k, now, true), *arr = json_array();
            for (size_t i = 0; i < nn; i++)
                json_array_append_new(arr, json_string(admin__budget_api_name(names[i])));
            json_object_set_new(o, "budgets", arr);
            store_names_free(names, nn);
            http_reply_json(req, 200, o);
        } else
            http_reply_error(req, err == KB_E_NOT_FOUND ? err : KB_E_STORE,
                             err == KB_E_NOT_FOUND ? "no such key" : NULL, NULL);
        store_key_free(k);
    } else if (cmd == KB_M_DELETE) {
        struct admin_job *j = job_new(a, req, OP_REVOKE);
        snprintf(j->id, sizeof j->id, "%s", id); /* valid_id: shorter than 32 */
        j->now = now;
        admin_rec(j, "key.revoked");
        j->rec.key_id = j->id;
        j->key.tenant = key_tenant;
        key_tenant = NULL;
        j->rec.tenant = j->key.tenant;
        job_submit(j);
    } else if (cmd == KB_M_PATCH) {
        update(a, req, id, now, &key_tenant);
    } else {
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
    }
    free(key_tenant);
}
