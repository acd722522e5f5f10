/*
 * test_pg_inflight.c - the writer's COMMIT sent at once and read with the
 * next round trip (pg__commit_later). Regression tests for what a review
 * found (session 9); "once:" marks what the code did before its fix.
 *
 *   test_carried_commit_after_failed_commit: batch
 *     A's COMMIT is in flight and fails at commit time (the transaction
 *     ends: the session is idle, not in a failed block). Batch B sent
 *     nothing yet, so its commit goes through pg__commit_later's pending
 *     branch -> pg__commit -> pg__pipeline, which SENDS B's BEGIN ...
 *     COMMIT before it READS A's answers: B commits on the server while
 *     it is answered as failed, its rows chained on A's lost ones.
 *   test_store_commit_after_failed_commit: the same
 *     through store_commit (the writer's rerun of a fire-and-forget job,
 *     run_batch(w, j, false), while the batch before is still pending).
 *   test_first_round_trip_after_failed_commit: guard (passes): B's first
 *     statement carries A's answers; B fails and nothing of it commits.
 *
 *   test_conn_lost_between_send_and_read: guard (passes): the backend is
 *     terminated while A's COMMIT is unread: A completes once (either
 *     outcome), the next batch commits on a reset session with its
 *     settings.
 *   test_reset_while_commit_in_flight (defensive):
 *     libpq notices the loss before the next round trip (here forced by
 *     PQconsumeInput; no caller does I/O there today): pg__conn_ready
 *     resets and its session_setup goes through pg__pipeline, reads the
 *     stale in-flight plan on the new session, fails, and the session is
 *     then taken as ready without its settings (statement_timeout 0).
 *
 * A commit-time failure that ends the transaction needs a deferred check
 * here (a DEFERRABLE INITIALLY DEFERRED unique constraint); the schema
 * has none today, so the defect is latent, not reachable by a request.
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

#include "store/pg_int.h"
#include "store_fixture.h"
#include "store/store.h"

#define sql(f, ...) test_pg_sql((f)->url, __VA_ARGS__)

static const char D_ROWS[] = "INSERT INTO review_d (v) SELECT * FROM unnest($1::text[])";
static const char D_ROW[] = "INSERT INTO review_d (v) VALUES ($1::text)";
static const char T_ROWS[] = "INSERT INTO review_t (v) SELECT * FROM unnest($1::text[])";
static const char T_ROW[] = "INSERT INTO review_t (v) VALUES ($1::text)";

static enum kb_err defer(struct kb_store *s, const char *rows, const char *row, const char *v)
{
    struct pg_args a = {0};
    pg_arg_text(&a, v);
    return pg__defer(s, rows, row, &a);
}

struct outcome {
    int calls;
    enum kb_err err;
};

static void done(void *arg, enum kb_err err)
{
    struct outcome *o = arg;
    o->calls++;
    o->err = err;
}

/* Batch A: two equal rows under a deferred unique constraint, its COMMIT
 * sent and not read: it fails at commit, after which the session is idle. */
static void batch_a(struct fixture *f, struct outcome *a)
{
    struct kb_store *s = f->s;
    sql(f, "CREATE TABLE review_d (v text UNIQUE DEFERRABLE INITIALLY DEFERRED)");
    sql(f, "CREATE TABLE review_t (v text)");
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(defer(s, D_ROWS, D_ROW, "x"), KB_OK);
    assert_int_equal(defer(s, D_ROWS, D_ROW, "x"), KB_OK);
    enum kb_err err = KB_OK;
    assert_true(store_commit_later(s, done, a, &err)); /* in flight */
    assert_int_equal(a->calls, 0);
}

static void test_carried_commit_after_failed_commit(void **state)
{
    struct fixture *f = *state;
    struct kb_store *s = f->s;
    struct outcome a = {0}, b = {0};
    batch_a(f, &a);
    /* batch B: only deferred rows, nothing sent before its commit */
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(defer(s, T_ROWS, T_ROW, "b"), KB_OK);
    enum kb_err err = KB_OK;
    bool later = store_commit_later(s, done, &b, &err);
    assert_false(later);                /* the pending branch: both now */
    assert_int_equal(a.calls, 1);       /* A's outcome ... */
    assert_int_not_equal(a.err, KB_OK); /* ... failed */
    assert_int_not_equal(err, KB_OK);   /* B is answered as failed ... */
    store_rollback(s);
    /* once: ... but committed on the server (1) */
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t"), 0);
    assert_int_equal(sql(f, "SELECT count(*) FROM review_d"), 0);
}

