/*
 * test_store_pg.c - what the PostgreSQL backend does beyond the
 * conformance suite (test_store.c): several nodes on one store.
 *
 * A "node" here is a set of connections opened after store_set_node gave
 * them a node id and a start (boot) id, as one process's store threads
 * are: its cluster connection (store_node_join: the node's lock) and a
 * writer connection that reserves and settles. A node dies when its
 * cluster connection closes (its lock is free) and its heartbeat is made
 * stale behind the API. Each test runs on a fresh database of the server
 * CTest starts (pg_fixture.h).
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "pg_fixture.h"
#include "store/audit_store.h"
#include "store/store.h"

extern const int kb_pg_schema_count;

#define DAY0 INT64_C(20000)
#define CAP INT64_C(1000000)

struct fixture {
    char url[256];
    uint8_t kc[KB_HASH_LEN]; /* the cluster's key check */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(test_pg_fresh(f->url, sizeof f->url), 0);
    static const uint8_t key[] = "server-key";
    crypto_hmac(key, sizeof key - 1, "keybrake cluster", 16, f->kc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connection of node `node`, start `boot`. */
static struct kb_store *open_as(const struct fixture *f, const char *node, const char *boot)
{
    assert_true(store_set_node(node, boot));
    struct kb_store *s = NULL;
    char *msg = NULL;
    enum kb_err err = store_open(f->url, "normal", false, &s, &msg);
    if (err != KB_OK)
        print_error("store_open: %s\n", msg ? msg : "-");
    free(msg);
    assert_int_equal(err, KB_OK);
    return s;
}

/* A node's cluster connection, joined. */
static struct kb_store *join_as(const struct fixture *f, const char *node, const char *boot)
{
    struct kb_store *s = open_as(f, node, boot);
    char *msg = NULL;
    enum kb_err err = store_node_join(s, f->kc, NULL, &msg);
    if (err != KB_OK)
        print_error("store_node_join: %s\n", msg ? msg : "-");
    free(msg);
    assert_int_equal(err, KB_OK);
    return s;
}

/* Behind the API, on a connection of its own. */
static int64_t raw_int(const struct fixture *f, const char *q)
{
    PGconn *c = PQconnectdb(f->url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        print_error("%s: %s", q, PQresultErrorMessage(r));
    assert_true(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK);
    int64_t v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                    ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                    : -1;
    PQclear(r);
    PQfinish(c);
    return v;
}

static void make_stale(const struct fixture *f, const char *node)
{
    char q[160];
    snprintf(q, sizeof q,
             "UPDATE nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = '%s'",
             node);
    raw_int(f, q);
}

/* How many sessions hold node's lock (0 or 1). */
static int64_t lock_holders(const struct fixture *f, const char *node)
{
    char q[320];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
             "AND granted AND (classid::bigint << 32 | objid::bigint) = "
             "hashtextextended('%s', 0)",
             node);
    return raw_int(f, q);
}

/* store_close returns before the server has ended the session (and let
 * go of its locks): wait until node's lock is free, within a deadline. */
static void wait_lock_free(const struct fixture *f, const char *node)
{
    int64_t held = 1;
    for (int64_t deadline = mono_ms() + 10000; mono_ms() < deadline;) {
        if ((held = lock_holders(f, node)) == 0)
            break;
        usleep(10000); /* polling a condition, within a deadline */
    }
    assert_int_equal(held, 0);
}

static int64_t add_key(struct kb_store *s, const char *id)
{
    struct kb_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", id);
    k.label = (char *)id;
    k.vendor = (char *)"stripe";
    k.allowed_endpoints = (char *)"[]";
    k.metadata = (char *)"{}";
    k.daily_cap = CAP;
    k.created_at = 100;
    k.expires_at = INT64_C(4000000000);
    uint8_t h[KB_HASH_LEN];
    static const uint8_t key[] = "k";
    crypto_hmac(key, 1, id, strlen(id), h);
    assert_int_equal(store_key_insert(s, &k, h), KB_OK);
    return k.seq;
}

#define ASSERT_USAGE(s, id, sp, rs)                                                                \
    do {                                                                                           \
        struct kb_key *k_ = NULL;                                                                  \
        assert_int_equal(store_key_get(s, id, DAY0, &k_), KB_OK);                                  \
        assert_int_equal(k_->spent, sp);                                                           \
        assert_int_equal(k_->reserved, rs);                                                        \
        store_key_free(k_);                                                                        \
    } while (0)

/* Node A dies with reservations open: whoever reaps it settles them at
 * their worst case, once; node B's are untouched; a late settle from A's
 * surviving writer adds only what its request cost beyond that; a node
 * whose lock is held is not reaped however stale its heartbeat. */
static void test_reap_dead_node(void **state)
{
    struct fixture *f = *state;
    struct kb_store *ca = join_as(f, "node-a", "a1"), *wa = open_as(f, "node-a", "a1");
    int64_t seq = add_key(wa, "vk_shared");
    assert_int_equal(store_spend_reserve(wa, seq, DAY0, 300, CAP, NULL), KB_OK);
    assert_int_equal(store_spend_reserve(wa, seq, DAY0, 100, CAP, NULL), KB_OK);
    struct kb_store *cb = join_as(f, "node-b", "b1"), *wb = open_as(f, "node-b", "b1");
    assert_int_equal(store_spend_reserve(wb, seq, DAY0, 200, CAP, NULL), KB_OK);
    ASSERT_USAGE(wb, "vk_shared", 0, 600);

    /* stale but alive (its lock is held): not reaped */
    make_stale(f, "node-a");
    int64_t nodes = -1, counters = -1;
    assert_int_equal(store_node_reap(cb, 60000, &nodes, &counters), KB_OK);
    assert_int_equal(nodes, 0);
    assert_int_equal(counters, 0);
    ASSERT_USAGE(wb, "vk_shared", 0, 600);

    /* A's process goes (its cluster session ends); fresh heartbeat: not yet */
    store_close(ca);
    wait_lock_free(f, "node-a");
    assert_int_equal(store_node_heartbeat(cb), KB_OK);
    raw_int(f, "UPDATE nodes SET heartbeat_at = now() WHERE node_id = 'node-a'");
    assert_int_equal(store_node_reap(cb, 60000, &nodes, &counters), KB_OK);
    assert_int_equal(nodes, 0);

    /* stale and gone: reaped, once */
    make_stale(f, "node-a");
    assert_int_equal(store_node_reap(cb, 60000, &nodes, &counters), KB_OK);
    assert_int_equal(nodes, 1);
    assert_int_equal(counters, 1);
    ASSERT_USAGE(wb, "vk_shared", 400, 200);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM nodes WHERE node_id = 'node-a'"), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM node_reservations WHERE node_id = 'node-a'"),
                     0);
    assert_int_equal(store_node_reap(cb, 60000, &nodes, &counters), KB_OK);
    assert_int_equal(nodes, 0);
    assert_int_equal(counters, 0);

    /* A's writer settles late: 300 reserved, 450 cost: only 150 more */
    int64_t rem = -1;
    assert_int_equal(store_spend_settle(wa, seq, DAY0, 300, 450, CAP, &rem), KB_OK);
    ASSERT_USAGE(wb, "vk_shared", 550, 200);
    assert_int_equal(rem, CAP - 750);
    /* 100 reserved, 30 cost: charged 100 already, nothing more */
    assert_int_equal(store_spend_settle(wa, seq, DAY0, 100, 30, CAP, NULL), KB_OK);
    ASSERT_USAGE(wb, "vk_shared", 550, 200);

    /* B's reservation is B's own to settle, exactly */
    assert_int_equal(store_spend_settle(wb, seq, DAY0, 200, 50, CAP, NULL), KB_OK);
    ASSERT_USAGE(wb, "vk_shared", 600, 0);
    store_close(wa);
    store_close(wb);
    store_close(cb);
}

