/*
 * retention.c - audit retention: archive, then prune, up to a signed
 * checkpoint (see retention.h, docs/audit.md "Retention").
 *
 * Order is what makes it safe. The archive file is complete and durable
 * (fsync, rename, directory fsync) before the writer deletes a row, and the
 * delete and the `audit.pruned` record that names the cut commit in one
 * transaction, so a crash leaves either the old store (and maybe an archive
 * file the next step rewrites) or the pruned store with its record. Verify
 * accepts a log that starts at a checkpoint only when that record is there:
 * a prefix deleted by hand is still `removed`.
 *
 * The thread has a loop of its own only to receive the writer's answer to
 * the delete job; the archive's file I/O blocks that thread and nothing else.
 */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "audit/retention.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "store/audit_store.h"
#include "store/store.h"
#include "store/writer.h"

#define ARCHIVE_FMT "audit-%012lld-%012lld.jsonl"
#define HOUR_MS 3600000
#define AGAIN_MS 1000 /* after a step that pruned: more may be due */

/* The MAC of a prune record: HMAC-SHA256(key, "KBP1" || first || cut ||
 * records), so that a record appended past the last checkpoint by someone
 * without the key cannot vouch for a prefix deleted by hand. */
static void prune_mac(const uint8_t key[KB_HASH_LEN], int64_t first, int64_t cut, int64_t records,
                      uint8_t out[KB_HASH_LEN])
{
    uint8_t msg[4 + 3 * 8];
    memcpy(msg, "KBP1", 4);
    int64_t v[3] = {first, cut, records};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 8; i++)
            msg[4 + 8 * k + i] = (uint8_t)((uint64_t)v[k] >> (56 - 8 * i));
    crypto_hmac(key, KB_HASH_LEN, msg, sizeof msg, out);
}

int64_t audit__pruned_cut(const struct kb_audit_rec *r, const uint8_t key[KB_HASH_LEN])
{
    if (!r->detail)
        return 0;
    json_t *j = json_loads(r->detail, 0, NULL);
    json_t *f = json_object_get(j, "first"), *c = json_object_get(j, "cut"),
           *n = json_object_get(j, "records"), *m = json_object_get(j, "mac");
    uint8_t want[KB_HASH_LEN], got[KB_HASH_LEN];
    int64_t cut = 0;
    if (json_is_integer(f) && json_is_integer(c) && json_is_integer(n) && json_is_string(m) &&
        crypto_unhex(json_string_value(m), json_string_length(m), got, KB_HASH_LEN)) {
        prune_mac(key, json_integer_value(f), json_integer_value(c), json_integer_value(n), want);
        if (crypto_equal(want, got, KB_HASH_LEN))
            cut = json_integer_value(c);
    }
    json_decref(j);
    return cut;
}

/* ---- plan ---- */

enum kb_err audit_prune_plan(struct kb_store *s, int64_t before_ms, int64_t max_records,
                             struct kb_audit_cut *out)
{
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    uint8_t h[KB_HASH_LEN];
    int64_t first = 0, last = 0, cut = 0;
    enum kb_err err;
    if ((err = store_audit_read_begin(s)) != KB_OK)
        return err;
    if ((err = store_audit_rows(s, 0, 0, 0, &it)) != KB_OK)
        goto out;
    if ((err = store_audit_row_next(it, &row)) != KB_OK)
        goto out; /* KB_E_NOT_FOUND: an empty log */
    first = row.seq;
    if ((err = store_audit_last(s, &last, h)) != KB_OK)
        goto out;
    int64_t max_seq = first + max_records - 1 < last - 1 ? first + max_records - 1 : last - 1;
    if ((err = store_audit_cut_find(s, before_ms, max_seq, &cut)) != KB_OK)
        goto out;
    /* the cut must remove something and keep the chain head */
    if (cut < first || cut >= last) {
        err = KB_E_NOT_FOUND;
        goto out;
    }
    memset(out, 0, sizeof *out);
    out->first = first;
    out->cut = cut;
out:
    store_audit_iter_free(it);
    store_audit_read_end(s);
    return err;
}

/* ---- archive ---- */

static json_t *ckpt_json(const struct kb_audit_ckpt *ck)
{
    char hash[2 * KB_HASH_LEN + 1] = "", mac[2 * KB_HASH_LEN + 1] = "";
    if (ck->hash_len == KB_HASH_LEN)
        crypto_hex(ck->hash, KB_HASH_LEN, hash);
    if (ck->mac_len == KB_HASH_LEN)
        crypto_hex(ck->mac, KB_HASH_LEN, mac);
    return json_pack("{s:I, s:I, s:I, s:I, s:s, s:s}", "checkpoint", (json_int_t)ck->seq,
                     "prev_seq", (json_int_t)ck->prev_seq, "every", (json_int_t)ck->every, "ts_ms",
                     (json_int_t)ck->ts_ms, "hash", hash, "mac", mac);
}

