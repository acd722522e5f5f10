/*
 * audit.c - `keybrake audit verify|export` (see cli/audit.h).
 *
 * Both open the store the daemon uses (<data_dir>/keybrake.db) without
 * migrating it and only read: verify walks the chain in one snapshot
 * (audit_verify), export streams the raw chained records as JSON lines so
 * a copy can be archived or fed to a SIEM. Neither creates anything: a
 * missing store or server key is an error, never a fresh one (a new key
 * would make every checkpoint look forged). `verify --anchor FILE` also
 * holds the store to such a copy, which is what catches a cut tail;
 * `verify --archive DIR` proves the records retention pruned, from the
 * archive files, and joins them to the store at its cut.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit.h"
#include "audit/retention.h"
#include "cli/audit.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/config.h"
#include "store/audit_store.h"
#include "store/store.h"

#define EXIT_BAD 1   /* the chain is damaged */
#define EXIT_ERROR 2 /* could not check */

static void usage(void)
{
    fprintf(stderr, "usage: keybrake audit verify [--node ID] [--anchor FILE] [--archive DIR] "
                    "[--config FILE]\n"
                    "       keybrake audit export [--node ID] [--since TIME] [--until TIME] "
                    "[--config FILE]\n"
                    "ID: a node's chain on a shared store (default: every chain)\n"
                    "TIME: RFC 3339 (2026-11-22T08:00:00Z) or epoch seconds\n");
}

static const char *problem_name(enum kb_audit_problem p)
{
    switch (p) {
    case KB_AUDIT_OK:
        return "intact";
    case KB_AUDIT_ALTERED:
        return "altered";
    case KB_AUDIT_INSERTED:
        return "inserted";
    case KB_AUDIT_REMOVED:
        return "removed";
    case KB_AUDIT_CHECKPOINT:
        return "checkpoint";
    case KB_AUDIT_TRUNCATED:
        return "truncated";
    }
    return "unknown";
}

/* Opens the daemon's store read-only in spirit: no creation, no migration. */
static struct kb_store *open_existing(const struct kb_config *cfg)
{
    char *path = config_store_url(cfg);
    const char *file = store_url_file(path);
    struct kb_store *s = NULL;
    char *errmsg = NULL;
    if (file && access(file, R_OK) != 0)
        fprintf(stderr, "keybrake: no store at %s: %s\n", file, strerror(errno));
    else if (store_open(path, cfg->store_synchronous, false, &s, &errmsg) != KB_OK)
        fprintf(stderr, "keybrake: store: %s\n", errmsg ? errmsg : "cannot open");
    free(errmsg);
    free(path);
    return s;
}

/* verify --archive: the archive files as one chain from record 1, joined to
 * the store at its cut. After the store's snapshot: every record up to the
 * cut it saw was archived before it was deleted. Returns the exit status. */
