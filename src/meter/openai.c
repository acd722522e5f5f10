/*
 * openai.c - the OpenAI meter: every POST the API knows has a cost class
 * in one table (routes[] below): metered by tokens, free, or left to the
 * operator (unclaimed: meter.c refuses it with endpoint_not_metered unless
 * a fixed cost matches). docs/metering.md lists the classes and why.
 *
 * Token endpoints: /v1/chat/completions, /v1/responses, /v1/completions,
 * /v1/embeddings. Reserve, before forwarding: input bound x the dearest
 * input price + output bound x the dearest output price, at the dearest
 * service tier the request can be billed at, plus the tool fees the
 * request can incur. The input bound is the body's byte length plus
 * METER__INPUT_SLACK_TOKENS (a token is never shorter than one byte of the
 * text it came from, base64 audio and images included); when the input
 * includes what the body does not hold (previous_response_id, a
 * conversation, a stored prompt, file ids, image or file URLs) it is the
 * model's context window instead, and with server-side tools (web_search,
 * file_search, mcp), which feed results back to the model up to
 * max_tool_calls times, it is the context window x (max_tool_calls + 1).
 * Output bound: max_tokens / max_completion_tokens / max_output_tokens,
 * else the model's maximum, times `n` (and `best_of`).
 *
 * Settle from the response's usage: text and audio tokens, cached tokens
 * at the cached price, at the tier the answer's service_tier names (an
 * answer that names none is billed at the dearest the request allowed),
 * plus the web and file search calls the answer's output lists. A
 * streamed chat or completion only carries usage when the request sets
 * stream_options.include_usage, so the meter adds it to the forwarded body
 * (text-level insertion: every other byte is kept) and reads the final
 * chunk; a streamed response carries it in response.completed (or
 * .incomplete/.failed). When usage was never seen, the reservation is
 * charged. The readers need only numbers, short strings and objects, so
 * they work on the size-capped skeleton of a large answer too.
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "meter/meter_int.h"

enum kind {
    KIND_CHAT = 0,    /* /v1/chat/completions */
    KIND_RESPONSES,   /* /v1/responses */
    KIND_COMPLETIONS, /* /v1/completions (legacy) */
    KIND_EMBEDDINGS,  /* /v1/embeddings */
    KIND_IMAGES,      /* /v1/images/generations (openai_media.c) */
    KIND_SPEECH,      /* /v1/audio/speech (openai_media.c) */
    KIND_VIDEOS,      /* /v1/videos (openai_media.c) */
    KIND_FREE,        /* no cost: definitions, uploads, cancellations, counts */
    KIND_UNCLAIMED,   /* listed only so that a "*" row below cannot take it */
};

/* Every POST of the API reference (read 2026-12-03) that the meter claims.
 * Anything else is unclaimed and refused unless an operator prices it:
 * batches (the input is a file), fine-tuning jobs, Assistants runs,
 * realtime sessions and client secrets (a credential that spends outside
 * the proxy), image edits and variations (multipart images the meter does
 * not read), transcriptions and translations (billed per minute of audio
 * the request does not state), video remixes, containers, vector store files
 * (storage billed by the day), eval runs, grader runs. */
