/*
 * sqlite_keys.c - the SQLite backend's vault keys (see store.h): insert,
 * the two lookups, listing with filters and pages, revocation one by one
 * and by label prefix, live changes (cap, expiry) and the state admission
 * re-reads. Statements are sqlite.c's, prepared once per
 * connection (sqlite__stmt).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "store/sqlite_int.h"
#include "store/store.h"

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
    const unsigned char *mods = sqlite3_column_text(st, 16);
    k->allowed_models = mods ? kb_strdup((const char *)mods) : NULL;
    k->max_amount = sqlite3_column_int64(st, 17); /* NULL reads as 0: no ceiling */
    const unsigned char *ten = sqlite3_column_text(st, 18);
    k->tenant = ten ? kb_strdup((const char *)ten) : NULL;
}

enum kb_err sqlite__key_insert(struct kb_store *s, struct kb_key *k,
                               const uint8_t hash[KB_HASH_LEN])
{
    sqlite3_stmt *st = sqlite__stmt(s, S_KEY_INSERT);
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
    if (k->allowed_models)
        sqlite3_bind_text(st, 13, k->allowed_models, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 13);
    if (k->max_amount > 0)
        sqlite3_bind_int64(st, 14, k->max_amount);
    else
        sqlite3_bind_null(st, 14);
    if (k->tenant)
        sqlite3_bind_text(st, 15, k->tenant, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 15);
    int rc = sqlite3_step(st);
    int ext = sqlite3_extended_errcode(store__db(s));
    sqlite__done(st);
    if (rc == SQLITE_CONSTRAINT)
        return ext == SQLITE_CONSTRAINT_UNIQUE ? KB_E_EXISTS : KB_E_INVALID;
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    k->seq = sqlite3_last_insert_rowid(store__db(s));
    return KB_OK;
}

static enum kb_err key_lookup(struct kb_store *s, enum stmt_id id, const void *arg, int arglen,
                              int64_t day, struct kb_key **out)
{
    sqlite3_stmt *st = sqlite__stmt(s, id);
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
    sqlite__done(st);
    return err;
}

enum kb_err sqlite__key_get(struct kb_store *s, const char *id, int64_t day, struct kb_key **out)
{
    return key_lookup(s, S_KEY_BY_ID, id, -1, day, out);
}

enum kb_err sqlite__key_by_hash(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], int64_t day,
                                struct kb_key **out)
{
    return key_lookup(s, S_KEY_BY_HASH, hash, KB_HASH_LEN, day, out);
}

enum kb_err sqlite__key_revoked(struct kb_store *s, int64_t seq, bool *revoked)
{
    sqlite3_stmt *st = sqlite__stmt(s, S_KEY_REVOKED);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, seq);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *revoked = sqlite3_column_int(st, 0) != 0;
    sqlite__done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

enum kb_err sqlite__key_list(struct kb_store *s, const struct kb_key_filter *f, struct kb_key **out,
                             size_t *n)
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
    if (f->tenant)
        len += snprintf(q + len, sizeof q - (size_t)len, " AND k.tenant_id = ?7");
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
    if (sqlite3_prepare_v2(store__db(s), q, -1, &st, NULL) != SQLITE_OK)
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
    if (f->tenant)
        sqlite3_bind_text(st, 7, f->tenant, -1, SQLITE_STATIC);

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

enum kb_err sqlite__key_count_active(struct kb_store *s, int64_t now, int64_t *count)
{
    sqlite3_stmt *st = sqlite__stmt(s, S_KEY_ACTIVE);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, now);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    sqlite__done(st);
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

enum kb_err sqlite__key_revoke(struct kb_store *s, const char *id, int64_t now,
                               struct kb_revoked_key *out)
{
    sqlite3_stmt *st = sqlite__stmt(s, S_KEY_REVOKE);
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
    sqlite__done(st);
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    if (out)
        *out = k;
    if (k.seq)
        return KB_OK;
    /* nothing changed: either already revoked (fine) or unknown */
    st = sqlite__stmt(s, S_KEY_EXISTS);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite__done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

enum kb_err sqlite__key_revoke_prefix(struct kb_store *s, const char *tenant, const char *prefix,
                                      int64_t now, int64_t *count, struct kb_revoked_key **keys)
{
    if (!prefix || !*prefix)
        return KB_E_INVALID; /* an empty prefix would revoke every key */
    sqlite3_stmt *st = sqlite__stmt(s, S_REVOKE_PREFIX);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    if (tenant)
        sqlite3_bind_text(st, 3, tenant, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    struct kb_revoked_key *list = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (keys && n == cap) {
            cap = cap ? cap * 2 : 16;
            list = kb_realloc(list, cap * sizeof *list);
        }
        if (keys) {
            revoked_row(st, &list[n]);
            const unsigned char *t = sqlite3_column_text(st, 2);
            snprintf(list[n].tenant, sizeof list[n].tenant, "%s", t ? (const char *)t : "");
        }
        n++;
    }
    sqlite__done(st);
    if (rc != SQLITE_DONE) {
        free(list);
        return KB_E_STORE;
    }
    *count = (int64_t)n;
    if (keys)
        *keys = list;
    return KB_OK;
}

enum kb_err sqlite__key_state(struct kb_store *s, int64_t seq, struct kb_key_state *out)
{
    sqlite3_stmt *st = sqlite__stmt(s, S_KEY_STATE);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, seq);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->revoked = sqlite3_column_int(st, 0) != 0;
        out->daily_cap = sqlite3_column_int64(st, 1);
        out->expires_at = sqlite3_column_int64(st, 2);
    }
    sqlite__done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

enum kb_err sqlite__key_update(struct kb_store *s, const char *id, const struct kb_key_change *c,
                               int64_t now, struct kb_revoked_key *out)
{
    if (c->has_cap && c->cap < 0)
        return KB_E_INVALID;
    sqlite3_stmt *st = sqlite__stmt(s, S_KEY_UPDATE);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int(st, 3, c->has_cap);
    sqlite3_bind_int64(st, 4, c->cap);
    sqlite3_bind_int(st, 5, c->has_expires);
    sqlite3_bind_int64(st, 6, c->expires_at);
    struct kb_revoked_key k = {0};
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        revoked_row(st, &k);
        rc = sqlite3_step(st);
    }
    int ext = sqlite3_extended_errcode(store__db(s));
    sqlite__done(st);
    if (rc == SQLITE_CONSTRAINT)
        return ext == SQLITE_CONSTRAINT_CHECK ? KB_E_INVALID : KB_E_STORE;
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    if (k.seq) {
        if (out)
            *out = k;
        return KB_OK;
    }
    /* nothing changed: unknown, or revoked or expired */
    st = sqlite__stmt(s, S_KEY_EXISTS);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite__done(st);
    return rc == SQLITE_ROW ? KB_E_KEY_NOT_ACTIVE : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}
