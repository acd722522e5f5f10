/*
 * twilio.c - the Twilio meter: a cost class for every write of the REST API
 * under /2010-04-01/Accounts/{sid}/, and the rules that price them.
 *
 * The table `routes` below is the one place that says what each POST costs
 * (docs/metering.md mirrors it). Path segments compare case-insensitively and
 * the last one may carry any format extension (.json, .xml, none), because
 * that is how Twilio routes them. Classes:
 *
 *   message   Messages: per SMS segment (twilio_segments.c), per MMS
 *             (MediaUrl or SendAsMms), or per message to a channel address
 *             ("whatsapp:+..."), each by the longest configured prefix of To.
 *   call      Calls and conference Participants (an outbound call leg): the
 *             per-minute price of To (plus recording per minute when the leg
 *             is recorded), times every started minute of TimeLimit, else the
 *             call estimate; plus answering machine detection per call.
 *   number    IncomingPhoneNumbers[/Local|Mobile|TollFree]: one month of the
 *             number fee by type and number prefix.
 *   free      updates that move no money (redact or cancel a message, hang up
 *             a call, mute a participant, configuration resources).
 *
 * Everything else is left unclaimed, so meter.c refuses it with
 * endpoint_not_metered unless an operator prices it: add-ons billed per
 * minute for an unknown time (call recordings, transcriptions, streams,
 * SIPREC), payments, number add-ons, and resources that mint credentials
 * (subaccounts, API keys, signing keys, ICE tokens) that could spend outside
 * the proxy.
 *
 * Parameters are read from the form body and the query string alike, names
 * case-insensitively: a parameter given twice with different values is
 * ambiguous_request, since which one Twilio reads is unknown.
 *
 * Twilio prices a message after delivery (price is null in the 201 reply),
 * so a 2xx message settles at the estimate - for an SMS at the reply's
 * num_segments when present, at the reply's price when Twilio already set
 * it, and at the failed-message fee when the reply says "failed". A number
 * purchase settles at the price of the type the reply names. Calls settle at
 * their reservation. Non-2xx answers follow meter.c's common rules.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/money.h"
#include "meter/meter_int.h"

/* Longest call TimeLimit accepted: 24 hours (Twilio's default cap is 4 h). */
#define TIME_LIMIT_MAX 86400
/* Twilio's message and number resources are a few KiB. */
#define RESPONSE_CAP (64 * 1024)
/* A response num_segments above this is not believed. */
#define SEGMENTS_MAX 1000
/* Deepest route below /Accounts/{sid}/ (SIP/Domains/{sid}/Auth/Calls/...). */
#define ROUTE_DEPTH 6

/* ---- prices ---- */

/* The price for destination `to` (may be NULL): the longest matching prefix
 * (compared case-insensitively: "WhatsApp:" is "whatsapp:"), else the
 * default. *matched tells whether a prefix matched (may be NULL). */
static int64_t prefix_price(const struct meter__prefix_price *v, size_t n, int64_t dflt,
                            const char *to, size_t to_len, bool *matched)
{
    int64_t price = dflt;
    size_t best = 0;

    for (size_t i = 0; to && i < n; i++) {
        size_t pl = strlen(v[i].prefix);
        if (pl > best && pl <= to_len && strncasecmp(to, v[i].prefix, pl) == 0) {
            best = pl;
            price = v[i].micros;
        }
    }
    if (matched) /* a table of one flat price prices every destination */
        *matched = best > 0 || n == 0;
    return price;
}

static int64_t lookup(const struct meter__prefix_table *t, const struct meter__form_pair *to,
                      bool *matched)
{
    return prefix_price(t->v, t->n, t->dflt, to ? to->val : NULL, to ? to->vlen : 0, matched);
}

/* Per-segment SMS price for `to` (may be NULL). */
static int64_t sms_price(const struct meter__twilio_cfg *cfg, const struct meter__form_pair *to)
{
    return prefix_price(cfg->sms, cfg->nsms, cfg->sms_default, to ? to->val : NULL,
                        to ? to->vlen : 0, NULL);
}

/* The highest price in t: for a destination that is not known. */
static int64_t table_max(const struct meter__prefix_table *t)
{
    int64_t m = t->dflt;
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].micros > m)
            m = t->v[i].micros;
    return m;
}

