/*
 * test_store_alerts.c - the store conformance suite's threshold alert
 * cases (store.h, "threshold alerts"), on both backends (SQLite, and
 * PostgreSQL with a fresh database per test from pg_fixture.h):
 * thresholds stored and refused; each threshold recorded once per period
 * by the settlement that reaches it (several at once when one settlement
 * jumps over them), nothing below, nothing for a settlement of 0, again in
 * a new period; the delivery thread's claim with its lease, the record of
 * each attempt; and four connections settling on one budget at once
 * record each threshold exactly once, at exactly its amount.
 */
#include <pthread.h>
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

/* a budget of cap $10 (or `cap`) with thresholds, and one key on it */
static int64_t budget_with_key(struct kb_store *s, const char *name, enum kb_budget_window w,
                               int64_t cap, const int *t, int n)
{
    struct kb_budget b = {.name = (char *)name, .cap = cap, .window = w, .created_at = NOW};
    assert_int_equal(store_budget_insert(s, &b, NULL), KB_OK);
    assert_int_equal(store_budget_alerts_set(s, name, t, n), KB_OK);
    char id[32];
    snprintf(id, sizeof id, "vk_%s", name);
    int64_t key = add_key(s, id, "label");
    assert_int_equal(store_key_budget_add(s, key, name), KB_OK);
    return key;
}

/* reserve `res` at `now` on the key's budgets, settle at `act` */
static void spend(struct kb_store *s, int64_t key, int64_t now, int64_t res, int64_t act)
{
    struct kb_budget_hold *h = NULL;
    size_t n = 0;
    assert_int_equal(store_budget_reserve(s, key, now, res, &h, &n, NULL), KB_OK);
    assert_int_equal(store_budget_settle(s, h, n, res, act), KB_OK);
    free(h);
}

static size_t alerts(struct kb_store *s, const char *budget, struct kb_alert **v)
{
    size_t n = 0;
    assert_int_equal(store_alert_list(s, 0, 100, budget, v, &n), KB_OK);
    return n;
}

