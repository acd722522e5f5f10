/*
 * test_money.c - unit tests for core/money: strict parsing of JSON number
 * text into micro-dollars, formatting, and the top-level member scanner.
 * Table-driven; each refused class of input has its own rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/money.h"

#define MAXM KB_MONEY_MAX_MICROS

struct parse_ok {
    const char *text; /* input */
    int64_t micros;   /* expected result */
};

static const struct parse_ok parse_ok_table[] = {
    {"0", 0},
    {"10", 10000000},
    {"0.25", 250000},
    {"0.1", 100000},
    {"1e2", 100000000},
    {"1E2", 100000000},
    {"1e+2", 100000000},
    {"1e0", 1000000},
    {"2.5e3", 2500000000},
    {"1.5E-1", 150000},
    {"12.500000", 12500000},
    {"12.5000000", 12500000}, /* zeros beyond 6 decimals are fine */
    {"1.0000000", 1000000},
    {"0.000001", 1},
    {"1e-6", 1},
    {"10e-7", 1},       /* precision is judged after the exponent */
    {"0.0000001e1", 1}, /* ... in both directions */
    {"0e999999999999", 0},
    {"0.000000000000", 0},
    {"0e-99999999999999999999", 0},
    {"123456.789012", 123456789012},
    {"999999999999.999999", MAXM - 1},
    {"1000000000000", MAXM},
    {"1000000000000.000000", MAXM},
    {"1e12", MAXM},
    {"100000000000000000000e-8", MAXM},
    {"0.000000000000000001e18", 1000000},
};

struct parse_bad {
    const char *text; /* input */
    const char *why;  /* substring of the error message */
};

static const struct parse_bad parse_bad_table[] = {
    {"", "empty"},
    {"-1", "negative"},
    {"-0", "negative"}, /* all negatives, zero included */
    {"-0.5", "negative"},
    {"01", "not a JSON number"},
    {"00", "not a JSON number"},
    {"+1", "not a JSON number"},
    {".5", "not a JSON number"},
    {"5.", "not a JSON number"},
    {"1.e5", "not a JSON number"},
    {"1e", "not a JSON number"},
    {"1e+", "not a JSON number"},
    {"NaN", "not a JSON number"},
    {"Infinity", "not a JSON number"},
    {" 1", "not a JSON number"},
    {"1 ", "not a JSON number"},
    {"1\n", "not a JSON number"},
    {"0x10", "not a JSON number"},
    {"1,5", "not a JSON number"},
    {"1.5x", "not a JSON number"},
    {"\"1\"", "not a JSON number"},
    {"1e-7", "6 decimal"},
    {"0.0000001", "6 decimal"},
    {"1.0000001", "6 decimal"},
    {"0.1e-6", "6 decimal"},
    {"1e-99999999999999999999", "6 decimal"},
    {"1000000000000.000001", "maximum"},
    {"1000000000001", "maximum"},
    {"1e13", "maximum"},
    {"99999999999999999999999999", "maximum"},
    {"1e99999999999999999999", "maximum"},
    {"9223372036854.775807", "maximum"},
};

static void test_parse_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_ok_table / sizeof parse_ok_table[0]; i++) {
        const struct parse_ok *t = &parse_ok_table[i];
        int64_t v = -42;
        char *msg = NULL;
        enum kb_err err = money_parse(t->text, strlen(t->text), &v, &msg);
        if (err != KB_OK || v != t->micros)
            print_error("row %zu \"%s\": err %d msg %s got %lld\n", i, t->text, (int)err,
                        msg ? msg : "-", (long long)v);
        assert_int_equal(err, KB_OK);
        assert_null(msg);
        assert_int_equal(v, t->micros);
    }
}

static void test_parse_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_bad_table / sizeof parse_bad_table[0]; i++) {
        const struct parse_bad *t = &parse_bad_table[i];
        int64_t v = -42;
        char *msg = NULL;
        enum kb_err err = money_parse(t->text, strlen(t->text), &v, &msg);
        if (err != KB_E_INVALID || !msg || !strstr(msg, t->why))
            print_error("row %zu \"%s\": err %d msg %s\n", i, t->text, (int)err, msg ? msg : "-");
        assert_int_equal(err, KB_E_INVALID);
        assert_non_null(msg);
        assert_non_null(strstr(msg, t->why));
        assert_int_equal(v, -42); /* out untouched on failure */
        free(msg);
    }
}

