/*
 * test_writer_pg.c - the writer on PostgreSQL, where a batch's COMMIT goes
 * with the next batch's first round trip (store_commit_later, pg_txn.c):
 * each job's callback still follows its batch's durability, in submission
 * order; a deferred commit that fails fails its batch and the batch that
 * carried it, and the writer recovers; a deferred commit with no batch to
 * carry it is sent at once, and at writer_free.
 *
 * Two "gate" jobs hold the writer thread inside a batch, so that the test
 * knows which jobs share a batch and which batch carries which commit.
 */
#include <libpq-fe.h>
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
#include <event2/event.h>

#include "pg_fixture.h"
#include "store/audit_store.h"
#include "store/pg_int.h"
#include "store/store.h"
#include "store/writer.h"
#include "writer_gate.h"

static char g_url[256];

#define sql(...) test_pg_sql(g_url, __VA_ARGS__)

static int setup(void **state)
{
    (void)state;
    assert_int_equal(test_pg_fresh(g_url, sizeof g_url), 0);
    struct kb_store *s = NULL;
    assert_int_equal(store_open(g_url, "normal", true, &s, NULL), KB_OK); /* the schema */
    store_close(s);
    sql("CREATE TABLE t (v bigint PRIMARY KEY)");
    return 0;
}

/* ---- jobs ---- */

struct item {
    int64_t v;       /* inserted into t (or the audit seq) */
    enum kb_err got; /* what done saw */
    bool called;     /* done ran */
    int64_t seen;    /* rows of t with v, read by done (another connection) */
    int order;       /* done's turn */
    int *counter;    /* incremented by done */
    struct event_base *base;
    int target;
};

static const char SQL_T_INSERT[] = "INSERT INTO t (v) VALUES ($1::bigint)";

static enum kb_err job_insert(struct kb_store *s, void *arg)
{
    struct item *it = arg;
    struct pg_args a = {0};
    pg_arg_i64(&a, it->v);
    return pg__do(s, SQL_T_INSERT, &a) == KB_OK ? KB_OK : KB_E_STORE;
}

/* an audit record of seq it->v, deferred to the commit (the writer's
 * chain head is cached: store_audit_head_sync) */
static enum kb_err job_audit(struct kb_store *s, void *arg)
{
    struct item *it = arg;
    struct kb_audit_rec rec = {.kind = KB_AUDIT_PROXY,
                               .ts_ms = 1,
                               .action = "proxy.request",
                               .key_id = "vk_w",
                               .decision = "allowed",
                               .settled = -1};
    uint8_t hash[KB_HASH_LEN] = {7};
    return store_audit_insert(s, it->v, 0, &rec, hash);
}

static void on_done(void *arg, enum kb_err err)
{
    struct item *it = arg;
    it->got = err;
    it->called = true;
    it->order = ++*it->counter;
    it->seen = sql("SELECT count(*) FROM t WHERE v = %lld", (long long)it->v);
    if (*it->counter >= it->target)
        event_base_loopbreak(it->base);
}

static struct kb_writer *start(void)
{
    struct kb_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(writer_new(g_url, "normal", 64, &w, &err), KB_OK);
    return w;
}

static void run_until(struct event_base *base, int *counter, int target)
{
    struct timeval tv = {10, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    if (*counter < target)
        fail_msg("timed out: %d of %d callbacks", *counter, target);
}

static void item_init(struct item *it, int64_t v, int *counter, struct event_base *base, int target)
{
    memset(it, 0, sizeof *it);
    it->v = v;
    it->got = KB_E__COUNT;
    it->counter = counter;
    it->base = base;
    it->target = target;
}

/*
 * Batch 1 = [gate1], batch 2 = [a1, a2, gate2], batch 3 = [b]: batch 2's
 * COMMIT waits for batch 3, which is queued while gate2 holds the writer.
 * `a_job` is a1's and a2's job.
 */
static struct gate g1, g2; /* the writer thread may still hold them when the test moves on */

static void three_batches(struct kb_writer_port *p, kb_job_fn a_job, struct item *a, struct item *b)
{
    gate_init(&g1);
    gate_init(&g2);
    /* unguarded: a guarded job's savepoint would send the rows deferred
     * before it at once */
    writer_submit_unguarded(p, job_gate, NULL, &g1);
    gate_wait_entered(&g1);
    writer_submit_unguarded(p, a_job, on_done, &a[0]);
    writer_submit_unguarded(p, a_job, on_done, &a[1]);
    writer_submit_unguarded(p, job_gate, NULL, &g2);
    gate_open(&g1);
    gate_wait_entered(&g2);
    writer_submit_unguarded(p, job_insert, on_done, b);
    gate_open(&g2);
}

/* Each callback follows its own batch's commit, in submission order, with
 * a commit carried by the next batch's round trip. */
static void test_deferred_commit_in_order(void **state)
{
    (void)state;
    struct kb_writer *w = start();
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    int counter = 0;
    struct item a[2], b;
    item_init(&a[0], 1, &counter, base, 3);
    item_init(&a[1], 2, &counter, base, 3);
    item_init(&b, 3, &counter, base, 3);
    three_batches(p, job_insert, a, &b);
    run_until(base, &counter, 3);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(a[i].got, KB_OK);
        assert_int_equal(a[i].order, i + 1);
        assert_int_equal(a[i].seen, 1); /* durable when its callback ran */
    }
    assert_int_equal(b.got, KB_OK);
    assert_int_equal(b.order, 3);
    assert_int_equal(b.seen, 1);
    assert_int_equal(writer_failing_since(w), 0);
    writer_port_free(p);
    writer_free(w);
    event_base_free(base);
}

