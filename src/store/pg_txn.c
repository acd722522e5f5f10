/*
 * pg_txn.c - transactions on PostgreSQL: the writer's, with the fewest
 * round trips, and the one-statement ones the admin and cluster threads
 * run (pg__txn_begin / pg__txn_end).
 *
 * A writer's batch is BEGIN, the cluster-wide write lock, the fence, its
 * jobs' statements, its audit rows and COMMIT. Nothing of it needs an
 * answer before the first job's statement, and the audit rows need none
 * before the commit, so:
 *   - pg__begin sends nothing: the BEGIN, lock and fence go in one libpq
 *     pipeline with the first statement of the batch (pg__pipeline);
 *   - audit rows are deferred (pg__defer) into one array per column and
 *     inserted by one statement in the pipeline that carries the COMMIT.
 * A batch of admissions is then two round trips (the run's statement,
 * the commit), however many requests it holds; one of refusals, one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "store/pg_int.h"

/* pg_advisory_xact_lock key of every write transaction ("kbwr"), pg.c */
#define WRITE_LOCK "SELECT pg_advisory_xact_lock(1801615218)"
/* fails (and with it the transaction, and a COMMIT pipelined after it)
 * when this start was reaped (schema_pg/004_batch.sql) */
static const char SQL_FENCE[] = "SELECT kb_fence($1::text, $2::text)";

