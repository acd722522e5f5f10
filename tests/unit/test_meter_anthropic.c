/*
 * test_meter_anthropic.c - the Anthropic meter on recorded-looking Messages
 * API bodies: plain and cached usage (5-minute and 1-hour writes, reads),
 * long-context prices, streams fed whole, byte by byte and at random cut
 * points (LF and CRLF framing), cumulative message_delta usage, cut streams,
 * failures, unpriced models and dated model ids.
 *
 * Prices are pinned by an override file. 1 token at $X per million tokens
 * costs X µ$: "$3/M" reads as "3 µ$ a token" below.
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
#include "core/buf.h"
#include "meter/meter.h"

static const char pinned[] =
    "{\"anthropic\": {\"models\": {"
    "\"claude-sonnet-4\": {\"input_per_mtok\": \"3.00\", \"output_per_mtok\": \"15.00\","
    " \"cache_write_per_mtok\": \"3.75\", \"cache_write_1h_per_mtok\": \"6.00\","
    " \"cache_read_per_mtok\": \"0.30\", \"max_output_tokens\": 64000,"
    " \"long_context\": {\"threshold_tokens\": 200000, \"input_per_mtok\": \"6.00\","
    "  \"output_per_mtok\": \"22.50\", \"cache_write_per_mtok\": \"7.50\","
    "  \"cache_write_1h_per_mtok\": \"12.00\", \"cache_read_per_mtok\": \"0.60\"}},"
    "\"claude-3-5-haiku\": {\"input_per_mtok\": \"0.80\", \"output_per_mtok\": \"4.00\","
    " \"cache_write_per_mtok\": \"1.00\", \"cache_write_1h_per_mtok\": \"1.60\","
    " \"cache_read_per_mtok\": \"0.08\", \"max_output_tokens\": 8192}"
    "}}}";

/* ---- helpers (each test file carries its own) ---- */

static struct kb_pricing *load(const char *override)
{
    return load_pricing(override);
}

static enum kb_err begin(struct kb_pricing *p, const char *body, struct kb_meter **m,
                         int64_t *reserve)
{
    struct kb_meter_req req = {"anthropic",        "POST", "/v1/messages", 12,
                               "application/json", body,   strlen(body)};
    char *em = NULL, *nb = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &req, m, reserve, &nb, &nbl, &em);
    assert_null(nb); /* Anthropic streams carry usage unasked */
    if (err != KB_OK)
        assert_non_null(em);
    free(em);
    return err;
}

enum feed_mode { WHOLE = 0, BYTEWISE, RANDOM };

static void feed(struct kb_meter *m, const char *s, size_t len, enum feed_mode mode, unsigned seed)
{
    size_t i = 0;
    while (i < len) {
        size_t n = len - i;
        if (mode == BYTEWISE) {
            n = 1;
        } else if (mode == RANDOM) {
            seed = seed * 1103515245u + 12345u;
            size_t r = 1 + (seed >> 16) % 97;
            n = r < n ? r : n;
        }
        meter_response_data(m, s + i, n);
        i += n;
    }
}

static int64_t exchange(struct kb_pricing *p, const char *body, int status, const char *ctype,
                        const char *resp, enum feed_mode mode, unsigned seed, bool complete,
                        int64_t *reserve)
{
    struct kb_meter *m = NULL;
    assert_int_equal(begin(p, body, &m, reserve), KB_OK);
    meter_response_status(m, status, ctype);
    feed(m, resp, strlen(resp), mode, seed);
    int64_t cost = meter_settle(m, complete);
    meter_free(m);
    return cost;
}

static void all_splits(struct kb_pricing *p, const char *body, const char *ctype, const char *resp,
                       int64_t want_reserve, int64_t want)
{
    int64_t reserve = -1;
    for (unsigned k = 0; k < 32; k++) {
        enum feed_mode mode = k == 0 ? WHOLE : k == 1 ? BYTEWISE : RANDOM;
        int64_t got = exchange(p, body, 200, ctype, resp, mode, k, true, &reserve);
        assert_int_equal(reserve, want_reserve);
        if (got != want)
            print_message("split %u: got %lld want %lld\n", k, (long long)got, (long long)want);
        assert_int_equal(got, want);
    }
}

