/*
 * pg_budgets.c - budgets on PostgreSQL (store.h, "budgets";
 * docs/budgets.md), behaving exactly as sqlite_budgets.c.
 *
 * A reservation on a budget is one conditional upsert on its window's
 * budget_spend row, with the cap read inside the same statement, under the
 * row's lock: two nodes reserving on one budget at once are ordered by
 * PostgreSQL and neither can overshoot. A request reserves on every budget
 * of its key's chains in one transaction; when one refuses, those already
 * taken are given back before the transaction ends.
 *
 * Ownership: every change to budget_spend.reserved_micros is mirrored, in
 * the same statement, in node_budget_reservations for (this node, this
 * start, budget, period), so that whoever finds this start dead settles
 * exactly its reservations at their worst case. A settle that finds no
 * such row (or less in it than it gives back) knows that happened: it
 * leaves reserved alone and only adds what the actual cost exceeds the
 * worst case by. Rows that reach 0 are kept (one per budget and period
 * this start used; the orphan settlement and the reaper delete them), so
 * that two of this start's connections settling on one row at once both
 * find it.
 *
 * Locks, always taken in this order so that no two transactions wait on
 * each other in a circle:
 *  1. the chain lock, pg_advisory_xact_lock(CHAIN_LOCK_A, CHAIN_LOCK_B)
 *     (the two-int form: a key space apart from the single-bigint locks
 *     of the migrations and the nodes), taken by every change of the
 *     budgets' shape: an insert with a parent, an update that sets the
 *     parent, a delete. Two such changes on different nodes are then
 *     serialised and the second one's cycle and depth checks, run after
 *     it has the lock (read committed: each statement sees every commit
 *     before it), see the first one's result: no cycle, no chain over
 *     KB_BUDGET_DEPTH_MAX, however they interleave.
 *  2. the budgets row being changed (SELECT ... FOR UPDATE).
 *  3. budget_spend rows, in budget seq ascending order within one call
 *     (the reserve walks the chains in one query sorted by seq; settle
 *     and release take the holds in the order reserve returned them):
 *     two nodes reserving on the same budgets lock them in the same order.
 *     A writer group commit holding several jobs' rows can still meet
 *     another node's group in the other order; PostgreSQL's deadlock
 *     detector then fails one job (KB_E_STORE), never money.
 *  4. this start's node_budget_reservations row, after its budget_spend
 *     row (settle and release lock the budget_spend row first, in a
 *     materialised CTE, for that).
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/backend.h"
#include "store/pg_int.h"

/* pg_advisory_xact_lock(int, int) key of budget chain changes: "kbbg", 1 */
#define CHAIN_LOCK_SQL "SELECT pg_advisory_xact_lock(1801609831, 1)"

static const char SQL_SEQ[] = "SELECT seq FROM budgets WHERE name = $1::text";

static const char SQL_INSERT[] =
    "INSERT INTO budgets (name, cap_micros, win, parent_seq, created_at, updated_at) "
    "VALUES ($1::text, $2::bigint, $3::integer, $4::bigint, $5::bigint, $5::bigint) "
    "ON CONFLICT (name) DO NOTHING RETURNING seq";

/* Budgets on the chain from $1 up to its root, $1 included (a seq without
 * a row counts once), at most KB_BUDGET_DEPTH_MAX + 1, and whether $2 is
 * on it: as sqlite_budgets.c's chain_len, in one query. */
static const char SQL_CHAIN[] =
    "WITH RECURSIVE c(seq, n) AS (SELECT $1::bigint, 1 UNION ALL "
    "SELECT b.parent_seq, c.n + 1 FROM c JOIN budgets b ON b.seq = c.seq "
    "WHERE b.parent_seq IS NOT NULL AND c.n <= 8) "
    "SELECT max(n), coalesce(bool_or(seq = $2::bigint), false) FROM c";
_Static_assert(KB_BUDGET_DEPTH_MAX == 8, "SQL_CHAIN's bound");

