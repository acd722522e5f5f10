/*
 * sqlite_alerts.c - budget threshold alerts on the embedded store
 * (store.h, "threshold alerts"; docs/budgets.md).
 *
 * The check rides in the settlement (sqlite_budgets.c): its UPDATE returns
 * the period's spent and alert level and the budget's cap and thresholds,
 * and only when a threshold above the level is reached does this file run
 * anything: one INSERT OR IGNORE per threshold (unique per budget, period
 * and threshold) and one UPDATE of the level, in the settlement's
 * transaction. The delivery thread's claim, record and the admin list are
 * single statements in autocommit, prepared per call (none is on the
 * proxy's path).
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "store/backend.h"
#include "store/sqlite_int.h"
#include "store/store.h"

#define ALERT_COLS                                                                                 \
    "id, budget_seq, budget_name, win, period, threshold, spent_micros, cap_micros, created_ms, "  \
    "status, attempts, last_status, next_at, done_ms, log "

static const char *const status_names[] = {"pending", "delivered", "failed"};

static enum kb_alert_status status_of(const char *s)
{
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, status_names[i]) == 0)
            return (enum kb_alert_status)i;
    return KB_ALERT_PENDING;
}

static void fill(sqlite3_stmt *st, struct kb_alert *a)
{
    a->id = sqlite3_column_int64(st, 0);
    a->budget_seq = sqlite3_column_int64(st, 1);
    a->budget = kb_strdup((const char *)sqlite3_column_text(st, 2));
    a->window = (enum kb_budget_window)sqlite3_column_int(st, 3);
    a->period = sqlite3_column_int64(st, 4);
    a->threshold = sqlite3_column_int(st, 5);
    a->spent = sqlite3_column_int64(st, 6);
    a->cap = sqlite3_column_int64(st, 7);
    a->created_ms = sqlite3_column_int64(st, 8);
    a->status = status_of((const char *)sqlite3_column_text(st, 9));
    a->attempts = sqlite3_column_int(st, 10);
    a->last_status = sqlite3_column_int(st, 11);
    a->next_at = sqlite3_column_int64(st, 12);
    a->done_ms = sqlite3_column_int64(st, 13);
    a->log = kb_strdup((const char *)sqlite3_column_text(st, 14));
}

static sqlite3_stmt *prep(struct kb_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store__db(s), sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

enum kb_err sqlite__alerts_record_crossed(struct kb_store *s, int64_t seq, int64_t period,
                                          int64_t spent, int64_t cap, const int *crossed, int n)
{
    sqlite3_stmt *ins =
        prep(s, "INSERT OR IGNORE INTO alert_deliveries (budget_seq, budget_name, win, period, "
                "threshold, spent_micros, cap_micros, created_ms, next_at) "
                "SELECT seq, name, win, ?2, ?3, ?4, ?5, ?6, ?6 FROM budgets WHERE seq = ?1");
    sqlite3_stmt *lvl = prep(s, "UPDATE budget_spend SET alert_level = ?3 "
                                "WHERE budget_seq = ?1 AND period = ?2 AND alert_level < ?3");
    enum kb_err err = ins && lvl ? KB_OK : KB_E_STORE;
    int64_t now = clock_now_ms();
    for (int i = 0; err == KB_OK && i < n; i++) {
        sqlite3_bind_int64(ins, 1, seq);
        sqlite3_bind_int64(ins, 2, period);
        sqlite3_bind_int(ins, 3, crossed[i]);
        sqlite3_bind_int64(ins, 4, spent);
        sqlite3_bind_int64(ins, 5, cap);
        sqlite3_bind_int64(ins, 6, now);
        if (sqlite3_step(ins) != SQLITE_DONE)
            err = KB_E_STORE;
        sqlite3_reset(ins);
    }
    if (err == KB_OK) {
        sqlite3_bind_int64(lvl, 1, seq);
        sqlite3_bind_int64(lvl, 2, period);
        sqlite3_bind_int(lvl, 3, crossed[n - 1]); /* ascending: the highest */
        if (sqlite3_step(lvl) != SQLITE_DONE)
            err = KB_E_STORE;
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(lvl);
    return err;
}

