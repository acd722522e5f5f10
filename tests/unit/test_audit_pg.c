/*
 * test_audit_pg.c - the audit log on PostgreSQL (src/store/pg_audit.c): one
 * hash chain per node, verified by the real verify of src/audit/.
 *
 * Two connections opened under node ids "a" and "b" (store_set_node before
 * each store_open) append their own chains into one fresh database; verify
 * walks both and names the chain and seq of the first bad record after a
 * raw libpq UPDATE or DELETE, catches a forged checkpoint mac and a chain
 * deleted whole (against its anchor), verifies a chain pruned by the real
 * retention step from its cut checkpoint (and its archive joining it there)
 * while the other keeps all of its records; GET /v1/audit's query
 * merges both chains newest first by gid with its filters and cursor; the
 * iterators return exactly what was inserted (all fields, NULLs).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit/audit.h"
#include "audit/retention.h"
#include "cli/audit.h"
#include "pg_fixture.h"
#include "store/audit_store.h"
#include "store/store.h"

#define EVERY 4 /* checkpoints at 1, 5, 9, ... of each chain */

static const uint8_t g_key[KB_HASH_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static char g_url[256];

static int setup(void **state)
{
    (void)state;
    audit_set_key(g_key);
    audit_set_checkpoint_every(EVERY);
    return test_pg_fresh(g_url, sizeof g_url);
}

/* A connection whose own chain is node's. */
static struct kb_store *open_node(const char *node)
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

static void close_store(struct kb_store *s)
{
    store_audit_forget(s);
    store_close(s);
}

static void sql(const char *q)
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
static struct kb_audit_rec rec(const char *node, int i)
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
static int64_t append(struct kb_store *s, const char *node, int i)
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
static void build(int na, int nb)
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

static struct verdict verify_all(void)
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

static void expect_ok(const struct verdict *v, int64_t ra, int64_t rb)
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

static void test_two_chains_verify(void **state)
{
    (void)state;
    build(10, 7);
    struct kb_store *s = open_node("a");
    char **names = NULL;
    size_t n = 0;
    assert_int_equal(store_audit_chains(s, &names, &n), KB_OK);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "a");
    assert_string_equal(names[1], "b");
    store_names_free(names, n);
    /* in byte order, whatever the database's collation (ICU's root
     * collation would put "a" first); a chain with only a checkpoint left
     * is listed too */
    sql("ALTER TABLE audit ALTER COLUMN node_id TYPE text COLLATE \"und-x-icu\"; "
        "ALTER TABLE audit_checkpoints ALTER COLUMN node_id TYPE text COLLATE \"und-x-icu\"");
    sql("INSERT INTO audit_checkpoints VALUES ('B', 1, 0, 4, 0, '\\x00', '\\x00')");
    struct kb_store *t = open_node("a"); /* s's prepared statements saw the old type */
    assert_int_equal(store_audit_chains(t, &names, &n), KB_OK);
    close_store(t);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "B");
    assert_string_equal(names[1], "a");
    store_names_free(names, n);
    sql("DELETE FROM audit_checkpoints WHERE node_id = 'B'");
    /* a chain with no record is not there to read */
    assert_int_equal(store_audit_chain_use(s, "c"), KB_E_NOT_FOUND);
    assert_int_equal(store_audit_chain_use(s, "b"), KB_OK);
    int64_t last = 0;
    uint8_t h[KB_HASH_LEN];
    /* appends, and so the head, stay the own node's whatever is selected */
    assert_int_equal(store_audit_last(s, &last, h), KB_OK);
    assert_int_equal(last, 10);
    assert_int_equal(store_audit_exists(s, 7), KB_OK);
    assert_int_equal(store_audit_exists(s, 8), KB_E_NOT_FOUND);
    close_store(s);

    struct verdict v = verify_all();
    expect_ok(&v, 10, 7);
    assert_int_equal(v.r[0].checkpoints, 3); /* 1, 5, 9 */
    assert_int_equal(v.r[1].checkpoints, 2); /* 1, 5 */
}