static void test_parse_edges(void **state)
{
    (void)state;
    int64_t v = -42;
    char *msg = NULL;

    /* The length bounds the text: an embedded NUL is not a terminator. */
    assert_int_equal(money_parse("1\0", 2, &v, &msg), KB_E_INVALID);
    free(msg);
    msg = NULL;
    /* ... and bytes past len are not read. */
    assert_int_equal(money_parse("12.5xyz", 4, &v, &msg), KB_OK);
    assert_int_equal(v, 12500000);
    /* A NULL errmsg is allowed. */
    assert_int_equal(money_parse("-1", 2, &v, NULL), KB_E_INVALID);
    assert_int_equal(v, 12500000);

    /* A long run of trailing zeros is still exact. */
    struct kb_buf b = KB_BUF_INIT;
    buf_puts(&b, "7.");
    for (int i = 0; i < 5000; i++)
        buf_putc(&b, '0');
    assert_int_equal(money_parse(b.data, b.len, &v, NULL), KB_OK);
    assert_int_equal(v, 7000000);
    buf_putc(&b, '1');
    assert_int_equal(money_parse(b.data, b.len, &v, &msg), KB_E_INVALID);
    assert_non_null(strstr(msg, "6 decimal"));
    free(msg);
    buf_cleanup(&b);
}

struct fmt_row {
    int64_t micros;   /* input */
    const char *text; /* expected output */
};

static const struct fmt_row fmt_table[] = {
    {0, "0.000000"},
    {1, "0.000001"},
    {250000, "0.250000"},
    {12500000, "12.500000"},
    {MAXM, "1000000000000.000000"},
    {-1500000, "-1.500000"},
    {INT64_MAX, "9223372036854.775807"},
    {INT64_MIN, "-9223372036854.775808"},
};

static void test_format(void **state)
{
    (void)state;
    char buf[32];
    for (size_t i = 0; i < sizeof fmt_table / sizeof fmt_table[0]; i++) {
        assert_ptr_equal(money_format(fmt_table[i].micros, buf, sizeof buf), buf);
        assert_string_equal(buf, fmt_table[i].text);
    }
    /* A short buffer truncates but stays terminated. */
    char small[5];
    money_format(12500000, small, sizeof small);
    assert_string_equal(small, "12.5");
}

static void test_format_round_trip(void **state)
{
    (void)state;
    static const int64_t values[] = {
        0, 1, 9, 10, 999999, 1000000, 1000001, 12500000, 123456789012, 4294967296000, MAXM - 1,
        MAXM};
    char buf[32];
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        int64_t back = -1;
        money_format(values[i], buf, sizeof buf);
        assert_int_equal(money_parse(buf, strlen(buf), &back, NULL), KB_OK);
        assert_int_equal(back, values[i]);
    }
    /* A stride through the whole range, including odd micro digits. */
    for (int64_t v = 7; v <= MAXM; v += MAXM / 997 + 12345) {
        int64_t back = -1;
        money_format(v, buf, sizeof buf);
        assert_int_equal(money_parse(buf, strlen(buf), &back, NULL), KB_OK);
        assert_int_equal(back, v);
    }
}

struct scan_row {
    const char *json;  /* input document */
    const char *key;   /* member looked for */
    enum kb_err err;   /* expected result */
    const char *value; /* expected number text when KB_OK */
};

#define CAP "daily_usd_cap"

