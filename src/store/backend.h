/*
 * backend.h - what a store backend implements (src/store/ only). The
 * public functions of store.h and audit_store.h are one-line calls through
 * this table (store.c); a backend fills one table and is chosen at run
 * time by the store URL (store_open). Every backend must pass the
 * conformance suite (tests/unit/test_store*.c).
 */
#ifndef KB_STORE_BACKEND_H
#define KB_STORE_BACKEND_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/audit_store.h"
#include "store/store.h"

/* The first member of every backend's connection. */
struct kb_store {
    const struct kb_store_backend *be;
};

/* The first member of every backend's audit iterator. */
struct kb_audit_iter {
    const struct kb_store_backend *be;
};

struct kb_store_backend {
    const char *name; /* "sqlite" */
    unsigned caps;    /* enum kb_store_caps */
    /* `where`: what follows the URL's scheme (sqlite: a file path) */
    enum kb_err (*open)(const char *where, const char *synchronous, bool check,
                        struct kb_store **out, char **errmsg);
    void (*close)(struct kb_store *s);
    /* explicit write transactions, and savepoints inside them */
    enum kb_err (*begin)(struct kb_store *s);
    enum kb_err (*commit)(struct kb_store *s);
    /* store_commit_later / _flush; NULL: commit at once */
    bool (*commit_later)(struct kb_store *s, void (*done)(void *, enum kb_err), void *arg,
                         enum kb_err *err);
    void (*commit_flush)(struct kb_store *s);
    void (*rollback)(struct kb_store *s);
    enum kb_err (*savepoint)(struct kb_store *s);
    enum kb_err (*release)(struct kb_store *s);
    enum kb_err (*rollback_to)(struct kb_store *s);
    bool (*in_transaction)(struct kb_store *s); /* false once the backend rolled back alone */
    const char *(*last_error)(struct kb_store *s);
    enum kb_err (*probe_write)(struct kb_store *s);
    /* what the backend runs beside the writer's connection (SQLite: the
     * WAL checkpointer); idle between two batches, on the writer thread */
    void *(*writer_attach)(struct kb_store *s, const char *synchronous);
    void (*writer_idle)(struct kb_store *s, void *state);
    void (*writer_detach)(struct kb_store *s, void *state);
    size_t (*writer_resident)(void *state);
    enum kb_err (*ping)(struct kb_store *s);
    enum kb_err (*key_insert)(struct kb_store *s, struct kb_key *k,
                              const uint8_t hash[KB_HASH_LEN]);
    enum kb_err (*key_get)(struct kb_store *s, const char *id, int64_t day, struct kb_key **out);
    enum kb_err (*key_by_hash)(struct kb_store *s, const uint8_t hash[KB_HASH_LEN], int64_t day,
                               struct kb_key **out);
    enum kb_err (*key_revoked)(struct kb_store *s, int64_t seq, bool *revoked);
    enum kb_err (*key_state)(struct kb_store *s, int64_t seq, struct kb_key_state *out);
    enum kb_err (*key_update)(struct kb_store *s, const char *id, const struct kb_key_change *c,
                              int64_t now, struct kb_revoked_key *out);
    enum kb_err (*key_list)(struct kb_store *s, const struct kb_key_filter *f, struct kb_key **out,
                            size_t *n);
    enum kb_err (*key_count_active)(struct kb_store *s, int64_t now, int64_t *count);
    enum kb_err (*key_revoke)(struct kb_store *s, const char *id, int64_t now,
                              struct kb_revoked_key *out);
    enum kb_err (*key_revoke_prefix)(struct kb_store *s, const char *tenant, const char *prefix,
                                     int64_t now, int64_t *count, struct kb_revoked_key **keys);
    enum kb_err (*spend_reserve)(struct kb_store *s, int64_t seq, int64_t day, int64_t amount,
                                 int64_t cap, int64_t *remaining);
    enum kb_err (*spend_settle)(struct kb_store *s, int64_t seq, int64_t day, int64_t reserved,
                                int64_t actual, int64_t cap, int64_t *remaining);
    enum kb_err (*rate_take)(struct kb_store *s, int64_t seq, int64_t requests, int64_t period_ms,
                             int64_t now_ms, int64_t *retry_after_ms);
    /* many admissions or settlements at once; NULL: store__admit_each,
     * store__settle_each */
    enum kb_err (*admit)(struct kb_store *s, struct kb_admit *v, size_t n);
    enum kb_err (*settle)(struct kb_store *s, const struct kb_settle *v, size_t n);
    enum kb_err (*spend_settle_orphans)(struct kb_store *s, int64_t *count);
    enum kb_err (*txn_run)(struct kb_store *s, kb_txn_fn fn, void *arg);
    enum kb_err (*admin_token_count)(struct kb_store *s, int64_t *count);
    enum kb_err (*admin_token_add)(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                   const char *label, int64_t now);
    enum kb_err (*admin_token_check)(struct kb_store *s, const uint8_t hash[KB_HASH_LEN]);
    enum kb_err (*object_charged)(struct kb_store *s, int64_t key_seq, const char *object_id,
                                  int64_t not_before, int64_t *micros);
    enum kb_err (*object_charge_set)(struct kb_store *s, int64_t key_seq, const char *object_id,
                                     int64_t micros, int64_t now, int64_t not_before);
    enum kb_err (*budget_insert)(struct kb_store *s, struct kb_budget *b, char **errmsg);
    enum kb_err (*budget_get)(struct kb_store *s, const char *name, int64_t now,
                              struct kb_budget **out);
    enum kb_err (*budget_list)(struct kb_store *s, int64_t after_seq, int limit, int64_t now,
                               struct kb_budget **out, size_t *n);
    enum kb_err (*budget_update)(struct kb_store *s, const char *name,
                                 const struct kb_budget_change *c, int64_t now, char **errmsg);
    enum kb_err (*budget_delete)(struct kb_store *s, const char *name, char **errmsg);
    enum kb_err (*key_budget_add)(struct kb_store *s, int64_t key_seq, const char *name);
    enum kb_err (*key_budgets)(struct kb_store *s, int64_t key_seq, char ***names, size_t *n);
    enum kb_err (*budget_reserve)(struct kb_store *s, int64_t key_seq, int64_t now, int64_t amount,
                                  struct kb_budget_hold **holds, size_t *n, char **exhausted);
    enum kb_err (*budget_settle)(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                                 int64_t reserved, int64_t actual);
    enum kb_err (*budget_release)(struct kb_store *s, const struct kb_budget_hold *holds, size_t n,
                                  int64_t amount);
    enum kb_err (*usage)(struct kb_store *s, const struct kb_usage_query *q,
                         struct kb_usage_row **out, size_t *n);
    enum kb_err (*budget_alerts_set)(struct kb_store *s, const char *name, const int *pct, int n);
    enum kb_err (*alert_claim)(struct kb_store *s, int64_t now_ms, int64_t lease_ms,
                               struct kb_alert **out);
    enum kb_err (*alert_record)(struct kb_store *s, int64_t id, int http_status,
                                const char *log_line, enum kb_alert_status status, int64_t next_at,
                                int64_t done_ms);
    enum kb_err (*alert_list)(struct kb_store *s, int64_t before_id, int limit, const char *budget,
                              struct kb_alert **out, size_t *n);
    enum kb_err (*audit_last)(struct kb_store *s, int64_t *seq, uint8_t hash[KB_HASH_LEN]);
    enum kb_err (*audit_last_ckpt)(struct kb_store *s, int64_t *seq, int64_t *every);
    enum kb_err (*audit_exists)(struct kb_store *s, int64_t seq);
    enum kb_err (*audit_completed)(struct kb_store *s, int64_t seq);
    enum kb_err (*audit_insert)(struct kb_store *s, int64_t seq, int64_t ref_seq,
                                const struct kb_audit_rec *rec, const uint8_t hash[KB_HASH_LEN]);
    enum kb_err (*audit_ckpt_insert)(struct kb_store *s, const struct kb_audit_ckpt *ck);
    enum kb_err (*audit_cut_find)(struct kb_store *s, int64_t before_ms, int64_t max_seq,
                                  int64_t *seq);
    enum kb_err (*audit_prune)(struct kb_store *s, int64_t cut, int64_t *removed);
    void (*audit_forget)(struct kb_store *s);
    void (*audit_head_sync)(struct kb_store *s);
    void (*audit_head_drop)(struct kb_store *s);
    enum kb_err (*audit_read_begin)(struct kb_store *s);
    void (*audit_read_end)(struct kb_store *s);
    enum kb_err (*audit_rows)(struct kb_store *s, int64_t after_seq, int64_t since_ms,
                              int64_t until_ms, struct kb_audit_iter **out);
    enum kb_err (*audit_ckpts)(struct kb_store *s, struct kb_audit_iter **out);
    enum kb_err (*audit_row_next)(struct kb_audit_iter *it, struct kb_audit_row *row);
    enum kb_err (*audit_ckpt_next)(struct kb_audit_iter *it, struct kb_audit_ckpt *ck);
    void (*audit_iter_free)(struct kb_audit_iter *it);
    enum kb_err (*audit_query)(struct kb_store *s, const struct kb_audit_filter *f,
                               kb_audit_entry_cb cb, void *arg);
    /* the audit chains of a shared store: one per node (NULL: one chain) */
    enum kb_err (*audit_chains)(struct kb_store *s, char ***names, size_t *n);
    enum kb_err (*audit_chain_use)(struct kb_store *s, const char *name);
    /* several nodes (KB_STORE_SHARED backends only; NULL otherwise) */
    enum kb_err (*node_join)(struct kb_store *s, const uint8_t key_check[KB_HASH_LEN],
                             int64_t *settled, char **errmsg);
    enum kb_err (*node_heartbeat)(struct kb_store *s);
    enum kb_err (*node_reap)(struct kb_store *s, int64_t dead_after_ms, int64_t *nodes,
                             int64_t *counters);
    enum kb_err (*key_changes)(struct kb_store *s, int64_t after_id, int64_t *last_id,
                               struct kb_key_change_note **out, size_t *n);
    enum kb_err (*wait_change)(struct kb_store *s, int timeout_ms, bool *notified);
    /* tenants (sqlite_tenants.c, pg_tenants.c) */
    enum kb_err (*tenant_insert)(struct kb_store *s, struct kb_tenant *t);
    enum kb_err (*tenant_get)(struct kb_store *s, const char *id, struct kb_tenant **out);
    enum kb_err (*tenant_list)(struct kb_store *s, int64_t after_seq, int limit,
                               struct kb_tenant **out, size_t *n);
    enum kb_err (*tenant_delete)(struct kb_store *s, const char *id, int64_t now);
    enum kb_err (*admin_token_insert)(struct kb_store *s, const struct kb_admin_token *tok,
                                      const uint8_t hash[KB_HASH_LEN]);
    enum kb_err (*admin_token_lookup)(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                      struct kb_admin_token **out);
    enum kb_err (*admin_token_list)(struct kb_store *s, bool all, const char *tenant,
                                    struct kb_admin_token **out, size_t *n);
    enum kb_err (*admin_token_revoke)(struct kb_store *s, const char *id, bool all,
                                      const char *tenant, int64_t now);
    enum kb_err (*secret_put)(struct kb_store *s, const struct kb_tenant_secret *sec);
    enum kb_err (*secret_get)(struct kb_store *s, const char *tenant, const char *vendor,
                              struct kb_tenant_secret **out);
    enum kb_err (*secret_delete)(struct kb_store *s, const char *tenant, const char *vendor);
    enum kb_err (*secret_list)(struct kb_store *s, const char *tenant,
                               struct kb_tenant_secret **out, size_t *n);
};

