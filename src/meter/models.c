/*
 * models.c - the LLM price tables: parsing the "openai" and "anthropic"
 * sections of pricing.json into struct meter__models and struct
 * meter__llm_cfg, and finding the entry for a request's model id.
 *
 * A model id is priced only when the file names it: by the entry's own key,
 * or by an id or dated pattern in the entry's "snapshots" list
 * ("gpt-4o-YYYY-MM-DD", "claude-haiku-4-5-YYYYMMDD"). There is no prefix
 * matching: a new model that shares a prefix with an old one
 * ("claude-opus-4-6" after "claude-opus-4") must not be priced as the old
 * one, so it stays refused (model_not_priced) until the file lists it. An
 * entry named "default", which the shipped file does not have, prices every
 * other id: an operator who wants that writes it in an override file.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/money.h"
#include "meter/meter_int.h"

/* Longest model name or snapshot pattern accepted in the pricing file. */
#define MODEL_NAME_MAX 200
/* Largest token figure accepted in the pricing file. */
#define TOKENS_MAX 1000000000LL
/* Largest price multiplier accepted (fast mode is 6x today): 100x. */
#define MULT_MAX (100 * 1000000LL)

/* Price keys of one tier (base, long_context, priority, flex). */
static const char *const openai_price_keys[] = {
    "input_per_mtok",       "cached_input_per_mtok",       "output_per_mtok",
    "audio_input_per_mtok", "audio_cached_input_per_mtok", "audio_output_per_mtok",
    NULL};
static const char *const anthropic_price_keys[] = {
    "input_per_mtok", "output_per_mtok", "cache_write_per_mtok", "cache_write_1h_per_mtok",
    "cache_read_per_mtok", NULL};
/* Keys of a model entry beside its prices. */
static const char *const openai_model_keys[] = {
    "max_output_tokens", "context_tokens", "long_context", "snapshots",
    "priority",          "flex",           "web_search_per_call", NULL};
static const char *const anthropic_model_keys[] = {
    "max_output_tokens", "context_tokens", "long_context", "snapshots", "fast_multiplier", NULL};
/* Keys of a vendor section. */
static const char *const openai_section_keys[] = {
    "models", "web_search_per_call", "file_search_per_call", "images", "speech", "videos",
    "data_residency_multiplier", "data_residency", NULL};
static const char *const anthropic_section_keys[] = {
    "models",           "web_search_per_call",      "web_fetch_per_call",
    "code_execution_per_call", "inference_geo_multiplier", "batch_percent",
    "default_inference_geo_regional", NULL};

enum kb_err meter__member_price(json_t *obj, const char *where, const char *key, int64_t dflt,
                                int64_t *out, char **errmsg)
{
    enum kb_err err;
    json_t *v = json_object_get(obj, key);
    char *w = kb_asprintf("%s.%s", where, key);

    if (!v && dflt >= 0) {
        *out = dflt;
        err = KB_OK;
    } else if (!v) {
        kb_set_errmsg(errmsg, "pricing: %s: missing", w);
        err = KB_E_CONFIG;
    } else {
        err = meter__price_parse(v, w, out, errmsg);
    }
    free(w);
    return err;
}

/* Refuses keys of obj outside the NULL-terminated lists a and b. */
static enum kb_err keys_check2(json_t *obj, const char *where, const char *const *a,
                               const char *const *b, char **errmsg)
{
    const char *allowed[32];
    size_t n = 0;
    for (size_t i = 0; a && a[i] && n < 31; i++)
        allowed[n++] = a[i];
    for (size_t i = 0; b && b[i] && n < 31; i++)
        allowed[n++] = b[i];
    allowed[n] = NULL;
    return meter__keys_check(obj, where, allowed, errmsg);
}

/* A token count from the pricing file: integer in [lo, TOKENS_MAX]. */
static enum kb_err tokens_member(json_t *obj, const char *where, const char *key, int64_t lo,
                                 int64_t *out, char **errmsg)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return KB_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > TOKENS_MAX) {
        kb_set_errmsg(errmsg, "pricing: %s.%s: must be an integer from %lld to %lld", where, key,
                      (long long)lo, (long long)TOKENS_MAX);
        return KB_E_CONFIG;
    }
    *out = (int64_t)json_integer_value(v);
    return KB_OK;
}

