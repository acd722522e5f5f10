/*
 * watch.c - streams do not outlive their key: every REVOCATION_WATCH_MS a
 * worker cuts its requests in flight whose key expired or was revoked.
 *
 * Revocations come from the revocation log (store/revlog.h), so a tick
 * when nothing was revoked costs one atomic load and a walk of the
 * in-flight list comparing expiry times: no store read. When the log says
 * entries were lost (more revocations in one tick than its ring holds, or
 * a revocation of every key), the keys of the requests in flight are read
 * off the loop (store/reader.h) and those found revoked are cut then.
 * Admission never relies on this: the writer re-reads revocation in the
 * transaction that reserves (admit.c).
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/runtime.h"
#include "proxy/proxy_int.h"
#include "store/reader.h"
#include "store/revlog.h"
#include "store/store.h"

static void mark(void *arg, int64_t seq, uint64_t hint)
{
    (void)hint;
    struct kb_proxy *px = arg;
    for (struct preq *r = px->inflight; r; r = r->next)
        if (r->key->seq == seq)
            r->key_revoked = true;
}

/* A key of a request in flight was changed (a PATCH of its TTL): its
 * expiry is read again, with the others in flight. */
static void changed(void *arg, int64_t seq, uint64_t hint)
{
    (void)hint;
    struct kb_proxy *px = arg;
    for (struct preq *r = px->inflight; r; r = r->next) {
        if (r->key->seq != seq)
            continue;
        if (r->stage == ST_ADMIT)
            r->recheck = true; /* the writer has it: once admitted (proxy__admit_done) */
        else
            px->watch_lost = true;
    }
}

/* A read of the state (revocation, expiry) of the keys in flight. */
struct check {
    struct kb_read rd; /* first: the reader's */
    struct kb_proxy *px;
    size_t n;
    int64_t *seqs;              /* owned */
    struct kb_key_state *state; /* owned; the reader's answer */
    bool *read;                 /* owned; state[i] was read */
};

static void check_run(struct kb_store *s, struct kb_read *rd)
{
    struct check *c = (struct check *)rd;
    for (size_t i = 0; i < c->n; i++)
        c->read[i] = store_key_state(s, c->seqs[i], &c->state[i]) == KB_OK;
    /* one not read: the next lost tick, or admission, sees it */
}

static void check_drop(struct kb_read *rd)
{
    struct check *c = (struct check *)rd;
    free(c->seqs);
    free(c->state);
    free(c->read);
    free(c);
}

static void check_done(struct kb_read *rd)
{
    struct check *c = (struct check *)rd;
    struct kb_proxy *px = c->px;
    px->watch_checking = false;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->read[i])
            continue;
        if (c->state[i].revoked)
            mark(px, c->seqs[i], 0);
        for (struct preq *r = px->inflight; r; r = r->next) {
            if (r->key->seq != c->seqs[i])
                continue;
            if (r->stage == ST_ADMIT)
                r->recheck = true; /* its admission writes expires_at: read again after */
            else
                r->expires_at = c->state[i].expires_at; /* a TTL changed meanwhile */
        }
    }
    check_drop(rd);
    proxy__watch_revocations(-1, 0, px); /* cut them now */
}

/* Asks the reader about every key in flight (one read at a time). */
static void check_all(struct kb_proxy *px)
{
    if (px->watch_checking || !px->ninflight)
        return;
    struct check *c = kb_calloc(1, sizeof *c);
    c->rd.run = check_run;
    c->rd.done = check_done;
    c->rd.drop = check_drop;
    c->px = px;
    c->seqs = kb_calloc((size_t)px->ninflight, sizeof *c->seqs);
    c->state = kb_calloc((size_t)px->ninflight, sizeof *c->state);
    c->read = kb_calloc((size_t)px->ninflight, sizeof *c->read);
    for (struct preq *r = px->inflight; r && c->n < (size_t)px->ninflight; r = r->next)
        c->seqs[c->n++] = r->key->seq;
    if (!reader_submit(px->rt->reader, px->mailbox, &c->rd)) {
        check_drop(&c->rd);
        px->watch_lost = true; /* try again next tick */
        return;
    }
    px->watch_checking = true;
}

void proxy__watch_revocations(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kb_proxy *px = arg;
    uint64_t head = revlog_head(px->rt->revlog);
    if (head != px->watch_seen) {
        if (!revlog_read_revoked(px->rt->revlog, px->watch_seen, head, mark, px) ||
            !revlog_read(px->rt->revlog, px->watch_seen, head, changed, px))
            px->watch_lost = true;
        px->watch_seen = head;
    }
    if (px->watch_lost && !px->watch_checking) {
        /* with a check in flight, the flag stays: check_done runs the
         * watch again, which starts the next one */
        px->watch_lost = false;
        check_all(px);
    }
    int64_t now = clock_now();
    for (struct preq *r = px->inflight, *next; r; r = next) {
        next = r->next;
        if (r->stage != ST_UPSTREAM)
            continue; /* admission or settlement is in the writer's hands */
        if (now >= r->expires_at)
            proxy__cut(r, KB_E_KEY_EXPIRED); /* a stream does not outlive its key */
        else if (r->key_revoked)
            proxy__cut(r, KB_E_KEY_REVOKED);
    }
}