static void test_tamper_names_chain(void **state)
{
    (void)state;
    build(8, 8);
    sql("UPDATE audit SET path = '/v1/refunds' WHERE node_id = 'b' AND seq = 6");
    struct verdict v = verify_all();
    assert_int_equal(v.n, 2);
    assert_int_equal(v.r[0].problem, KB_AUDIT_OK); /* a is untouched */
    assert_string_equal(v.node[1], "b");
    assert_int_equal(v.r[1].problem, KB_AUDIT_ALTERED);
    assert_int_equal(v.r[1].bad_seq, 6);
    assert_int_equal(v.r[1].records, 5);

    /* only chain b, through `only` */
    struct kb_store *s = open_node("a");
    struct kb_audit_chain_report *r = NULL;
    size_t n = 0;
    char *err = NULL;
    assert_int_equal(audit_verify_chains(s, g_key, "b", NULL, &r, &n, &err), KB_OK);
    assert_int_equal(n, 1);
    assert_string_equal(r[0].node, "b");
    assert_int_equal(r[0].report.bad_seq, 6);
    audit_chain_reports_free(r, n);
    assert_int_equal(audit_verify_chains(s, g_key, "zz", NULL, &r, &n, &err), KB_E_NOT_FOUND);
    assert_non_null(err);
    free(err);
    err = NULL;
    /* an anchor copies one node's chain: which one, on a store of several? */
    struct kb_audit_anchor an = {.last_seq = 1, .top_seq = 1};
    assert_int_equal(audit_verify_chains(s, g_key, NULL, &an, &r, &n, &err), KB_E_INVALID);
    free(err);
    close_store(s);
}

static void test_delete_gap(void **state)
{
    (void)state;
    build(8, 8);
    sql("DELETE FROM audit WHERE node_id = 'a' AND seq = 3");
    struct verdict v = verify_all();
    assert_int_equal(v.r[0].problem, KB_AUDIT_REMOVED);
    assert_int_equal(v.r[0].bad_seq, 3);
    assert_int_equal(v.r[1].problem, KB_AUDIT_OK);
    /* a record moved to the other chain does not chain there either */
    sql("UPDATE audit SET node_id = 'b', seq = 9 WHERE node_id = 'a' AND seq = 8");
    v = verify_all();
    assert_int_equal(v.r[1].problem, KB_AUDIT_ALTERED);
    assert_int_equal(v.r[1].bad_seq, 9);
}

/* A node's whole chain deleted, checkpoints and all, leaves nothing to
 * verify; the node's anchor (its sink file) still catches it. */
static void test_chain_gone_anchor(void **state)
{
    (void)state;
    build(5, 4);
    struct kb_store *s = open_node("a");
    struct kb_audit_anchor an = {0};
    assert_int_equal(store_audit_chain_use(s, "b"), KB_OK);
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    assert_int_equal(store_audit_rows(s, 2, 0, 0, &it), KB_OK);
    assert_int_equal(store_audit_row_next(it, &row), KB_OK);
    an.last_seq = an.top_seq = row.seq;
    memcpy(an.last_hash, row.hash, KB_HASH_LEN);
    memcpy(an.top_hash, row.hash, KB_HASH_LEN);
    store_audit_iter_free(it);
    struct kb_audit_chain_report *v = NULL;
    size_t n = 0;
    char *err = NULL;
    assert_int_equal(audit_verify_chains(s, g_key, "b", &an, &v, &n, &err), KB_OK);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].report.problem, KB_AUDIT_OK);
    audit_chain_reports_free(v, n);
    /* the selection went back to the own chain */
    assert_int_equal(store_audit_exists(s, 5), KB_OK); /* b has 4 */

    sql("DELETE FROM audit WHERE node_id = 'b'; DELETE FROM audit_checkpoints WHERE node_id = 'b'");
    assert_int_equal(audit_verify_chains(s, g_key, "b", &an, &v, &n, &err), KB_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].node, "b");
    assert_int_equal(v[0].report.problem, KB_AUDIT_TRUNCATED);
    assert_int_equal(v[0].report.bad_seq, 1);
    audit_chain_reports_free(v, n);
    assert_int_equal(audit_verify_chains(s, g_key, "b", NULL, &v, &n, &err), KB_E_NOT_FOUND);
    free(err);
    close_store(s);
}

