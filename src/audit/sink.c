/*
 * sink.c - the optional JSONL copy of the audit log for a SIEM (config
 * audit_sink; see audit.h and docs/audit.md).
 *
 * The database is the record; the sink follows it, on a thread of its
 * own with its own store connection. After each batch commits, the
 * writer thread calls audit_sink_commit, which only notes the last
 * committed seq (from the writer's in-memory chain head) and wakes the
 * sink thread: the batch's answers never wait for the file. The sink
 * thread reads the committed records with a seq above the last one
 * written, a chunk at a time (the read snapshot ends before the file is
 * written, so a slow disk never holds the WAL back), and appends them
 * with one write(2) per chunk. So a rolled back record never reaches the
 * file, and a failed write is retried after the next commit or RETRY_MS
 * later, whichever comes first. On start the sink resumes after the last
 * complete line of the file, which also catches up records a crash
 * committed to the database but not to the file; at stop the thread
 * writes every committed record before it exits. Lines go through
 * O_APPEND without fsync: a torn last line (crash or failure mid-write)
 * is ended with a newline and the record written again in full.
 *
 * Rotation: audit_sink_reopen (SIGHUP, main thread) opens the path afresh
 * and hands the descriptor to the sink thread, which switches between two
 * writes: a line goes whole to the renamed file or whole to the new one,
 * and the new file continues after the last seq written, so the two files
 * together hold every record once. The main thread never waits for a
 * write in progress.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "store/audit_store.h"
#include "store/store.h"

#define TAIL_BYTES 65536 /* enough for the longest line we write */
#define CHUNK 1024       /* records per read snapshot and write(2) */
#define RETRY_MS 1000    /* a failed write is tried again this often (or at the next commit) */

struct kb_audit_sink {
    pthread_mutex_t mu;  /* guards committed..new_torn */
    pthread_cond_t wake; /* CLOCK_MONOTONIC; a commit, a reopen, stop */
    int64_t committed;   /* last seq the commit hook saw committed */
    bool poke;           /* the hook could not tell: look anyway */
    bool stopping;       /* audit_sink_free: write everything committed, then exit */
    int new_fd;          /* owned; -1, or the reopened file to switch to */
    bool new_torn;       /* new_fd ends inside a line */
    pthread_t thread;    /* the sink thread, once started */
    bool started;        /* main thread */
    struct kb_store *rd; /* owned; the sink thread's connection */
    int fd;              /* owned; O_APPEND; the sink thread's once started */
    char *path;          /* owned */
    int64_t last_seq;    /* last record written in full (sink thread) */
    bool torn;           /* the file may end inside a line (sink thread) */
    bool failing;        /* a write failed and was logged; cleared on success */
};

/* The seq of the last complete line of the file, or -1 when there is none
 * (or it is not one of ours); sets s->torn when the file ends mid-line. */
static int64_t tail_seq(struct kb_audit_sink *s)
{
    struct stat st;
    if (fstat(s->fd, &st) != 0 || st.st_size == 0)
        return -1;
    size_t n = st.st_size > TAIL_BYTES ? TAIL_BYTES : (size_t)st.st_size;
    char *buf = kb_malloc(n + 1);
    ssize_t got = pread(s->fd, buf, n, st.st_size - (off_t)n);
    int64_t seq = -1;
    if (got != (ssize_t)n)
        goto out;
    buf[n] = '\0';
    size_t end = n;
    if (buf[end - 1] != '\n') {
        s->torn = true;
        while (end > 0 && buf[end - 1] != '\n')
            end--; /* drop the torn tail */
    }
    if (end == 0)
        goto out;
    buf[end - 1] = '\0';
    char *line = strrchr(buf, '\n');
    line = line ? line + 1 : buf;
    json_t *j = json_loads(line, 0, NULL);
    json_t *v = json_object_get(j, "seq");
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        seq = json_integer_value(v);
    json_decref(j);
out:
    free(buf);
    return seq;
}

