/*
 * archive.c - `audit verify --archive DIR`: the retention archive files
 * (retention.c) walked as one chain from record 1, so that the history
 * pruned from the store stays provable (see retention.h, docs/audit.md).
 *
 * The caller verifies the store first and passes its cut: every record up
 * to a cut was archived (durably) before it was deleted, so an archive read
 * after the store's snapshot holds at least that much, and its chain hash
 * at the cut must be the one the store's cut checkpoint seals.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "audit/retention.h"
#include "core/alloc.h"

/* One archive file's name, parsed. */
struct afile {
    char *name; /* owned */
    long long first, cut;
};

static int afile_cmp(const void *a, const void *b)
{
    const struct afile *x = a, *y = b;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    return x->cut < y->cut ? -1 : x->cut > y->cut;
}

/* The walk's state across files. */
struct walk {
    const uint8_t *key;
    struct kb_audit_report *r;
    struct kb_audit_archive *out;
    int64_t join_seq;
    const char *file; /* for the report */
    long line;
    int64_t expected; /* the next record's seq */
    uint8_t prev[KB_HASH_LEN];
    int64_t prev_ck, prev_every;
    bool due; /* the last record was due a checkpoint that has not come yet */
};

static bool bad(struct walk *w, enum kb_audit_problem p, int64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool bad(struct walk *w, enum kb_audit_problem p, int64_t seq, const char *fmt, ...)
{
    char why[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    w->r->problem = p;
    w->r->bad_seq = seq;
    snprintf(w->r->why, sizeof w->r->why, "archive %s line %ld: %s", w->file, w->line, why);
    return false;
}

static const char *str(json_t *j, const char *k)
{
    return json_string_value(json_object_get(j, k)); /* NULL for null or absent */
}

static int64_t num(json_t *j, const char *k)
{
    return json_integer_value(json_object_get(j, k));
}

static bool hex32(json_t *j, const char *k, uint8_t out[KB_HASH_LEN])
{
    json_t *v = json_object_get(j, k);
    return json_is_string(v) &&
           crypto_unhex(json_string_value(v), json_string_length(v), out, KB_HASH_LEN);
}

static bool on_record(struct walk *w, json_t *j)
{
    int64_t seq = num(j, "seq");
    if (w->due)
        return bad(w, KB_AUDIT_CHECKPOINT, w->expected - 1,
                   "the checkpoint due at record %lld is missing", (long long)(w->expected - 1));
    if (seq < w->expected)
        return bad(w, KB_AUDIT_INSERTED, seq, "record %lld is outside the chain's numbering",
                   (long long)seq);
    if (seq > w->expected)
        return bad(w, KB_AUDIT_REMOVED, w->expected, "record %lld is missing",
                   (long long)w->expected);
    struct kb_audit_rec rec = {0};
    const char *kind = str(j, "kind"), *rid = str(j, "request_id");
    rec.kind = kind && strcmp(kind, "admin") == 0 ? KB_AUDIT_ADMIN : KB_AUDIT_PROXY;
    rec.ts_ms = num(j, "ts_ms");
    snprintf(rec.request_id, sizeof rec.request_id, "%s", rid ? rid : "");
    rec.action = str(j, "action");
    rec.key_id = str(j, "key_id");
    rec.label = str(j, "label");
    rec.vendor = str(j, "vendor");
    rec.method = str(j, "method");
    rec.path = str(j, "path");
    rec.decision = str(j, "decision");
    rec.code = str(j, "code");
    rec.status = (int)num(j, "status");
    rec.reserved = num(j, "reserved_micros");
    rec.settled = num(j, "settled_micros");
    rec.latency_us = num(j, "latency_us");
    rec.bytes_in = num(j, "bytes_in");
    rec.bytes_out = num(j, "bytes_out");
    rec.detail = str(j, "detail");
    rec.tenant = str(j, "tenant");
    uint8_t h[KB_HASH_LEN], stored[KB_HASH_LEN];
    audit__rec_hash(w->prev, seq, num(j, "ref_seq"), &rec, h);
    if (!hex32(j, "hash", stored) || !crypto_equal(h, stored, KB_HASH_LEN))
        return bad(w, KB_AUDIT_ALTERED, seq, "record %lld does not match its hash", (long long)seq);
    memcpy(w->prev, h, KB_HASH_LEN);
    if (seq == w->join_seq) {
        memcpy(w->out->join_hash, h, KB_HASH_LEN);
        w->out->joined = true;
    }
    w->due = w->prev_ck == 0 || (w->prev_every > 0 && seq >= w->prev_ck + w->prev_every);
    w->out->last_seq = seq;
    w->r->records++;
    w->expected++;
    return true;
}

static bool on_checkpoint(struct walk *w, json_t *j)
{
    int64_t seq = num(j, "checkpoint");
    uint8_t hash[KB_HASH_LEN], mac[KB_HASH_LEN], want[KB_HASH_LEN];
    if (seq != w->expected - 1 || seq <= w->prev_ck)
        return bad(w, KB_AUDIT_CHECKPOINT, seq, "checkpoint %lld is out of place", (long long)seq);
    if (!hex32(j, "hash", hash) || !hex32(j, "mac", mac))
        return bad(w, KB_AUDIT_CHECKPOINT, seq, "checkpoint %lld is malformed", (long long)seq);
    audit__ckpt_mac(w->key, seq, num(j, "prev_seq"), num(j, "every"), num(j, "ts_ms"), hash, want);
    if (!crypto_equal(want, mac, KB_HASH_LEN))
        return bad(w, KB_AUDIT_CHECKPOINT, seq,
                   "checkpoint %lld has a bad signature (altered or forged, or another server "
                   "key)",
                   (long long)seq);
    if (num(j, "prev_seq") != w->prev_ck)
        return bad(w, KB_AUDIT_CHECKPOINT, seq, "checkpoint %lld does not follow checkpoint %lld",
                   (long long)seq, (long long)w->prev_ck);
    if (!crypto_equal(hash, w->prev, KB_HASH_LEN))
        return bad(w, KB_AUDIT_ALTERED, w->prev_ck + 1,
                   "records %lld..%lld were rewritten: the chain no longer matches the signed "
                   "checkpoint %lld",
                   (long long)(w->prev_ck + 1), (long long)seq, (long long)seq);
    w->prev_ck = w->r->last_ckpt_seq = seq;
    w->prev_every = num(j, "every");
    w->due = false;
    w->r->checkpoints++;
    return true;
}

/* Walks one file; false at the first problem (reported). */
static enum kb_err walk_file(struct walk *w, const char *path, bool *ok, char **errmsg)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        kb_set_errmsg(errmsg, "cannot read %s: %s", path, strerror(errno));
        return KB_E_IO;
    }
    char *line = NULL;
    size_t cap = 0;
    *ok = true;
    w->line = 0;
    while (*ok && getline(&line, &cap, f) > 0) {
        w->line++;
        json_t *j = json_loads(line, 0, NULL);
        if (json_is_integer(json_object_get(j, "seq")))
            *ok = on_record(w, j);
        else if (json_is_integer(json_object_get(j, "checkpoint")))
            *ok = on_checkpoint(w, j);
        else
            *ok = bad(w, KB_AUDIT_ALTERED, w->expected, "not a record or checkpoint line");
        json_decref(j);
    }
    enum kb_err err = KB_OK;
    if (ferror(f)) {
        kb_set_errmsg(errmsg, "cannot read %s: %s", path, strerror(errno));
        err = KB_E_IO;
    }
    free(line);
    fclose(f);
    return err;
}

