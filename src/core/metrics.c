/* metrics.c - counters and histograms for /metrics (see metrics.h). */
#include "core/metrics.h"

#include <stdatomic.h>
#include <string.h>

/* Upper bounds (µs) of the histogram buckets; +Inf is implied. */
static const int64_t bounds[] = {100,     250,     500,     1000,     2500,    5000,
                                 10000,   25000,   50000,   100000,   250000,  500000,
                                 1000000, 2500000, 5000000, 10000000, 30000000};
#define NBOUNDS (sizeof bounds / sizeof bounds[0])

static const char *vendors[KB_METRICS_MAX_VENDORS + 1]; /* last slot: "unknown" */
static size_t nvendors;

static _Atomic uint64_t requests[KB_METRICS_MAX_VENDORS + 1][KB_E__COUNT];
static _Atomic uint64_t status_class[KB_METRICS_MAX_VENDORS + 1][6]; /* 0: none, 1..5 */
static _Atomic uint64_t settled[KB_METRICS_MAX_VENDORS + 1];
static _Atomic uint64_t hist[KB_H__COUNT][NBOUNDS + 1];
static _Atomic uint64_t hist_sum[KB_H__COUNT];
static _Atomic uint64_t hist_count[KB_H__COUNT];
static _Atomic int64_t inflight;
static _Atomic int64_t connections[KB_L__COUNT];
static _Atomic uint64_t conns_refused;
static _Atomic uint64_t key_reads;
static _Atomic uint64_t conns_evicted;
static _Atomic uint64_t body_refused;
static _Atomic uint64_t log_dropped;
static const _Atomic int64_t *body_used;  /* the servers' budget, once started */
static const _Atomic int64_t *body_limit; /* the budget in force */

static const char *const hist_names[KB_H__COUNT] = {
    "keybrake_proxy_overhead_seconds", "keybrake_upstream_seconds", "keybrake_store_commit_seconds",
    "keybrake_store_checkpoint_seconds", "keybrake_store_wal_restart_wait_seconds"};
static const char *const hist_help[KB_H__COUNT] = {
    "Time Keybrake itself spends on a proxied request (total minus upstream).",
    "Time from forwarding to the vendor's last byte.",
    "Duration of one group-commit transaction of the store writer.",
    "Duration of one background WAL checkpoint (copy and fsync), off the writer thread.",
    ("Time the store writer waited between batches for the checkpointer, so the WAL could "
     "start over.")};

void metrics_init(const char *const *names, size_t n)
{
    nvendors = n > KB_METRICS_MAX_VENDORS ? KB_METRICS_MAX_VENDORS : n;
    for (size_t i = 0; i < nvendors; i++)
        vendors[i] = names[i];
    vendors[nvendors] = "unknown";
}

void metrics_request(int vendor, enum kb_err code, int status, int64_t amount)
{
    size_t v = vendor >= 0 && (size_t)vendor < nvendors ? (size_t)vendor : nvendors;
    if ((unsigned)code >= KB_E__COUNT)
        code = KB_E_INTERNAL;
    atomic_fetch_add_explicit(&requests[v][code], 1, memory_order_relaxed);
    int cls = status >= 100 && status < 600 ? status / 100 : 0;
    atomic_fetch_add_explicit(&status_class[v][cls], 1, memory_order_relaxed);
    if (amount > 0)
        atomic_fetch_add_explicit(&settled[v], (uint64_t)amount, memory_order_relaxed);
}

void metrics_key_read(void)
{
    atomic_fetch_add_explicit(&key_reads, 1, memory_order_relaxed);
}

