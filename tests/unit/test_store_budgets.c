/*
 * test_store_budgets.c - the store conformance suite's budget cases
 * (store.h, "budgets"), run on both backends (SQLite, and PostgreSQL with
 * a fresh database per test from pg_fixture.h): create, read, list,
 * update and delete with their refusals (duplicate names, unknown parents,
 * cycles, chains longer than KB_BUDGET_DEPTH_MAX, deleting one still in
 * use); windows and periods; reservations across a key's chains, all or
 * nothing; settlement on the holds a reservation returned, even after the
 * chain changed; and the money guarantee under threads: four connections
 * race reservations across keys on one shared budget, and on a parent
 * chain, and the totals come out exact.
 *
 * PostgreSQL only: who owns a reservation (node_budget_reservations, per
 * node and start), a settle after this start's reservations were settled
 * at their worst case by another node (no double count), and two chain
 * changes racing on two connections (no cycle).
 *
 * Keys are made and revoked through the store on SQLite and by plain SQL
 * on PostgreSQL, so that these cases test the budgets alone (pg_keys.c is
 * a file of its own). The orphan settlement at start is SQLite's here;
 * PostgreSQL's (this node's earlier starts only) is pg_cluster.c's.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "store_fixture.h"
#include "store/store.h"

#define NOW INT64_C(1764547200) /* 2025-12-01 00:00:00 UTC */

/* Runs one statement on PostgreSQL on a connection of its own; the first
 * column of the first row as a number (0 without one). */
#define sql(f, ...) test_pg_sql((f)->url, __VA_ARGS__)

static int64_t add_key(struct fixture *f, const char *id)
{
    if (f->pg)
        return sql(f,
                   "INSERT INTO keys (id, token_hash, label, vendor, allowed_endpoints, "
                   "daily_cap_micros, created_at, expires_at) VALUES ('%s', "
                   "convert_to('%s', 'UTF8'), 'label', 'stripe', '[\"POST /v1/charges\"]', "
                   "1000000000, %lld, %lld) RETURNING seq",
                   id, id, (long long)NOW, (long long)(NOW + 86400 * 365));
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
    assert_int_equal(store_key_insert(f->s, &k, h), KB_OK);
    return k.seq;
}

static void revoke_key(struct fixture *f, const char *id)
{
    if (f->pg)
        sql(f, "UPDATE keys SET revoked_at = %lld WHERE id = '%s'", (long long)NOW, id);
    else
        assert_int_equal(store_key_revoke(f->s, id, NOW, NULL), KB_OK);
}

/* PostgreSQL: every budget_spend row's reserved is exactly what the
 * nodes' rows say they hold of it (no-op on SQLite). */
static void assert_owned_matches(struct fixture *f)
{
    if (!f->pg)
        return;
    assert_int_equal(sql(f, "SELECT count(*) FROM budget_spend s WHERE s.reserved_micros <> "
                            "coalesce((SELECT sum(o.micros) FROM node_budget_reservations o "
                            "WHERE o.budget_seq = s.budget_seq AND o.period = s.period), 0)"),
                     0);
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
    int64_t k = add_key(f, "vk_crud");
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
    revoke_key(f, "vk_crud");
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
    int64_t k = add_key(f, "vk_chain");
    int64_t none = add_key(f, "vk_none");
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
    assert_owned_matches(f);

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
    assert_owned_matches(f);
}

/* When several budgets would refuse, the one named is the first in chain
 * order (the key's own budgets, then their parents), whatever their seqs:
 * here the parent is older than both of the key's budgets. */