/* A restart of A (same node id, new start) settles A's earlier start's
 * reservations at join, and nobody else's; its own new ones stay open. */
static void test_restart_settles_own_earlier_start(void **state)
{
    struct fixture *f = *state;
    struct kb_store *ca = join_as(f, "node-a", "a1"), *wa = open_as(f, "node-a", "a1");
    int64_t seq = add_key(wa, "vk_restart");
    assert_int_equal(store_spend_reserve(wa, seq, DAY0, 300, CAP, NULL), KB_OK);
    struct kb_store *cb = join_as(f, "node-b", "b1"), *wb = open_as(f, "node-b", "b1");
    assert_int_equal(store_spend_reserve(wb, seq, DAY0, 200, CAP, NULL), KB_OK);
    store_close(wa); /* the crash */
    store_close(ca);
    wait_lock_free(f, "node-a");

    struct kb_store *wa2 = open_as(f, "node-a", "a2");
    assert_int_equal(store_spend_reserve(wa2, seq, DAY0, 70, CAP, NULL), KB_OK);
    struct kb_store *ca2 = join_as(f, "node-a", "a2");
    ASSERT_USAGE(wb, "vk_restart", 300, 270);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM nodes WHERE node_id = 'node-a' "
                                "AND boot_id = 'a2'"),
                     1);
    /* settling orphans again finds nothing (a1's are gone, a2's are live) */
    int64_t n = -1;
    assert_int_equal(store_spend_settle_orphans(ca2, &n), KB_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_spend_settle(wa2, seq, DAY0, 70, 70, CAP, NULL), KB_OK);
    assert_int_equal(store_spend_settle(wb, seq, DAY0, 200, 10, CAP, NULL), KB_OK);
    ASSERT_USAGE(wb, "vk_restart", 380, 0);
    store_close(wa2);
    store_close(ca2);
    store_close(wb);
    store_close(cb);
}

