/*
 * pg_keys.c - the PostgreSQL backend's keys, spend, rate limits, admin
 * tokens and object ledger (see store.h; sqlite.c and sqlite_keys.c are
 * the reference for every return code).
 *
 * Each operation is one statement where it can be, so that it is atomic
 * in autocommit and costs one round trip inside the writer's group
 * commit. Two things SQLite does not need:
 *  - every change of spend.reserved_micros is mirrored in
 *    node_reservations, keyed by this process's node and start, so that
 *    whoever finds the node dead settles exactly what it held (see
 *    pg_cluster.c). A settle that finds no mirrored row was settled at its
 *    worst case already: it only adds what the request cost beyond that.
 *    Rows that reach 0 are kept (deleting them in the same statement could
 *    miss a concurrent change); the node's heartbeat deletes them.
 *  - revocations and changes append to key_changes and NOTIFY
 *    keybrake_keys in the same statement (delivered at commit), after an
 *    advisory lock that makes change ids follow commit order, so that a
 *    node reading "id > last seen" never skips one committed late.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/pg_int.h"

/* pg_advisory_xact_lock key serialising key_changes ids ("kbkc") */
#define CHANGES_LOCK "1801612131"

#define KEY_COLS                                                                                   \
    "k.seq, k.id, k.label, k.vendor, k.allowed_endpoints, k.metadata, k.daily_cap_micros, "        \
    "k.created_at, k.expires_at, k.revoked_at, k.rate_requests, k.rate_period_ms, "                \
    "coalesce(s.spent_micros, 0), coalesce(s.reserved_micros, 0), coalesce(s.requests, 0), "       \
    "k.allowed_accounts, k.allowed_models, k.max_amount_micros, k.tenant_id "

static const char SQL_KEY_INSERT[] =
    "INSERT INTO keys (id, token_hash, label, vendor, allowed_endpoints, daily_cap_micros, "
    "metadata, created_at, expires_at, rate_requests, rate_period_ms, allowed_accounts, "
    "allowed_models, max_amount_micros, tenant_id) VALUES ($1::text, $2::bytea, $3::text, "
    "$4::text, $5::text, $6::bigint, $7::text, $8::bigint, $9::bigint, $10::bigint, "
    "$11::bigint, $12::text, $13::text, $14::bigint, $15::text) RETURNING seq";
static const char SQL_KEY_BY_ID[] = "SELECT " KEY_COLS "FROM keys k LEFT JOIN spend s "
                                    "ON s.key_seq = k.seq AND s.day = $2::bigint "
                                    "WHERE k.id = $1::text";
static const char SQL_KEY_BY_HASH[] = "SELECT " KEY_COLS "FROM keys k LEFT JOIN spend s "
                                      "ON s.key_seq = k.seq AND s.day = $2::bigint "
                                      "WHERE k.token_hash = $1::bytea";
static const char SQL_KEY_REVOKED[] =
    "SELECT revoked_at IS NOT NULL FROM keys WHERE seq = $1::bigint";
/* No row lock needed: every write transaction takes the cluster-wide
 * write lock first (pg.c), so a revocation waits for the admitting
 * transaction, and an admission after the revocation's commit reads it
 * (READ COMMITTED: each statement sees what committed before it). A FOR
 * SHARE here cost a tuple lock, a WAL record and a dirty page per request. */
static const char SQL_KEY_STATE[] = "SELECT revoked_at IS NOT NULL, daily_cap_micros, expires_at "
                                    "FROM keys WHERE seq = $1::bigint";
static const char SQL_KEY_EXISTS[] = "SELECT 1 FROM keys WHERE id = $1::text";
static const char SQL_CHANGES_LOCK[] = "SELECT pg_advisory_xact_lock(" CHANGES_LOCK ")";
/* the change, its log entry and the notification in one statement;
 * pg_notify collapses repeats within the transaction */
static const char SQL_KEY_UPDATE[] =
    "WITH u AS (UPDATE keys SET "
    "daily_cap_micros = CASE WHEN $3::boolean THEN $4::bigint ELSE daily_cap_micros END, "
    "expires_at = CASE WHEN $5::boolean THEN $6::bigint ELSE expires_at END "
    "WHERE id = $1::text AND revoked_at IS NULL AND expires_at > $2::bigint "
    "RETURNING seq, token_hash), "
    "c AS (INSERT INTO key_changes (key_seq, token_hash, revoked) "
    "SELECT seq, token_hash, false FROM u) "
    "SELECT seq, token_hash, pg_notify('keybrake_keys', '') FROM u";
