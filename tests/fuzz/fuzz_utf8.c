/*
 * fuzz_utf8.c - libFuzzer target for the strict UTF-8 check
 * (codec_utf8_valid, src/core/codec.c), which stands in front of the
 * PostgreSQL audit arrays (store/pg_txn.c).
 *
 * The input up to its first NUL byte is the string (the validator takes a
 * C string). It is checked against a reference written differently: the
 * well-formed byte sequences of Unicode Table 3-7 as byte ranges per lead
 * byte, with no decoding at all. Where both say valid, the text is decoded
 * into code points and encoded again, and the bytes must come back the
 * same (no overlong form, no surrogate, nothing past U+10FFFF survives
 * that). Any disagreement aborts, which libFuzzer reports as a crash.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Unicode 15, Table 3-7: the second byte's range depends on the lead; the
 * third and fourth are always 80..BF. */
static bool reference_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        size_t len;
        uint8_t lo = 0x80, hi = 0xbf; /* second byte */
        if (b <= 0x7f) {
            i++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            len = 2;
        } else if (b == 0xe0) {
            len = 3, lo = 0xa0;
        } else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef) {
            len = 3;
        } else if (b == 0xed) {
            len = 3, hi = 0x9f;
        } else if (b == 0xf0) {
            len = 4, lo = 0x90;
        } else if (b >= 0xf1 && b <= 0xf3) {
            len = 4;
        } else if (b == 0xf4) {
            len = 4, hi = 0x8f;
        } else {
            return false; /* 80..C1, F5..FF never lead */
        }
        if (n - i < len || p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k < len; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xbf)
                return false;
        i += len;
    }
    return true;
}

/* Decodes a text the reference accepted and encodes it again. */
static size_t round_trip(const uint8_t *p, size_t n, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = p[i] < 0x80 ? 1 : p[i] < 0xe0 ? 2 : p[i] < 0xf0 ? 3 : 4;
        static const uint8_t lead_mask[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
        cp = p[i] & lead_mask[len];
        for (size_t k = 1; k < len; k++)
            cp = cp << 6 | (p[i + k] & 0x3f);
        i += len;
        if (cp < 0x80) {
            out[o++] = (uint8_t)cp;
        } else if (cp < 0x800) {
            out[o++] = (uint8_t)(0xc0 | cp >> 6);
            out[o++] = (uint8_t)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            if (cp >= 0xd800 && cp <= 0xdfff)
                abort(); /* a surrogate got through */
            out[o++] = (uint8_t)(0xe0 | cp >> 12);
            out[o++] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
            out[o++] = (uint8_t)(0x80 | (cp & 0x3f));
        } else {
            if (cp > 0x10ffff)
                abort(); /* past the last code point */
            out[o++] = (uint8_t)(0xf0 | cp >> 18);
            out[o++] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
            out[o++] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
            out[o++] = (uint8_t)(0x80 | (cp & 0x3f));
        }
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t n = nul ? (size_t)(nul - data) : size;
    /* a heap copy of exactly the string, so ASan sees any read past its NUL */
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, data, n);
    s[n] = '\0';

    bool got = codec_utf8_valid(s), want = reference_valid((const uint8_t *)s, n);
    if (got != want)
        abort();
    if (got) {
        uint8_t *again = malloc(n + 1);
        if (!again)
            abort();
        /* encoding never grows a well-formed text: n bytes are enough */
        if (round_trip((const uint8_t *)s, n, again) != n || memcmp(again, s, n) != 0)
            abort();
        free(again);
    }
    free(s);
    return 0;
}
