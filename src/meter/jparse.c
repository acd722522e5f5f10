/*
 * jparse.c - a faster json_loadb for the meters' per-request parses (see
 * meter__json_loadb in meter_int.h).
 *
 * Why: jansson reads a byte at a time through a stream callback, checks
 * UTF-8 per byte, copies every token into a string buffer and then again
 * into the value; on a chat request or answer that is most of the CPU a
 * meter spends. This parser walks the text in place with table-driven
 * loops and builds the same jansson values with jansson's own setters, so
 * the vendor meters read exactly the tree they read before.
 *
 * The contract is one-sided on purpose: it accepts only text jansson
 * accepts, and builds the value jansson would build (same members, same
 * order, same last-wins for duplicate keys, same integers and doubles).
 * Whenever it would refuse, or meets anything it does not handle itself
 * (flags other than JSON_REJECT_DUPLICATES, nesting past PARSE_MAX_DEPTH),
 * it hands the text to json_loadb, which decides and writes the error a
 * caller may show. So a refusal costs two parses, and an acceptance never
 * differs from jansson's (tests/unit/test_jparse.c compares them on
 * generated and mutated inputs; tests/fuzz/fuzz_jparse.c keeps doing so).
 *
 * The optional keep list builds only the members a meter reads (usage,
 * service_tier, ...): the rest of the text is still checked exactly as
 * jansson checks it (strings, escapes, UTF-8, number ranges, nesting), so
 * the answer is accepted or refused as before, but costs no allocation.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "meter/meter_int.h"

/* Nesting handled here (jansson's limit is JSON_PARSER_MAX_DEPTH, 2048);
 * deeper text goes to jansson. Bounds this parser's recursion. */
#define PARSE_MAX_DEPTH 128

/* Member names up to this size are decoded on the stack (one buffer per
 * open object, so it stays small). */
#define KEY_STACK 64

struct jp {
    const unsigned char *p;   /* cursor */
    const unsigned char *end; /* end of the text */
    size_t flags;             /* 0, JSON_REJECT_DUPLICATES or METER_JSON_KEPT_ONCE */
    int depth;                /* values open, as jansson counts them */
    char *scratch;            /* owned; decoded string values (one at a time) */
    size_t scratch_cap;       /* bytes at scratch */
};

/* Bytes that may appear raw in a string and need no look: printable
 * ASCII other than '"' and '\\'. Everything else is a control character
 * (refused), a quote, a backslash or the lead byte of a UTF-8 sequence. */
static inline bool plain(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* The value of a hex digit, -1 for another byte. */
static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* One UTF-8 sequence starting at s (lead byte >= 0x80), strictly as
 * jansson checks it (utf8_check_first/full): no overlong forms, no
 * surrogates, nothing past U+10FFFF. Returns its length, 0 if invalid. */
static size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
    unsigned c = s[0];
    size_t n;
    uint32_t v;

    if (c >= 0xC2 && c <= 0xDF)
        n = 2, v = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, v = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, v = c & 0x07;
    else
        return 0;
    if ((size_t)(end - s) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (n == 3 && v < 0x800) ||
        (n == 4 && v < 0x10000))
        return 0;
    return n;
}

