/*
 * twilio_config.c - reads the "twilio" section of pricing.json into struct
 * meter__twilio_cfg (twilio.c prices requests with it).
 *
 * Most prices are tables by destination: an object of prefixes of To ("+1",
 * "+44", or for channels and call endpoints "whatsapp:+1", "client:") and a
 * required "default"; where a flat price makes sense (mms_per_message,
 * call_per_minute, channel_per_message, each number type) a single price
 * string is accepted too and applies everywhere. Unknown keys are refused so
 * that a typo cannot drop a price.
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "meter/meter_int.h"

/* A segment count above this is not believed (unknown_body_segments). */
#define SEGMENTS_MAX 1000
/* Longest minutes figure accepted for call_estimate_minutes. */
#define ESTIMATE_MINUTES_MAX 1440

static const char *const twilio_keys[] = {"sms_per_segment",
                                          "mms_per_message",
                                          "channel_per_message",
                                          "call_per_minute",
                                          "call_estimate",
                                          "call_estimate_minutes",
                                          "recording_per_minute",
                                          "conference_per_participant_minute",
                                          "machine_detection_per_call",
                                          "engagement_per_message",
                                          "failed_message_fee",
                                          "number_per_month",
                                          "unknown_body_segments",
                                          NULL};
static const char *const number_keys[] = {"local", "mobile", "toll_free", NULL};

static void table_cleanup(struct meter__prefix_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].prefix);
    free(t->v);
    memset(t, 0, sizeof *t);
}

void meter__twilio_config_cleanup(struct meter__twilio_cfg *cfg)
{
    for (size_t i = 0; i < cfg->nsms; i++)
        free(cfg->sms[i].prefix);
    free(cfg->sms);
    cfg->sms = NULL;
    cfg->nsms = 0;
    table_cleanup(&cfg->mms);
    table_cleanup(&cfg->channel);
    table_cleanup(&cfg->call);
    for (size_t i = 0; i < METER__NUMBER_TYPES; i++)
        table_cleanup(&cfg->number[i]);
}

/* "+" and 1-15 digits; with `scheme`, also a lowercase "name:" optionally
 * followed by that ("whatsapp:", "whatsapp:+1", "client:"). */
static bool is_prefix_key(const char *k, bool scheme)
{
    size_t i = 0, n = strlen(k);
    if (scheme) {
        while (i < n && k[i] >= 'a' && k[i] <= 'z')
            i++;
        if (i > 0 && i < n && k[i] == ':') {
            if (++i == n)
                return true;
        } else {
            i = 0;
        }
    }
    if (n - i < 2 || n - i > 16 || k[i] != '+')
        return false;
    for (i++; i < n; i++)
        if (k[i] < '0' || k[i] > '9')
            return false;
    return true;
}

/* Reads a prefix table: an object of prefixes and a required "default", or,
 * when allow_flat, one price string that applies everywhere. */
static enum kb_err table_parse(json_t *v, const char *where, bool allow_flat, bool scheme,
                               struct meter__prefix_table *out, char **errmsg)
{
    enum kb_err err = KB_E_CONFIG;
    struct meter__prefix_table t = {0};
    bool have_default = false;
    const char *k;
    json_t *e;

    if (allow_flat && (json_is_string(v) || json_is_integer(v))) {
        err = meter__price_parse(v, where, &t.dflt, errmsg);
        if (err == KB_OK)
            *out = t;
        return err;
    }
    if (!json_is_object(v)) {
        kb_set_errmsg(errmsg,
                      "pricing: %s: must be an object of destination prefixes (\"+1\") and "
                      "\"default\"",
                      where);
        return KB_E_CONFIG;
    }
    t.v = kb_calloc(json_object_size(v) + 1, sizeof *t.v);
    json_object_foreach(v, k, e)
    {
        if (k[0] == '_')
            continue;
        char *w = kb_asprintf("%s.%s", where, k);
        int64_t price = 0;
        if (strcmp(k, "default") != 0 && !is_prefix_key(k, scheme)) {
            kb_set_errmsg(errmsg, "pricing: %s: a key is \"default\" or \"+\" and digits%s", w,
                          scheme ? " (optionally after a lowercase \"channel:\")" : "");
            err = KB_E_CONFIG;
        } else {
            err = meter__price_parse(e, w, &price, errmsg);
        }
        free(w);
        if (err != KB_OK)
            goto out;
        if (strcmp(k, "default") == 0) {
            t.dflt = price;
            have_default = true;
        } else {
            t.v[t.n].prefix = kb_strdup(k);
            t.v[t.n].micros = price;
            t.n++;
        }
    }
    if (!have_default) {
        kb_set_errmsg(errmsg, "pricing: %s.default: missing", where);
        err = KB_E_CONFIG;
        goto out;
    }
    *out = t;
    memset(&t, 0, sizeof t);
    err = KB_OK;
out:
    table_cleanup(&t);
    return err;
}