/* Budgets on the longest chain below $1, itself included. */
static const char SQL_HEIGHT[] =
    "WITH RECURSIVE d(seq, depth) AS (SELECT $1::bigint, 1 UNION ALL "
    "SELECT b.seq, d.depth + 1 FROM budgets b JOIN d ON b.parent_seq = d.seq "
    "WHERE d.depth <= 16) SELECT max(depth) FROM d";

/* A budget and its usage in the period of its window at a time whose day
 * and month periods are $2 and $3 (total: 0). */
#define BUDGET_COLS                                                                                \
    "SELECT b.seq, b.name, b.cap_micros, b.win, p.name, b.created_at, b.updated_at, "              \
    "(SELECT count(*) FROM key_budgets kb WHERE kb.budget_seq = b.seq), "                          \
    "coalesce(u.spent_micros, 0), coalesce(u.reserved_micros, 0), coalesce(u.requests, 0), "       \
    "b.alert_thresholds "                                                                          \
    "FROM budgets b LEFT JOIN budgets p ON p.seq = b.parent_seq "                                  \
    "LEFT JOIN budget_spend u ON u.budget_seq = b.seq AND u.period = "                             \
    "CASE b.win WHEN 1 THEN $2::bigint WHEN 2 THEN $3::bigint ELSE 0 END "

static const char SQL_GET[] = BUDGET_COLS "WHERE b.name = $1::text";
static const char SQL_LIST[] =
    BUDGET_COLS "WHERE b.seq > $1::bigint ORDER BY b.seq LIMIT $4::bigint";

static const char SQL_ROW[] = "SELECT seq, cap_micros, win, parent_seq FROM budgets "
                              "WHERE name = $1::text FOR UPDATE";
static const char SQL_UPDATE[] =
    "UPDATE budgets SET cap_micros = $2::bigint, win = $3::integer, parent_seq = $4::bigint, "
    "updated_at = $5::bigint WHERE seq = $1::bigint";

static const char SQL_IN_USE[] =
    "SELECT (SELECT count(*) FROM key_budgets kb JOIN keys k ON k.seq = kb.key_seq "
    "WHERE kb.budget_seq = $1::bigint AND k.revoked_at IS NULL), "
    "(SELECT count(*) FROM budgets WHERE parent_seq = $1::bigint)";
/* its links (revoked keys' only by then), spend, holders' rows, itself */
static const char SQL_DELETE[] =
    "WITH l AS (DELETE FROM key_budgets WHERE budget_seq = $1::bigint), "
    "s AS (DELETE FROM budget_spend WHERE budget_seq = $1::bigint), "
    "o AS (DELETE FROM node_budget_reservations WHERE budget_seq = $1::bigint) "
    "DELETE FROM budgets WHERE seq = $1::bigint";

static const char SQL_LINK[] = "INSERT INTO key_budgets (key_seq, budget_seq) "
                               "VALUES ($1::bigint, $2::bigint) ON CONFLICT DO NOTHING";
static const char SQL_KEY_NAMES[] =
    "SELECT b.name FROM key_budgets kb JOIN budgets b ON b.seq = kb.budget_seq "
    "WHERE kb.key_seq = $1::bigint ORDER BY b.name";

/* Every budget on the key's chains, each once, by seq (the lock order),
 * with its parent and whether the key names it (for refusal_ranks). The
 * depth bound only stops a cycle, which the chain lock prevents. */
static const char SQL_CHAINS[] =
    "WITH RECURSIVE c(seq, n) AS (SELECT budget_seq, 1 FROM key_budgets "
    "WHERE key_seq = $1::bigint UNION "
    "SELECT b.parent_seq, c.n + 1 FROM c JOIN budgets b ON b.seq = c.seq "
    "WHERE b.parent_seq IS NOT NULL AND c.n <= 16) "
    "SELECT b.seq, b.win, b.name, b.parent_seq, "
    "EXISTS (SELECT 1 FROM key_budgets kb WHERE kb.key_seq = $1::bigint "
    "AND kb.budget_seq = b.seq) "
    "FROM budgets b WHERE b.seq IN (SELECT seq FROM c) ORDER BY b.seq";

