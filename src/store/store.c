/*
 * store.c - the store's public functions (store.h, audit_store.h): the
 * backend is chosen by the store URL at open, and every call goes through
 * its table (backend.h). Nothing here knows SQL.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/backend.h"
#include "store/store.h"

const char *store_url_file(const char *url)
{
    if (!url)
        return NULL;
    if (strncmp(url, "sqlite://", 9) == 0)
        return url + 9;
    if (strncmp(url, "sqlite:", 7) == 0)
        return url + 7;
    return strstr(url, "://") ? NULL : url;
}

/* This process's names for the store (store_set_node). */
static char node_id[KB_NODE_ID_MAX + 1] = "local";
static char boot_id[40] = "0";

bool store_set_node(const char *node, const char *boot)
{
    size_t n = node ? strlen(node) : 0;
    if (n == 0 || n > KB_NODE_ID_MAX ||
        strspn(node, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "abcdefghijklmnopqrstuvwxyz"
                     "0123456789._:-") != n)
        return false;
    memcpy(node_id, node, n + 1);
    snprintf(boot_id, sizeof boot_id, "%s", boot ? boot : "0");
    return true;
}

const char *store_node_id(void)
{
    return node_id;
}

const char *store__node_id(void)
{
    return node_id;
}

const char *store__boot_id(void)
{
    return boot_id;
}

/* "sqlite:PATH", "sqlite://PATH" or a plain file path: the embedded file;
 * "postgres://..." and "postgresql://...": PostgreSQL (libpq's URI). */
enum kb_err store_open(const char *url, const char *synchronous, bool check, struct kb_store **out,
                       char **errmsg)
{
    const char *where = store_url_file(url);
    if (!url || !*url) {
        kb_set_errmsg(errmsg, "the store URL is empty");
        return KB_E_CONFIG;
    }
    if (where) {
        /* the embedded file */
    } else if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        return kb_store_pg.open(url, synchronous, check, out, errmsg);
    } else if (strstr(url, "://")) {
        kb_set_errmsg(
            errmsg, "store URL: unknown scheme in \"%.64s\" (sqlite:PATH or postgres://...)", url);
        return KB_E_CONFIG;
    }
    if (!*where) {
        kb_set_errmsg(errmsg, "store URL \"%s\" names no file", url);
        return KB_E_CONFIG;
    }
    if (strcmp(where, ":memory:") == 0) {
        /* each connection (writer, readers, admin) would get its own */
        kb_set_errmsg(errmsg,
                      "store URL \"%s\": an in-memory store cannot be shared by the "
                      "daemon's threads; name a file",
                      url);
        return KB_E_CONFIG;
    }
    return kb_store_sqlite.open(where, synchronous, check, out, errmsg);
}

void store_close(struct kb_store *s)
{
    if (s)
        s->be->close(s);
}

const char *store_backend(const struct kb_store *s)
{
    return s->be->name;
}

unsigned store_caps(const struct kb_store *s)
{
    return s->be->caps;
}

enum kb_err store_begin(struct kb_store *s)
{
    return s->be->begin(s);
}

enum kb_err store_commit(struct kb_store *s)
{
    return s->be->commit(s);
}

bool store_commit_later(struct kb_store *s, void (*done)(void *arg, enum kb_err err), void *arg,
                        enum kb_err *err)
{
    if (s->be->commit_later)
        return s->be->commit_later(s, done, arg, err);
    *err = s->be->commit(s);
    return false;
}

void store_commit_flush(struct kb_store *s)
{
    if (s->be->commit_flush)
        s->be->commit_flush(s);
}

void store_rollback(struct kb_store *s)
{
    s->be->rollback(s);
}

enum kb_err store_savepoint(struct kb_store *s)
{
    return s->be->savepoint(s);
}

enum kb_err store_release(struct kb_store *s)
{
    return s->be->release(s);
}

enum kb_err store_rollback_to(struct kb_store *s)
{
    return s->be->rollback_to(s);
}

bool store_in_transaction(struct kb_store *s)
{
    return s->be->in_transaction(s);
}

const char *store_last_error(struct kb_store *s)
{
    return s->be->last_error(s);
}

enum kb_err store_probe_write(struct kb_store *s)
{
    return s->be->probe_write(s);
}

void *store_writer_attach(struct kb_store *s, const char *synchronous)
{
    return s->be->writer_attach(s, synchronous);
}

void store_writer_idle(struct kb_store *s, void *state)
{
    s->be->writer_idle(s, state);
}

void store_writer_detach(struct kb_store *s, void *state)
{
    s->be->writer_detach(s, state);
}

size_t store_writer_resident(struct kb_store *s, void *state)
{
    return s->be->writer_resident(state);
}

/* ---- through the backend's table ---- */

