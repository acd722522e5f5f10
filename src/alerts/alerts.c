/*
 * alerts.c - the alert delivery thread (alerts.h; docs/budgets.md, "Usage
 * and alerts").
 *
 * One loop: claim the oldest due alert (store_alert_claim: its attempt
 * count goes up and its next_at moves past the attempt's deadline, the
 * lease, so no other node's thread takes it meanwhile), POST it, record
 * the attempt: delivered on a 2xx answer; else retried after backoff *
 * 2^(attempt - 1) (at most an hour), or failed once max_attempts were
 * made. With nothing due it waits ALERTS_POLL_MS on a condition variable
 * (which alerts_stop signals). A process that dies during an attempt
 * leaves the alert claimed: it is attempted again when the lease ends,
 * so a receiver may see one alert twice; Keybrake-Delivery (the alert's
 * id) lets it drop the second.
 */
#include "alerts/alerts.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/money.h"

#define ALERTS_POLL_MS 200         /* how often the thread looks for due alerts */
#define ALERTS_BACKOFF_MAX 3600000 /* longest wait between two attempts, ms */
#define ALERTS_STORE_RETRY_MS 1000 /* after a store error */

struct kb_alerts {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping; /* under mu */
    struct alerts_cancel cancel;
    struct kb_store *store; /* owned; the thread's connection */
    char *url;              /* owned */
    char *secret;           /* owned */
    char *ca_file;          /* owned; NULL: the system's CAs */
    int max_attempts;
    int64_t backoff_ms;
    int timeout_ms;
};

static const char *const window_names[] = {"total", "day", "month"};

const char *alerts_period_str(enum kb_budget_window w, int64_t period, char *buf, size_t size)
{
    if (w == KB_WIN_DAY)
        return clock_day_str(period, buf, size);
    if (w == KB_WIN_MONTH)
        snprintf(buf, size, "%04lld-%02lld", (long long)(1970 + period / 12),
                 (long long)(period % 12 + 1));
    else
        snprintf(buf, size, "total");
    return buf;
}

void alerts_sign(const char *secret, int64_t t, const char *body, size_t len, char *out,
                 size_t size)
{
    char ts[24];
    int tl = snprintf(ts, sizeof ts, "%lld.", (long long)t);
    struct kb_hmac *h = crypto_hmac_new((const uint8_t *)secret, strlen(secret));
    char *msg = kb_malloc((size_t)tl + len);
    memcpy(msg, ts, (size_t)tl);
    memcpy(msg + tl, body, len);
    uint8_t mac[KB_HASH_LEN];
    crypto_hmac_run(h, msg, (size_t)tl + len, mac);
    crypto_hmac_free(h);
    free(msg);
    char hex[2 * KB_HASH_LEN + 1];
    crypto_hex(mac, KB_HASH_LEN, hex);
    snprintf(out, size, "t=%lld,v1=%s", (long long)t, hex);
}

char *alerts_body(const struct kb_alert *a)
{
    char period[48], at[96];
    time_t secs = (time_t)(a->created_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(at, sizeof at, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(a->created_ms % 1000));
    /* a tenant's budget is stored as "<tenant>\x1f<name>" (docs/tenants.md):
     * the receiver gets its name and, apart, its tenant */
    const char *sep = strchr(a->budget, '\x1f');
    json_t *o = json_pack("{s:I, s:s, s:s, s:i, s:s, s:s, s:f, s:f, s:s}", "id", (json_int_t)a->id,
                          "type", "budget.threshold", "budget", sep ? sep + 1 : a->budget, "threshold",
                          a->threshold, "window", window_names[a->window], "period",
                          alerts_period_str(a->window, a->period, period, sizeof period),
                          "spent_usd", (double)a->spent / (double)KB_MICROS_PER_USD, "cap_usd",
                          (double)a->cap / (double)KB_MICROS_PER_USD, "at", at);
    json_object_set_new(o, "tenant",
                        sep ? json_stringn(a->budget, (size_t)(sep - a->budget)) : json_null());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* One attempt of claimed alert al: its outcome recorded. */
static void attempt(struct kb_alerts *x, const struct kb_alert *al)
{
    char *body = alerts_body(al);
    char sig[128], hdrs[320];
    int64_t start = clock_now_ms();
    alerts_sign(x->secret, start / 1000, body, strlen(body), sig, sizeof sig);
    snprintf(hdrs, sizeof hdrs,
             "Keybrake-Signature: %s\r\nKeybrake-Delivery: %lld\r\nKeybrake-Attempt: %d\r\n", sig,
             (long long)al->id, al->attempts);
    int status = 0;
    char *why = NULL;
    enum kb_err err =
        alerts_http_post(x->url, x->ca_file, hdrs, body, x->timeout_ms, &x->cancel, &status, &why);
    free(body);
    int64_t now = clock_now_ms();
    bool ok = err == KB_OK && status >= 200 && status <= 299;
    enum kb_alert_status st = ok ? KB_ALERT_DELIVERED
                              : err == KB_E_SHUTTING_DOWN || al->attempts < x->max_attempts
                                  ? KB_ALERT_PENDING
                                  : KB_ALERT_FAILED;
    int64_t next = 0;
    if (st == KB_ALERT_PENDING) {
        int64_t wait = x->backoff_ms;
        for (int i = 1; i < al->attempts && wait < ALERTS_BACKOFF_MAX; i++)
            wait *= 2;
        /* cut by a shutdown: due again at once, at the next start */
        next = err == KB_E_SHUTTING_DOWN
                   ? now
                   : now + (wait < ALERTS_BACKOFF_MAX ? wait : ALERTS_BACKOFF_MAX);
    }
    char ts[40];
    json_t *line = json_pack("{s:i, s:s, s:i, s:I}", "attempt", al->attempts, "at",
                             clock_rfc3339(start / 1000, ts, sizeof ts), "status", status, "ms",
                             (json_int_t)(now - start));
    if (!ok)
        json_object_set_new(line, "error",
                            json_string(why      ? why
                                        : status ? "not a 2xx answer"
                                                 : "no answer"));
    char *text = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    char *logline = kb_asprintf("%s\n", text);
    free(text);
    char idbuf[24], thr[8], stbuf[8], att[8];
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)al->id);
    snprintf(thr, sizeof thr, "%d", al->threshold);
    snprintf(stbuf, sizeof stbuf, "%d", status);
    snprintf(att, sizeof att, "%d", al->attempts);
    kb_log(ok ? KB_LOG_INFO : KB_LOG_WARN,
           ok                      ? "alert delivered"
           : st == KB_ALERT_FAILED ? "alert failed, no attempt left"
                                   : "alert attempt failed, retried",
           "alert_id", idbuf, "budget", al->budget, "threshold", thr, "attempt", att, "status",
           stbuf, "error",
           ok    ? ""
           : why ? why
                 : "",
           NULL);
    if (store_alert_record(x->store, al->id, status, logline, st, next,
                           st == KB_ALERT_PENDING ? 0 : now) != KB_OK)
        kb_log(KB_LOG_ERROR, "alert attempt not recorded", "alert_id", idbuf, "error",
               store_last_error(x->store), NULL);
    free(logline);
    free(why);
}