static const struct meter__route routes[] = {
    {"POST", "/v1/chat/completions", KIND_CHAT},
    {"POST", "/v1/chat/completions/*", KIND_FREE}, /* update stored metadata */
    {"POST", "/v1/responses", KIND_RESPONSES},
    {"POST", "/v1/responses/input_tokens", KIND_FREE}, /* token count */
    {"POST", "/v1/responses/*/cancel", KIND_FREE},
    {"POST", "/v1/completions", KIND_COMPLETIONS},
    {"POST", "/v1/embeddings", KIND_EMBEDDINGS},
    {"POST", "/v1/images/generations", KIND_IMAGES},
    {"POST", "/v1/audio/speech", KIND_SPEECH},
    {"POST", "/v1/videos", KIND_VIDEOS},
    {"POST", "/v1/moderations", KIND_FREE},
    {"POST", "/v1/files", KIND_FREE},
    {"POST", "/v1/uploads", KIND_FREE},
    {"POST", "/v1/uploads/*/parts", KIND_FREE},
    {"POST", "/v1/uploads/*/complete", KIND_FREE},
    {"POST", "/v1/uploads/*/cancel", KIND_FREE},
    {"POST", "/v1/conversations", KIND_FREE},
    {"POST", "/v1/conversations/*", KIND_FREE},
    {"POST", "/v1/conversations/*/items", KIND_FREE},
    {"POST", "/v1/vector_stores/*", KIND_FREE},         /* rename, expiry */
    {"POST", "/v1/vector_stores/*/files/*", KIND_FREE}, /* attributes */
    {"POST", "/v1/vector_stores/*/file_batches/*/cancel", KIND_FREE},
    {"POST", "/v1/containers/*/files", KIND_FREE},
    {"POST", "/v1/batches/*/cancel", KIND_FREE},
    {"POST", "/v1/fine_tuning/jobs/*/cancel", KIND_FREE},
    {"POST", "/v1/fine_tuning/jobs/*/pause", KIND_FREE},
    {"POST", "/v1/fine_tuning/checkpoints/*/permissions", KIND_FREE},
    {"POST", "/v1/assistants", KIND_FREE},
    {"POST", "/v1/assistants/*", KIND_FREE},
    {"POST", "/v1/threads", KIND_FREE},
    {"POST", "/v1/threads/runs", KIND_UNCLAIMED}, /* create thread and run: tokens */
    {"POST", "/v1/threads/*", KIND_FREE},
    {"POST", "/v1/threads/*/messages", KIND_FREE},
    {"POST", "/v1/threads/*/messages/*", KIND_FREE},
    {"POST", "/v1/threads/*/runs/*", KIND_FREE}, /* metadata */
    {"POST", "/v1/threads/*/runs/*/cancel", KIND_FREE},
    {"POST", "/v1/evals", KIND_FREE},
    {"POST", "/v1/evals/*", KIND_FREE},
    {"POST", "/v1/evals/*/runs/*", KIND_FREE}, /* cancel */
};

/* What one answer reported. */
struct oai_usage {
    bool seen;         /* the token fields below are valid */
    int64_t input;     /* prompt tokens, cached and audio ones included */
    int64_t cached;    /* prompt tokens served from cache */
    int64_t audio_in;  /* prompt tokens that are audio */
    int64_t output;    /* completion tokens, reasoning and audio included */
    int64_t audio_out; /* completion tokens that are audio */
    int64_t searches;  /* web_search calls in the output */
    int64_t files;     /* file_search calls in the output */
    char tier[16];     /* service_tier the answer reports; "" if none */
};

struct oai_state {
    enum kind kind;                   /* which endpoint */
    const struct meter__model *model; /* borrowed from the pricing */
    const struct meter__llm_cfg *cfg; /* borrowed: tool fees */
    bool allow_priority;              /* the request may be billed at priority */
    struct oai_usage u;               /* what the answer said */
    int64_t stream_searches;          /* web_search calls seen as stream events */
};

/* ---- usage ---- */

static void keep(int64_t *dst, json_t *obj, const char *key)
{
    int64_t v;
    if (meter__json_uint(obj, key, &v))
        *dst = v;
}

/* Counts web_search and file_search calls among output items. */
static void calls_count(json_t *output, struct oai_usage *u)
{
    size_t i;
    json_t *it;
    int64_t s = 0, f = 0;

    if (!json_is_array(output))
        return;
    json_array_foreach(output, i, it)
    {
        const char *t = json_string_value(json_object_get(it, "type"));
        if (t && strcmp(t, "web_search_call") == 0)
            s++;
        else if (t && strcmp(t, "file_search_call") == 0)
            f++;
    }
    if (s > u->searches)
        u->searches = s;
    if (f > u->files)
        u->files = f;
}

static void tier_read(json_t *obj, struct oai_usage *u)
{
    const char *t = json_string_value(json_object_get(obj, "service_tier"));
    if (t && strlen(t) < sizeof u->tier) {
        memcpy(u->tier, t, strlen(t) + 1);
    }
}

/* Reads the answer object `obj` (a chat completion or chunk, a response, a
 * completion, an embedding list): usage, service_tier, tool calls. */
