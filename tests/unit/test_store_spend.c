/*
 * test_store_spend.c - the store conformance suite (test_store.c), part
 * three: the spend counters (reserve within and over the cap, exact fits,
 * zero amounts, settling, days and keys independent, the request counter)
 * and the money guarantee itself: four threads, each with its own
 * connection, race reservations against one cap and the totals must come
 * out exact whatever the interleaving. Every case runs on SQLite and on
 * PostgreSQL (store_conf.h).
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

#include "store/store.h"
#include "store_conf.h"

/* ---- spend ---- */

static void test_reserve_within_cap(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_s", "s", "stripe", 1000, 5000);
    int64_t rem = -1;
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 300, 1000, &rem), KB_OK);
    assert_int_equal(rem, 700);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 0, 300, 1);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 200, 1000, &rem), KB_OK);
    assert_int_equal(rem, 500);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 0, 500, 2);
    /* remaining may be NULL */
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 100, 1000, NULL), KB_OK);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 0, 600, 3);
    /* the hash lookup carries the same usage */
    uint8_t h[KB_HASH_LEN];
    hash_of("vk_s", h);
    struct kb_key *k = NULL;
    assert_int_equal(store_key_by_hash(f->s, h, DAY0, &k), KB_OK);
    assert_int_equal(k->reserved, 600);
    assert_int_equal(k->requests, 3);
    store_key_free(k);
}

static void test_reserve_over_cap_changes_nothing(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_s", "s", "stripe", 1000, 5000);
    int64_t rem = -1;
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 300, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_settle(f->s, seq, DAY0, 300, 250, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 400, 1000, &rem), KB_OK);
    assert_int_equal(rem, 350);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 250, 400, 2);

    static const int64_t too_big[] = {351, 352, 1000, 1001, INT64_C(1) << 40};
    for (size_t i = 0; i < sizeof too_big / sizeof too_big[0]; i++) {
        rem = -1;
        assert_int_equal(store_spend_reserve(f->s, seq, DAY0, too_big[i], 1000, &rem),
                         KB_E_CAP_EXHAUSTED);
        assert_int_equal(rem, 350);                    /* what is left, unchanged */
        ASSERT_USAGE(f->s, "vk_s", DAY0, 250, 400, 2); /* not even the request count */
    }
    /* over the cap from the start: a fresh day with an amount above the cap */
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0 + 1, 1001, 1000, &rem),
                     KB_E_CAP_EXHAUSTED);
    assert_int_equal(rem, 1000);
    ASSERT_USAGE(f->s, "vk_s", DAY0 + 1, 0, 0, 0);
}

static void test_reserve_exact_fit(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_s", "s", "stripe", 1000, 5000);
    int64_t rem = -1;
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 1000, 1000, &rem), KB_OK);
    assert_int_equal(rem, 0);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 1, 1000, &rem), KB_E_CAP_EXHAUSTED);
    assert_int_equal(rem, 0);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 0, 1000, 1);

    /* and in pieces: 400 + 350 + 250 == cap */
    int64_t seq2 = add_key(f->s, "vk_t", "t", "stripe", 1000, 5000);
    assert_int_equal(store_spend_reserve(f->s, seq2, DAY0, 400, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_settle(f->s, seq2, DAY0, 400, 400, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, seq2, DAY0, 350, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, seq2, DAY0, 251, 1000, &rem), KB_E_CAP_EXHAUSTED);
    assert_int_equal(store_spend_reserve(f->s, seq2, DAY0, 250, 1000, &rem), KB_OK);
    assert_int_equal(rem, 0);
    ASSERT_USAGE(f->s, "vk_t", DAY0, 400, 600, 3);
}

