/*
 * store.h - the only interface to persistent state. SQL lives behind it, in
 * src/store/ only: each backend fills one table of operations (backend.h),
 * chosen at run time by the store URL. sqlite.c is the embedded default; a
 * PostgreSQL backend fills the same table for several nodes sharing one
 * store. Every backend passes the same conformance suite
 * (tests/unit/test_store*.c).
 *
 * Every operation is atomic on its own: callers never read, modify and
 * write back. Spend in particular is reserved with one conditional update
 * (spent + reserved + amount <= cap) and settled with another, so no
 * interleaving of threads, processes or nodes can overshoot a cap.
 *
 * A struct kb_store is one connection: open one per thread (each worker, the
 * admin thread) and use it from that thread only.
 */
#ifndef KB_STORE_STORE_H
#define KB_STORE_STORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"

struct kb_store;

struct kb_key {
    int64_t seq;             /* internal row number; creation order */
    char id[32];             /* "vk_..." */
    char *label;             /* owned */
    char *vendor;            /* owned */
    char *allowed_endpoints; /* owned; JSON array text */
    char *metadata;          /* owned; JSON object text */
    char *allowed_accounts;  /* owned; JSON array of account ids, NULL: the configured one only */
    char *allowed_models;    /* owned; JSON array of exact model ids, NULL: any model */
    int64_t max_amount;      /* micro-dollars one payment request may move; 0: no ceiling */
    char *tenant;            /* owned; the owning tenant's id, NULL: root's own */
    /* not the store's: what the proxy's key reader adds to a key it read
     * (proxy/lookup.c: the tenant's own vendor credential); freed with
     * the key through ext_free */
    void *ext;
    void (*ext_free)(void *ext);
    int64_t daily_cap;      /* micro-dollars */
    int64_t created_at;     /* epoch seconds */
    int64_t expires_at;     /* epoch seconds; expired when now >= expires_at */
    int64_t revoked_at;     /* epoch seconds; 0 when not revoked */
    int64_t rate_requests;  /* requests per rate_period_ms; 0: no rate limit */
    int64_t rate_period_ms; /* 1000 (per second) or 60000 (per minute) */
    /* usage on usage_day, filled by store_key_get and store_key_by_hash */
    int64_t usage_day; /* UTC day number */
    int64_t spent;     /* settled micro-dollars */
    int64_t reserved;  /* in-flight reservations, micro-dollars */
    int64_t requests;  /* requests reserved on that day */
};

enum kb_key_status {
    KB_KEY_ANY = 0,     /* no status filter */
    KB_KEY_ACTIVE = 1,  /* neither revoked nor expired */
    KB_KEY_REVOKED = 2, /* revoked (whether or not also expired) */
    KB_KEY_EXPIRED = 3, /* expired and not revoked */
};

struct kb_key_filter {
    const char *label_prefix; /* NULL: any */
    const char *vendor;       /* NULL: any */
    const char *tenant;       /* NULL: any tenant and root */
    enum kb_key_status status;
    int64_t now;        /* for the status filter */
    int64_t before_seq; /* 0: from the newest; else only seq < before_seq */
    int limit;          /* 1..1000 */
};

/* What a backend can do (store_caps). */
enum kb_store_caps {
    KB_STORE_SHARED = 1,      /* several processes or nodes use it at once: a start must
                                 settle only its own orphans, revocations come from others */
    KB_STORE_LOCAL_READS = 2, /* reads are local and cheap (an embedded file) */
    KB_STORE_NOTIFIES = 4,    /* pushes change notifications (revocations) */
};

/*
 * Opens (creating if needed) the store at `url`: "sqlite:PATH" or a plain
 * file path is the embedded SQLite file. Applies pending schema
 * migrations inside one transaction, and runs a quick integrity check when
 * `check` is true (do it once, at start). synchronous is "normal" or
 * "full". Errors: KB_E_CONFIG for a URL no backend of this build serves,
 * KB_E_STORE, both with *errmsg.
 */
KB_MUSTCHECK enum kb_err store_open(const char *url, const char *synchronous, bool check,
                                    struct kb_store **out, char **errmsg);
void store_close(struct kb_store *s);

/* The file of an embedded store's URL (a pointer into url), or NULL when
 * the URL names a server. */
const char *store_url_file(const char *url);

/* The backend's name ("sqlite") and capabilities (enum kb_store_caps). */
const char *store_backend(const struct kb_store *s);
unsigned store_caps(const struct kb_store *s);

/*
 * Explicit write transactions, for the store writer's group commit: begin
 * takes the write lock (SQLite: BEGIN IMMEDIATE); savepoint / release /
 * rollback_to nest one level inside, so that one job's failure undoes that
 * job alone. rollback after a failed commit is safe. KB_E_STORE when the
 * store refuses (disk full, I/O error, lock timeout).
 */
