/*
 * test_meter_twilio.c - the Twilio meter: SMS segment counting (GSM-7 and
 * UCS-2 at their boundaries, extension characters, surrogate pairs), the
 * per-destination price, MMS, calls, and settlement from the response.
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

static const char acct_path[] = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef";

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

/* ---- calls and conference participants ---- */

static int64_t post_reserve(struct kb_pricing *p, const char *rel, const char *body,
                            struct kb_meter **m)
{
    char *path = kb_asprintf("%s/%s", acct_path, rel);
    int64_t reserve = -1;
    assert_int_equal(begin(p, "POST", path, body, m, &reserve), KB_OK);
    free(path);
    return reserve;
}

static void test_participants(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    const char *parts = "Conferences/CF0123/Participants.json";

    /* An outbound leg into a conference is a call, plus Twilio's
     * per-participant conference minute: TimeLimit=600 s = 10 minutes x
     * ($0.0140 + $0.0018) = 158000 µ$. Timeout (ring time) is not billed. */
    assert_int_equal(post_reserve(p, parts,
                                  "From=%2B14155550199&To=%2B14155550100&TimeLimit=600"
                                  "&Timeout=30",
                                  &m),
                     158000);
    assert_int_equal(finish(m, 201, "{\"call_sid\":\"CA1\",\"status\":\"queued\"}", true), 158000);
    /* TimeLimit=61: 2 started minutes x 15800 = 31600. */
    assert_int_equal(post_reserve(p, parts, "To=%2B14155550100&TimeLimit=61", &m), 31600);
    meter_free(m);
    /* Recorded (Record=true): 10 x (0.0140 + 0.0018 + 0.0025) = 183000;
     * with answering machine detection +7500 = 190500. */
    assert_int_equal(post_reserve(p, parts, "To=%2B14155550100&TimeLimit=600&Record=true", &m),
                     183000);
    meter_free(m);
    assert_int_equal(post_reserve(p, parts,
                                  "To=%2B14155550100&TimeLimit=600&Record=true"
                                  "&MachineDetection=Enable",
                                  &m),
                     190500);
    meter_free(m);
    /* The conference recorded from the start: recorded too; do-not-record:
     * not. */
    assert_int_equal(post_reserve(p, parts,
                                  "To=%2B14155550100&TimeLimit=600"
                                  "&ConferenceRecord=record-from-start",
                                  &m),
                     183000);
    meter_free(m);
    assert_int_equal(post_reserve(p, parts,
                                  "To=%2B14155550100&TimeLimit=600&ConferenceRecord=do-not-record",
                                  &m),
                     158000);
    meter_free(m);
    /* No TimeLimit: 10 estimated minutes (10 x 15800 = 158000), at least
     * call_estimate (140000); to +44 (no price of its own) 10 x ($1.00 +
     * $0.0018) = 10018000. */
    assert_int_equal(post_reserve(p, parts, "To=%2B14155550100", &m), 158000);
    meter_free(m);
    assert_int_equal(post_reserve(p, parts, "To=%2B442079460000", &m), 10018000);
    meter_free(m);
    /* Case variants of every segment and of the extension. */
    assert_int_equal(post_reserve(p, "conferences/CF0123/PARTICIPANTS.JSON",
                                  "To=%2B14155550100&TimeLimit=60", &m),
                     15800);
    meter_free(m);
    assert_int_equal(
        post_reserve(p, "Conferences/CF0123/Participants", "To=%2B14155550100&TimeLimit=60", &m),
        15800);
    meter_free(m);
    /* A TimeLimit the meter cannot bound is refused before forwarding. */
    char *path = kb_asprintf("%s/%s", acct_path, parts);
    int64_t reserve = -1;
    assert_int_equal(begin(p, "POST", path, "To=%2B14155550100&TimeLimit=1e3", &m, &reserve),
                     KB_E_INVALID);
    assert_int_equal(
        begin_q(p, "POST", path, "TimeLimit=3600", "To=%2B14155550100&TimeLimit=60", &m, &reserve),
        KB_E_AMBIGUOUS_REQUEST);
    free(path);
    meter_pricing_free(p);
}

