/*
 * fuzz_h1.c - libFuzzer target for the HTTP/1.1 line grammar (src/net/h1.c)
 * that the server and the upstream client share.
 *
 * Byte 0 picks the function, the rest is one line. Whatever a function
 * accepts is checked against an independent, naive reading of the same
 * bytes (no shared code): the pieces it reports put the line back together,
 * tokens are tokens, values carry no control byte and no edge blank, and
 * the numbers equal what strtoll reads. Any violation aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_token_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* strtoll on a NUL-terminated copy of s[0, n) in base b; -1 unless all of
 * it is read. */
static int64_t naive_number(const char *s, size_t n, int b)
{
    char tmp[64];
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    long long v = strtoll(tmp, &end, b);
    return *end || tmp[0] == '-' || tmp[0] == '+' || tmp[0] == ' ' ? -1 : (int64_t)v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *l = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 5) {
    case 0: {
        size_t mlen, toff, tlen;
        int minor = -1;
        bool badv;
        if (!h1_request_line(l, n, &mlen, &toff, &tlen, &minor, &badv))
            break;
        if (mlen == 0 || mlen > H1_MAX_METHOD || toff != mlen + 1 || tlen == 0 ||
            toff + tlen + 9 != n || l[mlen] != ' ' || l[toff + tlen] != ' ' ||
            memcmp(l + toff + tlen + 1, "HTTP/1.", 7) != 0 || minor != l[n - 1] - '0' ||
            (minor != 0 && minor != 1))
            abort();
        for (size_t i = 0; i < mlen; i++)
            if (!is_token_byte(l[i]))
                abort();
        for (size_t i = toff; i < toff + tlen; i++)
            if ((unsigned char)l[i] <= 0x20 || (unsigned char)l[i] == 0x7f)
                abort();
        break;
    }
    case 1: {
        int minor = -1, st = -1;
        if (!h1_status_line(l, n, &minor, &st))
            break;
        if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || minor != l[7] - '0' || l[8] != ' ' ||
            st != naive_number(l + 9, 3, 10) || st < 100 || st > 599 || (n > 12 && l[12] != ' '))
            abort();
        for (size_t i = 12; i < n; i++)
            if (ctl((unsigned char)l[i]))
                abort();
        break;
    }
    case 2: {
        size_t nlen, voff, vlen;
        enum h1_field f = h1_field_line(l, n, &nlen, &voff, &vlen);
        if (f != H1_FIELD_OK) {
            /* a refusal names a real fault */
            if (f == H1_FIELD_FOLD && !(n && blank(l[0])))
                abort();
            break;
        }
        if (nlen == 0 || l[nlen] != ':' || voff <= nlen || voff + vlen > n)
            abort();
        for (size_t i = 0; i < nlen; i++)
            if (!is_token_byte(l[i]))
                abort();
        for (size_t i = nlen + 1; i < voff; i++)
            if (!blank(l[i]))
                abort();
        for (size_t i = voff + vlen; i < n; i++)
            if (!blank(l[i]))
                abort();
        if (vlen && (blank(l[voff]) || blank(l[voff + vlen - 1])))
            abort();
        for (size_t i = voff; i < voff + vlen; i++)
            if (ctl((unsigned char)l[i]))
                abort();
        break;
    }
    case 3: {
        int64_t v = -1;
        bool ok = h1_content_length(l, n, &v);
        int64_t want = n <= H1_MAX_CLEN_DIGITS ? naive_number(l, n, 10) : -1;
        bool digits = n > 0;
        for (size_t i = 0; i < n; i++)
            digits &= l[i] >= '0' && l[i] <= '9';
        if (ok != (digits && n <= H1_MAX_CLEN_DIGITS) || (ok && v != want))
            abort();
        break;
    }
    case 4: {
        int64_t v = -1;
        bool ok = h1_chunk_size(l, n, &v);
        size_t d = 0;
        while (d < n && strchr("0123456789abcdefABCDEF", l[d]) && l[d])
            d++;
        bool want = d > 0 && d <= H1_MAX_CHUNK_DIGITS && (d == n || l[d] == ';');
        for (size_t i = d; want && i < n; i++)
            want = !ctl((unsigned char)l[i]); /* an extension holds no control byte */
        if (ok != want || (ok && v != naive_number(l, d, 16)))
            abort();
        break;
    }
    }
    return 0;
}
