/*
 * sqlite_audit.c - the audit tables on SQLite (see audit_store.h).
 *
 * The append path runs for every proxied request (twice), so its statements
 * stay prepared on the connection (struct store_audit_state, inside
 * sqlite.c's struct kb_store). On the writer's connection it also keeps the
 * chain head in memory: the last record's seq and hash and the last
 * checkpoint, which would otherwise be three reads per record. The writer
 * confirms them at the start of each transaction (store_audit_head_sync:
 * PRAGMA data_version moves only when another connection committed) and
 * drops them after any rollback. The read side is not hot and prepares per
 * call.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "store/audit_store.h"
#include "store/backend.h"
#include "store/sqlite_int.h"
#include "store/store.h"

#define REC_COLS                                                                                   \
    "kind, ts_ms, request_id, action, key_id, label, vendor, method, path, decision, code, "       \
    "status, reserved_micros, settled_micros, latency_us, bytes_in, bytes_out, detail, tenant_id"

/* The append path's statements, kept prepared (struct store_audit_state). */
static const char *const append_sql[AS__COUNT] = {
    [AS_LAST] = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
    [AS_LAST_CKPT] = "SELECT seq, every FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
    /* or pruned by retention: at or before the oldest checkpoint, whose own
     * record is gone (without retention that checkpoint is record 1's) */
    [AS_EXISTS] = "SELECT 1 FROM audit WHERE seq = ?1 UNION ALL "
                  "SELECT 1 FROM audit_checkpoints c WHERE ?1 >= 1 AND c.seq >= ?1 "
                  "AND c.seq = (SELECT min(seq) FROM audit_checkpoints) "
                  "AND NOT EXISTS (SELECT 1 FROM audit a WHERE a.seq = c.seq) LIMIT 1",
    [AS_COMPLETED] = "SELECT 1 FROM audit WHERE ref_seq = ?1 LIMIT 1",
    [AS_INSERT] =
        "INSERT INTO audit (seq, ref_seq, " REC_COLS ", hash) VALUES (?1, ?2, ?3, ?4, "
        "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
    [AS_CKPT_INSERT] = "INSERT INTO audit_checkpoints (seq, prev_seq, every, ts_ms, hash, mac) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [AS_DATA_VERSION] = "PRAGMA data_version",
};

/* An iterator: the base, then its statement. */
struct sq_iter {
    struct kb_audit_iter base;
    sqlite3_stmt *st; /* owned */
};

static sqlite3_stmt *iter_st(struct kb_audit_iter *it)
{
    return ((struct sq_iter *)it)->st;
}

/* The connection's prepared statement `id`, ready; NULL when it cannot be
 * prepared. */
static sqlite3_stmt *stmt(struct kb_store *s, int id)
{
    struct store_audit_state *a = store__audit(s);
    if (!a->st[id] && sqlite3_prepare_v3(store__db(s), append_sql[id], -1,
                                         SQLITE_PREPARE_PERSISTENT, &a->st[id], NULL) != SQLITE_OK)
        return NULL;
    return a->st[id];
}

static void done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

void sqlite__audit_forget(struct kb_store *s)
{
    if (!s)
        return;
    struct store_audit_state *a = store__audit(s);
    for (int i = 0; i < AS__COUNT; i++)
        sqlite3_finalize(a->st[i]);
    memset(a, 0, sizeof *a);
}

void sqlite__audit_head_sync(struct kb_store *s)
{
    struct store_audit_state *a = store__audit(s);
    sqlite3_stmt *st = stmt(s, AS_DATA_VERSION);
    int64_t v = -1;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    if (st)
        done(st);
    if (v < 0 || v != a->data_version)
        a->known = a->ck_known = false; /* another connection committed: read again */
    a->data_version = v;
    a->cache = v >= 0;
}

void sqlite__audit_head_drop(struct kb_store *s)
{
    struct store_audit_state *a = store__audit(s);
    a->known = a->ck_known = false;
}