static const char SQL_KEY_REVOKE[] =
    "WITH u AS (UPDATE keys SET revoked_at = $2::bigint WHERE id = $1::text "
    "AND revoked_at IS NULL RETURNING seq, token_hash), "
    "c AS (INSERT INTO key_changes (key_seq, token_hash, revoked) "
    "SELECT seq, token_hash, true FROM u) "
    "SELECT seq, token_hash, pg_notify('keybrake_keys', '') FROM u";
/* left(): the prefix is compared as it is, % and _ included */
static const char SQL_REVOKE_PREFIX[] =
    "WITH u AS (UPDATE keys SET revoked_at = $2::bigint WHERE revoked_at IS NULL "
    "AND left(label, length($1::text)) = $1::text "
    "AND ($3::text IS NULL OR tenant_id = $3::text) RETURNING seq, token_hash, tenant_id), "
    "c AS (INSERT INTO key_changes (key_seq, token_hash, revoked) "
    "SELECT seq, token_hash, true FROM u) "
    "SELECT seq, token_hash, tenant_id, pg_notify('keybrake_keys', '') FROM u ORDER BY seq";
/* one statement for every filter: NULL / 0 parameters switch a condition
 * off (the admin API's listing, not the proxy's path) */
static const char SQL_KEY_LIST[] =
    "SELECT " KEY_COLS "FROM keys k LEFT JOIN spend s ON s.key_seq = k.seq "
    "AND s.day = $1::bigint WHERE "
    "($2::text IS NULL OR left(k.label, length($2::text)) = $2::text) "
    "AND ($3::text IS NULL OR k.vendor = $3::text) "
    "AND ($4::bigint <= 0 OR k.seq < $4::bigint) "
    "AND CASE $5::integer "
    "WHEN 1 THEN k.revoked_at IS NULL AND k.expires_at > $6::bigint "
    "WHEN 2 THEN k.revoked_at IS NOT NULL "
    "WHEN 3 THEN k.revoked_at IS NULL AND k.expires_at <= $6::bigint "
    "ELSE true END "
    "AND ($8::text IS NULL OR k.tenant_id = $8::text) "
    "ORDER BY k.seq DESC LIMIT $7::bigint";
static const char SQL_KEY_ACTIVE[] =
    "SELECT count(*) FROM keys WHERE revoked_at IS NULL AND expires_at > $1::bigint";

/* $1 seq, $2 day, $3 amount, $4 cap, $5 node, $6 boot. A row only when it
 * fits (row-locked: atomic across nodes), mirrored for this start. */
static const char SQL_SPEND_RESERVE[] =
    "WITH r AS (INSERT INTO spend (key_seq, day, reserved_micros, requests) "
    "SELECT $1::bigint, $2::bigint, $3::bigint, 1 WHERE $3::bigint <= $4::bigint "
    "ON CONFLICT (key_seq, day) DO UPDATE SET "
    "reserved_micros = spend.reserved_micros + excluded.reserved_micros, "
    "requests = spend.requests + 1 "
    "WHERE spend.spent_micros + spend.reserved_micros + excluded.reserved_micros <= $4::bigint "
    "RETURNING spent_micros + reserved_micros AS used), "
    "m AS (INSERT INTO node_reservations (node_id, boot_id, key_seq, day, micros) "
    "SELECT $5::text, $6::text, $1::bigint, $2::bigint, $3::bigint FROM r "
    "WHERE $3::bigint > 0 ON CONFLICT (node_id, boot_id, key_seq, day) DO UPDATE SET "
    "micros = node_reservations.micros + excluded.micros) "
    "SELECT used FROM r";
static const char SQL_SPEND_USED[] = "SELECT spent_micros + reserved_micros FROM spend "
                                     "WHERE key_seq = $1::bigint AND day = $2::bigint";
