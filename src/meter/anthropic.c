/*
 * anthropic.c - the Anthropic meter: POST /v1/messages by tokens.
 *
 * Reserve: input bound x the dearest input-side price the request can incur
 * + max_tokens (else the model's maximum) x output price. The input bound is
 * the body's byte length plus METER__INPUT_SLACK_TOKENS (the hidden tool-use
 * system prompt); see openai.c for why bytes bound tokens. Input tokens are
 * priced at the input price, or, when the body marks a cache_control
 * breakpoint, at the cache-write price (1-hour price for a ttl other than
 * "5m"), because every input token may be written to the cache.
 *
 * Settle from usage: input_tokens at the input price, cache_creation_input_
 * tokens at the cache-write price (split by usage.cache_creation into 5-minute
 * and 1-hour writes when present), cache_read_input_tokens at the cache-read
 * price, output_tokens at the output price. When input + cache tokens exceed
 * the model's long-context threshold, its long-context prices apply to all.
 * Streams: message_start carries message.usage (input and cache fields),
 * message_delta the cumulative usage (output_tokens, and on newer API
 * versions updated input figures); each field keeps its largest value. Usage
 * counts as seen once a message_delta arrived with the input known; before
 * that (a stream cut mid-way) the reservation is charged.
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "meter/meter_int.h"

/* Nesting searched for cache_control; deeper bodies are assumed to cache. */
#define CACHE_SCAN_DEPTH 64

struct ant_state {
    const struct meter__model *model; /* borrowed from the pricing */
    bool has_input;                   /* input_tokens was read */
    bool final;                       /* the final output count was read */
    int64_t input;                    /* uncached input tokens */
    int64_t cache_5m;                 /* tokens written to the 5-minute cache */
    int64_t cache_1h;                 /* tokens written to the 1-hour cache */
    int64_t cache_read;               /* tokens read from the cache */
    int64_t output;                   /* output tokens */
};

static void keep_max(int64_t *dst, int64_t v)
{
    if (v > *dst)
        *dst = v;
}

/* Merges a usage object into st (fields are cumulative: keep the largest).
 * Returns whether output_tokens was present. */
static bool usage_merge(json_t *u, struct ant_state *st)
{
    int64_t v = 0, total = -1, h1 = 0, m5 = 0;
    bool out = false;

    if (!json_is_object(u))
        return false;
    if (meter__json_uint(u, "input_tokens", &v)) {
        keep_max(&st->input, v);
        st->has_input = true;
    }
    if (meter__json_uint(u, "output_tokens", &v)) {
        keep_max(&st->output, v);
        out = true;
    }
    if (meter__json_uint(u, "cache_read_input_tokens", &v))
        keep_max(&st->cache_read, v);
    if (meter__json_uint(u, "cache_creation_input_tokens", &v))
        total = v;
    json_t *cc = json_object_get(u, "cache_creation");
    if (json_is_object(cc)) {
        meter__json_uint(cc, "ephemeral_1h_input_tokens", &h1);
        meter__json_uint(cc, "ephemeral_5m_input_tokens", &m5);
    }
    /* Writes not attributed to the 1-hour cache are 5-minute writes. */
    if (total >= 0 && total - h1 > m5)
        m5 = total - h1;
    keep_max(&st->cache_1h, h1);
    keep_max(&st->cache_5m, m5);
    return out;
}

static int64_t usage_cost(const struct ant_state *st)
{
    int64_t in_all = meter__add_sat(meter__add_sat(st->input, st->cache_5m),
                                    meter__add_sat(st->cache_1h, st->cache_read));
    const struct meter__prices *pr = meter__prices_for(st->model, in_all);
    int64_t c = meter__token_cost(st->input, pr->input);
    c = meter__add_sat(c, meter__token_cost(st->cache_5m, pr->cache_write));
    c = meter__add_sat(c, meter__token_cost(st->cache_1h, pr->cache_write_1h));
    c = meter__add_sat(c, meter__token_cost(st->cache_read, pr->cache_read));
    return meter__add_sat(c, meter__token_cost(st->output, pr->output));
}

