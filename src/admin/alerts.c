/*
 * alerts.c - GET /v1/alerts: the budget threshold alerts recorded, newest
 * first, each with its webhook delivery: status (pending, delivered,
 * failed), attempts and every attempt's outcome (docs/budgets.md, "Usage
 * and alerts"). A read on the admin thread's own connection.
 *
 *   GET /v1/alerts?budget=NAME&limit=1-200&cursor=...
 */
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "alerts/alerts.h"
#include "core/clock.h"
#include "core/money.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/store.h"

static const char *const status_names[] = {"pending", "delivered", "failed"};
static const char *const window_names[] = {"total", "day", "month"};

static double usd(int64_t micros)
{
    return (double)micros / (double)KB_MICROS_PER_USD; /* display only */
}

static json_t *ms_time(int64_t ms)
{
    char b[40];
    return ms > 0 ? json_string(clock_rfc3339(ms / 1000, b, sizeof b)) : json_null();
}

static json_t *alert_json(const struct kb_alert *a)
{
    char period[48];
    json_t *log = json_array();
    /* one JSON object per line, written by the delivery thread */
    for (const char *p = a->log; p && *p;) {
        size_t n = strcspn(p, "\n");
        json_t *o = json_loadb(p, n, 0, NULL);
        if (o)
            json_array_append_new(log, o);
        p += n + (p[n] == '\n');
    }
    json_t *o = json_pack(
        "{s:I, s:s, s:i, s:s, s:s, s:f, s:f, s:o, s:s, s:i, s:i, s:o}", "id", (json_int_t)a->id,
        "budget", admin__budget_api_name(a->budget), "threshold", a->threshold, "window",
        window_names[a->window], "period",
        alerts_period_str(a->window, a->period, period, sizeof period), "spent_usd", usd(a->spent),
        "cap_usd", usd(a->cap), "at", ms_time(a->created_ms), "status", status_names[a->status],
        "attempts", a->attempts, "last_status", a->last_status, "attempt_log", log);
    json_object_set_new(o, "next_attempt_at",
                        a->status == KB_ALERT_PENDING ? ms_time(a->next_at) : json_null());
    json_object_set_new(o, "done_at", ms_time(a->done_ms));
    char tenant[64];
    json_object_set_new(o, "tenant",
                        admin__budget_tenant(a->budget, tenant, sizeof tenant) ? json_string(tenant)
                                                                               : json_null());
    return o;
}

void admin__alerts(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *query)
{
    static const char *const known[] = {"budget", "limit", "cursor", NULL};
    for (struct evkeyval *kv = TAILQ_FIRST(query); kv; kv = TAILQ_NEXT(kv, next)) {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(*k, kv->key) == 0;
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown parameter \"%.64s\"", kv->key);
            http_reply_error(req, KB_E_INVALID, msg, kv->key);
            return;
        }
    }
    const char *budget = evhttp_find_header(query, "budget");
    const char *limit = evhttp_find_header(query, "limit");
    const char *cursor = evhttp_find_header(query, "cursor");
    long long lim = 50, before = 0;
    char *end;
    if (budget && !admin__valid_text(budget, KB_BUDGET_NAME_MAX)) {
        http_reply_error(req, KB_E_INVALID, ADMIN_NAME_MSG, "budget");
        return;
    }
    if (limit && (!*limit || strlen(limit) > 3 || strspn(limit, "0123456789") != strlen(limit) ||
                  (lim = strtoll(limit, &end, 10)) < 1 || lim > 200)) {
        http_reply_error(req, KB_E_INVALID, "limit must be an integer from 1 to 200", "limit");
        return;
    }
    if (cursor &&
        (!*cursor || strlen(cursor) > 18 || strspn(cursor, "0123456789") != strlen(cursor) ||
         (before = strtoll(cursor, &end, 10)) <= 0)) {
        http_reply_error(req, KB_E_INVALID, "cursor is not one this API returned", "cursor");
        return;
    }
    struct kb_alert *v = NULL;
    size_t n = 0;
    if (store_alert_list(a->store, before, (int)lim + 1, budget, &v, &n) != KB_OK) {
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    size_t shown = n > (size_t)lim ? (size_t)lim : n;
    json_t *data = json_array();
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(data, alert_json(&v[i]));
    json_t *next = json_null();
    if (n > shown) {
        char c[24];
        snprintf(c, sizeof c, "%lld", (long long)v[shown - 1].id);
        next = json_string(c);
    }
    store_alert_list_free(v, n);
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "data", data, "next_cursor", next));
}