/* $1 seq, $2 day, $3 reserved, $4 actual, $5 node, $6 boot. No mirrored
 * row: another node settled this start's reservation at its worst case
 * (it found us dead): reserved is not touched again, and only what the
 * request cost beyond the reservation is added. The spend row is locked
 * first (l), as reserve and the reapers lock it, so that two connections
 * cannot wait on each other's rows. */
static const char SQL_SPEND_SETTLE[] =
    "WITH l AS (SELECT 1 FROM spend WHERE key_seq = $1::bigint AND day = $2::bigint "
    "FOR UPDATE), "
    "n AS (UPDATE node_reservations SET micros = micros - $3::bigint "
    "WHERE node_id = $5::text AND boot_id = $6::text AND key_seq = $1::bigint "
    "AND day = $2::bigint AND micros >= $3::bigint AND $3::bigint > 0 "
    "AND EXISTS (SELECT 1 FROM l) RETURNING 1), "
    "h AS (SELECT $3::bigint = 0 OR EXISTS (SELECT 1 FROM n) AS held), "
    "u AS (UPDATE spend SET "
    "reserved_micros = CASE WHEN h.held THEN greatest(reserved_micros - $3::bigint, 0) "
    "ELSE reserved_micros END, "
    "spent_micros = spent_micros + CASE WHEN h.held THEN $4::bigint "
    "ELSE greatest($4::bigint - $3::bigint, 0) END "
    "FROM h WHERE key_seq = $1::bigint AND day = $2::bigint "
    "RETURNING spent_micros + reserved_micros AS used) "
    "SELECT used FROM u";

/* $1 seq, $2 capacity units, $3 refill units per ms, $4 now, $5 units per
 * request (sqlite.c's S_RATE_*; a new bucket starts full). The elapsed
 * time is capped at one period (a full refill) so the sum cannot
 * overflow; the result is the same. */
#define RATE_LEVEL                                                                                 \
    "least($2::bigint, rate_buckets.units + "                                                      \
    "least(greatest($4::bigint - rate_buckets.ts_ms, 0), $5::bigint) * $3::bigint)"
static const char SQL_RATE_TAKE[] =
    "INSERT INTO rate_buckets (key_seq, units, ts_ms) "
    "VALUES ($1::bigint, $2::bigint - $5::bigint, $4::bigint) "
    "ON CONFLICT (key_seq) DO UPDATE SET units = " RATE_LEVEL " - $5::bigint, "
    "ts_ms = greatest($4::bigint, rate_buckets.ts_ms) "
    "WHERE " RATE_LEVEL " >= $5::bigint RETURNING 1";
static const char SQL_RATE_GET[] =
    "SELECT " RATE_LEVEL " FROM rate_buckets WHERE key_seq = $1::bigint";

static const char SQL_ADMIN_COUNT[] = "SELECT count(*) FROM admin_tokens";
static const char SQL_ADMIN_ADD[] =
    "INSERT INTO admin_tokens (token_hash, label, created_at, public_id) "
    "VALUES ($1::bytea, $2::text, $3::bigint, "
    "'at_' || substr(md5(random()::text || clock_timestamp()::text), 1, 24)) "
    "ON CONFLICT (token_hash) DO NOTHING";
static const char SQL_ADMIN_CHECK[] =
    "SELECT token_hash FROM admin_tokens WHERE token_hash = $1::bytea AND revoked_at IS NULL";

static const char SQL_OBJ_GET[] =
    "SELECT micros FROM object_charges WHERE key_seq = $1::bigint AND object_id = $2::text "
    "AND updated_at >= $3::bigint";
/* never lowered; an expired entry (updated_at < $5) starts again */
static const char SQL_OBJ_SET[] =
    "INSERT INTO object_charges (key_seq, object_id, micros, updated_at) "
    "VALUES ($1::bigint, $2::text, $3::bigint, $4::bigint) "
    "ON CONFLICT (key_seq, object_id) DO UPDATE SET "
    "micros = CASE WHEN object_charges.updated_at < $5::bigint THEN excluded.micros "
    "ELSE greatest(object_charges.micros, excluded.micros) END, "
    "updated_at = excluded.updated_at";

/* ---- keys ---- */

static char *col_str(const PGresult *r, int row, int col)
{
    const char *t = pg__text(r, row, col);
    return kb_strdup(t ? t : "");
}