/* An optional price or multiplier member (decimal string); absent keeps *out. */
static enum kb_err opt_price(json_t *obj, const char *where, const char *key, int64_t max,
                             int64_t *out, char **errmsg)
{
    int64_t x;
    enum kb_err err = meter__member_price(obj, where, key, *out < 0 ? 0 : *out, &x, errmsg);
    if (err != KB_OK)
        return err;
    if (!json_object_get(obj, key))
        return KB_OK;
    if (max > 0 && x > max) {
        kb_set_errmsg(errmsg, "pricing: %s.%s: out of range", where, key);
        return KB_E_CONFIG;
    }
    *out = x;
    return KB_OK;
}

/* The prices of one tier. `dflt` (may be NULL) gives the value of each
 * key the tier leaves out (priority/flex/long-context blocks inherit from
 * the base prices); without it input and output are required. */
static enum kb_err prices_parse(json_t *obj, const char *where, bool anthropic,
                                const struct meter__prices *dflt, struct meter__prices *pr,
                                char **errmsg)
{
    enum kb_err err;
    struct meter__prices x = {0};
    int64_t req = -1;

#define PRICE(key, field, d)                                                                       \
    if ((err = meter__member_price(obj, where, key, (d), &x.field, errmsg)) != KB_OK)             \
    return err
    PRICE("input_per_mtok", input, dflt ? dflt->input : req);
    PRICE("output_per_mtok", output, dflt ? dflt->output : req);
    if (anthropic) {
        PRICE("cache_write_per_mtok", cache_write, dflt ? dflt->cache_write : req);
        PRICE("cache_write_1h_per_mtok", cache_write_1h, dflt ? dflt->cache_write_1h : req);
        PRICE("cache_read_per_mtok", cache_read, dflt ? dflt->cache_read : req);
    } else {
        /* Unlisted cached or audio prices default to the full text price:
         * never cheaper than what the vendor can bill. */
        PRICE("cached_input_per_mtok", cached_input, dflt ? dflt->cached_input : x.input);
        PRICE("audio_input_per_mtok", audio_input, dflt ? dflt->audio_input : x.input);
        PRICE("audio_cached_input_per_mtok", audio_cached,
              dflt ? dflt->audio_cached : x.audio_input);
        PRICE("audio_output_per_mtok", audio_output, dflt ? dflt->audio_output : x.output);
    }
#undef PRICE
    *pr = x;
    return KB_OK;
}

/* A nested price block ("long_context", "priority", "flex"): absent leaves
 * *has false. */
static enum kb_err tier_parse(json_t *obj, const char *where, const char *key, bool anthropic,
                              const char *const *extra, const struct meter__prices *base,
                              struct meter__prices *out, bool *has, char **errmsg)
{
    json_t *v = json_object_get(obj, key);
    enum kb_err err = KB_OK;

    *has = false;
    if (!v || json_is_null(v))
        return KB_OK;
    char *w = kb_asprintf("%s.%s", where, key);
    if (!json_is_object(v)) {
        kb_set_errmsg(errmsg, "pricing: %s: must be an object", w);
        err = KB_E_CONFIG;
    } else if ((err = keys_check2(v, w, anthropic ? anthropic_price_keys : openai_price_keys, extra,
                                  errmsg)) == KB_OK &&
               (err = prices_parse(v, w, anthropic, base, out, errmsg)) == KB_OK) {
        *has = true;
    }
    free(w);
    return err;
}

/* "snapshots": an array of ids or dated patterns. */
static enum kb_err snapshots_parse(json_t *obj, const char *where, struct meter__model *x,
                                   char **errmsg)
{
    json_t *v = json_object_get(obj, "snapshots"), *s;
    size_t i;

    if (!v)
        return KB_OK;
    if (!json_is_array(v) || json_array_size(v) > METER__MAX_SNAPSHOTS) {
        kb_set_errmsg(errmsg, "pricing: %s.snapshots: must be an array of at most %d ids", where,
                      METER__MAX_SNAPSHOTS);
        return KB_E_CONFIG;
    }
    x->snapshots = kb_calloc(json_array_size(v) + 1, sizeof *x->snapshots);
    json_array_foreach(v, i, s)
    {
        if (!json_is_string(s) || json_string_length(s) == 0 ||
            json_string_length(s) > MODEL_NAME_MAX) {
            kb_set_errmsg(errmsg, "pricing: %s.snapshots[%zu]: must be a model id", where, i);
            return KB_E_CONFIG;
        }
        x->snapshots[x->nsnapshots++] = kb_strdup(json_string_value(s));
    }
    return KB_OK;
}