KB_MUSTCHECK enum kb_err store_begin(struct kb_store *s);
KB_MUSTCHECK enum kb_err store_commit(struct kb_store *s);
void store_rollback(struct kb_store *s);
/*
 * Commits as store_commit, except that a backend that pays a round trip
 * per exchange (PostgreSQL) may send the COMMIT and read its answer with
 * the next transaction's first round trip. false: it committed (or failed) now,
 * *err says which. true: done(arg, err) is called exactly once, on this
 * thread, when the outcome is known: from inside a later call on s (the
 * next transaction's begin, first statement or commit) or from
 * store_commit_flush. A transaction after a failed deferred commit fails.
 * A COMMIT whose answer was lost with its connection is not a failure
 * until the backend has read, on a new one, whether it happened: until
 * then (a bound of its own) no transaction begins, and done waits.
 */
bool store_commit_later(struct kb_store *s, void (*done)(void *arg, enum kb_err err), void *arg,
                        enum kb_err *err);
/* Sends a deferred commit now (if any) and calls its done, unless its
 * outcome cannot be known yet (its answer was lost): then it returns after
 * a short wait, to be called again. */
void store_commit_flush(struct kb_store *s);
KB_MUSTCHECK enum kb_err store_savepoint(struct kb_store *s);
KB_MUSTCHECK enum kb_err store_release(struct kb_store *s);
KB_MUSTCHECK enum kb_err store_rollback_to(struct kb_store *s);
/* False when the backend rolled the transaction back on its own (SQLite
 * does on a full disk or an I/O error): the work before is gone too. */
bool store_in_transaction(struct kb_store *s);
/* The backend's words for its last failure (static). */
const char *store_last_error(struct kb_store *s);
/* Writes the smallest thing that reaches the disk and changes nothing: a
 * readiness probe (KB_E_STORE when writes fail). */
KB_MUSTCHECK enum kb_err store_probe_write(struct kb_store *s);

/* The store writer's connection: what the backend runs beside it (SQLite:
 * the WAL checkpointer and the WAL's resident pages). attach once on the
 * writer's connection; idle on the writer thread between batches; detach
 * before closing it. resident: bytes it keeps in memory (any thread). */
void *store_writer_attach(struct kb_store *s, const char *synchronous);
void store_writer_idle(struct kb_store *s, void *state);
void store_writer_detach(struct kb_store *s, void *state);
size_t store_writer_resident(struct kb_store *s, void *state);

/* KB_OK when the store answers a trivial query. */
KB_MUSTCHECK enum kb_err store_ping(struct kb_store *s);

/* Inserts a new key; k->seq is set on success. The id and hash must be new
 * (KB_E_EXISTS otherwise); a field the schema refuses (negative cap, missing
 * label) is KB_E_INVALID. */
KB_MUSTCHECK enum kb_err store_key_insert(struct kb_store *s, struct kb_key *k,
                                          const uint8_t hash[KB_HASH_LEN]);

/* The key with public id `id`, with its usage on `day`; KB_E_NOT_FOUND.
 * *out is owned by the caller (store_key_free). */
KB_MUSTCHECK enum kb_err store_key_get(struct kb_store *s, const char *id, int64_t day,
                                       struct kb_key **out);

/* The key whose token hashes to `hash`, with its usage on `day`; KB_E_NOT_FOUND.
 * The hot path: one indexed lookup. */
KB_MUSTCHECK enum kb_err store_key_by_hash(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                           int64_t day, struct kb_key **out);

/* Sets *revoked to true when key `seq` is revoked. For watching keys of
 * requests in flight: one indexed read. */
KB_MUSTCHECK enum kb_err store_key_revoked(struct kb_store *s, int64_t seq, bool *revoked);

/* Keys matching f, newest first, at most f->limit (1..1000, else
 * KB_E_INVALID). *out is an array of
 * *n keys owned by the caller (store_key_list_free). */
KB_MUSTCHECK enum kb_err store_key_list(struct kb_store *s, const struct kb_key_filter *f,
                                        struct kb_key **out, size_t *n);

/* *count = keys neither revoked nor expired at `now`. */
KB_MUSTCHECK enum kb_err store_key_count_active(struct kb_store *s, int64_t now, int64_t *count);

/* A key a revocation changed: what the revocation log (revlog.h) needs. */
struct kb_revoked_key {
    int64_t seq; /* 0: none */
    uint8_t hash[KB_HASH_LEN];
    char tenant[32]; /* store_key_revoke_prefix*: the key's tenant ("": none) */
};

/* Revokes key `id` at `now` (keeps the first revocation time); *out (may
 * be NULL) is the key when this call revoked it, seq 0 when it was
 * revoked already. KB_E_NOT_FOUND for an unknown id; revoking a revoked
 * key is KB_OK. */
KB_MUSTCHECK enum kb_err store_key_revoke(struct kb_store *s, const char *id, int64_t now,
                                          struct kb_revoked_key *out);

/* Revokes every unrevoked key whose label starts with prefix; *count is how
 * many, and *keys (may be NULL; else an array of *count the caller frees)
 * which. An empty prefix is KB_E_INVALID (it would revoke every key). */
KB_MUSTCHECK enum kb_err store_key_revoke_prefix(struct kb_store *s, const char *prefix,
                                                 int64_t now, int64_t *count,
                                                 struct kb_revoked_key **keys);
