/* hygiene.c - header and framing checks before a request is trusted (see hygiene.h). */
#include "proxy/hygiene.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "core/alloc.h"
#include "core/crypto.h"

static bool tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

enum kb_err hygiene_check_headers(const struct evkeyvalq *h, int major, int minor,
                                  int64_t max_headers, char **errmsg)
{
    int64_t count = 0;
    int ncl = 0, nte = 0;
    const struct evkeyval *kv;
    TAILQ_FOREACH(kv, h, next)
    {
        if (++count > max_headers) {
            kb_set_errmsg(errmsg, "more than %lld request headers", (long long)max_headers);
            return KB_E_HEADERS_TOO_LARGE;
        }
        const unsigned char *n = (const unsigned char *)kv->key;
        if (!*n)
            goto bad_name;
        for (; *n; n++)
            if (!tchar(*n))
                goto bad_name;
        for (const unsigned char *v = (const unsigned char *)kv->value; *v; v++) {
            if ((*v < 0x20 && *v != '\t') || *v == 0x7f) {
                kb_set_errmsg(errmsg, "a request header value contains a control byte");
                return KB_E_BAD_REQUEST;
            }
        }
        if (strcasecmp(kv->key, "content-length") == 0) {
            size_t len = strlen(kv->value);
            if (++ncl > 1 || len == 0 || len > 18 || strspn(kv->value, "0123456789") != len) {
                kb_set_errmsg(errmsg, "Content-Length must appear once, as plain digits");
                return KB_E_BAD_REQUEST;
            }
        } else if (strcasecmp(kv->key, "transfer-encoding") == 0) {
            if (++nte > 1 || strcasecmp(kv->value, "chunked") != 0 || (major == 1 && minor == 0)) {
                kb_set_errmsg(errmsg, "Transfer-Encoding must be a single \"chunked\" on "
                                      "HTTP/1.1");
                return KB_E_BAD_REQUEST;
            }
        }
    }
    if (ncl && nte) {
        kb_set_errmsg(errmsg, "Content-Length and Transfer-Encoding together");
        return KB_E_BAD_REQUEST;
    }
    return KB_OK;
bad_name:
    kb_set_errmsg(errmsg, "a request header name is not a valid token");
    return KB_E_BAD_REQUEST;
}

bool hygiene_url_has_token(const char *q, size_t len)
{
    const size_t toklen = 3 + KB_TOKEN_RANDOM_LEN + KB_TOKEN_CHECK_LEN;
    for (size_t i = 0; i + toklen <= len; i++)
        if (q[i] == 'k' && q[i + 1] == 'b' && q[i + 2] == '_' &&
            crypto_token_valid("kb_", q + i, toklen))
            return true;
    return false;
}