static void test_thresholds_stored_and_refused(void **state)
{
    struct fixture *f = *state;
    const int t[] = {50, 80, 100};
    budget_with_key(f->s, "b", KB_WIN_DAY, 10000000, t, 3);
    struct kb_budget *b = NULL;
    assert_int_equal(store_budget_get(f->s, "b", NOW, &b), KB_OK);
    assert_int_equal(b->nthresholds, 3);
    assert_int_equal(b->thresholds[0], 50);
    assert_int_equal(b->thresholds[2], 100);
    store_budget_free(b);
    const int bad1[] = {80, 50}, bad2[] = {0}, bad3[] = {101}, bad4[] = {50, 50};
    const int many[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    assert_int_equal(store_budget_alerts_set(f->s, "b", bad1, 2), KB_E_INVALID);
    assert_int_equal(store_budget_alerts_set(f->s, "b", bad2, 1), KB_E_INVALID);
    assert_int_equal(store_budget_alerts_set(f->s, "b", bad3, 1), KB_E_INVALID);
    assert_int_equal(store_budget_alerts_set(f->s, "b", bad4, 2), KB_E_INVALID);
    assert_int_equal(store_budget_alerts_set(f->s, "b", many, 11), KB_E_INVALID);
    assert_int_equal(store_budget_alerts_set(f->s, "nope", t, 3), KB_E_NOT_FOUND);
    assert_int_equal(store_budget_alerts_set(f->s, "b", NULL, 0), KB_OK);
    assert_int_equal(store_budget_get(f->s, "b", NOW, &b), KB_OK);
    assert_int_equal(b->nthresholds, 0);
    store_budget_free(b);
}

static void test_crossings_once_each(void **state)
{
    struct fixture *f = *state;
    const int t[] = {50, 80, 100};
    int64_t key = budget_with_key(f->s, "b", KB_WIN_DAY, 10000000, t, 3);
    struct kb_alert *v = NULL;
    spend(f->s, key, NOW, 5000000, 4999999); /* just below 50% */
    assert_int_equal(alerts(f->s, NULL, &v), 0);
    store_alert_list_free(v, 0);
    spend(f->s, key, NOW, 1000000, 1);       /* exactly 50% */
    spend(f->s, key, NOW, 1000000, 0);       /* nothing settled: nothing new */
    spend(f->s, key, NOW, 4000000, 3500000); /* 85%: 80 */
    spend(f->s, key, NOW, 1500000, 1500000); /* 100% */
    size_t n = alerts(f->s, NULL, &v);
    assert_int_equal(n, 3);
    /* newest first */
    assert_int_equal(v[0].threshold, 100);
    assert_int_equal(v[1].threshold, 80);
    assert_int_equal(v[2].threshold, 50);
    assert_int_equal(v[2].spent, 5000000);
    assert_int_equal(v[1].spent, 8500000);
    assert_int_equal(v[0].spent, 10000000);
    assert_int_equal(v[0].cap, 10000000);
    assert_string_equal(v[0].budget, "b");
    assert_int_equal(v[0].window, KB_WIN_DAY);
    assert_int_equal(v[0].period, NOW / 86400);
    assert_int_equal(v[0].status, KB_ALERT_PENDING);
    assert_int_equal(v[0].attempts, 0);
    store_alert_list_free(v, n);

    /* the next day's period alerts again; one settlement over two thresholds records both */
    spend(f->s, key, NOW + 86400, 9000000, 9000000);
    n = alerts(f->s, NULL, &v);
    assert_int_equal(n, 5);
    assert_int_equal(v[0].threshold, 80);
    assert_int_equal(v[1].threshold, 50);
    assert_int_equal(v[0].period, NOW / 86400 + 1);
    store_alert_list_free(v, n);
}

static void test_claim_lease_record(void **state)
{
    struct fixture *f = *state;
    const int t[] = {50};
    int64_t key = budget_with_key(f->s, "b", KB_WIN_TOTAL, 10000000, t, 1);
    int64_t now = NOW * 1000;
    struct kb_alert *a = NULL;
    assert_int_equal(store_alert_claim(f->s, now, 1000, &a), KB_E_NOT_FOUND);
    spend(f->s, key, NOW, 6000000, 6000000);
    struct kb_alert *v = NULL;
    assert_int_equal(alerts(f->s, NULL, &v), 1);
    int64_t created = v[0].created_ms;
    store_alert_list_free(v, 1);
    assert_int_equal(store_alert_claim(f->s, created, 1000, &a), KB_OK);
    assert_int_equal(a->attempts, 1);
    assert_int_equal(a->threshold, 50);
    int64_t id = a->id;
    store_alert_free(a);
    /* leased: no second claim until the lease ends */
    assert_int_equal(store_alert_claim(f->s, created + 999, 1000, &a), KB_E_NOT_FOUND);
    assert_int_equal(store_alert_claim(f->s, created + 1000, 1000, &a), KB_OK);
    assert_int_equal(a->attempts, 2);
    store_alert_free(a);
    assert_int_equal(
        store_alert_record(f->s, id, 500, "{\"attempt\":2}\n", KB_ALERT_PENDING, created + 5000, 0),
        KB_OK);
    assert_int_equal(store_alert_claim(f->s, created + 4999, 1000, &a), KB_E_NOT_FOUND);
    assert_int_equal(store_alert_claim(f->s, created + 5000, 1000, &a), KB_OK);
    store_alert_free(a);
    assert_int_equal(store_alert_record(f->s, id, 200, "{\"attempt\":3}\n", KB_ALERT_DELIVERED, 0,
                                        created + 6000),
                     KB_OK);
    assert_int_equal(store_alert_claim(f->s, created + 100000000, 1000, &a), KB_E_NOT_FOUND);
    assert_int_equal(alerts(f->s, "b", &v), 1);
    assert_int_equal(v[0].status, KB_ALERT_DELIVERED);
    assert_int_equal(v[0].attempts, 3);
    assert_int_equal(v[0].last_status, 200);
    assert_int_equal(v[0].done_ms, created + 6000);
    assert_string_equal(v[0].log, "{\"attempt\":2}\n{\"attempt\":3}\n");
    store_alert_list_free(v, 1);
    assert_int_equal(alerts(f->s, "other", &v), 0);
    store_alert_list_free(v, 0);
    assert_int_equal(store_alert_record(f->s, 999, 200, "", KB_ALERT_DELIVERED, 0, 1),
                     KB_E_NOT_FOUND);
}

#define RACERS 4
#define PER 30 /* $1 settlements per racer: 120 tries on a cap of $100 */

struct racer {
    const char *url;
    int64_t key;
    pthread_barrier_t *start;
    int errors, ok;
};

/* Its own connection: reserve $1 and settle it, PER times. */
static void *race(void *arg)
{
    struct racer *r = arg;
    struct kb_store *s = NULL;
    if (store_open(r->url, "normal", false, &s, NULL) != KB_OK)
        r->errors++;
    pthread_barrier_wait(r->start);
    for (int i = 0; s && i < PER; i++) {
        struct kb_budget_hold *h = NULL;
        size_t n = 0;
        enum kb_err err = store_budget_reserve(s, r->key, NOW, 1000000, &h, &n, NULL);
        if (err == KB_E_BUDGET_EXHAUSTED)
            continue;
        if (err != KB_OK || store_budget_settle(s, h, n, 1000000, 1000000) != KB_OK)
            r->errors++;
        else
            r->ok++;
        free(h);
    }
    store_close(s);
    return NULL;
}

static void test_concurrent_settles_alert_once(void **state)
{
    struct fixture *f = *state;
    const int t[] = {50, 80, 100};
    int64_t key = budget_with_key(f->s, "b", KB_WIN_MONTH, 100000000, t, 3);
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, RACERS), 0);
    struct racer r[RACERS];
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        r[i] = (struct racer){.url = f->url, .key = key, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < RACERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(r[i].errors, 0);
        ok += r[i].ok;
    }
    pthread_barrier_destroy(&start);
    assert_int_equal(ok, 100);
    struct kb_alert *v = NULL;
    size_t n = alerts(f->s, NULL, &v);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(v[i].threshold, t[2 - i]);
        /* recorded by the settlement that reached it: exactly there */
        assert_int_equal(v[i].spent, (int64_t)t[2 - i] * 1000000);
    }
    store_alert_list_free(v, n);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_sqlite, teardown)
#define P(fn)                                                                                      \
    {                                                                                              \
        "pg: " #fn, fn, setup_pg, teardown, NULL                                                   \
    }
    const struct CMUnitTest tests[] = {
        T(test_thresholds_stored_and_refused),
        T(test_crossings_once_each),
        T(test_claim_lease_record),
        T(test_concurrent_settles_alert_once),
        P(test_thresholds_stored_and_refused),
        P(test_crossings_once_each),
        P(test_claim_lease_record),
        P(test_concurrent_settles_alert_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
