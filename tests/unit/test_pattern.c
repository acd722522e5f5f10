/*
 * test_pattern.c - table-driven tests for the endpoint pattern language
 * (src/policy/pattern.c).
 *
 * Two tables. `compile_vectors` lists single patterns and whether
 * policy_compile accepts them. `match_vectors` lists a policy (up to four
 * patterns), a request method and raw target, and the verdict the proxy
 * reaches: the target goes through policy_canon_check first (as on the
 * request path, so BAD_PATH is a verdict too) and the path part alone is
 * matched, which is how "the query is not matched" is tested.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "policy/canon.h"
#include "policy/pattern.h"

#define MAXP 1024 /* path limit for the match table */

struct compile_vec {
    const char *pattern; /* one pattern */
    bool ok;             /* policy_compile accepts it */
};

static const struct compile_vec compile_vectors[] = {
    /* accepted */
    {"/", true},
    {"GET /", true},
    {"deny:/", true},
    {"/*", true},
    {"/+", true},
    {"/v1/charges", true},
    {"POST /v1/payment_intents", true},
    {"HEAD /v1/x", true},
    {"PUT /v1/x", true},
    {"PATCH /v1/x", true},
    {"DELETE /v1/x", true},
    {"OPTIONS /v1/x", true},
    {"/v1/customers/+", true},
    {"/v1/customers/+/sources/+", true},
    {"/v1/payment_intents/*", true},
    {"/v1/+/*", true},
    {"deny:/v1/payouts/*", true},
    {"deny:POST /v1/refunds", true},
    {"/2010-04-01/Accounts/+/Messages.json", true},
    {"/v1/.well-known", true},
    {"/v1/a...b", true},
    {"/v1beta/models/gemini-pro:generateContent", true},
    {"/v1/a:b@c!$&'(),=~-_", true},
    /* method prefix */
    {"get /v1/x", false},
    {"FETCH /v1/x", false},
    {"GET", false},
    {"GET  /v1/x", false},
    {"GET\t/v1/x", false},
    {"GET/v1/x", false},
    {" /v1/x", false},
    /* path shape */
    {"", false},
    {"v1/x", false},
    {"/v1/x ", false},
    {"//", false},
    {"//v1", false},
    {"/v1//x", false},
    {"/v1/x/", false},
    {"GET /v1/x/", false},
    {"/v1/.", false},
    {"/v1/./x", false},
    {"/v1/..", false},
    {"/../x", false},
    /* wildcards are whole segments; '*' only last */
    {"/v1/*/x", false},
    {"/*/*", false},
    {"/v1/x*", false},
    {"/v1/payment_intents*", false},
    {"/v1/*x", false},
    {"/v1/x+", false},
    {"/v1/a+b", false},
    {"/v1/**", false},
    {"/v1/*/", false},
    /* bytes a pattern may not hold */
    {"/v1/a%20b", false},
    {"/v1/%2F", false},
    {"/v1/x?y=1", false},
    {"/v1/x#y", false},
    {"/v1/a;b", false},
    {"/v1/a\\b", false},
    {"/v1/a b", false},
    {"/v1/caf\xc3\xa9", false},
    {"/v1/a\x01", false},
    {"/v1/a|b", false},
    /* deny prefix */
    {"deny:", false},
    {"deny: /x", false},
    {"DENY:/x", false},
    {"deny:deny:/x", false},
    {"deny:get /x", false},
    {"allow:/x", false},
};

enum verdict {
    ALLOW = 0,    /* canonical and allowed */
    REFUSE = 1,   /* canonical, endpoint_not_allowed */
    BAD_PATH = 2, /* policy_canon_check refused the target */
};

struct match_vec {
    const char *patterns[4]; /* the policy; NULL-terminated when shorter */
    const char *method;      /* request method */
    const char *target;      /* raw request target */
    enum verdict want;       /* expected verdict */
};

#define PI "POST /v1/payment_intents"
#define PIW "/v1/payment_intents/*"
#define NOPAY "deny:/v1/payouts/*"

