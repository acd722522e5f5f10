/*
 * stripe_ledger.c - settling a Stripe request, and the per-key object
 * ledger that makes money count once per key however many requests touch
 * it (meter.h, meter_ledger_*).
 *
 * The ledger holds, per (vault key, object id), the micro-dollars this key
 * was already charged for that object. A PaymentIntent or Charge create is
 * charged its amount and records the answer's id; a later confirm, capture,
 * increment or update of that object costs only what its new total exceeds
 * the entry by. An invoice or quote collects what this key charged for it
 * (invoice items with invoice=in_..., finalize, send, pay), so each amount
 * due is charged once. A money-moving request carrying an Idempotency-Key
 * records "idem:<mac>" (the mac covers Stripe-Account, method, path, body
 * and key): a later identical request is Stripe's replay and costs nothing,
 * but only once the first one's charge is recorded - while it is in flight
 * the second is charged in full (fail closed) - and only for 23 hours,
 * since Stripe forgets keys after 24.
 *
 * The entries are written only after a 2xx, and never lowered
 * (store_object_charge_set keeps the larger figure), so a race between two
 * requests on one object can only over-count.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/money.h"
#include "meter/stripe_int.h"

/* How long an Idempotency-Key entry counts: Stripe may prune a key once it
 * is 24 hours old; our record is made after Stripe saw the key, so an hour
 * of margin covers any request's latency. */
#define IDEM_MAX_AGE_S (23 * 3600)

void stripe__state_free(void *state)
{
    struct stripe__state *st = state;
    if (!st)
        return;
    free(st->object);
    free(st->created);
    free(st);
}

static bool is_total(const struct stripe__state *st)
{
    switch (st->route->rule) {
    case SR_PI_UPDATE:
    case SR_CONFIRM:
    case SR_CAPTURE:
    case SR_INCREMENT:
    case SR_INVOICE_DUE:
    case SR_INVOICE_UPDATE:
    case SR_QUOTE_TOTAL:
        return true;
    default:
        return false;
    }
}

/* What the object already cost this key (0 for none, or for an
 * Idempotency-Key entry, which is not the object's money). */
static int64_t prior(const struct stripe__state *st)
{
    return st->idem || st->charged < 0 ? 0 : st->charged;
}

static int64_t sub0(int64_t a, int64_t b)
{
    return a > b ? a - b : 0;
}

int64_t stripe__reserve_for(const struct stripe__state *st, int64_t charged)
{
    struct stripe__state x = *st;
    x.charged = charged;
    if (x.idem && charged >= 0)
        return 0; /* a replay: Stripe moves nothing again */
    if (is_total(&x)) {
        /* The request sets the object's total: the rise over its entry. */
        if (x.bound >= 0)
            return sub0(x.bound, prior(&x));
        if (!x.idem && charged >= 0 && (x.route->flags & STRIPE_BOUNDED))
            return 0; /* the entry is the object's amount (this key set it) */
        return x.unknown < 0 ? -1 : sub0(x.unknown, prior(&x));
    }
    if (x.bound >= 0)
        return x.bound;
    return x.unknown;
}

/* The figure `key` of the 2xx answer in USD, or -1 when unreadable. */
static int64_t answer_amount(struct kb_meter *m, json_t *root, const char *key)
{
    int64_t amount = 0, out = -1;
    char *em = NULL;
    json_t *cur = json_object_get(root, "currency");

    if (!key || !meter__json_uint(root, key, &amount) || !json_is_string(cur))
        return -1;
    if (stripe__convert(&m->p->stripe, json_string_value(cur), json_string_length(cur),
                        meter__mul_sat(amount, 1000000), &out, &em) != KB_OK)
        out = -1; /* a currency without a rate: the reservation stands */
    free(em);
    return out;
}

