/*
 * test_pg_txn.c - the PostgreSQL writer's transactions (pg_txn.c): what a
 * round trip carries for whom, and deferred rows across savepoints.
 * Regression tests for defects a review found (session 9):
 *
 *   test_settle_then_admit_one: a statement queued by pg__queue (kb_settle)
 *     is carried by the next pg__run (kb_admit); the caller must get its
 *     own statement's result, not the queued one's (an admission of a
 *     revoked key once read outcome 0: admitted).
 *   test_settle_then_admit_two: the same with two admissions (the row
 *     count of kb_settle's answer once failed the batch).
 *   test_flush_inside_savepoint: rows deferred before a savepoint and
 *     flushed inside it were undone by ROLLBACK TO, and stale column
 *     lengths made the next deferred row a malformed array literal.
 *   test_flush_inside_savepoint_loses_rows: the same without a row after
 *     the rollback: the row deferred (and its job released) before the
 *     savepoint must still commit.
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
#include "store/pg_int.h"
#include "store_fixture.h"
#include "store/store.h"

#define NOW INT64_C(1764547200) /* 2025-12-01 00:00:00 UTC */
#define DAY (NOW / 86400)

#define sql(f, ...) test_pg_sql((f)->url, __VA_ARGS__)

static int64_t add_key(struct kb_store *s, const char *id, int64_t cap)
{
    struct kb_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", id);
    k.label = (char *)"label";
    k.vendor = (char *)"stripe";
    k.allowed_endpoints = (char *)"[\"POST /v1/charges\"]";
    k.metadata = (char *)"{}";
    k.daily_cap = cap;
    k.created_at = NOW;
    k.expires_at = NOW + 86400 * 30;
    uint8_t h[KB_HASH_LEN];
    static const uint8_t key[] = "test-server-key";
    crypto_hmac(key, sizeof key - 1, k.id, strlen(k.id), h);
    assert_int_equal(store_key_insert(s, &k, h), KB_OK);
    return k.seq;
}

static struct kb_admit admission(int64_t seq, int64_t amount)
{
    return (struct kb_admit){
        .key_seq = seq, .day = DAY, .now = NOW, .ts_ms = NOW * 1000, .amount = amount};
}

/* Keys: `pay` (cap 1000) with an open reservation of 100, and `rev`
 * (revoked after its first admission). Both known to name no budget on
 * this connection, so that kb_admit decides their admissions. */
static void prepare(struct fixture *f, int64_t *pay, int64_t *rev)
{
    struct kb_store *s = f->s;
    *pay = add_key(s, "vk_pay", 1000);
    *rev = add_key(s, "vk_rev", 1000);
    struct kb_admit v[2] = {admission(*pay, 100), admission(*rev, 0)};
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(store_admit(s, v, 2), KB_OK); /* one at a time: fills the cache */
    assert_int_equal(store_commit(s), KB_OK);
    assert_int_equal(v[0].outcome, KB_OK);
    assert_int_equal(v[1].outcome, KB_OK);
    assert_true(pg__nobudget_has(s, *pay));
    assert_true(pg__nobudget_has(s, *rev));
    assert_int_equal(store_key_revoke(s, "vk_rev", NOW - 1, NULL), KB_OK);
}

/* One admission of a revoked key after a settlement, in one transaction
 * (the writer's run of grouped jobs: settlements rank 0, admissions 1). */
static void test_settle_then_admit_one(void **state)
{
    struct fixture *f = *state;
    int64_t pay, rev;
    prepare(f, &pay, &rev);
    struct kb_settle st = {pay, DAY, 100, 50, NULL, 0};
    struct kb_admit a = admission(rev, 100);
    assert_int_equal(store_begin(f->s), KB_OK);
    assert_int_equal(store_settle(f->s, &st, 1), KB_OK); /* queued */
    assert_int_equal(store_admit(f->s, &a, 1), KB_OK);   /* carries it */
    assert_int_equal(store_commit(f->s), KB_OK);
    /* FAILS UNTIL FIXED: reads KB_OK (kb_settle's result row, "" -> 0) */
    assert_int_equal(a.outcome, KB_E_KEY_REVOKED);
    assert_int_equal(sql(f, "SELECT spent_micros FROM spend WHERE key_seq = %lld", (long long)pay),
                     50);
}