enum kb_err store_ping(struct kb_store *s)
{
    return s->be->ping(s);
}

enum kb_err store_key_insert(struct kb_store *s, struct kb_key *k, const uint8_t hash[KB_HASH_LEN])
{
    return s->be->key_insert(s, k, hash);
}

enum kb_err store_key_get(struct kb_store *s, const char *id, int64_t day, struct kb_key **out)
{
    return s->be->key_get(s, id, day, out);
}

enum kb_err store_key_by_hash(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], int64_t day,
                              struct kb_key **out)
{
    return s->be->key_by_hash(s, hash, day, out);
}

enum kb_err store_key_revoked(struct kb_store *s, int64_t seq, bool *revoked)
{
    return s->be->key_revoked(s, seq, revoked);
}

enum kb_err store_key_state(struct kb_store *s, int64_t seq, struct kb_key_state *out)
{
    return s->be->key_state(s, seq, out);
}

enum kb_err store_key_update(struct kb_store *s, const char *id, const struct kb_key_change *c,
                             int64_t now, struct kb_revoked_key *out)
{
    return s->be->key_update(s, id, c, now, out);
}

enum kb_err store_key_list(struct kb_store *s, const struct kb_key_filter *f, struct kb_key **out,
                           size_t *n)
{
    return s->be->key_list(s, f, out, n);
}

enum kb_err store_key_count_active(struct kb_store *s, int64_t now, int64_t *count)
{
    return s->be->key_count_active(s, now, count);
}

enum kb_err store_key_revoke(struct kb_store *s, const char *id, int64_t now,
                             struct kb_revoked_key *out)
{
    return s->be->key_revoke(s, id, now, out);
}

enum kb_err store_key_revoke_prefix(struct kb_store *s, const char *prefix, int64_t now,
                                    int64_t *count, struct kb_revoked_key **keys)
{
    return s->be->key_revoke_prefix(s, NULL, prefix, now, count, keys);
}

enum kb_err store_key_revoke_prefix_in(struct kb_store *s, const char *tenant, const char *prefix,
                                       int64_t now, int64_t *count, struct kb_revoked_key **keys)
{
    return s->be->key_revoke_prefix(s, tenant, prefix, now, count, keys);
}

enum kb_err store_spend_reserve(struct kb_store *s, int64_t seq, int64_t day, int64_t amount,
                                int64_t cap, int64_t *remaining)
{
    return s->be->spend_reserve(s, seq, day, amount, cap, remaining);
}

enum kb_err store_spend_settle(struct kb_store *s, int64_t seq, int64_t day, int64_t reserved,
                               int64_t actual, int64_t cap, int64_t *remaining)
{
    return s->be->spend_settle(s, seq, day, reserved, actual, cap, remaining);
}

enum kb_err store_rate_take(struct kb_store *s, int64_t seq, int64_t requests, int64_t period_ms,
                            int64_t now_ms, int64_t *retry_after_ms)
{
    return s->be->rate_take(s, seq, requests, period_ms, now_ms, retry_after_ms);
}

enum kb_err store_spend_settle_orphans(struct kb_store *s, int64_t *count)
{
    return s->be->spend_settle_orphans(s, count);
}

enum kb_err store_txn_run(struct kb_store *s, kb_txn_fn fn, void *arg)
{
    return s->be->txn_run(s, fn, arg);
}

enum kb_err store_admin_token_count(struct kb_store *s, int64_t *count)
{
    return s->be->admin_token_count(s, count);
}

enum kb_err store_admin_token_add(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                  const char *label, int64_t now)
{
    return s->be->admin_token_add(s, hash, label, now);
}

enum kb_err store_admin_token_check(struct kb_store *s, const uint8_t hash[KB_HASH_LEN])
{
    return s->be->admin_token_check(s, hash);
}

enum kb_err store_object_charged(struct kb_store *s, int64_t key_seq, const char *object_id,
                                 int64_t not_before, int64_t *micros)
{
    return s->be->object_charged(s, key_seq, object_id, not_before, micros);
}

enum kb_err store_object_charge_set(struct kb_store *s, int64_t key_seq, const char *object_id,
                                    int64_t micros, int64_t now, int64_t not_before)
{
    return s->be->object_charge_set(s, key_seq, object_id, micros, now, not_before);
}

enum kb_err store_audit_last(struct kb_store *s, int64_t *seq, uint8_t hash[KB_HASH_LEN])
{
    return s->be->audit_last(s, seq, hash);
}

enum kb_err store_audit_last_ckpt(struct kb_store *s, int64_t *seq, int64_t *every)
{
    return s->be->audit_last_ckpt(s, seq, every);
}

