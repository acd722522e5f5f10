/*
 * test_meter_twilio.c - the Twilio meter's messages: SMS segment counting
 * (GSM-7 and UCS-2 at their boundaries, extension characters, surrogate
 * pairs), the per-destination price, MMS and SendAsMms, channels, templates,
 * scheduling, a basic call, and settlement from the reply. Calls,
 * participants, numbers and the endpoint table are in
 * test_meter_twilio_endpoints.c.
 *
 * Prices are pinned by an override file so the expected figures below do
 * not move when the embedded list prices are updated.
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
#include "meter/meter.h"
#include "meter/meter_int.h"

static const char pinned[] =
    "{\"twilio\": {"
    "\"sms_per_segment\": {\"+1\": \"0.0083\", \"default\": \"0.20\"},"
    "\"mms_per_message\": {\"+1\": \"0.0220\", \"default\": \"0.20\"},"
    "\"channel_per_message\": {\"whatsapp:+1\": \"0.0300\", \"whatsapp:\": \"0.17\","
    "                          \"default\": \"0.20\"},"
    "\"call_per_minute\": {\"+1\": \"0.0140\", \"default\": \"1.00\"},"
    "\"call_estimate\": \"0.14\","
    "\"call_estimate_minutes\": 10,"
    "\"recording_per_minute\": \"0.0025\","
    "\"conference_per_participant_minute\": \"0.0018\","
    "\"machine_detection_per_call\": \"0.0075\","
    "\"engagement_per_message\": \"0.015\","
    "\"failed_message_fee\": \"0.001\","
    "\"number_per_month\": {\"local\": {\"+1\": \"1.15\", \"+44\": \"1.00\", \"default\": "
    "\"50.00\"},"
    "                       \"mobile\": {\"default\": \"50.00\"},"
    "                       \"toll_free\": {\"+1\": \"2.15\", \"default\": \"50.00\"}},"
    "\"unknown_body_segments\": 24}}";

static const char msg_path[] =
    "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

/* ---- helpers (each test file carries its own) ---- */

static struct kb_pricing *load(const char *override)
{
    return load_pricing(override);
}

static enum kb_err begin_q(struct kb_pricing *p, const char *method, const char *path,
                           const char *query, const char *body, struct kb_meter **m,
                           int64_t *reserve)
{
    struct kb_meter_req req = {"twilio",
                               method,
                               path,
                               strlen(path),
                               "application/x-www-form-urlencoded",
                               body,
                               strlen(body),
                               query,
                               query ? strlen(query) : 0,
                               NULL,
                               0};
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &req, m, reserve, &nb, &nbl, &em);
    assert_null(nb); /* Twilio bodies are never rewritten */
    if (err != KB_OK)
        assert_non_null(em);
    free(em);
    return err;
}

static enum kb_err begin(struct kb_pricing *p, const char *method, const char *path,
                         const char *body, struct kb_meter **m, int64_t *reserve)
{
    return begin_q(p, method, path, NULL, body, m, reserve);
}

static int64_t finish(struct kb_meter *m, int status, const char *resp, bool complete)
{
    meter_response_status(m, status, "application/json");
    if (resp)
        meter_response_data(m, resp, strlen(resp));
    int64_t cost = meter_settle(m, complete);
    meter_free(m);
    return cost;
}

static char *repeat(const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    char *s = kb_malloc(ul * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * n] = '\0';
    return s;
}

/* ---- segment counting ---- */

struct seg_case {
    const char *unit; /* repeated */
    size_t n;         /* times */
    int64_t segs;     /* expected */
    const char *why;
};

