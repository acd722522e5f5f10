/*
 * audit.c - the audit log resource of the admin API.
 *
 *   GET /v1/audit   one entry per proxied request or admin action, newest
 *                   first, with its completion merged in; filters key_id,
 *                   label_prefix, vendor, decision, since, until; limit
 *                   (1-200, default 50) and cursor paging like /v1/keys.
 *
 * Read-only, on the admin thread's own connection; the log is written by
 * the writer thread only. The cursor is the last entry's seq as text: it
 * stays valid however many records are appended meanwhile.
 */
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "admin/admin_int.h"
#include "audit/audit.h"
#include "core/money.h"
#include "net/http.h"
#include "net/httpd.h"
#include "store/audit_store.h"

#define MAX_FILTER 256 /* longest key_id, label_prefix or vendor filter */

struct page {
    json_t *data;     /* the entries, in order */
    int64_t last_seq; /* seq of the last entry added */
    int shown;        /* entries added */
    int limit;        /* entries wanted; one more only signals a next page */
    bool more;        /* the store had one more */
};

static double usd(int64_t micros)
{
    /* display only: amounts are exact integers in the store */
    return (double)micros / (double)KB_MICROS_PER_USD;
}

static void add_entry(const struct kb_audit_entry *e, void *arg)
{
    struct page *pg = arg;
    if (pg->shown == pg->limit) {
        pg->more = true;
        return;
    }
    const struct kb_audit_rec *r = &e->rec;
    char ts[48], base[32];
    time_t t = (time_t)(r->ts_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts, sizeof ts, "%s.%03dZ", base, (int)(r->ts_ms % 1000));

    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer(e->seq));
    json_object_set_new(o, "ts", json_string(ts));
    audit_rec_json_ids(o, r);
    json_object_set_new(o, "status", r->status ? json_integer(r->status) : json_null());
    json_object_set_new(o, "reserved_usd", json_real(usd(r->reserved)));
    json_object_set_new(o, "settled_usd",
                        r->settled >= 0 ? json_real(usd(r->settled)) : json_null());
    json_object_set_new(o, "latency_ms", json_real((double)r->latency_us / 1000.0));
    json_object_set_new(o, "bytes_in", json_integer(r->bytes_in));
    json_object_set_new(o, "bytes_out", json_integer(r->bytes_out));
    if (r->detail) {
        json_t *d = json_loads(r->detail, 0, NULL);
        json_object_set_new(o, "detail", d ? d : json_string(r->detail));
    }
    json_object_set_new(o, "tenant", r->tenant ? json_string(r->tenant) : json_null());
    json_object_set_new(o, "completed", json_boolean(e->completed));
    json_array_append_new(pg->data, o);
    pg->last_seq = e->seq;
    pg->shown++;
}

/* A filter value: NULL when absent; false when present but unusable. */
static bool text_param(struct evkeyvalq *q, const char *name, const char **out)
{
    const char *v = evhttp_find_header(q, name);
    *out = v;
    if (!v)
        return true;
    size_t n = strlen(v);
    if (n == 0 || n > MAX_FILTER)
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static bool uint_param(const char *v, long long max, long long *out)
{
    if (!v || !*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 18)
        return false;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end || x < 1 || x > max)
        return false;
    *out = x;
    return true;
}

void admin__audit(struct kb_admin *a, struct kb_hreq *req, struct evkeyvalq *query)
{
    if (hreq_method(req) != KB_M_GET) {
        http_reply_error(req, KB_E_METHOD_NOT_ALLOWED, NULL, NULL);
        return;
    }
    struct kb_audit_filter f = {0};
    static const char *const texts[] = {"key_id", "label_prefix", "vendor"};
    const char **dest[] = {&f.key_id, &f.label_prefix, &f.vendor};
    for (size_t i = 0; i < 3; i++) {
        if (!text_param(query, texts[i], dest[i])) {
            http_reply_error(req, KB_E_INVALID, "filters must be 1-256 printable bytes", texts[i]);
            return;
        }
    }
    /* a scoped token sees its tenant's records only; root all, or one
     * tenant's with ?tenant= */
    f.tenant = admin__scope(a) ? admin__scope(a) : evhttp_find_header(query, "tenant");
    f.decision = evhttp_find_header(query, "decision");
    if (f.decision && strcmp(f.decision, "allowed") != 0 && strcmp(f.decision, "refused") != 0 &&
        strcmp(f.decision, "ok") != 0) {
        http_reply_error(req, KB_E_INVALID, "decision must be allowed, refused or ok", "decision");
        return;
    }
    static const char *const times[] = {"since", "until"};
    int64_t *tdest[] = {&f.since_ms, &f.until_ms};
    for (size_t i = 0; i < 2; i++) {
        const char *v = evhttp_find_header(query, times[i]);
        if (v && audit_parse_time(v, tdest[i]) != KB_OK) {
            http_reply_error(req, KB_E_INVALID,
                             "since and until must be RFC 3339 times or epoch seconds", times[i]);
            return;
        }
    }
    long long lim = 50, cur = 0;
    const char *limit = evhttp_find_header(query, "limit");
    if (limit && !uint_param(limit, 200, &lim)) {
        http_reply_error(req, KB_E_INVALID, "limit must be an integer from 1 to 200", "limit");
        return;
    }
    const char *cursor = evhttp_find_header(query, "cursor");
    if (cursor && !uint_param(cursor, INT64_MAX, &cur)) {
        http_reply_error(req, KB_E_INVALID, "cursor is not one this API returned", "cursor");
        return;
    }
    f.before_seq = cur;
    f.limit = (int)lim + 1; /* one more tells whether a next page exists */

    struct page pg = {json_array(), 0, 0, (int)lim, false};
    if (store_audit_query(a->store, &f, add_entry, &pg) != KB_OK) {
        json_decref(pg.data);
        http_reply_error(req, KB_E_STORE, NULL, NULL);
        return;
    }
    json_t *next = json_null();
    if (pg.more) {
        char c[24];
        snprintf(c, sizeof c, "%lld", (long long)pg.last_seq);
        json_decref(next);
        next = json_string(c);
    }
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "data", pg.data, "next_cursor", next));
}
