/*
 * test_audit.c - unit tests for src/audit/ and src/store/sqlite_audit.c:
 * append and complete, the GET /v1/audit query with its filters and cursor,
 * the chain verifying, and verify finding the first bad record after the
 * SQLite file is tampered with directly (a field updated, a record deleted,
 * a forged record inserted, checkpoints altered or deleted, a rewritten
 * stretch, a truncated tail), the checkpoint schedule surviving a change of
 * interval, the JSONL sink fed through the writer (test_audit_sink.c has
 * its thread's own tests), the anchor (reading it,
 * and verify catching the cut tail checkpoints cannot see), and time
 * parsing.
 */
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
#include <openssl/evp.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "audit/audit.h"
#include "store/audit_store.h"
#include "store/sqlite_int.h"
#include "store/store.h"
#include "store/writer.h"

#define N 10
#define EVERY 4 /* checkpoints at 1, 5, 9 */

static const uint8_t g_key[KB_HASH_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static char g_dir[64];
static char g_path[128];

static void rm_db(void)
{
    char p[160];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", g_path, suffix[i]);
        unlink(p);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/kb-audit-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_path, sizeof g_path, "%s/kb.db", g_dir);
    audit_set_key(g_key);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_db();
    char p[160];
    snprintf(p, sizeof p, "%s/sink.jsonl", g_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/anchor.jsonl", g_dir);
    unlink(p);
    rmdir(g_dir);
    return 0;
}

static struct kb_store *open_store(void)
{
    struct kb_store *s = NULL;
    char *err = NULL;
    assert_int_equal(store_open(g_path, "normal", true, &s, &err), KB_OK);
    return s;
}

static void close_store(struct kb_store *s)
{
    store_audit_forget(s);
    store_close(s);
}

/* Record i: even ones are allowed proxy requests, odd ones refusals. */
static struct kb_audit_rec rec(int i)
{
    static const char *const labels[] = {"user-1/run-1", "user-2/run-1"};
    struct kb_audit_rec r = {0};
    r.kind = KB_AUDIT_PROXY;
    r.ts_ms = 1700000000000LL + i * 1000;
    snprintf(r.request_id, sizeof r.request_id, "req_%d", i);
    r.action = "proxy.request";
    r.key_id = i % 3 == 0 ? "vk_a" : "vk_b";
    r.label = labels[i % 2];
    r.vendor = "stripe";
    r.method = "POST";
    r.path = "/v1/payment_intents";
    r.decision = i % 2 ? "refused" : "allowed";
    r.code = i % 2 ? "endpoint_not_allowed" : NULL;
    r.reserved = i % 2 ? 0 : 250000;
    r.settled = i % 2 ? 0 : -1;
    r.bytes_in = 42;
    return r;
}

/* A fresh log of N records with checkpoints every EVERY. */
static void build(void)
{
    rm_db();
    audit_set_checkpoint_every(EVERY);
    struct kb_store *s = open_store();
    for (int i = 1; i <= N; i++) {
        struct kb_audit_rec r = rec(i);
        int64_t seq = 0;
        assert_int_equal(audit_append(s, &r, &seq), KB_OK);
        assert_int_equal(seq, i);
    }
    close_store(s);
}

static void sql(const char *q)
{
    sqlite3 *db = NULL;
    char *e = NULL;
    assert_int_equal(sqlite3_open(g_path, &db), SQLITE_OK);
    if (sqlite3_exec(db, q, NULL, NULL, &e) != SQLITE_OK)
        fail_msg("%s: %s", q, e);
    sqlite3_close(db);
}

static struct kb_audit_report verify(void)
{
    struct kb_store *s = open_store();
    struct kb_audit_report r;
    char *err = NULL;
    assert_int_equal(audit_verify(s, g_key, NULL, &r, &err), KB_OK);
    close_store(s);
    return r;
}

static void expect(enum kb_audit_problem p, int64_t seq)
{
    struct kb_audit_report r = verify();
    if (r.problem != p || r.bad_seq != seq)
        fail_msg("expected problem %d at %lld, got %d at %lld: %s", (int)p, (long long)seq,
                 (int)r.problem, (long long)r.bad_seq, r.why);
}

/* ---- append, complete, query ---- */

struct collect {
    int n;
    int64_t seqs[16];
    bool completed[16];
    int status[16];
    int64_t settled[16];
};

static void collect_cb(const struct kb_audit_entry *e, void *arg)
{
    struct collect *c = arg;
    if (c->n >= 16)
        return;
    c->seqs[c->n] = e->seq;
    c->completed[c->n] = e->completed;
    c->status[c->n] = e->rec.status;
    c->settled[c->n] = e->rec.settled;
    c->n++;
}

static struct collect query(struct kb_store *s, struct kb_audit_filter f)
{
    struct collect c = {0};
    if (!f.limit)
        f.limit = 16;
    assert_int_equal(store_audit_query(s, &f, collect_cb, &c), KB_OK);
    return c;
}

/* The chain hash of a record is SHA-256 over exactly these bytes (a known
 * answer, written out here field by field): stores written by earlier
 * versions must keep verifying, whatever the code that hashes. */
static void test_hash_known_answer(void **state)
{
    (void)state;
    rm_db(); /* an empty log: the previous hash is 32 zero bytes */
    struct kb_store *s = open_store();
    struct kb_audit_rec r = {0};
    r.kind = KB_AUDIT_PROXY;
    r.ts_ms = 1700000000123;
    snprintf(r.request_id, sizeof r.request_id, "%s", "req_kat");
    r.action = NULL;
    r.key_id = "vk_kat";
    r.label = "l\xc3\xa9";
    r.vendor = "stripe";
    r.method = "POST";
    r.path = "/v1/payment_intents";
    r.decision = "allowed";
    r.code = NULL;
    r.status = 200;
    r.reserved = 5000000;
    r.settled = -1;
    r.latency_us = 77;
    r.bytes_in = 23;
    r.bytes_out = 0;
    r.detail = NULL;
    int64_t seq = 0;
    assert_int_equal(audit_append(s, &r, &seq), KB_OK);
    assert_int_equal(seq, 1);
    uint8_t got[KB_HASH_LEN];
    int64_t last = 0;
    assert_int_equal(store_audit_last(s, &last, got), KB_OK);
    assert_int_equal(last, 1);

    uint8_t buf[512];
    size_t n = 0;
    memset(buf, 0, KB_HASH_LEN); /* the empty log's previous hash */
    n = KB_HASH_LEN;
    memcpy(buf + n, "KBA1", 4);
    n += 4;
    const int64_t nums1[] = {1, 0, KB_AUDIT_PROXY, 1700000000123};
    for (size_t i = 0; i < 4; i++) {
        buf[n++] = 'I';
        for (int k = 7; k >= 0; k--)
            buf[n++] = (uint8_t)((uint64_t)nums1[i] >> (8 * k));
    }
    const char *texts[] = {
        "req_kat", NULL, "vk_kat", "l\xc3\xa9", "stripe", "POST", "/v1/payment_intents",
        "allowed", NULL};
    for (size_t i = 0; i < 9; i++) {
        if (!texts[i]) {
            buf[n++] = 'N';
            continue;
        }
        size_t len = strlen(texts[i]);
        buf[n++] = 'T';
        for (int k = 3; k >= 0; k--)
            buf[n++] = (uint8_t)(len >> (8 * k));
        memcpy(buf + n, texts[i], len);
        n += len;
    }
    const int64_t nums2[] = {200, 5000000, -1, 77, 23, 0};
    for (size_t i = 0; i < 6; i++) {
        buf[n++] = 'I';
        for (int k = 7; k >= 0; k--)
            buf[n++] = (uint8_t)((uint64_t)nums2[i] >> (8 * k));
    }
    buf[n++] = 'N'; /* detail */
    uint8_t want[KB_HASH_LEN];
    unsigned int wl = 0;
    assert_int_equal(EVP_Digest(buf, n, want, &wl, EVP_sha256(), NULL), 1);
    assert_memory_equal(got, want, KB_HASH_LEN);
    close_store(s);
}

static void test_append_complete_query(void **state)
{
    (void)state;
    build();
    struct kb_store *s = open_store();
    /* complete record 2 (allowed, pending) as record 11 */
    struct kb_audit_rec r = rec(2);
    r.status = 200;
    r.settled = 120000;
    r.latency_us = 5300;
    r.bytes_out = 900;
    assert_int_equal(audit_complete(s, 2, &r), KB_OK);
    assert_int_equal(audit_complete(s, 99, &r), KB_E_NOT_FOUND);

    struct collect c = query(s, (struct kb_audit_filter){0});
    assert_int_equal(c.n, N); /* the completion merges into its request */
    assert_int_equal(c.seqs[0], N);
    assert_int_equal(c.seqs[N - 2], 2);
    assert_true(c.completed[N - 2]);
    assert_int_equal(c.status[N - 2], 200);
    assert_int_equal(c.settled[N - 2], 120000);
    assert_false(c.completed[N - 4]); /* record 4: allowed, never completed */
    assert_true(c.completed[N - 3]);  /* record 3: a refusal is complete */

    c = query(s, (struct kb_audit_filter){.decision = "refused"});
    assert_int_equal(c.n, N / 2);
    c = query(s, (struct kb_audit_filter){.key_id = "vk_a"});
    assert_int_equal(c.n, 3); /* 3, 6, 9 */
    c = query(s, (struct kb_audit_filter){.label_prefix = "user-2/"});
    assert_int_equal(c.n, N / 2);
    c = query(s, (struct kb_audit_filter){.vendor = "openai"});
    assert_int_equal(c.n, 0);
    c = query(s, (struct kb_audit_filter){.since_ms = 1700000000000LL + 3000,
                                          .until_ms = 1700000000000LL + 6000});
    assert_int_equal(c.n, 3); /* 5, 4, 3 */
    assert_int_equal(c.seqs[0], 5);
    /* cursor paging: pages of 4 */
    c = query(s, (struct kb_audit_filter){.limit = 4});
    assert_int_equal(c.seqs[3], 7);
    c = query(s, (struct kb_audit_filter){.limit = 4, .before_seq = 7});
    assert_int_equal(c.n, 4);
    assert_int_equal(c.seqs[0], 6);
    close_store(s);

    struct kb_audit_report rep = verify();
    assert_int_equal(rep.problem, KB_AUDIT_OK);
    assert_int_equal(rep.records, N + 1);
}

static void test_verify_intact(void **state)
{
    (void)state;
    build();
    struct kb_audit_report r = verify();
    assert_int_equal(r.problem, KB_AUDIT_OK);
    assert_int_equal(r.records, N);
    assert_int_equal(r.checkpoints, 3);
    assert_int_equal(r.last_ckpt_seq, 9);

    /* another server key: every checkpoint is refused */
    uint8_t other[KB_HASH_LEN] = {9};
    struct kb_store *s = open_store();
    char *err = NULL;
    assert_int_equal(audit_verify(s, other, NULL, &r, &err), KB_OK);
    close_store(s);
    assert_int_equal(r.problem, KB_AUDIT_CHECKPOINT);
    assert_int_equal(r.bad_seq, 1);
}

/* ---- tampering, table-driven ---- */

struct tamper {
    const char *name;
    const char *sql;
    enum kb_audit_problem problem;
    int64_t bad_seq;
};

static const struct tamper tampers[] = {
    {"field updated", "UPDATE audit SET label = 'evil' WHERE seq = 6", KB_AUDIT_ALTERED, 6},
    {"cost lowered", "UPDATE audit SET reserved_micros = 1 WHERE seq = 2", KB_AUDIT_ALTERED, 2},
    {"hash updated", "UPDATE audit SET hash = randomblob(32) WHERE seq = 3", KB_AUDIT_ALTERED, 3},
    {"record deleted", "DELETE FROM audit WHERE seq = 6", KB_AUDIT_REMOVED, 6},
    {"first record deleted", "DELETE FROM audit WHERE seq = 1", KB_AUDIT_REMOVED, 1},
    {"forged record inserted",
     "UPDATE audit SET seq = -seq WHERE seq >= 6;"
     "UPDATE audit SET seq = 1 - seq WHERE seq < 0;"
     "INSERT INTO audit SELECT 6, ref_seq, kind, ts_ms, request_id, action, key_id, 'forged', "
     "vendor, method, path, decision, code, status, reserved_micros, settled_micros, "
     "latency_us, bytes_in, bytes_out, detail, randomblob(32), tenant_id FROM audit WHERE seq = 5",
     KB_AUDIT_INSERTED, 6},
    {"record with a foreign number",
     "INSERT INTO audit SELECT 0, ref_seq, kind, ts_ms, "
     "request_id, action, key_id, label, vendor, method, path, decision, code, status, "
     "reserved_micros, settled_micros, latency_us, bytes_in, bytes_out, detail, hash, tenant_id "
     "FROM "
     "audit WHERE seq = 1",
     KB_AUDIT_INSERTED, 0},
    {"checkpoint altered", "UPDATE audit_checkpoints SET every = 100 WHERE seq = 5",
     KB_AUDIT_CHECKPOINT, 5},
    {"checkpoint signature forged",
     "UPDATE audit_checkpoints SET mac = randomblob(32) WHERE seq = 9", KB_AUDIT_CHECKPOINT, 9},
    {"checkpoint deleted", "DELETE FROM audit_checkpoints WHERE seq = 5", KB_AUDIT_CHECKPOINT, 5},
    {"all checkpoints deleted", "DELETE FROM audit_checkpoints", KB_AUDIT_CHECKPOINT, 1},
    {"tail cut before a checkpoint's record", "DELETE FROM audit WHERE seq >= 8", KB_AUDIT_REMOVED,
     8},
};

static void test_tamper(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof tampers / sizeof tampers[0]; i++) {
        build();
        sql(tampers[i].sql);
        struct kb_audit_report r = verify();
        if (r.problem != tampers[i].problem || r.bad_seq != tampers[i].bad_seq)
            fail_msg("%s: expected problem %d at %lld, got %d at %lld (%s)", tampers[i].name,
                     (int)tampers[i].problem, (long long)tampers[i].bad_seq, (int)r.problem,
                     (long long)r.bad_seq, r.why);
    }
}

