/*
 * fuzz_pattern.c - libFuzzer target for the endpoint pattern language
 * (src/policy/pattern.c).
 *
 * Input: "<pattern>\n<METHOD> <target>". The first line is compiled as a
 * one-pattern policy; the rest is run through policy_canon_check and, if
 * canonical, matched (and, to test robustness past the contract, the raw
 * bytes are matched too). Nothing may crash or leak. When the pattern
 * compiles, its own path - with every '+' replaced by one segment and a
 * trailing '*' by two - must be canonical and must match it, with the
 * pattern's method (or any method when it has none): allowed for an allow
 * pattern, refused for a deny pattern; and with the trailing '*' part cut
 * off, an allow pattern must no longer match.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "policy/canon.h"
#include "policy/pattern.h"

#define MAX_PATH 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Builds a concrete path from the pattern's path: '+' -> "x", '*' -> "y/z". */
static char *concrete_path(const char *ppath, size_t *len)
{
    size_t n = strlen(ppath);
    char *out = kb_malloc(n * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        bool whole = i > 0 && ppath[i - 1] == '/' && (i + 1 == n || ppath[i + 1] == '/');
        if (ppath[i] == '+' && whole) {
            out[o++] = 'x';
        } else if (ppath[i] == '*' && whole) {
            memcpy(out + o, "y/z", 3);
            o += 3;
        } else {
            out[o++] = ppath[i];
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* The compiled single pattern must match its own concrete path. */
static void check_self_match(const struct kb_policy *p, const char *pattern)
{
    const char *s = pattern;
    bool deny = strncmp(s, "deny:", 5) == 0;
    if (deny)
        s += 5;
    char method[16] = "GET";
    const char *ppath = strchr(s, '/');
    if (!ppath)
        abort(); /* compiled without a path */
    if (s != ppath) {
        size_t mlen = (size_t)(ppath - s) - 1; /* "METHOD " */
        if (mlen == 0 || mlen >= sizeof(method) || s[mlen] != ' ')
            abort();
        memcpy(method, s, mlen);
        method[mlen] = '\0';
    }
    size_t len = 0;
    char *path = concrete_path(ppath, &len);
    size_t path_len = 0;
    if (policy_canon_check(path, len, MAX_PATH, &path_len, NULL) != KB_OK || path_len != len)
        abort(); /* a compiled pattern's path must be canonical */
    if (policy_allows(p, method, path, len) == deny)
        abort();
    /* Without what the trailing '*' matched ("/y/z", or "y/z" after the
     * root), an allow pattern must not match: '*' is one or more segments. */
    size_t plen = strlen(ppath);
    if (!deny && plen >= 2 && ppath[plen - 1] == '*' && ppath[plen - 2] == '/') {
        size_t short_len = len > 4 ? len - 4 : 1;
        if (policy_allows(p, method, path, short_len))
            abort();
    }
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t plen = nl ? (size_t)(nl - data) : size;
    char *pattern = kb_strndup((const char *)data, plen);
    const uint8_t *rest = nl ? nl + 1 : data + size;
    size_t rlen = size - (size_t)(rest - data);

    struct kb_policy *p = NULL;
    char *errmsg = NULL;
    const char *pats[] = {pattern};
    enum kb_err err = policy_compile(pats, 1, &p, &errmsg);
    if (err != KB_OK) {
        if (err != KB_E_INVALID || p || !errmsg)
            abort();
        free(errmsg);
        free(pattern);
        return 0;
    }
    if (!p || errmsg)
        abort();

    /* A strlen'd pattern stops at an embedded NUL: check what was compiled. */
    check_self_match(p, pattern);

    /* The request line: method up to the first space, then the target. */
    const uint8_t *sp = memchr(rest, ' ', rlen);
    char *method = kb_strndup((const char *)rest, sp ? (size_t)(sp - rest) : 0);
    const uint8_t *target = sp ? sp + 1 : rest;
    size_t tlen = rlen - (size_t)(target - rest);
    /* An exact-size copy so ASan sees any read past the end. */
    char *t = kb_malloc(tlen ? tlen : 1);
    memcpy(t, target, tlen);
    size_t path_len = 0;
    if (policy_canon_check(t, tlen, MAX_PATH, &path_len, NULL) == KB_OK)
        (void)policy_allows(p, method, t, path_len);
    (void)policy_allows(p, method, t, tlen); /* non-canonical: must not crash */

    free(t);
    free(method);
    policy_free(p);
    free(pattern);
    return 0;
}
