/*
 * test_store_admit.c - store_admit and store_settle (store.h, "One proxy
 * admission"; store_admit.c, and PostgreSQL's runs in one statement,
 * pg_admit.c with kb_admit/kb_settle in schema_pg/004_batch.sql), on both
 * backends.
 *
 * The differential case is the heart: two stores built identically, the
 * same seeded stream of admissions decided by ONE store_admit call per run
 * on the first and by one call per admission on the second, with
 * settlements interleaved the same way; every outcome and every key's and
 * budget's committed usage must agree. The keys cover what an admission
 * reads: a small cap (refusals, zero amounts, exact fits), a revoked key,
 * one that expires during the stream, a rate limit, a budget, a ledger
 * object. Then exactness on one run (200 admissions of 10 on a cap of
 * 500), and, on PostgreSQL, the node_reservations mirror against spend,
 * and kb_settle when the mirror no longer holds what it settles (another
 * node reaped the start) or the key's spend row is gone.
 */
#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "store_fixture.h"
#include "store/store.h"

#define NOW INT64_C(1764547200) /* 2025-12-01 00:00:00 UTC */
#define DAY (NOW / 86400)
#define NKEYS 6

/* The keys, by index: what each stands for in the stream. */
enum { K_SMALL = 0, K_BIG, K_REVOKED, K_EXPIRING, K_RATE, K_BUDGET };
static const int64_t key_cap[NKEYS] = {1000, 20000, 5000, 5000, 3000, 8000};

/* Two identical stores. */
struct pair {
    struct fixture *f[2];
    int64_t seq[2][NKEYS];
};

#define sql(f, ...) test_pg_sql((f)->url, __VA_ARGS__)

/* PostgreSQL: this node's mirror of the key reservations, and of the
 * budgets', equals the spend rows' reserved (no-op on SQLite). */
static void assert_mirror(const struct fixture *f)
{
    if (!f->pg)
        return;
    assert_int_equal(sql(f, "SELECT coalesce(sum(micros), 0) FROM node_reservations"),
                     sql(f, "SELECT coalesce(sum(reserved_micros), 0) FROM spend"));
    assert_int_equal(sql(f, "SELECT count(*) FROM spend s WHERE s.reserved_micros <> "
                            "coalesce((SELECT sum(m.micros) FROM node_reservations m "
                            "WHERE m.key_seq = s.key_seq AND m.day = s.day), 0)"),
                     0);
    assert_int_equal(sql(f, "SELECT count(*) FROM budget_spend s WHERE s.reserved_micros <> "
                            "coalesce((SELECT sum(o.micros) FROM node_budget_reservations o "
                            "WHERE o.budget_seq = s.budget_seq AND o.period = s.period), 0)"),
                     0);
}

static int64_t add_key(struct kb_store *s, int i, int64_t cap, int64_t expires_at)
{
    struct kb_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "vk_admit_%d", i);
    k.label = (char *)"label";
    k.vendor = (char *)"stripe";
    k.allowed_endpoints = (char *)"[\"POST /v1/charges\"]";
    k.metadata = (char *)"{}";
    k.daily_cap = cap;
    k.created_at = NOW;
    k.expires_at = expires_at;
    uint8_t h[KB_HASH_LEN];
    static const uint8_t key[] = "test-server-key";
    crypto_hmac(key, sizeof key - 1, k.id, strlen(k.id), h);
    assert_int_equal(store_key_insert(s, &k, h), KB_OK);
    return k.seq;
}

/* The keys of the differential case on store j of p. */
static void build(struct pair *p, int j)
{
    struct kb_store *s = p->f[j]->s;
    for (int i = 0; i < NKEYS; i++)
        p->seq[j][i] = add_key(s, i, key_cap[i], i == K_EXPIRING ? NOW + 100 : NOW + 86400 * 30);
    char id[32];
    snprintf(id, sizeof id, "vk_admit_%d", K_REVOKED);
    assert_int_equal(store_key_revoke(s, id, NOW - 1, NULL), KB_OK);
    struct kb_budget b = {
        .name = (char *)"bud", .cap = 2500, .window = KB_WIN_DAY, .created_at = NOW};
    assert_int_equal(store_budget_insert(s, &b, NULL), KB_OK);
    assert_int_equal(store_key_budget_add(s, p->seq[j][K_BUDGET], "bud"), KB_OK);
    /* K_BIG already paid 300 for "obj-paid" */
    assert_int_equal(store_object_charge_set(s, p->seq[j][K_BIG], "obj-paid", 300, NOW, 0), KB_OK);
}