extern const struct kb_store_backend kb_store_sqlite;
extern const struct kb_store_backend kb_store_pg;

/* Alert thresholds as stored ("50,80,100"; NULL or "" : none) into v
 * (at most KB_ALERT_THRESHOLDS_MAX); the count. Pure (store.c). */
int store__thresholds_parse(const char *text, int *v);
/* The thresholds in text, of v[0..n) ascending ("" for none): buf. */
const char *store__thresholds_format(const int *v, int n, char *buf, size_t size);
/*
 * After a settlement left `spent` in a period of a budget of cap `cap`
 * whose stored thresholds are `text` and whose alert level in that period
 * is `level`: the thresholds now reached above the level into crossed
 * (ascending); their count (0: nothing to record, the common case).
 */
int store__alerts_crossed(int64_t spent, int64_t cap, const char *text, int level, int *crossed);

/* store_admit and store_settle one element at a time, with the table's
 * single operations (store_admit.c): every backend's way, and
 * PostgreSQL's for the elements its batch statements do not take. */
enum kb_err store__admit_each(struct kb_store *s, struct kb_admit *v, size_t n);
enum kb_err store__settle_each(struct kb_store *s, const struct kb_settle *v, size_t n);

/* This process's node and start (store_set_node), for backends that tag
 * what a node owns. */
const char *store__node_id(void);
const char *store__boot_id(void);

#endif