/* ---- request parameters ---- */

/* The form body and the query string: which of them Twilio reads a
 * parameter from is not documented, so both are read. */
struct params {
    struct meter__form body;  /* decoded form body */
    struct meter__form query; /* decoded query string */
};

static void params_cleanup(struct params *p)
{
    meter__form_cleanup(&p->body);
    meter__form_cleanup(&p->query);
}

static bool key_is(const struct meter__form_pair *pr, const char *key)
{
    return pr->klen == strlen(key) && strncasecmp(pr->key, key, pr->klen) == 0;
}

/* The one value of `key` (any letter case, body or query): *val NULL when
 * absent; two different values are ambiguous_request. */
static enum kb_err param_get(const struct params *p, const char *key,
                             const struct meter__form_pair **val, char **errmsg)
{
    const struct meter__form *forms[2] = {&p->body, &p->query};
    const struct meter__form_pair *found = NULL;

    for (size_t f = 0; f < 2; f++) {
        for (size_t i = 0; i < forms[f]->n; i++) {
            const struct meter__form_pair *pr = &forms[f]->v[i];
            if (!key_is(pr, key))
                continue;
            if (!found) {
                found = pr;
            } else if (found->vlen != pr->vlen || memcmp(found->val, pr->val, pr->vlen) != 0) {
                kb_set_errmsg(errmsg, "parameter \"%s\" is given twice with different values", key);
                return KB_E_AMBIGUOUS_REQUEST;
            }
        }
    }
    *val = found;
    return KB_OK;
}

/* A parameter that may repeat (MediaUrl): false when absent, true when some
 * value is not empty; *all_empty tells that every value given was empty. */
static bool param_any(const struct params *p, const char *key, bool *all_empty)
{
    const struct meter__form *forms[2] = {&p->body, &p->query};
    bool seen = false;

    *all_empty = false;
    for (size_t f = 0; f < 2; f++) {
        for (size_t i = 0; i < forms[f]->n; i++) {
            if (!key_is(&forms[f]->v[i], key))
                continue;
            if (forms[f]->v[i].vlen > 0)
                return true;
            seen = true;
        }
    }
    *all_empty = seen;
    return false;
}

/* A boolean parameter as Twilio may read it; anything unclear is MAYBE,
 * and the rules price MAYBE like true (or the dearer of both). */
enum tri {
    TRI_ABSENT = 0, /* not given */
    TRI_FALSE = 1,  /* "false" in any case */
    TRI_TRUE = 2,   /* "true" in any case */
    TRI_MAYBE = 3   /* anything else */
};

static enum kb_err param_bool(const struct params *p, const char *key, enum tri *out, char **errmsg)
{
    const struct meter__form_pair *v = NULL;
    enum kb_err err = param_get(p, key, &v, errmsg);
    if (err != KB_OK)
        return err;
    if (!v)
        *out = TRI_ABSENT;
    else if (v->vlen == 5 && strncasecmp(v->val, "false", 5) == 0)
        *out = TRI_FALSE;
    else if (v->vlen == 4 && strncasecmp(v->val, "true", 4) == 0)
        *out = TRI_TRUE;
    else
        *out = TRI_MAYBE;
    return KB_OK;
}

/* A parameter given with a non-empty value other than the listed "off"
 * values (NULL-terminated, any case). */
static enum kb_err param_on(const struct params *p, const char *key, const char *const *off,
                            bool *out, char **errmsg)
{
    const struct meter__form_pair *v = NULL;
    enum kb_err err = param_get(p, key, &v, errmsg);
    if (err != KB_OK)
        return err;
    *out = v && v->vlen > 0;
    for (size_t i = 0; *out && off && off[i]; i++)
        if (v->vlen == strlen(off[i]) && strncasecmp(v->val, off[i], v->vlen) == 0)
            *out = false;
    return KB_OK;
}

/* ---- settlement ---- */

enum msg_kind {
    MSG_SMS = 0,  /* per segment: num_segments from the reply is believed */
    MSG_FLAT = 1, /* MMS or channel message: one price per message */
};

struct msg_state {
    enum msg_kind kind;
    int64_t per_segment; /* MSG_SMS: price of one segment */
    int64_t mms_alt;     /* MSG_SMS that may go as an MMS (a template): its
                            price, charged when the reply counts media; -1 */
    int64_t extra;       /* engagement fee charged with any sent message */
    int64_t failed_fee;  /* what a reply saying "failed" costs */
};

