/*
 * test_canon.c - table-driven tests for policy_canon_check (src/policy/canon.c).
 *
 * Each row is a raw request target, the path limit, and the verdict: the
 * expected path length when accepted, or KB_E_BAD_PATH. Every refused form of
 * canon.h has rows here, escapes in both hex cases; targets are byte arrays
 * with explicit lengths so NUL and high bytes can be written in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/canon.h"

#define MAXP 64 /* path limit for most rows */

/* A string literal and its length, embedded NULs included. */
#define T(s) s, sizeof(s) - 1

struct vec {
    const char *target; /* raw request target */
    size_t len;         /* bytes in target */
    size_t max_path;    /* limit passed in */
    enum kb_err want;   /* KB_OK or KB_E_BAD_PATH */
    size_t path_len;    /* expected *path_len when KB_OK */
};

#define OK(s, n) {T(s), MAXP, KB_OK, n}
#define BAD(s) {T(s), MAXP, KB_E_BAD_PATH, 0}

static const struct vec vectors[] = {
    /* accepted: origin form, path length is everything before the first '?' */
    OK("/", 1),
    OK("/?a=1", 1),
    OK("/v1/charges", 11),
    OK("/v1/charges?limit=10&starting_after=ch_1", 11),
    OK("/v1/customers/cus_123", 21),
    OK("/v1/x?", 5),
    OK("/v1/a:b@c!$&'()*+,=~-_", 22),
    OK("/v1/a.b", 7),
    OK("/v1/.well-known", 15),
    OK("/v1/...", 7),
    OK("/v1/.a", 6),
    OK("/v1/a..", 7),
    /* other escapes are kept and counted as their escaped bytes */
    OK("/v1/x%20y", 9),
    OK("/v1/a%3Ab", 9),
    OK("/v1/a%3ab", 9),
    OK("/v1/a%40b", 9),
    OK("/v1/caf%C3%A9", 13),
    OK("/v1/caf%c3%a9", 13),
    OK("/v1/%2B", 7),
    /* the query is validated, not matched: structure bytes are fine there */
    OK("/v1/x?a=/b?c", 5),
    OK("/v1/x?q=%2F%2e%5C%25%00", 5),
    OK("/v1/x?a=\\b;c", 5),
    OK("/v1/x?expand[]=customer", 5),
    OK("/v1/x?a=..&b=./", 5),

    /* not origin form */
    {T(""), MAXP, KB_E_BAD_PATH, 0},
    BAD("v1/charges"),
    BAD("*"),
    BAD("http://evil.example/v1/charges"),
    BAD("HTTPS://api.stripe.com/v1/charges"),
    BAD("?a=1"),
    /* empty segments and the trailing slash */
    BAD("//v1/charges"),
    BAD("//"),
    BAD("/v1//charges"),
    BAD("/v1/charges/"),
    BAD("/v1/charges//"),
    BAD("/v1/charges/?a=1"),
    /* raw dot segments */
    BAD("/."),
    BAD("/.."),
    BAD("/./v1/charges"),
    BAD("/v1/./charges"),
    BAD("/v1/../charges"),
    BAD("/v1/charges/."),
    BAD("/v1/charges/.."),
    BAD("/v1/..?a=1"),
    /* encoded dots, either case, alone or mixed with raw */
    BAD("/v1/%2e%2e/charges"),
    BAD("/v1/%2E%2E/charges"),
    BAD("/v1/.%2e/charges"),
    BAD("/v1/%2E./charges"),
    BAD("/v1/%2e"),
    BAD("/v1/a%2Eb"),
    /* encoded '/', '\', '%' */
    BAD("/v1/a%2fb"),
    BAD("/v1/a%2Fb"),
    BAD("/v1/a%5cb"),
    BAD("/v1/a%5Cb"),
    BAD("/v1/a%25b"),
    BAD("/v1/%252e%252e"),
    /* encoded control bytes */
    BAD("/v1/a%00b"),
    BAD("/v1/a%09b"),
    BAD("/v1/a%0ab"),
    BAD("/v1/a%0Ab"),
    BAD("/v1/a%0d%0aHost:x"),
    BAD("/v1/a%1fb"),
    BAD("/v1/a%1Fb"),
    BAD("/v1/a%7fb"),
    BAD("/v1/a%7Fb"),
    /* malformed escapes */
    BAD("/v1/%"),
    BAD("/v1/%2"),
    BAD("/v1/%zz"),
    BAD("/v1/%2g"),
    BAD("/v1/%%41"),
    BAD("/v1/%4?a=1"),
    /* backslash, ';' parameters, fragments */
    BAD("/v1\\charges"),
    BAD("/v1/charges\\"),
    BAD("/v1/charges;jsessionid=1"),
    BAD("/v1/charges;"),
    BAD("/v1/..;/charges"),
    BAD("/v1/charges#frag"),
    BAD("/v1/charges?a=1#frag"),
    /* NUL, control, space, non-ASCII */
    BAD("/v1/x\0y"),
    BAD("/v1/x\ty"),
    BAD("/v1/x\r\n"),
    BAD("/v1/x\x7f"),
    BAD("/v1/x y"),
    BAD("/v1/caf\xc3\xa9"),
    BAD("/v1/\xff"),
    /* other bytes outside pchar */
    BAD("/v1/x|y"),
    BAD("/v1/x\"y"),
    BAD("/v1/<x>"),
    BAD("/v1/x{y}"),
    BAD("/v1/[x]"),
    BAD("/v1/x^y"),
    BAD("/v1/x`y"),
    /* the query: control, NUL, space, non-ASCII, malformed escapes */
    BAD("/v1/x?a=\x01"),
    BAD("/v1/x?a=\0"),
    BAD("/v1/x?a b"),
    BAD("/v1/x?a=\xc3\xa9"),
    BAD("/v1/x?a=\x7f"),
    BAD("/v1/x?a=%"),
    BAD("/v1/x?a=%zz"),
    BAD("/v1/x?a=%4"),
    /* the length limit counts the path only */
    {T("/abc"), 4, KB_OK, 4},
    {T("/abc?querynotcounted"), 4, KB_OK, 4},
    {T("/abcd"), 4, KB_E_BAD_PATH, 0},
    {T("/ab%41"), 5, KB_E_BAD_PATH, 0},
    {T("/"), 0, KB_E_BAD_PATH, 0},
};

