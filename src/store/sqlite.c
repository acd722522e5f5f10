/*
 * sqlite.c - the embedded store (see store.h) on SQLite 3 in WAL mode.
 *
 * One connection per thread; statements are prepared once per connection
 * and reset after each use. Writers serialise on SQLite's write lock with a
 * busy timeout; every spend change is a single conditional UPDATE, so the
 * cap check and the change are one atomic step.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/audit_store.h"
#include "store/sqlite_int.h"
#include "store/backend.h"
#include "store/store.h"

extern const char *const kb_schema_migrations[];
extern const int kb_schema_count;

static const char *const sql[S__COUNT] = {
    [S_KEY_INSERT] = "INSERT INTO keys (id, token_hash, label, vendor, allowed_endpoints, "
                     "daily_cap_micros, metadata, created_at, expires_at, rate_requests, "
                     "rate_period_ms, allowed_accounts, allowed_models, max_amount_micros, "
                     "tenant_id) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    [S_KEY_BY_ID] = "SELECT " KEY_COLS "FROM keys k LEFT JOIN spend s "
                    "ON s.key_seq = k.seq AND s.day = ?2 WHERE k.id = ?1",
    [S_KEY_BY_HASH] = "SELECT " KEY_COLS "FROM keys k LEFT JOIN spend s "
                      "ON s.key_seq = k.seq AND s.day = ?2 WHERE k.token_hash = ?1",
    [S_KEY_REVOKE] = "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL "
                     "RETURNING seq, token_hash",
    [S_KEY_EXISTS] = "SELECT 1 FROM keys WHERE id = ?1",
    [S_REVOKE_PREFIX] = "UPDATE keys SET revoked_at = ?2 WHERE revoked_at IS NULL "
                        "AND substr(label, 1, length(?1)) = ?1 "
                        "AND (?3 IS NULL OR tenant_id = ?3) RETURNING seq, token_hash, tenant_id",
    /* one statement, not an INSERT OR IGNORE then an UPDATE: a row only
     * when it fits. (Not RETURNING the day's use: SQLite builds an ephemeral
     * table for it on every run, and the writer's malloc arena then gave the
     * memory back with madvise each time: 2x the CPU per proxied request.) */
    [S_SPEND_RESERVE] = "INSERT INTO spend (key_seq, day, reserved_micros, requests) "
                        "SELECT ?1, ?2, ?3, 1 WHERE ?3 <= ?4 "
                        "ON CONFLICT (key_seq, day) DO UPDATE SET "
                        "reserved_micros = reserved_micros + ?3, requests = requests + 1 "
                        "WHERE spent_micros + reserved_micros + ?3 <= ?4",
    [S_SPEND_SETTLE] = "UPDATE spend SET reserved_micros = max(reserved_micros - ?3, 0), "
                       "spent_micros = spent_micros + ?4 WHERE key_seq = ?1 AND day = ?2",
    [S_SPEND_GET] = "SELECT spent_micros + reserved_micros FROM spend "
                    "WHERE key_seq = ?1 AND day = ?2",
    [S_ADMIN_COUNT] = "SELECT count(*) FROM admin_tokens",
    [S_ADMIN_ADD] = "INSERT OR IGNORE INTO admin_tokens (token_hash, label, created_at, public_id) "
                    "VALUES (?1, ?2, ?3, 'at_' || lower(hex(randomblob(12))))",
    [S_ADMIN_CHECK] = "SELECT token_hash FROM admin_tokens WHERE token_hash = ?1 "
                      "AND revoked_at IS NULL",
    [S_PING] = "SELECT 1",
    [S_KEY_ACTIVE] = "SELECT count(*) FROM keys WHERE revoked_at IS NULL AND expires_at > ?1",
    [S_KEY_REVOKED] = "SELECT revoked_at IS NOT NULL FROM keys WHERE seq = ?1",
    /* only an active key changes: the WHERE is the check, so a revocation
     * or an expiry cannot slip in between a read and this write */
    [S_KEY_UPDATE] = "UPDATE keys SET "
                     "daily_cap_micros = CASE WHEN ?3 THEN ?4 ELSE daily_cap_micros END, "
                     "expires_at = CASE WHEN ?5 THEN ?6 ELSE expires_at END "
                     "WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?2 "
                     "RETURNING seq, token_hash",
    [S_KEY_STATE] = "SELECT revoked_at IS NOT NULL, daily_cap_micros, expires_at FROM keys "
                    "WHERE seq = ?1",
    /* ?2 capacity units, ?3 refill units per ms, ?4 now, ?5 units per request */
    [S_RATE_ENSURE] = "INSERT OR IGNORE INTO rate_buckets (key_seq, units, ts_ms) "
                      "VALUES (?1, ?2, ?4)",
    [S_RATE_TAKE] =
        "UPDATE rate_buckets SET units = min(?2, units + max(?4 - ts_ms, 0) * ?3) - ?5, "
        "ts_ms = max(?4, ts_ms) WHERE key_seq = ?1 "
        "AND min(?2, units + max(?4 - ts_ms, 0) * ?3) >= ?5",
    [S_RATE_GET] = "SELECT min(?2, units + max(?4 - ts_ms, 0) * ?3) FROM rate_buckets "
                   "WHERE key_seq = ?1",
    [S_OBJ_GET] = "SELECT micros FROM object_charges WHERE key_seq = ?1 AND object_id = ?2 "
                  "AND updated_at >= ?3",
    /* never lowered: two requests racing on one object can only over-count;
     * an expired entry (updated_at < ?5) starts again from this figure */
    [S_OBJ_SET] = "INSERT INTO object_charges (key_seq, object_id, micros, updated_at) "
                  "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key_seq, object_id) DO UPDATE SET "
                  "micros = CASE WHEN updated_at < ?5 THEN excluded.micros "
                  "ELSE max(micros, excluded.micros) END, updated_at = excluded.updated_at",
};

