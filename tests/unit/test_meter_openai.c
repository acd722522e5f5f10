/*
 * test_meter_openai.c - the OpenAI meter on recorded-looking bodies: chat
 * completions, the Responses API, legacy completions and embeddings,
 * streamed (fed whole, one byte at a time and at random cut points) and not;
 * the include_usage rewrite; cut streams, failures, unpriced models, model
 * name lookup and the memory caps.
 *
 * Prices are pinned by an override file so the expected figures do not move
 * when the embedded list prices are updated. 1 token at $X per million
 * tokens costs X µ$, so "$2.50/M" reads as "2.5 µ$ a token" below.
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

#include "meter_test.h"

#include "core/alloc.h"
#include "meter/meter.h"
#include "meter/meter_int.h"

static const char pinned[] =
    "{\"openai\": {\"models\": {"
    "\"gpt-4o\": {\"input_per_mtok\": \"2.50\", \"cached_input_per_mtok\": \"1.25\","
    " \"output_per_mtok\": \"10.00\", \"max_output_tokens\": 16384, \"priority\": null},"
    "\"gpt-4o-mini\": {\"input_per_mtok\": \"0.15\", \"cached_input_per_mtok\": \"0.075\","
    " \"output_per_mtok\": \"0.60\", \"max_output_tokens\": 16384, \"priority\": null},"
    "\"o3\": {\"input_per_mtok\": \"2.00\", \"cached_input_per_mtok\": \"0.50\","
    " \"output_per_mtok\": \"8.00\", \"max_output_tokens\": 100000, \"priority\": null},"
    "\"text-embedding-3-small\": {\"input_per_mtok\": \"0.02\", \"output_per_mtok\": \"0\"},"
    "\"gpt-3.5-turbo-instruct\": {\"input_per_mtok\": \"1.50\", \"output_per_mtok\": \"2.00\","
    " \"max_output_tokens\": 4096}"
    "}}}";

/* ---- helpers (each test file carries its own) ---- */

static struct kb_pricing *load(const char *override)
{
    return load_pricing(override);
}

static enum kb_err begin(struct kb_pricing *p, const char *path, const char *body,
                         struct kb_meter **m, int64_t *reserve, char **nb)
{
    struct kb_meter_req req = {"openai",           "POST", path,        strlen(path),
                               "application/json", body,   strlen(body)};
    char *em = NULL, *tmp = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &req, m, reserve, &tmp, &nbl, &em);
    if (err != KB_OK)
        assert_non_null(em);
    if (tmp)
        assert_int_equal(nbl, strlen(tmp));
    if (nb)
        *nb = tmp;
    else
        free(tmp);
    free(em);
    return err;
}

enum feed_mode { WHOLE = 0, BYTEWISE, RANDOM };

/* Feeds s in the given split; RANDOM cuts at 1..97-byte points from seed. */
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

/* Begins, answers with status/ctype/resp fed in `mode`, settles. */
static int64_t exchange(struct kb_pricing *p, const char *path, const char *body, int status,
                        const char *ctype, const char *resp, size_t resp_len, enum feed_mode mode,
                        unsigned seed, bool complete, int64_t *reserve)
{
    struct kb_meter *m = NULL;
    assert_int_equal(begin(p, path, body, &m, reserve, NULL), KB_OK);
    meter_response_status(m, status, ctype);
    feed(m, resp, resp_len, mode, seed);
    int64_t cost = meter_settle(m, complete);
    meter_free(m);
    return cost;
}

/* Runs the exchange whole, byte by byte and at 30 random cut sets; all
 * must settle at `want`. */
static void all_splits(struct kb_pricing *p, const char *path, const char *body, const char *ctype,
                       const char *resp, int64_t want_reserve, int64_t want)
{
    int64_t reserve = -1;
    for (unsigned k = 0; k < 32; k++) {
        enum feed_mode mode = k == 0 ? WHOLE : k == 1 ? BYTEWISE : RANDOM;
        int64_t got =
            exchange(p, path, body, 200, ctype, resp, strlen(resp), mode, k, true, &reserve);
        assert_int_equal(reserve, want_reserve);
        if (got != want)
            print_message("split %u: got %lld want %lld\n", k, (long long)got, (long long)want);
        assert_int_equal(got, want);
    }
}