static bool answer_read(enum kind kind, json_t *obj, struct oai_usage *u)
{
    bool responses = kind == KIND_RESPONSES;
    json_t *us = json_object_get(obj, "usage");
    int64_t in = 0, out = 0;

    tier_read(obj, u);
    if (responses)
        calls_count(json_object_get(obj, "output"), u);
    if (!json_is_object(us))
        return false;
    if (!meter__json_uint(us, responses ? "input_tokens" : "prompt_tokens", &in))
        return false;
    if (kind != KIND_EMBEDDINGS &&
        !meter__json_uint(us, responses ? "output_tokens" : "completion_tokens", &out))
        return false;
    u->input = in;
    u->output = out;
    u->cached = u->audio_in = u->audio_out = 0;
    json_t *d = json_object_get(us, responses ? "input_tokens_details" : "prompt_tokens_details");
    keep(&u->cached, d, "cached_tokens");
    keep(&u->audio_in, d, "audio_tokens");
    d = json_object_get(us, responses ? "output_tokens_details" : "completion_tokens_details");
    keep(&u->audio_out, d, "audio_tokens");
    /* Parts of a whole: never trust them to exceed it. */
    if (u->audio_in > in)
        u->audio_in = in;
    if (u->cached > in)
        u->cached = in;
    if (u->audio_out > out)
        u->audio_out = out;
    u->seen = true;
    return true;
}

/* Tokens of one answer at one price set. Cached tokens are counted as
 * text first (audio caching is billed at audio_cached). */
static int64_t tokens_cost(const struct oai_usage *u, const struct meter__prices *pr)
{
    int64_t text_in = u->input - u->audio_in;
    int64_t cached_text = u->cached < text_in ? u->cached : text_in;
    int64_t cached_audio = u->cached - cached_text;
    if (cached_audio > u->audio_in)
        cached_audio = u->audio_in;
    int64_t c = meter__token_cost(text_in - cached_text, pr->input);
    c = meter__add_sat(c, meter__token_cost(cached_text, pr->cached_input));
    c = meter__add_sat(c, meter__token_cost(u->audio_in - cached_audio, pr->audio_input));
    c = meter__add_sat(c, meter__token_cost(cached_audio, pr->audio_cached));
    c = meter__add_sat(c, meter__token_cost(u->output - u->audio_out, pr->output));
    return meter__add_sat(c, meter__token_cost(u->audio_out, pr->audio_output));
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* Token costs of a project with data residency carry its uplift. */
static int64_t residency(const struct oai_state *st, int64_t c)
{
    return st->cfg->residency_multiplier
               ? meter__mul_div_ceil(c, st->cfg->residency_multiplier, 1000000)
               : c;
}

static int64_t search_fee(const struct oai_state *st)
{
    return st->model->web_search_per_call >= 0 ? st->model->web_search_per_call
                                               : st->cfg->web_search_per_call;
}

/* What the answer costs: tokens at the tier it names (priority is never
 * offered beyond the long-context threshold, so a long input costs the
 * dearer of the two; an unnamed tier costs the dearest allowed), plus the
 * tool calls. */
static int64_t usage_cost(const struct oai_state *st)
{
    const struct meter__model *mod = st->model;
    const struct oai_usage *u = &st->u;
    const struct meter__prices *normal = meter__prices_for(mod, u->input);
    bool longin = normal != &mod->base;
    int64_t c;

    if (strcmp(u->tier, "flex") == 0 && mod->has_flex && !longin)
        c = tokens_cost(u, &mod->flex);
    else if (strcmp(u->tier, "priority") == 0 && mod->has_priority)
        c = max64(tokens_cost(u, &mod->priority), tokens_cost(u, normal));
    else if (u->tier[0] && strcmp(u->tier, "priority") != 0)
        c = tokens_cost(u, normal); /* default, scale, or flex without a flex price */
    else if (st->allow_priority && mod->has_priority)
        c = max64(tokens_cost(u, &mod->priority), tokens_cost(u, normal));
    else
        c = tokens_cost(u, normal);
    c = residency(st, c);
    int64_t searches = max64(u->searches, st->stream_searches);
    c = meter__add_sat(c, meter__mul_sat(searches, search_fee(st)));
    return meter__add_sat(c, meter__mul_sat(u->files, st->cfg->file_search_per_call));
}

/* What answer_read reads of an answer (the rest is checked, not built). */
static const struct meter__jkeep keep_type[] = {{"type", NULL}, {NULL, NULL}};
static const struct meter__jkeep keep_answer[] = {
    {"usage", NULL}, {"service_tier", NULL}, {"output", keep_type}, {NULL, NULL}};
/* A response stream's terminal event: its type and the response. */
static const struct meter__jkeep keep_terminal[] = {
    {"type", NULL}, {"response", keep_answer}, {NULL, NULL}};
static const struct meter__jkeep keep_tier[] = {{"service_tier", NULL}, {NULL, NULL}};

/* True when data has a member "usage" whose value is an object (the final
 * chunk), so that the null-usage chunks before it are not parsed. */
static bool has_usage_object(const char *data, size_t len)
{
    const char *p = data, *end = data + len, *from = data;

    /* Every chunk is searched: memmem's set-up costs more than the search
     * on a short chunk, so look for the name's rare 'g' with memchr. A
     * match starts at or after `from`, where memmem would search on. */
    while ((p = memchr(p, 'g', (size_t)(end - p))) != NULL) {
        if (p - from < 4 || end - p < 3 || memcmp(p - 4, "\"usa", 4) != 0 ||
            memcmp(p + 1, "e\"", 2) != 0) {
            p++;
            continue;
        }
        p += 3; /* past "usage" */
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (p < end && *p == ':') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
                p++;
            if (p < end && *p == '{')
                return true;
        }
        from = p;
    }
    return false;
}

