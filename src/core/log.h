/*
 * log.h - structured log lines on stderr, one record per line.
 *
 * Format is logfmt (`ts=... level=info msg="..." k=v`) or JSON, chosen at
 * start. Values are escaped so that no input can forge a line or a field:
 * control bytes become \xNN (logfmt) or \u00NN (JSON). Never log a token or
 * a vendor secret: log a key by its id.
 *
 * Between log_start and log_stop the records are written by a log writer
 * thread: kb_log only formats and queues, so no event loop waits for the
 * disk. A queue over 4 MiB (the output stalled) drops new records instead
 * of waiting; they are counted (keybrake_log_dropped_total) and reported
 * by one record once writing resumes.
 */
#ifndef KB_CORE_LOG_H
#define KB_CORE_LOG_H
#include <stdbool.h>

#include "core/err.h"

enum kb_log_level {
    KB_LOG_DEBUG = 0, /* per-request detail */
    KB_LOG_INFO = 1,  /* start/stop, admin actions, access lines */
    KB_LOG_WARN = 2,  /* recoverable trouble */
    KB_LOG_ERROR = 3, /* a request or subsystem failed */
};

/* Parses "debug|info|warn|error" and "logfmt|json"; false if unknown. Call
 * before threads start. */
bool log_set_level(const char *name);
bool log_set_format(const char *name);
bool log_enabled(enum kb_log_level level);

/*
 * Sends the log (and everything else written to stderr) to the file at
 * path, appended, created mode 0600 if missing. Safe while other threads
 * log: each record lands whole in the previous destination or in the new
 * file. On failure stderr is unchanged. While the writer thread runs it
 * switches files before its next write (records queued after this call
 * go to the new file); otherwise at once. Main thread.
 */
KB_MUSTCHECK enum kb_err log_open_file(const char *path, char **errmsg);
/* Reopens the file of log_open_file at the same path (logrotate: the old
 * file was renamed). KB_OK, doing nothing, when the log is not a file.
 * Main thread. */
KB_MUSTCHECK enum kb_err log_reopen(char **errmsg);
/* Forgets the path (at exit; the descriptor stays stderr). Main thread. */
void log_close_file(void);

/*
 * Starts the log writer thread: from now on kb_log queues records for it.
 * Without it (before, or when the thread cannot start, which is logged)
 * kb_log writes each record itself. Call before the threads that log on
 * the request path start (signals blocked: the thread inherits the mask).
 * Main thread.
 */
void log_start(void);
/*
 * Writes every record queued so far, then stops the writer thread; kb_log
 * writes directly again. Waits for the output, however slow: at exit no
 * queued record is lost. A no-op when the thread is not running. Main
 * thread.
 */
void log_stop(void);
/* Returns once every record queued before the call is written (or lost to
 * a failed write). Any thread but the writer's. */
void log_flush(void);

/*
 * Writes one record: msg, then key/value string pairs ending with NULL:
 *   kb_log(KB_LOG_INFO, "key issued", "id", id, "label", label, NULL);
 * Values are escaped. Thread-safe: records are whole, never interleaved,
 * and one thread's appear in the order it logged them. Never blocks on the
 * output while the writer thread runs (a record over the queue's budget
 * is dropped and counted).
 */
void kb_log(enum kb_log_level level, const char *msg, ...) __attribute__((sentinel));

#endif