enum kb_err audit_sink_open(const char *path, struct kb_store *store, struct kb_audit_sink **out,
                            char **errmsg)
{
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        kb_set_errmsg(errmsg, "cannot open audit sink %s: %s", path, strerror(errno));
        return KB_E_IO;
    }
    struct kb_audit_sink *s = kb_calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &ca);
    pthread_condattr_destroy(&ca);
    s->new_fd = -1;
    s->fd = fd;
    s->path = kb_strdup(path);
    int64_t db_last = 0;
    uint8_t hash[KB_HASH_LEN];
    if (store_audit_last(store, &db_last, hash) != KB_OK) {
        kb_set_errmsg(errmsg, "cannot read the audit log");
        audit_sink_free(s);
        return KB_E_STORE;
    }
    store_audit_forget(store);
    int64_t file_last = tail_seq(s);
    /* A fresh (or foreign) file starts at the log's end: backfill history
     * with `keybrake audit export`. A file ahead of the database (restored
     * from an older backup) resumes at the database's end. */
    s->last_seq = file_last < 0 || file_last > db_last ? db_last : file_last;
    s->committed = s->last_seq;
    *out = s;
    return KB_OK;
}

static bool write_all(int fd, const char *p, size_t n, size_t *written)
{
    *written = 0;
    while (*written < n) {
        ssize_t w = write(fd, p + *written, n - *written);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        *written += (size_t)w;
    }
    return true;
}

/* Sink thread: switches to a file audit_sink_reopen opened, if any. */
static void take_new_file(struct kb_audit_sink *s)
{
    pthread_mutex_lock(&s->mu);
    int fd = s->new_fd;
    bool torn = s->new_torn;
    s->new_fd = -1;
    pthread_mutex_unlock(&s->mu);
    if (fd < 0)
        return;
    close(s->fd); /* the renamed file: every line it got is whole or redone */
    s->fd = fd;
    s->torn = torn;
}

/* One chunk of records to write: the lines, and where each ends. */
struct chunk {
    struct kb_buf text;  /* the lines, after a newline ending a torn line */
    size_t ends[CHUNK];  /* offset after line i */
    int64_t seqs[CHUNK]; /* seq of line i */
    int n;
};

/* Reads up to CHUNK records after last_seq into c, in one read snapshot
 * that ends here. KB_E_STORE when the read failed. */
static enum kb_err read_chunk(struct kb_audit_sink *s, struct chunk *c)
{
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    enum kb_err err = store_audit_rows(s->rd, s->last_seq, 0, 0, &it);
    buf_reset(&c->text);
    c->n = 0;
    if (s->torn)
        buf_putc(&c->text, '\n');
    while (err == KB_OK && c->n < CHUNK) {
        err = store_audit_row_next(it, &row);
        if (err != KB_OK)
            break;
        json_t *j = audit_row_json(&row);
        /* on a store several nodes share, each line says whose chain it
         * is on, as `keybrake audit export` does */
        if (store_caps(s->rd) & KB_STORE_SHARED)
            json_object_set_new(j, "node", json_string(store_node_id()));
        char *line = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        buf_puts(&c->text, line);
        buf_putc(&c->text, '\n');
        free(line);
        c->ends[c->n] = c->text.len;
        c->seqs[c->n++] = row.seq;
    }
    store_audit_iter_free(it);
    return err == KB_E_NOT_FOUND ? KB_OK : err;
}

/* Sink thread: writes every committed record after last_seq, a chunk at a
 * time. False when a read or a write failed (logged once). */
static bool catch_up(struct kb_audit_sink *s, struct chunk *c)
{
    int saved_errno = 0;
    for (;;) {
        take_new_file(s); /* between two writes */
        if (read_chunk(s, c) != KB_OK)
            goto fail;
        if (c->n == 0)
            break;
        size_t w = 0;
        bool ok = write_all(s->fd, c->text.data, c->text.len, &w);
        saved_errno = errno;
        size_t whole = 0;
        for (int i = 0; i < c->n && c->ends[i] <= w; i++) {
            s->last_seq = c->seqs[i];
            whole = c->ends[i];
        }
        s->torn = w > whole; /* part of a line went out: end it first next time */
        if (!ok)
            goto fail;
        if (c->n < CHUNK)
            break; /* that was the end of the log */
    }
    if (s->failing)
        kb_log(KB_LOG_INFO, "audit sink writes again", "path", s->path, NULL);
    s->failing = false;
    return true;
fail:
    if (!s->failing)
        kb_log(KB_LOG_WARN, "audit sink write failed; will retry", "path", s->path, "error",
               saved_errno ? strerror(saved_errno) : "store read failed", NULL);
    s->failing = true;
    return false;
}

