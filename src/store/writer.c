/*
 * writer.c - group commit (see writer.h).
 *
 * Submission: one queue for all ports under the writer's mutex; a submit
 * holds it for two pointer stores, and it gives one global commit order.
 * The writer thread takes up to max_batch jobs, runs them in one
 * BEGIN IMMEDIATE ... COMMIT with a savepoint each (unguarded jobs without:
 * SAVEPOINT and RELEASE were ~1 us of each proxy job, and its jobs never
 * fail alone), then hands each job to
 * its port's completion queue and pokes the port's eventfd; the port's
 * loop runs the `done` callbacks.
 *
 * Failure: a BEGIN or COMMIT that fails, a job that reports the store
 * itself failing (KB_E_STORE, KB_E_AUDIT_UNAVAILABLE), or a transaction
 * SQLite rolled back on its own (disk full, I/O error) fails the whole
 * batch: every job gets KB_E_AUDIT_UNAVAILABLE. The thread keeps going; the
 * next batch simply tries again, so recovery needs nothing.
 *
 * Checkpoints: SQLite's own auto-checkpoint runs inside the COMMIT that
 * crosses 1000 WAL pages, on the writer thread, and fsyncs the WAL and the
 * database there: every request waiting on that batch waits for the disk
 * (the p99 spikes of docs/benchmarks.md). Here a checkpointer thread with
 * its own connection copies WAL pages back into the database, fsyncs
 * included, whenever the WAL has grown by CKPT_NUDGE pages (the WAL hook
 * below replaces SQLite's auto-checkpoint).
 *
 * Restarts: the WAL starts over only when a write transaction begins on a
 * WAL that is wholly copied back, so a checkpointer that runs while the
 * writer keeps appending chases a WAL that never stops growing (4.7 GB in
 * a benchmark once). Once the WAL reaches CKPT_WRITER pages, the writer,
 * between two batches and when the checkpointer is idle, asks it for one
 * more pass and waits for that pass, at most RESTART_WAIT_US: it copies
 * what is left and fsyncs, and the writer's next transaction starts the
 * WAL over. The writer never fsyncs itself then; a disk that stalls costs
 * it at most the wait. The next attempt comes CKPT_NUDGE pages later and
 * may wait twice as long, up to RESTART_WAIT_MAX_US (a pass took 1-10 ms
 * here under full load). While a pass is running the writer does not wait
 * for it (it began before the last commit, so it cannot finish the job),
 * unless the WAL has reached CKPT_HARD pages: from there on (a disk
 * stalled for long) the writer waits for a fresh pass however long it
 * takes, once per CKPT_NUDGE pages, which bounds the WAL. Without a
 * checkpointer the writer checkpoints itself at CKPT_WRITER pages, fsyncs
 * and all, as SQLite would. The window (8000 pages, not 1000) keeps these
 * pauses rare; a 2000-page nudge measured worse than 256.
 *
 * The WAL stays in memory: a WAL frame is 24 bytes of header plus a page,
 * so nearly every frame the writer writes covers part of a file block, and
 * a block no longer in the page cache is read from disk before it can be
 * written. After a restart the writer overwrites the WAL from its start,
 * over pages written a second or more earlier; once the kernel has dropped
 * them (memory pressure, or a VM that trims its page cache: see
 * docs/benchmarks.md), each commit can wait on a disk read, and a disk that
 * stalls makes that read take 100 ms or more. So the checkpointer keeps a
 * read-only shared mapping of the WAL (up to WAL_PIN_MAX bytes), faulted
 * in: mapped pages are not dropped with the rest of the clean cache. The
 * mapping is never read after it is populated, so a WAL truncated under it
 * by another process cannot fault; MADV_POPULATE_READ reports such a
 * region as an error instead of SIGBUS. Where the kernel lacks it (before
 * 5.14), nothing is pinned.
 *
 * Lifetime: each job in flight holds a reference on its port. A port freed
 * with jobs pending is marked closed; the writer then frees those jobs
 * without their callback, and the last reference frees the port. Job nodes
 * are recycled through a small per-port freelist (loop thread only).
 */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/audit_store.h"
#include "store/sqlite_int.h"
#include "store/store.h"
#include "store/writer.h"