static bool put_line(FILE *f, json_t *j)
{
    bool ok = j && json_dumpf(j, f, JSON_COMPACT) == 0 && fputc('\n', f) != EOF;
    json_decref(j);
    return ok;
}

/* A checkpoint signed with the audit key whose hash is h. */
static bool ckpt_good(const struct kb_audit_ckpt *ck, const uint8_t h[KB_HASH_LEN])
{
    uint8_t mac[KB_HASH_LEN];
    if (ck->hash_len != KB_HASH_LEN || ck->mac_len != KB_HASH_LEN)
        return false;
    audit__ckpt_mac(audit__key(), ck->seq, ck->prev_seq, ck->every, ck->ts_ms, ck->hash, mac);
    return crypto_equal(mac, ck->mac, KB_HASH_LEN) && crypto_equal(ck->hash, h, KB_HASH_LEN);
}

/* Writes the stretch to f, checking it on the way (see retention.h). */
static enum kb_err write_stretch(struct kb_store *s, const struct kb_audit_cut *c, FILE *f,
                                 const atomic_bool *stop, char **errmsg)
{
    struct kb_audit_iter *rows = NULL, *ckpts = NULL;
    struct kb_audit_row row;
    struct kb_audit_ckpt ck;
    uint8_t prev[KB_HASH_LEN] = {0}, h[KB_HASH_LEN];
    bool have_ck = false;
    enum kb_err err;
    if ((err = store_audit_rows(s, c->first - 1, 0, 0, &rows)) != KB_OK ||
        (err = store_audit_ckpts(s, &ckpts)) != KB_OK)
        goto store;
    /* checkpoints before the stretch; the one just before it (the last
     * cut) seals the hash the stretch chains onto */
    while ((err = store_audit_ckpt_next(ckpts, &ck)) == KB_OK && ck.seq < c->first) {
        if (ck.seq == c->first - 1) {
            if (ck.hash_len != KB_HASH_LEN || !ckpt_good(&ck, ck.hash)) {
                kb_set_errmsg(errmsg, "checkpoint %lld, where the store starts, does not verify",
                              (long long)ck.seq);
                err = KB_E_INVALID;
                goto out;
            }
            memcpy(prev, ck.hash, KB_HASH_LEN);
        }
    }
    if (err == KB_OK)
        have_ck = true;
    else if (err != KB_E_NOT_FOUND)
        goto store;
    if (c->first > 1 && crypto_equal(prev, (uint8_t[KB_HASH_LEN]){0}, KB_HASH_LEN)) {
        kb_set_errmsg(errmsg, "records before %lld are missing without a checkpoint at %lld",
                      (long long)c->first, (long long)(c->first - 1));
        err = KB_E_INVALID;
        goto out;
    }
    for (int64_t seq = c->first; seq <= c->cut; seq++) {
        if (stop && atomic_load_explicit(stop, memory_order_relaxed)) {
            err = KB_E_SHUTTING_DOWN;
            goto out;
        }
        if ((err = store_audit_row_next(rows, &row)) != KB_OK || row.seq != seq) {
            if (err != KB_OK && err != KB_E_NOT_FOUND)
                goto store;
            kb_set_errmsg(errmsg, "record %lld is missing", (long long)seq);
            err = KB_E_INVALID;
            goto out;
        }
        audit__rec_hash(prev, row.seq, row.ref_seq, &row.rec, h);
        if (row.hash_len != KB_HASH_LEN || !crypto_equal(h, row.hash, KB_HASH_LEN)) {
            kb_set_errmsg(errmsg, "record %lld does not match its hash", (long long)seq);
            err = KB_E_INVALID;
            goto out;
        }
        memcpy(prev, h, KB_HASH_LEN);
        if (!put_line(f, audit_row_json(&row)))
            goto io;
        if (have_ck && ck.seq == seq) {
            if (!ckpt_good(&ck, h)) {
                kb_set_errmsg(errmsg, "checkpoint %lld does not verify", (long long)seq);
                err = KB_E_INVALID;
                goto out;
            }
            if (!put_line(f, ckpt_json(&ck)))
                goto io;
            if ((err = store_audit_ckpt_next(ckpts, &ck)) == KB_E_NOT_FOUND)
                have_ck = false;
            else if (err != KB_OK)
                goto store;
        } else if (seq == c->cut) {
            kb_set_errmsg(errmsg, "no checkpoint at the cut %lld", (long long)seq);
            err = KB_E_INVALID;
            goto out;
        }
    }
    err = KB_OK;
    goto out;
io:
    kb_set_errmsg(errmsg, "cannot write the archive: %s", strerror(errno));
    err = KB_E_IO;
    goto out;
store:
    kb_set_errmsg(errmsg, "cannot read the audit log");
    err = KB_E_STORE;
out:
    store_audit_iter_free(rows);
    store_audit_iter_free(ckpts);
    return err;
}

