/*
 * log.c - logfmt/JSON records on stderr, written off the caller's thread.
 *
 * A record is assembled in a buffer by its caller. Before log_start, and
 * after log_stop, it is written there and then with one write(2), so
 * records from several threads never interleave within a line. In
 * between, the caller only appends it to one queue under a mutex (a
 * memcpy) and one log writer thread writes whatever has queued with one
 * write(2) per batch: a worker loop never waits for the disk or for a full
 * pipe. One mutex keeps each thread's records in order, whole, and in one
 * sequence. The queue holds at most QUEUE_BYTES (queued or being written):
 * when the output stalls (a pipe nobody reads, a stalled disk) records
 * beyond it are dropped, not waited for, counted in
 * keybrake_log_dropped_total, and reported by one record once a write
 * succeeds again.
 *
 * A log file (config log_file) is opened with O_APPEND and dup2()ed onto
 * stderr, so that it also receives what else goes there (sanitizer
 * reports, messages before the log is set up). Reopening for logrotate
 * does the same with a fresh open: dup2 replaces descriptor 2 atomically,
 * and a write(2) holds the open file it started with. While the writer
 * thread runs, the dup2 is its own, between two batches, so each batch
 * (and each record) goes whole to the old file or whole to the new one,
 * none is lost or torn, and SIGHUP never waits for a stalled log.
 */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/metrics.h"

#define QUEUE_BYTES ((size_t)4 << 20)   /* queued or being written; beyond: dropped */
#define KEEP_BYTES ((size_t)1 << 20)    /* a batch buffer larger than this is freed after use */
#define LINGER_NS 1000000               /* a batch collects records this long... */
#define LINGER_BYTES ((size_t)64 << 10) /* ...or until this much is queued */

/* The queue between the callers and the writer thread. */
static struct {
    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t wake;     /* the writer waits for records, a new file or stop;
                                CLOCK_MONOTONIC, set up by the first log_start */
    pthread_cond_t progress; /* log_flush waits for bytes written */
    pthread_t thread;
    bool running;          /* the writer thread takes records (else: written directly) */
    bool stopping;         /* log_stop: write what is queued, then exit */
    bool inited;           /* wake is set up */
    bool idle;             /* the writer waits on wake for a first record */
    bool lingering;        /* the writer collects a batch: wake it only when it grew large */
    struct kb_buf pending; /* owned; whole records, in the order they were queued */
    size_t queued;         /* bytes in pending and in the batch being written */
    uint64_t accepted;     /* bytes ever queued (log_flush's target) */
    uint64_t finished;     /* bytes ever written or lost by a failed write */
    uint64_t unreported;   /* records dropped since the last report */
    int new_fd;            /* owned; -1, or a file to put onto stderr before the next batch */
} q = {.mu = PTHREAD_MUTEX_INITIALIZER, .progress = PTHREAD_COND_INITIALIZER, .new_fd = -1};

/* Set at start and by a SIGHUP reload while workers log: relaxed atomics
 * (a line may use the old setting; none reads a torn one). */
static _Atomic int min_level = KB_LOG_INFO;
static _Atomic bool json_format;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

bool log_set_level(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            min_level = (enum kb_log_level)i;
            return true;
        }
    }
    return false;
}

bool log_set_format(const char *name)
{
    if (strcmp(name, "logfmt") == 0)
        json_format = false;
    else if (strcmp(name, "json") == 0)
        json_format = true;
    else
        return false;
    return true;
}

static char *file_path; /* owned; the log file, NULL: stderr as inherited (main thread) */

enum kb_err log_open_file(const char *path, char **errmsg)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        kb_set_errmsg(errmsg, "cannot open log file %s: %s", path, strerror(errno));
        return KB_E_IO;
    }
    pthread_mutex_lock(&q.mu);
    if (q.running) {
        /* the writer puts it in place between two batches */
        if (q.new_fd >= 0)
            close(q.new_fd); /* two reopens before the writer got to the first */
        q.new_fd = fd;
        pthread_cond_signal(&q.wake);
        pthread_mutex_unlock(&q.mu);
        goto done;
    }
    pthread_mutex_unlock(&q.mu);
    int rc;
    do
        rc = dup2(fd, STDERR_FILENO); /* the old file closes when its last write is done */
    while (rc < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (rc < 0) {
        kb_set_errmsg(errmsg, "cannot log to %s: %s", path, strerror(saved));
        return KB_E_IO;
    }
done:
    if (path != file_path) {
        free(file_path);
        file_path = kb_strdup(path);
    }
    return KB_OK;
}

enum kb_err log_reopen(char **errmsg)
{
    if (!file_path)
        return KB_OK;
    return log_open_file(file_path, errmsg);
}

void log_close_file(void)
{
    free(file_path);
    file_path = NULL;
}

bool log_enabled(enum kb_log_level level)
{
    return (int)level >= min_level;
}

