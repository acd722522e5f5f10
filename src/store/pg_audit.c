/*
 * pg_audit.c - the audit tables on PostgreSQL (see audit_store.h), one hash
 * chain per node.
 *
 * audit and audit_checkpoints are keyed by (node_id, seq): every node
 * appends to its own chain, numbered 1, 2, 3, ... on its own, so appends
 * need no lock across nodes (the node lock of pg_cluster.c already keeps a
 * node id to one live process, whose store writer is the chain's only
 * appender). The global gid (bigserial) orders every node's records for
 * GET /v1/audit, the one reader that spans the chains.
 *
 * Per connection (struct pg_audit, allocated on first use): the chain the
 * read side addresses (store_audit_chain_use; the own node's by default;
 * appends always go to the own node's) and the writer's chain-head cache.
 * Selecting another node's chain that holds neither a record nor a
 * checkpoint is KB_E_NOT_FOUND (a typo must not verify as an empty, intact
 * chain); the own chain, and NULL or "" for it, can always be selected.
 * Only this process appends to this node's chain, so the cached head stays
 * true until a rollback drops it (head_drop); there is no data_version to
 * consult as on SQLite. A failed insert drops it too, so that a stale head
 * (someone else appended under our node id: a CLI run beside the daemon)
 * heals at the next batch instead of failing every one.
 *
 * Iterators fetch a page of rows at a time by key (seq > the last one
 * seen), so that verifying or exporting a long chain holds one page in
 * memory; inside store_audit_read_begin's REPEATABLE READ transaction the
 * pages are one snapshot. Strings are borrowed from the page's PGresult and
 * blobs decoded into the iterator's buffers: both valid until the next call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/pg_int.h"

#define PAGE_ROWS 1000 /* rows an iterator holds at once */

#define REC_COLS                                                                                   \
    "kind, ts_ms, request_id, action, key_id, label, vendor, method, path, decision, code, "       \
    "status, reserved_micros, settled_micros, latency_us, bytes_in, bytes_out, detail, tenant_id"

/* The connection's audit state (pg(s)->audit). */
struct pg_audit {
    char chain[KB_NODE_ID_MAX + 1]; /* the chain reads address */
    bool cache;                     /* keep the chain head (head_sync was called) */
    bool known;                     /* last_seq/last_hash are the own chain's head */
    bool ck_known;                  /* ck_seq/ck_every are its last checkpoint */
    int read_depth;                 /* read_begin calls not ended yet */
    bool read_own;                  /* the outermost read_begin opened the transaction */
    int64_t last_seq;
    uint8_t last_hash[KB_HASH_LEN];
    int64_t ck_seq;
    int64_t ck_every;
};

enum iter_kind {
    IT_ROWS = 0,  /* records */
    IT_CKPTS = 1, /* checkpoints */
};

/* An iterator: the base, then a page of rows and where the next starts. */
struct pg_iter {
    struct kb_audit_iter base;
    struct kb_store *s; /* borrowed: the connection it reads on */
    enum iter_kind kind;
    char chain[KB_NODE_ID_MAX + 1]; /* the chain, fixed at creation */
    int64_t after;                  /* the next page starts after this seq */
    int64_t since_ms, until_ms;     /* rows: the time bounds (0: none) */
    PGresult *page;                 /* owned; the current page */
    int row, nrows;                 /* the next row of page; its rows */
    bool last_page;                 /* page was short: nothing follows */
    uint8_t *b1, *b2;               /* owned: decoded hash, and mac */
    size_t cap1, cap2;
};

static struct pg_audit *state(struct kb_store *s)
{
    struct pg *c = pg(s);
    if (!c->audit) {
        struct pg_audit *a = kb_calloc(1, sizeof *a);
        snprintf(a->chain, sizeof a->chain, "%s", c->node);
        c->audit = a;
    }
    return c->audit;
}

/* True when reads address the connection's own chain (the cache's). */
static bool reads_own(struct kb_store *s)
{
    return strcmp(state(s)->chain, pg(s)->node) == 0;
}

void pg__audit_free(struct kb_store *s)
{
    if (!s)
        return;
    free(pg(s)->audit);
    pg(s)->audit = NULL;
}

void pg__audit_forget(struct kb_store *s)
{
    struct pg_audit *a = state(s);
    a->cache = a->known = a->ck_known = false;
}