/* Twilio's own price of the message ("-0.00830", USD), when already set. */
static bool reply_price(json_t *root, int64_t *out)
{
    json_t *price = json_object_get(root, "price"), *unit = json_object_get(root, "price_unit");
    const char *s;
    size_t n;
    char *em = NULL;
    bool ok;

    if (!json_is_string(price) || !json_is_string(unit) ||
        strcasecmp(json_string_value(unit), "USD") != 0)
        return false;
    s = json_string_value(price);
    n = json_string_length(price);
    if (n > 0 && s[0] == '-') /* Twilio reports charges as negative amounts */
        s++, n--;
    ok = n > 0 && money_parse(s, n, out, &em) == KB_OK;
    free(em);
    return ok;
}

static int64_t settle_message(struct kb_meter *m, bool complete)
{
    const struct msg_state *st = m->state;
    int64_t cost = m->reserve, segs = -1, price;
    json_t *root = NULL, *v;

    (void)complete; /* the message was accepted once a 2xx status arrived */
    if (m->body_over || !m->body.data)
        goto out;
    root = meter__json_loadb(m->body.data, m->body.len, JSON_REJECT_DUPLICATES, NULL, NULL);
    if (!json_is_object(root))
        goto out;
    if (reply_price(root, &price)) {
        cost = meter__add_sat(price, st->extra);
        goto out;
    }
    v = json_object_get(root, "status");
    if (json_is_string(v) && strcmp(json_string_value(v), "failed") == 0) {
        /* Never left Twilio: only the failed-message processing fee. */
        cost = st->failed_fee;
        goto out;
    }
    if (st->kind != MSG_SMS)
        goto out;
    v = json_object_get(root, "num_segments");
    if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < 5) {
        /* Twilio sends it as a string: "2". */
        const char *s = json_string_value(v);
        segs = 0;
        for (size_t i = 0; s[i]; i++)
            segs = s[i] >= '0' && s[i] <= '9' ? segs * 10 + (s[i] - '0') : -1000000;
    } else if (json_is_integer(v)) {
        segs = (int64_t)json_integer_value(v);
    }
    /* "0" (a Messaging Service has not picked a sender yet) keeps the estimate. */
    if (segs >= 1 && segs <= SEGMENTS_MAX)
        cost = meter__add_sat(meter__mul_sat(segs, st->per_segment), st->extra);
    v = json_object_get(root, "num_media");
    if (st->mms_alt >= 0 && json_is_string(v) && json_string_length(v) > 0 &&
        strcmp(json_string_value(v), "0") != 0) {
        /* A template that carried media went as an MMS. */
        int64_t mms = meter__add_sat(st->mms_alt, st->extra);
        if (mms > cost)
            cost = mms;
    }
out:
    json_decref(root);
    return cost;
}

static const struct meter__ops message_ops = {NULL, settle_message, free};

/* A purchased number costs the month of the type the reply names. */
static int64_t settle_number(struct kb_meter *m, bool complete)
{
    const struct meter__twilio_cfg *cfg = &m->p->twilio;
    int64_t cost = m->reserve;
    json_t *root = NULL, *type, *num;
    char t[16];
    size_t k = 0;
    int idx = -1;

    (void)complete;
    if (m->body_over || !m->body.data)
        goto out;
    root = meter__json_loadb(m->body.data, m->body.len, JSON_REJECT_DUPLICATES, NULL, NULL);
    type = json_object_get(root, "type");
    num = json_object_get(root, "phone_number");
    if (!json_is_string(type) || !json_is_string(num))
        goto out;
    /* "local", "mobile", "toll-free", "toll free", "tollfree": letters only. */
    for (const char *s = json_string_value(type); *s && k < sizeof t - 1; s++)
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))
            t[k++] = (char)(*s | 0x20);
    t[k] = '\0';
    if (strcmp(t, "local") == 0)
        idx = METER__NUMBER_LOCAL;
    else if (strcmp(t, "mobile") == 0)
        idx = METER__NUMBER_MOBILE;
    else if (strcmp(t, "tollfree") == 0)
        idx = METER__NUMBER_TOLL_FREE;
    if (idx >= 0)
        cost = prefix_price(cfg->number[idx].v, cfg->number[idx].n, cfg->number[idx].dflt,
                            json_string_value(num), json_string_length(num), NULL);