#define FREELIST_MAX 256     /* job nodes a port keeps for reuse */
#define CKPT_NUDGE 256       /* WAL pages of growth that wake the checkpointer */
#define CKPT_WRITER 8000     /* WAL pages (32 MiB at 4 KiB) at which the WAL should start over */
#define CKPT_HARD 16000      /* WAL pages from which the writer waits without a limit */
#define RESTART_WAIT_US 4000 /* the writer's first wait for the checkpointer's pass */
#define RESTART_WAIT_MAX_US 32000 /* its longest, after attempts that came too soon */
/* WAL bytes kept resident: as large as the WAL grows at CKPT_HARD pages of
 * 4 KiB, with room for a few batches */
#define WAL_PIN_MAX ((size_t)68 << 20)

struct job {
    struct job *next; /* queue link */
    kb_job_fn fn;
    kb_job_done_cb done;         /* may be NULL */
    void *arg;                   /* borrowed; the submitter's */
    struct kb_writer_port *port; /* holds a reference */
    enum kb_err err;             /* result, set by the writer */
    bool guarded;                /* runs in a savepoint of its own */
    bool ran;                    /* fn was called */
};

struct kb_writer_port {
    struct kb_writer *w;     /* borrowed */
    struct event *ev;        /* owned; eventfd readable */
    int efd;                 /* owned; eventfd */
    pthread_mutex_t mu;      /* guards head/tail/closed */
    struct job *head, *tail; /* completed jobs awaiting their callback */
    bool closed;             /* writer_port_free was called */
    atomic_int refs;         /* 1 for the owner + 1 per job in flight */
    struct job *free_list;   /* loop thread only */
    int nfree;               /* loop thread only */
    bool dispatching;        /* loop thread only: inside on_done */
    bool free_requested;     /* loop thread only: port freed from a done callback */
};

struct kb_writer {
    pthread_t thread;
    struct kb_store *store; /* owned; the writer thread's connection */
    int max_batch;
    pthread_mutex_t mu;      /* guards head/tail/stopping/idle */
    pthread_cond_t cond;     /* signalled on submit and on stop */
    struct job *head, *tail; /* submitted, not yet taken */
    bool stopping;
    bool idle; /* the thread waits on cond */
    kb_writer_commit_cb hook;
    void *hook_arg;
    sqlite3_stmt *tx[6]; /* owned; the transaction statements, prepared once
                            (the profile showed sqlite3_exec re-parsing them
                            for every job) */
    /* the checkpointer (see the top of the file) */
    pthread_t ckpt_thread;
    struct kb_store *ckpt_store; /* owned; the checkpointer's connection, NULL if none */
    pthread_mutex_t ckpt_mu;     /* guards ckpt_want, ckpt_stop, ckpt_started, ckpt_finished */
    pthread_cond_t ckpt_cond;    /* wakes the checkpointer */
    pthread_cond_t ckpt_passed;  /* a pass finished (the writer waits for one) */
    bool ckpt_want, ckpt_stop;
    uint64_t ckpt_started, ckpt_finished; /* passes */
    int ckpt_nudged_at;                   /* writer thread: WAL size when last nudged */
    int wal_pages;                        /* writer thread: WAL size after the last commit */
    int restart_next_at;                  /* writer thread: WAL size of the next restart attempt */
    int restart_wait_us;                  /* writer thread: how long the next attempt waits */
    /* the WAL's pages kept resident (checkpointer thread) */
    int pin_fd;            /* the WAL, read-only; -1 when not pinning */
    void *pin_addr;        /* PROT_READ, MAP_SHARED; NULL when nothing is mapped */
    atomic_size_t pin_len; /* bytes mapped and populated; read by writer_wal_pinned */
    /* readiness (writer_failing_since, writer_probe) */
    _Atomic int64_t failing_since; /* clock_now_ms of the first failed batch since the last
                                      commit; 0 while commits succeed */
    atomic_bool probing;           /* a probe is queued or running */
    kb_job_done_cb probe_done;     /* the probe's caller's (set while probing) */
    void *probe_arg;
};