/* Replaces every "\n" of s with "\r\n" (fresh string). */
static char *crlf(const char *s)
{
    size_t n = strlen(s), k = 0;
    char *d = kb_malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            d[k++] = '\r';
        d[k++] = s[i];
    }
    d[k] = '\0';
    return d;
}

/* ---- recorded-looking bodies ---- */

/* 109 bytes */
static const char req_plain[] = "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":1024,"
                                "\"messages\":[{\"role\":\"user\",\"content\":\"Hello, Claude\"}]}";

/* 114 bytes */
static const char req_stream[] = "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":256,"
                                 "\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
                                 "\"Hello\"}]}";

/* 216 bytes */
static const char req_cache[] =
    "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":1024,\"system\":[{\"type\":\"text\","
    "\"text\":\"You are a contracts lawyer.\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
    "\"messages\":[{\"role\":\"user\",\"content\":\"Summarise clause 4.\"}]}";

/* 227 bytes */
static const char req_cache_1h[] =
    "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":1024,\"system\":[{\"type\":\"text\","
    "\"text\":\"You are a contracts lawyer.\",\"cache_control\":{\"type\":\"ephemeral\","
    "\"ttl\":\"1h\"}}],\"messages\":[{\"role\":\"user\",\"content\":\"Summarise clause 4.\"}]}";

static const char stream_start[] =
    "event: message_start\n"
    "data: "
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\","
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":"
    "\"claude-sonnet-4-20250514\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
    "{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
    "\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"! How can I help?\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n";

static const char stream_end[] =
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";

/* ---- non-streamed ---- */

static void test_plain(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    const char *resp =
        "{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\","
        "\"model\":\"claude-sonnet-4-20250514\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"Hello!\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{"
        "\"input_tokens\":2095,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
        "\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":0},"
        "\"output_tokens\":503,\"service_tier\":\"standard\"}}";
    assert_int_equal(strlen(req_plain), 109);
    /* reserve: (109 + 1024) = 1133 x 3 = 3399 µ$ + max_tokens 1024 x 15 =
     *          15360 µ$                                       -> 18759 µ$
     * settle:  2095 x 3 = 6285 µ$ + 503 x 15 = 7545 µ$       -> 13830 µ$ */
    all_splits(p, req_plain, "application/json", resp, 18759, 13830);
    meter_pricing_free(p);
}

static void test_cache_5m(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    const char *resp = "{\"id\":\"msg_2\",\"type\":\"message\",\"content\":[],\"usage\":{"
                       "\"input_tokens\":50,\"cache_creation_input_tokens\":10000,"
                       "\"cache_read_input_tokens\":20000,\"output_tokens\":300}}";
    assert_int_equal(strlen(req_cache), 216);
    /* cache_control in the body: input reserved at the cache-write price.
     * reserve: (216 + 1024) = 1240 x 3.75 = 4650 µ$ + 1024 x 15 = 15360 µ$
     *                                                         -> 20010 µ$
     * settle:  50 input x 3            =   150 µ$
     *          10000 cache write x 3.75 = 37500 µ$ (no breakdown: 5-minute)
     *          20000 cache read x 0.30 =  6000 µ$
     *          300 output x 15         =  4500 µ$            -> 48150 µ$ */
    all_splits(p, req_cache, "application/json", resp, 20010, 48150);
    meter_pricing_free(p);
}