static void test_call_destinations_and_updates(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;

    /* A Client or SIP destination has no price of its own: the default
     * $1.00 per minute (never cheaper than a phone). TimeLimit=60: 1000000. */
    assert_int_equal(
        post_reserve(p, "Calls.json", "To=client%3Aalice&From=%2B1415&TimeLimit=60", &m), 1000000);
    meter_free(m);
    /* Call with AMD, no TimeLimit: 140000 + 7500. */
    assert_int_equal(post_reserve(p, "Calls.json", "To=%2B14155550100&MachineDetection=Enable", &m),
                     147500);
    meter_free(m);
    /* Updating a call: hang up or redirect costs nothing more... */
    assert_int_equal(post_reserve(p, "Calls/CA1.json", "Status=completed", &m), 0);
    assert_int_equal(finish(m, 200, "{\"sid\":\"CA1\",\"status\":\"completed\"}", true), 0);
    assert_int_equal(post_reserve(p, "Calls/CA1.json", "Url=https%3A%2F%2Fx.test%2Ft", &m), 0);
    meter_free(m);
    /* ...a new TimeLimit may extend it: 2 minutes at the dearest rate
     * configured, recorded, in a conference (the request names neither the
     * destination nor whether the call records or is a participant):
     * 2 x ($1.00 + $0.0025 + $0.0018) = 2008600. */
    assert_int_equal(post_reserve(p, "Calls/CA1.json", "TimeLimit=120", &m), 2008600);
    meter_free(m);
    /* Validating a caller id: Twilio calls the number, a call of unknown
     * length: 140000. */
    assert_int_equal(post_reserve(p, "OutgoingCallerIds.json", "PhoneNumber=%2B14155550100", &m),
                     140000);
    meter_free(m);
    meter_pricing_free(p);
}

