/*
 * fuzz_meter_llm.c - libFuzzer target for the OpenAI and Anthropic meters
 * (src/meter/openai.c, openai_media.c, anthropic.c, models.c,
 * llm_routes.c): request readers, route table, multipart fields, usage
 * readers for JSON answers and SSE streams.
 *
 * Input: one selector byte, then "<request body>\0<response body>". The
 * selector picks the vendor and path (the metered, free and refused routes
 * and case variants), whether the request is a multipart form, and whether
 * the answer is read as JSON or as an event stream fed in two pieces.
 * Nothing may crash or leak; a reservation and a cost are never negative
 * nor above the money cap; an answer of a route with no response reader
 * costs exactly its reservation.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/money.h"
#include "meter/meter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
    const char *vendor;
    const char *path;
} routes[] = {
    {"openai", "/v1/chat/completions"},     {"openai", "/v1/responses"},
    {"openai", "/v1/completions"},          {"openai", "/v1/embeddings"},
    {"openai", "/v1/images/generations"},   {"openai", "/v1/audio/speech"},
    {"openai", "/v1/videos"},               {"openai", "/v1/moderations"},
    {"openai", "/v1/threads/runs"},         {"openai", "/V1/Chat/Completions"},
    {"anthropic", "/v1/messages"},          {"anthropic", "/v1/messages/batches"},
    {"anthropic", "/v1/messages/count_tokens"}, {"anthropic", "/v1/complete"},
    {"anthropic", "/V1/MESSAGES"},          {"openai", "/v1/responses/r_1/cancel"},
};

static struct kb_pricing *pricing;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pricing) {
        char *em = NULL;
        if (meter_pricing_load(NULL, &pricing, &em) != KB_OK)
            abort();
    }
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    const char *nul = memchr(in, '\0', n);
    size_t req_len = nul ? (size_t)(nul - in) : n;
    const char *resp = nul ? nul + 1 : "";
    size_t resp_len = nul ? n - req_len - 1 : 0;
    size_t r = sel % (sizeof routes / sizeof routes[0]);
    bool multipart = sel & 0x40, sse = sel & 0x80;

    struct kb_meter_req req = {routes[r].vendor,
                               "POST",
                               routes[r].path,
                               strlen(routes[r].path),
                               multipart ? "multipart/form-data; boundary=b" : "application/json",
                               in,
                               req_len};
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    if (meter_begin(pricing, &req, &m, &reserve, &nb, &nbl, &em) != KB_OK) {
        free(em);
        return 0;
    }
    if (reserve < 0 || reserve > KB_MONEY_MAX_MICROS)
        abort();
    meter_response_status(m, 200, sse ? "text/event-stream" : "application/json");
    size_t half = resp_len / 2;
    meter_response_data(m, resp, half);
    meter_response_data(m, resp + half, resp_len - half);
    int64_t cost = meter_settle(m, true);
    if (cost < 0 || cost > KB_MONEY_MAX_MICROS)
        abort();
    meter_free(m);
    free(nb);
    return 0;
}