/* A deferred commit that fails (its audit rows collide with a record
 * already there) fails its batch and the batch that carried it; the next
 * batch commits. */
static void test_deferred_commit_fails_carrier(void **state)
{
    (void)state;
    struct kb_writer *w = start();
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    int counter = 0;
    /* record 1 of the chain, committed; the writer caches the head */
    struct item first;
    item_init(&first, 1, &counter, base, 1);
    writer_submit_unguarded(p, job_audit, on_done, &first);
    run_until(base, &counter, 1);
    assert_int_equal(first.got, KB_OK);
    /* a2 appends record 1 again: the unique (node, seq) refuses it at the
     * deferred commit */
    counter = 0;
    struct item a[2], b;
    item_init(&a[0], 2, &counter, base, 3);
    item_init(&a[1], 1, &counter, base, 3);
    item_init(&b, 30, &counter, base, 3);
    three_batches(p, job_audit, a, &b);
    run_until(base, &counter, 3);
    assert_int_equal(a[0].got, KB_E_AUDIT_UNAVAILABLE);
    assert_int_equal(a[1].got, KB_E_AUDIT_UNAVAILABLE);
    assert_int_not_equal(b.got, KB_OK); /* it chained on what failed */
    assert_int_equal(b.seen, 0);
    assert_int_equal(sql("SELECT count(*) FROM audit"), 1);
    assert_int_not_equal(writer_failing_since(w), 0);
    /* then the writer commits again */
    counter = 0;
    struct item c;
    item_init(&c, 40, &counter, base, 1);
    writer_submit_unguarded(p, job_insert, on_done, &c);
    run_until(base, &counter, 1);
    assert_int_equal(c.got, KB_OK);
    assert_int_equal(c.seen, 1);
    assert_int_equal(writer_failing_since(w), 0);
    writer_port_free(p);
    writer_free(w);
    event_base_free(base);
}

/* With nothing queued behind it, a deferred commit is sent at once; a
 * fire-and-forget job is durable once writer_free returns. */
static void test_deferred_commit_alone_and_at_free(void **state)
{
    (void)state;
    struct kb_writer *w = start();
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    int counter = 0;
    struct item a;
    item_init(&a, 7, &counter, base, 1);
    writer_submit_unguarded(p, job_insert, on_done, &a);
    run_until(base, &counter, 1);
    assert_int_equal(a.got, KB_OK);
    assert_int_equal(a.seen, 1);
    struct item last;
    item_init(&last, 8, &counter, base, 99);
    writer_submit_unguarded(p, job_insert, NULL, &last);
    writer_port_free(p);
    writer_free(w);
    assert_int_equal(sql("SELECT count(*) FROM t WHERE v = 8"), 1);
    event_base_free(base);
}

#ifdef KB_TEST_HOOKS
/* ---- a COMMIT whose answer is lost (pg_txn.c, "limbo") ---- */

/* KEYBRAKE_TEST_PG_LOSE_COMMIT: the next deferred COMMIT's session is cut
 * once the server has answered it; "rollback" has it rolled back instead. */
static void lose_next_commit(const char *how)
{
    static char path[] = "/tmp/kb-lose-commit-XXXXXX";
    static bool made;
    if (!made) {
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        made = true;
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(how, f);
    fclose(f);
    setenv("KEYBRAKE_TEST_PG_LOSE_COMMIT", path, 1);
}

/* One job in a batch of its own, its COMMIT's answer lost as `how` says
 * (NULL: not lost); what its done saw. */
struct lone {
    struct kb_writer_port *p;
    struct event_base *base;
    int counter;
};

static enum kb_err lone_batch(struct lone *l, kb_job_fn job, int64_t v, const char *how)
{
    struct item it;
    item_init(&it, v, &l->counter, l->base, l->counter + 1);
    if (how)
        lose_next_commit(how);
    writer_submit_unguarded(l->p, job, on_done, &it);
    run_until(l->base, &l->counter, it.target);
    return it.got;
}

/* A batch whose COMMIT happened completes as committed, read on a new
 * session; one whose COMMIT did not happen fails, and the writer goes on. */
static void test_lost_answer(void **state)
{
    (void)state;
    struct kb_writer *w = start();
    struct lone l = {.base = event_base_new()};
    l.p = writer_port_new(w, l.base);

    assert_int_equal(lone_batch(&l, job_audit, 1, "commit"), KB_OK);
    assert_int_equal(sql("SELECT count(*) FROM audit WHERE seq = 1"), 1);

    assert_int_not_equal(lone_batch(&l, job_audit, 2, "rollback"), KB_OK);
    assert_int_equal(sql("SELECT count(*) FROM audit WHERE seq = 2"), 0);

    /* the next batch chains on what really is there */
    assert_int_equal(lone_batch(&l, job_audit, 2, NULL), KB_OK);
    assert_int_equal(sql("SELECT count(*) FROM audit WHERE seq = 2"), 1);

    /* a batch without an audit record has no mark to read: it fails as
     * unknown at once (docs/cluster.md, "Limits"), and does not hang */
    assert_int_not_equal(lone_batch(&l, job_insert, 9, "commit"), KB_OK);

    unsetenv("KEYBRAKE_TEST_PG_LOSE_COMMIT");
    writer_port_free(l.p);
    writer_free(w);
    event_base_free(l.base);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_deferred_commit_in_order, setup),
        cmocka_unit_test_setup(test_deferred_commit_fails_carrier, setup),
        cmocka_unit_test_setup(test_deferred_commit_alone_and_at_free, setup),
#ifdef KB_TEST_HOOKS
        cmocka_unit_test_setup(test_lost_answer, setup),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