static bool is_terminal(const char *type)
{
    return strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0 ||
           strcmp(type, "response.failed") == 0;
}

static void oai_event(struct kb_meter *m, const char *event, const char *data, size_t len)
{
    struct oai_state *st = m->state;
    json_t *root = NULL;

    if (st->kind == KIND_RESPONSES) {
        /* A web search starts: billed even if the stream is cut later. */
        if (memmem(data, len, "response.web_search_call.in_progress", 36)) {
            root = meter__json_loadb(data, len, METER_JSON_KEPT_ONCE, keep_type, NULL);
            const char *t = json_string_value(json_object_get(root, "type"));
            if (t && strcmp(t, "response.web_search_call.in_progress") == 0)
                st->stream_searches++;
            json_decref(root);
            return;
        }
        /* Only the terminal event carries usage; skip parsing the deltas. */
        if (event[0] ? !is_terminal(event) : !memmem(data, len, "\"response.", 10))
            return;
        root = meter__json_loadb(data, len, METER_JSON_KEPT_ONCE, keep_terminal, NULL);
        json_t *type = json_object_get(root, "type");
        if (json_is_string(type) && is_terminal(json_string_value(type)))
            answer_read(st->kind, json_object_get(root, "response"), &st->u);
    } else {
        /* Every chunk names the service tier; the last one the usage. */
        if (!has_usage_object(data, len)) { /* also skips "[DONE]" */
            if (!st->u.tier[0] && memmem(data, len, "\"service_tier\"", 14)) {
                root = meter__json_loadb(data, len, METER_JSON_KEPT_ONCE, keep_tier, NULL);
                tier_read(root, &st->u);
                json_decref(root);
            }
            return;
        }
        root = meter__json_loadb(data, len, METER_JSON_KEPT_ONCE, keep_answer, NULL);
        answer_read(st->kind, root, &st->u);
    }
    json_decref(root);
}

static int64_t oai_settle(struct kb_meter *m, bool complete)
{
    struct oai_state *st = m->state;

    (void)complete; /* usage seen is the real figure; unseen is the reservation */
    if (!st->u.seen && !m->sse && !m->body_over && m->body.data) {
        json_t *root =
            meter__json_loadb(m->body.data, m->body.len, METER_JSON_KEPT_ONCE, keep_answer, NULL);
        answer_read(st->kind, root, &st->u);
        json_decref(root);
    }
    /* A tier the pricing has no price for is an unknown cost. */
    if (!st->u.seen || (strcmp(st->u.tier, "priority") == 0 && !st->model->has_priority))
        return m->reserve;
    return usage_cost(st);
}

