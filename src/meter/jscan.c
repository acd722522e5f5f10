/*
 * jscan.c - the incremental JSON skeleton scanner (see meter_int.h).
 *
 * Why: a vendor's answer can be any size (a 6 MiB completion, a 2 MiB SSE
 * event, a 50 MB embeddings list), but what a meter reads from it is a few
 * small members (usage, type, amount, num_segments). Buffering the whole
 * answer to hand it to jansson is unbounded memory; skipping big answers
 * loses usage. The scanner reads the text once, as it arrives, and keeps a
 * small JSON text with the same shape where it matters, which the vendor
 * meters then parse with jansson exactly as they parsed the full answer.
 *
 * How: a byte-at-a-time tokenizer (states below) with one fast path:
 * inside a string it jumps with memchr to the next quote or backslash, so
 * long strings (the bulk of a completion) cost little more than a memchr.
 * Whether a value is kept is decided once, when it starts, from where it
 * is (top level, member value, array element), how deep, and the caps.
 * Containers inside a value that is not kept are still tokenized (their
 * brackets and strings), but nothing is written.
 */
#include <string.h>

#include "core/buf.h"
#include "meter/meter_int.h"

enum st {
    ST_VALUE = 0,  /* a value is expected (first: ']' may close) */
    ST_KEY = 1,    /* a member name is expected (first: '}' may close) */
    ST_COLON = 2,  /* ':' after a member name */
    ST_AFTER = 3,  /* after a value in a container: ',' or the close */
    ST_STRING = 4, /* inside a string (esc: after a backslash) */
    ST_SCALAR = 5, /* inside a number or literal */
    ST_END = 6,    /* the top-level value ended: only whitespace may follow */
};

/* What happens to a value that starts here. */
enum keep {
    KEEP_YES = 0,  /* written to the skeleton */
    KEEP_NO = 1,   /* left out */
    KEEP_NULL = 2, /* written as null (a container nested too deep) */
};

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Characters of numbers and of true/false/null: a table, since runs of
 * digits (embedding vectors) are where the scanner spends its time. */
#define R10(c)                                                                                     \
    [c] = 1, [c + 1] = 1, [c + 2] = 1, [c + 3] = 1, [c + 4] = 1, [c + 5] = 1, [c + 6] = 1,         \
    [c + 7] = 1, [c + 8] = 1, [c + 9] = 1
static const unsigned char scalar_ch[256] = {
    R10('0'),  R10('a'),  R10('k'),  ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1, ['-'] = 1, ['+'] = 1, ['.'] = 1, ['E'] = 1,
};
#undef R10

static bool is_scalar(unsigned char c)
{
    return scalar_ch[c] != 0;
}

void meter__jscan_init(struct meter__jscan *j)
{
    memset(j, 0, sizeof *j);
}

void meter__jscan_reset(struct meter__jscan *j)
{
    struct kb_buf out = j->out;
    /* Keep a small buffer for the next event; give a big one back. */
    if (out.cap > 64 * 1024)
        buf_cleanup(&out);
    buf_reset(&out);
    memset(j, 0, sizeof *j);
    j->out = out;
}

void meter__jscan_cleanup(struct meter__jscan *j)
{
    buf_cleanup(&j->out);
    memset(j, 0, sizeof *j);
}

static void fail(struct meter__jscan *j)
{
    j->failed = true;
}

/* Appends to the skeleton, or fails the scan past its cap. */
static void put(struct meter__jscan *j, const char *s, size_t n)
{
    if (j->failed)
        return;
    if (n > METER__JSCAN_SKEL_MAX - j->out.len) {
        fail(j);
        return;
    }
    buf_append(&j->out, s, n);
}

static bool in_array(const struct meter__jscan *j)
{
    unsigned l = j->depth - 1;
    return j->depth > 0 && (j->arr[l / 64] >> (l % 64) & 1);
}

/* A value (or a null standing for one) is written as an array element:
 * a comma first unless it is the first one kept. */
static void element_comma(struct meter__jscan *j)
{
    if (j->count[j->depth]++ > 0)
        put(j, ",", 1);
}

/* Whether the value starting now is kept; `container` when it is an
 * object or array. */
