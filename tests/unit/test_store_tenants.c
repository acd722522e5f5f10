/*
 * test_store_tenants.c - the store conformance suite's tenant cases
 * (store.h, "tenants"), run on both backends (SQLite, and PostgreSQL with
 * a fresh database per test from pg_fixture.h): tenants created, read,
 * listed and deleted (refused while they own an active key; their tokens
 * revoked and secrets erased with them; a live name unique, a deleted
 * one's free again); scoped admin tokens inserted, looked up (a revoked
 * one is not found), listed per tenant and revoked only within their
 * tenant; keys carrying their tenant through insert, get and the
 * tenant filter, and a bulk revocation limited to one tenant; tenant
 * secrets put, replaced, read, listed and deleted, bytes intact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "store_fixture.h"
#include "store/store.h"

#define NOW INT64_C(1764547200) /* 2025-12-01 00:00:00 UTC */

static void add_tenant(struct fixture *f, const char *id, const char *name)
{
    struct kb_tenant t = {0};
    snprintf(t.id, sizeof t.id, "%s", id);
    t.name = (char *)name;
    t.created_at = NOW;
    assert_int_equal(store_tenant_insert(f->s, &t), KB_OK);
    assert_true(t.seq > 0);
}

static int64_t add_key(struct fixture *f, const char *id, const char *label, const char *tenant)
{
    struct kb_key k = {0};
    snprintf(k.id, sizeof k.id, "%s", id);
    k.label = (char *)label;
    k.vendor = (char *)"stripe";
    k.allowed_endpoints = (char *)"[]";
    k.metadata = (char *)"{}";
    k.daily_cap = 1000;
    k.created_at = NOW;
    k.expires_at = NOW + 3600;
    k.tenant = (char *)tenant;
    uint8_t hash[KB_HASH_LEN];
    crypto_hmac((const uint8_t *)"k", 1, id, strlen(id), hash);
    assert_int_equal(store_key_insert(f->s, &k, hash), KB_OK);
    return k.seq;
}

static void add_token(struct fixture *f, const char *id, const char *tenant, uint8_t *hash)
{
    struct kb_admin_token t = {0};
    snprintf(t.id, sizeof t.id, "%s", id);
    t.label = (char *)"ops";
    t.tenant = (char *)tenant;
    t.created_at = NOW;
    crypto_hmac((const uint8_t *)"t", 1, id, strlen(id), hash);
    assert_int_equal(store_admin_token_insert(f->s, &t, hash), KB_OK);
}

static void test_tenants_crud(void **state)
{
    struct fixture *f = *state;
    add_tenant(f, "tn_a", "acme");
    add_tenant(f, "tn_b", "globex");
    struct kb_tenant dup = {.id = "tn_c", .name = (char *)"acme", .created_at = NOW};
    assert_int_equal(store_tenant_insert(f->s, &dup), KB_E_EXISTS); /* live name taken */
    struct kb_tenant *t = NULL;
    assert_int_equal(store_tenant_get(f->s, "tn_a", &t), KB_OK);
    assert_string_equal(t->name, "acme");
    assert_int_equal(t->created_at, NOW);
    store_tenant_free(t);
    assert_int_equal(store_tenant_get(f->s, "tn_zz", &t), KB_E_NOT_FOUND);
    struct kb_tenant *v = NULL;
    size_t n = 0;
    assert_int_equal(store_tenant_list(f->s, 0, 10, &v, &n), KB_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].id, "tn_a");
    assert_string_equal(v[1].id, "tn_b");
    int64_t after = v[0].seq;
    store_tenant_list_free(v, n);
    assert_int_equal(store_tenant_list(f->s, after, 10, &v, &n), KB_OK);
    assert_int_equal(n, 1);
    store_tenant_list_free(v, n);
    assert_int_equal(store_tenant_list(f->s, 0, 0, &v, &n), KB_E_INVALID);

    /* an active key holds the tenant; a revoked one does not */
    add_key(f, "vk_a1", "a1", "tn_a");
    assert_int_equal(store_tenant_delete(f->s, "tn_a", NOW), KB_E_TENANT_IN_USE);
    assert_int_equal(store_tenant_get(f->s, "tn_a", &t), KB_OK);
    store_tenant_free(t);
    uint8_t h[KB_HASH_LEN];
    add_token(f, "at_a", "tn_a", h);
    struct kb_tenant_secret sec = {.tenant = (char *)"tn_a",
                                   .vendor = (char *)"stripe",
                                   .key_id = (char *)"k1",
                                   .sealed = (uint8_t *)"xyz",
                                   .sealed_len = 3,
                                   .updated_at = NOW};
    assert_int_equal(store_tenant_secret_put(f->s, &sec), KB_OK);
    assert_int_equal(store_key_revoke(f->s, "vk_a1", NOW, NULL), KB_OK);
    assert_int_equal(store_tenant_delete(f->s, "tn_a", NOW + 1), KB_OK);
    assert_int_equal(store_tenant_get(f->s, "tn_a", &t), KB_E_NOT_FOUND);
    assert_int_equal(store_tenant_delete(f->s, "tn_a", NOW + 2), KB_E_NOT_FOUND);
    struct kb_admin_token *tok = NULL;
    assert_int_equal(store_admin_token_lookup(f->s, h, &tok), KB_E_NOT_FOUND); /* revoked */
    struct kb_tenant_secret *got = NULL;
    assert_int_equal(store_tenant_secret_get(f->s, "tn_a", "stripe", &got), KB_E_NOT_FOUND);
    /* a token of a deleted tenant, however it got there, is not valid */
    uint8_t late[KB_HASH_LEN];
    add_token(f, "at_late", "tn_a", late);
    assert_int_equal(store_admin_token_lookup(f->s, late, &tok), KB_E_NOT_FOUND);
    /* the name is free again */
    add_tenant(f, "tn_a2", "acme");
}