/* Renders a target for failure messages (bytes may be non-printable). */
static const char *shown(const struct vec *v)
{
    static char out[256];
    size_t o = 0;
    for (size_t i = 0; i < v->len && o + 5 < sizeof(out); i++) {
        unsigned char c = (unsigned char)v->target[i];
        if (c < 0x20 || c >= 0x7f) {
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
    return out;
}

static void test_vectors(void **state)
{
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const struct vec *v = &vectors[i];
        size_t path_len = SIZE_MAX;
        char *errmsg = NULL;
        enum kb_err err = policy_canon_check(v->target, v->len, v->max_path, &path_len, &errmsg);
        bool ok = err == v->want;
        if (ok && err == KB_OK)
            ok = path_len == v->path_len && errmsg == NULL;
        else if (ok)
            ok = path_len == SIZE_MAX && errmsg != NULL && *errmsg != '\0';
        if (!ok) {
            print_error("row %zu \"%s\": got %s path_len %zu (%s), want %s path_len %zu\n", i,
                        shown(v), kb_strerror(err), path_len, errmsg ? errmsg : "no errmsg",
                        kb_strerror(v->want), v->path_len);
            failures++;
        }
        free(errmsg);
    }
    assert_int_equal(failures, 0);
}

/* The target need not be NUL-terminated: nothing past len is read (ASan
 * checks this with an exact-size heap copy). */
static void test_no_overread(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const struct vec *v = &vectors[i];
        char *copy = malloc(v->len ? v->len : 1);
        assert_non_null(copy);
        memcpy(copy, v->target, v->len);
        size_t path_len = 0;
        enum kb_err err = policy_canon_check(copy, v->len, v->max_path, &path_len, NULL);
        assert_int_equal(err, v->want);
        free(copy);
    }
}

/* A refusal with a NULL errmsg is still a refusal. */
static void test_null_errmsg(void **state)
{
    (void)state;
    size_t path_len = 7;
    assert_int_equal(policy_canon_check(T("/a//b"), MAXP, &path_len, NULL), KB_E_BAD_PATH);
    assert_int_equal(path_len, 7);
}

/* The canonical spelling: escapes of raw-safe bytes decoded, the others
 * kept in upper-case hex; idempotent. */
static void test_canonical_path(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } v[] = {
        {"/v1/payment_intents", "/v1/payment_intents"},
        {"/v1/p%61yment_intents", "/v1/payment_intents"},
        {"/v1/payment%5Fintents", "/v1/payment_intents"},
        {"/v1/payment%5fintents", "/v1/payment_intents"},
        {"/v1/%70%61%79", "/v1/pay"},
        {"/v1/a%3Ab%40c%2Bd", "/v1/a:b@c+d"},           /* sub-delims, ':' '@' */
        {"/v1/caf%c3%a9", "/v1/caf%C3%A9"},              /* non-ASCII stays encoded */
        {"/v1/a%20b", "/v1/a%20b"},                      /* space stays encoded */
        {"/v1/a%3bb", "/v1/a%3Bb"},                      /* ';' stays encoded */
        {"/v1/a%3fb%23c", "/v1/a%3Fb%23c"},              /* '?' and '#' too */
        {"/v1/%7e%2D%5F", "/v1/~-_"},                    /* unreserved */
        {"/", "/"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n = 0, n2 = 0, pl = 0;
        assert_int_equal(policy_canon_check(v[i].in, strlen(v[i].in), MAXP, &pl, NULL), KB_OK);
        char *c = policy_canon_path(v[i].in, pl, &n);
        assert_string_equal(c, v[i].out);
        assert_int_equal(n, strlen(v[i].out));
        char *c2 = policy_canon_path(c, n, &n2);
        assert_string_equal(c2, c);
        free(c);
        free(c2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_path),
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_no_overread),
        cmocka_unit_test(test_null_errmsg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
