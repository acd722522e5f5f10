/*
 * fuzz_canon.c - libFuzzer target for policy_canon_check (src/policy/canon.c).
 *
 * The whole input is one raw request target. When it is accepted:
 *  (a) checking the accepted path part alone accepts it again with the same
 *      length, and a tighter limit never accepts a longer path;
 *  (b) an independent, deliberately naive checker (substring searches, no
 *      shared code or tables) finds none of the refused forms in the path,
 *      and no control, non-ASCII, space or '#' in the query.
 *  (c) the canonical spelling (policy_canon_path) is accepted too, is its
 *      own canonical spelling, has no escape of a raw-safe byte, and
 *      decodes to the same bytes as the path.
 * When it is refused, an errmsg is set and *path_len is untouched.
 * Any violation aborts, which libFuzzer reports as a crash.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/canon.h"

#define MAX_PATH 1024

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Case-insensitive search for needle (lower case) in s[0, n). */
static bool contains_ci(const uint8_t *s, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++) {
        size_t k = 0;
        while (k < m && (s[i + k] | (s[i + k] >= 'A' && s[i + k] <= 'Z' ? 0x20 : 0)) == needle[k])
            k++;
        if (k == m)
            return true;
    }
    return false;
}

static bool ends_with(const uint8_t *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static bool is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The accepted path p[0, n) has none of the forms canon.h refuses. */
static void check_path(const uint8_t *p, size_t n)
{
    if (n == 0 || p[0] != '/')
        abort();
    if (n > 1 && p[n - 1] == '/')
        abort(); /* trailing slash */
    static const char *const banned[] = {"//", "/./", "/../", "%2f", "%2e", "%5c", "%25"};
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++) {
        if (contains_ci(p, n, banned[i]))
            abort();
    }
    if (ends_with(p, n, "/.") || ends_with(p, n, "/.."))
        abort();
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c < 0x20 || c >= 0x7f || c == ';' || c == '#' || c == '\\' || c == ' ' || c == '?')
            abort();
        if (c == '%') {
            if (i + 2 >= n)
                abort(); /* escape cut short */
            if (!is_hex(p[i + 1]) || !is_hex(p[i + 2]))
                abort();
            /* encoded control bytes: %00-%1f, %7f */
            if (p[i + 1] == '0' || p[i + 1] == '1' || (p[i + 1] == '7' && (p[i + 2] | 0x20) == 'f'))
                abort();
        }
    }
}

/* Percent-decodes s[0, n) into out (naively); returns the length. */
static size_t decode_all(const uint8_t *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && is_hex(s[i + 1]) && is_hex(s[i + 2])) {
            char h[3] = {(char)s[i + 1], (char)s[i + 2], 0};
            out[o++] = (char)strtol(h, NULL, 16);
            i += 2;
        } else {
            out[o++] = (char)s[i];
        }
    }
    return o;
}

/* The accepted query q[0, n) (after '?') has only what canon.h lets through. */
static void check_query(const uint8_t *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = q[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            abort();
        if (c == '%' && (i + 2 >= n || !is_hex(q[i + 1]) || !is_hex(q[i + 2])))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *target = (const char *)data;
    size_t path_len = SIZE_MAX;
    char *errmsg = NULL;
    enum kb_err err = policy_canon_check(target, size, MAX_PATH, &path_len, &errmsg);
    if (err != KB_OK) {
        if (err != KB_E_BAD_PATH || !errmsg || path_len != SIZE_MAX)
            abort();
        free(errmsg);
        return 0;
    }
    if (errmsg || path_len == 0 || path_len > size || path_len > MAX_PATH)
        abort();
    if (path_len < size && data[path_len] != '?')
        abort();

    /* (a) the path alone is accepted again, identically; so is the target */
    size_t again = SIZE_MAX;
    if (policy_canon_check(target, path_len, MAX_PATH, &again, NULL) != KB_OK || again != path_len)
        abort();
    again = SIZE_MAX;
    if (policy_canon_check(target, size, MAX_PATH, &again, NULL) != KB_OK || again != path_len)
        abort();
    /* the limit is exact: path_len passes, path_len - 1 does not */
    if (policy_canon_check(target, size, path_len, &again, NULL) != KB_OK)
        abort();
    if (policy_canon_check(target, size, path_len - 1, &again, NULL) != KB_E_BAD_PATH)
        abort();

    /* (b) the independent checker */
    check_path(data, path_len);

    /* (c) the canonical spelling */
    size_t clen = 0, clen2 = 0;
    char *c = policy_canon_path(target, path_len, &clen);
    if (clen > path_len || c[clen] != '\0')
        abort();
    again = SIZE_MAX;
    if (policy_canon_check(c, clen, MAX_PATH, &again, NULL) != KB_OK || again != clen)
        abort();
    check_path((const uint8_t *)c, clen);
    char *c2 = policy_canon_path(c, clen, &clen2);
    if (clen2 != clen || memcmp(c, c2, clen) != 0)
        abort();
    /* decoded, the two spellings are the same bytes */
    char *d1 = malloc(path_len + 1), *d2 = malloc(clen + 1);
    size_t n1 = decode_all(data, path_len, d1), n2 = decode_all((const uint8_t *)c, clen, d2);
    if (n1 != n2 || memcmp(d1, d2, n1) != 0)
        abort();
    for (size_t i = 0; i + 2 < clen; i++)
        if (c[i] == '%' && ((c[i + 1] >= 'a' && c[i + 1] <= 'f') || (c[i + 2] >= 'a' && c[i + 2] <= 'f')))
            abort(); /* upper-case hex only */
    free(d1);
    free(d2);
    free(c);
    free(c2);
    if (path_len < size)
        check_query(data + path_len + 1, size - path_len - 1);
    return 0;
}