static enum keep decide(struct meter__jscan *j, bool container)
{
    if (j->depth != j->edepth)
        return KEEP_NO; /* inside something not kept */
    if (j->depth == 0)
        return KEEP_YES;
    if (!in_array(j)) {
        if (j->key_drop)
            return KEEP_NO;
        if (container && j->depth + 1 > METER__JSCAN_KEEP_DEPTH) {
            j->lossy = true;
            return KEEP_NULL;
        }
        return KEEP_YES;
    }
    if (!container)
        return KEEP_NO; /* scalar array elements: never read */
    if (j->count[j->depth] >= METER__JSCAN_ARRAY_MAX || j->out.len > METER__JSCAN_SKEL_MAX / 2) {
        j->lossy = true;
        return KEEP_NO;
    }
    if (j->depth + 1 > METER__JSCAN_KEEP_DEPTH) {
        j->lossy = true;
        element_comma(j);
        return KEEP_NULL;
    }
    element_comma(j);
    return KEEP_YES;
}

/* The value that just ended leaves the tokenizer after it. */
static void value_done(struct meter__jscan *j)
{
    j->state = j->depth == 0 ? ST_END : ST_AFTER;
}

static void open_container(struct meter__jscan *j, unsigned char c)
{
    enum keep k = decide(j, true);
    unsigned l = j->depth;

    if (l >= METER__JSCAN_MAX_DEPTH) {
        fail(j);
        return;
    }
    if (c == '[')
        j->arr[l / 64] |= (uint64_t)1 << (l % 64);
    else
        j->arr[l / 64] &= ~((uint64_t)1 << (l % 64));
    if (k == KEEP_NULL)
        put(j, "null", 4);
    j->depth++;
    if (k == KEEP_YES) {
        put(j, (const char *)&c, 1);
        j->edepth = j->depth;
        j->count[j->depth] = 0;
    }
    j->first = true;
    j->state = c == '[' ? ST_VALUE : ST_KEY;
}

static void close_container(struct meter__jscan *j, unsigned char c)
{
    if (j->depth == 0 || in_array(j) != (c == ']')) {
        fail(j);
        return;
    }
    if (j->depth == j->edepth) {
        put(j, (const char *)&c, 1);
        j->edepth--;
    }
    j->depth--;
    value_done(j);
}

static void tok_add(struct meter__jscan *j, const char *s, size_t n)
{
    if (!j->tok_keep || j->tok_len > METER__JSCAN_STR_MAX)
        return;
    if (n > METER__JSCAN_STR_MAX - j->tok_len) {
        j->tok_len = METER__JSCAN_STR_MAX + 1;
        return;
    }
    memcpy(j->tok + j->tok_len, s, n);
    j->tok_len += n;
}

static void string_end(struct meter__jscan *j)
{
    bool fits = j->tok_len <= METER__JSCAN_STR_MAX;

    if (j->is_key) {
        j->state = ST_COLON;
        if (!j->tok_keep)
            return;
        if (!fits) {
            j->key_drop = true; /* no meter reads a member with a name this long */
            j->lossy = true;
            return;
        }
        j->key_drop = false;
        if (j->count[j->depth]++ > 0)
            put(j, ",", 1);
        put(j, "\"", 1);
        put(j, j->tok, j->tok_len);
        put(j, "\":", 2);
        return;
    }
    if (j->tok_keep) {
        put(j, "\"", 1);
        if (fits)
            put(j, j->tok, j->tok_len);
        put(j, "\"", 1);
    }
    value_done(j);
}

static void scalar_end(struct meter__jscan *j)
{
    if (j->tok_keep) {
        if (j->tok_len <= METER__JSCAN_STR_MAX) {
            put(j, j->tok, j->tok_len);
        } else {
            /* A 300-digit number is no count a meter can use: null makes
             * the meter treat it as unseen, never as a smaller figure. */
            put(j, "null", 4);
            j->lossy = true;
        }
    }
    value_done(j);
}

static void string_start(struct meter__jscan *j, bool key)
{
    j->is_key = key;
    j->tok_keep = key ? j->depth == j->edepth : decide(j, false) == KEEP_YES;
    j->tok_len = 0;
    j->esc = false;
    j->state = ST_STRING;
}