static const struct match_vec match_vectors[] = {
    /* method prefix: exact, case-sensitive, GET does not imply HEAD */
    {{PI}, "POST", "/v1/payment_intents", ALLOW},
    {{PI}, "GET", "/v1/payment_intents", REFUSE},
    {{PI}, "post", "/v1/payment_intents", REFUSE},
    {{PI}, "POST", "/v1/payment_intents/pi_1", REFUSE},
    {{PI}, "POST", "/v1/payment_intent", REFUSE},
    {{PI}, "POST", "/v1/payment_intentsX", REFUSE},
    {{"GET /v1/x"}, "HEAD", "/v1/x", REFUSE},
    {{"GET /a", "POST /b"}, "POST", "/a", REFUSE},
    {{"GET /a", "POST /b"}, "POST", "/b", ALLOW},
    /* no method: any method, including ones patterns cannot name */
    {{"/v1/charges"}, "GET", "/v1/charges", ALLOW},
    {{"/v1/charges"}, "DELETE", "/v1/charges", ALLOW},
    {{"/v1/charges"}, "PROPFIND", "/v1/charges", ALLOW},
    {{"/v1/charges"}, "GET", "/v1/Charges", REFUSE},
    /* '+': exactly one segment */
    {{"/v1/customers/+"}, "GET", "/v1/customers/cus_1", ALLOW},
    {{"/v1/customers/+"}, "GET", "/v1/customers", REFUSE},
    {{"/v1/customers/+"}, "GET", "/v1/customers/cus_1/sources", REFUSE},
    {{"/v1/customers/+/sources"}, "GET", "/v1/customers/cus_1/sources", ALLOW},
    {{"/v1/customers/+/sources"}, "GET", "/v1/customers/sources", REFUSE},
    {{"/+"}, "GET", "/", REFUSE},
    {{"/+"}, "GET", "/x", ALLOW},
    /* trailing '*': one or more further segments, not a prefix trick */
    {{PIW}, "POST", "/v1/payment_intents/pi_1", ALLOW},
    {{PIW}, "POST", "/v1/payment_intents/pi_1/confirm", ALLOW},
    {{PIW}, "POST", "/v1/payment_intents", REFUSE},
    {{PIW}, "POST", "/v1/payment_intentsX/pi_1", REFUSE},
    {{PIW}, "POST", "/v1/payment_intents_x/pi_1", REFUSE},
    {{"/*"}, "GET", "/", REFUSE},
    {{"/*"}, "GET", "/a", ALLOW},
    {{"/*"}, "GET", "/a/b/c", ALLOW},
    {{"/v1/+/*"}, "GET", "/v1/a", REFUSE},
    {{"/v1/+/*"}, "GET", "/v1/a/b", ALLOW},
    /* the root */
    {{"/"}, "GET", "/", ALLOW},
    {{"/"}, "GET", "/?x=1", ALLOW},
    {{"/"}, "GET", "/a", REFUSE},
    /* deny wins, whatever the order in the list */
    {{"/v1/*", NOPAY}, "POST", "/v1/payouts/po_1", REFUSE},
    {{NOPAY, "/v1/*"}, "POST", "/v1/payouts/po_1", REFUSE},
    {{"/v1/*", NOPAY}, "POST", "/v1/payouts", ALLOW},
    {{"/v1/*", NOPAY}, "GET", "/v1/charges", ALLOW},
    {{"/v1/payouts", "deny:/v1/payouts"}, "GET", "/v1/payouts", REFUSE},
    {{"deny:/x"}, "GET", "/x", REFUSE},
    {{"deny:/x"}, "GET", "/y", REFUSE},
    /* deny with a method refuses only that method */
    {{"/v1/*", "deny:POST /v1/refunds"}, "POST", "/v1/refunds", REFUSE},
    {{"/v1/*", "deny:POST /v1/refunds"}, "GET", "/v1/refunds", ALLOW},
    {{"/v1/*", "deny:POST /v1/refunds/*"}, "POST", "/v1/refunds/re_1/cancel", REFUSE},
    /* the query is validated and forwarded, never matched */
    {{PI}, "POST", "/v1/payment_intents?expand[]=customer", ALLOW},
    {{"/v1/x"}, "GET", "/v1/x?", ALLOW},
    {{"/v1/x"}, "GET", "/v1/x?y=/v1/payouts", ALLOW},
    {{"/*", "deny:/v1/x"}, "GET", "/v1/x?z=1", REFUSE},
    {{"/v1/x"}, "GET", "/v1/x?y=1#frag", BAD_PATH},
    /* trailing slash: never canonical */
    {{"/v1/x"}, "GET", "/v1/x/", BAD_PATH},
    {{"/v1/*"}, "GET", "/v1/x/", BAD_PATH},
    /* literals match escapes decoded, so a deny cannot be spelt around */
    {{"/v1/a:b"}, "GET", "/v1/a%3Ab", ALLOW},
    {{"/v1/a:b"}, "GET", "/v1/a%3ab", ALLOW},
    {{"/v1/*", "deny:/v1/a:b"}, "GET", "/v1/a%3Ab", REFUSE},
    {{"/v1/*", "deny:/v1/payouts/*"}, "GET", "/v1/p%61youts/po_1", REFUSE},
    {{"/v1/ab"}, "GET", "/v1/a%20b", REFUSE},
    {{"/v1/x"}, "GET", "/v1/x%41", REFUSE},
    {{"/v1/xA"}, "GET", "/v1/x%41", ALLOW},
    {{"/v1/files/+"}, "GET", "/v1/files/a%20b", ALLOW},
    {{"/v1/files/+"}, "GET", "/v1/files/caf%C3%A9", ALLOW},
    /* traversal and confusion attempts stop at the canonicaliser */
    {{"/v1/public/*", "deny:/v1/secret/*"}, "GET", "/v1/public/../secret/x", BAD_PATH},
    {{"/v1/public/*", "deny:/v1/secret/*"}, "GET", "/v1/public/%2e%2e/secret/x", BAD_PATH},
    {{"/v1/public/*", "deny:/v1/secret/*"}, "GET", "/v1/public/%2E%2E/secret/x", BAD_PATH},
    {{"/v1/public/*"}, "GET", "/v1/public%2fx", BAD_PATH},
    {{"/v1/public/*"}, "GET", "/v1/public/x;/../../secret", BAD_PATH},
    {{"/v1/public/*"}, "GET", "/v1/public/x\\..\\secret", BAD_PATH},
    {{"/v1/public/*"}, "GET", "//v1/public/x", BAD_PATH},
    {{"/v1/public/*"}, "GET", "http://evil/v1/public/x", BAD_PATH},
};

