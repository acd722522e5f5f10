/*
 * test_h1.c - the HTTP/1.1 line grammar shared by the server and the
 * upstream client (src/net/h1.c), as tables of lines and verdicts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/h1.h"

static void test_request_line(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        bool ok, bad_version;
    } v[] = {
        {"GET /v1/x HTTP/1.1", true, false},
        {"POST /a?b=1 HTTP/1.0", true, false},
        {"GET /x HTTP/2.0", false, true},
        {"GET /x HTTP/1.1 ", false, true},
        {"GET  /x HTTP/1.1", false, false}, /* two spaces: empty target */
        {"G(T /x HTTP/1.1", false, false},  /* '(' is not a token byte */
        {"GET /x\x01y HTTP/1.1", false, false},
        {"GET /x", false, false},
        {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA /x HTTP/1.1", false, false}, /* 33-byte method */
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t m, to, tl;
        int minor = -1;
        bool bv = false;
        bool ok = h1_request_line(v[i].line, strlen(v[i].line), &m, &to, &tl, &minor, &bv);
        if (ok != v[i].ok || bv != v[i].bad_version)
            print_error("%s\n", v[i].line);
        assert_int_equal(ok, v[i].ok);
        assert_int_equal(bv, v[i].bad_version);
    }
    size_t m, to, tl;
    int minor;
    bool bv;
    assert_true(h1_request_line("PATCH /p HTTP/1.0", 17, &m, &to, &tl, &minor, &bv));
    assert_int_equal(m, 5);
    assert_int_equal(to, 6);
    assert_int_equal(tl, 2);
    assert_int_equal(minor, 0);
}

static void test_status_line(void **state)
{
    (void)state;
    int minor, st;
    assert_true(h1_status_line("HTTP/1.1 200 OK", 15, &minor, &st));
    assert_int_equal(st, 200);
    assert_int_equal(minor, 1);
    assert_true(h1_status_line("HTTP/1.0 404", 12, &minor, &st));
    assert_false(h1_status_line("HTTP/1.1 099 x", 14, &minor, &st));
    assert_false(h1_status_line("HTTP/1.1 600", 12, &minor, &st));
    assert_false(h1_status_line("HTTP/1.1 20x", 12, &minor, &st));
    assert_false(h1_status_line("HTTP/1.1 200OK", 14, &minor, &st));
    assert_false(h1_status_line("HTTP/1.1 200 O\x01K", 16, &minor, &st));
    assert_false(h1_status_line("HTTP/2 200 OK", 13, &minor, &st));
}

static void test_field_line(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        enum h1_field want;
        const char *name, *value;
    } v[] = {
        {"Content-Type: application/json", H1_FIELD_OK, "Content-Type", "application/json"},
        {"X-A:\t v \t", H1_FIELD_OK, "X-A", "v"},
        {"X-Empty:", H1_FIELD_OK, "X-Empty", ""},
        {"X-Obs: caf\xc3\xa9", H1_FIELD_OK, "X-Obs", "caf\xc3\xa9"},
        {" folded", H1_FIELD_FOLD, NULL, NULL},
        {"\tfolded", H1_FIELD_FOLD, NULL, NULL},
        {"Transfer-Encoding : chunked", H1_FIELD_NAME, NULL, NULL},
        {": x", H1_FIELD_NAME, NULL, NULL},
        {"no colon", H1_FIELD_NAME, NULL, NULL},
        {"X-Ctl: a\x01"
         "b",
         H1_FIELD_CTL, NULL, NULL},
        {"X-Del: a\x7f"
         "b",
         H1_FIELD_CTL, NULL, NULL},
        {"X-Cr: a\rb", H1_FIELD_CTL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t nl = 0, vo = 0, vl = 0;
        enum h1_field f = h1_field_line(v[i].line, strlen(v[i].line), &nl, &vo, &vl);
        assert_int_equal(f, v[i].want);
        if (f != H1_FIELD_OK)
            continue;
        assert_int_equal(nl, strlen(v[i].name));
        assert_memory_equal(v[i].line, v[i].name, nl);
        assert_int_equal(vl, strlen(v[i].value));
        assert_memory_equal(v[i].line + vo, v[i].value, vl);
    }
}

static void test_numbers(void **state)
{
    (void)state;
    int64_t x;
    assert_true(h1_content_length("0", 1, &x));
    assert_int_equal(x, 0);
    assert_true(h1_content_length("999999999999999999", 18, &x));
    assert_int_equal(x, 999999999999999999LL);
    assert_false(h1_content_length("1000000000000000000", 19, &x));
    assert_false(h1_content_length("+4", 2, &x));
    assert_false(h1_content_length("4 ", 2, &x));
    assert_false(h1_content_length("", 0, &x));

    assert_true(h1_chunk_size("1a", 2, &x));
    assert_int_equal(x, 26);
    assert_true(h1_chunk_size("FF;name=value", 13, &x));
    assert_int_equal(x, 255);
    assert_true(h1_chunk_size("0", 1, &x));
    assert_int_equal(x, 0);
    assert_true(h1_chunk_size("fffffffffffffff", 15, &x));
    assert_false(h1_chunk_size("1000000000000000", 16, &x)); /* 16 digits */
    assert_false(h1_chunk_size("5 ;ext", 6, &x));            /* no blank before ';' */
    assert_false(h1_chunk_size("5 ", 2, &x));
    assert_false(h1_chunk_size("x", 1, &x));
    assert_false(h1_chunk_size("", 0, &x));
    assert_false(h1_chunk_size("-1", 2, &x));
    assert_true(h1_chunk_size("5;a=\"b c\"\t", 10, &x)); /* HTAB and spaces: text */
    assert_false(h1_chunk_size("5;a\rb", 6, &x));           /* a bare CR ends a line elsewhere */
    assert_false(h1_chunk_size("5;a\0b", 6, &x));
    assert_false(h1_chunk_size("5;\x7f", 3, &x));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line),
        cmocka_unit_test(test_status_line),
        cmocka_unit_test(test_field_line),
        cmocka_unit_test(test_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