enum kb_err store_audit_completed(struct kb_store *s, int64_t seq)
{
    return s->be->audit_completed(s, seq);
}

enum kb_err store_audit_exists(struct kb_store *s, int64_t seq)
{
    return s->be->audit_exists(s, seq);
}

enum kb_err store_audit_insert(struct kb_store *s, int64_t seq, int64_t ref_seq,
                               const struct kb_audit_rec *rec, const uint8_t hash[KB_HASH_LEN])
{
    return s->be->audit_insert(s, seq, ref_seq, rec, hash);
}

enum kb_err store_audit_ckpt_insert(struct kb_store *s, const struct kb_audit_ckpt *ck)
{
    return s->be->audit_ckpt_insert(s, ck);
}

enum kb_err store_audit_cut_find(struct kb_store *s, int64_t before_ms, int64_t max_seq,
                                 int64_t *seq)
{
    return s->be->audit_cut_find(s, before_ms, max_seq, seq);
}

enum kb_err store_audit_prune(struct kb_store *s, int64_t cut, int64_t *removed)
{
    return s->be->audit_prune(s, cut, removed);
}

void store_audit_forget(struct kb_store *s)
{
    s->be->audit_forget(s);
}

void store_audit_head_sync(struct kb_store *s)
{
    s->be->audit_head_sync(s);
}

void store_audit_head_drop(struct kb_store *s)
{
    s->be->audit_head_drop(s);
}

enum kb_err store_audit_read_begin(struct kb_store *s)
{
    return s->be->audit_read_begin(s);
}

void store_audit_read_end(struct kb_store *s)
{
    s->be->audit_read_end(s);
}

enum kb_err store_audit_rows(struct kb_store *s, int64_t after_seq, int64_t since_ms,
                             int64_t until_ms, struct kb_audit_iter **out)
{
    return s->be->audit_rows(s, after_seq, since_ms, until_ms, out);
}

enum kb_err store_audit_ckpts(struct kb_store *s, struct kb_audit_iter **out)
{
    return s->be->audit_ckpts(s, out);
}

enum kb_err store_audit_row_next(struct kb_audit_iter *it, struct kb_audit_row *row)
{
    return it->be->audit_row_next(it, row);
}

enum kb_err store_audit_ckpt_next(struct kb_audit_iter *it, struct kb_audit_ckpt *ck)
{
    return it->be->audit_ckpt_next(it, ck);
}

void store_audit_iter_free(struct kb_audit_iter *it)
{
    if (it)
        it->be->audit_iter_free(it);
}

enum kb_err store_audit_query(struct kb_store *s, const struct kb_audit_filter *f,
                              kb_audit_entry_cb cb, void *arg)
{
    return s->be->audit_query(s, f, cb, arg);
}

/* ---- the structs the store hands out ---- */

void store_key_clear(struct kb_key *k)
{
    free(k->label);
    free(k->vendor);
    free(k->allowed_endpoints);
    free(k->metadata);
    free(k->allowed_accounts);
    free(k->allowed_models);
    free(k->tenant);
    if (k->ext_free)
        k->ext_free(k->ext);
}

void store_key_free(struct kb_key *k)
{
    if (!k)
        return;
    store_key_clear(k);
    free(k);
}

void store_key_list_free(struct kb_key *keys, size_t n)
{
    if (!keys)
        return;
    for (size_t i = 0; i < n; i++)
        store_key_clear(&keys[i]);
    free(keys);
}

enum kb_err store_budget_insert(struct kb_store *s, struct kb_budget *b, char **errmsg)
{
    return s->be->budget_insert(s, b, errmsg);
}

enum kb_err store_budget_get(struct kb_store *s, const char *name, int64_t now,
                             struct kb_budget **out)
{
    return s->be->budget_get(s, name, now, out);
}

enum kb_err store_budget_list(struct kb_store *s, int64_t after_seq, int limit, int64_t now,
                              struct kb_budget **out, size_t *n)
{
    return s->be->budget_list(s, after_seq, limit, now, out, n);
}

enum kb_err store_budget_update(struct kb_store *s, const char *name,
                                const struct kb_budget_change *c, int64_t now, char **errmsg)
{
    return s->be->budget_update(s, name, c, now, errmsg);
}

enum kb_err store_budget_delete(struct kb_store *s, const char *name, char **errmsg)
{
    return s->be->budget_delete(s, name, errmsg);
}

enum kb_err store_key_budget_add(struct kb_store *s, int64_t key_seq, const char *name)
{
    return s->be->key_budget_add(s, key_seq, name);
}

enum kb_err store_key_budgets(struct kb_store *s, int64_t key_seq, char ***names, size_t *n)
{
    return s->be->key_budgets(s, key_seq, names, n);
}

