/*
 * strangers.c - refusals of requests that never showed a valid, active
 * vault key, recorded in the audit log aggregated: one record per source
 * address and interval, not one durable write per request (issue 14: one
 * client without a token wrote 10-14 MB/s of audit until the disk was
 * full and everything failed closed).
 *
 * Each worker counts such refusals per source (its address) and code in a
 * small table; every STRANGER_FLUSH_MS and when the proxy is freed, the table becomes audit records
 * (action "proxy.unauthenticated", detail {"source", "count", "codes", "from_ms", "to_ms"}) in one
 * fire-and-forget writer job. A source that does not fit in the table counts under "*". The refusal
 * itself is answered at once. Worker thread only, except the job, which runs on the writer thread
 * and frees what it was given.
 */
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "proxy/proxy_int.h"
#include "store/writer.h"

struct stranger_job {
    size_t n;
    struct kb_audit_rec *rec; /* owned array; detail strings owned */
};

/* Writer thread: appends the records, then frees the job (fire and forget:
 * no callback, so nothing waits on a loop that may be gone). */
static enum kb_err stranger_job(struct kb_store *s, void *arg)
{
    struct stranger_job *j = arg;
    enum kb_err err = KB_OK;
    for (size_t i = 0; i < j->n && err == KB_OK; i++)
        err = audit_append(s, &j->rec[i], NULL);
    for (size_t i = 0; i < j->n; i++)
        free((char *)j->rec[i].detail);
    free(j->rec);
    free(j);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

void proxy__strangers_flush(struct kb_proxy *px)
{
    struct proxy__strangers *t = &px->strangers;
    if (t->n == 0)
        return;
    struct stranger_job *j = kb_calloc(1, sizeof *j);
    j->rec = kb_calloc(t->n, sizeof *j->rec);
    j->n = t->n;
    for (size_t i = 0; i < t->n; i++) {
        const struct proxy__stranger *g = &t->v[i];
        struct kb_audit_rec *r = &j->rec[i];
        json_t *codes = json_object();
        enum kb_err top = g->codes[0].code;
        int64_t topn = 0;
        for (size_t k = 0; k < g->ncodes; k++) {
            json_object_set_new(codes, kb_strerror(g->codes[k].code),
                                json_integer((json_int_t)g->codes[k].n));
            if (g->codes[k].n > topn)
                top = g->codes[k].code, topn = g->codes[k].n;
        }
        json_t *d = json_pack("{s:s, s:I, s:o, s:I, s:I}", "source", g->source, "count",
                              (json_int_t)g->count, "codes", codes, "from_ms",
                              (json_int_t)g->first_ms, "to_ms", (json_int_t)g->last_ms);
        r->detail = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(d);
        r->kind = KB_AUDIT_PROXY;
        r->ts_ms = g->last_ms;
        snprintf(r->request_id, sizeof r->request_id, "agg_%08x%02x%010llx", px->seed,
                 px->worker & 0xff, (unsigned long long)++px->counter);
        r->action = "proxy.unauthenticated";
        r->decision = "refused";
        r->code = kb_strerror(top); /* static */
        r->settled = 0;
    }
    writer_submit_unguarded(px->port, stranger_job, NULL, j);
    t->n = 0;
}

static void flush_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    proxy__strangers_flush(arg);
}

void proxy__strangers_start(struct kb_proxy *px)
{
    px->strangers.timer = event_new(px->base, -1, EV_PERSIST, flush_timer, px);
    struct timeval tv = {STRANGER_FLUSH_MS / 1000, (STRANGER_FLUSH_MS % 1000) * 1000};
    event_add(px->strangers.timer, &tv);
}

void proxy__strangers_stop(struct kb_proxy *px)
{
    proxy__strangers_flush(px);
    if (px->strangers.timer)
        event_free(px->strangers.timer);
    px->strangers.timer = NULL;
}

void proxy__stranger_note(struct kb_proxy *px, const char *source, enum kb_err code)
{
    struct proxy__strangers *t = &px->strangers;
    int64_t now = clock_now_ms();
    const char *src = source && source[0] ? source : "-";
    struct proxy__stranger *g = NULL;
    for (int pass = 0; pass < 2 && !g; pass++) {
        for (size_t i = 0; i < t->n && !g; i++)
            if (strcmp(t->v[i].source, src) == 0)
                g = &t->v[i];
        /* the last slot gathers every source that does not fit as "*" */
        if (!g && t->n >= STRANGER_SLOTS - 1)
            src = "*";
        else
            break;
    }
    if (!g) {
        g = &t->v[t->n++];
        memset(g, 0, sizeof *g);
        snprintf(g->source, sizeof g->source, "%s", src);
        g->first_ms = now;
    }
    g->count++;
    g->last_ms = now;
    size_t k = 0;
    while (k < g->ncodes && g->codes[k].code != code)
        k++;
    if (k == g->ncodes && g->ncodes < STRANGER_CODES) {
        g->codes[k].code = code;
        g->ncodes++;
    }
    if (k < g->ncodes)
        g->codes[k].n++;
}
