/*
 * test_retention.c - unit tests for audit retention (src/audit/retention.c,
 * the retention half of audit_verify, store_audit_cut_find/prune): a prune
 * through the real writer archives records first..cut in the export's
 * format and deletes them, verify then proves the retained part from the
 * cut checkpoint; tampering after a prune (a retained record, the cut
 * checkpoint, a prefix deleted by hand at or between checkpoints) still
 * fails verify at the first bad record; a damaged stretch is never archived
 * or pruned; a crash between archive and delete loses nothing; the delete
 * job refuses a store that no longer matches its archive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "audit/audit.h"
#include "audit/retention.h"
#include "store/audit_store.h"
#include "store/store.h"
#include "store/writer.h"

#define N 10
#define EVERY 4 /* checkpoints at 1, 5, 9 */
#define T0 1700000000000LL

static const uint8_t g_key[KB_HASH_LEN] = {7, 7, 7, 1, 2, 3};
static char g_dir[64];
static char g_path[128];
static char g_arch[128];

static void rm_dir_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static void reset(void)
{
    rm_dir_files(g_arch);
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
    snprintf(g_dir, sizeof g_dir, "/tmp/kb-ret-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_path, sizeof g_path, "%s/kb.db", g_dir);
    snprintf(g_arch, sizeof g_arch, "%s/archive", g_dir);
    assert_int_equal(mkdir(g_arch, 0700), 0);
    audit_set_key(g_key);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    reset();
    rmdir(g_arch);
    rm_dir_files(g_dir);
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

static int64_t ts(int i)
{
    return T0 + i * 1000;
}

static struct kb_audit_rec rec(int i)
{
    struct kb_audit_rec r = {0};
    r.kind = KB_AUDIT_PROXY;
    r.ts_ms = ts(i);
    snprintf(r.request_id, sizeof r.request_id, "req_%d", i);
    r.action = "proxy.request";
    r.key_id = "vk_a";
    r.label = "user-1/run-1";
    r.vendor = "stripe";
    r.method = "POST";
    r.path = "/v1/payment_intents";
    r.decision = "allowed";
    r.reserved = 250000;
    r.settled = -1;
    r.bytes_in = 42;
    return r;
}

/* A fresh log of N records, checkpoints at 1, 5, 9. */
static void build(void)
{
    reset();
    audit_set_checkpoint_every(EVERY);
    struct kb_store *s = open_store();
    for (int i = 1; i <= N; i++) {
        struct kb_audit_rec r = rec(i);
        assert_int_equal(audit_append(s, &r, NULL), KB_OK);
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

static int64_t count(const char *q)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(g_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
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

/* ---- the delete job through the real writer ---- */

static bool g_done;
static enum kb_err g_err;

static void job_done(void *arg, enum kb_err err)
{
    (void)arg;
    g_done = true;
    g_err = err;
}

static enum kb_err run_job(struct kb_audit_cut *c)
{
    struct kb_writer *w = NULL;
    char *err = NULL;
    assert_int_equal(writer_new(g_path, "normal", 8, &w, &err), KB_OK);
    struct event_base *base = event_base_new();
    struct kb_writer_port *p = writer_port_new(w, base);
    g_done = false;
    writer_submit(p, audit_prune_job, job_done, c);
    while (!g_done)
        event_base_loop(base, EVLOOP_ONCE);
    writer_port_free(p);
    writer_free(w);
    event_base_free(base);
    return g_err;
}

/* One whole step as the retention thread runs it: plan with records older
 * than before_ms, archive, delete. */
static struct kb_audit_cut prune(int64_t before_ms)
{
    struct kb_audit_cut c;
    char *err = NULL;
    struct kb_store *s = open_store();
    assert_int_equal(audit_prune_plan(s, before_ms, KB_AUDIT_PRUNE_MAX, &c), KB_OK);
    if (audit_archive_write(s, &c, g_arch, NULL, &err) != KB_OK)
        fail_msg("archive: %s", err);
    close_store(s);
    assert_int_equal(run_job(&c), KB_OK);
    return c;
}

/* The export's lines (audit_row_json) of records from..to, as text. */
static char *export_lines(int64_t from, int64_t to)
{
    struct kb_store *s = open_store();
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(store_audit_rows(s, from - 1, 0, 0, &it), KB_OK);
    while (store_audit_row_next(it, &row) == KB_OK && row.seq <= to) {
        json_t *j = audit_row_json(&row);
        json_dumpf(j, f, JSON_COMPACT);
        fputc('\n', f);
        json_decref(j);
    }
    store_audit_iter_free(it);
    close_store(s);
    fclose(f);
    return buf;
}

/* The archive file's lines without its checkpoint lines; *ckpts counts those. */
static char *archive_records(const char *name, int *ckpts)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_arch, name);
    FILE *in = fopen(p, "r");
    if (!in)
        fail_msg("no archive %s", p);
    char *buf = NULL, *line = NULL;
    size_t len = 0, cap = 0;
    FILE *out = open_memstream(&buf, &len);
    *ckpts = 0;
    while (getline(&line, &cap, in) > 0) {
        if (strncmp(line, "{\"checkpoint\":", 14) == 0)
            (*ckpts)++;
        else
            fputs(line, out);
    }
    free(line);
    fclose(in);
    fclose(out);
    return buf;
}

static int archive_files(void)
{
    int n = 0;
    DIR *d = opendir(g_arch);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_prune_then_verify(void **state)
{
    (void)state;
    build();
    char *before = export_lines(1, 5);
    /* records 1..5 are older than record 6: the cut is checkpoint 5 */
    struct kb_audit_cut c = prune(ts(6));
    assert_int_equal(c.first, 1);
    assert_int_equal(c.cut, 5);
    assert_int_equal(c.removed, 5);
    assert_string_equal(c.archive, "audit-000000000001-000000000005.jsonl");
    int ckpts = 0;
    char *archived = archive_records(c.archive, &ckpts);
    assert_string_equal(archived, before); /* exactly the export's lines */
    assert_int_equal(ckpts, 2);            /* checkpoints 1 and 5 */
    free(archived);
    free(before);
    assert_int_equal(count("SELECT count(*) FROM audit WHERE seq <= 5"), 0);
    assert_int_equal(count("SELECT count(*) FROM audit_checkpoints WHERE seq = 5"), 1);
    assert_int_equal(count("SELECT count(*) FROM audit_checkpoints WHERE seq < 5"), 0);

    struct kb_audit_report r = verify();
    if (r.problem != KB_AUDIT_OK)
        fail_msg("verify after prune: %s", r.why);
    assert_int_equal(r.cut_seq, 5);
    assert_int_equal(r.records, N - 5 + 1); /* 6..10 and the audit.pruned record */
    assert_int_equal(r.last_seq, N + 1);
    assert_int_equal(r.checkpoints, 2); /* the cut, 9 */

    /* GET /v1/audit sees the retained records; a completion may follow a
     * begin record that was pruned meanwhile */
    struct kb_store *s = open_store();
    struct kb_audit_rec done = rec(2);
    done.status = 200;
    done.settled = 1000;
    assert_int_equal(audit_complete(s, 2, &done), KB_OK);
    assert_int_equal(audit_complete(s, 99, &done), KB_E_NOT_FOUND);
    assert_int_equal(audit_complete(s, 0, &done), KB_E_NOT_FOUND);
    close_store(s);
    assert_int_equal(count("SELECT min(seq) FROM audit WHERE ref_seq IS NULL"), 6);

    /* a second step chains on from the first cut */
    c = prune(ts(10));
    assert_int_equal(c.first, 6);
    assert_int_equal(c.cut, 9);
    assert_int_equal(archive_files(), 2);
    r = verify();
    if (r.problem != KB_AUDIT_OK)
        fail_msg("verify after the second prune: %s", r.why);
    assert_int_equal(r.cut_seq, 9);
    /* nothing older than the cutoff beyond the cut: nothing to do */
    s = open_store();
    assert_int_equal(audit_prune_plan(s, ts(10), KB_AUDIT_PRUNE_MAX, &c), KB_E_NOT_FOUND);
    close_store(s);
}

/* max_records bounds one step, at a checkpoint */
static void test_plan_bounds(void **state)
{
    (void)state;
    build();
    struct kb_store *s = open_store();
    struct kb_audit_cut c;
    assert_int_equal(audit_prune_plan(s, ts(N + 1), 6, &c), KB_OK);
    assert_int_equal(c.cut, 5); /* 9 is more than 6 records in */
    assert_int_equal(audit_prune_plan(s, ts(N + 1), 2, &c), KB_OK);
    assert_int_equal(c.cut, 1);
    assert_int_equal(audit_prune_plan(s, ts(1), 100, &c), KB_E_NOT_FOUND); /* none that old */
    /* the last record (a checkpoint) is never cut: the chain head stays */
    sql("DELETE FROM audit WHERE seq = 10");
    assert_int_equal(audit_prune_plan(s, ts(N + 1), 100, &c), KB_OK);
    assert_int_equal(c.cut, 5);
    close_store(s);
}

/* ---- tampering after a prune, table-driven ---- */

struct tamper {
    const char *name;
    bool pruned; /* after a prune at checkpoint 5 */
    const char *sql;
    enum kb_audit_problem problem;
    int64_t bad_seq;
};

static const struct tamper tampers[] = {
    {"retained record altered", true, "UPDATE audit SET label = 'evil' WHERE seq = 7",
     KB_AUDIT_ALTERED, 7},
    {"cut checkpoint forged", true,
     "UPDATE audit_checkpoints SET mac = randomblob(32) WHERE seq = 5", KB_AUDIT_CHECKPOINT, 5},
    {"cut checkpoint's hash replaced", true,
     "UPDATE audit_checkpoints SET hash = randomblob(32) WHERE seq = 5", KB_AUDIT_CHECKPOINT, 5},
    {"first retained record deleted", true, "DELETE FROM audit WHERE seq = 6", KB_AUDIT_REMOVED, 6},
    {"retained records deleted up to a checkpoint", true,
     "DELETE FROM audit WHERE seq <= 9; DELETE FROM audit_checkpoints WHERE seq < 9",
     KB_AUDIT_REMOVED, 6},
    {"retained records deleted between checkpoints", true, "DELETE FROM audit WHERE seq <= 7",
     KB_AUDIT_REMOVED, 6},
    {"the prune's record altered", true,
     "UPDATE audit SET detail = '{\"cut\":9}' WHERE action = 'audit.pruned'", KB_AUDIT_ALTERED, 11},
    {"the prune's record deleted", true, "DELETE FROM audit WHERE action = 'audit.pruned'",
     KB_AUDIT_REMOVED, 1},
    {"prefix deleted at a checkpoint, never pruned", false,
     "DELETE FROM audit WHERE seq <= 5; DELETE FROM audit_checkpoints WHERE seq < 5",
     KB_AUDIT_REMOVED, 1},
    {"prefix deleted between checkpoints, never pruned", false,
     "DELETE FROM audit WHERE seq <= 3; DELETE FROM audit_checkpoints WHERE seq < 3",
     KB_AUDIT_REMOVED, 1},
};

static void test_tamper_after_prune(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof tampers / sizeof tampers[0]; i++) {
        build();
        if (tampers[i].pruned)
            (void)prune(ts(6));
        sql(tampers[i].sql);
        struct kb_audit_report r = verify();
        if (r.problem != tampers[i].problem || r.bad_seq != tampers[i].bad_seq)
            fail_msg("%s: expected problem %d at %lld, got %d at %lld (%s)", tampers[i].name,
                     (int)tampers[i].problem, (long long)tampers[i].bad_seq, (int)r.problem,
                     (long long)r.bad_seq, r.why);
    }
}

/* A prune record appended past the last checkpoint by someone without the
 * server key (SHA-256 is public, the chain takes it) does not vouch for a
 * prefix deleted by hand: its mac does not check. */
static void test_forged_prune_record(void **state)
{
    (void)state;
    build();
    struct kb_store *s = open_store();
    struct kb_audit_rec r = {.kind = KB_AUDIT_ADMIN,
                             .ts_ms = ts(N + 1),
                             .request_id = "retention",
                             .action = "audit.pruned",
                             .decision = "ok",
                             .detail = "{\"first\":1,\"cut\":5,\"records\":5,\"archive\":"
                                       "\"audit-000000000001-000000000005.jsonl\",\"mac\":"
                                       "\"00000000000000000000000000000000000000000000000000000000"
                                       "00000000\"}"};
    assert_int_equal(audit_append(s, &r, NULL), KB_OK);
    close_store(s);
    assert_int_equal(verify().problem, KB_AUDIT_OK);
    sql("DELETE FROM audit WHERE seq <= 5; DELETE FROM audit_checkpoints WHERE seq < 5");
    struct kb_audit_report rep = verify();
    assert_int_equal(rep.problem, KB_AUDIT_REMOVED);
    assert_int_equal(rep.bad_seq, 1);
}

/* ---- what a step refuses ---- */

static void test_damaged_stretch_is_kept(void **state)
{
    (void)state;
    static const char *const damage[] = {
        "UPDATE audit SET label = 'evil' WHERE seq = 3",
        "UPDATE audit_checkpoints SET mac = randomblob(32) WHERE seq = 5",
        "DELETE FROM audit WHERE seq = 4",
        "DELETE FROM audit_checkpoints WHERE seq = 5",
    };
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        build();
        sql(damage[i]);
        int64_t rows = count("SELECT count(*) FROM audit");
        struct kb_store *s = open_store();
        struct kb_audit_cut c = {.first = 1, .cut = 5};
        char *err = NULL;
        enum kb_err e = audit_archive_write(s, &c, g_arch, NULL, &err);
        close_store(s);
        if (e != KB_E_INVALID)
            fail_msg("%s: archived (%d)", damage[i], (int)e);
        free(err);
        assert_int_equal(archive_files(), 0); /* not even a temporary file */
        assert_int_equal(c.archive[0], '\0');
        assert_int_equal(run_job(&c), KB_E_INVALID); /* no archive: no delete */
        assert_int_equal(count("SELECT count(*) FROM audit"), rows);
    }
}

/* A crash after the archive, before the delete: the records are still in
 * the store; the next step archives them again into a file that replaces
 * the first, then deletes. */
static void test_crash_between_archive_and_delete(void **state)
{
    (void)state;
    build();
    struct kb_store *s = open_store();
    struct kb_audit_cut c;
    char *err = NULL;
    assert_int_equal(audit_prune_plan(s, ts(6), KB_AUDIT_PRUNE_MAX, &c), KB_OK);
    assert_int_equal(audit_archive_write(s, &c, g_arch, NULL, &err), KB_OK);
    /* ... crash: no delete. The same step again writes the same file. */
    assert_int_equal(audit_archive_write(s, &c, g_arch, NULL, &err), KB_OK);
    assert_int_equal(archive_files(), 1);
    assert_int_equal(count("SELECT count(*) FROM audit"), N);
    assert_int_equal(verify().problem, KB_AUDIT_OK);
    /* later, with more records old enough: one file from record 1 */
    assert_int_equal(audit_prune_plan(s, ts(N), KB_AUDIT_PRUNE_MAX, &c), KB_OK);
    assert_int_equal(c.cut, 9);
    assert_int_equal(audit_archive_write(s, &c, g_arch, NULL, &err), KB_OK);
    close_store(s);
    assert_int_equal(archive_files(), 1);
    assert_string_equal(c.archive, "audit-000000000001-000000000009.jsonl");
    assert_int_equal(run_job(&c), KB_OK);
    assert_int_equal(c.removed, 9);
    struct kb_audit_report r = verify();
    assert_int_equal(r.problem, KB_AUDIT_OK);
    assert_int_equal(r.cut_seq, 9);
}

/* The delete removes exactly what the archive holds, or nothing. */
static void test_job_refuses_mismatch(void **state)
{
    (void)state;
    build();
    struct kb_store *s = open_store();
    struct kb_audit_cut c;
    char *err = NULL;
    assert_int_equal(audit_prune_plan(s, ts(6), KB_AUDIT_PRUNE_MAX, &c), KB_OK);
    assert_int_equal(audit_archive_write(s, &c, g_arch, NULL, &err), KB_OK);
    close_store(s);
    struct kb_audit_cut wrong = c;
    wrong.first = 2; /* the store holds record 1 too */
    assert_int_equal(run_job(&wrong), KB_E_INVALID);
    assert_int_equal(count("SELECT count(*) FROM audit"), N); /* rolled back */
    wrong = c;
    wrong.cut = N; /* the chain head would go */
    wrong.first = 1;
    assert_int_equal(run_job(&wrong), KB_E_INVALID);
    assert_int_equal(count("SELECT count(*) FROM audit"), N);
    assert_int_equal(verify().problem, KB_AUDIT_OK);
    assert_int_equal(run_job(&c), KB_OK);
    assert_int_equal(verify().problem, KB_AUDIT_OK);
}

/* An anchor whose records were all pruned is not a truncation. */
static void test_anchor_in_pruned_part(void **state)
{
    (void)state;
    build();
    struct kb_audit_cut c = prune(ts(6));
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_arch, c.archive);
    struct kb_audit_anchor a;
    char *err = NULL;
    assert_int_equal(audit_anchor_read(p, &a, &err), KB_OK); /* checkpoint lines skipped */
    assert_int_equal(a.top_seq, 5);
    struct kb_store *s = open_store();
    struct kb_audit_report r;
    assert_int_equal(audit_verify(s, g_key, &a, &r, &err), KB_OK);
    close_store(s);
    assert_int_equal(r.problem, KB_AUDIT_OK);
    assert_int_equal(r.cut_seq, 5);
}

/* ---- the thread ---- */

/* The retention thread prunes at start (the records are from 2023), through
 * its own connection and writer port; stop joins it. */
static void test_thread(void **state)
{
    (void)state;
    build();
    struct kb_writer *w = NULL;
    struct kb_audit_retention *ret = NULL;
    char *err = NULL;
    assert_int_equal(writer_new(g_path, "normal", 8, &w, &err), KB_OK);
    assert_int_equal(audit_retention_start(g_path, "normal", w, 1000, g_arch, &ret, &err), KB_OK);
    /* bounded polling, 10 s at most */
    for (int i = 0; i < 1000 && count("SELECT count(*) FROM audit WHERE seq <= 9") > 0; i++)
        usleep(10000);
    audit_retention_stop(ret);
    writer_free(w);
    assert_int_equal(count("SELECT count(*) FROM audit WHERE seq <= 9"), 0);
    assert_int_equal(archive_files(), 1);
    struct kb_audit_report r = verify();
    assert_int_equal(r.problem, KB_AUDIT_OK);
    assert_int_equal(r.cut_seq, 9);

    /* an archive_dir that cannot be created refuses the start */
    assert_int_equal(writer_new(g_path, "normal", 8, &w, &err), KB_OK);
    ret = NULL;
    assert_int_equal(audit_retention_start(g_path, "normal", w, 1000, "/proc/no/such/dir", &ret,
                                           &err),
                     KB_E_IO);
    assert_null(ret);
    assert_non_null(strstr(err, "/proc/no/such/dir"));
    free(err);
    audit_retention_stop(NULL);
    writer_free(w);
}

/* ---- verify --archive ---- */

static struct kb_audit_report verify_archive(int64_t join, struct kb_audit_archive *a)
{
    struct kb_audit_report r;
    char *err = NULL;
    if (audit_archive_verify(g_arch, g_key, join, &r, a, &err) != KB_OK)
        fail_msg("archive: %s", err);
    return r;
}

/* Rewrites archive file `name` through sed-like line edits: line `lineno`
 * (1-based) replaced by `with` (NULL: deleted). */
static void edit_line(const char *name, int lineno, const char *with)
{
    char p[512], *line = NULL, *buf = NULL;
    size_t cap = 0, len = 0;
    snprintf(p, sizeof p, "%s/%s", g_arch, name);
    FILE *in = fopen(p, "r"), *out = open_memstream(&buf, &len);
    assert_non_null(in);
    for (int i = 1; getline(&line, &cap, in) > 0; i++) {
        if (i != lineno)
            fputs(line, out);
        else if (with)
            fputs(with, out);
    }
    fclose(in);
    fclose(out);
    in = fopen(p, "w");
    fwrite(buf, 1, len, in);
    fclose(in);
    free(line);
    free(buf);
}

static void test_archive_verify(void **state)
{
    (void)state;
    build();
    (void)prune(ts(6));
    (void)prune(ts(10));
    struct kb_audit_report s = verify();
    assert_int_equal(s.problem, KB_AUDIT_OK);
    assert_int_equal(s.cut_seq, 9);
    struct kb_audit_archive a;
    struct kb_audit_report r = verify_archive(s.cut_seq, &a);
    if (r.problem != KB_AUDIT_OK)
        fail_msg("archive: %s", r.why);
    assert_int_equal(a.files, 2);
    assert_int_equal(a.last_seq, 9);
    assert_int_equal(r.checkpoints, 3); /* 1, 5, 9 */
    assert_true(a.joined);
    assert_memory_equal(a.join_hash, s.cut_hash, KB_HASH_LEN);

    /* a file superseded by a longer one from the same record is skipped */
    const char *f1 = "audit-000000000001-000000000005.jsonl";
    const char *f2 = "audit-000000000006-000000000009.jsonl";
    char p[512], q[512];
    snprintf(p, sizeof p, "%s/%s", g_arch, f1);
    snprintf(q, sizeof q, "%s/audit-000000000001-000000000002.jsonl", g_arch);
    FILE *from = fopen(p, "r"), *to = fopen(q, "w");
    char line[4096];
    assert_non_null(fgets(line, sizeof line, from));
    fputs(line, to); /* record 1 and its checkpoint, then garbage: never read */
    assert_non_null(fgets(line, sizeof line, from));
    fputs(line, to);
    fputs("not json\n", to);
    fclose(from);
    fclose(to);
    r = verify_archive(s.cut_seq, &a);
    if (r.problem != KB_AUDIT_OK)
        fail_msg("with a superseded file: %s", r.why);
    assert_int_equal(a.files, 2);
    unlink(q);

    /* a record deleted from the archive: line 3 is record 2 */
    edit_line(f1, 3, NULL);
    r = verify_archive(s.cut_seq, &a);
    assert_int_equal(r.problem, KB_AUDIT_REMOVED);
    assert_int_equal(r.bad_seq, 2);

    /* rebuild, then each damage on its own */
    build();
    (void)prune(ts(6));
    (void)prune(ts(10));
    char *rec3 = NULL;
    {
        snprintf(p, sizeof p, "%s/%s", g_arch, f1);
        FILE *f = fopen(p, "r");
        size_t cap = 0;
        for (int i = 0; i < 4; i++)
            assert_true(getline(&rec3, &cap, f) > 0);
        fclose(f);
    }
    char *at = strstr(rec3, "user-1/run-1");
    assert_non_null(at);
    memcpy(at, "user-9", 6);
    edit_line(f1, 4, rec3); /* record 3 */
    free(rec3);
    r = verify_archive(9, &a);
    assert_int_equal(r.problem, KB_AUDIT_ALTERED);
    assert_int_equal(r.bad_seq, 3);
    assert_non_null(strstr(r.why, f1));

    build();
    (void)prune(ts(6));
    (void)prune(ts(10));
    edit_line(f1, 2, NULL); /* checkpoint 1 */
    r = verify_archive(9, &a);
    assert_int_equal(r.problem, KB_AUDIT_CHECKPOINT);
    assert_int_equal(r.bad_seq, 1);

    /* the first file gone: the archive no longer starts at record 1 */
    build();
    (void)prune(ts(6));
    (void)prune(ts(10));
    snprintf(p, sizeof p, "%s/%s", g_arch, f1);
    unlink(p);
    r = verify_archive(9, &a);
    assert_int_equal(r.problem, KB_AUDIT_REMOVED);
    assert_int_equal(r.bad_seq, 1);

    /* the last file gone: the archive ends before the store's cut (the CLI
     * reports records 6..9 removed) */
    build();
    (void)prune(ts(6));
    (void)prune(ts(10));
    snprintf(p, sizeof p, "%s/%s", g_arch, f2);
    unlink(p);
    r = verify_archive(9, &a);
    assert_int_equal(r.problem, KB_AUDIT_OK);
    assert_int_equal(a.last_seq, 5);
    assert_false(a.joined);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prune_then_verify),
        cmocka_unit_test(test_plan_bounds),
        cmocka_unit_test(test_tamper_after_prune),
        cmocka_unit_test(test_forged_prune_record),
        cmocka_unit_test(test_damaged_stretch_is_kept),
        cmocka_unit_test(test_crash_between_archive_and_delete),
        cmocka_unit_test(test_job_refuses_mismatch),
        cmocka_unit_test(test_anchor_in_pruned_part),
        cmocka_unit_test(test_archive_verify),
        cmocka_unit_test(test_thread),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
