/*
 * test_meter_twilio_endpoints.c - the Twilio meter's cost classes beyond
 * messages: calls and conference participants (TimeLimit, recording,
 * conference minutes, answering machine detection, inline TwiML), number
 * purchases, the endpoint table (free, refused, path case variants) and
 * the pricing section's validation. Messages are in test_meter_twilio.c.
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
        cmocka_unit_test(test_participants),
        cmocka_unit_test(test_call_destinations_and_updates),
        cmocka_unit_test(test_inline_twiml),
        cmocka_unit_test(test_number_purchase),
        cmocka_unit_test(test_endpoint_classes),
        cmocka_unit_test(test_config_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