/* A connection: the base every backend's starts with, then SQLite's. */
struct sq {
    struct kb_store base;
    sqlite3 *db;                              /* owned */
    sqlite3_stmt *stmts[S__COUNT];            /* owned; prepared lazily */
    sqlite3_stmt *tx[6];                      /* owned; transaction statements, prepared once */
    struct store_audit_state audit;           /* sqlite_audit.c's */
    sqlite3_stmt *budget[KB_SQ_BUDGET_STMTS]; /* sqlite_budgets.c's; owned */
};

static struct sq *sq(struct kb_store *s)
{
    return (struct sq *)s;
}

static void sq_close(struct kb_store *s);

sqlite3_stmt *sqlite__stmt(struct kb_store *s, enum stmt_id id)
{
    if (!sq(s)->stmts[id] && sqlite3_prepare_v3(sq(s)->db, sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                                &sq(s)->stmts[id], NULL) != SQLITE_OK)
        return NULL;
    return sq(s)->stmts[id];
}

void sqlite__done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static enum kb_err exec(struct kb_store *s, const char *q, char **errmsg)
{
    char *e = NULL;
    if (sqlite3_exec(sq(s)->db, q, NULL, NULL, &e) != SQLITE_OK) {
        kb_set_errmsg(errmsg, "%s", e ? e : sqlite3_errmsg(sq(s)->db));
        sqlite3_free(e);
        return KB_E_STORE;
    }
    return KB_OK;
}

/* Opens a write transaction unless the caller (the group-commit writer)
 * already holds one; *own says whether txn_end must commit it. */
static enum kb_err txn_begin(struct kb_store *s, bool *own)
{
    *own = sqlite3_get_autocommit(sq(s)->db) != 0;
    return *own ? exec(s, "BEGIN IMMEDIATE", NULL) : KB_OK;
}

static enum kb_err txn_end(struct kb_store *s, bool own, enum kb_err err)
{
    if (!own)
        return err;
    if (err == KB_OK && (err = exec(s, "COMMIT", NULL)) == KB_OK)
        return KB_OK;
    (void)exec(s, "ROLLBACK", NULL);
    return err;
}

static enum kb_err migrate(struct kb_store *s, char **errmsg)
{
    enum kb_err err;
    if ((err = exec(s, "BEGIN IMMEDIATE", errmsg)) != KB_OK)
        return err;
    if ((err = exec(s,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                    errmsg)) != KB_OK)
        goto fail;
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(sq(s)->db, "SELECT coalesce(max(version), 0) FROM schema_migrations", -1,
                           &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > kb_schema_count) {
        kb_set_errmsg(errmsg, "the store's schema version %d is newer than this binary's (%d)",
                      version, kb_schema_count);
        err = KB_E_STORE;
        goto fail;
    }
    for (int v = version; v < kb_schema_count; v++) {
        if ((err = exec(s, kb_schema_migrations[v], errmsg)) != KB_OK)
            goto fail;
        char q[128];
        snprintf(
            q, sizeof q,
            "INSERT INTO schema_migrations VALUES (%d, CAST(strftime('%%s','now') AS INTEGER))",
            v + 1);
        if ((err = exec(s, q, errmsg)) != KB_OK)
            goto fail;
    }
    return exec(s, "COMMIT", errmsg);
fail:
    (void)exec(s, "ROLLBACK", NULL);
    return err;
}

