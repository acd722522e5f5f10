/*
 * hygiene.h - request checks of the proxy's own. Framing and header forms
 * that could be read two ways are refused by the HTTP parser itself
 * (net/httpd.c); what is left here is what only the proxy knows to look
 * for.
 */
#ifndef KB_PROXY_HYGIENE_H
#define KB_PROXY_HYGIENE_H
#include <stdbool.h>
#include <stddef.h>

/*
 * True when `q` (len bytes: a whole request target, path and query) carries
 * something shaped like a vault token ("kb_" + 46 base62 with a valid
 * checksum), as sent or percent-encoded (up to three times over): such a
 * request is refused and never logged with its query.
 */
bool hygiene_url_has_token(const char *q, size_t len);

#endif