/* Reserves $3 on budget $1 in period $2 if it fits, the cap read in the
 * statement (a budget deleted since: no row in b), and mirrors it in this
 * start's row ($4, $5). Answers (budget exists, reserved). */
static const char SQL_RESERVE[] =
    "WITH b AS (SELECT cap_micros FROM budgets WHERE seq = $1::bigint), "
    "r AS (INSERT INTO budget_spend (budget_seq, period, reserved_micros, requests) "
    "SELECT $1::bigint, $2::bigint, $3::bigint, 1 FROM b WHERE $3::bigint <= b.cap_micros "
    "ON CONFLICT (budget_seq, period) DO UPDATE SET "
    "reserved_micros = budget_spend.reserved_micros + $3::bigint, "
    "requests = budget_spend.requests + 1 "
    "WHERE budget_spend.spent_micros + budget_spend.reserved_micros + $3::bigint <= "
    "(SELECT cap_micros FROM b) RETURNING 1), "
    "o AS (INSERT INTO node_budget_reservations (node_id, boot_id, budget_seq, period, micros) "
    "SELECT $4::text, $5::text, $1::bigint, $2::bigint, $3::bigint FROM r "
    "WHERE $3::bigint > 0 "
    "ON CONFLICT (node_id, boot_id, budget_seq, period) DO UPDATE SET "
    "micros = node_budget_reservations.micros + EXCLUDED.micros) "
    "SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM r)";

/* Gives back $3 (and the request) on budget $1, period $2: the spend row
 * locked first, then this start's row; reserved only when that row still
 * holds it (a zero reservation has none and gives back nothing). */
static const char SQL_RELEASE[] =
    "WITH k AS MATERIALIZED (SELECT 1 FROM budget_spend "
    "WHERE budget_seq = $1::bigint AND period = $2::bigint FOR UPDATE), "
    "o AS (UPDATE node_budget_reservations SET micros = micros - $3::bigint "
    "WHERE node_id = $4::text AND boot_id = $5::text AND budget_seq = $1::bigint "
    "AND period = $2::bigint AND micros >= $3::bigint AND EXISTS (SELECT 1 FROM k) "
    "RETURNING 1) "
    "UPDATE budget_spend SET reserved_micros = reserved_micros - "
    "CASE WHEN EXISTS (SELECT 1 FROM o) THEN $3::bigint ELSE 0 END, "
    "requests = requests - 1 WHERE budget_seq = $1::bigint AND period = $2::bigint";

/* Replaces a reservation of $3 by the actual cost $4 (locks as above).
 * Without this start's row holding $3 the reservation was settled at its
 * worst case already: only what $4 exceeds $3 by is added. */
static const char SQL_SETTLE[] =
    "WITH k AS MATERIALIZED (SELECT 1 FROM budget_spend "
    "WHERE budget_seq = $1::bigint AND period = $2::bigint FOR UPDATE), "
    "o AS (UPDATE node_budget_reservations SET micros = micros - $3::bigint "
    "WHERE node_id = $5::text AND boot_id = $6::text AND budget_seq = $1::bigint "
    "AND period = $2::bigint AND micros >= $3::bigint AND EXISTS (SELECT 1 FROM k) "
    "RETURNING 1) "
    "UPDATE budget_spend SET "
    "reserved_micros = CASE WHEN EXISTS (SELECT 1 FROM o) "
    "THEN greatest(reserved_micros - $3::bigint, 0) ELSE reserved_micros END, "
    "spent_micros = spent_micros + CASE WHEN EXISTS (SELECT 1 FROM o) "
    "THEN $4::bigint ELSE greatest($4::bigint - $3::bigint, 0) END "
    "WHERE budget_seq = $1::bigint AND period = $2::bigint "
    /* what the alert check needs (pg_alerts.c), no statement of its own */
    "RETURNING spent_micros, alert_level, "
    "(SELECT cap_micros FROM budgets WHERE seq = $1::bigint), "
    "(SELECT alert_thresholds FROM budgets WHERE seq = $1::bigint)";

/* ---- helpers ---- */

/* The first column of the only row of a statement as a number:
 * KB_E_NOT_FOUND without a row. */
