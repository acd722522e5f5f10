/*
 * openai_media.c - the OpenAI endpoints priced per image and per
 * character: POST /v1/images/generations and POST /v1/audio/speech, and
 * the "images" and "speech" tables of pricing.json they read.
 *
 * Images. Per-image models (dall-e-2, dall-e-3) cost n x the price of the
 * request's quality and size, known before forwarding: that is both the
 * reservation and the cost. Token-priced models (gpt-image-*) bill the
 * prompt's text tokens, and each image's output tokens, which depend on
 * quality and size (the vendor's table, copied into pricing.json): the
 * reservation is (body bytes + slack) x the text input price + n x the
 * output tokens of the requested quality and size (the largest in the
 * table for "auto" or an unlisted value, and 100 more per partial image)
 * x the output price; the answer's usage settles it (input_tokens_details
 * text/image tokens, output_tokens), and an answer without usage costs the
 * reservation. Edits and variations are multipart uploads whose images
 * the meter does not read: they stay unclaimed (refused unless an operator
 * prices them), like models and sizes the tables do not list.
 *
 * Speech. tts-1 and tts-1-hd bill the characters of `input` (Unicode code
 * points): known before forwarding, reserved and charged as such. Models
 * billed by audio output tokens (gpt-4o-mini-tts) have no bound in the
 * request and are not in the table: refused (model_not_priced).
 *
 * Videos. POST /v1/videos (JSON or multipart form) bills `seconds` x the
 * per-second price of the model and size; the video is rendered after the
 * answer, so the accepted job costs its reservation. A remix's length is
 * the source video's, which the request does not state: unclaimed.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "meter/meter_int.h"

/* Output tokens the vendor adds per partial image of a streamed generation. */
#define PARTIAL_IMAGE_TOKENS 100
/* Most entries in one image model's size table. */
#define MAX_SIZES 64

/* ---- pricing.json ---- */

static void video_cleanup(struct meter__image_model *vm)
{
    for (size_t i = 0; i < vm->nsize; i++)
        free(vm->size[i].key);
    free(vm->size);
    free(vm->name);
}

static void image_cleanup(struct meter__image_model *im)
{
    for (size_t i = 0; i < im->nsize; i++)
        free(im->size[i].key);
    free(im->size);
    free(im->name);
}

void meter__llm_cfg_cleanup(struct meter__llm_cfg *cfg)
{
    for (size_t i = 0; i < cfg->nimages; i++)
        image_cleanup(&cfg->images[i]);
    free(cfg->images);
    for (size_t i = 0; i < cfg->nspeech; i++)
        free(cfg->speech[i].name);
    free(cfg->speech);
    for (size_t i = 0; i < cfg->nvideos; i++)
        video_cleanup(&cfg->videos[i]);
    free(cfg->videos);
    cfg->images = NULL;
    cfg->speech = NULL;
    cfg->videos = NULL;
    cfg->nimages = cfg->nspeech = cfg->nvideos = 0;
}

static enum kb_err image_parse(const char *name, json_t *obj, const char *where,
                               struct meter__image_model *im, char **errmsg)
{
    static const char *const keys[] = {
        "per_image",       "text_input_per_mtok", "image_input_per_mtok",
        "output_per_mtok", "output_tokens",       NULL};
    json_t *tab, *v;
    const char *k;
    enum kb_err err;

    if (!json_is_object(obj)) {
        kb_set_errmsg(errmsg, "pricing: %s: must be an object", where);
        return KB_E_CONFIG;
    }
    if ((err = meter__keys_check(obj, where, keys, errmsg)) != KB_OK)
        return err;
    im->name = kb_strdup(name);
    tab = json_object_get(obj, "per_image");
    im->tokens = !tab;
    if (im->tokens) {
        tab = json_object_get(obj, "output_tokens");
        if ((err = meter__member_price(obj, where, "text_input_per_mtok", -1, &im->text_input,
                                       errmsg)) != KB_OK ||
            (err = meter__member_price(obj, where, "image_input_per_mtok", -1, &im->image_input,
                                       errmsg)) != KB_OK ||
            (err = meter__member_price(obj, where, "output_per_mtok", -1, &im->output, errmsg)) !=
                KB_OK)
            return err;
    }
    if (!json_is_object(tab) || json_object_size(tab) == 0 || json_object_size(tab) > MAX_SIZES) {
        kb_set_errmsg(errmsg,
                      "pricing: %s: needs a \"per_image\" or \"output_tokens\" table of "
                      "\"quality/size\" entries",
                      where);
        return KB_E_CONFIG;
    }
    im->size = kb_calloc(json_object_size(tab), sizeof *im->size);
    json_object_foreach(tab, k, v)
    {
        struct meter__image_size *s = &im->size[im->nsize];
        char *w = kb_asprintf("%s.%s", where, k);
        if (im->tokens) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > 1000000) {
                kb_set_errmsg(errmsg, "pricing: %s: must be a token count", w);
                err = KB_E_CONFIG;
            } else {
                s->value = (int64_t)json_integer_value(v);
            }
        } else {
            err = meter__price_parse(v, w, &s->value, errmsg);
        }
        free(w);
        if (err != KB_OK)
            return err;
        if (!strchr(k, '/')) {
            kb_set_errmsg(errmsg, "pricing: %s: \"%s\" must be \"quality/size\"", where, k);
            return KB_E_CONFIG;
        }
        s->key = kb_strdup(k);
        im->nsize++;
    }
    return KB_OK;
}

