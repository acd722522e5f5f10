/*
 * test_store_rate.c - the store's rate buckets (store_rate_take) and the
 * settlement of reservations a dead process left (store_spend_settle_orphans),
 * on each backend: a real SQLite file and a fresh PostgreSQL database
 * (pg_fixture.h). Times are passed in: nothing sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "pg_fixture.h"
#include "store/store.h"

#define DAY0 INT64_C(20000)
#define T0 INT64_C(1700000000000) /* ms */

struct fixture {
    bool pg; /* PostgreSQL; else SQLite */
    char dir[64], path[128];
    char url[256]; /* what store_open is given */
    struct kb_store *s;
};

static int setup_on(void **state, bool on_pg)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->pg = on_pg;
    if (on_pg) {
        assert_int_equal(test_pg_fresh(f->url, sizeof f->url), 0);
    } else {
        snprintf(f->dir, sizeof f->dir, "%s", "/tmp/kb-test-rate-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/keybrake.db", f->dir);
        snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
    }
    char *msg = NULL;
    assert_int_equal(store_open(f->url, "normal", true, &f->s, &msg), KB_OK);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_on(state, false);
}

static int setup_pg(void **state)
{
    return setup_on(state, true);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    if (f->pg) {
        free(f);
        return 0;
    }
    char p[192];
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static int64_t add_key(struct kb_store *s, const char *id, int64_t cap)
{
    struct kb_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", id);
    k.label = (char *)id;
    k.vendor = (char *)"stripe";
    k.allowed_endpoints = (char *)"[\"/v1/*\"]";
    k.metadata = (char *)"{}";
    k.daily_cap = cap;
    k.created_at = 100;
    k.expires_at = INT64_C(4000000000);
    uint8_t h[KB_HASH_LEN];
    static const uint8_t key[] = "k";
    crypto_hmac(key, 1, id, strlen(id), h);
    assert_int_equal(store_key_insert(s, &k, h), KB_OK);
    return k.seq;
}

/* 3 per second: three at once, the fourth waits a third of a second; the
 * bucket refills with time, and never above its size. */
static void test_rate_bucket(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_r", 1000000);
    int64_t retry = -1;
    for (int i = 0; i < 3; i++)
        assert_int_equal(store_rate_take(f->s, seq, 3, 1000, T0, &retry), KB_OK);
    assert_int_equal(store_rate_take(f->s, seq, 3, 1000, T0, &retry), KB_E_RATE_LIMITED);
    assert_true(retry > 0 && retry <= 334);
    /* a refused take changes nothing: still refused at the same instant */
    assert_int_equal(store_rate_take(f->s, seq, 3, 1000, T0, NULL), KB_E_RATE_LIMITED);
    /* one third of a second later, one more fits (and only one) */
    assert_int_equal(store_rate_take(f->s, seq, 3, 1000, T0 + 334, &retry), KB_OK);
    assert_int_equal(store_rate_take(f->s, seq, 3, 1000, T0 + 334, &retry), KB_E_RATE_LIMITED);
    /* a long pause refills to the bucket's size, not beyond */
    for (int i = 0; i < 3; i++)
        assert_int_equal(store_rate_take(f->s, seq, 3, 1000, T0 + 60000, NULL), KB_OK);
    assert_int_equal(store_rate_take(f->s, seq, 3, 1000, T0 + 60000, NULL), KB_E_RATE_LIMITED);
}

/* Buckets are per key; per minute works the same way. */
static void test_rate_per_key_and_minute(void **state)
{
    struct fixture *f = *state;
    int64_t a = add_key(f->s, "vk_a", 1000000), b = add_key(f->s, "vk_b", 1000000);
    int64_t retry = -1;
    assert_int_equal(store_rate_take(f->s, a, 1, 60000, T0, NULL), KB_OK);
    assert_int_equal(store_rate_take(f->s, a, 1, 60000, T0 + 1000, &retry), KB_E_RATE_LIMITED);
    assert_true(retry > 58000 && retry <= 59000);
    assert_int_equal(store_rate_take(f->s, b, 1, 60000, T0 + 1000, NULL), KB_OK);
    assert_int_equal(store_rate_take(f->s, a, 1, 60000, T0 + 60000, NULL), KB_OK);
}

static void usage(struct kb_store *s, const char *id, int64_t *spent, int64_t *reserved)
{
    struct kb_key *k = NULL;
    assert_int_equal(store_key_get(s, id, DAY0, &k), KB_OK);
    *spent = k->spent;
    *reserved = k->reserved;
    store_key_free(k);
}

/* Reservations open at a crash are charged their worst case at the next
 * start (a new connection under a new start id: a shared store settles
 * only earlier starts'), on every key and day; settled ones are left
 * alone; a second run finds nothing. */
static void test_orphans_settled_at_worst_case(void **state)
{
    struct fixture *f = *state;
    static int starts;
    char boot[32];
    snprintf(boot, sizeof boot, "rate-boot-%d", ++starts);
    assert_true(store_set_node("local", boot));
    store_close(f->s);
    assert_int_equal(store_open(f->url, "normal", true, &f->s, NULL), KB_OK);
    int64_t a = add_key(f->s, "vk_o1", 10000), b = add_key(f->s, "vk_o2", 10000);
    assert_int_equal(store_spend_reserve(f->s, a, DAY0, 300, 10000, NULL), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, a, DAY0, 200, 10000, NULL), KB_OK);
    assert_int_equal(store_spend_settle(f->s, a, DAY0, 200, 50, 10000, NULL), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, b, DAY0, 700, 10000, NULL), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, b, DAY0 - 1, 900, 10000, NULL), KB_OK);
    int64_t n = -1, spent, reserved;
    /* the crash, and the next start */
    snprintf(boot, sizeof boot, "rate-boot-%d", ++starts);
    assert_true(store_set_node("local", boot));
    store_close(f->s);
    assert_int_equal(store_open(f->url, "normal", true, &f->s, NULL), KB_OK);
    assert_int_equal(store_spend_settle_orphans(f->s, &n), KB_OK);
    assert_int_equal(n, 3); /* counters with something open: a today, b today and yesterday */
    usage(f->s, "vk_o1", &spent, &reserved);
    assert_int_equal(spent, 350); /* 50 settled + 300 open charged whole */
    assert_int_equal(reserved, 0);
    usage(f->s, "vk_o2", &spent, &reserved);
    assert_int_equal(spent, 700);
    assert_int_equal(reserved, 0);
    assert_int_equal(store_spend_settle_orphans(f->s, &n), KB_OK);
    assert_int_equal(n, 0);
}

#define CASES(X)                                                                                   \
    X(test_rate_bucket) X(test_rate_per_key_and_minute) X(test_orphans_settled_at_worst_case)
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown),
#define TPG(f) cmocka_unit_test_setup_teardown(f, setup_pg, teardown),

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {CASES(T)};
    const struct CMUnitTest pg_tests[] = {CASES(TPG)};
    int failed = cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("postgres", pg_tests, NULL, NULL);
    return failed;
}
