/*
 * test_meter_scan.c - big and compressed answers through the whole meter
 * (meter_begin, meter_response_status, meter_response_encoding,
 * meter_response_data, meter_settle) for the four vendors.
 *
 * Each answer is sent as the vendor sent it (identity), and gzip-, zlib-
 * deflate-, raw-deflate-, br- and zstd-compressed, fed in random splits;
 * all must settle to the same exact micro-dollars while the meter holds
 * only small skeletons. Answers the meter cannot read (an unknown coding,
 * a cut or corrupt coded stream, a bomb) settle at the reservation.
 *
 * Prices are pinned by an override applied to the embedded pricing, so the
 * figures below do not move when list prices are updated. 1 token at $X
 * per million tokens costs X µ$: "$2.50/M" reads "2.5 µ$ a token".
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec_test.h"
#include "meter_test.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "meter/meter.h"
#include "meter/meter_int.h"

static const char pinned[] =
    "{\"openai\": {\"models\": {"
    "\"gpt-4o\": {\"input_per_mtok\": \"2.50\", \"cached_input_per_mtok\": \"1.25\","
    " \"output_per_mtok\": \"10.00\", \"max_output_tokens\": 16384, \"priority\": null}}},"
    "\"anthropic\": {\"models\": {"
    "\"claude-sonnet-4\": {\"input_per_mtok\": \"3.00\", \"output_per_mtok\": \"15.00\","
    " \"cache_write_per_mtok\": \"3.75\", \"cache_write_1h_per_mtok\": \"6.00\","
    " \"cache_read_per_mtok\": \"0.30\", \"max_output_tokens\": 64000, \"long_context\": null}}},"
    "\"stripe\": {\"currency_rates\": {\"eur\": \"1.10\"}, \"unknown_amount_reserve\": \"50.00\"},"
    "\"twilio\": {\"sms_per_segment\": {\"+1\": \"0.0083\", \"default\": \"0.20\"},"
    " \"mms_per_message\": \"0.0220\", \"call_per_minute\": \"0.0140\","
    " \"call_estimate\": \"0.14\", \"unknown_body_segments\": 24}}";

/* The ways an answer is sent: as is, or in one of the codings. */
struct coding {
    const char *ce; /* Content-Encoding */
    int enc;        /* enum test_enc, or -1 for identity */
};

static const struct coding codings[] = {
    {NULL, -1},           {"gzip", ENC_GZIP}, {"deflate", ENC_ZLIB},
    {"deflate", ENC_RAW}, {"br", ENC_BR},     {"zstd", ENC_ZSTD},
};
#define NCODINGS (sizeof codings / sizeof codings[0])

struct req {
    const char *vendor;
    const char *path;
    const char *ctype;
    const char *body;
};

static struct kb_meter *begin(struct kb_pricing *p, const struct req *r, int64_t *reserve)
{
    struct kb_meter_req q = {r->vendor, "POST",  r->path,        strlen(r->path),
                             r->ctype,  r->body, strlen(r->body)};
    struct kb_meter *m = NULL;
    char *em = NULL, *nb = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &q, &m, reserve, &nb, &nbl, &em);
    if (err != KB_OK)
        print_message("begin: %s\n", em ? em : "?");
    assert_int_equal(err, KB_OK);
    free(nb);
    free(em);
    return m;
}

/* Feeds data[0, n) in random pieces of 1..70000 bytes. */
static void feed_random(struct kb_meter *m, const char *data, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n;) {
        size_t k = test_rand(&seed) % 4 == 0 ? 1 + test_rand(&seed) % 16
                                             : 1 + (test_rand(&seed) * 7u) % 70000;
        if (k > n - i)
            k = n - i;
        meter_response_data(m, data + i, k);
        i += k;
    }
}

/* One exchange: answer (resp, as the vendor wrote it) sent with coding c,
 * cut to `keep` encoded bytes (SIZE_MAX: whole). Returns the settled cost. */
static int64_t exchange(struct kb_pricing *p, const struct req *r, int status,
                        const char *resp_ctype, const char *ce, const char *wire, size_t n,
                        unsigned seed, bool complete, int64_t *reserve)
{
    struct kb_meter *m = begin(p, r, reserve);
    meter_response_status(m, status, resp_ctype);
    meter_response_encoding(m, ce);
    feed_random(m, wire, n, seed);
    /* Whatever the size of the answer, the meter held only skeletons. */
    assert_true(m->sse_state.scan.out.cap <= 64 * 1024);
    assert_true(m->body_scan.out.cap <= 64 * 1024);
    int64_t cost = meter_settle(m, complete);
    meter_free(m);
    return cost;
}