/* The same, limited to the keys of tenant `tenant` (NULL: every key). */
KB_MUSTCHECK enum kb_err store_key_revoke_prefix_in(struct kb_store *s, const char *tenant,
                                                    const char *prefix, int64_t now, int64_t *count,
                                                    struct kb_revoked_key **keys);

/* What admission must read in its own transaction, not from a cached key:
 * a change (store_key_update) or a revocation may have committed since the
 * worker read the key. */
struct kb_key_state {
    bool revoked;
    int64_t daily_cap;  /* micro-dollars */
    int64_t expires_at; /* epoch seconds */
};

/* The current state of key `seq`: one indexed read. KB_E_NOT_FOUND. */
KB_MUSTCHECK enum kb_err store_key_state(struct kb_store *s, int64_t seq, struct kb_key_state *out);

/* What a change of a key sets (has_*: the field was given). */
struct kb_key_change {
    bool has_cap, has_expires;
    int64_t cap;        /* micro-dollars, >= 0 */
    int64_t expires_at; /* epoch seconds */
};

/*
 * Applies c to key `id` if it is active at `now` (not revoked, now <
 * expires_at), in one statement. A new cap counts from the next
 * reservation; what is spent or reserved stays. *out (may be NULL) is the
 * changed key, for the revocation log (a "forget this key" signal).
 * KB_E_NOT_FOUND for an unknown id; KB_E_KEY_NOT_ACTIVE when it is revoked
 * or expired (nothing changes); KB_E_INVALID when the schema refuses a
 * value (negative cap).
 */
KB_MUSTCHECK enum kb_err store_key_update(struct kb_store *s, const char *id,
                                          const struct kb_key_change *c, int64_t now,
                                          struct kb_revoked_key *out);

/*
 * Reserves `amount` (>= 0) micro-dollars on key `seq` for `day`, counting
 * one request, if spent + reserved + amount <= cap. KB_E_CAP_EXHAUSTED when
 * it does not fit (nothing changes). *remaining (may be NULL) is
 * cap - spent - reserved after the reservation.
 */
KB_MUSTCHECK enum kb_err store_spend_reserve(struct kb_store *s, int64_t seq, int64_t day,
                                             int64_t amount, int64_t cap, int64_t *remaining);

/*
 * Replaces a reservation of `reserved` made on `day` by the actual cost
 * `actual` (>= 0; 0 releases it). Always succeeds unless the store fails.
 * *remaining (may be NULL) as for reserve.
 */
KB_MUSTCHECK enum kb_err store_spend_settle(struct kb_store *s, int64_t seq, int64_t day,
                                            int64_t reserved, int64_t actual, int64_t cap,
                                            int64_t *remaining);

/*
 * Takes one request from key `seq`'s rate bucket (`requests` per
 * `period_ms`, full when first used) at `now_ms`. KB_E_RATE_LIMITED when the
 * bucket is empty (nothing changes); *retry_after_ms (may be NULL) is then
 * how long until one request fits.
 */
KB_MUSTCHECK enum kb_err store_rate_take(struct kb_store *s, int64_t seq, int64_t requests,
                                         int64_t period_ms, int64_t now_ms,
                                         int64_t *retry_after_ms);

/*
 * One proxy admission (store_admit): the key's committed state, its rate
 * limit, what the key already paid for the object the request acts on
 * (the ledger), its budgets and its cap, all or nothing.
 */
struct kb_admit {
    /* in */
    int64_t key_seq;
    int64_t day;    /* UTC day of the reservation */
    int64_t now;    /* epoch seconds: expiry */
    int64_t ts_ms;  /* the request's time: the rate bucket and the budgets' windows */
    int64_t amount; /* the reservation (>= 0), unless the ledger gives another */
    int64_t rate_requests, rate_period_ms; /* 0: no rate limit */
    const char *object;                    /* the ledger's object; NULL: none */
    int64_t object_not_before;             /* charges older than this do not count */
    /* the reservation, given what the key paid for `object` (-1: nothing) */
    int64_t (*ledger)(void *ctx, int64_t charged);
    void *ledger_ctx;
    /* out */
    enum kb_err outcome;          /* KB_OK, KB_E_KEY_REVOKED, _KEY_EXPIRED, _RATE_LIMITED,
                                     _BUDGET_EXHAUSTED or _CAP_EXHAUSTED */
    int64_t reserved;             /* what is reserved (KB_OK) or was asked */
    int64_t expires_at;           /* the key's expiry as committed */
    int64_t remaining;            /* cap - spent - reserved (KB_OK, CAP_EXHAUSTED) */
    int64_t retry_ms;             /* RATE_LIMITED: until one request fits */
    struct kb_budget_hold *holds; /* KB_OK: caller frees; the n budgets held */
    size_t nholds;
    char *exhausted; /* BUDGET_EXHAUSTED: caller frees; the budget that refused */
};

/*
 * Decides the n admissions of v in order, inside the open write
 * transaction, each as if alone: revoked, then expired, then rate limited,
 * then the ledger, the budgets and the cap, whose reservations are made
 * only when all fit. A refusal is an outcome, not an error: KB_OK unless
 * the store failed (KB_E_STORE; the transaction must then roll back).
 * Admissions of different keys share no row but their budgets', so a
 * backend may decide those of keys without budgets, rate limit or ledger
 * together (PostgreSQL: one statement for the run).
 */