static void row_to_key(const PGresult *r, int row, struct kb_key *k, int64_t day)
{
    k->seq = pg__i64(r, row, 0);
    const char *id = pg__text(r, row, 1);
    snprintf(k->id, sizeof k->id, "%s", id ? id : "");
    k->label = col_str(r, row, 2);
    k->vendor = col_str(r, row, 3);
    k->allowed_endpoints = col_str(r, row, 4);
    k->metadata = col_str(r, row, 5);
    k->daily_cap = pg__i64(r, row, 6);
    k->created_at = pg__i64(r, row, 7);
    k->expires_at = pg__i64(r, row, 8);
    k->revoked_at = pg__i64(r, row, 9);
    k->rate_requests = pg__i64(r, row, 10);
    k->rate_period_ms = pg__i64(r, row, 11);
    k->usage_day = day;
    k->spent = pg__i64(r, row, 12);
    k->reserved = pg__i64(r, row, 13);
    k->requests = pg__i64(r, row, 14);
    k->allowed_accounts = pg__strdup(r, row, 15);
    k->allowed_models = pg__strdup(r, row, 16);
    k->max_amount = pg__i64(r, row, 17); /* NULL reads as 0: no ceiling */
    k->tenant = pg__strdup(r, row, 18);
}

enum kb_err pg__key_insert(struct kb_store *s, struct kb_key *k, const uint8_t hash[KB_HASH_LEN])
{
    struct pg_args a = {0};
    pg_arg_text(&a, k->id);
    pg_arg_bytea(&a, hash, KB_HASH_LEN);
    pg_arg_text(&a, k->label);
    pg_arg_text(&a, k->vendor);
    pg_arg_text(&a, k->allowed_endpoints);
    pg_arg_i64(&a, k->daily_cap);
    pg_arg_text(&a, k->metadata);
    pg_arg_i64(&a, k->created_at);
    pg_arg_i64(&a, k->expires_at);
    pg_arg_i64(&a, k->rate_requests);
    pg_arg_i64(&a, k->rate_period_ms);
    pg_arg_text(&a, k->allowed_accounts);
    pg_arg_text(&a, k->allowed_models);
    if (k->max_amount > 0)
        pg_arg_i64(&a, k->max_amount);
    else
        pg_arg_text(&a, NULL);
    pg_arg_text(&a, k->tenant);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_KEY_INSERT, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1)
        k->seq = pg__i64(r, 0, 0);
    else if (err == KB_OK)
        err = KB_E_STORE;
    PQclear(r);
    return err;
}

static enum kb_err key_lookup(struct kb_store *s, const char *sql, const struct pg_args *a,
                              int64_t day, struct kb_key **out)
{
    enum kb_err err;
    PGresult *r = pg__read(s, sql, a, &err);
    if (err == KB_OK) {
        if (PQntuples(r) == 1) {
            struct kb_key *k = kb_calloc(1, sizeof *k);
            row_to_key(r, 0, k, day);
            *out = k;
        } else {
            err = KB_E_NOT_FOUND;
        }
    }
    PQclear(r);
    return err;
}

enum kb_err pg__key_get(struct kb_store *s, const char *id, int64_t day, struct kb_key **out)
{
    struct pg_args a = {0};
    pg_arg_text(&a, id);
    pg_arg_i64(&a, day);
    return key_lookup(s, SQL_KEY_BY_ID, &a, day, out);
}

enum kb_err pg__key_by_hash(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], int64_t day,
                            struct kb_key **out)
{
    struct pg_args a = {0};
    pg_arg_bytea(&a, hash, KB_HASH_LEN);
    pg_arg_i64(&a, day);
    return key_lookup(s, SQL_KEY_BY_HASH, &a, day, out);
}

static bool is_true(const PGresult *r, int row, int col)
{
    const char *t = pg__text(r, row, col);
    return t && t[0] == 't';
}

enum kb_err pg__key_revoked(struct kb_store *s, int64_t seq, bool *revoked)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, seq);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_KEY_REVOKED, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1)
        *revoked = is_true(r, 0, 0);
    else if (err == KB_OK)
        err = KB_E_NOT_FOUND;
    PQclear(r);
    return err;
}

