/*
 * audit_store.h - the SQL side of the audit log (src/store/sqlite_audit.c).
 *
 * The audit module (src/audit/) decides what a record is and how the chain
 * and checkpoints are computed; these functions only move rows in and out of
 * the `audit` and `audit_checkpoints` tables (schema/002_audit.sql), so no
 * SQL leaves src/store/.
 *
 * Threads: like every store function, one connection per thread. The append
 * functions run on the writer thread inside its batch transaction; the
 * readers (iterators, query) on any thread with its own connection.
 */
#ifndef KB_STORE_AUDIT_STORE_H
#define KB_STORE_AUDIT_STORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/audit.h"
#include "core/crypto.h"
#include "core/err.h"

struct kb_store;
struct kb_audit_iter;

/* One chain row as read back. rec's strings and hash point into the
 * statement: valid until the next call on the iterator. */
struct kb_audit_row {
    int64_t seq;             /* chain position */
    int64_t ref_seq;         /* completion: the record completed; 0 otherwise */
    struct kb_audit_rec rec; /* the record's fields (borrowed strings) */
    const uint8_t *hash;     /* borrowed; stored chain hash */
    size_t hash_len;         /* KB_HASH_LEN unless tampered with */
};

/* One checkpoint row; blobs borrowed like kb_audit_row's. */
struct kb_audit_ckpt {
    int64_t seq;         /* the record it seals */
    int64_t prev_seq;    /* previous checkpoint, 0 for the first */
    int64_t every;       /* next checkpoint at most this many records later */
    int64_t ts_ms;       /* when it was written */
    const uint8_t *hash; /* borrowed; chain hash of record seq */
    size_t hash_len;
    const uint8_t *mac; /* borrowed; HMAC under the server key */
    size_t mac_len;
};

/* ---- append side (writer thread, inside a transaction) ---- */

/* The last record's seq and hash: 0 and 32 zero bytes on an empty log. */
KB_MUSTCHECK enum kb_err store_audit_last(struct kb_store *s, int64_t *seq,
                                          uint8_t hash[KB_HASH_LEN]);
/* The last checkpoint's seq and promised interval; *seq = 0 when none. */
KB_MUSTCHECK enum kb_err store_audit_last_ckpt(struct kb_store *s, int64_t *seq, int64_t *every);
/* KB_OK when record seq exists, or existed and was pruned by retention (at
 * or before the oldest checkpoint, whose record is gone): a completion may
 * follow a begin record that was archived meanwhile. KB_E_NOT_FOUND when not. */
KB_MUSTCHECK enum kb_err store_audit_exists(struct kb_store *s, int64_t seq);
/* KB_OK when a completion of record seq (ref_seq = seq) is in the store
 * (this node's chain on PostgreSQL), KB_E_NOT_FOUND when none: what makes
 * a settlement that is retried after an outcome it could not know apply
 * once (src/proxy/settle.c). */
KB_MUSTCHECK enum kb_err store_audit_completed(struct kb_store *s, int64_t seq);
/* Inserts record `seq` (must be last + 1) with its chain hash; ref_seq 0 for none. */
KB_MUSTCHECK enum kb_err store_audit_insert(struct kb_store *s, int64_t seq, int64_t ref_seq,
                                            const struct kb_audit_rec *rec,
                                            const uint8_t hash[KB_HASH_LEN]);
/* Inserts a checkpoint (hash and mac are KB_HASH_LEN bytes each). */
KB_MUSTCHECK enum kb_err store_audit_ckpt_insert(struct kb_store *s,
                                                 const struct kb_audit_ckpt *ck);
/*
 * Retention (src/audit/retention.c). The cut: the newest checkpoint whose
 * ts_ms < before_ms among those with seq <= max_seq, or, when none is, the
 * oldest checkpoint with ts_ms < before_ms; *seq = 0 when no checkpoint is
 * that old. Any connection.
 */
