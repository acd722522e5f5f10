/*
 * sqlite_tenants.c - the SQLite backend's tenants, scoped admin tokens and
 * tenant vendor secrets (see store.h, docs/tenants.md). None of these is on
 * the proxy's admission path but the secret read, which runs on the
 * reader thread with the key lookup; statements are prepared per call.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/sqlite_int.h"
#include "store/store.h"

static sqlite3_stmt *prep(struct kb_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store__db(s), sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

static void bind_opt(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static char *col_opt(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? kb_strdup((const char *)t) : NULL;
}

static void col_id(sqlite3_stmt *st, int i, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

/* Runs a statement that returns no rows; KB_E_EXISTS on a unique clash. */
static enum kb_err exec_done(struct kb_store *s, sqlite3_stmt *st, int *changes)
{
    int rc = sqlite3_step(st);
    int ext = sqlite3_extended_errcode(store__db(s));
    sqlite3_finalize(st);
    if (changes)
        *changes = sqlite3_changes(store__db(s));
    if (rc == SQLITE_CONSTRAINT)
        return ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY
                   ? KB_E_EXISTS
                   : KB_E_INVALID;
    return rc == SQLITE_DONE ? KB_OK : KB_E_STORE;
}

/* ---- tenants ---- */

enum kb_err sqlite__tenant_insert(struct kb_store *s, struct kb_tenant *t)
{
    sqlite3_stmt *st = prep(s, "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, t->created_at);
    enum kb_err err = exec_done(s, st, NULL);
    if (err == KB_OK)
        t->seq = sqlite3_last_insert_rowid(store__db(s));
    return err;
}

static void row_tenant(sqlite3_stmt *st, struct kb_tenant *t)
{
    t->seq = sqlite3_column_int64(st, 0);
    col_id(st, 1, t->id, sizeof t->id);
    t->name = col_opt(st, 2);
    t->created_at = sqlite3_column_int64(st, 3);
}

enum kb_err sqlite__tenant_get(struct kb_store *s, const char *id, struct kb_tenant **out)
{
    sqlite3_stmt *st = prep(s, "SELECT seq, id, name, created_at FROM tenants "
                               "WHERE id = ?1 AND deleted_at IS NULL");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        struct kb_tenant *t = kb_calloc(1, sizeof *t);
        row_tenant(st, t);
        *out = t;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

enum kb_err sqlite__tenant_list(struct kb_store *s, int64_t after_seq, int limit,
                                struct kb_tenant **out, size_t *n)
{
    sqlite3_stmt *st = prep(s, "SELECT seq, id, name, created_at FROM tenants "
                               "WHERE seq > ?1 AND deleted_at IS NULL ORDER BY seq LIMIT ?2");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, after_seq);
    sqlite3_bind_int(st, 2, limit);
    struct kb_tenant *v = kb_calloc((size_t)limit, sizeof *v);
    size_t cnt = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && cnt < (size_t)limit)
        row_tenant(st, &v[cnt++]);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        store_tenant_list_free(v, cnt);
        return KB_E_STORE;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}