static const struct scan_row scan_table[] = {
    /* found */
    {"{\"daily_usd_cap\":12.5}", CAP, KB_OK, "12.5"},
    {"{\"daily_usd_cap\":1e2}", CAP, KB_OK, "1e2"},
    {"{\"daily_usd_cap\":-3}", CAP, KB_OK, "-3"}, /* money_parse judges the sign */
    {"{\"daily_usd_cap\":0}", CAP, KB_OK, "0"},
    {" \n{ \"daily_usd_cap\" :\t0.5 } \r\n", CAP, KB_OK, "0.5"},
    {"{\"a\":1,\"daily_usd_cap\":10.000000,\"b\":[1,{\"c\":null}]}", CAP, KB_OK, "10.000000"},
    /* nested members of the same name are not the top-level one */
    {"{\"metadata\":{\"daily_usd_cap\":1},\"daily_usd_cap\":2}", CAP, KB_OK, "2"},
    {"{\"metadata\":{\"daily_usd_cap\":1}}", CAP, KB_E_NOT_FOUND, NULL},
    {"{\"a\":[{\"daily_usd_cap\":1}]}", CAP, KB_E_NOT_FOUND, NULL},
    {"{\"a\":[[[{\"daily_usd_cap\":1}]]],\"b\":{\"c\":{\"daily_usd_cap\":2}}}", CAP, KB_E_NOT_FOUND,
     NULL},
    /* the name inside a string value is not a member */
    {"{\"note\":\"\\\"daily_usd_cap\\\": 5\",\"x\":1}", CAP, KB_E_NOT_FOUND, NULL},
    {"{\"note\":\"a\\\\\",\"daily_usd_cap\":3}", CAP, KB_OK, "3"},
    {"{\"note\":\"}]{[,:\\\"\",\"daily_usd_cap\":4}", CAP, KB_OK, "4"},
    /* escaped member names are compared decoded */
    {"{\"daily\\u005fusd_cap\":7}", CAP, KB_OK, "7"},
    {"{\"caf\\u00e9\":5}", "caf\xc3\xa9", KB_OK, "5"},
    {"{\"caf\xc3\xa9\":6}", "caf\xc3\xa9", KB_OK, "6"},
    {"{\"\\ud83d\\ude00\":8}", "\xf0\x9f\x98\x80", KB_OK, "8"},
    {"{\"a\\/b\\n\":9}", "a/b\n", KB_OK, "9"},
    {"{\"daily_usd_cap\\u0000\":1}", CAP, KB_E_NOT_FOUND, NULL},
    /* prefixes and extensions of the name do not match */
    {"{\"daily_usd_capX\":1}", CAP, KB_E_NOT_FOUND, NULL},
    {"{\"daily_usd\":1}", CAP, KB_E_NOT_FOUND, NULL},
    {"{}", CAP, KB_E_NOT_FOUND, NULL},
    /* present but not a number */
    {"{\"daily_usd_cap\":\"12\"}", CAP, KB_E_INVALID, NULL},
    {"{\"daily_usd_cap\":null}", CAP, KB_E_INVALID, NULL},
    {"{\"daily_usd_cap\":true}", CAP, KB_E_INVALID, NULL},
    {"{\"daily_usd_cap\":{\"x\":1}}", CAP, KB_E_INVALID, NULL},
    {"{\"daily_usd_cap\":[1]}", CAP, KB_E_INVALID, NULL},
    {"{\"daily_usd_cap\":{}}", CAP, KB_E_INVALID, NULL},
    /* malformed, wherever it is */
    {"", CAP, KB_E_BAD_JSON, NULL},
    {"   ", CAP, KB_E_BAD_JSON, NULL},
    {"[1]", CAP, KB_E_BAD_JSON, NULL},
    {"12", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":1", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":1,}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":01}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":.5}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":1.}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":-}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":NaN}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\" 1}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":1 \"b\":2}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":1} x", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":1}{}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":1,\"x\":[}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":[1,2},\"daily_usd_cap\":1}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":{\"b\":1]}", CAP, KB_E_BAD_JSON, NULL},
    {"{'daily_usd_cap':1}", CAP, KB_E_BAD_JSON, NULL},
    {"{daily_usd_cap:1}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":tru}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":nulll}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":\"\\x\"}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":\"\\u12G4\"}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":\"\\ud800\"}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":\"\\udc00\"}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":\"\\ud800\\u0041\"}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":\"tab\there\"}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":\"\xff\"}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":\"\xc0\xaf\"}", CAP, KB_E_BAD_JSON, NULL},         /* overlong */
    {"{\"a\":\"\xe0\x80\xaf\"}", CAP, KB_E_BAD_JSON, NULL},     /* overlong */
    {"{\"a\":\"\xf4\x90\x80\x80\"}", CAP, KB_E_BAD_JSON, NULL}, /* > U+10FFFF */
    {"{\"a\":\"\xe2\x82\xac\xf0\x9f\x98\x80\",\"daily_usd_cap\":5}", CAP, KB_OK, "5"},
    {"{\"a\":\"\xed\xa0\x80\"}", CAP, KB_E_BAD_JSON, NULL}, /* surrogate */
    {"{\"a\":\"\xe2\x82\"}", CAP, KB_E_BAD_JSON, NULL},     /* truncated */
    {"{\"a\":\"unterminated}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"a\":1}\xef\xbb\xbf", CAP, KB_E_BAD_JSON, NULL},
    /* a second top-level occurrence is ambiguous: refused */
    {"{\"daily_usd_cap\":1,\"daily_usd_cap\":2}", CAP, KB_E_BAD_JSON, NULL},
    {"{\"daily_usd_cap\":\"x\",\"daily\\u005fusd_cap\":2}", CAP, KB_E_BAD_JSON, NULL},
};