static enum kb_err sq_open(const char *path, const char *synchronous, bool check,
                           struct kb_store **out, char **errmsg)
{
    enum kb_err err = KB_OK;
    struct sq *conn = kb_calloc(1, sizeof *conn);
    conn->base.be = &kb_store_sqlite;
    struct kb_store *s = &conn->base;
    if (sqlite3_open_v2(path, &sq(s)->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        kb_set_errmsg(errmsg, "cannot open %s: %s", path,
                      sq(s)->db ? sqlite3_errmsg(sq(s)->db) : "out of memory");
        err = KB_E_STORE;
        goto out;
    }
    sqlite3_busy_timeout(sq(s)->db, 5000);
    char q[128];
    snprintf(q, sizeof q, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON",
             strcmp(synchronous, "full") == 0 ? "FULL" : "NORMAL");
    if ((err = exec(s, q, errmsg)) != KB_OK)
        goto out;
    if (check) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(sq(s)->db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW ||
            strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) {
            kb_set_errmsg(errmsg, "integrity check of %s failed: %s", path,
                          st && sqlite3_column_text(st, 0)
                              ? (const char *)sqlite3_column_text(st, 0)
                              : sqlite3_errmsg(sq(s)->db));
            sqlite3_finalize(st);
            err = KB_E_STORE;
            goto out;
        }
        sqlite3_finalize(st);
    }
    if ((err = migrate(s, errmsg)) != KB_OK)
        goto out;
out:
    if (err != KB_OK) {
        sq_close(s);
        return err;
    }
    *out = s;
    return KB_OK;
}

sqlite3 *store__db(struct kb_store *s)
{
    return sq(s)->db;
}

struct store_audit_state *store__audit(struct kb_store *s)
{
    return &sq(s)->audit;
}

sqlite3_stmt **store__budget_stmts(struct kb_store *s)
{
    return sq(s)->budget;
}

static void sq_close(struct kb_store *s)
{
    if (!s)
        return;
    /* every statement still prepared on the connection, ours or the audit
     * store's (sqlite_audit.c caches its own): close fails while any lives */
    sqlite3_stmt *st;
    while (sq(s)->db && (st = sqlite3_next_stmt(sq(s)->db, NULL)) != NULL)
        sqlite3_finalize(st);
    sqlite3_close(sq(s)->db);
    free(s);
}

static enum kb_err sq_ping(struct kb_store *s)
{
    sqlite3_stmt *st = sqlite__stmt(s, S_PING);
    if (!st)
        return KB_E_STORE;
    int rc = sqlite3_step(st);
    sqlite__done(st);
    return rc == SQLITE_ROW ? KB_OK : KB_E_STORE;
}