KB_MUSTCHECK enum kb_err store_admit(struct kb_store *s, struct kb_admit *v, size_t n);

/* One settlement (store_settle): spend_settle and budget_settle of one
 * admission. */
struct kb_settle {
    int64_t key_seq, day, reserved, actual;
    const struct kb_budget_hold *holds;
    size_t nholds;
};

/* Settles the n of v in order, in the open transaction. KB_OK unless the
 * store failed. */
KB_MUSTCHECK enum kb_err store_settle(struct kb_store *s, const struct kb_settle *v, size_t n);

/*
 * At start, after a crash: every reservation still open belongs to a request
 * that died with the process, whose outcome at the vendor is unknown. Each
 * is settled at its worst case (as a cut stream is), so none is left to
 * block the cap and none of what the vendor may have billed is missed.
 * Budgets' reservations (store_budget_reserve) are settled the same way.
 * *count is the number of counters touched. On a store several nodes
 * share (KB_STORE_SHARED) only this node's earlier starts' reservations
 * are settled (store_node_join does it too): another node's are live.
 */
KB_MUSTCHECK enum kb_err store_spend_settle_orphans(struct kb_store *s, int64_t *count);

/*
 * Runs fn(s, arg) inside one write transaction on this connection: committed
 * when fn returns KB_OK, rolled back otherwise. Returns fn's result, or
 * KB_E_AUDIT_UNAVAILABLE when the transaction cannot begin or commit (disk
 * full, read-only, I/O error). For a write that must carry its audit record
 * outside the daemon's store writer (start-up, before the writer runs):
 * SQLite's write lock serialises it with any other writer, so the audit
 * chain stays one line. The daemon's admin API writes through the writer.
 */
typedef enum kb_err (*kb_txn_fn)(struct kb_store *s, void *arg);
KB_MUSTCHECK enum kb_err store_txn_run(struct kb_store *s, kb_txn_fn fn, void *arg);

/* Number of admin tokens. */
KB_MUSTCHECK enum kb_err store_admin_token_count(struct kb_store *s, int64_t *count);
/* Adds an admin token by hash (KB_OK if it is already there). */
KB_MUSTCHECK enum kb_err store_admin_token_add(struct kb_store *s, const uint8_t hash[KB_HASH_LEN],
                                               const char *label, int64_t now);
/* KB_OK when hash is a known admin token, KB_E_NOT_FOUND otherwise. */
KB_MUSTCHECK enum kb_err store_admin_token_check(struct kb_store *s,
                                                 const uint8_t hash[KB_HASH_LEN]);

/*
 * The per-key object ledger (meter.h, meter_ledger_*): *micros is what key
 * `key_seq` was already charged for `object_id` (a vendor object id or
 * "idem:<mac>"), or -1 when there is no entry last set at or after
 * `not_before` (epoch seconds; 0: any age). One indexed read. Call it in
 * the transaction that reserves (the writer's admit job), so that the
 * figure and the reservation belong together. KB_E_INVALID without an id.
 */
KB_MUSTCHECK enum kb_err store_object_charged(struct kb_store *s, int64_t key_seq,
                                              const char *object_id, int64_t not_before,
                                              int64_t *micros);

/*
 * Records that key `key_seq` has now been charged `micros` (>= 0, else
 * KB_E_INVALID) in all for `object_id`, at `now` (epoch seconds). The
 * figure is never lowered: the entry becomes the larger of the two, so two
 * requests racing on one object can only over-count. An entry last set
 * before `not_before` has expired and is replaced outright. One statement;
 * call it in the transaction that settles (the writer's settle job).
 */
KB_MUSTCHECK enum kb_err store_object_charge_set(struct kb_store *s, int64_t key_seq,
                                                 const char *object_id, int64_t micros, int64_t now,
                                                 int64_t not_before);

/* ---- budgets (sqlite_budgets.c; docs/budgets.md) ---- */

#define KB_BUDGET_NAME_MAX 256 /* bytes of a name (as a key label) */
#define KB_BUDGET_DEPTH_MAX 8  /* budgets on one chain, the first included */
#define KB_KEY_BUDGETS_MAX 8   /* budgets one key names */

enum kb_budget_window {
    KB_WIN_TOTAL = 0, /* one window for ever */
    KB_WIN_DAY = 1,   /* UTC day */
    KB_WIN_MONTH = 2, /* UTC calendar month */
};

struct kb_budget {
    int64_t seq;                  /* internal row number; never reused */
    char *name;                   /* owned */
    int64_t cap;                  /* micro-dollars per window */
    enum kb_budget_window window; /* what resets it */
    char *parent;                 /* owned; the parent's name, NULL: none */
    int64_t created_at;           /* epoch seconds */
    int64_t updated_at;           /* epoch seconds */
    /* usage in the window period that store_budget_get was asked about */
    int64_t period;   /* store_budget_period() of that time */
    int64_t spent;    /* settled micro-dollars */
    int64_t reserved; /* in-flight reservations, micro-dollars */
    int64_t requests; /* requests reserved in the period */
    int64_t keys;     /* keys naming the budget directly */