static void test_forged_checkpoint(void **state)
{
    (void)state;
    build(9, 9);
    /* each chain's checkpoints are its own: 1, 5, 9 */
    sql("UPDATE audit_checkpoints SET mac = decode(repeat('00', 32), 'hex') "
        "WHERE node_id = 'b' AND seq = 5");
    struct verdict v = verify_all();
    assert_int_equal(v.r[0].problem, KB_AUDIT_OK);
    assert_int_equal(v.r[0].checkpoints, 3);
    assert_int_equal(v.r[1].problem, KB_AUDIT_CHECKPOINT);
    assert_int_equal(v.r[1].bad_seq, 5);
    /* a's checkpoint copied onto b's: signed, but for another chain's hash */
    sql("UPDATE audit_checkpoints c SET mac = o.mac, hash = o.hash, ts_ms = o.ts_ms "
        "FROM audit_checkpoints o WHERE o.node_id = 'a' AND o.seq = 5 "
        "AND c.node_id = 'b' AND c.seq = 5");
    v = verify_all();
    assert_int_equal(v.r[1].problem, KB_AUDIT_ALTERED); /* records 2..5 do not lead there */
    assert_int_equal(v.r[1].bad_seq, 2);
}

static void test_prune_one_chain(void **state)
{
    (void)state;
    build(12, 12);
    struct kb_store *b = open_node("b");
    int64_t cut = 0, removed = 0;
    /* checkpoints of b at 1, 5, 9: the newest older than record 7's time, at
     * or before 10 */
    assert_int_equal(store_audit_cut_find(b, 1700000000000LL + 7000, 10, &cut), KB_OK);
    assert_int_equal(cut, 5);
    assert_int_equal(store_begin(b), KB_OK);
    assert_int_equal(store_audit_prune(b, cut, &removed), KB_OK);
    assert_int_equal(store_commit(b), KB_OK);
    assert_int_equal(removed, 5);
    /* the completion of a pruned record may still be written */
    assert_int_equal(store_audit_exists(b, 2), KB_OK);
    assert_int_equal(store_audit_exists(b, 13), KB_E_NOT_FOUND);
    close_store(b);

    struct verdict v = verify_all();
    assert_int_equal(v.r[0].problem, KB_AUDIT_OK);
    assert_int_equal(v.r[0].records, 12);
    /* b starts at its cut checkpoint; without the signed audit.pruned
     * record (retention.c writes it) the cut reads as removed by hand */
    assert_int_equal(v.r[1].cut_seq, 5);
    assert_int_equal(v.r[1].problem, KB_AUDIT_REMOVED);
    assert_int_equal(v.r[1].bad_seq, 1);
    /* a's chain kept all of its own */
    struct kb_store *a = open_node("a");
    assert_int_equal(store_audit_cut_find(a, 1700000000000LL + 7000, 10, &cut), KB_OK);
    assert_int_equal(cut, 5);
    assert_int_equal(store_audit_exists(a, 1), KB_OK);

    /* a through the real retention step: plan, archive, delete with the
     * signed audit.pruned record; a then verifies from its cut, and the
     * archive joins it there */
    char dir[] = "/tmp/kb-auditpg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct kb_audit_cut c = {0};
    atomic_bool stop = false;
    char *err = NULL;
    assert_int_equal(audit_prune_plan(a, 1700000000000LL + 10000, KB_AUDIT_PRUNE_MAX, &c), KB_OK);
    assert_int_equal(c.first, 1);
    assert_int_equal(c.cut, 9);
    if (audit_archive_write(a, &c, dir, &stop, &err) != KB_OK)
        fail_msg("archive: %s", err ? err : "?");
    assert_int_equal(store_begin(a), KB_OK);
    store_audit_head_sync(a);
    assert_int_equal(audit_prune_job(a, &c), KB_OK);
    assert_int_equal(store_commit(a), KB_OK);
    assert_int_equal(c.removed, 9);
    close_store(a);
    v = verify_all();
    assert_int_equal(v.r[0].problem, KB_AUDIT_OK);
    assert_int_equal(v.r[0].cut_seq, 9);
    assert_int_equal(v.r[0].records, 4);                /* 10, 11, 12 and the audit.pruned record */
    assert_int_equal(v.r[1].problem, KB_AUDIT_REMOVED); /* b's cut is still unsigned */
    struct kb_audit_report ar;
    struct kb_audit_archive arch;
    assert_int_equal(audit_archive_verify(dir, g_key, 9, &ar, &arch, &err), KB_OK);
    assert_int_equal(ar.problem, KB_AUDIT_OK);
    assert_int_equal(arch.last_seq, 9);
    assert_true(arch.joined);
    assert_memory_equal(arch.join_hash, v.r[0].cut_hash, KB_HASH_LEN);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, c.archive);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* ---- GET /v1/audit ---- */

