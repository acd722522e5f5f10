/*
 * anthropic.c - the Anthropic meter. Every POST the API knows has a cost
 * class in one table (routes[] below): /v1/messages by tokens, message
 * batches by the sum of their requests, counts, cancellations, files and
 * skills free; anything else (the legacy /v1/complete, managed-agent
 * sessions, admin endpoints) is unclaimed and refused unless an operator
 * prices it (meter.c).
 *
 * Messages. Reserve: input bound x the dearest input-side price the
 * request can incur + max_tokens (else the model's maximum) x output
 * price, with the request's multipliers (speed "fast": the model's fast
 * multiplier; inference_geo other than "global": the geo multiplier), plus
 * the server tools' fees. The input bound is the body's byte length plus
 * METER__INPUT_SLACK_TOKENS (the hidden tool-use system prompt; see
 * openai.c for why bytes bound tokens); when the body refers to input it
 * does not hold (a file id, a URL source, an MCP server) it is the model's
 * context window; with server tools (web search, web fetch, code
 * execution, MCP), whose results go back to the model, it is the context
 * window x (server loop iterations + 1). Input tokens are priced at the
 * input price, or, when the body marks a cache_control breakpoint, at the
 * cache-write price (1-hour price for a ttl other than "5m"), because
 * every input token may be written to the cache. Web search is bounded by
 * each tool's max_uses (required: without it a request could search
 * without limit) and costs web_search_per_call each.
 *
 * Settle from usage: input_tokens at the input price, cache_creation_input_
 * tokens at the cache-write price (split by usage.cache_creation into 5-minute
 * and 1-hour writes when present), cache_read_input_tokens at the cache-read
 * price, output_tokens at the output price, usage.server_tool_use's
 * web_search_requests and web_fetch_requests at their fees, and the code
 * execution fee when the request offered that tool. When input + cache
 * tokens exceed the model's long-context threshold, its long-context prices
 * apply to all. Fast mode is charged unless usage.speed says "standard";
 * the geo multiplier applies when usage.inference_geo (else the request's
 * inference_geo, else the workspace default the pricing file states) names
 * a geo other than "global".
 * Streams: message_start carries message.usage (input and cache fields),
 * message_delta the cumulative usage (output_tokens, and on newer API
 * versions updated input figures); each field keeps its largest value. Usage
 * counts as seen once a message_delta arrived with the input known; before
 * that (a stream cut mid-way) the reservation is charged.
 *
 * Batches (POST /v1/messages/batches): the reservation is the sum over
 * requests[i].params of the Messages reservation at batch_percent of the
 * prices; the results arrive later, outside this request, so the batch
 * settles at its reservation.
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "meter/meter_int.h"

/* Nesting searched for cache_control; deeper bodies are assumed to cache. */
#define CACHE_SCAN_DEPTH 64
/* Model calls in one server-tool loop before the API returns pause_turn. */
#define SERVER_LOOP_ITERATIONS 10

enum cls {
    CLS_MESSAGES = 0, /* /v1/messages */
    CLS_BATCH,        /* /v1/messages/batches */
    CLS_FREE,         /* no cost */
};

static const struct meter__route routes[] = {
    {"POST", "/v1/messages", CLS_MESSAGES},
    {"POST", "/v1/messages/count_tokens", CLS_FREE},
    {"POST", "/v1/messages/batches", CLS_BATCH},
    {"POST", "/v1/messages/batches/*/cancel", CLS_FREE},
    {"POST", "/v1/files", CLS_FREE},
    {"POST", "/v1/skills", CLS_FREE},
    {"POST", "/v1/skills/*/versions", CLS_FREE},
};