static void model_cleanup(struct meter__model *m)
{
    for (size_t i = 0; i < m->nsnapshots; i++)
        free(m->snapshots[i]);
    free(m->snapshots);
    free(m->name);
}

static enum kb_err model_parse(const char *name, json_t *obj, const char *where, bool anthropic,
                               struct meter__model *mod, char **errmsg)
{
    static const char *const long_extra[] = {"threshold_tokens", NULL};
    enum kb_err err = KB_E_CONFIG;
    struct meter__model x = {0};
    bool has_long = false;

    x.web_search_per_call = -1;
    if (!json_is_object(obj)) {
        kb_set_errmsg(errmsg, "pricing: %s: must be an object", where);
        goto out;
    }
    err = keys_check2(obj, where, anthropic ? anthropic_price_keys : openai_price_keys,
                      anthropic ? anthropic_model_keys : openai_model_keys, errmsg);
    if (err != KB_OK)
        goto out;
    if ((err = prices_parse(obj, where, anthropic, NULL, &x.base, errmsg)) != KB_OK ||
        (err = tokens_member(obj, where, "max_output_tokens", 1, &x.max_output, errmsg)) !=
            KB_OK ||
        (err = tokens_member(obj, where, "context_tokens", 1, &x.context, errmsg)) != KB_OK ||
        (err = snapshots_parse(obj, where, &x, errmsg)) != KB_OK)
        goto out;
    if (!x.max_output && (x.base.output > 0 || x.base.audio_output > 0)) {
        /* Without it a request that sets no cap could not be bounded. */
        kb_set_errmsg(errmsg, "pricing: %s: max_output_tokens is required when output is priced",
                      where);
        err = KB_E_CONFIG;
        goto out;
    }
    if ((err = tier_parse(obj, where, "long_context", anthropic, long_extra, NULL, &x.longctx,
                          &has_long, errmsg)) != KB_OK)
        goto out;
    if (has_long) {
        json_t *lc = json_object_get(obj, "long_context");
        char *w = kb_asprintf("%s.long_context", where);
        err = tokens_member(lc, w, "threshold_tokens", 1, &x.long_threshold, errmsg);
        if (err == KB_OK && !x.long_threshold) {
            kb_set_errmsg(errmsg, "pricing: %s.threshold_tokens: missing", w);
            err = KB_E_CONFIG;
        }
        free(w);
        if (err != KB_OK)
            goto out;
    }
    if (anthropic) {
        if ((err = opt_price(obj, where, "fast_multiplier", MULT_MAX, &x.fast_multiplier,
                             errmsg)) != KB_OK)
            goto out;
    } else if ((err = tier_parse(obj, where, "priority", false, NULL, &x.base, &x.priority,
                                 &x.has_priority, errmsg)) != KB_OK ||
               (err = tier_parse(obj, where, "flex", false, NULL, &x.base, &x.flex, &x.has_flex,
                                 errmsg)) != KB_OK ||
               (err = opt_price(obj, where, "web_search_per_call", 0, &x.web_search_per_call,
                                errmsg)) != KB_OK) {
        goto out;
    }
    x.name = kb_strdup(name);
    *mod = x;
    memset(&x, 0, sizeof x);
    err = KB_OK;
out:
    model_cleanup(&x);
    return err;
}

void meter__models_cleanup(struct meter__models *t)
{
    for (size_t i = 0; i < t->n; i++)
        model_cleanup(&t->v[i]);
    free(t->v);
    t->v = NULL;
    t->n = 0;
    t->fallback = NULL;
}