enum kb_err audit_archive_verify(const char *dir, const uint8_t key[KB_HASH_LEN], int64_t join_seq,
                                 struct kb_audit_report *r, struct kb_audit_archive *out,
                                 char **errmsg)
{
    memset(r, 0, sizeof *r);
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) {
        kb_set_errmsg(errmsg, "cannot read the archive %s: %s", dir, strerror(errno));
        return KB_E_IO;
    }
    struct afile *files = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long long a, b;
        int used = 0;
        if (sscanf(e->d_name, "audit-%12lld-%12lld.jsonl%n", &a, &b, &used) != 2 ||
            (size_t)used != strlen(e->d_name))
            continue;
        files = kb_realloc(files, (n + 1) * sizeof *files);
        files[n++] = (struct afile){kb_strdup(e->d_name), a, b};
    }
    closedir(d);
    qsort(files, n, sizeof *files, afile_cmp);

    struct walk w = {.key = key, .r = r, .out = out, .join_seq = join_seq, .expected = 1};
    enum kb_err err = KB_OK;
    bool ok = true;
    for (size_t i = 0; i < n && ok && err == KB_OK; i++) {
        if (i + 1 < n && files[i + 1].first == files[i].first)
            continue; /* superseded by the next, which reaches further */
        char *path = kb_asprintf("%s/%s", dir, files[i].name);
        w.file = files[i].name;
        err = walk_file(&w, path, &ok, errmsg);
        free(path);
        out->files++;
    }
    if (err == KB_OK && ok && out->last_seq > 0 && w.prev_ck != out->last_seq) {
        w.line = 0;
        bad(&w, KB_AUDIT_CHECKPOINT, out->last_seq,
            "the archive ends at record %lld, not at a signed checkpoint (a cut)",
            (long long)out->last_seq);
    }
    for (size_t i = 0; i < n; i++)
        free(files[i].name);
    free(files);
    return err;
}
