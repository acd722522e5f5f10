/*
 * money.c - USD amounts as int64 micro-dollars, read straight from JSON
 * number text.
 *
 * Spend caps and prices arrive as JSON numbers ("daily_usd_cap": 12.5) and
 * jansson would hand us a double, which cannot hold 0.1 exactly. So the
 * amount is taken from the number's text: every digit is placed at its power
 * of ten (after the exponent) and summed into micros, refusing a non-zero
 * digit below 1e-6 or a total above KB_MONEY_MAX_MICROS. No floating point.
 *
 * money_json_number() is the companion that finds that text: a small,
 * allocation-free JSON scanner that validates the whole document and returns
 * the raw number text of one top-level member.
 */
#include "core/money.h"

#include <stdbool.h>
#include <stdio.h>

#include "core/alloc.h"
#include "core/crypto.h"

/* Nesting the scanner accepts; matches jansson's default parser limit so a
 * body jansson accepts is never refused here for depth alone. */
#define SCAN_MAX_DEPTH 2048

/* An exponent is saturated here while parsing: beyond it every non-zero
 * digit is already far out of range, and the sums below stay in int64. */
#define EXP_SATURATE 1000000000LL

/* Powers of ten that fit a micro amount; q > 18 is always out of range. */
static const int64_t pow10_table[19] = {
    1LL,
    10LL,
    100LL,
    1000LL,
    10000LL,
    100000LL,
    1000000LL,
    10000000LL,
    100000000LL,
    1000000000LL,
    10000000000LL,
    100000000000LL,
    1000000000000LL,
    10000000000000LL,
    100000000000000LL,
    1000000000000000LL,
    10000000000000000LL,
    100000000000000000LL,
    1000000000000000000LL,
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Returns the end of the JSON number starting at p (RFC 8259 grammar:
 * -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?), or NULL when p does not
 * start one. The number ends at the first byte that cannot continue it; the
 * caller decides whether that byte may follow.
 */
static const char *number_end(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit(*p))
        return NULL;
    if (*p == '0') {
        p++;
    } else {
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    return p;
}

/*
 * Adds digit d, worth 10^q micros, to *acc. Returns KB_OK, or KB_E_INVALID
 * with the reason when the digit is below a micro or the sum exceeds the cap.
 */
static enum kb_err add_digit(int64_t *acc, int d, int64_t q, char **errmsg)
{
    enum kb_err err = KB_E_INVALID;
    if (d == 0) {
        err = KB_OK;
        goto out;
    }
    if (q < 0) {
        kb_set_errmsg(errmsg, "amount has more than 6 decimal places");
        goto out;
    }
    /* 9 * 10^18 still fits int64, so the term itself never overflows; the
     * comparison against the remaining headroom keeps the sum exact. */
    if (q > 18 || d * pow10_table[q] > KB_MONEY_MAX_MICROS - *acc) {
        kb_set_errmsg(errmsg, "amount exceeds the maximum of %lld USD",
                      (long long)(KB_MONEY_MAX_MICROS / KB_MICROS_PER_USD));
        goto out;
    }
    *acc += d * pow10_table[q];
    err = KB_OK;
out:
    return err;
}

enum kb_err money_parse(const char *text, size_t len, int64_t *out, char **errmsg)
{
    enum kb_err err = KB_E_INVALID;
    const char *p = text, *end = text + len;
    int64_t acc = 0;

    if (len == 0 || text == NULL) {
        kb_set_errmsg(errmsg, "amount is empty");
        goto out;
    }
    /* All negatives are refused, "-0" included: a cap or price below zero is
     * never meant, and one rule is simpler than special-casing zero. */
    if (*p == '-') {
        kb_set_errmsg(errmsg, "amount must not be negative");
        goto out;
    }
    if (number_end(p, end) != end) {
        kb_set_errmsg(errmsg, "amount is not a JSON number");
        goto out;
    }

    /* Split the text: integer digits [int_b, int_e), fraction [frac_b,
     * frac_e), exponent. The grammar was checked above. */
    const char *int_b = p;
    while (p < end && is_digit(*p))
        p++;
    const char *int_e = p, *frac_b = p, *frac_e = p;
    if (p < end && *p == '.') {
        frac_b = ++p;
        while (p < end && is_digit(*p))
            p++;
        frac_e = p;
    }
    int64_t exp10 = 0;
    if (p < end) { /* 'e' or 'E' */
        p++;
        bool neg = false;
        if (*p == '+' || *p == '-')
            neg = *p++ == '-';
        for (; p < end; p++) {
            if (exp10 < EXP_SATURATE)
                exp10 = exp10 * 10 + (*p - '0');
        }
        if (neg)
            exp10 = -exp10;
    }

    /* A digit at power 10^k of the written number is worth 10^(k+exp+6)
     * micros. Most significant first, so "too large" wins over "too precise"
     * when both apply. */
    int64_t n_int = (int64_t)(int_e - int_b);
    for (const char *d = int_b; d < int_e; d++) {
        int64_t k = n_int - 1 - (int64_t)(d - int_b);
        err = add_digit(&acc, *d - '0', k + exp10 + 6, errmsg);
        if (err != KB_OK)
            goto out;
    }
    for (const char *d = frac_b; d < frac_e; d++) {
        int64_t k = -1 - (int64_t)(d - frac_b);
        err = add_digit(&acc, *d - '0', k + exp10 + 6, errmsg);
        if (err != KB_OK)
            goto out;
    }
    *out = acc;
    err = KB_OK;
out:
    return err;
}

char *money_format(int64_t micros, char *buf, size_t size)
{
    /* Magnitude in unsigned arithmetic so INT64_MIN formats too. */
    unsigned long long mag =
        micros < 0 ? 0ULL - (unsigned long long)micros : (unsigned long long)micros;
    unsigned long long per = (unsigned long long)KB_MICROS_PER_USD;
    if (size == 0)
        return buf;
    int n = snprintf(buf, size, "%s%llu.%06llu", micros < 0 ? "-" : "", mag / per, mag % per);
    if (n < 0)
        buf[0] = '\0';
    return buf;
}

/* ---- money_json_number: an allocation-free JSON scanner ---------------- */

struct scan {
    const char *p;   /* borrowed; next unread byte */
    const char *end; /* borrowed; one past the last byte */
};

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* Reads the 4 hex digits of a \u escape at s->p. Returns -1 if malformed. */
static long read_u4(struct scan *s)
{
    long v = 0;
    if (s->end - s->p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int h = crypto_hexdigit(*s->p++);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Length of the well-formed UTF-8 sequence at p (lead byte >= 0x80), or 0
 * (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    }
    return n;
}

/* Writes code point cp (valid, not a surrogate) as UTF-8; returns its length. */
static size_t utf8_encode(long cp, unsigned char u[4])
{
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | (cp >> 6));
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | (cp >> 12));
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | (cp >> 18));
    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Feeds one decoded byte of a string to the key comparison. */
