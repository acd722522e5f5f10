/*
 * pg_tenants.c - tenants, scoped admin tokens and tenant vendor secrets on
 * PostgreSQL (store.h; docs/tenants.md). Each behaves as its SQLite twin
 * (sqlite_tenants.c). Revocation of an admin token needs no notification:
 * every admin request reads the token's row (store_admin_token_lookup), so
 * a revocation committed on one node holds on every node's next request.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/pg_int.h"
#include "store/store.h"

static const char SQL_TENANT_INSERT[] = "INSERT INTO tenants (id, name, created_at) "
                                        "VALUES ($1::text, $2::text, $3::bigint) RETURNING seq";
static const char SQL_TENANT_GET[] = "SELECT seq, id, name, created_at FROM tenants "
                                     "WHERE id = $1::text AND deleted_at IS NULL";
static const char SQL_TENANT_LIST[] =
    "SELECT seq, id, name, created_at FROM tenants WHERE seq > $1::bigint "
    "AND deleted_at IS NULL ORDER BY seq LIMIT $2::bigint";
/* FOR UPDATE: a key issued for the tenant concurrently waits (see keys.c:
 * the issuing job reads the tenant) */
static const char SQL_TENANT_LOCK[] =
    "SELECT (SELECT count(*) FROM keys WHERE tenant_id = $1::text AND revoked_at IS NULL "
    "AND expires_at > $2::bigint) FROM tenants WHERE id = $1::text AND deleted_at IS NULL "
    "FOR UPDATE";
static const char SQL_TENANT_DELETE[] =
    "UPDATE tenants SET deleted_at = $2::bigint WHERE id = $1::text";
static const char SQL_TENANT_TOKENS[] = "UPDATE admin_tokens SET revoked_at = $2::bigint "
                                        "WHERE tenant_id = $1::text AND revoked_at IS NULL";
static const char SQL_TENANT_SECRETS[] = "DELETE FROM tenant_secrets WHERE tenant_id = $1::text";

#define TOKEN_COLS "public_id, label, tenant_id, created_at, coalesce(revoked_at, 0) "
static const char SQL_TOKEN_INSERT[] =
    "INSERT INTO admin_tokens (token_hash, label, created_at, public_id, tenant_id) "
    "VALUES ($1::bytea, $2::text, $3::bigint, $4::text, $5::text)";
/* a scoped token lives no longer than its tenant */
static const char SQL_TOKEN_LOOKUP[] =
    "SELECT " TOKEN_COLS "FROM admin_tokens a WHERE token_hash = $1::bytea AND revoked_at IS NULL "
    "AND (tenant_id IS NULL OR EXISTS (SELECT 1 FROM tenants t WHERE t.id = a.tenant_id "
    "AND t.deleted_at IS NULL))";
static const char SQL_TOKEN_LIST[] =
    "SELECT " TOKEN_COLS "FROM admin_tokens WHERE $1::boolean "
    "OR tenant_id IS NOT DISTINCT FROM $2::text ORDER BY id LIMIT 1000";
static const char SQL_TOKEN_REVOKE[] =
    "UPDATE admin_tokens SET revoked_at = coalesce(revoked_at, $2::bigint) "
    "WHERE public_id = $1::text AND ($3::boolean OR tenant_id IS NOT DISTINCT FROM $4::text) "
    "RETURNING 1";

#define SECRET_COLS "tenant_id, vendor, key_id, sealed, account, updated_at "
static const char SQL_SECRET_PUT[] =
    "INSERT INTO tenant_secrets (tenant_id, vendor, key_id, sealed, account, updated_at) "
    "VALUES ($1::text, $2::text, $3::text, $4::bytea, $5::text, $6::bigint) "
    "ON CONFLICT (tenant_id, vendor) DO UPDATE SET key_id = excluded.key_id, "
    "sealed = excluded.sealed, account = excluded.account, updated_at = excluded.updated_at";
/* a change of a tenant's secret reaches the other nodes as a change of
 * each of its keys (their key caches forget them; cluster.c) */
static const char SQL_SECRET_CHANGED[] =
    "WITH c AS (INSERT INTO key_changes (key_seq, token_hash, revoked) "
    "SELECT seq, token_hash, false FROM keys WHERE tenant_id = $1::text AND revoked_at IS NULL "
    "RETURNING 1) SELECT pg_notify('keybrake_keys', '')";
static const char SQL_SECRET_GET[] = "SELECT " SECRET_COLS "FROM tenant_secrets "
                                     "WHERE tenant_id = $1::text AND vendor = $2::text";
static const char SQL_SECRET_DELETE[] =
    "DELETE FROM tenant_secrets WHERE tenant_id = $1::text AND vendor = $2::text RETURNING 1";
static const char SQL_SECRET_LIST[] =
    "SELECT " SECRET_COLS "FROM tenant_secrets WHERE $1::text IS NULL OR tenant_id = $1::text "
    "ORDER BY tenant_id, vendor";