static void test_reserve_zero(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_s", "s", "stripe", 1000, 5000);
    int64_t rem = -1;
    /* a free request still counts as a request, and changes no money */
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 0, 1000, &rem), KB_OK);
    assert_int_equal(rem, 1000);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 0, 0, 1);
    /* it fits even when the cap is used up exactly */
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 1000, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 0, 1000, &rem), KB_OK);
    assert_int_equal(rem, 0);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 0, 1000, 3);
    /* and with a zero cap */
    int64_t seq0 = add_key(f->s, "vk_zero", "z", "stripe", 0, 5000);
    assert_int_equal(store_spend_reserve(f->s, seq0, DAY0, 0, 0, &rem), KB_OK);
    assert_int_equal(rem, 0);
    assert_int_equal(store_spend_reserve(f->s, seq0, DAY0, 1, 0, &rem), KB_E_CAP_EXHAUSTED);
    ASSERT_USAGE(f->s, "vk_zero", DAY0, 0, 0, 1);
    /* settling a zero reservation at zero is a no-op */
    assert_int_equal(store_spend_settle(f->s, seq0, DAY0, 0, 0, 0, &rem), KB_OK);
    ASSERT_USAGE(f->s, "vk_zero", DAY0, 0, 0, 1);
}

static void test_settle(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_s", "s", "stripe", 1000, 5000);
    int64_t rem = -1;
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 600, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 400, 1000, &rem), KB_OK);
    assert_int_equal(rem, 0);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 100, 1000, &rem), KB_E_CAP_EXHAUSTED);

    /* actual < reserved: the difference is free again */
    assert_int_equal(store_spend_settle(f->s, seq, DAY0, 600, 150, 1000, &rem), KB_OK);
    assert_int_equal(rem, 450);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 150, 400, 2); /* settling is not a request */
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 450, 1000, &rem), KB_OK);
    assert_int_equal(rem, 0);

    /* actual = 0 releases the whole reservation */
    assert_int_equal(store_spend_settle(f->s, seq, DAY0, 450, 0, 1000, &rem), KB_OK);
    assert_int_equal(rem, 450);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 150, 400, 3);

    /* actual = reserved: money moves from reserved to spent */
    assert_int_equal(store_spend_settle(f->s, seq, DAY0, 400, 400, 1000, &rem), KB_OK);
    assert_int_equal(rem, 450);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 550, 0, 3);

    /* remaining may be NULL */
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 10, 1000, NULL), KB_OK);
    assert_int_equal(store_spend_settle(f->s, seq, DAY0, 10, 10, 1000, NULL), KB_OK);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 560, 0, 4);
}

/* A vendor may bill more than was reserved (the estimate was low): the
 * excess is recorded, remaining is clamped at 0, and the cap then holds. */
static void test_settle_over_reservation(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_s", "s", "stripe", 1000, 5000);
    int64_t rem = -1;
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 900, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_settle(f->s, seq, DAY0, 900, 1200, 1000, &rem), KB_OK);
    assert_int_equal(rem, 0);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 1200, 0, 1);
    assert_int_equal(store_spend_reserve(f->s, seq, DAY0, 1, 1000, &rem), KB_E_CAP_EXHAUSTED);
    assert_int_equal(rem, 0);
    /* a cap lowered below what is used: remaining is 0, never negative */
    int64_t seq2 = add_key(f->s, "vk_t", "t", "stripe", 1000, 5000);
    assert_int_equal(store_spend_reserve(f->s, seq2, DAY0, 800, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, seq2, DAY0, 1, 500, &rem), KB_E_CAP_EXHAUSTED);
    assert_int_equal(rem, 0);
}

