/* duration.c - "30s"/"5m"/"2h"/"1d"/"250ms"/"42" to milliseconds. */
#include "core/duration.h"

#include <string.h>

#define MAX_MS (100LL * 365 * 86400 * 1000)

enum kb_err duration_parse_ms(const char *text, size_t len, int64_t *out_ms)
{
    size_t i = 0;
    int64_t v = 0;
    while (i < len && text[i] >= '0' && text[i] <= '9') {
        if (i >= 12)
            return KB_E_INVALID;
        v = v * 10 + (text[i] - '0');
        i++;
    }
    if (i == 0)
        return KB_E_INVALID;
    const char *unit = text + i;
    size_t ulen = len - i;
    int64_t mult;
    if (ulen == 0)
        mult = 1000;
    else if (ulen == 2 && memcmp(unit, "ms", 2) == 0)
        mult = 1;
    else if (ulen == 1 && *unit == 's')
        mult = 1000;
    else if (ulen == 1 && *unit == 'm')
        mult = 60 * 1000;
    else if (ulen == 1 && *unit == 'h')
        mult = 3600 * 1000;
    else if (ulen == 1 && *unit == 'd')
        mult = 86400 * 1000;
    else
        return KB_E_INVALID;
    if (v > MAX_MS / mult)
        return KB_E_INVALID;
    *out_ms = v * mult;
    return KB_OK;
}
