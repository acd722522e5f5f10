/*
 * pg_alerts.c - budget threshold alerts on PostgreSQL (store.h,
 * "threshold alerts"), behaving exactly as sqlite_alerts.c.
 *
 * The settlement's UPDATE (pg_budgets.c) holds the budget_spend row's lock
 * and returns the period's spent and alert level: settlements of one
 * budget on any number of connections and nodes are ordered by that lock,
 * so exactly one of them reaches each threshold above the level, and the
 * unique (budget_seq, period, threshold) makes the row once even so.
 * Recording is one statement (the rows and the new level).
 *
 * Delivery threads of several nodes claim with FOR UPDATE SKIP LOCKED and
 * move next_at forward (the lease) in the same statement: one attempt of
 * an alert runs at a time, on one node.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "store/backend.h"
#include "store/pg_int.h"

#define ALERT_COLS                                                                                 \
    "id, budget_seq, budget_name, win, period, threshold, spent_micros, cap_micros, created_ms, "  \
    "status, attempts, last_status, next_at, done_ms, log "

static const char SQL_CROSSED[] =
    "WITH i AS (INSERT INTO alert_deliveries (budget_seq, budget_name, win, period, threshold, "
    "spent_micros, cap_micros, created_ms, next_at) "
    "SELECT b.seq, b.name, b.win, $2::bigint, t, $3::bigint, $4::bigint, $5::bigint, $5::bigint "
    "FROM budgets b, unnest($6::integer[]) AS t WHERE b.seq = $1::bigint "
    "ON CONFLICT (budget_seq, period, threshold) DO NOTHING) "
    "UPDATE budget_spend SET alert_level = greatest(alert_level, $7::integer) "
    "WHERE budget_seq = $1::bigint AND period = $2::bigint";

static const char SQL_SET[] =
    "UPDATE budgets SET alert_thresholds = $2::text WHERE name = $1::text RETURNING seq";

static const char SQL_CLAIM[] =
    "UPDATE alert_deliveries SET next_at = $1::bigint + $2::bigint, attempts = attempts + 1 "
    "WHERE id = (SELECT id FROM alert_deliveries WHERE status = 'pending' AND "
    "next_at <= $1::bigint ORDER BY next_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "RETURNING " ALERT_COLS;

static const char SQL_RECORD[] =
    "UPDATE alert_deliveries SET last_status = $2::integer, log = log || $3::text, "
    "status = $4::text, next_at = $5::bigint, done_ms = $6::bigint WHERE id = $1::bigint "
    "RETURNING id";

static const char SQL_LIST[] = "SELECT " ALERT_COLS "FROM alert_deliveries "
                               "WHERE ($1::bigint = 0 OR id < $1::bigint) "
                               "AND ($3::text IS NULL OR budget_name = $3::text) "
                               "ORDER BY id DESC LIMIT $2::bigint";

static const char *const status_names[] = {"pending", "delivered", "failed"};

static void fill(const PGresult *r, int i, struct kb_alert *a)
{
    a->id = pg__i64(r, i, 0);
    a->budget_seq = pg__i64(r, i, 1);
    a->budget = pg__strdup(r, i, 2);
    a->window = (enum kb_budget_window)pg__i64(r, i, 3);
    a->period = pg__i64(r, i, 4);
    a->threshold = (int)pg__i64(r, i, 5);
    a->spent = pg__i64(r, i, 6);
    a->cap = pg__i64(r, i, 7);
    a->created_ms = pg__i64(r, i, 8);
    const char *st = pg__text(r, i, 9);
    a->status = KB_ALERT_PENDING;
    for (int k = 0; st && k < 3; k++)
        if (strcmp(st, status_names[k]) == 0)
            a->status = (enum kb_alert_status)k;
    a->attempts = (int)pg__i64(r, i, 10);
    a->last_status = (int)pg__i64(r, i, 11);
    a->next_at = pg__i64(r, i, 12);
    a->done_ms = pg__i64(r, i, 13);
    a->log = pg__strdup(r, i, 14);
}

enum kb_err pg__alerts_record_crossed(struct kb_store *s, int64_t seq, int64_t period,
                                      int64_t spent, int64_t cap, const int *crossed, int n)
{
    char arr[80] = "{";
    size_t len = 1;
    for (int i = 0; i < n && len < sizeof arr; i++) {
        int w = snprintf(arr + len, sizeof arr - len, "%s%d", i ? "," : "", crossed[i]);
        if (w > 0)
            len += (size_t)w;
    }
    if (len + 2 > sizeof arr)
        return KB_E_INVALID; /* cannot happen: at most 10 thresholds of 3 digits */
    arr[len++] = '}';
    arr[len] = '\0';
    struct pg_args a = {0};
    pg_arg_i64(&a, seq);
    pg_arg_i64(&a, period);
    pg_arg_i64(&a, spent);
    pg_arg_i64(&a, cap);
    pg_arg_i64(&a, clock_now_ms());
    pg_arg_text(&a, arr);
    pg_arg_i64(&a, crossed[n - 1]); /* ascending: the highest */
    return pg__do(s, SQL_CROSSED, &a);
}

enum kb_err pg__budget_alerts_set(struct kb_store *s, const char *name, const int *pct, int n)
{
    char buf[64];
    struct pg_args a = {0};
    pg_arg_text(&a, name);
    pg_arg_text(&a, n > 0 ? store__thresholds_format(pct, n, buf, sizeof buf) : NULL);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_SET, &a, &err);
    if (err == KB_OK && PQntuples(r) != 1)
        err = KB_E_NOT_FOUND;
    PQclear(r);
    return err;
}

enum kb_err pg__alert_claim(struct kb_store *s, int64_t now_ms, int64_t lease_ms,
                            struct kb_alert **out)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, now_ms);
    pg_arg_i64(&a, lease_ms);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_CLAIM, &a, &err);
    if (err == KB_OK && PQntuples(r) != 1)
        err = KB_E_NOT_FOUND;
    if (err == KB_OK) {
        struct kb_alert *al = kb_calloc(1, sizeof *al);
        fill(r, 0, al);
        *out = al;
    }
    PQclear(r);
    return err;
}

enum kb_err pg__alert_record(struct kb_store *s, int64_t id, int http_status, const char *log_line,
                             enum kb_alert_status status, int64_t next_at, int64_t done_ms)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, id);
    pg_arg_i64(&a, http_status);
    pg_arg_text(&a, log_line);
    pg_arg_text(&a, status_names[status]);
    pg_arg_i64(&a, next_at);
    pg_arg_i64(&a, done_ms);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_RECORD, &a, &err);
    if (err == KB_OK && PQntuples(r) != 1)
        err = KB_E_NOT_FOUND;
    PQclear(r);
    return err;
}

enum kb_err pg__alert_list(struct kb_store *s, int64_t before_id, int limit, const char *budget,
                           struct kb_alert **out, size_t *n)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, before_id);
    pg_arg_i64(&a, limit);
    pg_arg_text(&a, budget);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_LIST, &a, &err);
    if (err != KB_OK) {
        PQclear(r);
        return err;
    }
    int rows = PQntuples(r);
    if (rows > limit)
        rows = limit;
    struct kb_alert *v = kb_calloc((size_t)limit, sizeof *v);
    for (int i = 0; i < rows; i++)
        fill(r, i, &v[i]);
    PQclear(r);
    *out = v;
    *n = (size_t)rows;
    return KB_OK;
}
