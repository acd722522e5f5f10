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

enum stmt_id {
    S_KEY_INSERT = 0,    /* insert a key */
    S_KEY_BY_ID = 1,     /* key + usage by public id */
    S_KEY_BY_HASH = 2,   /* key + usage by token hash */
    S_KEY_REVOKE = 3,    /* revoke one */
    S_KEY_EXISTS = 4,    /* does id exist */
    S_REVOKE_PREFIX = 5, /* revoke by label prefix */
    S_SPEND_RESERVE = 6, /* create the day's row or charge it, if it fits */
    S_SPEND_SETTLE = 7,  /* settle */
    S_SPEND_GET = 8,     /* remaining after a change */
    S_ADMIN_COUNT = 9,   /* count admin tokens */
    S_ADMIN_ADD = 10,    /* add admin token */
    S_ADMIN_CHECK = 11,  /* look up admin token */
    S_PING = 12,         /* trivial query */
    S_KEY_REVOKED = 13,  /* revocation state by seq */
    S_RATE_ENSURE = 14,  /* create a full bucket */
    S_RATE_TAKE = 15,    /* refill and take one request */
    S_RATE_GET = 16,     /* units left after refill */
    S_KEY_ACTIVE = 17,   /* count of active keys */
    S_OBJ_GET = 18,      /* ledger: what a key was charged for an object */
    S_OBJ_SET = 19,      /* ledger: raise that figure */
    S__COUNT = 20,       /* number of statements */
};

#define KEY_COLS                                                                                   \
    "k.seq, k.id, k.label, k.vendor, k.allowed_endpoints, k.metadata, k.daily_cap_micros, "        \
    "k.created_at, k.expires_at, k.revoked_at, k.rate_requests, k.rate_period_ms, "                \
    "coalesce(s.spent_micros, 0), coalesce(s.reserved_micros, 0), coalesce(s.requests, 0), "       \
    "k.allowed_accounts "

static const char *const sql[S__COUNT] = {
    [S_KEY_INSERT] = "INSERT INTO keys (id, token_hash, label, vendor, allowed_endpoints, "
                     "daily_cap_micros, metadata, created_at, expires_at, rate_requests, "
                     "rate_period_ms, allowed_accounts) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [S_KEY_BY_ID] = "SELECT " KEY_COLS "FROM keys k LEFT JOIN spend s "
                    "ON s.key_seq = k.seq AND s.day = ?2 WHERE k.id = ?1",
    [S_KEY_BY_HASH] = "SELECT " KEY_COLS "FROM keys k LEFT JOIN spend s "
                      "ON s.key_seq = k.seq AND s.day = ?2 WHERE k.token_hash = ?1",
    [S_KEY_REVOKE] = "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL "
                     "RETURNING seq, token_hash",
    [S_KEY_EXISTS] = "SELECT 1 FROM keys WHERE id = ?1",
    [S_REVOKE_PREFIX] = "UPDATE keys SET revoked_at = ?2 WHERE revoked_at IS NULL "
                        "AND substr(label, 1, length(?1)) = ?1 RETURNING seq, token_hash",
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
    [S_ADMIN_ADD] = "INSERT OR IGNORE INTO admin_tokens (token_hash, label, created_at) "
                    "VALUES (?1, ?2, ?3)",
    [S_ADMIN_CHECK] = "SELECT token_hash FROM admin_tokens WHERE token_hash = ?1",
    [S_PING] = "SELECT 1",
    [S_KEY_ACTIVE] = "SELECT count(*) FROM keys WHERE revoked_at IS NULL AND expires_at > ?1",
    [S_KEY_REVOKED] = "SELECT revoked_at IS NOT NULL FROM keys WHERE seq = ?1",
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

static sqlite3_stmt *stmt(struct kb_store *s, enum stmt_id id)
{
    if (!sq(s)->stmts[id] && sqlite3_prepare_v3(sq(s)->db, sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                                &sq(s)->stmts[id], NULL) != SQLITE_OK)
        return NULL;
    return sq(s)->stmts[id];
}

static void done(sqlite3_stmt *st)
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
    sqlite3_stmt *st = stmt(s, S_PING);
    if (!st)
        return KB_E_STORE;
    int rc = sqlite3_step(st);
    done(st);
    return rc == SQLITE_ROW ? KB_OK : KB_E_STORE;
}

