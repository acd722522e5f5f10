/*
 * test_meter_models.c - the models a request names (meter_model) and a
 * key's allowed_models checked by meter_begin: exact ids, every entry of
 * an Anthropic batch, the allowlist speaking before any pricing error, a
 * body whose model cannot be read, and requests that name no model; and a
 * Stripe key's max_amount_per_request, at its exact boundary.
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

struct row {
    const char *vendor, *method, *path, *ctype, *body;
    const char *allowed;   /* allowed_models JSON text, NULL: any */
    enum kb_err want;      /* meter_begin's result */
    const char *models[3]; /* what meter_model lists on KB_OK */
};

static const char chat_mini[] = "{\"model\":\"gpt-4o-mini\",\"max_tokens\":16,\"messages\":[{"
                                "\"role\":\"user\",\"content\":\"hi\"}]}";
static const char chat_bogus[] = "{\"model\":\"no-such-model\",\"max_tokens\":16,\"messages\":[{"
                                 "\"role\":\"user\",\"content\":\"hi\"}]}";
static const char msg_haiku[] = "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":16,\"messages\":[{"
                                "\"role\":\"user\",\"content\":\"hi\"}]}";
static const char batch_two[] =
    "{\"requests\":[{\"custom_id\":\"a\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":"
    "8,"
    "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}},{\"custom_id\":\"b\",\"params\":{"
    "\"model\":"
    "\"claude-opus-5-5\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}]}";

static const struct row rows[] = {
    /* no list: the models are still read */
    {"openai",
     "POST",
     "/v1/chat/completions",
     "application/json",
     chat_mini,
     NULL,
     KB_OK,
     {"gpt-4o-mini"}},
    {"openai",
     "POST",
     "/v1/chat/completions",
     "application/json",
     chat_mini,
     "[\"gpt-4o-mini\"]",
     KB_OK,
     {"gpt-4o-mini"}},
    /* exact ids only: case, snapshots and prefixes differ */
    {"openai",
     "POST",
     "/v1/chat/completions",
     "application/json",
     chat_mini,
     "[\"GPT-4O-MINI\"]",
     KB_E_MODEL_NOT_ALLOWED,
     {NULL}},
    {"openai",
     "POST",
     "/v1/chat/completions",
     "application/json",
     chat_mini,
     "[\"gpt-4o\"]",
     KB_E_MODEL_NOT_ALLOWED,
     {NULL}},
    /* the allowlist speaks before the price table */
    {"openai",
     "POST",
     "/v1/chat/completions",
     "application/json",
     chat_bogus,
     "[\"gpt-4o-mini\"]",
     KB_E_MODEL_NOT_ALLOWED,
     {NULL}},
    {"openai",
     "POST",
     "/v1/chat/completions",
     "application/json",
     chat_bogus,
     NULL,
     KB_E_MODEL_NOT_PRICED,
     {NULL}},
    /* no model named: nothing to check */
    {"openai", "GET", "/v1/models", NULL, "", "[\"gpt-4o-mini\"]", KB_OK, {NULL}},
    /* a write the meter cannot read a model from */
    {"openai",
     "POST",
     "/v1/audio/transcriptions",
     "multipart/form-data; boundary=x",
     "--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--x--\r\n",
     "[\"gpt-4o-mini\"]",
     KB_E_MODEL_NOT_ALLOWED,
     {NULL}},
    {"anthropic",
     "POST",
     "/v1/messages",
     "application/json",
     msg_haiku,
     "[\"claude-haiku-4-5\"]",
     KB_OK,
     {"claude-haiku-4-5"}},
    /* every entry of a batch */
    {"anthropic",
     "POST",
     "/v1/messages/batches",
     "application/json",
     batch_two,
     "[\"claude-haiku-4-5\"]",
     KB_E_MODEL_NOT_ALLOWED,
     {NULL}},
    {"anthropic",
     "POST",
     "/v1/messages/batches",
     "application/json",
     batch_two,
     "[\"claude-opus-5-5\",\"claude-haiku-4-5\"]",
     KB_OK,
     {"claude-haiku-4-5", "claude-opus-5-5"}},
};

