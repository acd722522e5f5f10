/*
 * pg_int.h - shared by the PostgreSQL files of src/store/ only (pg.c,
 * pg_keys.c, pg_budgets.c, pg_audit.c, pg_cluster.c, pg_admit.c).
 *
 * One connection per struct kb_store, used from one thread, blocking (the
 * daemon's store threads own their connections; no worker loop waits on
 * one). Statements are prepared on a connection at first use, named by
 * the address of their SQL text, and run with text results. A connection
 * that broke is reset at the next call outside a transaction, with a
 * growing back-off, so a store that comes back is used again without a
 * restart.
 */
#ifndef KB_STORE_PG_INT_H
#define KB_STORE_PG_INT_H
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/crypto.h"
#include "core/err.h"
#include "store/audit_store.h"
#include "store/backend.h"
#include "store/store.h"

#define PG_MAX_ARGS 24
#define PG_MAX_STMTS 128

/* Statement parameters, built in order. Text unless set as bytea. */
struct pg_args {
    int n;
    const char *v[PG_MAX_ARGS];
    int len[PG_MAX_ARGS];
    int fmt[PG_MAX_ARGS];
    char num[PG_MAX_ARGS][24];
};

/* Rows deferred to a commit: one array literal per column (pg__defer). */
struct pg_rows {
    const char *sql; /* the INSERT ... SELECT * FROM unnest(...) they go to */
    struct kb_buf col[PG_MAX_ARGS];
    int cols;
    size_t n;
    size_t mark_n, mark[PG_MAX_ARGS]; /* at the open savepoint */
};

/* Statements of the writer's transaction whose result nobody reads, sent
 * with the next round trip (pg__queue): their parameters copied. */
#define PG_QUEUE_MAX 8
struct pg_queue {
    struct pg_queued {
        const char *sql;
        struct pg_args a; /* values point into buf */
        char *buf;        /* owned */
    } q[PG_QUEUE_MAX];
    int n;
    int mark; /* n at the open savepoint */
};

/* What one libpq pipeline sends, in order (pg_txn.c). */
enum pg_step_kind { K_BEGIN, K_LOCK, K_FENCE, K_PREPARE, K_STMT, K_COMMIT };
struct plan {
    int n;
    struct pg_step {
        enum pg_step_kind kind;
        const char *sql;
        const struct pg_args *a;
        bool queued;   /* a queued statement: its failure is KB_E_STORE */
        int slot;      /* K_PREPARE: its index in struct pg's prepared */
        char name[16]; /* "": unnamed */
    } step[3 + 2 * PG_QUEUE_MAX + 2 + 1];
};

/* A connection: the base every backend's starts with, then PostgreSQL's. */
struct pg {
    struct kb_store base;
    PGconn *conn;                       /* owned */
    const char *prepared[PG_MAX_STMTS]; /* SQL texts prepared on conn (by address) */
    int nprepared;
    char node[KB_NODE_ID_MAX + 1]; /* store__node_id() at open */
    char boot[40];                 /* store__boot_id() at open */
    char err[256];                 /* the last failure, for store_last_error */
    int64_t retry_at_ms;           /* no reset attempt before (monotonic ms) */
    int64_t backoff_ms;            /* the next back-off; 0 after a success */
    bool listening;                /* LISTEN keybrake_keys issued on conn */
    bool node_locked;              /* this connection holds the node's lock */
    /* the writer's transactions (pg_txn.c) */
    bool begin_pending;    /* its BEGIN, lock and fence are not sent yet */
    bool in_writer_txn;    /* between pg__begin and its commit or rollback */
    bool txn_failed;       /* ... and a round trip of it failed: nothing more is sent */
    bool broken;           /* results were left unread: reset before the next use */
    struct pg_rows rows;   /* rows deferred to its commit (pg__defer) */
    struct pg_queue queue; /* statements sent with its next round trip (pg__queue) */
    bool commit_pending;   /* the last one's COMMIT is sent, not yet read (pg__commit_later) */
    struct plan inflight;  /* ... what was sent with it, to read its answers */
    void (*commit_done)(void *arg, enum kb_err err);
    void *commit_arg;
    /* the seq of the last audit record the writer's open transaction
     * appended to the own chain (0: none), at its savepoint, and of the
     * transaction the COMMIT in flight ends: what tells, after a lost
     * answer, whether that COMMIT happened */
    int64_t txn_mark, txn_mark_sp, inflight_mark;
    /* a COMMIT whose answer was lost with its session ("limbo", pg_txn.c):
     * its batch is completed (limbo_done) once a new session has read
     * whether record limbo_mark exists, or fails at limbo_until_ms */
    bool limbo;
    int64_t limbo_mark;
    int64_t limbo_until_ms;
    void (*limbo_done)(void *arg, enum kb_err err);
    void *limbo_arg;
#ifdef KB_TEST_HOOKS
    bool test_rollback; /* the in-flight plan's COMMIT is sent as ROLLBACK */
#endif
    void *audit;  /* pg_audit.c's state; freed by pg__audit_free */
    void *budget; /* pg_budgets.c's state; freed by pg__budget_free */
};