/* Every column the chain hash covers, changed on its own, is caught at that
 * record (issue 14: dropping bytes_out from the hash passed every test). */
static void test_tamper_every_field(void **state)
{
    (void)state;
    static const char *const ints[] = {
        "kind",       "ts_ms",    "status",    "reserved_micros", "settled_micros",
        "latency_us", "bytes_in", "bytes_out", "ref_seq"};
    static const char *const texts[] = {"request_id", "action", "key_id",   "label",
                                        "vendor",     "method", "path",     "decision",
                                        "code",       "detail", "tenant_id"};
    char q[256];
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        build();
        snprintf(q, sizeof q, "UPDATE audit SET %s = coalesce(%s, 0) + 1 WHERE seq = 6", ints[i],
                 ints[i]);
        sql(q);
        struct kb_audit_report r = verify();
        if (r.problem != KB_AUDIT_ALTERED || r.bad_seq != 6)
            fail_msg("%s: expected altered at 6, got %d at %lld (%s)", ints[i], (int)r.problem,
                     (long long)r.bad_seq, r.why);
    }
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        build();
        snprintf(q, sizeof q, "UPDATE audit SET %s = coalesce(%s, '') || 'x' WHERE seq = 6",
                 texts[i], texts[i]);
        sql(q);
        struct kb_audit_report r = verify();
        if (r.problem != KB_AUDIT_ALTERED || r.bad_seq != 6)
            fail_msg("%s: expected altered at 6, got %d at %lld (%s)", texts[i], (int)r.problem,
                     (long long)r.bad_seq, r.why);
    }
}