static int setup_pair(void **state, int (*one)(void **))
{
    struct pair *p = calloc(1, sizeof *p);
    assert_non_null(p);
    for (int j = 0; j < 2; j++) {
        void *st = NULL;
        assert_int_equal(one(&st), 0);
        p->f[j] = st;
        build(p, j);
    }
    *state = p;
    return 0;
}

static int setup_pair_sqlite(void **state)
{
    return setup_pair(state, setup_sqlite);
}

static int setup_pair_pg(void **state)
{
    return setup_pair(state, setup_pg);
}

static int teardown_pair(void **state)
{
    struct pair *p = *state;
    for (int j = 0; j < 2; j++) {
        void *st = p->f[j];
        teardown(&st);
    }
    free(p);
    return 0;
}

/* The ledger: a full price for an object the key never paid for, what is
 * left of 500 for one it paid for. */
static int64_t ledger(void *ctx, int64_t charged)
{
    (void)ctx;
    return charged < 0 ? 400 : (charged >= 500 ? 0 : 500 - charged);
}

static uint64_t g_rng;

static uint32_t rnd(uint32_t n)
{
    g_rng = g_rng * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    return (uint32_t)(g_rng >> 33) % n;
}

/* A request not yet settled, in both stores. */
struct open_req {
    int key;
    int64_t day, reserved;
    struct kb_budget_hold *holds[2];
    size_t nholds[2];
};

#define MAX_OPEN 4096

static void compare_usage(struct pair *p, int64_t day, bool mirror)
{
    for (int i = 0; i < NKEYS; i++) {
        char id[32];
        snprintf(id, sizeof id, "vk_admit_%d", i);
        struct kb_key *k[2];
        for (int j = 0; j < 2; j++)
            assert_int_equal(store_key_get(p->f[j]->s, id, day, &k[j]), KB_OK);
        assert_int_equal(k[0]->spent, k[1]->spent);
        assert_int_equal(k[0]->reserved, k[1]->reserved);
        assert_int_equal(k[0]->requests, k[1]->requests);
        store_key_free(k[0]);
        store_key_free(k[1]);
    }
    struct kb_budget *b[2];
    for (int j = 0; j < 2; j++)
        assert_int_equal(store_budget_get(p->f[j]->s, "bud", day * 86400, &b[j]), KB_OK);
    assert_int_equal(b[0]->spent, b[1]->spent);
    assert_int_equal(b[0]->reserved, b[1]->reserved);
    store_budget_free(b[0]);
    store_budget_free(b[1]);
    if (mirror) { /* a few connections each: not on every run */
        assert_mirror(p->f[0]);
        assert_mirror(p->f[1]);
    }
}

