/*
 * test_alerts.c - unit tests for the pure parts of budget threshold
 * alerts: which thresholds a settlement reached (store__alerts_crossed,
 * table-driven, the boundaries in integers), the thresholds' stored text,
 * the webhook signature against a vector computed independently (Python's
 * hmac), the periods as the API shows them, and the webhook body.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alerts/alerts.h"
#include "core/money.h"
#include "store/backend.h"

struct crossing {
    int64_t spent, cap;
    const char *thresholds;
    int level;
    int n;     /* thresholds reached above level */
    int first; /* the lowest of them */
};

static const struct crossing crossings[] = {
    {4999999, 10000000, "50,80,100", 0, 0, 0},     /* just below */
    {5000000, 10000000, "50,80,100", 0, 1, 50},    /* exactly 50% */
    {8500000, 10000000, "50,80,100", 50, 1, 80},   /* 80 above level 50 */
    {8500000, 10000000, "50,80,100", 80, 0, 0},    /* already alerted */
    {10000000, 10000000, "50,80,100", 0, 3, 50},   /* all three at once */
    {12000000, 10000000, "50,80,100", 80, 1, 100}, /* over the cap (a lowered cap) */
    {2, 3, "50", 0, 1, 50},                        /* 2/3 >= 1/2, in integers */
    {1, 3, "50", 0, 0, 0},                         /* 1/3 < 1/2 */
    {1, 1, "1,100", 0, 2, 1},
    {100, 0, "50", 0, 0, 0},   /* a cap of 0 never alerts */
    {0, 100, "50", 0, 0, 0},   /* nothing spent */
    {100, 100, NULL, 0, 0, 0}, /* no thresholds */
    {100, 100, "", 0, 0, 0},
    {KB_MONEY_MAX_MICROS, KB_MONEY_MAX_MICROS, "99,100", 0, 2, 99}, /* the largest cap */
    {INT64_MAX / 100 * 49, INT64_MAX, "50", 0, 0, 0},               /* no overflow on a huge cap */
    {INT64_MAX / 100 * 51, INT64_MAX, "50", 0, 1, 50},
};

static void test_crossed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof crossings / sizeof crossings[0]; i++) {
        const struct crossing *c = &crossings[i];
        int v[KB_ALERT_THRESHOLDS_MAX];
        int n = store__alerts_crossed(c->spent, c->cap, c->thresholds, c->level, v);
        if (n != c->n)
            fail_msg("row %zu: %d crossed, want %d", i, n, c->n);
        if (n && v[0] != c->first)
            fail_msg("row %zu: first %d, want %d", i, v[0], c->first);
    }
}

static void test_thresholds_text(void **state)
{
    (void)state;
    int v[KB_ALERT_THRESHOLDS_MAX];
    char buf[64];
    assert_int_equal(store__thresholds_parse("50,80,100", v), 3);
    assert_string_equal(store__thresholds_format(v, 3, buf, sizeof buf), "50,80,100");
    assert_int_equal(store__thresholds_parse(NULL, v), 0);
    assert_string_equal(store__thresholds_format(v, 0, buf, sizeof buf), "");
    /* never more than KB_ALERT_THRESHOLDS_MAX, whatever the text holds */
    assert_int_equal(store__thresholds_parse("1,2,3,4,5,6,7,8,9,10,11,12", v), 10);
}

static void test_signature_vector(void **state)
{
    (void)state;
    char sig[128];
    /* python3: hmac.new(b"whsec_test_0123456789abcdef", b'1764547200.{"a":1}', sha256) */
    alerts_sign("whsec_test_0123456789abcdef", 1764547200, "{\"a\":1}", 7, sig, sizeof sig);
    assert_string_equal(sig, "t=1764547200,v1="
                             "ff10ae0e81a5e73e2aa32cd38def854f6fc9ebc968ed129c4399e553ebdde3ee");
}

static void test_period_and_body(void **state)
{
    (void)state;
    char b[48];
    assert_string_equal(alerts_period_str(KB_WIN_DAY, 20423, b, sizeof b), "2025-12-01");
    assert_string_equal(alerts_period_str(KB_WIN_MONTH, (2026 - 1970) * 12 + 10, b, sizeof b),
                        "2026-11");
    assert_string_equal(alerts_period_str(KB_WIN_TOTAL, 0, b, sizeof b), "total");
    struct kb_alert a = {.id = 42,
                         .budget = (char *)"user \"42\"",
                         .window = KB_WIN_MONTH,
                         .period = (2026 - 1970) * 12 + 10,
                         .threshold = 80,
                         .spent = 80500000,
                         .cap = 100000000,
                         .created_ms = INT64_C(1764547200123)};
    char *body = alerts_body(&a);
    json_t *o = json_loads(body, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "id")), 42);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "budget.threshold");
    assert_string_equal(json_string_value(json_object_get(o, "budget")), "user \"42\"");
    assert_int_equal(json_integer_value(json_object_get(o, "threshold")), 80);
    assert_string_equal(json_string_value(json_object_get(o, "window")), "month");
    assert_string_equal(json_string_value(json_object_get(o, "period")), "2026-11");
    assert_true(json_real_value(json_object_get(o, "spent_usd")) == 80.5);
    assert_true(json_real_value(json_object_get(o, "cap_usd")) == 100.0);
    assert_string_equal(json_string_value(json_object_get(o, "at")), "2025-12-01T00:00:00.123Z");
    json_decref(o);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crossed),
        cmocka_unit_test(test_thresholds_text),
        cmocka_unit_test(test_signature_vector),
        cmocka_unit_test(test_period_and_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
