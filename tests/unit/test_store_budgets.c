/*
 * test_store_budgets.c - the store conformance suite's budget cases
 * (store.h, "budgets"): create, read, list, update and delete with their
 * refusals (duplicate names, unknown parents, cycles, chains longer than
 * KB_BUDGET_DEPTH_MAX, deleting one still in use); windows and periods;
 * reservations across a key's chains, all or nothing; settlement on the
 * holds a reservation returned, even after the chain changed; the orphan
 * settlement at start; and the money guarantee under threads: four
 * connections race reservations across keys on one shared budget and the
 * totals come out exact.
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
#include "store/store.h"

#define NOW INT64_C(1764547200) /* 2025-12-01 00:00:00 UTC */

struct fixture {
    char dir[64];
    char path[128];
    struct kb_store *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "%s", "/tmp/kb-test-budgets-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/keybrake.db", f->dir);
    assert_int_equal(store_open(f->path, "normal", true, &f->s, NULL), KB_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    static const char *const names[] = {"keybrake.db", "keybrake.db-wal", "keybrake.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static int64_t add_key(struct kb_store *s, const char *id)
{
    struct kb_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", id);
    k.label = (char *)"label";
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

static enum kb_err add_budget(struct kb_store *s, const char *name, int64_t cap,
                              enum kb_budget_window w, const char *parent, char **msg)
{
    struct kb_budget b = {
        .name = (char *)name, .cap = cap, .window = w, .parent = (char *)parent, .created_at = NOW};
    return store_budget_insert(s, &b, msg);
}

static void usage(struct kb_store *s, const char *name, int64_t now, int64_t *spent,
                  int64_t *reserved)
{
    struct kb_budget *b = NULL;
    assert_int_equal(store_budget_get(s, name, now, &b), KB_OK);
    *spent = b->spent;
    *reserved = b->reserved;
    store_budget_free(b);
}

#define ASSERT_BUDGET(s, name, now, sp, rs)                                                        \
    do {                                                                                           \
        int64_t sp_, rs_;                                                                          \
        usage(s, name, now, &sp_, &rs_);                                                           \
        assert_int_equal(sp_, sp);                                                                 \
        assert_int_equal(rs_, rs);                                                                 \
    } while (0)

static void test_periods(void **state)
{
    (void)state;
    assert_int_equal(store_budget_period(KB_WIN_TOTAL, NOW), 0);
    assert_int_equal(store_budget_period(KB_WIN_DAY, NOW), NOW / 86400);
    /* 2025-12 is month 55 * 12 + 11 since 1970-01 */
    assert_int_equal(store_budget_period(KB_WIN_MONTH, NOW), 55 * 12 + 11);
    assert_int_equal(store_budget_period(KB_WIN_MONTH, NOW - 1), 55 * 12 + 10);
    assert_int_equal(store_budget_period(KB_WIN_MONTH, 0), 0);
}

static void test_crud(void **state)
{
    struct fixture *f = *state;
    char *msg = NULL;
    assert_int_equal(add_budget(f->s, "team", 500, KB_WIN_MONTH, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "user-42", 100, KB_WIN_DAY, "team", NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "team", 1, KB_WIN_DAY, NULL, &msg), KB_E_EXISTS);
    assert_non_null(msg);
    free(msg);
    msg = NULL;
    assert_int_equal(add_budget(f->s, "x", 1, KB_WIN_DAY, "nope", &msg), KB_E_NOT_FOUND);
    assert_non_null(strstr(msg, "nope"));
    free(msg);

    struct kb_budget *b = NULL;
    assert_int_equal(store_budget_get(f->s, "user-42", NOW, &b), KB_OK);
    assert_string_equal(b->name, "user-42");
    assert_string_equal(b->parent, "team");
    assert_int_equal(b->cap, 100);
    assert_int_equal(b->window, KB_WIN_DAY);
    assert_int_equal(b->spent + b->reserved + b->requests + b->keys, 0);
    store_budget_free(b);
    assert_int_equal(store_budget_get(f->s, "ghost", NOW, &b), KB_E_NOT_FOUND);

    struct kb_budget *v = NULL;
    size_t n = 0;
    assert_int_equal(store_budget_list(f->s, 0, 10, NOW, &v, &n), KB_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "team");
    assert_null(v[0].parent);
    int64_t after = v[0].seq;
    store_budget_list_free(v, n);
    assert_int_equal(store_budget_list(f->s, after, 10, NOW, &v, &n), KB_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].name, "user-42");
    store_budget_list_free(v, n);
    assert_int_equal(store_budget_list(f->s, 0, 0, NOW, &v, &n), KB_E_INVALID);

    struct kb_budget_change c = {.has_cap = true, .cap = 250, .has_parent = true, .parent = NULL};
    assert_int_equal(store_budget_update(f->s, "user-42", &c, NOW + 5, NULL), KB_OK);
    assert_int_equal(store_budget_get(f->s, "user-42", NOW, &b), KB_OK);
    assert_int_equal(b->cap, 250);
    assert_null(b->parent);
    assert_int_equal(b->updated_at, NOW + 5);
    store_budget_free(b);
    assert_int_equal(store_budget_update(f->s, "ghost", &c, NOW, NULL), KB_E_NOT_FOUND);
    c = (struct kb_budget_change){.has_parent = true, .parent = "ghost"};
    assert_int_equal(store_budget_update(f->s, "user-42", &c, NOW, NULL), KB_E_INVALID);

    /* in use by a key: refused; once the key is revoked: gone */
    int64_t k = add_key(f->s, "vk_crud");
    assert_int_equal(store_key_budget_add(f->s, k, "user-42"), KB_OK);
    assert_int_equal(store_key_budget_add(f->s, k, "user-42"), KB_OK); /* idempotent */
    assert_int_equal(store_key_budget_add(f->s, k, "ghost"), KB_E_NOT_FOUND);
    char **names = NULL;
    assert_int_equal(store_key_budgets(f->s, k, &names, &n), KB_OK);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "user-42");
    store_names_free(names, n);
    msg = NULL;
    assert_int_equal(store_budget_delete(f->s, "user-42", &msg), KB_E_BUDGET_IN_USE);
    assert_non_null(msg);
    free(msg);
    assert_int_equal(store_key_revoke(f->s, "vk_crud", NOW, NULL), KB_OK);
    assert_int_equal(store_budget_delete(f->s, "user-42", NULL), KB_OK);
    assert_int_equal(store_budget_get(f->s, "user-42", NOW, &b), KB_E_NOT_FOUND);
    assert_int_equal(store_budget_delete(f->s, "user-42", NULL), KB_E_NOT_FOUND);
    assert_int_equal(store_key_budgets(f->s, k, &names, &n), KB_OK);
    assert_int_equal(n, 0);
    store_names_free(names, n);

    /* a parent of another budget: refused */
    assert_int_equal(add_budget(f->s, "child", 1, KB_WIN_TOTAL, "team", NULL), KB_OK);
    assert_int_equal(store_budget_delete(f->s, "team", NULL), KB_E_BUDGET_IN_USE);
}

static void test_cycles_and_depth(void **state)
{
    struct fixture *f = *state;
    char name[16], parent[16];
    /* b1 <- b2 <- ... <- b8: eight on one chain is the most */
    for (int i = 1; i <= KB_BUDGET_DEPTH_MAX; i++) {
        snprintf(name, sizeof name, "b%d", i);
        snprintf(parent, sizeof parent, "b%d", i - 1);
        assert_int_equal(add_budget(f->s, name, 10, KB_WIN_TOTAL, i > 1 ? parent : NULL, NULL),
                         KB_OK);
    }
    char *msg = NULL;
    assert_int_equal(add_budget(f->s, "b9", 10, KB_WIN_TOTAL, "b8", &msg), KB_E_INVALID);
    assert_non_null(strstr(msg, "at most"));
    free(msg);
    /* b1's parent b8: a cycle; b1's parent itself: a cycle */
    struct kb_budget_change c = {.has_parent = true, .parent = "b8"};
    msg = NULL;
    assert_int_equal(store_budget_update(f->s, "b1", &c, NOW, &msg), KB_E_INVALID);
    assert_non_null(strstr(msg, "cycle"));
    free(msg);
    c.parent = "b1";
    assert_int_equal(store_budget_update(f->s, "b1", &c, NOW, NULL), KB_E_INVALID);
    /* hanging b5..b8 (four) under a chain of five: nine, refused */
    assert_int_equal(add_budget(f->s, "c1", 10, KB_WIN_TOTAL, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "c2", 10, KB_WIN_TOTAL, "c1", NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "c3", 10, KB_WIN_TOTAL, "c2", NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "c4", 10, KB_WIN_TOTAL, "c3", NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "c5", 10, KB_WIN_TOTAL, "c4", NULL), KB_OK);
    c.parent = "c5";
    assert_int_equal(store_budget_update(f->s, "b5", &c, NOW, NULL), KB_E_INVALID);
    c.parent = "c4"; /* four and four: eight, fine */
    assert_int_equal(store_budget_update(f->s, "b5", &c, NOW, NULL), KB_OK);
    struct kb_budget *b = NULL;
    assert_int_equal(store_budget_get(f->s, "b5", NOW, &b), KB_OK);
    assert_string_equal(b->parent, "c4");
    store_budget_free(b);
}

static void test_reserve_chain_all_or_nothing(void **state)
{
    struct fixture *f = *state;
    /* key -> user (cap 10) -> team (cap 6), and key -> other (cap 100) -> team */
    assert_int_equal(add_budget(f->s, "team", 6, KB_WIN_MONTH, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "user", 10, KB_WIN_DAY, "team", NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "other", 100, KB_WIN_TOTAL, "team", NULL), KB_OK);
    int64_t k = add_key(f->s, "vk_chain");
    int64_t none = add_key(f->s, "vk_none");
    assert_int_equal(store_key_budget_add(f->s, k, "user"), KB_OK);
    assert_int_equal(store_key_budget_add(f->s, k, "other"), KB_OK);

    struct kb_budget_hold *h = NULL;
    size_t n = 0;
    char *ex = NULL;
    /* a key without budgets: nothing to hold */
    assert_int_equal(store_budget_reserve(f->s, none, NOW, 5, &h, &n, &ex), KB_OK);
    assert_int_equal(n, 0);
    free(h);
    /* the shared parent is charged once, not once per path */
    assert_int_equal(store_budget_reserve(f->s, k, NOW, 4, &h, &n, &ex), KB_OK);
    assert_int_equal(n, 3);
    ASSERT_BUDGET(f->s, "team", NOW, 0, 4);
    ASSERT_BUDGET(f->s, "user", NOW, 0, 4);
    ASSERT_BUDGET(f->s, "other", NOW, 0, 4);
    /* 4 more fits user (8 <= 10) and other but not team (8 > 6): nothing
     * is taken anywhere, and the team is named */
    struct kb_budget_hold *h2 = NULL;
    size_t n2 = 0;
    assert_int_equal(store_budget_reserve(f->s, k, NOW, 4, &h2, &n2, &ex), KB_E_BUDGET_EXHAUSTED);
    assert_string_equal(ex, "team");
    free(ex);
    assert_null(h2);
    ASSERT_BUDGET(f->s, "team", NOW, 0, 4);
    ASSERT_BUDGET(f->s, "user", NOW, 0, 4);
    ASSERT_BUDGET(f->s, "other", NOW, 0, 4);

    /* the chain changes before settlement: the holds still name the three */
    struct kb_budget_change c = {.has_parent = true, .parent = NULL};
    assert_int_equal(store_budget_update(f->s, "user", &c, NOW, NULL), KB_OK);
    assert_int_equal(store_budget_settle(f->s, h, n, 4, 1), KB_OK);
    free(h);
    ASSERT_BUDGET(f->s, "team", NOW, 1, 0);
    ASSERT_BUDGET(f->s, "user", NOW, 1, 0);
    ASSERT_BUDGET(f->s, "other", NOW, 1, 0);

    /* a lowered cap counts from the next reservation */
    c = (struct kb_budget_change){.has_cap = true, .cap = 1};
    assert_int_equal(store_budget_update(f->s, "other", &c, NOW, NULL), KB_OK);
    ex = NULL;
    assert_int_equal(store_budget_reserve(f->s, k, NOW, 1, &h, &n, &ex), KB_E_BUDGET_EXHAUSTED);
    assert_string_equal(ex, "other");
    free(ex);
    ASSERT_BUDGET(f->s, "user", NOW, 1, 0);
    /* zero-cost requests fit even a full budget */
    assert_int_equal(store_budget_reserve(f->s, k, NOW, 0, &h, &n, NULL), KB_OK);
    assert_int_equal(store_budget_settle(f->s, h, n, 0, 0), KB_OK);
    free(h);
    /* a release gives back exactly what a reservation took, request too */
    c = (struct kb_budget_change){.has_cap = true, .cap = 100};
    assert_int_equal(store_budget_update(f->s, "other", &c, NOW, NULL), KB_OK);
    struct kb_budget *b = NULL;
    assert_int_equal(store_budget_get(f->s, "user", NOW, &b), KB_OK);
    int64_t requests = b->requests;
    store_budget_free(b);
    assert_int_equal(store_budget_reserve(f->s, k, NOW, 2, &h, &n, NULL), KB_OK);
    assert_int_equal(store_budget_release(f->s, h, n, 2), KB_OK);
    free(h);
    assert_int_equal(store_budget_get(f->s, "user", NOW, &b), KB_OK);
    assert_int_equal(b->reserved, 0);
    assert_int_equal(b->spent, 1);
    assert_int_equal(b->requests, requests);
    store_budget_free(b);
}

static void test_windows_roll_over(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "m", 10, KB_WIN_MONTH, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "t", 15, KB_WIN_TOTAL, NULL, NULL), KB_OK);
    int64_t km = add_key(f->s, "vk_m"), kt = add_key(f->s, "vk_t");
    assert_int_equal(store_key_budget_add(f->s, km, "m"), KB_OK);
    assert_int_equal(store_key_budget_add(f->s, kt, "t"), KB_OK);
    struct kb_budget_hold *h = NULL;
    size_t n = 0;
    int64_t last_day = NOW - 1; /* 2025-11-30 23:59:59 */
    assert_int_equal(store_budget_reserve(f->s, km, last_day, 10, &h, &n, NULL), KB_OK);
    assert_int_equal(store_budget_settle(f->s, h, n, 10, 10), KB_OK);
    free(h);
    assert_int_equal(store_budget_reserve(f->s, km, last_day, 1, &h, &n, NULL),
                     KB_E_BUDGET_EXHAUSTED);
    /* December: a fresh window; November's stays as it was */
    assert_int_equal(store_budget_reserve(f->s, km, NOW, 10, &h, &n, NULL), KB_OK);
    free(h);
    ASSERT_BUDGET(f->s, "m", NOW, 0, 10);
    ASSERT_BUDGET(f->s, "m", last_day, 10, 0);
    /* total: never resets */
    assert_int_equal(store_budget_reserve(f->s, kt, last_day, 10, &h, &n, NULL), KB_OK);
    free(h);
    assert_int_equal(store_budget_reserve(f->s, kt, NOW + 86400 * 400, 10, &h, &n, NULL),
                     KB_E_BUDGET_EXHAUSTED);
}