struct collect {
    int n;
    int64_t seqs[32];
    char rid[32][40];
    bool completed[32];
    int status[32];
};

static void collect_cb(const struct kb_audit_entry *e, void *arg)
{
    struct collect *c = arg;
    if (c->n >= 32)
        return;
    c->seqs[c->n] = e->seq;
    snprintf(c->rid[c->n], sizeof c->rid[c->n], "%s", e->rec.request_id);
    c->completed[c->n] = e->completed;
    c->status[c->n] = e->rec.status;
    c->n++;
}

static struct collect query(struct kb_store *s, struct kb_audit_filter f)
{
    struct collect c = {0};
    if (!f.limit)
        f.limit = 32;
    assert_int_equal(store_audit_query(s, &f, collect_cb, &c), KB_OK);
    return c;
}

static void test_query_merges(void **state)
{
    (void)state;
    build(6, 6); /* gids: a1=1 b1=2 a2=3 b2=4 ... b6=12 */
    struct kb_store *b = open_node("b");
    /* b completes its record 2 (gid 4) as b7 (gid 13) */
    struct kb_audit_rec r = rec("b", 2);
    r.status = 201;
    r.settled = 1000;
    assert_int_equal(store_begin(b), KB_OK);
    store_audit_head_sync(b);
    assert_int_equal(audit_complete(b, 2, &r), KB_OK);
    assert_int_equal(store_commit(b), KB_OK);
    assert_int_equal(audit_complete(b, 99, &r), KB_E_NOT_FOUND);

    struct collect c = query(b, (struct kb_audit_filter){0});
    assert_int_equal(c.n, 12); /* the completion merged into its request */
    assert_int_equal(c.seqs[0], 12);
    assert_string_equal(c.rid[0], "req_b_6");
    assert_string_equal(c.rid[1], "req_a_6");
    assert_string_equal(c.rid[8], "req_b_2");
    assert_true(c.completed[8]);
    assert_int_equal(c.status[8], 201);
    assert_string_equal(c.rid[9], "req_a_2"); /* a's record 2 was never completed */
    assert_false(c.completed[9]);
    /* a completion joins its own chain's record only: a's seq 2 is not b's */
    assert_int_equal(c.status[9], 0);

    c = query(b, (struct kb_audit_filter){.vendor = "openai"});
    assert_int_equal(c.n, 6);
    c = query(b, (struct kb_audit_filter){.decision = "refused", .vendor = "stripe"});
    assert_int_equal(c.n, 3); /* a1 a3 a5 */
    c = query(b, (struct kb_audit_filter){.key_id = "vk_a"});
    assert_int_equal(c.n, 4); /* a3 b3 a6 b6 */
    c = query(b, (struct kb_audit_filter){.label_prefix = "user-2/"});
    assert_int_equal(c.n, 6);
    c = query(b, (struct kb_audit_filter){.label_prefix = "user-_"}); /* literally */
    assert_int_equal(c.n, 0);
    c = query(b, (struct kb_audit_filter){.label_prefix = "user-%"});
    assert_int_equal(c.n, 0);
    c = query(b, (struct kb_audit_filter){.since_ms = 1700000000000LL + 3000,
                                          .until_ms = 1700000000000LL + 5000});
    assert_int_equal(c.n, 4); /* b4 a4 b3 a3 */
    assert_string_equal(c.rid[0], "req_b_4");
    /* cursor paging by gid */
    c = query(b, (struct kb_audit_filter){.limit = 5});
    assert_int_equal(c.n, 5);
    assert_int_equal(c.seqs[4], 8);
    c = query(b, (struct kb_audit_filter){.limit = 5, .before_seq = 8});
    assert_int_equal(c.n, 5);
    assert_int_equal(c.seqs[0], 7);
    assert_int_equal(c.seqs[4], 3);
    c = query(b, (struct kb_audit_filter){.limit = 5, .before_seq = 3});
    assert_int_equal(c.n, 2);
    close_store(b);
}

/* ---- the iterators ---- */