/* ---- recorded-looking bodies ---- */

/* 188 bytes */
static const char chat_req[] =
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a terse "
    "assistant.\"},{\"role\":\"user\",\"content\":\"Summarise RFC 9110 in one paragraph.\"}],"
    "\"max_tokens\":300,\"temperature\":0.2}";

static const char chat_resp[] =
    "{\n"
    "  \"id\": \"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\n"
    "  \"object\": \"chat.completion\",\n"
    "  \"created\": 1741570283,\n"
    "  \"model\": \"gpt-4o-2024-08-06\",\n"
    "  \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": "
    "\"HTTP semantics...\", \"refusal\": null, \"annotations\": []}, \"logprobs\": null, "
    "\"finish_reason\": \"stop\"}],\n"
    "  \"usage\": {\n"
    "    \"prompt_tokens\": 1200,\n"
    "    \"completion_tokens\": 350,\n"
    "    \"total_tokens\": 1550,\n"
    "    \"prompt_tokens_details\": {\"cached_tokens\": 1024, \"audio_tokens\": 0},\n"
    "    \"completion_tokens_details\": {\"reasoning_tokens\": 0, \"audio_tokens\": 0, "
    "\"accepted_prediction_tokens\": 0, \"rejected_prediction_tokens\": 0}\n"
    "  },\n"
    "  \"service_tier\": \"default\",\n"
    "  \"system_fingerprint\": \"fp_fc9f1d7035\"\n"
    "}\n";

/* 107 bytes */
static const char chat_stream_req[] = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
                                      "\"content\":\"Say hi\"}],\"stream\":true,"
                                      "\"max_completion_tokens\":50}";

#define CHUNK_HEAD                                                                                 \
    "data: {\"id\":\"chatcmpl-BCd1\",\"object\":\"chat.completion.chunk\",\"created\":"            \
    "1742000000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\","                     \
    "\"system_fingerprint\":\"fp_90d33c15d4\","

static const char chat_stream_before_usage[] = CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
    "\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n" CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    ": keep-alive comment\n\n" CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there \\\"usage\\\": "
    "{\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n" CHUNK_HEAD
    "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
    "\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";

static const char chat_stream_usage[] =
    CHUNK_HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,"
               "\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":0,"
               "\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,"
               "\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
               "\"rejected_prediction_tokens\":0}}}\n\n"
               "data: [DONE]\n\n";

/* 109 bytes */
static const char resp_req[] = "{\"model\":\"o3\",\"input\":\"Plan a 3-day trip to Kyoto.\","
                               "\"reasoning\":{\"effort\":\"medium\"},\"max_output_tokens\":4000}";

static const char resp_resp[] =
    "{\"id\":\"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b\",\"object\":\"response\","
    "\"created_at\":1741476542,\"status\":\"completed\",\"error\":null,"
    "\"incomplete_details\":null,\"model\":\"o3-2025-04-16\",\"output\":[{\"type\":"
    "\"reasoning\",\"id\":\"rs_1\",\"summary\":[]},{\"type\":\"message\",\"id\":\"msg_1\","
    "\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
    "\"text\":\"Day 1: Fushimi Inari...\",\"annotations\":[]}]}],"
    "\"usage\":{\"input_tokens\":5000,\"input_tokens_details\":{\"cached_tokens\":4000},"
    "\"output_tokens\":800,\"output_tokens_details\":{\"reasoning_tokens\":640},"
    "\"total_tokens\":5800}}";

/* 91 bytes */
static const char resp_stream_req[] = "{\"model\":\"o3\",\"input\":\"Plan a 3-day trip to "
                                      "Kyoto.\",\"stream\":true,\"max_output_tokens\":4000}";

/* CRLF line endings, as some intermediaries re-frame SSE. */
static const char resp_stream_head[] =
    "event: response.created\r\n"
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":"
    "\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":"
    "\"o3-2025-04-16\",\"output\":[],\"usage\":null}}\r\n\r\n"
    "event: response.output_text.delta\r\n"
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":"
    "\"msg_1\",\"output_index\":1,\"content_index\":0,\"delta\":\"Day 1\"}\r\n\r\n";