static enum kb_err one_i64(struct kb_store *s, const char *sql, const struct pg_args *a,
                           int64_t *out)
{
    enum kb_err err;
    PGresult *r = pg__run(s, sql, a, &err);
    if (err == KB_OK) {
        if (PQntuples(r) < 1)
            err = KB_E_NOT_FOUND;
        else
            *out = pg__i64(r, 0, 0);
    }
    PQclear(r);
    return err;
}

static enum kb_err seq_of(struct kb_store *s, const char *name, int64_t *seq)
{
    struct pg_args a = {0};
    pg_arg_text(&a, name);
    return one_i64(s, SQL_SEQ, &a, seq);
}

static enum kb_err chain_lock(struct kb_store *s)
{
    static const char sql[] = CHAIN_LOCK_SQL;
    return pg__do(s, sql, NULL);
}

/* Budgets on the chain from seq up to its root: *len (over
 * KB_BUDGET_DEPTH_MAX when longer), *hit when `find` is on it. */
static enum kb_err chain_len(struct kb_store *s, int64_t seq, int64_t find, int *len, bool *hit)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, seq);
    pg_arg_i64(&a, find);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_CHAIN, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1) {
        *len = (int)pg__i64(r, 0, 0);
        const char *h = pg__text(r, 0, 1);
        *hit = h && h[0] == 't';
    } else if (err == KB_OK) {
        err = KB_E_STORE;
    }
    PQclear(r);
    return err;
}

/* ---- create, read, list ---- */

enum kb_err pg__budget_insert(struct kb_store *s, struct kb_budget *b, char **errmsg)
{
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    int64_t parent = 0, seq = 0;
    int len = 0;
    bool hit;
    if ((err = seq_of(s, b->name, &seq)) == KB_OK) {
        kb_set_errmsg(errmsg, "a budget named \"%s\" exists already", b->name);
        err = KB_E_EXISTS;
        goto out;
    }
    if (err != KB_E_NOT_FOUND)
        goto out;
    err = KB_OK;
    if (b->parent) {
        if ((err = chain_lock(s)) != KB_OK)
            goto out;
        if ((err = seq_of(s, b->parent, &parent)) != KB_OK) {
            if (err == KB_E_NOT_FOUND)
                kb_set_errmsg(errmsg, "no budget named \"%s\" (parent)", b->parent);
            goto out;
        }
        if ((err = chain_len(s, parent, 0, &len, &hit)) != KB_OK)
            goto out;
        if (len + 1 > KB_BUDGET_DEPTH_MAX) {
            kb_set_errmsg(errmsg, "a budget chain may hold at most %d budgets",
                          KB_BUDGET_DEPTH_MAX);
            err = KB_E_INVALID;
            goto out;
        }
    }
    struct pg_args a = {0};
    pg_arg_text(&a, b->name);
    pg_arg_i64(&a, b->cap);
    pg_arg_i64(&a, (int64_t)b->window);
    if (parent)
        pg_arg_i64(&a, parent);
    else
        pg_arg_text(&a, NULL);
    pg_arg_i64(&a, b->created_at);
    PGresult *r = pg__run(s, SQL_INSERT, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1) {
        b->seq = pg__i64(r, 0, 0);
    } else if (err == KB_OK) { /* another node took the name meanwhile */
        kb_set_errmsg(errmsg, "a budget named \"%s\" exists already", b->name);
        err = KB_E_EXISTS;
    } else if (err == KB_E_NOT_FOUND && b->parent) { /* the parent went meanwhile */
        kb_set_errmsg(errmsg, "no budget named \"%s\" (parent)", b->parent);
    }
    PQclear(r);
out:
    return pg__txn_end(s, own, err);
}

