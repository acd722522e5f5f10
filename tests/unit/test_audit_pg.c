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
 * while the other keeps all of its records; `keybrake audit verify|export`
 * on the shared store. Reading the chains back (GET /v1/audit, the
 * iterators, the cached head, text through the deferred rows) is
 * test_audit_pg_read.c; the fixture both use is audit_pg_fixture.h.
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
#include "audit_pg_fixture.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_two_chains_verify, setup),
        cmocka_unit_test_setup(test_tamper_names_chain, setup),
        cmocka_unit_test_setup(test_delete_gap, setup),
        cmocka_unit_test_setup(test_forged_checkpoint, setup),
        cmocka_unit_test_setup(test_chain_gone_anchor, setup),
        cmocka_unit_test_setup(test_prune_one_chain, setup),
        cmocka_unit_test_setup(test_cli, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