static const char resp_stream_completed[] =
    "event: response.completed\r\n"
    "data: {\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":"
    "\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"o3-2025-04-16\","
    "\"output\":[],\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":"
    "0},\"output_tokens\":1234,\"output_tokens_details\":{\"reasoning_tokens\":1024},"
    "\"total_tokens\":1271}}}\r\n\r\n";

/* ---- chat completions ---- */

static void test_chat_nonstream(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    assert_int_equal(strlen(chat_req), 188);
    /* reserve: (188 bytes + 1024 slack) = 1212 tokens x 2.5 µ$ = 3030 µ$
     *          + max_tokens 300 x 10 µ$ = 3000 µ$           -> 6030 µ$
     * settle:  (1200 - 1024 cached) = 176 x 2.5  =  440 µ$
     *          1024 cached x 1.25                = 1280 µ$
     *          350 completion x 10               = 3500 µ$  -> 5220 µ$ */
    all_splits(p, "/v1/chat/completions", chat_req, "application/json", chat_resp, 6030, 5220);
    meter_pricing_free(p);
}

static void test_chat_stream(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    char *resp = kb_asprintf("%s%s", chat_stream_before_usage, chat_stream_usage);
    assert_int_equal(strlen(chat_stream_req), 107);
    /* reserve: (107 + 1024) = 1131 x 2.5 = 2827.5 -> 2828 µ$
     *          + max_completion_tokens 50 x 10 = 500 µ$     -> 3328 µ$
     * settle:  19 prompt x 2.5 = 47.5, rounded up to 48 µ$
     *          10 completion x 10 = 100 µ$                  ->  148 µ$ */
    all_splits(p, "/v1/chat/completions", chat_stream_req, "text/event-stream; charset=utf-8", resp,
               3328, 148);
    free(resp);
    meter_pricing_free(p);
}

/* The final chunk is found by a text search for a "usage" member whose
 * value is an object: spacing around the colon, names that end in usage,
 * "usage" as a string value and "usage" followed by null must all be read
 * as before (only the real usage object is parsed). */
static void test_chat_stream_usage_search(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    static const char tricky[] =
        CHUNK_HEAD "\"choices\":[],\"x_usage\":{\"prompt_tokens\":900000},\"u\":\"usage\","
                   "\"usage\"  :  null}\n\n" CHUNK_HEAD
                   "\"choices\":[],\"usage\" \t: \t{\"prompt_tokens\":19,\"completion_tokens\":"
                   "10,\"total_tokens\":29}}\n\ndata: [DONE]\n\n";
    /* settle as test_chat_stream: 48 + 100 µ$ */
    all_splits(p, "/v1/chat/completions", chat_stream_req, "text/event-stream", tricky, 3328, 148);
    meter_pricing_free(p);
}

/* Every member name that stands for input held elsewhere, nested in a
 * message, and near misses that must not: the first two reserve the
 * context bound (gpt-4o: 549100, as in test_meter_llm.c), the rest the body's bytes. */
static void test_openai_external_names(void **state)
{
    static const char *const yes[] = {
        "\"file_id\":\"f\"", "\"file_url\":\"u\"", "\"previous_response_id\":\"r\"",
        "\"conversation\":\"c\"", "\"vector_store_ids\":[]", "\"server_url\":\"s\"",
        "\"audio\":{\"id\":\"a\"}", "\"image_url\":\"https://x\"", "\"image_url\":{}",
        "\"type\":\"item_reference\""};
    static const char *const no[] = {
        "\"file_idx\":\"f\"", "\"fil\":1", "\"file_id\":null", "\"audio\":{\"format\":\"a\"}",
        "\"audio\":\"id\"", "\"image_url\":\"data:x\"", "\"image_url\":{\"url\":\"data:\"}",
        "\"server\":1", "\"conversations\":1", "\"a\":1", "\"i\":1", "\"\":1"};
    struct kb_pricing *p = load(NULL);
    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        const char *const *v = pass ? no : yes;
        size_t n = pass ? sizeof no / sizeof no[0] : sizeof yes / sizeof yes[0];
        for (size_t i = 0; i < n; i++) {
            struct kb_meter *m = NULL;
            int64_t reserve = -1;
            char *body = kb_asprintf("{\"model\":\"gpt-4o\",\"max_tokens\":300,\"messages\":"
                                     "[{\"role\":\"user\",\"content\":[{%s}]}]}",
                                     v[i]);
            assert_int_equal(begin(p, "/v1/chat/completions", body, &m, &reserve, NULL), KB_OK);
            if (!pass)
                assert_int_equal(reserve, 549100);
            else
                assert_true(reserve < 20000);
            meter_free(m);
            free(body);
        }
    }
    meter_pricing_free(p);
}