/* Sends resp in every coding, in 3 random splits each: all must settle at
 * want (and the reservation must be want_reserve). */
static void all_codings(struct kb_pricing *p, const struct req *r, const char *resp_ctype,
                        const char *resp, size_t len, int64_t want_reserve, int64_t want)
{
    for (size_t c = 0; c < NCODINGS; c++) {
        size_t wn = len;
        char *wire =
            codings[c].enc < 0 ? NULL : test_encode((enum test_enc)codings[c].enc, resp, len, &wn);
        for (unsigned seed = 1; seed <= 3; seed++) {
            int64_t reserve = -1;
            int64_t got = exchange(p, r, 200, resp_ctype, codings[c].ce, wire ? wire : resp, wn,
                                   seed * 31 + (unsigned)c, true, &reserve);
            if (got != want)
                print_message("%s seed %u: got %lld want %lld\n",
                              codings[c].enc < 0 ? "identity" : test_enc_name[codings[c].enc], seed,
                              (long long)got, (long long)want);
            assert_int_equal(reserve, want_reserve);
            assert_int_equal(got, want);
        }
        free(wire);
    }
}

/* Long assistant text that compresses like prose (a few x, not a
 * thousand): words in a pseudo-random order, JSON escapes, and now and
 * then text that looks like usage. */
static void long_text(struct kb_buf *b, size_t n)
{
    static const char *const words[] = {
        "Once ",
        "upon ",
        "a ",
        "time ",
        "\\\"usage\\\":{\\\"prompt_tokens\\\":1} ",
        "the ",
        "\\\\model\\\\ ",
        "caf\\u00e9 ",
        "said\\n",
        "tokens ",
        "river ",
        "mountain ",
        "quietly ",
        "\\t",
        "{\\\"output_tokens\\\":1} ",
        "seventy ",
        "blue ",
        "across ",
        "[brackets] ",
        "commas, ",
    };
    unsigned seed = (unsigned)n;
    while (b->len < n) {
        buf_puts(b, words[test_rand(&seed) % (sizeof words / sizeof words[0])]);
        if (test_rand(&seed) % 4 == 0)
            buf_printf(b, "%u ", test_rand(&seed));
    }
}

/* ---- OpenAI ---- */

static const struct req responses_req = {
    "openai", "/v1/responses", "application/json",
    "{\"model\":\"gpt-4o\",\"input\":\"Write a long story.\",\"stream\":true,"
    "\"max_output_tokens\":16000}"};

/* Reservation: body 88 bytes + 1024 slack = 1112 tokens x 2.5 = 2780 µ$,
 * + 16000 output x 10 = 160000 -> 162780 µ$. */
#define RESPONSES_RESERVE 162780

/* A Responses stream whose response.completed event is over 2 MiB (the
 * whole output text repeated in it). usage: 1200 input of which 200
 * cached, 15000 output: 1000 x 2.5 + 200 x 1.25 + 15000 x 10
 * = 2500 + 250 + 150000 = 152750 µ$. */
static void test_openai_responses_2mib_event(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    struct kb_buf text = KB_BUF_INIT, s = KB_BUF_INIT;
    long_text(&text, 2u << 20);

    buf_puts(&s, "event: response.created\ndata: {\"type\":\"response.created\",\"response\":"
                 "{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n");
    for (int i = 0; i < 50; i++)
        buf_printf(&s,
                   "event: response.output_text.delta\ndata: {\"type\":"
                   "\"response.output_text.delta\",\"delta\":\"word %d \\\"usage\\\"\"}\n\n",
                   i);
    buf_printf(&s,
               "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{"
               "\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[{\"type\":\"message\","
               "\"content\":[{\"type\":\"output_text\",\"text\":\"%s\",\"annotations\":[]}]}],"
               "\"usage\":{\"input_tokens\":1200,\"input_tokens_details\":{\"cached_tokens\":200},"
               "\"output_tokens\":15000,\"output_tokens_details\":{\"reasoning_tokens\":0},"
               "\"total_tokens\":16200}}}\n\n",
               text.data);
    assert_true(s.len > (2u << 20));
    all_codings(p, &responses_req, "text/event-stream", s.data, s.len, RESPONSES_RESERVE, 152750);
    buf_cleanup(&s);
    buf_cleanup(&text);
    meter_pricing_free(p);
}