/* An attacker rewrites records 6.. with a consistent chain but cannot sign:
 * the surviving checkpoint 9 gives it away. */
static void test_rewritten_stretch(void **state)
{
    (void)state;
    build();
    sql("CREATE TABLE saved AS SELECT * FROM audit_checkpoints WHERE seq = 9;"
        "DELETE FROM audit WHERE seq >= 6; DELETE FROM audit_checkpoints WHERE seq >= 6");
    struct kb_store *s = open_store();
    for (int i = 6; i <= N; i++) {
        struct kb_audit_rec r = rec(i);
        r.label = "rewritten";
        assert_int_equal(audit_append(s, &r, NULL), KB_OK);
    }
    close_store(s);
    sql("DELETE FROM audit_checkpoints WHERE seq = 9;"
        "INSERT INTO audit_checkpoints SELECT * FROM saved; DROP TABLE saved");
    expect(KB_AUDIT_ALTERED, 6);
}

/* Limit, documented: records after the last checkpoint can be cut. */
static void test_tail_after_checkpoint(void **state)
{
    (void)state;
    build();
    sql("DELETE FROM audit WHERE seq = 10");
    struct kb_audit_report r = verify();
    assert_int_equal(r.problem, KB_AUDIT_OK);
    assert_int_equal(r.records, 9);
}

