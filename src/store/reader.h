/*
 * reader.h - store reads off the event loops: reader threads, each with
 * its own connection, run reads queued by any loop and answer through the
 * loop's mailbox (core/mailbox.h). A worker that misses its key cache asks
 * here and serves other requests meanwhile: no worker loop waits on the
 * store (the writer, store/writer.h, does the same for writes).
 *
 * A read is intrusive (struct kb_read inside the caller's struct): `run`
 * on a reader thread with that thread's store, then `done` on the loop
 * that submitted it, or `drop` when that loop closed its mailbox first.
 * Exactly one of done and drop runs, and it owns the caller's struct.
 */
#ifndef KB_STORE_READER_H
#define KB_STORE_READER_H
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "core/mailbox.h"

struct kb_reader;
struct kb_store;

struct kb_read {
    struct kb_mail mail;                                 /* the reader's */
    struct kb_read *qnext;                               /* the reader's */
    struct kb_mailbox *mb;                               /* the reader's */
    void (*run)(struct kb_store *s, struct kb_read *rd); /* reader thread */
    void (*done)(struct kb_read *rd);                    /* the submitting loop's thread */
    void (*drop)(struct kb_read *rd);                    /* any thread: the loop is gone */
};

/* Starts `threads` readers on the store at `path` (opened read-write
 * without migrations: the writer's connection applied them). At most
 * `max_queue` reads wait at once. Main thread. */
KB_MUSTCHECK enum kb_err reader_new(const char *path, const char *synchronous, int threads,
                                    size_t max_queue, struct kb_reader **out, char **errmsg);

/* Runs what is queued, stops and joins the threads. Main thread, after
 * the loops stopped submitting. */
void reader_free(struct kb_reader *r);

/* Queues rd (run, done and drop set) to answer on `mb`. False, with
 * nothing queued, when max_queue reads are already waiting: the caller
 * answers for the store (the process is overloaded). Any thread. */
KB_MUSTCHECK bool reader_submit(struct kb_reader *r, struct kb_mailbox *mb, struct kb_read *rd);

#endif