/* The sink thread: catches up at once (records committed before it
 * started, by a crash or by start-up), then after each commit the hook
 * reports; at stop, once more, then exits. */
static void *sink_main(void *arg)
{
    struct kb_audit_sink *s = arg;
    struct chunk *c = kb_calloc(1, sizeof *c);
    bool ok = true;
    for (bool first = true;; first = false) {
        pthread_mutex_lock(&s->mu);
        struct timespec retry;
        clock_gettime(CLOCK_MONOTONIC, &retry);
        retry.tv_sec += RETRY_MS / 1000;
        if (!first && !s->stopping && !s->poke && s->new_fd < 0) {
            if (!ok) /* a failed write: again after the next commit or RETRY_MS */
                (void)pthread_cond_timedwait(&s->wake, &s->mu, &retry);
            else
                while (!s->stopping && !s->poke && s->new_fd < 0 && s->committed <= s->last_seq)
                    pthread_cond_wait(&s->wake, &s->mu);
        }
        bool stop = s->stopping;
        s->poke = false;
        pthread_mutex_unlock(&s->mu);
        ok = catch_up(s, c); /* after stop: everything committed, the last commit included */
        if (stop)
            break;
    }
    if (!ok)
        kb_log(KB_LOG_WARN, "audit sink stopped behind the store; the next start catches up",
               "path", s->path, NULL);
    buf_cleanup(&c->text);
    free(c);
    return NULL;
}

enum kb_err audit_sink_start(struct kb_audit_sink *s, const char *store_path,
                             const char *synchronous, char **errmsg)
{
    enum kb_err err = store_open(store_path, synchronous, false, &s->rd, errmsg);
    if (err != KB_OK)
        return err;
    int rc = pthread_create(&s->thread, NULL, sink_main, s);
    if (rc != 0) {
        kb_set_errmsg(errmsg, "cannot start the audit sink thread: %s", strerror(rc));
        store_close(s->rd);
        s->rd = NULL;
        return KB_E_INTERNAL;
    }
    s->started = true;
    return KB_OK;
}

void audit_sink_commit(int64_t seq, bool known, void *arg)
{
    struct kb_audit_sink *s = arg;
    pthread_mutex_lock(&s->mu);
    bool wake = !known || seq > s->committed;
    if (!known)
        s->poke = true;
    else if (seq > s->committed)
        s->committed = seq;
    pthread_mutex_unlock(&s->mu);
    if (wake)
        pthread_cond_signal(&s->wake);
}

enum kb_err audit_sink_reopen(struct kb_audit_sink *s, char **errmsg)
{
    int fd = open(s->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        kb_set_errmsg(errmsg, "cannot reopen audit sink %s: %s", s->path, strerror(errno));
        return KB_E_IO;
    }
    /* a file that ends mid-line (not rotated after a failed write, or not
     * ours) gets a newline before the next record, as at start */
    struct stat st;
    char last = '\n';
    if (fstat(fd, &st) == 0 && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
        last = 'x';
    if (!s->started) { /* no thread: switch now */
        close(s->fd);
        s->fd = fd;
        s->torn = last != '\n';
        return KB_OK;
    }
    pthread_mutex_lock(&s->mu);
    if (s->new_fd >= 0)
        close(s->new_fd); /* two reopens before the thread got to the first */
    s->new_fd = fd;
    s->new_torn = last != '\n';
    pthread_mutex_unlock(&s->mu);
    pthread_cond_signal(&s->wake);
    return KB_OK;
}

void audit_sink_free(struct kb_audit_sink *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_mutex_unlock(&s->mu);
        pthread_cond_signal(&s->wake);
        pthread_join(s->thread, NULL); /* it writes everything committed first */
    }
    store_close(s->rd);
    if (s->new_fd >= 0)
        close(s->new_fd);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    close(s->fd);
    free(s->path);
    free(s);
}