/* Where the next quote and backslash are in the piece being fed, so that
 * each memchr starts where the last one stopped: a long string with an
 * escape every few bytes and no quote in sight is still one pass. */
struct specials {
    size_t quote;  /* index of the next '"' at or after the last search, or n */
    size_t bslash; /* the same for '\\' */
    bool valid;    /* both were searched at least once */
};

/* Index of the first quote or backslash at or after i in d[0, n), or n. */
static size_t next_special(const char *d, size_t n, size_t i, struct specials *sp)
{
    if (!sp->valid || (sp->quote < i)) {
        const char *q = memchr(d + i, '"', n - i);
        sp->quote = q ? (size_t)(q - d) : n;
    }
    if (!sp->valid || (sp->bslash < i)) {
        const char *b = memchr(d + i, '\\', n - i);
        sp->bslash = b ? (size_t)(b - d) : n;
    }
    sp->valid = true;
    return sp->quote < sp->bslash ? sp->quote : sp->bslash;
}

void meter__jscan_feed(struct meter__jscan *j, const char *d, size_t n)
{
    size_t i = 0;
    struct specials sp = {0, 0, false};

    while (i < n && !j->failed) {
        unsigned char c = (unsigned char)d[i];
        switch (j->state) {
        case ST_STRING:
            if (j->esc) {
                /* The escaped byte (\" and \\ included) never ends the
                 * string; \uXXXX digits are plain bytes after it. */
                j->esc = false;
                tok_add(j, d + i, 1);
                i++;
                break;
            }
            {
                size_t k = next_special(d, n, i, &sp);
                tok_add(j, d + i, k - i);
                i = k;
            }
            if (i == n)
                break;
            if (d[i] == '\\') {
                j->esc = true;
                tok_add(j, d + i, 1);
                i++;
            } else {
                i++;
                string_end(j);
            }
            break;
        case ST_SCALAR: {
            /* A run of number characters at once (embeddings are mostly
             * numbers). */
            size_t k = i;
            while (k < n && is_scalar((unsigned char)d[k]))
                k++;
            tok_add(j, d + i, k - i);
            i = k;
            if (i < n)
                scalar_end(j); /* d[i] is read again in the next state */
            break;
        }
        case ST_VALUE: {
            bool first = j->first;
            i++;
            if (is_ws(c))
                break;
            j->first = false;
            if (c == '{' || c == '[') {
                open_container(j, c);
            } else if (c == '"') {
                string_start(j, false);
            } else if (c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n') {
                string_start(j, false); /* the same decision as for a string */
                j->state = ST_SCALAR;
                tok_add(j, d + i - 1, 1);
            } else if (c == ']' && first) {
                close_container(j, c);
            } else {
                fail(j);
            }
            break;
        }
        case ST_KEY: {
            bool first = j->first;
            i++;
            if (is_ws(c))
                break;
            j->first = false;
            if (c == '"')
                string_start(j, true);
            else if (c == '}' && first)
                close_container(j, c);
            else
                fail(j);
            break;
        }
        case ST_COLON:
            i++;
            if (c == ':')
                j->state = ST_VALUE;
            else if (!is_ws(c))
                fail(j);
            break;
        case ST_AFTER:
            i++;
            if (is_ws(c))
                break;
            if (c == ',')
                j->state = in_array(j) ? ST_VALUE : ST_KEY;
            else if (c == ']' || c == '}')
                close_container(j, c);
            else
                fail(j);
            break;
        default: /* ST_END */
            i++;
            if (!is_ws(c))
                fail(j);
            break;
        }
    }
}

bool meter__jscan_finish(struct meter__jscan *j, const char **skel, size_t *len)
{
    if (!j->failed && j->state == ST_SCALAR && j->depth == 0)
        scalar_end(j); /* a top-level number ends with the text */
    if (j->failed || j->state != ST_END)
        return false;
    if (!j->out.data)
        buf_reserve(&j->out, 0), j->out.data[0] = '\0';
    *skel = j->out.data;
    *len = j->out.len;
    return true;
}