static void test_refusal_names_first_in_chain_order(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "top", 5, KB_WIN_TOTAL, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "fine", 100, KB_WIN_TOTAL, "top", NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "mid", 5, KB_WIN_TOTAL, "top", NULL), KB_OK);
    int64_t k = add_key(f, "vk_order"), k2 = add_key(f, "vk_order2");
    assert_int_equal(store_key_budget_add(f->s, k, "fine"), KB_OK);
    assert_int_equal(store_key_budget_add(f->s, k, "mid"), KB_OK);
    assert_int_equal(store_key_budget_add(f->s, k2, "mid"), KB_OK);
    struct kb_budget_hold *h = NULL;
    size_t n = 0;
    char *ex = NULL;
    assert_int_equal(store_budget_reserve(f->s, k, NOW, 6, &h, &n, &ex), KB_E_BUDGET_EXHAUSTED);
    assert_string_equal(ex, "mid");
    free(ex);
    ex = NULL;
    assert_int_equal(store_budget_reserve(f->s, k2, NOW, 6, &h, &n, &ex), KB_E_BUDGET_EXHAUSTED);
    assert_string_equal(ex, "mid");
    free(ex);
    static const char *const all[] = {"top", "fine", "mid"};
    for (int i = 0; i < 3; i++) { /* nothing held, no request counted */
        struct kb_budget *b = NULL;
        assert_int_equal(store_budget_get(f->s, all[i], NOW, &b), KB_OK);
        assert_int_equal(b->reserved + b->spent + b->requests, 0);
        store_budget_free(b);
    }
    assert_owned_matches(f);
}

static void test_windows_roll_over(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "m", 10, KB_WIN_MONTH, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "t", 15, KB_WIN_TOTAL, NULL, NULL), KB_OK);
    int64_t km = add_key(f, "vk_m"), kt = add_key(f, "vk_t");
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
    assert_owned_matches(f);
}

static void test_orphans_settled_at_start(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "o", 100, KB_WIN_DAY, NULL, NULL), KB_OK);
    int64_t k = add_key(f, "vk_o");
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

/* A budget deleted while a request holds a reservation on it: the settle
 * skips it, and a new budget of the same name is not touched. */
static void test_settle_after_delete(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "gone", 100, KB_WIN_DAY, NULL, NULL), KB_OK);
    int64_t k = add_key(f, "vk_gone");
    assert_int_equal(store_key_budget_add(f->s, k, "gone"), KB_OK);
    struct kb_budget_hold *h = NULL;
    size_t n = 0;
    assert_int_equal(store_budget_reserve(f->s, k, NOW, 5, &h, &n, NULL), KB_OK);
    assert_int_equal(n, 1);
    revoke_key(f, "vk_gone");
    assert_int_equal(store_budget_delete(f->s, "gone", NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "gone", 100, KB_WIN_DAY, NULL, NULL), KB_OK);
    assert_int_equal(store_budget_settle(f->s, h, n, 5, 5), KB_OK);
    free(h);
    ASSERT_BUDGET(f->s, "gone", NOW, 0, 0);
    if (f->pg) /* the deleted budget's holders' rows went with it */
        assert_int_equal(sql(f, "SELECT count(*) FROM node_budget_reservations"), 0);
    assert_owned_matches(f);
}

/* ---- the races ---- */

#define RACE_THREADS 4
#define RACE_KEYS 20
#define RACE_ATTEMPTS 100 /* per thread: 400 in all */
#define RACE_CAP 100

struct racer {
    const char *url;
    const int64_t *keys;
    int index;
    const char *only;           /* the only budget that may refuse; NULL: any */
    pthread_barrier_t *barrier; /* the racers */
    pthread_barrier_t *mid;     /* the racers and the main thread, twice */
    int open_err, ok, refused, other, settle_errors;
};

/* Reserves 1 RACE_ATTEMPTS times with its keys, waits twice on mid (the
 * main thread counts what is held in between), then settles each at 1. */
static void *race(void *arg)
{
    struct racer *r = arg;
    struct kb_store *s = NULL;
    r->open_err = store_open(r->url, "normal", false, &s, NULL) != KB_OK;
    pthread_barrier_wait(r->barrier);
    struct kb_budget_hold *held[RACE_ATTEMPTS];
    size_t nheld[RACE_ATTEMPTS];
    for (int i = 0; !r->open_err && i < RACE_ATTEMPTS; i++) {
        int64_t key = r->keys[(r->index + i * RACE_THREADS) % RACE_KEYS];
        struct kb_budget_hold *h = NULL;
        size_t n = 0;
        char *ex = NULL;
        enum kb_err err = store_budget_reserve(s, key, NOW, 1, &h, &n, &ex);
        if (err == KB_OK) {
            held[r->ok] = h;
            nheld[r->ok++] = n;
        } else if (err == KB_E_BUDGET_EXHAUSTED && ex && (!r->only || strcmp(ex, r->only) == 0)) {
            r->refused++;
        } else {
            fprintf(stderr, "race: %s (%s)\n", kb_strerror(err), ex ? ex : "-");
            r->other++;
        }
        free(ex);
    }
    pthread_barrier_wait(r->mid);
    pthread_barrier_wait(r->mid);
    for (int i = 0; i < r->ok; i++) {
        if (store_budget_settle(s, held[i], nheld[i], 1, 1) != KB_OK)
            r->settle_errors++;
        free(held[i]);
    }
    store_close(s);
    return NULL;
}

