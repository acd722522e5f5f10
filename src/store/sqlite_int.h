/* sqlite_int.h - shared by the SQLite files of src/store/ only. */
#ifndef KB_STORE_SQLITE_INT_H
#define KB_STORE_SQLITE_INT_H
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/crypto.h"
#include "store/audit_store.h"
#include "store/store.h"

struct kb_store;

/* The connection behind a store handle (borrowed). */
sqlite3 *store__db(struct kb_store *s);

/* The audit append path's per-connection state (sqlite_audit.c). */
enum {
    AS_LAST = 0,
    AS_LAST_CKPT,
    AS_EXISTS,
    AS_COMPLETED,
    AS_INSERT,
    AS_CKPT_INSERT,
    AS_DATA_VERSION,
    AS__COUNT
};
struct store_audit_state {
    sqlite3_stmt *st[AS__COUNT]; /* prepared on first use; store_close finalises them */
    bool cache;                  /* keep the chain head (store_audit_head_sync was called) */
    bool known;                  /* last_seq/last_hash are the chain head */
    bool ck_known;               /* ck_seq/ck_every are the last checkpoint */
    int64_t last_seq;
    uint8_t last_hash[KB_HASH_LEN];
    int64_t ck_seq, ck_every;
    int64_t data_version; /* PRAGMA data_version when the head was confirmed */
};
struct store_audit_state *store__audit(struct kb_store *s);

/* The budget statements' cache of a connection (sqlite_budgets.c): an
 * array of KB_SQ_BUDGET_STMTS, prepared on first use, finalised by close. */
#define KB_SQ_BUDGET_STMTS 24
sqlite3_stmt **store__budget_stmts(struct kb_store *s);

/* The budget half of the SQLite backend's table (sqlite_budgets.c); see
 * store.h for what each does. */
enum kb_err sqlite__budget_insert(struct kb_store *s, struct kb_budget *b, char **errmsg);
enum kb_err sqlite__budget_get(struct kb_store *s, const char *name, int64_t now,
                               struct kb_budget **out);
enum kb_err sqlite__budget_list(struct kb_store *s, int64_t after_seq, int limit, int64_t now,
                                struct kb_budget **out, size_t *n);
enum kb_err sqlite__budget_update(struct kb_store *s, const char *name,
                                  const struct kb_budget_change *c, int64_t now, char **errmsg);
enum kb_err sqlite__budget_delete(struct kb_store *s, const char *name, char **errmsg);
enum kb_err sqlite__key_budget_add(struct kb_store *s, int64_t key_seq, const char *name);
enum kb_err sqlite__key_budgets(struct kb_store *s, int64_t key_seq, char ***names, size_t *n);
enum kb_err sqlite__budget_reserve(struct kb_store *s, int64_t key_seq, int64_t now, int64_t amount,
                                   struct kb_budget_hold **holds, size_t *n, char **exhausted);
enum kb_err sqlite__budget_settle(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                                  int64_t reserved, int64_t actual);
enum kb_err sqlite__budget_release(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                                   int64_t amount);
/* At start: every budget reservation still open settled at its worst case
 * (store_spend_settle_orphans); *count += rows touched. Inside the caller's
 * transaction. */
enum kb_err sqlite__usage(struct kb_store *s, const struct kb_usage_query *q,
                          struct kb_usage_row **out, size_t *n);
/* sqlite_alerts.c: records the alerts a settlement of budget seq in
 * `period` crossed (store__alerts_crossed), in its transaction. */
enum kb_err sqlite__alerts_record_crossed(struct kb_store *s, int64_t seq, int64_t period,
                                          int64_t spent, int64_t cap, const int *crossed, int n);
enum kb_err sqlite__budget_alerts_set(struct kb_store *s, const char *name, const int *pct, int n);
enum kb_err sqlite__alert_claim(struct kb_store *s, int64_t now_ms, int64_t lease_ms,
                                struct kb_alert **out);
enum kb_err sqlite__alert_record(struct kb_store *s, int64_t id, int http_status,
                                 const char *log_line, enum kb_alert_status status, int64_t next_at,
                                 int64_t done_ms);