enum tx_stmt {
    TX_BEGIN = 0,       /* BEGIN IMMEDIATE */
    TX_SAVEPOINT = 1,   /* SAVEPOINT j */
    TX_ROLLBACK_TO = 2, /* ROLLBACK TO j */
    TX_RELEASE = 3,     /* RELEASE j */
    TX_COMMIT = 4,      /* COMMIT */
    TX_ROLLBACK = 5,    /* ROLLBACK */
};

static const char *const tx_sql[6] = {"BEGIN IMMEDIATE", "SAVEPOINT j", "ROLLBACK TO j",
                                      "RELEASE j",       "COMMIT",      "ROLLBACK"};

static void port_unref(struct kb_writer_port *p, int n)
{
    if (atomic_fetch_sub(&p->refs, n) != n)
        return;
    /* last reference: nobody else can reach the port */
    for (struct job *j = p->free_list, *next; j; j = next) {
        next = j->next;
        free(j);
    }
    close(p->efd);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Writer thread: hands a finished job back to its port. */
static void complete(struct job *j)
{
    struct kb_writer_port *p = j->port;
    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        free(j);
        port_unref(p, 1);
        return;
    }
    j->next = NULL;
    bool was_empty = p->head == NULL;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    if (was_empty) {
        /* under the mutex: the port cannot be freed before the write */
        uint64_t one = 1;
        ssize_t rc;
        do
            rc = write(p->efd, &one, sizeof one);
        while (rc < 0 && errno == EINTR);
    }
    pthread_mutex_unlock(&p->mu);
}

static bool exec(sqlite3 *db, const char *q)
{
    return sqlite3_exec(db, q, NULL, NULL, NULL) == SQLITE_OK;
}

/* Runs one transaction statement, prepared on first use. */
static bool tx(struct kb_writer *w, enum tx_stmt which)
{
    sqlite3 *db = store__db(w->store);
    if (!w->tx[which] && sqlite3_prepare_v3(db, tx_sql[which], -1, SQLITE_PREPARE_PERSISTENT,
                                            &w->tx[which], NULL) != SQLITE_OK)
        return exec(db, tx_sql[which]);
    int rc = sqlite3_step(w->tx[which]);
    sqlite3_reset(w->tx[which]);
    return rc == SQLITE_DONE;
}

/* Runs one batch in one transaction; sets every job's err. */
static void run_batch(struct kb_writer *w, struct job *batch)
{
    sqlite3 *db = store__db(w->store);
    int64_t t0 = clock_mono_us();
    enum kb_err unguarded = KB_OK; /* an unguarded job's own failure */
    bool ok = tx(w, TX_BEGIN);
    if (ok)
        store_audit_head_sync(w->store); /* the chain head, from memory if nobody else wrote */
    for (struct job *j = batch; ok && j; j = j->next) {
        if (j->guarded && !tx(w, TX_SAVEPOINT)) {
            ok = false;
            break;
        }
        j->ran = true;
        j->err = j->fn(w->store, j->arg);
        if (sqlite3_get_autocommit(db)) {
            /* SQLite rolled the whole transaction back (full disk, I/O
             * error): the earlier jobs' work is gone too */
            ok = false;
            break;
        }
        if (j->err == KB_E_STORE || j->err == KB_E_AUDIT_UNAVAILABLE) {
            ok = false;
            break;
        }
        if (!j->guarded) {
            /* nothing can undo this job's work alone */
            if (j->err != KB_OK) {
                unguarded = j->err;
                ok = false;
                break;
            }
            continue;
        }
        if (j->err != KB_OK) {
            store_audit_head_drop(w->store); /* the job may have appended first */
            if (!tx(w, TX_ROLLBACK_TO)) {
                ok = false;
                break;
            }
        }
        if (!tx(w, TX_RELEASE)) {
            ok = false;
            break;
        }
    }
    if (ok && !tx(w, TX_COMMIT))
        ok = false;
    metrics_observe(KB_H_COMMIT, clock_mono_us() - t0);
    if (!ok) {
        store_audit_head_drop(w->store);
        int code = sqlite3_extended_errcode(db);
        if (!sqlite3_get_autocommit(db))
            (void)tx(w, TX_ROLLBACK);
        char num[16];
        snprintf(num, sizeof num, "%d", code);
        if (unguarded != KB_OK)
            kb_log(KB_LOG_ERROR, "an unguarded store job failed; answering audit_unavailable",
                   "code", kb_strerror(unguarded), NULL);
        else
            kb_log(KB_LOG_ERROR, "store batch failed; answering audit_unavailable", "sqlite_code",
                   num, "error", sqlite3_errstr(code), NULL);
        for (struct job *j = batch; j; j = j->next)
            j->err = KB_E_AUDIT_UNAVAILABLE;
        int64_t zero = 0; /* keep the first failure's time */
        int64_t now = clock_now_ms();
        atomic_compare_exchange_strong(&w->failing_since, &zero, now > 0 ? now : 1);
        return;
    }
    if (atomic_load_explicit(&w->failing_since, memory_order_relaxed) != 0) {
        atomic_store(&w->failing_since, 0);
        kb_log(KB_LOG_INFO, "store commits again", NULL);
    }
    if (w->hook)
        w->hook(w->store, w->hook_arg);
}