    /* alert thresholds: percents of the cap, ascending (KB_ALERT_THRESHOLDS_MAX) */
    int thresholds[10];
    int nthresholds; /* 0: no alerts */
};

/* What a request reserved on one budget: settled on exactly these, even if
 * the chain changes before the request ends. */
struct kb_budget_hold {
    int64_t seq;    /* the budget */
    int64_t period; /* its window period at admission */
};

/* What an update changes (has_*: the field was given). */
struct kb_budget_change {
    bool has_cap, has_window, has_parent;
    int64_t cap;
    enum kb_budget_window window;
    const char *parent; /* NULL: detach from its parent */
};

/* The period of window w that contains `now` (epoch seconds): 0 for
 * total, the UTC day number, or months since 1970-01. Pure. */
int64_t store_budget_period(enum kb_budget_window w, int64_t now);

/*
 * Creates budget b (name, cap, window, parent by name or NULL, created_at);
 * b->seq is set. KB_E_EXISTS when the name is taken, KB_E_NOT_FOUND when
 * the parent is unknown, KB_E_INVALID when the chain would be longer than
 * KB_BUDGET_DEPTH_MAX; *errmsg (may be NULL) says which.
 */
KB_MUSTCHECK enum kb_err store_budget_insert(struct kb_store *s, struct kb_budget *b,
                                             char **errmsg);

/* The budget named `name` with its usage in the window containing `now`;
 * KB_E_NOT_FOUND. *out is owned by the caller (store_budget_free). */
KB_MUSTCHECK enum kb_err store_budget_get(struct kb_store *s, const char *name, int64_t now,
                                          struct kb_budget **out);

/* Budgets with seq > after_seq in creation order, at most limit (1..1000,
 * else KB_E_INVALID), each with its usage at `now`. *out: *n budgets owned
 * by the caller (store_budget_list_free). */
KB_MUSTCHECK enum kb_err store_budget_list(struct kb_store *s, int64_t after_seq, int limit,
                                           int64_t now, struct kb_budget **out, size_t *n);

/*
 * Applies c to budget `name` at `now`. A new cap counts from the next
 * reservation. KB_E_NOT_FOUND for an unknown budget; KB_E_INVALID for an
 * unknown parent, or one that would make a cycle or a chain longer than
 * KB_BUDGET_DEPTH_MAX (*errmsg says which).
 */
KB_MUSTCHECK enum kb_err store_budget_update(struct kb_store *s, const char *name,
                                             const struct kb_budget_change *c, int64_t now,
                                             char **errmsg);

/*
 * Deletes budget `name` and its spend. KB_E_BUDGET_IN_USE (nothing
 * changes, *errmsg says by what) while an unrevoked key names it or
 * another budget has it as parent; KB_E_NOT_FOUND. Links from revoked keys
 * are dropped with it.
 */
KB_MUSTCHECK enum kb_err store_budget_delete(struct kb_store *s, const char *name, char **errmsg);

/* Makes key `key_seq` spend from budget `name` (KB_OK if it did already);
 * KB_E_NOT_FOUND for an unknown budget. Call it in the issuing transaction. */
KB_MUSTCHECK enum kb_err store_key_budget_add(struct kb_store *s, int64_t key_seq,
                                              const char *name);

/* The names of the budgets key `key_seq` names, in name order: *names is an
 * array of *n strings the caller frees (store_names_free). */
KB_MUSTCHECK enum kb_err store_key_budgets(struct kb_store *s, int64_t key_seq, char ***names,
                                           size_t *n);

/*
 * Reserves `amount` (>= 0) micro-dollars, counting one request, on every
 * budget on the chains of key `key_seq` (its budgets and their parents,
 * each once), each in its window period at `now`, if each fits: spent +
 * reserved + amount <= cap, with the cap read in the same statement.
 * All or nothing: when one does not fit, those already reserved are given
 * back in the same transaction and KB_E_BUDGET_EXHAUSTED is returned with
 * *exhausted (caller frees) the name of the one that refused. On KB_OK,
 * *holds (caller frees; NULL when the key has no budgets) lists the *n
 * reservations for store_budget_settle. Call it in the transaction that
 * reserves the key's own cap.
 */
KB_MUSTCHECK enum kb_err store_budget_reserve(struct kb_store *s, int64_t key_seq, int64_t now,
                                              int64_t amount, struct kb_budget_hold **holds,
                                              size_t *n, char **exhausted);

/* Replaces the reservation of `reserved` on each of the n holds by the
 * actual cost `actual` (0 releases it). A budget deleted since is skipped.
 * Always succeeds unless the store fails. */
KB_MUSTCHECK enum kb_err store_budget_settle(struct kb_store *s, const struct kb_budget_hold *holds,
                                             size_t n, int64_t reserved, int64_t actual);

/* Gives back, exactly, reservations of `amount` that store_budget_reserve
 * just made (the request counted too): for a request refused after them,
 * in the same transaction (the key's own cap). */
