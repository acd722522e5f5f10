/*
 * budgets.c - the budgets resource of the admin API (docs/budgets.md).
 *
 *   POST   /v1/budgets          create {name, usd_cap, window, parent?}
 *   GET    /v1/budgets          list, in creation order, cursor paging
 *   GET    /v1/budgets/{name}   one budget with its usage in the current window
 *   PATCH  /v1/budgets/{name}   change usd_cap, window and/or parent
 *   DELETE /v1/budgets/{name}   delete (409 budget_in_use while named)
 *
 * Names travel percent-encoded in the path. Every write and its audit
 * record commit together in a batch of the store writer, as for keys; the
 * store refuses duplicates, unknown parents, cycles and long chains.
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
#include "core/money.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/store.h"
#include "store/writer.h"

static const char *const window_names[] = {"total", "day", "month"};

bool admin__budget_window(const char *s, enum kb_budget_window *out)
{
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, window_names[i]) == 0) {
            *out = (enum kb_budget_window)i;
            return true;
        }
    return false;
}

static double usd(int64_t micros)
{
    return (double)micros / (double)KB_MICROS_PER_USD; /* display only */
}

json_t *admin__budget_json(const struct kb_budget *b)
{
    char created[32], updated[32], period[48];
    if (b->window == KB_WIN_DAY)
        clock_day_str(b->period, period, sizeof period);
    else if (b->window == KB_WIN_MONTH)
        snprintf(period, sizeof period, "%04lld-%02lld", (long long)(1970 + b->period / 12),
                 (long long)(b->period % 12 + 1));
    else
        snprintf(period, sizeof period, "total");
    int64_t left = b->cap - b->spent - b->reserved;
    char tenant[32];
    json_t *o = json_pack("{s:s, s:f, s:s, s:s, s:s, s:I}", "name", admin__budget_api_name(b->name),
                          "usd_cap", usd(b->cap), "window", window_names[b->window], "created_at",
                          clock_rfc3339(b->created_at, created, sizeof created), "updated_at",
                          clock_rfc3339(b->updated_at, updated, sizeof updated), "keys",
                          (json_int_t)b->keys);
    json_object_set_new(o, "parent",
                        b->parent ? json_string(admin__budget_api_name(b->parent)) : json_null());
    json_object_set_new(o, "tenant",
                        admin__budget_tenant(b->name, tenant, sizeof tenant) ? json_string(tenant)
                                                                             : json_null());
    json_t *t = json_array();
    for (int i = 0; i < b->nthresholds; i++)
        json_array_append_new(t, json_integer(b->thresholds[i]));
    json_object_set_new(o, "alert_thresholds", t);
    json_object_set_new(o, "usage",
                        json_pack("{s:s, s:f, s:f, s:f, s:I}", "period", period, "spent_usd",
                                  usd(b->spent), "reserved_usd", usd(b->reserved), "remaining_usd",
                                  usd(left > 0 ? left : 0), "requests", (json_int_t)b->requests));
    return o;
}

enum bop { BOP_CREATE = 0, BOP_UPDATE = 1, BOP_DELETE = 2 };

struct budget_job {
    struct kb_admin *a;
    struct kb_hreq *req; /* answered by job_done */
    enum bop op;
    struct kb_budget b;               /* create: name, cap, window, parent (owned strings) */
    struct kb_budget_change c;        /* update: c.parent points into b.parent */
    bool set_alerts;                  /* alert_thresholds was given */
    int thr[KB_ALERT_THRESHOLDS_MAX]; /* its percents, nthr of them */
    int nthr;
    char *errmsg; /* owned; the store's words for a refusal */
    char *detail; /* owned; the audit record's detail */
    char *tenant; /* owned; the budget's tenant, NULL: root's */
    struct kb_audit_rec rec;
};

static void job_free(struct budget_job *j)
{
    free(j->b.name);
    free(j->b.parent);
    free(j->errmsg);
    free(j->detail);
    free(j->tenant);
    free(j);
}

