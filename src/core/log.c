/*
 * log.c - logfmt/JSON records on stderr. Each record is assembled in a
 * buffer and written with one write(2), so records from several threads
 * never interleave within a line.
 *
 * A log file (config log_file) is opened with O_APPEND and dup2()ed onto
 * stderr, so that it also receives what else goes there (sanitizer
 * reports, messages before the log is set up). Reopening for logrotate
 * does the same with a fresh open: dup2 replaces descriptor 2 atomically,
 * and a write(2) holds the open file it started with, so each record goes
 * whole to the old file or whole to the new one, none is lost or torn.
 */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"

/* Set at start and by a SIGHUP reload while workers log: relaxed atomics
 * (a line may use the old setting; none reads a torn one). */
static _Atomic int min_level = KB_LOG_INFO;
static _Atomic bool json_format;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

bool log_set_level(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            min_level = (enum kb_log_level)i;
            return true;
        }
    }
    return false;
}

bool log_set_format(const char *name)
{
    if (strcmp(name, "logfmt") == 0)
        json_format = false;
    else if (strcmp(name, "json") == 0)
        json_format = true;
    else
        return false;
    return true;
}

static char *file_path; /* owned; the log file, NULL: stderr as inherited (main thread) */

enum kb_err log_open_file(const char *path, char **errmsg)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        kb_set_errmsg(errmsg, "cannot open log file %s: %s", path, strerror(errno));
        return KB_E_IO;
    }
    int rc;
    do
        rc = dup2(fd, STDERR_FILENO); /* the old file closes when its last write is done */
    while (rc < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (rc < 0) {
        kb_set_errmsg(errmsg, "cannot log to %s: %s", path, strerror(saved));
        return KB_E_IO;
    }
    if (path != file_path) {
        free(file_path);
        file_path = kb_strdup(path);
    }
    return KB_OK;
}

enum kb_err log_reopen(char **errmsg)
{
    if (!file_path)
        return KB_OK;
    return log_open_file(file_path, errmsg);
}

void log_close_file(void)
{
    free(file_path);
    file_path = NULL;
}

bool log_enabled(enum kb_log_level level)
{
    return (int)level >= min_level;
}

/* Escapes v for the current format; logfmt quotes only when needed. */
static void put_value(struct kb_buf *b, const char *v)
{
    bool quote = json_format || *v == '\0';
    for (const char *p = v; *p && !quote; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20 || *p == 0x7f)
            quote = true;
    if (quote)
        buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf_putc(b, '\\');
            buf_putc(b, (char)*p);
        } else if (*p < 0x20 || *p == 0x7f) {
            if (json_format)
                buf_printf(b, "\\u%04x", *p);
            else
                buf_printf(b, "\\x%02x", *p);
        } else {
            buf_putc(b, (char)*p);
        }
    }
    if (quote)
        buf_putc(b, '"');
}

static void put_field(struct kb_buf *b, const char *k, const char *v, bool first)
{
    if (json_format) {
        buf_puts(b, first ? "{" : ",");
        put_value(b, k);
        buf_putc(b, ':');
    } else {
        if (!first)
            buf_putc(b, ' ');
        buf_puts(b, k);
        buf_putc(b, '=');
    }
    put_value(b, v);
}

void kb_log(enum kb_log_level level, const char *msg, ...)
{
    if ((int)level < min_level)
        return;
    char ts[40];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);

    struct kb_buf b = KB_BUF_INIT;
    put_field(&b, "ts", ts, true);
    put_field(&b, "level", level_names[level], false);
    put_field(&b, "msg", msg, false);
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        put_field(&b, k, v ? v : "", false);
    }
    va_end(ap);
    buf_puts(&b, json_format ? "}\n" : "\n");
    ssize_t w = write(STDERR_FILENO, b.data, b.len);
    (void)w; /* nothing sensible to do when stderr is gone */
    buf_cleanup(&b);
}