static void test_admin_tokens(void **state)
{
    struct fixture *f = *state;
    add_tenant(f, "tn_a", "acme");
    add_tenant(f, "tn_b", "globex");
    uint8_t ha[KB_HASH_LEN], hb[KB_HASH_LEN], hr[KB_HASH_LEN];
    add_token(f, "at_a", "tn_a", ha);
    add_token(f, "at_b", "tn_b", hb);
    add_token(f, "at_r", NULL, hr);
    struct kb_admin_token dup = {.id = "at_a", .label = (char *)"x", .created_at = NOW};
    uint8_t other[KB_HASH_LEN] = {1};
    assert_int_equal(store_admin_token_insert(f->s, &dup, other), KB_E_EXISTS);
    /* the bootstrap path still works, and gets a public id */
    uint8_t boot[KB_HASH_LEN] = {7};
    assert_int_equal(store_admin_token_add(f->s, boot, "bootstrap", NOW), KB_OK);
    assert_int_equal(store_admin_token_check(f->s, boot), KB_OK);

    struct kb_admin_token *t = NULL;
    assert_int_equal(store_admin_token_lookup(f->s, ha, &t), KB_OK);
    assert_string_equal(t->id, "at_a");
    assert_string_equal(t->tenant, "tn_a");
    assert_int_equal(t->revoked_at, 0);
    store_admin_token_free(t);
    assert_int_equal(store_admin_token_lookup(f->s, hr, &t), KB_OK);
    assert_null(t->tenant);
    store_admin_token_free(t);
    assert_int_equal(store_admin_token_lookup(f->s, boot, &t), KB_OK);
    assert_true(strncmp(t->id, "at_", 3) == 0 && strlen(t->id) > 3);
    store_admin_token_free(t);

    struct kb_admin_token *v = NULL;
    size_t n = 0;
    assert_int_equal(store_admin_token_list(f->s, false, "tn_a", &v, &n), KB_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].id, "at_a");
    store_admin_token_list_free(v, n);
    assert_int_equal(store_admin_token_list(f->s, true, NULL, &v, &n), KB_OK);
    assert_int_equal(n, 4);
    store_admin_token_list_free(v, n);
    assert_int_equal(store_admin_token_list(f->s, false, NULL, &v, &n), KB_OK);
    assert_int_equal(n, 2); /* root's: at_r and the bootstrap one */
    store_admin_token_list_free(v, n);

    /* a tenant revokes only its own */
    assert_int_equal(store_admin_token_revoke(f->s, "at_b", false, "tn_a", NOW), KB_E_NOT_FOUND);
    assert_int_equal(store_admin_token_lookup(f->s, hb, &t), KB_OK);
    store_admin_token_free(t);
    assert_int_equal(store_admin_token_revoke(f->s, "at_a", false, "tn_a", NOW), KB_OK);
    assert_int_equal(store_admin_token_lookup(f->s, ha, &t), KB_E_NOT_FOUND);
    assert_int_equal(store_admin_token_check(f->s, ha), KB_E_NOT_FOUND);
    assert_int_equal(store_admin_token_revoke(f->s, "at_a", false, "tn_a", NOW + 5), KB_OK);
    assert_int_equal(store_admin_token_list(f->s, false, "tn_a", &v, &n), KB_OK);
    assert_int_equal(v[0].revoked_at, NOW); /* the first revocation time stays */
    store_admin_token_list_free(v, n);
    /* root revokes any */
    assert_int_equal(store_admin_token_revoke(f->s, "at_b", true, NULL, NOW), KB_OK);
    assert_int_equal(store_admin_token_lookup(f->s, hb, &t), KB_E_NOT_FOUND);
    assert_int_equal(store_admin_token_revoke(f->s, "at_none", true, NULL, NOW), KB_E_NOT_FOUND);
}