/* Bytes a value can hold as they are: anything but a quote, a backslash
 * and control bytes (logfmt also quotes values with a space or '='). */
static bool plain(unsigned char c)
{
    return c >= 0x20 && c != 0x7f && c != '"' && c != '\\';
}

/* Escapes v for the current format; logfmt quotes only when needed. Runs
 * of plain bytes are copied at once (a byte at a time was most of the cost
 * of a record). */
static void put_value(struct kb_buf *b, const char *v)
{
    bool quote = json_format || *v == '\0';
    for (const char *p = v; *p && !quote; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20 || *p == 0x7f)
            quote = true;
    if (quote)
        buf_putc(b, '"');
    const unsigned char *p = (const unsigned char *)v;
    while (*p) {
        const unsigned char *run = p;
        while (*p && plain(*p))
            p++;
        if (p > run)
            buf_append(b, run, (size_t)(p - run));
        if (!*p)
            break;
        if (*p == '"' || *p == '\\') {
            buf_putc(b, '\\');
            buf_putc(b, (char)*p);
        } else if (json_format) {
            buf_printf(b, "\\u%04x", *p);
        } else {
            buf_printf(b, "\\x%02x", *p);
        }
        p++;
    }
    if (quote)
        buf_putc(b, '"');
}

static void put_field(struct kb_buf *b, const char *k, const char *v, bool first)
{
    if (json_format) {
        buf_puts(b, first ? "{" : ",");
        put_value(b, k);
        buf_putc(b, ':');
    } else {
        if (!first)
            buf_putc(b, ' ');
        buf_puts(b, k);
        buf_putc(b, '=');
    }
    put_value(b, v);
}

/* Writes all of p[0..n) to stderr, waiting (poll) when it is a
 * non-blocking pipe that is full. False on an error; *done says how much
 * went out. */
static bool write_all(const char *p, size_t n, size_t *done)
{
    *done = 0;
    while (*done < n) {
        ssize_t w = write(STDERR_FILENO, p + *done, n - *done);
        if (w > 0) {
            *done += (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
            (void)poll(&pfd, 1, -1);
        } else if (w == 0 || errno != EINTR) {
            return false;
        }
    }
    return true;
}

/* The "YYYY-MM-DDTHH:MM:SS.mmmZ" of now. gmtime_r and strftime cost more
 * than the rest of a record: each thread keeps the last second's text. */
static void timestamp(char ts[40])
{
    static _Thread_local time_t last_sec = -1;
    static _Thread_local char last_text[24];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != last_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        if (strftime(last_text, sizeof last_text, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
            last_text[0] = '\0';
        last_sec = now.tv_sec;
    }
    snprintf(ts, 40, "%s.%03dZ", last_text, (int)(now.tv_nsec / 1000000) % 1000);
}

static void format_record(struct kb_buf *b, enum kb_log_level level, const char *msg, va_list ap)
{
    char ts[40];
    timestamp(ts);
    buf_reserve(b, 384); /* an access line: one allocation */
    put_field(b, "ts", ts, true);
    put_field(b, "level", level_names[level], false);
    put_field(b, "msg", msg, false);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        put_field(b, k, v ? v : "", false);
    }
    buf_puts(b, json_format ? "}\n" : "\n");
}

/* Hands a whole record to the writer thread: false when it is not running
 * (the caller writes the record itself). A record over the budget is
 * dropped and counted. */
static bool enqueue(const char *p, size_t n)
{
    pthread_mutex_lock(&q.mu);
    if (!q.running) {
        pthread_mutex_unlock(&q.mu);
        return false;
    }
    if (q.queued + n > QUEUE_BYTES) {
        q.unreported++;
        pthread_mutex_unlock(&q.mu);
        metrics_log_dropped(1);
        return true;
    }
    buf_append(&q.pending, p, n);
    q.queued += n;
    q.accepted += n;
    bool wake = q.idle || (q.lingering && q.pending.len >= LINGER_BYTES);
    if (wake)
        q.idle = q.lingering = false; /* one signal is enough, however many records follow */
    pthread_mutex_unlock(&q.mu);
    if (wake)
        pthread_cond_signal(&q.wake);
    return true;
}

void kb_log(enum kb_log_level level, const char *msg, ...)
{
    if ((int)level < min_level)
        return;
    struct kb_buf b = KB_BUF_INIT;
    va_list ap;
    va_start(ap, msg);
    format_record(&b, level, msg, ap);
    va_end(ap);
    if (!enqueue(b.data, b.len)) {
        size_t done;
        (void)write_all(b.data, b.len, &done); /* nothing sensible to do when stderr is gone */
    }
    buf_cleanup(&b);
}

/* Counts the records (newlines) in p[0..n). */
static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t lines = 0;
    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        lines++;
    return lines;
}