/* The interval may change between runs without a false alarm. */
static void test_interval_change(void **state)
{
    (void)state;
    build();
    struct kb_store *s = open_store();
    audit_set_checkpoint_every(100); /* next due at min(4, 100) after 9: 13 */
    for (int i = N + 1; i <= 20; i++) {
        struct kb_audit_rec r = rec(i);
        assert_int_equal(audit_append(s, &r, NULL), KB_OK);
    }
    audit_set_checkpoint_every(2);
    for (int i = 21; i <= 30; i++) {
        struct kb_audit_rec r = rec(i);
        assert_int_equal(audit_append(s, &r, NULL), KB_OK);
    }
    close_store(s);
    struct kb_audit_report r = verify();
    assert_int_equal(r.problem, KB_AUDIT_OK);
    assert_int_equal(r.records, 30);
    /* 1, 5, 9 (every 4); 13 (due at min(4, 100)); 21 (min(100, 2)), 23, 25, 27, 29 */
    assert_int_equal(r.checkpoints, 9);
}

/* ---- the sink, fed through the writer ---- */

struct sink_job {
    int i;
    bool fail; /* roll the record back */
};

static enum kb_err job_append(struct kb_store *s, void *arg)
{
    struct sink_job *j = arg;
    struct kb_audit_rec r = rec(j->i);
    enum kb_err err = audit_append(s, &r, NULL);
    if (err != KB_OK)
        return err;
    return j->fail ? KB_E_INVALID : KB_OK;
}