static void settle_some(struct pair *p, struct open_req *open, size_t *nopen)
{
    struct kb_settle batch[64][2];
    size_t n = 0;
    for (size_t i = 0; i < *nopen && n < 64;) {
        if (rnd(3) != 0) {
            i++;
            continue;
        }
        struct open_req *o = &open[i];
        int64_t actual;
        switch (rnd(4)) {
        case 0:
            actual = 0;
            break;
        case 1:
            actual = o->reserved;
            break;
        case 2:
            actual = o->reserved / 2;
            break;
        default:
            actual = o->reserved + 1 + rnd(50);
            break;
        }
        for (int j = 0; j < 2; j++)
            batch[n][j] = (struct kb_settle){p->seq[j][o->key], o->day,      o->reserved, actual,
                                             o->holds[j],       o->nholds[j]};
        n++;
        open[i] = open[--*nopen]; /* its holds are batch's now */
    }
    if (n == 0)
        return;
    struct kb_settle one[64];
    for (size_t i = 0; i < n; i++)
        one[i] = batch[i][0];
    assert_int_equal(store_begin(p->f[0]->s), KB_OK);
    assert_int_equal(store_settle(p->f[0]->s, one, n), KB_OK);
    assert_int_equal(store_commit(p->f[0]->s), KB_OK);
    assert_int_equal(store_begin(p->f[1]->s), KB_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(store_settle(p->f[1]->s, &batch[i][1], 1), KB_OK);
    assert_int_equal(store_commit(p->f[1]->s), KB_OK);
    for (size_t i = 0; i < n; i++) {
        free((void *)batch[i][0].holds);
        free((void *)batch[i][1].holds);
    }
}

static const int64_t amounts[] = {0, 50, 100, 250, 500, 1000, 30};

static void test_differential(void **state)
{
    struct pair *p = *state;
    static struct open_req open[MAX_OPEN];
    size_t nopen = 0;
    struct kb_admit v[2][64];
    g_rng = 20251201;
    for (int run = 0; run < 300; run++) {
        int64_t base_day = DAY + run / 60; /* the caps start over now and then */
        size_t n = 1 + rnd(64);
        for (size_t i = 0; i < n; i++) {
            int key = (int)rnd(NKEYS);
            struct kb_admit a = {
                .day = base_day + (rnd(4) == 0),
                .now = NOW + run, /* one clock reading per run, as the proxy has */
                .ts_ms = (NOW + run) * 1000 + (int64_t)i * 37,
                .amount = rnd(4) == 0 ? (int64_t)rnd(300) : amounts[rnd(7)],
            };
            if (key == K_RATE)
                a.rate_requests = 3, a.rate_period_ms = 1000;
            if (rnd(6) == 0) {
                a.object = rnd(2) ? "obj-paid" : "obj-new";
                a.ledger = ledger;
            }
            for (int j = 0; j < 2; j++) {
                v[j][i] = a;
                v[j][i].key_seq = p->seq[j][key];
            }
        }
        /* store 0: one call for the run; store 1: one call per admission */
        assert_int_equal(store_begin(p->f[0]->s), KB_OK);
        assert_int_equal(store_admit(p->f[0]->s, v[0], n), KB_OK);
        assert_int_equal(store_commit(p->f[0]->s), KB_OK);
        assert_int_equal(store_begin(p->f[1]->s), KB_OK);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(store_admit(p->f[1]->s, &v[1][i], 1), KB_OK);
        assert_int_equal(store_commit(p->f[1]->s), KB_OK);
        for (size_t i = 0; i < n; i++) {
            struct kb_admit *x = &v[0][i], *y = &v[1][i];
            if (x->outcome != y->outcome)
                fail_msg("run %d admission %zu (key seq %lld): batch %s, one by one %s", run, i,
                         (long long)y->key_seq, kb_strerror(x->outcome), kb_strerror(y->outcome));
            assert_int_equal(x->reserved, y->reserved);
            assert_int_equal(x->expires_at, y->expires_at);
            assert_int_equal(x->retry_ms, y->retry_ms);
            assert_int_equal(x->nholds, y->nholds);
            if (x->outcome == KB_OK || x->outcome == KB_E_CAP_EXHAUSTED)
                assert_int_equal(x->remaining, y->remaining);
            for (size_t h = 0; h < x->nholds; h++)
                assert_int_equal(x->holds[h].period, y->holds[h].period);
            assert_true((x->exhausted == NULL) == (y->exhausted == NULL));
            if (x->exhausted)
                assert_string_equal(x->exhausted, y->exhausted);
            free(x->exhausted);
            free(y->exhausted);
            int key = 0;
            while (p->seq[1][key] != y->key_seq)
                key++;
            if (x->outcome == KB_OK && nopen < MAX_OPEN) {
                open[nopen++] = (struct open_req){
                    key, y->day, y->reserved, {x->holds, y->holds}, {x->nholds, y->nholds}};
            } else {
                free(x->holds);
                free(y->holds);
            }
        }
        compare_usage(p, base_day, run % 10 == 0);
        compare_usage(p, base_day + 1, false);
        if (run % 3 == 2) {
            settle_some(p, open, &nopen);
            compare_usage(p, base_day, run % 10 == 0);
            compare_usage(p, base_day + 1, false);
        }
    }
    for (size_t i = 0; i < nopen; i++) {
        free(open[i].holds[0]);
        free(open[i].holds[1]);
    }
}

/* 200 admissions of 10 on a cap of 500, one call: exactly the first 50
 * fit, each remaining is the cap left after it; settling them at 0 gives
 * it all back. */
static void test_exact_run(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, 99, 500, NOW + 86400);
    static struct kb_admit v[200];
    for (int i = 0; i < 200; i++)
        v[i] = (struct kb_admit){
            .key_seq = seq, .day = DAY, .now = NOW, .ts_ms = NOW * 1000, .amount = 10};
    /* twice: PostgreSQL takes the run in one statement once it knows the
     * key names no budget (its first admission told it) */
    for (int round = 0; round < 2; round++) {
        int64_t day = DAY + round;
        for (int i = 0; i < 200; i++)
            v[i].day = day;
        assert_int_equal(store_begin(f->s), KB_OK);
        assert_int_equal(store_admit(f->s, v, 200), KB_OK);
        assert_int_equal(store_commit(f->s), KB_OK);
        for (int i = 0; i < 200; i++) {
            assert_int_equal(v[i].outcome, i < 50 ? KB_OK : KB_E_CAP_EXHAUSTED);
            assert_int_equal(v[i].remaining, i < 50 ? 500 - 10 * (i + 1) : 0);
            assert_int_equal(v[i].reserved, 10);
            assert_int_equal(v[i].nholds, 0);
        }
        struct kb_key *k = NULL;
        assert_int_equal(store_key_get(f->s, "vk_admit_99", day, &k), KB_OK);
        assert_int_equal(k->reserved, 500);
        assert_int_equal(k->spent, 0);
        assert_int_equal(k->requests, 50);
        store_key_free(k);
        assert_mirror(f);
        struct kb_settle st[50];
        for (int i = 0; i < 50; i++)
            st[i] = (struct kb_settle){seq, day, 10, 0, NULL, 0};
        assert_int_equal(store_begin(f->s), KB_OK);
        assert_int_equal(store_settle(f->s, st, 50), KB_OK);
        assert_int_equal(store_commit(f->s), KB_OK);
        assert_int_equal(store_key_get(f->s, "vk_admit_99", day, &k), KB_OK);
        assert_int_equal(k->reserved, 0);
        assert_int_equal(k->spent, 0);
        store_key_free(k);
        assert_mirror(f);
    }
}