out:
    json_decref(root);
    return cost;
}

static const struct meter__ops number_ops = {NULL, settle_number, NULL};

/* ---- rules ---- */

static enum kb_err message(struct kb_meter *m, const struct params *p, char **errmsg)
{
    const struct meter__twilio_cfg *cfg = &m->p->twilio;
    const struct meter__form_pair *body = NULL, *to = NULL, *sched = NULL, *send_at = NULL,
                                  *content = NULL;
    enum kb_err err;
    enum tri as_mms, shorten;
    int64_t segs, sms, flat = -1, extra = 0, mms_alt = -1;
    bool matched = false, media_empty = false, media;

    if ((err = param_get(p, "Body", &body, errmsg)) != KB_OK ||
        (err = param_get(p, "To", &to, errmsg)) != KB_OK ||
        (err = param_get(p, "ScheduleType", &sched, errmsg)) != KB_OK ||
        (err = param_get(p, "SendAt", &send_at, errmsg)) != KB_OK ||
        (err = param_bool(p, "SendAsMms", &as_mms, errmsg)) != KB_OK ||
        (err = param_bool(p, "ShortenUrls", &shorten, errmsg)) != KB_OK ||
        (err = param_get(p, "ContentSid", &content, errmsg)) != KB_OK)
        return err;
    media = param_any(p, "MediaUrl", &media_empty);
    /* Scheduling and link shortening are Engagement Suite features, billed
     * per message on top of the message itself. */
    if ((sched && sched->vlen) || (send_at && send_at->vlen) ||
        (shorten != TRI_ABSENT && shorten != TRI_FALSE))
        extra = cfg->engagement_per_message;
    segs = body ? meter__sms_segments(body->val, body->vlen) : cfg->unknown_segments;
    if (content && content->vlen) {
        /* A content template replaces Body with text of its own, and may
         * carry media: its worst case, whatever Body says. */
        if (segs < cfg->unknown_segments)
            segs = cfg->unknown_segments;
        mms_alt = lookup(&cfg->mms, to, NULL);
    }
    sms = meter__mul_sat(segs, sms_price(cfg, to));
    if (mms_alt > sms)
        sms = mms_alt;

    if (to && memchr(to->val, ':', to->vlen)) {
        /* "whatsapp:+1...", "rcs:+1...", "messenger:...": per message. */
        flat = lookup(&cfg->channel, to, NULL);
    } else if (media || as_mms == TRI_TRUE) {
        flat = lookup(&cfg->mms, to, &matched);
        /* Where MMS has no price of its own Twilio may send it as SMS
         * (with a link): the dearer of the two. */
        if (!matched && sms > flat)
            flat = sms;
    } else if (as_mms == TRI_MAYBE || media_empty) {
        /* A SendAsMms value Twilio might read either way, or MediaUrl
         * given empty: the dearer of MMS and SMS. */
        flat = lookup(&cfg->mms, to, NULL);
        if (sms > flat)
            flat = sms;
    }
    struct msg_state *st = kb_calloc(1, sizeof *st);
    st->kind = flat >= 0 ? MSG_FLAT : MSG_SMS;
    st->per_segment = sms_price(cfg, to);
    st->mms_alt = mms_alt;
    st->extra = extra;
    st->failed_fee = cfg->failed_message_fee;
    m->state = st;
    m->ops = &message_ops;
    m->reserve = meter__add_sat(flat >= 0 ? flat : sms, extra);
    m->body_cap = RESPONSE_CAP;
    return KB_OK;
}

/* True when s (n bytes) contains needle in any letter case. */
static bool has_ci(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(s + i, needle, k) == 0)
            return true;
    return false;
}

/* Per minute, what inline TwiML (the Twiml parameter, visible to us unlike
 * a Url's) adds to the call it runs in: a <Dial>ed leg at the dearest price
 * among the "+number"s it holds, or the dearest configured price when it may
 * dial anything else (Client, SIP, a national number); conference minutes
 * for <Conference>; recording for anything that records. */