/* ---- tenants ---- */

enum kb_err pg__tenant_insert(struct kb_store *s, struct kb_tenant *t)
{
    struct pg_args a = {0};
    pg_arg_text(&a, t->id);
    pg_arg_text(&a, t->name);
    pg_arg_i64(&a, t->created_at);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_TENANT_INSERT, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1)
        t->seq = pg__i64(r, 0, 0);
    else if (err == KB_OK)
        err = KB_E_STORE;
    PQclear(r);
    return err;
}

static void row_tenant(const PGresult *r, int row, struct kb_tenant *t)
{
    t->seq = pg__i64(r, row, 0);
    const char *id = pg__text(r, row, 1);
    snprintf(t->id, sizeof t->id, "%s", id ? id : "");
    t->name = pg__strdup(r, row, 2);
    t->created_at = pg__i64(r, row, 3);
}

enum kb_err pg__tenant_get(struct kb_store *s, const char *id, struct kb_tenant **out)
{
    struct pg_args a = {0};
    pg_arg_text(&a, id);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_TENANT_GET, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1) {
        struct kb_tenant *t = kb_calloc(1, sizeof *t);
        row_tenant(r, 0, t);
        *out = t;
    } else if (err == KB_OK) {
        err = KB_E_NOT_FOUND;
    }
    PQclear(r);
    return err;
}

enum kb_err pg__tenant_list(struct kb_store *s, int64_t after_seq, int limit,
                            struct kb_tenant **out, size_t *n)
{
    struct pg_args a = {0};
    pg_arg_i64(&a, after_seq);
    pg_arg_i64(&a, limit);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_TENANT_LIST, &a, &err);
    if (err == KB_OK) {
        int rows = PQntuples(r);
        if (rows > limit)
            rows = limit;
        struct kb_tenant *v = kb_calloc((size_t)limit, sizeof *v);
        for (int i = 0; i < rows; i++)
            row_tenant(r, i, &v[i]);
        *out = v;
        *n = (size_t)rows;
    }
    PQclear(r);
    return err;
}

static enum kb_err tenant_delete(struct kb_store *s, const char *id, int64_t now)
{
    struct pg_args a = {0};
    pg_arg_text(&a, id);
    pg_arg_i64(&a, now);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_TENANT_LOCK, &a, &err);
    if (err == KB_OK && PQntuples(r) != 1)
        err = KB_E_NOT_FOUND;
    else if (err == KB_OK && pg__i64(r, 0, 0) > 0)
        err = KB_E_TENANT_IN_USE;
    PQclear(r);
    if (err == KB_OK)
        err = pg__do(s, SQL_TENANT_DELETE, &a);
    if (err == KB_OK)
        err = pg__do(s, SQL_TENANT_TOKENS, &a);
    if (err == KB_OK) {
        struct pg_args b = {0};
        pg_arg_text(&b, id);
        err = pg__do(s, SQL_TENANT_SECRETS, &b);
    }
    return err;
}

enum kb_err pg__tenant_delete(struct kb_store *s, const char *id, int64_t now)
{
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    return pg__txn_end(s, own, tenant_delete(s, id, now));
}

/* ---- admin tokens ---- */

enum kb_err pg__admin_token_insert(struct kb_store *s, const struct kb_admin_token *tok,
                                   const uint8_t hash[KB_HASH_LEN])
{
    struct pg_args a = {0};
    pg_arg_bytea(&a, hash, KB_HASH_LEN);
    pg_arg_text(&a, tok->label ? tok->label : "");
    pg_arg_i64(&a, tok->created_at);
    pg_arg_text(&a, tok->id);
    pg_arg_text(&a, tok->tenant);
    return pg__do(s, SQL_TOKEN_INSERT, &a);
}

static void row_token(const PGresult *r, int row, struct kb_admin_token *t)
{
    const char *id = pg__text(r, row, 0);
    snprintf(t->id, sizeof t->id, "%s", id ? id : "");
    t->label = pg__strdup(r, row, 1);
    t->tenant = pg__strdup(r, row, 2);
    t->created_at = pg__i64(r, row, 3);
    t->revoked_at = pg__i64(r, row, 4);
}

enum kb_err pg__admin_token_lookup(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                   struct kb_admin_token **out)
{
    struct pg_args a = {0};
    pg_arg_bytea(&a, hash, KB_HASH_LEN);
    enum kb_err err;
    PGresult *r = pg__read(s, SQL_TOKEN_LOOKUP, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1) {
        struct kb_admin_token *t = kb_calloc(1, sizeof *t);
        row_token(r, 0, t);
        *out = t;
    } else if (err == KB_OK) {
        err = KB_E_NOT_FOUND;
    }
    PQclear(r);
    return err;
}