/* As the writer runs a batch: settlements, then admissions, in one
 * transaction (PostgreSQL queues the settlements into the admissions'
 * round trip). Each admission sees the settlements before it, and reads
 * its own answer, not theirs: one admission alone in its run is the case
 * a confusion of the two would pass as admitted. */
static void test_settle_then_admit(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, 98, 100, NOW + 86400);
    for (int round = 0; round < 3; round++) { /* the first teaches PostgreSQL "no budget" */
        int64_t day = DAY + round;
        struct kb_admit fill[10];
        for (int i = 0; i < 10; i++)
            fill[i] = (struct kb_admit){
                .key_seq = seq, .day = day, .now = NOW, .ts_ms = NOW * 1000, .amount = 10};
        assert_int_equal(store_begin(f->s), KB_OK);
        assert_int_equal(store_admit(f->s, fill, 10), KB_OK);
        assert_int_equal(store_commit(f->s), KB_OK);
        for (int i = 0; i < 10; i++)
            assert_int_equal(fill[i].outcome, KB_OK);
        /* full: a settlement at its reservation frees nothing */
        struct kb_settle keep = {seq, day, 10, 10, NULL, 0};
        struct kb_admit one = {
            .key_seq = seq, .day = day, .now = NOW, .ts_ms = NOW * 1000, .amount = 10};
        assert_int_equal(store_begin(f->s), KB_OK);
        assert_int_equal(store_settle(f->s, &keep, 1), KB_OK);
        assert_int_equal(store_admit(f->s, &one, 1), KB_OK);
        assert_int_equal(one.outcome, KB_E_CAP_EXHAUSTED);
        assert_int_equal(one.remaining, 0);
        /* a settlement at 0 frees 10: the next admission of the same
         * transaction fits, exactly, and the one after does not */
        struct kb_settle give = {seq, day, 10, 0, NULL, 0};
        struct kb_admit two[2] = {one, one};
        assert_int_equal(store_settle(f->s, &give, 1), KB_OK);
        assert_int_equal(store_admit(f->s, &two[0], 1), KB_OK);
        assert_int_equal(store_admit(f->s, &two[1], 1), KB_OK);
        assert_int_equal(store_commit(f->s), KB_OK);
        assert_int_equal(two[0].outcome, KB_OK);
        assert_int_equal(two[0].remaining, 0);
        assert_int_equal(two[0].expires_at, NOW + 86400);
        assert_int_equal(two[1].outcome, KB_E_CAP_EXHAUSTED);
        struct kb_key *k = NULL;
        assert_int_equal(store_key_get(f->s, "vk_admit_98", day, &k), KB_OK);
        assert_int_equal(k->spent, 10);
        assert_int_equal(k->reserved, 90);
        assert_int_equal(k->requests, 11);
        store_key_free(k);
        assert_mirror(f);
    }
}

