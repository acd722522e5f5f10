/*
 * test_err.c - checks on the one error table (src/core/err.h).
 *
 * A client sees only the `code` string and the HTTP status, so they are an
 * API: every code is non-empty, lower_snake_case and unique; every status
 * is a real HTTP status (only KB_OK is a success); every default message
 * is non-empty; and the lookups stay safe for values outside the enum.
 * A few rows that clients and the docs rely on are pinned exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"

static bool lower_snake(const char *s)
{
    if (!(*s >= 'a' && *s <= 'z'))
        return false;
    for (const char *p = s; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
        if (!ok || (*p == '_' && (p[1] == '_' || p[1] == '\0')))
            return false;
    }
    return true;
}

static void test_codes_well_formed(void **state)
{
    (void)state;
    for (int e = 0; e < KB_E__COUNT; e++) {
        const char *c = kb_strerror((enum kb_err)e);
        assert_non_null(c);
        if (!lower_snake(c))
            print_error("error %d: code \"%s\" is not lower_snake_case\n", e, c);
        assert_true(lower_snake(c));
        assert_true(strlen(c) <= 64);
        /* the out-of-range sentinel is not a real code */
        assert_string_not_equal(c, "unknown_error");
    }
}

static void test_codes_unique(void **state)
{
    (void)state;
    for (int a = 0; a < KB_E__COUNT; a++)
        for (int b = a + 1; b < KB_E__COUNT; b++) {
            const char *ca = kb_strerror((enum kb_err)a), *cb = kb_strerror((enum kb_err)b);
            if (strcmp(ca, cb) == 0)
                print_error("errors %d and %d share the code \"%s\"\n", a, b, ca);
            assert_string_not_equal(ca, cb);
        }
}

static void test_statuses(void **state)
{
    (void)state;
    assert_int_equal(kb_err_status(KB_OK), 200);
    for (int e = 0; e < KB_E__COUNT; e++) {
        int st = kb_err_status((enum kb_err)e);
        assert_in_range(st, 200, 599);
        if (e != KB_OK) /* an error never answers as a success */
            assert_in_range(st, 400, 599);
    }
}

static void test_messages(void **state)
{
    (void)state;
    for (int e = 0; e < KB_E__COUNT; e++) {
        const char *m = kb_errmsg((enum kb_err)e);
        assert_non_null(m);
        assert_true(m[0] != '\0');
    }
}

/* Values outside the enum (a cast int, a corrupted field) must not index
 * past the table. */
static void test_out_of_range(void **state)
{
    (void)state;
    const enum kb_err bad[] = {
        (enum kb_err)KB_E__COUNT, (enum kb_err)(KB_E__COUNT + 1),
        (enum kb_err)1000,        (enum kb_err)0x7fffffff,
        (enum kb_err) - 1,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_string_equal(kb_strerror(bad[i]), "unknown_error");
        assert_string_equal(kb_errmsg(bad[i]), "unknown error");
        assert_int_equal(kb_err_status(bad[i]), 500);
    }
}

/* Rows that blackbox tests, SDK users and docs/ depend on. */
static void test_pinned_rows(void **state)
{
    (void)state;
    static const struct {
        enum kb_err err;
        int status;
        const char *code;
    } rows[] = {
        {KB_OK, 200, "ok"},
        {KB_E_INVALID, 400, "invalid_request"},
        {KB_E_BAD_PATH, 400, "bad_path"},
        {KB_E_TOKEN_IN_QUERY, 400, "token_in_query"},
        {KB_E_UNAUTHORIZED, 401, "unauthorized"},
        {KB_E_INVALID_TOKEN, 401, "invalid_token"},
        {KB_E_KEY_REVOKED, 401, "key_revoked"},
        {KB_E_KEY_EXPIRED, 401, "key_expired"},
        {KB_E_VENDOR_MISMATCH, 403, "vendor_mismatch"},
        {KB_E_ENDPOINT_NOT_ALLOWED, 403, "endpoint_not_allowed"},
        {KB_E_NOT_FOUND, 404, "not_found"},
        {KB_E_EXISTS, 409, "conflict"},
        {KB_E_BODY_TOO_LARGE, 413, "body_too_large"},
        {KB_E_CAP_EXHAUSTED, 429, "cap_exhausted"},
        {KB_E_RATE_LIMITED, 429, "rate_limited"},
        {KB_E_HEADERS_TOO_LARGE, 431, "headers_too_large"},
        {KB_E_INTERNAL, 500, "internal_error"},
        {KB_E_UPSTREAM_UNREACHABLE, 502, "upstream_unreachable"},
        {KB_E_STORE, 503, "store_unavailable"},
        {KB_E_UPSTREAM_TIMEOUT, 504, "upstream_timeout"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_string_equal(kb_strerror(rows[i].err), rows[i].code);
        assert_int_equal(kb_err_status(rows[i].err), rows[i].status);
    }
}

/* err.h says README.md's error table mirrors the table: every client-facing
 * code (all but "ok") must appear in it. Skipped when the README is not next
 * to the sources. */
static void test_codes_documented(void **state)
{
    (void)state;
    char path[4096];
    const char *src = __FILE__;
    const char *cut = strstr(src, "tests/unit/test_err.c");
    if (!cut) {
        skip();
        return;
    }
    int n = snprintf(path, sizeof path, "%.*sREADME.md", (int)(cut - src), src);
    assert_true(n > 0 && (size_t)n < sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) {
        print_message("%s not found; skipping\n", path);
        skip();
        return;
    }
    static char doc[1 << 20];
    size_t len = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[len] = '\0';
    for (int e = 1; e < KB_E__COUNT; e++) {
        char quoted[96];
        snprintf(quoted, sizeof quoted, "`%s`", kb_strerror((enum kb_err)e));
        if (!strstr(doc, quoted))
            print_error("code %s is missing from %s\n", quoted, path);
        assert_non_null(strstr(doc, quoted));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_well_formed), cmocka_unit_test(test_codes_unique),
        cmocka_unit_test(test_statuses),          cmocka_unit_test(test_messages),
        cmocka_unit_test(test_out_of_range),      cmocka_unit_test(test_pinned_rows),
        cmocka_unit_test(test_codes_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
