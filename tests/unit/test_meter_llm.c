/*
 * test_meter_llm.c - what issue #13 added to the OpenAI and Anthropic
 * meters, on recorded-style exchanges priced by the shipped pricing.json:
 * service tiers, fast mode, inference geo, tool fees bounded by
 * max_tool_calls / max_uses, audio tokens, input the body does not hold,
 * message batches, and the cost class of every endpoint (metered, free,
 * refused).
 *
 * 1 token at $X per million tokens costs X µ$; each component is rounded
 * up on its own. Prices quoted in the comments are the shipped ones.
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

/* ---- helpers ---- */

static enum kb_err begin(struct kb_pricing *p, const char *vendor, const char *method,
                         const char *path, const char *body, struct kb_meter **m,
                         int64_t *reserve)
{
    struct kb_meter_req req = {vendor, method, path, strlen(path), "application/json",
                               body,   strlen(body)};
    char *em = NULL, *nb = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &req, m, reserve, &nb, &nbl, &em);
    if (err != KB_OK)
        assert_non_null(em);
    free(nb);
    free(em);
    return err;
}

/* Begins, answers 200 with resp (Content-Type ctype) fed whole, settles. */
static int64_t run(struct kb_pricing *p, const char *vendor, const char *path, const char *body,
                   const char *ctype, const char *resp, int64_t *reserve)
{
    struct kb_meter *m = NULL;
    assert_int_equal(begin(p, vendor, "POST", path, body, &m, reserve), KB_OK);
    meter_response_status(m, 200, ctype);
    meter_response_data(m, resp, strlen(resp));
    int64_t cost = meter_settle(m, true);
    meter_free(m);
    return cost;
}

static enum kb_err refused(struct kb_pricing *p, const char *vendor, const char *path,
                           const char *body)
{
    struct kb_meter *m = (struct kb_meter *)0x1;
    int64_t reserve = -1;
    enum kb_err err = begin(p, vendor, "POST", path, body, &m, &reserve);
    assert_int_not_equal(err, KB_OK);
    assert_ptr_equal(m, (struct kb_meter *)0x1);
    assert_int_equal(reserve, -1);
    return err;
}

/* ---- OpenAI: service tiers ---- */

/* 115 bytes */
static const char chat55[] = "{\"model\":\"gpt-5.5\",\"max_completion_tokens\":1000,\"messages\":"
                             "[{\"role\":\"user\",\"content\":\"Name three prime numbers.\"}]}";

#define CHAT_USAGE                                                                                 \
    "\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,\"total_tokens\":1500,"          \
    "\"prompt_tokens_details\":{\"cached_tokens\":200,\"audio_tokens\":0},"                        \
    "\"completion_tokens_details\":{\"reasoning_tokens\":320,\"audio_tokens\":0}}"

static void test_openai_service_tiers(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;
    char resp[1024];
    assert_int_equal(strlen(chat55), 115);

    /* No service_tier: the project may run at priority, so the reservation
     * is at gpt-5.5's priority prices ($12.50 in, $75 out):
     *   (115 + 1024) x 12.5 = 14237.5 -> 14238 + 1000 x 75 = 75000 -> 89238 */
    static const struct {
        const char *tier; /* what the answer reports; NULL: nothing */
        int64_t want;
    } cases[] = {
        /* 800 x 5 = 4000 + 200 cached x 0.5 = 100 + 500 x 30 = 15000 */
        {"default", 19100},
        /* 800 x 12.5 = 10000 + 200 x 1.25 = 250 + 500 x 75 = 37500 */
        {"priority", 47750},
        /* flex at half: 800 x 2.5 = 2000 + 200 x 0.25 = 50 + 500 x 15 = 7500 */
        {"flex", 9550},
        /* unreported: the dearest tier the request allowed (priority) */
        {NULL, 47750},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char tier[64] = "";
        if (cases[i].tier)
            snprintf(tier, sizeof tier, "\"service_tier\":\"%s\",", cases[i].tier);
        snprintf(resp, sizeof resp,
                 "{\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion\",\"model\":\"gpt-5.5-2026-"
                 "04-23\",%s\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                 "\"content\":\"2, 3, 5\"},\"finish_reason\":\"stop\"}]," CHAT_USAGE "}",
                 tier);
        int64_t got = run(p, "openai", "/v1/chat/completions", chat55, "application/json", resp,
                          &reserve);
        assert_int_equal(reserve, 89238);
        assert_int_equal(got, cases[i].want);
    }

    /* A streamed answer names its tier in every chunk. */
    const char *sbody = "{\"model\":\"gpt-5.5\",\"stream\":true,\"max_completion_tokens\":1000,"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}";
    const char *stream =
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"service_tier\":\"flex\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n"
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"service_tier\":\"flex\","
        "\"choices\":[]," CHAT_USAGE "}\n\n"
        "data: [DONE]\n\n";
    assert_int_equal(
        run(p, "openai", "/v1/chat/completions", sbody, "text/event-stream", stream, &reserve),
        9550);

    /* A project with data residency: every token cost +10%, reserved and
     * charged: 89238 x 1.1 = 98161.8 -> 98162; 19100 x 1.1 = 21010 */
    struct kb_pricing *dr = load_pricing("{\"openai\":{\"data_residency\":true}}");
    snprintf(resp, sizeof resp, "{\"service_tier\":\"default\"," CHAT_USAGE "}");
    assert_int_equal(
        run(dr, "openai", "/v1/chat/completions", chat55, "application/json", resp, &reserve),
        21010);
    assert_int_equal(reserve, 98162);
    meter_pricing_free(dr);

    /* Priority asked of a model sold without it: refused, not guessed. */
    assert_int_equal(refused(p, "openai", "/v1/chat/completions",
                             "{\"model\":\"gpt-5.4-nano\",\"service_tier\":\"priority\","
                             "\"messages\":[]}"),
                     KB_E_MODEL_NOT_PRICED);
    assert_int_equal(refused(p, "openai", "/v1/chat/completions",
                             "{\"model\":\"gpt-5.5\",\"service_tier\":7,\"messages\":[]}"),
                     KB_E_INVALID);
    /* The answer says priority for a model without a priority price: an
     * unknown cost is the reservation. 112 bytes at gpt-5.4-nano's $0.20 in,
     * $1.25 out: (112 + 1024) x 0.2 = 227.2 -> 228 + 10 x 1.25 = 12.5 -> 13 */
    const char *nano = "{\"model\":\"gpt-5.4-nano\",\"max_completion_tokens\":10,\"messages\":[{"
                       "\"role\":\"user\",\"content\":\"Say hi to the team.\"}]}";
    assert_int_equal(strlen(nano), 112);
    assert_int_equal(run(p, "openai", "/v1/chat/completions", nano, "application/json",
                         "{\"service_tier\":\"priority\"," CHAT_USAGE "}", &reserve),
                     241);
    assert_int_equal(reserve, 241);
    meter_pricing_free(p);
}