static int verify_archive(const char *dir, const uint8_t key[KB_HASH_LEN],
                          const struct kb_audit_report *store)
{
    struct kb_audit_report r;
    struct kb_audit_archive a;
    char *errmsg = NULL;
    if (audit_archive_verify(dir, key, store->cut_seq, &r, &a, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        free(errmsg);
        return EXIT_ERROR;
    }
    if (r.problem == KB_AUDIT_OK && store->cut_seq > a.last_seq) {
        r.problem = KB_AUDIT_REMOVED;
        r.bad_seq = a.last_seq + 1;
        snprintf(r.why, sizeof r.why,
                 "records %lld..%lld were pruned from the store but are not in the archive %s",
                 (long long)(a.last_seq + 1), (long long)store->cut_seq, dir);
    } else if (r.problem == KB_AUDIT_OK && store->cut_seq &&
               (!a.joined || !crypto_equal(a.join_hash, store->cut_hash, KB_HASH_LEN))) {
        r.problem = KB_AUDIT_ALTERED;
        r.bad_seq = store->cut_seq;
        snprintf(r.why, sizeof r.why,
                 "the archive's chain at record %lld is not the hash the store's cut "
                 "checkpoint seals",
                 (long long)store->cut_seq);
    }
    if (r.problem != KB_AUDIT_OK) {
        printf("audit: FAILED at seq %lld (%s): %s\n", (long long)r.bad_seq,
               problem_name(r.problem), r.why);
        return EXIT_BAD;
    }
    if (a.last_seq == 0)
        printf("audit: archive %s holds no records%s\n", dir,
               store->cut_seq ? "" : " (the store was never pruned)");
    else
        printf("audit: archive %s: %lld files, records 1..%lld, %lld checkpoints, chain intact; "
               "%s\n",
               dir, (long long)a.files, (long long)a.last_seq, (long long)r.checkpoints,
               store->cut_seq ? "it joins the store at its cut checkpoint"
                              : "the store still holds them");
    return 0;
}

/* Prints one chain's verdict; prefix names the chain on a shared store
 * ("node b: "), "" on a store of one chain (whose output it keeps). */
static void print_chain(const char *prefix, const struct kb_audit_report *r,
                        const char *anchor_path, const struct kb_audit_anchor *anchor)
{
    if (r->problem != KB_AUDIT_OK) {
        printf("audit: %sFAILED at seq %lld (%s): %s\n", prefix, (long long)r->bad_seq,
               problem_name(r->problem), r->why);
        printf("audit: %s%lld records and %lld checkpoints verified before it\n", prefix,
               (long long)r->records, (long long)r->checkpoints);
        return;
    }
    printf("audit: %s%lld records, %lld checkpoints, chain intact\n", prefix, (long long)r->records,
           (long long)r->checkpoints);
    if (r->cut_seq)
        printf("audit: %spruned before seq %lld at checkpoint %lld, archived; records %lld..%lld "
               "chain on from its signed hash\n",
               prefix, (long long)(r->cut_seq + 1), (long long)r->cut_seq,
               (long long)(r->cut_seq + 1), (long long)r->last_seq);
    if (r->last_seq > r->last_ckpt_seq)
        printf("audit: %srecords %lld..%lld follow the last signed checkpoint and are covered by "
               "the hash chain only\n",
               prefix, (long long)(r->last_ckpt_seq + 1), (long long)r->last_seq);
    if (anchor_path && anchor->top_seq <= r->cut_seq)
        printf("audit: %sanchor %s ends at record %lld, which was pruned: it was not compared "
               "with the store\n",
               prefix, anchor_path, (long long)anchor->top_seq);
    else if (anchor_path)
        printf("audit: %sanchor %s matches: record %lld has the anchor's hash, and the chain "
               "vouches for every record before it\n",
               prefix, anchor_path, (long long)anchor->top_seq);
}

static int verify(const struct kb_config *cfg, const char *node, const char *anchor_path,
                  const char *archive_dir)
{
    uint8_t key[KB_HASH_LEN];
    char *errmsg = NULL;
    int rc = EXIT_ERROR;
    struct kb_store *s = NULL;
    struct kb_audit_anchor anchor;
    struct kb_audit_chain_report *v = NULL;
    size_t n = 0;
    if (!cfg->server_key) {
        char *kp = kb_asprintf("%s/server.key", cfg->data_dir);
        int ok = access(kp, R_OK);
        if (ok != 0)
            fprintf(stderr, "keybrake: no server key at %s: %s\n", kp, strerror(errno));
        free(kp);
        if (ok != 0)
            return EXIT_ERROR;
    }
    if (cli_prepare_data_dir(cfg, key, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    if (!(s = open_existing(cfg)))
        goto out;
    /* Before verify's snapshot: every line of a live sink file is then of
     * a committed record the snapshot holds. */
    if (anchor_path && audit_anchor_read(anchor_path, &anchor, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        goto out;
    }
    enum kb_err err =
        audit_verify_chains(s, key, node, anchor_path ? &anchor : NULL, &v, &n, &errmsg);
    if (err == KB_E_INVALID || err == KB_E_NOT_FOUND) {
        fprintf(stderr, "keybrake: %s%s\n", errmsg, err == KB_E_INVALID ? " (--node)" : "");
        goto out;
    }
    if (err != KB_OK) {
        fprintf(stderr, "keybrake: %s (is this store older than the audit log?)\n", errmsg);
        goto out;
    }
    /* the archive, like the anchor, is one node's: its chain's cut */
    if (archive_dir && !node && n > 1) {
        fprintf(stderr,
                "keybrake: the store holds %zu audit chains (one per node): name the "
                "node whose archive this is (--node)\n",
                n);
        goto out;
    }
    int64_t records = 0, checkpoints = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        char prefix[KB_NODE_ID_MAX + 16] = "";
        if (v[i].node[0])
            snprintf(prefix, sizeof prefix, "node %s: ", v[i].node);
        print_chain(prefix, &v[i].report, anchor_path, &anchor);
        records += v[i].report.records;
        checkpoints += v[i].report.checkpoints;
        bad += v[i].report.problem != KB_AUDIT_OK;
    }
    if (n == 0)
        printf("audit: the store holds no audit record\n");
    else if (v[0].node[0] && !node)
        printf("audit: %zu chains, %lld records, %lld checkpoints: %s\n", n, (long long)records,
               (long long)checkpoints, bad ? "FAILED" : "every chain intact");
    if (bad) {
        rc = EXIT_BAD;
        goto out;
    }
    rc = archive_dir && n == 1 ? verify_archive(archive_dir, key, &v[0].report) : 0;
out:
    fflush(stdout);
    audit_chain_reports_free(v, n);
    store_close(s);
    free(errmsg);
    return rc;
}

/* Writes chain `node`'s records (the selected chain) as JSON lines; the
 * "node" field only on a shared store. False when writing failed. */
static bool export_chain(struct kb_store *s, const char *node, int64_t since, int64_t until,
                         enum kb_err *err)
{
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    bool ok = true;
    if ((*err = store_audit_rows(s, 0, since, until, &it)) != KB_OK)
        return true;
    while ((*err = store_audit_row_next(it, &row)) == KB_OK) {
        json_t *j = audit_row_json(&row);
        if (node[0])
            json_object_set_new(j, "node", json_string(node));
        if (json_dumpf(j, stdout, JSON_COMPACT) != 0 || putchar('\n') == EOF)
            ok = false;
        json_decref(j);
        if (!ok) {
            fprintf(stderr, "keybrake: writing the export failed: %s\n", strerror(errno));
            break;
        }
    }
    if (*err == KB_E_NOT_FOUND)
        *err = KB_OK;
    store_audit_iter_free(it);
    return ok;
}

static int export(const struct kb_config *cfg, const char *node, int64_t since, int64_t until)
{
    int rc = EXIT_ERROR;
    bool reading = false;
    char **names = NULL;
    size_t n = 0;
    enum kb_err err = KB_OK;
    struct kb_store *s = open_existing(cfg);
    if (!s)
        return EXIT_ERROR;
    /* one snapshot for every chain */
    if (store_audit_read_begin(s) != KB_OK)
        goto fail;
    reading = true;
    if (store_audit_chains(s, &names, &n) != KB_OK)
        goto fail;
    bool found = !node;
    for (size_t i = 0; i < n; i++) {
        if (node && strcmp(names[i], node) != 0)
            continue;
        found = true;
        if (store_audit_chain_use(s, names[i]) != KB_OK)
            goto fail;
        if (!export_chain(s, names[i], since, until, &err))
            goto out;
        if (err != KB_OK)
            goto fail;
    }
    if (!found) {
        fprintf(stderr, "keybrake: the store holds no audit chain of node \"%s\"\n", node);
        goto out;
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "keybrake: writing the export failed: %s\n", strerror(errno));
        goto out;
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "keybrake: cannot read the audit log (is this store older than it?)\n");
out:
    store_names_free(names, n);
    if (reading)
        store_audit_read_end(s);
    store_close(s);
    return rc;
}

int cli_audit(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "verify") != 0 && strcmp(argv[1], "export") != 0)) {
        usage();
        return EXIT_ERROR;
    }
    bool is_export = strcmp(argv[1], "export") == 0;
    const char *config_path = NULL, *anchor_path = NULL, *archive_dir = NULL, *node = NULL;
    int64_t since = 0, until = 0;
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc) {
            usage();
            return EXIT_ERROR;
        }
        const char *val = argv[++i];
        if (strcmp(opt, "--config") == 0) {
            config_path = val;
        } else if (strcmp(opt, "--node") == 0) {
            node = val;
        } else if (!is_export && strcmp(opt, "--anchor") == 0) {
            anchor_path = val;
        } else if (!is_export && strcmp(opt, "--archive") == 0) {
            archive_dir = val;
        } else if (is_export && (strcmp(opt, "--since") == 0 || strcmp(opt, "--until") == 0)) {
            int64_t *dest = opt[2] == 's' ? &since : &until;
            if (audit_parse_time(val, dest) != KB_OK) {
                fprintf(stderr, "keybrake: %s: not an RFC 3339 time or epoch seconds: %s\n", opt,
                        val);
                return EXIT_ERROR;
            }
        } else {
            usage();
            return EXIT_ERROR;
        }
    }
    struct kb_config *cfg = NULL;
    char *errmsg = NULL;
    if (config_load(config_path, &cfg, &errmsg) != KB_OK) {
        fprintf(stderr, "keybrake: %s\n", errmsg);
        free(errmsg);
        return EXIT_ERROR;
    }
    int rc =
        is_export ? export(cfg, node, since, until) : verify(cfg, node, anchor_path, archive_dir);
    config_free(cfg);
    return rc;
}