enum kb_err sqlite__audit_last(struct kb_store *s, int64_t *seq, uint8_t hash[KB_HASH_LEN])
{
    struct store_audit_state *a = store__audit(s);
    if (a->cache && a->known) {
        *seq = a->last_seq;
        memcpy(hash, a->last_hash, KB_HASH_LEN);
        return KB_OK;
    }
    sqlite3_stmt *st = stmt(s, AS_LAST);
    if (!st)
        return KB_E_STORE;
    enum kb_err err = KB_OK;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const void *h = sqlite3_column_blob(st, 1);
        int n = sqlite3_column_bytes(st, 1);
        *seq = sqlite3_column_int64(st, 0);
        /* a damaged hash still chains on as zeros: verify reports it */
        memset(hash, 0, KB_HASH_LEN);
        if (h && n == KB_HASH_LEN)
            memcpy(hash, h, KB_HASH_LEN);
    } else if (rc == SQLITE_DONE) {
        *seq = 0;
        memset(hash, 0, KB_HASH_LEN);
    } else {
        err = KB_E_STORE;
    }
    done(st);
    if (err == KB_OK && a->cache) {
        a->last_seq = *seq;
        memcpy(a->last_hash, hash, KB_HASH_LEN);
        a->known = true;
    }
    return err;
}

enum kb_err sqlite__audit_last_ckpt(struct kb_store *s, int64_t *seq, int64_t *every)
{
    struct store_audit_state *a = store__audit(s);
    if (a->cache && a->ck_known) {
        *seq = a->ck_seq;
        *every = a->ck_every;
        return KB_OK;
    }
    sqlite3_stmt *st = stmt(s, AS_LAST_CKPT);
    if (!st)
        return KB_E_STORE;
    enum kb_err err = KB_OK;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
        *every = sqlite3_column_int64(st, 1);
    } else if (rc == SQLITE_DONE) {
        *seq = 0;
        *every = 0;
    } else {
        err = KB_E_STORE;
    }
    done(st);
    if (err == KB_OK && a->cache) {
        a->ck_seq = *seq;
        a->ck_every = *every;
        a->ck_known = true;
    }
    return err;
}

enum kb_err sqlite__audit_exists(struct kb_store *s, int64_t seq)
{
    struct store_audit_state *a = store__audit(s);
    /* records are numbered from 1 without gaps, and only this connection
     * appended since the head was read */
    if (a->cache && a->known && seq >= 1 && seq <= a->last_seq)
        return KB_OK;
    sqlite3_stmt *st = stmt(s, AS_EXISTS);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, seq);
    int rc = sqlite3_step(st);
    done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

enum kb_err sqlite__audit_completed(struct kb_store *s, int64_t seq)
{
    sqlite3_stmt *st = stmt(s, AS_COMPLETED);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, seq);
    int rc = sqlite3_step(st);
    done(st);
    return rc == SQLITE_ROW ? KB_OK : rc == SQLITE_DONE ? KB_E_NOT_FOUND : KB_E_STORE;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

enum kb_err sqlite__audit_insert(struct kb_store *s, int64_t seq, int64_t ref_seq,
                                 const struct kb_audit_rec *r, const uint8_t hash[KB_HASH_LEN])
{
    sqlite3_stmt *st = stmt(s, AS_INSERT);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, seq);
    if (ref_seq > 0)
        sqlite3_bind_int64(st, 2, ref_seq);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int(st, 3, (int)r->kind);
    sqlite3_bind_int64(st, 4, r->ts_ms);
    sqlite3_bind_text(st, 5, r->request_id, -1, SQLITE_STATIC);
    bind_text(st, 6, r->action);
    bind_text(st, 7, r->key_id);
    bind_text(st, 8, r->label);
    bind_text(st, 9, r->vendor);
    bind_text(st, 10, r->method);
    bind_text(st, 11, r->path);
    bind_text(st, 12, r->decision);
    bind_text(st, 13, r->code);
    sqlite3_bind_int(st, 14, r->status);
    sqlite3_bind_int64(st, 15, r->reserved);
    sqlite3_bind_int64(st, 16, r->settled);
    sqlite3_bind_int64(st, 17, r->latency_us);
    sqlite3_bind_int64(st, 18, r->bytes_in);
    sqlite3_bind_int64(st, 19, r->bytes_out);
    bind_text(st, 20, r->detail);
    bind_text(st, 21, r->tenant);
    sqlite3_bind_blob(st, 22, hash, KB_HASH_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    done(st);
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    struct store_audit_state *a = store__audit(s);
    if (a->cache && a->known && seq == a->last_seq + 1) {
        a->last_seq = seq;
        memcpy(a->last_hash, hash, KB_HASH_LEN);
    } else {
        a->known = false;
    }
    return KB_OK;
}