static void test_keys_carry_tenant(void **state)
{
    struct fixture *f = *state;
    add_tenant(f, "tn_a", "acme");
    add_tenant(f, "tn_b", "globex");
    add_key(f, "vk_a", "job-a", "tn_a");
    add_key(f, "vk_b", "job-b", "tn_b");
    add_key(f, "vk_r", "job-r", NULL);
    struct kb_key *k = NULL;
    assert_int_equal(store_key_get(f->s, "vk_a", NOW / 86400, &k), KB_OK);
    assert_string_equal(k->tenant, "tn_a");
    store_key_free(k);
    assert_int_equal(store_key_get(f->s, "vk_r", NOW / 86400, &k), KB_OK);
    assert_null(k->tenant);
    store_key_free(k);
    struct kb_key_filter flt = {.tenant = "tn_b", .now = NOW, .limit = 10};
    struct kb_key *v = NULL;
    size_t n = 0;
    assert_int_equal(store_key_list(f->s, &flt, &v, &n), KB_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].id, "vk_b");
    store_key_list_free(v, n);
    flt.tenant = NULL;
    assert_int_equal(store_key_list(f->s, &flt, &v, &n), KB_OK);
    assert_int_equal(n, 3);
    store_key_list_free(v, n);

    int64_t count = 0;
    assert_int_equal(store_key_revoke_prefix_in(f->s, "tn_a", "job-", NOW, &count, NULL), KB_OK);
    assert_int_equal(count, 1);
    assert_int_equal(store_key_get(f->s, "vk_b", NOW / 86400, &k), KB_OK);
    assert_int_equal(k->revoked_at, 0);
    store_key_free(k);
    assert_int_equal(store_key_revoke_prefix(f->s, "job-", NOW, &count, NULL), KB_OK);
    assert_int_equal(count, 2);
}

static void test_secrets(void **state)
{
    struct fixture *f = *state;
    add_tenant(f, "tn_a", "acme");
    uint8_t blob[300];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (uint8_t)i; /* NULs and high bytes survive */
    struct kb_tenant_secret sec = {.tenant = (char *)"tn_a",
                                   .vendor = (char *)"openai",
                                   .key_id = (char *)"abcd1234",
                                   .sealed = blob,
                                   .sealed_len = sizeof blob,
                                   .account = NULL,
                                   .updated_at = NOW};
    assert_int_equal(store_tenant_secret_put(f->s, &sec), KB_OK);
    struct kb_tenant_secret *got = NULL;
    assert_int_equal(store_tenant_secret_get(f->s, "tn_a", "openai", &got), KB_OK);
    assert_int_equal(got->sealed_len, sizeof blob);
    assert_memory_equal(got->sealed, blob, sizeof blob);
    assert_string_equal(got->key_id, "abcd1234");
    assert_null(got->account);
    store_tenant_secret_free(got);
    /* replaced in place */
    sec.key_id = (char *)"ffff0000";
    sec.sealed_len = 10;
    sec.account = (char *)"acct_1";
    sec.updated_at = NOW + 9;
    assert_int_equal(store_tenant_secret_put(f->s, &sec), KB_OK);
    assert_int_equal(store_tenant_secret_get(f->s, "tn_a", "openai", &got), KB_OK);
    assert_int_equal(got->sealed_len, 10);
    assert_string_equal(got->key_id, "ffff0000");
    assert_string_equal(got->account, "acct_1");
    assert_int_equal(got->updated_at, NOW + 9);
    store_tenant_secret_free(got);
    sec.vendor = (char *)"stripe";
    assert_int_equal(store_tenant_secret_put(f->s, &sec), KB_OK);
    struct kb_tenant_secret *v = NULL;
    size_t n = 0;
    assert_int_equal(store_tenant_secret_list(f->s, "tn_a", &v, &n), KB_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].vendor, "openai");
    assert_string_equal(v[1].vendor, "stripe");
    store_tenant_secret_list_free(v, n);
    assert_int_equal(store_tenant_secret_list(f->s, NULL, &v, &n), KB_OK);
    assert_int_equal(n, 2);
    store_tenant_secret_list_free(v, n);
    assert_int_equal(store_tenant_secret_delete(f->s, "tn_a", "openai"), KB_OK);
    assert_int_equal(store_tenant_secret_delete(f->s, "tn_a", "openai"), KB_E_NOT_FOUND);
    assert_int_equal(store_tenant_secret_get(f->s, "tn_a", "openai", &got), KB_E_NOT_FOUND);
    sec.sealed_len = 0;
    assert_int_equal(store_tenant_secret_put(f->s, &sec), KB_E_INVALID);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_sqlite, teardown)
#define P(fn)                                                                                      \
    {                                                                                              \
        "pg: " #fn, fn, setup_pg, teardown, NULL                                                   \
    }
    const struct CMUnitTest tests[] = {
        T(test_tenants_crud), T(test_admin_tokens), T(test_keys_carry_tenant), T(test_secrets),
        P(test_tenants_crud), P(test_admin_tokens), P(test_keys_carry_tenant), P(test_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