static const struct req chat_stream_req = {
    "openai", "/v1/chat/completions", "application/json",
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"Write.\"}],"
    "\"stream\":true}"};

/* A chat stream whose final chunk carries 2 MiB of content and the usage:
 * 1000 prompt, 16000 completion: 1000 x 2.5 + 16000 x 10 = 162500 µ$.
 * Reservation (from the body as the client sent it): 80 bytes + 1024 =
 * 1104 x 2.5 = 2760, + the model's 16384 output x 10 = 163840
 * -> 166600 µ$. */
#define CHAT_STREAM_RESERVE 166600
static void test_openai_chat_stream_2mib_final_chunk(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    struct kb_buf text = KB_BUF_INIT, s = KB_BUF_INIT;
    long_text(&text, 2u << 20);

    for (int i = 0; i < 20; i++)
        buf_printf(&s,
                   "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{"
                   "\"index\":0,\"delta\":{\"content\":\"w%d\"}}],\"usage\":null}\n\n",
                   i);
    buf_printf(
        &s,
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
        "\"delta\":{\"content\":\"%s\"},\"finish_reason\":\"stop\"}],\"usage\":{"
        "\"prompt_tokens\":1000,\"completion_tokens\":16000,\"total_tokens\":17000}}\n\n"
        "data: [DONE]\n\n",
        text.data);
    all_codings(p, &chat_stream_req, "text/event-stream", s.data, s.len, CHAT_STREAM_RESERVE,
                162500);
    buf_cleanup(&s);
    buf_cleanup(&text);
    meter_pricing_free(p);
}

static const struct req chat_req = {
    "openai", "/v1/chat/completions", "application/json",
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"Write.\"}]}"};

/* Reservation: 66 bytes + 1024 = 1090 x 2.5 = 2725, + 163840
 * -> 166565 µ$. */
#define CHAT_RESERVE 166565

/* A 6 MiB chat completion (not streamed): usage after the content.
 * 1000 prompt of which 200 cached, 16000 completion:
 * 800 x 2.5 + 200 x 1.25 + 16000 x 10 = 2000 + 250 + 160000 = 162250 µ$. */
static char *chat_6mib(size_t *len)
{
    struct kb_buf text = KB_BUF_INIT, b = KB_BUF_INIT;
    long_text(&text, 6u << 20);
    buf_printf(&b,
               "{\n  \"id\": \"chatcmpl-1\",\n  \"object\": \"chat.completion\",\n  \"model\": "
               "\"gpt-4o-2024-08-06\",\n  \"choices\": [{\"index\": 0, \"message\": {\"role\": "
               "\"assistant\", \"content\": \"%s\", \"refusal\": null}, \"logprobs\": null, "
               "\"finish_reason\": \"stop\"}],\n  \"usage\": {\"prompt_tokens\": 1000, "
               "\"completion_tokens\": 16000, \"total_tokens\": 17000, \"prompt_tokens_details\": "
               "{\"cached_tokens\": 200, \"audio_tokens\": 0}}\n}\n",
               text.data);
    buf_cleanup(&text);
    return buf_take(&b, len);
}

static void test_openai_chat_6mib_json(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    size_t n;
    char *resp = chat_6mib(&n);
    assert_true(n > (6u << 20));
    all_codings(p, &chat_req, "application/json", resp, n, CHAT_RESERVE, 162250);
    free(resp);
    meter_pricing_free(p);
}

/* ---- Anthropic ---- */

static const struct req ant_req = {
    "anthropic", "/v1/messages", "application/json",
    "{\"model\":\"claude-sonnet-4\",\"max_tokens\":1024,\"stream\":true,\"messages\":[{\"role\":"
    "\"user\",\"content\":\"Hi\"}]}"};

/* A stream whose message_start is 2 MiB. usage: 2000 input, 100 cache
 * writes (5 minutes), 300 cache reads, 700 output:
 * 2000 x 3 + 100 x 3.75 + 300 x 0.30 + 700 x 15 = 6000 + 375 + 90 + 10500
 * = 16965 µ$. Reservation: no cache_control in the body, so the input
 * bound is priced as input: 103 bytes + 1024 = 1127 x 3 = 3381, + max_tokens
 * 1024 x 15 = 15360 -> 18741 µ$. */