static void match_byte(const char *key, size_t *ki, bool *match, unsigned char b)
{
    if (*match && key[*ki] != '\0' && (unsigned char)key[*ki] == b)
        (*ki)++;
    else
        *match = false;
}

/*
 * Scans the string whose opening quote is at s->p, validating escapes and
 * UTF-8 as jansson does (lone surrogate escapes are refused). When key is
 * non-NULL, *match says whether the decoded string equals it; decoding is
 * done byte by byte against key, so nothing is copied.
 */
static bool scan_string(struct scan *s, const char *key, bool *match)
{
    size_t ki = 0;
    bool m = key != NULL;
    s->p++; /* opening quote */
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            if (match)
                *match = m && key[ki] == '\0';
            return true;
        }
        if (c < 0x20)
            return false;
        if (c >= 0x80) {
            size_t n = utf8_len((const unsigned char *)s->p, (const unsigned char *)s->end);
            if (n == 0)
                return false;
            for (size_t i = 0; i < n; i++)
                match_byte(key, &ki, &m, (unsigned char)s->p[i]);
            s->p += n;
            continue;
        }
        s->p++;
        if (c != '\\') {
            match_byte(key, &ki, &m, c);
            continue;
        }
        if (s->p >= s->end)
            return false;
        char e = *s->p++;
        const char *simple = "\"\\/bfnrt", *decoded = "\"\\/\b\f\n\r\t";
        bool found = false;
        for (int i = 0; simple[i]; i++) {
            if (e == simple[i]) {
                match_byte(key, &ki, &m, (unsigned char)decoded[i]);
                found = true;
            }
        }
        if (found)
            continue;
        if (e != 'u')
            return false;
        long cp = read_u4(s);
        if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
            return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            /* A high surrogate must be followed by an escaped low one. */
            if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
                return false;
            s->p += 2;
            long lo = read_u4(s);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        unsigned char u[4];
        size_t n = utf8_encode(cp, u);
        for (size_t i = 0; i < n; i++)
            match_byte(key, &ki, &m, u[i]);
    }
    return false; /* unterminated */
}