static void test_iterators_exact(void **state)
{
    (void)state;
    struct kb_store *s = open_node("a");
    struct kb_audit_rec full = {
        .kind = KB_AUDIT_ADMIN,
        .ts_ms = 1700000000123,
        .action = "key.issued",
        .key_id = "vk_1",
        .label = "l\xc3\xa9/\"quoted\" 'x'",
        .vendor = "stripe",
        .method = "POST",
        .path = "/v1/keys",
        .decision = "ok",
        .code = "some_code",
        .status = 201,
        .reserved = 5,
        .settled = 6,
        .latency_us = 7,
        .bytes_in = 8,
        .bytes_out = 9,
        .detail = "{\"revoked\":3}",
    };
    snprintf(full.request_id, sizeof full.request_id, "req_full");
    struct kb_audit_rec bare = {.kind = KB_AUDIT_PROXY, .ts_ms = -5, .settled = -1};
    assert_int_equal(store_begin(s), KB_OK);
    store_audit_head_sync(s);
    assert_int_equal(audit_append(s, &full, NULL), KB_OK);
    assert_int_equal(audit_append(s, &bare, NULL), KB_OK);
    assert_int_equal(audit_complete(s, 2, &bare), KB_OK);
    assert_int_equal(store_commit(s), KB_OK);

    assert_int_equal(store_audit_read_begin(s), KB_OK);
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    assert_int_equal(store_audit_rows(s, 0, 0, 0, &it), KB_OK);
    assert_int_equal(store_audit_row_next(it, &row), KB_OK);
    assert_int_equal(row.seq, 1);
    assert_int_equal(row.ref_seq, 0);
    assert_int_equal(row.rec.kind, KB_AUDIT_ADMIN);
    assert_int_equal(row.rec.ts_ms, 1700000000123);
    assert_string_equal(row.rec.request_id, "req_full");
    assert_string_equal(row.rec.action, "key.issued");
    assert_string_equal(row.rec.key_id, "vk_1");
    assert_string_equal(row.rec.label, full.label);
    assert_string_equal(row.rec.vendor, "stripe");
    assert_string_equal(row.rec.method, "POST");
    assert_string_equal(row.rec.path, "/v1/keys");
    assert_string_equal(row.rec.decision, "ok");
    assert_string_equal(row.rec.code, "some_code");
    assert_string_equal(row.rec.detail, "{\"revoked\":3}");
    assert_int_equal(row.rec.status, 201);
    assert_int_equal(row.rec.reserved, 5);
    assert_int_equal(row.rec.settled, 6);
    assert_int_equal(row.rec.latency_us, 7);
    assert_int_equal(row.rec.bytes_in, 8);
    assert_int_equal(row.rec.bytes_out, 9);
    assert_int_equal(row.hash_len, KB_HASH_LEN);
    int64_t last = 0;
    uint8_t head[KB_HASH_LEN];
    assert_int_equal(store_audit_row_next(it, &row), KB_OK);
    assert_int_equal(row.seq, 2);
    assert_string_equal(row.rec.request_id, "");
    assert_null(row.rec.action);
    assert_null(row.rec.key_id);
    assert_null(row.rec.label);
    assert_null(row.rec.vendor);
    assert_null(row.rec.method);
    assert_null(row.rec.path);
    assert_null(row.rec.decision);
    assert_null(row.rec.code);
    assert_null(row.rec.detail);
    assert_int_equal(row.rec.ts_ms, -5);
    assert_int_equal(row.rec.settled, -1);
    assert_int_equal(store_audit_row_next(it, &row), KB_OK);
    assert_int_equal(row.seq, 3);
    assert_int_equal(row.ref_seq, 2);
    assert_int_equal(store_audit_last(s, &last, head), KB_OK);
    assert_int_equal(last, 3);
    assert_memory_equal(row.hash, head, KB_HASH_LEN);
    assert_int_equal(store_audit_row_next(it, &row), KB_E_NOT_FOUND);
    store_audit_iter_free(it);

    struct kb_audit_ckpt ck;
    assert_int_equal(store_audit_ckpts(s, &it), KB_OK);
    assert_int_equal(store_audit_ckpt_next(it, &ck), KB_OK);
    assert_int_equal(ck.seq, 1);
    assert_int_equal(ck.prev_seq, 0);
    assert_int_equal(ck.every, EVERY);
    assert_int_equal(ck.ts_ms, 1700000000123);
    assert_int_equal(ck.hash_len, KB_HASH_LEN);
    assert_int_equal(ck.mac_len, KB_HASH_LEN);
    assert_int_equal(store_audit_ckpt_next(it, &ck), KB_E_NOT_FOUND);
    store_audit_iter_free(it);
    store_audit_read_end(s);

    /* time bounds and after_seq */
    assert_int_equal(store_audit_rows(s, 1, 0, 0, &it), KB_OK);
    assert_int_equal(store_audit_row_next(it, &row), KB_OK);
    assert_int_equal(row.seq, 2);
    store_audit_iter_free(it);
    assert_int_equal(store_audit_rows(s, 0, 1700000000000, 0, &it), KB_OK);
    assert_int_equal(store_audit_row_next(it, &row), KB_OK);
    assert_int_equal(row.seq, 1);
    assert_int_equal(store_audit_row_next(it, &row), KB_E_NOT_FOUND);
    store_audit_iter_free(it);

    /* a hash tampered to another length reads back as it is */
    sql("UPDATE audit SET hash = '\\x0102' WHERE node_id = 'a' AND seq = 2");
    assert_int_equal(store_audit_rows(s, 1, 0, 0, &it), KB_OK);
    assert_int_equal(store_audit_row_next(it, &row), KB_OK);
    assert_int_equal(row.hash_len, 2);
    assert_int_equal(row.hash[1], 2);
    store_audit_iter_free(it);
    close_store(s);
}