/* Writer thread. */
static enum kb_err job_run(struct kb_store *s, void *arg)
{
    struct budget_job *j = arg;
    enum kb_err err;
    free(j->errmsg); /* a batch that failed may run the job again */
    j->errmsg = NULL;
    int64_t now = clock_now();
    if (j->op == BOP_CREATE) {
        j->b.created_at = now;
        err = store_budget_insert(s, &j->b, &j->errmsg);
    } else if (j->op == BOP_UPDATE) {
        err = store_budget_update(s, j->b.name, &j->c, now, &j->errmsg);
    } else {
        err = store_budget_delete(s, j->b.name, &j->errmsg);
    }
    if (err == KB_OK && j->set_alerts)
        err = store_budget_alerts_set(s, j->b.name, j->thr, j->nthr);
    admin__budget_unscope_msg(j->errmsg);
    return err == KB_OK ? audit_append(s, &j->rec, NULL) : err;
}

static void job_done(void *arg, enum kb_err err)
{
    struct budget_job *j = arg;
    struct kb_admin *a = j->a;
    a->pending--;
    if (err == KB_OK && j->op == BOP_DELETE) {
        kb_log(KB_LOG_INFO, "budget deleted", "budget", j->b.name, NULL);
        http_reply_json(j->req, 204, NULL);
    } else if (err == KB_OK) {
        struct kb_budget *b = NULL;
        if (store_budget_get(a->store, j->b.name, clock_now(), &b) == KB_OK) {
            kb_log(KB_LOG_INFO, j->op == BOP_CREATE ? "budget created" : "budget updated", "budget",
                   j->b.name, NULL);
            http_reply_json(j->req, j->op == BOP_CREATE ? 201 : 200, admin__budget_json(b));
        } else {
            http_reply_error(j->req, KB_E_STORE, NULL, NULL);
        }
        store_budget_free(b);
    } else if (err == KB_E_NOT_FOUND && j->op != BOP_CREATE) {
        http_reply_error(j->req, err, "no such budget", NULL);
    } else if (err == KB_E_NOT_FOUND) {
        /* create: the parent named is unknown */
        http_reply_error(j->req, KB_E_INVALID, j->errmsg, "parent");
    } else if (err == KB_E_INVALID) {
        http_reply_error(j->req, err, j->errmsg, "parent");
    } else if (err == KB_E_EXISTS) {
        http_reply_error(j->req, err, j->errmsg, "name");
    } else if (err == KB_E_BUDGET_IN_USE) {
        http_reply_error(j->req, err, j->errmsg, NULL);
    } else {
        http_reply_error(j->req, err == KB_E_STORE ? KB_E_AUDIT_UNAVAILABLE : err, NULL, NULL);
    }
    job_free(j);
    admin__job_finished(a);
}

static struct budget_job *job_new(struct kb_admin *a, struct kb_hreq *req, enum bop op,
                                  const char *action)
{
    struct budget_job *j = kb_calloc(1, sizeof *j);
    j->a = a;
    j->req = req;
    j->op = op;
    j->rec.kind = KB_AUDIT_ADMIN;
    j->rec.ts_ms = clock_now_ms();
    crypto_id_new("adm_", 24, j->rec.request_id, sizeof j->rec.request_id);
    j->rec.action = action;
    j->rec.decision = "ok";
    return j;
}

static void submit(struct budget_job *j, json_t *detail)
{
    j->detail = json_dumps(detail, JSON_COMPACT);
    json_decref(detail);
    j->rec.detail = j->detail;
    j->rec.label = admin__budget_api_name(j->b.name);
    j->rec.tenant = j->tenant;
    j->a->pending++;
    writer_submit(j->a->port, job_run, job_done, j);
}