enum kb_err store_budget_reserve(struct kb_store *s, int64_t key_seq, int64_t now, int64_t amount,
                                 struct kb_budget_hold **holds, size_t *n, char **exhausted)
{
    return s->be->budget_reserve(s, key_seq, now, amount, holds, n, exhausted);
}

enum kb_err store_budget_settle(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                                int64_t reserved, int64_t actual)
{
    return s->be->budget_settle(s, holds, n, reserved, actual);
}

enum kb_err store_budget_release(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                                 int64_t amount)
{
    return s->be->budget_release(s, holds, n, amount);
}

void store_budget_free(struct kb_budget *b)
{
    if (!b)
        return;
    free(b->name);
    free(b->parent);
    free(b);
}

void store_budget_list_free(struct kb_budget *b, size_t n)
{
    if (!b)
        return;
    for (size_t i = 0; i < n; i++) {
        free(b[i].name);
        free(b[i].parent);
    }
    free(b);
}

/* ---- usage ---- */

enum kb_err store_usage(struct kb_store *s, const struct kb_usage_query *q,
                        struct kb_usage_row **out, size_t *n)
{
    if (q->from_day > q->to_day || q->to_day - q->from_day >= KB_USAGE_DAYS_MAX || q->limit < 1 ||
        q->limit > KB_USAGE_LIMIT_MAX + 1 || q->offset < 0 ||
        (unsigned)q->group > KB_USAGE_TENANT ||
        (q->group == KB_USAGE_LABEL_PREFIX && (!q->label_prefix || !*q->label_prefix)))
        return KB_E_INVALID;
    return s->be->usage(s, q, out, n);
}

void store_usage_free(struct kb_usage_row *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++)
        free(rows[i].group);
    free(rows);
}

/* ---- alerts ---- */

int store__thresholds_parse(const char *text, int *v)
{
    int n = 0;
    for (const char *p = text; p && *p && n < KB_ALERT_THRESHOLDS_MAX;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p)
            break;
        v[n++] = (int)x;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

const char *store__thresholds_format(const int *v, int n, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && len < size; i++) {
        int w = snprintf(buf + len, size - len, "%s%d", i ? "," : "", v[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    return buf;
}

int store__alerts_crossed(int64_t spent, int64_t cap, const char *text, int level, int *crossed)
{
    if (!text || !*text || cap <= 0 || spent <= 0)
        return 0;
    int v[KB_ALERT_THRESHOLDS_MAX], n = store__thresholds_parse(text, v), k = 0;
    for (int i = 0; i < n; i++)
        /* spent / cap >= t / 100, in integers (a cap too large to multiply
         * by 100 is compared a cent of a percent coarser) */
        if (v[i] > level &&
            (cap <= INT64_MAX / 100 ? spent * 100 >= cap * v[i] : spent >= cap / 100 * v[i]))
            crossed[k++] = v[i];
    return k;
}

static bool thresholds_ok(const int *pct, int n)
{
    if (n < 0 || n > KB_ALERT_THRESHOLDS_MAX || (n && !pct))
        return false;
    for (int i = 0; i < n; i++)
        if (pct[i] < 1 || pct[i] > 100 || (i && pct[i] <= pct[i - 1]))
            return false;
    return true;
}

enum kb_err store_budget_alerts_set(struct kb_store *s, const char *name, const int *pct, int n)
{
    if (!name || !thresholds_ok(pct, n))
        return KB_E_INVALID;
    return s->be->budget_alerts_set(s, name, pct, n);
}

enum kb_err store_alert_claim(struct kb_store *s, int64_t now_ms, int64_t lease_ms,
                              struct kb_alert **out)
{
    return s->be->alert_claim(s, now_ms, lease_ms, out);
}

enum kb_err store_alert_record(struct kb_store *s, int64_t id, int http_status,
                               const char *log_line, enum kb_alert_status status, int64_t next_at,
                               int64_t done_ms)
{
    return s->be->alert_record(s, id, http_status, log_line ? log_line : "", status, next_at,
                               done_ms);
}

enum kb_err store_alert_list(struct kb_store *s, int64_t before_id, int limit, const char *budget,
                             struct kb_alert **out, size_t *n)
{
    if (limit < 1 || limit > 1000 || before_id < 0)
        return KB_E_INVALID;
    return s->be->alert_list(s, before_id, limit, budget, out, n);
}

static void alert_clear(struct kb_alert *a)
{
    free(a->budget);
    free(a->log);
}

void store_alert_free(struct kb_alert *a)
{
    if (!a)
        return;
    alert_clear(a);
    free(a);
}

void store_alert_list_free(struct kb_alert *a, size_t n)
{
    if (!a)
        return;
    for (size_t i = 0; i < n; i++)
        alert_clear(&a[i]);
    free(a);
}