enum kb_err sqlite__audit_ckpt_insert(struct kb_store *s, const struct kb_audit_ckpt *ck)
{
    sqlite3_stmt *st = stmt(s, AS_CKPT_INSERT);
    if (!st)
        return KB_E_STORE;
    sqlite3_bind_int64(st, 1, ck->seq);
    sqlite3_bind_int64(st, 2, ck->prev_seq);
    sqlite3_bind_int64(st, 3, ck->every);
    sqlite3_bind_int64(st, 4, ck->ts_ms);
    sqlite3_bind_blob(st, 5, ck->hash, KB_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, ck->mac, KB_HASH_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    done(st);
    if (rc != SQLITE_DONE)
        return KB_E_STORE;
    struct store_audit_state *a = store__audit(s);
    if (a->cache) {
        a->ck_seq = ck->seq;
        a->ck_every = ck->every;
        a->ck_known = true;
    }
    return KB_OK;
}

/* ---- retention ---- */

enum kb_err sqlite__audit_cut_find(struct kb_store *s, int64_t before_ms, int64_t max_seq,
                                   int64_t *seq)
{
    /* checkpoints are one per audit.checkpoint_every records: a scan is cheap */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store__db(s),
                           "SELECT seq FROM audit_checkpoints WHERE ts_ms < ?1 "
                           "ORDER BY seq <= ?2 DESC, CASE WHEN seq <= ?2 THEN -seq ELSE seq END "
                           "LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return KB_E_STORE;
    }
    sqlite3_bind_int64(st, 1, before_ms);
    sqlite3_bind_int64(st, 2, max_seq);
    int rc = sqlite3_step(st);
    enum kb_err err = KB_OK;
    if (rc == SQLITE_ROW)
        *seq = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        *seq = 0;
    else
        err = KB_E_STORE;
    sqlite3_finalize(st);
    return err;
}

static enum kb_err exec_cut(struct kb_store *s, const char *q, int64_t cut, int64_t *changes)
{
    sqlite3_stmt *st = NULL;
    enum kb_err err = KB_E_STORE;
    if (sqlite3_prepare_v2(store__db(s), q, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, cut);
        if (sqlite3_step(st) == SQLITE_DONE) {
            err = KB_OK;
            if (changes)
                *changes = sqlite3_changes64(store__db(s));
        }
    }
    sqlite3_finalize(st);
    return err;
}

enum kb_err sqlite__audit_prune(struct kb_store *s, int64_t cut, int64_t *removed)
{
    enum kb_err err = exec_cut(s, "DELETE FROM audit WHERE seq <= ?1", cut, removed);
    if (err == KB_OK)
        err = exec_cut(s, "DELETE FROM audit_checkpoints WHERE seq < ?1", cut, NULL);
    /* the head (last record, last checkpoint) lies after the cut: the
     * cached head stays true */
    return err;
}

/* ---- read side ---- */

enum kb_err sqlite__audit_read_begin(struct kb_store *s)
{
    return sqlite3_exec(store__db(s), "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? KB_OK : KB_E_STORE;
}

void sqlite__audit_read_end(struct kb_store *s)
{
    (void)sqlite3_exec(store__db(s), "COMMIT", NULL, NULL, NULL);
}

static enum kb_err iter_new(struct kb_store *s, const char *q, struct kb_audit_iter **out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store__db(s), q, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return KB_E_STORE;
    }
    struct sq_iter *it = kb_calloc(1, sizeof *it);
    it->base.be = &kb_store_sqlite;
    it->st = st;
    *out = &it->base;
    return KB_OK;
}

