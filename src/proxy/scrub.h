/*
 * scrub.h - the vendor secret never reaches the agent, even when a vendor
 * echoes it back (an error that quotes the Authorization header, a debug
 * endpoint). Every occurrence of the injected secret, and of the exact
 * header value it was sent in, is replaced by '*' of the same length in
 * response header names and values and in the body as it streams, so lengths (and a
 * Content-Length) stay right. Across chunk boundaries only the bytes that
 * could still begin a secret are held back, so streams are not delayed.
 *
 * Pure functions over caller-owned buffers; any thread. A coded (gzip, br)
 * body is passed as it came: its bytes cannot be scrubbed without
 * re-encoding it (docs/policy.md says so).
 */
#ifndef KB_PROXY_SCRUB_H
#define KB_PROXY_SCRUB_H
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* Secrets shorter than this are not scrubbed: they would match ordinary text. */
#define KB_SCRUB_MIN 8

/* Needles one scrubber holds: the secret and the header value it is sent
 * in, then those of the sets replaced by the last reloads (newest first). */
#define KB_SCRUB_NEEDLES 6

struct kb_scrub {
    const char *needle[KB_SCRUB_NEEDLES]; /* borrowed; the secret, the header value it is
                                             sent in, then earlier secrets' */
    size_t len[KB_SCRUB_NEEDLES];         /* their lengths */
    size_t n;                             /* needles in use (0: nothing to scrub) */
};
_Static_assert(sizeof((struct kb_scrub *)0)->len / sizeof(size_t) ==
                   sizeof((struct kb_scrub *)0)->needle / sizeof(const char *),
               "a length per needle");

/* Adds `needle` (borrowed, must outlive s) unless shorter than KB_SCRUB_MIN
 * or the table is full. */
void scrub_add(struct kb_scrub *s, const char *needle);

/* Replaces every needle in buf[0, len) in place. */
void scrub_all(const struct kb_scrub *s, char *buf, size_t len);

/*
 * Scrubs the next `len` bytes of a stream. `tail` carries, between calls,
 * the bytes that might begin a needle; they are consumed here. On return,
 * the bytes safe to send are either `in` itself (the fast path: *out_data
 * == in, nothing copied) or out->data, in both cases *out_len of them, and
 * `tail` holds what must wait for the next call (or scrub_end).
 */
void scrub_feed(const struct kb_scrub *s, struct kb_buf *tail, const char *in, size_t len,
                struct kb_buf *out, const char **out_data, size_t *out_len);

#endif