static bool fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = fsync(fd) == 0;
    close(fd);
    return ok;
}

/* Removes other archive files starting at `first`: left by a step that
 * crashed before its delete, and covered by the new file `keep`. */
static void remove_superseded(const char *dir, int64_t first, const char *keep)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "audit-%012lld-", (long long)first);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || strcmp(e->d_name, keep) == 0 ||
            n < 6 || strcmp(e->d_name + n - 6, ".jsonl") != 0)
            continue;
        char *p = kb_asprintf("%s/%s", dir, e->d_name);
        if (unlink(p) == 0)
            kb_log(KB_LOG_INFO, "audit archive superseded", "file", p, "by", keep, NULL);
        free(p);
    }
    closedir(d);
}

enum kb_err audit_archive_write(struct kb_store *s, struct kb_audit_cut *c, const char *dir,
                                const atomic_bool *stop, char **errmsg)
{
    char name[sizeof c->archive];
    snprintf(name, sizeof name, ARCHIVE_FMT, (long long)c->first, (long long)c->cut);
    char *path = kb_asprintf("%s/%s", dir, name);
    char *tmp = kb_asprintf("%s.tmp", path);
    enum kb_err err;
    FILE *f = NULL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !(f = fdopen(fd, "w"))) {
        kb_set_errmsg(errmsg, "cannot create %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        err = KB_E_IO;
        goto out;
    }
    if ((err = store_audit_read_begin(s)) != KB_OK) {
        kb_set_errmsg(errmsg, "cannot read the audit log");
        goto out;
    }
    err = write_stretch(s, c, f, stop, errmsg);
    store_audit_read_end(s);
    if (err != KB_OK)
        goto out;
    /* durable before the rename, the rename durable before any delete */
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        kb_set_errmsg(errmsg, "cannot write %s: %s", tmp, strerror(errno));
        err = KB_E_IO;
        goto out;
    }
    int rc = fclose(f);
    f = NULL;
    if (rc != 0 || rename(tmp, path) != 0 || !fsync_dir(dir)) {
        kb_set_errmsg(errmsg, "cannot write %s: %s", path, strerror(errno));
        err = KB_E_IO;
        goto out;
    }
    memcpy(c->archive, name, sizeof name);
    remove_superseded(dir, c->first, name);
out:
    if (f)
        fclose(f);
    if (err != KB_OK)
        unlink(tmp);
    free(tmp);
    free(path);
    return err;
}

/* ---- the delete ---- */

enum kb_err audit_prune_job(struct kb_store *s, void *arg)
{
    struct kb_audit_cut *c = arg;
    int64_t last = 0;
    uint8_t h[KB_HASH_LEN];
    enum kb_err err;
    if ((err = store_audit_last(s, &last, h)) != KB_OK)
        return err;
    if (last <= c->cut || !c->archive[0])
        return KB_E_INVALID;
    if ((err = store_audit_prune(s, c->cut, &c->removed)) != KB_OK)
        return err;
    /* exactly what the archive holds, or nothing at all */
    if (c->removed != c->cut - c->first + 1)
        return KB_E_INVALID;
    uint8_t mac[KB_HASH_LEN];
    char hex[2 * KB_HASH_LEN + 1];
    prune_mac(audit__key(), c->first, c->cut, c->removed, mac);
    crypto_hex(mac, KB_HASH_LEN, hex);
    char *detail = kb_asprintf(
        "{\"first\":%lld,\"cut\":%lld,\"records\":%lld,\"archive\":\"%s\",\"mac\":\"%s\"}",
        (long long)c->first, (long long)c->cut, (long long)c->removed, c->archive, hex);
    struct kb_audit_rec r = {.kind = KB_AUDIT_ADMIN,
                             .ts_ms = clock_now_ms(),
                             .request_id = "retention",
                             .action = KB_AUDIT_PRUNED_ACTION,
                             .decision = "ok",
                             .detail = detail};
    err = audit_append(s, &r, NULL);
    free(detail);
    return err;
}

/* ---- the thread ---- */

struct kb_audit_retention {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* signalled by stop; CLOCK_MONOTONIC */
    atomic_bool stop;
    char *store_url;         /* owned */
    char *synchronous;       /* owned */
    char *dir;               /* owned; archive_dir */
    struct kb_writer *w;     /* borrowed */
    int64_t retention_ms;    /* records older than this go */
    struct event_base *base; /* owned by the thread; receives the job's answer */
};

/* The delete job's argument and answer: the job and its done callback
 * share one pointer. */
struct step_job {
    struct kb_audit_cut cut; /* what was archived */
    bool done;               /* the writer answered */
    enum kb_err err;         /* its answer */
};

