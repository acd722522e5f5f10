/*
 * store_fixture.h - a fresh store per test case on either backend, for the
 * store tests that run one case table on both: setup_sqlite (a file in its
 * own mkdtemp directory), setup_pg (a new database on the test server,
 * pg_fixture.h), teardown (closes it, removes the SQLite files, and puts
 * the node names back to their default for the next case).
 */
#ifndef KB_TEST_STORE_FIXTURE_H
#define KB_TEST_STORE_FIXTURE_H
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "pg_fixture.h"
#include "store/store.h"

struct fixture {
    bool pg;
    char dir[64];
    char url[256]; /* the SQLite file's path or the PostgreSQL URL */
    struct kb_store *s;
};

static int setup_sqlite(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "%s", "/tmp/kb-test-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->url, sizeof f->url, "%s/keybrake.db", f->dir);
    assert_int_equal(store_open(f->url, "normal", true, &f->s, NULL), KB_OK);
    *state = f;
    return 0;
}

static int setup_pg(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->pg = true;
    assert_int_equal(test_pg_fresh(f->url, sizeof f->url), 0);
    char *msg = NULL;
    enum kb_err err = store_open(f->url, "normal", true, &f->s, &msg);
    if (err != KB_OK)
        fprintf(stderr, "store_open: %s\n", msg ? msg : "?");
    free(msg);
    assert_int_equal(err, KB_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    assert_true(store_set_node("local", "0")); /* the default, for the next case */
    if (!f->pg) {
        static const char *const names[] = {"keybrake.db", "keybrake.db-wal", "keybrake.db-shm"};
        for (size_t i = 0; i < 3; i++) {
            char p[160];
            snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
            unlink(p);
        }
        rmdir(f->dir);
    }
    free(f);
    return 0;
}

#endif
