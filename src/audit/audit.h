/*
 * audit.h - the audit log: one record per admin action and per proxied
 * request (allowed or refused), hash-chained so that an edited, inserted
 * or removed record is detected, with periodic checkpoints signed by an
 * HMAC under the server key.
 *
 * Records never hold a token, a vendor secret, a query string or a body.
 * They are written through the writer (store/writer.h): audit_job_* are
 * kb_job_fn bodies to run on the writer thread, so the chain is extended
 * by one thread only, in commit order.
 */
#ifndef KB_AUDIT_AUDIT_H
#define KB_AUDIT_AUDIT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/crypto.h"
#include "core/err.h"

struct kb_store;

enum kb_audit_kind {
    KB_AUDIT_PROXY = 0, /* a proxied request */
    KB_AUDIT_ADMIN = 1, /* an admin action */
};

/* One record. Strings are borrowed by the functions below and copied. */
struct kb_audit_rec {
    enum kb_audit_kind kind;
    int64_t ts_ms;        /* wall clock, ms since the epoch */
    char request_id[40];  /* Keybrake-Request-Id, or the admin request's id */
    const char *action;   /* admin: "key.issued", "key.revoked", "keys.bulk_revoked",
                             "admin_token.created"; proxy: "proxy.request" */
    const char *key_id;   /* may be NULL (unknown token) */
    const char *label;    /* may be NULL */
    const char *vendor;   /* may be NULL */
    const char *method;   /* may be NULL */
    const char *path;     /* vendor path without query; may be NULL */
    const char *decision; /* "allowed" or "refused" (admin: "ok") */
    const char *code;     /* error code when refused/failed, else NULL */
    int status;           /* upstream status (proxy) once known, else 0 */
    int64_t reserved;     /* micro-dollars reserved */
    int64_t settled;      /* micro-dollars settled; -1 while pending */
    int64_t latency_us;   /* proxy overhead + upstream, once complete; else 0 */
    int64_t bytes_in;     /* request body bytes from the client */
    int64_t bytes_out;    /* response body bytes to the client */
    const char *detail;   /* admin: small JSON text (e.g. {"revoked":3}); may be NULL */
    const char *tenant;   /* the tenant the record belongs to; NULL: root's */
};

/* Sets the HMAC key of the checkpoints (the server key), process-wide.
 * Main thread, before the writer starts. */
void audit_set_key(const uint8_t key[KB_HASH_LEN]);

/* Records between signed checkpoints (config audit_checkpoint_every,
 * 1..1000000; default 1000). Main thread, before the writer starts. */
void audit_set_checkpoint_every(int64_t n);

/*
 * Appends `rec` to the chain as a new record; the record's sequence number
 * goes to *seq (may be NULL). A record with settled == -1 awaits an
 * audit_complete; any other settled value makes it complete on its own
 * (refusals, admin actions). Adds a signed checkpoint when one is due.
 * Errors: KB_E_STORE (the batch must fail: see writer.h). Writer thread
 * only (inside a batch). Strings must never hold a secret, a token, a
 * query string or a body.
 */
KB_MUSTCHECK enum kb_err audit_append(struct kb_store *s, const struct kb_audit_rec *rec,
                                      int64_t *seq);

/*
 * Completes the proxy record appended earlier as `seq`: status, settled
 * cost, latency, bytes and a failure code. Appended as a new chained
 * "completion" record referring to `seq` (records are never updated in
 * place, so the chain covers completions too); pass the whole record
 * (kind, ts_ms, request_id... as for the begin) with the outcome fields
 * set. KB_E_NOT_FOUND when `seq` is not a record. Writer thread only.
 */
KB_MUSTCHECK enum kb_err audit_complete(struct kb_store *s, int64_t seq,
                                        const struct kb_audit_rec *rec);

/* ---- the JSONL sink (config audit_sink) ---- */

struct kb_audit_sink;

