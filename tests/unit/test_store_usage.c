/*
 * test_store_usage.c - the store conformance suite's usage cases
 * (store.h, "usage"), on both backends (SQLite, and PostgreSQL with a
 * fresh database per test from pg_fixture.h): daily rows grouped by key,
 * label, label prefix and budget (through child budgets, each key once),
 * the range and the paging, and the refusals.
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
#define DAY (NOW / 86400)

static int64_t add_key(struct kb_store *s, const char *id, const char *label)
{
    struct kb_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", id);
    k.label = (char *)label;
    k.vendor = (char *)"stripe";
    k.allowed_endpoints = (char *)"[\"POST /v1/charges\"]";
    k.metadata = (char *)"{}";
    k.daily_cap = INT64_C(1000000000);
    k.created_at = NOW;
    k.expires_at = NOW + 86400 * 365;
    uint8_t h[KB_HASH_LEN];
    static const uint8_t key[] = "test-server-key";
    crypto_hmac(key, sizeof key - 1, id, strlen(id), h);
    assert_int_equal(store_key_insert(s, &k, h), KB_OK);
    return k.seq;
}

/* one request on key seq on `day`: reserved `res`, settled at `act` (act < 0: left in flight) */
static void spend(struct kb_store *s, int64_t seq, int64_t day, int64_t res, int64_t act)
{
    assert_int_equal(store_spend_reserve(s, seq, day, res, INT64_C(1000000000), NULL), KB_OK);
    if (act >= 0)
        assert_int_equal(store_spend_settle(s, seq, day, res, act, INT64_C(1000000000), NULL),
                         KB_OK);
}

static void add_budget(struct kb_store *s, const char *name, const char *parent)
{
    struct kb_budget b = {.name = (char *)name,
                          .cap = INT64_C(100000000),
                          .window = KB_WIN_MONTH,
                          .parent = (char *)parent,
                          .created_at = NOW};
    assert_int_equal(store_budget_insert(s, &b, NULL), KB_OK);
}

/* keys a1, a2 (labels agent-1, agent-2, budget "user" under "team"), b1
 * (label batch-1, budget "team"); spend over DAY and DAY + 1 */
static void populate(struct kb_store *s)
{
    int64_t a1 = add_key(s, "vk_a1", "agent-1"), a2 = add_key(s, "vk_a2", "agent-2"),
            b1 = add_key(s, "vk_b1", "batch-1");
    add_budget(s, "team", NULL);
    add_budget(s, "user", "team");
    assert_int_equal(store_key_budget_add(s, a1, "user"), KB_OK);
    assert_int_equal(store_key_budget_add(s, a2, "user"), KB_OK);
    assert_int_equal(store_key_budget_add(s, a2, "team"), KB_OK); /* two paths: counted once */
    assert_int_equal(store_key_budget_add(s, b1, "team"), KB_OK);
    spend(s, a1, DAY, 2000000, 1000000);
    spend(s, a1, DAY, 2000000, 500000);
    spend(s, a2, DAY, 3000000, 3000000);
    spend(s, a2, DAY + 1, 4000000, -1); /* in flight */
    spend(s, b1, DAY + 1, 1000000, 250000);
    spend(s, b1, DAY - 5, 1000000, 1000000); /* before the range asked below */
}

struct want {
    int64_t day;
    const char *group;
    int64_t spent, reserved, requests;
};

static void check(struct kb_store *s, const struct kb_usage_query *q, const struct want *w,
                  size_t nw)
{
    struct kb_usage_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(store_usage(s, q, &rows, &n), KB_OK);
    assert_int_equal(n, nw);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i].day, w[i].day);
        assert_string_equal(rows[i].group, w[i].group);
        assert_int_equal(rows[i].spent, w[i].spent);
        assert_int_equal(rows[i].reserved, w[i].reserved);
        assert_int_equal(rows[i].requests, w[i].requests);
    }
    store_usage_free(rows, n);
}