/* More records than an iterator's page: every one, in order, once. */
static void test_iterator_pages(void **state)
{
    (void)state;
    struct kb_store *s = open_node("a"); /* migrates the fresh database */
    sql("DO $$ BEGIN FOR i IN 1..2500 LOOP INSERT INTO audit (node_id, seq, kind, ts_ms, "
        "request_id, status, reserved_micros, settled_micros, latency_us, bytes_in, bytes_out, "
        "hash) VALUES ('p', i, 0, i, 'r', 0, 0, 0, 0, 0, 0, '\\x00'); END LOOP; END $$");
    assert_int_equal(store_audit_chain_use(s, "p"), KB_OK);
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    assert_int_equal(store_audit_rows(s, 10, 0, 0, &it), KB_OK);
    int64_t want = 11;
    enum kb_err err;
    while ((err = store_audit_row_next(it, &row)) == KB_OK)
        assert_int_equal(row.seq, want++);
    assert_int_equal(err, KB_E_NOT_FOUND);
    assert_int_equal(want, 2501);
    store_audit_iter_free(it);
    close_store(s);
}

/* The writer's cached head: a rollback drops it, and a stale one (another
 * process appended under this node id) fails one insert, then heals. */
static void test_head_cache(void **state)
{
    (void)state;
    struct kb_store *s = open_node("a");
    assert_int_equal(append(s, "a", 1), 1);
    assert_int_equal(store_begin(s), KB_OK);
    store_audit_head_sync(s);
    struct kb_audit_rec r = rec("a", 2);
    assert_int_equal(audit_append(s, &r, NULL), KB_OK);
    store_audit_head_drop(s);
    store_rollback(s);
    assert_int_equal(append(s, "a", 2), 2);

    struct kb_store *other = open_node("a");
    assert_int_equal(append(other, "a", 3), 3);
    close_store(other);
    assert_int_equal(store_begin(s), KB_OK);
    store_audit_head_sync(s);
    r = rec("a", 4);
    /* the writer's appends are deferred to its commit (pg__defer): the
     * stale head's seq is refused there, failing the batch whole */
    assert_int_equal(audit_append(s, &r, NULL), KB_OK);
    assert_int_equal(store_commit(s), KB_E_STORE);
    store_audit_head_drop(s);
    store_rollback(s);
    assert_int_equal(append(s, "a", 4), 4);
    close_store(s);
    struct verdict v = verify_all();
    assert_int_equal(v.n, 1);
    assert_int_equal(v.r[0].problem, KB_AUDIT_OK);
    assert_int_equal(v.r[0].records, 4);
}

/* ---- `keybrake audit verify|export` on a shared store ---- */

