/*
 * meter_cost.c - CPU per request spent in the meters, on the exchanges a
 * proxy sees most: an OpenAI chat completion (request with a short
 * conversation, JSON answer with usage), the same streamed (20 SSE chunks
 * and the usage chunk), an Anthropic message, a Stripe PaymentIntent.
 * Each is run N times through meter_begin / response / settle / free with
 * the embedded prices; prints ns per exchange. Not a test: a figure for
 * docs/benchmarks.md (`make bench-meter`).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meter/meter.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct exchange {
    const char *name, *vendor, *path, *ctype, *body, *resp_ctype;
    const char *resp[24];
};

static double run(const struct kb_pricing *p, const struct exchange *x, int n)
{
    struct kb_meter_req q = {.vendor = x->vendor,
                             .method = "POST",
                             .path = x->path,
                             .path_len = strlen(x->path),
                             .content_type = x->ctype,
                             .body = x->body,
                             .body_len = strlen(x->body)};
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        struct kb_meter *m = NULL;
        int64_t reserve;
        char *nb = NULL, *em = NULL;
        size_t nbl;
        if (meter_begin(p, &q, &m, &reserve, &nb, &nbl, &em) != KB_OK) {
            fprintf(stderr, "%s: %s\n", x->name, em ? em : "?");
            exit(1);
        }
        meter_response_status(m, 200, x->resp_ctype);
        meter_response_encoding(m, NULL);
        for (int k = 0; x->resp[k]; k++)
            meter_response_data(m, x->resp[k], strlen(x->resp[k]));
        if (meter_settle(m, true) <= 0 && i == 0)
            fprintf(stderr, "%s: settled at 0\n", x->name);
        meter_free(m);
        free(nb);
    }
    return (now_ns() - t0) / n;
}

#define CHUNK                                                                                      \
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":"   \
    "\"gpt-4o-mini\",\"service_tier\":\"default\",\"choices\":[{\"index\":0,\"delta\":{"           \
    "\"content\":\"Hello there\"},\"finish_reason\":null}],\"usage\":null}\n\n"

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    struct kb_pricing *p = NULL;
    char *em = NULL;
    if (meter_pricing_load(NULL, &p, &em) != KB_OK) {
        fprintf(stderr, "pricing: %s\n", em);
        return 1;
    }
    static const char chat_req[] =
        "{\"model\":\"gpt-4o-mini\",\"max_tokens\":512,\"messages\":[{\"role\":\"system\","
        "\"content\":\"You are a helpful agent that books travel.\"},{\"role\":\"user\","
        "\"content\":\"Find me a flight from Paris to Berlin next Tuesday morning, window seat, "
        "and a hotel near the station for two nights.\"}],\"temperature\":0.2}";
    static const char chat_resp[] =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":"
        "\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"I found three flights and two hotels that match: ...\",\"refusal\":null},"
        "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":62,"
        "\"completion_tokens\":180,\"total_tokens\":242,\"prompt_tokens_details\":{"
        "\"cached_tokens\":0}},\"service_tier\":\"default\",\"system_fingerprint\":\"fp_1\"}";
    char stream_req[sizeof chat_req + 32];
    snprintf(stream_req, sizeof stream_req, "{\"stream\":true,%s", chat_req + 1);
    const struct exchange xs[] = {
        {"openai chat",
         "openai",
         "/v1/chat/completions",
         "application/json",
         chat_req,
         "application/json",
         {chat_resp, NULL}},
        {"openai chat, streamed (21 events)",
         "openai",
         "/v1/chat/completions",
         "application/json",
         stream_req,
         "text/event-stream",
         {CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          CHUNK,
          "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
          "\"service_tier\":\"default\",\"usage\":{\"prompt_tokens\":62,\"completion_tokens\":"
          "20,\"total_tokens\":82}}\n\ndata: [DONE]\n\n",
          NULL}},
        {"anthropic message",
         "anthropic",
         "/v1/messages",
         "application/json",
         "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":512,\"messages\":[{\"role\":\"user\","
         "\"content\":\"Find me a flight from Paris to Berlin next Tuesday morning.\"}]}",
         "application/json",
         {"{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
          "\"claude-sonnet-4-5\",\"content\":[{\"type\":\"text\",\"text\":\"Three flights ...\"}],"
          "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":25,\"output_tokens\":120,"
          "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}}",
          NULL}},
        {"stripe payment intent",
         "stripe",
         "/v1/payment_intents",
         "application/x-www-form-urlencoded",
         "amount=2000&currency=usd&payment_method_types%5B0%5D=card&metadata%5Border%5D=6735",
         "application/json",
         {"{\"id\":\"pi_1\",\"object\":\"payment_intent\",\"amount\":2000,\"currency\":\"usd\","
          "\"status\":\"requires_payment_method\"}",
          NULL}},
    };
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        if (argc > 2 && !strstr(xs[i].name, argv[2]))
            continue;           /* `meter_cost N stripe`: one exchange only */
        run(p, &xs[i], n / 10); /* warm up */
        printf("%-36s %8.2f us per exchange\n", xs[i].name, run(p, &xs[i], n) / 1000.0);
    }
    meter_pricing_free(p);
    return 0;
}