enum kb_err meter__media_config(json_t *sec, struct meter__llm_cfg *cfg, char **errmsg)
{
    json_t *images = json_object_get(sec, "images"), *speech = json_object_get(sec, "speech"), *v;
    const char *k;
    enum kb_err err = KB_OK;

    if (images && !json_is_object(images)) {
        kb_set_errmsg(errmsg, "pricing: openai.images: must be an object");
        return KB_E_CONFIG;
    }
    if (speech && !json_is_object(speech)) {
        kb_set_errmsg(errmsg, "pricing: openai.speech: must be an object");
        return KB_E_CONFIG;
    }
    cfg->images = kb_calloc(json_object_size(images) + 1, sizeof *cfg->images);
    json_object_foreach(images, k, v)
    {
        if (k[0] == '_')
            continue;
        char *w = kb_asprintf("openai.images.%s", k);
        err = image_parse(k, v, w, &cfg->images[cfg->nimages++], errmsg);
        free(w);
        if (err != KB_OK)
            return err;
    }
    json_t *videos = json_object_get(sec, "videos");
    if (videos && !json_is_object(videos)) {
        kb_set_errmsg(errmsg, "pricing: openai.videos: must be an object");
        return KB_E_CONFIG;
    }
    cfg->videos = kb_calloc(json_object_size(videos) + 1, sizeof *cfg->videos);
    json_object_foreach(videos, k, v)
    {
        static const char *const keys[] = {"per_second", NULL};
        json_t *tab = json_object_get(v, "per_second"), *x;
        const char *sz;
        if (k[0] == '_')
            continue;
        char *w = kb_asprintf("openai.videos.%s", k);
        struct meter__image_model *vm = &cfg->videos[cfg->nvideos++];
        vm->name = kb_strdup(k);
        if (!json_is_object(v) || (err = meter__keys_check(v, w, keys, errmsg)) != KB_OK ||
            !json_is_object(tab) || json_object_size(tab) == 0 ||
            json_object_size(tab) > MAX_SIZES) {
            if (err == KB_OK)
                kb_set_errmsg(errmsg, "pricing: %s: needs a \"per_second\" table of sizes", w);
            free(w);
            return KB_E_CONFIG;
        }
        vm->size = kb_calloc(json_object_size(tab), sizeof *vm->size);
        json_object_foreach(tab, sz, x)
        {
            char *ws = kb_asprintf("%s.per_second.%s", w, sz);
            err = meter__price_parse(x, ws, &vm->size[vm->nsize].value, errmsg);
            free(ws);
            if (err != KB_OK)
                break;
            vm->size[vm->nsize++].key = kb_strdup(sz);
        }
        free(w);
        if (err != KB_OK)
            return err;
    }
    cfg->speech = kb_calloc(json_object_size(speech) + 1, sizeof *cfg->speech);
    json_object_foreach(speech, k, v)
    {
        static const char *const keys[] = {"per_mchar", NULL};
        if (k[0] == '_')
            continue;
        char *w = kb_asprintf("openai.speech.%s", k);
        struct meter__speech_model *sm = &cfg->speech[cfg->nspeech];
        if (!json_is_object(v)) {
            kb_set_errmsg(errmsg, "pricing: %s: must be an object", w);
            err = KB_E_CONFIG;
        } else if ((err = meter__keys_check(v, w, keys, errmsg)) == KB_OK &&
                   (err = meter__member_price(v, w, "per_mchar", -1, &sm->per_mchar, errmsg)) ==
                       KB_OK) {
            sm->name = kb_strdup(k);
            cfg->nspeech++;
        }
        free(w);
        if (err != KB_OK)
            return err;
    }
    return KB_OK;
}