/* Four hex digits at s (the bytes after "\u"); -1 when not. */
static int32_t hex4(const unsigned char *s, const unsigned char *end)
{
    int32_t v = 0;
    if (end - s < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static size_t utf8_put(uint32_t v, char *o)
{
    if (v < 0x80) {
        o[0] = (char)v;
        return 1;
    }
    if (v < 0x800) {
        o[0] = (char)(0xC0 | (v >> 6));
        o[1] = (char)(0x80 | (v & 0x3F));
        return 2;
    }
    if (v < 0x10000) {
        o[0] = (char)(0xE0 | (v >> 12));
        o[1] = (char)(0x80 | ((v >> 6) & 0x3F));
        o[2] = (char)(0x80 | (v & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (v >> 18));
    o[1] = (char)(0x80 | ((v >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((v >> 6) & 0x3F));
    o[3] = (char)(0x80 | (v & 0x3F));
    return 4;
}

/*
 * A string; j->p is on its opening quote. On success j->p is past the
 * closing quote, and, when out is not NULL, the decoded bytes are in
 * *out: the raw text itself when it has no escape, else stack (stack_len
 * bytes) when it fits, else a kb_malloc'd buffer returned in *heap for the
 * caller to free; with stack NULL, j->scratch (valid until the next
 * string). \u0000 is
 * refused as jansson refuses it without JSON_ALLOW_NUL.
 */
static bool string(struct jp *j, const char **out, size_t *out_len, char *stack, size_t stack_len,
                   char **heap)
{
    const unsigned char *s = j->p + 1, *e = j->end, *q = s;
    bool esc = false;

    /* Pass 1: find the end, check every byte. */
    for (;;) {
        while (e - q >= 8) {
            /* Eight plain bytes at a time: none with the high bit, none
             * below 0x20, no '"', no '\\' (the classic has-zero-byte
             * test on w, w ^ '"'..., w ^ '\\'...). */
            uint64_t w;
            memcpy(&w, q, 8);
            const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
            uint64_t qt = w ^ (ones * '"'), bs = w ^ (ones * '\\');
            uint64_t bad =
                (w | ((w - ones * 0x20) & ~w) | ((qt - ones) & ~qt) | ((bs - ones) & ~bs)) & high;
            if (bad) {
                /* The lowest flag is exact (a borrow only runs upward from
                 * a true match): on little-endian it is the first byte. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                q += __builtin_ctzll(bad) / 8;
#endif
                break;
            }
            q += 8;
        }
        while (q < e && plain(*q))
            q++;
        if (q >= e)
            return false;
        if (*q == '"')
            break;
        if (*q == '\\') {
            if (e - q < 2)
                return false;
            unsigned char c = q[1];
            if (c == 'u') {
                if (hex4(q + 2, e) < 0)
                    return false;
                q += 6;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                       c == 'r' || c == 't') {
                q += 2;
            } else {
                return false;
            }
            esc = true;
        } else if (*q >= 0x80) {
            size_t n = utf8_len(q, e);
            if (!n)
                return false;
            q += n;
        } else {
            return false; /* a control character */
        }
    }
    j->p = q + 1;
    size_t raw = (size_t)(q - s);
    if (!esc) {
        if (out) {
            *out = (const char *)s;
            *out_len = raw;
        }
        return true;
    }
    /* Pass 2: decode (also needed without out: surrogates and \u0000 are
     * only checked here). Decoded text is never longer than raw text. */
    char *d = NULL;
    if (out && stack && raw <= stack_len) {
        d = stack;
    } else if (out && stack) {
        *heap = kb_malloc(raw);
        d = *heap;
    } else if (out) {
        /* a value: the parse's scratch buffer, consumed before the next */
        if (raw > j->scratch_cap) {
            j->scratch_cap = raw > 256 ? raw : 256;
            free(j->scratch);
            j->scratch = kb_malloc(j->scratch_cap);
        }
        d = j->scratch;
    }
    size_t k = 0;
    for (const unsigned char *p = s; p < q;) {
        if (*p != '\\') {
            const unsigned char *r = p;
            while (r < q && *r != '\\')
                r++;
            if (d)
                memcpy(d + k, p, (size_t)(r - p));
            k += (size_t)(r - p);
            p = r;
            continue;
        }
        unsigned char c = p[1];
        if (c != 'u') {
            char x = c == 'b'   ? '\b'
                     : c == 'f' ? '\f'
                     : c == 'n' ? '\n'
                     : c == 'r' ? '\r'
                     : c == 't' ? '\t'
                                : (char)c;
            if (d)
                d[k] = x;
            k++;
            p += 2;
            continue;
        }
        int32_t v = hex4(p + 2, q);
        p += 6;
        if (v == 0)
            goto bad; /* \u0000 */
        if (v >= 0xD800 && v <= 0xDBFF) {
            if (q - p < 6 || p[0] != '\\' || p[1] != 'u')
                goto bad;
            int32_t lo = hex4(p + 2, q);
            if (lo < 0xDC00 || lo > 0xDFFF)
                goto bad;
            v = ((v - 0xD800) << 10) + (lo - 0xDC00) + 0x10000;
            p += 6;
        } else if (v >= 0xDC00 && v <= 0xDFFF) {
            goto bad;
        }
        char u[4];
        size_t n = utf8_put((uint32_t)v, u);
        if (d)
            memcpy(d + k, u, n);
        k += n;
    }
    if (out) {
        *out = d;
        *out_len = k;
    }
    return true;
bad:
    if (heap) {
        free(*heap);
        *heap = NULL;
    }
    return false;
}

/* A number, checked and converted as jansson's lex_scan_number does
 * (strtoll for integers, refusing out of range; strtod for the rest,
 * refusing overflow). *v gets the value when v is not NULL. */
static bool number(struct jp *j, json_t **v)
{
    const unsigned char *s = j->p, *p = s, *e = j->end;
    bool neg = false, real = false;

    if (p < e && *p == '-')
        neg = true, p++;
    if (p >= e || *p < '0' || *p > '9')
        return false;
    if (*p == '0') {
        p++;
        if (p < e && *p >= '0' && *p <= '9')
            return false;
    } else {
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && *p == '.') {
        real = true;
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return false;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return false;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;
    if (!real) {
        /* Digits without leading zeros: at most 19 fit without a check. */
        const unsigned char *d = s + neg;
        uint64_t x = 0;
        size_t nd = (size_t)(p - d);
        if (nd > 19)
            return false;
        for (; d < p; d++)
            x = x * 10 + (uint64_t)(*d - '0');
        if (x > (uint64_t)INT64_MAX + neg)
            return false;
        if (v)
            *v = json_integer(!neg                           ? (json_int_t)x
                              : x == (uint64_t)INT64_MAX + 1 ? INT64_MIN
                                                             : -(json_int_t)x);
        return true;
    }
    /* strtod needs a terminated copy; a long number is converted from the
     * heap (still checked: an overflow refuses the whole text). */
    char stack[64], *buf = stack, *end;
    size_t n = (size_t)(p - s);
    if (n >= sizeof stack)
        buf = kb_malloc(n + 1);
    memcpy(buf, s, n);
    buf[n] = '\0';
    double x = strtod(buf, &end);
    /* jansson refuses an overflow (HUGE_VAL); an underflow is a value */
    bool ok = end == buf + n && !isinf(x) && !isnan(x);
    if (buf != stack)
        free(buf);
    if (!ok)
        return false; /* overflow, or a locale whose decimal point is not '.' */
    if (v)
        *v = json_real(x);
    return true;
}

/* Whether p starts with the literal lit followed by a non-letter (jansson
 * reads a whole run of letters as one token). */
static bool literal(struct jp *j, const char *lit, size_t n)
{
    const unsigned char *p = j->p;
    if ((size_t)(j->end - p) < n || memcmp(p, lit, n) != 0)
        return false;
    p += n;
    if (p < j->end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        return false;
    j->p = p;
    return true;
}

static bool value(struct jp *j, const struct meter__jkeep *keep, json_t **out);

/* The entry of keep named by key (len bytes), or NULL. */
static const struct meter__jkeep *keep_find(const struct meter__jkeep *keep, const char *key,
                                            size_t len)
{
    /* The first byte first: most members are not kept. (A decoded name
     * never holds a NUL: \u0000 is refused.) */
    unsigned char c = len ? (unsigned char)key[0] : 0;
    for (; keep->key; keep++)
        if ((unsigned char)keep->key[0] == c && strlen(keep->key) == len &&
            memcmp(keep->key, key, len) == 0)
            return keep;
    return NULL;
}

/* Marks "keep the value whole" for value(): a non-NULL list that is never
 * looked into. */
static const struct meter__jkeep keep_whole[] = {{NULL, NULL}};

static bool object(struct jp *j, const struct meter__jkeep *keep, json_t **out)
{
    json_t *obj = out ? json_object() : NULL;
    char stack[KEY_STACK];

    j->p++; /* '{' */
    ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        goto done;
    }
    for (;;) {
        const char *key = NULL;
        size_t klen = 0;
        char *heap = NULL;
        json_t *v = NULL;
        bool want;
        const struct meter__jkeep *sub = keep_whole;

        if (j->p >= j->end || *j->p != '"')
            goto fail;
        /* Keys are decoded when they may be kept or looked up. */
        if (!string(j, out ? &key : NULL, &klen, stack, sizeof stack, &heap))
            goto fail;
        want = out != NULL;
        if (want && keep != keep_whole) {
            const struct meter__jkeep *k = keep_find(keep, key, klen);
            want = k != NULL;
            sub = k && k->sub ? k->sub : keep_whole;
        }
        ws(j);
        if (j->p >= j->end || *j->p != ':') {
            free(heap);
            goto fail;
        }
        j->p++;
        ws(j);
        if (!value(j, sub, want ? &v : NULL)) {
            free(heap);
            goto fail;
        }
        if (want) {
            /* A key set twice does not grow the object: that is how a
             * duplicate shows, without a lookup of its own. */
            size_t before = json_object_size(obj);
            if (json_object_setn_new_nocheck(obj, key, klen, v) != 0 ||
                ((j->flags & (JSON_REJECT_DUPLICATES | METER_JSON_KEPT_ONCE)) &&
                 json_object_size(obj) == before)) {
                free(heap);
                goto fail;
            }
        }
        free(heap);
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            ws(j);
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            break;
        }
        goto fail;
    }
done:
    if (out)
        *out = obj;
    return true;
fail:
    json_decref(obj);
    return false;
}

static bool array(struct jp *j, const struct meter__jkeep *keep, json_t **out)
{
    json_t *arr = out ? json_array() : NULL;

    j->p++; /* '[' */
    ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        goto done;
    }
    for (;;) {
        json_t *v = NULL;
        /* A keep list applies to each element. */
        if (!value(j, keep, out ? &v : NULL))
            goto fail;
        if (out && json_array_append_new(arr, v) != 0)
            goto fail;
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            ws(j);
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            break;
        }
        goto fail;
    }
done:
    if (out)
        *out = arr;
    return true;
fail:
    json_decref(arr);
    return false;
}

/* One value at j->p (whitespace skipped); *out gets it when out is not
 * NULL, else it is only checked. */
static bool value(struct jp *j, const struct meter__jkeep *keep, json_t **out)
{
    bool ok;

    if (j->p >= j->end || ++j->depth > PARSE_MAX_DEPTH)
        return false;
    switch (*j->p) {
    case '{':
        ok = object(j, keep, out);
        break;
    case '[':
        ok = array(j, keep, out);
        break;
    case '"': {
        const char *s;
        size_t n;
        ok = string(j, out ? &s : NULL, &n, NULL, 0, NULL);
        if (ok && out)
            *out = json_stringn_nocheck(s, n);
        break;
    }
    case 't':
        ok = literal(j, "true", 4);
        if (ok && out)
            *out = json_true();
        break;
    case 'f':
        ok = literal(j, "false", 5);
        if (ok && out)
            *out = json_false();
        break;
    case 'n':
        ok = literal(j, "null", 4);
        if (ok && out)
            *out = json_null();
        break;
    default:
        ok = number(j, out);
        break;
    }
    j->depth--;
    return ok && (!out || *out);
}

json_t *meter__json_loadb(const char *text, size_t len, size_t flags,
                          const struct meter__jkeep *keep, json_error_t *err)
{
    struct jp j = {0};
    json_t *root = NULL;

    if (!text || (flags & ~(size_t)(JSON_REJECT_DUPLICATES | METER_JSON_KEPT_ONCE)) ||
        (keep && (flags & JSON_REJECT_DUPLICATES)))
        goto jansson; /* duplicates in a skipped value would go unseen */
    j.p = (const unsigned char *)text;
    j.end = j.p + len;
    j.flags = flags;
    j.depth = 0;
    ws(&j);
    if (j.p >= j.end || (*j.p != '{' && *j.p != '['))
        goto jansson;
    if (!value(&j, keep ? keep : keep_whole, &root))
        goto jansson;
    ws(&j);
    if (j.p != j.end)
        goto jansson;
    free(j.scratch);
    return root;
jansson:
    free(j.scratch);
    json_decref(root);
    if (flags & METER_JSON_KEPT_ONCE) /* stricter: a repeated name anywhere */
        flags = (flags & ~METER_JSON_KEPT_ONCE) | JSON_REJECT_DUPLICATES;
    return json_loadb(text, len, flags, err);
}