/* PostgreSQL: the mirror stays equal to spend through runs of several
 * keys and days, refusals, and settlements below, at and above what was
 * reserved. */
static void test_pg_mirror(void **state)
{
    struct fixture *f = *state;
    int64_t seq[3];
    for (int i = 0; i < 3; i++)
        seq[i] = add_key(f->s, 90 + i, 700, NOW + 86400);
    g_rng = 7;
    struct kb_admit v[48];
    struct kb_settle st[48];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 48; i++)
            v[i] = (struct kb_admit){.key_seq = seq[rnd(3)],
                                     .day = DAY + rnd(2),
                                     .now = NOW,
                                     .ts_ms = NOW * 1000,
                                     .amount = amounts[rnd(7)] / 5};
        assert_int_equal(store_begin(f->s), KB_OK);
        assert_int_equal(store_admit(f->s, v, 48), KB_OK);
        assert_int_equal(store_commit(f->s), KB_OK);
        assert_mirror(f);
        size_t n = 0;
        for (int i = 0; i < 48; i++)
            if (v[i].outcome == KB_OK)
                st[n++] = (struct kb_settle){v[i].key_seq,  v[i].day,
                                             v[i].reserved, v[i].reserved * (int64_t)rnd(3) / 2,
                                             NULL,          0};
        assert_int_equal(store_begin(f->s), KB_OK);
        assert_int_equal(store_settle(f->s, st, n), KB_OK);
        assert_int_equal(store_commit(f->s), KB_OK);
        assert_mirror(f);
        assert_int_equal(sql(f, "SELECT coalesce(sum(reserved_micros), 0) FROM spend"), 0);
    }
}

/* ---- kb_settle (schema_pg/004_batch.sql) when the mirror lost rows ---- */

/* PostgreSQL: spend's spent and reserved, and this node's mirror row, of
 * key seq on DAY; -1 for a row that is not there. */
static int64_t spent_of(const struct fixture *f, int64_t seq)
{
    return sql(f,
               "SELECT coalesce((SELECT spent_micros FROM spend WHERE key_seq = %lld "
               "AND day = %lld), -1)",
               (long long)seq, (long long)DAY);
}

static int64_t reserved_of(const struct fixture *f, int64_t seq)
{
    return sql(f,
               "SELECT coalesce((SELECT reserved_micros FROM spend WHERE key_seq = %lld "
               "AND day = %lld), -1)",
               (long long)seq, (long long)DAY);
}