static void test_days_and_keys_independent(void **state)
{
    struct fixture *f = *state;
    int64_t a = add_key(f->s, "vk_a", "a", "stripe", 1000, 5000);
    int64_t b = add_key(f->s, "vk_b", "b", "stripe", 1000, 5000);
    int64_t rem = -1;
    assert_int_equal(store_spend_reserve(f->s, a, DAY0, 1000, 1000, &rem), KB_OK);
    assert_int_equal(store_spend_reserve(f->s, a, DAY0, 1, 1000, &rem), KB_E_CAP_EXHAUSTED);
    /* the next day (and the one before) start from zero */
    assert_int_equal(store_spend_reserve(f->s, a, DAY0 + 1, 700, 1000, &rem), KB_OK);
    assert_int_equal(rem, 300);
    assert_int_equal(store_spend_reserve(f->s, a, DAY0 - 1, 10, 1000, &rem), KB_OK);
    assert_int_equal(rem, 990);
    /* another key on the same day starts from zero */
    assert_int_equal(store_spend_reserve(f->s, b, DAY0, 999, 1000, &rem), KB_OK);
    assert_int_equal(rem, 1);
    /* settling one day touches only that day */
    assert_int_equal(store_spend_settle(f->s, a, DAY0 + 1, 700, 0, 1000, &rem), KB_OK);
    assert_int_equal(rem, 1000);
    ASSERT_USAGE(f->s, "vk_a", DAY0, 0, 1000, 1);
    ASSERT_USAGE(f->s, "vk_a", DAY0 + 1, 0, 0, 1);
    ASSERT_USAGE(f->s, "vk_a", DAY0 - 1, 0, 10, 1);
    ASSERT_USAGE(f->s, "vk_a", DAY0 + 2, 0, 0, 0);
    ASSERT_USAGE(f->s, "vk_b", DAY0, 0, 999, 1);
}

static void test_requests_counter(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_s", "s", "stripe", 100, 5000);
    int ok = 0, refused = 0;
    for (int i = 0; i < 40; i++) {
        enum kb_err err = store_spend_reserve(f->s, seq, DAY0, 7, 100, NULL);
        if (err == KB_OK)
            ok++;
        else if (err == KB_E_CAP_EXHAUSTED)
            refused++;
        else
            fail_msg("reserve: %s", kb_strerror(err));
    }
    assert_int_equal(ok, 14); /* 14 * 7 = 98 <= 100 < 105 */
    assert_int_equal(refused, 26);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 0, 98, 14);
    for (int i = 0; i < ok; i++)
        assert_int_equal(store_spend_settle(f->s, seq, DAY0, 7, 1, 100, NULL), KB_OK);
    ASSERT_USAGE(f->s, "vk_s", DAY0, 14, 0, 14);
}

/* ---- the money guarantee under concurrency ---- */

#define RACE_THREADS 4
#define RACE_ATTEMPTS 50 /* per thread: 200 in all */
#define RACE_AMOUNT 10
#define RACE_CAP 500
#define RACE_ACTUAL 4 /* settled cost of each won reservation */

struct racer {
    const char *url;
    int64_t seq;
    pthread_barrier_t *barrier;
    unsigned pause_us; /* between attempts; 0: none */
    /* results */
    int open_err;
    int ok, refused, other, refused_nonzero_remaining;
    int64_t remaining[RACE_ATTEMPTS]; /* of each won reservation */
    int settle_errors;
    int phase3_ok, phase3_other;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct kb_store *s = NULL;
    /* every thread opens its own connection, as each worker does */
    enum kb_err oerr = store_open(r->url, "normal", true, &s, NULL);
    r->open_err = oerr != KB_OK;
    pthread_barrier_wait(r->barrier);
    if (oerr != KB_OK) {
        pthread_barrier_wait(r->barrier);
        pthread_barrier_wait(r->barrier);
        return NULL;
    }

    /* phase 1: everybody reserves at once */
    for (int i = 0; i < RACE_ATTEMPTS; i++) {
        int64_t rem = -1;
        enum kb_err err = store_spend_reserve(s, r->seq, DAY0, RACE_AMOUNT, RACE_CAP, &rem);
        if (err == KB_OK) {
            r->remaining[r->ok++] = rem;
        } else if (err == KB_E_CAP_EXHAUSTED) {
            r->refused++;
            if (rem != 0)
                r->refused_nonzero_remaining++;
        } else {
            r->other++;
        }
        if (r->pause_us)
            usleep(r->pause_us);
    }
    pthread_barrier_wait(r->barrier);

