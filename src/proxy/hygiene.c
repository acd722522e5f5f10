/* hygiene.c - a vault token where it must never be (see hygiene.h). */
#include "proxy/hygiene.h"

#include <stdbool.h>

#include "core/crypto.h"

bool hygiene_url_has_token(const char *q, size_t len)
{
    const size_t toklen = 3 + KB_TOKEN_RANDOM_LEN + KB_TOKEN_CHECK_LEN;
    for (size_t i = 0; i + toklen <= len; i++)
        if (q[i] == 'k' && q[i + 1] == 'b' && q[i + 2] == '_' &&
            crypto_token_valid("kb_", q + i, toklen))
            return true;
    return false;
}