static inline struct pg *pg(struct kb_store *s)
{
    return (struct pg *)s;
}

void pg_arg_i64(struct pg_args *a, int64_t x);
void pg_arg_bool(struct pg_args *a, bool x);
void pg_arg_text(struct pg_args *a, const char *s); /* NULL: SQL NULL */
void pg_arg_bytea(struct pg_args *a, const void *p, size_t n);

/*
 * Runs `sql` (a static string: its address names the prepared statement)
 * with a's parameters (a may be NULL) on s's connection. Returns the
 * result (PQclear it) or NULL when the connection is unusable; *err is
 * KB_OK for PGRES_COMMAND_OK / PGRES_TUPLES_OK, else the error mapped by
 * pg__err_of (the result is still returned, for its SQLSTATE).
 */
PGresult *pg__run(struct kb_store *s, const char *sql, const struct pg_args *a, enum kb_err *err);
/* As pg__run, for a statement that only reads: run again once on a new
 * session when it found its session lost (outside a transaction). */
PGresult *pg__read(struct kb_store *s, const char *sql, const struct pg_args *a, enum kb_err *err);
/* As pg__run for statements whose result is not needed. */
enum kb_err pg__do(struct kb_store *s, const char *sql, const struct pg_args *a);
/* An unprepared statement without parameters (DDL, transaction control). */
enum kb_err pg__exec(struct kb_store *s, const char *sql);

/*
 * Defers one row of an INSERT to the commit of the open transaction, sent
 * in the commit's own round trip: for appends that no statement of the
 * transaction reads back (the audit records the writer caches the head
 * of). `row_sql` inserts one row from a's parameters (run at once outside
 * a transaction); `rows_sql` inserts the rows of arrays, one per
 * parameter of row_sql, in order (INSERT ... SELECT * FROM unnest(...)):
 * a batch's rows cost one statement. A savepoint's rollback drops the rows
 * deferred after it; a failed insert fails the commit. KB_E_INVALID for
 * text PostgreSQL would refuse (not UTF-8).
 */
enum kb_err pg__defer(struct kb_store *s, const char *rows_sql, const char *row_sql,
                      const struct pg_args *a);
/* Queues `sql` with a (copied) in the writer's transaction, to be sent
 * with its next round trip (the next statement's, or the commit's): for a
 * statement whose result nobody reads (pg_admit.c's settlements). Its
 * failure fails the call that carries it, as KB_E_STORE, and with it the
 * transaction. Outside a transaction it runs at once. */
enum kb_err pg__queue(struct kb_store *s, const char *sql, const struct pg_args *a);
/* Inserts what is deferred now (before a statement that reads it back). */
enum kb_err pg__flush(struct kb_store *s);
/* Frees the writer transaction's buffers (deferred rows, queued statements). */
void pg__txn_free(struct kb_store *s);

/*
 * pg_txn.c: the writer's transactions. pg__begin sends nothing; the BEGIN,
 * the write lock and the fence go with the transaction's first statement
 * in one libpq pipeline (pg__pipeline, which pg__run and pg__exec call
 * while the BEGIN is pending); pg__commit sends the deferred rows and the
 * COMMIT in one more.
 */
enum kb_err pg__begin(struct kb_store *s);
enum kb_err pg__commit(struct kb_store *s);
bool pg__commit_later(struct kb_store *s, void (*done)(void *, enum kb_err), void *arg,
                      enum kb_err *err);