static json_t *read_object(struct kb_hreq *req, const char **raw, size_t *len)
{
    *raw = hreq_body(req, len);
    if (!*raw)
        *raw = "", *len = 0;
    json_t *o = json_loadb(*raw, *len, JSON_REJECT_DUPLICATES, NULL);
    if (o && !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The body's top-level usd_cap, exactly (money_json_number). */
static bool parse_cap(const char *raw, size_t len, int64_t *cap, char **msg)
{
    const char *num;
    size_t nlen;
    char *merr = NULL;
    if (money_json_number(raw, len, "usd_cap", &num, &nlen) == KB_OK &&
        money_parse(num, nlen, cap, &merr) == KB_OK)
        return true;
    *msg = kb_asprintf("usd_cap must be a non-negative USD amount with at most 6 decimals%s%s",
                       merr ? ": " : "", merr ? merr : "");
    free(merr);
    return false;
}

static bool known_fields(json_t *body, const char *const *known, const char **bad_name)
{
    const char *name;
    json_t *v;
    json_object_foreach(body, name, v)
    {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(*k, name) == 0;
        if (!ok) {
            *bad_name = name;
            return false;
        }
    }
    return true;
}

/* "alert_thresholds": null or an array of at most 10 integer percents,
 * 1-100, strictly ascending, into thr. */
static bool parse_thresholds(json_t *v, int *thr, int *n)
{
    *n = 0;
    if (json_is_null(v))
        return true;
    if (!json_is_array(v) || json_array_size(v) > KB_ALERT_THRESHOLDS_MAX)
        return false;
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        json_int_t p = json_integer_value(x);
        if (!json_is_integer(x) || p < 1 || p > 100 || (i && p <= thr[i - 1]))
            return false;
        thr[(*n)++] = (int)p;
    }
    return true;
}
#define THRESHOLDS_MSG                                                                             \
    "alert_thresholds must be null or an array of at most 10 integer percents of the cap, "        \
    "1-100, strictly ascending"

#define WINDOW_MSG "window must be \"day\" (UTC), \"month\" (UTC) or \"total\""

static void create(struct kb_admin *a, struct kb_hreq *req)
{
    const char *raw, *unknown = NULL;
    size_t len;
    json_t *body = read_object(req, &raw, &len);
    if (!body) {
        http_reply_error(req, KB_E_BAD_JSON, NULL, NULL);
        return;
    }
    static const char *const known[] = {"name",   "usd_cap", "window", "parent", "alert_thresholds",
                                        "tenant", NULL};
    const char *name = json_string_value(json_object_get(body, "name"));
    json_t *tenant = json_object_get(body, "tenant");
    char *t = NULL;
    json_t *parent = json_object_get(body, "parent");
    json_t *alerts = json_object_get(body, "alert_thresholds");
    int thr[KB_ALERT_THRESHOLDS_MAX], nthr = 0;
    enum kb_budget_window w;
    int64_t cap = 0;
    char *msg = NULL;
    if (!known_fields(body, known, &unknown)) {
        msg = kb_asprintf("unknown field \"%s\"", unknown);
        http_reply_error(req, KB_E_INVALID, msg, unknown);
    } else if (!name || !admin__valid_text(name, KB_BUDGET_NAME_MAX)) {
        http_reply_error(req, KB_E_INVALID, ADMIN_NAME_MSG, "name");
    } else if (!parse_cap(raw, len, &cap, &msg)) {
        http_reply_error(req, KB_E_INVALID, msg, "usd_cap");
    } else if (!admin__budget_window(json_string_value(json_object_get(body, "window")), &w)) {
        http_reply_error(req, KB_E_INVALID, WINDOW_MSG, "window");
    } else if (parent && !json_is_null(parent) &&
               (!json_is_string(parent) ||
                !admin__valid_text(json_string_value(parent), KB_BUDGET_NAME_MAX))) {
        http_reply_error(req, KB_E_INVALID, "parent must be a budget's name or null", "parent");
    } else if (alerts && !parse_thresholds(alerts, thr, &nthr)) {
        http_reply_error(req, KB_E_INVALID, THRESHOLDS_MSG, "alert_thresholds");
    } else if (tenant && !json_is_null(tenant) && !json_is_string(tenant)) {
        http_reply_error(req, KB_E_INVALID, "tenant must be a tenant's id or null", "tenant");
    } else if (admin__acting_tenant(a, req, json_string_value(tenant), &t)) {
        /* names unique per tenant: a tenant's budgets live in its namespace */
        struct budget_job *j = job_new(a, req, BOP_CREATE, "budget.created");
        j->tenant = t;
        j->b.name = admin__budget_store_name(t, name);
        j->b.cap = cap;
        j->b.window = w;
        j->b.parent =
            json_is_string(parent) ? admin__budget_store_name(t, json_string_value(parent)) : NULL;
        j->set_alerts = nthr > 0;
        memcpy(j->thr, thr, sizeof thr);
        j->nthr = nthr;
        json_t *d = json_pack("{s:s, s:I, s:s, s:O}", "budget", name, "cap_micros", (json_int_t)cap,
                              "window", window_names[w], "parent", parent ? parent : json_null());
        if (nthr)
            json_object_set(d, "alert_thresholds", alerts);
        submit(j, d);
    }
    free(msg);
    json_decref(body);
}

static void update(struct kb_admin *a, struct kb_hreq *req, const char *name, const char *tenant)
{
    const char *raw, *unknown = NULL;
    size_t len;
    json_t *body = read_object(req, &raw, &len);
    if (!body) {
        http_reply_error(req, KB_E_BAD_JSON, NULL, NULL);
        return;
    }
    static const char *const known[] = {"usd_cap", "window", "parent", "alert_thresholds", NULL};
    struct kb_budget_change c = {0};
    json_t *alerts = json_object_get(body, "alert_thresholds");
    int thr[KB_ALERT_THRESHOLDS_MAX], nthr = 0;
    json_t *parent = json_object_get(body, "parent");
    json_t *window = json_object_get(body, "window");
    char *msg = NULL;
    bool ok = false;
    if (!known_fields(body, known, &unknown)) {
        msg = kb_asprintf("unknown field \"%s\"", unknown);
        http_reply_error(req, KB_E_INVALID, msg, unknown);
    } else if (json_object_size(body) == 0) {
        http_reply_error(req, KB_E_INVALID,
                         "give at least one of usd_cap, window, parent, alert_thresholds", NULL);
    } else if (json_object_get(body, "usd_cap") && !parse_cap(raw, len, &c.cap, &msg)) {
        http_reply_error(req, KB_E_INVALID, msg, "usd_cap");
    } else if (window && !admin__budget_window(json_string_value(window), &c.window)) {
        http_reply_error(req, KB_E_INVALID, WINDOW_MSG, "window");
    } else if (parent && !json_is_null(parent) &&
               (!json_is_string(parent) ||
                !admin__valid_text(json_string_value(parent), KB_BUDGET_NAME_MAX))) {
        http_reply_error(req, KB_E_INVALID, "parent must be a budget's name or null", "parent");
    } else if (alerts && !parse_thresholds(alerts, thr, &nthr)) {
        http_reply_error(req, KB_E_INVALID, THRESHOLDS_MSG, "alert_thresholds");
    } else {
        ok = true;
    }
    if (ok) {
        struct budget_job *j = job_new(a, req, BOP_UPDATE, "budget.updated");
        j->tenant = tenant ? kb_strdup(tenant) : NULL;
        j->b.name = admin__budget_store_name(tenant, name);
        j->c = c;
        j->c.has_cap = json_object_get(body, "usd_cap") != NULL;
        j->c.has_window = window != NULL;
        j->c.has_parent = parent != NULL;
        j->b.parent = json_is_string(parent)
                          ? admin__budget_store_name(tenant, json_string_value(parent))
                          : NULL;
        j->c.parent = j->b.parent;
        j->set_alerts = alerts != NULL;
        memcpy(j->thr, thr, sizeof thr);
        j->nthr = nthr;
        json_t *d = json_pack("{s:s}", "budget", name);
        if (alerts)
            json_object_set(d, "alert_thresholds", alerts);
        if (j->c.has_cap)
            json_object_set_new(d, "cap_micros", json_integer((json_int_t)c.cap));
        if (window)
            json_object_set_new(d, "window", json_string(window_names[c.window]));
        if (parent)
            json_object_set(d, "parent", parent);
        submit(j, d);
    }
    free(msg);
    json_decref(body);
}

static void list(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *q)
{
    const char *limit = evhttp_find_header(q, "limit");
    const char *cursor = evhttp_find_header(q, "cursor");
    long long lim = 50, after = 0;
    char *end;
    if (limit && (!*limit || strspn(limit, "0123456789") != strlen(limit) ||
                  (lim = strtoll(limit, &end, 10)) < 1 || lim > 200)) {
        http_reply_error(req, KB_E_INVALID, "limit must be an integer from 1 to 200", "limit");
        return;
    }
    if (cursor && (!*cursor || strspn(cursor, "0123456789") != strlen(cursor) ||
                   strlen(cursor) > 18 || (after = strtoll(cursor, &end, 10)) <= 0)) {
        http_reply_error(req, KB_E_INVALID, "cursor is not one this API returned", "cursor");
        return;
    }
    /* a scoped token sees its tenant's budgets; root all, or one tenant's
     * with ?tenant= (tenants.c: a tenant's names carry its id) */
    const char *want = admin__scope(a) ? admin__scope(a) : evhttp_find_header(q, "tenant");
    json_t *data = json_array();
    json_t *next = json_null();
    size_t shown = 0;
    int64_t last = 0;
    int64_t now = clock_now();
    for (;;) {
        struct kb_budget *v = NULL;
        size_t n = 0;
        if (store_budget_list(a->store, after, 1000, now, &v, &n) != KB_OK) {
            json_decref(data);
            http_reply_error(req, KB_E_STORE, NULL, NULL);
            return;
        }
        for (size_t i = 0; i < n && json_is_null(next); i++) {
            char t[32];
            bool has = admin__budget_tenant(v[i].name, t, sizeof t);
            if (want && (!has || strcmp(t, want) != 0))
                continue;
            if (shown == (size_t)lim) { /* one more: a next page exists */
                char c[24];
                snprintf(c, sizeof c, "%lld", (long long)last);
                next = json_string(c);
                break;
            }
            json_array_append_new(data, admin__budget_json(&v[i]));
            last = v[i].seq;
            shown++;
        }
        after = n ? v[n - 1].seq : after;
        store_budget_list_free(v, n);
        if (n < 1000 || !json_is_null(next))
            break;
    }
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "data", data, "next_cursor", next));
}

