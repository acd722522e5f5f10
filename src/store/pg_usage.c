/*
 * pg_usage.c - daily spend grouped by key, label, label prefix, budget or tenant
 * on PostgreSQL (store.h, "usage"), behaving exactly as sqlite_usage.c:
 * the keys' daily spend rows, summed per group; a budget's rows over the
 * keys whose chain reaches it (UNION: each key once). Groups are ordered
 * bytewise (COLLATE "C"), as SQLite orders them, so that paging is the
 * same on both backends.
 */
#include <stdlib.h>

#include "core/alloc.h"
#include "store/pg_int.h"

#define SUMS "sum(s.spent_micros)::bigint, sum(s.reserved_micros)::bigint, sum(s.requests)::bigint "
#define WHERE_DAYS "WHERE s.day BETWEEN $1::bigint AND $2::bigint "
#define PREFIX "AND ($3::text IS NULL OR left(k.label, length($3::text)) = $3::text) "
#define TAIL(g) "GROUP BY 1, 2 ORDER BY 1, " g " COLLATE \"C\" LIMIT $5::bigint OFFSET $6::bigint"

/* $4 is used by the budget query only; the others name it so that every
 * statement takes the same six parameters */
#define UNUSED4 "AND ($4::text IS NULL OR true) "

static const char SQL_KEY[] =
    "SELECT s.day, k.id, " SUMS
    "FROM spend s JOIN keys k ON k.seq = s.key_seq " WHERE_DAYS PREFIX UNUSED4 TAIL("k.id");
static const char SQL_LABEL[] =
    "SELECT s.day, k.label, " SUMS
    "FROM spend s JOIN keys k ON k.seq = s.key_seq " WHERE_DAYS PREFIX UNUSED4 TAIL("k.label");
static const char SQL_PREFIX[] =
    "SELECT s.day, $3::text, " SUMS
    "FROM spend s JOIN keys k ON k.seq = s.key_seq " WHERE_DAYS PREFIX UNUSED4 TAIL("$3::text");
static const char SQL_BUDGET[] =
    "WITH RECURSIVE reach(budget_seq, key_seq) AS ("
    "SELECT budget_seq, key_seq FROM key_budgets UNION "
    "SELECT b.parent_seq, r.key_seq FROM reach r JOIN budgets b ON b.seq = r.budget_seq "
    "WHERE b.parent_seq IS NOT NULL) "
    "SELECT s.day, b.name, " SUMS "FROM reach r JOIN budgets b ON b.seq = r.budget_seq "
    "JOIN spend s ON s.key_seq = r.key_seq JOIN keys k ON k.seq = r.key_seq " WHERE_DAYS PREFIX
    "AND ($4::text IS NULL OR b.name = $4::text) " TAIL("b.name");

static const char SQL_TENANT[] =
    "SELECT s.day, coalesce(k.tenant_id, ''), " SUMS
    "FROM spend s JOIN keys k ON k.seq = s.key_seq " WHERE_DAYS PREFIX UNUSED4
    TAIL("coalesce(k.tenant_id, '')");

enum kb_err pg__usage(struct kb_store *s, const struct kb_usage_query *q, struct kb_usage_row **out,
                      size_t *n)
{
    static const char *const sql[] = {SQL_KEY, SQL_LABEL, SQL_PREFIX, SQL_BUDGET, SQL_TENANT};
    if ((unsigned)q->group > KB_USAGE_TENANT)
        return KB_E_INVALID;
    struct pg_args a = {0};
    pg_arg_i64(&a, q->from_day);
    pg_arg_i64(&a, q->to_day);
    pg_arg_text(&a, q->label_prefix);
    pg_arg_text(&a, q->budget);
    pg_arg_i64(&a, q->limit);
    pg_arg_i64(&a, q->offset);
    enum kb_err err;
    PGresult *r = pg__run(s, sql[q->group], &a, &err);
    if (err != KB_OK) {
        PQclear(r);
        return err;
    }
    int rows = PQntuples(r);
    if (rows > q->limit)
        rows = q->limit;
    struct kb_usage_row *v = kb_calloc((size_t)q->limit, sizeof *v);
    for (int i = 0; i < rows; i++) {
        v[i].day = pg__i64(r, i, 0);
        v[i].group = pg__strdup(r, i, 1);
        v[i].spent = pg__i64(r, i, 2);
        v[i].reserved = pg__i64(r, i, 3);
        v[i].requests = pg__i64(r, i, 4);
    }
    PQclear(r);
    *out = v;
    *n = (size_t)rows;
    return KB_OK;
}
