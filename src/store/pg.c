/*
 * pg.c - the PostgreSQL backend (see store.h, backend.h): the store that
 * several Keybrake nodes share (docs/cluster.md).
 *
 * This file holds the connection: opening it from a postgres:// URL,
 * migrating the schema (schema_pg/, serialised by an advisory lock so that
 * nodes starting together apply each migration once), transactions,
 * reconnection with back-off, and the helpers the other pg_*.c files run
 * their statements with. The operations live beside it by subject:
 * pg_keys.c, pg_budgets.c, pg_audit.c, pg_cluster.c.
 *
 * Every cap decision is PostgreSQL's own: a conditional UPDATE (spent +
 * reserved + amount <= cap) under the row's lock, so no interleaving of
 * nodes can overshoot. Every write transaction (a writer's batch, a
 * start's settlement, a reap) first takes one cluster-wide advisory lock:
 * the nodes' transactions run one after another, in one order that every
 * admission, revocation and settlement shares. That costs parallelism
 * between nodes' writers (a batch holds it for its round trips and its
 * commit) and buys the absence of deadlocks: a batch runs many requests'
 * jobs that lock spend, budget and key rows in whatever order requests
 * came, and a deadlock would fail the whole batch (docs/cluster.md). Commits are synchronous
 * (synchronous_commit on) whatever [store] synchronous says: a commit another node builds on must
 * survive a crash of the server.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "store/pg_int.h"

extern const char *const kb_pg_schema_migrations[];
extern const int kb_pg_schema_count;

/* pg_advisory_xact_lock key of the migrations ("kbmg") */
#define MIGRATION_LOCK INT64_C(0x6b626d67)
/* ... and of every write transaction ("kbwr"): see the top */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000

int64_t pg__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- parameters and results ---- */

static void arg_put(struct pg_args *a, const char *v, int len, int fmt)
{
    if (a->n >= PG_MAX_ARGS)
        abort(); /* a statement with more parameters than PG_MAX_ARGS: a bug */
    a->v[a->n] = v;
    a->len[a->n] = len;
    a->fmt[a->n] = fmt;
    a->n++;
}

void pg_arg_i64(struct pg_args *a, int64_t x)
{
    if (a->n >= PG_MAX_ARGS)
        abort();
    snprintf(a->num[a->n], sizeof a->num[a->n], "%" PRId64, x);
    arg_put(a, a->num[a->n], 0, 0);
}

void pg_arg_bool(struct pg_args *a, bool x)
{
    arg_put(a, x ? "t" : "f", 0, 0);
}

void pg_arg_text(struct pg_args *a, const char *s)
{
    arg_put(a, s, 0, 0);
}

void pg_arg_bytea(struct pg_args *a, const void *p, size_t n)
{
    arg_put(a, p, (int)n, 1); /* binary: the bytes as they are */
}

int64_t pg__i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

bool pg__is_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) != 0;
}

