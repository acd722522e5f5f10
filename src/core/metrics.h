/*
 * metrics.h - process-wide counters and histograms for GET /metrics
 * (Prometheus text format). Updated from any thread with relaxed atomics:
 * no lock is taken on the request path; a scrape reads a consistent-enough
 * snapshot (each value is exact, the set is not taken at one instant).
 */
#ifndef KB_CORE_METRICS_H
#define KB_CORE_METRICS_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

#define KB_METRICS_MAX_VENDORS 64

enum kb_histogram {
    KB_H_OVERHEAD = 0,    /* proxy's own time per request (total minus upstream) */
    KB_H_UPSTREAM = 1,    /* upstream time, forward to last byte */
    KB_H_COMMIT = 2,      /* group-commit transaction time */
    KB_H_CHECKPOINT = 3,  /* background WAL checkpoint time */
    KB_H_WAL_RESTART = 4, /* the writer's wait for the checkpointer before a WAL restart */
    KB_H__COUNT = 5,      /* number of histograms */
};

/* Names the vendors (index = position in the config), once at start. */
void metrics_init(const char *const *vendor_names, size_t n);

/* One finished proxied request: vendor index (-1 when unknown), its
 * outcome code (KB_OK when the vendor answered), the upstream status (0 if
 * none) and the micro-dollars settled. */
void metrics_request(int vendor, enum kb_err code, int status, int64_t settled);
void metrics_observe(enum kb_histogram h, int64_t us);
void metrics_inflight(int delta);
enum kb_listener {
    KB_L_PROXY = 0,  /* the proxy listener */
    KB_L_ADMIN = 1,  /* the admin listener */
    KB_L__COUNT = 2, /* number of listeners */
};

/* A client connection on `l` opened (+1) or closed (-1). */
void metrics_connections(enum kb_listener l, int delta);
/* A connection refused over a connection cap (either listener). */
void metrics_connection_refused(void);
/* An admin connection that never authenticated, closed to make room. */
void metrics_connection_evicted(void);
/* Shows `*used` (borrowed; must outlive every scrape) as the gauge of
 * buffered request body bytes, against `limit`. Main thread, at start. */
void metrics_watch_body_budget(const _Atomic int64_t *used, const _Atomic int64_t *limit);
/* A request refused because its body would pass the budget. */
void metrics_body_refused(void);

/* A vault key read from the store, off the loop: a worker's key cache did
 * not have it (first use on that worker, or revoked since). */
void metrics_key_read(void);

/* Log records dropped (the log writer fell behind by more than its queue,
 * or a write failed). Any thread. */
void metrics_log_dropped(uint64_t n);

/* Appends the Prometheus text exposition; active_keys is read by the caller
 * from the store. */
void metrics_render(struct kb_buf *b, int64_t active_keys);

#endif
