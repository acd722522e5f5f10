/*
 * test_meter_pricing.c - what the vendor meters stand on: loading the
 * embedded pricing.json, merging an override file over it (RFC 7396),
 * refusing malformed prices, the saturating arithmetic, the SSE line
 * splitter and the form decoder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "meter_test.h"

#include "core/alloc.h"
#include "core/money.h"
#include "meter/meter.h"
#include "meter/meter_int.h"

/* Loads with `override` as the file; returns the error, *p set on KB_OK. */
static enum kb_err try_load(const char *override, struct kb_pricing **p)
{
    char *em = NULL, *path = override ? write_tmp(override) : NULL;
    struct kb_pricing *sentinel = (struct kb_pricing *)0x1, *out = sentinel;
    enum kb_err err = meter_pricing_load(path, &out, &em);
    if (err == KB_OK) {
        assert_null(em);
        *p = out;
    } else {
        assert_ptr_equal(out, sentinel); /* untouched on failure */
        assert_non_null(em);
    }
    if (path)
        unlink(path);
    free(path);
    free(em);
    return err;
}

static const struct meter__currency *currency(const struct kb_pricing *p, const char *code)
{
    for (size_t i = 0; i < p->stripe.ncur; i++)
        if (strcmp(p->stripe.cur[i].code, code) == 0)
            return &p->stripe.cur[i];
    return NULL;
}

/* ---- loading ---- */

static void test_embedded(void **state)
{
    (void)state;
    struct kb_pricing *p = NULL;
    assert_int_equal(try_load(NULL, &p), KB_OK);
    assert_string_equal(p->version, "2026-12-03");
    /* Spot checks of the shipped list, in µ$ per million tokens. */
    const struct meter__model *m = meter__model_find(&p->openai, "gpt-4o");
    assert_non_null(m);
    assert_int_equal(m->base.input, 2500000);
    assert_int_equal(m->base.cached_input, 1250000);
    assert_int_equal(m->base.output, 10000000);
    /* An older snapshot with its own (higher) price wins over the pattern
     * "gpt-4o-YYYY-MM-DD" that the gpt-4o entry lists. */
    assert_int_equal(meter__model_find(&p->openai, "gpt-4o-2024-05-13")->base.input, 5000000);
    assert_string_equal(meter__model_find(&p->openai, "gpt-4o-2024-08-06")->name, "gpt-4o");
    m = meter__model_find(&p->anthropic, "claude-sonnet-4-20250514");
    assert_non_null(m);
    assert_string_equal(m->name, "claude-sonnet-4-0");
    assert_int_equal(m->base.cache_write, 3750000);
    assert_int_equal(m->long_threshold, 200000);
    assert_string_equal(meter__model_find(&p->anthropic, "claude-sonnet-4-5-20250929")->name,
                        "claude-sonnet-4-5");
    /* No "default": an unknown model is unpriced. */
    assert_null(meter__model_find(&p->openai, "gpt-99"));
    /* Stripe: no rates, the zero- and three-decimal lists. */
    assert_int_equal(currency(p, "jpy")->exponent, 0);
    assert_int_equal(currency(p, "jpy")->rate, -1);
    assert_int_equal(currency(p, "kwd")->exponent, 3);
    assert_null(currency(p, "eur"));
    assert_int_equal(p->stripe.unknown_amount_reserve, 100000000);
    /* Twilio: US SMS $0.0083 per segment. */
    assert_int_equal(p->twilio.sms_default, 200000);
    assert_int_equal(p->twilio.nsms, 1);
    assert_int_equal(p->twilio.sms[0].micros, 8300);
    meter_pricing_free(p);
    meter_pricing_free(NULL);
}