/* ---- images ---- */

struct img_state {
    const struct meter__image_model *model; /* borrowed from the pricing */
};

/* A token-priced answer's usage, else the reservation. */
static int64_t img_settle(struct kb_meter *m, bool complete)
{
    const struct meter__image_model *im = ((struct img_state *)m->state)->model;
    int64_t in = 0, out = 0, text = 0, image = 0, cost = m->reserve;
    json_t *root, *u, *d;

    (void)complete;
    if (m->body_over || !m->body.data)
        return m->reserve;
    root = meter__json_loadb(m->body.data, m->body.len, JSON_REJECT_DUPLICATES, NULL, NULL);
    u = json_object_get(root, "usage");
    d = json_object_get(u, "input_tokens_details");
    if (meter__json_uint(u, "input_tokens", &in) && meter__json_uint(u, "output_tokens", &out)) {
        /* Tokens not attributed to images are text; never trust a part to
         * exceed the whole. */
        if (!meter__json_uint(d, "image_tokens", &image) || image > in)
            image = 0;
        text = in - image;
        cost = meter__add_sat(meter__add_sat(meter__token_cost(text, im->text_input),
                                             meter__token_cost(image, im->image_input)),
                              meter__token_cost(out, im->output));
    }
    json_decref(root);
    return cost;
}

static const struct meter__ops img_ops = {NULL, img_settle, free};

/* The table's value for quality/size; "auto", an absent or an unlisted
 * value takes the largest value that the given parts allow. */
static int64_t size_value(const struct meter__image_model *im, const char *quality,
                          const char *size)
{
    int64_t best = -1;
    for (size_t i = 0; i < im->nsize; i++) {
        const char *k = im->size[i].key, *slash = strchr(k, '/');
        size_t ql = (size_t)(slash - k);
        bool qok = !quality || (strlen(quality) == ql && strncmp(k, quality, ql) == 0);
        bool sok = !size || strcmp(slash + 1, size) == 0;
        if (qok && sok && im->size[i].value > best)
            best = im->size[i].value;
    }
    return best;
}

/* A string member, NULL when absent, null or "auto". */
static enum kb_err opt_choice(json_t *root, const char *key, const char **out, char **errmsg)
{
    json_t *v = json_object_get(root, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return KB_OK;
    if (!json_is_string(v)) {
        kb_set_errmsg(errmsg, "\"%s\" must be a string", key);
        return KB_E_INVALID;
    }
    if (strcmp(json_string_value(v), "auto") != 0)
        *out = json_string_value(v);
    return KB_OK;
}

enum kb_err meter__openai_image_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                      char **errmsg)
{
    const struct meter__llm_cfg *cfg = &m->p->openai_cfg;
    const struct meter__image_model *im = NULL;
    const char *quality, *size;
    json_t *root = NULL, *model;
    int64_t n = 1, partial = 0, per;
    bool present;
    enum kb_err err;

    if ((err = meter__json_body(req, &root, errmsg)) != KB_OK)
        goto out;
    /* The API's default model is dall-e-2. */
    model = json_object_get(root, "model");
    const char *name = json_is_string(model) ? json_string_value(model) : "dall-e-2";
    meter__note_model(m, name); /* the model the vendor will use, named or not */
    if (model && !json_is_null(model) && !json_is_string(model)) {
        kb_set_errmsg(errmsg, "\"model\" must be a string");
        err = KB_E_INVALID;
        goto out;
    }
    for (size_t i = 0; i < cfg->nimages && !im; i++)
        if (strcmp(cfg->images[i].name, name) == 0)
            im = &cfg->images[i];
    if (!im) {
        kb_set_errmsg(errmsg, "image model \"%.100s\" has no configured price", name);
        err = KB_E_MODEL_NOT_PRICED;
        goto out;
    }
    if ((err = meter__json_opt_uint(root, "n", &n, &present, errmsg)) != KB_OK ||
        (err = meter__json_opt_uint(root, "partial_images", &partial, &present, errmsg)) != KB_OK ||
        (err = opt_choice(root, "quality", &quality, errmsg)) != KB_OK ||
        (err = opt_choice(root, "size", &size, errmsg)) != KB_OK)
        goto out;
    /* dall-e-2 has one quality; its table says "standard". */
    per = size_value(im, quality, size);
    if (per < 0 && quality && strcmp(quality, "standard") == 0)
        per = size_value(im, NULL, size);
    if (per < 0) {
        kb_set_errmsg(errmsg, "image model \"%.100s\" has no price for quality %.20s, size %.20s",
                      name, quality ? quality : "auto", size ? size : "auto");
        err = KB_E_MODEL_NOT_PRICED;
        goto out;
    }
    if (!im->tokens) {
        m->reserve = meter__mul_sat(n, per);
        m->on_success = m->reserve;
        goto out;
    }
    int64_t out_tokens =
        meter__mul_sat(n, meter__add_sat(per, meter__mul_sat(partial, PARTIAL_IMAGE_TOKENS)));
    int64_t in_tokens = meter__add_sat((int64_t)req->body_len, METER__INPUT_SLACK_TOKENS);
    m->reserve = meter__add_sat(meter__token_cost(in_tokens, im->text_input),
                                meter__token_cost(out_tokens, im->output));
    struct img_state *st = kb_calloc(1, sizeof *st);
    st->model = im;
    m->state = st;
    m->ops = &img_ops;
    m->body_cap = METER__MAX_JSON_BODY;
    /* A streamed generation carries usage in its last event; the meter
     * does not read those: it settles at the reservation. */
    m->req_stream = json_is_true(json_object_get(root, "stream"));
out:
    json_decref(root);
    return err;
}