const char *pg__text(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

char *pg__strdup(const PGresult *r, int row, int col)
{
    const char *t = pg__text(r, row, col);
    return t ? kb_strdup(t) : NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t pg__bytea(const PGresult *r, int row, int col, uint8_t *out, size_t cap)
{
    if (PQgetisnull(r, row, col))
        return 0;
    const char *t = PQgetvalue(r, row, col);
    size_t len = (size_t)PQgetlength(r, row, col);
    if (len < 2 || t[0] != '\\' || t[1] != 'x' || (len - 2) % 2 != 0 || (len - 2) / 2 > cap)
        return (size_t)-1;
    size_t n = (len - 2) / 2;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(t[2 + 2 * i]), lo = hexval(t[3 + 2 * i]);
        if (hi < 0 || lo < 0)
            return (size_t)-1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return n;
}

/* ---- errors and the connection's health ---- */

void pg__set_err(struct kb_store *s, const char *what)
{
    struct pg *c = pg(s);
    snprintf(c->err, sizeof c->err, "%s", what && *what ? what : "PostgreSQL failed");
    size_t n = strlen(c->err);
    while (n && (c->err[n - 1] == '\n' || c->err[n - 1] == ' '))
        c->err[--n] = '\0';
}

enum kb_err pg__err_of(struct kb_store *s, const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    pg__set_err(s, r ? PQresultErrorMessage(r) : PQerrorMessage(pg(s)->conn));
    if (!state)
        return KB_E_STORE;
    if (strcmp(state, "23505") == 0)
        return KB_E_EXISTS;
    if (strcmp(state, "23503") == 0)
        return KB_E_NOT_FOUND;
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
        return KB_E_INVALID;
    return KB_E_STORE;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg, (void)message; /* "relation already exists, skipping" and the like */
}

/* What every session of ours sets: commits durable before they answer, no
 * statement waiting for ever on a lock (a writer stuck there would stall
 * every admission: fail them instead). */
static enum kb_err session_setup(struct kb_store *s)
{
    PQsetNoticeProcessor(pg(s)->conn, ignore_notice, NULL);
    /* on the session itself (not through pg__exec: nothing the writer
     * deferred belongs to a fresh session) */
    PGresult *r = PQexec(pg(s)->conn, "SET synchronous_commit = on; SET statement_timeout = '30s'; "
                                      "SET lock_timeout = '10s'; "
                                      "SET idle_in_transaction_session_timeout = '60s'");
    enum kb_err err = PQresultStatus(r) == PGRES_COMMAND_OK ? KB_OK : pg__err_of(s, r);
    PQclear(r);
    return err;
}

/* True when the connection can take a statement: outside a transaction, a
 * broken one is reset (no sooner than the back-off allows). */
bool pg__conn_ready(struct kb_store *s)
{
    struct pg *c = pg(s);
    if (PQstatus(c->conn) == CONNECTION_OK && !c->broken)
        return true;
    int64_t now = pg__mono_ms();
    if (now < c->retry_at_ms) {
        pg__set_err(s, "PostgreSQL is unreachable (waiting before the next attempt)");
        return false;
    }
    if (c->commit_pending) /* a COMMIT in flight on the session being reset */
        pg__inflight_lost(s);
    PQreset(c->conn);
    c->broken = false;
    c->nprepared = 0;
    c->listening = false;
    c->node_locked = false;
    if (PQstatus(c->conn) == CONNECTION_OK && session_setup(s) == KB_OK) {
        c->backoff_ms = 0;
        c->retry_at_ms = 0;
        return true;
    }
    pg__set_err(s, PQerrorMessage(c->conn));
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    c->retry_at_ms = now + c->backoff_ms;
    return false;
}

int pg__stmt_slot(struct kb_store *s, const char *sql, char name[16])
{
    struct pg *c = pg(s);
    int i = 0;
    while (i < c->nprepared && c->prepared[i] != sql)
        i++;
    snprintf(name, 16, "kb%d", i);
    return i;
}

PGresult *pg__run(struct kb_store *s, const char *sql, const struct pg_args *a, enum kb_err *err)
{
    struct pg *c = pg(s);
    *err = KB_E_STORE;
    if (c->txn_failed) {
        pg__set_err(s, "the transaction failed earlier");
        return NULL;
    }
    if (c->begin_pending || c->commit_pending || c->queue.n) /* they go with it (pg_txn.c) */
        return pg__pipeline(s, sql, a, false, err);
    if (!pg__conn_ready(s))
        return NULL;
    char name[16];
    int i = pg__stmt_slot(s, sql, name);
    int n = a ? a->n : 0;
    PGresult *r;
    if (i == c->nprepared && i == PG_MAX_STMTS) {
        r = PQexecParams(c->conn, sql, n, NULL, a ? a->v : NULL, a ? a->len : NULL,
                         a ? a->fmt : NULL, 0);
    } else {
        if (i == c->nprepared) {
            PGresult *p = PQprepare(c->conn, name, sql, 0, NULL);
            if (!p || PQresultStatus(p) != PGRES_COMMAND_OK) {
                *err = pg__err_of(s, p);
                return p;
            }
            PQclear(p);
            c->prepared[c->nprepared++] = sql;
        }
        r = PQexecPrepared(c->conn, name, n, a ? a->v : NULL, a ? a->len : NULL, a ? a->fmt : NULL,
                           0);
    }
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        *err = KB_OK;
    else
        *err = pg__err_of(s, r);
    return r;
}

enum kb_err pg__do(struct kb_store *s, const char *sql, const struct pg_args *a)
{
    enum kb_err err;
    PQclear(pg__run(s, sql, a, &err));
    return err;
}

PGresult *pg__read(struct kb_store *s, const char *sql, const struct pg_args *a, enum kb_err *err)
{
    PGresult *r = pg__run(s, sql, a, err);
    /* the session was found lost by this statement (the server restarted
     * since the last one): a read outside a transaction runs again, once,
     * on a new session, instead of failing the request that found it */
    if (*err == KB_E_STORE && PQstatus(pg(s)->conn) == CONNECTION_BAD && !pg__in_tx(s)) {
        PQclear(r);
        r = pg__run(s, sql, a, err);
    }
    return r;
}

enum kb_err pg__exec(struct kb_store *s, const char *sql)
{
    struct pg *c = pg(s);
    if (c->begin_pending || c->commit_pending || c->queue.n) { /* what the writer deferred */
        enum kb_err err;
        PQclear(pg__pipeline(s, NULL, NULL, false, &err));
        if (err != KB_OK)
            return err;
    }
    if (PQstatus(c->conn) != CONNECTION_OK || c->broken) {
        pg__set_err(s,
                    c->broken ? "the connection was left mid-pipeline" : PQerrorMessage(c->conn));
        return KB_E_STORE;
    }
    PGresult *r = PQexec(c->conn, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    enum kb_err err = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? KB_OK : pg__err_of(s, r);
    PQclear(r);
    return err;
}

static const char *pg_last_error(struct kb_store *s)
{
    return pg(s)->err[0] ? pg(s)->err : "no error";
}

/* ---- opening, migrating, closing ---- */

static enum kb_err migrate(struct kb_store *s, char **errmsg)
{
    enum kb_err err;
    char q[160];
    if ((err = pg__exec(s, "BEGIN")) != KB_OK)
        goto fail;
    snprintf(q, sizeof q, "SELECT pg_advisory_xact_lock(%" PRId64 ")", MIGRATION_LOCK);
    if ((err = pg__exec(s, q)) != KB_OK ||
        (err = pg__exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                           "version integer PRIMARY KEY, "
                           "applied_at timestamptz NOT NULL DEFAULT now())")) != KB_OK)
        goto fail;
    PGresult *r = PQexec(pg(s)->conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        err = pg__err_of(s, r);
        PQclear(r);
        goto fail;
    }
    int version = (int)pg__i64(r, 0, 0);
    PQclear(r);
    if (version > kb_pg_schema_count) {
        kb_set_errmsg(errmsg, "the store's schema version %d is newer than this binary's (%d)",
                      version, kb_pg_schema_count);
        (void)pg__exec(s, "ROLLBACK");
        return KB_E_STORE;
    }
    for (int v = version; v < kb_pg_schema_count; v++) {
        if ((err = pg__exec(s, kb_pg_schema_migrations[v])) != KB_OK)
            goto fail;
        snprintf(q, sizeof q, "INSERT INTO schema_migrations (version) VALUES (%d)", v + 1);
        if ((err = pg__exec(s, q)) != KB_OK)
            goto fail;
    }
    if ((err = pg__exec(s, "COMMIT")) == KB_OK)
        return KB_OK;
fail:
    kb_set_errmsg(errmsg, "cannot migrate the schema: %s", pg(s)->err);
    if (pg__in_tx(s))
        (void)pg__exec(s, "ROLLBACK");
    return err == KB_OK ? KB_E_STORE : KB_E_STORE;
}

static void pg_close(struct kb_store *s)
{
    if (!s)
        return;
    pg__audit_free(s);
    pg__budget_free(s);
    pg__txn_free(s);
    PQfinish(pg(s)->conn);
    free(s);
}

/* What messages say of the URL: user, host, port and database as libpq
 * reads them, never a password, wherever the URL put it (userinfo or a
 * password= parameter) and never any other parameter. */
static void url_for_people(const char *url, char *out, size_t cap)
{
    const char *user = NULL, *host = NULL, *port = NULL, *db = NULL;
    PQconninfoOption *o = PQconninfoParse(url, NULL);
    for (PQconninfoOption *i = o; i && i->keyword; i++) {
        if (!i->val || !*i->val)
            continue;
        if (strcmp(i->keyword, "user") == 0)
            user = i->val;
        else if (strcmp(i->keyword, "host") == 0)
            host = i->val;
        else if (strcmp(i->keyword, "port") == 0)
            port = i->val;
        else if (strcmp(i->keyword, "dbname") == 0)
            db = i->val;
    }
    if (!o)
        snprintf(out, cap, "the store URL (unreadable)");
    else
        snprintf(out, cap, "postgres://%s%s%s%s%s/%s", user ? user : "", user ? "@" : "",
                 host ? host : "", port ? ":" : "", port ? port : "", db ? db : "");
    PQconninfoFree(o);
}

static enum kb_err pg_open(const char *url, const char *synchronous, bool check,
                           struct kb_store **out, char **errmsg)
{
    (void)synchronous; /* commits are always synchronous (see the top) */
    (void)check;       /* PostgreSQL checks its own pages */
    struct pg *c = kb_calloc(1, sizeof *c);
    c->base.be = &kb_store_pg;
    struct kb_store *s = &c->base;
    snprintf(c->node, sizeof c->node, "%s", store__node_id());
    snprintf(c->boot, sizeof c->boot, "%s", store__boot_id());
    /* the URL's own settings win over these defaults (expand_dbname) */
    /* tcp_user_timeout: a server that stops acknowledging (a dead host, a
     * black hole) fails the connection in 10 s instead of TCP's ~15 min
     * of retransmissions, during which the writer would wait */
    const char *keys[] = {
        "connect_timeout",  "application_name", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "dbname",          NULL};
    const char *vals[] = {"5", "keybrake", "10", "5", "3", "10000", url, NULL};
    c->conn = PQconnectdbParams(keys, vals, 1);
    char shown[256];
    url_for_people(url, shown, sizeof shown);
    if (!c->conn || PQstatus(c->conn) != CONNECTION_OK) {
        kb_set_errmsg(errmsg, "cannot connect to %s: %s", shown,
                      c->conn ? PQerrorMessage(c->conn) : "out of memory");
        pg_close(s);
        return KB_E_STORE;
    }
    if (PQserverVersion(c->conn) < 120000) {
        kb_set_errmsg(errmsg, "%s: PostgreSQL %d is too old (12 or newer)", shown,
                      PQserverVersion(c->conn) / 10000);
        pg_close(s);
        return KB_E_STORE;
    }
    enum kb_err err = session_setup(s);
    if (err != KB_OK) {
        kb_set_errmsg(errmsg, "%s: %s", shown, c->err);
        pg_close(s);
        return err;
    }
    if ((err = migrate(s, errmsg)) != KB_OK) {
        pg_close(s);
        return err;
    }
    *out = s;
    return KB_OK;
}

static enum kb_err pg_ping(struct kb_store *s)
{
    return pg__do(s, "SELECT 1", NULL);
}

/* A write that must reach the server's WAL and changes nothing visible:
 * this node's heartbeat is a real row update (a read-only or full server
 * fails it where it fails requests). */
static enum kb_err pg_probe_write(struct kb_store *s)
{
    struct pg_args a = {0};
    pg_arg_text(&a, pg(s)->node);
    return pg__do(s, "UPDATE nodes SET heartbeat_at = heartbeat_at WHERE node_id = $1", &a);
}

/* Nothing runs beside the writer's connection (the server checkpoints). */
static void *pg_writer_attach(struct kb_store *s, const char *synchronous)
{
    (void)s, (void)synchronous;
    return NULL;
}

static void pg_writer_idle(struct kb_store *s, void *state)
{
    (void)s, (void)state;
}

static void pg_writer_detach(struct kb_store *s, void *state)
{
    (void)s, (void)state;
}

static size_t pg_writer_resident(void *state)
{
    (void)state;
    return 0;
}

const struct kb_store_backend kb_store_pg = {
    .name = "postgres",
    .caps = KB_STORE_SHARED | KB_STORE_NOTIFIES,
    .open = pg_open,
    .close = pg_close,
    .begin = pg__begin,
    .commit = pg__commit,
    .commit_later = pg__commit_later,
    .commit_flush = pg__commit_flush,
    .rollback = pg__rollback,
    .savepoint = pg__savepoint,
    .release = pg__release,
    .rollback_to = pg__rollback_to,
    .in_transaction = pg__in_transaction,
    .last_error = pg_last_error,
    .probe_write = pg_probe_write,
    .writer_attach = pg_writer_attach,
    .writer_idle = pg_writer_idle,
    .writer_detach = pg_writer_detach,
    .writer_resident = pg_writer_resident,
    .ping = pg_ping,
    .key_insert = pg__key_insert,
    .key_get = pg__key_get,
    .key_by_hash = pg__key_by_hash,
    .key_revoked = pg__key_revoked,
    .key_state = pg__key_state,
    .key_update = pg__key_update,
    .key_list = pg__key_list,
    .key_count_active = pg__key_count_active,
    .key_revoke = pg__key_revoke,
    .key_revoke_prefix = pg__key_revoke_prefix,
    .spend_reserve = pg__spend_reserve,
    .spend_settle = pg__spend_settle,
    .rate_take = pg__rate_take,
    .admit = pg__admit,
    .settle = pg__settle,
    .spend_settle_orphans = pg__spend_settle_orphans,
    .txn_run = pg__txn_run,
    .admin_token_count = pg__admin_token_count,
    .admin_token_add = pg__admin_token_add,
    .admin_token_check = pg__admin_token_check,
    .tenant_insert = pg__tenant_insert,
    .tenant_get = pg__tenant_get,
    .tenant_list = pg__tenant_list,
    .tenant_delete = pg__tenant_delete,
    .admin_token_insert = pg__admin_token_insert,
    .admin_token_lookup = pg__admin_token_lookup,
    .admin_token_list = pg__admin_token_list,
    .admin_token_revoke = pg__admin_token_revoke,
    .secret_put = pg__secret_put,
    .secret_get = pg__secret_get,
    .secret_delete = pg__secret_delete,
    .secret_list = pg__secret_list,
    .object_charged = pg__object_charged,
    .object_charge_set = pg__object_charge_set,
    .budget_insert = pg__budget_insert,
    .budget_get = pg__budget_get,
    .budget_list = pg__budget_list,
    .budget_update = pg__budget_update,
    .budget_delete = pg__budget_delete,
    .key_budget_add = pg__key_budget_add,
    .key_budgets = pg__key_budgets,
    .budget_reserve = pg__budget_reserve,
    .budget_settle = pg__budget_settle,
    .budget_release = pg__budget_release,
    .usage = pg__usage,
    .budget_alerts_set = pg__budget_alerts_set,
    .alert_claim = pg__alert_claim,
    .alert_record = pg__alert_record,
    .alert_list = pg__alert_list,
    .audit_last = pg__audit_last,
    .audit_last_ckpt = pg__audit_last_ckpt,
    .audit_exists = pg__audit_exists,
    .audit_completed = pg__audit_completed,
    .audit_insert = pg__audit_insert,
    .audit_ckpt_insert = pg__audit_ckpt_insert,
    .audit_cut_find = pg__audit_cut_find,
    .audit_prune = pg__audit_prune,
    .audit_forget = pg__audit_forget,
    .audit_head_sync = pg__audit_head_sync,
    .audit_head_drop = pg__audit_head_drop,
    .audit_read_begin = pg__audit_read_begin,
    .audit_read_end = pg__audit_read_end,
    .audit_rows = pg__audit_rows,
    .audit_ckpts = pg__audit_ckpts,
    .audit_row_next = pg__audit_row_next,
    .audit_ckpt_next = pg__audit_ckpt_next,
    .audit_iter_free = pg__audit_iter_free,
    .audit_query = pg__audit_query,
    .audit_chains = pg__audit_chains,
    .audit_chain_use = pg__audit_chain_use,
    .node_join = pg__node_join,
    .node_heartbeat = pg__node_heartbeat,
    .node_reap = pg__node_reap,
    .key_changes = pg__key_changes,
    .wait_change = pg__wait_change,
};
