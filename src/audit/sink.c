/*
 * sink.c - the optional JSONL copy of the audit log for a SIEM (config
 * audit_sink; see audit.h and docs/audit.md).
 *
 * The database is the record; the sink follows it. After each batch
 * commits, the writer thread calls audit_sink_commit, which appends every
 * committed record with a seq above the last one written, so a rolled back
 * record never reaches the file and a failed write is retried after the
 * next commit instead of being lost. On start the sink resumes after the
 * last complete line of the file, which also catches up records a crash
 * committed to the database but not to the file. Lines are write(2)n one at
 * a time through O_APPEND without fsync: a torn last line (crash mid-write)
 * is ended with a newline and the record written again in full.
 *
 * Rotation: audit_sink_reopen (SIGHUP, main thread) opens the path afresh
 * and swaps the descriptor under the sink's mutex, which the commit hook
 * holds while it writes: a line goes whole to the renamed file or whole to
 * the new one, and the new file continues after the last seq written, so
 * the two files together hold every record once.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/alloc.h"
#include "core/log.h"
#include "store/audit_store.h"

#define TAIL_BYTES 65536    /* enough for the longest line we write */
#define MAX_PER_COMMIT 4096 /* lines per commit hook: catch-up never stalls the writer long */

struct kb_audit_sink {
    pthread_mutex_t mu; /* guards fd and torn: the writer thread writes, SIGHUP reopens */
    int fd;           /* owned; O_APPEND */
    char *path;       /* owned */
    int64_t last_seq; /* last record written in full */
    bool torn;        /* the file may end inside a line */
    bool failing;     /* a write failed and was logged; cleared on success */
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

void audit_sink_commit(struct kb_store *store, void *arg)
{
    struct kb_audit_sink *s = arg;
    struct kb_audit_iter *it = NULL;
    struct kb_audit_row row;
    int saved_errno = 0;
    pthread_mutex_lock(&s->mu);
    if (store_audit_rows(store, s->last_seq, 0, 0, &it) != KB_OK)
        goto fail;
    for (int i = 0; i < MAX_PER_COMMIT; i++) {
        enum kb_err err = store_audit_row_next(it, &row);
        if (err == KB_E_NOT_FOUND)
            break;
        if (err != KB_OK)
            goto fail;
        json_t *j = audit_row_json(&row);
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        size_t w = 0;
        char *line = kb_asprintf("%s%s\n", s->torn ? "\n" : "", text);
        free(text);
        bool ok = write_all(s->fd, line, strlen(line), &w);
        free(line);
        if (!ok) {
            saved_errno = errno;
            if (w > 0)
                s->torn = true; /* part of a line went out */
            goto fail;
        }
        s->torn = false;
        s->last_seq = row.seq;
    }
    store_audit_iter_free(it);
    pthread_mutex_unlock(&s->mu);
    if (s->failing)
        kb_log(KB_LOG_INFO, "audit sink writes again", "path", s->path, NULL);
    s->failing = false;
    return;
fail:
    store_audit_iter_free(it);
    pthread_mutex_unlock(&s->mu);
    if (!s->failing)
        kb_log(KB_LOG_WARN, "audit sink write failed; will retry after the next commit", "path",
               s->path, "error", saved_errno ? strerror(saved_errno) : "store read failed", NULL);
    s->failing = true;
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
    pthread_mutex_lock(&s->mu);
    int old = s->fd;
    s->fd = fd;
    s->torn = last != '\n';
    pthread_mutex_unlock(&s->mu);
    close(old);
    return KB_OK;
}

void audit_sink_free(struct kb_audit_sink *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    close(s->fd);
    free(s->path);
    free(s);
}