/*
 * Opens (creating, mode 0600, O_APPEND) the sink file at path and finds
 * where it resumes: after the seq of its last complete line, or at the
 * log's current end (read through `store`, the main thread's connection)
 * for a new file. KB_E_IO / KB_E_STORE with *errmsg. Main thread, before
 * the writer starts. Then install audit_sink_commit as the writer's commit
 * hook (writer_set_commit_hook) with the sink as its argument, and start
 * the sink thread with audit_sink_start.
 */
KB_MUSTCHECK enum kb_err audit_sink_open(const char *path, struct kb_store *store,
                                         struct kb_audit_sink **out, char **errmsg);
/*
 * Starts the sink thread on its own connection to the store at
 * store_path: it appends every committed record the file does not hold
 * yet, one JSON line each, in seq order, at once (records committed
 * before, at start-up or by a crashed run) and after each commit
 * audit_sink_commit reports. A failed write is logged once and retried
 * after the next commit or a second later. KB_E_STORE (the connection) or
 * KB_E_INTERNAL with *errmsg. Main thread, once.
 */
KB_MUSTCHECK enum kb_err audit_sink_start(struct kb_audit_sink *sink, const char *store_path,
                                          const char *synchronous, char **errmsg);
/*
 * A kb_writer_commit_cb: notes the last committed seq (the writer's chain
 * head once the batch appended, known false when the writer could not
 * tell) and wakes the sink thread; never touches the file or the store,
 * so the batch's answers do not wait for it. Writer thread.
 */
void audit_sink_commit(int64_t last_seq, bool known, void *sink);
/*
 * Reopens the sink file at its path (logrotate renamed it; SIGHUP): the
 * lines the sink thread writes from now on go to the new file, created if
 * missing, continuing after the last one written to the old; the thread
 * switches between two writes and closes the old file. Never waits for a
 * write in progress. On failure the old file stays in use. Main thread.
 */
KB_MUSTCHECK enum kb_err audit_sink_reopen(struct kb_audit_sink *sink, char **errmsg);
/* Stops the sink thread once it has written every committed record (after
 * writer_free: nothing commits any more), and closes the sink. Main
 * thread. */
void audit_sink_free(struct kb_audit_sink *sink);

/* ---- verify and export ---- */

struct kb_audit_row;

enum kb_audit_problem {
    KB_AUDIT_OK = 0,         /* the chain is intact */
    KB_AUDIT_ALTERED = 1,    /* a record does not match its hash */
    KB_AUDIT_INSERTED = 2,   /* a record was inserted before later ones */
    KB_AUDIT_REMOVED = 3,    /* a record is missing (gap, or cut before a checkpoint) */
    KB_AUDIT_CHECKPOINT = 4, /* a checkpoint is missing, forged or does not match */
    KB_AUDIT_TRUNCATED = 5,  /* the log ends before a record its anchor holds */
};

struct kb_audit_report {
    int64_t records;               /* records walked (up to the first problem) */
    int64_t checkpoints;           /* checkpoints verified */
    int64_t last_ckpt_seq;         /* last good checkpoint, 0 if none */
    int64_t cut_seq;               /* retention: records 1..cut_seq were pruned at the signed
                                      checkpoint cut_seq, where the walk started; 0 if none */
    int64_t last_seq;              /* last record walked, 0 if none */
    uint8_t cut_hash[KB_HASH_LEN]; /* the chain hash the cut checkpoint seals */
    enum kb_audit_problem problem;
    int64_t bad_seq; /* first bad record (or checkpoint) seq */
    char why[256];   /* human explanation of problem */
};

/*
 * An anchor: what a copy of the log kept off the machine (the sink file, a
 * saved export) says the chain held. Someone who can write the SQLite file
 * can cut its tail together with the later checkpoints; the anchor is how
 * verify notices. Matching one record's hash is enough: the chain vouches
 * for every record before it.
 */