static enum kb_err txn_begin(struct kb_store *s, bool *own)
{
    *own = sqlite3_get_autocommit(store__db(s)) != 0;
    return *own && sqlite3_exec(store__db(s), "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK
               ? KB_E_STORE
               : KB_OK;
}

static enum kb_err txn_end(struct kb_store *s, bool own, enum kb_err err)
{
    if (!own)
        return err;
    if (err == KB_OK && sqlite3_exec(store__db(s), "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return KB_OK;
    sqlite3_exec(store__db(s), "ROLLBACK", NULL, NULL, NULL);
    return err == KB_OK ? KB_E_STORE : err;
}

static enum kb_err tenant_delete(struct kb_store *s, const char *id, int64_t now)
{
    sqlite3_stmt *st = prep(s, "SELECT (SELECT count(*) FROM keys WHERE tenant_id = ?1 "
                               "AND revoked_at IS NULL AND expires_at > ?2) "
                               "FROM tenants WHERE id = ?1 AND deleted_at IS NULL");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    int rc = sqlite3_step(st);
    int64_t active = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
    if (active > 0)
        return KB_E_TENANT_IN_USE;
    static const char *const steps[] = {
        "UPDATE tenants SET deleted_at = ?2 WHERE id = ?1",
        "UPDATE admin_tokens SET revoked_at = ?2 WHERE tenant_id = ?1 AND revoked_at IS NULL",
        "DELETE FROM tenant_secrets WHERE tenant_id = ?1 AND ?2 IS NOT NULL",
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        if (!(st = prep(s, steps[i])))
            return KB_E_STORE;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        enum kb_err err = exec_done(s, st, NULL);
        if (err != KB_OK)
            return err;
    }
    return KB_OK;
}

enum kb_err sqlite__tenant_delete(struct kb_store *s, const char *id, int64_t now)
{
    bool own;
    enum kb_err err = txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    return txn_end(s, own, tenant_delete(s, id, now));
}

/* ---- admin tokens ---- */

enum kb_err sqlite__admin_token_insert(struct kb_store *s, const struct kb_admin_token *tok,
                                       const uint8_t hash[KB_HASH_LEN])
{
    sqlite3_stmt *st = prep(s, "INSERT INTO admin_tokens (token_hash, label, created_at, "
                               "public_id, tenant_id) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_blob(st, 1, hash, KB_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, tok->label ? tok->label : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, tok->created_at);
    sqlite3_bind_text(st, 4, tok->id, -1, SQLITE_STATIC);
    bind_opt(st, 5, tok->tenant);
    return exec_done(s, st, NULL);
}

#define TOKEN_COLS "public_id, label, tenant_id, created_at, coalesce(revoked_at, 0) "

static void row_token(sqlite3_stmt *st, struct kb_admin_token *t)
{
    col_id(st, 0, t->id, sizeof t->id);
    t->label = col_opt(st, 1);
    t->tenant = col_opt(st, 2);
    t->created_at = sqlite3_column_int64(st, 3);
    t->revoked_at = sqlite3_column_int64(st, 4);
}

enum kb_err sqlite__admin_token_lookup(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                       struct kb_admin_token **out)
{
    /* a scoped token lives no longer than its tenant */
    sqlite3_stmt *st =
        prep(s, "SELECT " TOKEN_COLS "FROM admin_tokens a "
                "WHERE token_hash = ?1 AND revoked_at IS NULL AND (tenant_id IS NULL "
                "OR EXISTS (SELECT 1 FROM tenants t WHERE t.id = a.tenant_id "
                "AND t.deleted_at IS NULL))");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_blob(st, 1, hash, KB_HASH_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        struct kb_admin_token *t = kb_calloc(1, sizeof *t);
        row_token(st, t);
        *out = t;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

enum kb_err sqlite__admin_token_list(struct kb_store *s, bool all, const char *tenant,
                                     struct kb_admin_token **out, size_t *n)
{
    sqlite3_stmt *st = prep(s, "SELECT " TOKEN_COLS "FROM admin_tokens WHERE ?1 "
                               "OR tenant_id IS ?2 ORDER BY id LIMIT 1000");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int(st, 1, all);
    bind_opt(st, 2, tenant);
    struct kb_admin_token *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = kb_realloc(v, cap * sizeof *v);
        }
        memset(&v[cnt], 0, sizeof *v);
        row_token(st, &v[cnt++]);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_admin_token_list_free(v, cnt);
        return KB_E_STORE;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}

enum kb_err sqlite__admin_token_revoke(struct kb_store *s, const char *id, bool all,
                                       const char *tenant, int64_t now)
{
    sqlite3_stmt *st = prep(s, "UPDATE admin_tokens SET revoked_at = coalesce(revoked_at, ?2) "
                               "WHERE public_id = ?1 AND (?3 OR tenant_id IS ?4)");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int(st, 3, all);
    bind_opt(st, 4, tenant);
    int changes = 0;
    enum kb_err err = exec_done(s, st, &changes);
    return err == KB_OK && changes == 0 ? KB_E_NOT_FOUND : err;
}

/* ---- tenant secrets ---- */

enum kb_err sqlite__secret_put(struct kb_store *s, const struct kb_tenant_secret *sec)
{
    sqlite3_stmt *st = prep(s, "INSERT OR REPLACE INTO tenant_secrets (tenant_id, vendor, key_id, "
                               "sealed, account, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, sec->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sec->vendor, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, sec->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, sec->sealed, (int)sec->sealed_len, SQLITE_STATIC);
    bind_opt(st, 5, sec->account);
    sqlite3_bind_int64(st, 6, sec->updated_at);
    return exec_done(s, st, NULL);
}

static void row_secret(sqlite3_stmt *st, struct kb_tenant_secret *sec)
{
    sec->tenant = col_opt(st, 0);
    sec->vendor = col_opt(st, 1);
    sec->key_id = col_opt(st, 2);
    int len = sqlite3_column_bytes(st, 3);
    const void *b = sqlite3_column_blob(st, 3);
    sec->sealed_len = len > 0 ? (size_t)len : 0;
    sec->sealed = kb_malloc(sec->sealed_len ? sec->sealed_len : 1);
    if (b && len > 0)
        memcpy(sec->sealed, b, (size_t)len);
    sec->account = col_opt(st, 4);
    sec->updated_at = sqlite3_column_int64(st, 5);
}

#define SECRET_COLS "tenant_id, vendor, key_id, sealed, account, updated_at "

enum kb_err sqlite__secret_get(struct kb_store *s, const char *tenant, const char *vendor,
                               struct kb_tenant_secret **out)
{
    sqlite3_stmt *st = prep(s, "SELECT " SECRET_COLS "FROM tenant_secrets "
                               "WHERE tenant_id = ?1 AND vendor = ?2");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, vendor, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        struct kb_tenant_secret *sec = kb_calloc(1, sizeof *sec);
        row_secret(st, sec);
        *out = sec;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

enum kb_err sqlite__secret_delete(struct kb_store *s, const char *tenant, const char *vendor)
{
    sqlite3_stmt *st = prep(s, "DELETE FROM tenant_secrets WHERE tenant_id = ?1 AND vendor = ?2");
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, vendor, -1, SQLITE_STATIC);
    int changes = 0;
    enum kb_err err = exec_done(s, st, &changes);
    return err == KB_OK && changes == 0 ? KB_E_NOT_FOUND : err;
}

enum kb_err sqlite__secret_list(struct kb_store *s, const char *tenant,
                                struct kb_tenant_secret **out, size_t *n)
{
    sqlite3_stmt *st = prep(s, "SELECT " SECRET_COLS "FROM tenant_secrets "
                               "WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY tenant_id, vendor");
    if (!st)
        return KB_E_STORE;
    bind_opt(st, 1, tenant);
    struct kb_tenant_secret *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            v = kb_realloc(v, cap * sizeof *v);
        }
        memset(&v[cnt], 0, sizeof *v);
        row_secret(st, &v[cnt++]);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_tenant_secret_list_free(v, cnt);
        return KB_E_STORE;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}