static void test_orphans_settled_at_start(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "o", 100, KB_WIN_DAY, NULL, NULL), KB_OK);
    int64_t k = add_key(f->s, "vk_o");
    assert_int_equal(store_key_budget_add(f->s, k, "o"), KB_OK);
    struct kb_budget_hold *h = NULL;
    size_t n = 0;
    assert_int_equal(store_budget_reserve(f->s, k, NOW, 30, &h, &n, NULL), KB_OK);
    free(h); /* the process "died" with it in flight */
    int64_t count = 0;
    assert_int_equal(store_spend_settle_orphans(f->s, &count), KB_OK);
    assert_int_equal(count, 1);
    ASSERT_BUDGET(f->s, "o", NOW, 30, 0); /* worst case, nothing left reserved */
}

/* ---- the race ---- */

#define RACE_THREADS 4
#define RACE_KEYS 20
#define RACE_ATTEMPTS 100 /* per thread: 400 in all */
#define RACE_CAP 100

struct racer {
    const char *path;
    const int64_t *keys;
    int index;
    pthread_barrier_t *barrier;
    int open_err, ok, refused, other, settle_errors;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct kb_store *s = NULL;
    r->open_err = store_open(r->path, "normal", false, &s, NULL) != KB_OK;
    pthread_barrier_wait(r->barrier);
    if (r->open_err)
        return NULL;
    struct kb_budget_hold *held[RACE_ATTEMPTS];
    size_t nheld[RACE_ATTEMPTS];
    for (int i = 0; i < RACE_ATTEMPTS; i++) {
        int64_t key = r->keys[(r->index + i * RACE_THREADS) % RACE_KEYS];
        struct kb_budget_hold *h = NULL;
        size_t n = 0;
        char *ex = NULL;
        enum kb_err err = store_budget_reserve(s, key, NOW, 1, &h, &n, &ex);
        if (err == KB_OK) {
            held[r->ok] = h;
            nheld[r->ok++] = n;
        } else if (err == KB_E_BUDGET_EXHAUSTED && ex && strcmp(ex, "shared") == 0) {
            r->refused++;
        } else {
            r->other++;
        }
        free(ex);
    }
    pthread_barrier_wait(r->barrier);
    for (int i = 0; i < r->ok; i++) {
        if (store_budget_settle(s, held[i], nheld[i], 1, 1) != KB_OK)
            r->settle_errors++;
        free(held[i]);
    }
    store_close(s);
    return NULL;
}

