/*
 * codec.h - HTTP content codings (gzip, deflate, br, zstd), decoded in
 * bounded memory and bounded work.
 *
 * Two users: the meter decodes a vendor's compressed answer as it streams
 * past (the client still gets the vendor's bytes), and the proxy decodes a
 * compressed request body once, so that what is metered and what is
 * forwarded are the same bytes. Every decoder carries an output cap and a
 * ratio cap, so a small body cannot make a worker do unbounded work.
 */
#ifndef KB_CORE_CODEC_H
#define KB_CORE_CODEC_H
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

enum kb_coding {
    KB_CODING_IDENTITY = 0, /* no coding, or "identity" */
    KB_CODING_GZIP = 1,     /* "gzip", "x-gzip" (RFC 1952) */
    KB_CODING_DEFLATE = 2,  /* "deflate": zlib stream (RFC 1950), raw deflate tolerated */
    KB_CODING_BR = 3,       /* "br" (RFC 7932) */
    KB_CODING_ZSTD = 4,     /* "zstd" (RFC 8878) */
    KB_CODING_UNKNOWN = 5,  /* anything else, or more than one coding stacked */
};

/* The coding named by a Content-Encoding value (NULL, "" and "identity"
 * are IDENTITY; case-insensitive; surrounding blanks ignored). A list of
 * several codings ("gzip, br") is UNKNOWN: callers refuse or go blind. */
enum kb_coding codec_parse(const char *content_encoding);

struct kb_decoder;

/* Output callback: `len` decoded bytes (len > 0). */
typedef void (*kb_decoded_cb)(void *ctx, const char *data, size_t len);

/*
 * A streaming decoder for `coding` (not IDENTITY or UNKNOWN: NULL then).
 * max_out caps the decoded total; max_ratio caps decoded/encoded bytes
 * (checked once more than 64 KiB have come out). Caller frees.
 */
struct kb_decoder *codec_decoder_new(enum kb_coding coding, size_t max_out, size_t max_ratio);

/*
 * Decodes `len` more encoded bytes, calling cb for each piece of output
 * (from a fixed internal buffer: copy what you keep). KB_OK, or KB_E_INVALID
 * once the input is corrupt, has bytes past the end of the stream, or a cap
 * was passed; after an error the decoder stays failed and calls cb no more.
 */
KB_MUSTCHECK enum kb_err codec_decode(struct kb_decoder *d, const char *in, size_t len,
                                      kb_decoded_cb cb, void *ctx);

/* True once the coded stream ended properly (gzip trailer, br/zstd frame
 * end); a response that ends before that was cut. */
bool codec_finished(const struct kb_decoder *d);

void codec_decoder_free(struct kb_decoder *d);

/*
 * Whether the NUL-terminated s is well-formed UTF-8 (RFC 3629, Unicode
 * Table 3-7): no overlong forms (C0 80, E0 80 80), no surrogates (ED A0 80),
 * nothing past U+10FFFF (F4 90 80 80), no truncated sequence and no stray
 * continuation byte. "" is valid. What PostgreSQL's text input accepts in a
 * UTF-8 database. Pure; any thread.
 */
bool codec_utf8_valid(const char *s);

/*
 * One-shot decoding of a whole body (a request): *out (heap, caller frees,
 * NUL-terminated for convenience) and *out_len on KB_OK. KB_E_BODY_TOO_LARGE
 * past max_out or max_ratio; KB_E_INVALID for a corrupt or truncated body;
 * *errmsg (caller frees) says which.
 */
KB_MUSTCHECK enum kb_err codec_decode_all(enum kb_coding coding, const char *in, size_t len,
                                          size_t max_out, size_t max_ratio, char **out,
                                          size_t *out_len, char **errmsg);

#endif
