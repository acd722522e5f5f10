/*
 * writer.h - group commit: one thread owns the store's write connection
 * and runs queued jobs in batched transactions, so that many concurrent
 * requests share one commit (and one fsync at synchronous=full) instead of
 * serialising on the write lock.
 *
 * Each event loop that submits jobs (every proxy worker, the admin thread)
 * has a port; a job's `done` callback runs on that port's loop after the
 * batch holding the job committed (or failed to). Jobs of one batch run in
 * submission order inside one transaction, each in a savepoint (unless
 * submitted unguarded): a job that fails rolls back alone; a commit that
 * fails fails every job of the batch.
 *
 * Threads: writer_submit and the port functions are called only from the
 * port's own loop thread; jobs run on the writer thread with its
 * connection; writer_new/writer_free on the main thread.
 */
#ifndef KB_STORE_WRITER_H
#define KB_STORE_WRITER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct event_base;
struct kb_store;
struct kb_writer;
struct kb_writer_port;

/* Runs on the writer thread inside the batch's transaction. Returns the
 * job's own result; anything but KB_OK rolls the job's savepoint back.
 * KB_E_STORE and KB_E_AUDIT_UNAVAILABLE mean the store itself failed (disk
 * full, I/O error): they fail the whole batch, like a failed COMMIT. */
typedef enum kb_err (*kb_job_fn)(struct kb_store *s, void *arg);
/* Runs on the port's loop once the batch is durable: err is the job's
 * result, or KB_E_AUDIT_UNAVAILABLE when the batch could not commit, or
 * KB_E_STORE when it could not even begin (the store does not answer). */
typedef void (*kb_job_done_cb)(void *arg, enum kb_err err);

/*
 * Starts the writer thread on its own connection to the store at `path`.
 * max_batch bounds the jobs per transaction. Main thread.
 */
KB_MUSTCHECK enum kb_err writer_new(const char *path, const char *synchronous, int max_batch,
                                    struct kb_writer **out, char **errmsg);

/*
 * Runs on the writer thread after each batch that committed, before the
 * batch's `done` callbacks are queued, with the last seq of the writer's
 * audit chain the batch committed (known false: the writer could not
 * tell): for work that must follow durability and must not be undone by a
 * rollback (the audit JSONL sink, audit_sink_commit). It must not use the
 * store: it may run while the next batch's transaction is open.
 */
typedef void (*kb_writer_commit_cb)(int64_t last_seq, bool known, void *arg);

/* Installs the commit hook (one; NULL removes it). Main thread, before the
 * first writer_submit. */
void writer_set_commit_hook(struct kb_writer *w, kb_writer_commit_cb cb, void *arg);

/* Runs every job already submitted, then stops and joins the thread. The
 * ports must be freed first. Main thread. */
void writer_free(struct kb_writer *w);

/* A completion port on `base`; freed with writer_port_free on that loop's
 * thread (jobs still pending then complete without their callback). */
struct kb_writer_port *writer_port_new(struct kb_writer *w, struct event_base *base);
void writer_port_free(struct kb_writer_port *p);

/* Bytes of the WAL the checkpointer keeps resident (see writer.c); 0 while
 * nothing is pinned. Any thread. */
size_t writer_wal_pinned(struct kb_writer *w);

/*
 * Queues `fn(arg)` for the next batch; `done(arg, err)` (may be NULL: fire
 * and forget, still durable before writer_free returns) follows on the
 * port's loop. Never blocks on the store. A fire-and-forget fn is called
 * exactly once, even when an earlier job fails its batch (it then runs
 * alone right after), so it may own and free `arg`.
 */
void writer_submit(struct kb_writer_port *p, kb_job_fn fn, kb_job_done_cb done, void *arg);

/*
 * As writer_submit, for a job that never fails alone: it returns KB_OK, or
 * KB_E_STORE / KB_E_AUDIT_UNAVAILABLE when the store failed. It runs
 * without a savepoint of its own, so any other result cannot be undone
 * alone and fails the whole batch as a store failure would.
 */
void writer_submit_unguarded(struct kb_writer_port *p, kb_job_fn fn, kb_job_done_cb done,
                             void *arg);

/*
 * A kind of unguarded job that a backend can run many of at once (one
 * round trip for a run of requests, not one per request). In a batch, the
 * jobs submitted with writer_submit_group that follow each other (no job
 * of its own between them) form a run; each group's jobs of the run are
 * done by one call of its `run` with their arguments in submission order,
 * the groups by ascending `rank` (the proxy's settlements before its
 * admissions: a reservation given back in a batch counts for the
 * admissions of the same batch). Its result stands for each of them as an
 * unguarded job's does (KB_OK, or the store failed and the batch fails).
 * Writer thread.
 */
struct kb_job_group {
    enum kb_err (*run)(struct kb_store *s, void *const *args, size_t n);
    int rank;
};

/* As writer_submit_unguarded, for a job of group g (static storage). */
void writer_submit_group(struct kb_writer_port *p, const struct kb_job_group *g,
                         kb_job_done_cb done, void *arg);

/*
 * Readiness: the server clock (clock_now_ms) of the first batch that
 * failed to commit since the last one that committed, or 0 while commits
 * succeed. A failed batch means every request of it was refused
 * (audit_unavailable): while this is set, the proxy cannot admit requests.
 * Any thread.
 */
int64_t writer_failing_since(struct kb_writer *w);

/*
 * Queues a probe: a batch with one tiny real write (it changes nothing),
 * so that a writer without traffic finds out that the store commits again
 * and clears writer_failing_since. done(arg, err) follows on the port's
 * loop as for writer_submit (KB_OK: the probe committed). At most one
 * probe is queued at a time: returns false, queuing nothing and never
 * calling done, while another is in flight. Port's loop thread.
 */
bool writer_probe(struct kb_writer_port *p, kb_job_done_cb done, void *arg);

#endif