/* A start that died before it registered (no nodes row) leaves nothing
 * open for ever: reaped once its node's lock is free. */
static void test_reap_unregistered_start(void **state)
{
    struct fixture *f = *state;
    struct kb_store *cb = join_as(f, "node-b", "b1");
    struct kb_store *wz = open_as(f, "node-z", "z1");
    int64_t seq = add_key(wz, "vk_unreg");
    assert_int_equal(store_spend_reserve(wz, seq, DAY0, 500, CAP, NULL), KB_OK);
    /* its lock is held (its process lives): left alone */
    struct kb_store *cz = open_as(f, "node-z", "z1");
    assert_int_equal(raw_int(f, "SELECT count(*) FROM nodes"), 1);
    char *msg = NULL;
    /* node-z's process holds its lock but has no nodes row (as after a
     * reap it has not noticed yet) */
    assert_int_equal(store_node_join(cz, f->kc, NULL, &msg), KB_OK);
    free(msg);
    raw_int(f, "DELETE FROM nodes WHERE node_id = 'node-z'");
    int64_t nodes = -1, counters = -1;
    assert_int_equal(store_node_reap(cb, 60000, &nodes, &counters), KB_OK);
    assert_int_equal(counters, 0);
    ASSERT_USAGE(wz, "vk_unreg", 0, 500);
    store_close(cz);
    wait_lock_free(f, "node-z");
    assert_int_equal(store_node_reap(cb, 60000, &nodes, &counters), KB_OK);
    assert_int_equal(nodes, 0);
    assert_int_equal(counters, 1);
    ASSERT_USAGE(wz, "vk_unreg", 500, 0);
    assert_int_equal(store_node_reap(cb, 60000, &nodes, &counters), KB_OK);
    assert_int_equal(counters, 0);
    store_close(wz);
    store_close(cb);
}

/* Budgets' reservations are a dead node's too: settled with its keys', at
 * a restart (earlier starts) and by a reaper. (Made behind the API here:
 * the budget operations are pg_budgets.c's and have their own tests.) */
static void test_budget_reservations_settled(void **state)
{
    struct fixture *f = *state;
    struct kb_store *cb = join_as(f, "node-b", "b1"); /* the schema, and a live node */
    raw_int(f, "INSERT INTO budgets (name, cap_micros, win, created_at, updated_at) "
               "VALUES ('team', 10000, 0, 1, 1)");
    raw_int(f, "INSERT INTO budget_spend (budget_seq, period, spent_micros, reserved_micros, "
               "requests) SELECT seq, 0, 100, 900, 3 FROM budgets");
    raw_int(f, "INSERT INTO node_budget_reservations SELECT 'node-q', 'q1', seq, 0, 500 "
               "FROM budgets UNION ALL SELECT 'node-p', 'p0', seq, 0, 300 FROM budgets "
               "UNION ALL SELECT 'node-b', 'b1', seq, 0, 100 FROM budgets");
    /* node-p restarts: its start p0's 300 is charged */
    struct kb_store *cp = join_as(f, "node-p", "p1");
    assert_int_equal(raw_int(f, "SELECT spent_micros FROM budget_spend"), 400);
    assert_int_equal(raw_int(f, "SELECT reserved_micros FROM budget_spend"), 600);
    /* node-q never registered and is gone: reaped, with its 500 */
    int64_t nodes = -1, counters = -1;
    assert_int_equal(store_node_reap(cb, 60000, &nodes, &counters), KB_OK);
    assert_int_equal(counters, 1);
    assert_int_equal(raw_int(f, "SELECT spent_micros FROM budget_spend"), 900);
    assert_int_equal(raw_int(f, "SELECT reserved_micros FROM budget_spend"), 100);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM node_budget_reservations"), 1);
    store_close(cb);
    store_close(cp);
}