enum kb_err sqlite__alert_list(struct kb_store *s, int64_t before_id, int limit, const char *budget,
                               struct kb_alert **out, size_t *n);
enum kb_err sqlite__budget_settle_orphans(struct kb_store *s, int64_t *count);

/* The WAL upkeep beside the writer's connection (sqlite_wal.c). */
void *sqlite__wal_attach(struct kb_store *s, const char *synchronous);
void sqlite__wal_idle(struct kb_store *s, void *state);
void sqlite__wal_detach(struct kb_store *s, void *state);
size_t sqlite__wal_resident(void *state);

/* The audit half of the SQLite backend's table (sqlite_audit.c); see
 * audit_store.h for what each does. */
enum kb_err sqlite__audit_last(struct kb_store *s, int64_t *seq, uint8_t hash[KB_HASH_LEN]);
enum kb_err sqlite__audit_last_ckpt(struct kb_store *s, int64_t *seq, int64_t *every);
enum kb_err sqlite__audit_exists(struct kb_store *s, int64_t seq);
enum kb_err sqlite__audit_completed(struct kb_store *s, int64_t seq);
enum kb_err sqlite__audit_insert(struct kb_store *s, int64_t seq, int64_t ref_seq,
                                 const struct kb_audit_rec *rec, const uint8_t hash[KB_HASH_LEN]);
enum kb_err sqlite__audit_ckpt_insert(struct kb_store *s, const struct kb_audit_ckpt *ck);
enum kb_err sqlite__audit_cut_find(struct kb_store *s, int64_t before_ms, int64_t max_seq,
                                   int64_t *seq);
enum kb_err sqlite__audit_prune(struct kb_store *s, int64_t cut, int64_t *removed);
void sqlite__audit_forget(struct kb_store *s);
void sqlite__audit_head_sync(struct kb_store *s);
void sqlite__audit_head_drop(struct kb_store *s);
enum kb_err sqlite__audit_read_begin(struct kb_store *s);
void sqlite__audit_read_end(struct kb_store *s);
enum kb_err sqlite__audit_rows(struct kb_store *s, int64_t after_seq, int64_t since_ms,
                               int64_t until_ms, struct kb_audit_iter **out);
enum kb_err sqlite__audit_ckpts(struct kb_store *s, struct kb_audit_iter **out);
enum kb_err sqlite__audit_row_next(struct kb_audit_iter *it, struct kb_audit_row *row);
enum kb_err sqlite__audit_ckpt_next(struct kb_audit_iter *it, struct kb_audit_ckpt *ck);
void sqlite__audit_iter_free(struct kb_audit_iter *it);
enum kb_err sqlite__audit_query(struct kb_store *s, const struct kb_audit_filter *f,
                                kb_audit_entry_cb cb, void *arg);

/* ---- sqlite.c's statements, shared by the backend's files ---- */

enum stmt_id {
    S_KEY_INSERT = 0,    /* insert a key */
    S_KEY_BY_ID = 1,     /* key + usage by public id */
    S_KEY_BY_HASH = 2,   /* key + usage by token hash */
    S_KEY_REVOKE = 3,    /* revoke one */
    S_KEY_EXISTS = 4,    /* does id exist */
    S_REVOKE_PREFIX = 5, /* revoke by label prefix */
    S_SPEND_RESERVE = 6, /* create the day's row or charge it, if it fits */
    S_SPEND_SETTLE = 7,  /* settle */
    S_SPEND_GET = 8,     /* remaining after a change */
    S_ADMIN_COUNT = 9,   /* count admin tokens */
    S_ADMIN_ADD = 10,    /* add admin token */
    S_ADMIN_CHECK = 11,  /* look up admin token */
    S_PING = 12,         /* trivial query */
    S_KEY_REVOKED = 13,  /* revocation state by seq */
    S_RATE_ENSURE = 14,  /* create a full bucket */
    S_RATE_TAKE = 15,    /* refill and take one request */
    S_RATE_GET = 16,     /* units left after refill */
    S_KEY_ACTIVE = 17,   /* count of active keys */
    S_OBJ_GET = 18,      /* ledger: what a key was charged for an object */
    S_OBJ_SET = 19,      /* ledger: raise that figure */
    S_KEY_UPDATE = 20,   /* change an active key's cap and/or expiry */
    S_KEY_STATE = 21,    /* revocation, cap and expiry by seq (admission) */
    S__COUNT = 22,       /* number of statements */
};

