/*
 * log.c - logfmt/JSON records on stderr. Each record is assembled in a
 * buffer and written with one write(2), so records from several threads
 * never interleave within a line.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