static void test_override_merge(void **state)
{
    (void)state;
    struct kb_pricing *p = NULL;
    const char *ov = "{"
                     "\"version\": \"2026-12-01\","
                     "\"_note\": \"our negotiated prices\","
                     "\"openai\": {\"models\": {"
                     "  \"gpt-4o\": {\"input_per_mtok\": \"3.00\"},"
                     "  \"o1\": null,"
                     "  \"acme-llm\": {\"input_per_mtok\": 2, \"output_per_mtok\": \"4.5\","
                     "                 \"max_output_tokens\": 1000},"
                     "  \"default\": {\"input_per_mtok\": \"10\", \"output_per_mtok\": \"30\","
                     "                \"max_output_tokens\": 4096}"
                     "}},"
                     "\"stripe\": {\"currency_rates\": {\"eur\": \"1.10\", \"JPY\": \"0.0067\"}},"
                     "\"twilio\": {\"sms_per_segment\": {\"+44\": \"0.0524\"}}"
                     "}";
    assert_int_equal(try_load(ov, &p), KB_OK);
    assert_string_equal(p->version, "2026-12-01");

    /* gpt-4o: only the input price replaced, the rest of the entry kept. */
    const struct meter__model *m = meter__model_find(&p->openai, "gpt-4o");
    assert_string_equal(m->name, "gpt-4o");
    assert_int_equal(m->base.input, 3000000);
    assert_int_equal(m->base.cached_input, 1250000);
    assert_int_equal(m->base.output, 10000000);
    assert_int_equal(m->max_output, 16384);
    /* untouched entries are still there */
    assert_int_equal(meter__model_find(&p->openai, "gpt-4o-mini")->base.input, 150000);
    /* o1 deleted by null: now priced by the new default */
    assert_string_equal(meter__model_find(&p->openai, "o1")->name, "default");
    /* added; integer price 2 = $2.00; cached defaults to the input price */
    m = meter__model_find(&p->openai, "acme-llm");
    assert_int_equal(m->base.input, 2000000);
    assert_int_equal(m->base.cached_input, 2000000);
    assert_int_equal(m->base.output, 4500000);
    /* Anthropic untouched */
    assert_int_equal(meter__model_find(&p->anthropic, "claude-opus-4-0")->base.input, 15000000);
    /* Stripe: rates added (code case-folded), exponents kept */
    assert_int_equal(currency(p, "eur")->rate, 1100000);
    assert_int_equal(currency(p, "eur")->exponent, 2);
    assert_int_equal(currency(p, "jpy")->rate, 6700);
    assert_int_equal(currency(p, "jpy")->exponent, 0);
    /* Twilio: +44 added next to +1 and default */
    assert_int_equal(p->twilio.nsms, 2);
    assert_int_equal(p->twilio.sms_default, 200000);
    meter_pricing_free(p);
}

/* The models of issue #13, each at its price page figure (µ$ per million
 * tokens), and the ids that must not borrow an older sibling's price. */