static int64_t twiml_cost(const struct meter__twilio_cfg *cfg, const struct meter__form_pair *tw)
{
    const char *s = tw ? tw->val : NULL;
    size_t n = tw ? tw->vlen : 0;
    int64_t extra = 0, leg = -1;
    bool other;

    if (n == 0)
        return 0;
    if (has_ci(s, n, "<dial")) {
        other = has_ci(s, n, "<client") || has_ci(s, n, "<sip") || has_ci(s, n, "<application") ||
                has_ci(s, n, "<whatsapp");
        for (size_t i = 0; i < n;) {
            char num[18];
            size_t k = 0, j = i;
            bool plus = s[i] == '+';
            if (plus)
                num[k++] = '+', j++;
            /* Digits, with the separators people write between them. */
            for (; j < n && k < sizeof num - 1; j++) {
                if (s[j] >= '0' && s[j] <= '9')
                    num[k++] = s[j];
                else if (s[j] == '\0' || !strchr(" -.()", s[j]))
                    break;
            }
            if (plus && k >= 2) {
                int64_t c = prefix_price(cfg->call.v, cfg->call.n, cfg->call.dflt, num, k, NULL);
                if (c > leg)
                    leg = c;
            } else if (!plus && k >= 7) {
                other = true; /* a national number: its country is a guess */
            }
            i = j > i ? j : i + 1;
        }
        if (other || (leg < 0 && !has_ci(s, n, "<conference") && !has_ci(s, n, "<queue")))
            leg = table_max(&cfg->call);
        if (leg > 0)
            extra = leg;
    }
    if (has_ci(s, n, "<conference"))
        extra = meter__add_sat(extra, cfg->conference_per_minute);
    if (has_ci(s, n, "record"))
        extra = meter__add_sat(extra, cfg->recording_per_minute);
    return extra;
}

enum call_kind {
    CALL_CREATE = 0,      /* Calls: a new outbound call */
    CALL_PARTICIPANT = 1, /* Conferences/{sid}/Participants: a new call leg */
    CALL_UPDATE = 2,      /* Calls/{sid}: costs only when it sets TimeLimit */
    CALL_VALIDATION = 3   /* OutgoingCallerIds: Twilio calls PhoneNumber */
};

static enum kb_err call(struct kb_meter *m, const struct params *p, enum call_kind kind,
                        char **errmsg)
{
    static const char *const record_off[] = {"false", "do-not-record", NULL};
    const struct meter__twilio_cfg *cfg = &m->p->twilio;
    const struct meter__form_pair *tl = NULL, *to = NULL, *tw = NULL;
    enum kb_err err;
    enum tri record = TRI_ABSENT;
    bool conf_record = false, amd = false;
    int64_t secs = 0, per_min = 0, cost, minutes, twiml;

    if ((err = param_get(p, "TimeLimit", &tl, errmsg)) != KB_OK ||
        (err = param_get(p, kind == CALL_VALIDATION ? "PhoneNumber" : "To", &to, errmsg)) != KB_OK)
        return err;
    if (kind == CALL_CREATE || kind == CALL_PARTICIPANT) {
        if ((err = param_bool(p, "Record", &record, errmsg)) != KB_OK ||
            (err = param_on(p, "MachineDetection", NULL, &amd, errmsg)) != KB_OK)
            return err;
        if (kind == CALL_PARTICIPANT &&
            (err = param_on(p, "ConferenceRecord", record_off, &conf_record, errmsg)) != KB_OK)
            return err;
    }
    if ((kind == CALL_CREATE || kind == CALL_UPDATE) &&
        (err = param_get(p, "Twiml", &tw, errmsg)) != KB_OK)
        return err;
    twiml = twiml_cost(cfg, tw);
    if (kind == CALL_UPDATE && !tl && twiml == 0) {
        /* Redirect (a Url, TwiML that dials nobody) or hang up (Status):
         * the running call was reserved when it was created. */
        return KB_OK;
    }
    if (kind != CALL_UPDATE) {
        per_min = lookup(&cfg->call, to, NULL);
        if ((record != TRI_ABSENT && record != TRI_FALSE) || conf_record)
            per_min = meter__add_sat(per_min, cfg->recording_per_minute);
        /* Twilio bills a conference participant per minute on top of the leg. */
        if (kind == CALL_PARTICIPANT)
            per_min = meter__add_sat(per_min, cfg->conference_per_minute);
    } else if (tl) {
        /* A new TimeLimit may extend the call, which the update does not
         * name: the dearest destination configured, recorded, in a
         * conference. */
        per_min = meter__add_sat(table_max(&cfg->call), cfg->recording_per_minute);
        per_min = meter__add_sat(per_min, cfg->conference_per_minute);
    }
    per_min = meter__add_sat(per_min, twiml);
    if (tl) {
        for (size_t i = 0; i < tl->vlen && secs <= TIME_LIMIT_MAX; i++)
            secs = tl->val[i] >= '0' && tl->val[i] <= '9' ? secs * 10 + (tl->val[i] - '0')
                                                          : TIME_LIMIT_MAX + 1;
        if (tl->vlen == 0 || secs < 1 || secs > TIME_LIMIT_MAX) {
            kb_set_errmsg(errmsg, "TimeLimit must be a number of seconds from 1 to %d",
                          TIME_LIMIT_MAX);
            return KB_E_INVALID;
        }
        minutes = (secs + 59) / 60; /* Twilio bills every started minute */
    } else {
        minutes = cfg->call_estimate_minutes;
    }
    cost = meter__mul_sat(minutes, per_min);
    if (!tl && kind != CALL_UPDATE && cost < cfg->call_estimate)
        cost = cfg->call_estimate;
    if (amd)
        cost = meter__add_sat(cost, cfg->amd_per_call);
    m->reserve = m->on_success = cost;
    return KB_OK;
}

