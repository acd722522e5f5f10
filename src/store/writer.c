/*
 * writer.c - group commit (see writer.h).
 *
 * Submission: one queue for all ports under the writer's mutex; a submit
 * holds it for two pointer stores, and it gives one global commit order.
 * The writer thread takes up to max_batch jobs, runs them in one
 * transaction with a savepoint each (unguarded jobs without: SAVEPOINT and
 * RELEASE were ~1 us of each proxy job, and its jobs never fail alone),
 * then posts each job to its port's mailbox (core/mailbox.h, the same
 * thread-to-loop mailbox the store readers answer through); the port's
 * loop runs the `done` callbacks. Consecutive jobs of one group
 * (writer_submit_group: the proxy's admissions, its settlements) run as
 * one call with their arguments, so a backend that pays a round trip per
 * statement (PostgreSQL) pays one for the run, not one per request.
 *
 * Failure: a BEGIN or COMMIT that fails, a job that reports the store
 * itself failing (KB_E_STORE, KB_E_AUDIT_UNAVAILABLE), or a transaction
 * SQLite rolled back on its own (disk full, I/O error) fails the whole
 * batch: every job gets KB_E_AUDIT_UNAVAILABLE. The thread keeps going; the
 * next batch simply tries again, so recovery needs nothing.
 *
 * Deferred commit: where a round trip costs more than the work
 * (PostgreSQL), a batch's COMMIT is sent and the writer goes on to the
 * next batch without waiting for its answer (store_commit_later), which is
 * read with the next batch's first round trip; the batch is completed once
 * its outcome is known (pending_done). With no next batch in the queue the
 * answer is waited for at once (store_commit_flush). A batch whose
 * deferred commit failed fails the next one too, since its audit records
 * chained on the failed one's.
 *
 * Backend upkeep: between batches the writer lets its backend do what it
 * runs beside the writer (store_writer_idle; SQLite: the WAL checkpointer,
 * sqlite_wal.c). The transactions themselves are the backend's explicit
 * transaction operations (store.h), so nothing here is SQLite's.
 *
 * Lifetime: each job in flight holds a hold on its port's mailbox. A port
 * freed with jobs pending closes its mailbox: those jobs still run, and
 * are then freed without their callback. Job nodes are recycled through a
 * small per-port freelist (loop thread only).
 */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/mailbox.h"
#include "core/metrics.h"
#include "store/audit_store.h"
#include "store/store.h"
#include "store/writer.h"

#define FREELIST_MAX 256 /* job nodes a port keeps for reuse */

struct job {
    struct kb_mail mail;              /* first: back to the port's loop (core/mailbox.h) */
    struct job *next;                 /* queue link */
    kb_job_fn fn;                     /* NULL for a grouped job */
    const struct kb_job_group *group; /* NULL for a job of its own */
    kb_job_done_cb done;              /* may be NULL */
    void *arg;                        /* borrowed; the submitter's */
    struct kb_writer_port *port;      /* loop thread only: its free list */
    struct kb_mailbox *mb;            /* the port's; a hold per job in flight */
    enum kb_err err;                  /* result, set by the writer */
    bool guarded;                     /* runs in a savepoint of its own */
    bool ran;                         /* fn was called */
};

struct kb_writer_port {
    struct kb_writer *w;   /* borrowed */
    struct kb_mailbox *mb; /* owned; closed by writer_port_free */
    struct job *free_list; /* loop thread only */
    int nfree;             /* loop thread only */
};

struct kb_writer {
    pthread_t thread;
    struct kb_store *store; /* owned; the writer thread's connection */
    int max_batch;
    void **run_args;         /* max_batch slots: a group's arguments (writer thread) */
    pthread_mutex_t mu;      /* guards head/tail/stopping/idle */
    pthread_cond_t cond;     /* signalled on submit and on stop */
    struct job *head, *tail; /* submitted, not yet taken */
    bool stopping;
    bool idle; /* the thread waits on cond */
    kb_writer_commit_cb hook;
    void *hook_arg;
    /* a batch whose COMMIT the backend sends with the next batch's first
     * round trip (store_commit_later), until its outcome is known (writer
     * thread) */
    struct job *pending;
    int64_t pending_t0;
    int64_t pending_head;
    bool pending_known;
    void *upkeep; /* the backend's, beside this connection (store_writer_attach) */
    /* readiness (writer_failing_since, writer_probe) */
    _Atomic int64_t failing_since; /* clock_now_ms of the first failed batch since the last
                                      commit; 0 while commits succeed */
    atomic_bool probing;           /* a probe is queued or running */
    kb_job_done_cb probe_done;     /* the probe's caller's (set while probing) */
    void *probe_arg;
};