/* ---- budgets named at key issuance (keys.c) ---- */

static bool bad(const char **field, char **msg, char *m)
{
    *field = "budgets";
    *msg = m;
    return false;
}

/* A nested usd_cap, which money_json_number cannot reach: an integer, or a
 * real whose 6-decimal rendering reads back as the same double (below
 * 1e9 USD, where every 6-decimal amount is a distinct double), so the
 * amount kept is the one written. */
static bool nested_cap(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0 || n > KB_MONEY_MAX_MICROS / KB_MICROS_PER_USD)
            return false;
        *out = (int64_t)n * KB_MICROS_PER_USD;
        return true;
    }
    if (!json_is_real(v))
        return false;
    double d = json_real_value(v);
    char text[64];
    if (!(d >= 0 && d < 1e9))
        return false;
    int len = snprintf(text, sizeof text, "%.6f", d);
    if (len <= 0 || (size_t)len >= sizeof text || strtod(text, NULL) != d)
        return false;
    return money_parse(text, (size_t)len, out, NULL) == KB_OK;
}

/* "budgets": up to KB_KEY_BUDGETS_MAX names, or objects defining one
 * ({name, usd_cap, window, parent?}) to create unless it exists. */
bool admin__key_budgets_parse(json_t *body, struct admin__key_budgets *kb, const char **field,
                              char **msg)
{
    json_t *v = json_object_get(body, "budgets");
    if (!v || json_is_null(v))
        return true;
    size_t n = json_array_size(v);
    if (!json_is_array(v) || n > KB_KEY_BUDGETS_MAX)
        return bad(field, msg,
                   kb_asprintf("budgets must be an array of at most %d budget names or "
                               "{name, usd_cap, window, parent} objects",
                               KB_KEY_BUDGETS_MAX));
    kb->v = kb_calloc(n ? n : 1, sizeof *kb->v);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        struct admin__issue_budget *ib = &kb->v[kb->n];
        const char *name = json_is_string(e) ? json_string_value(e)
                                             : json_string_value(json_object_get(e, "name"));
        if (!name || !admin__valid_text(name, KB_BUDGET_NAME_MAX))
            return bad(field, msg, kb_asprintf("budgets[%zu]: %s", i, ADMIN_NAME_MSG));
        if (json_is_object(e)) {
            static const char *const known[] = {"name", "usd_cap", "window", "parent", NULL};
            const char *f;
            if (!known_fields(e, known, &f))
                return bad(field, msg, kb_asprintf("budgets[%zu]: unknown field \"%s\"", i, f));
            json_t *parent = json_object_get(e, "parent");
            if (!nested_cap(json_object_get(e, "usd_cap"), &ib->def.cap))
                return bad(field, msg,
                           kb_asprintf("budgets[%zu]: usd_cap must be a non-negative USD amount "
                                       "with at most 6 decimals",
                                       i));
            if (!admin__budget_window(json_string_value(json_object_get(e, "window")),
                                      &ib->def.window))
                return bad(field, msg,
                           kb_asprintf("budgets[%zu]: window must be \"day\", \"month\" or "
                                       "\"total\"",
                                       i));
            if (parent && !json_is_null(parent) &&
                (!json_is_string(parent) ||
                 !admin__valid_text(json_string_value(parent), KB_BUDGET_NAME_MAX)))
                return bad(field, msg,
                           kb_asprintf("budgets[%zu]: parent must be a budget's name or null", i));
            ib->define = true;
            ib->def.parent = json_is_string(parent) ? kb_strdup(json_string_value(parent)) : NULL;
        } else if (!json_is_string(e)) {
            return bad(field, msg, kb_asprintf("budgets[%zu] must be a name or an object", i));
        }
        ib->def.name = kb_strdup(name);
        kb->n++;
    }
    if (kb->n) {
        json_t *names = json_array();
        for (size_t i = 0; i < kb->n; i++)
            json_array_append_new(names, json_string(kb->v[i].def.name));
        json_t *d = json_pack("{s:o}", "budgets", names);
        kb->key_detail = json_dumps(d, JSON_COMPACT);
        json_decref(d);
    }
    return true;
}