static void test_chat_stream_cut_before_usage(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    int64_t reserve = -1;
    const char *s = chat_stream_before_usage;

    /* Upstream cut after the finish chunk, before the usage chunk: the
     * reservation (3328 µ$, see test_chat_stream) is charged. */
    for (unsigned k = 0; k < 8; k++)
        assert_int_equal(exchange(p, "/v1/chat/completions", chat_stream_req, 200,
                                  "text/event-stream", s, strlen(s), k ? RANDOM : BYTEWISE, k,
                                  false, &reserve),
                         3328);
    /* Cut in the middle of the usage chunk itself: still the reservation. */
    char *half = kb_asprintf("%s%.60s", s, chat_stream_usage);
    assert_int_equal(exchange(p, "/v1/chat/completions", chat_stream_req, 200, "text/event-stream",
                              half, strlen(half), RANDOM, 3, false, &reserve),
                     3328);
    free(half);
    /* The usage chunk arrived but the client left before [DONE]: usage
     * seen, 148 µ$. */
    char *nodone =
        kb_asprintf("%s%.*s", s, (int)(strlen(chat_stream_usage) - 14), chat_stream_usage);
    assert_int_equal(exchange(p, "/v1/chat/completions", chat_stream_req, 200, "text/event-stream",
                              nodone, strlen(nodone), BYTEWISE, 0, false, &reserve),
                     148);
    free(nodone);
    meter_pricing_free(p);
}

static void test_failures_cost_zero(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    int64_t reserve = -1;
    static const char err429[] = "{\"error\":{\"message\":\"Rate limit reached for gpt-4o\","
                                 "\"type\":\"requests\",\"param\":null,\"code\":"
                                 "\"rate_limit_exceeded\"}}";
    static const int statuses[] = {400, 401, 429, 500, 503};

    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        assert_int_equal(exchange(p, "/v1/chat/completions", chat_req, statuses[i],
                                  "application/json", err429, strlen(err429), WHOLE, 0, true,
                                  &reserve),
                         0);
    /* No status at all (connection refused): 0. */
    struct kb_meter *m = NULL;
    assert_int_equal(begin(p, "/v1/chat/completions", chat_req, &m, &reserve, NULL), KB_OK);
    assert_int_equal(meter_settle(m, false), 0);
    meter_free(m);
    meter_pricing_free(p);
}

/* ---- include_usage rewrite ---- */

struct inject_case {
    const char *body; /* request */
    const char *want; /* forwarded body, NULL = unchanged */
};

