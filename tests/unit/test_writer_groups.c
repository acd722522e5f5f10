/*
 * test_writer_groups.c - grouped jobs (writer_submit_group, writer.c
 * run_groups) on a real SQLite writer: a run of one group is one call with
 * its arguments in submission order, the groups of a run go by rank, an
 * ungrouped job splits a run, a failing group fails the whole batch.
 */
#include "writer_fixture.h"

/* ---- grouped jobs (writer_submit_group) ---- */

/* Every call of a group's run and every ungrouped job, in the order the
 * writer thread made them: the tag and the values of its arguments. */
struct call {
    char tag;
    size_t n;
    int64_t v[8];
};
static struct call g_calls[16];
static int g_ncalls;

static enum kb_err group_log(struct kb_store *s, char tag, void *const *args, size_t n,
                             enum kb_err res)
{
    struct call *c = &g_calls[g_ncalls < 15 ? g_ncalls++ : 15];
    c->tag = tag;
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        if (job_insert(s, args[i]) != KB_OK)
            return KB_E_STORE;
        if (i < 8)
            c->v[i] = ((struct item *)args[i])->v;
    }
    return res;
}

static enum kb_err run_a(struct kb_store *s, void *const *args, size_t n)
{
    return group_log(s, 'a', args, n, KB_OK);
}

static enum kb_err run_b(struct kb_store *s, void *const *args, size_t n)
{
    return group_log(s, 'b', args, n, KB_OK);
}

static enum kb_err run_fail(struct kb_store *s, void *const *args, size_t n)
{
    return group_log(s, 'f', args, n, KB_E_STORE);
}

static enum kb_err job_logged(struct kb_store *s, void *arg)
{
    void *args[1] = {arg};
    return group_log(s, 'j', args, 1, KB_OK);
}

static const struct kb_job_group g_a = {run_a, 0}, g_b = {run_b, 1}, g_f = {run_fail, 1};

/* One job to submit into the gated batch: a group, or NULL for an ungrouped
 * logged job. */
struct sub {
    const struct kb_job_group *g;
    int64_t v;
};

/* Submits the n of v into one batch behind the gate and waits for every
 * done; it[i] holds what each saw. */
static void run_subs(const struct sub *v, int n, struct item *it)
{
    struct kb_writer *w = start(32);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    int counter = 0;
    g_ncalls = 0;
    gate_reset(&g_gate);
    writer_submit(p, job_gate, NULL, &g_gate);
    gate_wait_entered(&g_gate); /* everything below shares the next batch */
    for (int i = 0; i < n; i++) {
        item_init(&it[i], v[i].v, KB_OK, &counter, base, n);
        if (v[i].g)
            writer_submit_group(p, v[i].g, on_done, &it[i]);
        else
            writer_submit_unguarded(p, job_logged, on_done, &it[i]);
    }
    gate_open(&g_gate);
    run_until(base, &counter, n);
    writer_port_free(p);
    event_base_free(base);
    writer_free(w);
    for (int i = 0; i < n; i++)
        assert_false(it[i].wrong_thread);
}

static void assert_call(int i, char tag, size_t n, const int64_t *v)
{
    assert_true(i < g_ncalls);
    assert_int_equal(g_calls[i].tag, tag);
    assert_int_equal(g_calls[i].n, n);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(g_calls[i].v[k], v[k]);
}

static void test_group_one_call_in_order(void **state)
{
    (void)state;
    static const struct sub v[] = {{&g_a, 701}, {&g_a, 705}, {&g_a, 702}, {&g_a, 704}, {&g_a, 703}};
    struct item it[5];
    run_subs(v, 5, it);
    assert_int_equal(g_ncalls, 1);
    assert_call(0, 'a', 5, (const int64_t[]){701, 705, 702, 704, 703});
    for (int i = 0; i < 5; i++)
        assert_int_equal(it[i].got, KB_OK);
    assert_int_equal(count_rows("v BETWEEN 701 AND 705"), 5);
}

static void test_group_by_rank(void **state)
{
    (void)state;
    /* rank 1 submitted first: rank 0's call still comes first */
    static const struct sub v[] = {{&g_b, 711}, {&g_a, 712}, {&g_b, 713}, {&g_a, 714}};
    struct item it[4];
    run_subs(v, 4, it);
    assert_int_equal(g_ncalls, 2);
    assert_call(0, 'a', 2, (const int64_t[]){712, 714});
    assert_call(1, 'b', 2, (const int64_t[]){711, 713});
    for (int i = 0; i < 4; i++)
        assert_int_equal(it[i].got, KB_OK);
}

static void test_group_split_by_ungrouped(void **state)
{
    (void)state;
    static const struct sub v[] = {{&g_a, 721}, {&g_a, 722}, {NULL, 723}, {&g_a, 724}};
    struct item it[4];
    run_subs(v, 4, it);
    assert_int_equal(g_ncalls, 3);
    assert_call(0, 'a', 2, (const int64_t[]){721, 722});
    assert_call(1, 'j', 1, (const int64_t[]){723});
    assert_call(2, 'a', 1, (const int64_t[]){724});
    for (int i = 0; i < 4; i++)
        assert_int_equal(it[i].got, KB_OK);
    assert_int_equal(count_rows("v BETWEEN 721 AND 724"), 4);
}

static void test_group_failure_fails_batch(void **state)
{
    (void)state;
    /* a inserts and succeeds, then f (rank 1) reports the store failing:
     * every job of the batch fails, the ungrouped one before them too,
     * and nothing of it commits */
    static const struct sub v[] = {{NULL, 731}, {&g_f, 732}, {&g_a, 733}, {&g_f, 734}};
    struct item it[4];
    run_subs(v, 4, it);
    assert_int_equal(g_ncalls, 3);
    assert_call(0, 'j', 1, (const int64_t[]){731});
    assert_call(1, 'a', 1, (const int64_t[]){733});
    assert_call(2, 'f', 2, (const int64_t[]){732, 734});
    for (int i = 0; i < 4; i++)
        assert_int_equal(it[i].got, KB_E_AUDIT_UNAVAILABLE);
    assert_int_equal(count_rows("v BETWEEN 731 AND 734"), 0);
}
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_one_call_in_order),
        cmocka_unit_test(test_group_by_rank),
        cmocka_unit_test(test_group_split_by_ungrouped),
        cmocka_unit_test(test_group_failure_fails_batch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