/* Loop thread: the job's batch committed (or failed to): its callback. */
static void job_deliver(struct kb_mail *m)
{
    struct job *j = (struct job *)m;
    struct kb_writer_port *p = j->port;
    kb_job_done_cb done = j->done;
    void *jarg = j->arg;
    enum kb_err err = j->err;
    /* recycle before the callback, which may submit again or free the
     * port (the mailbox then drops what is left) */
    if (p->nfree < FREELIST_MAX) {
        j->next = p->free_list;
        p->free_list = j;
        p->nfree++;
    } else {
        free(j);
    }
    if (done)
        done(jarg, err);
}

/* The port was freed first: the job completes without its callback. */
static void job_drop(struct kb_mail *m)
{
    free(m);
}

/* Writer thread: hands a batch's finished jobs back to their ports'
 * loops, the jobs of one port as one chain (one lock, at most one
 * wake-up per port and batch), in batch order. */
#define CHAINS 32
static void complete_all(struct job *batch)
{
    struct {
        struct kb_mailbox *mb;
        struct kb_mail *first, *last;
        int n;
    } c[CHAINS];
    int nc = 0;
    for (struct job *j = batch, *next; j; j = next) {
        next = j->next;
        j->mail.deliver = job_deliver;
        j->mail.drop = job_drop;
        j->mail.next = NULL;
        int i = 0;
        while (i < nc && c[i].mb != j->mb)
            i++;
        if (i == nc && nc == CHAINS) { /* more ports than chains: this one alone */
            mailbox_post(j->mb, &j->mail);
            continue;
        }
        if (i == nc) {
            c[nc].mb = j->mb;
            c[nc].first = &j->mail;
            c[nc].n = 0;
            nc++;
        } else {
            c[i].last->next = &j->mail;
        }
        c[i].last = &j->mail;
        c[i].n++;
    }
    for (int i = 0; i < nc; i++)
        mailbox_post_chain(c[i].mb, c[i].first, c[i].last, c[i].n);
}

/* Writer thread: the grouped jobs first..last (a run), each group's in
 * one call, the groups by ascending rank; the first failure. */
static enum kb_err run_groups(struct kb_writer *w, struct kb_store *s, struct job *first,
                              struct job *last)
{
    const struct kb_job_group *done[8];
    int ndone = 0;
    for (;;) {
        /* the group of lowest rank not yet run */
        const struct kb_job_group *g = NULL;
        for (struct job *j = first;; j = j->next) {
            bool ran = false;
            for (int i = 0; i < ndone; i++)
                ran |= done[i] == j->group;
            if (!ran && (!g || j->group->rank < g->rank))
                g = j->group;
            if (j == last)
                break;
        }
        if (!g)
            return KB_OK;
        if (ndone == (int)(sizeof done / sizeof *done))
            return KB_E_INTERNAL; /* more kinds of group than there are: a bug */
        done[ndone++] = g;
        size_t n = 0;
        for (struct job *j = first;; j = j->next) {
            if (j->group == g)
                w->run_args[n++] = j->arg;
            if (j == last)
                break;
        }
        enum kb_err err = g->run(s, w->run_args, n);
        if (err != KB_OK)
            return err;
    }
}

/* Writer thread: the batch committed (ok) or not: every job's result,
 * readiness, the commit hook, then the answers. `deferred`: called from
 * the backend once a deferred commit's outcome is known, inside the next
 * transaction: nothing here may use the store then. */