/* Reads row i of a BUDGET_COLS result into b. */
static void fill(const PGresult *r, int i, int64_t now, struct kb_budget *b)
{
    b->seq = pg__i64(r, i, 0);
    b->name = pg__strdup(r, i, 1);
    b->cap = pg__i64(r, i, 2);
    b->window = (enum kb_budget_window)pg__i64(r, i, 3);
    b->parent = pg__strdup(r, i, 4);
    b->created_at = pg__i64(r, i, 5);
    b->updated_at = pg__i64(r, i, 6);
    b->keys = pg__i64(r, i, 7);
    b->spent = pg__i64(r, i, 8);
    b->reserved = pg__i64(r, i, 9);
    b->requests = pg__i64(r, i, 10);
    b->nthresholds = store__thresholds_parse(pg__text(r, i, 11), b->thresholds);
    b->period = store_budget_period(b->window, now);
}

/* The day and month periods of `now`, the query's $2 and $3. */
static void period_args(struct pg_args *a, int64_t now)
{
    pg_arg_i64(a, store_budget_period(KB_WIN_DAY, now));
    pg_arg_i64(a, store_budget_period(KB_WIN_MONTH, now));
}

enum kb_err pg__budget_get(struct kb_store *s, const char *name, int64_t now,
                           struct kb_budget **out)
{
    struct pg_args a = {0};
    pg_arg_text(&a, name);
    period_args(&a, now);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_GET, &a, &err);
    if (err == KB_OK && PQntuples(r) < 1)
        err = KB_E_NOT_FOUND;
    if (err == KB_OK) {
        struct kb_budget *b = kb_calloc(1, sizeof *b);
        fill(r, 0, now, b);
        *out = b;
    }
    PQclear(r);
    return err;
}

enum kb_err pg__budget_list(struct kb_store *s, int64_t after_seq, int limit, int64_t now,
                            struct kb_budget **out, size_t *n)
{
    if (limit < 1 || limit > 1000)
        return KB_E_INVALID;
    struct pg_args a = {0};
    pg_arg_i64(&a, after_seq);
    period_args(&a, now);
    pg_arg_i64(&a, limit);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_LIST, &a, &err);
    if (err == KB_OK) {
        int rows = PQntuples(r);
        if (rows > limit)
            rows = limit;
        struct kb_budget *v = kb_calloc((size_t)limit, sizeof *v);
        for (int i = 0; i < rows; i++)
            fill(r, i, now, &v[i]);
        *out = v;
        *n = (size_t)rows;
    }
    PQclear(r);
    return err;
}

/* ---- update, delete ---- */

/* Whether budget seq may take `parent` (0: none) as its parent; the chain
 * lock is held. */
static enum kb_err parent_ok(struct kb_store *s, int64_t seq, int64_t parent, char **errmsg)
{
    if (!parent)
        return KB_OK;
    int above = 0;
    int64_t below = 0;
    bool cycle;
    enum kb_err err = chain_len(s, parent, seq, &above, &cycle);
    if (err == KB_OK && !cycle) {
        struct pg_args a = {0};
        pg_arg_i64(&a, seq);
        err = one_i64(s, SQL_HEIGHT, &a, &below);
    }
    if (err != KB_OK)
        return err;
    if (cycle) {
        kb_set_errmsg(errmsg, "that parent would make a cycle of budgets");
        return KB_E_INVALID;
    }
    if (above + below > KB_BUDGET_DEPTH_MAX) {
        kb_set_errmsg(errmsg, "a budget chain may hold at most %d budgets", KB_BUDGET_DEPTH_MAX);
        return KB_E_INVALID;
    }
    return KB_OK;
}