#define KEY_COLS                                                                                   \
    "k.seq, k.id, k.label, k.vendor, k.allowed_endpoints, k.metadata, k.daily_cap_micros, "        \
    "k.created_at, k.expires_at, k.revoked_at, k.rate_requests, k.rate_period_ms, "                \
    "coalesce(s.spent_micros, 0), coalesce(s.reserved_micros, 0), coalesce(s.requests, 0), "       \
    "k.allowed_accounts, k.allowed_models, k.max_amount_micros, k.tenant_id "

/* Statement `id` of the connection, prepared on first use and reset by
 * sqlite__done after each use; NULL when it cannot be prepared. */
sqlite3_stmt *sqlite__stmt(struct kb_store *s, enum stmt_id id);
void sqlite__done(sqlite3_stmt *st);

/* The key half of the backend's table (sqlite_keys.c); see store.h. */
enum kb_err sqlite__key_insert(struct kb_store *s, struct kb_key *k,
                               const uint8_t hash[KB_HASH_LEN]);
enum kb_err sqlite__key_get(struct kb_store *s, const char *id, int64_t day, struct kb_key **out);
enum kb_err sqlite__key_by_hash(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], int64_t day,
                                struct kb_key **out);
enum kb_err sqlite__key_revoked(struct kb_store *s, int64_t seq, bool *revoked);
enum kb_err sqlite__key_state(struct kb_store *s, int64_t seq, struct kb_key_state *out);
enum kb_err sqlite__key_update(struct kb_store *s, const char *id, const struct kb_key_change *c,
                               int64_t now, struct kb_revoked_key *out);
enum kb_err sqlite__key_list(struct kb_store *s, const struct kb_key_filter *f, struct kb_key **out,
                             size_t *n);
enum kb_err sqlite__key_count_active(struct kb_store *s, int64_t now, int64_t *count);
enum kb_err sqlite__key_revoke(struct kb_store *s, const char *id, int64_t now,
                               struct kb_revoked_key *out);
enum kb_err sqlite__key_revoke_prefix(struct kb_store *s, const char *tenant, const char *prefix,
                                      int64_t now, int64_t *count, struct kb_revoked_key **keys);

/* Tenants, scoped admin tokens and tenant secrets (sqlite_tenants.c). */
enum kb_err sqlite__tenant_insert(struct kb_store *s, struct kb_tenant *t);
enum kb_err sqlite__tenant_get(struct kb_store *s, const char *id, struct kb_tenant **out);
enum kb_err sqlite__tenant_list(struct kb_store *s, int64_t after_seq, int limit,
                                struct kb_tenant **out, size_t *n);
enum kb_err sqlite__tenant_delete(struct kb_store *s, const char *id, int64_t now);
enum kb_err sqlite__admin_token_insert(struct kb_store *s, const struct kb_admin_token *tok,
                                       const uint8_t hash[KB_HASH_LEN]);
enum kb_err sqlite__admin_token_lookup(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                       struct kb_admin_token **out);
enum kb_err sqlite__admin_token_list(struct kb_store *s, bool all, const char *tenant,
                                     struct kb_admin_token **out, size_t *n);
enum kb_err sqlite__admin_token_revoke(struct kb_store *s, const char *id, bool all,
                                       const char *tenant, int64_t now);
enum kb_err sqlite__secret_put(struct kb_store *s, const struct kb_tenant_secret *sec);
enum kb_err sqlite__secret_get(struct kb_store *s, const char *tenant, const char *vendor,
                               struct kb_tenant_secret **out);
enum kb_err sqlite__secret_delete(struct kb_store *s, const char *tenant, const char *vendor);
enum kb_err sqlite__secret_list(struct kb_store *s, const char *tenant,
                                struct kb_tenant_secret **out, size_t *n);

#endif
