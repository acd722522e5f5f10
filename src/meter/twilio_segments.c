/*
 * twilio_segments.c - how many SMS segments a message body is, the unit
 * Twilio and the carriers bill an SMS in (twilio.c prices them).
 *
 * A body that fits GSM 03.38 (the basic table, one septet per character, and
 * its extension table, two septets: ^ { } \ [ ] ~ | and the euro sign) is
 * one segment up to 160 septets, else 153-septet segments; anything else is
 * UCS-2: one segment up to 70 UTF-16 code units, else 67. A two-septet
 * character or a surrogate pair is never split across segments, as handsets
 * require, so the count is the one the carrier bills.
 */
#include <stdint.h>
#include <string.h>

#include "meter/meter_int.h"

/* Segment capacities (3GPP TS 23.040 with the 6-byte concatenation UDH). */
#define GSM_SINGLE 160
#define GSM_MULTI 153
#define UCS2_SINGLE 70
#define UCS2_MULTI 67

/* ---- GSM 03.38 ---- */

/* The non-ASCII characters of the basic table. */
static const uint32_t gsm_basic_high[] = {
    0x00A3, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC, 0x00F2, 0x00C7, 0x00D8, 0x00F8,
    0x00C5, 0x00E5, 0x0394, 0x03A6, 0x0393, 0x039B, 0x03A9, 0x03A0, 0x03A8, 0x03A3,
    0x0398, 0x039E, 0x00C6, 0x00E6, 0x00DF, 0x00C9, 0x00A4, 0x00A1, 0x00C4, 0x00D6,
    0x00D1, 0x00DC, 0x00A7, 0x00BF, 0x00E4, 0x00F6, 0x00F1, 0x00FC, 0x00E0,
};

/* Septets of code point cp in GSM-7: 1 (basic), 2 (extension), 0 (none). */
static int gsm_septets(uint32_t cp)
{
    if (cp < 0x80) {
        static const char basic[] = "\n\r !\"#$%&'()*+,-./:;<=>?@_";
        static const char ext[] = "\f^{}\\[~]|";
        if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || (cp >= '0' && cp <= '9'))
            return 1;
        if (memchr(basic, (int)cp, sizeof basic - 1))
            return 1;
        if (memchr(ext, (int)cp, sizeof ext - 1))
            return 2;
        return 0; /* '`', tab, NUL and the other controls */
    }
    if (cp == 0x20AC) /* euro sign, extension table */
        return 2;
    for (size_t i = 0; i < sizeof gsm_basic_high / sizeof gsm_basic_high[0]; i++)
        if (gsm_basic_high[i] == cp)
            return 1;
    return 0;
}

/* Decodes one UTF-8 sequence at s[i]; returns its length. *cp is
 * UINT32_MAX for an invalid byte (counted as one UCS-2 unit, not GSM). */
static size_t utf8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp)
{
    unsigned char c = s[i];
    size_t len;
    uint32_t v, min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1Fu;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0Fu;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07u;
        min = 0x10000;
    } else {
        *cp = UINT32_MAX;
        return 1;
    }
    if (n - i < len) {
        *cp = UINT32_MAX;
        return 1;
    }
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) {
            *cp = UINT32_MAX;
            return 1;
        }
        v = (v << 6) | (s[i + k] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = UINT32_MAX;
        return 1;
    }
    *cp = v;
    return len;
}

int64_t meter__sms_segments(const char *body, size_t len)
{
    const unsigned char *s = (const unsigned char *)body;
    bool gsm = true;
    size_t total = 0, i;
    uint32_t cp;

    for (i = 0; i < len && gsm;) {
        i += utf8_next(s, len, i, &cp);
        int w = cp == UINT32_MAX ? 0 : gsm_septets(cp);
        if (w == 0)
            gsm = false;
        total += (size_t)w;
    }
    if (gsm && total <= GSM_SINGLE)
        return 1;
    if (!gsm) {
        total = 0;
        for (i = 0; i < len;) {
            i += utf8_next(s, len, i, &cp);
            total += cp != UINT32_MAX && cp > 0xFFFF ? 2 : 1;
        }
        if (total <= UCS2_SINGLE)
            return 1;
    }
    /* Fill segments greedily; a unit (escape + char, surrogate pair) that
     * does not fit starts the next segment. */
    size_t cap = gsm ? GSM_MULTI : UCS2_MULTI, used = 0;
    int64_t segs = 1;
    for (i = 0; i < len;) {
        i += utf8_next(s, len, i, &cp);
        size_t w = gsm ? (size_t)gsm_septets(cp) : (cp != UINT32_MAX && cp > 0xFFFF ? 2 : 1);
        if (used + w > cap) {
            segs++;
            used = 0;
        }
        used += w;
    }
    return segs;
}
