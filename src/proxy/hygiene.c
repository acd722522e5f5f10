/* hygiene.c - a vault token where it must never be (see hygiene.h). */
#include "proxy/hygiene.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/crypto.h"

/* Percent-decoding rounds tried: "%256B" is "%6B" is "k". */
#define DECODE_ROUNDS 3

static bool scan(const char *q, size_t len)
{
    const size_t toklen = 3 + KB_TOKEN_RANDOM_LEN + KB_TOKEN_CHECK_LEN;
    for (size_t i = 0; i + toklen <= len; i++)
        if (q[i] == 'k' && q[i + 1] == 'b' && q[i + 2] == '_' &&
            crypto_token_valid("kb_", q + i, toklen))
            return true;
    return false;
}

/* One round of percent-decoding in place; returns the new length (equal
 * to len when there was nothing to decode). */
static size_t decode_round(char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int hi = s[i] == '%' && i + 2 < len ? crypto_hexdigit(s[i + 1]) : -1;
        int lo = hi >= 0 ? crypto_hexdigit(s[i + 2]) : -1;
        if (hi >= 0 && lo >= 0) {
            s[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            s[o++] = s[i];
        }
    }
    return o;
}

bool hygiene_url_has_token(const char *q, size_t len)
{
    if (scan(q, len))
        return true;
    if (!memchr(q, '%', len))
        return false;
    char *d = kb_malloc(len + 1);
    memcpy(d, q, len);
    bool found = false;
    for (int r = 0; r < DECODE_ROUNDS && !found; r++) {
        size_t n = decode_round(d, len);
        if (n == len)
            break; /* nothing left to decode */
        len = n;
        found = scan(d, len);
    }
    free(d);
    return found;
}
