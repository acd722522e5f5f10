/*
 * test_writer.c - unit tests for src/store/writer.c: group commit across
 * ports on several loop threads, per-job savepoints, unguarded jobs,
 * whole-batch failure (a COMMIT refused by a commit hook; a disk filled through
 * PRAGMA max_page_count) and recovery, drain on writer_free, ports
 * freed while their jobs are pending, a WAL that stays bounded and one
 * whose pages stay in memory; grouped jobs (writer_submit_group): a run
 * of one group in one call, in submission order, the groups by rank, an
 * ungrouped job splitting a run, a failing group failing the batch.
 *
 * A "gate" job blocks the writer thread inside a batch, so the jobs
 * submitted meanwhile are known to share the next batch.
 */
#include "writer_fixture.h"

/* ---- two ports on two loop threads ---- */

#define PER_THREAD 600

    struct loop_ctx {
    struct kb_writer *w;
    int64_t first;
    struct item items[PER_THREAD];
    int counter;
};

static void *loop_main(void *arg)
{
    struct loop_ctx *c = arg;
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(c->w, base);
    for (int i = 0; i < PER_THREAD; i++) {
        item_init(&c->items[i], c->first + i, KB_OK, &c->counter, base, PER_THREAD);
        writer_submit(p, job_insert, on_done, &c->items[i]);
    }
    struct timeval tv = {20, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    writer_port_free(p);
    event_base_free(base);
    return NULL;
}

/* ---- checkpoints ---- */

static enum kb_err job_insert_page(struct kb_store *s, void *arg)
{
    (void)arg;
    /* about one database page per row: the WAL grows fast */
    return sqlite3_exec(store__db(s), "INSERT INTO t (v, pad) VALUES (0, zeroblob(3500))", NULL,
                        NULL, NULL) == SQLITE_OK
               ? KB_OK
               : KB_E_STORE;
}

static int64_t metric(const char *name)
{
    struct kb_buf b = KB_BUF_INIT;
    metrics_render(&b, 0);
    const char *at = strstr(b.data, name);
    int64_t v = at ? strtoll(at + strlen(name), NULL, 10) : -1;
    buf_cleanup(&b);
    return v;
}

/*
 * Under a steady stream of commits the WAL must start over again and
 * again, so its file stays near CKPT_WRITER pages: a checkpointer that
 * copies pages while the writer keeps appending, and leaves the restart to
 * nobody, lets it grow with every commit (it reached 4.7 GB in a benchmark
 * once). ~120 MB go through the WAL here and the restarts must come from
 * the writer pausing for the checkpointer; every row must be there.
 */
static void test_wal_bounded(void **state)
{
    (void)state;
    enum { WAVES = 60, PER_WAVE = 500 };
    struct kb_writer *w = start(8);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    static struct item items[PER_WAVE];
    int64_t before = metric("keybrake_store_checkpoint_seconds_count ");
    int64_t waits = metric("keybrake_store_wal_restart_wait_seconds_count ");
    off_t largest = 0;
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", g_path);
    for (int wave = 0; wave < WAVES; wave++) {
        int counter = 0;
        for (int i = 0; i < PER_WAVE; i++) {
            item_init(&items[i], i, KB_OK, &counter, base, PER_WAVE);
            writer_submit(p, job_insert_page, on_done, &items[i]);
        }
        run_until(base, &counter, PER_WAVE);
        for (int i = 0; i < PER_WAVE; i++)
            assert_int_equal(items[i].got, KB_OK);
        struct stat st;
        if (stat(wal, &st) == 0 && st.st_size > largest)
            largest = st.st_size;
    }
    writer_port_free(p);
    writer_free(w);
    event_base_free(base);
    assert_int_equal(count_rows("pad IS NOT NULL"), WAVES * PER_WAVE);
    /* it starts over near 8000 pages of 4 KiB, and whatever the disk does
     * the writer waits for the checkpointer from 16000 on (66 MB) */
    assert_true(largest > 0);
    assert_true(largest < 72 * 1024 * 1024);
    assert_true(metric("keybrake_store_checkpoint_seconds_count ") > before);
    /* the restarts came from the writer waiting for the checkpointer */
    assert_true(metric("keybrake_store_wal_restart_wait_seconds_count ") > waits);
}

/* Pages of `fd`'s first `len` bytes in the page cache, after the clean
 * ones were offered back to the kernel (POSIX_FADV_DONTNEED drops clean
 * pages that nothing maps). */
static size_t resident_after_dontneed(int fd, size_t len)
{
    assert_int_equal(fdatasync(fd), 0);
    assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = len / page, in = 0;
    void *a = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(a != MAP_FAILED);
    unsigned char *vec = malloc(n);
    assert_int_equal(mincore(a, len, vec), 0);
    for (size_t i = 0; i < n; i++)
        in += vec[i] & 1;
    free(vec);
    munmap(a, len);
    return in;
}

/*
 * WAL frames are 24 bytes plus a page, so the writer's writes cover parts
 * of file blocks; a block the kernel dropped from its cache is read back
 * from disk first, and a stalled disk then holds up a commit for 100 ms
 * or more (docs/benchmarks.md). The checkpointer keeps the WAL mapped:
 * its pages must survive what drops every other clean page, as a control
 * file of the same size shows.
 */
static void test_wal_pinned(void **state)
{
    (void)state;
    enum { PER_WAVE = 500, MAX_WAVES = 40 };
    const size_t want = 4u << 20;
    struct kb_writer *w = start(8);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    static struct item items[PER_WAVE];
    /* the checkpointer pins after its passes, which the WAL's growth wakes */
    for (int wave = 0; wave < MAX_WAVES && writer_wal_pinned(w) < want; wave++) {
        int counter = 0;
        for (int i = 0; i < PER_WAVE; i++) {
            item_init(&items[i], i, KB_OK, &counter, base, PER_WAVE);
            writer_submit(p, job_insert_page, on_done, &items[i]);
        }
        run_until(base, &counter, PER_WAVE);
    }
    size_t pinned = writer_wal_pinned(w);
    assert_true(pinned >= want);

    char wal[160], ctl[160];
    snprintf(wal, sizeof wal, "%s-wal", g_path);
    snprintf(ctl, sizeof ctl, "%s/control", g_dir);
    int wfd = open(wal, O_RDONLY);
    assert_true(wfd >= 0);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    assert_int_equal(resident_after_dontneed(wfd, pinned), pinned / page);
    close(wfd);

    int cfd = open(ctl, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(cfd >= 0);
    char *junk = calloc(1, pinned);
    assert_int_equal(write(cfd, junk, pinned), (ssize_t)pinned);
    free(junk);
    assert_true(resident_after_dontneed(cfd, pinned) < pinned / page / 10);
    close(cfd);
    unlink(ctl);

    writer_port_free(p);
    writer_free(w);
    event_base_free(base);
}

static void test_two_ports(void **state)
{
    (void)state;
    struct kb_writer *w = start(64);
    static struct loop_ctx ctx[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        ctx[i].w = w;
        ctx[i].first = (i + 1) * 100000;
        ctx[i].counter = 0;
        assert_int_equal(pthread_create(&th[i], NULL, loop_main, &ctx[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    writer_free(w);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ctx[i].counter, PER_THREAD);
        for (int k = 0; k < PER_THREAD; k++) {
            assert_true(ctx[i].items[k].called);
            assert_false(ctx[i].items[k].wrong_thread);
            assert_int_equal(ctx[i].items[k].got, KB_OK);
        }
    }
    assert_int_equal(count_rows("v >= 100000 AND v < 300000"), 2 * PER_THREAD);
}

/* ---- a failing job rolls back alone ---- */

static void test_job_failure_alone(void **state)
{
    (void)state;
    struct kb_writer *w = start(16);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    int counter = 0;
    struct item it[3];
    gate_reset(&g_gate);
    writer_submit(p, job_gate, NULL, &g_gate);
    gate_wait_entered(&g_gate); /* the three below share one batch */
    item_init(&it[0], 201, KB_OK, &counter, base, 3);
    item_init(&it[1], 202, KB_E_INVALID, &counter, base, 3);
    item_init(&it[2], 203, KB_OK, &counter, base, 3);
    for (int i = 0; i < 3; i++)
        writer_submit(p, job_insert, on_done, &it[i]);
    gate_open(&g_gate);
    run_until(base, &counter, 3);
    assert_int_equal(it[0].got, KB_OK);
    assert_int_equal(it[1].got, KB_E_INVALID);
    assert_int_equal(it[2].got, KB_OK);
    writer_port_free(p);
    event_base_free(base);
    writer_free(w);
    assert_int_equal(count_rows("v IN (201, 203)"), 2);
    assert_int_equal(count_rows("v = 202"), 0);
}

/* ---- COMMIT fails: the whole batch fails, the next one works ---- */

/*
 * Unguarded jobs run without a savepoint: beside guarded ones they commit
 * as usual, but one that fails on its own cannot be undone alone, so its
 * whole batch fails (and the next batch is fine).
 */
static void test_unguarded(void **state)
{
    (void)state;
    struct kb_writer *w = start(16);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    int counter = 0;
    struct item it[6];
    gate_reset(&g_gate);
    writer_submit(p, job_gate, NULL, &g_gate);
    gate_wait_entered(&g_gate); /* the three below share one batch */
    item_init(&it[0], 601, KB_OK, &counter, base, 3);
    item_init(&it[1], 602, KB_E_INVALID, &counter, base, 3); /* guarded: alone */
    item_init(&it[2], 603, KB_OK, &counter, base, 3);
    writer_submit_unguarded(p, job_insert, on_done, &it[0]);
    writer_submit(p, job_insert, on_done, &it[1]);
    writer_submit_unguarded(p, job_insert, on_done, &it[2]);
    gate_open(&g_gate);
    run_until(base, &counter, 3);
    assert_int_equal(it[0].got, KB_OK);
    assert_int_equal(it[1].got, KB_E_INVALID);
    assert_int_equal(it[2].got, KB_OK);

    counter = 0;
    gate_reset(&g_gate);
    writer_submit(p, job_gate, NULL, &g_gate);
    gate_wait_entered(&g_gate);
    item_init(&it[3], 604, KB_OK, &counter, base, 3);
    item_init(&it[4], 605, KB_E_INVALID, &counter, base, 3); /* unguarded: the batch */
    item_init(&it[5], 606, KB_OK, &counter, base, 3);
    for (int i = 3; i < 6; i++)
        writer_submit_unguarded(p, job_insert, on_done, &it[i]);
    /* a fire-and-forget job behind the failing one: it still runs, alone */
    struct item ff;
    item_init(&ff, 608, KB_OK, &counter, base, 3);
    writer_submit_unguarded(p, job_insert, NULL, &ff);
    gate_open(&g_gate);
    run_until(base, &counter, 3);
    for (int i = 3; i < 6; i++)
        assert_int_equal(it[i].got, KB_E_AUDIT_UNAVAILABLE);

    counter = 0; /* the writer goes on */
    item_init(&it[0], 607, KB_OK, &counter, base, 1);
    writer_submit_unguarded(p, job_insert, on_done, &it[0]);
    run_until(base, &counter, 1);
    assert_int_equal(it[0].got, KB_OK);
    writer_port_free(p);
    event_base_free(base);
    writer_free(w);
    assert_int_equal(count_rows("v IN (601, 603, 607, 608)"), 4);
    assert_int_equal(count_rows("v IN (602, 604, 605, 606)"), 0);
}

static int g_fail_commits;

static int fail_commit_hook(void *arg)
{
    (void)arg;
    if (g_fail_commits > 0) {
        g_fail_commits--;
        return 1; /* turns the COMMIT into a ROLLBACK */
    }
    return 0;
}

static enum kb_err job_arm_commit_failure(struct kb_store *s, void *arg)
{
    sqlite3_commit_hook(store__db(s), fail_commit_hook, NULL);
    g_fail_commits = 1;
    return job_insert(s, arg);
}

static void test_commit_failure(void **state)
{
    (void)state;
    struct kb_writer *w = start(16);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    int counter = 0;
    struct item it[4];
    gate_reset(&g_gate);
    writer_submit(p, job_gate, NULL, &g_gate);
    gate_wait_entered(&g_gate);
    item_init(&it[0], 301, KB_OK, &counter, base, 3);
    item_init(&it[1], 302, KB_OK, &counter, base, 3);
    item_init(&it[2], 303, KB_E_INVALID, &counter, base, 3);
    writer_submit(p, job_arm_commit_failure, on_done, &it[0]);
    writer_submit(p, job_insert, on_done, &it[1]);
    writer_submit(p, job_insert, on_done, &it[2]);
    gate_open(&g_gate);
    run_until(base, &counter, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(it[i].got, KB_E_AUDIT_UNAVAILABLE);
    /* recovery: the next batch commits */
    counter = 0;
    item_init(&it[3], 304, KB_OK, &counter, base, 1);
    writer_submit(p, job_insert, on_done, &it[3]);
    run_until(base, &counter, 1);
    assert_int_equal(it[3].got, KB_OK);
    writer_port_free(p);
    event_base_free(base);
    writer_free(w);
    assert_int_equal(count_rows("v BETWEEN 301 AND 303"), 0);
    assert_int_equal(count_rows("v = 304"), 1);
}

/* ---- a job hits a full disk: the whole batch fails, then recovers ---- */

static enum kb_err job_fill_disk(struct kb_store *s, void *arg)
{
    (void)arg;
    sqlite3 *db = store__db(s);
    sqlite3_stmt *st = NULL;
    int64_t pages = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        pages = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    char q[96];
    snprintf(q, sizeof q, "PRAGMA max_page_count = %lld", (long long)pages);
    sqlite3_exec(db, q, NULL, NULL, NULL);
    int rc = sqlite3_exec(db, "INSERT INTO t (v, pad) VALUES (499, zeroblob(1000000))", NULL, NULL,
                          NULL);
    return rc == SQLITE_OK ? KB_OK : KB_E_STORE; /* SQLITE_FULL */
}

static enum kb_err job_free_disk(struct kb_store *s, void *arg)
{
    sqlite3_exec(store__db(s), "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL);
    return job_insert(s, arg);
}

static void test_disk_full(void **state)
{
    (void)state;
    struct kb_writer *w = start(16);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    int counter = 0;
    struct item it[5];
    gate_reset(&g_gate);
    writer_submit(p, job_gate, NULL, &g_gate);
    gate_wait_entered(&g_gate);
    item_init(&it[0], 401, KB_OK, &counter, base, 3);
    item_init(&it[1], 0, KB_OK, &counter, base, 3);
    item_init(&it[2], 403, KB_OK, &counter, base, 3);
    writer_submit(p, job_insert, on_done, &it[0]);
    writer_submit(p, job_fill_disk, on_done, &it[1]);
    writer_submit(p, job_insert, on_done, &it[2]);
    gate_open(&g_gate);
    run_until(base, &counter, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(it[i].got, KB_E_AUDIT_UNAVAILABLE);
    /* still full: a plain job fails too... */
    counter = 0;
    item_init(&it[3], 404, KB_OK, &counter, base, 1);
    writer_submit(p, job_fill_disk, on_done, &it[3]);
    run_until(base, &counter, 1);
    assert_int_equal(it[3].got, KB_E_AUDIT_UNAVAILABLE);
    /* ...until space comes back */
    counter = 0;
    item_init(&it[4], 405, KB_OK, &counter, base, 1);
    writer_submit(p, job_free_disk, on_done, &it[4]);
    run_until(base, &counter, 1);
    assert_int_equal(it[4].got, KB_OK);
    writer_port_free(p);
    event_base_free(base);
    writer_free(w);
    assert_int_equal(count_rows("v BETWEEN 401 AND 404 OR v = 499"), 0);
    assert_int_equal(count_rows("v = 405"), 1);
}

/* ---- writer_free drains; a freed port's jobs still run, silently ---- */

#define DRAIN 300

static void test_drain_and_port_freed(void **state)
{
    (void)state;
    struct kb_writer *w = start(32);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    static struct item it[DRAIN];
    int counter = 0;
    gate_reset(&g_gate);
    writer_submit(p, job_gate, NULL, &g_gate);
    gate_wait_entered(&g_gate);
    for (int i = 0; i < DRAIN; i++) {
        item_init(&it[i], 1000 + i, KB_OK, &counter, base, DRAIN);
        /* half with a callback that must not run, half fire and forget */
        writer_submit(p, job_insert, i % 2 ? must_not_run : NULL, &it[i]);
    }
    writer_port_free(p); /* jobs pending: the port stays until they finish */
    gate_open(&g_gate);
    event_base_free(base);
    writer_free(w); /* runs them all before returning */
    for (int i = 0; i < DRAIN; i++)
        assert_false(it[i].called);
    assert_int_equal(count_rows("v >= 1000 AND v < 1000 + 300"), DRAIN);
}

/* ---- a port freed from its own done callback ---- */

struct self_free {
    struct kb_writer_port *p;
    struct event_base *base;
    int calls;
};

static void free_port_cb(void *arg, enum kb_err err)
{
    (void)err;
    struct self_free *sf = arg;
    sf->calls++;
    writer_port_free(sf->p);
    event_base_loopbreak(sf->base);
}

static void test_port_freed_in_callback(void **state)
{
    (void)state;
    struct kb_writer *w = start(32);
    struct event_base *base = event_base_new();
    struct self_free sf = {writer_port_new(w, base), base, 0};
    static struct item it[20];
    int counter = 0;
    gate_reset(&g_gate);
    writer_submit(sf.p, job_gate, NULL, &g_gate);
    gate_wait_entered(&g_gate);
    item_init(&it[0], 2000, KB_OK, &counter, base, 100);
    writer_submit(sf.p, job_noop, free_port_cb, &sf);
    for (int i = 1; i < 20; i++) {
        item_init(&it[i], 2000 + i, KB_OK, &counter, base, 100);
        writer_submit(sf.p, job_insert, must_not_run, &it[i]);
    }
    gate_open(&g_gate);
    struct timeval tv = {10, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    assert_int_equal(sf.calls, 1);
    writer_free(w);
    event_base_free(base);
    for (int i = 1; i < 20; i++)
        assert_false(it[i].called);
}
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_ports),
        cmocka_unit_test(test_wal_bounded),
        cmocka_unit_test(test_wal_pinned),
        cmocka_unit_test(test_job_failure_alone),
        cmocka_unit_test(test_unguarded),
        cmocka_unit_test(test_commit_failure),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_drain_and_port_freed),
        cmocka_unit_test(test_port_freed_in_callback),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
