/*
 * test_audit_sink.c - unit tests for the audit sink's thread
 * (src/audit/sink.c): the writer's answers never wait for the sink file
 * (a FIFO nobody reads stands for a stalled disk), and once it drains,
 * and at stop, the sink holds every committed record once, in order; a
 * reopen while the thread writes splits the records between the renamed
 * file and the new one, in order, none lost or repeated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>
#include <pthread.h>

#include "audit/audit.h"
#include "store/store.h"
#include "store/writer.h"

static const uint8_t g_key[KB_HASH_LEN] = {9, 8, 7};
static char g_dir[64];
static char g_db[128];
static char g_sink[128];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/kb-sink-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_db, sizeof g_db, "%s/kb.db", g_dir);
    snprintf(g_sink, sizeof g_sink, "%s/sink.jsonl", g_dir);
    audit_set_key(g_key);
    audit_set_checkpoint_every(100);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    return 0;
}

static enum kb_err job_append(struct kb_store *s, void *arg)
{
    (void)arg;
    struct kb_audit_rec r = {0};
    r.kind = KB_AUDIT_PROXY;
    r.ts_ms = 1700000000000LL;
    snprintf(r.request_id, sizeof r.request_id, "req_sink_thread_test");
    r.action = "proxy.request";
    r.key_id = "vk_a";
    r.label = "user-1/run-1/a-label-long-enough-that-the-pipe-fills-up-soon";
    r.vendor = "stripe";
    r.method = "POST";
    r.path = "/v1/payment_intents";
    r.decision = "refused";
    r.code = "endpoint_not_allowed";
    return audit_append(s, &r, NULL);
}

static int g_done;

static void count_done(void *arg, enum kb_err err)
{
    (void)arg;
    assert_int_equal(err, KB_OK);
    g_done++;
}

/* The writer with the sink's hook, a loop and a port on it. */
struct rig {
    struct kb_store *main; /* the main thread's connection (open) */
    struct kb_writer *w;
    struct event_base *base;
    struct kb_writer_port *port;
    struct kb_audit_sink *sink;
};

static void rig_start(struct rig *r, const char *sink_path)
{
    char *err = NULL;
    assert_int_equal(store_open(g_db, "normal", true, &r->main, &err), KB_OK);
    assert_int_equal(audit_sink_open(sink_path, r->main, &r->sink, &err), KB_OK);
    assert_int_equal(writer_new(g_db, "normal", 8, &r->w, &err), KB_OK);
    writer_set_commit_hook(r->w, audit_sink_commit, r->sink);
    assert_int_equal(audit_sink_start(r->sink, g_db, "normal", &err), KB_OK);
    r->base = event_base_new();
    r->port = writer_port_new(r->w, r->base);
}

/* Submits n appends and runs the loop until all are answered, for at most
 * 30 s: answers that wait for a stalled sink never come. */
static void submit_and_wait(struct rig *r, int n)
{
    g_done = 0;
    for (int i = 0; i < n; i++)
        writer_submit(r->port, job_append, count_done, NULL);
    struct timeval limit = {30, 0};
    event_base_loopexit(r->base, &limit);
    while (g_done < n && !event_base_got_exit(r->base))
        event_base_loop(r->base, EVLOOP_ONCE);
    assert_int_equal(g_done, n);
}

/* Stops in the daemon's order: the writer, then the sink (draining). */
static void rig_stop(struct rig *r)
{
    writer_port_free(r->port);
    writer_free(r->w);
    event_base_free(r->base);
    audit_sink_free(r->sink);
    store_close(r->main);
}

/* Appends the seqs of the record lines of the stream f to seqs. */
static int read_seqs(FILE *f, int64_t *seqs, int max)
{
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        assert_true(n < max);
        seqs[n++] = json_integer_value(json_object_get(j, "seq"));
        json_decref(j);
    }
    return n;
}

struct drain {
    const char *path;
    int64_t seqs[2048];
    int n;
};

static void *drainer(void *arg)
{
    struct drain *d = arg;
    FILE *f = fopen(d->path, "r"); /* the sink holds the write end */
    assert_non_null(f);
    d->n = read_seqs(f, d->seqs, 2048); /* until the sink closes it */
    fclose(f);
    return NULL;
}

#define STALLED 600 /* records: ~250 KB, four times what a pipe holds */

static void test_answers_do_not_wait_for_the_sink(void **state)
{
    (void)state;
    char fifo[160];
    snprintf(fifo, sizeof fifo, "%s/sink.fifo", g_dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    struct rig r = {0};
    rig_start(&r, fifo); /* opened read-write: never blocks, fills up */
    submit_and_wait(&r, STALLED);

    struct drain d = {.path = fifo};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, drainer, &d), 0);
    rig_stop(&r); /* the sink writes every committed record, then closes */
    pthread_join(th, NULL);
    assert_int_equal(d.n, STALLED);
    for (int i = 0; i < d.n; i++)
        assert_int_equal(d.seqs[i], i + 1);
}

static void test_reopen_while_writing(void **state)
{
    (void)state;
    char rotated[160];
    snprintf(rotated, sizeof rotated, "%s.1", g_sink);
    struct rig r = {0};
    rig_start(&r, g_sink);
    submit_and_wait(&r, 300);
    assert_int_equal(rename(g_sink, rotated), 0);
    char *err = NULL;
    assert_int_equal(audit_sink_reopen(r.sink, &err), KB_OK);
    submit_and_wait(&r, 300);
    rig_stop(&r);

    static int64_t seqs[2048];
    FILE *f = fopen(rotated, "r");
    assert_non_null(f);
    int n = read_seqs(f, seqs, 2048);
    fclose(f);
    f = fopen(g_sink, "r");
    assert_non_null(f); /* the records committed after the reopen went there */
    int m = read_seqs(f, seqs + n, 2048 - n);
    fclose(f);
    assert_true(m >= 300);
    assert_int_equal(n + m, 600);
    for (int i = 0; i < n + m; i++)
        assert_int_equal(seqs[i], i + 1); /* once each, in order, across the two */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_answers_do_not_wait_for_the_sink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_while_writing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