/* Waits up to ms unless stopping; true when stopping. */
static bool wait_ms(struct kb_alerts *x, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&x->mu);
    while (!x->stopping && pthread_cond_timedwait(&x->cond, &x->mu, &ts) == 0)
        ;
    bool stop = x->stopping;
    pthread_mutex_unlock(&x->mu);
    return stop;
}

static void *run(void *arg)
{
    struct kb_alerts *x = arg;
    /* the lease: longer than any attempt (connect + write + read) */
    int64_t lease = 3 * (int64_t)x->timeout_ms + 5000;
    for (;;) {
        pthread_mutex_lock(&x->mu);
        bool stop = x->stopping;
        pthread_mutex_unlock(&x->mu);
        if (stop)
            break;
        struct kb_alert *al = NULL;
        enum kb_err err = store_alert_claim(x->store, clock_now_ms(), lease, &al);
        if (err == KB_OK) {
            attempt(x, al);
            store_alert_free(al);
            continue;
        }
        if (err != KB_E_NOT_FOUND)
            kb_log(KB_LOG_ERROR, "alerts: cannot read the store", "error",
                   store_last_error(x->store), NULL);
        if (wait_ms(x, err == KB_E_NOT_FOUND ? ALERTS_POLL_MS : ALERTS_STORE_RETRY_MS))
            break;
    }
    return NULL;
}

enum kb_err alerts_start(const char *store_url, const char *synchronous,
                         const struct kb_config *cfg, struct kb_alerts **out, char **errmsg)
{
    *out = NULL;
    if (!cfg->alerts_webhook_url)
        return KB_OK;
    struct kb_store *s = NULL;
    enum kb_err err = store_open(store_url, synchronous, false, &s, errmsg);
    if (err != KB_OK)
        return err;
    struct kb_alerts *x = kb_calloc(1, sizeof *x);
    x->store = s;
    x->url = kb_strdup(cfg->alerts_webhook_url);
    x->secret = kb_strdup(cfg->alerts_webhook_secret);
    x->ca_file = cfg->ca_file ? kb_strdup(cfg->ca_file) : NULL;
    x->max_attempts = (int)cfg->alerts_max_attempts;
    x->backoff_ms = cfg->alerts_backoff_ms;
    x->timeout_ms = (int)cfg->alerts_timeout_ms;
    x->cancel.fd = -1;
    pthread_mutex_init(&x->mu, NULL);
    pthread_mutex_init(&x->cancel.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&x->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&x->thread, NULL, run, x) != 0) {
        kb_set_errmsg(errmsg, "cannot start the alert delivery thread");
        x->thread = 0;
        alerts_stop(x);
        return KB_E_INTERNAL;
    }
    *out = x;
    return KB_OK;
}

void alerts_stop(struct kb_alerts *x)
{
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    x->stopping = true;
    pthread_cond_signal(&x->cond);
    pthread_mutex_unlock(&x->mu);
    pthread_mutex_lock(&x->cancel.mu);
    x->cancel.stop = true;
    if (x->cancel.fd >= 0)
        shutdown(x->cancel.fd, SHUT_RDWR); /* an attempt in progress ends now */
    pthread_mutex_unlock(&x->cancel.mu);
    if (x->thread)
        pthread_join(x->thread, NULL);
    pthread_cond_destroy(&x->cond);
    pthread_mutex_destroy(&x->mu);
    pthread_mutex_destroy(&x->cancel.mu);
    store_close(x->store);
    free(x->url);
    free(x->secret);
    free(x->ca_file);
    free(x);
}
