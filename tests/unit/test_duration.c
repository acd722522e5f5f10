/*
 * test_duration.c - table-driven tests for duration_parse_ms
 * (src/core/duration.c).
 *
 * One table of accepted texts with their value in milliseconds, one of
 * refused texts; each refusal class promised by duration.h (sign, spaces,
 * fractions, unknown or doubled units, more than 12 digits, more than 100
 * years) has its own rows, and both sides of every limit are pinned.
 * Inputs carry explicit lengths so embedded NULs and short `len` can be
 * written in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/duration.h"

/* A string literal and its length, embedded NULs included. */
#define T(s) s, sizeof(s) - 1

#define SEC INT64_C(1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define MAX_MS (INT64_C(100) * 365 * DAY) /* the 100-year ceiling */

struct ok_row {
    const char *text; /* input */
    size_t len;       /* bytes of input passed */
    int64_t ms;       /* expected result */
};

static const struct ok_row ok_table[] = {
    /* bare integers are seconds */
    {T("0"), 0},
    {T("1"), SEC},
    {T("42"), 42 * SEC},
    {T("007"), 7 * SEC},
    /* each unit */
    {T("250ms"), 250},
    {T("0ms"), 0},
    {T("1ms"), 1},
    {T("30s"), 30 * SEC},
    {T("0s"), 0},
    {T("5m"), 5 * MIN},
    {T("2h"), 2 * HOUR},
    {T("1d"), DAY},
    {T("24h"), DAY},
    {T("1000ms"), SEC},
    {T("90m"), 90 * MIN},
    /* 12 digits is the most accepted */
    {T("999999999999ms"), INT64_C(999999999999)},
    {T("000000000001s"), SEC},
    /* the 100-year ceiling is inclusive, in every unit that reaches it */
    {T("36500d"), MAX_MS},
    {T("876000h"), MAX_MS},
    {T("52560000m"), MAX_MS},
    {T("3153600000s"), MAX_MS},
    {T("3153600000"), MAX_MS},
    /* len, not NUL, ends the text */
    {"30s trailing", 3, 30 * SEC},
    {"5mx", 2, 5 * MIN},
    {"250msec", 5, 250},
};

struct bad_row {
    const char *text; /* input */
    size_t len;       /* bytes of input passed */
};

static const struct bad_row bad_table[] = {
    /* empty, or no number */
    {T("")},
    {"42", 0},
    {T("s")},
    {T("ms")},
    {T("m")},
    {T("h")},
    {T("d")},
    /* signs */
    {T("-1")},
    {T("+1")},
    {T("-0")},
    {T("-5s")},
    /* fractions and exponents */
    {T("1.5s")},
    {T("1.5")},
    {T(".5s")},
    {T("1e3")},
    {T("1,5s")},
    /* spaces and other whitespace */
    {T("1 s")},
    {T(" 1s")},
    {T("1s ")},
    {T("1\ts")},
    {T("1s\n")},
    /* unknown units, wrong case, doubled or trailing junk */
    {T("10x")},
    {T("1msx")},
    {T("1sx")},
    {T("1ss")},
    {T("1hh")},
    {T("1sm")},
    {T("1us")},
    {T("1ns")},
    {T("1w")},
    {T("1y")},
    {T("1S")},
    {T("1M")},
    {T("1H")},
    {T("1D")},
    {T("1MS")},
    {T("1mS")},
    {T("1sec")},
    {T("1min")},
    {T("1h30m")},
    {T("0x10")},
    /* embedded NUL is a byte like any other */
    {T("1\0s")},
    {T("1s\0")},
    /* more than 12 digits, whatever their value */
    {T("1000000000000")},
    {T("0000000000000")},
    {T("0000000000001ms")},
    {T("9999999999999ms")},
    {T("99999999999999999999")},
    {T("99999999999999999999999999999999999999s")},
    /* over 100 years by one step in each unit */
    {T("36501d")},
    {T("876001h")},
    {T("52560001m")},
    {T("3153600001s")},
    {T("3153600001")},
    {T("999999999999s")},
    {T("999999999999d")},
};

static void test_accepted(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ok_table / sizeof ok_table[0]; i++) {
        const struct ok_row *t = &ok_table[i];
        int64_t ms = -42;
        enum kb_err err = duration_parse_ms(t->text, t->len, &ms);
        if (err != KB_OK || ms != t->ms)
            print_error("row %zu \"%.*s\": err %d ms %lld, want %lld\n", i, (int)t->len, t->text,
                        (int)err, (long long)ms, (long long)t->ms);
        assert_int_equal(err, KB_OK);
        assert_int_equal(ms, t->ms);
    }
}

static void test_refused(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_table / sizeof bad_table[0]; i++) {
        const struct bad_row *t = &bad_table[i];
        int64_t ms = -42;
        enum kb_err err = duration_parse_ms(t->text, t->len, &ms);
        if (err != KB_E_INVALID || ms != -42)
            print_error("row %zu \"%.*s\" (len %zu): err %d ms %lld, want refusal\n", i,
                        (int)t->len, t->text, t->len, (int)err, (long long)ms);
        assert_int_equal(err, KB_E_INVALID);
        assert_int_equal(ms, -42); /* the output is untouched on refusal */
    }
}

/* Every 1..12-digit count of every unit below the ceiling is exact: no
 * overflow or rounding on the way. */
static void test_exact_multiples(void **state)
{
    (void)state;
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {{"", SEC}, {"ms", 1}, {"s", SEC}, {"m", MIN}, {"h", HOUR}, {"d", DAY}};
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        int64_t n = 1;
        for (int digits = 1; digits <= 12; digits++, n = n * 10 + digits % 10) {
            char text[32];
            int len = snprintf(text, sizeof text, "%lld%s", (long long)n, units[u].unit);
            assert_true(len > 0 && (size_t)len < sizeof text);
            int64_t ms = -42;
            enum kb_err err = duration_parse_ms(text, (size_t)len, &ms);
            if (n <= MAX_MS / units[u].mult) {
                assert_int_equal(err, KB_OK);
                assert_int_equal(ms, n * units[u].mult);
            } else {
                assert_int_equal(err, KB_E_INVALID);
                assert_int_equal(ms, -42);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_exact_multiples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