void pg__commit_flush(struct kb_store *s);
void pg__rollback(struct kb_store *s);
enum kb_err pg__savepoint(struct kb_store *s);
enum kb_err pg__release(struct kb_store *s);
enum kb_err pg__rollback_to(struct kb_store *s);
bool pg__in_transaction(struct kb_store *s);
/* The session carrying a COMMIT in flight was lost before its answer: its
 * batch waits in limbo when the answer can be recovered, else fails. */
void pg__inflight_lost(struct kb_store *s);
/* The writer's audit append of seq, in its open transaction (the mark). */
void pg__txn_appended(struct kb_store *s, int64_t seq);
enum kb_err pg__txn_run(struct kb_store *s, kb_txn_fn fn, void *arg);
/* In a transaction, or about to be (a pending BEGIN). */
bool pg__in_tx(struct kb_store *s);
/* The pending BEGIN (if any), the queued statements, `sql` with a (if not
 * NULL), then a COMMIT (if commit), in one round trip, after reading the
 * answers of a COMMIT in flight (pg__commit_later: its outcome goes to its
 * done); the result of sql (PQclear it) and *err as pg__run's. A failure
 * leaves the transaction failed, not ended. */
PGresult *pg__pipeline(struct kb_store *s, const char *sql, const struct pg_args *a, bool commit,
                       enum kb_err *err);
/* pg.c: the connection's helpers pg_txn.c uses. */
void pg__set_err(struct kb_store *s, const char *what);
bool pg__conn_ready(struct kb_store *s);
/* The prepared statement slot of sql on s's connection (== nprepared: not
 * prepared yet) and its name. */
int pg__stmt_slot(struct kb_store *s, const char *sql, char name[16]);

/* A failed result's error: 23505 KB_E_EXISTS, 23503 KB_E_NOT_FOUND, other
 * 22xxx/23xxx KB_E_INVALID, the rest KB_E_STORE. */
enum kb_err pg__err_of(struct kb_store *s, const PGresult *r);

/* Result fields (text format). NULL reads as 0 / NULL. */
int64_t pg__i64(const PGresult *r, int row, int col);
bool pg__is_null(const PGresult *r, int row, int col);
const char *pg__text(const PGresult *r, int row, int col); /* NULL for SQL NULL; borrowed */
char *pg__strdup(const PGresult *r, int row, int col);     /* owned copy; NULL for SQL NULL */
/* Decodes a bytea (hex text "\x...") into out (cap bytes); the number of
 * bytes it holds, or (size_t)-1 when it does not fit or is not hex. */
size_t pg__bytea(const PGresult *r, int row, int col, uint8_t *out, size_t cap);

/* Opens a write transaction unless one is open on s (the writer's group
 * commit); *own says whether pg__txn_end must end it. */
enum kb_err pg__txn_begin(struct kb_store *s, bool *own);
enum kb_err pg__txn_end(struct kb_store *s, bool own, enum kb_err err);

/* Milliseconds of the monotonic clock. */
int64_t pg__mono_ms(void);

/* ---- the table's halves, one file each; see store.h for each ---- */

/* pg_keys.c: keys, spend, rate limits, admin tokens, object ledger */
enum kb_err pg__key_insert(struct kb_store *s, struct kb_key *k, const uint8_t hash[KB_HASH_LEN]);
enum kb_err pg__key_get(struct kb_store *s, const char *id, int64_t day, struct kb_key **out);
enum kb_err pg__key_by_hash(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], int64_t day,
                            struct kb_key **out);
enum kb_err pg__key_revoked(struct kb_store *s, int64_t seq, bool *revoked);
enum kb_err pg__key_state(struct kb_store *s, int64_t seq, struct kb_key_state *out);
enum kb_err pg__key_update(struct kb_store *s, const char *id, const struct kb_key_change *c,
                           int64_t now, struct kb_revoked_key *out);
enum kb_err pg__key_list(struct kb_store *s, const struct kb_key_filter *f, struct kb_key **out,
                         size_t *n);
enum kb_err pg__key_count_active(struct kb_store *s, int64_t now, int64_t *count);
enum kb_err pg__key_revoke(struct kb_store *s, const char *id, int64_t now,
                           struct kb_revoked_key *out);
