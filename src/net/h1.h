/*
 * h1.h - the HTTP/1.1 grammar the server (net/httpd.c) and the upstream
 * client (proxy/upstream.c) share: request line, status line, header
 * field lines, Content-Length and chunk-size lines, as pure functions over
 * one line (without its CRLF or LF). Each engine keeps its own buffering
 * and framing decisions; what a line means is decided here, once, so the
 * two sides can never read the same bytes two ways. Fuzzed as pure
 * functions (tests/fuzz/fuzz_h1.c). Any thread; nothing allocates.
 *
 * The rules are RFC 9112's, on the strict side: no obs-fold, no space
 * before a field's colon, no control byte (but HTAB) in a value, no blank
 * before a chunk extension.
 */
#ifndef KB_NET_H1_H
#define KB_NET_H1_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest method accepted in a request line. */
#define H1_MAX_METHOD 32
/* Most hex digits in a chunk size (15 keep it below 2^60). */
#define H1_MAX_CHUNK_DIGITS 15
/* Most digits in a Content-Length (18 keep it in an int64). */
#define H1_MAX_CLEN_DIGITS 18

/* RFC 9110 tchar: a byte that may stand in a token (method, field name). */
bool h1_tchar(unsigned char c);

/*
 * "METHOD SP request-target SP HTTP/1.x" (n bytes). On true: the method is
 * l[0, *mlen) (a token of 1..H1_MAX_METHOD bytes), the target l[*toff,
 * *toff + *tlen) (no space, control byte or DEL), *minor 0 or 1. *bad_version
 * is set when only the version was wrong (another HTTP version).
 */
bool h1_request_line(const char *l, size_t n, size_t *mlen, size_t *toff, size_t *tlen, int *minor,
                     bool *bad_version);

/* "HTTP/1.x SP 3DIGIT [SP reason]" with a status of 100..599 and a reason
 * of text (HTAB, no other control byte). */
bool h1_status_line(const char *l, size_t n, int *minor, int *status);

enum h1_field {
    H1_FIELD_OK = 0,   /* a well-formed field line */
    H1_FIELD_FOLD = 1, /* starts with a blank: obs-fold */
    H1_FIELD_NAME = 2, /* no token before ':', or something between them */
    H1_FIELD_CTL = 3,  /* a control byte (but HTAB) or DEL in the value */
};

/* "name: OWS value OWS". On H1_FIELD_OK the name is l[0, *nlen) and the
 * value, trimmed of surrounding blanks, l[*voff, *voff + *vlen). */
enum h1_field h1_field_line(const char *l, size_t n, size_t *nlen, size_t *voff, size_t *vlen);

/* A Content-Length value: 1..H1_MAX_CLEN_DIGITS digits and nothing else. */
bool h1_content_length(const char *v, size_t n, int64_t *out);

/* A chunk-size line: 1..H1_MAX_CHUNK_DIGITS hex digits, then the end or a
 * ';' starting extensions (which are not read, but may hold no control
 * byte other than HTAB: no bare CR, no NUL). */
bool h1_chunk_size(const char *l, size_t n, int64_t *out);

#endif