static void batch_end(struct kb_writer *w, struct job *batch, bool ok, bool began,
                      enum kb_err unguarded, int64_t t0, int64_t head, bool head_known,
                      bool deferred)
{
    struct kb_store *s = w->store;
    metrics_observe(KB_H_COMMIT, clock_mono_us() - t0);
    if (!ok) {
        store_audit_head_drop(s); /* memory only */
        const char *why = store_last_error(s);
        if (!deferred)
            store_rollback(s);
        if (unguarded != KB_OK)
            kb_log(KB_LOG_ERROR, "an unguarded store job failed; answering audit_unavailable",
                   "code", kb_strerror(unguarded), NULL);
        else
            kb_log(KB_LOG_ERROR,
                   began ? "store batch failed; answering audit_unavailable"
                         : "store unreachable; answering store_unavailable",
                   "error", why, NULL);
        /* nothing could even begin (a store server that does not answer):
         * the store is unavailable; a batch that began and failed could
         * not make its audit records durable */
        for (struct job *j = batch; j; j = j->next)
            j->err = began ? KB_E_AUDIT_UNAVAILABLE : KB_E_STORE;
        int64_t zero = 0; /* keep the first failure's time */
        int64_t now = clock_now_ms();
        atomic_compare_exchange_strong(&w->failing_since, &zero, now > 0 ? now : 1);
    } else {
        if (atomic_load_explicit(&w->failing_since, memory_order_relaxed) != 0) {
            atomic_store(&w->failing_since, 0);
            kb_log(KB_LOG_INFO, "store commits again", NULL);
        }
        if (w->hook)
            w->hook(head, head_known, w->hook_arg);
    }
    if (deferred)
        complete_all(batch); /* the loop completes the others */
}

/* Backend: the outcome of the pending batch's deferred commit. */
static void pending_done(void *arg, enum kb_err err)
{
    struct kb_writer *w = arg;
    struct job *batch = w->pending;
    w->pending = NULL;
    batch_end(w, batch, err == KB_OK, true, KB_OK, w->pending_t0, w->pending_head, w->pending_known,
              true);
}

/*
 * Runs one batch in one transaction; sets every job's err. With `later`,
 * a batch that ran whole may leave its commit to the backend to send with
 * the next batch's first round trip (store_commit_later): it is then the
 * pending batch, completed by pending_done, and true is returned. False:
 * the batch is over, its completion is the caller's.
 */
static bool run_batch(struct kb_writer *w, struct job *batch, bool later)
{
    struct kb_store *s = w->store;
    int64_t t0 = clock_mono_us();
    enum kb_err unguarded = KB_OK; /* an unguarded job's own failure */
    bool began = store_begin(s) == KB_OK;
    bool ok = began;
    if (ok)
        store_audit_head_sync(s); /* the chain head, from memory if nobody else wrote */
    for (struct job *j = batch; ok && j; j = j->next) {
        if (j->group) {
            /* the run of grouped jobs that starts here: each group's jobs
             * of it in one call, the groups by rank */
            struct job *last = j;
            while (last->next && last->next->group)
                last = last->next;
            enum kb_err err = run_groups(w, s, j, last);
            for (struct job *g = j;; g = g->next) {
                g->ran = true;
                g->err = err;
                if (g == last)
                    break;
            }
            j = last;
            if (!store_in_transaction(s) || err != KB_OK) {
                if (err != KB_OK && err != KB_E_STORE && err != KB_E_AUDIT_UNAVAILABLE)
                    unguarded = err;
                ok = false;
                break;
            }
            continue;
        }
        if (j->guarded && store_savepoint(s) != KB_OK) {
            ok = false;
            break;
        }
        j->ran = true;
        j->err = j->fn(s, j->arg);
        if (!store_in_transaction(s)) {
            /* the backend rolled the whole transaction back (full disk,
             * I/O error): the earlier jobs' work is gone too */
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
            store_audit_head_drop(s); /* the job may have appended first */
            if (store_rollback_to(s) != KB_OK || !store_in_transaction(s)) {
                ok = false; /* the job's work could not be undone alone */
                break;
            }
            continue; /* rollback_to released the savepoint */
        }
        if (store_release(s) != KB_OK) {
            ok = false;
            break;
        }
    }
    int64_t head = 0;
    bool head_known = false;
    if (ok && w->hook) {
        uint8_t hash[KB_HASH_LEN];
        head_known = store_audit_last(s, &head, hash) == KB_OK; /* memory, as a rule */
    }
    if (ok && later) {
        /* an older pending batch may be completed inside (pending_done):
         * this one is pending only once the call returns */
        enum kb_err err = KB_OK;
        if (store_commit_later(s, pending_done, w, &err)) {
            w->pending = batch;
            w->pending_t0 = t0;
            w->pending_head = head;
            w->pending_known = head_known;
            return true;
        }
        ok = err == KB_OK;
    } else if (ok && store_commit(s) != KB_OK) {
        ok = false;
    }
    batch_end(w, batch, ok, began, unguarded, t0, head, head_known, false);
    return false;
}