enum kb_err pg__key_state(struct kb_store *s, int64_t seq, struct kb_key_state *out)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, seq);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_KEY_STATE, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1) {
        out->revoked = is_true(r, 0, 0);
        out->daily_cap = pg__i64(r, 0, 1);
        out->expires_at = pg__i64(r, 0, 2);
    } else if (err == KB_OK) {
        err = KB_E_NOT_FOUND;
    }
    PQclear(r);
    return err;
}

/* A RETURNING seq, token_hash row. */
static void revoked_row(const PGresult *r, int row, struct kb_revoked_key *k)
{
    k->seq = pg__i64(r, row, 0);
    memset(k->hash, 0, KB_HASH_LEN);
    uint8_t h[KB_HASH_LEN];
    if (pg__bytea(r, row, 1, h, sizeof h) == KB_HASH_LEN)
        memcpy(k->hash, h, KB_HASH_LEN);
}

/* KB_OK when key `id` exists (else KB_E_NOT_FOUND). */
static enum kb_err key_exists(struct kb_store *s, const char *id)
{
    struct pg_args a = {0};
    pg_arg_text(&a, id);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_KEY_EXISTS, &a, &err);
    if (err == KB_OK && PQntuples(r) == 0)
        err = KB_E_NOT_FOUND;
    PQclear(r);
    return err;
}

/* Runs a change-logging statement (SQL_KEY_UPDATE, _REVOKE, _PREFIX) in a
 * transaction behind the change-log lock; *res is its result. */
static enum kb_err run_logged(struct kb_store *s, const char *sql, const struct pg_args *a,
                              PGresult **res)
{
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    PGresult *r = NULL;
    if ((err = pg__do(s, SQL_CHANGES_LOCK, NULL)) == KB_OK)
        r = pg__run(s, sql, a, &err);
    if ((err = pg__txn_end(s, own, err)) != KB_OK) {
        PQclear(r);
        return err;
    }
    *res = r;
    return KB_OK;
}

enum kb_err pg__key_update(struct kb_store *s, const char *id, const struct kb_key_change *c,
                           int64_t now, struct kb_revoked_key *out)
{
    if (c->has_cap && c->cap < 0)
        return KB_E_INVALID;
    struct pg_args a = {0};
    pg_arg_text(&a, id);
    pg_arg_i64(&a, now);
    pg_arg_bool(&a, c->has_cap);
    pg_arg_i64(&a, c->cap);
    pg_arg_bool(&a, c->has_expires);
    pg_arg_i64(&a, c->expires_at);
    PGresult *r = NULL;
    enum kb_err err = run_logged(s, SQL_KEY_UPDATE, &a, &r);
    if (err != KB_OK)
        return err;
    struct kb_revoked_key k = {0};
    if (PQntuples(r) == 1)
        revoked_row(r, 0, &k);
    PQclear(r);
    if (k.seq) {
        if (out)
            *out = k;
        return KB_OK;
    }
    /* nothing changed: unknown, or revoked or expired */
    err = key_exists(s, id);
    return err == KB_OK ? KB_E_KEY_NOT_ACTIVE : err;
}

enum kb_err pg__key_list(struct kb_store *s, const struct kb_key_filter *f, struct kb_key **out,
                         size_t *n)
{
    if (f->limit < 1 || f->limit > 1000)
        return KB_E_INVALID;
    int64_t day = f->now / 86400;
    struct pg_args a = {0};
    pg_arg_i64(&a, day);
    pg_arg_text(&a, f->label_prefix);
    pg_arg_text(&a, f->vendor);
    pg_arg_i64(&a, f->before_seq);
    pg_arg_i64(&a, (int64_t)f->status);
    pg_arg_i64(&a, f->now);
    pg_arg_i64(&a, f->limit);
    pg_arg_text(&a, f->tenant);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_KEY_LIST, &a, &err);
    if (err != KB_OK) {
        PQclear(r);
        return err;
    }
    int rows = PQntuples(r);
    if (rows > f->limit)
        rows = f->limit;
    struct kb_key *keys = kb_calloc((size_t)f->limit, sizeof *keys);
    for (int i = 0; i < rows; i++)
        row_to_key(r, i, &keys[i], day);
    PQclear(r);
    *out = keys;
    *n = (size_t)rows;
    return KB_OK;
}