static void test_current_models(void **state)
{
    (void)state;
    struct kb_pricing *p = NULL;
    assert_int_equal(try_load(NULL, &p), KB_OK);
    static const struct {
        bool anthropic;
        const char *id;
        const char *entry;
        int64_t input, output;
    } cases[] = {
        {false, "gpt-5.5", "gpt-5.5", 5000000, 30000000},
        {false, "gpt-5.5-2026-04-23", "gpt-5.5", 5000000, 30000000},
        {false, "gpt-5.5-pro", "gpt-5.5-pro", 30000000, 180000000},
        {false, "gpt-5.4", "gpt-5.4", 2500000, 15000000},
        {false, "gpt-5.4-mini", "gpt-5.4-mini", 750000, 4500000},
        {false, "gpt-5.4-nano", "gpt-5.4-nano", 200000, 1250000},
        {false, "gpt-5.4-pro", "gpt-5.4-pro", 30000000, 180000000},
        {false, "o4-mini-deep-research", "o4-mini-deep-research", 2000000, 8000000},
        {false, "o4-mini-2025-04-16", "o4-mini", 1100000, 4400000},
        {true, "claude-opus-4-6", "claude-opus-4-6", 5000000, 25000000},
        {true, "claude-opus-5", "claude-opus-5", 5000000, 25000000},
        {true, "claude-opus-5-20260723", "claude-opus-5", 5000000, 25000000},
        {true, "claude-opus-5-5", "claude-opus-5-5", 4000000, 20000000},
        {true, "claude-sonnet-5", "claude-sonnet-5", 2000000, 10000000},
        {true, "claude-sonnet-5-5", "claude-sonnet-5-5", 2000000, 10000000},
        {true, "claude-haiku-5-5", "claude-haiku-5-5", 100000, 500000},
        {true, "claude-haiku-4-5-20251001", "claude-haiku-4-5", 1000000, 5000000},
        {true, "claude-opus-4-20250514", "claude-opus-4-0", 15000000, 75000000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct meter__model *m =
            meter__model_find(cases[i].anthropic ? &p->anthropic : &p->openai, cases[i].id);
        if (!m || strcmp(m->name, cases[i].entry) != 0)
            print_message("case %zu: %s\n", i, cases[i].id);
        assert_non_null(m);
        assert_string_equal(m->name, cases[i].entry);
        assert_int_equal(m->base.input, cases[i].input);
        assert_int_equal(m->base.output, cases[i].output);
    }
    /* Near misses: a prefix is not a snapshot. */
    static const char *const openai_unpriced[] = {"gpt-5.5-preview",
                                                  "gpt-5.4-mini-fast",
                                                  "gpt-4o-2024-8-06",
                                                  "gpt-4o-20240806",
                                                  "gpt-5.5-2026-04-23x",
                                                  "o4-mini-deep",
                                                  "gpt-6",
                                                  "ft:gpt-4o-mini-2024-07-18:acme::1"};
    for (size_t i = 0; i < sizeof openai_unpriced / sizeof openai_unpriced[0]; i++)
        assert_null(meter__model_find(&p->openai, openai_unpriced[i]));
    static const char *const anthropic_unpriced[] = {"claude-opus-4",
                                                     "claude-opus-4-9",
                                                     "claude-opus-5-6",
                                                     "claude-sonnet-5-5-2026",
                                                     "claude-haiku-5",
                                                     "claude-opus-4-6-fast",
                                                     "claude-3-5-sonnet-2024102"};
    for (size_t i = 0; i < sizeof anthropic_unpriced / sizeof anthropic_unpriced[0]; i++)
        assert_null(meter__model_find(&p->anthropic, anthropic_unpriced[i]));
    /* Multipliers and tiers. */
    const struct meter__model *m = meter__model_find(&p->openai, "gpt-5.5");
    assert_true(m->has_priority);
    assert_int_equal(m->priority.input, 12500000);
    assert_int_equal(m->priority.cached_input, 1250000);
    assert_int_equal(m->priority.output, 75000000);
    assert_true(m->has_flex);
    assert_int_equal(m->flex.input, 2500000);
    assert_int_equal(m->flex.output, 15000000);
    assert_int_equal(m->context, 1050000);
    m = meter__model_find(&p->openai, "gpt-audio");
    assert_int_equal(m->base.audio_input, 32000000);
    assert_int_equal(m->base.audio_output, 64000000);
    assert_int_equal(m->base.audio_cached, 32000000); /* unlisted: never cheaper */
    assert_int_equal(meter__model_find(&p->anthropic, "claude-opus-4-6")->fast_multiplier, 6000000);
    assert_int_equal(meter__model_find(&p->anthropic, "claude-opus-5")->fast_multiplier, 2000000);
    assert_int_equal(meter__model_find(&p->anthropic, "claude-sonnet-5")->fast_multiplier, 0);
    m = meter__model_find(&p->anthropic, "claude-haiku-5-5");
    assert_int_equal(m->long_threshold, 100000);
    assert_int_equal(m->longctx.input, 500000);
    assert_int_equal(m->longctx.cache_read, 50000);
    /* Fees. */
    assert_int_equal(p->openai_cfg.web_search_per_call, 25000);
    assert_int_equal(meter__model_find(&p->openai, "gpt-5.5")->web_search_per_call, 10000);
    assert_int_equal(meter__model_find(&p->openai, "gpt-4.1")->web_search_per_call, -1);
    assert_int_equal(p->anthropic_cfg.web_search_per_call, 10000);
    assert_int_equal(p->anthropic_cfg.geo_multiplier, 1100000);
    assert_int_equal(p->anthropic_cfg.batch_percent, 50);
    /* Every shipped entry is bounded: an output cap and a context window. */
    for (size_t i = 0; i < p->openai.n; i++)
        if (p->openai.v[i].base.output > 0)
            assert_true(p->openai.v[i].context > 0);
    for (size_t i = 0; i < p->anthropic.n; i++)
        assert_true(p->anthropic.v[i].context > 0 && p->anthropic.v[i].max_output > 0);
    /* The shipped file has no catch-all entry. */
    assert_null(p->openai.fallback);
    assert_null(p->anthropic.fallback);
    meter_pricing_free(p);
}

static void test_snapshot_patterns(void **state)
{
    (void)state;
    assert_true(meter__snapshot_match("gpt-4o-YYYY-MM-DD", "gpt-4o-2024-08-06"));
    assert_false(meter__snapshot_match("gpt-4o-YYYY-MM-DD", "gpt-4o-2024-08-0"));
    assert_false(meter__snapshot_match("gpt-4o-YYYY-MM-DD", "gpt-4o-2024-08-066"));
    assert_false(meter__snapshot_match("gpt-4o-YYYY-MM-DD", "gpt-4o-mini-2024-08-06"));
    assert_false(meter__snapshot_match("gpt-4o-YYYY-MM-DD", "gpt-4o-2024-0a-06"));
    assert_true(meter__snapshot_match("claude-opus-4-YYYYMMDD", "claude-opus-4-20250514"));
    assert_false(meter__snapshot_match("claude-opus-4-YYYYMMDD", "claude-opus-4-6"));
    assert_true(meter__snapshot_match("claude-3-7-sonnet-latest", "claude-3-7-sonnet-latest"));
    assert_false(meter__snapshot_match("claude-3-7-sonnet-latest", "claude-3-7-sonnet-lates"));
    assert_false(meter__snapshot_match("", "x"));

    /* An operator lists a snapshot of their own; a pattern in an override. */
    struct kb_pricing *p = NULL;
    assert_int_equal(try_load("{\"openai\":{\"models\":{\"gpt-5.5\":{\"snapshots\":"
                              "[\"gpt-5.5-YYYY-MM-DD\",\"gpt-5.5-acme\"]}}}}",
                              &p),
                     KB_OK);
    assert_string_equal(meter__model_find(&p->openai, "gpt-5.5-acme")->name, "gpt-5.5");
    meter_pricing_free(p);
}

static void test_refused_files(void **state)
{
    (void)state;
    struct kb_pricing *p = NULL;
    static const struct {
        const char *json;
        const char *why;
    } bad[] = {
        {"{", "malformed JSON"},
        {"[]", "not an object"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"input_per_mtok\":2.5}}}}", "JSON real"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"input_per_mtok\":\"-1\"}}}}", "negative"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"input_per_mtok\":\"0.0000001\"}}}}",
         "below a micro-dollar"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"input_per_mtok\":\"1,5\"}}}}", "not a number"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"input_per_mtoks\":\"1\"}}}}", "typo'd key"},
        {"{\"opneai\":{}}", "unknown top-level key"},
        {"{\"version\":\"November\"}", "version not a date"},
        {"{\"openai\":{\"models\":{\"x\":{\"input_per_mtok\":\"1\",\"output_per_mtok\":\"1\"}}}}",
         "output priced without max_output_tokens"},
        {"{\"openai\":{\"models\":{\"x\":{\"output_per_mtok\":\"1\",\"max_output_tokens\":9}}}}",
         "no input price"},
        {"{\"anthropic\":{\"models\":{\"claude-x\":{\"input_per_mtok\":\"1\","
         "\"output_per_mtok\":\"1\",\"cache_write_per_mtok\":\"1\","
         "\"cache_write_1h_per_mtok\":\"1\",\"max_output_tokens\":9}}}}",
         "anthropic model without cache_read"},
        {"{\"openai\":{\"models\":{\"x\":{\"input_per_mtok\":\"1\",\"output_per_mtok\":\"1\","
         "\"max_output_tokens\":9,\"long_context\":{\"input_per_mtok\":\"2\","
         "\"output_per_mtok\":\"2\"}}}}}",
         "long_context without threshold"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"max_output_tokens\":0}}}}", "zero max output"},
        {"{\"stripe\":{\"currency_rates\":{\"eur\":\"0\"}}}", "zero rate"},
        {"{\"stripe\":{\"currency_rates\":{\"usd\":\"1\"}}}", "usd rate"},
        {"{\"stripe\":{\"currency_rates\":{\"euro\":\"1\"}}}", "not a currency code"},
        {"{\"stripe\":{\"currency_rates\":{\"eur\":\"1\",\"EUR\":\"2\"}}}", "eur twice"},
        {"{\"stripe\":{\"minor_unit_exponents\":{\"eur\":7}}}", "exponent out of range"},
        {"{\"twilio\":{\"sms_per_segment\":{\"default\":null}}}", "no default SMS price"},
        {"{\"twilio\":{\"sms_per_segment\":{\"44\":\"0.05\"}}}", "prefix without +"},
        {"{\"twilio\":{\"unknown_body_segments\":0}}", "zero unknown segments"},
        {"{\"twilio\":{\"call_estimate\":null}}", "required price removed"},
        {"{\"openai\":null}", "whole vendor removed"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"snapshots\":\"gpt-4o-YYYY-MM-DD\"}}}}",
         "snapshots not an array"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"snapshots\":[\"\"]}}}}", "empty snapshot"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"priority\":{\"input_per_mtoks\":\"1\"}}}}}",
         "typo in a priority block"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"fast_multiplier\":\"2\"}}}}",
         "fast mode is Anthropic's"},
        {"{\"anthropic\":{\"models\":{\"claude-opus-5\":{\"fast_multiplier\":\"1000\"}}}}",
         "multiplier out of range"},
        {"{\"openai\":{\"web_search_per_call\":null}}", "tool fee removed"},
        {"{\"anthropic\":{\"batch_percent\":0}}", "zero batch percent"},
        {"{\"anthropic\":{\"inference_geo_multiplier\":\"0.5\"}}", "geo discount"},
        {"{\"openai\":{\"models\":{\"gpt-4o\":{\"context_tokens\":0}}}}", "zero context"},
        {"{\"version\":\"2026-01-01\",\"version\":\"2026-02-01\"}", "duplicate key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum kb_err err = try_load(bad[i].json, &p);
        if (err != KB_E_CONFIG)
            print_message("case %zu (%s) was not refused\n", i, bad[i].why);
        assert_int_equal(err, KB_E_CONFIG);
    }

    /* A file that does not exist, with the path in the message. */
    struct kb_pricing *out = NULL;
    char *em = NULL;
    assert_int_equal(meter_pricing_load("/nonexistent/pricing.json", &out, &em), KB_E_CONFIG);
    assert_non_null(strstr(em, "/nonexistent/pricing.json"));
    assert_null(out);
    free(em);
    em = NULL;
    /* A directory opens but does not read: refused, not taken as empty. */
    assert_int_equal(meter_pricing_load("/tmp", &out, &em), KB_E_CONFIG);
    assert_null(out);
    assert_non_null(em);
    free(em);
}

/* ---- arithmetic ---- */

static void test_arithmetic(void **state)
{
    (void)state;
    /* 1200 tokens x $2.50/M = 3000 µ$ exactly */
    assert_int_equal(meter__token_cost(1200, 2500000), 3000);
    /* 19 x $2.50/M = 47.5 µ$ -> 48 (up, never under-counted) */
    assert_int_equal(meter__token_cost(19, 2500000), 48);
    /* 1 token x $0.02/M = 0.02 µ$ -> 1 µ$ */
    assert_int_equal(meter__token_cost(1, 20000), 1);
    assert_int_equal(meter__token_cost(0, 20000), 0);
    assert_int_equal(meter__token_cost(5, 0), 0);
    /* overflowing products saturate at the money cap */
    assert_int_equal(meter__mul_div_ceil(INT64_MAX, INT64_MAX, 1000000), KB_MONEY_MAX_MICROS);
    assert_int_equal(meter__mul_sat(INT64_MAX / 2, 3), KB_MONEY_MAX_MICROS);
    assert_int_equal(meter__add_sat(KB_MONEY_MAX_MICROS, 1), KB_MONEY_MAX_MICROS);
    assert_int_equal(meter__add_sat(-5, 7), 7);
    /* large but exact: 9e15 x 1000 / 1e6 = 9e12, through the split path */
    assert_int_equal(meter__mul_div_ceil(9000000000000000LL, 1000, 1000000), 9000000000000LL);
    assert_int_equal(meter__mul_div_ceil(9000000000000001LL, 1000, 1000000), 9000000000001LL);
}

/* ---- SSE splitter ---- */

struct events {
    char got[4096]; /* "event|data;" for each dispatched event */
    size_t n;       /* events */
};

static void collect(void *ctx, const char *event, const char *data, size_t len)
{
    struct events *e = ctx;
    size_t used = strlen(e->got);
    snprintf(e->got + used, sizeof e->got - used, "%s|%.*s;", event, (int)len, data);
    e->n++;
}

/* Feeds s in pieces of `step` bytes (0: whole) and returns what came out. */
static void sse_run(const char *s, size_t step, struct events *e)
{
    struct meter__sse sse;
    size_t len = strlen(s);
    memset(e, 0, sizeof *e);
    meter__sse_init(&sse);
    for (size_t i = 0; i < len;) {
        size_t n = step && step < len - i ? step : len - i;
        meter__sse_feed(&sse, s + i, n, collect, e);
        i += n;
    }
    meter__sse_cleanup(&sse);
}

static void test_sse_splitter(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"data: a\n\n", "|a;"},
        {"event: x\ndata: a\n\ndata: b\n\n", "x|a;|b;"},
        {"data: a\r\n\r\ndata: b\r\rdata: c\n\n", "|a;|b;|c;"},
        {"data: one\ndata: two\n\n", "|one\ntwo;"}, /* multi-line data */
        {": comment\n\ndata:x\n\n", "|x;"},         /* comments; no space */
        {"event: ping\n\n", ""},                    /* no data: not dispatched */
        {"data\n\n", "|;"},                         /* field without colon */
        {"id: 7\nretry: 10\ndata: a\n\n", "|a;"},   /* ignored fields */
        {"data: a\n\ndata: unfinished", "|a;"},     /* no blank line yet */
        {"data:  two spaces\n\n", "| two spaces;"}, /* only one space stripped */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t step = 0; step < 5; step++) {
            struct events e;
            sse_run(cases[i].in, step, &e);
            if (strcmp(e.got, cases[i].want) != 0)
                print_message("case %zu step %zu: got \"%s\"\n", i, step, e.got);
            assert_string_equal(e.got, cases[i].want);
        }
    }
}