/* NANP toll-free area codes (800, 833, 844, 855, 866, 877, 888, and the
 * reserved 822 and 880-889, priced as toll-free to be safe). */
static bool nanp_toll_free(const char *npa)
{
    if (npa[0] != '8' || npa[1] < '0' || npa[1] > '9' || npa[2] < '0' || npa[2] > '9')
        return false;
    return (npa[1] == npa[2] && npa[1] != '0' && npa[1] != '1' && npa[1] != '9') ||
           (npa[1] == '0' && npa[2] == '0') || npa[1] == '8';
}

static enum kb_err number(struct kb_meter *m, const struct params *p, int type, char **errmsg)
{
    const struct meter__twilio_cfg *cfg = &m->p->twilio;
    const struct meter__form_pair *pn = NULL, *area = NULL;
    struct meter__form_pair nanp = {0};
    char buf[8];
    enum kb_err err;
    int64_t cost = 0;

    if ((err = param_get(p, "PhoneNumber", &pn, errmsg)) != KB_OK ||
        (err = param_get(p, "AreaCode", &area, errmsg)) != KB_OK)
        return err;
    if (!pn && area && area->vlen == 3) {
        /* An AreaCode alone buys a US or Canadian number. */
        memcpy(buf, "+1", 2);
        memcpy(buf + 2, area->val, 3);
        buf[5] = '\0';
        nanp.val = buf;
        nanp.vlen = 5;
        pn = &nanp;
    }
    if (type < 0 && pn && pn->vlen >= 5 && memcmp(pn->val, "+1", 2) == 0)
        type = nanp_toll_free(pn->val + 2) ? METER__NUMBER_TOLL_FREE : METER__NUMBER_LOCAL;
    if (type >= 0) {
        cost = lookup(&cfg->number[type], pn, NULL);
    } else {
        /* Type unknown: the dearest type for that number. */
        for (size_t i = 0; i < METER__NUMBER_TYPES; i++) {
            int64_t c = lookup(&cfg->number[i], pn, NULL);
            if (c > cost)
                cost = c;
        }
    }
    m->reserve = m->on_success = cost;
    m->ops = &number_ops;
    m->body_cap = RESPONSE_CAP;
    return KB_OK;
}

/* ---- routes ---- */

enum cls {
    C_FREE = 0,         /* moves no money: claimed at reserve 0 */
    C_MESSAGE = 1,      /* message() */
    C_CALL = 2,         /* call(CALL_CREATE) */
    C_PARTICIPANT = 3,  /* call(CALL_PARTICIPANT) */
    C_CALL_UPDATE = 4,  /* call(CALL_UPDATE) */
    C_VALIDATION = 5,   /* call(CALL_VALIDATION) */
    C_NUMBER = 6,       /* number(), type from the number */
    C_NUMBER_LOCAL = 7, /* number(), local */
    C_NUMBER_MOBILE = 8,
    C_NUMBER_TOLL_FREE = 9
};