enum kb_err pg__budget_update(struct kb_store *s, const char *name,
                              const struct kb_budget_change *c, int64_t now, char **errmsg)
{
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    if (c->has_parent && (err = chain_lock(s)) != KB_OK) /* before the row's lock */
        goto out;
    struct pg_args a = {0};
    pg_arg_text(&a, name);
    PGresult *r = pg__run(s, SQL_ROW, &a, &err);
    if (err == KB_OK && PQntuples(r) < 1) {
        kb_set_errmsg(errmsg, "no budget named \"%s\"", name);
        err = KB_E_NOT_FOUND;
    }
    if (err != KB_OK) {
        PQclear(r);
        goto out;
    }
    int64_t seq = pg__i64(r, 0, 0), cap = pg__i64(r, 0, 1), win = pg__i64(r, 0, 2);
    int64_t parent = pg__i64(r, 0, 3); /* 0 for NULL: seqs start at 1 */
    PQclear(r);
    if (c->has_cap)
        cap = c->cap;
    if (c->has_window)
        win = (int64_t)c->window;
    if (c->has_parent) {
        parent = 0;
        if (c->parent && (err = seq_of(s, c->parent, &parent)) != KB_OK) {
            if (err == KB_E_NOT_FOUND) {
                kb_set_errmsg(errmsg, "no budget named \"%s\" (parent)", c->parent);
                err = KB_E_INVALID;
            }
            goto out;
        }
        if ((err = parent_ok(s, seq, parent, errmsg)) != KB_OK)
            goto out;
    }
    a = (struct pg_args){0};
    pg_arg_i64(&a, seq);
    pg_arg_i64(&a, cap);
    pg_arg_i64(&a, win);
    if (parent)
        pg_arg_i64(&a, parent);
    else
        pg_arg_text(&a, NULL);
    pg_arg_i64(&a, now);
    err = pg__do(s, SQL_UPDATE, &a);
    if (err == KB_E_NOT_FOUND) /* a foreign key: cannot happen under the chain lock */
        err = KB_E_INVALID;
out:
    return pg__txn_end(s, own, err);
}

enum kb_err pg__budget_delete(struct kb_store *s, const char *name, char **errmsg)
{
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    int64_t seq = 0;
    if ((err = chain_lock(s)) != KB_OK)
        goto out;
    struct pg_args a = {0};
    pg_arg_text(&a, name);
    /* the row's lock: a key being linked to it waits, then finds it gone */
    PGresult *r = pg__run(s, SQL_ROW, &a, &err);
    if (err == KB_OK && PQntuples(r) < 1)
        err = KB_E_NOT_FOUND;
    if (err == KB_OK)
        seq = pg__i64(r, 0, 0);
    PQclear(r);
    if (err != KB_OK)
        goto out;
    a = (struct pg_args){0};
    pg_arg_i64(&a, seq);
    r = pg__run(s, SQL_IN_USE, &a, &err);
    int64_t keys = err == KB_OK ? pg__i64(r, 0, 0) : 0;
    int64_t children = err == KB_OK ? pg__i64(r, 0, 1) : 0;
    PQclear(r);
    if (err != KB_OK)
        goto out;
    if (keys || children) {
        kb_set_errmsg(errmsg,
                      "budget \"%s\" is still named by %lld unrevoked key(s) and is the parent "
                      "of %lld budget(s)",
                      name, (long long)keys, (long long)children);
        err = KB_E_BUDGET_IN_USE;
        goto out;
    }
    err = pg__do(s, SQL_DELETE, &a);
out:
    return pg__txn_end(s, own, err);
}

/* ---- keys' budgets ---- */

enum kb_err pg__key_budget_add(struct kb_store *s, int64_t key_seq, const char *name)
{
    int64_t seq = 0;
    enum kb_err err = seq_of(s, name, &seq);
    if (err != KB_OK)
        return err;
    struct pg_args a = {0};
    pg_arg_i64(&a, key_seq);
    pg_arg_i64(&a, seq);
    return pg__do(s, SQL_LINK, &a); /* a budget deleted meanwhile: 23503, KB_E_NOT_FOUND */
}

enum kb_err pg__key_budgets(struct kb_store *s, int64_t key_seq, char ***names, size_t *n)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, key_seq);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_KEY_NAMES, &a, &err);
    if (err == KB_OK) {
        int rows = PQntuples(r);
        char **v = rows ? kb_calloc((size_t)rows, sizeof *v) : NULL;
        for (int i = 0; i < rows; i++)
            v[i] = pg__strdup(r, i, 0);
        *names = v;
        *n = (size_t)rows;
    }
    PQclear(r);
    return err;
}

/* ---- reservations ---- */

static enum kb_err give_back(struct kb_store *s, const struct kb_budget_hold *h, int64_t amount)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, h->seq);
    pg_arg_i64(&a, h->period);
    pg_arg_i64(&a, amount);
    pg_arg_text(&a, pg(s)->node);
    pg_arg_text(&a, pg(s)->boot);
    return pg__do(s, SQL_RELEASE, &a);
}