static void test_anthropic_2mib_message_start(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    struct kb_buf text = KB_BUF_INIT, s = KB_BUF_INIT;
    long_text(&text, 2u << 20);

    buf_printf(&s,
               "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"
               "\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":"
               "\"text\",\"text\":\"%s\"}],\"model\":\"claude-sonnet-4-20250514\",\"usage\":{"
               "\"input_tokens\":2000,\"cache_creation_input_tokens\":100,"
               "\"cache_read_input_tokens\":300,\"output_tokens\":1}}}\n\n",
               text.data);
    buf_puts(&s, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    for (int i = 0; i < 30; i++)
        buf_printf(
            &s,
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"w%d \\\"usage\\\"\"}}\n\n",
            i);
    buf_puts(&s, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{"
                 "\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":700}}\n\n"
                 "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    all_codings(p, &ant_req, "text/event-stream", s.data, s.len, 18741, 16965);
    buf_cleanup(&s);
    buf_cleanup(&text);
    meter_pricing_free(p);
}

/* ---- Stripe and Twilio: settle rules that read the body ---- */

static const struct req stripe_req = {
    "stripe", "/v1/checkout/sessions", "application/x-www-form-urlencoded",
    "mode=payment&line_items%5B0%5D%5Bprice%5D=price_1MotwRLkdIwHu7ixYcPLm5uZ"
    "&line_items%5B0%5D%5Bquantity%5D=2"};

/* The amount lives in Stripe: reserve $50 = 50000000 µ$; the session's
 * amount_total 4200 eur cents x $1.10 = $46.20 = 46200000 µ$. */
static void test_stripe_compressed_answer(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    struct kb_buf text = KB_BUF_INIT, b = KB_BUF_INIT;
    long_text(&text, 300000);
    buf_printf(&b,
               "{\"id\":\"cs_1\",\"object\":\"checkout.session\",\"custom_text\":{\"submit\":{"
               "\"message\":\"%s\"}},\"amount_subtotal\":4200,\"amount_total\":4200,"
               "\"currency\":\"eur\",\"metadata\":{}}",
               text.data);
    all_codings(p, &stripe_req, "application/json", b.data, b.len, 50000000, 46200000);
    buf_cleanup(&b);
    buf_cleanup(&text);
    meter_pricing_free(p);
}

static const struct req twilio_req = {
    "twilio", "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json",
    "application/x-www-form-urlencoded",
    "To=%2B14155550100&From=%2B14155550199&Body="
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"};

/* 161 GSM characters: 2 segments reserved, 2 x $0.0083 = 16600 µ$;
 * Twilio's reply says 1 segment: 8300 µ$. */
static void test_twilio_compressed_answer(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    const char *resp = "{\"sid\":\"SM1\",\"status\":\"queued\",\"num_segments\":\"1\","
                       "\"price\":null,\"price_unit\":\"USD\"}";
    all_codings(p, &twilio_req, "application/json", resp, strlen(resp), 16600, 8300);
    meter_pricing_free(p);
}

/* ---- answers the meter cannot read ---- */

/* An unknown or stacked coding: blind, the reservation. */
static void test_unknown_coding(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    size_t n;
    char *resp = chat_6mib(&n);
    static const char *const ces[] = {"compress", "gzip, br", "x-bzip2"};
    for (size_t i = 0; i < 3; i++) {
        int64_t reserve = -1;
        assert_int_equal(
            exchange(p, &chat_req, 200, "application/json", ces[i], resp, n, 1, true, &reserve),
            CHAT_RESERVE);
    }
    /* Twilio: the estimate stands (16600 µ$), not the 1 segment inside. */
    const char *tw = "{\"num_segments\":\"1\"}";
    int64_t reserve = -1;
    assert_int_equal(exchange(p, &twilio_req, 201, "application/json", "compress", tw, strlen(tw),
                              1, true, &reserve),
                     16600);
    free(resp);
    meter_pricing_free(p);
}

/* A coded stream that does not reach its end is blind: the reservation,
 * even when every event (usage included) had been decoded before the cut
 * (what was read cannot be checked against the stream's checksum). */
static void test_truncated_and_corrupt(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    size_t n, zn;
    char *resp = chat_6mib(&n);
    char *z = test_encode(ENC_GZIP, resp, n, &zn);
    int64_t reserve = -1;

    /* cut in the middle, and cut just before the 8-byte gzip trailer */
    assert_int_equal(
        exchange(p, &chat_req, 200, "application/json", "gzip", z, zn / 2, 2, false, &reserve),
        CHAT_RESERVE);
    assert_int_equal(
        exchange(p, &chat_req, 200, "application/json", "gzip", z, zn - 4, 2, true, &reserve),
        CHAT_RESERVE);
    /* a flipped byte: an inflate error or a CRC mismatch */
    z[zn / 2] ^= 0x20;
    assert_int_equal(
        exchange(p, &chat_req, 200, "application/json", "gzip", z, zn, 3, true, &reserve),
        CHAT_RESERVE);
    free(z);

    /* An SSE stream whose usage event was decoded, then the br stream was
     * cut before its end: still the reservation. */
    const char *sse = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,"
                      "\"completion_tokens\":16000}}\n\ndata: [DONE]\n\n";
    z = test_encode(ENC_BR, sse, strlen(sse), &zn);
    assert_int_equal(
        exchange(p, &chat_stream_req, 200, "text/event-stream", "br", z, zn, 1, true, &reserve),
        162500); /* whole: read */
    assert_int_equal(exchange(p, &chat_stream_req, 200, "text/event-stream", "br", z, zn - 1, 1,
                              false, &reserve),
                     CHAT_STREAM_RESERVE);
    free(z);
    /* gzip without its 8-byte trailer: every event, usage included, was
     * decoded and read, but the CRC that vouches for them never came. */
    z = test_encode(ENC_GZIP, sse, strlen(sse), &zn);
    assert_int_equal(exchange(p, &chat_stream_req, 200, "text/event-stream", "gzip", z, zn - 8, 1,
                              true, &reserve),
                     CHAT_STREAM_RESERVE);
    free(z);

    /* A non-2xx answer costs nothing, compressed or not. */
    assert_int_equal(
        exchange(p, &chat_req, 429, "application/json", "compress", "{}", 2, 1, true, &reserve), 0);
    free(resp);
    meter_pricing_free(p);
}

/* A bomb: 200 MB of spaces then the body, gzipped (~200 KB). The ratio
 * cap stops decoding after a bounded amount of output: blind, the
 * reservation, and no 200 MB were scanned. */
static void test_bomb(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    char *spaces = kb_malloc(1 << 20);
    memset(spaces, ' ', 1 << 20);
    size_t zn;
    char *z = test_encode_rep(ENC_ZSTD, spaces, 1 << 20, 200, &zn);
    int64_t reserve = -1;
    struct kb_meter *m = begin(p, &chat_req, &reserve);
    meter_response_status(m, 200, "application/json");
    meter_response_encoding(m, "zstd");
    meter_response_data(m, z, zn);
    assert_true(m->blind);
    assert_null(m->dec); /* the decoder is gone: later bytes cost nothing */
    meter_response_data(m, z, zn);
    assert_int_equal(meter_settle(m, true), CHAT_RESERVE);
    meter_free(m);
    free(z);
    free(spaces);
    meter_pricing_free(p);
}

/* identity, NULL and "" need no decoder; a coding on an answer the meter
 * does not read (a fixed-cost Stripe call) changes nothing. */
static void test_no_decoder_needed(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(pinned);
    int64_t reserve = -1;
    static const char *const ces[] = {NULL, "", "identity", " IDENTITY "};
    for (size_t i = 0; i < 4; i++) {
        struct kb_meter *m = begin(p, &chat_req, &reserve);
        meter_response_status(m, 200, "application/json");
        meter_response_encoding(m, ces[i]);
        assert_null(m->dec);
        assert_false(m->blind);
        meter_free(m);
    }
    const struct req refund = {"stripe", "/v1/refunds", "application/x-www-form-urlencoded",
                               "charge=ch_1"};
    struct kb_meter *m = begin(p, &refund, &reserve);
    meter_response_status(m, 200, "application/json");
    meter_response_encoding(m, "compress");
    assert_false(m->blind);
    meter_free(m);
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_responses_2mib_event),
        cmocka_unit_test(test_openai_chat_stream_2mib_final_chunk),
        cmocka_unit_test(test_openai_chat_6mib_json),
        cmocka_unit_test(test_anthropic_2mib_message_start),
        cmocka_unit_test(test_stripe_compressed_answer),
        cmocka_unit_test(test_twilio_compressed_answer),
        cmocka_unit_test(test_unknown_coding),
        cmocka_unit_test(test_truncated_and_corrupt),
        cmocka_unit_test(test_bomb),
        cmocka_unit_test(test_no_decoder_needed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