/* Runs the racers over keys; *held is what the budget `name` had reserved
 * between the phases and *owned what node_budget_reservations held for it
 * (PostgreSQL; -1 on SQLite). Returns the reservations that succeeded. */
static int run_race(struct fixture *f, const int64_t *keys, const char *only, const char *name,
                    int64_t *held, int64_t *owned)
{
    pthread_barrier_t barrier, mid;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, RACE_THREADS), 0);
    assert_int_equal(pthread_barrier_init(&mid, NULL, RACE_THREADS + 1), 0);
    struct racer racers[RACE_THREADS];
    pthread_t threads[RACE_THREADS];
    memset(racers, 0, sizeof racers);
    for (int i = 0; i < RACE_THREADS; i++) {
        racers[i] = (struct racer){.url = f->url,
                                   .keys = keys,
                                   .index = i,
                                   .only = only,
                                   .barrier = &barrier,
                                   .mid = &mid};
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    pthread_barrier_wait(&mid);
    /* no assert between the barriers: the racers wait for the second */
    struct kb_budget *b = NULL;
    enum kb_err err = store_budget_get(f->s, name, NOW, &b);
    *held = err == KB_OK ? b->reserved : -1;
    store_budget_free(b);
    *owned = f->pg ? sql(f,
                         "SELECT coalesce(sum(o.micros), -1) FROM node_budget_reservations o "
                         "JOIN budgets b ON b.seq = o.budget_seq WHERE b.name = '%s'",
                         name)
                   : -1;
    pthread_barrier_wait(&mid);
    for (int i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    pthread_barrier_destroy(&barrier);
    pthread_barrier_destroy(&mid);
    int ok = 0, refused = 0;
    for (int i = 0; i < RACE_THREADS; i++) {
        assert_int_equal(racers[i].open_err, 0);
        assert_int_equal(racers[i].other, 0);
        assert_int_equal(racers[i].settle_errors, 0);
        ok += racers[i].ok;
        refused += racers[i].refused;
    }
    assert_int_equal(ok + refused, RACE_THREADS * RACE_ATTEMPTS);
    return ok;
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
        keys[i] = add_key(f, id);
        assert_int_equal(store_key_budget_add(f->s, keys[i], "shared"), KB_OK);
    }
    int64_t held, owned;
    assert_int_equal(run_race(f, keys, "shared", "shared", &held, &owned), RACE_CAP);
    assert_int_equal(held, RACE_CAP);
    if (f->pg) /* this start's share: all of it (the racers are one node) */
        assert_int_equal(owned, RACE_CAP);
    ASSERT_BUDGET(f->s, "shared", NOW, RACE_CAP, 0);
    ASSERT_BUDGET(f->s, "calm", NOW, 0, 0);
    assert_owned_matches(f);
    if (f->pg)
        assert_int_equal(sql(f, "SELECT sum(micros) FROM node_budget_reservations"), 0);
}

/* Four children of cap 30 under a parent of cap 100, five keys on each:
 * the children could take 120, the parent takes exactly 100. */
