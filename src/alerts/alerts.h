/*
 * alerts.h - delivery of budget threshold alerts as signed webhooks
 * (docs/budgets.md, "Usage and alerts").
 *
 * The store records an alert in the transaction of the settlement that
 * crossed a threshold (store.h, "threshold alerts"). This module is one
 * thread of its own with its own store connection and a blocking HTTP
 * client: it claims due alerts (with a lease, so that on a shared store
 * one node attempts an alert at a time), POSTs each to [alerts]
 * webhook_url, and records every attempt. It never runs on a worker loop
 * or the store writer, and holds no transaction while it waits on the
 * network.
 *
 * The signature, as Stripe's: Keybrake-Signature: t=<unix seconds>,
 * v1=<hex HMAC-SHA256(webhook_secret, "<t>.<body>")>.
 */
#ifndef KB_ALERTS_ALERTS_H
#define KB_ALERTS_ALERTS_H
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "store/store.h"

struct kb_config;
struct kb_alerts;

/*
 * Starts the delivery thread for cfg's [alerts] (webhook_url set: else
 * *out is NULL and nothing runs) on its own connection to store_url.
 * KB_E_CONFIG / KB_E_STORE with *errmsg. Main thread.
 */
KB_MUSTCHECK enum kb_err alerts_start(const char *store_url, const char *synchronous,
                                      const struct kb_config *cfg, struct kb_alerts **out,
                                      char **errmsg);

/* Stops the thread (an attempt in progress is cut and retried at the next
 * start) and frees it. NULL: no-op. Main thread. */
void alerts_stop(struct kb_alerts *a);

/* The Keybrake-Signature value of body at unix time t into out (size >=
 * 96). Pure; any thread. */
void alerts_sign(const char *secret, int64_t t, const char *body, size_t len, char *out,
                 size_t size);

/* An alert's period as the budgets API shows it ("2026-12-03", "2026-12",
 * "total") into buf. Pure. */
const char *alerts_period_str(enum kb_budget_window w, int64_t period, char *buf, size_t size);

/* The webhook's body of alert a (caller frees). Pure. */
char *alerts_body(const struct kb_alert *a);

/* Lets another thread cut a POST in progress: stop is set and the open
 * socket shut down, under mu. */
struct alerts_cancel {
    pthread_mutex_t mu;
    int fd;    /* the open socket, -1: none */
    bool stop; /* no new connection */
};

/* One POST to url (http:// or https://) with the extra header lines hdrs
 * ("Name: value\r\n" each) and a JSON body, waiting at most timeout_ms for
 * the connect and each read or write; *status is the answer's HTTP status.
 * KB_E_UPSTREAM_UNREACHABLE / _TIMEOUT / _ERROR, or KB_E_SHUTTING_DOWN
 * when cut through cancel (may be NULL), with *errmsg. Blocking: the
 * delivery thread only. */
KB_MUSTCHECK enum kb_err alerts_http_post(const char *url, const char *ca_file, const char *hdrs,
                                          const char *body, int timeout_ms,
                                          struct alerts_cancel *cancel, int *status, char **errmsg);

#endif