static enum kb_err step_job_run(struct kb_store *s, void *arg)
{
    return audit_prune_job(s, &((struct step_job *)arg)->cut);
}

static void step_job_done(void *arg, enum kb_err err)
{
    struct step_job *j = arg;
    j->done = true;
    j->err = err;
}

/* One step; true when it pruned (another may be due at once). */
static bool step(struct kb_audit_retention *r, struct kb_store *s, struct kb_writer_port *port)
{
    struct step_job job = {0};
    struct kb_audit_cut *c = &job.cut;
    char *em = NULL;
    enum kb_err err = audit_prune_plan(s, clock_now_ms() - r->retention_ms, KB_AUDIT_PRUNE_MAX, c);
    if (err == KB_E_NOT_FOUND)
        return false;
    if (err == KB_OK)
        err = audit_archive_write(s, c, r->dir, &r->stop, &em);
    if (err == KB_E_SHUTTING_DOWN) {
        free(em);
        return false;
    }
    if (err != KB_OK) {
        kb_log(KB_LOG_ERROR, "audit retention: nothing pruned", "error", em ? em : kb_strerror(err),
               "hint", err == KB_E_INVALID ? "run keybrake audit verify" : "", NULL);
        free(em);
        return false;
    }
    writer_submit(port, step_job_run, step_job_done, &job);
    while (!job.done)
        event_base_loop(r->base, EVLOOP_ONCE);
    char n[24], cut[24];
    snprintf(n, sizeof n, "%lld", (long long)c->removed);
    snprintf(cut, sizeof cut, "%lld", (long long)c->cut);
    if (job.err != KB_OK) {
        kb_log(KB_LOG_ERROR, "audit retention: archived but not pruned; the next step retries",
               "archive", c->archive, "error", kb_strerror(job.err), NULL);
        return false;
    }
    kb_log(KB_LOG_INFO, "audit records archived and pruned", "records", n, "cut", cut, "archive",
           c->archive, NULL);
    return true;
}

static void *thread_main(void *arg)
{
    struct kb_audit_retention *r = arg;
    struct kb_store *s = NULL;
    char *em = NULL;
    if (store_open(r->store_url, r->synchronous, false, &s, &em) != KB_OK) {
        kb_log(KB_LOG_ERROR, "audit retention: cannot open the store; nothing will be pruned",
               "error", em ? em : "", NULL);
        free(em);
        return NULL;
    }
    struct kb_writer_port *port = writer_port_new(r->w, r->base);
    int64_t every = r->retention_ms < HOUR_MS ? r->retention_ms : HOUR_MS;
    if (every < 1000)
        every = 1000;
    int64_t wait_ms = 0; /* a step at start */
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (wait_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&r->mu);
        while (!atomic_load(&r->stop) &&
               pthread_cond_timedwait(&r->cond, &r->mu, &until) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&r->mu);
        if (atomic_load(&r->stop))
            break;
        wait_ms = step(r, s, port) ? AGAIN_MS : every;
    }
    writer_port_free(port);
    store_close(s);
    return NULL;
}

enum kb_err audit_retention_start(const char *store_url, const char *synchronous,
                                  struct kb_writer *w, int64_t retention_ms,
                                  const char *archive_dir, struct kb_audit_retention **out,
                                  char **errmsg)
{
    if (mkdir(archive_dir, 0700) != 0 && errno != EEXIST) {
        kb_set_errmsg(errmsg, "audit.archive_dir %s: %s", archive_dir, strerror(errno));
        return KB_E_IO;
    }
    if (access(archive_dir, W_OK | X_OK) != 0) {
        kb_set_errmsg(errmsg, "audit.archive_dir %s is not a writable directory: %s", archive_dir,
                      strerror(errno));
        return KB_E_IO;
    }
    struct kb_audit_retention *r = kb_calloc(1, sizeof *r);
    r->store_url = kb_strdup(store_url);
    r->synchronous = kb_strdup(synchronous);
    r->dir = kb_strdup(archive_dir);
    r->w = w;
    r->retention_ms = retention_ms;
    atomic_init(&r->stop, false);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    r->base = event_base_new();
    if (!r->base || pthread_create(&r->tid, NULL, thread_main, r) != 0) {
        kb_set_errmsg(errmsg, "cannot start the audit retention thread");
        if (r->base)
            event_base_free(r->base);
        r->base = NULL;
        audit_retention_stop(r);
        return KB_E_INTERNAL;
    }
    *out = r;
    return KB_OK;
}

void audit_retention_stop(struct kb_audit_retention *r)
{
    if (!r)
        return;
    if (r->base) {
        pthread_mutex_lock(&r->mu);
        atomic_store(&r->stop, true);
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->tid, NULL);
        event_base_free(r->base);
    }
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r->store_url);
    free(r->synchronous);
    free(r->dir);
    free(r);
}