struct ant_state {
    const struct meter__model *model; /* borrowed from the pricing */
    const struct meter__llm_cfg *cfg; /* borrowed: fees */
    int64_t fast_mult;                /* micro-units when speed "fast" was asked; 0: not */
    bool geo;                         /* the request named a geo other than global */
    bool code_exec;                   /* the request offered code execution */
    bool has_input;                   /* input_tokens was read */
    bool final;                       /* the final output count was read */
    bool errored;                     /* the stream carried an error event */
    bool standard_speed;              /* usage.speed said "standard" */
    int geo_seen;                     /* usage.inference_geo: 0 none, 1 global, 2 other */
    int64_t input;                    /* uncached input tokens */
    int64_t cache_5m;                 /* tokens written to the 5-minute cache */
    int64_t cache_1h;                 /* tokens written to the 1-hour cache */
    int64_t cache_read;               /* tokens read from the cache */
    int64_t output;                   /* output tokens */
    int64_t searches;                 /* server_tool_use.web_search_requests */
    int64_t fetches;                  /* server_tool_use.web_fetch_requests */
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
    json_t *stu = json_object_get(u, "server_tool_use");
    if (meter__json_uint(stu, "web_search_requests", &v))
        keep_max(&st->searches, v);
    if (meter__json_uint(stu, "web_fetch_requests", &v))
        keep_max(&st->fetches, v);
    const char *sp = json_string_value(json_object_get(u, "speed"));
    if (sp)
        st->standard_speed = strcmp(sp, "standard") == 0;
    const char *geo = json_string_value(json_object_get(u, "inference_geo"));
    if (geo)
        st->geo_seen = strcmp(geo, "global") == 0 ? 1 : 2;
    return out;
}

/* The multiplier (micro-units) the answer is billed at. */
static int64_t settle_mult(const struct ant_state *st)
{
    int64_t mult = 1000000;
    if (st->fast_mult && !st->standard_speed)
        mult = st->fast_mult;
    if (st->geo_seen == 2 || (st->geo_seen == 0 && st->geo))
        mult = meter__mul_div_ceil(mult, st->cfg->geo_multiplier, 1000000);
    return mult;
}

static int64_t usage_cost(const struct ant_state *st)
{
    int64_t in_all = meter__add_sat(meter__add_sat(st->input, st->cache_5m),
                                    meter__add_sat(st->cache_1h, st->cache_read));
    struct meter__prices scaled =
        meter__prices_scale(meter__prices_for(st->model, in_all), settle_mult(st));
    const struct meter__prices *pr = &scaled;
    int64_t c = meter__token_cost(st->input, pr->input);
    c = meter__add_sat(c, meter__token_cost(st->cache_5m, pr->cache_write));
    c = meter__add_sat(c, meter__token_cost(st->cache_1h, pr->cache_write_1h));
    c = meter__add_sat(c, meter__token_cost(st->cache_read, pr->cache_read));
    c = meter__add_sat(c, meter__token_cost(st->output, pr->output));
    c = meter__add_sat(c, meter__mul_sat(st->searches, st->cfg->web_search_per_call));
    c = meter__add_sat(c, meter__mul_sat(st->fetches, st->cfg->web_fetch_per_call));
    if (st->code_exec)
        c = meter__add_sat(c, st->cfg->code_execution_per_call);
    return c;
}

/* What the readers below look at (the rest is checked, not built). */
static const struct meter__jkeep keep_usage[] = {{"usage", NULL}, {NULL, NULL}};
static const struct meter__jkeep keep_event[] = {
    {"type", NULL}, {"message", keep_usage}, {"usage", NULL}, {NULL, NULL}};

static void ant_event(struct kb_meter *m, const char *event, const char *data, size_t len)
{
    struct ant_state *st = m->state;
    json_t *root, *type;

    /* An error event ends the stream before what was billed is known
     * (overloaded mid-turn, a server-tool loop cut short): whatever usage
     * was read, the stream settles at its reservation. */
    if (strcmp(event, "error") == 0) {
        st->errored = true;
        return;
    }
    /* Skip the many content deltas without parsing them. */
    if (event[0] ? strcmp(event, "message_start") != 0 && strcmp(event, "message_delta") != 0
                 : !memmem(data, len, "\"message_", 9) && !memmem(data, len, "\"error\"", 7))
        return;
    root = meter__json_loadb(data, len, METER_JSON_KEPT_ONCE, keep_event, NULL);
    type = json_object_get(root, "type");
    if (json_is_string(type) && strcmp(json_string_value(type), "error") == 0)
        st->errored = true;
    else if (json_is_string(type) && strcmp(json_string_value(type), "message_start") == 0)
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
        json_t *root =
            meter__json_loadb(m->body.data, m->body.len, METER_JSON_KEPT_ONCE, keep_usage, NULL);
        if (usage_merge(json_object_get(root, "usage"), st))
            st->final = true;
        json_decref(root);
    }
    return st->final && st->has_input && !st->errored ? usage_cost(st) : m->reserve;
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