/*
 * rank[i]: row i's place in the order sqlite_budgets.c visits the chains
 * (breadth first: the key's budgets by seq, then each level's parents as
 * they are met), which decides the budget a refusal names when several
 * would refuse. Rows are by seq; there are at most a few dozen.
 */
static void refusal_ranks(const PGresult *chains, int rows, int *rank)
{
    int *order = kb_calloc((size_t)rows, sizeof *order), len = 0;
    for (int i = 0; i < rows; i++) {
        const char *link = pg__text(chains, i, 4);
        rank[i] = rows; /* unreached: cannot be, but last */
        if (link && link[0] == 't')
            order[len++] = i;
    }
    for (int k = 0; k < len; k++) {
        rank[order[k]] = k;
        if (pg__is_null(chains, order[k], 3))
            continue;
        int64_t parent = pg__i64(chains, order[k], 3);
        for (int j = 0; j < rows; j++) {
            if (pg__i64(chains, j, 0) != parent)
                continue;
            bool seen = false;
            for (int m = 0; m < len && !seen; m++)
                seen = order[m] == j;
            if (!seen)
                order[len++] = j;
            break;
        }
    }
    free(order);
}

/*
 * Keys known to name no budget, per connection: a key names its budgets in
 * the transaction that issues it and never gains one later (PATCH does not
 * change them; a deleted budget only drops links), so once its chains read
 * empty they stay empty, and the writer's admissions skip that round trip
 * for the common key (a set of key seqs; cleared whole when full).
 */
#define NOBUDGET_SLOTS 65536 /* a power of two */
struct nobudget {
    int64_t *slot; /* 0: empty */
    size_t n;
};

bool pg__nobudget_has(struct kb_store *s, int64_t seq)
{
    struct nobudget *nb = pg(s)->budget;
    if (!nb || seq <= 0)
        return false;
    for (size_t i = (size_t)seq * 0x9E3779B97F4A7C15u & (NOBUDGET_SLOTS - 1);;
         i = (i + 1) & (NOBUDGET_SLOTS - 1)) {
        if (nb->slot[i] == seq)
            return true;
        if (nb->slot[i] == 0)
            return false;
    }
}

static void nobudget_add(struct kb_store *s, int64_t seq)
{
    struct nobudget *nb = pg(s)->budget;
    if (seq <= 0)
        return;
    if (!nb) {
        nb = pg(s)->budget = kb_calloc(1, sizeof *nb);
        nb->slot = kb_calloc(NOBUDGET_SLOTS, sizeof *nb->slot);
    }
    if (nb->n >= NOBUDGET_SLOTS / 2) { /* half full: start again */
        memset(nb->slot, 0, NOBUDGET_SLOTS * sizeof *nb->slot);
        nb->n = 0;
    }
    size_t i = (size_t)seq * 0x9E3779B97F4A7C15u & (NOBUDGET_SLOTS - 1);
    while (nb->slot[i] != 0 && nb->slot[i] != seq)
        i = (i + 1) & (NOBUDGET_SLOTS - 1);
    if (nb->slot[i] == 0) {
        nb->slot[i] = seq;
        nb->n++;
    }
}

