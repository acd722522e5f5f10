/*
 * test_writer_ready.c - unit tests for the writer's readiness report
 * (writer_failing_since, writer_probe; src/store/writer.c): a batch that
 * cannot commit sets it, the next commit clears it, a probe commits a real
 * write (other connections see the database change) without traffic, and
 * only one probe is queued at a time.
 *
 * Commits are made to fail with an SQLite commit hook installed on the
 * writer's own connection by a job (it turns COMMIT into ROLLBACK, as a
 * full disk fails it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "store/sqlite_int.h"
#include "store/store.h"
#include "store/writer.h"

static char g_dir[64];
static char g_path[128];
static atomic_bool g_refuse; /* the commit hook refuses every COMMIT */

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/kb-ready-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_path, sizeof g_path, "%s/kb.db", g_dir);
    struct kb_store *s = NULL;
    char *err = NULL;
    assert_int_equal(store_open(g_path, "normal", true, &s, &err), KB_OK);
    assert_int_equal(sqlite3_exec(store__db(s), "CREATE TABLE t (v INTEGER)", NULL, NULL, NULL),
                     SQLITE_OK);
    store_close(s);
    atomic_store(&g_refuse, false);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[160];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", g_path, suffix[i]);
        unlink(p);
    }
    rmdir(g_dir);
    return 0;
}

static int refuse_hook(void *arg)
{
    (void)arg;
    return atomic_load(&g_refuse) ? 1 : 0; /* 1: the COMMIT becomes a ROLLBACK */
}

struct call {
    int n;                   /* done callbacks so far */
    enum kb_err err;         /* the last one's result */
    struct event_base *base; /* loopbreak on each callback */
};

static void on_done(void *arg, enum kb_err err)
{
    struct call *c = arg;
    c->n++;
    c->err = err;
    event_base_loopbreak(c->base);
}

/* Installs the hook and writes a row: fails while g_refuse is set. */
static enum kb_err job_insert(struct kb_store *s, void *arg)
{
    (void)arg;
    sqlite3_commit_hook(store__db(s), refuse_hook, NULL);
    return sqlite3_exec(store__db(s), "INSERT INTO t (v) VALUES (1)", NULL, NULL, NULL) ==
                   SQLITE_OK
               ? KB_OK
               : KB_E_STORE;
}

static void wait_calls(struct call *c, int n)
{
    struct timeval tv = {10, 0};
    while (c->n < n) {
        int before = c->n;
        event_base_loopexit(c->base, &tv);
        event_base_dispatch(c->base);
        if (c->n == before)
            fail_msg("timed out waiting for callback %d", n);
    }
}

/* What another connection sees of the file: it changes with each commit
 * of another connection that wrote something. */
static int64_t data_version(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void test_fail_then_recover_by_traffic(void **state)
{
    (void)state;
    struct kb_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(writer_new(g_path, "normal", 16, &w, &err), KB_OK);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    struct call c = {.base = base};
    assert_int_equal(writer_failing_since(w), 0);

    atomic_store(&g_refuse, true);
    writer_submit(p, job_insert, on_done, &c);
    wait_calls(&c, 1);
    assert_int_equal(c.err, KB_E_AUDIT_UNAVAILABLE);
    int64_t since = writer_failing_since(w);
    assert_true(since > 0);
    /* a second failure keeps the first one's time */
    writer_submit(p, job_insert, on_done, &c);
    wait_calls(&c, 2);
    assert_int_equal(writer_failing_since(w), since);

    atomic_store(&g_refuse, false);
    writer_submit(p, job_insert, on_done, &c);
    wait_calls(&c, 3);
    assert_int_equal(c.err, KB_OK);
    assert_int_equal(writer_failing_since(w), 0);

    writer_port_free(p);
    event_base_free(base);
    writer_free(w);
}

static void test_probe(void **state)
{
    (void)state;
    struct kb_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(writer_new(g_path, "normal", 16, &w, &err), KB_OK);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    struct call c = {.base = base};
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(g_path, &other), SQLITE_OK);

    atomic_store(&g_refuse, true);
    writer_submit(p, job_insert, on_done, &c); /* installs the hook; fails */
    wait_calls(&c, 1);
    assert_true(writer_failing_since(w) > 0);

    /* still failing: the probe fails and the report stays */
    assert_true(writer_probe(p, on_done, &c));
    assert_false(writer_probe(p, on_done, &c)); /* one at a time */
    wait_calls(&c, 2);
    assert_int_equal(c.err, KB_E_AUDIT_UNAVAILABLE);
    assert_true(writer_failing_since(w) > 0);

    /* the store commits again: a probe alone, no traffic, clears it */
    atomic_store(&g_refuse, false);
    int64_t v0 = data_version(other);
    assert_true(writer_probe(p, on_done, &c));
    wait_calls(&c, 3);
    assert_int_equal(c.err, KB_OK);
    assert_int_equal(writer_failing_since(w), 0);
    /* it wrote something real (an empty transaction would change nothing) */
    assert_true(data_version(other) != v0);
    /* and changed nothing: user_version is as it was */
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(other, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    /* the next probe may go */
    assert_true(writer_probe(p, on_done, &c));
    wait_calls(&c, 4);
    assert_int_equal(c.err, KB_OK);
    /* a probe's arg is freed whatever happens: writer_free with one queued */
    assert_true(writer_probe(p, NULL, NULL));

    sqlite3_close(other);
    writer_port_free(p);
    event_base_free(base);
    writer_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fail_then_recover_by_traffic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