enum kb_err meter__models_parse(json_t *models, const char *kind, struct meter__models *t,
                                char **errmsg)
{
    enum kb_err err = KB_E_CONFIG;
    struct meter__models x = {0};
    bool anthropic = strcmp(kind, "anthropic") == 0;
    const char *name;
    json_t *v;

    if (!json_is_object(models)) {
        kb_set_errmsg(errmsg, "pricing: %s.models: must be an object", kind);
        goto out;
    }
    x.v = kb_calloc(json_object_size(models) + 1, sizeof *x.v);
    json_object_foreach(models, name, v)
    {
        if (name[0] == '_')
            continue;
        char *where = kb_asprintf("%s.models.%s", kind, name);
        if (strlen(name) > MODEL_NAME_MAX) {
            kb_set_errmsg(errmsg, "pricing: %s: model name too long", where);
            err = KB_E_CONFIG;
        } else {
            err = model_parse(name, v, where, anthropic, &x.v[x.n], errmsg);
        }
        free(where);
        if (err != KB_OK)
            goto out;
        x.n++;
    }
    for (size_t i = 0; i < x.n; i++)
        if (strcmp(x.v[i].name, "default") == 0)
            x.fallback = &x.v[i];
    *t = x;
    memset(&x, 0, sizeof x);
    err = KB_OK;
out:
    meter__models_cleanup(&x);
    return err;
}

/* openai.data_residency (the operator's project runs with regional data
 * residency: a uplift on every token cost the request cannot show) and
 * its data_residency_multiplier. */
static enum kb_err residency_parse(json_t *sec, struct meter__llm_cfg *c, char **errmsg)
{
    json_t *on = json_object_get(sec, "data_residency");
    int64_t mult = 0;
    enum kb_err err;

    if (on && !json_is_boolean(on)) {
        kb_set_errmsg(errmsg, "pricing: openai.data_residency: must be true or false");
        return KB_E_CONFIG;
    }
    if ((err = meter__member_price(sec, "openai", "data_residency_multiplier", -1, &mult,
                                   errmsg)) != KB_OK)
        return err;
    if (mult < 1000000 || mult > MULT_MAX) {
        kb_set_errmsg(errmsg, "pricing: openai.data_residency_multiplier: must be from 1 to 100");
        return KB_E_CONFIG;
    }
    c->residency_multiplier = json_is_true(on) ? mult : 0;
    return KB_OK;
}

enum kb_err meter__llm_section(json_t *sec, const char *kind, struct meter__models *t,
                               struct meter__llm_cfg *cfg, char **errmsg)
{
    bool anthropic = strcmp(kind, "anthropic") == 0;
    struct meter__llm_cfg c = {0};
    enum kb_err err;

    if (!json_is_object(sec)) {
        kb_set_errmsg(errmsg, "pricing: \"%s\" must be an object", kind);
        return KB_E_CONFIG;
    }
    if ((err = meter__keys_check(sec, kind,
                                 anthropic ? anthropic_section_keys : openai_section_keys,
                                 errmsg)) != KB_OK)
        return err;
    /* Absent fees are refused rather than free: a tool the file does not
     * price is then reserved at no cost, which would overshoot a cap. */
    if ((err = meter__member_price(sec, kind, "web_search_per_call", -1, &c.web_search_per_call,
                                   errmsg)) != KB_OK)
        return err;
    if (!anthropic && ((err = meter__member_price(sec, kind, "file_search_per_call", -1,
                                                  &c.file_search_per_call, errmsg)) != KB_OK ||
                       (err = residency_parse(sec, &c, errmsg)) != KB_OK ||
                       (err = meter__media_config(sec, &c, errmsg)) != KB_OK)) {
        meter__llm_cfg_cleanup(&c);
        return err;
    }
    if (anthropic) {
        c.batch_percent = 100;
        if ((err = meter__member_price(sec, kind, "web_fetch_per_call", -1, &c.web_fetch_per_call,
                                       errmsg)) != KB_OK ||
            (err = meter__member_price(sec, kind, "code_execution_per_call", -1,
                                       &c.code_execution_per_call, errmsg)) != KB_OK ||
            (err = meter__member_price(sec, kind, "inference_geo_multiplier", -1,
                                       &c.geo_multiplier, errmsg)) != KB_OK)
            return err;
        if (c.geo_multiplier < 1000000 || c.geo_multiplier > MULT_MAX) {
            kb_set_errmsg(errmsg, "pricing: %s.inference_geo_multiplier: must be from 1 to 100",
                          kind);
            return KB_E_CONFIG;
        }
        json_t *bp = json_object_get(sec, "batch_percent");
        if (!json_is_integer(bp) || json_integer_value(bp) < 1 || json_integer_value(bp) > 100) {
            kb_set_errmsg(errmsg, "pricing: %s.batch_percent: must be an integer from 1 to 100",
                          kind);
            return KB_E_CONFIG;
        }
        c.batch_percent = (int64_t)json_integer_value(bp);
        json_t *dg = json_object_get(sec, "default_inference_geo_regional");
        if (dg && !json_is_boolean(dg)) {
            kb_set_errmsg(errmsg, "pricing: %s.default_inference_geo_regional: must be true or "
                                  "false",
                          kind);
            return KB_E_CONFIG;
        }
        c.default_geo_regional = json_is_true(dg);
    }
    if ((err = meter__models_parse(json_object_get(sec, "models"), kind, t, errmsg)) != KB_OK) {
        meter__llm_cfg_cleanup(&c);
        return err;
    }
    *cfg = c;
    return KB_OK;
}

