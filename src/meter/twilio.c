/*
 * twilio.c - the Twilio meter: messages by segment, calls by estimate.
 *
 * POST /2010-04-01/Accounts/{sid}/Messages.json sends an SMS whose price is
 * per segment, counted by twilio_segments.c.
 * The per-segment price is chosen by the longest configured prefix of To
 * ("+1", "+44"), else the "default" price. A MediaUrl makes it an MMS, one
 * price per message. Without Body (a ContentSid template) the configured
 * unknown_body_segments is reserved.
 *
 * POST .../Calls.json reserves call_estimate, or, when the request sets
 * TimeLimit (seconds), every started minute of it at call_per_minute: the
 * call cannot last longer.
 *
 * Twilio prices a message only after delivery (price is null at creation),
 * so a 2xx settles at the estimate - for an SMS, at num_segments from the
 * response when it is there (Twilio's own count) - and a non-2xx at zero.
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/money.h"
#include "meter/meter_int.h"

/* Longest call TimeLimit accepted: 24 hours (Twilio's own cap is 4 h). */
#define TIME_LIMIT_MAX 86400
/* Twilio's message resource is a few KiB. */
#define RESPONSE_CAP (64 * 1024)
/* A response num_segments above this is not believed. */
#define SEGMENTS_MAX 1000

/* ---- configuration ---- */

static const char *const twilio_keys[] = {"sms_per_segment",       "mms_per_message",
                                          "call_estimate",         "call_per_minute",
                                          "unknown_body_segments", NULL};

void meter__twilio_config_cleanup(struct meter__twilio_cfg *cfg)
{
    for (size_t i = 0; i < cfg->nsms; i++)
        free(cfg->sms[i].prefix);
    free(cfg->sms);
    cfg->sms = NULL;
    cfg->nsms = 0;
}

static bool is_prefix_key(const char *k)
{
    size_t n = strlen(k);
    if (n < 2 || n > 16 || k[0] != '+')
        return false;
    for (size_t i = 1; i < n; i++)
        if (k[i] < '0' || k[i] > '9')
            return false;
    return true;
}

enum kb_err meter__twilio_config(json_t *obj, struct meter__twilio_cfg *cfg, char **errmsg)
{
    enum kb_err err;
    struct meter__twilio_cfg x = {0};
    json_t *sms, *v;
    const char *k;
    bool have_default = false;

    if ((err = meter__keys_check(obj, "twilio", twilio_keys, errmsg)) != KB_OK)
        goto out;
    err = KB_E_CONFIG;
    sms = json_object_get(obj, "sms_per_segment");
    if (!json_is_object(sms)) {
        kb_set_errmsg(errmsg, "pricing: twilio.sms_per_segment: must be an object of "
                              "destination prefixes (\"+1\") and \"default\"");
        goto out;
    }
    x.sms = kb_calloc(json_object_size(sms), sizeof *x.sms);
    json_object_foreach(sms, k, v)
    {
        if (k[0] == '_')
            continue;
        char *w = kb_asprintf("twilio.sms_per_segment.%s", k);
        int64_t price = 0;
        if (strcmp(k, "default") != 0 && !is_prefix_key(k)) {
            kb_set_errmsg(errmsg, "pricing: %s: a key is \"default\" or \"+\" and digits", w);
            err = KB_E_CONFIG;
        } else {
            err = meter__price_parse(v, w, &price, errmsg);
        }
        free(w);
        if (err != KB_OK)
            goto out;
        if (strcmp(k, "default") == 0) {
            x.sms_default = price;
            have_default = true;
        } else {
            x.sms[x.nsms].prefix = kb_strdup(k);
            x.sms[x.nsms].micros = price;
            x.nsms++;
        }
    }
    if (!have_default) {
        kb_set_errmsg(errmsg, "pricing: twilio.sms_per_segment.default: missing");
        err = KB_E_CONFIG;
        goto out;
    }
    if ((err = meter__member_price(obj, "twilio", "mms_per_message", -1, &x.mms, errmsg)) !=
            KB_OK ||
        (err = meter__member_price(obj, "twilio", "call_estimate", -1, &x.call_estimate, errmsg)) !=
            KB_OK ||
        (err = meter__member_price(obj, "twilio", "call_per_minute", -1, &x.call_per_minute,
                                   errmsg)) != KB_OK)
        goto out;
    v = json_object_get(obj, "unknown_body_segments");
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > SEGMENTS_MAX) {
        kb_set_errmsg(errmsg,
                      "pricing: twilio.unknown_body_segments: must be an integer from 1 "
                      "to %d",
                      SEGMENTS_MAX);
        err = KB_E_CONFIG;
        goto out;
    }
    x.unknown_segments = (int64_t)json_integer_value(v);
    *cfg = x;
    memset(&x, 0, sizeof x);
    err = KB_OK;
out:
    meter__twilio_config_cleanup(&x);
    return err;
}

/* ---- requests ---- */

