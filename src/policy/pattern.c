/*
 * pattern.c - compiles `allowed_endpoints` patterns (grammar in pattern.h,
 * docs/policy.md) into a flat table and matches canonical paths against it.
 *
 * Compile time (key issuance) does all the checking and lays every pattern
 * out as a run of segment records pointing into one string of literal
 * bytes. Deny patterns are placed first, so policy_allows is one loop whose
 * first matching pattern decides: a deny answers false before any allow is
 * looked at. Matching walks path and pattern together once and allocates
 * nothing.
 *
 * A literal segment matches a path segment when they spell the same bytes
 * after the path's percent escapes are decoded ("a:b" matches "a%3Ab"):
 * vendors decode before routing, and a deny that matched only one spelling
 * could be walked around with the other. canon.c has already refused the
 * escapes that could change segment structure (%2F %2E %5C %25, controls).
 */
#include "policy/pattern.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

/* Request methods a pattern may name; a method matches only itself. */
static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))
#define METHOD_ANY 0xff /* pattern without a method prefix */
#define STR(x) #x
#define XSTR(x) STR(x)

enum seg_kind {
    SEG_LITERAL = 0, /* bytes text[off, off + len) */
    SEG_ONE = 1,     /* '+': exactly one segment */
};

struct kb_seg {
    uint32_t off; /* into kb_policy.text (SEG_LITERAL) */
    uint16_t len; /* literal length; <= KB_PATTERN_MAX_LEN */
    uint8_t kind; /* enum seg_kind */
};

struct kb_pat {
    uint32_t first; /* index of the first segment in kb_policy.segs */
    uint16_t nseg;  /* segments before the optional trailing '*' */
    uint8_t method; /* index into methods[], or METHOD_ANY */
    bool deny;      /* a match refuses the request */
    bool rest;      /* trailing '*': one or more further segments */
};

struct kb_policy {
    struct kb_pat *pats; /* owned; n entries, deny patterns first */
    size_t n;            /* number of patterns */
    struct kb_seg *segs; /* owned; all patterns' segments, back to back */
    char *text;          /* owned; all literal segment bytes, back to back */
};

/* Bytes allowed in a literal pattern segment: RFC 3986 pchar without '%'
 * (patterns spell bytes, not escapes), ';' (canon.h refuses it) and the two
 * wildcard characters '+' and '*', which are only ever whole segments. */
static bool literal_byte(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("-._~!$&'(),=:@", c) != NULL;
}

/* Writes a printable rendering of pattern p (at most ~60 bytes, non-ASCII and
 * control bytes as \xNN) into out, so an errmsg is always clean ASCII that a
 * JSON body can carry. */
