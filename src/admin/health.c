/*
 * health.c - /healthz (the process answers) and /readyz (the proxy can
 * admit requests).
 *
 * Ready means the store answers and its writer commits: every proxied
 * request is admitted by a durable write (the reservation and its audit
 * record), so while commits fail (a full disk, an I/O error) every request
 * is refused with audit_unavailable and /readyz answers 503
 * store_unavailable. Recovery needs no traffic: while the writer reports
 * failures, each /readyz queues a probe write (one at a time) and answers
 * with its outcome, so readiness returns with the disk.
 */
#include <jansson.h>
#include <stdlib.h>

#include "admin/admin_int.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/runtime.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/store.h"
#include "store/writer.h"

void admin__healthz(struct kb_admin *a, struct kb_hreq *req)
{
    (void)a;
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/* 503 store_unavailable, with since when commits have failed (0: the
 * store did not answer a read). */
static void unavailable(struct kb_hreq *req, const char *message, int64_t since_ms)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "status", "unavailable", "code",
                          kb_strerror(KB_E_STORE), "message", message);
    if (since_ms > 0) {
        char ts[40];
        json_object_set_new(o, "failing_since",
                            json_string(clock_rfc3339(since_ms / 1000, ts, sizeof ts)));
    }
    hreq_add_header_z(req, "Keybrake-Error", kb_strerror(KB_E_STORE));
    hreq_add_header_z(req, "Cache-Control", "no-store");
    http_reply_json(req, kb_err_status(KB_E_STORE), o);
}

static void ready(struct kb_hreq *req)
{
    hreq_add_header_z(req, "Cache-Control", "no-store");
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
}

struct probe_wait {
    struct kb_admin *a;  /* borrowed */
    struct kb_hreq *req; /* answered when the probe is done */
};

/* Admin loop: the probe committed (the writer cleared its failure) or
 * failed. A client that left meanwhile: the reply just frees the request. */
static void probe_done(void *arg, enum kb_err err)
{
    struct probe_wait *pw = arg;
    struct kb_admin *a = pw->a;
    int64_t since = writer_failing_since(a->rt->writer);
    if (err == KB_OK && since == 0)
        ready(pw->req);
    else
        unavailable(pw->req, "store writes fail (disk full or I/O error); proxied requests are "
                             "refused with audit_unavailable", since);
    free(pw);
    a->pending--;
    admin__job_finished(a);
}

void admin__readyz(struct kb_admin *a, struct kb_hreq *req)
{
    if (store_ping(a->store) != KB_OK) {
        unavailable(req, "the store does not answer", 0);
        return;
    }
    struct kb_writer *w = a->rt->writer;
    int64_t since = w ? writer_failing_since(w) : 0;
    if (since == 0) {
        ready(req);
        return;
    }
    /* commits have failed: try one now instead of waiting for traffic */
    struct probe_wait *pw = kb_malloc(sizeof *pw);
    pw->a = a;
    pw->req = req;
    if (!writer_probe(a->port, probe_done, pw)) {
        /* another probe is in flight: answer with what is known */
        free(pw);
        unavailable(req, "store writes fail (disk full or I/O error); a probe write is in flight",
                    since);
        return;
    }
    a->pending++; /* a drain waits for the probe's answer */
}