static void test_include_usage_injection(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    static const struct inject_case cases[] = {
        /* absent: added first, every other byte kept */
        {"{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
         "\"hi\"}]}",
         "{\"stream_options\":{\"include_usage\":true},\"model\":\"gpt-4o\",\"stream\":true,"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
        /* pretty-printed, a real number, a decoy string; the client's own
         * stream_options field is kept */
        {"{\n  \"model\": \"gpt-4o\",\n  \"temperature\": 0.7,\n  \"stream\": true,\n"
         "  \"messages\": [{\"role\": \"user\", \"content\": \"\\\"stream_options\\\": {}\"}],\n"
         "  \"stream_options\": {\"include_obfuscation\": false}\n}",
         "{\n  \"model\": \"gpt-4o\",\n  \"temperature\": 0.7,\n  \"stream\": true,\n"
         "  \"messages\": [{\"role\": \"user\", \"content\": \"\\\"stream_options\\\": {}\"}],\n"
         "  \"stream_options\": {\"include_usage\":true,\"include_obfuscation\": false}\n}"},
        /* explicitly false: flipped, the rest kept */
        {"{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"x\":1,\"include_usage\": "
         "false}}",
         "{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"x\":1,\"include_usage\": "
         "true}}"},
        /* null: replaced */
        {"{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":null}",
         "{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}"},
        /* escaped key, empty object */
        {"{\"model\":\"gpt-4o\",\"stream\":true,\"stream\\u005foptions\":{ }}",
         "{\"model\":\"gpt-4o\",\"stream\":true,\"stream\\u005foptions\":{\"include_usage\":true"
         " }}"},
        /* a nested stream_options is not the top-level one */
        {"{\"metadata\":{\"stream_options\":\"x\"},\"model\":\"gpt-4o\",\"stream\":true}",
         "{\"stream_options\":{\"include_usage\":true},\"metadata\":{\"stream_options\":\"x\"},"
         "\"model\":\"gpt-4o\",\"stream\":true}"},
        /* already asked for: untouched */
        {"{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
         NULL},
        /* not a stream: untouched */
        {"{\"model\":\"gpt-4o\",\"stream\":false,\"messages\":[]}", NULL},
        {"{\"model\":\"gpt-4o\",\"messages\":[]}", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct kb_meter *m = NULL;
        int64_t reserve = -1;
        char *nb = NULL;
        assert_int_equal(begin(p, "/v1/chat/completions", cases[i].body, &m, &reserve, &nb), KB_OK);
        if (!cases[i].want) {
            assert_null(nb);
        } else {
            assert_non_null(nb);
            if (strcmp(nb, cases[i].want) != 0)
                print_message("case %zu: got %s\n", i, nb);
            assert_string_equal(nb, cases[i].want);
            /* still JSON, and the same document plus include_usage */
            json_t *a = json_loads(nb, JSON_REJECT_DUPLICATES, NULL);
            json_t *b = json_loads(cases[i].body, 0, NULL);
            assert_non_null(a);
            assert_true(json_is_true(
                json_object_get(json_object_get(a, "stream_options"), "include_usage")));
            json_object_del(json_object_get(a, "stream_options"), "include_usage");
            json_t *bso = json_object_get(b, "stream_options");
            if (json_is_object(bso))
                json_object_del(bso, "include_usage");
            else
                json_object_set_new(b, "stream_options", json_object());
            assert_true(json_equal(a, b));
            json_decref(a);
            json_decref(b);
        }
        free(nb);
        meter_free(m);
    }
    /* Legacy completions are rewritten too; the Responses API is not (its
     * terminal event always carries usage). */
    struct kb_meter *m = NULL;
    int64_t reserve;
    char *nb = NULL;
    assert_int_equal(
        begin(p, "/v1/completions",
              "{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"x\",\"stream\":true}", &m,
              &reserve, &nb),
        KB_OK);
    assert_non_null(nb);
    free(nb);
    meter_free(m);
    assert_int_equal(begin(p, "/v1/responses", resp_stream_req, &m, &reserve, &nb), KB_OK);
    assert_null(nb);
    meter_free(m);
    meter_pricing_free(p);
}

/* ---- Responses API ---- */

static void test_responses_nonstream(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    assert_int_equal(strlen(resp_req), 109);
    /* reserve: (109 + 1024) = 1133 x 2.0 = 2266 µ$
     *          + max_output_tokens 4000 x 8 = 32000 µ$      -> 34266 µ$
     * settle:  (5000 - 4000 cached) = 1000 x 2.0 = 2000 µ$
     *          4000 cached x 0.5               = 2000 µ$
     *          800 output (reasoning incl.) x 8 = 6400 µ$   -> 10400 µ$ */
    all_splits(p, "/v1/responses", resp_req, "application/json", resp_resp, 34266, 10400);
    meter_pricing_free(p);
}

static void test_responses_stream(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    char *resp = kb_asprintf("%s%s", resp_stream_head, resp_stream_completed);
    int64_t reserve = -1;
    assert_int_equal(strlen(resp_stream_req), 91);
    /* reserve: (91 + 1024) = 1115 x 2.0 = 2230 + 4000 x 8 = 32000 -> 34230 µ$
     * settle:  37 input x 2.0 = 74 µ$ + 1234 output x 8 = 9872 µ$ -> 9946 µ$ */
    all_splits(p, "/v1/responses", resp_stream_req, "text/event-stream", resp, 34230, 9946);

    /* A response cut at max_output_tokens ends with response.incomplete,
     * which carries usage too: 37 x 2 = 74 + 4000 x 8 = 32000 -> 32074 µ$ */
    char *inc = kb_asprintf(
        "%sevent: response.incomplete\r\ndata: {\"type\":\"response.incomplete\",\"response\":{"
        "\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},"
        "\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},"
        "\"output_tokens\":4000,\"total_tokens\":4037}}}\r\n\r\n",
        resp_stream_head);
    assert_int_equal(exchange(p, "/v1/responses", resp_stream_req, 200, "text/event-stream", inc,
                              strlen(inc), BYTEWISE, 0, true, &reserve),
                     32074);
    /* Cut before the terminal event: the reservation, 34230 µ$. */
    assert_int_equal(exchange(p, "/v1/responses", resp_stream_req, 200, "text/event-stream",
                              resp_stream_head, strlen(resp_stream_head), RANDOM, 7, false,
                              &reserve),
                     34230);
    free(inc);
    free(resp);
    meter_pricing_free(p);
}

/* ---- embeddings and legacy completions ---- */

static void test_embeddings(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    const char *req = "{\"model\":\"text-embedding-3-small\",\"input\":[\"The food was delicious "
                      "and the waiter was friendly.\"],\"encoding_format\":\"float\"}";
    const char *resp = "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                       "\"embedding\":[-0.006929283,-0.005336422,0.00024047505]}],"
                       "\"model\":\"text-embedding-3-small\",\"usage\":{\"prompt_tokens\":12345,"
                       "\"total_tokens\":12345}}";
    assert_int_equal(strlen(req), 124);
    /* reserve: (124 + 1024) = 1148 x 0.02 = 22.96 -> 23 µ$ (no output)
     * settle:  12345 x 0.02 = 246.9 -> 247 µ$ */
    all_splits(p, "/v1/embeddings", req, "application/json", resp, 23, 247);
    meter_pricing_free(p);
}

static void test_completions_choices(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    const char *req = "{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"Say this is a test\","
                      "\"max_tokens\":7,\"n\":2,\"best_of\":3}";
    const char *resp = "{\"id\":\"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7\",\"object\":\"text_completion\","
                       "\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\"This is a "
                       "test\",\"index\":0},{\"text\":\"This is indeed a test\",\"index\":1}],"
                       "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":21,"
                       "\"total_tokens\":26}}";
    assert_int_equal(strlen(req), 97);
    /* reserve: (97 + 1024) = 1121 x 1.5 = 1681.5 -> 1682 µ$
     *          + best_of 3 x max_tokens 7 = 21 tokens x 2.0 = 42 µ$ -> 1724 µ$
     * settle:  5 x 1.5 = 7.5 -> 8 µ$ + 21 x 2.0 = 42 µ$           ->   50 µ$ */
    all_splits(p, "/v1/completions", req, "application/json", resp, 1724, 50);
    meter_pricing_free(p);
}

/* ---- models ---- */

static void test_model_lookup(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    char *em = NULL;

    /* Dated snapshot -> gpt-4o. 65 bytes: (65 + 1024) = 1089 x 2.5 =
     * 2722.5 -> 2723 µ$ + max_tokens 1 x 10 = 10 µ$ -> 2733 µ$ */
    const char *b1 = "{\"model\":\"gpt-4o-2024-08-06\",\"max_tokens\":1,\"messages\":[{\"a\":1}]}";
    assert_int_equal(strlen(b1), 65);
    assert_int_equal(begin(p, "/v1/chat/completions", b1, &m, &reserve, NULL), KB_OK);
    assert_int_equal(reserve, 2733);
    meter_free(m);

    /* Longest prefix wins: gpt-4o-mini, not gpt-4o. 70 bytes: (70 + 1024)
     * = 1094 x 0.15 = 164.1 -> 165 µ$ + 1 x 0.6 = 0.6 -> 1 µ$ -> 166 µ$ */
    const char *b2 =
        "{\"model\":\"gpt-4o-mini-2024-07-18\",\"max_tokens\":1,\"messages\":[{\"a\":1}]}";
    assert_int_equal(strlen(b2), 70);
    assert_int_equal(begin(p, "/v1/chat/completions", b2, &m, &reserve, NULL), KB_OK);
    assert_int_equal(reserve, 166);
    meter_free(m);

    /* Not a '-'-separated snapshot, a fine-tune, an unknown model: refused,
     * out-parameters untouched. */
    static const char *const unpriced[] = {
        "{\"model\":\"gpt-4oops\",\"messages\":[]}",
        "{\"model\":\"ft:gpt-4o-mini-2024-07-18:acme::9abc\",\"messages\":[]}",
        "{\"model\":\"my-local-llama\",\"messages\":[]}",
    };
    for (size_t i = 0; i < 3; i++) {
        struct kb_meter_req req = {"openai",           "POST",      "/v1/chat/completions", 20,
                                   "application/json", unpriced[i], strlen(unpriced[i])};
        struct kb_meter *out = (struct kb_meter *)0x1;
        char *nb = (char *)0x1;
        size_t nbl = 7;
        reserve = -1;
        assert_int_equal(meter_begin(p, &req, &out, &reserve, &nb, &nbl, &em),
                         KB_E_MODEL_NOT_PRICED);
        assert_ptr_equal(out, (struct kb_meter *)0x1);
        assert_ptr_equal(nb, (char *)0x1);
        assert_int_equal(nbl, 7);
        assert_int_equal(reserve, -1);
        assert_non_null(em);
        free(em);
        em = NULL;
    }
    meter_pricing_free(p);

    /* With a "default" price, unknown models are priced by it. 42 bytes:
     * (42 + 1024) = 1066 x 1.0 = 1066 µ$ + its max_output 2 x 1.0 = 2 µ$
     * -> 1068 µ$ */
    p = load("{\"openai\":{\"models\":{\"default\":{\"input_per_mtok\":\"1\","
             "\"output_per_mtok\":\"1\",\"max_output_tokens\":2}}}}");
    const char *b3 = "{\"model\":\"my-local-llama\",\"messages\":[{}]}";
    assert_int_equal(strlen(b3), 42);
    assert_int_equal(begin(p, "/v1/chat/completions", b3, &m, &reserve, NULL), KB_OK);
    assert_int_equal(reserve, 1068);
    meter_free(m);
    meter_pricing_free(p);
}

static void test_invalid_bodies(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    static const char *const bad[] = {
        "{\"messages\":[]}",                                /* no model */
        "{\"model\":42}",                                   /* model not a string */
        "not json",                                         /* not JSON */
        "[1,2]",                                            /* not an object */
        "{\"model\":\"gpt-4o\",\"model\":\"gpt-4o-mini\"}", /* ambiguous */
        "{\"model\":\"gpt-4o\",\"max_tokens\":-1}",         /* negative cap */
        "{\"model\":\"gpt-4o\",\"max_tokens\":\"100\"}",    /* cap as a string */
        "{\"model\":\"gpt-4o\",\"n\":1.5}",                 /* fractional n */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(begin(p, "/v1/chat/completions", bad[i], &m, &reserve, NULL),
                         KB_E_INVALID);
    assert_int_equal(reserve, -1);
    /* A write without a rule is refused before anything is read. */
    assert_int_equal(begin(p, "/v1/unpriced_thing", "not json", &m, &reserve, NULL),
                     KB_E_ENDPOINT_NOT_METERED);
    meter_pricing_free(p);
}

/* ---- bounds ---- */

static void test_overlong_event_skipped(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    size_t big = 3 * 1024 * 1024 / 2; /* 1.5 MiB of content in one event */
    char *pad = kb_malloc(big + 1);
    memset(pad, 'x', big);
    pad[big] = '\0';

    assert_int_equal(begin(p, "/v1/chat/completions", chat_stream_req, &m, &reserve, NULL), KB_OK);
    meter_response_status(m, 200, "text/event-stream");
    feed(m, CHUNK_HEAD "\"choices\":[{\"delta\":{\"content\":\"",
         strlen(CHUNK_HEAD "\"choices\":[{\"delta\":{\"content\":\""), WHOLE, 0);
    for (size_t i = 0; i < big; i += 4096)
        meter_response_data(m, pad + i, big - i < 4096 ? big - i : 4096);
    feed(m, "\"}}],\"usage\":null}\n\n", 20, WHOLE, 0);
    /* The long event was scanned as it came, never buffered: its skeleton
     * (content elided) is all that was held. */
    assert_true(m->sse_state.scan.out.cap <= 4096);
    feed(m, chat_stream_usage, strlen(chat_stream_usage), RANDOM, 5);
    /* ...and the usage after it is still read: 148 µ$ (see test_chat_stream) */
    assert_int_equal(meter_settle(m, true), 148);
    meter_free(m);
    free(pad);
    meter_pricing_free(p);
}

static void test_oversized_json_is_read(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    size_t big = 5 * 1024 * 1024;
    char *pad = kb_malloc(big);
    memset(pad, ' ', big);

    assert_int_equal(begin(p, "/v1/chat/completions", chat_req, &m, &reserve, NULL), KB_OK);
    meter_response_status(m, 200, "application/json");
    /* 5 MiB of whitespace ahead of the real body: once beyond the old
     * 4 MiB buffer (charged the reservation); now scanned in bounded
     * memory and read. */
    for (size_t i = 0; i < big; i += 65536)
        meter_response_data(m, pad, 65536);
    assert_true(m->body_scan.out.cap <= 4096);
    meter_response_data(m, chat_resp, strlen(chat_resp));
    /* usage read: 5220 µ$ (see test_chat_nonstream) */
    assert_int_equal(meter_settle(m, true), 5220);
    assert_false(m->body_over);
    meter_free(m);
    free(pad);
    meter_pricing_free(p);
}

static void test_stream_answered_with_json_error(void **state)
{
    (void)state;
    struct kb_pricing *p = load(pinned);
    int64_t reserve = -1;
    /* A stream request answered 200 with a JSON body (no SSE): read as
     * JSON. Usage present -> 148 µ$ as in test_chat_stream. */
    const char *json = "{\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10}}";
    assert_int_equal(exchange(p, "/v1/chat/completions", chat_stream_req, 200, "application/json",
                              json, strlen(json), BYTEWISE, 0, true, &reserve),
                     148);
    /* 200 with an SSE body that never carries usage, complete: the
     * reservation (3328 µ$). */
    assert_int_equal(exchange(p, "/v1/chat/completions", chat_stream_req, 200, "text/event-stream",
                              chat_stream_before_usage, strlen(chat_stream_before_usage), WHOLE, 0,
                              true, &reserve),
                     3328);
    meter_pricing_free(p);
}

static void test_embedded_prices(void **state)
{
    (void)state;
    /* The shipped list: gpt-4o at $2.50/M in, $10/M out, priority $4.25/M
     * in, $17/M out; no service_tier: the project may run at priority, so
     * the reservation is at the priority prices. */
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    const char *b = "{\"model\":\"gpt-4o\",\"max_tokens\":100,\"messages\":[{}]}";
    assert_int_equal(strlen(b), 51);
    assert_int_equal(begin(p, "/v1/chat/completions", b, &m, &reserve, NULL), KB_OK);
    /* 51 bytes: (51 + 1024) = 1075 x 4.25 = 4568.75 -> 4569 + 100 x 17 =
     * 1700 -> 6269 µ$ */
    assert_int_equal(reserve, 6269);
    meter_free(m);
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_nonstream),
        cmocka_unit_test(test_chat_stream),
        cmocka_unit_test(test_chat_stream_usage_search),
        cmocka_unit_test(test_chat_stream_cut_before_usage),
        cmocka_unit_test(test_openai_external_names),
        cmocka_unit_test(test_failures_cost_zero),
        cmocka_unit_test(test_include_usage_injection),
        cmocka_unit_test(test_responses_nonstream),
        cmocka_unit_test(test_responses_stream),
        cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_completions_choices),
        cmocka_unit_test(test_model_lookup),
        cmocka_unit_test(test_invalid_bodies),
        cmocka_unit_test(test_overlong_event_skipped),
        cmocka_unit_test(test_oversized_json_is_read),
        cmocka_unit_test(test_stream_answered_with_json_error),
        cmocka_unit_test(test_embedded_prices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