static void count_done(void *arg, enum kb_err err)
{
    (void)arg;
    (void)err;
}

static void run_jobs(struct kb_audit_sink *sink, struct sink_job *jobs, int n)
{
    struct kb_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(writer_new(g_path, "normal", 8, &w, &err), KB_OK);
    writer_set_commit_hook(w, audit_sink_commit, sink);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    for (int i = 0; i < n; i++)
        writer_submit(p, job_append, count_done, &jobs[i]);
    writer_port_free(p);
    writer_free(w);
    event_base_free(base);
}

static int sink_lines(int64_t *last_seq)
{
    char p[160];
    snprintf(p, sizeof p, "%s/sink.jsonl", g_dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char line[4096];
    int n = 0;
    int64_t prev = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        int64_t seq = json_integer_value(json_object_get(j, "seq"));
        assert_int_equal(seq, prev + 1); /* in order, no gap, no repeat */
        assert_non_null(json_string_value(json_object_get(j, "hash")));
        prev = seq;
        json_decref(j);
        n++;
    }
    fclose(f);
    *last_seq = prev;
    return n;
}

/* Opens the sink at p and starts its thread. */
static struct kb_audit_sink *sink_start(const char *p, struct kb_store *s)
{
    struct kb_audit_sink *sink = NULL;
    char *err = NULL;
    assert_int_equal(audit_sink_open(p, s, &sink, &err), KB_OK);
    assert_int_equal(audit_sink_start(sink, g_path, "normal", &err), KB_OK);
    return sink;
}

/* The sink thread writes after the commits; audit_sink_free (after
 * writer_free) returns once everything committed is in the file. */