enum kb_err pg__budget_reserve(struct kb_store *s, int64_t key_seq, int64_t now, int64_t amount,
                               struct kb_budget_hold **holds, size_t *n, char **exhausted)
{
    if (pg__nobudget_has(s, key_seq)) {
        *holds = NULL;
        *n = 0;
        return KB_OK;
    }
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    struct kb_budget_hold *v = NULL;
    size_t held = 0;
    char *refused = NULL;
    struct pg_args a = {0};
    pg_arg_i64(&a, key_seq);
    PGresult *chains = pg__run(s, SQL_CHAINS, &a, &err);
    int rows = err == KB_OK ? PQntuples(chains) : 0, best = rows;
    if (err == KB_OK && rows == 0)
        nobudget_add(s, key_seq);
    int *rank = NULL;
    if (rows) {
        v = kb_calloc((size_t)rows, sizeof *v);
        rank = kb_calloc((size_t)rows, sizeof *rank);
        refusal_ranks(chains, rows, rank);
    }
    /*
     * By seq ascending: every transaction locks budget_spend rows in one
     * order, so two nodes reserving on the same budgets cannot deadlock.
     * After a refusal only the budgets SQLite would have tried before it
     * are still tried, so that the one named is SQLite's: the first to
     * refuse in its order (rank), not in seq order.
     */
    for (int i = 0; i < rows && err == KB_OK; i++) {
        if (rank[i] >= best)
            continue;
        int64_t seq = pg__i64(chains, i, 0);
        int64_t period = store_budget_period((enum kb_budget_window)pg__i64(chains, i, 1), now);
        a = (struct pg_args){0};
        pg_arg_i64(&a, seq);
        pg_arg_i64(&a, period);
        pg_arg_i64(&a, amount);
        pg_arg_text(&a, pg(s)->node);
        pg_arg_text(&a, pg(s)->boot);
        PGresult *r = pg__run(s, SQL_RESERVE, &a, &err);
        if (err == KB_OK && PQntuples(r) == 1) {
            if (pg__i64(r, 0, 0) == 0) {
                /* deleted since the walk: nothing to hold */
            } else if (pg__i64(r, 0, 1) == 0) {
                free(refused);
                refused = pg__strdup(chains, i, 2);
                best = rank[i];
            } else {
                v[held++] = (struct kb_budget_hold){.seq = seq, .period = period};
            }
        } else if (err == KB_OK) {
            err = KB_E_STORE;
        }
        PQclear(r);
    }
    free(rank);
    PQclear(chains);
    /* all or nothing: give back what this call took, in the same
     * transaction, so no other transaction ever saw it */
    for (size_t i = 0; err == KB_OK && refused && i < held; i++)
        err = give_back(s, &v[i], amount);
    err = pg__txn_end(s, own, err);
    if (err == KB_OK && refused) {
        free(v);
        if (exhausted)
            *exhausted = refused;
        else
            free(refused);
        return KB_E_BUDGET_EXHAUSTED;
    }
    free(refused);
    if (err != KB_OK) {
        free(v);
        return err;
    }
    *holds = v;
    *n = held;
    return KB_OK;
}

enum kb_err pg__budget_settle(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                              int64_t reserved, int64_t actual)
{
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    for (size_t i = 0; err == KB_OK && i < n; i++) { /* seq order, as reserved */
        struct pg_args a = {0};
        pg_arg_i64(&a, holds[i].seq);
        pg_arg_i64(&a, holds[i].period);
        pg_arg_i64(&a, reserved);
        pg_arg_i64(&a, actual);
        pg_arg_text(&a, pg(s)->node);
        pg_arg_text(&a, pg(s)->boot);
        PGresult *r = pg__run(s, SQL_SETTLE, &a, &err);
        int crossed[KB_ALERT_THRESHOLDS_MAX], nc = 0;
        if (err == KB_OK && PQntuples(r) == 1) /* no row: a budget deleted since */
            nc = store__alerts_crossed(pg__i64(r, 0, 0), pg__i64(r, 0, 2), pg__text(r, 0, 3),
                                       (int)pg__i64(r, 0, 1), crossed);
        if (nc > 0)
            err = pg__alerts_record_crossed(s, holds[i].seq, holds[i].period, pg__i64(r, 0, 0),
                                            pg__i64(r, 0, 2), crossed, nc);
        PQclear(r);
    }
    return pg__txn_end(s, own, err);
}

enum kb_err pg__budget_release(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                               int64_t amount)
{
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    for (size_t i = 0; err == KB_OK && i < n; i++)
        err = give_back(s, &holds[i], amount);
    return pg__txn_end(s, own, err);
}

void pg__budget_free(struct kb_store *s)
{
    struct nobudget *nb = pg(s)->budget;
    if (nb)
        free(nb->slot);
    free(nb);
    pg(s)->budget = NULL;
}