static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return kb_strdup(t ? (const char *)t : "");
}

static void row_to_key(sqlite3_stmt *st, struct kb_key *k, int64_t day)
{
    k->seq = sqlite3_column_int64(st, 0);
    const unsigned char *id = sqlite3_column_text(st, 1);
    snprintf(k->id, sizeof k->id, "%s", id ? (const char *)id : "");
    k->label = col_str(st, 2);
    k->vendor = col_str(st, 3);
    k->allowed_endpoints = col_str(st, 4);
    k->metadata = col_str(st, 5);
    k->daily_cap = sqlite3_column_int64(st, 6);
    k->created_at = sqlite3_column_int64(st, 7);
    k->expires_at = sqlite3_column_int64(st, 8);
    k->revoked_at = sqlite3_column_int64(st, 9);
    k->rate_requests = sqlite3_column_int64(st, 10);
    k->rate_period_ms = sqlite3_column_int64(st, 11);
    k->usage_day = day;
    k->spent = sqlite3_column_int64(st, 12);
    k->reserved = sqlite3_column_int64(st, 13);
    k->requests = sqlite3_column_int64(st, 14);
    const unsigned char *acc = sqlite3_column_text(st, 15);
    k->allowed_accounts = acc ? kb_strdup((const char *)acc) : NULL;
}

static enum kb_err sq_key_insert(struct kb_store *s, struct kb_key *k,
                                 const uint8_t hash[KB_HASH_LEN])
{
    sqlite3_stmt *st = stmt(s, S_KEY_INSERT);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, hash, KB_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, k->label, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, k->vendor, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, k->allowed_endpoints, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, k->daily_cap);
    sqlite3_bind_text(st, 7, k->metadata, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, k->created_at);
    sqlite3_bind_int64(st, 9, k->expires_at);
    sqlite3_bind_int64(st, 10, k->rate_requests);
    sqlite3_bind_int64(st, 11, k->rate_period_ms);
    if (k->allowed_accounts)
        sqlite3_bind_text(st, 12, k->allowed_accounts, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 12);
    int rc = sqlite3_step(st);
    int ext = sqlite3_extended_errcode(sq(s)->db);
    done(st);
    if (rc == SQLITE_CONSTRAINT)
        return ext == SQLITE_CONSTRAINT_UNIQUE ? KB_E_EXISTS : KB_E_INVALID;
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    k->seq = sqlite3_last_insert_rowid(sq(s)->db);
    return KB_OK;
}

static enum kb_err key_lookup(struct kb_store *s, enum stmt_id id, const void *arg, int arglen,
                              int64_t day, struct kb_key **out)
{
    sqlite3_stmt *st = stmt(s, id);
    if (!st)
        return KB_E_STORE;
    if (id == S_KEY_BY_HASH)
        sqlite3_bind_blob(st, 1, arg, arglen, SQLITE_STATIC);
    else
        sqlite3_bind_text(st, 1, arg, arglen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, day);
    int rc = sqlite3_step(st);
    enum kb_err err = KB_OK;
    if (rc == SQLITE_ROW) {
        struct kb_key *k = kb_calloc(1, sizeof *k);
        row_to_key(st, k, day);
        *out = k;
    } else {
        err = rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
    }
    done(st);
    return err;
}

static enum kb_err sq_key_get(struct kb_store *s, const char *id, int64_t day, struct kb_key **out)
{
    return key_lookup(s, S_KEY_BY_ID, id, -1, day, out);
}

static enum kb_err sq_key_by_hash(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], int64_t day,
                                  struct kb_key **out)
{
    return key_lookup(s, S_KEY_BY_HASH, hash, KB_HASH_LEN, day, out);
}

static enum kb_err sq_key_revoked(struct kb_store *s, int64_t seq, bool *revoked)
{
    sqlite3_stmt *st = stmt(s, S_KEY_REVOKED);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, seq);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *revoked = sqlite3_column_int(st, 0) != 0;
    done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