static void test_concurrent_chain_never_overshoots(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "p", RACE_CAP, KB_WIN_MONTH, NULL, NULL), KB_OK);
    static const char *const child[] = {"c0", "c1", "c2", "c3"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(add_budget(f->s, child[i], 30, KB_WIN_DAY, "p", NULL), KB_OK);
    int64_t keys[RACE_KEYS];
    for (int i = 0; i < RACE_KEYS; i++) {
        char id[32];
        snprintf(id, sizeof id, "vk_chain%d", i);
        keys[i] = add_key(f, id);
        assert_int_equal(store_key_budget_add(f->s, keys[i], child[(i / 5) % 4]), KB_OK);
    }
    int64_t held, owned;
    assert_int_equal(run_race(f, keys, NULL, "p", &held, &owned), RACE_CAP);
    assert_owned_matches(f);
    assert_int_equal(held, RACE_CAP);
    if (f->pg)
        assert_int_equal(owned, RACE_CAP);
    ASSERT_BUDGET(f->s, "p", NOW, RACE_CAP, 0);
    int64_t sum = 0;
    for (int i = 0; i < 4; i++) {
        struct kb_budget *b = NULL;
        assert_int_equal(store_budget_get(f->s, child[i], NOW, &b), KB_OK);
        assert_true(b->spent <= 30);
        assert_int_equal(b->reserved, 0);
        assert_int_equal(b->requests, b->spent); /* refusals gave their request back */
        sum += b->spent;
        store_budget_free(b);
    }
    assert_int_equal(sum, RACE_CAP);
}

/* ---- PostgreSQL: several nodes ---- */

/* What node `node` holds on budget `name` (-1: no row). */
static int64_t owned_by(struct fixture *f, const char *node, const char *name)
{
    return sql(f,
               "SELECT coalesce((SELECT o.micros FROM node_budget_reservations o JOIN budgets b "
               "ON b.seq = o.budget_seq WHERE b.name = '%s' AND o.node_id = '%s'), -1)",
               name, node);
}

static void test_pg_two_nodes_own_their_reservations(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "top", 1000, KB_WIN_TOTAL, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "b", 100, KB_WIN_DAY, "top", NULL), KB_OK);
    int64_t k = add_key(f, "vk_nodes");
    assert_int_equal(store_key_budget_add(f->s, k, "b"), KB_OK);
    struct kb_store *sa = NULL, *sb = NULL;
    assert_true(store_set_node("node-a", "boot-a1"));
    assert_int_equal(store_open(f->url, "normal", false, &sa, NULL), KB_OK);
    assert_true(store_set_node("node-b", "boot-b1"));
    assert_int_equal(store_open(f->url, "normal", false, &sb, NULL), KB_OK);

    struct kb_budget_hold *ha[3], *hb = NULL;
    size_t na[3], nb = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_budget_reserve(sa, k, NOW, 10, &ha[i], &na[i], NULL), KB_OK);
        assert_int_equal(na[i], 2);
    }
    assert_int_equal(store_budget_reserve(sb, k, NOW, 5, &hb, &nb, NULL), KB_OK);
    /* each node's share of each budget, on its own start's rows */
    assert_int_equal(owned_by(f, "node-a", "b"), 30);
    assert_int_equal(owned_by(f, "node-a", "top"), 30);
    assert_int_equal(owned_by(f, "node-b", "b"), 5);
    assert_int_equal(owned_by(f, "node-b", "top"), 5);
    assert_int_equal(sql(f, "SELECT count(*) FROM node_budget_reservations WHERE "
                            "(node_id = 'node-a' AND boot_id <> 'boot-a1') OR "
                            "(node_id = 'node-b' AND boot_id <> 'boot-b1')"),
                     0);
    ASSERT_BUDGET(f->s, "b", NOW, 0, 35);

    /* a settle gives back the node's own share */
    assert_int_equal(store_budget_settle(sa, ha[0], na[0], 10, 7), KB_OK);
    assert_int_equal(owned_by(f, "node-a", "b"), 20);
    ASSERT_BUDGET(f->s, "b", NOW, 7, 25);

    /* node-a is taken for dead: another node settles its reservations at
     * their worst case and drops its rows (what the reaper does) */
    sql(f, "WITH o AS (DELETE FROM node_budget_reservations WHERE node_id = 'node-a' "
           "RETURNING budget_seq, period, micros) "
           "UPDATE budget_spend s SET spent_micros = s.spent_micros + o.micros, "
           "reserved_micros = s.reserved_micros - o.micros FROM o "
           "WHERE s.budget_seq = o.budget_seq AND s.period = o.period");
    ASSERT_BUDGET(f->s, "b", NOW, 27, 5);
    ASSERT_BUDGET(f->s, "top", NOW, 27, 5);
    /* its requests end after all: charged already at 10, so 4 adds
     * nothing and 13 adds 3; node-b's reservation is untouched */
    assert_int_equal(store_budget_settle(sa, ha[1], na[1], 10, 4), KB_OK);
    ASSERT_BUDGET(f->s, "b", NOW, 27, 5);
    assert_int_equal(store_budget_settle(sa, ha[2], na[2], 10, 13), KB_OK);
    ASSERT_BUDGET(f->s, "b", NOW, 30, 5);
    ASSERT_BUDGET(f->s, "top", NOW, 30, 5);
    assert_int_equal(owned_by(f, "node-a", "b"), -1);

    assert_int_equal(store_budget_settle(sb, hb, nb, 5, 5), KB_OK);
    ASSERT_BUDGET(f->s, "b", NOW, 35, 0);
    ASSERT_BUDGET(f->s, "top", NOW, 35, 0);
    assert_int_equal(owned_by(f, "node-b", "b"), 0); /* rows at 0 are kept */
    assert_owned_matches(f);
    for (int i = 0; i < 3; i++)
        free(ha[i]);
    free(hb);
    store_close(sa);
    store_close(sb);
}

