/*
 * reader.c - reader threads (see reader.h). One queue under a mutex; each
 * thread takes one read at a time, runs it on its own connection (SQLite
 * in WAL mode: reads do not wait for the writer) and posts it back.
 */
#include "store/reader.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "store/store.h"

struct thread {
    pthread_t tid;
    struct kb_reader *r;
    struct kb_store *s; /* owned; this thread's connection */
};

struct kb_reader {
    pthread_mutex_t mu; /* guards head, tail, queued, stopping */
    pthread_cond_t cond;
    struct kb_read *head;
    struct kb_read *tail;
    size_t queued;
    size_t max_queue;
    bool stopping;
    int nthreads;
    struct thread *threads;
};

/* The mail is the read's first member. */
static void deliver(struct kb_mail *m)
{
    struct kb_read *rd = (struct kb_read *)m;
    rd->done(rd);
}

static void drop(struct kb_mail *m)
{
    struct kb_read *rd = (struct kb_read *)m;
    rd->drop(rd);
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    struct kb_reader *r = t->r;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->head && !r->stopping)
            pthread_cond_wait(&r->cond, &r->mu);
        struct kb_read *rd = r->head;
        if (!rd) { /* stopping, and nothing left */
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        r->head = rd->qnext;
        if (!r->head)
            r->tail = NULL;
        r->queued--;
        pthread_mutex_unlock(&r->mu);
        rd->run(t->s, rd);
        rd->mail.deliver = deliver;
        rd->mail.drop = drop;
        mailbox_post(rd->mb, &rd->mail);
    }
}

enum kb_err reader_new(const char *path, const char *synchronous, int threads, size_t max_queue,
                       struct kb_reader **out, char **errmsg)
{
    struct kb_reader *r = kb_calloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->max_queue = max_queue;
    r->threads = kb_calloc((size_t)threads, sizeof *r->threads);
    enum kb_err err = KB_OK;
    for (int i = 0; i < threads && err == KB_OK; i++) {
        struct thread *t = &r->threads[i];
        t->r = r;
        if ((err = store_open(path, synchronous, false, &t->s, errmsg)) != KB_OK)
            break;
        if (pthread_create(&t->tid, NULL, thread_main, t) != 0) {
            kb_set_errmsg(errmsg, "cannot start a store reader thread");
            store_close(t->s);
            t->s = NULL;
            err = KB_E_INTERNAL;
            break;
        }
        r->nthreads++;
    }
    if (err != KB_OK) {
        reader_free(r);
        return err;
    }
    *out = r;
    return KB_OK;
}

void reader_free(struct kb_reader *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->nthreads; i++) {
        pthread_join(r->threads[i].tid, NULL);
        store_close(r->threads[i].s);
    }
    free(r->threads);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

bool reader_submit(struct kb_reader *r, struct kb_mailbox *mb, struct kb_read *rd)
{
    pthread_mutex_lock(&r->mu);
    if (r->queued >= r->max_queue || r->stopping) {
        pthread_mutex_unlock(&r->mu);
        return false;
    }
    mailbox_hold(mb);
    rd->mb = mb;
    rd->qnext = NULL;
    if (r->tail)
        r->tail->qnext = rd;
    else
        r->head = rd;
    r->tail = rd;
    r->queued++;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    return true;
}
