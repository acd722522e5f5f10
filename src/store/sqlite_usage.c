/*
 * sqlite_usage.c - daily spend grouped by key, label, label prefix,
 * budget or tenant, on the embedded store (store.h, "usage"; docs/budgets.md).
 *
 * The one source is the keys' daily spend rows (spend: per key and UTC
 * day): a budget's own counters (budget_spend) are per window period, so a
 * budget's daily rows are the sum of the daily rows of the keys whose
 * chain reaches it, found by walking key_budgets up the parents (UNION:
 * a key reaching a budget by two paths is counted once). An admin query,
 * not the proxy path: prepared per call.
 */
#include <sqlite3.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "store/sqlite_int.h"
#include "store/store.h"

#define SUMS "sum(s.spent_micros), sum(s.reserved_micros), sum(s.requests) "
#define WHERE_DAYS "WHERE s.day BETWEEN ?1 AND ?2 "
#define PREFIX "AND (?3 IS NULL OR substr(k.label, 1, length(?3)) = ?3) "
#define TAIL "GROUP BY 1, 2 ORDER BY 1, 2 LIMIT ?5 OFFSET ?6"

/* ?1 from, ?2 to, ?3 label prefix or NULL, ?4 budget or NULL, ?5 limit, ?6 offset */
static const char *const usage_sql[] = {
    [KB_USAGE_KEY] = "SELECT s.day, k.id, " SUMS
                     "FROM spend s JOIN keys k ON k.seq = s.key_seq " WHERE_DAYS PREFIX TAIL,
    [KB_USAGE_LABEL] = "SELECT s.day, k.label, " SUMS
                       "FROM spend s JOIN keys k ON k.seq = s.key_seq " WHERE_DAYS PREFIX TAIL,
    [KB_USAGE_LABEL_PREFIX] =
        "SELECT s.day, ?3, " SUMS
        "FROM spend s JOIN keys k ON k.seq = s.key_seq " WHERE_DAYS PREFIX TAIL,
    [KB_USAGE_BUDGET] =
        "WITH RECURSIVE reach(budget_seq, key_seq) AS ("
        "SELECT budget_seq, key_seq FROM key_budgets UNION "
        "SELECT b.parent_seq, r.key_seq FROM reach r JOIN budgets b ON b.seq = r.budget_seq "
        "WHERE b.parent_seq IS NOT NULL) "
        "SELECT s.day, b.name, " SUMS "FROM reach r JOIN budgets b ON b.seq = r.budget_seq "
        "JOIN spend s ON s.key_seq = r.key_seq JOIN keys k ON k.seq = r.key_seq " WHERE_DAYS PREFIX
        "AND (?4 IS NULL OR b.name = ?4) " TAIL,
    [KB_USAGE_TENANT] = "SELECT s.day, coalesce(k.tenant_id, ''), " SUMS
                        "FROM spend s JOIN keys k ON k.seq = s.key_seq " WHERE_DAYS PREFIX TAIL,
};

enum kb_err sqlite__usage(struct kb_store *s, const struct kb_usage_query *q,
                          struct kb_usage_row **out, size_t *n)
{
    if ((unsigned)q->group > KB_USAGE_TENANT)
        return KB_E_INVALID;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store__db(s), usage_sql[q->group], -1, &st, NULL) != SQLITE_OK)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, q->from_day);
    sqlite3_bind_int64(st, 2, q->to_day);
    if (q->label_prefix)
        sqlite3_bind_text(st, 3, q->label_prefix, -1, SQLITE_STATIC);
    if (q->budget)
        sqlite3_bind_text(st, 4, q->budget, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, q->limit);
    sqlite3_bind_int64(st, 6, q->offset);
    struct kb_usage_row *v = kb_calloc((size_t)q->limit, sizeof *v);
    size_t cnt = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && cnt < (size_t)q->limit) {
        struct kb_usage_row *r = &v[cnt++];
        r->day = sqlite3_column_int64(st, 0);
        r->group = kb_strdup((const char *)sqlite3_column_text(st, 1));
        r->spent = sqlite3_column_int64(st, 2);
        r->reserved = sqlite3_column_int64(st, 3);
        r->requests = sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        store_usage_free(v, cnt);
        return KB_E_STORE;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}
