/*
 * cluster.c - the cluster thread (see cluster.h).
 */
#include "store/cluster.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "store/revlog.h"
#include "store/store.h"

/* The longest the thread waits for a notification before it looks at
 * its clock (and at `stopping`): a stop takes at most this long. */
#define WAIT_MS 100

struct kb_cluster {
    struct kb_store *s; /* the cluster connection; owned */
    struct kb_revlog *rl;
    int64_t heartbeat_ms, dead_after_ms;
    int64_t seen; /* the last key change relayed */
    pthread_t thread;
    _Atomic bool stopping;
    bool stopping_self; /* this node asked itself to stop (it was reaped) */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cluster_key_check(const uint8_t server_key[KB_HASH_LEN], uint8_t out[KB_HASH_LEN])
{
    static const char what[] = "keybrake cluster";
    crypto_hmac(server_key, KB_HASH_LEN, what, sizeof what - 1, out);
}

/* Relays every change after c->seen into the revocation log. */
static enum kb_err relay(struct kb_cluster *c)
{
    for (;;) {
        struct kb_key_change_note *v = NULL;
        size_t n = 0;
        int64_t last = c->seen;
        enum kb_err err = store_key_changes(c->s, c->seen, &last, &v, &n);
        if (err != KB_OK)
            return err;
        for (size_t i = 0; i < n; i++) {
            if (v[i].revoked)
                revlog_publish(c->rl, v[i].seq, v[i].hash);
            else
                revlog_publish_change(c->rl, v[i].seq, v[i].hash);
        }
        free(v);
        c->seen = last;
        if (n < 1000)
            return KB_OK;
    }
}

static void *cluster_main(void *arg)
{
    struct kb_cluster *c = arg;
    int64_t next_beat = mono_ms() + c->heartbeat_ms;
    /* since when this node's own beats succeed: it reaps nobody before
     * it has itself been up for dead_after, so that after an outage of
     * the store (every heartbeat stale, every lock free) the other nodes
     * get the time to come back before they are taken for dead */
    int64_t healthy_since = mono_ms();
    bool failing = false;
    while (!atomic_load(&c->stopping)) {
        bool notified = false;
        enum kb_err err = store_wait_change(c->s, WAIT_MS, &notified);
        int64_t now = mono_ms();
        bool beat = now >= next_beat;
        if (err == KB_OK && notified)
            err = relay(c);
        if (beat) {
            next_beat = now + c->heartbeat_ms;
            /* a notification lost while the connection was down is
             * caught here: the change log is read on every beat */
            if (err == KB_OK)
                err = relay(c);
            enum kb_err hb = err == KB_OK ? store_node_heartbeat(c->s) : err;
            if ((hb == KB_E_NOT_FOUND || hb == KB_E_EXISTS) && !c->stopping_self) {
                /* the others took this node for dead (its session was gone
                 * for dead_after) and settled its reservations: it stops,
                 * for its supervisor to start it again as a new start */
                c->stopping_self = true;
                kb_log(KB_LOG_ERROR,
                       hb == KB_E_EXISTS
                           ? "another process now runs under this node's id (this one lost "
                             "its session); stopping"
                           : "this node was found dead by another node, which settled its "
                             "reservations; stopping",
                       "node", store_node_id(), NULL);
                kill(getpid(), SIGTERM);
            }
            if (hb != KB_OK)
                healthy_since = -1;
            else if (healthy_since < 0)
                healthy_since = now;
            int64_t nodes = 0, counters = 0;
            if (hb == KB_OK && now - healthy_since >= c->dead_after_ms &&
                store_node_reap(c->s, c->dead_after_ms, &nodes, &counters) == KB_OK && nodes > 0) {
                char a[24], b[24];
                snprintf(a, sizeof a, "%lld", (long long)nodes);
                snprintf(b, sizeof b, "%lld", (long long)counters);
                kb_log(KB_LOG_WARN, "dead nodes' reservations settled at their worst case", "nodes",
                       a, "counters", b, NULL);
            }
            err = hb;
        }
        if (err != KB_OK && err != KB_E_EXISTS && err != KB_E_NOT_FOUND && !failing) {
            failing = true;
            kb_log(KB_LOG_ERROR, "cluster: the store does not answer; retrying", "error",
                   store_last_error(c->s), NULL);
        } else if (err == KB_OK && failing && beat) {
            failing = false;
            kb_log(KB_LOG_INFO, "cluster: the store answers again", NULL);
        }
        if (err != KB_OK && !notified) {
            /* a broken connection returns at once: do not spin */
            struct timespec ts = {0, WAIT_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

enum kb_err cluster_start(const char *url, const uint8_t key_check[KB_HASH_LEN],
                          struct kb_revlog *rl, int64_t heartbeat_ms, int64_t dead_after_ms,
                          int64_t *orphans, struct kb_cluster **out, char **errmsg)
{
    struct kb_cluster *c = kb_calloc(1, sizeof *c);
    c->rl = rl;
    c->heartbeat_ms = heartbeat_ms;
    c->dead_after_ms = dead_after_ms;
    enum kb_err err = store_open(url, "full", false, &c->s, errmsg);
    if (err != KB_OK)
        goto fail;
    if ((err = store_node_join(c->s, key_check, orphans, errmsg)) != KB_OK)
        goto fail;
    /* listening first, then the log's end: a change committed in between
     * is in the log after `seen` (caches start empty: nothing before
     * matters) */
    bool notified;
    if ((err = store_wait_change(c->s, 0, &notified)) != KB_OK) {
        kb_set_errmsg(errmsg, "cannot listen for key changes: %s", store_last_error(c->s));
        goto fail;
    }
    struct kb_key_change_note *none = NULL;
    size_t n = 0;
    if ((err = store_key_changes(c->s, -1, &c->seen, &none, &n)) != KB_OK) {
        kb_set_errmsg(errmsg, "cannot read the key change log: %s", store_last_error(c->s));
        goto fail;
    }
    free(none);
    int rc = pthread_create(&c->thread, NULL, cluster_main, c);
    if (rc != 0) {
        kb_set_errmsg(errmsg, "cannot start the cluster thread: %s", strerror(rc));
        err = KB_E_INTERNAL;
        goto fail;
    }
    *out = c;
    return KB_OK;
fail:
    store_close(c->s);
    free(c);
    return err;
}

void cluster_stop(struct kb_cluster *c)
{
    if (!c)
        return;
    atomic_store(&c->stopping, true);
    pthread_join(c->thread, NULL);
    store_close(c->s);
    free(c);
}