static void test_cache_1h(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    const char *resp = "{\"type\":\"message\",\"usage\":{\"input_tokens\":10,"
                       "\"cache_creation_input_tokens\":3000,\"cache_read_input_tokens\":null,"
                       "\"cache_creation\":{\"ephemeral_5m_input_tokens\":1000,"
                       "\"ephemeral_1h_input_tokens\":2000},\"output_tokens\":100}}";
    assert_int_equal(strlen(req_cache_1h), 227);
    /* ttl 1h: input reserved at the 1-hour write price.
     * reserve: (227 + 1024) = 1251 x 6 = 7506 µ$ + 15360 µ$   -> 22866 µ$
     * settle:  10 input x 3                =    30 µ$
     *          1000 5-minute writes x 3.75 =  3750 µ$
     *          2000 1-hour writes x 6      = 12000 µ$
     *          100 output x 15             =  1500 µ$        -> 17280 µ$ */
    all_splits(p, req_cache_1h, "application/json", resp, 22866, 17280);
    meter_pricing_free(p);
}

static void test_long_context(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    int64_t reserve = -1;
    const char *resp = "{\"usage\":{\"input_tokens\":150000,\"cache_read_input_tokens\":60000,"
                       "\"output_tokens\":1000}}";
    const char *at = "{\"usage\":{\"input_tokens\":200000,\"output_tokens\":1000}}";

    /* 150000 + 60000 = 210000 input tokens > 200000: long-context prices
     * for everything:
     *   150000 x 6.00 = 900000 µ$; 60000 x 0.60 = 36000 µ$;
     *   1000 x 22.50 = 22500 µ$                          -> 958500 µ$ */
    assert_int_equal(
        exchange(p, req_plain, 200, "application/json", resp, RANDOM, 9, true, &reserve), 958500);
    /* Exactly 200000 is not above the threshold: 200000 x 3 = 600000 µ$ +
     * 1000 x 15 = 15000 µ$                                -> 615000 µ$ */
    assert_int_equal(exchange(p, req_plain, 200, "application/json", at, WHOLE, 0, true, &reserve),
                     615000);

    /* A 250096-byte body may be over the threshold: reserved at long prices.
     * (250096 + 1024) = 251120 x 6 = 1506720 µ$ + 2000 x 22.5 = 45000 µ$
     *                                                        -> 1551720 µ$ */
    struct kb_buf b = KB_BUF_INIT;
    buf_puts(&b, "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":2000,\"messages\":[{"
                 "\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 250000; i++)
        buf_putc(&b, 'a');
    buf_puts(&b, "\"}]}");
    assert_int_equal(b.len, 250096);
    struct kb_meter *m = NULL;
    assert_int_equal(begin(p, b.data, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 1551720);
    meter_free(m);
    buf_cleanup(&b);
    meter_pricing_free(p);
}

/* ---- streamed ---- */

static void test_stream(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    char *resp = kb_asprintf("%s%s", stream_start, stream_end);
    char *resp_crlf = crlf(resp);
    assert_int_equal(strlen(req_stream), 114);
    /* reserve: (114 + 1024) = 1138 x 3 = 3414 µ$ + 256 x 15 = 3840 µ$
     *                                                         -> 7254 µ$
     * settle:  message_start input 25 x 3 = 75 µ$; message_delta output
     *          15 (cumulative, replaces the 1 of message_start) x 15 =
     *          225 µ$                                         ->  300 µ$ */
    all_splits(p, req_stream, "text/event-stream", resp, 7254, 300);
    /* CRLF framing, with CR and LF falling into different chunks. */
    all_splits(p, req_stream, "text/event-stream", resp_crlf, 7254, 300);
    free(resp);
    free(resp_crlf);
    meter_pricing_free(p);
}

static void test_stream_cut(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    int64_t reserve = -1;

    /* Cut after message_start and some text, before message_delta: the
     * output so far is unknown -> the reservation, 7254 µ$. */
    for (unsigned k = 0; k < 8; k++)
        assert_int_equal(exchange(p, req_stream, 200, "text/event-stream", stream_start,
                                  k ? RANDOM : BYTEWISE, k, false, &reserve),
                         7254);
    /* An error event mid-stream (overloaded) and no message_delta: the
     * reservation too. */
    char *err = kb_asprintf("%sevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                            "\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                            stream_start);
    assert_int_equal(
        exchange(p, req_stream, 200, "text/event-stream", err, RANDOM, 4, true, &reserve), 7254);
    /* message_delta arrived, message_stop did not: usage is final -> 300 µ$ */
    char *nostop =
        kb_asprintf("%s%.*s", stream_start,
                    (int)(strstr(stream_end, "event: message_stop") - stream_end), stream_end);
    assert_int_equal(
        exchange(p, req_stream, 200, "text/event-stream", nostop, BYTEWISE, 0, false, &reserve),
        300);
    free(err);
    free(nostop);
    meter_pricing_free(p);
}

static void test_stream_cumulative_deltas(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    /* Server tools: several message_delta events, each cumulative, the
     * later ones with updated input. Final: input 900, output 120, one
     * web search.
     *   900 x 3 = 2700 µ$ + 120 x 15 = 1800 µ$ (not 40 + 120) + 1 search x
     *   $0.01 = 10000 µ$ -> 14500 µ$ */
    const char *resp =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":500,"
        "\"output_tokens\":1}}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"pause_turn\"},\"usage\":"
        "{\"input_tokens\":900,\"output_tokens\":40,\"server_tool_use\":{"
        "\"web_search_requests\":1}}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":"
        "{\"input_tokens\":900,\"output_tokens\":120}}\n\n";
    all_splits(p, req_stream, "text/event-stream", resp, 7254, 14500);
    meter_pricing_free(p);
}

/* ---- failures and models ---- */

static void test_failures_cost_zero(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    int64_t reserve = -1;
    const char *overloaded = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                             "\"message\":\"Overloaded\"}}";

    assert_int_equal(
        exchange(p, req_plain, 529, "application/json", overloaded, WHOLE, 0, true, &reserve), 0);
    assert_int_equal(
        exchange(p, req_stream, 400, "application/json", overloaded, BYTEWISE, 0, false, &reserve),
        0);
    struct kb_meter *m = NULL;
    assert_int_equal(begin(p, req_plain, &m, &reserve), KB_OK);
    assert_int_equal(meter_settle(m, true), 0); /* never got a status */
    meter_free(m);
    meter_pricing_free(p);
}

static void test_models(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* Dated id -> claude-3-5-haiku; no max_tokens -> its 8192 maximum.
     * 81 bytes: (81 + 1024) = 1105 x 0.80 = 884 µ$ + 8192 x 4 = 32768 µ$
     *                                                        -> 33652 µ$ */
    const char *haiku =
        "{\"model\":\"claude-3-5-haiku-20241022\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"Hi\"}]}";
    assert_int_equal(strlen(haiku), 81);
    assert_int_equal(begin(p, haiku, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 33652);
    meter_free(m);

    reserve = -1;
    assert_int_equal(
        begin(p, "{\"model\":\"claude-2.1\",\"max_tokens\":10,\"messages\":[]}", &m, &reserve),
        KB_E_MODEL_NOT_PRICED);
    assert_int_equal(reserve, -1);
    assert_int_equal(begin(p, "{\"max_tokens\":10,\"messages\":[]}", &m, &reserve), KB_E_INVALID);
    assert_int_equal(begin(p, "{\"model\":\"claude-3-5-haiku\",\"max_tokens\":1.0}", &m, &reserve),
                     KB_E_INVALID);

    /* A write no rule prices is refused, not let through at $0. */
    struct kb_meter_req req = {
        "anthropic", "POST", "/v1/unpriced_thing", 18, "application/json", "{}", 2};
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    m = NULL;
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_E_ENDPOINT_NOT_METERED);
    assert_null(m);
    free(em);
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_cache_5m),
        cmocka_unit_test(test_cache_1h),
        cmocka_unit_test(test_long_context),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_cut),
        cmocka_unit_test(test_stream_cumulative_deltas),
        cmocka_unit_test(test_failures_cost_zero),
        cmocka_unit_test(test_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
