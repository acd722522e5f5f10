/*
 * hygiene.h - refuses requests whose framing or headers could be read two
 * ways. evhttp already refuses Content-Length together with
 * Transfer-Encoding, obfuscated Transfer-Encoding and CR inside values; it
 * accepts the forms below, so they are refused here before anything else
 * looks at the request (see ../shared/notes/evhttp-libcurl.md).
 */
#ifndef KB_PROXY_HYGIENE_H
#define KB_PROXY_HYGIENE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct evkeyvalq;

/*
 * Checks the request headers `h` of an HTTP/major.minor request. Refuses:
 * more than max_headers headers (KB_E_HEADERS_TOO_LARGE); a header name that
 * is not an RFC 9110 token (e.g. "Transfer-Encoding " with a space); a value
 * with a control byte other than HTAB; more than one Content-Length, or one
 * that is not 1-18 plain digits ("+4", "4, 4"); Transfer-Encoding other
 * than a single "chunked", or any Transfer-Encoding on HTTP/1.0
 * (KB_E_BAD_REQUEST). *errmsg (caller frees) says which rule. Any thread.
 */
KB_MUSTCHECK enum kb_err hygiene_check_headers(const struct evkeyvalq *h, int major, int minor,
                                               int64_t max_headers, char **errmsg);

/*
 * True when `q` (len bytes: a whole request target, path and query) carries
 * something shaped like a vault token ("kb_" + 46 base62 with a valid
 * checksum): such a request is refused and never logged with its query.
 */
bool hygiene_url_has_token(const char *q, size_t len);

#endif