struct updater {
    const char *url;
    const char *name, *parent;
    enum kb_err err;
    char *msg;
};

static void *update_parent(void *arg)
{
    struct updater *u = arg;
    struct kb_store *s = NULL;
    u->err = store_open(u->url, "normal", false, &s, NULL);
    if (u->err != KB_OK)
        return NULL;
    struct kb_budget_change c = {.has_parent = true, .parent = u->parent};
    u->err = store_budget_update(s, u->name, &c, NOW, &u->msg);
    store_close(s);
    return NULL;
}

/* With y under z: x's parent y on one connection, z's parent x on another
 * at the same time. Each alone is fine; both would close x -> y -> z -> x.
 * The second waits for the first (the chain lock) and then sees the cycle.
 * (Row locks alone do not order them: the two rows changed differ.) */
static void test_pg_parent_changes_racing_make_no_cycle(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add_budget(f->s, "z", 10, KB_WIN_TOTAL, NULL, NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "y", 10, KB_WIN_TOTAL, "z", NULL), KB_OK);
    assert_int_equal(add_budget(f->s, "x", 10, KB_WIN_TOTAL, NULL, NULL), KB_OK);
    assert_int_equal(store_begin(f->s), KB_OK);
    struct kb_budget_change c = {.has_parent = true, .parent = "y"};
    assert_int_equal(store_budget_update(f->s, "x", &c, NOW, NULL), KB_OK);
    struct updater u = {.url = f->url, .name = "z", .parent = "x"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, update_parent, &u), 0);
    /* until the other connection waits on a lock (at most 5 s; without
     * the chain lock it never does, finishes first and makes the cycle) */
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        if (sql(f, "SELECT count(*) FROM pg_locks WHERE NOT granted") > 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < 5);
    assert_int_equal(store_commit(f->s), KB_OK);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(u.err, KB_E_INVALID);
    assert_non_null(u.msg);
    assert_non_null(strstr(u.msg, "cycle"));
    free(u.msg);
    struct kb_budget *b = NULL;
    assert_int_equal(store_budget_get(f->s, "z", NOW, &b), KB_OK);
    assert_null(b->parent);
    store_budget_free(b);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_sqlite, teardown)
#define P(fn)                                                                                      \
    {                                                                                              \
        "pg: " #fn, fn, setup_pg, teardown, NULL                                                   \
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periods),
        T(test_crud),
        T(test_cycles_and_depth),
        T(test_reserve_chain_all_or_nothing),
        T(test_refusal_names_first_in_chain_order),
        T(test_windows_roll_over),
        T(test_orphans_settled_at_start),
        T(test_settle_after_delete),
        T(test_concurrent_budget_never_overshoots),
        T(test_concurrent_chain_never_overshoots),
        P(test_crud),
        P(test_cycles_and_depth),
        P(test_reserve_chain_all_or_nothing),
        P(test_refusal_names_first_in_chain_order),
        P(test_windows_roll_over),
        P(test_settle_after_delete),
        P(test_concurrent_budget_never_overshoots),
        P(test_concurrent_chain_never_overshoots),
        P(test_pg_two_nodes_own_their_reservations),
        P(test_pg_parent_changes_racing_make_no_cycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
