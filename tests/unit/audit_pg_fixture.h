/*
 * audit_pg_fixture.h - what the PostgreSQL audit tests (test_audit_pg.c,
 * test_audit_pg_read.c) share: a fresh database per case (setup), a
 * connection per node id ("a", "b": its own hash chain), raw SQL behind
 * the API, records appended through the writer's path, two interleaved
 * chains built at once, and both chains verified by the real verify of
 * src/audit/.
 */
#ifndef KB_TEST_AUDIT_PG_FIXTURE_H
#define KB_TEST_AUDIT_PG_FIXTURE_H
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "audit/audit.h"
#include "pg_fixture.h"
#include "store/audit_store.h"
#include "store/store.h"

#define EVERY 4 /* checkpoints at 1, 5, 9, ... of each chain */

static const uint8_t g_key[KB_HASH_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static char g_url[256];

static inline int setup(void **state)
{
    (void)state;
    audit_set_key(g_key);
    audit_set_checkpoint_every(EVERY);
    return test_pg_fresh(g_url, sizeof g_url);
}

/* A connection whose own chain is node's. */
static inline struct kb_store *open_node(const char *node)
{
    char boot[32];
    snprintf(boot, sizeof boot, "boot-%s", node);
    assert_true(store_set_node(node, boot));
    struct kb_store *s = NULL;
    char *err = NULL;
    if (store_open(g_url, "normal", false, &s, &err) != KB_OK)
        fail_msg("store_open: %s", err ? err : "?");
    return s;
}

static inline void close_store(struct kb_store *s)
{
    store_audit_forget(s);
    store_close(s);
}

static inline void sql(const char *q)
{
    PGconn *c = PQconnectdb(g_url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, q);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

/* Record i of node `node`'s chain, in the shape of test_audit.c's: even
 * ones allowed proxy requests awaiting completion, odd ones refusals. */
static inline struct kb_audit_rec rec(const char *node, int i)
{
    static const char *const labels[] = {"user-1/run-1", "user-2/run-1"};
    struct kb_audit_rec r = {0};
    r.kind = KB_AUDIT_PROXY;
    r.ts_ms = 1700000000000LL + i * 1000;
    snprintf(r.request_id, sizeof r.request_id, "req_%s_%d", node, i);
    r.action = "proxy.request";
    r.key_id = i % 3 == 0 ? "vk_a" : "vk_b";
    r.label = labels[i % 2];
    r.vendor = node[0] == 'a' ? "stripe" : "openai";
    r.method = "POST";
    r.path = "/v1/payment_intents";
    r.decision = i % 2 ? "refused" : "allowed";
    r.code = i % 2 ? "endpoint_not_allowed" : NULL;
    r.reserved = i % 2 ? 0 : 250000;
    r.settled = i % 2 ? 0 : -1;
    r.bytes_in = 42;
    return r;
}

/* Appends through the writer's path: a transaction per record, the head
 * cached between them as the store writer does. */
static inline int64_t append(struct kb_store *s, const char *node, int i)
{
    struct kb_audit_rec r = rec(node, i);
    int64_t seq = 0;
    assert_int_equal(store_begin(s), KB_OK);
    store_audit_head_sync(s);
    assert_int_equal(audit_append(s, &r, &seq), KB_OK);
    assert_int_equal(store_commit(s), KB_OK);
    return seq;
}

/* Chains a (na records) and b (nb), appended alternately so that their
 * gids interleave: a1 b1 a2 b2 ... */
static inline void build(int na, int nb)
{
    struct kb_store *a = open_node("a"), *b = open_node("b");
    for (int i = 1; i <= (na > nb ? na : nb); i++) {
        if (i <= na)
            assert_int_equal(append(a, "a", i), i);
        if (i <= nb)
            assert_int_equal(append(b, "b", i), i);
    }
    close_store(a);
    close_store(b);
}

struct verdict {
    size_t n;
    char node[2][8];
    struct kb_audit_report r[2];
};

static inline struct verdict verify_all(void)
{
    struct kb_store *s = open_node("a");
    struct kb_audit_chain_report *v = NULL;
    struct verdict out = {0};
    char *err = NULL;
    if (audit_verify_chains(s, g_key, NULL, NULL, &v, &out.n, &err) != KB_OK)
        fail_msg("verify: %s", err ? err : "?");
    assert_true(out.n <= 2);
    for (size_t i = 0; i < out.n; i++) {
        snprintf(out.node[i], sizeof out.node[i], "%s", v[i].node);
        out.r[i] = v[i].report;
    }
    audit_chain_reports_free(v, out.n);
    close_store(s);
    return out;
}

static inline void expect_ok(const struct verdict *v, int64_t ra, int64_t rb)
{
    assert_int_equal(v->n, 2);
    assert_string_equal(v->node[0], "a");
    assert_string_equal(v->node[1], "b");
    for (int i = 0; i < 2; i++)
        if (v->r[i].problem != KB_AUDIT_OK)
            fail_msg("chain %s: %s", v->node[i], v->r[i].why);
    assert_int_equal(v->r[0].records, ra);
    assert_int_equal(v->r[1].records, rb);
}

#endif
