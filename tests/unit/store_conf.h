/*
 * store_conf.h - the store conformance suite's fixture and helpers
 * (test_store.c, test_store_list.c, test_store_spend.c): a fresh store per
 * case on either backend through its URL, SQLite ("sqlite:PATH" in its own
 * mkdtemp directory) or PostgreSQL (a new database on the test server,
 * pg_fixture.h); keys made from an id, their usage on a day, and one
 * number read behind the API on either backend.
 */
#ifndef KB_TEST_STORE_CONF_H
#define KB_TEST_STORE_CONF_H
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
#include <sqlite3.h>

#include "core/crypto.h"
#include "pg_fixture.h"
#include "store/store.h"

#define DAY0 INT64_C(20000) /* a UTC day number (2024-10-04) */

struct fixture {
    bool pg;            /* the PostgreSQL backend; else SQLite */
    char dir[64];       /* SQLite: mkdtemp directory */
    char path[128];     /* SQLite: dir/keybrake.db */
    char url[256];      /* sqlite:dir/keybrake.db, or postgres://... */
    struct kb_store *s; /* open on url */
};

static inline void make_paths(struct fixture *f)
{
    snprintf(f->dir, sizeof f->dir, "%s", "/tmp/kb-test-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/keybrake.db", f->dir);
    snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
}

static inline int setup_on(void **state, bool on_pg)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->pg = on_pg;
    if (on_pg)
        assert_int_equal(test_pg_fresh(f->url, sizeof f->url), 0);
    else
        make_paths(f);
    char *msg = NULL;
    enum kb_err err = store_open(f->url, "normal", true, &f->s, &msg);
    if (err != KB_OK)
        print_error("store_open: %s\n", msg ? msg : "-");
    free(msg);
    assert_int_equal(err, KB_OK);
    *state = f;
    return 0;
}

static inline int setup(void **state)
{
    return setup_on(state, false);
}

static inline int setup_pg(void **state)
{
    return setup_on(state, true);
}

static inline void remove_dir(const char *dir)
{
    static const char *const names[] = {"keybrake.db", "keybrake.db-wal", "keybrake.db-shm",
                                        "keybrake.db-journal", "garbage.db"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static inline int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    if (!f->pg)
        remove_dir(f->dir);
    free(f);
    return 0;
}

/* A distinct 32-byte hash per seed, as the HMAC of a token would be. */
static inline void hash_of(const char *seed, uint8_t out[KB_HASH_LEN])
{
    static const uint8_t key[] = "test-server-key";
    crypto_hmac(key, sizeof key - 1, seed, strlen(seed), out);
}

struct key_spec {
    const char *id, *label, *vendor;
    int64_t cap;     /* daily cap, micros */
    int64_t expires; /* epoch seconds */
};

static inline void key_from(struct kb_key *k, const struct key_spec *sp)
{
    memset(k, 0, sizeof *k);
    snprintf(k->id, sizeof k->id, "%s", sp->id);
    k->label = (char *)sp->label;
    k->vendor = (char *)sp->vendor;
    k->allowed_endpoints = (char *)"[\"POST /v1/charges\"]";
    k->metadata = (char *)"{\"team\":\"a\"}";
    k->daily_cap = sp->cap;
    k->created_at = 100;
    k->expires_at = sp->expires;
}

/* Inserts a key whose hash is derived from its id; returns its seq. */
static inline int64_t add_key(struct kb_store *s, const char *id, const char *label,
                              const char *vendor, int64_t cap, int64_t expires)
{
    struct key_spec sp = {id, label, vendor, cap, expires};
    struct kb_key k;
    uint8_t h[KB_HASH_LEN];
    key_from(&k, &sp);
    hash_of(id, h);
    enum kb_err err = store_key_insert(s, &k, h);
    if (err != KB_OK)
        print_error("insert %s: %s\n", id, kb_strerror(err));
    assert_int_equal(err, KB_OK);
    assert_true(k.seq > 0);
    return k.seq;
}

/* Usage of key `id` on `day`. */
static inline void usage(struct kb_store *s, const char *id, int64_t day, int64_t *spent,
                         int64_t *reserved, int64_t *requests)
{
    struct kb_key *k = NULL;
    assert_int_equal(store_key_get(s, id, day, &k), KB_OK);
    assert_int_equal(k->usage_day, day);
    *spent = k->spent;
    *reserved = k->reserved;
    *requests = k->requests;
    store_key_free(k);
}

#define ASSERT_USAGE(s, id, day, sp, rs, rq)                                                       \
    do {                                                                                           \
        int64_t sp_, rs_, rq_;                                                                     \
        usage(s, id, day, &sp_, &rs_, &rq_);                                                       \
        assert_int_equal(sp_, sp);                                                                 \
        assert_int_equal(rs_, rs);                                                                 \
        assert_int_equal(rq_, rq);                                                                 \
    } while (0)

static inline int64_t sql_int(const char *path, const char *q)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static inline void sql_exec(const char *path, const char *q)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, q, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* One number read behind the API, on either backend. */
static inline int64_t db_int(const struct fixture *f, const char *q)
{
    if (!f->pg)
        return sql_int(f->path, q);
    PGconn *c = PQconnectdb(f->url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, q);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    int64_t v = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    PQfinish(c);
    return v;
}

#endif