/* Puts fd onto stderr and closes it (a reopened log file). */
static void swap_stderr(int fd)
{
    int rc;
    do
        rc = dup2(fd, STDERR_FILENO); /* the old file closes when its last write is done */
    while (rc < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (rc < 0)
        kb_log(KB_LOG_ERROR, "cannot switch to the reopened log file; still writing the old one",
               "error", strerror(saved), NULL);
}

/* The writer thread: once a record is queued, lets the batch collect for
 * LINGER_NS (or LINGER_BYTES), takes everything queued, writes it with one
 * write(2) (more when a pipe takes less at a time), and repeats. The
 * linger costs a record at most a millisecond and saves a wake-up and a
 * write(2) per record under load: waking the writer for every record cost
 * the callers more than the write it saved them. */
static void *writer_main(void *arg)
{
    (void)arg;
    struct kb_buf batch = KB_BUF_INIT;
    pthread_mutex_lock(&q.mu);
    for (;;) {
        while (q.pending.len == 0 && q.new_fd < 0 && !q.stopping) {
            q.idle = true;
            pthread_cond_wait(&q.wake, &q.mu);
        }
        q.idle = false;
        if (q.pending.len == 0 && q.new_fd < 0)
            break; /* stopping, and everything is written */
        if (!q.stopping && q.new_fd < 0 && q.pending.len < LINGER_BYTES) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += LINGER_NS;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            q.lingering = true;
            while (q.lingering && !q.stopping && q.new_fd < 0 &&
                   pthread_cond_timedwait(&q.wake, &q.mu, &until) == 0)
                ; /* woken: a large batch, a new file, stop or flush */
            q.lingering = false;
        }
        struct kb_buf t = batch; /* take the queue, leave an empty buffer */
        batch = q.pending;
        q.pending = t;
        int fd = q.new_fd;
        q.new_fd = -1;
        pthread_mutex_unlock(&q.mu);

        if (fd >= 0)
            swap_stderr(fd);
        size_t done = 0;
        bool ok = write_all(batch.data, batch.len, &done);
        uint64_t lost = ok ? 0 : count_lines(batch.data + done, batch.len - done);
        if (lost)
            metrics_log_dropped(lost);

        pthread_mutex_lock(&q.mu);
        q.queued -= batch.len;
        q.finished += batch.len;
        q.unreported += lost;
        pthread_cond_broadcast(&q.progress);
        if (batch.cap > KEEP_BYTES)
            buf_cleanup(&batch); /* a burst passed: give its memory back */
        else
            buf_reset(&batch);
        if (ok && q.unreported) {
            /* writing works again: say what was lost, once */
            char n[24];
            snprintf(n, sizeof n, "%llu", (unsigned long long)q.unreported);
            q.unreported = 0;
            pthread_mutex_unlock(&q.mu);
            kb_log(KB_LOG_WARN, "log lines dropped", "count", n, "reason",
                   "the log output was too slow; see keybrake_log_dropped_total", NULL);
            pthread_mutex_lock(&q.mu);
        }
    }
    q.running = false; /* from now on callers write directly */
    pthread_cond_broadcast(&q.progress);
    pthread_mutex_unlock(&q.mu);
    buf_cleanup(&batch);
    return NULL;
}

void log_start(void)
{
    pthread_mutex_lock(&q.mu);
    if (q.running) {
        pthread_mutex_unlock(&q.mu);
        return;
    }
    if (!q.inited) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a clock step never stalls the log */
        pthread_cond_init(&q.wake, &ca);
        pthread_condattr_destroy(&ca);
        q.inited = true;
    }
    q.running = true;
    q.stopping = false;
    int rc = pthread_create(&q.thread, NULL, writer_main, NULL);
    if (rc != 0)
        q.running = false;
    pthread_mutex_unlock(&q.mu);
    if (rc != 0)
        kb_log(KB_LOG_WARN, "cannot start the log writer thread; writing the log directly", "error",
               strerror(rc), NULL);
}

void log_flush(void)
{
    pthread_mutex_lock(&q.mu);
    uint64_t target = q.accepted;
    if (q.lingering) {
        q.lingering = false; /* no need to collect more */
        pthread_cond_signal(&q.wake);
    }
    while (q.running && q.finished < target)
        pthread_cond_wait(&q.progress, &q.mu);
    pthread_mutex_unlock(&q.mu);
}

void log_stop(void)
{
    pthread_mutex_lock(&q.mu);
    if (!q.running || q.stopping) {
        pthread_mutex_unlock(&q.mu);
        return;
    }
    q.stopping = true;
    pthread_cond_signal(&q.wake);
    pthread_mutex_unlock(&q.mu);
    pthread_join(q.thread, NULL);
    pthread_mutex_lock(&q.mu);
    q.stopping = false;
    buf_cleanup(&q.pending);
    pthread_mutex_unlock(&q.mu);
}