enum kb_err pg__key_revoke_prefix(struct kb_store *s, const char *tenant, const char *prefix,
                                  int64_t now, int64_t *count, struct kb_revoked_key **keys);
enum kb_err pg__spend_reserve(struct kb_store *s, int64_t seq, int64_t day, int64_t amount,
                              int64_t cap, int64_t *remaining);
enum kb_err pg__spend_settle(struct kb_store *s, int64_t seq, int64_t day, int64_t reserved,
                             int64_t actual, int64_t cap, int64_t *remaining);
enum kb_err pg__rate_take(struct kb_store *s, int64_t seq, int64_t requests, int64_t period_ms,
                          int64_t now_ms, int64_t *retry_after_ms);
enum kb_err pg__admin_token_count(struct kb_store *s, int64_t *count);
enum kb_err pg__admin_token_add(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                const char *label, int64_t now);
enum kb_err pg__admin_token_check(struct kb_store *s, const uint8_t hash[KB_HASH_LEN]);
enum kb_err pg__object_charged(struct kb_store *s, int64_t key_seq, const char *object_id,
                               int64_t not_before, int64_t *micros);
enum kb_err pg__object_charge_set(struct kb_store *s, int64_t key_seq, const char *object_id,
                                  int64_t micros, int64_t now, int64_t not_before);

/* pg_budgets.c */
enum kb_err pg__budget_insert(struct kb_store *s, struct kb_budget *b, char **errmsg);
enum kb_err pg__budget_get(struct kb_store *s, const char *name, int64_t now,
                           struct kb_budget **out);
enum kb_err pg__budget_list(struct kb_store *s, int64_t after_seq, int limit, int64_t now,
                            struct kb_budget **out, size_t *n);
enum kb_err pg__budget_update(struct kb_store *s, const char *name,
                              const struct kb_budget_change *c, int64_t now, char **errmsg);
enum kb_err pg__budget_delete(struct kb_store *s, const char *name, char **errmsg);
enum kb_err pg__key_budget_add(struct kb_store *s, int64_t key_seq, const char *name);
enum kb_err pg__key_budgets(struct kb_store *s, int64_t key_seq, char ***names, size_t *n);
enum kb_err pg__budget_reserve(struct kb_store *s, int64_t key_seq, int64_t now, int64_t amount,
                               struct kb_budget_hold **holds, size_t *n, char **exhausted);
enum kb_err pg__budget_settle(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                              int64_t reserved, int64_t actual);
enum kb_err pg__usage(struct kb_store *s, const struct kb_usage_query *q, struct kb_usage_row **out,
                      size_t *n);
/* pg_alerts.c: records the alerts a settlement of budget seq in `period`
 * crossed (store__alerts_crossed), in its transaction: one statement. */
enum kb_err pg__alerts_record_crossed(struct kb_store *s, int64_t seq, int64_t period,
                                      int64_t spent, int64_t cap, const int *crossed, int n);
enum kb_err pg__budget_alerts_set(struct kb_store *s, const char *name, const int *pct, int n);
enum kb_err pg__alert_claim(struct kb_store *s, int64_t now_ms, int64_t lease_ms,
                            struct kb_alert **out);
enum kb_err pg__alert_record(struct kb_store *s, int64_t id, int http_status, const char *log_line,
                             enum kb_alert_status status, int64_t next_at, int64_t done_ms);
enum kb_err pg__alert_list(struct kb_store *s, int64_t before_id, int limit, const char *budget,
                           struct kb_alert **out, size_t *n);
enum kb_err pg__budget_release(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                               int64_t amount);
void pg__budget_free(struct kb_store *s);
/* Whether key seq is known (on this connection) to name no budget. */
bool pg__nobudget_has(struct kb_store *s, int64_t seq);

/* pg_admit.c: runs of admissions and settlements, a statement each */
enum kb_err pg__admit(struct kb_store *s, struct kb_admit *v, size_t n);
enum kb_err pg__settle(struct kb_store *s, const struct kb_settle *v, size_t n);

/* pg_cluster.c: nodes, their reservations, the change log */
enum kb_err pg__spend_settle_orphans(struct kb_store *s, int64_t *count);
enum kb_err pg__node_join(struct kb_store *s, const uint8_t key_check[KB_HASH_LEN],
                          int64_t *settled, char **errmsg);