/* Runs cli_audit with args, its stdout into out; returns its exit status. */
static int run_cli(const char *dir, const char *const *args, char *out, size_t cap)
{
    char conf[160], cap_path[160];
    snprintf(conf, sizeof conf, "%s/keybrake.ini", dir);
    snprintf(cap_path, sizeof cap_path, "%s/stdout", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "[server]\ndata_dir = %s/data\nserver_key = 0102030405060708090a", dir);
    for (int i = 0; i < 22; i++)
        fputs("00", f);
    fprintf(f, "\n[store]\nurl = %s\n", g_url);
    fclose(f);
    char *argv[16];
    int argc = 0;
    for (; args[argc]; argc++)
        argv[argc] = (char *)args[argc];
    argv[argc++] = "--config";
    argv[argc++] = conf;
    argv[argc] = NULL;
    fflush(stdout);
    int saved = dup(1), fd = open(cap_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    int rc = cli_audit(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    ssize_t n = pread(fd, out, cap - 1, 0);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
    unlink(cap_path);
    unlink(conf);
    return rc;
}

static void test_cli(void **state)
{
    (void)state;
    build(6, 7);
    char dir[] = "/tmp/kb-auditcli-XXXXXX", out[8192];
    assert_non_null(mkdtemp(dir));
    const char *verify[] = {"audit", "verify", NULL};
    assert_int_equal(run_cli(dir, verify, out, sizeof out), 0);
    assert_non_null(strstr(out, "audit: node a: 6 records, 2 checkpoints, chain intact\n"));
    assert_non_null(strstr(out, "audit: node b: 7 records, 2 checkpoints, chain intact\n"));
    assert_non_null(
        strstr(out, "audit: 2 chains, 13 records, 4 checkpoints: every chain intact\n"));

    const char *export_all[] = {"audit", "export", NULL};
    assert_int_equal(run_cli(dir, export_all, out, sizeof out), 0);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++)
        lines++;
    assert_int_equal(lines, 13);
    assert_true(strncmp(out, "{\"seq\":1,", 9) == 0);
    assert_non_null(strstr(out, "\"request_id\":\"req_b_7\""));
    assert_non_null(strstr(out, ",\"node\":\"a\"}\n"));
    const char *export_b[] = {"audit", "export", "--node", "b", NULL};
    assert_int_equal(run_cli(dir, export_b, out, sizeof out), 0);
    assert_null(strstr(out, "\"node\":\"a\""));
    assert_non_null(strstr(out, "\"request_id\":\"req_b_7\""));

    sql("UPDATE audit SET request_id = 'zz' WHERE node_id = 'b' AND seq = 3");
    assert_int_equal(run_cli(dir, verify, out, sizeof out), 1);
    assert_non_null(strstr(out, "audit: node a: 6 records, 2 checkpoints, chain intact\n"));
    assert_non_null(strstr(out, "audit: node b: FAILED at seq 3 (altered)"));
    assert_non_null(strstr(out, ": FAILED\n"));
    const char *verify_a[] = {"audit", "verify", "--node", "a", NULL};
    assert_int_equal(run_cli(dir, verify_a, out, sizeof out), 0);
    assert_null(strstr(out, "node b"));
    const char *verify_x[] = {"audit", "verify", "--node", "x", NULL};
    assert_int_equal(run_cli(dir, verify_x, out, sizeof out), 2);
    /* an archive is one node's: which, on a store of several? */
    const char *verify_ar[] = {"audit", "verify", "--archive", dir, NULL};
    assert_int_equal(run_cli(dir, verify_ar, out, sizeof out), 2);

    char p[200];
    snprintf(p, sizeof p, "%s/data/server.key", dir);
    unlink(p); /* not written: the key is in the config */
    snprintf(p, sizeof p, "%s/data", dir);
    assert_int_equal(rmdir(p), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* ---- text through the deferred rows (pg_txn.c: array literals) ---- */

struct texts {
    int n;
    char label[4][128], path[4][128], detail[4][128], rid[4][40];
    bool key_null[4], code_null[4];
};

static void texts_cb(const struct kb_audit_entry *e, void *arg)
{
    struct texts *t = arg;
    if (t->n >= 4)
        return;
    snprintf(t->label[t->n], 128, "%s", e->rec.label ? e->rec.label : "(null)");
    snprintf(t->path[t->n], 128, "%s", e->rec.path ? e->rec.path : "(null)");
    snprintf(t->detail[t->n], 128, "%s", e->rec.detail ? e->rec.detail : "(null)");
    snprintf(t->rid[t->n], 40, "%s", e->rec.request_id);
    t->key_null[t->n] = e->rec.key_id == NULL;
    t->code_null[t->n] = e->rec.code == NULL;
    t->n++;
}

static const char ODD_LABEL[] = "a \"q\" \\ {x,y} , ; NULL é 漢 \xF0\x9F\x94\x91";
static const char ODD_PATH[] = "/v1/{}/\\\\/\",\"/ sp";
static const char ODD_DETAIL[] = "{\"k\":\"v,\\\"w\\\"\",\"u\":\"漢\"}";

static void test_deferred_text_roundtrip(void **state)
{
    (void)state;
    struct kb_store *s = open_node("a");
    struct kb_audit_rec r = rec("a", 1);
    r.label = ODD_LABEL;
    r.path = ODD_PATH;
    r.detail = ODD_DETAIL;
    r.key_id = NULL;
    r.code = NULL;
    struct kb_audit_rec r2 = rec("a", 2);
    r2.label = "";
    r2.path = NULL;
    int64_t seq = 0;
    /* both in one transaction: the deferred rows go as one array each */
    assert_int_equal(store_begin(s), KB_OK);
    store_audit_head_sync(s);
    assert_int_equal(audit_append(s, &r, &seq), KB_OK);
    assert_int_equal(audit_append(s, &r2, &seq), KB_OK);
    assert_int_equal(store_commit(s), KB_OK);
    struct texts t = {0};
    struct kb_audit_filter f = {.limit = 4};
    assert_int_equal(store_audit_query(s, &f, texts_cb, &t), KB_OK);
    assert_int_equal(t.n, 2);
    int i = strcmp(t.rid[0], "req_a_1") == 0 ? 0 : 1; /* whatever the order */
    assert_string_equal(t.rid[i], "req_a_1");
    assert_string_equal(t.label[i], ODD_LABEL);
    assert_string_equal(t.path[i], ODD_PATH);
    assert_string_equal(t.detail[i], ODD_DETAIL);
    assert_true(t.key_null[i]);
    assert_true(t.code_null[i]);
    assert_string_equal(t.label[1 - i], "");
    assert_string_equal(t.path[1 - i], "(null)");

    /* invalid UTF-8: refused, and nothing of it lands */
    struct kb_audit_rec bad = rec("a", 3);
    bad.label = "bad \xff label";
    assert_int_equal(store_begin(s), KB_OK);
    store_audit_head_sync(s);
    enum kb_err err = audit_append(s, &bad, &seq);
    assert_int_equal(err, KB_E_STORE);
    /* what the code does: the record is refused before it is deferred, so
     * the transaction is still good and its COMMIT goes through */
    assert_int_equal(store_commit(s), KB_OK);
    /* the writer goes on: the next record chains on */
    assert_int_equal(append(s, "a", 4), 3);
    close_store(s);
    s = open_node("a");
    struct collect c = query(s, (struct kb_audit_filter){0});
    assert_int_equal(c.n, 3);
    for (int k = 0; k < c.n; k++)
        assert_string_not_equal(c.rid[k], "req_a_3");
    close_store(s);
    struct verdict v = verify_all();
    assert_int_equal(v.n, 1);
    if (v.r[0].problem != KB_AUDIT_OK)
        fail_msg("chain a: %s", v.r[0].why);
    assert_int_equal(v.r[0].records, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_two_chains_verify, setup),
        cmocka_unit_test_setup(test_tamper_names_chain, setup),
        cmocka_unit_test_setup(test_delete_gap, setup),
        cmocka_unit_test_setup(test_forged_checkpoint, setup),
        cmocka_unit_test_setup(test_chain_gone_anchor, setup),
        cmocka_unit_test_setup(test_prune_one_chain, setup),
        cmocka_unit_test_setup(test_query_merges, setup),
        cmocka_unit_test_setup(test_iterators_exact, setup),
        cmocka_unit_test_setup(test_iterator_pages, setup),
        cmocka_unit_test_setup(test_head_cache, setup),
        cmocka_unit_test_setup(test_cli, setup),
        cmocka_unit_test_setup(test_deferred_text_roundtrip, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