static const struct meter__ops oai_ops = {oai_event, oai_settle, free};

/* ---- stream_options.include_usage, added in the text ---- */

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* s[i] is '"': returns the index just past the closing quote. */
static size_t skip_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n && s[i] != '"'; i++)
        if (s[i] == '\\')
            i++;
    return i < n ? i + 1 : n;
}

/* Returns the index just past the JSON value starting at s[i]. The text has
 * already been validated by jansson, so this only has to find its end. */
static size_t skip_value(const char *s, size_t n, size_t i)
{
    if (i < n && s[i] == '"')
        return skip_string(s, n, i);
    if (i < n && (s[i] == '{' || s[i] == '[')) {
        size_t depth = 0;
        for (; i < n; i++) {
            if (s[i] == '"') {
                i = skip_string(s, n, i) - 1;
            } else if (s[i] == '{' || s[i] == '[') {
                depth++;
            } else if ((s[i] == '}' || s[i] == ']') && --depth == 0) {
                return i + 1;
            }
        }
        return n;
    }
    while (i < n && !memchr(",}] \t\r\n", s[i], 8))
        i++;
    return i;
}

/* Whether the quoted JSON string q (qlen bytes, quotes included) is key. */
static bool key_equals(const char *q, size_t qlen, const char *key)
{
    if (!memchr(q, '\\', qlen))
        return qlen - 2 == strlen(key) && memcmp(q + 1, key, qlen - 2) == 0;
    /* Escaped ("stream\u005foptions"): let jansson decode it. */
    json_t *v = json_loadb(q, qlen, JSON_DECODE_ANY, NULL);
    bool eq = json_is_string(v) && strcmp(json_string_value(v), key) == 0;
    json_decref(v);
    return eq;
}

/* Finds member key of the object whose '{' is s[obj]: [*vb, *ve) is its
 * value. */
static bool member_span(const char *s, size_t n, size_t obj, const char *key, size_t *vb,
                        size_t *ve)
{
    size_t i = skip_ws(s, n, obj + 1);

    while (i < n && s[i] == '"') {
        size_t ke = skip_string(s, n, i);
        bool match = key_equals(s + i, ke - i, key);
        i = skip_ws(s, n, skip_ws(s, n, ke) + 1); /* past ':' */
        size_t e = skip_value(s, n, i);
        if (match) {
            *vb = i;
            *ve = e;
            return true;
        }
        i = skip_ws(s, n, e);
        if (i < n && s[i] == ',')
            i = skip_ws(s, n, i + 1);
    }
    return false;
}

/* body with [b, e) replaced by `text`. */
static char *splice(const char *body, size_t len, size_t b, size_t e, const char *text,
                    size_t *out_len)
{
    struct kb_buf out = KB_BUF_INIT;
    buf_append(&out, body, b);
    buf_puts(&out, text);
    buf_append(&out, body + e, len - e);
    return buf_take(&out, out_len);
}

/* Sets stream_options.include_usage = true, keeping every other byte. *out
 * stays NULL when the body already asks for usage. */
static void inject_include_usage(const char *body, size_t len, json_t *root, char **out,
                                 size_t *out_len)
{
    json_t *so = json_object_get(root, "stream_options");
    size_t obj = skip_ws(body, len, 0), vb, ve, ib, ie;

    if (!so) {
        const char *add = json_object_size(root) ? "\"stream_options\":{\"include_usage\":true},"
                                                 : "\"stream_options\":{\"include_usage\":true}";
        *out = splice(body, len, obj + 1, obj + 1, add, out_len);
        return;
    }
    if (!member_span(body, len, obj, "stream_options", &vb, &ve))
        return; /* cannot happen: jansson found it */
    if (!json_is_object(so)) {
        /* null (or junk the vendor would refuse anyway): replace it. */
        *out = splice(body, len, vb, ve, "{\"include_usage\":true}", out_len);
        return;
    }
    if (json_is_true(json_object_get(so, "include_usage")))
        return;
    if (member_span(body, len, vb, "include_usage", &ib, &ie))
        *out = splice(body, len, ib, ie, "true", out_len);
    else
        *out = splice(body, len, vb + 1, vb + 1,
                      json_object_size(so) ? "\"include_usage\":true," : "\"include_usage\":true",
                      out_len);
}