/* ---- OpenAI: web search and input the body does not hold ---- */

static void test_openai_web_search(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;

    /* Without max_tool_calls the number of searches has no bound. */
    assert_int_equal(refused(p, "openai", "/v1/responses",
                             "{\"model\":\"gpt-5.5\",\"tools\":[{\"type\":\"web_search\"}],"
                             "\"input\":\"Latest Rust release?\"}"),
                     KB_E_INVALID);
    /* Tools whose cost the meter cannot bound. */
    assert_int_equal(refused(p, "openai", "/v1/responses",
                             "{\"model\":\"gpt-5.5\",\"max_tool_calls\":2,\"tools\":[{\"type\":"
                             "\"code_interpreter\",\"container\":{\"type\":\"auto\"}}],"
                             "\"input\":\"x\"}"),
                     KB_E_INVALID);
    assert_int_equal(refused(p, "openai", "/v1/responses",
                             "{\"model\":\"gpt-5.5\",\"max_tool_calls\":2,\"tools\":[{\"type\":"
                             "\"image_generation\"}],\"input\":\"x\"}"),
                     KB_E_INVALID);

    /* max_tool_calls 3: up to 4 model calls, each reading up to the
     * 1,050,000-token context: 4,200,000 input tokens, past the 272K
     * threshold. Dearest tier: priority ($12.50 in, $75 out) beats long
     * context ($10 in, $45 out):
     *   4,200,000 x 12.5 = 52,500,000 + 2000 x 75 = 150,000
     *   + 3 searches x $0.01 = 30,000 -> 52,680,000 µ$ */
    const char *body = "{\"model\":\"gpt-5.5\",\"max_tool_calls\":3,\"max_output_tokens\":2000,"
                       "\"tools\":[{\"type\":\"web_search\"}],\"input\":\"Latest Rust release?\"}";
    /* The answer: 3000 input, 800 output at the default tier, two searches:
     *   3000 x 5 = 15000 + 800 x 30 = 24000 + 2 x 10000 -> 59000 µ$ */
    const char *resp =
        "{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-5.5\","
        "\"service_tier\":\"default\",\"output\":[{\"type\":\"web_search_call\",\"id\":\"ws_1\","
        "\"status\":\"completed\",\"action\":{\"type\":\"search\",\"query\":\"rust release\"}},"
        "{\"type\":\"web_search_call\",\"id\":\"ws_2\",\"status\":\"completed\"},"
        "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
        "\"text\":\"Rust 1.95\",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":3000,"
        "\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":800,"
        "\"output_tokens_details\":{\"reasoning_tokens\":600},\"total_tokens\":3800}}";
    assert_int_equal(run(p, "openai", "/v1/responses", body, "application/json", resp, &reserve),
                     59000);
    assert_int_equal(reserve, 52680000);

    /* Streamed: the searches are counted from their in_progress events even
     * when the terminal event lists no output. */
    const char *sbody = "{\"model\":\"gpt-5.5\",\"stream\":true,\"max_tool_calls\":3,"
                        "\"max_output_tokens\":2000,\"tools\":[{\"type\":\"web_search\"}],"
                        "\"input\":\"Latest Rust release?\"}";
    const char *stream =
        "event: response.web_search_call.in_progress\n"
        "data: {\"type\":\"response.web_search_call.in_progress\",\"output_index\":0,"
        "\"item_id\":\"ws_1\",\"sequence_number\":3}\n\n"
        "event: response.web_search_call.in_progress\n"
        "data: {\"type\":\"response.web_search_call.in_progress\",\"output_index\":1,"
        "\"item_id\":\"ws_2\",\"sequence_number\":7}\n\n"
        "event: response.completed\n"
        "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":"
        "\"completed\",\"service_tier\":\"default\",\"output\":[],\"usage\":{\"input_tokens\":"
        "3000,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":800}}}\n\n";
    assert_int_equal(
        run(p, "openai", "/v1/responses", sbody, "text/event-stream", stream, &reserve), 59000);

    /* gpt-4.1 searches at the section's $25 / 1k: 1000 x 2 = 2000 + 100 x 8
     * = 800 + 1 x 25000 -> 27800 µ$ (answer reports the default tier) */
    const char *b41 = "{\"model\":\"gpt-4.1\",\"max_tool_calls\":1,\"tools\":[{\"type\":"
                      "\"web_search_preview\"}],\"input\":\"weather in Paris\"}";
    const char *r41 = "{\"object\":\"response\",\"service_tier\":\"default\",\"output\":[{\"type\":"
                      "\"web_search_call\",\"status\":\"completed\"}],\"usage\":{\"input_tokens\":"
                      "1000,\"output_tokens\":100}}";
    assert_int_equal(run(p, "openai", "/v1/responses", b41, "application/json", r41, &reserve),
                     27800);
    meter_pricing_free(p);
}