/* Per-segment price for destination `to` (may be NULL). */
static int64_t sms_price(const struct meter__twilio_cfg *cfg, const struct meter__form_pair *to)
{
    int64_t price = cfg->sms_default;
    size_t best = 0;

    for (size_t i = 0; to && i < cfg->nsms; i++) {
        size_t pl = strlen(cfg->sms[i].prefix);
        if (pl > best && pl <= to->vlen && memcmp(to->val, cfg->sms[i].prefix, pl) == 0) {
            best = pl;
            price = cfg->sms[i].micros;
        }
    }
    return price;
}

/* "Messages", "Messages.json", "Messages.xml": the resource, any format. */
static bool resource_is(const char *seg, size_t len, const char *name)
{
    size_t nl = strlen(name);
    return len >= nl && memcmp(seg, name, nl) == 0 && (len == nl || seg[nl] == '.');
}

struct twilio_state {
    int64_t per_segment; /* price of one segment of this SMS */
};

/* An SMS settles at Twilio's own segment count when the response has it. */
static int64_t settle_sms(struct kb_meter *m, bool complete)
{
    const struct twilio_state *st = m->state;
    int64_t cost = m->reserve, segs = -1;
    json_t *root = NULL;

    (void)complete;
    if (m->body_over || !m->body.data)
        goto out;
    root = json_loadb(m->body.data, m->body.len, 0, NULL);
    json_t *v = json_object_get(root, "num_segments");
    if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < 5) {
        /* Twilio sends it as a string: "2". */
        const char *s = json_string_value(v);
        segs = 0;
        for (size_t i = 0; s[i]; i++)
            segs = s[i] >= '0' && s[i] <= '9' ? segs * 10 + (s[i] - '0') : -1000000;
    } else if (json_is_integer(v)) {
        segs = (int64_t)json_integer_value(v);
    }
    if (segs >= 1 && segs <= SEGMENTS_MAX)
        cost = meter__mul_sat(segs, st->per_segment);
out:
    json_decref(root);
    return cost;
}

static const struct meter__ops sms_ops = {NULL, settle_sms, free};

static enum kb_err message(struct kb_meter *m, const struct meter__form *f, char **errmsg)
{
    const struct meter__twilio_cfg *cfg = &m->p->twilio;
    const struct meter__form_pair *body = NULL, *to = NULL;
    enum kb_err err;
    bool media = false;
    int64_t segs, price;

    if ((err = meter__form_get(f, "Body", &body, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "To", &to, errmsg)) != KB_OK)
        return err;
    for (size_t i = 0; i < f->n && !media; i++)
        media = strcmp(f->v[i].key, "MediaUrl") == 0;
    if (media) {
        m->reserve = m->on_success = cfg->mms;
        return KB_OK;
    }
    segs = body ? meter__sms_segments(body->val, body->vlen) : cfg->unknown_segments;
    price = sms_price(cfg, to);
    struct twilio_state *st = kb_calloc(1, sizeof *st);
    st->per_segment = price;
    m->state = st;
    m->ops = &sms_ops;
    m->reserve = meter__mul_sat(segs, price);
    m->body_cap = RESPONSE_CAP;
    return KB_OK;
}

static enum kb_err call(struct kb_meter *m, const struct meter__form *f, char **errmsg)
{
    const struct meter__twilio_cfg *cfg = &m->p->twilio;
    const struct meter__form_pair *tl = NULL;
    enum kb_err err;
    int64_t secs = 0;

    if ((err = meter__form_get(f, "TimeLimit", &tl, errmsg)) != KB_OK)
        return err;
    if (!tl) {
        m->reserve = m->on_success = cfg->call_estimate;
        return KB_OK;
    }
    for (size_t i = 0; i < tl->vlen && secs <= TIME_LIMIT_MAX; i++)
        secs = tl->val[i] >= '0' && tl->val[i] <= '9' ? secs * 10 + (tl->val[i] - '0')
                                                      : TIME_LIMIT_MAX + 1;
    if (tl->vlen == 0 || secs < 1 || secs > TIME_LIMIT_MAX) {
        kb_set_errmsg(errmsg, "TimeLimit must be a number of seconds from 1 to %d", TIME_LIMIT_MAX);
        return KB_E_INVALID;
    }
    m->reserve = m->on_success = meter__mul_sat((secs + 59) / 60, cfg->call_per_minute);
    return KB_OK;
}

enum kb_err meter__twilio_begin(struct kb_meter *m, const struct kb_meter_req *req, bool *metered,
                                char **errmsg)
{
    enum kb_err err = KB_OK;
    struct meter__form f = {0};
    const char *seg[5];
    size_t len[5];
    size_t n;
    bool msg, calls;

    if (strcmp(req->method, "POST") != 0)
        goto out;
    n = meter__path_split(req->path, req->path_len, seg, len, 4);
    if (n != 4 || !meter__seg_is(seg[0], len[0], "2010-04-01") ||
        !meter__seg_is(seg[1], len[1], "Accounts") || len[2] == 0)
        goto out;
    msg = resource_is(seg[3], len[3], "Messages");
    calls = resource_is(seg[3], len[3], "Calls");
    if (!msg && !calls)
        goto out;
    *metered = true;
    if ((err = meter__form_parse(req->body, req->body_len, &f, errmsg)) != KB_OK)
        goto out;
    err = msg ? message(m, &f, errmsg) : call(m, &f, errmsg);
out:
    meter__form_cleanup(&f);
    return err;
}