/* ---- begin ---- */

/* Nesting searched for inputs the body does not hold; deeper is assumed to
 * hold one. */
#define SCAN_DEPTH 64

static bool is_inline(json_t *v)
{
    const char *s = json_string_value(v);
    return s && strncmp(s, "data:", 5) == 0;
}

/* Whether member k (value x, not null) refers to input held elsewhere.
 * Every member of a request is asked: a first-letter test spares most
 * strcmp calls. */
static bool external_key(const char *k, json_t *x)
{
    /* file_data: an inline file (a PDF is billed per page, as an image
     * plus its text: its bytes bound nothing) */
    static const char *const names[] = {
        "file_id",      "file_url",         "file_data", "previous_response_id",
        "conversation", "vector_store_ids", "server_url"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (k[0] == names[i][0] && strcmp(k, names[i]) == 0)
            return true;
    if (k[0] == 'a') /* an earlier audio answer referred to by id */
        return strcmp(k, "audio") == 0 && json_is_object(x) && json_object_get(x, "id");
    return k[0] == 'i' && strcmp(k, "image_url") == 0 &&
           !(is_inline(x) || (json_is_object(x) && is_inline(json_object_get(x, "url"))));
}

/* True when v refers to input the body does not carry: a file id, a file
 * or image URL, a stored response, item, audio answer, conversation or
 * prompt. Their tokens are bounded by the context window, not by the
 * body's bytes. */
static bool external_input(json_t *v, int depth)
{
    const char *k;
    json_t *x;
    size_t i;

    if (depth > SCAN_DEPTH)
        return true;
    if (json_is_object(v)) {
        /* An item_reference stands for a stored item's tokens. */
        const char *t = json_string_value(json_object_get(v, "type"));
        if (t && strcmp(t, "item_reference") == 0)
            return true;
        json_object_foreach(v, k, x)
        {
            if (json_is_null(x))
                continue;
            if (external_key(k, x))
                return true;
            if (external_input(x, depth + 1))
                return true;
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) if (external_input(x, depth + 1)) return true;
    }
    return false;
}

/* Tool types the client runs itself: their results come back in a later
 * request, whose body bounds them. */
static bool client_tool(const char *t)
{
    static const char *const client[] = {"function",     "custom",      "computer_use_preview",
                                         "computer_use", "local_shell", "shell",
                                         "apply_patch",  NULL};
    for (size_t i = 0; client[i]; i++)
        if (strcmp(t, client[i]) == 0)
            return true;
    return false;
}

/* Reads "tools": *server true when a tool runs at the vendor and feeds
 * results back to the model; *fee the dearest fee per such call.
 * Refuses tools whose cost the meter cannot bound (KB_E_INVALID). */
static enum kb_err tools_scan(json_t *root, const struct oai_state *st, bool *server, int64_t *fee,
                              char **errmsg)
{
    json_t *tools = json_object_get(root, "tools"), *t;
    size_t i;

    *server = false;
    *fee = 0;
    if (!tools || json_is_null(tools))
        return KB_OK;
    if (!json_is_array(tools)) {
        kb_set_errmsg(errmsg, "\"tools\" must be an array");
        return KB_E_INVALID;
    }
    json_array_foreach(tools, i, t)
    {
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!type) {
            kb_set_errmsg(errmsg, "tools[%zu] has no \"type\"", i);
            return KB_E_INVALID;
        }
        if (client_tool(type))
            continue;
        if (strncmp(type, "web_search", 10) == 0) {
            *fee = max64(*fee, search_fee(st));
        } else if (strcmp(type, "file_search") == 0) {
            *fee = max64(*fee, st->cfg->file_search_per_call);
        } else if (strcmp(type, "mcp") != 0) {
            /* code_interpreter (containers), image_generation (image
             * tokens) and tools this meter does not know. */
            kb_set_errmsg(errmsg,
                          "tool \"%.40s\" has a cost this meter cannot bound; remove it or use a "
                          "fixed-cost route",
                          type);
            return KB_E_INVALID;
        }
        *server = true;
    }
    return KB_OK;
}