struct mirror_racer {
    struct kb_store *s; /* owned by the test */
    int64_t seq;
    pthread_barrier_t *barrier;
    int ok, open, errors;
};

/* Reserves 10 at a time until refused; every other one is settled at once
 * (cost 7), the rest stay open. */
static void *mirror_race(void *arg)
{
    struct mirror_racer *r = arg;
    pthread_barrier_wait(r->barrier);
    for (int i = 0;; i++) {
        enum kb_err err = store_spend_reserve(r->s, r->seq, DAY0, 10, 3000, NULL);
        if (err == KB_E_CAP_EXHAUSTED)
            break;
        if (err != KB_OK) {
            r->errors++;
            break;
        }
        r->ok++;
        if (i % 2 == 0) {
            if (store_spend_settle(r->s, r->seq, DAY0, 10, 7, 3000, NULL) != KB_OK)
                r->errors++;
        } else {
            r->open++;
        }
    }
    return NULL;
}

/* Writers of two nodes race reservations and settlements on one key: the
 * cap holds, no two wait on each other for good (reserve, settle and the
 * mirror rows lock in one order), each node's mirror rows add up to its
 * open reservations exactly, and a restart of one settles its own only. */
static void test_mirror_exact_under_race(void **state)
{
    struct fixture *f = *state;
    enum { N = 4 };
    struct kb_store *conns[N];
    for (int i = 0; i < N; i++)
        conns[i] = open_as(f, i % 2 ? "node-odd" : "node-even", i % 2 ? "o1" : "e1");
    int64_t seq = add_key(conns[0], "vk_mirror");
    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, N), 0);
    struct mirror_racer r[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        r[i] = (struct mirror_racer){conns[i], seq, &barrier, 0, 0, 0};
        assert_int_equal(pthread_create(&t[i], NULL, mirror_race, &r[i]), 0);
    }
    int64_t open_even = 0, open_odd = 0, settled = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(r[i].errors, 0);
        *(i % 2 ? &open_odd : &open_even) += r[i].open * 10;
        settled += (r[i].ok - r[i].open) * 7;
    }
    pthread_barrier_destroy(&barrier);
    ASSERT_USAGE(conns[0], "vk_mirror", settled, open_even + open_odd);
    assert_true(settled + open_even + open_odd > 3000 - 10);
    assert_int_equal(raw_int(f, "SELECT sum(micros) FROM node_reservations "
                                "WHERE node_id = 'node-even'"),
                     open_even);
    assert_int_equal(raw_int(f, "SELECT sum(micros) FROM node_reservations "
                                "WHERE node_id = 'node-odd'"),
                     open_odd);
    for (int i = 0; i < N; i++)
        store_close(conns[i]);
    /* node-even starts again: its open reservations are charged whole */
    struct kb_store *c = join_as(f, "node-even", "e2");
    ASSERT_USAGE(c, "vk_mirror", settled + open_even, open_odd);
    store_close(c);
}

struct revoker {
    struct kb_store *s;
    enum kb_err err;
};

static void *revoke_thread(void *arg)
{
    struct revoker *r = arg;
    r->err = store_key_revoke(r->s, "vk_share", 500, NULL);
    return NULL;
}

/* An admission (store_key_state in the writer's transaction, which holds
 * the cluster-wide write lock) holds off a revocation until it ends: the
 * revocation waits for it, so an admission is never ordered after a
 * committed revocation. */