void pg__audit_head_sync(struct kb_store *s)
{
    /* nobody but this process appends to this node's chain: what the
     * cache holds stays true until a rollback drops it */
    state(s)->cache = true;
}

void pg__audit_head_drop(struct kb_store *s)
{
    struct pg_audit *a = state(s);
    a->known = a->ck_known = false;
}

/* ---- append side: always the own node's chain ---- */

static const char sql_last[] = "SELECT seq, hash FROM audit WHERE node_id = $1::text "
                               "ORDER BY seq DESC LIMIT 1";
static const char sql_last_ckpt[] = "SELECT seq, every FROM audit_checkpoints "
                                    "WHERE node_id = $1::text ORDER BY seq DESC LIMIT 1";
/* or pruned by retention: at or before the chain's oldest checkpoint, whose
 * own record is gone (as on SQLite) */
static const char sql_exists[] =
    "SELECT 1 FROM audit WHERE node_id = $1::text AND seq = $2::bigint UNION ALL "
    "SELECT 1 FROM audit_checkpoints c WHERE c.node_id = $1::text AND $2::bigint >= 1 "
    "AND c.seq >= $2::bigint "
    "AND c.seq = (SELECT min(seq) FROM audit_checkpoints WHERE node_id = $1::text) "
    "AND NOT EXISTS (SELECT 1 FROM audit a WHERE a.node_id = $1::text AND a.seq = c.seq) "
    "LIMIT 1";
static const char sql_insert[] =
    "INSERT INTO audit (node_id, seq, ref_seq, " REC_COLS ", hash) VALUES ($1::text, "
    "$2::bigint, $3::bigint, $4::integer, $5::bigint, $6::text, $7::text, $8::text, $9::text, "
    "$10::text, $11::text, $12::text, $13::text, $14::text, $15::integer, $16::bigint, "
    "$17::bigint, $18::bigint, $19::bigint, $20::bigint, $21::text, $22::text, $23::bytea)";
/* the same rows from arrays, one per parameter of sql_insert (pg__defer) */
static const char sql_insert_rows[] =
    "INSERT INTO audit (node_id, seq, ref_seq, " REC_COLS ", hash) SELECT * FROM unnest("
    "$1::text[], $2::bigint[], $3::bigint[], $4::integer[], $5::bigint[], $6::text[], "
    "$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], "
    "$14::text[], $15::integer[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], "
    "$20::bigint[], $21::text[], $22::text[], $23::bytea[])";
static const char sql_ckpt_insert[] =
    "INSERT INTO audit_checkpoints (node_id, seq, prev_seq, every, ts_ms, hash, mac) "
    "VALUES ($1::text, $2::bigint, $3::bigint, $4::bigint, $5::bigint, $6::bytea, $7::bytea)";