static void test_groups(void **state)
{
    struct fixture *f = *state;
    populate(f->s);
    struct kb_usage_query q = {
        .group = KB_USAGE_KEY, .from_day = DAY, .to_day = DAY + 1, .limit = 100};
    const struct want by_key[] = {{DAY, "vk_a1", 1500000, 0, 2},
                                  {DAY, "vk_a2", 3000000, 0, 1},
                                  {DAY + 1, "vk_a2", 0, 4000000, 1},
                                  {DAY + 1, "vk_b1", 250000, 0, 1}};
    check(f->s, &q, by_key, 4);

    q.group = KB_USAGE_LABEL;
    q.label_prefix = "agent-";
    const struct want by_label[] = {{DAY, "agent-1", 1500000, 0, 2},
                                    {DAY, "agent-2", 3000000, 0, 1},
                                    {DAY + 1, "agent-2", 0, 4000000, 1}};
    check(f->s, &q, by_label, 3);

    q.group = KB_USAGE_LABEL_PREFIX;
    const struct want by_prefix[] = {{DAY, "agent-", 4500000, 0, 3},
                                     {DAY + 1, "agent-", 0, 4000000, 1}};
    check(f->s, &q, by_prefix, 2);

    /* team: its own keys and user's (a child), a2 once though it names both */
    q.group = KB_USAGE_BUDGET;
    q.label_prefix = NULL;
    const struct want by_budget[] = {{DAY, "team", 4500000, 0, 3},
                                     {DAY, "user", 4500000, 0, 3},
                                     {DAY + 1, "team", 250000, 4000000, 2},
                                     {DAY + 1, "user", 0, 4000000, 1}};
    check(f->s, &q, by_budget, 4);
    q.budget = "user";
    const struct want one_budget[] = {{DAY, "user", 4500000, 0, 3},
                                      {DAY + 1, "user", 0, 4000000, 1}};
    check(f->s, &q, one_budget, 2);

    /* the range: the earlier day alone */
    q = (struct kb_usage_query){
        .group = KB_USAGE_KEY, .from_day = DAY - 5, .to_day = DAY - 1, .limit = 10};
    const struct want early[] = {{DAY - 5, "vk_b1", 1000000, 0, 1}};
    check(f->s, &q, early, 1);
}

/* by tenant: a tenant's keys under its id, root's under "" */
static void test_tenant_group(void **state)
{
    struct fixture *f = *state;
    populate(f->s);
    struct kb_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", "vk_t1");
    k.label = (char *)"agent-t";
    k.vendor = (char *)"stripe";
    k.allowed_endpoints = (char *)"[\"POST /v1/charges\"]";
    k.metadata = (char *)"{}";
    k.daily_cap = INT64_C(1000000000);
    k.created_at = NOW;
    k.expires_at = NOW + 86400 * 365;
    k.tenant = (char *)"tn_one";
    uint8_t h[KB_HASH_LEN];
    static const uint8_t key[] = "test-server-key";
    crypto_hmac(key, sizeof key - 1, "vk_t1", 5, h);
    assert_int_equal(store_key_insert(f->s, &k, h), KB_OK);
    spend(f->s, k.seq, DAY, 700000, 600000);
    struct kb_usage_query q = {
        .group = KB_USAGE_TENANT, .from_day = DAY, .to_day = DAY + 1, .limit = 100};
    const struct want by_tenant[] = {
        {DAY, "", 4500000, 0, 3}, {DAY, "tn_one", 600000, 0, 1}, {DAY + 1, "", 250000, 4000000, 2}};
    check(f->s, &q, by_tenant, 3);
}

static void test_paging_and_refusals(void **state)
{
    struct fixture *f = *state;
    populate(f->s);
    struct kb_usage_query q = {
        .group = KB_USAGE_KEY, .from_day = DAY, .to_day = DAY + 1, .limit = 3, .offset = 0};
    struct kb_usage_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(store_usage(f->s, &q, &rows, &n), KB_OK);
    assert_int_equal(n, 3);
    store_usage_free(rows, n);
    q.offset = 3;
    const struct want rest[] = {{DAY + 1, "vk_b1", 250000, 0, 1}};
    check(f->s, &q, rest, 1);

    struct kb_usage_query bad[] = {
        {.group = KB_USAGE_KEY, .from_day = DAY, .to_day = DAY - 1, .limit = 1},
        {.group = KB_USAGE_KEY, .from_day = DAY, .to_day = DAY + KB_USAGE_DAYS_MAX, .limit = 1},
        {.group = KB_USAGE_KEY, .from_day = DAY, .to_day = DAY, .limit = 0},
        {.group = KB_USAGE_KEY, .from_day = DAY, .to_day = DAY, .limit = KB_USAGE_LIMIT_MAX + 2},
        {.group = KB_USAGE_KEY, .from_day = DAY, .to_day = DAY, .limit = 1, .offset = -1},
        {.group = KB_USAGE_LABEL_PREFIX, .from_day = DAY, .to_day = DAY, .limit = 1},
        {.group = (enum kb_usage_group)9, .from_day = DAY, .to_day = DAY, .limit = 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(store_usage(f->s, &bad[i], &rows, &n), KB_E_INVALID);
    /* a prefix with LIKE's wildcards is compared as it is */
    q = (struct kb_usage_query){.group = KB_USAGE_KEY,
                                .from_day = DAY,
                                .to_day = DAY + 1,
                                .label_prefix = "agent_",
                                .limit = 10};
    check(f->s, &q, NULL, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_sqlite, teardown)
#define P(fn)                                                                                      \
    {                                                                                              \
        "pg: " #fn, fn, setup_pg, teardown, NULL                                                   \
    }
    const struct CMUnitTest tests[] = {
        T(test_groups), T(test_tenant_group), T(test_paging_and_refusals),
        P(test_groups), P(test_tenant_group), P(test_paging_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
