/*
 * writer_fixture.h - what the writer's SQLite tests share (test_writer.c,
 * test_writer_groups.c): a store file per case with a table t, jobs that
 * insert into it, done callbacks that count on a loop, and a "gate" job
 * that holds the writer thread inside a batch, so that the jobs submitted
 * meanwhile are known to share the next batch.
 */
#ifndef KB_TEST_WRITER_FIXTURE_H
#define KB_TEST_WRITER_FIXTURE_H
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <pthread.h>
#include <sqlite3.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "store/sqlite_int.h"
#include "store/store.h"
#include "store/writer.h"
#include "writer_gate.h"

static char g_dir[64];
static char g_path[128];

static inline int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/kb-writer-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_path, sizeof g_path, "%s/kb.db", g_dir);
    struct kb_store *s = NULL;
    char *err = NULL;
    assert_int_equal(store_open(g_path, "normal", true, &s, &err), KB_OK);
    assert_int_equal(
        sqlite3_exec(store__db(s), "CREATE TABLE t (v INTEGER, pad BLOB)", NULL, NULL, NULL),
        SQLITE_OK);
    store_close(s);
    return 0;
}

static inline int teardown(void **state)
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

static inline int64_t count_rows(const char *where)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM t WHERE %s", where);
    assert_int_equal(sqlite3_open(g_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* ---- jobs ---- */

struct item {
    int64_t v;               /* value to insert */
    enum kb_err own;         /* result the job returns */
    enum kb_err got;         /* result its done callback saw */
    bool called;             /* done ran */
    pthread_t loop;          /* thread the callback must run on */
    bool wrong_thread;       /* it ran elsewhere */
    int *counter;            /* incremented by done */
    struct event_base *base; /* loopbreak when *counter reaches target */
    int target;
};

static inline enum kb_err job_insert(struct kb_store *s, void *arg)
{
    struct item *it = arg;
    char q[96];
    snprintf(q, sizeof q, "INSERT INTO t (v) VALUES (%lld)", (long long)it->v);
    if (sqlite3_exec(store__db(s), q, NULL, NULL, NULL) != SQLITE_OK)
        return KB_E_STORE;
    return it->own;
}

static inline void on_done(void *arg, enum kb_err err)
{
    struct item *it = arg;
    it->got = err;
    it->called = true;
    if (!pthread_equal(pthread_self(), it->loop))
        it->wrong_thread = true;
    if (++*it->counter >= it->target)
        event_base_loopbreak(it->base);
}

static inline enum kb_err job_noop(struct kb_store *s, void *arg)
{
    (void)s;
    (void)arg;
    return KB_OK;
}

static inline void must_not_run(void *arg, enum kb_err err)
{
    (void)err;
    struct item *it = arg;
    it->called = true;
}

static inline struct kb_writer *start(int max_batch)
{
    struct kb_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(writer_new(g_path, "normal", max_batch, &w, &err), KB_OK);
    return w;
}

/* Runs base until *counter reaches target (10 s at most). */
static inline void run_until(struct event_base *base, int *counter, int target)
{
    struct timeval tv = {10, 0};
    while (*counter < target) {
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        if (*counter < target) {
            fail_msg("timed out: %d of %d callbacks", *counter, target);
        }
    }
}

static inline void item_init(struct item *it, int64_t v, enum kb_err own, int *counter,
                             struct event_base *base, int target)
{
    memset(it, 0, sizeof *it);
    it->v = v;
    it->own = own;
    it->got = KB_E__COUNT;
    it->loop = pthread_self();
    it->counter = counter;
    it->base = base;
    it->target = target;
}

#endif