static void test_inline_twiml(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    const char *to = "To=%2B14155550100&TimeLimit=120&Twiml=";

    static const struct {
        const char *twiml; /* form-encoded */
        int64_t reserve;
        const char *why;
    } cases[] = {
        {"%3CResponse%3E%3CSay%3Ehi%3C%2FSay%3E%3C%2FResponse%3E", 28000,
         "no spending verb: 2 min x $0.0140"},
        {"%3CResponse%3E%3CDial%3E%2B14155550111%3C%2FDial%3E%3C%2FResponse%3E", 56000,
         "a +1 leg besides: 2 x (0.0140 + 0.0140)"},
        {"%3CResponse%3E%3Cdial%3E%3CNumber%3E%2B44+20+7946+0000%3C%2FNumber%3E%3C%2Fdial%3E"
         "%3C%2FResponse%3E",
         2028000, "+44 (default $1.00), spaces inside: 2 x (0.0140 + 1.00)"},
        {"%3CResponse%3E%3CDial%3E%3CClient%3Ebob%3C%2FClient%3E%3C%2FDial%3E%3C%2FResponse%3E",
         2028000, "a Client leg: the dearest price, 2 x (0.0140 + 1.00)"},
        {"%3CResponse%3E%3CDial%3E4155550111%3C%2FDial%3E%3C%2FResponse%3E", 2028000,
         "a national number: its country is a guess, the dearest"},
        {"%3CResponse%3E%3CDial%3E+14155550111%3C%2FDial%3E%3C%2FResponse%3E", 2028000,
         "an unencoded + is a space: a national number"},
        {"%3CResponse%3E%3CDial%3E%3CConference%3Eroom%3C%2FConference%3E%3C%2FDial%3E"
         "%3C%2FResponse%3E",
         31600, "a conference: 2 x (0.0140 + 0.0018)"},
        {"%3CResponse%3E%3CRecord%2F%3E%3C%2FResponse%3E", 33000,
         "recording: 2 x (0.0140 + 0.0025)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = kb_asprintf("%s%s", to, cases[i].twiml);
        int64_t got = post_reserve(p, "Calls.json", body, &m);
        if (got != cases[i].reserve)
            print_message("case %zu (%s): got %lld\n", i, cases[i].why, (long long)got);
        assert_int_equal(got, cases[i].reserve);
        meter_free(m);
        free(body);
    }
    /* Updating a running call with TwiML that dials: the new leg, for the
     * estimated 10 minutes (no TimeLimit): 10 x $0.0140 = 140000. TwiML
     * that only speaks: free. */
    assert_int_equal(post_reserve(p, "Calls/CA1.json",
                                  "Twiml=%3CResponse%3E%3CDial%3E%2B14155550111%3C%2FDial%3E"
                                  "%3C%2FResponse%3E",
                                  &m),
                     140000);
    meter_free(m);
    assert_int_equal(post_reserve(p, "Calls/CA1.json",
                                  "Twiml=%3CResponse%3E%3CSay%3Ebye%3C%2FSay%3E%3C%2FResponse%3E",
                                  &m),
                     0);
    meter_free(m);
    meter_pricing_free(p);
}

/* ---- phone numbers ---- */

static void test_number_purchase(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;

    /* One month of the fee by type (later months are billed outside the
     * proxy): local +1 $1.15, toll-free +1 $2.15. */
    assert_int_equal(
        post_reserve(p, "IncomingPhoneNumbers/Local.json", "PhoneNumber=%2B14155550100", &m),
        1150000);
    assert_int_equal(finish(m, 201,
                            "{\"sid\":\"PN1\",\"phone_number\":\"+14155550100\","
                            "\"type\":\"local\"}",
                            true),
                     1150000);
    assert_int_equal(
        post_reserve(p, "IncomingPhoneNumbers/TollFree.json", "PhoneNumber=%2B18005550100", &m),
        2150000);
    meter_free(m);
    assert_int_equal(
        post_reserve(p, "incomingphonenumbers/tollfree", "PhoneNumber=%2B18885550100", &m),
        2150000);
    meter_free(m);
    /* Mobile: no price for +44: the default $50.00. */
    assert_int_equal(
        post_reserve(p, "IncomingPhoneNumbers/Mobile.json", "PhoneNumber=%2B447700900123", &m),
        50000000);
    meter_free(m);
    /* The generic resource: +1 numbers by area code (888 toll-free, 415
     * local; AreaCode alone is US/Canada local)... */
    assert_int_equal(post_reserve(p, "IncomingPhoneNumbers.json", "PhoneNumber=%2B18885550100", &m),
                     2150000);
    meter_free(m);
    assert_int_equal(post_reserve(p, "IncomingPhoneNumbers.json", "PhoneNumber=%2B14155550100", &m),
                     1150000);
    meter_free(m);
    assert_int_equal(post_reserve(p, "IncomingPhoneNumbers.json", "AreaCode=415", &m), 1150000);
    meter_free(m);
    /* ...elsewhere the dearest type ($50.00 mobile/toll-free default), and
     * the reply's type settles it: local +44 = $1.00. */
    assert_int_equal(
        post_reserve(p, "IncomingPhoneNumbers.json", "PhoneNumber=%2B442079460000", &m), 50000000);
    assert_int_equal(
        finish(m, 201, "{\"phone_number\":\"+442079460000\",\"type\":\"local\"}", true), 1000000);
    /* A reply without a type we know keeps the reservation. */
    assert_int_equal(
        post_reserve(p, "IncomingPhoneNumbers.json", "PhoneNumber=%2B442079460000", &m), 50000000);
    assert_int_equal(
        finish(m, 201, "{\"phone_number\":\"+442079460000\",\"type\":\"shared\"}", true), 50000000);
    /* Configuring an owned number is free. */
    assert_int_equal(
        post_reserve(p, "IncomingPhoneNumbers/PN0123.json", "VoiceUrl=https%3A%2F%2Fx.test", &m),
        0);
    meter_free(m);
    meter_pricing_free(p);
}

/* ---- the endpoint table ---- */

static void test_endpoint_classes(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    static const char *const free_paths[] = {
        "Messages/SM1.json",
        "Messages/SM1/Feedback.json",
        "Calls/CA1.json",
        "Calls/CA1/Recordings/RE1.json",
        "Calls/CA1/Streams/MZ1.json",
        "Conferences/CF1.json",
        "Conferences/CF1/Participants/CA1.json",
        "Conferences/CF1/Recordings/RE1.json",
        "Queues.json",
        "Queues/QU1/Members/CA1.json",
        "Applications.json",
        "Addresses/AD1.json",
        "OutgoingCallerIds/PN1.json",
        "Keys/SK1.json",
        "SIP/Domains.json",
        "sip/domains/SD1/auth/calls/credentiallistmappings.json",
        "SIP/IpAccessControlLists/AL1/IpAddresses.json",
        "Usage/Triggers.json",
        "SMS/ShortCodes/SC1.json",
    };
    static const char *const refused_paths[] = {
        "Keys.json", /* an API key could spend around the proxy */
        "SigningKeys.json",
        "Tokens.json",
        "Calls/CA1/Recordings.json", /* per minute, for as long as the call runs */
        "Calls/CA1/Transcriptions.json",
        "Calls/CA1/Streams.json",
        "Calls/CA1/Siprec.json",
        "Calls/CA1/Payments.json",
        "Calls/CA1/UserDefinedMessages.json",
        "IncomingPhoneNumbers/PN1/AssignedAddOns.json",
        "Conferences.json",
        "Messages/SM1/Media.json",
        "Faxes.json",
        "Messages.json/extra",
    };
    for (size_t i = 0; i < sizeof free_paths / sizeof free_paths[0]; i++) {
        char *path = kb_asprintf("%s/%s", acct_path, free_paths[i]);
        enum kb_err err = begin(p, "POST", path, "Status=completed", &m, &reserve);
        if (err != KB_OK || reserve != 0)
            print_message("free %s: err %d reserve %lld\n", free_paths[i], (int)err,
                          (long long)reserve);
        assert_int_equal(err, KB_OK);
        assert_int_equal(reserve, 0);
        assert_int_equal(finish(m, 200, "{}", true), 0);
        m = NULL;
        free(path);
    }
    for (size_t i = 0; i < sizeof refused_paths / sizeof refused_paths[0]; i++) {
        char *path = kb_asprintf("%s/%s", acct_path, refused_paths[i]);
        enum kb_err err = begin(p, "POST", path, "", &m, &reserve);
        if (err != KB_E_ENDPOINT_NOT_METERED)
            print_message("refused %s: err %d\n", refused_paths[i], (int)err);
        assert_int_equal(err, KB_E_ENDPOINT_NOT_METERED);
        assert_null(m);
        free(path);
    }
    /* The account itself: updating it is free, creating a subaccount (whose
     * reply holds a new auth token) is refused. */
    assert_int_equal(begin(p, "POST", acct_path, "FriendlyName=x", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 0);
    meter_free(m);
    assert_int_equal(begin(p, "POST", "/2010-04-01/Accounts.json", "FriendlyName=x", &m, &reserve),
                     KB_E_ENDPOINT_NOT_METERED);
    /* Other API versions and hosts' paths are not Twilio's 2010 API. */
    assert_int_equal(begin(p, "POST", "/v1/Services", "", &m, &reserve), KB_E_ENDPOINT_NOT_METERED);
    /* Messages in any letter case, and the 2010 SMS resource, are metered. */
    assert_int_equal(begin(p, "POST",
                           "/2010-04-01/accounts/AC0123456789abcdef0123456789abcdef/MESSAGES.JSON",
                           "To=%2B14155550100&Body=hi", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 8300);
    meter_free(m);
    assert_int_equal(post_reserve(p, "SMS/Messages.json", "To=%2B14155550100&body=hi", &m), 8300);
    meter_free(m);
    /* A parameter name in another case is the same parameter. */
    assert_int_equal(begin(p, "POST", msg_path, "To=%2B14155550100&Body=a&body=bb", &m, &reserve),
                     KB_E_AMBIGUOUS_REQUEST);
    meter_pricing_free(p);
}

/* ---- configuration ---- */

static void test_config_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"twilio\": {\"channel_per_message\": {\"WhatsApp:\": \"0.1\"}}}",
        "{\"twilio\": {\"channel_per_message\": {\"whatsapp\": \"0.1\"}}}",
        "{\"twilio\": {\"call_per_minute\": {\"default\": null}}}",
        "{\"twilio\": {\"number_per_month\": {\"toll_free\": null}}}",
        "{\"twilio\": {\"number_per_month\": {\"shared\": {\"default\": \"1\"}}}}",
        "{\"twilio\": {\"call_estimate_minutes\": 0}}",
        "{\"twilio\": {\"recording_per_minute\": 0.0025}}",
        "{\"twilio\": {\"mms_per_message\": {\"+1\": \"0.02\", \"default\": null}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct kb_pricing *p = NULL;
        char *em = NULL, *path = write_tmp(bad[i]);
        enum kb_err err = meter_pricing_load(path, &p, &em);
        if (err != KB_E_CONFIG)
            print_message("case %zu accepted\n", i);
        assert_int_equal(err, KB_E_CONFIG);
        assert_non_null(em);
        assert_null(p);
        unlink(path);
        free(path);
        free(em);
    }
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
        cmocka_unit_test(test_participants),
        cmocka_unit_test(test_call_destinations_and_updates),
        cmocka_unit_test(test_inline_twiml),
        cmocka_unit_test(test_number_purchase),
        cmocka_unit_test(test_endpoint_classes),
        cmocka_unit_test(test_config_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