static void test_json_number(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof scan_table / sizeof scan_table[0]; i++) {
        const struct scan_row *t = &scan_table[i];
        const char *start = (const char *)&start; /* sentinels */
        size_t vlen = 4242;
        enum kb_err err = money_json_number(t->json, strlen(t->json), t->key, &start, &vlen);
        if (err != t->err)
            print_error("row %zu %s: err %d want %d\n", i, t->json, (int)err, (int)t->err);
        assert_int_equal(err, t->err);
        if (t->err == KB_OK) {
            assert_true(start >= t->json && start + vlen <= t->json + strlen(t->json));
            assert_int_equal(vlen, strlen(t->value));
            assert_memory_equal(start, t->value, vlen);
        } else {
            assert_ptr_equal(start, (const char *)&start);
            assert_int_equal(vlen, 4242);
        }
    }
}

/* The scanner feeds money_parse: the pair reads a nested document end to end. */
static void test_json_number_then_parse(void **state)
{
    (void)state;
    const char *doc = "{\"metadata\":{\"daily_usd_cap\":999},\"daily_usd_cap\":1.5E-1}";
    const char *start = NULL;
    size_t vlen = 0;
    int64_t v = 0;
    assert_int_equal(money_json_number(doc, strlen(doc), CAP, &start, &vlen), KB_OK);
    assert_int_equal(money_parse(start, vlen, &v, NULL), KB_OK);
    assert_int_equal(v, 150000);
}

static void test_json_number_bounds(void **state)
{
    (void)state;
    const char *start = NULL;
    size_t vlen = 0;

    /* The length bounds the scan: the text past it is not read. */
    const char *doc = "{\"daily_usd_cap\":12}garbage";
    assert_int_equal(money_json_number(doc, 20, CAP, &start, &vlen), KB_OK);
    assert_int_equal(vlen, 2);
    /* A number cut by the length is still a number ("1" of "12"). */
    assert_int_equal(money_json_number(doc, 18, CAP, &start, &vlen), KB_E_BAD_JSON);
    assert_int_equal(money_json_number(NULL, 0, CAP, &start, &vlen), KB_E_BAD_JSON);

    /* Nesting up to 2048 levels (jansson's limit) is scanned; deeper is refused. */
    for (int depth = 2047; depth <= 2048; depth++) {
        struct kb_buf b = KB_BUF_INIT;
        buf_puts(&b, "{\"daily_usd_cap\":3,\"deep\":");
        for (int i = 0; i < depth; i++)
            buf_puts(&b, i % 2 ? "[" : "{\"k\":");
        buf_putc(&b, '1');
        for (int i = depth - 1; i >= 0; i--)
            buf_putc(&b, i % 2 ? ']' : '}');
        buf_putc(&b, '}');
        enum kb_err err = money_json_number(b.data, b.len, CAP, &start, &vlen);
        assert_int_equal(err, depth == 2047 ? KB_OK : KB_E_BAD_JSON);
        buf_cleanup(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_edges),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_json_number),
        cmocka_unit_test(test_json_number_then_parse),
        cmocka_unit_test(test_json_number_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
