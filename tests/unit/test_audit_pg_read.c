/*
 * test_audit_pg_read.c - the audit log on PostgreSQL (src/store/pg_audit.c),
 * read back: GET /v1/audit's query merges both nodes' chains newest first
 * by gid with its filters and cursor; the iterators return exactly what
 * was inserted (all fields, NULLs), page after page; the writer's cached
 * head survives a rollback and a stale one heals; odd text survives the
 * deferred rows' array literals (pg_txn.c). The chains and their
 * verification are test_audit_pg.c; the fixture both use is
 * audit_pg_fixture.h.
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

#include "audit/audit.h"
#include "pg_fixture.h"
#include "store/audit_store.h"
#include "store/store.h"
#include "audit_pg_fixture.h"

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
        cmocka_unit_test_setup(test_query_merges, setup),
        cmocka_unit_test_setup(test_iterators_exact, setup),
        cmocka_unit_test_setup(test_iterator_pages, setup),
        cmocka_unit_test_setup(test_head_cache, setup),
        cmocka_unit_test_setup(test_deferred_text_roundtrip, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