static void test_store_commit_after_failed_commit(void **state)
{
    struct fixture *f = *state;
    struct kb_store *s = f->s;
    struct outcome a = {0};
    batch_a(f, &a);
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(defer(s, T_ROWS, T_ROW, "b"), KB_OK);
    assert_int_not_equal(store_commit(s), KB_OK);
    assert_int_equal(a.calls, 1);
    assert_int_not_equal(a.err, KB_OK);
    store_rollback(s);
    /* once: committed although store_commit failed (1) */
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t"), 0);
}

/* Guard: B's first statement carries A's answers; B fails, nothing of it
 * commits, and the batch after works. */
static void test_first_round_trip_after_failed_commit(void **state)
{
    struct fixture *f = *state;
    struct kb_store *s = f->s;
    struct outcome a = {0}, c = {0};
    batch_a(f, &a);
    assert_int_equal(store_begin(s), KB_OK);
    struct pg_args v = {0};
    pg_arg_text(&v, "b");
    assert_int_not_equal(pg__do(s, T_ROW, &v), KB_OK); /* carries A's answers */
    assert_int_equal(a.calls, 1);
    assert_int_not_equal(a.err, KB_OK);
    enum kb_err err = KB_OK;
    assert_false(store_commit_later(s, done, &c, &err));
    assert_int_not_equal(err, KB_OK);
    store_rollback(s);
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t"), 0);
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(defer(s, T_ROWS, T_ROW, "c"), KB_OK);
    assert_int_equal(store_commit(s), KB_OK);
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t"), 1);
}

static void kill_backend(struct fixture *f, struct kb_store *s)
{
    char q[96];
    snprintf(q, sizeof q, "SELECT pg_terminate_backend(%d)", PQbackendPID(pg(s)->conn));
    sql(f, "%s", q);
}

static void assert_session_settings(struct kb_store *s)
{
    enum kb_err err;
    PGresult *r = pg__run(s, "SHOW statement_timeout", NULL, &err);
    assert_int_equal(err, KB_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "30s");
    PQclear(r);
}

static void test_conn_lost_between_send_and_read(void **state)
{
    struct fixture *f = *state;
    struct kb_store *s = f->s;
    struct outcome a = {0};
    sql(f, "CREATE TABLE review_t (v text)");
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(defer(s, T_ROWS, T_ROW, "a"), KB_OK);
    enum kb_err err = KB_OK;
    assert_true(store_commit_later(s, done, &a, &err));
    kill_backend(f, s);
    store_commit_flush(s);
    assert_int_equal(a.calls, 1);
    /* a batch may fail before the loss is noticed (A's answers may have
     * been read before the kill); one commits once the session is reset
     * (polled with a deadline: the reset's back-off) */
    bool committed = false;
    for (int i = 0; i < 100 && !committed; i++) {
        committed = store_begin(s) == KB_OK && defer(s, T_ROWS, T_ROW, "b") == KB_OK &&
                    store_commit(s) == KB_OK;
        if (!committed) {
            store_rollback(s);
            usleep(20 * 1000);
        }
    }
    assert_true(committed);
    assert_int_equal(sql(f, "SELECT count(*) FROM review_t WHERE v = 'b'"), 1);
    assert_session_settings(s);
}

static void test_reset_while_commit_in_flight(void **state)
{
    struct fixture *f = *state;
    struct kb_store *s = f->s;
    struct outcome a = {0};
    sql(f, "CREATE TABLE review_t (v text)");
    assert_int_equal(store_begin(s), KB_OK);
    assert_int_equal(defer(s, T_ROWS, T_ROW, "a"), KB_OK);
    enum kb_err err = KB_OK;
    assert_true(store_commit_later(s, done, &a, &err));
    kill_backend(f, s);
    /* libpq notices the loss (poll with a deadline) */
    for (int i = 0; i < 100 && PQstatus(pg(s)->conn) == CONNECTION_OK; i++) {
        (void)PQconsumeInput(pg(s)->conn);
        usleep(20 * 1000);
    }
    assert_int_not_equal(PQstatus(pg(s)->conn), CONNECTION_OK);
    bool began = false;
    for (int i = 0; i < 100 && !(began = store_begin(s) == KB_OK); i++)
        usleep(20 * 1000);
    assert_true(began);
    assert_int_equal(a.calls, 1);
    assert_int_not_equal(a.err, KB_OK);
    assert_int_equal(defer(s, T_ROWS, T_ROW, "b"), KB_OK);
    assert_int_equal(store_commit(s), KB_OK);
    /* once: "0" (session_setup never ran on this session) */
    assert_session_settings(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_carried_commit_after_failed_commit, setup_pg,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_commit_after_failed_commit, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_first_round_trip_after_failed_commit, setup_pg,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_conn_lost_between_send_and_read, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_reset_while_commit_in_flight, setup_pg, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