/* Writer thread: the budgets named at issuance, created when defined and
 * new (each with its own audit record), linked to the new key. A budget
 * that cannot be made or found fails the issuance: KB_E_INVALID with
 * kb->err. */
enum kb_err admin__key_budgets_link(struct kb_store *s, struct admin__key_budgets *kb,
                                    const struct kb_key *key, const struct kb_audit_rec *tmpl)
{
    free(kb->err); /* a batch that failed may run the job again */
    kb->err = NULL;
    for (size_t i = 0; i < kb->n; i++) {
        struct admin__issue_budget *ib = &kb->v[i];
        free(ib->detail);
        ib->detail = NULL;
        enum kb_err err;
        if (ib->define) {
            char *msg = NULL;
            ib->def.created_at = key->created_at;
            err = store_budget_insert(s, &ib->def, &msg);
            if (err == KB_OK) {
                static const char *const wn[] = {"total", "day", "month"};
                json_t *d = json_pack(
                    "{s:s, s:I, s:s, s:s?, s:s}", "budget", admin__budget_api_name(ib->def.name),
                    "cap_micros", (json_int_t)ib->def.cap, "window", wn[ib->def.window], "parent",
                    admin__budget_api_name(ib->def.parent), "key_id", key->id);
                ib->detail = json_dumps(d, JSON_COMPACT);
                json_decref(d);
                struct kb_audit_rec rec = *tmpl;
                rec.action = "budget.created";
                rec.key_id = NULL;
                rec.vendor = NULL;
                rec.label = admin__budget_api_name(ib->def.name);
                rec.detail = ib->detail;
                crypto_id_new("adm_", 24, rec.request_id, sizeof rec.request_id);
                err = audit_append(s, &rec, NULL);
            } else if (err == KB_E_EXISTS) {
                err = KB_OK; /* reused as it is */
            }
            if (err == KB_E_NOT_FOUND || err == KB_E_INVALID) {
                admin__budget_unscope_msg(msg);
                kb->err = kb_asprintf("budgets[%zu]: %s", i, msg ? msg : "invalid");
                err = KB_E_INVALID;
            }
            free(msg);
            if (err != KB_OK)
                return err;
        }
        err = store_key_budget_add(s, key->seq, ib->def.name);
        if (err == KB_E_NOT_FOUND) {
            kb->err = kb_asprintf("budgets[%zu]: no budget named \"%s\"", i,
                                  admin__budget_api_name(ib->def.name));
            return KB_E_INVALID;
        }
        if (err != KB_OK)
            return err;
    }
    return KB_OK;
}