static void test_openai_external_input(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* An image fetched from a URL: its tokens are not in the body's bytes.
     * Input bound: gpt-4o's 128,000-token context, at the priority price
     * ($4.25 in, $17 out): 128000 x 4.25 = 544000 + 300 x 17 = 5100 */
    const char *url =
        "{\"model\":\"gpt-4o\",\"max_tokens\":300,\"messages\":[{\"role\":\"user\",\"content\":[{"
        "\"type\":\"text\",\"text\":\"What is in this image?\"},{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"https://example.com/cat.png\"}}]}]}";
    assert_int_equal(begin(p, "openai", "POST", "/v1/chat/completions", url, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 549100);
    meter_free(m);
    /* Inline (data:) images are in the bytes: 154 bytes,
     * (154 + 1024) x 4.25 = 5006.5 -> 5007 + 5100 -> 10107 */
    const char *inl = "{\"model\":\"gpt-4o\",\"max_tokens\":300,\"messages\":[{\"role\":\"user\","
                      "\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/"
                      "png;base64,iVBORw0KGgo=\"}}]}]}";
    assert_int_equal(strlen(inl), 154);
    assert_int_equal(begin(p, "openai", "POST", "/v1/chat/completions", inl, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 10107);
    meter_free(m);

    /* Predicted output: rejected prediction tokens are billed beyond the
     * cap, bounded by the body's bytes (98 bytes, gpt-4o priority):
     *   (98 + 1024) x 4.25 = 4768.5 -> 4769 + (10 + 98) x 17 = 1836 -> 6605 */
    const char *pred = "{\"model\":\"gpt-4o\",\"max_tokens\":10,\"prediction\":{\"type\":"
                       "\"content\",\"content\":\"x = 1\"},\"messages\":[]}";
    assert_int_equal(strlen(pred), 98);
    assert_int_equal(begin(p, "openai", "POST", "/v1/chat/completions", pred, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 6605);
    meter_free(m);

    /* A stored response continued: gpt-5.4's 1,050,000-token context (past
     * the 272K threshold): long context $5 in / $22.50 out, priority $5 /
     * $30: 1,050,000 x 5 = 5,250,000 + 100 x 30 = 3000 -> 5,253,000 */
    static const char *const ext[] = {
        "{\"model\":\"gpt-5.4\",\"max_output_tokens\":100,\"previous_response_id\":\"resp_9\","
        "\"input\":\"and then?\"}",
        "{\"model\":\"gpt-5.4\",\"max_output_tokens\":100,\"conversation\":\"conv_1\","
        "\"input\":\"and then?\"}",
        "{\"model\":\"gpt-5.4\",\"max_output_tokens\":100,\"prompt\":{\"id\":\"pmpt_1\"},"
        "\"input\":\"x\"}",
        "{\"model\":\"gpt-5.4\",\"max_output_tokens\":100,\"input\":[{\"role\":\"user\","
        "\"content\":[{\"type\":\"input_file\",\"file_id\":\"file-abc\"}]}]}",
        "{\"model\":\"gpt-5.4\",\"max_output_tokens\":100,\"input\":[{\"type\":"
        "\"item_reference\",\"id\":\"msg_1\"},{\"role\":\"user\",\"content\":\"more\"}]}",
    };
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        assert_int_equal(begin(p, "openai", "POST", "/v1/responses", ext[i], &m, &reserve), KB_OK);
        assert_int_equal(reserve, 5253000);
        meter_free(m);
    }
    /* An earlier audio answer referred to by id: gpt-audio's 128,000-token
     * context at its audio input price ($32) + 50 x $64:
     *   4,096,000 + 3200 -> 4,099,200 */
    const char *aud = "{\"model\":\"gpt-audio\",\"max_completion_tokens\":50,\"messages\":[{"
                      "\"role\":\"assistant\",\"audio\":{\"id\":\"audio_abc\"}},{\"role\":"
                      "\"user\",\"content\":\"again\"}]}";
    assert_int_equal(begin(p, "openai", "POST", "/v1/chat/completions", aud, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 4099200);
    meter_free(m);
    /* A model without a configured context window cannot bound it. */
    struct kb_pricing *q = load_pricing("{\"openai\":{\"models\":{\"gpt-5.4\":"
                                        "{\"context_tokens\":null}}}}");
    assert_int_equal(refused(q, "openai", "/v1/responses", ext[0]), KB_E_MODEL_NOT_PRICED);
    meter_pricing_free(q);
    meter_pricing_free(p);
}

/* ---- OpenAI: audio tokens ---- */

static void test_openai_audio(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;

    /* 172 bytes; gpt-audio: text $2.50 / $10, audio $32 / $64. Reserved at
     * the dearer (audio) prices: (172 + 1024) x 32 = 38272 + 500 x 64 =
     * 32000 -> 70272 µ$ */
    const char *body = "{\"model\":\"gpt-audio\",\"modalities\":[\"text\",\"audio\"],\"audio\":{"
                       "\"voice\":\"alloy\",\"format\":\"wav\"},\"max_completion_tokens\":500,"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"Say hello.\"}]}";
    assert_int_equal(strlen(body), 172);
    /* 1000 prompt tokens of which 800 audio, 500 completion of which 400
     * audio: 200 x 2.5 = 500 + 800 x 32 = 25600 + 100 x 10 = 1000 + 400 x
     * 64 = 25600 -> 52700 µ$ */
    const char *resp =
        "{\"object\":\"chat.completion\",\"model\":\"gpt-audio-2025-08-28\",\"choices\":[{"
        "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"audio\":{\"id\":"
        "\"audio_1\",\"data\":\"\",\"transcript\":\"Hello!\"}},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,\"prompt_tokens_details\":{"
        "\"cached_tokens\":0,\"audio_tokens\":800},\"completion_tokens_details\":{"
        "\"reasoning_tokens\":0,\"audio_tokens\":400}}}";
    assert_int_equal(
        run(p, "openai", "/v1/chat/completions", body, "application/json", resp, &reserve),
        52700);
    assert_int_equal(reserve, 70272);
    /* Audio counts above the totals are clamped to them: 1000 audio in x
     * 32 = 32000 + 500 audio out x 64 = 32000 -> 64000 µ$ */
    const char *odd = "{\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,"
                      "\"prompt_tokens_details\":{\"audio_tokens\":9999},"
                      "\"completion_tokens_details\":{\"audio_tokens\":9999}}}";
    assert_int_equal(
        run(p, "openai", "/v1/chat/completions", body, "application/json", odd, &reserve), 64000);
    meter_pricing_free(p);
}


/* ---- OpenAI: images and speech ---- */

static void test_openai_images(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;
    const char *ok = "{\"created\":1713833628,\"data\":[{\"url\":\"https://example.com/1.png\"}]}";

    /* dall-e-3, hd, 1024x1792: $0.12 an image, known before forwarding. */
    assert_int_equal(run(p, "openai", "/v1/images/generations",
                         "{\"model\":\"dall-e-3\",\"prompt\":\"a lighthouse\",\"n\":1,\"quality\":"
                         "\"hd\",\"size\":\"1024x1792\"}",
                         "application/json", ok, &reserve),
                     120000);
    assert_int_equal(reserve, 120000);
    /* No model: dall-e-2, 1024x1024 by default (the dearest size when
     * unset): 3 x $0.02 */
    assert_int_equal(run(p, "openai", "/v1/images/generations",
                         "{\"prompt\":\"a lighthouse\",\"n\":3}", "application/json", ok, &reserve),
                     60000);
    /* dall-e-2 has one quality, "standard": 2 x $0.016 at 256x256 */
    assert_int_equal(run(p, "openai", "/v1/images/generations",
                         "{\"model\":\"dall-e-2\",\"prompt\":\"x\",\"n\":2,\"size\":\"256x256\","
                         "\"quality\":\"standard\"}",
                         "application/json", ok, &reserve),
                     32000);

    /* gpt-image-1, quality auto, size auto, n 2: the dearest entry (high,
     * 1024x1536: 6240 tokens) for each image. 61 bytes:
     *   (61 + 1024) x $5 = 5425 + 2 x 6240 x $40 = 499200 -> 504625 */
    const char *gi = "{\"model\":\"gpt-image-1\",\"prompt\":\"a lighthouse at dusk\",\"n\":2}";
    assert_int_equal(strlen(gi), 61);
    /* The answer's usage: 12 text tokens, 2 x 4160 output (high square):
     *   12 x 5 = 60 + 8320 x 40 = 332800 -> 332860 */
    assert_int_equal(run(p, "openai", "/v1/images/generations", gi, "application/json",
                         "{\"created\":1,\"data\":[{\"b64_json\":\"\"},{\"b64_json\":\"\"}],"
                         "\"usage\":{\"total_tokens\":8332,\"input_tokens\":12,"
                         "\"output_tokens\":8320,\"input_tokens_details\":{\"text_tokens\":12,"
                         "\"image_tokens\":0}}}",
                         &reserve),
                     332860);
    assert_int_equal(reserve, 504625);
    /* Without usage: the reservation. */
    assert_int_equal(run(p, "openai", "/v1/images/generations", gi, "application/json", ok,
                         &reserve),
                     504625);
    /* gpt-image-1-mini, low, size auto (the dearest low size, 1024x1536:
     * 408 tokens), 2 partial images of 100 tokens: (408 + 200) x $8 = 4864
     * + 78 bytes: (78 + 1024) x $2 = 2204 -> 7068 */
    const char *mini = "{\"model\":\"gpt-image-1-mini\",\"prompt\":\"cat\",\"quality\":\"low\","
                       "\"partial_images\":2}";
    assert_int_equal(strlen(mini), 78);
    struct kb_meter *m = NULL;
    assert_int_equal(begin(p, "openai", "POST", "/v1/images/generations", mini, &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 7068);
    meter_free(m);

    /* Models and sizes the tables do not list are refused. */
    assert_int_equal(refused(p, "openai", "/v1/images/generations",
                             "{\"model\":\"gpt-image-2\",\"prompt\":\"x\"}"),
                     KB_E_MODEL_NOT_PRICED);
    assert_int_equal(refused(p, "openai", "/v1/images/generations",
                             "{\"model\":\"dall-e-3\",\"prompt\":\"x\",\"size\":\"4096x4096\"}"),
                     KB_E_MODEL_NOT_PRICED);
    assert_int_equal(refused(p, "openai", "/v1/images/generations",
                             "{\"model\":\"dall-e-3\",\"prompt\":\"x\",\"n\":-1}"),
                     KB_E_INVALID);
    meter_pricing_free(p);
}

static void test_openai_speech(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;

    /* tts-1 at $15 per million characters: "Grüße aus Köln!" is 15
     * characters (18 bytes): 15 x 15 = 225 µ$ */
    assert_int_equal(run(p, "openai", "/v1/audio/speech",
                         "{\"model\":\"tts-1\",\"voice\":\"alloy\",\"input\":\"Gr\xc3\xbc\xc3\x9f"
                         "e aus K\xc3\xb6ln!\"}",
                         "audio/mpeg", "ID3...", &reserve),
                     225);
    assert_int_equal(reserve, 225);
    /* tts-1-hd at $30: 4 characters -> 120 */
    assert_int_equal(run(p, "openai", "/v1/audio/speech",
                         "{\"model\":\"tts-1-hd\",\"voice\":\"nova\",\"input\":\"Hey!\"}",
                         "audio/mpeg", "ID3...", &reserve),
                     120);
    /* Billed by audio tokens the request does not bound: refused. */
    assert_int_equal(refused(p, "openai", "/v1/audio/speech",
                             "{\"model\":\"gpt-4o-mini-tts\",\"voice\":\"alloy\",\"input\":\"Hi\"}"),
                     KB_E_MODEL_NOT_PRICED);
    assert_int_equal(refused(p, "openai", "/v1/audio/speech", "{\"model\":\"tts-1\"}"),
                     KB_E_INVALID);
    meter_pricing_free(p);
}


static void test_openai_videos(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;
    const char *queued = "{\"id\":\"video_1\",\"object\":\"video\",\"status\":\"queued\"}";

    /* sora-2-pro, 1792x1024 at $0.50 a second, 12 seconds: $6.00, charged
     * once the job is accepted (the render happens later). */
    assert_int_equal(run(p, "openai", "/v1/videos",
                         "{\"model\":\"sora-2-pro\",\"prompt\":\"a fox\",\"seconds\":\"12\","
                         "\"size\":\"1792x1024\"}",
                         "application/json", queued, &reserve),
                     6000000);
    assert_int_equal(reserve, 6000000);
    /* Defaults: sora-2, 4 seconds, at the dearest listed size ($0.10). */
    assert_int_equal(run(p, "openai", "/v1/videos", "{\"prompt\":\"a fox\"}", "application/json",
                         queued, &reserve),
                     400000);

    /* The SDKs send a multipart form: sora-2, 8 seconds at $0.10 -> $0.80 */
    const char *form = "--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na fox\r\n"
                       "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nsora-2\r\n"
                       "--XyZ\r\nContent-Disposition: form-data; name=\"seconds\"\r\n\r\n8\r\n"
                       "--XyZ\r\nContent-Disposition: form-data; name=\"input_reference\"; "
                       "filename=\"ref.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n"
                       "--XyZ--\r\n";
    struct kb_meter_req req = {"openai", "POST", "/v1/videos", 10,
                               "multipart/form-data; boundary=XyZ", form, strlen(form)};
    struct kb_meter *m = NULL;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_OK);
    assert_int_equal(reserve, 800000);
    meter_free(m);
    /* A field given twice with different values: the vendor may read
     * either. */
    const char *twice = "--XyZ\r\nContent-Disposition: form-data; name=\"seconds\"\r\n\r\n4\r\n"
                        "--XyZ\r\nContent-Disposition: form-data; name=\"seconds\"\r\n\r\n12\r\n"
                        "--XyZ--\r\n";
    req.body = twice;
    req.body_len = strlen(twice);
    m = (struct kb_meter *)0x1;
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_E_AMBIGUOUS_REQUEST);
    free(em);
    em = NULL;

    assert_int_equal(refused(p, "openai", "/v1/videos",
                             "{\"model\":\"sora-3\",\"prompt\":\"x\"}"),
                     KB_E_MODEL_NOT_PRICED);
    assert_int_equal(refused(p, "openai", "/v1/videos",
                             "{\"model\":\"sora-2\",\"size\":\"1792x1024\",\"prompt\":\"x\"}"),
                     KB_E_MODEL_NOT_PRICED);
    assert_int_equal(refused(p, "openai", "/v1/videos",
                             "{\"model\":\"sora-2\",\"seconds\":\"4.5\",\"prompt\":\"x\"}"),
                     KB_E_INVALID);
    meter_pricing_free(p);
}

/* ---- OpenAI: a cost class for every endpoint ---- */

static void test_openai_endpoint_classes(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    static const char *const free_paths[] = {
        "/v1/moderations",          "/v1/responses/input_tokens",  "/v1/files",
        "/v1/uploads",              "/v1/uploads/upload_1/parts",  "/v1/uploads/upload_1/complete",
        "/v1/batches/batch_1/cancel", "/v1/responses/resp_1/cancel", "/v1/conversations",
        "/v1/conversations/conv_1/items", "/v1/assistants",        "/v1/threads",
        "/v1/threads/thread_1/messages", "/v1/threads/thread_1/runs/run_1/cancel",
        "/v1/fine_tuning/jobs/ftjob_1/cancel", "/v1/evals",        "/V1/FILES",
        "/v1/Moderations",
    };
    for (size_t i = 0; i < sizeof free_paths / sizeof free_paths[0]; i++) {
        reserve = -1;
        assert_int_equal(begin(p, "openai", "POST", free_paths[i], "{\"input\":\"x\"}", &m,
                               &reserve),
                         KB_OK);
        assert_int_equal(reserve, 0);
        meter_response_status(m, 200, "application/json");
        meter_response_data(m, "{\"id\":\"x\"}", 10);
        assert_int_equal(meter_settle(m, true), 0);
        meter_free(m);
    }
    /* Refused unless an operator prices them: the cost is outside the
     * request (a file of requests, a training run, a credential). */
    static const char *const refused_paths[] = {
        "/v1/batches",
        "/v1/fine_tuning/jobs",
        "/v1/fine_tuning/jobs/ftjob_1/resume",
        "/v1/threads/runs",
        "/v1/threads/thread_1/runs",
        "/v1/threads/thread_1/runs/run_1/submit_tool_outputs",
        "/v1/realtime/client_secrets",
        "/v1/realtime/sessions",
        "/v1/realtime/transcription_sessions",
        "/v1/images/edits",
        "/v1/images/variations",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/videos/video_1/remix",
        "/v1/containers",
        "/v1/vector_stores",
        "/v1/vector_stores/vs_1/files",
        "/v1/evals/eval_1/runs",
        "/v1/files/",
        "/v1/chat/completions/x/y",
        "/v1//moderations",
    };
    for (size_t i = 0; i < sizeof refused_paths / sizeof refused_paths[0]; i++) {
        assert_int_equal(refused(p, "openai", refused_paths[i], "{\"model\":\"gpt-5.5\"}"),
                         KB_E_ENDPOINT_NOT_METERED);
    }
    /* A case variant of a metered route is metered: (33 + 1024) x 4.25
     * (gpt-4o priority) = 4492.25 -> 4493 + 1 x 17 -> 4510 */
    const char *b = "{\"model\":\"gpt-4o\",\"max_tokens\":1}";
    assert_int_equal(strlen(b), 33);
    assert_int_equal(begin(p, "openai", "POST", "/V1/Chat/Completions", b, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 4510);
    meter_free(m);
    /* Reads and deletes are free by declaration. */
    assert_int_equal(begin(p, "openai", "GET", "/v1/batches", "", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 0);
    meter_free(m);
    /* An operator's fixed cost allows a refused endpoint. */
    char *em = NULL;
    assert_int_equal(meter_pricing_add_fixed(p, "openai", "POST /v1/batches", 500000, &em), KB_OK);
    assert_int_equal(begin(p, "openai", "POST", "/v1/batches", "{}", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 500000);
    meter_free(m);
    meter_pricing_free(p);
}

/* ---- Anthropic ---- */

#define ANT_RESP(usage)                                                                            \
    "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[{" \
    "\"type\":\"text\",\"text\":\"Done.\"}],\"stop_reason\":\"end_turn\",\"usage\":" usage "}"

static void test_anthropic_fast_mode(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;

    /* 123 bytes, Opus 4.6 fast at 6x ($30 in, $150 out):
     *   (123 + 1024) x 30 = 34410 + 1024 x 150 = 153600 -> 188010 µ$ */
    const char *body = "{\"model\":\"claude-opus-4-6\",\"max_tokens\":1024,\"speed\":\"fast\","
                       "\"messages\":[{\"role\":\"user\",\"content\":\"Refactor this module.\"}]}";
    assert_int_equal(strlen(body), 123);
    /* Served fast: 1000 x 30 = 30000 + 200 x 150 = 30000 -> 60000 */
    assert_int_equal(run(p, "anthropic", "/v1/messages", body, "application/json",
                         ANT_RESP("{\"input_tokens\":1000,\"output_tokens\":200,"
                                  "\"speed\":\"fast\"}"),
                         &reserve),
                     60000);
    assert_int_equal(reserve, 188010);
    /* The answer does not say: fast (asked for). */
    assert_int_equal(run(p, "anthropic", "/v1/messages", body, "application/json",
                         ANT_RESP("{\"input_tokens\":1000,\"output_tokens\":200}"), &reserve),
                     60000);
    /* Fell back to standard speed: 1000 x 5 + 200 x 25 -> 10000 */
    assert_int_equal(run(p, "anthropic", "/v1/messages", body, "application/json",
                         ANT_RESP("{\"input_tokens\":1000,\"output_tokens\":200,"
                                  "\"speed\":\"standard\"}"),
                         &reserve),
                     10000);
    /* Opus 5 at 2x: 1000 x 10 + 200 x 50 -> 20000 */
    const char *b5 = "{\"model\":\"claude-opus-5\",\"max_tokens\":1024,\"speed\":\"fast\","
                     "\"messages\":[{\"role\":\"user\",\"content\":\"Refactor this module.\"}]}";
    assert_int_equal(run(p, "anthropic", "/v1/messages", b5, "application/json",
                         ANT_RESP("{\"input_tokens\":1000,\"output_tokens\":200}"), &reserve),
                     20000);
    /* A model without fast mode: refused, not charged at 1x. */
    assert_int_equal(refused(p, "anthropic", "/v1/messages",
                             "{\"model\":\"claude-sonnet-5\",\"max_tokens\":10,\"speed\":\"fast\","
                             "\"messages\":[]}"),
                     KB_E_MODEL_NOT_PRICED);
    meter_pricing_free(p);
}

static void test_anthropic_inference_geo(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;

    /* 112 bytes, Sonnet 5 at 1.1x ($2.20 in, $11 out):
     *   (112 + 1024) x 2.2 = 2499.2 -> 2500 + 512 x 11 = 5632 -> 8132 */
    const char *body = "{\"model\":\"claude-sonnet-5\",\"max_tokens\":512,\"inference_geo\":\"us\","
                       "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}";
    assert_int_equal(strlen(body), 112);
    /* 1000 x 2.2 = 2200 + 100 x 11 = 1100 -> 3300 */
    assert_int_equal(run(p, "anthropic", "/v1/messages", body, "application/json",
                         ANT_RESP("{\"input_tokens\":1000,\"output_tokens\":100,"
                                  "\"inference_geo\":\"us\"}"),
                         &reserve),
                     3300);
    assert_int_equal(reserve, 8132);
    /* The answer reports global: 1000 x 2 + 100 x 10 -> 3000 */
    assert_int_equal(run(p, "anthropic", "/v1/messages", body, "application/json",
                         ANT_RESP("{\"input_tokens\":1000,\"output_tokens\":100,"
                                  "\"inference_geo\":\"global\"}"),
                         &reserve),
                     3000);
    meter_pricing_free(p);

    /* A workspace whose default geo is regional: a request that names none
     * is reserved and, when the answer is silent, charged at 1.1x. 91
     * bytes: (91 + 1024) x 2.2 = 2453 + 512 x 11 = 5632 -> 8085 */
    p = load_pricing("{\"anthropic\":{\"default_inference_geo_regional\":true}}");
    const char *plain = "{\"model\":\"claude-sonnet-5\",\"max_tokens\":512,\"messages\":[{"
                        "\"role\":\"user\",\"content\":\"Hello\"}]}";
    assert_int_equal(strlen(plain), 91);
    assert_int_equal(run(p, "anthropic", "/v1/messages", plain, "application/json",
                         ANT_RESP("{\"input_tokens\":1000,\"output_tokens\":100}"), &reserve),
                     3300);
    assert_int_equal(reserve, 8085);
    meter_pricing_free(p);
}

static void test_anthropic_server_tools(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;

    /* Without max_uses a request could search without limit. */
    assert_int_equal(refused(p, "anthropic", "/v1/messages",
                             "{\"model\":\"claude-sonnet-5-5\",\"max_tokens\":100,\"tools\":[{"
                             "\"type\":\"web_search_20250305\",\"name\":\"web_search\"}],"
                             "\"messages\":[]}"),
                     KB_E_INVALID);
    /* Server tools loop up to 10 model calls: input bound 11 x the
     * 1,000,000-token context = 11,000,000 x 2 = 22,000,000; output 11 x
     * 1000 x 10 = 110,000; 3 searches x $0.01 = 30,000 -> 22,140,000 µ$ */
    const char *body = "{\"model\":\"claude-sonnet-5-5\",\"max_tokens\":1000,\"tools\":[{\"type\":"
                       "\"web_search_20250305\",\"name\":\"web_search\",\"max_uses\":3}],"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"News today?\"}]}";
    /* 5000 x 2 = 10000 + 400 x 10 = 4000 + 2 searches x 10000 -> 34000 */
    assert_int_equal(run(p, "anthropic", "/v1/messages", body, "application/json",
                         ANT_RESP("{\"input_tokens\":5000,\"output_tokens\":400,"
                                  "\"server_tool_use\":{\"web_search_requests\":2}}"),
                         &reserve),
                     34000);
    assert_int_equal(reserve, 22140000);
    /* Code execution: $0.05 per request that offers it (one container
     * hour); 100 x 2 + 10 x 10 + 50000 -> 50300 */
    const char *code = "{\"model\":\"claude-sonnet-5-5\",\"max_tokens\":10,\"tools\":[{\"type\":"
                       "\"code_execution_20250825\",\"name\":\"code_execution\"}],\"messages\":[]}";
    assert_int_equal(run(p, "anthropic", "/v1/messages", code, "application/json",
                         ANT_RESP("{\"input_tokens\":100,\"output_tokens\":10}"), &reserve),
                     50300);
    /* A document fetched by URL is not in the body: the context window
     * (Haiku 4.5: 200,000 x 1 = 200,000 + 10 x 5 = 50 -> 200,050) */
    const char *doc = "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":10,\"messages\":[{\"role\":"
                      "\"user\",\"content\":[{\"type\":\"document\",\"source\":{\"type\":\"url\","
                      "\"url\":\"https://example.com/a.pdf\"}}]}]}";
    struct kb_meter *m = NULL;
    assert_int_equal(begin(p, "anthropic", "POST", "/v1/messages", doc, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 200050);
    meter_free(m);
    /* A web search result from an earlier turn is read as the page's text:
     * bounded by the context window too. */
    const char *hist =
        "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":10,\"messages\":[{\"role\":\"assistant\","
        "\"content\":[{\"type\":\"web_search_tool_result\",\"tool_use_id\":\"srvtoolu_1\","
        "\"content\":[{\"type\":\"web_search_result\",\"url\":\"https://example.com\","
        "\"title\":\"Example\",\"encrypted_content\":\"EqgfCioIARgB\"}]}]},{\"role\":\"user\","
        "\"content\":\"more?\"}]}";
    assert_int_equal(begin(p, "anthropic", "POST", "/v1/messages", hist, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 200050);
    meter_free(m);
    /* Unknown server tools are refused. */
    assert_int_equal(refused(p, "anthropic", "/v1/messages",
                             "{\"model\":\"claude-sonnet-5-5\",\"max_tokens\":10,\"tools\":[{"
                             "\"type\":\"teleport_20990101\",\"name\":\"t\"}],\"messages\":[]}"),
                     KB_E_INVALID);
    meter_pricing_free(p);
}

static void test_anthropic_haiku_long_prompt(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;
    const char *body = "{\"model\":\"claude-haiku-5-5\",\"max_tokens\":100,\"messages\":[{\"role\":"
                       "\"user\",\"content\":\"Summarise.\"}]}";
    /* 90,000 input + 20,000 cache reads = 110,000 > 100,000: every token at
     * the long-prompt prices: 90000 x 0.5 = 45000 + 20000 x 0.05 = 1000 +
     * 100 x 2.5 = 250 -> 46250 */
    assert_int_equal(run(p, "anthropic", "/v1/messages", body, "application/json",
                         ANT_RESP("{\"input_tokens\":90000,\"cache_read_input_tokens\":20000,"
                                  "\"output_tokens\":100}"),
                         &reserve),
                     46250);
    /* Under the threshold: 50000 x 0.1 = 5000 + 100 x 0.5 = 50 -> 5050 */
    assert_int_equal(run(p, "anthropic", "/v1/messages", body, "application/json",
                         ANT_RESP("{\"input_tokens\":50000,\"output_tokens\":100}"), &reserve),
                     5050);
    meter_pricing_free(p);
}

static void test_anthropic_batches(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    int64_t reserve = -1;

    /* Each entry is reserved like a message at 50% of the prices, from its
     * own compact text:
     *   params 1 (99 bytes), Haiku 4.5 at $0.50 / $2.50:
     *     (99 + 1024) x 0.5 = 561.5 -> 562 + 100 x 2.5 = 250 -> 812
     *   params 2 (102 bytes), Sonnet 5 at $1 / $5:
     *     (102 + 1024) x 1 = 1126 + 200 x 5 = 1000 -> 2126
     * The results are billed later: the batch costs its reservation. */
    const char *p1 = "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":100,\"messages\":[{\"role\":"
                     "\"user\",\"content\":\"Hello, world\"}]}";
    const char *p2 = "{\"model\":\"claude-sonnet-5\",\"max_tokens\":200,\"messages\":[{\"role\":"
                     "\"user\",\"content\":\"Hi again, Claude\"}]}";
    assert_int_equal(strlen(p1), 99);
    assert_int_equal(strlen(p2), 102);
    char body[1024];
    snprintf(body, sizeof body,
             "{\"requests\":[{\"custom_id\":\"a\",\"params\":%s},{\"custom_id\":\"b\","
             "\"params\":%s}]}",
             p1, p2);
    const char *resp = "{\"id\":\"msgbatch_01\",\"type\":\"message_batch\",\"processing_status\":"
                       "\"in_progress\",\"request_counts\":{\"processing\":2}}";
    assert_int_equal(
        run(p, "anthropic", "/v1/messages/batches", body, "application/json", resp, &reserve),
        2938);
    assert_int_equal(reserve, 2938);
    /* Refused as a whole when one entry cannot be priced. */
    assert_int_equal(refused(p, "anthropic", "/v1/messages/batches",
                             "{\"requests\":[{\"custom_id\":\"a\",\"params\":{\"model\":"
                             "\"claude-9\",\"max_tokens\":1,\"messages\":[]}}]}"),
                     KB_E_MODEL_NOT_PRICED);
    assert_int_equal(refused(p, "anthropic", "/v1/messages/batches", "{\"requests\":[]}"),
                     KB_E_INVALID);
    meter_pricing_free(p);
}

static void test_anthropic_endpoint_classes(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    static const char *const free_paths[] = {
        "/v1/messages/count_tokens", "/v1/messages/batches/msgbatch_1/cancel", "/v1/files",
        "/v1/skills", "/v1/skills/skill_1/versions", "/V1/Messages/Count_Tokens"};
    for (size_t i = 0; i < sizeof free_paths / sizeof free_paths[0]; i++) {
        assert_int_equal(begin(p, "anthropic", "POST", free_paths[i], "{\"model\":\"x\"}", &m,
                               &reserve),
                         KB_OK);
        assert_int_equal(reserve, 0);
        meter_response_status(m, 200, "application/json");
        assert_int_equal(meter_settle(m, true), 0);
        meter_free(m);
    }
    static const char *const refused_paths[] = {"/v1/complete", "/v1/sessions",
                                                "/v1/messages/batches/x", "/v1/messages/"};
    for (size_t i = 0; i < sizeof refused_paths / sizeof refused_paths[0]; i++)
        assert_int_equal(refused(p, "anthropic", refused_paths[i], "{}"),
                         KB_E_ENDPOINT_NOT_METERED);
    /* A case variant of /v1/messages is metered. */
    assert_int_equal(refused(p, "anthropic", "/V1/MESSAGES", "{\"model\":\"claude-9\"}"),
                     KB_E_MODEL_NOT_PRICED);
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_service_tiers),
        cmocka_unit_test(test_openai_web_search),
        cmocka_unit_test(test_openai_external_input),
        cmocka_unit_test(test_openai_audio),
        cmocka_unit_test(test_openai_images),
        cmocka_unit_test(test_openai_speech),
        cmocka_unit_test(test_openai_videos),
        cmocka_unit_test(test_openai_endpoint_classes),
        cmocka_unit_test(test_anthropic_fast_mode),
        cmocka_unit_test(test_anthropic_inference_geo),
        cmocka_unit_test(test_anthropic_server_tools),
        cmocka_unit_test(test_anthropic_haiku_long_prompt),
        cmocka_unit_test(test_anthropic_batches),
        cmocka_unit_test(test_anthropic_endpoint_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