/* True when v refers to input the body does not hold: a file id, a
 * document or image fetched from a URL, an encrypted search result, or an
 * inline (base64) document. */
static bool external_input(json_t *v, int depth)
{
    const char *k;
    json_t *x;
    size_t i;

    if (depth > CACHE_SCAN_DEPTH)
        return true;
    if (json_is_object(v)) {
        const char *t = json_string_value(json_object_get(v, "type"));
        /* encrypted_content: a web search result from an earlier turn,
         * which the model reads as the page text, not as these bytes. */
        if (json_object_get(v, "file_id") || json_object_get(v, "encrypted_content") ||
            (t && (strcmp(t, "url") == 0 || strcmp(t, "file") == 0 ||
                   strcmp(t, "container_upload") == 0)))
            return true;
        /* An inline PDF is billed per page, as an image plus its text: a
         * page of a few dozen bytes costs over a thousand tokens, so its
         * bytes bound nothing. */
        const char *mt = json_string_value(json_object_get(v, "media_type"));
        if (t && strcmp(t, "base64") == 0 && !(mt && strncmp(mt, "image/", 6) == 0))
            return true;
        json_object_foreach(v, k, x) if (external_input(x, depth + 1)) return true;
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) if (external_input(x, depth + 1)) return true;
    }
    return false;
}

/* Tool type prefixes the client runs itself (versioned: "bash_20250124"). */
static bool client_tool(const char *t)
{
    static const char *const client[] = {"custom",       "computer_", "bash_",
                                         "text_editor_", "memory_",   NULL};
    for (size_t i = 0; client[i]; i++)
        if (strncmp(t, client[i], strlen(client[i])) == 0)
            return true;
    return false;
}

/* What a Messages request's tools can cost beyond its own tokens. */
struct tool_plan {
    bool server;      /* a tool runs at the vendor and loops back to the model */
    bool code_exec;   /* code execution is offered */
    int64_t searches; /* most web searches (sum of max_uses) */
    int64_t fetches;  /* most web fetches (sum of max_uses, or the loop bound) */
};

static enum kb_err tools_scan(json_t *params, struct tool_plan *tp, char **errmsg)
{
    json_t *tools = json_object_get(params, "tools"), *t, *ms;
    size_t i;
    enum kb_err err;

    memset(tp, 0, sizeof *tp);
    ms = json_object_get(params, "mcp_servers");
    if (ms && !json_is_null(ms) && !(json_is_array(ms) && json_array_size(ms) == 0))
        tp->server = true; /* MCP tool results feed back to the model */
    if (!tools || json_is_null(tools))
        return KB_OK;
    if (!json_is_array(tools)) {
        kb_set_errmsg(errmsg, "\"tools\" must be an array");
        return KB_E_INVALID;
    }
    json_array_foreach(tools, i, t)
    {
        const char *type = json_string_value(json_object_get(t, "type"));
        int64_t uses = 0;
        bool present = false;
        if (!type || client_tool(type))
            continue; /* a custom tool has no type */
        if ((err = meter__json_opt_uint(t, "max_uses", &uses, &present, errmsg)) != KB_OK)
            return err;
        if (strncmp(type, "web_search_", 11) == 0) {
            if (!present) {
                kb_set_errmsg(errmsg, "the web_search tool must set max_uses so that its fees "
                                      "can be bounded");
                return KB_E_INVALID;
            }
            tp->searches = meter__add_sat(tp->searches, uses);
        } else if (strncmp(type, "web_fetch_", 10) == 0) {
            tp->fetches = meter__add_sat(tp->fetches, present ? uses : SERVER_LOOP_ITERATIONS);
        } else if (strncmp(type, "code_execution_", 15) == 0) {
            tp->code_exec = true;
        } else if (strncmp(type, "tool_search_tool_", 17) != 0 &&
                   strcmp(type, "mcp_toolset") != 0) {
            kb_set_errmsg(errmsg,
                          "tool \"%.40s\" has a cost this meter cannot bound; remove it or use a "
                          "fixed-cost route",
                          type);
            return KB_E_INVALID;
        }
        tp->server = true;
    }
    return KB_OK;
}

