/*
 * sqlite_wal.c - what the SQLite backend runs beside the store writer's
 * connection (backend.h: writer_attach, writer_idle, writer_detach): a
 * checkpointer thread and the WAL's pages kept resident. The writer
 * (writer.c) knows none of it.
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
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/sqlite_int.h"
#include "store/store.h"

#define CKPT_NUDGE 256       /* WAL pages of growth that wake the checkpointer */
#define CKPT_WRITER 8000     /* WAL pages (32 MiB at 4 KiB) at which the WAL should start over */
#define CKPT_HARD 16000      /* WAL pages from which the writer waits without a limit */
#define RESTART_WAIT_US 4000 /* the writer's first wait for the checkpointer's pass */
#define RESTART_WAIT_MAX_US 32000 /* its longest, after attempts that came too soon */
/* WAL bytes kept resident: as large as the WAL grows at CKPT_HARD pages of
 * 4 KiB, with room for a few batches */
#define WAL_PIN_MAX ((size_t)68 << 20)

struct sqlite_wal {
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
};

static void ckpt_request(struct sqlite_wal *w)
{
    pthread_mutex_lock(&w->ckpt_mu);
    w->ckpt_want = true;
    pthread_cond_signal(&w->ckpt_cond);
    pthread_mutex_unlock(&w->ckpt_mu);
}

/* Writer thread, after each commit, with the WAL's size in pages. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct sqlite_wal *w = arg;
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
static void restart_assist(struct sqlite_wal *w)
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
static void pin_open(struct sqlite_wal *w, sqlite3 *db)
{
    const char *name = sqlite3_db_filename(db, "main"); /* "" for a memory store */
    const char *wal = name && *name ? sqlite3_filename_wal(name) : NULL;
    w->pin_fd = wal ? open(wal, O_RDONLY | O_CLOEXEC) : -1;
    if (w->pin_fd < 0)
        kb_log(KB_LOG_INFO, "cannot open the WAL; its pages are not pinned", "error",
               wal ? strerror(errno) : "no WAL file name", NULL);
}

static void pin_stop(struct sqlite_wal *w)
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
static void pin_update(struct sqlite_wal *w)
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

static void *ckpt_main(void *arg)
{
    struct sqlite_wal *w = arg;
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

/* Stops and joins the checkpointer; the writer's own checkpoints go on. */
static void ckpt_stop(struct sqlite_wal *w)
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

void *sqlite__wal_attach(struct kb_store *s, const char *synchronous)
{
    struct sqlite_wal *w = kb_calloc(1, sizeof *w);
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
    /* without its own connection the writer checkpoints alone, as SQLite
     * would */
    const char *path = sqlite3_db_filename(store__db(s), "main");
    char *cerr = NULL;
    if (!path || !*path || store_open(path, synchronous, false, &w->ckpt_store, &cerr) != KB_OK) {
        kb_log(KB_LOG_WARN, "no checkpointer connection; the writer checkpoints alone", "error",
               cerr ? cerr : "no file", NULL);
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
    return w;
}

void sqlite__wal_idle(struct kb_store *s, void *state)
{
    (void)s;
    restart_assist(state);
}

void sqlite__wal_detach(struct kb_store *s, void *state)
{
    struct sqlite_wal *w = state;
    if (!w)
        return;
    sqlite3_wal_hook(store__db(s), NULL, NULL);
    ckpt_stop(w);
    free(w);
}

size_t sqlite__wal_resident(void *state)
{
    struct sqlite_wal *w = state;
    return w ? atomic_load(&w->pin_len) : 0;
}
