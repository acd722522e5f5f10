/*
 * test_meter_fixed.c - fixed costs for generic vendors: first matching
 * pattern wins, no match is free, 2xx charges, everything else does not;
 * refused entries; the fall-back for built-in vendors' unmetered endpoints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "meter/meter.h"

static struct kb_pricing *load(void)
{
    struct kb_pricing *p = NULL;
    char *em = NULL;
    assert_int_equal(meter_pricing_load(NULL, &p, &em), KB_OK);
    assert_null(em);
    return p;
}

static void add(struct kb_pricing *p, const char *vendor, const char *pattern, int64_t micros)
{
    char *em = NULL;
    enum kb_err err = meter_pricing_add_fixed(p, vendor, pattern, micros, &em);
    if (err != KB_OK)
        print_message("%s\n", em ? em : "?");
    assert_int_equal(err, KB_OK);
    free(em);
}

/* The reservation of one request; asserts that a 2xx settles at exactly
 * it (a fixed price) and anything else at zero. */
static int64_t price(struct kb_pricing *p, const char *vendor, const char *method, const char *path,
                     int status)
{
    struct kb_meter_req req = {vendor, method, path, strlen(path), NULL, "", 0};
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;

    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_OK);
    assert_null(nb);
    meter_response_status(m, status, "application/json");
    meter_response_data(m, "{}", 2);
    int64_t cost = meter_settle(m, true);
    assert_int_equal(cost, status >= 200 && status < 300 ? reserve : 0);
    meter_free(m);
    return reserve;
}

static void test_first_match_wins(void **state)
{
    (void)state;
    struct kb_pricing *p = load();
    /* $0.005 per render, $0.0002 per job read, $0.000999 for any other POST */
    add(p, "acme", "POST /v1/render", 5000);
    add(p, "acme", "/v1/jobs/*", 200);
    add(p, "acme", "POST /v1/*", 999);
    add(p, "acme", "POST /v1/render/+", 1); /* never reached: the catch-all is earlier */

    assert_int_equal(price(p, "acme", "POST", "/v1/render", 200), 5000);
    assert_int_equal(price(p, "acme", "GET", "/v1/jobs/42", 200), 200);
    /* The jobs entry precedes the catch-all POST entry. */
    assert_int_equal(price(p, "acme", "POST", "/v1/jobs/42", 200), 200);
    assert_int_equal(price(p, "acme", "POST", "/v1/other", 200), 999);
    assert_int_equal(price(p, "acme", "POST", "/v1/render/x", 201), 999); /* catch-all */
    assert_int_equal(price(p, "acme", "GET", "/v1/other", 200), 0);       /* no match */
    assert_int_equal(price(p, "acme", "GET", "/v2/render", 200), 0);
    /* Another vendor's requests never match acme's entries. */
    assert_int_equal(price(p, "other", "POST", "/v1/render", 200), 0);
    meter_pricing_free(p);
}

static void test_status_rules(void **state)
{
    (void)state;
    struct kb_pricing *p = load();
    struct kb_meter_req req = {"acme", "POST", "/v1/render", 10, NULL, "", 0};
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;

    add(p, "acme", "POST /v1/render", 5000);
    /* Non-2xx: reserved 5000, settles 0 (price() asserts the 0). */
    assert_int_equal(price(p, "acme", "POST", "/v1/render", 500), 5000);
    assert_int_equal(price(p, "acme", "POST", "/v1/render", 404), 5000);
    assert_int_equal(price(p, "acme", "POST", "/v1/render", 302), 5000);

    /* No status: 0. */
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_OK);
    assert_int_equal(meter_settle(m, false), 0);
    meter_free(m);
    /* 2xx cut mid-body: the work was done, 5000. */
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_OK);
    meter_response_status(m, 200, NULL);
    meter_response_data(m, "{\"id\":", 6);
    assert_int_equal(meter_settle(m, false), 5000);
    meter_free(m);
    meter_pricing_free(p);
}

static void test_refused_entries(void **state)
{
    (void)state;
    struct kb_pricing *p = load();
    char *em = NULL;
    static const struct {
        const char *vendor, *pattern;
        int64_t micros;
    } bad[] = {
        {"acme", "v1/no-slash", 1},   /* not a path */
        {"acme", "/v1/*/x", 1},       /* '*' not last */
        {"acme", "FETCH /v1/x", 1},   /* unknown method */
        {"acme", "deny:/v1/x", 1},    /* a deny pattern prices nothing */
        {"acme", "/v1/x", -1},        /* negative */
        {"", "/v1/x", 1},             /* no vendor */
        {"acme", "/v1/x", INT64_MAX}, /* beyond the money cap */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(
            meter_pricing_add_fixed(p, bad[i].vendor, bad[i].pattern, bad[i].micros, &em),
            KB_E_CONFIG);
        assert_non_null(em);
        free(em);
        em = NULL;
    }
    /* Nothing was added. */
    assert_int_equal(price(p, "acme", "GET", "/v1/x", 200), 0);
    meter_pricing_free(p);
}

static void test_builtin_vendor_fallback(void **state)
{
    (void)state;
    struct kb_pricing *p = load();
    /* OpenAI transcription is billed by audio minutes the request does not
     * state, so its meter leaves it to the operator: $0.04 per request. */
    add(p, "openai", "POST /v1/audio/transcriptions", 40000);
    add(p, "openai", "POST /v1/chat/completions", 1); /* the token meter has precedence */
    assert_int_equal(price(p, "openai", "POST", "/v1/audio/transcriptions", 200), 40000);

    struct kb_meter_req req = {"openai",
                               "POST",
                               "/v1/chat/completions",
                               20,
                               "application/json",
                               "{\"model\":\"gpt-4o\",\"max_tokens\":0}",
                               33};
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_OK);
    /* (33 + 1024) = 1057 tokens x $4.25/M (gpt-4o's priority input price:
     * without service_tier the project may run at priority) = 4492.25 ->
     * 4493 µ$, not 1 */
    assert_int_equal(reserve, 4493);
    meter_free(m);
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_status_rules),
        cmocka_unit_test(test_refused_entries),
        cmocka_unit_test(test_builtin_vendor_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
