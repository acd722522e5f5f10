/*
 * retention.h - audit retention: records older than [audit] retention are
 * archived to a JSONL file (the export's format) and then pruned from the
 * store, always up to a signed checkpoint (the cut), which stays in the
 * store so that `audit verify` proves the retained part from it.
 *
 * One prune step: plan (the newest checkpoint older than the cutoff),
 * archive (records first..cut and their checkpoints, checked against the
 * chain and the cut's signature, written to a new file, fsynced, renamed),
 * then a writer job deletes them in one transaction and appends an
 * `audit.pruned` record naming the cut (audit_prune_job). A crash between
 * the archive and the delete loses nothing: the records are still in the
 * store, the next step archives them again (into a file that replaces the
 * one with the same first record) and deletes them then.
 *
 * The step runs on a background thread of its own (audit_retention_start),
 * never on an event loop, at start and then every min(retention, 1 h).
 */
#ifndef KB_AUDIT_RETENTION_H
#define KB_AUDIT_RETENTION_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"

struct kb_store;
struct kb_writer;

/* Most records one step prunes, so that one delete transaction stays short
 * for the writer, whose batches wait meanwhile (10,000 rows with the audit
 * indexes: about 0.1 s here, commit included; 100,000: about 1 s). Smaller
 * steps would mean more archive files (one per step). The next step
 * follows a second later, so a backlog drains at up to 36M records an
 * hour. A cut must be a checkpoint: with audit.checkpoint_every above it, a
 * step prunes up to the first checkpoint old enough. */
#define KB_AUDIT_PRUNE_MAX 10000

/* One step: records first..cut (and checkpoints first..cut) go; the
 * checkpoint at cut stays. */
struct kb_audit_cut {
    int64_t first;     /* the oldest record in the store */
    int64_t cut;       /* the checkpoint the store will start at */
    int64_t removed;   /* audit_prune_job: records deleted */
    char archive[128]; /* the archive file's name (in its directory) */
};

/*
 * Plans one step on `s` (any connection): the cut is the newest checkpoint
 * with ts_ms < before_ms at most max_records after the oldest record (else
 * the oldest such checkpoint), and must leave at least one record after
 * it. KB_E_NOT_FOUND when there is nothing to prune; KB_E_STORE. Any thread.
 */
KB_MUSTCHECK enum kb_err audit_prune_plan(struct kb_store *s, int64_t before_ms,
                                          int64_t max_records, struct kb_audit_cut *out);

/*
 * Writes records cut->first..cut->cut and the checkpoints among them, in
 * one read snapshot of `s`, to dir/audit-<first>-<cut>.jsonl (12-digit
 * numbers): record lines exactly as `audit export` prints them, a line
 * {"checkpoint":N,"prev_seq":..,"every":..,"ts_ms":..,"hash":..,"mac":..}
 * after the record each checkpoint seals. Before anything is written the
 * stretch is checked: every record against its hash, chained from the
 * checkpoint before first (or from zero), and the cut's signature under the
 * audit key (audit_set_key): a damaged stretch is never archived and pruned
 * (KB_E_INVALID, *errmsg names the record). The file is written under a
 * temporary name, fsynced, renamed and the directory fsynced; then an older
 * file starting at the same record (a step that crashed before its delete)
 * is removed. Sets cut->archive. Stops early (KB_E_SHUTTING_DOWN, nothing
 * left behind) when *stop becomes true. KB_E_IO, KB_E_STORE with *errmsg.
 * Any thread with its own connection; never an event loop.
 */
KB_MUSTCHECK enum kb_err audit_archive_write(struct kb_store *s, struct kb_audit_cut *cut,
                                             const char *dir, const atomic_bool *stop,
                                             char **errmsg);

/*
 * A kb_job_fn (writer thread, in a batch): deletes what `arg` (a struct
 * kb_audit_cut, archived) names and appends an `audit.pruned` record whose
 * detail is {"first":F,"cut":C,"records":N,"archive":"..."}, in the same
 * transaction. Refuses (KB_E_INVALID, rolled back alone) when the store no
 * longer holds exactly records first..cut before the cut, or holds nothing
 * after it. KB_E_STORE fails the batch.
 */
enum kb_err audit_prune_job(struct kb_store *s, void *arg);

/* ---- verify --archive (archive.c) ---- */

struct kb_audit_report;

/* What the archive holds, as audit_archive_verify found it. */
struct kb_audit_archive {
    int64_t files;                  /* archive files walked (superseded ones skipped) */
    int64_t last_seq;               /* the last archived record, 0 when none */
    bool joined;                    /* join_seq was walked: join_hash is its chain hash */
    uint8_t join_hash[KB_HASH_LEN]; /* chain hash of record join_seq */
};

/*
 * Walks the archive files in dir (audit-<first>-<cut>.jsonl; of several
 * starting at the same record, only the one reaching furthest: the others
 * were superseded by a step that crashed before its delete) as one chain
 * from record 1: every record against its hash, every checkpoint line
 * against key, its link and its hash, a checkpoint due and missing, and
 * that the archive ends at a checkpoint. A line that does not parse is
 * `altered` (archives are renamed into place whole; nothing tears them).
 * KB_OK with report->problem set (records, checkpoints, last_ckpt_seq
 * counted; why names the file); KB_E_IO with *errmsg when dir or a file
 * cannot be read. Also sets out (join_seq: the store's cut, whose hash the
 * caller compares). Any thread.
 */
KB_MUSTCHECK enum kb_err audit_archive_verify(const char *dir, const uint8_t key[KB_HASH_LEN],
                                              int64_t join_seq, struct kb_audit_report *report,
                                              struct kb_audit_archive *out, char **errmsg);

struct kb_audit_retention;

/*
 * Starts the retention thread: its own store connection (store_url) for
 * the archive's reads, its own loop and writer port for the delete job.
 * Creates archive_dir (mode 0700) when missing: KB_E_IO with *errmsg when
 * it cannot. retention_ms > 0. Main thread.
 */
KB_MUSTCHECK enum kb_err audit_retention_start(const char *store_url, const char *synchronous,
                                               struct kb_writer *w, int64_t retention_ms,
                                               const char *archive_dir,
                                               struct kb_audit_retention **out, char **errmsg);
/* Stops the thread (a step in progress ends at its next record, or after
 * its delete job answered) and joins it. Before writer_free. NULL is a
 * no-op. Main thread. */
void audit_retention_stop(struct kb_audit_retention *r);

#endif
