/*
 * usage.c - GET /v1/usage: daily spend grouped by key, label, label
 * prefix or budget over a range of UTC days (docs/budgets.md, "Usage and
 * alerts"). A read on the admin thread's own connection (store_usage);
 * every parameter is checked here first and a bad one answers 400
 * invalid_request naming it in `field`.
 *
 *   GET /v1/usage?group_by=key|label|label_prefix|budget&from=YYYY-MM-DD
 *                &to=YYYY-MM-DD&label_prefix=...&budget=...&limit=1-1000&cursor=...
 */
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin/admin_int.h"
#include "core/clock.h"
#include "core/money.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/store.h"

/* group_by values */
static const char *const group_names[] = {
    [KB_USAGE_KEY] = "key",
    [KB_USAGE_LABEL] = "label",
    [KB_USAGE_LABEL_PREFIX] = "label_prefix",
    [KB_USAGE_BUDGET] = "budget",
    [KB_USAGE_TENANT] = "tenant",
};

/* "YYYY-MM-DD", a real date from 1970 to 9999, into a UTC day number. */
static bool parse_day(const char *s, int64_t *day)
{
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y < 1970 || m < 1 || m > 12 || d < 1)
        return false;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] + (m == 2 && leap))
        return false;
    /* days from civil (Howard Hinnant's algorithm), no time zone involved */
    int64_t yy = y - (m <= 2);
    int64_t era = yy / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *day = era * 146097 + doe - 719468;
    return true;
}

static double usd(int64_t micros)
{
    return (double)micros / (double)KB_MICROS_PER_USD; /* display only */
}

static bool digits(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max && strspn(s, "0123456789") == n;
}

void admin__usage(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *query)
{
    static const char *const known[] = {"group_by", "from",  "to",     "label_prefix",
                                        "budget",   "limit", "cursor", NULL};
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
    const char *group = evhttp_find_header(query, "group_by");
    const char *from = evhttp_find_header(query, "from");
    const char *to = evhttp_find_header(query, "to");
    const char *prefix = evhttp_find_header(query, "label_prefix");
    const char *budget = evhttp_find_header(query, "budget");
    const char *limit = evhttp_find_header(query, "limit");
    const char *cursor = evhttp_find_header(query, "cursor");
    struct kb_usage_query q = {.group = KB_USAGE_KEY, .limit = 500};
    int64_t today = clock_day(clock_now());
    bool found = !group;
    for (size_t i = 0; group && i < sizeof group_names / sizeof group_names[0]; i++)
        if (strcmp(group, group_names[i]) == 0) {
            q.group = (enum kb_usage_group)i;
            found = true;
        }
    long long lim = 500, off = 0;
    char *end;
    if (!found) {
        http_reply_error(
            req, KB_E_INVALID,
            "group_by must be \"key\", \"label\", \"label_prefix\", \"budget\" or \"tenant\"",
            "group_by");
        return;
    }
    q.to_day = today;
    if (to && !parse_day(to, &q.to_day)) {
        http_reply_error(req, KB_E_INVALID, "to must be a UTC date, YYYY-MM-DD", "to");
        return;
    }
    q.from_day = q.to_day;
    if (from && !parse_day(from, &q.from_day)) {
        http_reply_error(req, KB_E_INVALID, "from must be a UTC date, YYYY-MM-DD", "from");
        return;
    }
    if (q.from_day > q.to_day) {
        http_reply_error(req, KB_E_INVALID, "from must not be after to", "from");
        return;
    }
    if (q.to_day - q.from_day >= KB_USAGE_DAYS_MAX) {
        http_reply_error(req, KB_E_INVALID, "a range spans at most 366 days", "to");
        return;
    }
    if (prefix && !admin__valid_text(prefix, 256)) {
        http_reply_error(req, KB_E_INVALID, "label_prefix must be 1-256 bytes of printable UTF-8",
                         "label_prefix");
        return;
    }
    if (q.group == KB_USAGE_LABEL_PREFIX && !prefix) {
        http_reply_error(req, KB_E_INVALID, "group_by=label_prefix needs label_prefix",
                         "label_prefix");
        return;
    }
    if (budget && (q.group != KB_USAGE_BUDGET || !admin__valid_text(budget, KB_BUDGET_NAME_MAX))) {
        http_reply_error(req, KB_E_INVALID, "budget must be a budget's name, with group_by=budget",
                         "budget");
        return;
    }
    if (limit &&
        (!digits(limit, 4) || (lim = strtoll(limit, &end, 10)) < 1 || lim > KB_USAGE_LIMIT_MAX)) {
        http_reply_error(req, KB_E_INVALID, "limit must be an integer from 1 to 1000", "limit");
        return;
    }
    if (cursor && (!digits(cursor, 12) || (off = strtoll(cursor, &end, 10)) < 1)) {
        http_reply_error(req, KB_E_INVALID, "cursor is not one this API returned", "cursor");
        return;
    }
    q.label_prefix = prefix;
    q.budget = budget;
    q.offset = off;
    q.limit = (int)lim + 1; /* one more: is there a next page */
    struct kb_usage_row *rows = NULL;
    size_t n = 0;
    if (store_usage(a->store, &q, &rows, &n) != KB_OK) {
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    size_t shown = n > (size_t)lim ? (size_t)lim : n;
    json_t *data = json_array();
    for (size_t i = 0; i < shown; i++) {
        char day[16], tenant[64];
        /* a tenant's budget by its API name, with its tenant; root's keys'
         * tenant group is null */
        const char *g = rows[i].group;
        json_t *gj = q.group == KB_USAGE_TENANT && !*g ? json_null()
                     : q.group == KB_USAGE_BUDGET      ? json_string(admin__budget_api_name(g))
                                                       : json_string(g);
        json_t *row = json_pack("{s:s, s:o, s:f, s:f, s:I}", "day",
                                clock_day_str(rows[i].day, day, sizeof day), "group", gj,
                                "spent_usd", usd(rows[i].spent), "reserved_usd",
                                usd(rows[i].reserved), "requests", (json_int_t)rows[i].requests);
        if (q.group == KB_USAGE_BUDGET && admin__budget_tenant(g, tenant, sizeof tenant))
            json_object_set_new(row, "tenant", json_string(tenant));
        json_array_append_new(data, row);
    }
    store_usage_free(rows, n);
    json_t *next = json_null();
    if (n > shown) {
        char c[24];
        snprintf(c, sizeof c, "%lld", off + (long long)shown);
        next = json_string(c);
    }
    char f[16], t[16];
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:s, s:o, s:o}", "group_by", group_names[q.group], "from",
                              clock_day_str(q.from_day, f, sizeof f), "to",
                              clock_day_str(q.to_day, t, sizeof t), "data", data, "next_cursor",
                              next));
}