static void ckpt_request(struct kb_writer *w)
{
    pthread_mutex_lock(&w->ckpt_mu);
    w->ckpt_want = true;
    pthread_cond_signal(&w->ckpt_cond);
    pthread_mutex_unlock(&w->ckpt_mu);
}

/* Writer thread, after each commit, with the WAL's size in pages. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct kb_writer *w = arg;
    if (pages < w->wal_pages) { /* the WAL started over */
        w->ckpt_nudged_at = 0;
        w->restart_next_at = CKPT_WRITER;
        w->restart_wait_us = RESTART_WAIT_US;
    }
    w->wal_pages = pages;
    if (w->ckpt_store && pages - w->ckpt_nudged_at >= CKPT_NUDGE) {
        w->ckpt_nudged_at = pages;
        ckpt_request(w);
    }
    if (!w->ckpt_store && pages >= CKPT_WRITER)
        (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

/*
 * Writer thread, between batches: once the WAL is due to start over, lets
 * the checkpointer copy back the rest and waits for that pass (see the top
 * of the file), so that the next transaction can start the WAL over.
 */
static void restart_assist(struct kb_writer *w)
{
    if (!w->ckpt_store || w->wal_pages < w->restart_next_at)
        return;
    bool hard = w->wal_pages >= CKPT_HARD;
    pthread_mutex_lock(&w->ckpt_mu);
    bool busy = w->ckpt_started != w->ckpt_finished;
    pthread_mutex_unlock(&w->ckpt_mu);
    if (busy && !hard)
        return; /* a pass that began before the last commit: after the next batch */
    /* if this attempt fails: the next one, later and longer */
    w->restart_next_at = w->wal_pages + CKPT_NUDGE;
    int wait_us = w->restart_wait_us;
    if (w->restart_wait_us < RESTART_WAIT_MAX_US)
        w->restart_wait_us *= 2;
    int64_t t0 = clock_mono_us();
    struct timespec deadline; /* unused when hard */
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_us / 1000000;
    deadline.tv_nsec += (wait_us % 1000000) * 1000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->ckpt_mu);
    uint64_t target = w->ckpt_started + 1; /* the pass asked for below */
    w->ckpt_want = true;
    pthread_cond_signal(&w->ckpt_cond);
    while (w->ckpt_finished < target && !w->ckpt_stop) {
        if (hard)
            pthread_cond_wait(&w->ckpt_passed, &w->ckpt_mu);
        else if (pthread_cond_timedwait(&w->ckpt_passed, &w->ckpt_mu, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&w->ckpt_mu);
    w->ckpt_nudged_at = w->wal_pages;
    metrics_observe(KB_H_WAL_RESTART, clock_mono_us() - t0);
}

/* Main thread: opens the WAL of `db` for pin_update; without it nothing is
 * pinned. */
static void pin_open(struct kb_writer *w, sqlite3 *db)
{
    const char *name = sqlite3_db_filename(db, "main"); /* "" for a memory store */
    const char *wal = name && *name ? sqlite3_filename_wal(name) : NULL;
    w->pin_fd = wal ? open(wal, O_RDONLY | O_CLOEXEC) : -1;
    if (w->pin_fd < 0)
        kb_log(KB_LOG_INFO, "cannot open the WAL; its pages are not pinned", "error",
               wal ? strerror(errno) : "no WAL file name", NULL);
}

static void pin_stop(struct kb_writer *w)
{
    if (w->pin_addr)
        munmap(w->pin_addr, w->pin_len);
    if (w->pin_fd >= 0)
        close(w->pin_fd);
    w->pin_addr = NULL;
    w->pin_fd = -1;
    atomic_store(&w->pin_len, 0);
}

/* Checkpointer thread: maps and faults in the WAL's whole pages up to its
 * current size (at most WAL_PIN_MAX) when it has grown past the mapping. */
static void pin_update(struct kb_writer *w)
{
    struct stat st;
    if (w->pin_fd < 0 || fstat(w->pin_fd, &st) != 0)
        return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t want = (size_t)st.st_size / page * page;
    if (want > WAL_PIN_MAX)
        want = WAL_PIN_MAX;
    if (want <= w->pin_len)
        return;
    void *a = mmap(NULL, want, PROT_READ, MAP_SHARED, w->pin_fd, 0);
    if (a == MAP_FAILED) {
        kb_log(KB_LOG_INFO, "cannot map the WAL; its pages are not pinned", "error",
               strerror(errno), NULL);
        pin_stop(w);
        return;
    }
    if (madvise(a, want, MADV_POPULATE_READ) != 0 && errno != EFAULT) {
        /* EINVAL: a kernel before 5.14. EFAULT: the WAL shrank meanwhile,
         * what exists is populated and the next pass maps it again */
        kb_log(KB_LOG_INFO, "cannot populate the WAL mapping; its pages are not pinned", "error",
               strerror(errno), NULL);
        munmap(a, want);
        pin_stop(w);
        return;
    }
    /* the new mapping holds the pages before the old one lets them go */
    if (w->pin_addr)
        munmap(w->pin_addr, w->pin_len);
    w->pin_addr = a;
    atomic_store(&w->pin_len, want);
}

size_t writer_wal_pinned(struct kb_writer *w)
{
    return atomic_load(&w->pin_len);
}

static void *ckpt_main(void *arg)
{
    struct kb_writer *w = arg;
    sqlite3 *db = store__db(w->ckpt_store);
    pthread_mutex_lock(&w->ckpt_mu);
    for (;;) {
        while (!w->ckpt_want && !w->ckpt_stop)
            pthread_cond_wait(&w->ckpt_cond, &w->ckpt_mu);
        if (w->ckpt_stop)
            break;
        w->ckpt_want = false;
        w->ckpt_started++;
        pthread_mutex_unlock(&w->ckpt_mu);
        /* PASSIVE: never waits for the writer or a reader; what it cannot
         * copy now, a later pass does */
        int64_t t0 = clock_mono_us();
        (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        metrics_observe(KB_H_CHECKPOINT, clock_mono_us() - t0);
        pin_update(w);
        pthread_mutex_lock(&w->ckpt_mu);
        w->ckpt_finished++;
        pthread_cond_broadcast(&w->ckpt_passed);
    }
    pthread_mutex_unlock(&w->ckpt_mu);
    return NULL;
}

static void *writer_main(void *arg)
{
    struct kb_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping) {
            w->idle = true;
            pthread_cond_wait(&w->cond, &w->mu);
            w->idle = false;
        }
        if (!w->head)
            break; /* stopping, and everything submitted has run */
        struct job *batch = w->head, *last = batch;
        for (int n = 1; n < w->max_batch && last->next; n++)
            last = last->next;
        w->head = last->next;
        if (!w->head)
            w->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->mu);

        run_batch(w, batch);
        /* A fire-and-forget job owns its argument (it frees it): one that
         * an earlier job's failure kept from running runs now, alone, so it
         * is neither lost nor leaked. */
        for (struct job *j = batch; j; j = j->next)
            if (!j->ran && !j->done) {
                struct job *rest = j->next;
                j->next = NULL;
                run_batch(w, j);
                j->next = rest;
            }
        for (struct job *j = batch, *next; j; j = next) {
            next = j->next;
            complete(j);
        }
        restart_assist(w);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Stops and joins the checkpointer; the writer's own checkpoints go on. */
static void ckpt_stop(struct kb_writer *w)
{
    if (w->ckpt_store) {
        pthread_mutex_lock(&w->ckpt_mu);
        w->ckpt_stop = true;
        pthread_cond_signal(&w->ckpt_cond);
        pthread_mutex_unlock(&w->ckpt_mu);
        pthread_join(w->ckpt_thread, NULL);
        pin_stop(w);
        store_close(w->ckpt_store);
        w->ckpt_store = NULL;
    }
    pthread_cond_destroy(&w->ckpt_cond);
    pthread_cond_destroy(&w->ckpt_passed);
    pthread_mutex_destroy(&w->ckpt_mu);
}

enum kb_err writer_new(const char *path, const char *synchronous, int max_batch,
                       struct kb_writer **out, char **errmsg)
{
    struct kb_store *s = NULL;
    enum kb_err err = store_open(path, synchronous, false, &s, errmsg);
    if (err != KB_OK)
        return err;
    struct kb_writer *w = kb_calloc(1, sizeof *w);
    w->store = s;
    w->max_batch = max_batch > 0 ? max_batch : 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    pthread_mutex_init(&w->ckpt_mu, NULL);
    pthread_cond_init(&w->ckpt_cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->ckpt_passed, &ca);
    pthread_condattr_destroy(&ca);
    w->restart_next_at = CKPT_WRITER;
    w->restart_wait_us = RESTART_WAIT_US;
    w->pin_fd = -1;
    /* without its own connection the writer checkpoints alone, as before */
    char *cerr = NULL;
    if (store_open(path, synchronous, false, &w->ckpt_store, &cerr) != KB_OK) {
        kb_log(KB_LOG_WARN, "no checkpointer connection; the writer checkpoints alone", "error",
               cerr, NULL);
        w->ckpt_store = NULL;
    } else {
        pin_open(w, store__db(w->ckpt_store));
        if (pthread_create(&w->ckpt_thread, NULL, ckpt_main, w) != 0) {
            pin_stop(w);
            store_close(w->ckpt_store);
            w->ckpt_store = NULL;
        }
    }
    free(cerr);
    sqlite3_wal_hook(store__db(s), wal_hook, w);
    int rc = pthread_create(&w->thread, NULL, writer_main, w);
    if (rc != 0) {
        kb_set_errmsg(errmsg, "cannot start the writer thread: %s", strerror(rc));
        ckpt_stop(w);
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->mu);
        store_close(s);
        free(w);
        return KB_E_INTERNAL;
    }
    *out = w;
    return KB_OK;
}

void writer_set_commit_hook(struct kb_writer *w, kb_writer_commit_cb cb, void *arg)
{
    pthread_mutex_lock(&w->mu); /* publishes to the writer thread */
    w->hook = cb;
    w->hook_arg = arg;
    pthread_mutex_unlock(&w->mu);
}

void writer_free(struct kb_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL); /* the thread drains the queue first */
    ckpt_stop(w);
    store_audit_forget(w->store);
    store_close(w->store);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* Loop thread: runs the callbacks of every completed job. */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct kb_writer_port *p = arg;
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN && errno != EINTR)
        kb_log(KB_LOG_WARN, "writer port eventfd read failed", "error", strerror(errno), NULL);
    pthread_mutex_lock(&p->mu);
    struct job *list = p->head;
    p->head = p->tail = NULL;
    pthread_mutex_unlock(&p->mu);

    int finished = 0;
    p->dispatching = true;
    for (struct job *j = list, *next; j; j = next) {
        next = j->next;
        kb_job_done_cb done = p->free_requested ? NULL : j->done;
        void *jarg = j->arg;
        enum kb_err err = j->err;
        /* recycle before the callback, which may submit again */
        if (p->nfree < FREELIST_MAX) {
            j->next = p->free_list;
            p->free_list = j;
            p->nfree++;
        } else {
            free(j);
        }
        finished++;
        if (done)
            done(jarg, err);
    }
    p->dispatching = false;
    if (p->free_requested) {
        port_unref(p, finished); /* before the final free below drops the owner's */
        finished = 0;
        p->free_requested = false;
        writer_port_free(p);
        return;
    }
    if (finished)
        port_unref(p, finished);
}