enum kb_err pg__admin_token_list(struct kb_store *s, bool all, const char *tenant,
                                 struct kb_admin_token **out, size_t *n)
{
    struct pg_args a = {0};
    pg_arg_bool(&a, all);
    pg_arg_text(&a, tenant);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_TOKEN_LIST, &a, &err);
    if (err == KB_OK) {
        int rows = PQntuples(r);
        struct kb_admin_token *v = kb_calloc(rows > 0 ? (size_t)rows : 1, sizeof *v);
        for (int i = 0; i < rows; i++)
            row_token(r, i, &v[i]);
        *out = v;
        *n = (size_t)rows;
    }
    PQclear(r);
    return err;
}

enum kb_err pg__admin_token_revoke(struct kb_store *s, const char *id, bool all, const char *tenant,
                                   int64_t now)
{
    struct pg_args a = {0};
    pg_arg_text(&a, id);
    pg_arg_i64(&a, now);
    pg_arg_bool(&a, all);
    pg_arg_text(&a, tenant);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_TOKEN_REVOKE, &a, &err);
    if (err == KB_OK && PQntuples(r) == 0)
        err = KB_E_NOT_FOUND;
    PQclear(r);
    return err;
}

/* ---- tenant secrets ---- */

enum kb_err pg__secret_put(struct kb_store *s, const struct kb_tenant_secret *sec)
{
    struct pg_args a = {0};
    pg_arg_text(&a, sec->tenant);
    pg_arg_text(&a, sec->vendor);
    pg_arg_text(&a, sec->key_id);
    pg_arg_bytea(&a, sec->sealed, sec->sealed_len);
    pg_arg_text(&a, sec->account);
    pg_arg_i64(&a, sec->updated_at);
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK)
        return err;
    err = pg__do(s, SQL_SECRET_PUT, &a);
    if (err == KB_OK) {
        struct pg_args b = {0};
        pg_arg_text(&b, sec->tenant);
        err = pg__do(s, SQL_SECRET_CHANGED, &b);
    }
    return pg__txn_end(s, own, err);
}

static bool row_secret(const PGresult *r, int row, struct kb_tenant_secret *sec)
{
    sec->tenant = pg__strdup(r, row, 0);
    sec->vendor = pg__strdup(r, row, 1);
    sec->key_id = pg__strdup(r, row, 2);
    sec->sealed = kb_malloc(KB_SEALED_MAX);
    size_t len = pg__bytea(r, row, 3, sec->sealed, KB_SEALED_MAX);
    sec->sealed_len = len == (size_t)-1 ? 0 : len;
    sec->account = pg__strdup(r, row, 4);
    sec->updated_at = pg__i64(r, row, 5);
    return len != (size_t)-1;
}

enum kb_err pg__secret_get(struct kb_store *s, const char *tenant, const char *vendor,
                           struct kb_tenant_secret **out)
{
    struct pg_args a = {0};
    pg_arg_text(&a, tenant);
    pg_arg_text(&a, vendor);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_SECRET_GET, &a, &err);
    if (err == KB_OK && PQntuples(r) == 1) {
        struct kb_tenant_secret *sec = kb_calloc(1, sizeof *sec);
        if (row_secret(r, 0, sec)) {
            *out = sec;
        } else {
            store_tenant_secret_free(sec);
            err = KB_E_STORE;
        }
    } else if (err == KB_OK) {
        err = KB_E_NOT_FOUND;
    }
    PQclear(r);
    return err;
}

enum kb_err pg__secret_delete(struct kb_store *s, const char *tenant, const char *vendor)
{
    struct pg_args a = {0};
    pg_arg_text(&a, tenant);
    pg_arg_text(&a, vendor);
    enum kb_err err;
    bool own;
    if ((err = pg__txn_begin(s, &own)) != KB_OK)
        return err;
    PGresult *r = pg__run(s, SQL_SECRET_DELETE, &a, &err);
    if (err == KB_OK && PQntuples(r) == 0)
        err = KB_E_NOT_FOUND;
    PQclear(r);
    if (err == KB_OK) {
        struct pg_args b = {0};
        pg_arg_text(&b, tenant);
        err = pg__do(s, SQL_SECRET_CHANGED, &b);
    }
    return pg__txn_end(s, own, err);
}

enum kb_err pg__secret_list(struct kb_store *s, const char *tenant, struct kb_tenant_secret **out,
                            size_t *n)
{
    struct pg_args a = {0};
    pg_arg_text(&a, tenant);
    enum kb_err err;
    PGresult *r = pg__run(s, SQL_SECRET_LIST, &a, &err);
    if (err == KB_OK) {
        int rows = PQntuples(r);
        struct kb_tenant_secret *v = kb_calloc(rows > 0 ? (size_t)rows : 1, sizeof *v);
        int i;
        for (i = 0; i < rows; i++)
            if (!row_secret(r, i, &v[i]))
                break;
        if (i < rows) {
            store_tenant_secret_list_free(v, (size_t)i + 1);
            err = KB_E_STORE;
        } else {
            *out = v;
            *n = (size_t)rows;
        }
    }
    PQclear(r);
    return err;
}
