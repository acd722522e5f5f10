/*
 * writer_gate.h - a job that holds the writer thread inside a batch until
 * the test opens it, so that the jobs submitted meanwhile are known to
 * share the next batch (test_writer*.c).
 */
#ifndef KB_TEST_WRITER_GATE_H
#define KB_TEST_WRITER_GATE_H
#include <pthread.h>
#include <stdbool.h>

#include "core/err.h"

struct kb_store;

/* Blocks the writer thread until released. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool entered, open;
};

__attribute__((unused)) static struct gate g_gate = {PTHREAD_MUTEX_INITIALIZER,
                                                     PTHREAD_COND_INITIALIZER, false, false};

static inline enum kb_err job_gate(struct kb_store *s, void *arg)
{
    (void)s;
    struct gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return KB_OK;
}

static inline void gate_wait_entered(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static inline void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}

static inline void gate_reset(struct gate *g)
{
    g->entered = false;
    g->open = false;
}

static inline void gate_init(struct gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->entered = g->open = false;
}

#endif