static size_t count(const char *const *patterns)
{
    size_t n = 0;
    while (n < 4 && patterns[n])
        n++;
    return n;
}

static void test_compile_vectors(void **state)
{
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof(compile_vectors) / sizeof(compile_vectors[0]); i++) {
        const struct compile_vec *v = &compile_vectors[i];
        struct kb_policy *p = NULL;
        char *errmsg = NULL;
        enum kb_err err = policy_compile(&v->pattern, 1, &p, &errmsg);
        bool ok = v->ok ? (err == KB_OK && p && !errmsg)
                        : (err == KB_E_INVALID && !p && errmsg && strstr(errmsg, "[0]"));
        if (!ok) {
            print_error("compile row %zu %s: got %s (%s), want %s\n", i, v->pattern,
                        kb_strerror(err), errmsg ? errmsg : "no errmsg", v->ok ? "ok" : "invalid");
            failures++;
        }
        free(errmsg);
        policy_free(p);
    }
    assert_int_equal(failures, 0);
}

static void test_match_vectors(void **state)
{
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof(match_vectors) / sizeof(match_vectors[0]); i++) {
        const struct match_vec *v = &match_vectors[i];
        struct kb_policy *p = NULL;
        char *errmsg = NULL;
        enum kb_err err = policy_compile(v->patterns, count(v->patterns), &p, &errmsg);
        if (err != KB_OK) {
            print_error("match row %zu: compile failed: %s\n", i, errmsg);
            free(errmsg);
            failures++;
            continue;
        }
        size_t path_len = 0;
        enum verdict got = BAD_PATH;
        if (policy_canon_check(v->target, strlen(v->target), MAXP, &path_len, NULL) == KB_OK)
            got = policy_allows(p, v->method, v->target, path_len) ? ALLOW : REFUSE;
        if (got != v->want) {
            print_error("match row %zu %s %s against %s%s: got %d, want %d\n", i, v->method,
                        v->target, v->patterns[0], v->patterns[1] ? ",..." : "", got, v->want);
            failures++;
        }
        policy_free(p);
    }
    assert_int_equal(failures, 0);
}