static void test_key_state_holds_off_revocation(void **state)
{
    struct fixture *f = *state;
    struct kb_store *w = open_as(f, "node-w", "w1"), *a = open_as(f, "node-a", "a1");
    int64_t seq = add_key(w, "vk_share");
    assert_int_equal(store_begin(w), KB_OK);
    struct kb_key_state ks;
    assert_int_equal(store_key_state(w, seq, &ks), KB_OK);
    assert_false(ks.revoked);
    struct revoker r = {a, KB_E_INTERNAL};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, revoke_thread, &r), 0);
    /* the revocation is waiting on the admission's lock */
    int64_t waiting = 0;
    for (int64_t deadline = mono_ms() + 10000; mono_ms() < deadline;) {
        if ((waiting = raw_int(f, "SELECT count(*) FROM pg_stat_activity WHERE "
                                  "datname = current_database() AND wait_event_type = 'Lock'")) ==
            1)
            break;
        usleep(10000); /* polling a condition, within a deadline */
    }
    assert_int_equal(waiting, 1);
    assert_int_equal(store_spend_reserve(w, seq, DAY0, 10, CAP, NULL), KB_OK);
    assert_int_equal(store_commit(w), KB_OK);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(r.err, KB_OK);
    /* after the revocation's commit, admission reads it */
    assert_int_equal(store_key_state(w, seq, &ks), KB_OK);
    assert_true(ks.revoked);
    store_close(a);
    store_close(w);
}

/* A node reaped while it lived on (its heartbeat late, its lock lost with
 * a session) registers again at its next heartbeat, same start. */
static void test_heartbeat_registers_again(void **state)
{
    struct fixture *f = *state;
    struct kb_store *c = join_as(f, "node-h", "h1");
    raw_int(f, "UPDATE nodes SET heartbeat_at = now() - interval '1 hour'");
    assert_int_equal(store_node_heartbeat(c), KB_OK);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM nodes WHERE node_id = 'node-h' AND "
                                "heartbeat_at > now() - interval '1 minute'"),
                     1);
    raw_int(f, "DELETE FROM nodes");
    assert_int_equal(store_node_heartbeat(c), KB_OK);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM nodes WHERE node_id = 'node-h' "
                                "AND boot_id = 'h1'"),
                     1);
    store_close(c);
}

/* A start the others reaped while it lived on (its session lost, its
 * process not) is fenced: its writer's transactions are refused, so that
 * none of its reservations, settled already, is settled again, and its
 * heartbeat says it was reaped (the daemon then stops). */
static void test_reaped_start_is_fenced(void **state)
{
    struct fixture *f = *state;
    struct kb_store *ca = join_as(f, "node-f", "f1");
    struct kb_store *wa = open_as(f, "node-f", "f1"); /* A's writer */
    int64_t seq = add_key(wa, "vk_fence");
    assert_int_equal(store_begin(wa), KB_OK);
    assert_int_equal(store_spend_reserve(wa, seq, DAY0, 10, CAP, NULL), KB_OK);
    assert_int_equal(store_commit(wa), KB_OK);
    store_close(ca); /* A's cluster session ends: its lock is free */
    wait_lock_free(f, "node-f");
    make_stale(f, "node-f");
    struct kb_store *cb = join_as(f, "node-g", "g1");
    int64_t nodes = 0, counters = 0;
    assert_int_equal(store_node_reap(cb, 1000, &nodes, &counters), KB_OK);
    assert_int_equal(nodes, 1);
    ASSERT_USAGE(cb, "vk_fence", 10, 0); /* settled at its worst case */
    /* A's writer lives on: it may not write (a settle would count twice).
     * Its BEGIN goes with the first statement: that statement fails. */
    assert_int_equal(store_begin(wa), KB_OK);
    assert_int_equal(store_spend_settle(wa, seq, DAY0, 10, 0, CAP, NULL), KB_E_STORE);
    assert_non_null(strstr(store_last_error(wa), "found dead"));
    assert_int_not_equal(store_commit(wa), KB_OK);
    store_rollback(wa);
    assert_false(store_in_transaction(wa));
    ASSERT_USAGE(cb, "vk_fence", 10, 0);
    /* nor when the batch's only writes are rows deferred to the commit,
     * sent with the BEGIN and the COMMIT in one round trip */
    struct kb_audit_rec rec = {.kind = KB_AUDIT_PROXY, .ts_ms = 1, .action = "proxy.request",
                               .key_id = "vk_fence", .decision = "refused", .settled = 0};
    uint8_t hash[KB_HASH_LEN] = {1};
    assert_int_equal(store_begin(wa), KB_OK);
    store_audit_head_sync(wa);
    assert_int_equal(store_audit_insert(wa, 1, 0, &rec, hash), KB_OK); /* deferred */
    assert_int_equal(store_commit(wa), KB_E_STORE);
    assert_non_null(strstr(store_last_error(wa), "found dead"));
    store_rollback(wa);
    assert_false(store_in_transaction(wa));
    /* node-f's chain has no record at all: nothing of it landed */
    assert_int_equal(store_audit_chain_use(cb, "node-f"), KB_E_NOT_FOUND);
    /* A's cluster thread, connected again, learns it was reaped */
    struct kb_store *ca2 = open_as(f, "node-f", "f1");
    assert_int_equal(store_node_heartbeat(ca2), KB_E_NOT_FOUND);
    /* a new start of A (a restart) is not fenced */
    store_close(ca2);
    store_close(wa);
    struct kb_store *ca3 = join_as(f, "node-f", "f2");
    struct kb_store *wa3 = open_as(f, "node-f", "f2");
    assert_int_equal(store_begin(wa3), KB_OK);
    assert_int_equal(store_spend_reserve(wa3, seq, DAY0, 5, CAP, NULL), KB_OK);
    assert_int_equal(store_commit(wa3), KB_OK);
    ASSERT_USAGE(cb, "vk_fence", 10, 5);
    store_close(wa3);
    store_close(ca3);
    store_close(cb);
}