static enum kb_err int_parse(json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                             char **errmsg)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        kb_set_errmsg(errmsg, "pricing: twilio.%s: must be an integer from %lld to %lld", key,
                      (long long)lo, (long long)hi);
        return KB_E_CONFIG;
    }
    *out = (int64_t)json_integer_value(v);
    return KB_OK;
}

enum kb_err meter__twilio_config(json_t *obj, struct meter__twilio_cfg *cfg, char **errmsg)
{
    enum kb_err err;
    struct meter__twilio_cfg x = {0};
    struct meter__prefix_table sms = {0};
    json_t *num;

    if ((err = meter__keys_check(obj, "twilio", twilio_keys, errmsg)) != KB_OK)
        goto out;
    if ((err = table_parse(json_object_get(obj, "sms_per_segment"), "twilio.sms_per_segment", false,
                           false, &sms, errmsg)) != KB_OK)
        goto out;
    x.sms = sms.v;
    x.nsms = sms.n;
    x.sms_default = sms.dflt;
    memset(&sms, 0, sizeof sms);
    if ((err = table_parse(json_object_get(obj, "mms_per_message"), "twilio.mms_per_message", true,
                           false, &x.mms, errmsg)) != KB_OK ||
        (err = table_parse(json_object_get(obj, "channel_per_message"),
                           "twilio.channel_per_message", true, true, &x.channel, errmsg)) !=
            KB_OK ||
        (err = table_parse(json_object_get(obj, "call_per_minute"), "twilio.call_per_minute", true,
                           true, &x.call, errmsg)) != KB_OK)
        goto out;
    num = json_object_get(obj, "number_per_month");
    if (!json_is_object(num)) {
        kb_set_errmsg(errmsg, "pricing: twilio.number_per_month: must be an object with local, "
                              "mobile and toll_free");
        err = KB_E_CONFIG;
        goto out;
    }
    if ((err = meter__keys_check(num, "twilio.number_per_month", number_keys, errmsg)) != KB_OK)
        goto out;
    for (size_t i = 0; i < METER__NUMBER_TYPES; i++) {
        char *w = kb_asprintf("twilio.number_per_month.%s", number_keys[i]);
        err =
            table_parse(json_object_get(num, number_keys[i]), w, true, false, &x.number[i], errmsg);
        free(w);
        if (err != KB_OK)
            goto out;
    }
    if ((err = meter__member_price(obj, "twilio", "call_estimate", -1, &x.call_estimate, errmsg)) !=
            KB_OK ||
        (err = meter__member_price(obj, "twilio", "recording_per_minute", -1,
                                   &x.recording_per_minute, errmsg)) != KB_OK ||
        (err = meter__member_price(obj, "twilio", "conference_per_participant_minute", -1,
                                   &x.conference_per_minute, errmsg)) != KB_OK ||
        (err = meter__member_price(obj, "twilio", "machine_detection_per_call", -1, &x.amd_per_call,
                                   errmsg)) != KB_OK ||
        (err = meter__member_price(obj, "twilio", "engagement_per_message", -1,
                                   &x.engagement_per_message, errmsg)) != KB_OK ||
        (err = meter__member_price(obj, "twilio", "failed_message_fee", -1, &x.failed_message_fee,
                                   errmsg)) != KB_OK ||
        (err = int_parse(obj, "call_estimate_minutes", 1, ESTIMATE_MINUTES_MAX,
                         &x.call_estimate_minutes, errmsg)) != KB_OK ||
        (err = int_parse(obj, "unknown_body_segments", 1, SEGMENTS_MAX, &x.unknown_segments,
                         errmsg)) != KB_OK)
        goto out;
    *cfg = x;
    memset(&x, 0, sizeof x);
    err = KB_OK;
out:
    table_cleanup(&sms);
    meter__twilio_config_cleanup(&x);
    return err;
}