/* The most output tokens one model call can produce: the request's cap
 * (the largest of the cap fields it sets, else the model's), times the
 * choices. *capped says the request set a cap. */
static enum kb_err output_bound(enum kind kind, json_t *root, const struct meter__model *mod,
                                int64_t *out, bool *capped, char **errmsg)
{
    static const char *const caps_chat[] = {"max_tokens", "max_completion_tokens", NULL};
    static const char *const caps_resp[] = {"max_output_tokens", NULL};
    static const char *const caps_compl[] = {"max_tokens", NULL};
    const char *const *caps = kind == KIND_CHAT        ? caps_chat
                              : kind == KIND_RESPONSES ? caps_resp
                                                       : caps_compl;
    enum kb_err err;
    int64_t cap = -1, v = 0, choices = 1;
    bool present;

    *capped = false;
    if (kind == KIND_EMBEDDINGS) {
        *out = 0;
        return KB_OK;
    }
    for (size_t i = 0; caps[i]; i++) {
        if ((err = meter__json_opt_uint(root, caps[i], &v, &present, errmsg)) != KB_OK)
            return err;
        if (present && v > cap)
            cap = v;
    }
    *capped = cap >= 0;
    if (cap < 0)
        cap = mod->max_output;
    /* n choices are each up to the cap; best_of generates (and bills)
     * best_of of them server-side. */
    if (kind != KIND_RESPONSES) {
        if ((err = meter__json_opt_uint(root, "n", &v, &present, errmsg)) != KB_OK)
            return err;
        if (present && v > choices)
            choices = v;
        if (kind == KIND_COMPLETIONS) {
            if ((err = meter__json_opt_uint(root, "best_of", &v, &present, errmsg)) != KB_OK)
                return err;
            if (present && v > choices)
                choices = v;
        }
    }
    *out = meter__mul_sat(cap, choices);
    return KB_OK;
}

/* Which tiers the request can be billed at. Refuses an explicit priority
 * for a model without a priority price. */
static enum kb_err tier_of(json_t *root, const struct meter__model *mod, bool *allow_priority,
                           char **errmsg)
{
    json_t *t = json_object_get(root, "service_tier");

    /* auto and default run at whatever the project is set to, which may
     * be priority; flex may be refused capacity and served otherwise. */
    *allow_priority = mod->has_priority;
    if (!t || json_is_null(t))
        return KB_OK;
    if (!json_is_string(t)) {
        kb_set_errmsg(errmsg, "\"service_tier\" must be a string");
        return KB_E_INVALID;
    }
    if (strcmp(json_string_value(t), "priority") == 0 && !mod->has_priority) {
        kb_set_errmsg(errmsg, "model \"%.100s\" has no configured priority price", mod->name);
        return KB_E_MODEL_NOT_PRICED;
    }
    return KB_OK;
}

static int64_t max_in(const struct meter__prices *p)
{
    return max64(max64(p->input, p->cached_input), max64(p->audio_input, p->audio_cached));
}

static int64_t max_out(const struct meter__prices *p)
{
    return max64(p->output, p->audio_output);
}

/* in x the dearest input price + out x the dearest output price, at the
 * dearest tier allowed. */
static int64_t bound_cost(const struct oai_state *st, int64_t in, int64_t out)
{
    const struct meter__prices *pr = meter__prices_for(st->model, in);
    int64_t c =
        meter__add_sat(meter__token_cost(in, max_in(pr)), meter__token_cost(out, max_out(pr)));
    if (st->allow_priority) {
        const struct meter__prices *pp = &st->model->priority;
        c = max64(c, meter__add_sat(meter__token_cost(in, max_in(pp)),
                                    meter__token_cost(out, max_out(pp))));
    }
    return residency(st, c);
}