struct kb_writer_port *writer_port_new(struct kb_writer *w, struct event_base *base)
{
    struct kb_writer_port *p = kb_calloc(1, sizeof *p);
    p->w = w;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0)
        abort(); /* fd exhaustion at start-up: nothing sensible to do */
    pthread_mutex_init(&p->mu, NULL);
    atomic_init(&p->refs, 1);
    p->ev = event_new(base, p->efd, EV_READ | EV_PERSIST, on_done, p);
    if (!p->ev || event_add(p->ev, NULL) != 0)
        abort();
    return p;
}

void writer_port_free(struct kb_writer_port *p)
{
    if (!p)
        return;
    if (p->dispatching) {
        /* called from a done callback: finish in on_done */
        p->free_requested = true;
        return;
    }
    event_free(p->ev);
    p->ev = NULL;
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    struct job *list = p->head;
    p->head = p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    int n = 1; /* the owner's reference */
    for (struct job *j = list, *next; j; j = next) {
        next = j->next;
        free(j); /* completed; freed without its callback */
        n++;
    }
    port_unref(p, n);
}

static void submit(struct kb_writer_port *p, kb_job_fn fn, kb_job_done_cb done, void *arg,
                   bool guarded)
{
    struct job *j = p->free_list;
    if (j) {
        p->free_list = j->next;
        p->nfree--;
    } else {
        j = kb_malloc(sizeof *j);
    }
    j->next = NULL;
    j->fn = fn;
    j->done = done;
    j->arg = arg;
    j->port = p;
    j->err = KB_OK;
    j->guarded = guarded;
    j->ran = false;
    atomic_fetch_add(&p->refs, 1);

    struct kb_writer *w = p->w;
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    if (w->idle)
        pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

void writer_submit(struct kb_writer_port *p, kb_job_fn fn, kb_job_done_cb done, void *arg)
{
    submit(p, fn, done, arg, true);
}

void writer_submit_unguarded(struct kb_writer_port *p, kb_job_fn fn, kb_job_done_cb done, void *arg)
{
    submit(p, fn, done, arg, false);
}

/* ---- readiness ---- */

int64_t writer_failing_since(struct kb_writer *w)
{
    return atomic_load(&w->failing_since);
}

/* Writer thread: the smallest write that reaches the disk. Rewriting
 * user_version (unused by the schema, which keeps its own table) with its
 * own value changes nothing, yet appends a WAL frame and syncs like any
 * commit, so it fails where a full disk or an I/O error fails requests.
 * An UPDATE to the same value would not do: SQLite skips writing it. */
static enum kb_err probe_job(struct kb_store *s, void *arg)
{
    (void)arg;
#ifdef KB_TEST_HOOKS
    /* the KEYBRAKE_TEST_FAIL_AUDIT flag file stands for a full disk (see
     * audit_append): the probe's write fails with the others */
    const char *flag = getenv("KEYBRAKE_TEST_FAIL_AUDIT");
    if (flag && access(flag, F_OK) == 0)
        return KB_E_STORE;
#endif
    sqlite3 *db = store__db(s);
    sqlite3_stmt *st = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    char q[48];
    snprintf(q, sizeof q, "PRAGMA user_version = %d", version);
    return version >= 0 && exec(db, q) ? KB_OK : KB_E_STORE;
}

/* Port's loop: the probe's batch committed or failed. */
static void probe_done(void *arg, enum kb_err err)
{
    struct kb_writer *w = arg;
    kb_job_done_cb done = w->probe_done;
    void *darg = w->probe_arg;
    atomic_store(&w->probing, false); /* before the callback, which may probe again */
    if (done)
        done(darg, err);
}

bool writer_probe(struct kb_writer_port *p, kb_job_done_cb done, void *arg)
{
    struct kb_writer *w = p->w;
    if (atomic_exchange(&w->probing, true))
        return false;
    /* one probe at a time: its callback lives here, nothing to free */
    w->probe_done = done;
    w->probe_arg = arg;
    writer_submit(p, probe_job, probe_done, w);
    return true;
}