KB_MUSTCHECK enum kb_err store_audit_cut_find(struct kb_store *s, int64_t before_ms,
                                              int64_t max_seq, int64_t *seq);
/*
 * Deletes every record with seq <= cut and every checkpoint with seq < cut
 * (the checkpoint at cut stays: verify starts from it); *removed gets the
 * records deleted. Writer thread, inside its transaction; the caller makes
 * sure records after cut exist (the chain head must survive).
 */
KB_MUSTCHECK enum kb_err store_audit_prune(struct kb_store *s, int64_t cut, int64_t *removed);

/*
 * The append functions above keep their statements prepared on the
 * connection (they run for every record); this finalises them and forgets
 * the chain head. store_close does it too. From the connection's thread.
 */
void store_audit_forget(struct kb_store *s);

/*
 * Chain-head cache, for the one connection that appends continuously (the
 * store writer). Call store_audit_head_sync right after each BEGIN
 * IMMEDIATE: from then on store_audit_last, store_audit_last_ckpt and
 * store_audit_exists answer from memory, kept current by the inserts. The
 * sync drops the cached head when another connection committed since (PRAGMA
 * data_version); call store_audit_head_drop after any rollback, which may
 * take appended records with it. Connections that never sync read the
 * tables every time.
 */
void store_audit_head_sync(struct kb_store *s);
void store_audit_head_drop(struct kb_store *s);

/* ---- read side ---- */

/* Opens / ends a read transaction so that several iterators see one
 * snapshot (verify reads records and checkpoints together). */
KB_MUSTCHECK enum kb_err store_audit_read_begin(struct kb_store *s);
void store_audit_read_end(struct kb_store *s);

/*
 * Records with seq > after_seq, in seq order; since_ms/until_ms (0: no
 * bound) keep only records with since_ms <= ts_ms < until_ms.
 * *out is freed with store_audit_iter_free.
 */
KB_MUSTCHECK enum kb_err store_audit_rows(struct kb_store *s, int64_t after_seq, int64_t since_ms,
                                          int64_t until_ms, struct kb_audit_iter **out);
/* Checkpoints in seq order. */
KB_MUSTCHECK enum kb_err store_audit_ckpts(struct kb_store *s, struct kb_audit_iter **out);
/* Next row: KB_OK with *row filled, KB_E_NOT_FOUND at the end, KB_E_STORE. */
KB_MUSTCHECK enum kb_err store_audit_row_next(struct kb_audit_iter *it, struct kb_audit_row *row);
KB_MUSTCHECK enum kb_err store_audit_ckpt_next(struct kb_audit_iter *it, struct kb_audit_ckpt *ck);
void store_audit_iter_free(struct kb_audit_iter *it);

/* GET /v1/audit: one entry per request (a record joined with its completion). */
struct kb_audit_filter {
    const char *key_id;       /* NULL: any */
    const char *label_prefix; /* NULL: any */
    const char *vendor;       /* NULL: any */
    const char *decision;     /* NULL: any */
    const char *tenant;       /* NULL: any; else only that tenant's records */
    int64_t since_ms;         /* 0: no bound; ts_ms >= since_ms */
    int64_t until_ms;         /* 0: no bound; ts_ms < until_ms */
    int64_t before_seq;       /* 0: from the newest; else only seq < before_seq */
    int limit;                /* 1..1000 */
};

/* A begin record merged with its completion (if any). Strings borrowed,
 * valid during the callback only. */
struct kb_audit_entry {
    int64_t seq;             /* the begin record */
    struct kb_audit_rec rec; /* begin fields, completion fields merged in */
    bool completed;          /* a completion exists, or none was awaited */
};

typedef void (*kb_audit_entry_cb)(const struct kb_audit_entry *e, void *arg);

/* Calls cb for each entry matching f, newest first, at most f->limit. */
KB_MUSTCHECK enum kb_err store_audit_query(struct kb_store *s, const struct kb_audit_filter *f,
                                           kb_audit_entry_cb cb, void *arg);

#endif