enum kb_err sqlite__audit_rows(struct kb_store *s, int64_t after_seq, int64_t since_ms,
                               int64_t until_ms, struct kb_audit_iter **out)
{
    struct kb_audit_iter *it = NULL;
    enum kb_err err = iter_new(s,
                               "SELECT seq, coalesce(ref_seq, 0), " REC_COLS ", hash FROM audit "
                               "WHERE seq > ?1 AND (?2 = 0 OR ts_ms >= ?2) "
                               "AND (?3 = 0 OR ts_ms < ?3) ORDER BY seq",
                               &it);
    if (err != KB_OK)
        return err;
    sqlite3_bind_int64(iter_st(it), 1, after_seq);
    sqlite3_bind_int64(iter_st(it), 2, since_ms);
    sqlite3_bind_int64(iter_st(it), 3, until_ms);
    *out = it;
    return KB_OK;
}

enum kb_err sqlite__audit_ckpts(struct kb_store *s, struct kb_audit_iter **out)
{
    return iter_new(s,
                    "SELECT seq, prev_seq, every, ts_ms, hash, mac FROM audit_checkpoints "
                    "ORDER BY seq",
                    out);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i); /* NULL for SQL NULL */
}

/* Fills r from columns first.. of st in REC_COLS order. */
static void row_to_rec(sqlite3_stmt *st, int first, struct kb_audit_rec *r)
{
    memset(r, 0, sizeof *r);
    int i = first;
    r->kind = sqlite3_column_int(st, i++) == 1 ? KB_AUDIT_ADMIN : KB_AUDIT_PROXY;
    r->ts_ms = sqlite3_column_int64(st, i++);
    const char *rid = col_text(st, i++);
    snprintf(r->request_id, sizeof r->request_id, "%s", rid ? rid : "");
    r->action = col_text(st, i++);
    r->key_id = col_text(st, i++);
    r->label = col_text(st, i++);
    r->vendor = col_text(st, i++);
    r->method = col_text(st, i++);
    r->path = col_text(st, i++);
    r->decision = col_text(st, i++);
    r->code = col_text(st, i++);
    r->status = sqlite3_column_int(st, i++);
    r->reserved = sqlite3_column_int64(st, i++);
    r->settled = sqlite3_column_int64(st, i++);
    r->latency_us = sqlite3_column_int64(st, i++);
    r->bytes_in = sqlite3_column_int64(st, i++);
    r->bytes_out = sqlite3_column_int64(st, i++);
    r->detail = col_text(st, i++);
    r->tenant = col_text(st, i);
}

enum kb_err sqlite__audit_row_next(struct kb_audit_iter *it, struct kb_audit_row *row)
{
    int rc = sqlite3_step(iter_st(it));
    if (rc == SQLITE_DONE)
        return KB_E_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return KB_E_STORE;
    row->seq = sqlite3_column_int64(iter_st(it), 0);
    row->ref_seq = sqlite3_column_int64(iter_st(it), 1);
    row_to_rec(iter_st(it), 2, &row->rec);
    row->hash = sqlite3_column_blob(iter_st(it), 21);
    row->hash_len = (size_t)sqlite3_column_bytes(iter_st(it), 21);
    return KB_OK;
}

enum kb_err sqlite__audit_ckpt_next(struct kb_audit_iter *it, struct kb_audit_ckpt *ck)
{
    int rc = sqlite3_step(iter_st(it));
    if (rc == SQLITE_DONE)
        return KB_E_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return KB_E_STORE;
    ck->seq = sqlite3_column_int64(iter_st(it), 0);
    ck->prev_seq = sqlite3_column_int64(iter_st(it), 1);
    ck->every = sqlite3_column_int64(iter_st(it), 2);
    ck->ts_ms = sqlite3_column_int64(iter_st(it), 3);
    ck->hash = sqlite3_column_blob(iter_st(it), 4);
    ck->hash_len = (size_t)sqlite3_column_bytes(iter_st(it), 4);
    ck->mac = sqlite3_column_blob(iter_st(it), 5);
    ck->mac_len = (size_t)sqlite3_column_bytes(iter_st(it), 5);
    return KB_OK;
}

