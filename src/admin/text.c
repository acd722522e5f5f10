/*
 * text.c - what the admin API accepts as a name or a label (admin_int.h,
 * admin__valid_text): key labels, budget and tenant names, token labels,
 * vendor secrets. Moved out of keys.c, its first user, when tenants made
 * it shared.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "admin/admin_int.h"

/* Code points a label may not hold: C1 controls, bidi embeddings,
 * overrides, isolates and marks (Trojan Source), zero-width characters and
 * the line and paragraph separators that split log lines. */
static bool forbidden_cp(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x61c || (cp >= 0x200b && cp <= 0x200f) ||
           (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff;
}

/* 1..max bytes of valid UTF-8, with no control byte and none of the code
 * points above. jansson already refuses invalid UTF-8 in JSON strings;
 * checking again keeps this safe for any caller. */
bool admin__valid_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        uint32_t cp;
        size_t len;
        if (*p < 0x80) {
            cp = *p, len = 1;
        } else if ((*p & 0xe0) == 0xc0) {
            cp = *p & 0x1f, len = 2;
        } else if ((*p & 0xf0) == 0xe0) {
            cp = *p & 0x0f, len = 3;
        } else if ((*p & 0xf8) == 0xf0) {
            cp = *p & 0x07, len = 4;
        } else {
            return false;
        }
        if ((size_t)(end - p) < len)
            return false;
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false; /* over-long, out of range, surrogate */
        if (cp < 0x20 || cp == 0x7f || forbidden_cp(cp))
            return false;
        p += len;
    }
    return true;
}