static void test_models(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct row *r = &rows[i];
        struct kb_meter_req req = {.vendor = r->vendor,
                                   .method = r->method,
                                   .path = r->path,
                                   .path_len = strlen(r->path),
                                   .content_type = r->ctype,
                                   .body = r->body,
                                   .body_len = strlen(r->body),
                                   .allowed_models = r->allowed};
        struct kb_meter *m = NULL;
        int64_t reserve = 0;
        char *nb = NULL, *em = NULL;
        size_t nbl = 0;
        enum kb_err err = meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em);
        if (err != r->want)
            print_error("row %zu: %s (%s)\n", i, kb_strerror(err), em ? em : "-");
        assert_int_equal(err, r->want);
        if (err == KB_OK) {
            size_t n = 0;
            for (; r->models[n]; n++)
                assert_string_equal(meter_model(m, n, NULL), r->models[n]);
            assert_null(meter_model(m, n, NULL));
        } else if (err == KB_E_MODEL_NOT_ALLOWED) {
            assert_non_null(em);
        }
        meter_free(m);
        free(nb);
        free(em);
    }
    meter_pricing_free(p);
}

/* A Stripe key's max_amount_per_request: the amount the request states,
 * in USD, at most the ceiling (equal passes, one cent more does not). */
static void test_max_amount(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    static const struct {
        const char *path, *body;
        int64_t max;
        enum kb_err want;
    } rows[] = {
        {"/v1/payment_intents", "amount=500&currency=usd", 5000000, KB_OK},
        {"/v1/payment_intents", "amount=501&currency=usd", 5000000, KB_E_AMOUNT_TOO_LARGE},
        {"/v1/payment_intents", "amount=501&currency=usd", 0, KB_OK},
        {"/v1/charges", "amount=100000&currency=usd", 999999, KB_E_AMOUNT_TOO_LARGE},
        {"/v1/payment_intents", "amount=500&currency=usd", 4999999, KB_E_AMOUNT_TOO_LARGE},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct kb_meter_req req = {.vendor = "stripe",
                                   .method = "POST",
                                   .path = rows[i].path,
                                   .path_len = strlen(rows[i].path),
                                   .content_type = "application/x-www-form-urlencoded",
                                   .body = rows[i].body,
                                   .body_len = strlen(rows[i].body),
                                   .max_amount = rows[i].max};
        struct kb_meter *m = NULL;
        int64_t reserve = 0;
        char *nb = NULL, *em = NULL;
        size_t nbl = 0;
        enum kb_err err = meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em);
        if (err != rows[i].want)
            print_error("row %zu: %s (%s)\n", i, kb_strerror(err), em ? em : "-");
        assert_int_equal(err, rows[i].want);
        if (err == KB_E_AMOUNT_TOO_LARGE)
            assert_non_null(strstr(em, "max_amount_per_request"));
        meter_free(m);
        free(nb);
        free(em);
    }
    meter_pricing_free(p);
}

/* One meter_begin; returns its result (and frees everything). */
static enum kb_err begin(const struct kb_pricing *p, const char *vendor, const char *path,
                         const char *ctype, const char *body, const char *allowed, int64_t max)
{
    struct kb_meter_req req = {.vendor = vendor,
                               .method = "POST",
                               .path = path,
                               .path_len = strlen(path),
                               .content_type = ctype,
                               .body = body,
                               .body_len = strlen(body),
                               .allowed_models = allowed,
                               .max_amount = max};
    struct kb_meter *m = NULL;
    int64_t reserve = 0;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em);
    meter_free(m);
    free(nb);
    free(em);
    return err;
}