/* The errmsg names the offending pattern by index and text, in clean ASCII. */
static void test_errmsg_names_pattern(void **state)
{
    (void)state;
    const char *pats[] = {"/v1/ok", "GET /v1/bad*", "/v1/also\xff"};
    struct kb_policy *p = NULL;
    char *errmsg = NULL;
    assert_int_equal(policy_compile(pats, 3, &p, &errmsg), KB_E_INVALID);
    assert_null(p);
    assert_non_null(strstr(errmsg, "allowed_endpoints[1] \"GET /v1/bad*\""));
    free(errmsg);
    errmsg = NULL;
    pats[1] = "/v1/fine";
    assert_int_equal(policy_compile(pats, 3, &p, &errmsg), KB_E_INVALID);
    assert_non_null(strstr(errmsg, "[2] \"/v1/also\\xff\""));
    free(errmsg);
}

/* Empty list, NULL entry, over-long pattern, too many patterns. */
static void test_compile_limits(void **state)
{
    (void)state;
    struct kb_policy *p = NULL;
    char *errmsg = NULL;
    const char *one[] = {NULL};
    assert_int_equal(policy_compile(one, 0, &p, &errmsg), KB_E_INVALID);
    assert_non_null(errmsg);
    free(errmsg);
    errmsg = NULL;
    assert_int_equal(policy_compile(one, 1, &p, &errmsg), KB_E_INVALID);
    assert_non_null(errmsg);
    free(errmsg);
    errmsg = NULL;

    char *longp = kb_malloc(KB_PATTERN_MAX_LEN + 2);
    memset(longp, 'a', KB_PATTERN_MAX_LEN + 1);
    longp[0] = '/';
    longp[KB_PATTERN_MAX_LEN] = '\0'; /* exactly the limit: fine */
    const char *lp[] = {longp};
    assert_int_equal(policy_compile(lp, 1, &p, NULL), KB_OK);
    assert_true(policy_allows(p, "GET", longp, KB_PATTERN_MAX_LEN));
    policy_free(p);
    p = NULL;
    longp[KB_PATTERN_MAX_LEN] = 'a'; /* one over */
    longp[KB_PATTERN_MAX_LEN + 1] = '\0';
    assert_int_equal(policy_compile(lp, 1, &p, &errmsg), KB_E_INVALID);
    assert_non_null(strstr(errmsg, "longer than"));
    free(errmsg);
    errmsg = NULL;
    free(longp);

    const char *many[KB_POLICY_MAX_PATTERNS + 1];
    for (size_t i = 0; i < KB_POLICY_MAX_PATTERNS + 1; i++)
        many[i] = "/v1/+";
    assert_int_equal(policy_compile(many, KB_POLICY_MAX_PATTERNS, &p, NULL), KB_OK);
    policy_free(p);
    p = NULL;
    assert_int_equal(policy_compile(many, KB_POLICY_MAX_PATTERNS + 1, &p, &errmsg), KB_E_INVALID);
    assert_null(p);
    free(errmsg);
    policy_free(NULL);
}

/* Every compiled pattern's own path is canonical (the two grammars agree). */
static void test_pattern_paths_are_canonical(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(compile_vectors) / sizeof(compile_vectors[0]); i++) {
        const char *pat = compile_vectors[i].pattern;
        if (!compile_vectors[i].ok)
            continue;
        const char *path = strchr(pat, '/');
        size_t path_len = 0;
        assert_int_equal(policy_canon_check(path, strlen(path), MAXP, &path_len, NULL), KB_OK);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_vectors),
        cmocka_unit_test(test_match_vectors),
        cmocka_unit_test(test_errmsg_names_pattern),
        cmocka_unit_test(test_compile_limits),
        cmocka_unit_test(test_pattern_paths_are_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