KB_MUSTCHECK enum kb_err store_budget_release(struct kb_store *s,
                                              const struct kb_budget_hold *holds, size_t n,
                                              int64_t amount);

void store_budget_free(struct kb_budget *b);
void store_budget_list_free(struct kb_budget *b, size_t n);
void store_names_free(char **names, size_t n);

/* ---- usage (sqlite_usage.c, pg_usage.c; docs/budgets.md "Usage and alerts") ---- */

#define KB_USAGE_DAYS_MAX 366 /* days one usage query may span */
#define KB_USAGE_LIMIT_MAX 1000

enum kb_usage_group {
    KB_USAGE_KEY = 0,          /* group: the key's public id */
    KB_USAGE_LABEL = 1,        /* group: the key's whole label */
    KB_USAGE_LABEL_PREFIX = 2, /* group: the prefix itself (every key whose label starts with it) */
    KB_USAGE_BUDGET = 3,       /* group: a budget's name (its keys' spend, through child budgets) */
    KB_USAGE_TENANT = 4,       /* group: the key's tenant id, "" for root's keys */
};

struct kb_usage_query {
    enum kb_usage_group group;
    int64_t from_day, to_day; /* UTC day numbers, inclusive; to - from < KB_USAGE_DAYS_MAX */
    const char *label_prefix; /* NULL: any key; required for KB_USAGE_LABEL_PREFIX */
    const char *budget;       /* KB_USAGE_BUDGET: NULL, or only this budget's rows */
    int64_t offset;           /* rows to skip (paging) */
    int limit;                /* 1..KB_USAGE_LIMIT_MAX + 1 */
};

struct kb_usage_row {
    int64_t day;      /* UTC day number */
    char *group;      /* owned */
    int64_t spent;    /* settled micro-dollars */
    int64_t reserved; /* in flight */
    int64_t requests;
};

/*
 * Daily spend per group over [from_day, to_day], ordered by day then
 * group, at most q->limit rows after q->offset; only days and groups with
 * a spend row appear. Source: the keys' daily spend rows (spend); a budget's
 * row is the sum over the keys whose chain reaches it now (its own keys
 * and its child budgets' keys, each key once). KB_E_INVALID for a bad
 * range, limit or a missing prefix. *out: *n rows (store_usage_free).
 */
KB_MUSTCHECK enum kb_err store_usage(struct kb_store *s, const struct kb_usage_query *q,
                                     struct kb_usage_row **out, size_t *n);
void store_usage_free(struct kb_usage_row *rows, size_t n);

/* ---- threshold alerts (sqlite_alerts.c, pg_alerts.c; docs/budgets.md) ----
 *
 * A budget may carry alert thresholds, percents of its cap. The settlement
 * (store_budget_settle) that brings a budget's settled spend in a period
 * to a threshold above the highest one already alerted in that period
 * records one alert per threshold reached, in its own transaction: one row
 * per (budget, period, threshold), unique, so that several connections or
 * nodes settling at once record it once. The delivery thread (src/alerts/)
 * claims due rows and records each attempt. */

#define KB_ALERT_THRESHOLDS_MAX 10 /* thresholds one budget carries */
_Static_assert(KB_ALERT_THRESHOLDS_MAX == sizeof((struct kb_budget *)0)->thresholds / sizeof(int),
               "kb_budget.thresholds");

enum kb_alert_status {
    KB_ALERT_PENDING = 0,   /* not delivered yet; retried at next_at */
    KB_ALERT_DELIVERED = 1, /* the receiver answered 2xx */
    KB_ALERT_FAILED = 2,    /* every attempt failed */
};

struct kb_alert {
    int64_t id;                   /* the delivery's id (the receiver's dedup key) */
    int64_t budget_seq;           /* the budget */
    char *budget;                 /* owned; its name when the alert was recorded */
    enum kb_budget_window window; /* its window then */
    int64_t period;               /* store_budget_period of that window */
    int threshold;                /* percent of the cap */
    int64_t spent;                /* settled micro-dollars when it was crossed */
    int64_t cap;                  /* the cap then */
    int64_t created_ms;           /* epoch ms it was recorded */
    enum kb_alert_status status;
    int attempts;    /* made so far */
    int last_status; /* HTTP status of the last attempt; 0: no answer */
    int64_t next_at; /* epoch ms: the next attempt (pending), or the lease's end */
    int64_t done_ms; /* epoch ms it was delivered or given up; 0: pending */
    char *log;       /* owned; one JSON object per attempt, one per line */
};

/* Sets budget `name`'s thresholds (n = 0: none): 1..100, strictly
 * ascending, at most KB_ALERT_THRESHOLDS_MAX, else KB_E_INVALID;
 * KB_E_NOT_FOUND. Call it in the transaction that creates or updates it. */
KB_MUSTCHECK enum kb_err store_budget_alerts_set(struct kb_store *s, const char *name,
                                                 const int *pct, int n);

/* Claims the oldest pending alert due at now_ms (next_at <= now_ms): its
 * next_at moves to now_ms + lease_ms (no other claim takes it meanwhile,
 * on any node) and its attempts count one more; *out (store_alert_free).
 * KB_E_NOT_FOUND when none is due. */