static void test_concurrent_budget_never_overshoots(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "shared", RACE_CAP, KB_WIN_MONTH, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "calm", RACE_CAP, KB_WIN_MONTH, NULL, NULL), KB_OK);
    int64_t keys[RACE_KEYS];
    for (int i = 0; i < RACE_KEYS; i++) {
        char id[32];
        snprintf(id, sizeof id, "vk_race%d", i);
        keys[i] = add_key(f->s, id);
        assert_int_equal(store_key_budget_add(f->s, keys[i], "shared"), KB_OK);
    }
    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, RACE_THREADS), 0);
    struct racer racers[RACE_THREADS];
    pthread_t threads[RACE_THREADS];
    memset(racers, 0, sizeof racers);
    for (int i = 0; i < RACE_THREADS; i++) {
        racers[i] = (struct racer){.path = f->path, .keys = keys, .index = i, .barrier = &barrier};
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    for (int i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    pthread_barrier_destroy(&barrier);
    int ok = 0, refused = 0;
    for (int i = 0; i < RACE_THREADS; i++) {
        assert_int_equal(racers[i].open_err, 0);
        assert_int_equal(racers[i].other, 0);
        assert_int_equal(racers[i].settle_errors, 0);
        ok += racers[i].ok;
        refused += racers[i].refused;
    }
    assert_int_equal(ok, RACE_CAP);
    assert_int_equal(refused, RACE_THREADS * RACE_ATTEMPTS - RACE_CAP);
    ASSERT_BUDGET(f->s, "shared", NOW, RACE_CAP, 0);
    ASSERT_BUDGET(f->s, "calm", NOW, 0, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periods),
        T(test_crud),
        T(test_cycles_and_depth),
        T(test_reserve_chain_all_or_nothing),
        T(test_windows_roll_over),
        T(test_orphans_settled_at_start),
        T(test_concurrent_budget_never_overshoots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