void metrics_observe(enum kb_histogram h, int64_t us)
{
    if (us < 0)
        us = 0;
    size_t i = 0;
    while (i < NBOUNDS && us > bounds[i])
        i++;
    atomic_fetch_add_explicit(&hist[h][i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist_sum[h], (uint64_t)us, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist_count[h], 1, memory_order_relaxed);
}

void metrics_inflight(int delta)
{
    atomic_fetch_add_explicit(&inflight, delta, memory_order_relaxed);
}

void metrics_connections(enum kb_listener l, int delta)
{
    atomic_fetch_add_explicit(&connections[l], delta, memory_order_relaxed);
}

void metrics_connection_refused(void)
{
    atomic_fetch_add_explicit(&conns_refused, 1, memory_order_relaxed);
}

void metrics_connection_evicted(void)
{
    atomic_fetch_add_explicit(&conns_evicted, 1, memory_order_relaxed);
}

void metrics_watch_body_budget(const _Atomic int64_t *used, const _Atomic int64_t *limit)
{
    body_used = used;
    body_limit = limit;
}

void metrics_body_refused(void)
{
    atomic_fetch_add_explicit(&body_refused, 1, memory_order_relaxed);
}

void metrics_log_dropped(uint64_t n)
{
    atomic_fetch_add_explicit(&log_dropped, n, memory_order_relaxed);
}

static uint64_t get(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

void metrics_render(struct kb_buf *b, int64_t active_keys)
{
    buf_puts(b, "# HELP keybrake_requests_total Proxied requests by vendor and outcome code "
                "(ok: forwarded and answered).\n# TYPE keybrake_requests_total counter\n");
    for (size_t v = 0; v <= nvendors; v++)
        for (int c = 0; c < KB_E__COUNT; c++) {
            uint64_t n = get(&requests[v][c]);
            if (n)
                buf_printf(b, "keybrake_requests_total{vendor=\"%s\",code=\"%s\"} %llu\n",
                           vendors[v], kb_strerror((enum kb_err)c), (unsigned long long)n);
        }
    buf_puts(b, "# HELP keybrake_upstream_responses_total Vendor answers by status class "
                "(none: no answer).\n# TYPE keybrake_upstream_responses_total counter\n");
    static const char *const cls[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (size_t v = 0; v <= nvendors; v++)
        for (int c = 0; c < 6; c++) {
            uint64_t n = get(&status_class[v][c]);
            if (n)
                buf_printf(b,
                           "keybrake_upstream_responses_total{vendor=\"%s\",class=\"%s\"} %llu\n",
                           vendors[v], cls[c], (unsigned long long)n);
        }
    buf_puts(b, "# HELP keybrake_spend_settled_usd_total Spend settled, by vendor.\n"
                "# TYPE keybrake_spend_settled_usd_total counter\n");
    for (size_t v = 0; v < nvendors; v++) {
        uint64_t m = get(&settled[v]);
        buf_printf(b, "keybrake_spend_settled_usd_total{vendor=\"%s\"} %llu.%06llu\n", vendors[v],
                   (unsigned long long)(m / 1000000), (unsigned long long)(m % 1000000));
    }
    buf_printf(b,
               "# HELP keybrake_active_keys Vault keys neither revoked nor expired.\n"
               "# TYPE keybrake_active_keys gauge\nkeybrake_active_keys %lld\n",
               (long long)active_keys);
    buf_printf(b,
               "# HELP keybrake_requests_in_flight Proxied requests being served.\n"
               "# TYPE keybrake_requests_in_flight gauge\nkeybrake_requests_in_flight %lld\n",
               (long long)atomic_load(&inflight));
    buf_printf(b,
               "# HELP keybrake_open_connections Client connections open, by listener.\n"
               "# TYPE keybrake_open_connections gauge\n"
               "keybrake_open_connections{listener=\"proxy\"} %lld\n"
               "keybrake_open_connections{listener=\"admin\"} %lld\n"
               "# HELP keybrake_connections_refused_total Connections refused over a connection "
               "limit (either listener).\n"
               "# TYPE keybrake_connections_refused_total counter\n"
               "keybrake_connections_refused_total %llu\n"
               "# HELP keybrake_connections_evicted_total Admin connections that never "
               "presented a valid admin token, closed to make room for a new one.\n"
               "# TYPE keybrake_connections_evicted_total counter\n"
               "keybrake_connections_evicted_total %llu\n",
               (long long)atomic_load(&connections[KB_L_PROXY]),
               (long long)atomic_load(&connections[KB_L_ADMIN]),
               (unsigned long long)get(&conns_refused), (unsigned long long)get(&conns_evicted));
    buf_printf(b,
               "# HELP keybrake_key_store_reads_total Vault keys read from the store because a "
               "worker's key cache did not have them.\n"
               "# TYPE keybrake_key_store_reads_total counter\n"
               "keybrake_key_store_reads_total %llu\n",
               (unsigned long long)get(&key_reads));
    buf_printf(b,
               "# HELP keybrake_buffered_body_bytes Request body bytes held in memory now.\n"
               "# TYPE keybrake_buffered_body_bytes gauge\nkeybrake_buffered_body_bytes %lld\n"
               "# HELP keybrake_buffered_body_limit_bytes limits.max_buffered_body_bytes.\n"
               "# TYPE keybrake_buffered_body_limit_bytes gauge\n"
               "keybrake_buffered_body_limit_bytes %lld\n"
               "# HELP keybrake_body_budget_refused_total Requests answered 503 overloaded: "
               "their body would have passed limits.max_buffered_body_bytes.\n"
               "# TYPE keybrake_body_budget_refused_total counter\n"
               "keybrake_body_budget_refused_total %llu\n",
               body_used ? (long long)atomic_load_explicit(body_used, memory_order_relaxed) : 0LL,
               body_limit ? (long long)atomic_load_explicit(body_limit, memory_order_relaxed) : 0LL,
               (unsigned long long)get(&body_refused));
    buf_printf(b,
               "# HELP keybrake_log_dropped_total Log records dropped: the log output fell "
               "behind by more than the log queue (4 MiB), or a write failed.\n"
               "# TYPE keybrake_log_dropped_total counter\n"
               "keybrake_log_dropped_total %llu\n",
               (unsigned long long)get(&log_dropped));
    for (int h = 0; h < KB_H__COUNT; h++) {
        buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", hist_names[h], hist_help[h],
                   hist_names[h]);
        uint64_t cum = 0;
        for (size_t i = 0; i <= NBOUNDS; i++) {
            cum += get(&hist[h][i]);
            if (i < NBOUNDS)
                buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", hist_names[h], (double)bounds[i] / 1e6,
                           (unsigned long long)cum);
            else
                buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", hist_names[h],
                           (unsigned long long)cum);
        }
        buf_printf(b, "%s_sum %.6f\n%s_count %llu\n", hist_names[h],
                   (double)get(&hist_sum[h]) / 1e6, hist_names[h],
                   (unsigned long long)get(&hist_count[h]));
    }
}