KB_MUSTCHECK enum kb_err store_alert_claim(struct kb_store *s, int64_t now_ms, int64_t lease_ms,
                                           struct kb_alert **out);

/* Records attempt `attempt` of alert `id`: the receiver's HTTP status
 * (0: none), log_line appended to the log, the new status, next_at (for a
 * pending one) and done_ms (for the others). */
KB_MUSTCHECK enum kb_err store_alert_record(struct kb_store *s, int64_t id, int http_status,
                                            const char *log_line, enum kb_alert_status status,
                                            int64_t next_at, int64_t done_ms);

/* Alerts with id < before_id (0: from the newest), newest first, at most
 * limit (1..1000); budget: NULL or only that budget's. *out: *n alerts
 * (store_alert_list_free). */
KB_MUSTCHECK enum kb_err store_alert_list(struct kb_store *s, int64_t before_id, int limit,
                                          const char *budget, struct kb_alert **out, size_t *n);
void store_alert_free(struct kb_alert *a);
void store_alert_list_free(struct kb_alert *a, size_t n);

/* ---- several nodes on one store (docs/cluster.md) ----
 * Backends with KB_STORE_SHARED only; the others answer KB_E_INVALID. */

#define KB_NODE_ID_MAX 64 /* bytes of a node id */

/*
 * Names this process for every connection opened after it: node_id (the
 * node's stable name: its audit chain and its reservations' owner; 1 to
 * KB_NODE_ID_MAX bytes of [A-Za-z0-9._:-]) and boot_id (new at every
 * start). Call once at start, before store_open. False for a bad node id.
 */
bool store_set_node(const char *node_id, const char *boot_id);
const char *store_node_id(void);

/*
 * Joins the cluster on this connection, which must stay open for the
 * node's life: holds the node's lock (a second live process with the same
 * node id is refused: KB_E_EXISTS), checks key_check against the store's
 * (a node started with another server key is refused: KB_E_CONFIG; the
 * first node records its own), registers this start with a heartbeat, and
 * settles the reservations of this node's earlier starts at their worst
 * case (they died with their process; *settled counts the counters
 * touched). *errmsg says why on failure.
 */
KB_MUSTCHECK enum kb_err store_node_join(struct kb_store *s, const uint8_t key_check[KB_HASH_LEN],
                                         int64_t *settled, char **errmsg);
/* Refreshes this start's heartbeat. KB_E_NOT_FOUND when another node
 * found this start dead and settled its reservations: it writes nothing
 * more (the store refuses its write transactions) and must stop. */
KB_MUSTCHECK enum kb_err store_node_heartbeat(struct kb_store *s);
/*
 * Settles, at their worst case, the open reservations of every node whose
 * heartbeat is older than dead_after_ms and whose process is gone (its
 * lock is free), and forgets the node. *nodes: nodes reaped; *counters:
 * spend and budget counters touched. One transaction per node; safe to
 * run on every node at once (each dead node is reaped once).
 */
KB_MUSTCHECK enum kb_err store_node_reap(struct kb_store *s, int64_t dead_after_ms, int64_t *nodes,
                                         int64_t *counters);

/* A key revoked or changed by any node, in commit order. */
struct kb_key_change_note {
    int64_t id;  /* position in the change log */
    int64_t seq; /* the key */
    uint8_t hash[KB_HASH_LEN];
    bool revoked; /* false: changed (PATCH), still active */
};
/*
 * The changes with id > after_id, oldest first, at most 1000: *out (caller
 * frees) holds *n; *last_id is the last one's id (after_id when none).
 * after_id < 0 asks for nothing but the current last id (*n = 0).
 */
KB_MUSTCHECK enum kb_err store_key_changes(struct kb_store *s, int64_t after_id, int64_t *last_id,
                                           struct kb_key_change_note **out, size_t *n);
/* Waits up to timeout_ms for a change notification on this connection
 * (listening from the first call); *notified says whether one came. */
KB_MUSTCHECK enum kb_err store_wait_change(struct kb_store *s, int timeout_ms, bool *notified);

/*
 * The audit chains of the store: one per node on a shared store ("" alone
 * on the others). *names is an array of *n strings (store_names_free).
 * store_audit_chain_use makes this connection's audit reads (rows,
 * checkpoints, exists, cut) address chain `name`; by default a connection
 * reads and appends its own node's chain.
 */
KB_MUSTCHECK enum kb_err store_audit_chains(struct kb_store *s, char ***names, size_t *n);
KB_MUSTCHECK enum kb_err store_audit_chain_use(struct kb_store *s, const char *name);

void store_key_free(struct kb_key *k);
/* Frees k's strings but not k itself (a key embedded in another struct). */
void store_key_clear(struct kb_key *k);
void store_key_list_free(struct kb_key *keys, size_t n);

/* ---- tenants, scoped admin tokens, tenant secrets (sqlite_tenants.c,
 * pg_tenants.c; docs/tenants.md) ---- */