/* A start that lost its session (its lock) while its process lives on is
 * over once a new start of the same node joins: the join settles its
 * reservations and fences it, and it learns so at its next heartbeat. */
static void test_rejoin_fences_earlier_start(void **state)
{
    struct fixture *f = *state;
    struct kb_store *c1 = join_as(f, "node-j", "j1");
    struct kb_store *w1 = open_as(f, "node-j", "j1");
    int64_t seq = add_key(w1, "vk_rejoin");
    assert_int_equal(store_begin(w1), KB_OK);
    assert_int_equal(store_spend_reserve(w1, seq, DAY0, 10, CAP, NULL), KB_OK);
    assert_int_equal(store_commit(w1), KB_OK);
    store_close(c1);
    wait_lock_free(f, "node-j");
    struct kb_store *c2 = join_as(f, "node-j", "j2"); /* settles j1's at worst case */
    ASSERT_USAGE(c2, "vk_rejoin", 10, 0);
    /* j1 writes nothing more */
    assert_int_equal(store_begin(w1), KB_OK);
    assert_int_equal(store_spend_settle(w1, seq, DAY0, 10, 0, CAP, NULL), KB_E_STORE);
    store_rollback(w1);
    ASSERT_USAGE(c2, "vk_rejoin", 10, 0);
    struct kb_store *c1b = open_as(f, "node-j", "j1");
    assert_int_not_equal(store_node_heartbeat(c1b), KB_OK);
    store_close(c1b);
    store_close(w1);
    store_close(c2);
}

/* The writer's connection remembers keys that name no budget (their
 * chains never change after issuance): such a key reserves no budget, and
 * a key that names one still does, on the same connection. */
static void test_keys_without_budgets_remembered(void **state)
{
    struct fixture *f = *state;
    struct kb_store *w = open_as(f, "node-n", "n1");
    int64_t plain = add_key(w, "vk_plain");
    struct kb_budget b = {
        .name = (char *)"team", .cap = 100, .window = KB_WIN_TOTAL, .created_at = 100};
    assert_int_equal(store_budget_insert(w, &b, NULL), KB_OK);
    int64_t member = add_key(w, "vk_member");
    assert_int_equal(store_key_budget_add(w, member, "team"), KB_OK);
    for (int round = 0; round < 2; round++) {
        struct kb_budget_hold *h = NULL;
        size_t n = 9;
        assert_int_equal(store_budget_reserve(w, plain, 100, 10, &h, &n, NULL), KB_OK);
        assert_int_equal(n, 0);
        assert_null(h);
        assert_int_equal(store_budget_reserve(w, member, 100, 10, &h, &n, NULL), KB_OK);
        assert_int_equal(n, 1);
        assert_int_equal(h[0].seq, b.seq);
        free(h);
    }
    struct kb_budget *got = NULL;
    assert_int_equal(store_budget_get(w, "team", 100, &got), KB_OK);
    assert_int_equal(got->reserved, 20);
    store_budget_free(got);
    store_close(w);
}