static enum kb_err sq_key_list(struct kb_store *s, const struct kb_key_filter *f,
                               struct kb_key **out, size_t *n)
{
    if (f->limit < 1 || f->limit > 1000)
        return KB_E_INVALID;
    /* Built per call: the filter combinations are few and this is not the
     * proxy path. Values are always bound, never spliced. */
    char q[1024];
    int len = snprintf(q, sizeof q,
                       "SELECT " KEY_COLS "FROM keys k LEFT JOIN spend s ON s.key_seq = k.seq "
                       "AND s.day = ?1 WHERE 1");
    if (f->label_prefix)
        len +=
            snprintf(q + len, sizeof q - (size_t)len, " AND substr(k.label, 1, length(?2)) = ?2");
    if (f->vendor)
        len += snprintf(q + len, sizeof q - (size_t)len, " AND k.vendor = ?3");
    if (f->before_seq > 0)
        len += snprintf(q + len, sizeof q - (size_t)len, " AND k.seq < ?4");
    if (f->status == KB_KEY_ACTIVE)
        len += snprintf(q + len, sizeof q - (size_t)len,
                        " AND k.revoked_at IS NULL AND k.expires_at > ?5");
    else if (f->status == KB_KEY_REVOKED)
        len += snprintf(q + len, sizeof q - (size_t)len, " AND k.revoked_at IS NOT NULL");
    else if (f->status == KB_KEY_EXPIRED)
        len += snprintf(q + len, sizeof q - (size_t)len,
                        " AND k.revoked_at IS NULL AND k.expires_at <= ?5");
    snprintf(q + len, sizeof q - (size_t)len, " ORDER BY k.seq DESC LIMIT ?6");

    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sq(s)->db, q, -1, &st, NULL) != SQLITE_OK)
        return KB_E_STORE;
    int64_t day = f->now / 86400;
    sqlite3_bind_int64(st, 1, day);
    if (f->label_prefix)
        sqlite3_bind_text(st, 2, f->label_prefix, -1, SQLITE_STATIC);
    if (f->vendor)
        sqlite3_bind_text(st, 3, f->vendor, -1, SQLITE_STATIC);
    if (f->before_seq > 0)
        sqlite3_bind_int64(st, 4, f->before_seq);
    if (f->status == KB_KEY_ACTIVE || f->status == KB_KEY_EXPIRED)
        sqlite3_bind_int64(st, 5, f->now);
    sqlite3_bind_int(st, 6, f->limit);

    struct kb_key *keys = kb_calloc((size_t)f->limit, sizeof *keys);
    size_t count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && count < (size_t)f->limit)
        row_to_key(st, &keys[count++], day);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        store_key_list_free(keys, count);
        return KB_E_STORE;
    }
    *out = keys;
    *n = count;
    return KB_OK;
}

static enum kb_err sq_key_count_active(struct kb_store *s, int64_t now, int64_t *count)
{
    sqlite3_stmt *st = stmt(s, S_KEY_ACTIVE);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, now);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    done(st);
    return rc == SQLITE_ROW ? KB_OK : KB_E_STORE;
}

/* A RETURNING seq, token_hash row. */
static void revoked_row(sqlite3_stmt *st, struct kb_revoked_key *k)
{
    k->seq = sqlite3_column_int64(st, 0);
    memset(k->hash, 0, KB_HASH_LEN);
    if (sqlite3_column_bytes(st, 1) == KB_HASH_LEN)
        memcpy(k->hash, sqlite3_column_blob(st, 1), KB_HASH_LEN);
}

static enum kb_err sq_key_revoke(struct kb_store *s, const char *id, int64_t now,
                                 struct kb_revoked_key *out)
{
    sqlite3_stmt *st = stmt(s, S_KEY_REVOKE);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    struct kb_revoked_key k = {0};
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        revoked_row(st, &k);
        rc = sqlite3_step(st);
    }
    done(st);
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    if (out)
        *out = k;
    if (k.seq)
        return KB_OK;
    /* nothing changed: either already revoked (fine) or unknown */
    st = stmt(s, S_KEY_EXISTS);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