#define KB_TENANT_NAME_MAX 256 /* bytes of a tenant's name */

struct kb_tenant {
    int64_t seq;        /* creation order */
    char id[32];        /* "tn_..." */
    char *name;         /* owned; unique among live tenants */
    int64_t created_at; /* epoch seconds */
};

/* Creates tenant t (id, name, created_at); t->seq is set. KB_E_EXISTS when
 * the id or a live tenant's name is taken. */
KB_MUSTCHECK enum kb_err store_tenant_insert(struct kb_store *s, struct kb_tenant *t);
/* The live tenant `id`; KB_E_NOT_FOUND when unknown or deleted. *out is
 * the caller's (store_tenant_free). */
KB_MUSTCHECK enum kb_err store_tenant_get(struct kb_store *s, const char *id,
                                          struct kb_tenant **out);
/* Live tenants with seq > after_seq in creation order, at most limit
 * (1..1000, else KB_E_INVALID); store_tenant_list_free. */
KB_MUSTCHECK enum kb_err store_tenant_list(struct kb_store *s, int64_t after_seq, int limit,
                                           struct kb_tenant **out, size_t *n);
/*
 * Deletes tenant `id` at `now`: KB_E_TENANT_IN_USE (nothing changes) while
 * it owns a key that is neither revoked nor expired at `now`;
 * KB_E_NOT_FOUND. Its admin tokens are revoked and its vendor secrets
 * erased in the same transaction; its keys, budgets and audit records stay.
 */
KB_MUSTCHECK enum kb_err store_tenant_delete(struct kb_store *s, const char *id, int64_t now);
void store_tenant_free(struct kb_tenant *t);
void store_tenant_list_free(struct kb_tenant *t, size_t n);

struct kb_admin_token {
    char id[32];        /* "at_..." */
    char *label;        /* owned */
    char *tenant;       /* owned; NULL: a root token */
    int64_t created_at; /* epoch seconds */
    int64_t revoked_at; /* 0 while valid */
};

/* Adds a token by hash with public id tok->id, label and tenant (NULL:
 * root). KB_E_EXISTS when the hash or id is taken. */
KB_MUSTCHECK enum kb_err store_admin_token_insert(struct kb_store *s,
                                                  const struct kb_admin_token *tok,
                                                  const uint8_t hash[KB_HASH_LEN]);
/* The unrevoked token whose hash is `hash`: KB_E_NOT_FOUND when unknown,
 * revoked, or scoped to a deleted tenant. One indexed read; *out is the caller's
 * (store_admin_token_free). */
KB_MUSTCHECK enum kb_err store_admin_token_lookup(struct kb_store *s,
                                                  const uint8_t hash[KB_HASH_LEN],
                                                  struct kb_admin_token **out);
/* Tokens (revoked ones too) of tenant `tenant`, or every token when
 * `all`; in creation order, at most 1000. store_admin_token_list_free. */
KB_MUSTCHECK enum kb_err store_admin_token_list(struct kb_store *s, bool all, const char *tenant,
                                                struct kb_admin_token **out, size_t *n);
/* Revokes token `id` at `now` if it belongs to `tenant` (or any token when
 * `all`); KB_E_NOT_FOUND otherwise. Revoking a revoked token is KB_OK. */
KB_MUSTCHECK enum kb_err store_admin_token_revoke(struct kb_store *s, const char *id, bool all,
                                                  const char *tenant, int64_t now);
void store_admin_token_free(struct kb_admin_token *t);
void store_admin_token_list_free(struct kb_admin_token *t, size_t n);

#define KB_SEALED_MAX 4096 /* bytes of one sealed secret */

struct kb_tenant_secret {
    char *tenant;    /* owned */
    char *vendor;    /* owned */
    char *key_id;    /* owned; the master key that sealed it */
    uint8_t *sealed; /* owned; nonce || ciphertext || tag */
    size_t sealed_len;
    char *account;      /* owned; NULL: none */
    int64_t updated_at; /* epoch seconds */
};

/* Sets (inserts or replaces) tenant's secret for vendor. */
KB_MUSTCHECK enum kb_err store_tenant_secret_put(struct kb_store *s,
                                                 const struct kb_tenant_secret *sec);
/* KB_E_NOT_FOUND when none; *out the caller's (store_tenant_secret_free). */
KB_MUSTCHECK enum kb_err store_tenant_secret_get(struct kb_store *s, const char *tenant,
                                                 const char *vendor, struct kb_tenant_secret **out);
/* KB_E_NOT_FOUND when none. */
KB_MUSTCHECK enum kb_err store_tenant_secret_delete(struct kb_store *s, const char *tenant,
                                                    const char *vendor);
/* The secrets of tenant (NULL: of every tenant), by tenant then vendor:
 * *out is *n of them (store_tenant_secret_list_free). */
KB_MUSTCHECK enum kb_err store_tenant_secret_list(struct kb_store *s, const char *tenant,
                                                  struct kb_tenant_secret **out, size_t *n);
void store_tenant_secret_free(struct kb_tenant_secret *sec);
void store_tenant_secret_list_free(struct kb_tenant_secret *sec, size_t n);

#endif