enum kb_err pg__key_count_active(struct kb_store *s, int64_t now, int64_t *count)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, now);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_KEY_ACTIVE, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1)
        *count = pg__i64(r, 0, 0);
    else if (err == KB_OK)
        err = KB_E_STORE;
    PQclear(r);
    return err;
}

enum kb_err pg__key_revoke(struct kb_store *s, const char *id, int64_t now,
                           struct kb_revoked_key *out)
{
    struct pg_args a = {0};
    pg_arg_text(&a, id);
    pg_arg_i64(&a, now);
    PGresult *r = NULL;
    enum kb_err err = run_logged(s, SQL_KEY_REVOKE, &a, &r);
    if (err != KB_OK)
        return err;
    struct kb_revoked_key k = {0};
    if (PQntuples(r) == 1)
        revoked_row(r, 0, &k);
    PQclear(r);
    if (out)
        *out = k;
    if (k.seq)
        return KB_OK;
    /* nothing changed: either already revoked (fine) or unknown */
    return key_exists(s, id);
}

enum kb_err pg__key_revoke_prefix(struct kb_store *s, const char *tenant, const char *prefix,
                                  int64_t now, int64_t *count, struct kb_revoked_key **keys)
{
    if (!prefix || !*prefix)
        return KB_E_INVALID; /* an empty prefix would revoke every key */
    struct pg_args a = {0};
    pg_arg_text(&a, prefix);
    pg_arg_i64(&a, now);
    pg_arg_text(&a, tenant);
    PGresult *r = NULL;
    enum kb_err err = run_logged(s, SQL_REVOKE_PREFIX, &a, &r);
    if (err != KB_OK)
        return err;
    int rows = PQntuples(r);
    if (keys) {
        struct kb_revoked_key *list = NULL;
        if (rows > 0) {
            list = kb_calloc((size_t)rows, sizeof *list);
            for (int i = 0; i < rows; i++) {
                revoked_row(r, i, &list[i]);
                const char *t = pg__text(r, i, 2);
                snprintf(list[i].tenant, sizeof list[i].tenant, "%s", t ? t : "");
            }
        }
        *keys = list;
    }
    PQclear(r);
    *count = rows;
    return KB_OK;
}

/* ---- spend ---- */

static void spend_args(struct pg_args *a, struct kb_store *s, int64_t seq, int64_t day,
                       int64_t amount, int64_t other)
{
    pg_arg_i64(a, seq);
    pg_arg_i64(a, day);
    pg_arg_i64(a, amount);
    pg_arg_i64(a, other);
    pg_arg_text(a, pg(s)->node);
    pg_arg_text(a, pg(s)->boot);
}

static enum kb_err spend_used(struct kb_store *s, int64_t seq, int64_t day, int64_t *used)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, seq);
    pg_arg_i64(&a, day);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_SPEND_USED, &a, &err);
    *used = err == KB_OK && PQntuples(r) == 1 ? pg__i64(r, 0, 0) : 0;
    PQclear(r);
    return err;
}

enum kb_err pg__spend_reserve(struct kb_store *s, int64_t seq, int64_t day, int64_t amount,
                              int64_t cap, int64_t *remaining)
{
    if (amount < 0)
        return KB_E_INVALID;
    struct pg_args a = {0};
    spend_args(&a, s, seq, day, amount, cap);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_SPEND_RESERVE, &a, &err);
    bool fits = err == KB_OK && PQntuples(r) == 1;
    int64_t used = fits ? pg__i64(r, 0, 0) : 0;
    PQclear(r);
    /* refused: what is used now (a new snapshot: the conflict's row as it
     * is after whoever filled the cap) */
    if (err == KB_OK && !fits && remaining)
        err = spend_used(s, seq, day, &used);
    if (err != KB_OK)
        return err;
    if (remaining)
        *remaining = cap - used > 0 ? cap - used : 0;
    return fits ? KB_OK : KB_E_CAP_EXHAUSTED;
}

enum kb_err pg__spend_settle(struct kb_store *s, int64_t seq, int64_t day, int64_t reserved,
                             int64_t actual, int64_t cap, int64_t *remaining)
{
    if (reserved < 0 || actual < 0)
        return KB_E_INVALID;
    struct pg_args a = {0};
    spend_args(&a, s, seq, day, reserved, actual);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_SPEND_SETTLE, &a, &err);
    int64_t used = err == KB_OK && PQntuples(r) == 1 ? pg__i64(r, 0, 0) : 0;
    PQclear(r);
    if (err != KB_OK)
        return err;
    if (remaining)
        *remaining = cap - used > 0 ? cap - used : 0;
    return KB_OK;
}