static void test_sse_overlong_event(void **state)
{
    (void)state;
    struct meter__sse sse;
    struct events e;
    size_t big = 2 * 1024 * 1024; /* over the old 1 MiB event limit */
    char *pad = kb_malloc(big);
    memset(pad, 'z', big);
    memset(&e, 0, sizeof e);
    meter__sse_init(&sse);

    meter__sse_feed(&sse, "data: ", 6, collect, &e);
    for (size_t i = 0; i < big; i += 1000)
        meter__sse_feed(&sse, pad + i, big - i < 1000 ? big - i : 1000, collect, &e);
    /* past METER__SSE_RAW_MAX it is scanned, not buffered: not JSON, so
     * the scan failed at once and holds nothing, and the copy as sent is
     * given back */
    assert_true(sse.scanning);
    assert_true(sse.scan.failed);
    assert_true(sse.scan.out.cap == 0);
    assert_true(sse.raw.len == 0);
    meter__sse_feed(&sse, "\ndata: more\n", 12, collect, &e);
    meter__sse_feed(&sse, "\ndata: ok\n\n", 11, collect, &e);
    assert_string_equal(e.got, "|ok;");
    meter__sse_cleanup(&sse);
    free(pad);
}

/* ---- form decoder ---- */

static void test_form(void **state)
{
    (void)state;
    struct meter__form f;
    const struct meter__form_pair *v = NULL;
    char *em = NULL;

    assert_int_equal(
        meter__form_parse("a=1&&b=x+y%21&c&metadata%5Bk%5D=%E2%82%AC&a=1", 45, &f, &em), KB_OK);
    assert_int_equal(f.n, 5);
    assert_int_equal(meter__form_get(&f, "b", &v, &em), KB_OK);
    assert_string_equal(v->val, "x y!");
    assert_int_equal(meter__form_get(&f, "c", &v, &em), KB_OK);
    assert_int_equal(v->vlen, 0);
    assert_int_equal(meter__form_get(&f, "metadata[k]", &v, &em), KB_OK);
    assert_string_equal(v->val, "\xe2\x82\xac");
    assert_int_equal(meter__form_get(&f, "a", &v, &em), KB_OK); /* same value twice: fine */
    assert_string_equal(v->val, "1");
    assert_int_equal(meter__form_get(&f, "zz", &v, &em), KB_OK);
    assert_null(v);
    meter__form_cleanup(&f);

    assert_int_equal(meter__form_parse("a=1&a=2", 7, &f, &em), KB_OK);
    assert_int_equal(meter__form_get(&f, "a", &v, &em), KB_E_INVALID);
    free(em);
    em = NULL;
    meter__form_cleanup(&f);

    assert_int_equal(meter__form_parse("a=%4", 4, &f, &em), KB_E_INVALID);
    free(em);
    em = NULL;
    assert_int_equal(meter__form_parse("a=%G1", 5, &f, &em), KB_E_INVALID);
    free(em);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded),       cmocka_unit_test(test_override_merge),
        cmocka_unit_test(test_current_models), cmocka_unit_test(test_snapshot_patterns),
        cmocka_unit_test(test_refused_files),  cmocka_unit_test(test_arithmetic),
        cmocka_unit_test(test_sse_splitter),   cmocka_unit_test(test_sse_overlong_event),
        cmocka_unit_test(test_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