struct route {
    const char *seg[ROUTE_DEPTH]; /* below /Accounts/{sid}/; "*" is any sid */
    enum cls cls;
};

/* Every POST below /2010-04-01/Accounts/{sid}/ of Twilio's OpenAPI
 * description (twilio/twilio-oai spec/json/twilio_api_v2010.json, read
 * 2026-12-03), first match wins. Not listed, hence refused unless priced by
 * an operator: Calls/{sid}/Recordings, Transcriptions, Siprec, Streams
 * (billed per minute for a time nobody knows up front), Calls/{sid}/Payments
 * (a payment connector charges cards), Calls/{sid}/UserDefinedMessages,
 * IncomingPhoneNumbers/{sid}/AssignedAddOns (billed per use), Keys,
 * SigningKeys and Tokens (credentials that could spend around the proxy). */
static const struct route routes[] = {
    {{"Messages"}, C_MESSAGE},
    {{"SMS", "Messages"}, C_MESSAGE}, /* the 2010 SMS resource still sends */
    {{"Messages", "*"}, C_FREE},      /* redact (Body="") or cancel a scheduled one */
    {{"Messages", "*", "Feedback"}, C_FREE},
    {{"Calls"}, C_CALL},
    {{"Calls", "*"}, C_CALL_UPDATE},
    {{"Calls", "*", "Recordings", "*"}, C_FREE}, /* pause, resume, stop */
    {{"Calls", "*", "Transcriptions", "*"}, C_FREE},
    {{"Calls", "*", "Siprec", "*"}, C_FREE},
    {{"Calls", "*", "Streams", "*"}, C_FREE},
    {{"Calls", "*", "UserDefinedMessageSubscriptions"}, C_FREE},
    {{"Conferences", "*"}, C_FREE}, /* end it, announce */
    {{"Conferences", "*", "Participants"}, C_PARTICIPANT},
    {{"Conferences", "*", "Participants", "*"}, C_FREE}, /* mute, hold, coach */
    {{"Conferences", "*", "Recordings", "*"}, C_FREE},
    {{"Queues"}, C_FREE},
    {{"Queues", "*"}, C_FREE},
    {{"Queues", "*", "Members", "*"}, C_FREE}, /* dequeue a running call */
    {{"IncomingPhoneNumbers"}, C_NUMBER},
    {{"IncomingPhoneNumbers", "Local"}, C_NUMBER_LOCAL},
    {{"IncomingPhoneNumbers", "Mobile"}, C_NUMBER_MOBILE},
    {{"IncomingPhoneNumbers", "TollFree"}, C_NUMBER_TOLL_FREE},
    {{"IncomingPhoneNumbers", "*"}, C_FREE}, /* configure an owned number */
    {{"OutgoingCallerIds"}, C_VALIDATION},
    {{"OutgoingCallerIds", "*"}, C_FREE},
    {{"Applications"}, C_FREE},
    {{"Applications", "*"}, C_FREE},
    {{"Addresses"}, C_FREE},
    {{"Addresses", "*"}, C_FREE},
    {{"ConnectApps", "*"}, C_FREE},
    {{"Keys", "*"}, C_FREE}, /* rename; creating one is refused */
    {{"SigningKeys", "*"}, C_FREE},
    {{"SMS", "ShortCodes", "*"}, C_FREE},
    {{"Usage", "Triggers"}, C_FREE},
    {{"Usage", "Triggers", "*"}, C_FREE},
    {{"SIP", "Domains"}, C_FREE},
    {{"SIP", "Domains", "*"}, C_FREE},
    {{"SIP", "Domains", "*", "CredentialListMappings"}, C_FREE},
    {{"SIP", "Domains", "*", "IpAccessControlListMappings"}, C_FREE},
    {{"SIP", "Domains", "*", "Auth", "Calls", "CredentialListMappings"}, C_FREE},
    {{"SIP", "Domains", "*", "Auth", "Calls", "IpAccessControlListMappings"}, C_FREE},
    {{"SIP", "Domains", "*", "Auth", "Registrations", "CredentialListMappings"}, C_FREE},
    {{"SIP", "CredentialLists"}, C_FREE},
    {{"SIP", "CredentialLists", "*"}, C_FREE},
    {{"SIP", "CredentialLists", "*", "Credentials"}, C_FREE},
    {{"SIP", "CredentialLists", "*", "Credentials", "*"}, C_FREE},
    {{"SIP", "IpAccessControlLists"}, C_FREE},
    {{"SIP", "IpAccessControlLists", "*"}, C_FREE},
    {{"SIP", "IpAccessControlLists", "*", "IpAddresses"}, C_FREE},
    {{"SIP", "IpAccessControlLists", "*", "IpAddresses", "*"}, C_FREE},
};