/* ---- rate limits ---- */

enum kb_err pg__rate_take(struct kb_store *s, int64_t seq, int64_t requests, int64_t period_ms,
                          int64_t now_ms, int64_t *retry_after_ms)
{
    if (requests < 1 || period_ms < 1)
        return KB_E_INVALID;
    /* integer units: a request costs period_ms, refill is `requests` per ms */
    struct pg_args a = {0};
    pg_arg_i64(&a, seq);
    pg_arg_i64(&a, requests * period_ms);
    pg_arg_i64(&a, requests);
    pg_arg_i64(&a, now_ms);
    pg_arg_i64(&a, period_ms);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_RATE_TAKE, &a, &err);
    bool took = err == KB_OK && PQntuples(r) == 1;
    PQclear(r);
    if (err != KB_OK)
        return err;
    if (took)
        return KB_OK;
    int64_t units = 0;
    r = pg__run(s, SQL_RATE_GET, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1)
        units = pg__i64(r, 0, 0);
    PQclear(r);
    if (err != KB_OK)
        return err;
    if (retry_after_ms)
        *retry_after_ms = (period_ms - units + requests - 1) / requests;
    return KB_E_RATE_LIMITED;
}

/* ---- admin tokens ---- */

enum kb_err pg__admin_token_count(struct kb_store *s, int64_t *count)
{
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_ADMIN_COUNT, NULL, &err);
    if (err == KB_OK && PQntuples(r) == 1)
        *count = pg__i64(r, 0, 0);
    else if (err == KB_OK)
        err = KB_E_STORE;
    PQclear(r);
    return err;
}

enum kb_err pg__admin_token_add(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                const char *label, int64_t now)
{
    struct pg_args a = {0};
    pg_arg_bytea(&a, hash, KB_HASH_LEN);
    pg_arg_text(&a, label);
    pg_arg_i64(&a, now);
    return pg__do(s, SQL_ADMIN_ADD, &a);
}

enum kb_err pg__admin_token_check(struct kb_store *s, const uint8_t hash[KB_HASH_LEN])
{
    struct pg_args a = {0};
    pg_arg_bytea(&a, hash, KB_HASH_LEN);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_ADMIN_CHECK, &a, &err);
    if (err == KB_OK) {
        err = KB_E_NOT_FOUND;
        /* the index found it; compare in constant time all the same */
        uint8_t h[KB_HASH_LEN];
        if (PQntuples(r) == 1 && pg__bytea(r, 0, 0, h, sizeof h) == KB_HASH_LEN &&
            crypto_equal(h, hash, KB_HASH_LEN))
            err = KB_OK;
    } else {
        err = KB_E_STORE;
    }
    PQclear(r);
    return err;
}

/* ---- the object ledger ---- */

enum kb_err pg__object_charged(struct kb_store *s, int64_t key_seq, const char *object_id,
                               int64_t not_before, int64_t *micros)
{
    if (!object_id || !micros)
        return KB_E_INVALID;
    struct pg_args a = {0};
    pg_arg_i64(&a, key_seq);
    pg_arg_text(&a, object_id);
    pg_arg_i64(&a, not_before);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_OBJ_GET, &a, &err);
    if (err == KB_OK)
        *micros = PQntuples(r) == 1 ? pg__i64(r, 0, 0) : -1;
    PQclear(r);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

enum kb_err pg__object_charge_set(struct kb_store *s, int64_t key_seq, const char *object_id,
                                  int64_t micros, int64_t now, int64_t not_before)
{
    if (!object_id || micros < 0)
        return KB_E_INVALID;
    struct pg_args a = {0};
    pg_arg_i64(&a, key_seq);
    pg_arg_text(&a, object_id);
    pg_arg_i64(&a, micros);
    pg_arg_i64(&a, now);
    pg_arg_i64(&a, not_before);
    return pg__do(s, SQL_OBJ_SET, &a) == KB_OK ? KB_OK : KB_E_STORE;
}