void admin__key_budgets_scope(struct admin__key_budgets *kb, const char *tenant)
{
    for (size_t i = 0; tenant && i < kb->n; i++) {
        char *name = admin__budget_store_name(tenant, kb->v[i].def.name);
        free(kb->v[i].def.name);
        kb->v[i].def.name = name;
        if (kb->v[i].def.parent) {
            char *parent = admin__budget_store_name(tenant, kb->v[i].def.parent);
            free(kb->v[i].def.parent);
            kb->v[i].def.parent = parent;
        }
    }
}

void admin__key_budgets_cleanup(struct admin__key_budgets *kb)
{
    for (size_t i = 0; i < kb->n; i++) {
        free(kb->v[i].def.name);
        free(kb->v[i].def.parent);
        free(kb->v[i].detail);
    }
    free(kb->v);
    free(kb->err);
    free(kb->key_detail);
}

void admin__budgets(struct kb_admin *a, struct kb_hreq *req, const char *rest,
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
    size_t nlen = 0;
    char *name = evhttp_uridecode(rest + 1, 0, &nlen);
    /* the budget's tenant: a scoped token's own, or root's ?tenant= */
    const char *tenant = admin__scope(a) ? admin__scope(a) : evhttp_find_header(query, "tenant");
    char *stored = name ? admin__budget_store_name(tenant, name) : NULL;
    if (!name || nlen != strlen(name) || !admin__valid_text(name, KB_BUDGET_NAME_MAX) ||
        (tenant && !admin__valid_text(tenant, 31))) {
        http_reply_error(req, KB_E_NOT_FOUND, "no such budget", NULL);
    } else if (cmd == KB_M_GET) {
        struct kb_budget *b = NULL;
        enum kb_err err = store_budget_get(a->store, stored, clock_now(), &b);
        if (err == KB_OK)
            http_reply_json(req, 200, admin__budget_json(b));
        else
            http_reply_error(req, err == KB_E_NOT_FOUND ? err : KB_E_STORE,
                             err == KB_E_NOT_FOUND ? "no such budget" : NULL, NULL);
        store_budget_free(b);
    } else if (cmd == KB_M_PATCH) {
        update(a, req, name, tenant);
    } else if (cmd == KB_M_DELETE) {
        struct budget_job *j = job_new(a, req, BOP_DELETE, "budget.deleted");
        j->tenant = tenant ? kb_strdup(tenant) : NULL;
        j->b.name = kb_strdup(stored);
        submit(j, json_pack("{s:s}", "budget", name));
    } else {
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
    }
    free(stored);
    free(name);
}