static void test_segments_boundaries(void **state)
{
    (void)state;
    static const struct seg_case cases[] = {
        {"a", 0, 1, "empty body is still one message"},
        {"a", 160, 1, "GSM-7: 160 septets fit one segment"},
        {"a", 161, 2, "GSM-7: 161 septets -> 153-septet segments: ceil(161/153) = 2"},
        {"a", 306, 2, "GSM-7: 306 = 2 x 153"},
        {"a", 307, 3, "GSM-7: 307 > 306"},
        {"\xc3\xa9", 160, 1, "e-acute is in the GSM basic table"},
        {"{", 80, 1, "extension char = 2 septets: 80 x 2 = 160"},
        {"{", 81, 2, "81 x 2 = 162 septets > 160"},
        {"\xe2\x82\xac", 80, 1, "euro sign = 2 septets: 160"},
        {"\xe2\x82\xac", 81, 2, "euro sign: 162 septets"},
        {"\xd0\xb6", 70, 1, "UCS-2 (Cyrillic zhe): 70 units fit one segment"},
        {"\xd0\xb6", 71, 2, "UCS-2: 71 units -> 67-unit segments: 2"},
        {"\xd0\xb6", 134, 2, "UCS-2: 134 = 2 x 67"},
        {"\xd0\xb6", 135, 3, "UCS-2: 135 > 134"},
        {"\xf0\x9f\x98\x80", 35, 1, "emoji = surrogate pair: 35 x 2 = 70 units"},
        {"\xf0\x9f\x98\x80", 36, 2, "36 x 2 = 72 units"},
        {"`", 1, 1, "backtick is not GSM: one UCS-2 unit"},
        {"`", 71, 2, "71 backticks = 71 UCS-2 units"},
        {"\t", 71, 2, "tab is not GSM either"},
        {"\xff", 71, 2, "invalid UTF-8: each byte one UCS-2 unit"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = repeat(cases[i].unit, cases[i].n);
        int64_t got = meter__sms_segments(s, strlen(s));
        if (got != cases[i].segs)
            print_message("case %zu (%s): got %lld\n", i, cases[i].why, (long long)got);
        assert_int_equal(got, cases[i].segs);
        free(s);
    }
}

static void test_segments_never_split_units(void **state)
{
    (void)state;
    /* 152 'a' + '{' + 152 'a' = 306 septets; a naive ceil(306/153) says 2,
     * but the escape pair cannot straddle: segment 1 = 152 septets, segment
     * 2 = '{' (2) + 151 'a' = 153, the last 'a' opens segment 3. */
    char *a = repeat("a", 152);
    char *s = kb_asprintf("%s{%s", a, a);
    assert_int_equal(meter__sms_segments(s, strlen(s)), 3);
    free(s);
    /* 66 zhe + emoji + 66 zhe = 134 UCS-2 units; the emoji's pair does not
     * fit after 66 units (68 > 67): 66 | 2 + 65 | 1 = 3 segments. */
    char *z = repeat("\xd0\xb6", 66);
    s = kb_asprintf("%s\xf0\x9f\x98\x80%s", z, z);
    assert_int_equal(meter__sms_segments(s, strlen(s)), 3);
    free(s);
    /* One non-GSM character turns the whole message into UCS-2: 100 GSM
     * chars + one zhe = 101 units > 70 -> 2 segments. */
    char *h = repeat("a", 100);
    s = kb_asprintf("%s\xd0\xb6", h);
    assert_int_equal(meter__sms_segments(s, strlen(s)), 2);
    free(s);
    free(a);
    free(z);
    free(h);
}

/* ---- SMS pricing ---- */

static void test_sms_us_two_segments(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    /* 161 GSM characters, sent form-encoded with '+' for spaces. */
    char *text = repeat("x", 161);
    char *body = kb_asprintf("To=%%2B14155550100&From=%%2B14155550199&Body=%s", text);

    assert_int_equal(begin(p, "POST", msg_path, body, &m, &reserve), KB_OK);
    /* 161 septets -> 2 segments x $0.0083 = $0.0166 = 16600 µ$ */
    assert_int_equal(reserve, 16600);
    /* Twilio's 201 reply: price null at creation, num_segments "2". */
    assert_int_equal(finish(m, 201,
                            "{\"sid\":\"SM1\",\"status\":\"queued\",\"num_segments\":\"2\","
                            "\"price\":null,\"price_unit\":\"USD\"}",
                            true),
                     16600);
    free(text);
    free(body);
    meter_pricing_free(p);
}

static void test_sms_percent_decoded_body(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    /* "Hello+world%21" decodes to "Hello world!" (12 GSM chars): 1 segment
     * x $0.0083 = 8300 µ$. */
    assert_int_equal(
        begin(p, "POST", msg_path, "Body=Hello+world%21&To=%2B12125550100", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 8300);
    /* No num_segments in the reply: the estimate stands. */
    assert_int_equal(finish(m, 201, "{\"sid\":\"SM2\"}", true), 8300);
    meter_pricing_free(p);
}

static void test_sms_international_default_and_prefix(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* +44 has no entry: default $0.20 x 1 segment = 200000 µ$ */
    assert_int_equal(begin(p, "POST", msg_path, "To=%2B447700900123&Body=hi", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 200000);
    meter_free(m);
    meter_pricing_free(p);

    /* With "+44": "0.0524" merged in: 1 x $0.0524 = 52400 µ$ */
    p = load("{\"twilio\": {\"sms_per_segment\": {\"+44\": \"0.0524\"}}}");
    assert_int_equal(begin(p, "POST", msg_path, "To=%2B447700900123&Body=hi", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 52400);
    assert_int_equal(finish(m, 201, "{\"num_segments\":\"1\"}", true), 52400);
    meter_pricing_free(p);
}

static void test_sms_unicode_segments_priced(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    /* 71 x "ж" percent-encoded (%D0%B6): UCS-2, 71 units -> 2 segments x
     * $0.0083 = 16600 µ$. */
    char *z = repeat("%D0%B6", 71);
    char *body = kb_asprintf("To=%%2B13105550100&Body=%s", z);
    assert_int_equal(begin(p, "POST", msg_path, body, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 16600);
    assert_int_equal(finish(m, 201, "{\"num_segments\":\"2\"}", true), 16600);
    free(z);
    free(body);
    meter_pricing_free(p);
}

static void test_mms(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    /* A MediaUrl makes it an MMS: $0.0220 = 22000 µ$ per message. */
    assert_int_equal(begin(p, "POST", msg_path,
                           "To=%2B14155550100&Body=look&MediaUrl=https%3A%2F%2Fexample.com%2Fa.png"
                           "&MediaUrl=https%3A%2F%2Fexample.com%2Fb.png",
                           &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 22000);
    assert_int_equal(finish(m, 201, "{\"num_segments\":\"1\",\"num_media\":\"2\"}", true), 22000);
    meter_pricing_free(p);
}

static void test_content_template_without_body(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    /* No Body (ContentSid template): 24 segments x $0.0083 = 199200 µ$
     * reserved; Twilio's reply says 1 segment: settles at 8300 µ$. */
    assert_int_equal(begin(p, "POST", msg_path,
                           "To=%2B14155550100&ContentSid=HX0123&MessagingServiceSid=MG1", &m,
                           &reserve),
                     KB_OK);
    assert_int_equal(reserve, 199200);
    assert_int_equal(finish(m, 201, "{\"sid\":\"SM3\",\"num_segments\":\"1\"}", true), 8300);
    meter_pricing_free(p);
}

static void test_calls(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    const char *calls = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";

    /* No TimeLimit: the configured estimate $0.14 = 140000 µ$. */
    assert_int_equal(
        begin(p, "POST", calls, "To=%2B14155550100&From=%2B14155550199&Url=x", &m, &reserve),
        KB_OK);
    assert_int_equal(reserve, 140000);
    assert_int_equal(finish(m, 201, "{\"sid\":\"CA1\",\"price\":null}", true), 140000);

    /* TimeLimit=90 s: 2 started minutes x $0.014 = 28000 µ$. */
    assert_int_equal(begin(p, "POST", calls, "To=%2B14155550100&TimeLimit=90", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 28000);
    assert_int_equal(finish(m, 201, NULL, true), 28000);

    assert_int_equal(begin(p, "POST", calls, "TimeLimit=abc", &m, &reserve), KB_E_INVALID);
    assert_int_equal(begin(p, "POST", calls, "TimeLimit=0", &m, &reserve), KB_E_INVALID);
    meter_pricing_free(p);
}

static void test_failures_cost_zero(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* 400 (e.g. 21211 invalid To): nothing sent, nothing billed. */
    assert_int_equal(begin(p, "POST", msg_path, "To=bogus&Body=hi", &m, &reserve), KB_OK);
    assert_int_equal(finish(m, 400, "{\"code\":21211,\"status\":400}", true), 0);

    /* No status at all (connection failed): zero. */
    assert_int_equal(begin(p, "POST", msg_path, "To=%2B14155550100&Body=hi", &m, &reserve), KB_OK);
    assert_int_equal(meter_settle(m, false), 0);
    meter_free(m);

    /* 201 but the reply was cut: the message was accepted, the estimate
     * (1 x $0.0083) is charged. */
    assert_int_equal(begin(p, "POST", msg_path, "To=%2B14155550100&Body=hi", &m, &reserve), KB_OK);
    assert_int_equal(finish(m, 201, "{\"sid\":\"SM4\",\"num_segm", false), 8300);
    meter_pricing_free(p);
}

static void test_paths(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* The XML flavour (no extension) sends messages too. */
    assert_int_equal(begin(p, "POST",
                           "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages",
                           "To=%2B14155550100&Body=hi", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 8300);
    meter_free(m);
    /* Reading messages, updating one: free. */
    assert_int_equal(begin(p, "GET", msg_path, "", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 0);
    assert_int_equal(finish(m, 200, "{}", true), 0);
    m = NULL;
    /* Redacting a message (Body="") moves no money: claimed at $0. */
    assert_int_equal(begin(p, "POST",
                           "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/"
                           "SM1.json",
                           "Body=", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 0);
    assert_int_equal(finish(m, 200, "{\"sid\":\"SM1\",\"body\":\"\"}", true), 0);
    m = NULL;
    /* A parameter given twice with different values is ambiguous; broken
     * escapes are invalid. */
    assert_int_equal(begin(p, "POST", msg_path, "Body=a&Body=bb", &m, &reserve),
                     KB_E_AMBIGUOUS_REQUEST);
    assert_int_equal(begin(p, "POST", msg_path, "Body=%ZZ", &m, &reserve), KB_E_INVALID);
    meter_pricing_free(p);
}

/* ---- SendAsMms, channels, scheduling, replies ---- */

/* POST .../Messages.json with body (and query), expecting KB_OK; returns
 * the reservation and leaves *m for finish(). */
static int64_t msg_reserve(struct kb_pricing *p, const char *query, const char *body,
                           struct kb_meter **m)
{
    int64_t reserve = -1;
    assert_int_equal(begin_q(p, "POST", msg_path, query, body, m, &reserve), KB_OK);
    return reserve;
}

static void test_send_as_mms(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    char *text = repeat("x", 161);      /* 2 GSM segments */
    char *long_text = repeat("x", 600); /* ceil(600 / 153) = 4 segments */
    char *b;

    /* SendAsMms=true: one MMS at $0.0220 = 22000 µ$, not 2 x $0.0083. The
     * reply's num_segments does not turn it back into segments. */
    b = kb_asprintf("To=%%2B14155550100&Body=%s&SendAsMms=true", text);
    assert_int_equal(msg_reserve(p, NULL, b, &m), 22000);
    assert_int_equal(finish(m, 201,
                            "{\"sid\":\"MM1\",\"num_segments\":\"2\",\"num_media\":\"0\","
                            "\"status\":\"queued\",\"price\":null}",
                            true),
                     22000);
    free(b);
    /* Any letter case, name or value. */
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&Body=hi&sendasmms=TRUE", &m), 22000);
    meter_free(m);
    /* In the query string: Twilio reads it there too. */
    assert_int_equal(msg_reserve(p, "SendAsMms=true", "To=%2B14155550100&Body=hi", &m), 22000);
    meter_free(m);
    /* SendAsMms=false: an SMS, 2 x 8300 = 16600 µ$. */
    b = kb_asprintf("To=%%2B14155550100&Body=%s&SendAsMms=false", text);
    assert_int_equal(msg_reserve(p, NULL, b, &m), 16600);
    meter_free(m);
    free(b);
    /* A value Twilio might read either way: the dearer of MMS (22000) and
     * SMS (4 x 8300 = 33200): 33200. */
    b = kb_asprintf("To=%%2B14155550100&Body=%s&SendAsMms=yes", long_text);
    assert_int_equal(msg_reserve(p, NULL, b, &m), 33200);
    assert_int_equal(finish(m, 201, "{\"num_segments\":\"4\"}", true), 33200);
    free(b);
    /* Body says true, query says false: which one Twilio reads is unknown. */
    assert_int_equal(begin_q(p, "POST", msg_path, "SendAsMms=false",
                             "To=%2B14155550100&Body=hi&SendAsMms=true", &m, &reserve),
                     KB_E_AMBIGUOUS_REQUEST);
    free(text);
    free(long_text);
    meter_pricing_free(p);
}

static void test_mms_without_own_price(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    char *text = repeat("x", 161);
    char *b =
        kb_asprintf("To=%%2B447700900123&MediaUrl=https%%3A%%2F%%2Fx.test%%2Fa.png&Body=%s", text);

    /* +44 has no MMS price: the default $0.20, or the message as SMS if
     * dearer (2 segments x $0.20 default = 400000 µ$). */
    assert_int_equal(msg_reserve(p, NULL, b, &m), 400000);
    assert_int_equal(finish(m, 201, "{\"num_segments\":\"1\"}", true), 400000);
    assert_int_equal(msg_reserve(p, NULL, "To=%2B447700900123&MediaUrl=x&Body=hi", &m), 200000);
    meter_free(m);
    /* A flat price (the old form of mms_per_message) applies everywhere. */
    meter_pricing_free(p);
    p = load("{\"twilio\": {\"mms_per_message\": \"0.0220\"}}");
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&MediaUrl=x", &m), 22000);
    meter_free(m);
    free(text);
    free(b);
    meter_pricing_free(p);
}

static void test_channels(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;

    /* WhatsApp to +1: $0.005 Twilio + $0.025 Meta marketing = 30000 µ$ per
     * message, whatever the length or media. */
    assert_int_equal(msg_reserve(p, NULL,
                                 "To=whatsapp%3A%2B14155550100&From=whatsapp%3A%2B14155550199"
                                 "&Body=hello&MediaUrl=x",
                                 &m),
                     30000);
    assert_int_equal(finish(m, 201, "{\"num_segments\":\"1\",\"status\":\"queued\"}", true), 30000);
    /* Elsewhere: the WhatsApp fallback $0.17; the scheme in any case. */
    assert_int_equal(msg_reserve(p, NULL, "To=WhatsApp%3A%2B447700900123&ContentSid=HX1", &m),
                     170000);
    meter_free(m);
    /* A channel without its own price: the default $0.20. */
    assert_int_equal(msg_reserve(p, NULL, "To=messenger%3A1234&Body=hi", &m), 200000);
    meter_free(m);
    meter_pricing_free(p);
}

static void test_scheduled_and_shortened(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;

    /* A scheduled message is charged at creation (it is billed when sent;
     * cancelling it later refunds nothing here): 1 x 8300 + the Engagement
     * Suite fee 15000 = 23300 µ$. A Messaging Service reply has
     * num_segments "0" until a sender is picked: the estimate stands. */
    assert_int_equal(msg_reserve(p, NULL,
                                 "To=%2B14155550100&MessagingServiceSid=MG1&Body=hi"
                                 "&ScheduleType=fixed&SendAt=2026-12-04T10%3A00%3A00Z",
                                 &m),
                     23300);
    assert_int_equal(finish(m, 201, "{\"status\":\"scheduled\",\"num_segments\":\"0\"}", true),
                     23300);
    /* ShortenUrls=true: +15000; with 2 segments in the reply 2 x 8300 +
     * 15000 = 31600. */
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&Body=hi&ShortenUrls=true", &m), 23300);
    assert_int_equal(finish(m, 201, "{\"status\":\"queued\",\"num_segments\":\"2\"}", true), 31600);
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&Body=hi&ShortenUrls=false", &m), 8300);
    meter_free(m);
    meter_pricing_free(p);
}

static void test_message_reply_price_and_status(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;

    /* A reply that already carries Twilio's price: that is the bill
     * ("-0.00830" USD = 8300 µ$), even though 24 segments were reserved. */
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&ContentSid=HX1", &m), 199200);
    assert_int_equal(finish(m, 201,
                            "{\"status\":\"sent\",\"num_segments\":\"1\","
                            "\"price\":\"-0.00830\",\"price_unit\":\"USD\"}",
                            true),
                     8300);
    /* A price in another currency is not read: num_segments 3 x 8300. */
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&ContentSid=HX1", &m), 199200);
    assert_int_equal(finish(m, 201,
                            "{\"num_segments\":\"3\",\"price\":\"-0.00700\","
                            "\"price_unit\":\"EUR\"}",
                            true),
                     24900);
    /* "failed" at once: it never left Twilio, only the $0.001 processing
     * fee is billed. "undelivered" was attempted: billed in full. */
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&Body=hi", &m), 8300);
    assert_int_equal(finish(m, 201, "{\"status\":\"failed\",\"error_code\":30410}", true), 1000);
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&Body=hi", &m), 8300);
    assert_int_equal(finish(m, 201, "{\"status\":\"undelivered\",\"num_segments\":\"1\"}", true),
                     8300);
    meter_pricing_free(p);
}

static void test_templates_and_empty_media(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;

    /* A ContentSid template replaces Body: a short Body beside it does not
     * lower the reservation (24 x 8300 = 199200). The reply's count
     * settles it: 2 segments, no media = 16600. */
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&ContentSid=HX1&Body=hi", &m), 199200);
    assert_int_equal(finish(m, 201, "{\"num_segments\":\"2\",\"num_media\":\"0\"}", true), 16600);
    /* A template that carried media went as an MMS: 1 segment (8300) is
     * less than the MMS price, 22000 is charged. */
    assert_int_equal(msg_reserve(p, NULL, "To=%2B14155550100&ContentSid=HX1", &m), 199200);
    assert_int_equal(finish(m, 201, "{\"num_segments\":\"1\",\"num_media\":\"1\"}", true), 22000);
    /* MediaUrl given empty: Twilio may send an SMS or an MMS, the dearer:
     * 4 segments (33200) beat the MMS price. */
    char *text = repeat("x", 600);
    char *b = kb_asprintf("To=%%2B14155550100&MediaUrl=&Body=%s", text);
    assert_int_equal(msg_reserve(p, NULL, b, &m), 33200);
    meter_free(m);
    free(b);
    /* One empty and one real MediaUrl: an MMS. */
    b = kb_asprintf("To=%%2B14155550100&MediaUrl=&mediaurl=x&Body=%s", text);
    assert_int_equal(msg_reserve(p, NULL, b, &m), 22000);
    meter_free(m);
    free(b);
    free(text);
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segments_boundaries),
        cmocka_unit_test(test_segments_never_split_units),
        cmocka_unit_test(test_sms_us_two_segments),
        cmocka_unit_test(test_sms_percent_decoded_body),
        cmocka_unit_test(test_sms_international_default_and_prefix),
        cmocka_unit_test(test_sms_unicode_segments_priced),
        cmocka_unit_test(test_mms),
        cmocka_unit_test(test_content_template_without_body),
        cmocka_unit_test(test_calls),
        cmocka_unit_test(test_failures_cost_zero),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_send_as_mms),
        cmocka_unit_test(test_mms_without_own_price),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_scheduled_and_shortened),
        cmocka_unit_test(test_message_reply_price_and_status),
        cmocka_unit_test(test_templates_and_empty_media),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