void sqlite__audit_iter_free(struct kb_audit_iter *it)
{
    if (!it)
        return;
    sqlite3_finalize(iter_st(it));
    free(it);
}

enum kb_err sqlite__audit_query(struct kb_store *s, const struct kb_audit_filter *f,
                                kb_audit_entry_cb cb, void *arg)
{
    /* A begin record (ref_seq IS NULL) joined with its first completion;
     * the completion's outcome fields win. Values are always bound. */
    struct kb_buf q = KB_BUF_INIT;
    buf_puts(&q, "SELECT b.seq, b.kind, b.ts_ms, b.request_id, b.action, b.key_id, b.label, "
                 "b.vendor, b.method, b.path, b.decision, coalesce(c.code, b.code), "
                 "coalesce(c.status, b.status), b.reserved_micros, "
                 "coalesce(c.settled_micros, b.settled_micros), "
                 "coalesce(c.latency_us, b.latency_us), coalesce(c.bytes_in, b.bytes_in), "
                 "coalesce(c.bytes_out, b.bytes_out), coalesce(c.detail, b.detail), b.tenant_id, "
                 "c.seq IS NOT NULL OR b.settled_micros >= 0 "
                 "FROM audit b LEFT JOIN audit c ON c.seq = "
                 "(SELECT min(x.seq) FROM audit x WHERE x.ref_seq = b.seq) "
                 "WHERE b.ref_seq IS NULL");
    if (f->key_id)
        buf_puts(&q, " AND b.key_id = ?1");
    if (f->label_prefix)
        buf_puts(&q, " AND b.label >= ?2 AND substr(b.label, 1, length(?2)) = ?2");
    if (f->vendor)
        buf_puts(&q, " AND b.vendor = ?3");
    if (f->decision)
        buf_puts(&q, " AND b.decision = ?4");
    if (f->since_ms)
        buf_puts(&q, " AND b.ts_ms >= ?5");
    if (f->until_ms)
        buf_puts(&q, " AND b.ts_ms < ?6");
    if (f->before_seq > 0)
        buf_puts(&q, " AND b.seq < ?7");
    if (f->tenant)
        buf_puts(&q, " AND b.tenant_id = ?9");
    buf_puts(&q, " ORDER BY b.seq DESC LIMIT ?8");

    sqlite3_stmt *st = NULL;
    enum kb_err err = KB_OK;
    if (sqlite3_prepare_v2(store__db(s), q.data, -1, &st, NULL) != SQLITE_OK) {
        err = KB_E_STORE;
        goto out;
    }
    if (f->key_id)
        sqlite3_bind_text(st, 1, f->key_id, -1, SQLITE_STATIC);
    if (f->label_prefix)
        sqlite3_bind_text(st, 2, f->label_prefix, -1, SQLITE_STATIC);
    if (f->vendor)
        sqlite3_bind_text(st, 3, f->vendor, -1, SQLITE_STATIC);
    if (f->decision)
        sqlite3_bind_text(st, 4, f->decision, -1, SQLITE_STATIC);
    if (f->since_ms)
        sqlite3_bind_int64(st, 5, f->since_ms);
    if (f->until_ms)
        sqlite3_bind_int64(st, 6, f->until_ms);
    if (f->before_seq > 0)
        sqlite3_bind_int64(st, 7, f->before_seq);
    sqlite3_bind_int(st, 8, f->limit);
    if (f->tenant)
        sqlite3_bind_text(st, 9, f->tenant, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct kb_audit_entry e;
        e.seq = sqlite3_column_int64(st, 0);
        row_to_rec(st, 1, &e.rec);
        e.completed = sqlite3_column_int(st, 20) != 0;
        cb(&e, arg);
    }
    if (rc != SQLITE_DONE)
        err = KB_E_STORE;
out:
    sqlite3_finalize(st);
    buf_cleanup(&q);
    return err;
}