bool pg__in_tx(struct kb_store *s)
{
    if (pg(s)->begin_pending)
        return true;
    PGTransactionStatusType t = PQtransactionStatus(pg(s)->conn);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

/* ---- deferred rows ---- */

/* A strict UTF-8 check (no overlong forms, surrogates or code points past
 * U+10FFFF): what PostgreSQL's text input refuses is refused here, before
 * it could fail a whole batch's commit. */
static bool utf8_ok(const unsigned char *p)
{
    while (*p) {
        unsigned c = *p;
        int n;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1, min = 0x80, c &= 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2, min = 0x800, c &= 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            c = c << 6 | (p[i] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* Appends parameter i of a to column buffer b as an array element. */
static void element_put(struct kb_buf *b, const struct pg_args *a, int i)
{
    static const char hex[] = "0123456789abcdef";
    if (!a->v[i]) {
        buf_puts(b, "NULL");
    } else if (a->fmt[i] == 1) { /* bytea: "\\x..." (the element's text is \x...) */
        buf_puts(b, "\"\\\\x");
        for (int k = 0; k < a->len[i]; k++) {
            uint8_t x = (uint8_t)a->v[i][k];
            buf_putc(b, hex[x >> 4]);
            buf_putc(b, hex[x & 15]);
        }
        buf_putc(b, '"');
    } else {
        buf_putc(b, '"');
        for (const char *p = a->v[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                buf_putc(b, '\\');
            buf_putc(b, *p);
        }
        buf_putc(b, '"');
    }
}

static void rows_drop(struct pg *c, size_t to_rows, const size_t *to_len)
{
    for (int i = 0; i < c->rows_cols; i++) {
        c->rows[i].len = to_len ? to_len[i] : 0;
        if (c->rows[i].data)
            c->rows[i].data[c->rows[i].len] = '\0';
    }
    c->rows_n = to_rows;
    if (to_rows == 0)
        c->rows_sql = NULL;
    if (c->rows_mark_n > to_rows)
        c->rows_mark_n = to_rows; /* no savepoint after the cut */
}

void pg__rows_free(struct kb_store *s)
{
    struct pg *c = pg(s);
    for (int i = 0; i < PG_MAX_ARGS; i++)
        buf_cleanup(&c->rows[i]);
}

/* The deferred rows as the array parameters of their statement; the
 * column buffers are closed ("}") and must be dropped after. */
static void rows_args(struct pg *c, struct pg_args *a)
{
    *a = (struct pg_args){0};
    for (int i = 0; i < c->rows_cols; i++) {
        buf_putc(&c->rows[i], '}');
        pg_arg_text(a, c->rows[i].data);
    }
}

enum kb_err pg__flush(struct kb_store *s)
{
    struct pg *c = pg(s);
    if (c->rows_n == 0)
        return KB_OK;
    struct pg_args a;
    rows_args(c, &a);
    enum kb_err err = pg__do(s, c->rows_sql, &a);
    rows_drop(c, 0, NULL);
    return err;
}

enum kb_err pg__defer(struct kb_store *s, const char *rows_sql, const char *row_sql,
                      const struct pg_args *a)
{
    struct pg *c = pg(s);
    if (!pg__in_tx(s))
        return pg__do(s, row_sql, a);
    for (int i = 0; i < a->n; i++)
        if (a->v[i] && a->fmt[i] != 1 && !utf8_ok((const unsigned char *)a->v[i])) {
            pg__set_err(s, "text that is not UTF-8");
            return KB_E_INVALID;
        }
    if (c->rows_n > 0 && (c->rows_sql != rows_sql || c->rows_cols != a->n)) {
        enum kb_err err = pg__flush(s); /* another statement's rows go first */
        if (err != KB_OK)
            return err;
    }
    c->rows_sql = rows_sql;
    c->rows_cols = a->n;
    for (int i = 0; i < a->n; i++) {
        buf_putc(&c->rows[i], c->rows_n ? ',' : '{');
        element_put(&c->rows[i], a, i);
    }
    c->rows_n++;
    return KB_OK;
}

/* ---- the pipeline ---- */

/* Reads one result of the pipeline: the next non-NULL one (NULLs end each
 * query's results). NULL when the connection broke. */
static PGresult *next_result(PGconn *conn)
{
    for (int nulls = 0; nulls < 2; nulls++) {
        PGresult *r = PQgetResult(conn);
        if (r)
            return r;
        if (PQstatus(conn) != CONNECTION_OK)
            return NULL;
    }
    return NULL;
}

PGresult *pg__pipeline(struct kb_store *s, const char *sql, const struct pg_args *a, bool commit,
                       enum kb_err *err)
{
    struct pg *c = pg(s);
    PGconn *conn = c->conn;
    bool begin = c->begin_pending;
    c->begin_pending = false;
    *err = KB_E_STORE;
    if (PQstatus(conn) != CONNECTION_OK || !PQenterPipelineMode(conn)) {
        pg__set_err(s, PQerrorMessage(conn));
        return NULL;
    }
    enum { BEGIN, LOCK, FENCE, PREPARE, STMT, COMMIT, NSTEPS };
    bool step[NSTEPS] = {begin, begin, begin, false, sql != NULL, commit};
    char name[16] = "";
    int slot = sql ? pg__stmt_slot(s, sql, name) : 0;
    bool unnamed = sql && slot == c->nprepared && slot == PG_MAX_STMTS;
    step[PREPARE] = sql && !unnamed && slot == c->nprepared;
    const char *fence[2] = {c->node, c->boot};
    int n = a ? a->n : 0;
    const char *const *v = a ? a->v : NULL;
    const int *len = a ? a->len : NULL, *fmt = a ? a->fmt : NULL;
    int sent = 1;
    if (begin)
        sent = PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) &&
               PQsendQueryParams(conn, WRITE_LOCK, 0, NULL, NULL, NULL, NULL, 0) &&
               PQsendQueryParams(conn, SQL_FENCE, 2, NULL, fence, NULL, NULL, 0);
    if (sent && step[PREPARE])
        sent = PQsendPrepare(conn, name, sql, 0, NULL);
    if (sent && sql)
        sent = unnamed ? PQsendQueryParams(conn, sql, n, NULL, v, len, fmt, 0)
                       : PQsendQueryPrepared(conn, name, n, v, len, fmt, 0);
    if (sent && commit)
        sent = PQsendQueryParams(conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    if (sent)
        sent = PQpipelineSync(conn);

    enum kb_err e = KB_OK;
    PGresult *out = NULL;
    if (!sent) {
        pg__set_err(s, PQerrorMessage(conn));
        e = KB_E_STORE;
    }
    for (int k = 0; sent && k < NSTEPS; k++) {
        if (!step[k])
            continue;
        PGresult *r = next_result(conn);
        if (!r) {
            pg__set_err(s, PQerrorMessage(conn));
            e = KB_E_STORE;
            break;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_ABORTED) {
            if (e == KB_OK)
                e = KB_E_STORE;
        } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (e == KB_OK)
                e = pg__err_of(s, r);
        } else if (k == PREPARE) {
            c->prepared[c->nprepared++] = sql;
        }
        if (k == STMT && !out)
            out = r; /* the caller's, failed or not (its SQLSTATE) */
        else
            PQclear(r);
    }
    if (sent && PQstatus(conn) == CONNECTION_OK) {
        PGresult *r = next_result(conn); /* the sync */
        if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
            pg__set_err(s, "PostgreSQL's pipeline answered out of order");
            e = KB_E_STORE;
        }
        PQclear(r);
    }
    if (!PQexitPipelineMode(conn)) {
        /* results left unread: this session cannot be trusted any more */
        pg__set_err(s, PQerrorMessage(conn));
        e = KB_E_STORE;
        PQreset(conn);
        c->nprepared = 0;
        c->listening = false;
        c->node_locked = false;
    }
    /* a failure leaves the transaction failed (not rolled back): nothing
     * after it runs outside it, and the caller's rollback ends it */
    *err = e;
    return out;
}

/* ---- the writer's transactions ---- */

enum kb_err pg__begin(struct kb_store *s)
{
    struct pg *c = pg(s);
    if (!pg__conn_ready(s))
        return KB_E_STORE;
    rows_drop(c, 0, NULL);
    c->begin_pending = true; /* sent with the first statement (pg__pipeline) */
    return KB_OK;
}

enum kb_err pg__commit(struct kb_store *s)
{
    struct pg *c = pg(s);
    enum kb_err err;
    if (!c->begin_pending && PQtransactionStatus(c->conn) != PQTRANS_INTRANS) {
        /* COMMIT of a failed transaction answers "ROLLBACK": not a success */
        pg__set_err(s, "the transaction failed before its commit");
        if (pg__in_tx(s))
            (void)pg__exec(s, "ROLLBACK");
        rows_drop(c, 0, NULL);
        return KB_E_STORE;
    }
    if (c->begin_pending && c->rows_n == 0) {
        c->begin_pending = false; /* nothing was written: nothing to send */
        return KB_OK;
    }
    /* the deferred rows and the COMMIT (and the BEGIN, when nothing else
     * was sent) in one round trip */
    struct pg_args a;
    const char *sql = NULL;
    if (c->rows_n > 0) {
        rows_args(c, &a);
        sql = c->rows_sql;
    }
    PQclear(pg__pipeline(s, sql, sql ? &a : NULL, true, &err));
    rows_drop(c, 0, NULL);
    return err == KB_OK ? KB_OK : KB_E_STORE; /* whatever refused, the commit failed */
}

void pg__rollback(struct kb_store *s)
{
    struct pg *c = pg(s);
    rows_drop(c, 0, NULL);
    c->begin_pending = false;
    if (pg__in_tx(s))
        (void)pg__exec(s, "ROLLBACK");
}

enum kb_err pg__savepoint(struct kb_store *s)
{
    struct pg *c = pg(s);
    c->rows_mark_n = c->rows_n;
    for (int i = 0; i < PG_MAX_ARGS; i++)
        c->rows_mark[i] = c->rows[i].len;
    return pg__exec(s, "SAVEPOINT j");
}

enum kb_err pg__release(struct kb_store *s)
{
    return pg__exec(s, "RELEASE j");
}

enum kb_err pg__rollback_to(struct kb_store *s)
{
    struct pg *c = pg(s);
    rows_drop(c, c->rows_mark_n, c->rows_mark); /* the job's deferred rows go with it */
    enum kb_err err = pg__exec(s, "ROLLBACK TO j");
    return err == KB_OK ? pg__exec(s, "RELEASE j") : err;
}

bool pg__in_transaction(struct kb_store *s)
{
    return PQstatus(pg(s)->conn) == CONNECTION_OK && pg__in_tx(s);
}

enum kb_err pg__txn_run(struct kb_store *s, kb_txn_fn fn, void *arg)
{
    if (pg__begin(s) != KB_OK)
        return KB_E_AUDIT_UNAVAILABLE;
    enum kb_err err = fn(s, arg);
    if (err == KB_OK) {
        if (pg__commit(s) == KB_OK)
            return KB_OK;
        err = KB_E_AUDIT_UNAVAILABLE;
    }
    pg__rollback(s);
    store_audit_head_drop(s); /* fn may have appended */
    return err;
}

/* ---- one-statement transactions (admin, cluster, start) ---- */

enum kb_err pg__txn_begin(struct kb_store *s, bool *own)
{
    *own = !pg__in_tx(s);
    if (!*own)
        return KB_OK;
    if (!pg__conn_ready(s))
        return KB_E_STORE;
    return pg__exec(s, "BEGIN; " WRITE_LOCK);
}

enum kb_err pg__txn_end(struct kb_store *s, bool own, enum kb_err err)
{
    if (!own)
        return err;
    /* COMMIT of a failed transaction answers "ROLLBACK", not an error */
    if (err == KB_OK && PQtransactionStatus(pg(s)->conn) != PQTRANS_INTRANS) {
        pg__set_err(s, "the transaction failed before its commit");
        err = KB_E_STORE;
    }
    if (err == KB_OK && (err = pg__exec(s, "COMMIT")) == KB_OK)
        return KB_OK;
    if (pg__in_tx(s))
        (void)pg__exec(s, "ROLLBACK");
    return err;
}