/* The reservation of one Messages request `params` whose text is `bytes`
 * long, with every price scaled by pct_mult micro-units (batches). Fills
 * st (model, multipliers, code_exec) for settlement. */
static enum kb_err params_reserve(const struct kb_pricing *p, json_t *params, size_t bytes,
                                  int64_t pct_mult, struct ant_state *st, int64_t *reserve,
                                  char **errmsg)
{
    enum kb_err err;
    const struct meter__model *mod;
    int64_t out_tokens = 0, in_tokens, mult = 1000000, loops = 0;
    bool present = false, any = false, hour = false;
    struct tool_plan tp;
    json_t *v;

    if ((err = meter__model_of(params, &p->anthropic, &mod, errmsg)) != KB_OK)
        return err;
    st->model = mod;
    st->cfg = &p->anthropic_cfg;
    if ((err = meter__json_opt_uint(params, "max_tokens", &out_tokens, &present, errmsg)) != KB_OK)
        return err;
    if (!present)
        out_tokens = mod->max_output;
    v = json_object_get(params, "speed");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) {
            kb_set_errmsg(errmsg, "\"speed\" must be a string");
            return KB_E_INVALID;
        }
        if (strcmp(json_string_value(v), "standard") != 0) {
            /* "fast", or a speed this meter does not know: the fast price. */
            if (!mod->fast_multiplier) {
                kb_set_errmsg(errmsg, "model \"%.100s\" has no configured fast-mode price",
                              mod->name);
                return KB_E_MODEL_NOT_PRICED;
            }
            st->fast_mult = mod->fast_multiplier;
            mult = mod->fast_multiplier;
        }
    }
    v = json_object_get(params, "inference_geo");
    if (v && !json_is_null(v) && !json_is_string(v)) {
        kb_set_errmsg(errmsg, "\"inference_geo\" must be a string");
        return KB_E_INVALID;
    }
    /* Without one in the request the workspace's default geo applies,
     * which only the operator knows (default_inference_geo_regional). */
    st->geo = json_is_string(v) ? strcmp(json_string_value(v), "global") != 0
                                : p->anthropic_cfg.default_geo_regional;
    if (st->geo)
        mult = meter__mul_div_ceil(mult, p->anthropic_cfg.geo_multiplier, 1000000);
    if ((err = tools_scan(params, &tp, errmsg)) != KB_OK)
        return err;
    st->code_exec = tp.code_exec;

    in_tokens = meter__add_sat((int64_t)bytes, METER__INPUT_SLACK_TOKENS);
    if (tp.server)
        loops = SERVER_LOOP_ITERATIONS;
    if (tp.server || external_input(json_object_get(params, "messages"), 0) ||
        external_input(json_object_get(params, "system"), 0)) {
        if (!mod->context) {
            kb_set_errmsg(errmsg,
                          "model \"%.100s\" has no configured context_tokens to bound input the "
                          "body does not hold",
                          mod->name);
            return KB_E_MODEL_NOT_PRICED;
        }
        /* Each server tool result is read by one more model call. */
        in_tokens = meter__mul_sat(mod->context, loops + 1);
        out_tokens = meter__mul_sat(out_tokens, loops + 1);
    }

    struct meter__prices pr = meter__prices_scale(meter__prices_for(mod, in_tokens), mult);
    if (pct_mult != 1000000)
        pr = meter__prices_scale(&pr, pct_mult);
    int64_t in_price = pr.input;
    cache_scan(params, 0, &any, &hour);
    if (any && pr.cache_write > in_price)
        in_price = pr.cache_write;
    if (hour && pr.cache_write_1h > in_price)
        in_price = pr.cache_write_1h;
    int64_t r = meter__add_sat(meter__token_cost(in_tokens, in_price),
                               meter__token_cost(out_tokens, pr.output));
    r = meter__add_sat(r, meter__mul_sat(tp.searches, p->anthropic_cfg.web_search_per_call));
    r = meter__add_sat(r, meter__mul_sat(tp.fetches, p->anthropic_cfg.web_fetch_per_call));
    if (tp.code_exec)
        r = meter__add_sat(r, p->anthropic_cfg.code_execution_per_call);
    *reserve = r;
    return KB_OK;
}