static void ant_event(struct kb_meter *m, const char *event, const char *data, size_t len)
{
    struct ant_state *st = m->state;
    json_t *root, *type;

    /* Skip the many content deltas without parsing them. */
    if (event[0] ? strcmp(event, "message_start") != 0 && strcmp(event, "message_delta") != 0
                 : !memmem(data, len, "\"message_", 9))
        return;
    root = json_loadb(data, len, 0, NULL);
    type = json_object_get(root, "type");
    if (json_is_string(type) && strcmp(json_string_value(type), "message_start") == 0)
        usage_merge(json_object_get(json_object_get(root, "message"), "usage"), st);
    else if (json_is_string(type) && strcmp(json_string_value(type), "message_delta") == 0 &&
             usage_merge(json_object_get(root, "usage"), st))
        st->final = true;
    json_decref(root);
}

static int64_t ant_settle(struct kb_meter *m, bool complete)
{
    struct ant_state *st = m->state;

    (void)complete; /* usage seen is the real figure; unseen is the reservation */
    if (!m->sse && !m->body_over && m->body.data) {
        json_t *root = json_loadb(m->body.data, m->body.len, 0, NULL);
        if (usage_merge(json_object_get(root, "usage"), st))
            st->final = true;
        json_decref(root);
    }
    return st->final && st->has_input ? usage_cost(st) : m->reserve;
}

static const struct meter__ops ant_ops = {ant_event, ant_settle, free};

/* Finds cache_control markers anywhere in v. */
static void cache_scan(json_t *v, int depth, bool *any, bool *hour)
{
    const char *k;
    json_t *x;
    size_t i;

    if (depth > CACHE_SCAN_DEPTH) {
        *any = *hour = true;
        return;
    }
    if (json_is_object(v)) {
        json_object_foreach(v, k, x)
        {
            if (strcmp(k, "cache_control") == 0 && !json_is_null(x)) {
                json_t *ttl = json_object_get(x, "ttl");
                *any = true;
                if (ttl && !(json_is_string(ttl) && strcmp(json_string_value(ttl), "5m") == 0))
                    *hour = true;
            }
            cache_scan(x, depth + 1, any, hour);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) cache_scan(x, depth + 1, any, hour);
    }
}

enum kb_err meter__anthropic_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                   bool *metered, char **errmsg)
{
    enum kb_err err = KB_OK;
    json_t *root = NULL;
    const struct meter__model *mod;
    int64_t out_tokens = 0, in_tokens;
    bool present = false, any = false, hour = false;

    if (strcmp(req->method, "POST") != 0 ||
        !meter__seg_is(req->path, req->path_len, "/v1/messages"))
        goto out;
    *metered = true;
    if ((err = meter__model_for(req, &m->p->anthropic, &root, &mod, errmsg)) != KB_OK)
        goto out;
    if ((err = meter__json_opt_uint(root, "max_tokens", &out_tokens, &present, errmsg)) != KB_OK)
        goto out;
    if (!present)
        out_tokens = mod->max_output;
    m->req_stream = json_is_true(json_object_get(root, "stream"));

    in_tokens = meter__add_sat((int64_t)req->body_len, METER__INPUT_SLACK_TOKENS);
    const struct meter__prices *pr = meter__prices_for(mod, in_tokens);
    int64_t in_price = pr->input;
    cache_scan(root, 0, &any, &hour);
    if (any && pr->cache_write > in_price)
        in_price = pr->cache_write;
    if (hour && pr->cache_write_1h > in_price)
        in_price = pr->cache_write_1h;
    m->reserve = meter__add_sat(meter__token_cost(in_tokens, in_price),
                                meter__token_cost(out_tokens, pr->output));

    struct ant_state *st = kb_calloc(1, sizeof *st);
    st->model = mod;
    m->state = st;
    m->ops = &ant_ops;
    m->body_cap = METER__MAX_JSON_BODY;
out:
    json_decref(root);
    return err;
}