enum kb_err sqlite__budget_alerts_set(struct kb_store *s, const char *name, const int *pct, int n)
{
    sqlite3_stmt *st = prep(s, "UPDATE budgets SET alert_thresholds = ?2 WHERE name = ?1");
    if (!st)
        return KB_E_STORE;
    char buf[64];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (n > 0)
        sqlite3_bind_text(st, 2, store__thresholds_format(pct, n, buf, sizeof buf), -1,
                          SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    return sqlite3_changes(store__db(s)) == 1 ? KB_OK : KB_E_NOT_FOUND;
}

enum kb_err sqlite__alert_claim(struct kb_store *s, int64_t now_ms, int64_t lease_ms,
                                struct kb_alert **out)
{
    /* a read first: the thread polls, and an UPDATE takes the write lock
     * even when it matches nothing, which the store writer would wait on */
    sqlite3_stmt *due = prep(s, "SELECT 1 FROM alert_deliveries WHERE status = 'pending' AND "
                                "next_at <= ?1 LIMIT 1");
    if (!due)
        return KB_E_STORE;
    sqlite3_bind_int64(due, 1, now_ms);
    int drc = sqlite3_step(due);
    sqlite3_finalize(due);
    if (drc == SQLITE_DONE)
        return KB_E_NOT_FOUND;
    if (drc != SQLITE_ROW)
        return KB_E_STORE;
    sqlite3_stmt *st =
        prep(s, "UPDATE alert_deliveries SET next_at = ?1 + ?2, attempts = attempts + 1 "
                "WHERE id = (SELECT id FROM alert_deliveries WHERE status = 'pending' AND "
                "next_at <= ?1 ORDER BY next_at, id LIMIT 1) RETURNING " ALERT_COLS);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, lease_ms);
    int rc = sqlite3_step(st);
    struct kb_alert *a = NULL;
    if (rc == SQLITE_ROW) {
        a = kb_calloc(1, sizeof *a);
        fill(st, a);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_alert_free(a);
        return KB_E_STORE;
    }
    if (!a)
        return KB_E_NOT_FOUND;
    *out = a;
    return KB_OK;
}

enum kb_err sqlite__alert_record(struct kb_store *s, int64_t id, int http_status,
                                 const char *log_line, enum kb_alert_status status, int64_t next_at,
                                 int64_t done_ms)
{
    sqlite3_stmt *st = prep(s, "UPDATE alert_deliveries SET last_status = ?2, log = log || ?3, "
                               "status = ?4, next_at = ?5, done_ms = ?6 WHERE id = ?1");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, http_status);
    sqlite3_bind_text(st, 3, log_line, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, status_names[status], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, next_at);
    sqlite3_bind_int64(st, 6, done_ms);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    return sqlite3_changes(store__db(s)) == 1 ? KB_OK : KB_E_NOT_FOUND;
}

enum kb_err sqlite__alert_list(struct kb_store *s, int64_t before_id, int limit, const char *budget,
                               struct kb_alert **out, size_t *n)
{
    sqlite3_stmt *st = prep(s, "SELECT " ALERT_COLS "FROM alert_deliveries "
                               "WHERE (?1 = 0 OR id < ?1) AND (?3 IS NULL OR budget_name = ?3) "
                               "ORDER BY id DESC LIMIT ?2");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, before_id);
    sqlite3_bind_int(st, 2, limit);
    if (budget)
        sqlite3_bind_text(st, 3, budget, -1, SQLITE_STATIC);
    struct kb_alert *v = kb_calloc((size_t)limit, sizeof *v);
    size_t cnt = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && cnt < (size_t)limit)
        fill(st, &v[cnt++]);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        store_alert_list_free(v, cnt);
        return KB_E_STORE;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}