/* ---- lookup ---- */

bool meter__snapshot_match(const char *pat, const char *id)
{
    size_t i = 0, j = 0;

    while (pat[i]) {
        size_t digits = strncmp(pat + i, "YYYY", 4) == 0                                 ? 4
                        : strncmp(pat + i, "MM", 2) == 0 || strncmp(pat + i, "DD", 2) == 0 ? 2
                                                                                          : 0;
        if (digits) {
            for (size_t k = 0; k < digits; k++, j++)
                if (id[j] < '0' || id[j] > '9')
                    return false;
            i += digits;
        } else if (pat[i++] != id[j++]) {
            return false;
        }
    }
    return id[j] == '\0';
}

const struct meter__model *meter__model_find(const struct meter__models *t, const char *id)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i].name, id) == 0)
            return &t->v[i];
    for (size_t i = 0; i < t->n; i++)
        for (size_t k = 0; k < t->v[i].nsnapshots; k++)
            if (meter__snapshot_match(t->v[i].snapshots[k], id))
                return &t->v[i];
    return t->fallback;
}

enum kb_err meter__model_for(struct kb_meter *m, const struct kb_meter_req *req,
                             const struct meter__models *t, json_t **root,
                             const struct meter__model **mod, char **errmsg)
{
    enum kb_err err = meter__json_body(req, root, errmsg);
    if (err != KB_OK)
        return err;
    meter__note_model(m, json_string_value(json_object_get(*root, "model")));
    return meter__model_of(*root, t, mod, errmsg);
}

enum kb_err meter__model_of(json_t *obj, const struct meter__models *t,
                            const struct meter__model **mod, char **errmsg)
{
    json_t *model = json_object_get(obj, "model");
    if (!json_is_string(model)) {
        kb_set_errmsg(errmsg, "\"model\" is required to price the request");
        return KB_E_INVALID;
    }
    *mod = meter__model_find(t, json_string_value(model));
    if (!*mod) {
        kb_set_errmsg(errmsg, "model \"%.100s\" has no configured price", json_string_value(model));
        return KB_E_MODEL_NOT_PRICED;
    }
    return KB_OK;
}

const struct meter__prices *meter__prices_for(const struct meter__model *mod, int64_t input)
{
    return mod->long_threshold > 0 && input > mod->long_threshold ? &mod->longctx : &mod->base;
}

struct meter__prices meter__prices_scale(const struct meter__prices *pr, int64_t mult)
{
    struct meter__prices x;
#define SCALE(f) x.f = meter__mul_div_ceil(pr->f, mult, 1000000)
    SCALE(input);
    SCALE(cached_input);
    SCALE(output);
    SCALE(cache_write);
    SCALE(cache_write_1h);
    SCALE(cache_read);
    SCALE(audio_input);
    SCALE(audio_cached);
    SCALE(audio_output);
#undef SCALE
    return x;
}