/* ---- speech ---- */

/* Unicode code points of UTF-8 text: every byte but continuation bytes. */
static int64_t code_points(const char *s, size_t n)
{
    int64_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

enum kb_err meter__openai_speech_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                       char **errmsg)
{
    const struct meter__llm_cfg *cfg = &m->p->openai_cfg;
    const struct meter__speech_model *sm = NULL;
    json_t *root = NULL, *model, *input;
    enum kb_err err;

    if ((err = meter__json_body(req, &root, errmsg)) != KB_OK)
        goto out;
    model = json_object_get(root, "model");
    input = json_object_get(root, "input");
    if (!json_is_string(model) || !json_is_string(input)) {
        kb_set_errmsg(errmsg, "\"model\" and \"input\" are required to price speech");
        err = KB_E_INVALID;
        goto out;
    }
    for (size_t i = 0; i < cfg->nspeech && !sm; i++)
        if (strcmp(cfg->speech[i].name, json_string_value(model)) == 0)
            sm = &cfg->speech[i];
    if (!sm) {
        kb_set_errmsg(errmsg, "speech model \"%.100s\" has no configured price",
                      json_string_value(model));
        err = KB_E_MODEL_NOT_PRICED;
        goto out;
    }
    m->reserve = meter__token_cost(code_points(json_string_value(input), json_string_length(input)),
                                   sm->per_mchar);
    m->on_success = m->reserve;
out:
    json_decref(root);
    return err;
}

/* ---- videos ---- */

/* Largest number of seconds a video request may name. */
#define MAX_VIDEO_SECONDS 3600

/* The value of form field `name` in a multipart/form-data body (borrowed
 * span into body), or *val NULL when absent. A field given twice with
 * different values is ambiguous: the vendor may read either. */
static enum kb_err form_field(const char *body, size_t len, const char *boundary, size_t blen,
                              const char *name, const char **val, size_t *vlen, char **errmsg)
{
    const char *p = body, *end = body + len;
    size_t nl = strlen(name);

    *val = NULL;
    *vlen = 0;
    while ((p = memmem(p, (size_t)(end - p), boundary, blen)) != NULL) {
        p += blen;
        const char *hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hdr_end)
            break;
        const char *data = hdr_end + 4;
        const char *next = memmem(data, (size_t)(end - data), boundary, blen);
        if (!next)
            break;
        /* The value ends before the "\r\n" that precedes "--boundary". */
        const char *vend = next - data >= 2 ? next - 2 : data;
        /* name="..." in the part's headers. */
        const char *n = p;
        bool match = false;
        while ((n = memmem(n, (size_t)(hdr_end - n), "name=\"", 6)) != NULL) {
            if (n > p && (n[-1] == ' ' || n[-1] == ';')) {
                match = (size_t)(hdr_end - n) > 6 + nl && memcmp(n + 6, name, nl) == 0 &&
                        n[6 + nl] == '"';
                break;
            }
            n += 6;
        }
        if (match) {
            size_t l = (size_t)(vend - data);
            if (*val && (l != *vlen || memcmp(*val, data, l) != 0)) {
                kb_set_errmsg(errmsg, "form field \"%s\" is given twice with different values",
                              name);
                return KB_E_AMBIGUOUS_REQUEST;
            }
            *val = data;
            *vlen = l;
        }
        p = next;
    }
    return KB_OK;
}

