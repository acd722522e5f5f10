/*
 * authenticate.c - the vault token, where each vendor's SDK sends its key:
 * Authorization: Bearer (Stripe, OpenAI), Basic (Twilio's SID:token and
 * Stripe's token:), or the vendor's own header (x-api-key). Two credentials
 * are ambiguous and refused rather than guessed between.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/money.h"
#include "core/runtime.h"
#include "audit/audit.h"
#include "meter/meter.h"
#include "net/http.h"
#include "net/httpd.h"
#include <openssl/evp.h>
#include "proxy/proxy_int.h"
#include "store/store.h"
#include "store/writer.h"

bool proxy__find_token(const struct kb_hreq *req, const struct kb_vendor *v, char *out, size_t size)
{
    const char *auth = NULL, *xkey = NULL;
    int nauth = 0, nkey = 0;
    const char *key_header = v && v->auth == KB_AUTH_HEADER ? v->auth_header : "x-api-key";
    const struct kb_hdr *h;
    size_t nh = hreq_headers(req, &h);
    for (size_t i = 0; i < nh; i++) {
        if (strcasecmp(h[i].name, "authorization") == 0)
            auth = h[i].value, nauth++;
        else if (strcasecmp(h[i].name, key_header) == 0)
            xkey = h[i].value, nkey++;
    }
    if (nauth > 1 || nkey > 1)
        return false; /* ambiguous: proxy__refuse rather than guess */
    const char *tok = NULL;
    size_t len = 0;
    char decoded[256];
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        tok = auth + 7;
        while (*tok == ' ')
            tok++;
        len = strlen(tok);
    } else if (auth && strncasecmp(auth, "Basic ", 6) == 0) {
        const char *b64 = auth + 6;
        size_t blen = strlen(b64);
        if (blen == 0 || blen % 4 || blen / 4 * 3 >= sizeof decoded)
            return false;
        int n = EVP_DecodeBlock((unsigned char *)decoded, (const unsigned char *)b64, (int)blen);
        if (n < 0)
            return false;
        if (blen >= 1 && b64[blen - 1] == '=')
            n--;
        if (blen >= 2 && b64[blen - 2] == '=')
            n--;
        decoded[n] = '\0';
        char *colon = memchr(decoded, ':', (size_t)n);
        if (!colon)
            return false;
        /* Twilio sends SID:token; Stripe's curl style sends token: */
        if (colon[1]) {
            tok = colon + 1;
            len = strlen(tok);
        } else {
            tok = decoded;
            len = (size_t)(colon - decoded);
        }
    } else if (xkey) {
        tok = xkey;
        len = strlen(tok);
    }
    if (!tok || len == 0 || len >= size)
        return false;
    memcpy(out, tok, len);
    out[len] = '\0';
    return true;
}