static void *writer_main(void *arg)
{
    struct kb_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping) {
            if (w->pending) {
                /* no next batch to carry the pending COMMIT: send it now */
                pthread_mutex_unlock(&w->mu);
                store_commit_flush(w->store);
                pthread_mutex_lock(&w->mu);
                continue;
            }
            w->idle = true;
            pthread_cond_wait(&w->cond, &w->mu);
            w->idle = false;
        }
        if (!w->head) {
            /* stopping, and everything submitted has run: the last commit's
             * outcome too (a backend that lost its answer reads it, within
             * a bound of its own) */
            pthread_mutex_unlock(&w->mu);
            do
                store_commit_flush(w->store);
            while (w->pending);
            pthread_mutex_lock(&w->mu);
            break;
        }
        struct job *batch = w->head, *last = batch;
        for (int n = 1; n < w->max_batch && last->next; n++)
            last = last->next;
        w->head = last->next;
        if (!w->head)
            w->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->mu);

        if (!run_batch(w, batch, true)) {
            /* A fire-and-forget job owns its argument (it frees it): one
             * that an earlier job's failure kept from running runs now,
             * alone, so it is neither lost nor leaked. */
            for (struct job *j = batch; j; j = j->next)
                if (!j->ran && !j->done) {
                    struct job *rest = j->next;
                    j->next = NULL;
                    run_batch(w, j, false);
                    j->next = rest;
                }
            complete_all(batch);
        }
        store_writer_idle(w->store, w->upkeep); /* the backend's upkeep (WAL) */
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
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
    w->run_args = kb_calloc((size_t)w->max_batch, sizeof *w->run_args);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->upkeep = store_writer_attach(s, synchronous);
    int rc = pthread_create(&w->thread, NULL, writer_main, w);
    if (rc != 0) {
        kb_set_errmsg(errmsg, "cannot start the writer thread: %s", strerror(rc));
        store_writer_detach(s, w->upkeep);
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->mu);
        store_close(s);
        free(w->run_args);
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
    store_writer_detach(w->store, w->upkeep);
    store_audit_forget(w->store);
    store_close(w->store);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w->run_args);
    free(w);
}

struct kb_writer_port *writer_port_new(struct kb_writer *w, struct event_base *base)
{
    struct kb_writer_port *p = kb_calloc(1, sizeof *p);
    p->w = w;
    p->mb = mailbox_new(base);
    return p;
}

void writer_port_free(struct kb_writer_port *p)
{
    if (!p)
        return;
    /* jobs still in flight complete without their callback (dropped) */
    mailbox_close(p->mb);
    for (struct job *j = p->free_list, *next; j; j = next) {
        next = j->next;
        free(j);
    }
    free(p);
}

static void submit(struct kb_writer_port *p, kb_job_fn fn, const struct kb_job_group *group,
                   kb_job_done_cb done, void *arg, bool guarded)
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
    j->group = group;
    j->done = done;
    j->arg = arg;
    j->port = p;
    j->mb = p->mb;
    j->err = KB_OK;
    j->guarded = guarded;
    j->ran = false;
    mailbox_hold(p->mb);

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
    submit(p, fn, NULL, done, arg, true);
}

void writer_submit_unguarded(struct kb_writer_port *p, kb_job_fn fn, kb_job_done_cb done, void *arg)
{
    submit(p, fn, NULL, done, arg, false);
}

void writer_submit_group(struct kb_writer_port *p, const struct kb_job_group *g,
                         kb_job_done_cb done, void *arg)
{
    submit(p, NULL, g, done, arg, false);
}

/* ---- readiness ---- */

int64_t writer_failing_since(struct kb_writer *w)
{
    return atomic_load(&w->failing_since);
}

/* Writer thread: the smallest write that reaches the disk (the backend's
 * probe), which fails where a full disk or an I/O error fails requests. */
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
    return store_probe_write(s);
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

size_t writer_wal_pinned(struct kb_writer *w)
{
    return store_writer_resident(w->store, w->upkeep);
}