static int64_t mirror_of(const struct fixture *f, int64_t seq)
{
    return sql(f,
               "SELECT coalesce((SELECT micros FROM node_reservations WHERE key_seq = %lld "
               "AND day = %lld AND node_id <> 'other'), -1)",
               (long long)seq, (long long)DAY);
}

/* n reservations of 100 on each key of seq[0..nk) in one run, all
 * admitted. */
static void reserve_100s(struct fixture *f, const int64_t *seq, const int *n, int nk)
{
    struct kb_admit v[16];
    int m = 0;
    for (int k = 0; k < nk; k++)
        for (int i = 0; i < n[k]; i++)
            v[m++] = (struct kb_admit){
                .key_seq = seq[k], .day = DAY, .now = NOW, .ts_ms = NOW * 1000, .amount = 100};
    assert_int_equal(store_begin(f->s), KB_OK);
    assert_int_equal(store_admit(f->s, v, (size_t)m), KB_OK);
    assert_int_equal(store_commit(f->s), KB_OK);
    for (int i = 0; i < m; i++) {
        assert_int_equal(v[i].outcome, KB_OK);
        assert_int_equal(v[i].reserved, 100);
    }
    for (int k = 0; k < nk; k++) {
        assert_int_equal(reserved_of(f, seq[k]), 100 * n[k]);
        assert_int_equal(mirror_of(f, seq[k]), 100 * n[k]);
    }
}

/* Another node reaped this start and settled some of its reservations at
 * their worst case: each was charged in full (spend: reserved -> spent)
 * and left this start's mirror row. One store_settle call then settles
 * all of them, interleaved with a key whose mirror is whole: what the
 * mirror still holds is released and charged at its actual cost; what it
 * no longer holds was charged its reservation already, so only the cost
 * beyond it is added, and spend's reserved (another node's 100 on the
 * same row) is not touched. */
static void test_pg_settle_partly_reaped(void **state)
{
    struct fixture *f = *state;
    int64_t a = add_key(f->s, 80, 1000, NOW + 86400); /* mirror reduced: 2 of 4 reaped */
    int64_t b = add_key(f->s, 81, 1000, NOW + 86400); /* mirror whole */
    int64_t c = add_key(f->s, 82, 1000, NOW + 86400); /* mirror row gone: all 3 reaped */
    reserve_100s(f, (int64_t[]){a, b, c}, (int[]){4, 2, 3}, 3);

    /* the reaper, on a: two of 100 charged, out of the mirror; and another
     * node holds 100 of its own on the same row */
    sql(f, "UPDATE node_reservations SET micros = micros - 200 WHERE key_seq = %lld", (long long)a);
    sql(f,
        "UPDATE spend SET reserved_micros = reserved_micros - 200 + 100, "
        "spent_micros = spent_micros + 200 WHERE key_seq = %lld",
        (long long)a);
    sql(f,
        "INSERT INTO node_reservations (node_id, boot_id, key_seq, day, micros) "
        "VALUES ('other', 'boot-other', %lld, %lld, 100)",
        (long long)a, (long long)DAY);
    /* on c: all three charged, the row removed */
    sql(f, "DELETE FROM node_reservations WHERE key_seq = %lld", (long long)c);
    sql(f,
        "UPDATE spend SET reserved_micros = 0, spent_micros = spent_micros + 300 "
        "WHERE key_seq = %lld",
        (long long)c);
    assert_mirror(f);
    assert_int_equal(spent_of(f, a), 200);
    assert_int_equal(reserved_of(f, a), 300);
    assert_int_equal(mirror_of(f, a), 200);

    const struct kb_settle st[] = {
        {a, DAY, 100, 30, NULL, 0},  /* held (200 -> 100): releases 100, spends 30 */
        {c, DAY, 100, 30, NULL, 0},  /* not held: 30 < the 100 charged, nothing */
        {b, DAY, 100, 100, NULL, 0}, /* held: releases 100, spends 100 */
        {a, DAY, 100, 150, NULL, 0}, /* held (100 -> 0): releases 100, spends 150 */
        {a, DAY, 100, 70, NULL, 0},  /* not held: nothing */
        {c, DAY, 100, 260, NULL, 0}, /* not held: the 160 beyond the 100 */
        {b, DAY, 100, 0, NULL, 0},   /* held: releases 100 */
        {a, DAY, 100, 250, NULL, 0}, /* not held: the 150 beyond the 100 */
        {c, DAY, 100, 100, NULL, 0}, /* not held: exactly what was charged */
        {a, DAY, 0, 40, NULL, 0},    /* reserved nothing: its actual */
    };
    assert_int_equal(store_begin(f->s), KB_OK);
    assert_int_equal(store_settle(f->s, st, sizeof st / sizeof st[0]), KB_OK);
    assert_int_equal(store_commit(f->s), KB_OK);

    assert_int_equal(spent_of(f, a), 200 + 30 + 150 + 150 + 40);
    assert_int_equal(reserved_of(f, a), 100); /* the other node's */
    assert_int_equal(mirror_of(f, a), 0);
    assert_int_equal(sql(f,
                         "SELECT micros FROM node_reservations WHERE node_id = 'other' "
                         "AND key_seq = %lld",
                         (long long)a),
                     100);
    assert_int_equal(spent_of(f, b), 100);
    assert_int_equal(reserved_of(f, b), 0);
    assert_int_equal(mirror_of(f, b), 0);
    assert_int_equal(spent_of(f, c), 300 + 160);
    assert_int_equal(reserved_of(f, c), 0);
    assert_int_equal(mirror_of(f, c), -1); /* not made again */
    assert_mirror(f);
}