enum kb_err pg__node_heartbeat(struct kb_store *s);
enum kb_err pg__node_reap(struct kb_store *s, int64_t dead_after_ms, int64_t *nodes,
                          int64_t *counters);
enum kb_err pg__key_changes(struct kb_store *s, int64_t after_id, int64_t *last_id,
                            struct kb_key_change_note **out, size_t *n);
enum kb_err pg__wait_change(struct kb_store *s, int timeout_ms, bool *notified);

/* pg_audit.c */
enum kb_err pg__audit_last(struct kb_store *s, int64_t *seq, uint8_t hash[KB_HASH_LEN]);
enum kb_err pg__audit_last_ckpt(struct kb_store *s, int64_t *seq, int64_t *every);
enum kb_err pg__audit_exists(struct kb_store *s, int64_t seq);
enum kb_err pg__audit_completed(struct kb_store *s, int64_t seq);
enum kb_err pg__audit_insert(struct kb_store *s, int64_t seq, int64_t ref_seq,
                             const struct kb_audit_rec *rec, const uint8_t hash[KB_HASH_LEN]);
enum kb_err pg__audit_ckpt_insert(struct kb_store *s, const struct kb_audit_ckpt *ck);
enum kb_err pg__audit_cut_find(struct kb_store *s, int64_t before_ms, int64_t max_seq,
                               int64_t *seq);
enum kb_err pg__audit_prune(struct kb_store *s, int64_t cut, int64_t *removed);
void pg__audit_forget(struct kb_store *s);
void pg__audit_head_sync(struct kb_store *s);
void pg__audit_head_drop(struct kb_store *s);
enum kb_err pg__audit_read_begin(struct kb_store *s);
void pg__audit_read_end(struct kb_store *s);
enum kb_err pg__audit_rows(struct kb_store *s, int64_t after_seq, int64_t since_ms,
                           int64_t until_ms, struct kb_audit_iter **out);
enum kb_err pg__audit_ckpts(struct kb_store *s, struct kb_audit_iter **out);
enum kb_err pg__audit_row_next(struct kb_audit_iter *it, struct kb_audit_row *row);
enum kb_err pg__audit_ckpt_next(struct kb_audit_iter *it, struct kb_audit_ckpt *ck);
void pg__audit_iter_free(struct kb_audit_iter *it);
enum kb_err pg__audit_query(struct kb_store *s, const struct kb_audit_filter *f,
                            kb_audit_entry_cb cb, void *arg);
enum kb_err pg__audit_chains(struct kb_store *s, char ***names, size_t *n);
enum kb_err pg__audit_chain_use(struct kb_store *s, const char *name);
void pg__audit_free(struct kb_store *s);

/* Tenants, scoped admin tokens and tenant secrets (pg_tenants.c). */
enum kb_err pg__tenant_insert(struct kb_store *s, struct kb_tenant *t);
enum kb_err pg__tenant_get(struct kb_store *s, const char *id, struct kb_tenant **out);
enum kb_err pg__tenant_list(struct kb_store *s, int64_t after_seq, int limit,
                            struct kb_tenant **out, size_t *n);
enum kb_err pg__tenant_delete(struct kb_store *s, const char *id, int64_t now);
enum kb_err pg__admin_token_insert(struct kb_store *s, const struct kb_admin_token *tok,
                                   const uint8_t hash[KB_HASH_LEN]);
enum kb_err pg__admin_token_lookup(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                   struct kb_admin_token **out);
enum kb_err pg__admin_token_list(struct kb_store *s, bool all, const char *tenant,
                                 struct kb_admin_token **out, size_t *n);
enum kb_err pg__admin_token_revoke(struct kb_store *s, const char *id, bool all, const char *tenant,
                                   int64_t now);
enum kb_err pg__secret_put(struct kb_store *s, const struct kb_tenant_secret *sec);
enum kb_err pg__secret_get(struct kb_store *s, const char *tenant, const char *vendor,
                           struct kb_tenant_secret **out);
enum kb_err pg__secret_delete(struct kb_store *s, const char *tenant, const char *vendor);
enum kb_err pg__secret_list(struct kb_store *s, const char *tenant, struct kb_tenant_secret **out,
                            size_t *n);

#endif