/* One live process per node id; one server key per cluster. */
static void test_join_refusals(void **state)
{
    struct fixture *f = *state;
    struct kb_store *c1 = join_as(f, "node-x", "x1");
    struct kb_store *c2 = open_as(f, "node-x", "x2");
    char *msg = NULL;
    assert_int_equal(store_node_join(c2, f->kc, NULL, &msg), KB_E_EXISTS);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "node-x"));
    free(msg);
    msg = NULL;
    assert_int_equal(lock_holders(f, "node-x"), 1);
    /* the first one's row is untouched */
    assert_int_equal(raw_int(f, "SELECT count(*) FROM nodes WHERE boot_id = 'x1'"), 1);
    store_close(c1);
    wait_lock_free(f, "node-x");
    assert_int_equal(store_node_join(c2, f->kc, NULL, &msg), KB_OK);
    assert_null(msg);

    /* another server key */
    uint8_t other[KB_HASH_LEN];
    memcpy(other, f->kc, KB_HASH_LEN);
    other[KB_HASH_LEN - 1] ^= 1;
    struct kb_store *c3 = open_as(f, "node-y", "y1");
    assert_int_equal(store_node_join(c3, other, NULL, &msg), KB_E_CONFIG);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "server key differs"));
    free(msg);
    msg = NULL;
    assert_int_equal(raw_int(f, "SELECT count(*) FROM nodes WHERE node_id = 'node-y'"), 0);
    /* it gave the lock back: the right key joins on another connection */
    struct kb_store *c4 = join_as(f, "node-y", "y2");
    store_close(c4);
    store_close(c3);
    store_close(c2);
}

/* A revocation or change on one connection reaches another through the
 * change log and a notification. */
static void test_key_changes_and_wait(void **state)
{
    struct fixture *f = *state;
    struct kb_store *l = open_as(f, "node-l", "l1"), *m = open_as(f, "node-m", "m1");
    int64_t last = -1;
    struct kb_key_change_note *notes = NULL;
    size_t n = 99;
    assert_int_equal(store_key_changes(l, -1, &last, &notes, &n), KB_OK);
    assert_int_equal(last, 0);
    assert_int_equal(n, 0);
    bool notified = true;
    assert_int_equal(store_wait_change(l, 0, &notified), KB_OK); /* listening from here */
    assert_false(notified);

    int64_t s1 = add_key(m, "vk_ch1");
    add_key(m, "vk_ch2");
    int64_t s3 = add_key(m, "vk_other");
    assert_int_equal(store_wait_change(l, 0, &notified), KB_OK);
    assert_false(notified); /* issuing is not a change */
    struct kb_revoked_key rk;
    assert_int_equal(store_key_revoke(m, "vk_ch1", 100, &rk), KB_OK);
    assert_int_equal(store_wait_change(l, 10000, &notified), KB_OK);
    assert_true(notified);
    assert_int_equal(store_key_changes(l, last, &last, &notes, &n), KB_OK);
    assert_int_equal(n, 1);
    assert_int_equal(notes[0].seq, s1);
    assert_true(notes[0].revoked);
    assert_memory_equal(notes[0].hash, rk.hash, KB_HASH_LEN);
    assert_int_equal(last, notes[0].id);
    free(notes);

    struct kb_key_change c = {.has_cap = true, .cap = 5};
    assert_int_equal(store_key_update(m, "vk_other", &c, 100, NULL), KB_OK);
    int64_t count = 0;
    assert_int_equal(store_key_revoke_prefix(m, "vk_ch", 100, &count, NULL), KB_OK);
    assert_int_equal(count, 1);
    /* a revocation that changes nothing logs nothing */
    assert_int_equal(store_key_revoke(m, "vk_ch1", 200, NULL), KB_OK);
    assert_int_equal(store_wait_change(l, 10000, &notified), KB_OK);
    assert_true(notified);
    int64_t before = last;
    assert_int_equal(store_key_changes(l, last, &last, &notes, &n), KB_OK);
    assert_int_equal(n, 2);
    assert_int_equal(notes[0].seq, s3);
    assert_false(notes[0].revoked);
    assert_true(notes[1].revoked);
    assert_true(notes[0].id > before && notes[1].id > notes[0].id);
    free(notes);
    assert_int_equal(store_key_changes(l, last, &last, &notes, &n), KB_OK);
    assert_int_equal(n, 0);
    assert_null(notes);
    int64_t max = -1;
    assert_int_equal(store_key_changes(m, -1, &max, &notes, &n), KB_OK);
    assert_int_equal(max, last);
    store_close(l);
    store_close(m);
}

