/*
 * buf.h - a growable byte buffer, always NUL-terminated, with a hard cap.
 */
#ifndef KB_CORE_BUF_H
#define KB_CORE_BUF_H
#include <stdbool.h>
#include <stddef.h>

struct kb_buf {
    char *data; /* owned; NUL-terminated; NULL until first append */
    size_t len; /* bytes used, not counting the NUL */
    size_t cap; /* bytes allocated */
};

#define KB_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Makes room for `extra` more bytes now, so appends up to that size do
 * not reallocate. */
void buf_reserve(struct kb_buf *b, size_t extra);
void buf_append(struct kb_buf *b, const void *p, size_t n);
void buf_puts(struct kb_buf *b, const char *s);
void buf_putc(struct kb_buf *b, char c);
void buf_printf(struct kb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns the data (owned by the caller, never NULL) and resets b. */
char *buf_take(struct kb_buf *b, size_t *len);
void buf_reset(struct kb_buf *b);
void buf_cleanup(struct kb_buf *b);

#endif