/* POST /v1/messages/batches: the sum of the requests' reservations at the
 * batch price. */
static enum kb_err batch_begin(struct kb_meter *m, json_t *root, char **errmsg)
{
    json_t *reqs = json_object_get(root, "requests"), *it;
    int64_t total = 0, pct = meter__mul_sat(m->p->anthropic_cfg.batch_percent, 10000);
    size_t i;

    if (!json_is_array(reqs) || json_array_size(reqs) == 0) {
        kb_set_errmsg(errmsg, "\"requests\" must be a non-empty array");
        return KB_E_INVALID;
    }
    json_array_foreach(reqs, i, it)
    {
        json_t *params = json_object_get(it, "params");
        struct ant_state st = {0};
        int64_t r = 0;
        char *em = NULL;
        if (!json_is_object(params)) {
            kb_set_errmsg(errmsg, "requests[%zu].params must be an object", i);
            return KB_E_INVALID;
        }
        /* The entry's own text: its UTF-8 bytes bound its tokens. */
        char *text = json_dumps(params, JSON_COMPACT);
        size_t bytes = text ? strlen(text) : 0;
        free(text);
        meter__note_model(m, json_string_value(json_object_get(params, "model")));
        enum kb_err err = params_reserve(m->p, params, bytes, pct, &st, &r, &em);
        if (err != KB_OK) {
            kb_set_errmsg(errmsg, "requests[%zu]: %s", i, em ? em : "cannot be priced");
            free(em);
            return err;
        }
        total = meter__add_sat(total, r);
    }
    /* Results are billed later, outside this exchange: the batch costs its
     * reservation once the vendor accepted it. */
    m->reserve = total;
    m->on_success = total;
    return KB_OK;
}

enum kb_err meter__anthropic_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                   bool *metered, char **new_body, size_t *new_len, char **errmsg)
{
    (void)new_body; /* the request goes as sent */
    (void)new_len;
    enum kb_err err;
    json_t *root = NULL;
    struct ant_state *st = NULL;
    int r = meter__route_find(routes, sizeof routes / sizeof routes[0], req);

    if (r < 0)
        return KB_OK; /* unclaimed: a fixed cost, a read, or refused */
    *metered = true;
    if (routes[r].cls == CLS_FREE)
        return KB_OK; /* reserve and on_success stay 0 */
    if ((err = meter__json_body(req, &root, errmsg)) != KB_OK)
        goto out;
    if (routes[r].cls == CLS_BATCH) {
        err = batch_begin(m, root, errmsg);
        goto out;
    }
    st = kb_calloc(1, sizeof *st);
    meter__note_model(m, json_string_value(json_object_get(root, "model")));
    if ((err = params_reserve(m->p, root, req->body_len, 1000000, st, &m->reserve, errmsg)) !=
        KB_OK)
        goto out;
    m->req_stream = json_is_true(json_object_get(root, "stream"));
    m->state = st;
    st = NULL;
    m->ops = &ant_ops;
    m->body_cap = METER__MAX_JSON_BODY;
out:
    free(st);
    json_decref(root);
    return err;
}