    /* phase 2: everybody settles what it won, at once */
    for (int i = 0; i < r->ok; i++)
        if (store_spend_settle(s, r->seq, DAY0, RACE_AMOUNT, RACE_ACTUAL, RACE_CAP, NULL) != KB_OK)
            r->settle_errors++;
    pthread_barrier_wait(r->barrier);

    /* phase 3: reserve-then-settle in full, interleaved with the others,
     * until the first refusal; used money never goes down here, so once
     * one reservation is refused the cap is reached for good */
    for (;;) {
        enum kb_err err = store_spend_reserve(s, r->seq, DAY0, RACE_AMOUNT, RACE_CAP, NULL);
        if (err == KB_E_CAP_EXHAUSTED)
            break;
        if (err != KB_OK) {
            r->phase3_other++;
            break;
        }
        r->phase3_ok++;
        if (store_spend_settle(s, r->seq, DAY0, RACE_AMOUNT, RACE_AMOUNT, RACE_CAP, NULL) !=
            KB_OK) {
            r->phase3_other++;
            break;
        }
    }
    store_close(s);
    return NULL;
}

static void test_concurrent_reservations_never_overshoot(void **state)
{
    struct fixture *f = *state;
    int64_t seq = add_key(f->s, "vk_race", "race", "stripe", RACE_CAP, 5000);
    add_key(f->s, "vk_calm", "calm", "stripe", RACE_CAP, 5000); /* must stay untouched */

    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, RACE_THREADS), 0);
    struct racer racers[RACE_THREADS];
    pthread_t threads[RACE_THREADS];
    memset(racers, 0, sizeof racers);
    for (int i = 0; i < RACE_THREADS; i++) {
        racers[i].url = f->url;
        racers[i].seq = seq;
        racers[i].barrier = &barrier;
        racers[i].pause_us = 25;
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    for (int i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    pthread_barrier_destroy(&barrier);

    int ok = 0, refused = 0, other = 0, phase3 = 0;
    bool seen[RACE_CAP / RACE_AMOUNT] = {false};
    for (int i = 0; i < RACE_THREADS; i++) {
        struct racer *r = &racers[i];
        assert_int_equal(r->open_err, 0);
        assert_int_equal(r->settle_errors, 0);
        assert_int_equal(r->phase3_other, 0);
        assert_int_equal(r->refused_nonzero_remaining, 0);
        ok += r->ok;
        refused += r->refused;
        other += r->other;
        phase3 += r->phase3_ok;
        /* each won reservation saw its own, distinct amount left: the cap
         * check, the change and the read were one step */
        for (int j = 0; j < r->ok; j++) {
            int64_t rem = r->remaining[j];
            assert_true(rem >= 0 && rem < RACE_CAP && rem % RACE_AMOUNT == 0);
            assert_false(seen[rem / RACE_AMOUNT]);
            seen[rem / RACE_AMOUNT] = true;
        }
    }
    print_message("race: per-thread wins %d/%d/%d/%d, then %d/%d/%d/%d\n", racers[0].ok,
                  racers[1].ok, racers[2].ok, racers[3].ok, racers[0].phase3_ok,
                  racers[1].phase3_ok, racers[2].phase3_ok, racers[3].phase3_ok);
    assert_int_equal(other, 0);
    assert_int_equal(ok, RACE_CAP / RACE_AMOUNT); /* exactly 50 */
    assert_int_equal(refused, RACE_THREADS * RACE_ATTEMPTS - RACE_CAP / RACE_AMOUNT);
    /* phase 2 left 50 * 4 spent; phase 3 filled the rest in whole steps */
    int64_t after2 = (int64_t)ok * RACE_ACTUAL;
    assert_int_equal(phase3, (RACE_CAP - after2) / RACE_AMOUNT);

    struct kb_key *k = NULL;
    assert_int_equal(store_key_get(f->s, "vk_race", DAY0, &k), KB_OK);
    assert_int_equal(k->spent + k->reserved, RACE_CAP);
    assert_int_equal(k->reserved, 0);
    assert_int_equal(k->spent, RACE_CAP);
    assert_int_equal(k->requests, ok + phase3);
    store_key_free(k);
    ASSERT_USAGE(f->s, "vk_calm", DAY0, 0, 0, 0);
}

/* Phase 1 alone, checked from the outside right after the race: reserved
 * is exactly the cap (nothing settled yet). */
static void *reserve_only(void *arg)
{
    struct racer *r = arg;
    struct kb_store *s = NULL;
    enum kb_err oerr = store_open(r->url, "normal", false, &s, NULL);
    r->open_err = oerr != KB_OK;
    pthread_barrier_wait(r->barrier);
    if (oerr != KB_OK)
        return NULL;
    for (int i = 0; i < RACE_ATTEMPTS; i++) {
        enum kb_err err = store_spend_reserve(s, r->seq, DAY0, RACE_AMOUNT, RACE_CAP, NULL);
        if (err == KB_OK)
            r->ok++;
        else if (err == KB_E_CAP_EXHAUSTED)
            r->refused++;
        else
            r->other++;
        /* SQLite's busy handler sleeps, so without a pause the first
         * thread in tends to win every round; pausing spreads the wins
         * (the totals must not depend on it either way) */
        if (r->pause_us)
            usleep(r->pause_us);
    }
    store_close(s);
    return NULL;
}

static void test_concurrent_reserved_equals_cap(void **state)
{
    struct fixture *f = *state;
    /* repeated: a lucky interleaving must not hide a lost update */
    for (int round = 0; round < 5; round++) {
        char id[32];
        snprintf(id, sizeof id, "vk_round%d", round);
        int64_t seq = add_key(f->s, id, "race", "stripe", RACE_CAP, 5000);
        pthread_barrier_t barrier;
        assert_int_equal(pthread_barrier_init(&barrier, NULL, RACE_THREADS), 0);
        struct racer racers[RACE_THREADS];
        pthread_t threads[RACE_THREADS];
        memset(racers, 0, sizeof racers);
        for (int i = 0; i < RACE_THREADS; i++) {
            racers[i].url = f->url;
            racers[i].seq = seq;
            racers[i].barrier = &barrier;
            racers[i].pause_us = (unsigned)(round * 50);
            assert_int_equal(pthread_create(&threads[i], NULL, reserve_only, &racers[i]), 0);
        }
        for (int i = 0; i < RACE_THREADS; i++)
            assert_int_equal(pthread_join(threads[i], NULL), 0);
        pthread_barrier_destroy(&barrier);
        int ok = 0, other = 0;
        for (int i = 0; i < RACE_THREADS; i++) {
            assert_int_equal(racers[i].open_err, 0);
            ok += racers[i].ok;
            other += racers[i].other;
        }
        print_message("round %d (pause %dus): wins %d/%d/%d/%d\n", round, round * 50, racers[0].ok,
                      racers[1].ok, racers[2].ok, racers[3].ok);
        assert_int_equal(other, 0);
        assert_int_equal(ok, 50);
        ASSERT_USAGE(f->s, id, DAY0, 0, RACE_CAP, 50);
    }
}

/* The cases every backend passes. */
#define NEUTRAL(X)                                                                                 \
    X(test_reserve_within_cap)                                                                     \
    X(test_reserve_over_cap_changes_nothing)                                                       \
    X(test_reserve_exact_fit)                                                                      \
    X(test_reserve_zero)                                                                           \
    X(test_settle)                                                                                 \
    X(test_settle_over_reservation)                                                                \
    X(test_days_and_keys_independent)                                                              \
    X(test_requests_counter)                                                                       \
    X(test_concurrent_reservations_never_overshoot)                                                \
    X(test_concurrent_reserved_equals_cap)

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown),
#define TPG(f) cmocka_unit_test_setup_teardown(f, setup_pg, teardown),

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {NEUTRAL(T)};
    const struct CMUnitTest pg_tests[] = {NEUTRAL(TPG)};
    int failed = cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("postgres", pg_tests, NULL, NULL);
    return failed;
}