/* A settlement whose key has no spend row on its day (nothing reserved
 * there, or the row is gone) settles nothing: no row is made, this node's
 * mirror row is left as it is, and the other settlements of the same call
 * still count. */
static void test_pg_settle_no_spend_row(void **state)
{
    struct fixture *f = *state;
    int64_t d = add_key(f->s, 83, 1000, NOW + 86400); /* spend row deleted */
    int64_t e = add_key(f->s, 84, 1000, NOW + 86400); /* never reserved */
    int64_t g = add_key(f->s, 85, 1000, NOW + 86400); /* as usual */
    reserve_100s(f, (int64_t[]){d, g}, (int[]){2, 1}, 2);
    sql(f, "DELETE FROM spend WHERE key_seq = %lld", (long long)d);

    const struct kb_settle st[] = {
        {d, DAY, 100, 50, NULL, 0},  {e, DAY, 0, 40, NULL, 0},    {g, DAY, 100, 20, NULL, 0},
        {d, DAY, 100, 300, NULL, 0}, {e, DAY, 100, 100, NULL, 0}, {d, DAY, 0, 40, NULL, 0},
    };
    assert_int_equal(store_begin(f->s), KB_OK);
    assert_int_equal(store_settle(f->s, st, sizeof st / sizeof st[0]), KB_OK);
    assert_int_equal(store_commit(f->s), KB_OK);

    assert_int_equal(sql(f, "SELECT count(*) FROM spend WHERE key_seq IN (%lld, %lld)",
                         (long long)d, (long long)e),
                     0);
    assert_int_equal(mirror_of(f, d), 200); /* untouched */
    assert_int_equal(mirror_of(f, e), -1);
    assert_int_equal(spent_of(f, g), 20);
    assert_int_equal(reserved_of(f, g), 0);
    assert_int_equal(mirror_of(f, g), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_differential, setup_pair_sqlite, teardown_pair),
        cmocka_unit_test_setup_teardown(test_differential, setup_pair_pg, teardown_pair),
        cmocka_unit_test_setup_teardown(test_exact_run, setup_sqlite, teardown),
        cmocka_unit_test_setup_teardown(test_exact_run, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_settle_then_admit, setup_sqlite, teardown),
        cmocka_unit_test_setup_teardown(test_settle_then_admit, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_pg_mirror, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_pg_settle_partly_reaped, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_pg_settle_no_spend_row, setup_pg, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