/* Review findings (session 7): what a key's scopes must not let through. */
static void test_scopes_fail_closed(void **state)
{
    (void)state;
    struct kb_pricing *p = load_pricing(NULL);
    char *em = NULL;
    /* an operator prices every other OpenAI write at a fixed cost */
    assert_int_equal(meter_pricing_add_fixed(p, "openai", "POST /v1/*", 10000, &em), KB_OK);
    const char *mini = "[\"gpt-4o-mini\"]";
    /* a video with no model runs the default one: it is the model named */
    assert_int_equal(begin(p, "openai", "/v1/videos", "application/json",
                           "{\"prompt\":\"a cat\",\"seconds\":\"8\"}", mini, 0),
                     KB_E_MODEL_NOT_ALLOWED);
    assert_int_equal(begin(p, "openai", "/v1/videos", "application/json",
                           "{\"prompt\":\"a cat\",\"seconds\":\"8\"}", "[\"sora-2\"]", 0),
                     KB_OK);
    /* a route no vendor rule reads (priced by the fixed cost): a model
     * nested in a session or a data source, or none at all, is unread */
    assert_int_equal(begin(p, "openai", "/v1/realtime/client_secrets", "application/json",
                           "{\"session\":{\"model\":\"gpt-realtime\"}}", mini, 0),
                     KB_E_MODEL_NOT_ALLOWED);
    assert_int_equal(begin(p, "openai", "/v1/evals/e1/runs", "application/json",
                           "{\"data_source\":{\"model\":\"o3\"}}", mini, 0),
                     KB_E_MODEL_NOT_ALLOWED);
    assert_int_equal(begin(p, "openai", "/v1/batches", "application/json",
                           "{\"input_file_id\":\"file_1\",\"endpoint\":\"/v1/chat/completions\"}",
                           mini, 0),
                     KB_E_MODEL_NOT_ALLOWED);
    assert_int_equal(begin(p, "openai", "/v1/threads/t/runs", "application/json",
                           "{\"assistant_id\":\"asst_1\"}", mini, 0),
                     KB_E_MODEL_NOT_ALLOWED);
    /* ... and a duplicate model is not read as its last one */
    assert_int_equal(begin(p, "openai", "/v1/fine_tuning/jobs", "application/json",
                           "{\"model\":\"gpt-4o-mini\",\"model\":\"o3\"}", mini, 0),
                     KB_E_MODEL_NOT_ALLOWED);
    /* a plain top-level model, alone, is trusted there */
    assert_int_equal(begin(p, "openai", "/v1/fine_tuning/jobs", "application/json",
                           "{\"model\":\"gpt-4o-mini\",\"training_file\":\"file_1\"}", mini, 0),
                     KB_OK);
    /* without a list, the same writes are the fixed cost's */
    assert_int_equal(begin(p, "openai", "/v1/batches", "application/json",
                           "{\"input_file_id\":\"file_1\"}", NULL, 0),
                     KB_OK);

    /* a Stripe request that states no amount may move any: refused on a
     * key with a ceiling, whatever the ceiling */
    const char *form = "application/x-www-form-urlencoded";
    assert_int_equal(
        begin(p, "stripe", "/v1/payment_intents/pi_X/confirm", form, "", NULL, 500000000),
        KB_E_AMOUNT_TOO_LARGE);
    assert_int_equal(
        begin(p, "stripe", "/v1/payment_intents/pi_X/capture", form, "", NULL, 500000000),
        KB_E_AMOUNT_TOO_LARGE);
    assert_int_equal(begin(p, "stripe", "/v1/subscriptions", form,
                           "customer=cus_1&items[0][price]=price_big", NULL, 500000000),
                     KB_E_AMOUNT_TOO_LARGE);
    /* with no ceiling, unchanged */
    assert_int_equal(begin(p, "stripe", "/v1/payment_intents/pi_X/capture", form, "", NULL, 0),
                     KB_OK);
    /* a Stripe write only a fixed cost prices moves an unknown amount */
    assert_int_equal(meter_pricing_add_fixed(p, "stripe", "POST /v1/payment_links", 0, &em), KB_OK);
    assert_int_equal(
        begin(p, "stripe", "/v1/payment_links", form, "line_items[0][price]=p_1", NULL, 500000000),
        KB_E_AMOUNT_TOO_LARGE);
    free(em);
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_models),
                                       cmocka_unit_test(test_max_amount),
                                       cmocka_unit_test(test_scopes_fail_closed)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
