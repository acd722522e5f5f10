/*
 * keys_patch.c - what PATCH /v1/keys/{id} may change, validated on the
 * admin loop before anything is written: "daily_usd_cap" (exact USD, as
 * at issuance) and/or "expires_in" (a new TTL counted from now, at most
 * the configured max_ttl). keys.c runs the change as a store writer job
 * with its audit record and publishes the key in the revocation log as a
 * change, so every worker reads it again on its next use; admission reads
 * cap and expiry in its own transaction (proxy/admit.c), so even a stale
 * cached key cannot overshoot a lowered cap.
 *
 * Also the narrower scopes given at issuance: allowed_models (openai and
 * anthropic keys; checked by the meter, meter/meter.h) and
 * max_amount_per_request (stripe keys; checked by the Stripe meter).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/alloc.h"
#include "core/duration.h"
#include "core/money.h"
#include "core/runtime.h"
#include "vendor/profile.h"

/* A TTL as issuance takes it: whole seconds as an integer, or a duration
 * string of whole seconds ("30s", "5m", "2h"). */
static bool ttl_parse(json_t *ttl, int64_t *ms)
{
    if (json_is_integer(ttl))
        return json_integer_value(ttl) > 0 && json_integer_value(ttl) <= INT64_MAX / 1000 &&
               (*ms = json_integer_value(ttl) * 1000, true);
    if (json_is_string(ttl))
        return duration_parse_ms(json_string_value(ttl), json_string_length(ttl), ms) == KB_OK &&
               *ms > 0 && *ms % 1000 == 0;
    return false;
}

bool admin__key_patch_parse(struct kb_admin *a, const char *raw, size_t rawlen, json_t *body,
                            int64_t now, struct kb_key_change *c, char **detail, const char **field,
                            char **msg)
{
    const char *name;
    json_t *v;
    json_object_foreach(body, name, v)
    {
        if (strcmp(name, "daily_usd_cap") != 0 && strcmp(name, "expires_in") != 0) {
            *field = name;
            *msg = kb_asprintf("unknown field \"%s\" (a key's daily_usd_cap and expires_in may "
                               "be changed)",
                               name);
            return false;
        }
    }
    memset(c, 0, sizeof *c);
    if (json_object_get(body, "daily_usd_cap")) {
        const char *num;
        size_t numlen;
        char *merr = NULL;
        if (money_json_number(raw, rawlen, "daily_usd_cap", &num, &numlen) != KB_OK ||
            money_parse(num, numlen, &c->cap, &merr) != KB_OK) {
            *field = "daily_usd_cap";
            *msg = kb_asprintf("daily_usd_cap must be a non-negative USD amount with at most 6 "
                               "decimals%s%s",
                               merr ? ": " : "", merr ? merr : "");
            free(merr);
            return false;
        }
        c->has_cap = true;
    }
    json_t *ttl = json_object_get(body, "expires_in");
    if (ttl) {
        int64_t ms = 0;
        if (!ttl_parse(ttl, &ms)) {
            *field = "expires_in";
            *msg = kb_asprintf("expires_in must be whole seconds as an integer, or \"30s\", "
                               "\"5m\", \"2h\"");
            return false;
        }
        int64_t max_ttl_ms = runtime_limit(&a->rt->limits.max_ttl_ms);
        if (ms > max_ttl_ms) {
            *field = "expires_in";
            *msg = kb_asprintf("expires_in exceeds the maximum of %lld seconds from now",
                               (long long)(max_ttl_ms / 1000));
            return false;
        }
        c->has_expires = true;
        c->expires_at = now + ms / 1000;
    }
    if (!c->has_cap && !c->has_expires) {
        *field = "daily_usd_cap";
        *msg = kb_asprintf("nothing to change: give daily_usd_cap and/or expires_in");
        return false;
    }
    /* the audit detail says what was set, exactly */
    char capb[32];
    json_t *d = json_object();
    if (c->has_cap)
        json_object_set_new(d, "daily_usd_cap",
                            json_string(money_format(c->cap, capb, sizeof capb)));
    if (c->has_expires)
        json_object_set_new(d, "expires_at", json_integer(c->expires_at));
    *detail = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(d);
    return true;
}

#define MAX_MODELS 64    /* allowed_models entries */
#define MAX_MODEL_ID 128 /* bytes of one model id */

bool admin__key_scopes_parse(const char *raw, size_t rawlen, json_t *body, struct kb_key *k,
                             const char **field, char **msg)
{
    const struct kb_vendor_profile *vp = vendor_profile(k->vendor);
    bool llm = vp && vp->names_models;
    bool payments = vp && vp->moves_payments;
    json_t *mods = json_object_get(body, "allowed_models");
    if (mods && !json_is_null(mods)) {
        size_t n = json_array_size(mods);
        bool ok = llm && json_is_array(mods) && n >= 1 && n <= MAX_MODELS;
        for (size_t i = 0; ok && i < n; i++) {
            const char *id = json_string_value(json_array_get(mods, i));
            ok = id && admin__valid_text(id, MAX_MODEL_ID) && !strchr(id, ' ');
        }
        if (!ok) {
            *field = "allowed_models";
            *msg = llm ? kb_asprintf("allowed_models must be an array of 1-%d exact model ids "
                                     "(1-%d printable bytes, no spaces)",
                                     MAX_MODELS, MAX_MODEL_ID)
                       : kb_asprintf("allowed_models applies to openai and anthropic keys only");
            return false;
        }
        k->allowed_models = json_dumps(mods, JSON_COMPACT);
    }
    json_t *max = json_object_get(body, "max_amount_per_request");
    if (max && !json_is_null(max)) {
        const char *num;
        size_t numlen;
        char *merr = NULL;
        if (!payments ||
            money_json_number(raw, rawlen, "max_amount_per_request", &num, &numlen) != KB_OK ||
            money_parse(num, numlen, &k->max_amount, &merr) != KB_OK || k->max_amount <= 0) {
            *field = "max_amount_per_request";
            *msg = !payments
                       ? kb_asprintf("max_amount_per_request applies to stripe keys only")
                       : kb_asprintf("max_amount_per_request must be a positive USD amount with "
                                     "at most 6 decimals%s%s",
                                     merr ? ": " : "", merr ? merr : "");
            free(merr);
            k->max_amount = 0;
            return false;
        }
    }
    return true;
}