static void test_sink(void **state)
{
    (void)state;
    rm_db();
    char p[160];
    snprintf(p, sizeof p, "%s/sink.jsonl", g_dir);
    unlink(p);
    audit_set_checkpoint_every(EVERY);
    struct kb_store *s = open_store();
    struct kb_audit_sink *sink = sink_start(p, s);
    struct sink_job jobs[6] = {{1, false}, {2, false}, {3, true},
                               {4, false}, {5, false}, {6, false}};
    run_jobs(sink, jobs, 6);
    audit_sink_free(sink);
    int64_t last = 0;
    assert_int_equal(sink_lines(&last), 5); /* the rolled back one never shows */
    assert_int_equal(last, 5);

    /* reopen: resumes after its last line */
    sink = sink_start(p, s);
    run_jobs(sink, jobs, 2);
    audit_sink_free(sink);
    assert_int_equal(sink_lines(&last), 7);
    /* a crash lost the file's last line: the next commit catches up */
    FILE *f = fopen(p, "r+");
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    buf[n - 1] = '\0';
    char *cut = strrchr(buf, '\n');
    assert_int_equal(truncate(p, (off_t)(cut - buf + 1)), 0);
    sink = sink_start(p, s);
    run_jobs(sink, jobs, 1);
    audit_sink_free(sink);
    assert_int_equal(sink_lines(&last), 8);
    close_store(s);
    assert_int_equal(verify().problem, KB_AUDIT_OK);
}

/* ---- the writer's in-memory chain head ---- */

static int g_done;
static enum kb_err g_errs[64];

static void record_done(void *arg, enum kb_err err)
{
    (void)arg;
    g_errs[g_done++] = err;
}

static enum kb_err append_two(struct kb_store *s, void *arg)
{
    int *i = arg;
    for (int k = 0; k < 2; k++) {
        struct kb_audit_rec r = rec((*i)++);
        enum kb_err err = audit_append(s, &r, NULL);
        if (err != KB_OK)
            return err;
    }
    return KB_OK;
}

/* The writer keeps the chain head in memory between batches. Another
 * connection appending in between (start-up, a CLI) and a job rolled back
 * after its append must both be seen: every append lands, in one chain. */
static void test_writer_chain_head(void **state)
{
    (void)state;
    rm_db();
    audit_set_checkpoint_every(3);
    struct kb_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(writer_new(g_path, "normal", 8, &w, &err), KB_OK);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    struct kb_store *other = open_store();
    struct sink_job jobs[4] = {{1, false}, {2, true}, {3, false}, {4, false}};
    int next = 100;
    g_done = 0;
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 4; i++)
            writer_submit(p, job_append, record_done, &jobs[i]);
        while (g_done < 4 * (round + 1))
            event_base_loop(base, EVLOOP_ONCE);
        assert_int_equal(store_txn_run(other, append_two, &next), KB_OK);
    }
    writer_port_free(p);
    writer_free(w);
    event_base_free(base);
    for (int i = 0; i < g_done; i++)
        assert_int_equal(g_errs[i], i % 4 == 1 ? KB_E_INVALID : KB_OK);

    struct kb_audit_report r;
    assert_int_equal(audit_verify(other, g_key, NULL, &r, &err), KB_OK);
    assert_int_equal(r.problem, KB_AUDIT_OK);
    assert_int_equal(r.records, 4 * (3 + 2)); /* the rolled back appends are not there */
    close_store(other);
}

/* ---- the anchor ---- */

static const char *anchor_path(void)
{
    static char p[160];
    snprintf(p, sizeof p, "%s/anchor.jsonl", g_dir);
    return p;
}

/* Appends the store's records after..upto to the anchor file in the export
 * format (audit_row_json), then `tail` verbatim. */
static void anchor_add(int64_t after, int64_t upto, const char *tail)
{
    FILE *f = fopen(anchor_path(), "a");
    assert_non_null(f);
    struct kb_store *s = open_store();
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    assert_int_equal(store_audit_rows(s, after, 0, 0, &it), KB_OK);
    while (store_audit_row_next(it, &row) == KB_OK && row.seq <= upto) {
        json_t *j = audit_row_json(&row);
        assert_int_equal(json_dumpf(j, f, JSON_COMPACT), 0);
        fputc('\n', f);
        json_decref(j);
    }
    store_audit_iter_free(it);
    close_store(s);
    fputs(tail, f);
    assert_int_equal(fclose(f), 0);
}