static int64_t settle(struct kb_meter *m, bool complete)
{
    struct stripe__state *st = m->state;
    json_t *root = NULL;
    int64_t cost, t = -1;

    (void)complete; /* a cut body does not parse: the fallbacks below apply */
    st->settled = true;
    if (st->idem && st->charged >= 0) {
        st->cost = 0;
        return 0;
    }
    /* Only what answer_amount and the id record read is built. */
    const struct meter__jkeep keep[] = {
        {"currency", NULL}, {"id", NULL}, {st->route->resp_key, NULL}, {NULL, NULL}};
    if (!m->body_over && m->body.data)
        root = meter__json_loadb(m->body.data, m->body.len, METER_JSON_KEPT_ONCE, keep, NULL);
    if (json_is_object(root)) {
        t = answer_amount(m, root, st->route->resp_key);
        json_t *id = json_object_get(root, "id");
        if ((st->route->flags & STRIPE_RECORD_ID) && json_is_string(id) &&
            json_string_length(id) > 0 && json_string_length(id) <= 255)
            st->created = kb_strdup(json_string_value(id));
    }
    if (is_total(st)) {
        if (t < 0 && st->bound_exact)
            t = st->bound;
        cost = t >= 0 ? sub0(t, prior(st)) : m->reserve;
    } else if (st->fixed >= 0) {
        cost = st->checkout_max && t > st->fixed ? t : st->fixed;
    } else {
        cost = t >= 0 ? t : m->reserve;
    }
    json_decref(root);
    if (cost > KB_MONEY_MAX_MICROS)
        cost = KB_MONEY_MAX_MICROS;
    st->cost = cost;
    return cost;
}

const struct meter__ops stripe__ops = {NULL, settle, stripe__state_free};

/* The meter's Stripe state, or NULL for any other request. */
static struct stripe__state *state_of(const struct kb_meter *m)
{
    return m && m->ops == &stripe__ops ? m->state : NULL;
}

const char *meter_ledger_object(const struct kb_meter *m, int64_t *max_age_s)
{
    const struct stripe__state *st = state_of(m);
    if (max_age_s)
        *max_age_s = st && st->idem ? IDEM_MAX_AGE_S : 0;
    return st ? st->object : NULL;
}

int64_t meter_ledger_reserve(struct kb_meter *m, int64_t charged)
{
    struct stripe__state *st = state_of(m);
    if (!st || !st->object)
        return m ? m->reserve : 0;
    int64_t r = stripe__reserve_for(st, charged < 0 ? -1 : charged);
    if (r < 0)
        r = m->reserve; /* cannot happen: begin refused such requests */
    st->charged = charged < 0 ? -1 : charged;
    m->reserve = r > KB_MONEY_MAX_MICROS ? KB_MONEY_MAX_MICROS : r;
    return m->reserve;
}

const char *meter_ledger_entry(const struct kb_meter *m, size_t i, int64_t *total)
{
    const struct stripe__state *st = state_of(m);
    const char *ids[2];
    int64_t totals[2];
    size_t n = 0;

    if (!st || !st->settled || m->status < 200 || m->status > 299)
        return NULL;
    if (st->idem && st->charged >= 0)
        return NULL; /* a replay: everything was recorded the first time */
    if (st->created) {
        ids[n] = st->created;
        totals[n++] = st->cost;
    }
    if (st->object) {
        ids[n] = st->object;
        totals[n++] = st->idem ? st->cost : meter__add_sat(prior(st), st->cost);
    }
    if (i >= n)
        return NULL;
    if (total)
        *total = totals[i];
    return ids[i];
}

/* Appends a length-prefixed field, so that no two requests share a MAC
 * input by moving bytes between fields. */
static void field(struct kb_buf *b, const char *s, size_t n)
{
    char len[24];
    int k = snprintf(len, sizeof len, "%zu:", n);
    buf_append(b, len, (size_t)k);
    if (n)
        buf_append(b, s, n);
}

char *stripe__idem_id(const struct kb_meter_req *req, const char *idem_key, const char *account)
{
    /* A fixed MAC key: this is a hash that keeps ids short and the key's
     * text out of the store, not a secret. */
    static const uint8_t mac_key[] = "keybrake stripe idempotency v1";
    struct kb_buf b = {0};
    uint8_t mac[KB_HASH_LEN];
    char hex[2 * KB_HASH_LEN + 1];

    field(&b, account ? account : "", account ? strlen(account) : 0);
    field(&b, req->method, strlen(req->method));
    field(&b, req->path, req->path_len);
    field(&b, req->body ? req->body : "", req->body_len);
    field(&b, req->query ? req->query : "", req->query ? req->query_len : 0);
    field(&b, idem_key, strlen(idem_key));
    crypto_hmac(mac_key, sizeof mac_key - 1, b.data, b.len, mac);
    buf_cleanup(&b);
    crypto_hex(mac, sizeof mac, hex);
    hex[2 * KB_HASH_LEN] = '\0';
    return kb_asprintf("idem:%s", hex);
}