/* The reservation of a token endpoint (see the file comment). */
static enum kb_err tokens_begin(struct kb_meter *m, const struct kb_meter_req *req, enum kind kind,
                                char **new_body, size_t *new_len, char **errmsg)
{
    enum kb_err err;
    json_t *root = NULL;
    const struct meter__model *mod;
    struct oai_state *st = kb_calloc(1, sizeof *st);
    int64_t out_tokens = 0, in_tokens, fee = 0, calls = 0;
    bool capped, server = false, present = false;
    char *nb = NULL;
    size_t nbl = 0;

    st->kind = kind;
    st->cfg = &m->p->openai_cfg;
    if ((err = meter__model_for(m, req, &m->p->openai, &root, &mod, errmsg)) != KB_OK)
        goto out;
    st->model = mod;
    if ((err = output_bound(kind, root, mod, &out_tokens, &capped, errmsg)) != KB_OK ||
        (err = tier_of(root, mod, &st->allow_priority, errmsg)) != KB_OK ||
        (err = tools_scan(root, st, &server, &fee, errmsg)) != KB_OK)
        goto out;

    in_tokens = meter__add_sat((int64_t)req->body_len, METER__INPUT_SLACK_TOKENS);
    bool external = external_input(root, 0) ||
                    (kind == KIND_RESPONSES && json_is_object(json_object_get(root, "prompt")));
    if (server) {
        /* Each tool result goes back to the model: up to max_tool_calls
         * more model calls, each reading up to a full context. */
        if ((err = meter__json_opt_uint(root, "max_tool_calls", &calls, &present, errmsg)) != KB_OK)
            goto out;
        if (!present || kind != KIND_RESPONSES) {
            kb_set_errmsg(errmsg, "a request with server-side tools must set max_tool_calls so "
                                  "that its cost can be bounded");
            err = KB_E_INVALID;
            goto out;
        }
    }
    if (external || server) {
        if (!mod->context) {
            kb_set_errmsg(errmsg,
                          "model \"%.100s\" has no configured context_tokens to bound input the "
                          "body does not hold",
                          mod->name);
            err = KB_E_MODEL_NOT_PRICED;
            goto out;
        }
        in_tokens = meter__mul_sat(mod->context, calls + 1);
        if (!capped)
            out_tokens = meter__mul_sat(out_tokens, calls + 1);
    }

    /* Predicted output the model rejects is billed as completion tokens
     * beyond the cap: bounded by the prediction's bytes. */
    json_t *pred = json_object_get(root, "prediction");
    if (kind == KIND_CHAT && pred && !json_is_null(pred))
        out_tokens = meter__add_sat(out_tokens, (int64_t)req->body_len);

    m->req_stream = json_is_true(json_object_get(root, "stream"));
    if (m->req_stream && (kind == KIND_CHAT || kind == KIND_COMPLETIONS))
        inject_include_usage(req->body, req->body_len, root, &nb, &nbl);

    m->reserve = meter__add_sat(bound_cost(st, in_tokens, out_tokens), meter__mul_sat(calls, fee));
    m->state = st;
    st = NULL;
    m->ops = &oai_ops;
    m->body_cap = METER__MAX_JSON_BODY;
    *new_body = nb;
    *new_len = nbl;
    nb = NULL;
out:
    free(st);
    free(nb);
    json_decref(root);
    return err;
}

enum kb_err meter__openai_begin(struct kb_meter *m, const struct kb_meter_req *req, bool *metered,
                                char **new_body, size_t *new_len, char **errmsg)
{
    int r = meter__route_find(routes, sizeof routes / sizeof routes[0], req);

    if (r < 0 || routes[r].cls == KIND_UNCLAIMED)
        return KB_OK; /* unclaimed: a fixed cost, a read, or refused */
    *metered = true;
    if (routes[r].cls == KIND_FREE) {
        m->reserve = 0;
        m->on_success = 0;
        return KB_OK;
    }
    if (routes[r].cls == KIND_IMAGES)
        return meter__openai_image_begin(m, req, errmsg);
    if (routes[r].cls == KIND_SPEECH)
        return meter__openai_speech_begin(m, req, errmsg);
    if (routes[r].cls == KIND_VIDEOS)
        return meter__openai_video_begin(m, req, errmsg);
    return tokens_begin(m, req, (enum kind)routes[r].cls, new_body, new_len, errmsg);
}
