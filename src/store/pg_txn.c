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
 *     inserted by one statement in the pipeline that carries the COMMIT;
 *   - statements whose answer nobody reads (settlements) are queued
 *     (pg__queue) into the next round trip;
 *   - the writer's COMMIT is sent without waiting for its answer
 *     (pg__commit_later), which is read, first, with the next
 *     transaction's round trip (or by pg__commit_flush).
 * A batch of admissions and settlements is then one round trip, however
 * many requests it holds, and the reading of its COMMIT's answer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "store/pg_int.h"

/* pg_advisory_xact_lock key of every write transaction ("kbwr"), pg.c */
#define WRITE_LOCK "SELECT pg_advisory_xact_lock(1801615218)"
/* fails (and with it the transaction, and a COMMIT pipelined after it)
 * when this start was reaped (schema_pg/004_batch.sql) */
static const char SQL_FENCE[] = "SELECT kb_fence($1::text, $2::text)";

bool pg__in_tx(struct kb_store *s)
{
    struct pg *c = pg(s);
    if (c->begin_pending)
        return true;
    if (c->commit_pending)
        return false; /* the open one on the server is the deferred commit's */
    PGTransactionStatusType t = PQtransactionStatus(c->conn);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

/* ---- deferred rows ---- */

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

static void rows_drop(struct pg_rows *r, size_t to_rows, const size_t *to_len)
{
    for (int i = 0; i < r->cols; i++) {
        r->col[i].len = to_rows && to_len ? to_len[i] : 0;
        if (r->col[i].data)
            r->col[i].data[r->col[i].len] = '\0';
    }
    r->n = to_rows;
    if (to_rows == 0)
        r->sql = NULL;
    if (r->mark_n > to_rows) { /* the savepoint's mark moves to the cut */
        r->mark_n = to_rows;
        for (int i = 0; i < PG_MAX_ARGS; i++)
            r->mark[i] = i < r->cols ? r->col[i].len : 0;
    }
}

static void queue_drop(struct pg_queue *q, int to)
{
    for (int i = to; i < q->n; i++) {
        free(q->q[i].buf);
        q->q[i].buf = NULL;
    }
    q->n = to;
    if (q->mark > to)
        q->mark = to;
}

void pg__txn_free(struct kb_store *s)
{
    struct pg *c = pg(s);
    queue_drop(&c->queue, 0);
    for (int i = 0; i < PG_MAX_ARGS; i++)
        buf_cleanup(&c->rows.col[i]);
}

/* The deferred rows as the array parameters of their statement; the
 * column buffers are closed ("}") and must be dropped after. */
static void rows_args(struct pg_rows *r, struct pg_args *a)
{
    *a = (struct pg_args){0};
    for (int i = 0; i < r->cols; i++) {
        buf_putc(&r->col[i], '}');
        pg_arg_text(a, r->col[i].data);
    }
}

enum kb_err pg__flush(struct kb_store *s)
{
    struct pg *c = pg(s);
    if (c->rows.n == 0)
        return KB_OK;
    struct pg_args a;
    rows_args(&c->rows, &a);
    enum kb_err err = pg__do(s, c->rows.sql, &a);
    rows_drop(&c->rows, 0, NULL);
    return err;
}

enum kb_err pg__defer(struct kb_store *s, const char *rows_sql, const char *row_sql,
                      const struct pg_args *a)
{
    struct pg *c = pg(s);
    if (c->txn_failed)
        return KB_E_STORE;
    if (!pg__in_tx(s))
        return pg__do(s, row_sql, a);
    /* what PostgreSQL's text input refuses, refused before it could fail a
     * whole batch's commit */
    for (int i = 0; i < a->n; i++)
        if (a->v[i] && a->fmt[i] != 1 && !codec_utf8_valid(a->v[i])) {
            pg__set_err(s, "text that is not UTF-8");
            return KB_E_INVALID;
        }
    struct pg_rows *r = &c->rows;
    if (r->n > 0 && (r->sql != rows_sql || r->cols != a->n)) {
        enum kb_err err = pg__flush(s); /* another statement's rows go first */
        if (err != KB_OK)
            return err;
    }
    r->sql = rows_sql;
    r->cols = a->n;
    for (int i = 0; i < a->n; i++) {
        buf_putc(&r->col[i], r->n ? ',' : '{');
        element_put(&r->col[i], a, i);
    }
    r->n++;
    return KB_OK;
}

/* ---- queued statements ---- */

enum kb_err pg__queue(struct kb_store *s, const char *sql, const struct pg_args *a)
{
    struct pg *c = pg(s);
    if (c->txn_failed)
        return KB_E_STORE;
    if (!pg__in_tx(s))
        return pg__do(s, sql, a);
    if (c->queue.n == PG_QUEUE_MAX) { /* full: send what is queued first */
        enum kb_err err;
        PQclear(pg__pipeline(s, NULL, NULL, false, &err));
        if (err != KB_OK)
            return KB_E_STORE;
    }
    struct pg_queued *e = &c->queue.q[c->queue.n++];
    size_t total = 0;
    int len[PG_MAX_ARGS];
    for (int i = 0; i < a->n; i++) {
        len[i] = !a->v[i] ? 0 : a->fmt[i] == 1 ? a->len[i] : (int)strlen(a->v[i]) + 1;
        total += (size_t)len[i];
    }
    e->sql = sql;
    e->buf = kb_malloc(total ? total : 1);
    e->a = (struct pg_args){.n = a->n};
    char *p = e->buf;
    for (int i = 0; i < a->n; i++) {
        e->a.fmt[i] = a->fmt[i];
        e->a.len[i] = a->len[i];
        e->a.v[i] = a->v[i] ? p : NULL;
        if (a->v[i])
            memcpy(p, a->v[i], (size_t)len[i]);
        p += len[i];
    }
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

static void plan_add(struct plan *p, enum pg_step_kind kind)
{
    p->step[p->n++] = (struct pg_step){.kind = kind};
}

static void plan_begin(struct plan *p)
{
    plan_add(p, K_BEGIN);
    plan_add(p, K_LOCK);
    plan_add(p, K_FENCE);
}

/* sql with a, prepared first unless it is (or an earlier step does it) */
static void plan_stmt(struct kb_store *s, struct plan *p, const char *sql, const struct pg_args *a,
                      bool queued)
{
    struct pg *c = pg(s);
    char name[16];
    int slot = pg__stmt_slot(s, sql, name);
    if (slot == c->nprepared) {
        /* not prepared: it takes the first free slot now (read_plan gives
         * it back if its PREPARE does not run), so that a second use in
         * this plan finds it */
        slot = 0;
        while (slot < c->nprepared && c->prepared[slot])
            slot++;
        if (slot < PG_MAX_STMTS) {
            c->prepared[slot] = sql;
            if (slot == c->nprepared)
                c->nprepared++;
            snprintf(name, sizeof name, "kb%d", slot);
            p->step[p->n] = (struct pg_step){.kind = K_PREPARE, .sql = sql, .slot = slot};
            snprintf(p->step[p->n++].name, sizeof name, "%s", name);
        } else {
            name[0] = '\0'; /* every slot taken: unnamed */
        }
    }
    p->step[p->n] = (struct pg_step){.kind = K_STMT, .sql = sql, .a = a, .queued = queued};
    snprintf(p->step[p->n++].name, sizeof name, "%s", name);
}

static int send_step(struct pg *c, const struct pg_step *t)
{
    static const char SQL_BEGIN[] = "BEGIN", SQL_LOCK[] = WRITE_LOCK, SQL_COMMIT[] = "COMMIT";
    const char *fence[2] = {c->node, c->boot};
    const struct pg_args *a = t->a;
    int n = a ? a->n : 0;
    const char *const *v = a ? a->v : NULL;
    const int *len = a ? a->len : NULL, *fmt = a ? a->fmt : NULL;
    switch (t->kind) {
    case K_BEGIN:
        return PQsendQueryParams(c->conn, SQL_BEGIN, 0, NULL, NULL, NULL, NULL, 0);
    case K_LOCK:
        return PQsendQueryParams(c->conn, SQL_LOCK, 0, NULL, NULL, NULL, NULL, 0);
    case K_FENCE:
        return PQsendQueryParams(c->conn, SQL_FENCE, 2, NULL, fence, NULL, NULL, 0);
    case K_PREPARE:
        return PQsendPrepare(c->conn, t->name, t->sql, 0, NULL);
    case K_STMT:
        return t->name[0] ? PQsendQueryPrepared(c->conn, t->name, n, v, len, fmt, 0)
                          : PQsendQueryParams(c->conn, t->sql, n, NULL, v, len, fmt, 0);
    case K_COMMIT:
#ifdef KB_TEST_HOOKS
        if (c->test_rollback)
            return PQsendQueryParams(c->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
#endif
        return PQsendQueryParams(c->conn, SQL_COMMIT, 0, NULL, NULL, NULL, NULL, 0);
    }
    return 0;
}

/* Sends the steps of p and a sync, in pipeline mode (entered if need be).
 * false: the connection failed (its caller marks it broken: the slots its
 * plan took are forgotten with the reset). */
static bool send_plan(struct kb_store *s, const struct plan *p)
{
    struct pg *c = pg(s);
    PGconn *conn = c->conn;
    if (PQstatus(conn) != CONNECTION_OK ||
        (PQpipelineStatus(conn) == PQ_PIPELINE_OFF && !PQenterPipelineMode(conn)))
        return false;
    for (int k = 0; k < p->n; k++)
        if (!send_step(c, &p->step[k]))
            return false;
    return PQpipelineSync(conn) == 1;
}

/* Reads the results of a plan sent by send_plan, and its sync: the first
 * failure into *err; the caller's statement's result into *out (NULL: not
 * wanted); into *commit_read (may be NULL) whether the server answered
 * its COMMIT (committed, or refused on a session that lives on). false
 * when the connection can no longer be read in step. */
static bool read_plan(struct kb_store *s, const struct plan *p, enum kb_err *err, PGresult **out,
                      bool *commit_read)
{
    struct pg *c = pg(s);
    PGconn *conn = c->conn;
    for (int k = 0; k < p->n; k++) {
        const struct pg_step *t = &p->step[k];
        PGresult *r = next_result(conn);
        if (!r) {
            pg__set_err(s, PQerrorMessage(conn));
            *err = KB_E_STORE;
            return false;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_ABORTED) {
            if (*err == KB_OK)
                *err = KB_E_STORE;
        } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (*err == KB_OK)
                *err = pg__err_of(s, r);
            if (t->queued)
                *err = KB_E_STORE; /* not the carrier's own failure */
        }
        if (t->kind == K_PREPARE && st != PGRES_COMMAND_OK)
            c->prepared[t->slot] = NULL; /* not prepared after all: a new slot next time */
        if (t->kind == K_COMMIT && commit_read)
            *commit_read = st == PGRES_COMMAND_OK || PQstatus(conn) == CONNECTION_OK;
        /* the server refused an earlier statement (a shutdown ends the
         * session with an error): it skipped what followed, the COMMIT too */
        if (t->kind != K_COMMIT && commit_read && st == PGRES_FATAL_ERROR &&
            PQresultErrorField(r, PG_DIAG_SQLSTATE))
            *commit_read = true;
        if (out && t->kind == K_STMT && !t->queued && !*out)
            *out = r; /* the caller's, failed or not (its SQLSTATE) */
        else
            PQclear(r);
    }
    PGresult *r = next_result(conn); /* the sync */
    bool ok = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    if (!ok) {
        pg__set_err(s, "PostgreSQL's pipeline answered out of order");
        *err = KB_E_STORE;
    }
    PQclear(r);
    return ok;
}

/* The writer's statements not sent yet, into p: the pending BEGIN (lock,
 * fence), the queued statements, then sql and a COMMIT if asked. */
static void plan_own(struct kb_store *s, struct plan *p, const char *sql, const struct pg_args *a,
                     bool commit)
{
    struct pg *c = pg(s);
    if (c->begin_pending)
        plan_begin(p);
    for (int i = 0; i < c->queue.n; i++)
        plan_stmt(s, p, c->queue.q[i].sql, &c->queue.q[i].a, true);
    if (sql)
        plan_stmt(s, p, sql, a, false);
    if (commit)
        plan_add(p, K_COMMIT);
    c->begin_pending = false;
}

/* ---- a COMMIT whose answer was lost ---- */

/*
 * The session that carried a writer's COMMIT can be lost before its
 * answer (PostgreSQL restarted, a network cut): the COMMIT may or may not
 * have happened. Failing its batch as if it had not would leave its
 * reservations reserved for requests never forwarded, and retry its
 * settlements on top of ones that counted. So the batch waits "in limbo"
 * (its done is not called; no batch begins meanwhile) until a new session
 * reads whether the batch's last audit record exists, under the write
 * lock, which the lost transaction held to its end: then the batch
 * completes as it really ended. One that cannot be read within LIMBO_MS
 * fails as unknown (docs/cluster.md, "Limits"). A batch without an audit
 * record has no mark to read: it fails as unknown at once.
 */
#define LIMBO_MS 30000 /* as long as statement_timeout lets a statement run */

static const char SQL_LIMBO[] = "SELECT 1 FROM audit WHERE node_id = $1 AND seq = $2";

void pg__txn_appended(struct kb_store *s, int64_t seq)
{
    struct pg *c = pg(s);
    if (c->in_writer_txn)
        c->txn_mark = seq;
}

static void limbo_leave(struct kb_store *s, enum kb_err err, const char *why)
{
    struct pg *c = pg(s);
    c->limbo = false;
    if (why)
        pg__set_err(s, why);
    c->limbo_done(c->limbo_arg, err);
}

/* The answers of the COMMIT in flight are read, or lost (answered: the
 * server answered its COMMIT): its batch's outcome goes to its done, or
 * the batch waits in limbo. */
static void inflight_end(struct kb_store *s, enum kb_err err, bool answered)
{
    struct pg *c = pg(s);
    if (err != KB_OK && !answered && c->inflight_mark > 0) {
        c->limbo = true;
        c->limbo_mark = c->inflight_mark;
        c->limbo_until_ms = pg__mono_ms() + LIMBO_MS;
        c->limbo_done = c->commit_done;
        c->limbo_arg = c->commit_arg;
        c->broken = true; /* its outcome is read on a new session */
        return;
    }
    c->commit_done(c->commit_arg, err);
}

void pg__inflight_lost(struct kb_store *s)
{
    struct pg *c = pg(s);
    c->commit_pending = false;
    pg__set_err(s, "the session was lost with a COMMIT in flight");
    inflight_end(s, KB_E_STORE, false);
}

/* Reads whether the limbo batch committed; leaves it in limbo when the
 * database does not answer. */
static void limbo_read(struct kb_store *s)
{
    struct pg *c = pg(s);
    bool own;
    int found = -1;
    enum kb_err err = pg__txn_begin(s, &own); /* BEGIN and the write lock */
    if (err == KB_OK) {
        struct pg_args a = {0};
        pg_arg_text(&a, c->node);
        pg_arg_i64(&a, c->limbo_mark);
        PGresult *r = pg__run(s, SQL_LIMBO, &a, &err);
        if (err == KB_OK)
            found = PQntuples(r) > 0;
        PQclear(r);
        if (pg__txn_end(s, own, err) != KB_OK)
            found = -1;
    }
    if (found == 1)
        limbo_leave(s, KB_OK, NULL);
    else if (found == 0)
        limbo_leave(s, KB_E_STORE, "a COMMIT whose answer was lost did not happen");
}

/* Whether no batch waits in limbo any more: its outcome is read when the
 * database answers; it fails once LIMBO_MS are over. */
static bool limbo_over(struct kb_store *s)
{
    struct pg *c = pg(s);
    if (!c->limbo)
        return true;
    bool blind = false;
#ifdef KB_TEST_HOOKS
    /* KEYBRAKE_TEST_PG_LIMBO_BLIND=1: the outcome is never read, as when
     * PostgreSQL stays away past LIMBO_MS: the batch fails as unknown */
    if ((blind = getenv("KEYBRAKE_TEST_PG_LIMBO_BLIND") != NULL))
        c->limbo_until_ms = 0;
#endif
    if (!blind && pg__conn_ready(s))
        limbo_read(s);
    if (c->limbo && pg__mono_ms() >= c->limbo_until_ms)
        limbo_leave(s, KB_E_STORE,
                    "a COMMIT's answer was lost and its outcome could not be read in time");
    if (c->limbo)
        pg__set_err(s, "PostgreSQL is unreachable (a COMMIT's outcome is not known yet)");
    return !c->limbo;
}

#ifdef KB_TEST_HOOKS
/* KEYBRAKE_TEST_PG_LOSE_COMMIT=<file>: when the file exists, the next
 * deferred COMMIT's answer is lost (its session is shut down once it is
 * sent; PostgreSQL still runs it) and the file is removed; a file that
 * says "rollback" has a ROLLBACK sent in the COMMIT's place. */
static bool lose_commit(struct pg *c)
{
    const char *f = getenv("KEYBRAKE_TEST_PG_LOSE_COMMIT");
    FILE *fp = f && *f ? fopen(f, "r") : NULL;
    if (!fp)
        return false;
    char buf[16] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    if (unlink(f) != 0)
        return false;
    c->test_rollback = n >= 8 && strncmp(buf, "rollback", 8) == 0;
    return true;
}

/* Once the server has answered (it ran the COMMIT: a small pipeline's
 * answers come in one piece, after its last statement), the answer is
 * thrown away and the session cut, before libpq reads a byte of it. */
static void lose_answer(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1)
        return;
    char buf[4096];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
    shutdown(fd, SHUT_RDWR);
}
#endif

/* Reads the answers of the COMMIT in flight alone (its batch completes,
 * or waits in limbo): whether it committed. A COMMIT is never sent before
 * the one in flight is known, and one sent is always read by this path or
 * pg__pipeline's, so that an answer lost is never taken for a failure. */
static bool inflight_read(struct kb_store *s)
{
    struct pg *c = pg(s);
    enum kb_err err = KB_OK;
    bool answered = false;
    c->commit_pending = false;
    bool in_step = read_plan(s, &c->inflight, &err, NULL, &answered);
    if (!in_step ||
        (PQpipelineStatus(c->conn) != PQ_PIPELINE_OFF && !PQexitPipelineMode(c->conn))) {
        pg__set_err(s, PQerrorMessage(c->conn));
        c->broken = true;
        if (err == KB_OK)
            err = KB_E_STORE;
    }
    inflight_end(s, err, answered);
    return err == KB_OK;
}

PGresult *pg__pipeline(struct kb_store *s, const char *sql, const struct pg_args *a, bool commit,
                       enum kb_err *err)
{
    struct pg *c = pg(s);
    PGconn *conn = c->conn;
    struct plan p = {0};
    plan_own(s, &p, sql, a, commit);
    bool prior = c->commit_pending; /* a COMMIT in flight: its answers come first */
    c->commit_pending = false;
    enum kb_err e = KB_OK, prior_err = KB_OK;
    PGresult *out = NULL;
    bool in_step = true;
    /* a plan that commits is not sent before the COMMIT in flight is known
     * to have succeeded: after one that failed at its commit (the session
     * idle again), its BEGIN would start afresh and its COMMIT land rows
     * that chain on the lost ones */
    bool commits = p.n > 0 && p.step[p.n - 1].kind == K_COMMIT;
    bool answered = false;
    if (prior && commits) {
        in_step = read_plan(s, &c->inflight, &prior_err, NULL, &answered);
        inflight_end(s, prior_err, answered);
        prior = false;
    }
    bool sent = p.n == 0 || (in_step && prior_err == KB_OK && send_plan(s, &p));
    if (!sent) {
        if (prior_err == KB_OK) {
            pg__set_err(s, PQerrorMessage(conn));
            c->broken = true; /* the slots its plan took go with the reset */
        }
        e = KB_E_STORE;
    }
    if (prior) {
        in_step = read_plan(s, &c->inflight, &prior_err, NULL, &answered);
        inflight_end(s, prior_err, answered); /* its batch completes now (or in limbo) */
        /* what follows chained on it: it fails with it (and its BEGIN,
         * sent after a failed transaction, fails anyway) */
        if (prior_err != KB_OK)
            e = KB_E_STORE;
    }
    if (sent && p.n > 0 && in_step)
        in_step = read_plan(s, &p, &e, &out, NULL);
    if (PQpipelineStatus(conn) != PQ_PIPELINE_OFF && !PQexitPipelineMode(conn)) {
        /* results left unread: this session cannot be trusted any more;
         * pg__conn_ready resets it (session settings, back-off) */
        pg__set_err(s, PQerrorMessage(conn));
        e = KB_E_STORE;
        c->broken = true;
    }
    if (e != KB_OK && c->in_writer_txn)
        c->txn_failed = true; /* nothing more of it may run, in it or outside */
    queue_drop(&c->queue, 0); /* sent (or failed with the transaction) */
    /* a failure leaves the transaction failed (not rolled back): nothing
     * after it runs outside it, and the caller's rollback ends it */
    *err = e;
    return out;
}

/* ---- the writer's transactions ---- */

enum kb_err pg__begin(struct kb_store *s)
{
    struct pg *c = pg(s);
    if (!limbo_over(s)) /* nothing chains on a batch of unknown outcome */
        return KB_E_STORE;
    c->txn_mark = c->txn_mark_sp = 0;
    if (!pg__conn_ready(s))
        return KB_E_STORE;
    rows_drop(&c->rows, 0, NULL);
    c->begin_pending = true; /* sent with the first statement (pg__pipeline) */
    c->in_writer_txn = true;
    c->txn_failed = false;
    return KB_OK;
}

/* Whether the writer's transaction can commit: false (and rolled back,
 * *err set) when it failed before its commit, or when it wrote nothing
 * (*err KB_OK: there is nothing to send). */
static bool commit_worth_sending(struct kb_store *s, enum kb_err *err)
{
    struct pg *c = pg(s);
    if (c->txn_failed || (!c->begin_pending && PQtransactionStatus(c->conn) != PQTRANS_INTRANS)) {
        /* COMMIT of a failed transaction answers "ROLLBACK": not a success */
        pg__set_err(s, "the transaction failed before its commit");
        queue_drop(&c->queue, 0);
        rows_drop(&c->rows, 0, NULL);
        if (pg__in_tx(s))
            (void)pg__exec(s, "ROLLBACK");
        c->in_writer_txn = c->txn_failed = false;
        *err = KB_E_STORE;
        return false;
    }
    if (c->begin_pending && c->rows.n == 0 && c->queue.n == 0) {
        c->begin_pending = false; /* nothing was written: nothing to send */
        c->in_writer_txn = false;
        *err = KB_OK;
        return false;
    }
    return true;
}

enum kb_err pg__commit(struct kb_store *s)
{
    struct pg *c = pg(s);
    enum kb_err err;
    if (!commit_worth_sending(s, &err))
        return err;
    /* the deferred rows and the COMMIT (and the BEGIN, when nothing else
     * was sent) in one round trip */
    struct pg_args a;
    const char *sql = NULL;
    if (c->rows.n > 0) {
        rows_args(&c->rows, &a);
        sql = c->rows.sql;
    }
    PQclear(pg__pipeline(s, sql, sql ? &a : NULL, true, &err));
    rows_drop(&c->rows, 0, NULL);
    if (err == KB_OK)
        c->in_writer_txn = false;
    return err == KB_OK ? KB_OK : KB_E_STORE; /* whatever refused, the commit failed */
}

bool pg__commit_later(struct kb_store *s, void (*done)(void *, enum kb_err), void *arg,
                      enum kb_err *err)
{
    struct pg *c = pg(s);
    if (c->commit_pending && !inflight_read(s)) {
        /* an earlier COMMIT in flight that nothing carried (this
         * transaction sent nothing yet) failed, or its answer was lost:
         * this one chains on it, and fails without sending a byte */
        rows_drop(&c->rows, 0, NULL);
        queue_drop(&c->queue, 0);
        c->begin_pending = c->in_writer_txn = c->txn_failed = false;
        *err = KB_E_STORE;
        return false;
    }
    if (!commit_worth_sending(s, err))
        return false;
    /* the deferred rows and the COMMIT (with the BEGIN, lock and fence if
     * nothing was sent) go now, and the answers are read with the next
     * transaction's first round trip, or by pg__commit_flush */
    struct pg_args ra;
    const char *sql = NULL;
    if (c->rows.n > 0) {
        rows_args(&c->rows, &ra);
        sql = c->rows.sql;
    }
    c->inflight = (struct plan){0};
    plan_own(s, &c->inflight, sql, sql ? &ra : NULL, true);
#ifdef KB_TEST_HOOKS
    bool lose = lose_commit(c);
#endif
    bool sent = send_plan(s, &c->inflight);
#ifdef KB_TEST_HOOKS
    c->test_rollback = false;
    if (lose && sent && PQflush(c->conn) == 0)
        lose_answer(PQsocket(c->conn));
#endif
    for (int k = 0; k < c->inflight.n; k++)
        c->inflight.step[k].a = NULL; /* sent: read_plan needs no parameter */
    rows_drop(&c->rows, 0, NULL);
    queue_drop(&c->queue, 0);
    c->in_writer_txn = false; /* what follows belongs to the next one */
    c->inflight_mark = c->txn_mark;
    c->commit_done = done;
    c->commit_arg = arg;
    if (!sent) {
        pg__set_err(s, PQerrorMessage(c->conn));
        c->broken = true; /* the slots its plan took go with the reset */
        if (c->inflight_mark > 0) {
            /* its COMMIT may have reached the server all the same */
            inflight_end(s, KB_E_STORE, false);
            return true;
        }
        if (pg__in_tx(s))
            (void)pg__exec(s, "ROLLBACK");
        *err = KB_E_STORE;
        return false;
    }
    c->commit_pending = true;
    return true;
}

void pg__commit_flush(struct kb_store *s)
{
    enum kb_err err;
    if (pg(s)->limbo) {
        if (!limbo_over(s)) {
            /* the writer has nothing else to do meanwhile: no busy loop */
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        return;
    }
    if (!pg(s)->commit_pending)
        return;
    PQclear(pg__pipeline(s, NULL, NULL, false, &err));
    if (pg(s)->limbo) {
        (void)limbo_over(s); /* a session that comes back at once tells at once */
        return;
    }
    /* a commit that failed left its transaction open, failed: no later
     * transaction of this connection may start inside it */
    PGTransactionStatusType t = PQtransactionStatus(pg(s)->conn);
    if (t == PQTRANS_INERROR || t == PQTRANS_INTRANS)
        (void)pg__exec(s, "ROLLBACK");
}

void pg__rollback(struct kb_store *s)
{
    struct pg *c = pg(s);
    rows_drop(&c->rows, 0, NULL);
    queue_drop(&c->queue, 0);
    c->in_writer_txn = c->txn_failed = false;
    c->begin_pending = false;
    if (pg__in_tx(s))
        (void)pg__exec(s, "ROLLBACK");
}

enum kb_err pg__savepoint(struct kb_store *s)
{
    struct pg *c = pg(s);
    /* what earlier jobs deferred goes to the database before the savepoint,
     * so that no rollback to it, and no flush inside it, can touch them */
    enum kb_err err = pg__flush(s);
    if (err == KB_OK)
        err = pg__exec(s, "SAVEPOINT j"); /* after what is queued */
    c->rows.mark_n = c->rows.n;
    for (int i = 0; i < PG_MAX_ARGS; i++)
        c->rows.mark[i] = c->rows.col[i].len;
    c->queue.mark = c->queue.n;
    c->txn_mark_sp = c->txn_mark;
    return err;
}

enum kb_err pg__release(struct kb_store *s)
{
    return pg__exec(s, "RELEASE j");
}

enum kb_err pg__rollback_to(struct kb_store *s)
{
    struct pg *c = pg(s);
    rows_drop(&c->rows, c->rows.mark_n, c->rows.mark); /* the job's deferred rows go with it */
    queue_drop(&c->queue, c->queue.mark);
    c->txn_mark = c->txn_mark_sp; /* and its audit records */
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