static struct kb_audit_report verify_anchored(void)
{
    struct kb_audit_anchor a;
    char *err = NULL;
    assert_int_equal(audit_anchor_read(anchor_path(), &a, &err), KB_OK);
    struct kb_store *s = open_store();
    struct kb_audit_report r;
    assert_int_equal(audit_verify(s, g_key, &a, &r, &err), KB_OK);
    close_store(s);
    return r;
}

/* Replaces records from..N with a rewritten history, as an attacker with
 * write access (but no server key) would, keeping checkpoints due. */
static void rewrite_from(int from)
{
    char q[160];
    snprintf(q, sizeof q,
             "DELETE FROM audit WHERE seq >= %d; DELETE FROM audit_checkpoints WHERE seq >= %d",
             from, from);
    sql(q);
    struct kb_store *s = open_store();
    for (int i = from; i <= N; i++) {
        struct kb_audit_rec r = rec(i);
        r.label = "rewritten";
        assert_int_equal(audit_append(s, &r, NULL), KB_OK);
    }
    close_store(s);
}

static void test_anchor_read(void **state)
{
    (void)state;
    build();
    static const struct {
        const char *name;
        int64_t upto; /* the store's records 1..upto, then tail */
        const char *tail;
        enum kb_err err;
        int64_t last, top;
    } cases[] = {
        {"empty", 0, "", KB_E_INVALID, 0, 0},
        {"only blank and foreign lines", 0, "\n{\"seq\":3}\n[1,2]\nnot json\n", KB_E_INVALID, 0, 0},
        {"a whole export", N, "", KB_OK, N, N},
        {"a torn last line", 7, "{\"seq\":8,\"ref_seq\":null,\"ts\":\"20", KB_OK, 7, 7},
        {"a last line without its newline still parses", 7,
         "{\"seq\":8,\"hash\":\""
         "0000000000000000000000000000000000000000000000000000000000000000"
         "\"}",
         KB_OK, 8, 8},
        {"a bad hash is not a record", 7, "{\"seq\":8,\"hash\":\"00zz\"}\n", KB_OK, 7, 7},
        {"seq 0 is not a record", 7,
         "{\"seq\":0,\"hash\":\""
         "0000000000000000000000000000000000000000000000000000000000000000"
         "\"}\n",
         KB_OK, 7, 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink(anchor_path());
        anchor_add(0, cases[i].upto, cases[i].tail);
        struct kb_audit_anchor a = {0};
        char *err = NULL;
        enum kb_err got = audit_anchor_read(anchor_path(), &a, &err);
        if (got != cases[i].err || a.last_seq != cases[i].last || a.top_seq != cases[i].top)
            fail_msg("%s: expected %d last %lld top %lld, got %d last %lld top %lld (%s)",
                     cases[i].name, (int)cases[i].err, (long long)cases[i].last,
                     (long long)cases[i].top, (int)got, (long long)a.last_seq, (long long)a.top_seq,
                     err ? err : "");
        if (got != KB_OK)
            assert_non_null(strstr(err, "no audit record"));
        free(err);
    }
    /* missing: cannot check */
    unlink(anchor_path());
    struct kb_audit_anchor a;
    char *err = NULL;
    assert_int_equal(audit_anchor_read(anchor_path(), &a, &err), KB_E_IO);
    assert_non_null(strstr(err, "No such file"));
    free(err);
}

static void test_verify_anchor(void **state)
{
    (void)state;
    /* intact, whole or a prefix: passes */
    build();
    unlink(anchor_path());
    anchor_add(0, N, "");
    assert_int_equal(verify_anchored().problem, KB_AUDIT_OK);
    unlink(anchor_path());
    anchor_add(0, 6, "");
    assert_int_equal(verify_anchored().problem, KB_AUDIT_OK);

    /* the tail cut with its checkpoint: plain verify passes (the limit),
     * the anchor names the first missing record */
    build();
    unlink(anchor_path());
    anchor_add(0, N, "");
    sql("DELETE FROM audit WHERE seq >= 9; DELETE FROM audit_checkpoints WHERE seq >= 9");
    assert_int_equal(verify().problem, KB_AUDIT_OK);
    struct kb_audit_report r = verify_anchored();
    assert_int_equal(r.problem, KB_AUDIT_TRUNCATED);
    assert_int_equal(r.bad_seq, 9);
    assert_int_equal(r.records, 8);
    assert_non_null(strstr(r.why, "records 9..10"));

    /* the same cut, the tail rewritten behind the anchor's back */
    build();
    unlink(anchor_path());
    anchor_add(0, N, "");
    rewrite_from(9);
    assert_int_equal(verify().problem, KB_AUDIT_OK);
    r = verify_anchored();
    assert_int_equal(r.problem, KB_AUDIT_ALTERED);
    assert_int_equal(r.bad_seq, N);

    /* a sink that resumed on the cut log: its last line matches the new
     * history, its highest seq still betrays the cut */
    build();
    unlink(anchor_path());
    anchor_add(0, N, "");
    sql("DELETE FROM audit WHERE seq >= 8; DELETE FROM audit_checkpoints WHERE seq >= 8");
    struct kb_store *s = open_store();
    struct kb_audit_rec rr = rec(8);
    rr.label = "after the cut";
    assert_int_equal(audit_append(s, &rr, NULL), KB_OK);
    close_store(s);
    anchor_add(7, 8, "");
    r = verify_anchored();
    assert_int_equal(r.problem, KB_AUDIT_TRUNCATED);
    assert_int_equal(r.bad_seq, 9);
    /* ... and once the new history reaches it, its hash does */
    rewrite_from(9);
    r = verify_anchored();
    assert_int_equal(r.problem, KB_AUDIT_ALTERED);
    assert_int_equal(r.bad_seq, N);

    /* a problem of the chain itself comes first when it comes earlier */
    build();
    unlink(anchor_path());
    anchor_add(0, N, "");
    sql("UPDATE audit SET label = 'evil' WHERE seq = 3; DELETE FROM audit WHERE seq = 10");
    r = verify_anchored();
    assert_int_equal(r.problem, KB_AUDIT_ALTERED);
    assert_int_equal(r.bad_seq, 3);
}

/* ---- time parsing ---- */

static void test_parse_time(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool ok;
        int64_t ms;
    } cases[] = {
        {"0", true, 0},
        {"1700000000", true, 1700000000000LL},
        {"2023-11-14T22:13:20Z", true, 1700000000000LL},
        {"2023-11-14t22:13:20.5z", true, 1700000000500LL},
        {"2023-11-15T00:13:20+02:00", true, 1700000000000LL},
        {"2023-11-14T21:13:20.123456-01:00", true, 1700000000123LL},
        {"2024-02-29T00:00:00Z", true, 1709164800000LL},
        {"2023-02-29T00:00:00Z", false, 0},
        {"2023-11-14T22:13:20", false, 0},
        {"2023-11-14", false, 0},
        {"-5", false, 0},
        {"", false, 0},
        {"1e9", false, 0},
        {"2023-13-01T00:00:00Z", false, 0},
        {"2023-11-14T22:13:20Zjunk", false, 0},
        {"99999999999999", false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = -1;
        enum kb_err err = audit_parse_time(cases[i].in, &ms);
        if ((err == KB_OK) != cases[i].ok)
            fail_msg("%s: expected %s", cases[i].in, cases[i].ok ? "ok" : "refused");
        if (cases[i].ok && ms != cases[i].ms)
            fail_msg("%s: %lld != %lld", cases[i].in, (long long)ms, (long long)cases[i].ms);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_known_answer),
        cmocka_unit_test(test_append_complete_query),
        cmocka_unit_test(test_verify_intact),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_tamper_every_field),
        cmocka_unit_test(test_rewritten_stretch),
        cmocka_unit_test(test_tail_after_checkpoint),
        cmocka_unit_test(test_interval_change),
        cmocka_unit_test(test_sink),
        cmocka_unit_test(test_writer_chain_head),
        cmocka_unit_test(test_anchor_read),
        cmocka_unit_test(test_verify_anchor),
        cmocka_unit_test(test_parse_time),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