static void show(char *out, size_t cap, const char *p)
{
    size_t o = 0;
    for (; *p && o + 5 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (o >= 60) {
            out[o++] = '.';
            out[o++] = '.';
            out[o++] = '.';
            break;
        }
        if (c < 0x20 || c >= 0x7f || c == '\\' || c == '"') {
            static const char hex[] = "0123456789abcdef";
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* Sets *errmsg to "pattern[i] "...": why". */
static enum kb_err bad(char **errmsg, size_t i, const char *pat, const char *why)
{
    char shown[72];
    show(shown, sizeof(shown), pat ? pat : "");
    kb_set_errmsg(errmsg, "allowed_endpoints[%zu] \"%s\": %s", i, shown, why);
    return KB_E_INVALID;
}

/* Parses pattern number idx into p, appending its segments to pol->segs
 * (from *nsegs on) and its literal bytes to pol->text (from *ntext on).
 * Both arrays were sized for the worst case by the caller. */
static enum kb_err parse_one(struct kb_policy *pol, size_t idx, const char *pat, struct kb_pat *p,
                             size_t *nsegs, size_t *ntext, char **errmsg)
{
    if (!pat || !*pat)
        return bad(errmsg, idx, pat, "the pattern is empty");
    size_t len = strlen(pat);
    if (len > KB_PATTERN_MAX_LEN)
        return bad(errmsg, idx, pat,
                   "the pattern is longer than " XSTR(KB_PATTERN_MAX_LEN) " bytes");

    const char *s = pat;
    p->deny = false;
    if (strncmp(s, "deny:", 5) == 0) {
        p->deny = true;
        s += 5;
    }
    p->method = METHOD_ANY;
    if (*s != '/') {
        const char *sp = strchr(s, ' ');
        if (!sp)
            return bad(errmsg, idx, pat, "the path must start with '/'");
        size_t mlen = (size_t)(sp - s);
        if (mlen == 0)
            return bad(errmsg, idx, pat, "unexpected space: the path must start with '/'");
        for (size_t m = 0; m < N_METHODS; m++) {
            if (strlen(methods[m]) == mlen && memcmp(s, methods[m], mlen) == 0)
                p->method = (uint8_t)m;
        }
        if (p->method == METHOD_ANY)
            return bad(errmsg, idx, pat,
                       "unknown method (use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)");
        s = sp + 1;
        if (*s != '/')
            return bad(errmsg, idx, pat, "the path must start with '/' after one space");
    }

    p->first = (uint32_t)*nsegs;
    p->nseg = 0;
    p->rest = false;
    if (s[1] == '\0')
        return KB_OK; /* "/" alone: the root, no segments */

    /* One segment per round: s points at the '/' before it. */
    while (*s == '/') {
        const char *a = s + 1;
        const char *b = a;
        while (*b && *b != '/')
            b++;
        size_t n = (size_t)(b - a);
        if (n == 0)
            return bad(errmsg, idx, pat,
                       *b ? "empty segment (\"//\")"
                          : "trailing '/' (write the path without it; only \"/\" may end in '/')");
        if (p->rest)
            return bad(errmsg, idx, pat, "'*' is only allowed as the last segment");
        if (n == 1 && *a == '*') {
            p->rest = true;
        } else if (n == 1 && *a == '+') {
            pol->segs[*nsegs] = (struct kb_seg){.off = 0, .len = 0, .kind = SEG_ONE};
            (*nsegs)++;
            p->nseg++;
        } else {
            for (const char *c = a; c < b; c++) {
                if (*c == '*' || *c == '+')
                    return bad(errmsg, idx, pat,
                               "'*' and '+' are wildcards and must be a whole segment");
                if (*c == '%')
                    return bad(errmsg, idx, pat,
                               "'%' is not allowed: write the byte itself, escapes in "
                               "requests are matched decoded");
                if (!literal_byte((unsigned char)*c))
                    return bad(errmsg, idx, pat,
                               *c == '?' ? "a pattern has no query: the query is never matched"
                                         : "a path byte that is not allowed "
                                           "(letters, digits and -._~!$&'(),=:@ only)");
            }
            if (a[0] == '.' && (n == 1 || (n == 2 && a[1] == '.')))
                return bad(errmsg, idx, pat, "\".\" and \"..\" segments are not allowed");
            pol->segs[*nsegs] =
                (struct kb_seg){.off = (uint32_t)*ntext, .len = (uint16_t)n, .kind = SEG_LITERAL};
            memcpy(pol->text + *ntext, a, n);
            *ntext += n;
            (*nsegs)++;
            p->nseg++;
        }
        s = b;
    }
    return KB_OK;
}

enum kb_err policy_compile(const char *const *patterns, size_t n, struct kb_policy **out,
                           char **errmsg)
{
    enum kb_err err = KB_OK;
    struct kb_policy *pol = NULL;
    struct kb_pat *tmp = NULL;

    if (n == 0) {
        kb_set_errmsg(errmsg, "allowed_endpoints is empty: list at least one pattern");
        err = KB_E_INVALID;
        goto out;
    }
    if (n > KB_POLICY_MAX_PATTERNS) {
        kb_set_errmsg(errmsg, "allowed_endpoints has %zu patterns, over the limit of %d", n,
                      KB_POLICY_MAX_PATTERNS);
        err = KB_E_INVALID;
        goto out;
    }
    /* Worst case: every pattern byte pair is a segment, every byte literal.
     * Over-long patterns are refused in parse_one; clamp so sizing is safe. */
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = patterns[i] ? strlen(patterns[i]) : 0;
        bytes += l > KB_PATTERN_MAX_LEN ? KB_PATTERN_MAX_LEN : l;
    }
    pol = kb_calloc(1, sizeof(*pol));
    pol->segs = kb_malloc((bytes / 2 + 1) * sizeof(*pol->segs));
    pol->text = kb_malloc(bytes + 1);
    pol->pats = kb_malloc(n * sizeof(*pol->pats));
    tmp = kb_malloc(n * sizeof(*tmp));

    size_t nsegs = 0, ntext = 0;
    for (size_t i = 0; i < n; i++) {
        err = parse_one(pol, i, patterns[i], &tmp[i], &nsegs, &ntext, errmsg);
        if (err != KB_OK)
            goto out;
    }
    /* Deny patterns first, each group in list order, so the first match decides. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            if (tmp[i].deny == (pass == 0))
                pol->pats[pol->n++] = tmp[i];
        }
    }
    *out = pol;
    pol = NULL;
out:
    free(tmp);
    policy_free(pol);
    return err;
}

/* Value of hex digit c (canon.h guarantees escapes are well formed). */
static unsigned hexval(unsigned char c)
{
    if (c <= '9')
        return (unsigned)(c - '0');
    return (unsigned)((c | 0x20) - 'a' + 10);
}

/* Matches literal lit[0, n) against the path segment starting at path[*i];
 * on success *i is left on the '/' or end that closes the segment. */
static bool match_literal(const char *lit, size_t n, const unsigned char *path, size_t len,
                          size_t *i)
{
    size_t j = *i;
    for (size_t k = 0; k < n; k++) {
        if (j >= len)
            return false;
        unsigned char c = path[j];
        if (c == '%' && len - j >= 3) {
            c = (unsigned char)(hexval(path[j + 1]) << 4 | hexval(path[j + 2]));
            j += 3;
        } else {
            j++;
        }
        if (c != (unsigned char)lit[k])
            return false;
    }
    if (j < len && path[j] != '/')
        return false;
    *i = j;
    return true;
}

/* True when pattern p matches path[0, len) (p's method already checked). */
static bool match_pat(const struct kb_policy *pol, const struct kb_pat *p,
                      const unsigned char *path, size_t len)
{
    /* i is the start of the next unmatched segment, or len when none is left;
     * the root "/" has none. */
    size_t i = len > 1 ? 1 : len;
    const struct kb_seg *seg = pol->segs + p->first;
    for (uint16_t k = 0; k < p->nseg; k++, seg++) {
        if (i >= len)
            return false;
        if (seg->kind == SEG_ONE) {
            size_t j = i;
            while (j < len && path[j] != '/')
                j++;
            if (j == i)
                return false; /* empty segment: never in a canonical path */
            i = j;
        } else if (!match_literal(pol->text + seg->off, seg->len, path, len, &i)) {
            return false;
        }
        /* i is on the closing '/' or at len; step over the '/'. */
        if (i < len)
            i++;
    }
    if (p->rest)
        return i < len; /* one or more further segments */
    return i >= len;
}

/* The methods[] index of method, or METHOD_ANY if it is not one of them. */
static uint8_t method_index(const char *method)
{
    if (!method)
        return METHOD_ANY;
    for (size_t m = 0; m < N_METHODS; m++) {
        if (strcmp(method, methods[m]) == 0)
            return (uint8_t)m;
    }
    return METHOD_ANY;
}

bool policy_allows(const struct kb_policy *p, const char *method, const char *path, size_t path_len)
{
    if (!p || !path || path_len == 0 || path[0] != '/')
        return false;
    uint8_t m = method_index(method);
    const unsigned char *s = (const unsigned char *)path;
    for (size_t i = 0; i < p->n; i++) {
        const struct kb_pat *pat = &p->pats[i];
        if (pat->method != METHOD_ANY && pat->method != m)
            continue;
        if (match_pat(p, pat, s, path_len))
            return !pat->deny; /* denies come first: the first match decides */
    }
    return false;
}

void policy_free(struct kb_policy *p)
{
    if (!p)
        return;
    free(p->pats);
    free(p->segs);
    free(p->text);
    free(p);
}