static enum kb_err step_done(struct kb_store *s, enum stmt_id id, int64_t a, int64_t b, int64_t c,
                             int64_t d, int nargs)
{
    sqlite3_stmt *st = sqlite__stmt(s, id);
    if (!st)
        return KB_E_STORE;
    int64_t args[4] = {a, b, c, d};
    for (int i = 0; i < nargs; i++)
        sqlite3_bind_int64(st, i + 1, args[i]);
    int rc = sqlite3_step(st);
    sqlite__done(st);
    return rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

static enum kb_err used(struct kb_store *s, int64_t seq, int64_t day, int64_t *out)
{
    sqlite3_stmt *st = sqlite__stmt(s, S_SPEND_GET);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_int64(st, 2, day);
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite__done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_spend_reserve(struct kb_store *s, int64_t seq, int64_t day, int64_t amount,
                                    int64_t cap, int64_t *remaining)
{
    /* One transaction: the charge and the remaining amount, with no other
     * writer in between. */
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    bool fits = false;
    int64_t u = 0;
    if ((err = step_done(s, S_SPEND_RESERVE, seq, day, amount, cap, 4)) == KB_OK) {
        fits = sqlite3_changes(sq(s)->db) > 0;
        if (remaining)
            err = used(s, seq, day, &u);
    }
    if ((err = txn_end(s, own, err)) != KB_OK)
        return err;
    if (remaining)
        *remaining = cap - u > 0 ? cap - u : 0;
    return fits ? KB_OK : KB_E_CAP_EXHAUSTED;
}

static enum kb_err sq_spend_settle(struct kb_store *s, int64_t seq, int64_t day, int64_t reserved,
                                   int64_t actual, int64_t cap, int64_t *remaining)
{
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    int64_t u = 0;
    if ((err = step_done(s, S_SPEND_SETTLE, seq, day, reserved, actual, 4)) == KB_OK && remaining)
        err = used(s, seq, day, &u);
    if ((err = txn_end(s, own, err)) != KB_OK)
        return err;
    if (remaining)
        *remaining = cap - u > 0 ? cap - u : 0;
    return KB_OK;
}

static enum kb_err rate_step(struct kb_store *s, enum stmt_id id, const int64_t args[5],
                             int64_t *value)
{
    sqlite3_stmt *st = sqlite__stmt(s, id);
    if (!st)
        return KB_E_STORE;
    for (int i = 0; i < 5; i++)
        sqlite3_bind_int64(st, i + 1, args[i]);
    int rc = sqlite3_step(st);
    if (value)
        *value = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite__done(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_rate_take(struct kb_store *s, int64_t seq, int64_t requests,
                                int64_t period_ms, int64_t now_ms, int64_t *retry_after_ms)
{
    /* integer units: a request costs period_ms, refill is `requests` per ms */
    const int64_t args[5] = {seq, requests * period_ms, requests, now_ms, period_ms};
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    bool took = false;
    int64_t units = 0;
    if ((err = rate_step(s, S_RATE_ENSURE, args, NULL)) == KB_OK &&
        (err = rate_step(s, S_RATE_TAKE, args, NULL)) == KB_OK) {
        took = sqlite3_changes(sq(s)->db) > 0;
        if (!took)
            err = rate_step(s, S_RATE_GET, args, &units);
    }
    if ((err = txn_end(s, own, err)) != KB_OK)
        return err;
    if (took)
        return KB_OK;
    if (retry_after_ms)
        *retry_after_ms = (period_ms - units + requests - 1) / requests;
    return KB_E_RATE_LIMITED;
}

static enum kb_err sq_spend_settle_orphans(struct kb_store *s, int64_t *count)
{
    /* the keys' and the budgets' reservations in one transaction: a crash
     * between the two must not settle one side twice */
    bool own;
    int64_t n = 0;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    err = exec(s,
               "UPDATE spend SET spent_micros = spent_micros + reserved_micros, "
               "reserved_micros = 0 WHERE reserved_micros > 0",
               NULL);
    if (err == KB_OK) {
        n = sqlite3_changes64(sq(s)->db);
        err = sqlite__budget_settle_orphans(s, &n);
    }
    if ((err = txn_end(s, own, err)) == KB_OK)
        *count = n;
    return err;
}

static enum kb_err sq_txn_run(struct kb_store *s, kb_txn_fn fn, void *arg)
{
    if (exec(s, "BEGIN IMMEDIATE", NULL) != KB_OK)
        return KB_E_AUDIT_UNAVAILABLE;
    enum kb_err err = fn(s, arg);
    if (err == KB_OK) {
        if (exec(s, "COMMIT", NULL) == KB_OK)
            return KB_OK;
        err = KB_E_AUDIT_UNAVAILABLE;
    }
    (void)exec(s, "ROLLBACK", NULL);
    store_audit_head_drop(s); /* fn may have appended */
    return err;
}

static enum kb_err sq_admin_token_count(struct kb_store *s, int64_t *count)
{
    sqlite3_stmt *st = sqlite__stmt(s, S_ADMIN_COUNT);
    if (!st)
        return KB_E_STORE;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    sqlite__done(st);
    return rc == SQLITE_ROW ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_admin_token_add(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                      const char *label, int64_t now)
{
    sqlite3_stmt *st = sqlite__stmt(s, S_ADMIN_ADD);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_blob(st, 1, hash, KB_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    int rc = sqlite3_step(st);
    sqlite__done(st);
    return rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_admin_token_check(struct kb_store *s, const uint8_t hash[KB_HASH_LEN])
{
    sqlite3_stmt *st = sqlite__stmt(s, S_ADMIN_CHECK);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_blob(st, 1, hash, KB_HASH_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    enum kb_err err = KB_E_NOT_FOUND;
    if (rc == SQLITE_ROW) {
        /* the index found it; compare in constant time all the same */
        const void *h = sqlite3_column_blob(st, 0);
        if (h && sqlite3_column_bytes(st, 0) == KB_HASH_LEN && crypto_equal(h, hash, KB_HASH_LEN))
            err = KB_OK;
    } else if (rc != SQLITE_DONE) {
        err = KB_E_STORE;
    }
    sqlite__done(st);
    return err;
}

static enum kb_err sq_object_charged(struct kb_store *s, int64_t key_seq, const char *object_id,
                                     int64_t not_before, int64_t *micros)
{
    if (!object_id || !micros)
        return KB_E_INVALID;
    sqlite3_stmt *st = sqlite__stmt(s, S_OBJ_GET);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, key_seq);
    sqlite3_bind_text(st, 2, object_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, not_before);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *micros = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        *micros = -1;
    sqlite__done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_object_charge_set(struct kb_store *s, int64_t key_seq, const char *object_id,
                                        int64_t micros, int64_t now, int64_t not_before)
{
    if (!object_id || micros < 0)
        return KB_E_INVALID;
    sqlite3_stmt *st = sqlite__stmt(s, S_OBJ_SET);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, key_seq);
    sqlite3_bind_text(st, 2, object_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, micros);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_int64(st, 5, not_before);
    int rc = sqlite3_step(st);
    sqlite__done(st);
    return rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

/* ---- explicit transactions (the store writer's group commit) ---- */

enum tx_stmt { TX_BEGIN, TX_SAVEPOINT, TX_ROLLBACK_TO, TX_RELEASE, TX_COMMIT, TX_ROLLBACK };
static const char *const tx_sql[6] = {"BEGIN IMMEDIATE", "SAVEPOINT j", "ROLLBACK TO j",
                                      "RELEASE j",       "COMMIT",      "ROLLBACK"};

/* Runs one transaction statement, prepared once per connection (the
 * profile showed sqlite3_exec re-parsing them for every job). */
static enum kb_err tx(struct kb_store *s, enum tx_stmt which)
{
    struct sq *c = sq(s);
    if (!c->tx[which] && sqlite3_prepare_v3(c->db, tx_sql[which], -1, SQLITE_PREPARE_PERSISTENT,
                                            &c->tx[which], NULL) != SQLITE_OK)
        return sqlite3_exec(c->db, tx_sql[which], NULL, NULL, NULL) == SQLITE_OK ? KB_OK
                                                                                 : KB_E_STORE;
    int rc = sqlite3_step(c->tx[which]);
    sqlite3_reset(c->tx[which]);
    return rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_begin(struct kb_store *s)
{
    return tx(s, TX_BEGIN);
}

static enum kb_err sq_commit(struct kb_store *s)
{
    return tx(s, TX_COMMIT);
}

/* A rollback SQLite already did (after an I/O error) is not an error. */
static void sq_rollback(struct kb_store *s)
{
    if (!sqlite3_get_autocommit(sq(s)->db))
        (void)tx(s, TX_ROLLBACK);
}

static enum kb_err sq_savepoint(struct kb_store *s)
{
    return tx(s, TX_SAVEPOINT);
}

static enum kb_err sq_release(struct kb_store *s)
{
    return tx(s, TX_RELEASE);
}

static enum kb_err sq_rollback_to(struct kb_store *s)
{
    enum kb_err err = tx(s, TX_ROLLBACK_TO);
    return err == KB_OK ? tx(s, TX_RELEASE) : err; /* ROLLBACK TO keeps the savepoint open */
}

static bool sq_in_transaction(struct kb_store *s)
{
    return !sqlite3_get_autocommit(sq(s)->db);
}

static const char *sq_last_error(struct kb_store *s)
{
    return sqlite3_errstr(sqlite3_extended_errcode(sq(s)->db));
}

/* The smallest write that reaches the disk. Rewriting user_version
 * (unused by the schema, which keeps its own table) with its own value
 * changes nothing, yet appends a WAL frame and syncs like any commit, so
 * it fails where a full disk or an I/O error fails requests. An UPDATE to
 * the same value would not do: SQLite skips writing it. */
static enum kb_err sq_probe_write(struct kb_store *s)
{
    sqlite3_stmt *st = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(sq(s)->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    char q[48];
    snprintf(q, sizeof q, "PRAGMA user_version = %d", version);
    return version >= 0 && sqlite3_exec(sq(s)->db, q, NULL, NULL, NULL) == SQLITE_OK ? KB_OK
                                                                                     : KB_E_STORE;
}

/* One process per file: the data dir's lock (cli/setup.c) keeps others
 * out, so a start may settle every open reservation as its own. */
const struct kb_store_backend kb_store_sqlite = {
    .name = "sqlite",
    .caps = KB_STORE_LOCAL_READS,
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .savepoint = sq_savepoint,
    .release = sq_release,
    .rollback_to = sq_rollback_to,
    .in_transaction = sq_in_transaction,
    .last_error = sq_last_error,
    .probe_write = sq_probe_write,
    .writer_attach = sqlite__wal_attach,
    .writer_idle = sqlite__wal_idle,
    .writer_detach = sqlite__wal_detach,
    .writer_resident = sqlite__wal_resident,
    .ping = sq_ping,
    .key_insert = sqlite__key_insert,
    .key_get = sqlite__key_get,
    .key_by_hash = sqlite__key_by_hash,
    .key_revoked = sqlite__key_revoked,
    .key_state = sqlite__key_state,
    .key_update = sqlite__key_update,
    .key_list = sqlite__key_list,
    .key_count_active = sqlite__key_count_active,
    .key_revoke = sqlite__key_revoke,
    .key_revoke_prefix = sqlite__key_revoke_prefix,
    .spend_reserve = sq_spend_reserve,
    .spend_settle = sq_spend_settle,
    .rate_take = sq_rate_take,
    .spend_settle_orphans = sq_spend_settle_orphans,
    .txn_run = sq_txn_run,
    .admin_token_count = sq_admin_token_count,
    .admin_token_add = sq_admin_token_add,
    .admin_token_check = sq_admin_token_check,
    .tenant_insert = sqlite__tenant_insert,
    .tenant_get = sqlite__tenant_get,
    .tenant_list = sqlite__tenant_list,
    .tenant_delete = sqlite__tenant_delete,
    .admin_token_insert = sqlite__admin_token_insert,
    .admin_token_lookup = sqlite__admin_token_lookup,
    .admin_token_list = sqlite__admin_token_list,
    .admin_token_revoke = sqlite__admin_token_revoke,
    .secret_put = sqlite__secret_put,
    .secret_get = sqlite__secret_get,
    .secret_delete = sqlite__secret_delete,
    .secret_list = sqlite__secret_list,
    .object_charged = sq_object_charged,
    .object_charge_set = sq_object_charge_set,
    .budget_insert = sqlite__budget_insert,
    .budget_get = sqlite__budget_get,
    .budget_list = sqlite__budget_list,
    .budget_update = sqlite__budget_update,
    .budget_delete = sqlite__budget_delete,
    .key_budget_add = sqlite__key_budget_add,
    .key_budgets = sqlite__key_budgets,
    .budget_reserve = sqlite__budget_reserve,
    .budget_settle = sqlite__budget_settle,
    .budget_release = sqlite__budget_release,
    .usage = sqlite__usage,
    .budget_alerts_set = sqlite__budget_alerts_set,
    .alert_claim = sqlite__alert_claim,
    .alert_record = sqlite__alert_record,
    .alert_list = sqlite__alert_list,
    .audit_last = sqlite__audit_last,
    .audit_last_ckpt = sqlite__audit_last_ckpt,
    .audit_exists = sqlite__audit_exists,
    .audit_completed = sqlite__audit_completed,
    .audit_insert = sqlite__audit_insert,
    .audit_ckpt_insert = sqlite__audit_ckpt_insert,
    .audit_cut_find = sqlite__audit_cut_find,
    .audit_prune = sqlite__audit_prune,
    .audit_forget = sqlite__audit_forget,
    .audit_head_sync = sqlite__audit_head_sync,
    .audit_head_drop = sqlite__audit_head_drop,
    .audit_read_begin = sqlite__audit_read_begin,
    .audit_read_end = sqlite__audit_read_end,
    .audit_rows = sqlite__audit_rows,
    .audit_ckpts = sqlite__audit_ckpts,
    .audit_row_next = sqlite__audit_row_next,
    .audit_ckpt_next = sqlite__audit_ckpt_next,
    .audit_iter_free = sqlite__audit_iter_free,
    .audit_query = sqlite__audit_query,
};