enum kb_err pg__audit_last(struct kb_store *s, int64_t *seq, uint8_t hash[KB_HASH_LEN])
{
    struct pg_audit *a = state(s);
    if (a->cache && a->known) {
        *seq = a->last_seq;
        memcpy(hash, a->last_hash, KB_HASH_LEN);
        return KB_OK;
    }
    struct pg_args args = {0};
    pg_arg_text(&args, pg(s)->node);
    enum kb_err err;
    if (pg__flush(s) != KB_OK)
        return KB_E_STORE;
    PGresult *r = pg__run(s, sql_last, &args, &err);
    if (err == KB_OK) {
        memset(hash, 0, KB_HASH_LEN);
        *seq = 0;
        if (PQntuples(r) > 0) {
            uint8_t h[KB_HASH_LEN];
            *seq = pg__i64(r, 0, 0);
            /* a damaged hash still chains on as zeros: verify reports it */
            if (pg__bytea(r, 0, 1, h, sizeof h) == KB_HASH_LEN)
                memcpy(hash, h, KB_HASH_LEN);
        }
        if (a->cache) {
            a->last_seq = *seq;
            memcpy(a->last_hash, hash, KB_HASH_LEN);
            a->known = true;
        }
    }
    PQclear(r);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

enum kb_err pg__audit_last_ckpt(struct kb_store *s, int64_t *seq, int64_t *every)
{
    struct pg_audit *a = state(s);
    if (a->cache && a->ck_known) {
        *seq = a->ck_seq;
        *every = a->ck_every;
        return KB_OK;
    }
    struct pg_args args = {0};
    pg_arg_text(&args, pg(s)->node);
    enum kb_err err;
    if (pg__flush(s) != KB_OK)
        return KB_E_STORE;
    PGresult *r = pg__run(s, sql_last_ckpt, &args, &err);
    if (err == KB_OK) {
        bool any = PQntuples(r) > 0;
        *seq = any ? pg__i64(r, 0, 0) : 0;
        *every = any ? pg__i64(r, 0, 1) : 0;
        if (a->cache) {
            a->ck_seq = *seq;
            a->ck_every = *every;
            a->ck_known = true;
        }
    }
    PQclear(r);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

/* KB_OK when sql (chain, seq) finds a row, KB_E_NOT_FOUND when not; the
 * rows deferred to the commit go first, so that it sees them. */
static enum kb_err row_found(struct kb_store *s, const char *sql, const char *chain, int64_t seq)
{
    struct pg_args args = {0};
    pg_arg_text(&args, chain);
    pg_arg_i64(&args, seq);
    enum kb_err err;
    if (pg__flush(s) != KB_OK)
        return KB_E_STORE;
    PGresult *r = pg__run(s, sql, &args, &err);
    if (err == KB_OK)
        err = PQntuples(r) > 0 ? KB_OK : KB_E_NOT_FOUND;
    else
        err = KB_E_STORE;
    PQclear(r);
    return err;
}

enum kb_err pg__audit_exists(struct kb_store *s, int64_t seq)
{
    struct pg_audit *a = state(s);
    /* records are numbered from 1 without gaps, and only this connection
     * appended to its chain since the head was read */
    if (a->cache && a->known && reads_own(s) && seq >= 1 && seq <= a->last_seq)
        return KB_OK;
    return row_found(s, sql_exists, a->chain, seq);
}

static const char sql_completed[] =
    "SELECT 1 FROM audit WHERE node_id = $1::text AND ref_seq = $2::bigint LIMIT 1";

enum kb_err pg__audit_completed(struct kb_store *s, int64_t seq)
{
    return row_found(s, sql_completed, pg(s)->node, seq);
}

enum kb_err pg__audit_insert(struct kb_store *s, int64_t seq, int64_t ref_seq,
                             const struct kb_audit_rec *r, const uint8_t hash[KB_HASH_LEN])
{
    struct pg_audit *a = state(s);
    struct pg_args args = {0};
    pg_arg_text(&args, pg(s)->node);
    pg_arg_i64(&args, seq);
    if (ref_seq > 0)
        pg_arg_i64(&args, ref_seq);
    else
        pg_arg_text(&args, NULL);
    pg_arg_i64(&args, r->kind == KB_AUDIT_ADMIN ? 1 : 0);
    pg_arg_i64(&args, r->ts_ms);
    pg_arg_text(&args, r->request_id);
    pg_arg_text(&args, r->action);
    pg_arg_text(&args, r->key_id);
    pg_arg_text(&args, r->label);
    pg_arg_text(&args, r->vendor);
    pg_arg_text(&args, r->method);
    pg_arg_text(&args, r->path);
    pg_arg_text(&args, r->decision);
    pg_arg_text(&args, r->code);
    pg_arg_i64(&args, r->status);
    pg_arg_i64(&args, r->reserved);
    pg_arg_i64(&args, r->settled);
    pg_arg_i64(&args, r->latency_us);
    pg_arg_i64(&args, r->bytes_in);
    pg_arg_i64(&args, r->bytes_out);
    pg_arg_text(&args, r->detail);
    pg_arg_text(&args, r->tenant);
    pg_arg_bytea(&args, hash, KB_HASH_LEN);
    /* the writer's appends go with its commit (pg__defer): nothing in its
     * transaction reads them back, the head is cached */
    if ((a->cache ? pg__defer(s, sql_insert_rows, sql_insert, &args)
                  : pg__do(s, sql_insert, &args)) != KB_OK) {
        /* seq taken: the cached head was stale; read it again next time */
        a->known = a->ck_known = false;
        return KB_E_STORE;
    }
    if (a->cache)
        pg__txn_appended(s, seq);
    if (a->cache && a->known && seq == a->last_seq + 1) {
        a->last_seq = seq;
        memcpy(a->last_hash, hash, KB_HASH_LEN);
    } else {
        a->known = false;
    }
    return KB_OK;
}

enum kb_err pg__audit_ckpt_insert(struct kb_store *s, const struct kb_audit_ckpt *ck)
{
    struct pg_audit *a = state(s);
    struct pg_args args = {0};
    pg_arg_text(&args, pg(s)->node);
    pg_arg_i64(&args, ck->seq);
    pg_arg_i64(&args, ck->prev_seq);
    pg_arg_i64(&args, ck->every);
    pg_arg_i64(&args, ck->ts_ms);
    pg_arg_bytea(&args, ck->hash, KB_HASH_LEN);
    pg_arg_bytea(&args, ck->mac, KB_HASH_LEN);
    if (pg__do(s, sql_ckpt_insert, &args) != KB_OK) {
        a->known = a->ck_known = false;
        return KB_E_STORE;
    }
    if (a->cache) {
        a->ck_seq = ck->seq;
        a->ck_every = ck->every;
        a->ck_known = true;
    }
    return KB_OK;
}

/* ---- retention: the selected chain ---- */

static const char sql_cut_find[] =
    "SELECT seq FROM audit_checkpoints WHERE node_id = $1::text AND ts_ms < $2::bigint "
    "ORDER BY seq <= $3::bigint DESC, "
    "CASE WHEN seq <= $3::bigint THEN -seq ELSE seq END LIMIT 1";
static const char sql_prune_rows[] = "DELETE FROM audit WHERE node_id = $1::text "
                                     "AND seq <= $2::bigint";
static const char sql_prune_ckpts[] = "DELETE FROM audit_checkpoints WHERE node_id = $1::text "
                                      "AND seq < $2::bigint";

enum kb_err pg__audit_cut_find(struct kb_store *s, int64_t before_ms, int64_t max_seq, int64_t *seq)
{
    struct pg_args args = {0};
    pg_arg_text(&args, state(s)->chain);
    pg_arg_i64(&args, before_ms);
    pg_arg_i64(&args, max_seq);
    enum kb_err err;
    if (pg__flush(s) != KB_OK)
        return KB_E_STORE;
    PGresult *r = pg__run(s, sql_cut_find, &args, &err);
    if (err == KB_OK)
        *seq = PQntuples(r) > 0 ? pg__i64(r, 0, 0) : 0;
    PQclear(r);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

enum kb_err pg__audit_prune(struct kb_store *s, int64_t cut, int64_t *removed)
{
    bool own;
    enum kb_err err = pg__txn_begin(s, &own);
    if (err != KB_OK || pg__flush(s) != KB_OK)
        return KB_E_STORE;
    struct pg_args args = {0};
    pg_arg_text(&args, state(s)->chain);
    pg_arg_i64(&args, cut);
    PGresult *r = pg__run(s, sql_prune_rows, &args, &err);
    if (err == KB_OK && removed)
        *removed = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    if (err == KB_OK)
        err = pg__do(s, sql_prune_ckpts, &args);
    /* the head (last record, last checkpoint) lies after the cut: the
     * cached head stays true */
    return pg__txn_end(s, own, err) == KB_OK ? KB_OK : KB_E_STORE;
}

/* ---- read side ---- */

static const char sql_read_begin[] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

enum kb_err pg__audit_read_begin(struct kb_store *s)
{
    struct pg_audit *a = state(s);
    if (a->read_depth > 0) {
        a->read_depth++; /* nested: the outer one's snapshot */
        return KB_OK;
    }
    if (pg__in_tx(s)) {
        a->read_own = false; /* inside the caller's transaction: its snapshot */
    } else {
        /* through pg__do, which resets a broken connection first */
        if (pg__do(s, sql_read_begin, NULL) != KB_OK)
            return KB_E_STORE;
        a->read_own = true;
    }
    a->read_depth = 1;
    return KB_OK;
}

void pg__audit_read_end(struct kb_store *s)
{
    struct pg_audit *a = state(s);
    if (a->read_depth == 0 || --a->read_depth > 0)
        return;
    if (a->read_own && PQtransactionStatus(pg(s)->conn) != PQTRANS_IDLE)
        (void)pg__exec(s, "ROLLBACK"); /* it wrote nothing */
    a->read_own = false;
}

static const char sql_rows[] =
    "SELECT seq, coalesce(ref_seq, 0), " REC_COLS ", hash FROM audit "
    "WHERE node_id = $1::text AND seq > $2::bigint "
    "AND ($3::bigint = 0 OR ts_ms >= $3::bigint) AND ($4::bigint = 0 OR ts_ms < $4::bigint) "
    "ORDER BY seq LIMIT $5::bigint";
static const char sql_ckpts[] = "SELECT seq, prev_seq, every, ts_ms, hash, mac "
                                "FROM audit_checkpoints WHERE node_id = $1::text "
                                "AND seq > $2::bigint ORDER BY seq LIMIT $3::bigint";

static struct kb_audit_iter *iter_new(struct kb_store *s, enum iter_kind kind, int64_t after)
{
    struct pg_iter *it = kb_calloc(1, sizeof *it);
    it->base.be = &kb_store_pg;
    it->s = s;
    it->kind = kind;
    it->after = after;
    snprintf(it->chain, sizeof it->chain, "%s", state(s)->chain);
    return &it->base;
}

enum kb_err pg__audit_rows(struct kb_store *s, int64_t after_seq, int64_t since_ms,
                           int64_t until_ms, struct kb_audit_iter **out)
{
    struct kb_audit_iter *it = iter_new(s, IT_ROWS, after_seq);
    ((struct pg_iter *)it)->since_ms = since_ms;
    ((struct pg_iter *)it)->until_ms = until_ms;
    *out = it;
    return KB_OK;
}

enum kb_err pg__audit_ckpts(struct kb_store *s, struct kb_audit_iter **out)
{
    *out = iter_new(s, IT_CKPTS, INT64_MIN);
    return KB_OK;
}

/* Makes it->page hold its next row, fetching the next page when the
 * current one is used up: KB_OK, KB_E_NOT_FOUND at the end, KB_E_STORE. */
static enum kb_err iter_step(struct pg_iter *it)
{
    if (it->page && it->row < it->nrows)
        return KB_OK;
    if (it->last_page)
        return KB_E_NOT_FOUND;
    PQclear(it->page); /* what the caller borrowed from it is now stale */
    it->page = NULL;
    struct pg_args args = {0};
    pg_arg_text(&args, it->chain);
    pg_arg_i64(&args, it->after);
    if (it->kind == IT_ROWS) {
        pg_arg_i64(&args, it->since_ms);
        pg_arg_i64(&args, it->until_ms);
    }
    pg_arg_i64(&args, PAGE_ROWS);
    enum kb_err err;
    it->page = pg__run(it->s, it->kind == IT_ROWS ? sql_rows : sql_ckpts, &args, &err);
    if (err != KB_OK) {
        PQclear(it->page);
        it->page = NULL;
        return KB_E_STORE;
    }
    it->row = 0;
    it->nrows = PQntuples(it->page);
    it->last_page = it->nrows < PAGE_ROWS;
    if (it->nrows == 0)
        return KB_E_NOT_FOUND;
    it->after = pg__i64(it->page, it->nrows - 1, 0); /* keyset: seq orders the pages */
    return KB_OK;
}

/* Decodes bytea field col of the current row into *buf (grown as needed:
 * a tampered value may have any length); sets *p and *len. */
static void blob(struct pg_iter *it, int col, uint8_t **buf, size_t *cap, const uint8_t **p,
                 size_t *len)
{
    *p = NULL;
    *len = 0;
    if (pg__is_null(it->page, it->row, col))
        return;
    size_t need = (size_t)PQgetlength(it->page, it->row, col) / 2 + 1;
    if (need > *cap) {
        *buf = kb_realloc(*buf, need);
        *cap = need;
    }
    size_t n = pg__bytea(it->page, it->row, col, *buf, *cap);
    if (n == (size_t)-1)
        return; /* not PostgreSQL's hex output: reads as empty, which verify rejects */
    *p = *buf;
    *len = n;
}

/* Fills r from columns first.. of row `row` of res, in REC_COLS order;
 * strings point into res. */
static void row_to_rec(const PGresult *res, int row, int first, struct kb_audit_rec *r)
{
    memset(r, 0, sizeof *r);
    int i = first;
    r->kind = pg__i64(res, row, i++) == 1 ? KB_AUDIT_ADMIN : KB_AUDIT_PROXY;
    r->ts_ms = pg__i64(res, row, i++);
    const char *rid = pg__text(res, row, i++);
    snprintf(r->request_id, sizeof r->request_id, "%s", rid ? rid : "");
    r->action = pg__text(res, row, i++);
    r->key_id = pg__text(res, row, i++);
    r->label = pg__text(res, row, i++);
    r->vendor = pg__text(res, row, i++);
    r->method = pg__text(res, row, i++);
    r->path = pg__text(res, row, i++);
    r->decision = pg__text(res, row, i++);
    r->code = pg__text(res, row, i++);
    r->status = (int)pg__i64(res, row, i++);
    r->reserved = pg__i64(res, row, i++);
    r->settled = pg__i64(res, row, i++);
    r->latency_us = pg__i64(res, row, i++);
    r->bytes_in = pg__i64(res, row, i++);
    r->bytes_out = pg__i64(res, row, i++);
    r->detail = pg__text(res, row, i++);
    r->tenant = pg__text(res, row, i);
}

enum kb_err pg__audit_row_next(struct kb_audit_iter *base, struct kb_audit_row *row)
{
    struct pg_iter *it = (struct pg_iter *)base;
    enum kb_err err = iter_step(it);
    if (err != KB_OK)
        return err;
    row->seq = pg__i64(it->page, it->row, 0);
    row->ref_seq = pg__i64(it->page, it->row, 1);
    row_to_rec(it->page, it->row, 2, &row->rec);
    blob(it, 21, &it->b1, &it->cap1, &row->hash, &row->hash_len);
    it->row++;
    return KB_OK;
}

enum kb_err pg__audit_ckpt_next(struct kb_audit_iter *base, struct kb_audit_ckpt *ck)
{
    struct pg_iter *it = (struct pg_iter *)base;
    enum kb_err err = iter_step(it);
    if (err != KB_OK)
        return err;
    ck->seq = pg__i64(it->page, it->row, 0);
    ck->prev_seq = pg__i64(it->page, it->row, 1);
    ck->every = pg__i64(it->page, it->row, 2);
    ck->ts_ms = pg__i64(it->page, it->row, 3);
    blob(it, 4, &it->b1, &it->cap1, &ck->hash, &ck->hash_len);
    blob(it, 5, &it->b2, &it->cap2, &ck->mac, &ck->mac_len);
    it->row++;
    return KB_OK;
}

void pg__audit_iter_free(struct kb_audit_iter *base)
{
    struct pg_iter *it = (struct pg_iter *)base;
    if (!it)
        return;
    PQclear(it->page);
    free(it->b1);
    free(it->b2);
    free(it);
}

/* ---- GET /v1/audit: every chain, by gid ---- */

/* A begin record (ref_seq IS NULL) joined with its chain's first
 * completion; the completion's outcome fields win. An absent filter is a
 * NULL or 0 parameter. With a key_id the statement names the column
 * outright: a prepared statement's generic plan cannot use audit_key for
 * "$1 IS NULL OR key_id = $1", and without it a rare key's entries cost a
 * walk of the whole log by gid. */
#define QUERY_SELECT                                                                               \
    "SELECT b.gid, b.kind, b.ts_ms, b.request_id, b.action, b.key_id, b.label, b.vendor, "         \
    "b.method, b.path, b.decision, coalesce(c.code, b.code), coalesce(c.status, b.status), "       \
    "b.reserved_micros, coalesce(c.settled_micros, b.settled_micros), "                            \
    "coalesce(c.latency_us, b.latency_us), coalesce(c.bytes_in, b.bytes_in), "                     \
    "coalesce(c.bytes_out, b.bytes_out), coalesce(c.detail, b.detail), b.tenant_id, "              \
    "c.seq IS NOT NULL OR b.settled_micros >= 0 "                                                  \
    "FROM audit b LEFT JOIN LATERAL (SELECT x.seq, x.code, x.status, x.settled_micros, "           \
    "x.latency_us, x.bytes_in, x.bytes_out, x.detail FROM audit x "                                \
    "WHERE x.node_id = b.node_id AND x.ref_seq = b.seq ORDER BY x.seq LIMIT 1) c ON true "         \
    "WHERE b.ref_seq IS NULL "
#define QUERY_FILTERS                                                                              \
    "AND ($2::text IS NULL OR (b.label >= $2::text "                                               \
    "AND substr(b.label, 1, length($2::text)) = $2::text)) "                                       \
    "AND ($3::text IS NULL OR b.vendor = $3::text) "                                               \
    "AND ($4::text IS NULL OR b.decision = $4::text) "                                             \
    "AND ($5::bigint = 0 OR b.ts_ms >= $5::bigint) "                                               \
    "AND ($6::bigint = 0 OR b.ts_ms < $6::bigint) "                                                \
    "AND ($7::bigint <= 0 OR b.gid < $7::bigint) "                                                 \
    "AND ($9::text IS NULL OR b.tenant_id = $9::text) "                                            \
    "ORDER BY b.gid DESC LIMIT $8::bigint"
static const char sql_query[] = QUERY_SELECT "AND $1::text IS NULL " QUERY_FILTERS;
static const char sql_query_key[] = QUERY_SELECT "AND b.key_id = $1::text " QUERY_FILTERS;

enum kb_err pg__audit_query(struct kb_store *s, const struct kb_audit_filter *f,
                            kb_audit_entry_cb cb, void *arg)
{
    struct pg_args args = {0};
    pg_arg_text(&args, f->key_id);
    pg_arg_text(&args, f->label_prefix);
    pg_arg_text(&args, f->vendor);
    pg_arg_text(&args, f->decision);
    pg_arg_i64(&args, f->since_ms);
    pg_arg_i64(&args, f->until_ms);
    pg_arg_i64(&args, f->before_seq);
    pg_arg_i64(&args, f->limit);
    pg_arg_text(&args, f->tenant);
    enum kb_err err;
    PGresult *r = pg__run(s, f->key_id ? sql_query_key : sql_query, &args, &err);
    if (err == KB_OK) {
        int n = PQntuples(r);
        for (int i = 0; i < n; i++) {
            struct kb_audit_entry e;
            e.seq = pg__i64(r, i, 0); /* the gid: GET /v1/audit's cursor */
            row_to_rec(r, i, 1, &e.rec);
            const char *done = pg__text(r, i, 20);
            e.completed = done && done[0] == 't';
            cb(&e, arg);
        }
    }
    PQclear(r);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

/* ---- the chains ---- */

/* A skip scan over each primary key's first column: one index probe per
 * node, not a read of every record; listed in byte order (checkpoints are listed too: a chain
 * whose records were all deleted still has its own to verify). */
static const char sql_chains[] =
    "WITH RECURSIVE r(n) AS (SELECT min(node_id) FROM audit UNION ALL "
    "SELECT (SELECT min(node_id) FROM audit WHERE node_id > r.n) FROM r WHERE r.n IS NOT NULL), "
    "c(n) AS (SELECT min(node_id) FROM audit_checkpoints UNION ALL "
    "SELECT (SELECT min(node_id) FROM audit_checkpoints WHERE node_id > c.n) FROM c "
    "WHERE c.n IS NOT NULL) "
    "SELECT n FROM (SELECT n FROM r UNION SELECT n FROM c) u WHERE n IS NOT NULL "
    "ORDER BY n COLLATE \"C\"";
static const char sql_chain_any[] =
    "SELECT EXISTS (SELECT 1 FROM audit WHERE node_id = $1::text) "
    "OR EXISTS (SELECT 1 FROM audit_checkpoints WHERE node_id = $1::text)";

enum kb_err pg__audit_chains(struct kb_store *s, char ***names, size_t *n)
{
    enum kb_err err;
    PGresult *r = pg__run(s, sql_chains, NULL, &err);
    if (err == KB_OK) {
        size_t k = (size_t)PQntuples(r);
        char **v = kb_calloc(k ? k : 1, sizeof *v);
        for (size_t i = 0; i < k; i++)
            v[i] = pg__strdup(r, (int)i, 0);
        *names = v;
        *n = k;
    }
    PQclear(r);
    return err == KB_OK ? KB_OK : KB_E_STORE;
}

enum kb_err pg__audit_chain_use(struct kb_store *s, const char *name)
{
    struct pg_audit *a = state(s);
    if (!name || !*name || strcmp(name, pg(s)->node) == 0) {
        /* the own chain, even before its first record */
        snprintf(a->chain, sizeof a->chain, "%s", pg(s)->node);
        return KB_OK;
    }
    if (strlen(name) > KB_NODE_ID_MAX)
        return KB_E_NOT_FOUND;
    struct pg_args args = {0};
    pg_arg_text(&args, name);
    enum kb_err err;
    PGresult *r = pg__run(s, sql_chain_any, &args, &err);
    if (err == KB_OK) {
        const char *t = pg__text(r, 0, 0);
        if (t && t[0] == 't')
            snprintf(a->chain, sizeof a->chain, "%s", name);
        else
            err = KB_E_NOT_FOUND;
    } else {
        err = KB_E_STORE;
    }
    PQclear(r);
    return err;
}