static bool scan_literal(struct scan *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s->p[i] != lit[i])
            return false;
    }
    s->p += n;
    return true;
}

/* What the scanner expects next. */
enum scan_state {
    ST_VALUE = 0,  /* any value */
    ST_AFTER = 1,  /* a value just ended: ',' or a closer, or the end */
    ST_MEMBER = 2, /* an object member name, then ':' */
};

/* What became of the member being looked for. */
enum found {
    FOUND_NONE = 0,       /* not seen (yet) */
    FOUND_NUMBER = 1,     /* seen with a number value */
    FOUND_NOT_NUMBER = 2, /* seen with another kind of value */
};

/*
 * One pass over the whole text with an explicit container stack (a bit per
 * level: 1 object, 0 array), so hostile nesting costs no C stack. The text
 * is validated to its end even after the member is found, so a truncated or
 * corrupt body is never half-trusted. A second top-level occurrence of the
 * key is refused as malformed: which one counts would depend on the parser.
 */
enum kb_err money_json_number(const char *json, size_t len, const char *key, const char **start,
                              size_t *vlen)
{
    enum kb_err err = KB_E_BAD_JSON;
    struct scan s = {json, json + len};
    unsigned char stack[SCAN_MAX_DEPTH / 8] = {0};
    size_t depth = 0;
    enum scan_state st = ST_VALUE;
    enum found found = FOUND_NONE;
    bool want = false; /* the next value is the sought member's */
    const char *num_b = NULL, *num_e = NULL;

    if (json == NULL)
        goto out;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        goto out; /* the top level must be an object */

    for (;;) {
        skip_ws(&s);
        if (st == ST_MEMBER) {
            bool match = false;
            if (s.p >= s.end || *s.p != '"' || !scan_string(&s, depth == 1 ? key : NULL, &match))
                goto out;
            if (match) {
                if (found != FOUND_NONE)
                    goto out; /* duplicate top-level key */
                want = true;
            }
            skip_ws(&s);
            if (s.p >= s.end || *s.p != ':')
                goto out;
            s.p++;
            st = ST_VALUE;
            continue;
        }
        if (st == ST_AFTER) {
            if (depth == 0)
                break;
            bool in_obj = (stack[(depth - 1) / 8] >> ((depth - 1) % 8)) & 1;
            if (s.p >= s.end)
                goto out;
            char c = *s.p++;
            if (c == ',') {
                st = in_obj ? ST_MEMBER : ST_VALUE;
            } else if (c == (in_obj ? '}' : ']')) {
                depth--;
            } else {
                goto out;
            }
            continue;
        }
        /* ST_VALUE */
        if (s.p >= s.end)
            goto out;
        char c = *s.p;
        if (c == '{' || c == '[') {
            bool obj = c == '{';
            if (depth == SCAN_MAX_DEPTH)
                goto out;
            if (obj)
                stack[depth / 8] = (unsigned char)(stack[depth / 8] | (1u << (depth % 8)));
            else
                stack[depth / 8] = (unsigned char)(stack[depth / 8] & ~(1u << (depth % 8)));
            depth++;
            s.p++;
            if (want) {
                found = FOUND_NOT_NUMBER;
                want = false;
            }
            skip_ws(&s);
            if (s.p < s.end && *s.p == (obj ? '}' : ']')) {
                s.p++;
                depth--;
                st = ST_AFTER;
            } else {
                st = obj ? ST_MEMBER : ST_VALUE;
            }
            continue;
        }
        const char *b = s.p;
        if (c == '"') {
            if (!scan_string(&s, NULL, NULL))
                goto out;
        } else if (c == '-' || is_digit(c)) {
            const char *e = number_end(s.p, s.end);
            if (e == NULL)
                goto out;
            s.p = e;
        } else if (!scan_literal(&s, "true", 4) && !scan_literal(&s, "false", 5) &&
                   !scan_literal(&s, "null", 4)) {
            goto out;
        }
        if (want) {
            bool num = c == '-' || is_digit(c);
            found = num ? FOUND_NUMBER : FOUND_NOT_NUMBER;
            num_b = b;
            num_e = s.p;
            want = false;
        }
        st = ST_AFTER;
    }
    skip_ws(&s);
    if (s.p != s.end)
        goto out; /* trailing bytes after the object */

    if (found == FOUND_NONE) {
        err = KB_E_NOT_FOUND;
    } else if (found == FOUND_NOT_NUMBER) {
        err = KB_E_INVALID;
    } else {
        *start = num_b;
        *vlen = (size_t)(num_e - num_b);
        err = KB_OK;
    }
out:
    return err;
}
