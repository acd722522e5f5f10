/*
 * openai.c - the OpenAI meter: tokens in, tokens out, per model.
 *
 * Metered endpoints (POST): /v1/chat/completions, /v1/responses,
 * /v1/completions, /v1/embeddings. Others fall through to the fixed entries.
 *
 * Reserve, before forwarding: input bound x input price + output cap x
 * output price. The input bound is the request body's byte length plus
 * METER__INPUT_SLACK_TOKENS: a token is never shorter than one byte of the
 * text it came from, and the JSON around the text only adds bytes, so the
 * body cannot hold more tokens than bytes (images, files and
 * previous_response_id are the exceptions docs/metering.md lists). The
 * output cap is max_tokens / max_completion_tokens / max_output_tokens, else
 * the model's configured maximum, times `n` (and `best_of`) choices.
 *
 * Settle, from the response's usage (cached prompt tokens at the cached
 * price): chat and completions read prompt_tokens, completion_tokens and
 * prompt_tokens_details.cached_tokens; responses read input_tokens,
 * output_tokens and input_tokens_details.cached_tokens; embeddings read
 * prompt_tokens. A streamed chat or completion only carries usage when the
 * request sets stream_options.include_usage, so the meter adds it to the
 * forwarded body (text-level insertion: every other byte is kept) and reads
 * the final chunk; a streamed response carries it in response.completed
 * (or .incomplete/.failed). When usage was never seen, the reservation is
 * charged.
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
};

struct oai_state {
    enum kind kind;                   /* which endpoint */
    const struct meter__model *model; /* borrowed from the pricing */
    bool usage_seen;                  /* input/cached/output below are valid */
    int64_t input;                    /* prompt tokens, cached ones included */
    int64_t cached;                   /* prompt tokens served from cache */
    int64_t output;                   /* completion tokens, reasoning included */
};

/* ---- usage ---- */

static bool usage_read(enum kind kind, json_t *u, struct oai_state *st)
{
    int64_t in = 0, out = 0, cached = 0;
    bool responses = kind == KIND_RESPONSES;

    if (!json_is_object(u))
        return false;
    if (!meter__json_uint(u, responses ? "input_tokens" : "prompt_tokens", &in))
        return false;
    if (kind != KIND_EMBEDDINGS &&
        !meter__json_uint(u, responses ? "output_tokens" : "completion_tokens", &out))
        return false;
    json_t *d = json_object_get(u, responses ? "input_tokens_details" : "prompt_tokens_details");
    if (json_is_object(d) && meter__json_uint(d, "cached_tokens", &cached) && cached > in)
        cached = in; /* a subset of the prompt; never trust it to exceed it */
    st->input = in;
    st->cached = cached;
    st->output = out;
    st->usage_seen = true;
    return true;
}

static int64_t usage_cost(const struct oai_state *st)
{
    const struct meter__prices *pr = meter__prices_for(st->model, st->input);
    int64_t c = meter__token_cost(st->input - st->cached, pr->input);
    c = meter__add_sat(c, meter__token_cost(st->cached, pr->cached_input));
    return meter__add_sat(c, meter__token_cost(st->output, pr->output));
}

/* True when data has a member "usage" whose value is an object (the final
 * chunk), so that the null-usage chunks before it are not parsed. */
static bool has_usage_object(const char *data, size_t len)
{
    const char *p = data, *end = data + len;

    while ((p = memmem(p, (size_t)(end - p), "\"usage\"", 7)) != NULL) {
        p += 7;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (p < end && *p == ':') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
                p++;
            if (p < end && *p == '{')
                return true;
        }
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
    json_t *root = NULL, *u = NULL;

    if (st->kind == KIND_RESPONSES) {
        /* Only the terminal event carries usage; skip parsing the deltas. */
        if (event[0] ? !is_terminal(event) : !memmem(data, len, "\"response.", 10))
            return;
        root = json_loadb(data, len, 0, NULL);
        json_t *type = json_object_get(root, "type");
        if (json_is_string(type) && is_terminal(json_string_value(type)))
            u = json_object_get(json_object_get(root, "response"), "usage");
    } else {
        if (!has_usage_object(data, len)) /* also skips "[DONE]" */
            return;
        root = json_loadb(data, len, 0, NULL);
        u = json_object_get(root, "usage");
    }
    usage_read(st->kind, u, st);
    json_decref(root);
}

static int64_t oai_settle(struct kb_meter *m, bool complete)
{
    struct oai_state *st = m->state;

    (void)complete; /* usage seen is the real figure; unseen is the reservation */
    if (!st->usage_seen && !m->sse && !m->body_over && m->body.data) {
        json_t *root = json_loadb(m->body.data, m->body.len, 0, NULL);
        usage_read(st->kind, json_object_get(root, "usage"), st);
        json_decref(root);
    }
    return st->usage_seen ? usage_cost(st) : m->reserve;
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

static bool kind_of(const struct kb_meter_req *req, enum kind *k)
{
    static const struct {
        const char *path;
        enum kind kind;
    } eps[] = {
        {"/v1/chat/completions", KIND_CHAT},
        {"/v1/responses", KIND_RESPONSES},
        {"/v1/completions", KIND_COMPLETIONS},
        {"/v1/embeddings", KIND_EMBEDDINGS},
    };
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
        if (strlen(eps[i].path) == req->path_len &&
            memcmp(req->path, eps[i].path, req->path_len) == 0) {
            *k = eps[i].kind;
            return true;
        }
    }
    return false;
}

/* The most output tokens the request can produce: its cap (the largest of
 * the cap fields it sets, else the model's), times the choices. */
static enum kb_err output_bound(enum kind kind, json_t *root, const struct meter__model *mod,
                                int64_t *out, char **errmsg)
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

enum kb_err meter__openai_begin(struct kb_meter *m, const struct kb_meter_req *req, bool *metered,
                                char **new_body, size_t *new_len, char **errmsg)
{
    enum kb_err err = KB_OK;
    json_t *root = NULL;
    const struct meter__model *mod;
    enum kind kind;
    int64_t out_tokens = 0, in_tokens;
    char *nb = NULL;
    size_t nbl = 0;

    if (strcmp(req->method, "POST") != 0 || !kind_of(req, &kind))
        goto out;
    *metered = true;
    if ((err = meter__model_for(req, &m->p->openai, &root, &mod, errmsg)) != KB_OK)
        goto out;
    if ((err = output_bound(kind, root, mod, &out_tokens, errmsg)) != KB_OK)
        goto out;

    m->req_stream = json_is_true(json_object_get(root, "stream"));
    if (m->req_stream && (kind == KIND_CHAT || kind == KIND_COMPLETIONS))
        inject_include_usage(req->body, req->body_len, root, &nb, &nbl);

    /* Every input token billed at the dearer of the input prices. */
    in_tokens = meter__add_sat((int64_t)req->body_len, METER__INPUT_SLACK_TOKENS);
    const struct meter__prices *pr = meter__prices_for(mod, in_tokens);
    int64_t in_price = pr->input > pr->cached_input ? pr->input : pr->cached_input;
    m->reserve = meter__add_sat(meter__token_cost(in_tokens, in_price),
                                meter__token_cost(out_tokens, pr->output));

    struct oai_state *st = kb_calloc(1, sizeof *st);
    st->kind = kind;
    st->model = mod;
    m->state = st;
    m->ops = &oai_ops;
    m->body_cap = METER__MAX_JSON_BODY;
    *new_body = nb;
    *new_len = nbl;
    nb = NULL;
out:
    free(nb);
    json_decref(root);
    return err;
}