struct opener {
    const char *url;
    pthread_barrier_t *barrier;
    int err;
};

static void *open_at_once(void *arg)
{
    struct opener *o = arg;
    struct kb_store *s = NULL;
    pthread_barrier_wait(o->barrier);
    o->err = store_open(o->url, "normal", true, &s, NULL);
    store_close(s);
    return NULL;
}

/* Nodes starting together on a fresh database: each migration once. */
static void test_migrations_once(void **state)
{
    struct fixture *f = *state;
    enum { N = 4 };
    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, N), 0);
    struct opener o[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        o[i] = (struct opener){f->url, &barrier, -1};
        assert_int_equal(pthread_create(&t[i], NULL, open_at_once, &o[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(o[i].err, KB_OK);
    }
    pthread_barrier_destroy(&barrier);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM schema_migrations"), kb_pg_schema_count);
    assert_int_equal(raw_int(f, "SELECT max(version) FROM schema_migrations"), kb_pg_schema_count);
}

/* Ends the server sessions of this database that keybrake opened. */
static void terminate_sessions(const struct fixture *f)
{
    int64_t n = raw_int(f, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "
                           "pg_stat_activity WHERE datname = current_database() "
                           "AND application_name = 'keybrake' AND pid <> pg_backend_pid()) t");
    assert_true(n >= 1);
}

/* A connection whose session ended fails the next call, and is used again
 * (reconnected, after its back-off) by a later one: its node lock and its
 * LISTEN come back with it. */
static void test_reconnect(void **state)
{
    struct fixture *f = *state;
    struct kb_store *c = join_as(f, "node-r", "r1");
    bool notified = false;
    assert_int_equal(store_wait_change(c, 0, &notified), KB_OK);
    terminate_sessions(f);
    assert_int_equal(store_ping(c), KB_E_STORE);
    enum kb_err err = KB_E_STORE;
    for (int64_t deadline = mono_ms() + 10000; err != KB_OK && mono_ms() < deadline;) {
        usleep(20000); /* polling a condition, within a deadline */
        err = store_ping(c);
    }
    assert_int_equal(err, KB_OK);
    /* the heartbeat takes the node's lock again ... */
    assert_int_equal(store_node_heartbeat(c), KB_OK);
    struct kb_store *twin = open_as(f, "node-r", "r2");
    char *msg = NULL;
    assert_int_equal(store_node_join(twin, f->kc, NULL, &msg), KB_E_EXISTS);
    free(msg);
    /* ... and the wait listens again */
    struct kb_store *m = open_as(f, "node-m", "m1");
    add_key(m, "vk_rc");
    assert_int_equal(store_wait_change(c, 0, &notified), KB_OK);
    assert_int_equal(store_key_revoke(m, "vk_rc", 100, NULL), KB_OK);
    assert_int_equal(store_wait_change(c, 10000, &notified), KB_OK);
    assert_true(notified);

    /* a session that ends during a wait: the wait fails, a later one works */
    terminate_sessions(f);
    err = store_wait_change(c, 10000, &notified);
    assert_int_equal(err, KB_E_STORE);
    for (int64_t deadline = mono_ms() + 10000; mono_ms() < deadline;) {
        usleep(20000);
        if ((err = store_wait_change(c, 0, &notified)) == KB_OK)
            break;
    }
    assert_int_equal(err, KB_OK);
    store_close(twin);
    store_close(m);
    store_close(c);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_reap_dead_node),
        T(test_restart_settles_own_earlier_start),
        T(test_reap_unregistered_start),
        T(test_budget_reservations_settled),
        T(test_mirror_exact_under_race),
        T(test_key_state_holds_off_revocation),
        T(test_heartbeat_registers_again),
        T(test_reaped_start_is_fenced),
        T(test_rejoin_fences_earlier_start),
        T(test_keys_without_budgets_remembered),
        T(test_join_refusals),
        T(test_key_changes_and_wait),
        T(test_migrations_once),
        T(test_reconnect),
    };
    return cmocka_run_group_tests_name("postgres cluster", tests, NULL, NULL);
}