/* Two admissions after a settlement: the run must not fail. */
static void test_settle_then_admit_two(void **state)
{
    struct fixture *f = *state;
    int64_t pay, rev;
    prepare(f, &pay, &rev);
    struct kb_settle st = {pay, DAY, 100, 50, NULL, 0};
    struct kb_admit a[2] = {admission(pay, 900), admission(pay, 100)};
    assert_int_equal(store_begin(f->s), KB_OK);
    assert_int_equal(store_settle(f->s, &st, 1), KB_OK);
    /* FAILS UNTIL FIXED: KB_E_STORE (kb_settle's 1 row != 2) */
    assert_int_equal(store_admit(f->s, a, 2), KB_OK);
    assert_int_equal(store_commit(f->s), KB_OK);
    assert_int_equal(a[0].outcome, KB_OK);              /* 50 spent + 900 */
    assert_int_equal(a[1].outcome, KB_E_CAP_EXHAUSTED); /* 950 + 100 > 1000 */
}

static const char SQL_ROWS[] = "INSERT INTO review_t (v) SELECT * FROM unnest($1::text[])";
static const char SQL_ROW[] = "INSERT INTO review_t (v) VALUES ($1::text)";

static enum kb_err defer_text(struct kb_store *s, const char *v)
{
    struct pg_args a = {0};
    pg_arg_text(&a, v);
    return pg__defer(s, SQL_ROWS, SQL_ROW, &a);
}

/* A row deferred before a savepoint, flushed inside it (pg_audit.c flushes
 * before it reads the chain head, which a failed guarded job dropped),
 * then the job fails: the row deferred before the savepoint must still
 * commit, and so must one deferred after the rollback. */
static void test_flush_inside_savepoint(void **state)
{
    struct fixture *f = *state;
    struct kb_store *s = f->s;
    sql(f, "CREATE TABLE review_t (v text)");
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(defer_text(s, "before"), KB_OK); /* job 1, released */
    assert_int_equal(store_savepoint(s), KB_OK);      /* job 2 */
    assert_int_equal(pg__flush(s), KB_OK);            /* e.g. pg__audit_last */
    assert_int_equal(store_rollback_to(s), KB_OK);    /* job 2 failed */
    assert_int_equal(defer_text(s, "after"), KB_OK);  /* job 3 */
    assert_int_equal(store_commit(s), KB_OK);
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t WHERE v = 'before'"), 1);
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t WHERE v = 'after'"), 1);
}

/* As above, without a row after the rollback (so that the stale lengths
 * do not fail the commit): the earlier job's row must survive. */
static void test_flush_inside_savepoint_loses_rows(void **state)
{
    struct fixture *f = *state;
    struct kb_store *s = f->s;
    sql(f, "CREATE TABLE review_t (v text)");
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(defer_text(s, "before"), KB_OK);
    assert_int_equal(store_savepoint(s), KB_OK);
    assert_int_equal(pg__flush(s), KB_OK);
    assert_int_equal(store_rollback_to(s), KB_OK);
    assert_int_equal(store_commit(s), KB_OK);
    /* once 0: "before" was inserted after SAVEPOINT j */
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t WHERE v = 'before'"), 1);
}

/* A round trip of the writer's transaction failed: nothing more of it is
 * sent, in it or (were the session left idle) outside it, until its
 * rollback; the next transaction works. */
static const char SQL_FAIL[] = "SELECT 1 / 0";
static const char SQL_INSERT[] = "INSERT INTO review_t (v) VALUES ('after the failure')";

static void test_nothing_after_a_failure(void **state)
{
    struct fixture *f = *state;
    struct kb_store *s = f->s;
    sql(f, "CREATE TABLE review_t (v text)");
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_not_equal(pg__do(s, SQL_FAIL, NULL), KB_OK); /* with the BEGIN */
    assert_int_equal(pg__do(s, SQL_INSERT, NULL), KB_E_STORE);
    assert_non_null(strstr(store_last_error(s), "failed earlier"));
    assert_int_equal(defer_text(s, "deferred"), KB_E_STORE);
    assert_int_not_equal(store_commit(s), KB_OK);
    store_rollback(s);
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t"), 0);
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(pg__do(s, SQL_INSERT, NULL), KB_OK);
    assert_int_equal(store_commit(s), KB_OK);
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_settle_then_admit_one, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_settle_then_admit_two, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_flush_inside_savepoint, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_flush_inside_savepoint_loses_rows, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_after_a_failure, setup_pg, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
