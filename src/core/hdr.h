/*
 * hdr.h - one header line as the server parsed it. Shared by the HTTP
 * server (net/httpd.h), which owns the strings, and by the meters, which
 * read the headers that change what a request costs (Idempotency-Key,
 * anthropic-beta) without depending on the network layer.
 */
#ifndef KB_CORE_HDR_H
#define KB_CORE_HDR_H
#include <stddef.h>

struct kb_hdr {
    const char *name;  /* as received, NUL-terminated */
    const char *value; /* NUL-terminated, surrounding blanks trimmed */
};

/* The value of the only header named `name` (case-insensitive) among h[0..n),
 * or NULL when absent; *count (may be NULL) is how many there are, so a
 * caller can refuse a header given twice. */
const char *hdr_find(const struct kb_hdr *h, size_t n, const char *name, int *count);

#endif
