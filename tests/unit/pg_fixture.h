/*
 * pg_fixture.h - a fresh PostgreSQL database per test, on the throwaway
 * server CTest starts for the run (the pg_server fixture in
 * CMakeLists.txt: tests/pg/pg-test.sh in <build>/pg). A test that wants
 * PostgreSQL and finds no server fails: it never skips.
 */
#ifndef KB_TEST_PG_FIXTURE_H
#define KB_TEST_PG_FIXTURE_H
#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* The server's URL for database `db` into out; 0 on success. */
static inline int test_pg_url(const char *db, char *out, size_t cap)
{
    const char *dir = getenv("KEYBRAKE_TEST_PG_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/port", dir ? dir : "pg");
    FILE *f = fopen(path, "r");
    int port = 0;
    if (!f || fscanf(f, "%d", &port) != 1) {
        fprintf(stderr, "pg_fixture: no PostgreSQL test server (%s): run through ctest\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    snprintf(out, cap, "postgres://keybrake@127.0.0.1:%d/%s", port, db);
    return 0;
}

/* Creates a new empty database and writes its URL into out; 0 on success. */
static inline int test_pg_fresh(char *out, size_t cap)
{
    static unsigned n;
    char admin[256], db[64], q[128];
    if (test_pg_url("postgres", admin, sizeof admin) != 0)
        return -1;
    snprintf(db, sizeof db, "kbt_%d_%u", (int)getpid(), n++);
    PGconn *c = PQconnectdb(admin);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg_fixture: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    snprintf(q, sizeof q, "CREATE DATABASE %s", db);
    PGresult *r = PQexec(c, q);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "pg_fixture: %s", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return ok ? test_pg_url(db, out, cap) : -1;
}

/* Runs one statement on database `url` on a connection of its own (the
 * test's view of the store, outside the code under test); the first
 * column of its first row as an integer, 0 when there is none. A
 * statement that fails fails the test. */
static inline int64_t test_pg_sql(const char *url, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int64_t test_pg_sql(const char *url, const char *fmt, ...)
{
    char q[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, q);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fprintf(stderr, "%s: %s", q, PQresultErrorMessage(r));
    assert_true(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK);
    int64_t v = st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)
                    ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                    : 0;
    PQclear(r);
    PQfinish(c);
    return v;
}

#endif