struct kb_audit_anchor {
    int64_t last_seq;               /* seq of the file's last record line */
    uint8_t last_hash[KB_HASH_LEN]; /* its chain hash */
    int64_t top_seq;                /* the file's highest seq: above last_seq only when the
                                       file went backwards (a sink that resumed on a log
                                       that had lost its tail) */
    uint8_t top_hash[KB_HASH_LEN];  /* chain hash of the first line with top_seq */
};

/*
 * Reads the anchor from path, a JSON-lines file in the export format.
 * Lines that do not parse as a record with a positive seq and a 64-hex
 * hash (a torn last line, anything foreign) are skipped, as the sink asks
 * of its readers. KB_E_IO when the file cannot be read, KB_E_INVALID when
 * it holds no record line (empty); *errmsg says which. Any thread.
 */
KB_MUSTCHECK enum kb_err audit_anchor_read(const char *path, struct kb_audit_anchor *out,
                                           char **errmsg);

/*
 * Walks the whole chain in one read snapshot: recomputes every hash, checks
 * seq continuity and every checkpoint's HMAC under key, linkage and
 * schedule. With an anchor (may be NULL), also checks that the log still
 * holds the anchor's records with the anchor's hashes: KB_AUDIT_ALTERED at
 * a record whose hash differs, KB_AUDIT_TRUNCATED when the log ends before
 * one. Read the anchor before calling, so that a live sink file holds no
 * line the snapshot cannot see yet. KB_OK with report->problem set
 * (KB_AUDIT_OK or the first problem); KB_E_STORE with *errmsg when the
 * store cannot be read. Any thread with its own connection.
 */
KB_MUSTCHECK enum kb_err audit_verify(struct kb_store *s, const uint8_t key[KB_HASH_LEN],
                                      const struct kb_audit_anchor *anchor,
                                      struct kb_audit_report *report, char **errmsg);

/* One chain's verdict (audit_verify_chains). */
struct kb_audit_chain_report {
    char *node;                    /* owned; the chain's node id, "" on a store with one chain */
    struct kb_audit_report report; /* as audit_verify's */
};

/*
 * audit_verify on every chain of the store (store_audit_chains: one per
 * node on a shared store, the only one "" elsewhere), each in its own read
 * snapshot (the chains are independent), in node id order; only, when not
 * NULL, names the one chain to verify (KB_E_NOT_FOUND when the store has
 * no such chain; with an anchor, the chain is reported KB_AUDIT_TRUNCATED
 * at 1 instead: every record of it was removed). The anchor, a copy of one
 * node's chain (its sink file), is held against chain `only`, or against
 * the store's one chain; KB_E_INVALID when the store has several and only
 * is NULL. *out (free with audit_chain_reports_free) holds *n reports, one
 * per chain walked; a chain's problem does not stop the walk of the
 * others. KB_E_STORE when the store cannot be read. *errmsg says why on
 * failure. The connection's chain selection is reset to its own on
 * return. Any thread with its own connection.
 */
KB_MUSTCHECK enum kb_err audit_verify_chains(struct kb_store *s, const uint8_t key[KB_HASH_LEN],
                                             const char *only, const struct kb_audit_anchor *anchor,
                                             struct kb_audit_chain_report **out, size_t *n,
                                             char **errmsg);
void audit_chain_reports_free(struct kb_audit_chain_report *v, size_t n);

/* The JSON line of a chain row (export and sink): the raw record with
 * seq, ref_seq and hash. New reference. */
json_t *audit_row_json(const struct kb_audit_row *row);

/* Sets the fields both the export and GET /v1/audit show as they are
 * (request_id, kind, action, key_id, label, vendor, method, path, decision,
 * code) on o; absent strings become null. */
void audit_rec_json_ids(json_t *o, const struct kb_audit_rec *r);

/* Parses RFC 3339 ("2026-11-22T07:39:48Z", fraction and numeric offsets
 * allowed) or integer epoch seconds into ms since the epoch. Pure. */
KB_MUSTCHECK enum kb_err audit_parse_time(const char *text, int64_t *ms);

#endif