/* Copies a short field value into buf; false when it does not fit. */
static bool field_copy(const char *v, size_t n, char *buf, size_t cap)
{
    if (n >= cap)
        return false;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return true;
}

enum kb_err meter__openai_video_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                      char **errmsg)
{
    const struct meter__llm_cfg *cfg = &m->p->openai_cfg;
    const struct meter__image_model *vm = NULL;
    char model[64] = "sora-2", seconds[16] = "4", size[32] = "";
    json_t *root = NULL;
    enum kb_err err = KB_OK;
    const char *ct = req->content_type ? req->content_type : "";

    if (strncasecmp(ct, "multipart/form-data", 19) == 0) {
        const char *b = strcasestr(ct, "boundary=");
        char boundary[200];
        if (!b) {
            kb_set_errmsg(errmsg, "multipart body without a boundary");
            return KB_E_INVALID;
        }
        b += 9;
        size_t bl = strcspn(b, ";");
        if (bl >= 2 && b[0] == '"' && b[bl - 1] == '"') {
            b++;
            bl -= 2;
        }
        int n = snprintf(boundary, sizeof boundary, "--%.*s", (int)bl, b);
        if (n < 0 || (size_t)n >= sizeof boundary || bl == 0) {
            kb_set_errmsg(errmsg, "multipart boundary too long");
            return KB_E_INVALID;
        }
        static const char *const names[] = {"model", "seconds", "size"};
        char *dst[] = {model, seconds, size};
        size_t cap[] = {sizeof model, sizeof seconds, sizeof size};
        for (size_t i = 0; i < 3; i++) {
            const char *v;
            size_t vl;
            if ((err = form_field(req->body ? req->body : "", req->body_len, boundary, (size_t)n,
                                  names[i], &v, &vl, errmsg)) != KB_OK)
                return err;
            if (v && !field_copy(v, vl, dst[i], cap[i])) {
                kb_set_errmsg(errmsg, "form field \"%s\" is too long", names[i]);
                return KB_E_INVALID;
            }
        }
    } else {
        if ((err = meter__json_body(req, &root, errmsg)) != KB_OK)
            return err;
        static const char *const names[] = {"model", "seconds", "size"};
        char *dst[] = {model, seconds, size};
        size_t cap[] = {sizeof model, sizeof seconds, sizeof size};
        for (size_t i = 0; i < 3; i++) {
            json_t *v = json_object_get(root, names[i]);
            if (!v || json_is_null(v))
                continue;
            if (json_is_integer(v) && i == 1) {
                snprintf(seconds, sizeof seconds, "%lld", (long long)json_integer_value(v));
            } else if (!json_is_string(v) ||
                       !field_copy(json_string_value(v), json_string_length(v), dst[i], cap[i])) {
                kb_set_errmsg(errmsg, "\"%s\" must be a short string", names[i]);
                err = KB_E_INVALID;
                goto out;
            }
        }
    }
    meter__note_model(m, model); /* the default, too, is the model that runs */
    for (size_t i = 0; i < cfg->nvideos && !vm; i++)
        if (strcmp(cfg->videos[i].name, model) == 0)
            vm = &cfg->videos[i];
    if (!vm) {
        kb_set_errmsg(errmsg, "video model \"%.60s\" has no configured price", model);
        err = KB_E_MODEL_NOT_PRICED;
        goto out;
    }
    char *e = NULL;
    long long secs = strtoll(seconds, &e, 10);
    if (e == seconds || *e || secs < 1 || secs > MAX_VIDEO_SECONDS) {
        kb_set_errmsg(errmsg, "\"seconds\" must be a whole number of seconds");
        err = KB_E_INVALID;
        goto out;
    }
    /* No size: the vendor's default, which the table's dearest entry
     * covers; an unlisted size is refused. */
    int64_t per = -1;
    for (size_t i = 0; i < vm->nsize; i++)
        if ((!size[0] || strcmp(vm->size[i].key, size) == 0) && vm->size[i].value > per)
            per = vm->size[i].value;
    if (per < 0) {
        kb_set_errmsg(errmsg, "video model \"%.60s\" has no price for size %.30s", model, size);
        err = KB_E_MODEL_NOT_PRICED;
        goto out;
    }
    m->reserve = meter__mul_sat((int64_t)secs, per);
    m->on_success = m->reserve;
out:
    json_decref(root);
    return err;
}
