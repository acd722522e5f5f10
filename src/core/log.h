/*
 * log.h - structured log lines on stderr, one record per line.
 *
 * Format is logfmt (`ts=... level=info msg="..." k=v`) or JSON, chosen at
 * start. Values are escaped so that no input can forge a line or a field:
 * control bytes become \xNN (logfmt) or \u00NN (JSON). Never log a token or
 * a vendor secret: log a key by its id.
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
 * file. On failure stderr is unchanged. Main thread.
 */
KB_MUSTCHECK enum kb_err log_open_file(const char *path, char **errmsg);
/* Reopens the file of log_open_file at the same path (logrotate: the old
 * file was renamed). KB_OK, doing nothing, when the log is not a file.
 * Main thread. */
KB_MUSTCHECK enum kb_err log_reopen(char **errmsg);
/* Forgets the path (at exit; the descriptor stays stderr). Main thread. */
void log_close_file(void);

/*
 * Writes one record: msg, then key/value string pairs ending with NULL:
 *   kb_log(KB_LOG_INFO, "key issued", "id", id, "label", label, NULL);
 * Values are escaped. Thread-safe (one write(2) per record).
 */
void kb_log(enum kb_log_level level, const char *msg, ...) __attribute__((sentinel));

#endif