static enum kb_err sq_key_revoke_prefix(struct kb_store *s, const char *prefix, int64_t now,
                                        int64_t *count, struct kb_revoked_key **keys)
{
    if (!prefix || !*prefix)
        return KB_E_INVALID; /* an empty prefix would revoke every key */
    sqlite3_stmt *st = stmt(s, S_REVOKE_PREFIX);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    struct kb_revoked_key *list = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (keys && n == cap) {
            cap = cap ? cap * 2 : 16;
            list = kb_realloc(list, cap * sizeof *list);
        }
        if (keys)
            revoked_row(st, &list[n]);
        n++;
    }
    done(st);
    if (rc != SQLITE_DONE) {
        free(list);
        return KB_E_STORE;
    }
    *count = (int64_t)n;
    if (keys)
        *keys = list;
    return KB_OK;
}

static enum kb_err step_done(struct kb_store *s, enum stmt_id id, int64_t a, int64_t b, int64_t c,
                             int64_t d, int nargs)
{
    sqlite3_stmt *st = stmt(s, id);
    if (!st)
        return KB_E_STORE;
    int64_t args[4] = {a, b, c, d};
    for (int i = 0; i < nargs; i++)
        sqlite3_bind_int64(st, i + 1, args[i]);
    int rc = sqlite3_step(st);
    done(st);
    return rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

static enum kb_err used(struct kb_store *s, int64_t seq, int64_t day, int64_t *out)
{
    sqlite3_stmt *st = stmt(s, S_SPEND_GET);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_int64(st, 2, day);
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    done(st);
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
    sqlite3_stmt *st = stmt(s, id);
    if (!st)
        return KB_E_STORE;
    for (int i = 0; i < 5; i++)
        sqlite3_bind_int64(st, i + 1, args[i]);
    int rc = sqlite3_step(st);
    if (value)
        *value = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    done(st);
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
    sqlite3_stmt *st = stmt(s, S_ADMIN_COUNT);
    if (!st)
        return KB_E_STORE;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    done(st);
    return rc == SQLITE_ROW ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_admin_token_add(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                      const char *label, int64_t now)
{
    sqlite3_stmt *st = stmt(s, S_ADMIN_ADD);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_blob(st, 1, hash, KB_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    int rc = sqlite3_step(st);
    done(st);
    return rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_admin_token_check(struct kb_store *s, const uint8_t hash[KB_HASH_LEN])
{
    sqlite3_stmt *st = stmt(s, S_ADMIN_CHECK);
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
    done(st);
    return err;
}

static enum kb_err sq_object_charged(struct kb_store *s, int64_t key_seq, const char *object_id,
                                     int64_t not_before, int64_t *micros)
{
    if (!object_id || !micros)
        return KB_E_INVALID;
    sqlite3_stmt *st = stmt(s, S_OBJ_GET);
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
    done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

static enum kb_err sq_object_charge_set(struct kb_store *s, int64_t key_seq, const char *object_id,
                                        int64_t micros, int64_t now, int64_t not_before)
{
    if (!object_id || micros < 0)
        return KB_E_INVALID;
    sqlite3_stmt *st = stmt(s, S_OBJ_SET);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, key_seq);
    sqlite3_bind_text(st, 2, object_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, micros);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_int64(st, 5, not_before);
    int rc = sqlite3_step(st);
    done(st);
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
    .key_insert = sq_key_insert,
    .key_get = sq_key_get,
    .key_by_hash = sq_key_by_hash,
    .key_revoked = sq_key_revoked,
    .key_list = sq_key_list,
    .key_count_active = sq_key_count_active,
    .key_revoke = sq_key_revoke,
    .key_revoke_prefix = sq_key_revoke_prefix,
    .spend_reserve = sq_spend_reserve,
    .spend_settle = sq_spend_settle,
    .rate_take = sq_rate_take,
    .spend_settle_orphans = sq_spend_settle_orphans,
    .txn_run = sq_txn_run,
    .admin_token_count = sq_admin_token_count,
    .admin_token_add = sq_admin_token_add,
    .admin_token_check = sq_admin_token_check,
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
    .audit_last = sqlite__audit_last,
    .audit_last_ckpt = sqlite__audit_last_ckpt,
    .audit_exists = sqlite__audit_exists,
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