/* Segment (len bytes) is `name` in any letter case; `last` allows a format
 * extension (".json", ".xml"). "*" is any non-empty segment. */
static bool seg_match(const char *seg, size_t len, const char *name, bool last)
{
    size_t nl = strlen(name);
    if (strcmp(name, "*") == 0)
        return len > 0;
    if (len < nl || strncasecmp(seg, name, nl) != 0)
        return false;
    return len == nl || (last && seg[nl] == '.');
}

/* The route of the segments below the account, or NULL. */
static const struct route *route_find(const char **seg, const size_t *len, size_t n)
{
    for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
        size_t k = 0;
        while (k < ROUTE_DEPTH && routes[r].seg[k])
            k++;
        if (k != n)
            continue;
        bool ok = true;
        for (size_t i = 0; i < n && ok; i++)
            ok = seg_match(seg[i], len[i], routes[r].seg[i], i + 1 == n);
        if (ok)
            return &routes[r];
    }
    return NULL;
}

enum kb_err meter__twilio_begin(struct kb_meter *m, const struct kb_meter_req *req, bool *metered,
                                char **new_body, size_t *new_len, char **errmsg)
{
    (void)new_body; /* the request goes as sent */
    (void)new_len;
    enum kb_err err = KB_OK;
    struct params p = {0};
    const struct route *r = NULL;
    const char *seg[3 + ROUTE_DEPTH + 1];
    size_t len[3 + ROUTE_DEPTH + 1];
    size_t n;

    if (strcmp(req->method, "POST") != 0)
        goto out;
    n = meter__path_split(req->path, req->path_len, seg, len, 3 + ROUTE_DEPTH);
    if (n < 3 || n > 3 + ROUTE_DEPTH || !meter__seg_is(seg[0], len[0], "2010-04-01") ||
        !seg_match(seg[1], len[1], "Accounts", false) || len[2] == 0)
        goto out; /* Accounts.json (a subaccount and its credentials): refused */
    if (n == 3) {
        *metered = true; /* Accounts/{sid}: rename, suspend, close */
        goto out;
    }
    if (!(r = route_find(seg + 3, len + 3, n - 3)))
        goto out;
    *metered = true;
    if (r->cls == C_FREE)
        goto out;
    if ((err = meter__form_parse(req->body, req->body_len, &p.body, errmsg)) != KB_OK ||
        (req->query &&
         (err = meter__form_parse(req->query, req->query_len, &p.query, errmsg)) != KB_OK))
        goto out;
    switch (r->cls) {
    case C_MESSAGE:
        err = message(m, &p, errmsg);
        break;
    case C_CALL:
        err = call(m, &p, CALL_CREATE, errmsg);
        break;
    case C_PARTICIPANT:
        err = call(m, &p, CALL_PARTICIPANT, errmsg);
        break;
    case C_CALL_UPDATE:
        err = call(m, &p, CALL_UPDATE, errmsg);
        break;
    case C_VALIDATION:
        err = call(m, &p, CALL_VALIDATION, errmsg);
        break;
    case C_NUMBER:
        err = number(m, &p, -1, errmsg);
        break;
    case C_NUMBER_LOCAL:
        err = number(m, &p, METER__NUMBER_LOCAL, errmsg);
        break;
    case C_NUMBER_MOBILE:
        err = number(m, &p, METER__NUMBER_MOBILE, errmsg);
        break;
    case C_NUMBER_TOLL_FREE:
        err = number(m, &p, METER__NUMBER_TOLL_FREE, errmsg);
        break;
    case C_FREE:
        break;
    }
out:
    params_cleanup(&p);
    return err;
}
