/*
 * stripe.c - the Stripe meter: money-moving requests cost the money they
 * move, converted to USD.
 *
 * The proxy has already turned a JSON body into Stripe's form encoding (and
 * folded the query string of a write into it), so this reads
 * `amount=1000&currency=usd`, keys and values percent-decoded, with Stripe's
 * bracket syntax (`line_items[0][price_data][unit_amount]`). A money field
 * that Stripe could read two ways - given twice with different values, as
 * a scalar and as a hash (`amount=1&amount[]=2`), in another letter case,
 * or an index written two ways (`items[0]`, `items[00]`) - is refused with
 * KB_E_AMBIGUOUS_REQUEST.
 *
 * An amount is in the currency's minor unit: USD cents, yen for the
 * zero-decimal currencies, thousandths for the three-decimal ones, per
 * stripe.minor_unit_exponents in pricing.json. A currency other than USD
 * needs a rate in stripe.currency_rates (USD per unit, a decimal string) or
 * the request is refused with KB_E_CURRENCY_NOT_SUPPORTED; the embedded file
 * has no rates, so non-USD is refused until the operator sets one. An
 * amount whose currency the request does not state (a capture, an
 * increment) is bounded at the dearest configured currency, which for the
 * shipped file is USD exactly.
 *
 * Which endpoint costs what is the table in stripe_routes.c; how earlier
 * charges for the same object on the same key count (confirm, capture,
 * Idempotency-Key replays) is stripe_ledger.c. docs/metering.md explains
 * each.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/money.h"
#include "meter/stripe_int.h"

/* Stripe response objects are small; a checkout session with many items
 * stays well below this. */
#define RESPONSE_CAP (1024 * 1024)
/* Longest object id kept for the ledger (Stripe ids are ~30 bytes). */
#define OBJECT_ID_MAX 255
/* Fields read from one request: a checkout with 100 line items of ten
 * fields each and full metadata stays far below. */
#define MAX_FORM_FIELDS 4096

/* ---- rules ---- */

/* `key` (an amount in minor units) with `currency` from the body: the
 * exact cost when both are there, a bound at the dearest currency when
 * only the amount is, *bound -1 when the amount is absent. */
static enum kb_err rule_amount(const struct meter__stripe_cfg *cfg, const struct meter__form *f,
                               const char *key, bool with_currency, int64_t *bound, bool *exact,
                               char **errmsg)
{
    const struct meter__form_pair *amount = NULL, *currency = NULL;
    enum kb_err err;
    int64_t mm = 0;

    *bound = -1;
    *exact = false;
    if ((err = stripe__sget(f, key, &amount, errmsg)) != KB_OK ||
        (with_currency && (err = stripe__sget(f, "currency", &currency, errmsg)) != KB_OK))
        return err;
    if (!amount)
        return KB_OK;
    if (!stripe__parse_int_minor(amount, &mm)) {
        kb_set_errmsg(errmsg, "%s must be an integer amount in minor units", key);
        return KB_E_INVALID;
    }
    if (!currency) {
        *bound = stripe__convert_any(cfg, mm);
        return KB_OK;
    }
    *exact = true;
    return stripe__convert(cfg, currency->val, currency->vlen, mm, bound, errmsg);
}

/* Invoice items (and subscription items): amount, or unit_amount(_decimal)
 * or price_data[...] times quantity. With `update`, a request touching
 * none of them costs zero (*cost 0); *cost -1 when the amount is unknown. */
static enum kb_err rule_item(const struct meter__stripe_cfg *cfg, const struct meter__form *f,
                             bool update, int64_t *cost, char **errmsg)
{
    const struct meter__form_pair *amount, *q, *price, *cur, *pdcur, *ua, *uad, *pua, *puad;
    enum kb_err err;
    int64_t mm = 0, qty = 1;
    bool exact;

    *cost = 0;
    if ((err = stripe__sget(f, "amount", &amount, errmsg)) != KB_OK ||
        (err = stripe__sget(f, "quantity", &q, errmsg)) != KB_OK ||
        (err = stripe__sget(f, "price", &price, errmsg)) != KB_OK ||
        (err = stripe__sget(f, "currency", &cur, errmsg)) != KB_OK ||
        (err = stripe__sget(f, "price_data[currency]", &pdcur, errmsg)) != KB_OK ||
        (err = stripe__sget(f, "unit_amount", &ua, errmsg)) != KB_OK ||
        (err = stripe__sget(f, "unit_amount_decimal", &uad, errmsg)) != KB_OK ||
        (err = stripe__sget(f, "price_data[unit_amount]", &pua, errmsg)) != KB_OK ||
        (err = stripe__sget(f, "price_data[unit_amount_decimal]", &puad, errmsg)) != KB_OK)
        return err;
    if (amount) {
        if ((err = rule_amount(cfg, f, "amount", true, cost, &exact, errmsg)) != KB_OK)
            return err;
        if (!exact)
            *cost = -1; /* the currency of an existing item: read from the answer */
        return KB_OK;
    }
    if (!ua && !uad) {
        ua = pua;
        uad = puad;
        if (pdcur)
            cur = pdcur;
    }
    if (update && !ua && !uad && !q && !price)
        return KB_OK; /* metadata, description, ... */
    if ((!ua && !uad) || !cur) {
        *cost = -1;
        return KB_OK;
    }
    if ((ua && !stripe__parse_int_minor(ua, &mm)) || (!ua && !stripe__parse_dec_minor(uad, &mm))) {
        kb_set_errmsg(errmsg, "unit_amount must be an amount in minor units");
        return KB_E_INVALID;
    }
    if (!stripe__parse_qty(q, 1, &qty)) {
        kb_set_errmsg(errmsg, "quantity must be a non-negative integer");
        return KB_E_INVALID;
    }
    return stripe__convert(cfg, cur->val, cur->vlen, meter__mul_sat(mm, qty), cost, errmsg);
}

/* Top-level keys of a subscription update that move no money now (the
 * next renewal, which Keybrake never sees, is not this request's cost). */
static const char *const sub_free_keys[] = {"metadata",
                                            "description",
                                            "default_payment_method",
                                            "default_source",
                                            "cancel_at_period_end",
                                            "cancel_at",
                                            "cancellation_details",
                                            "pause_collection",
                                            "payment_settings",
                                            "collection_method",
                                            "days_until_due",
                                            "off_session",
                                            "proration_behavior",
                                            "proration_date",
                                            "payment_behavior",
                                            "expand",
                                            "discounts",
                                            "coupon",
                                            "promotion_code",
                                            "invoice_settings",
                                            "on_behalf_of",
                                            "transfer_data",
                                            "application_fee_percent",
                                            "trial_from_plan",
                                            "items",
                                            "add_invoice_items",
                                            NULL};

/* True when every key of f is metadata or in `allowed` (by its name up to
 * the first '['). */
static bool only_keys(const struct meter__form *f, const char *const *allowed)
{
    for (size_t i = 0; i < f->n; i++) {
        const char *k = f->v[i].key;
        size_t n = strcspn(k, "[");
        bool ok = false;
        for (size_t j = 0; allowed[j] && !ok; j++)
            ok = strlen(allowed[j]) == n && memcmp(k, allowed[j], n) == 0;
        if (!ok)
            return false;
    }
    return true;
}

/* ---- API v2 bodies ---- */

/* amount[value] and amount[currency] of a v2 request, JSON or transcoded. */
static enum kb_err v2_amount(const struct meter__stripe_cfg *cfg, const struct kb_meter_req *req,
                             const struct meter__form *f, int64_t *bound, char **errmsg)
{
    enum kb_err err;
    json_t *root = NULL;
    char num[24];
    const char *cur = NULL;
    size_t cur_len = 0;
    struct meter__form_pair v = {0};

    *bound = -1;
    if (req->content_type && strncasecmp(req->content_type, "application/json", 16) == 0) {
        if ((err = meter__json_body(req, &root, errmsg)) != KB_OK)
            return err;
        json_t *amount = json_object_get(root, "amount");
        json_t *value = json_object_get(amount, "value");
        json_t *c = json_object_get(amount, "currency");
        if (json_is_integer(value)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(value));
            v.val = num;
            v.vlen = strlen(num);
        } else if (json_is_string(value)) {
            v.val = (char *)json_string_value(value);
            v.vlen = json_string_length(value);
        }
        if (json_is_string(c)) {
            cur = json_string_value(c);
            cur_len = json_string_length(c);
        }
    } else {
        const struct meter__form_pair *a = NULL, *c = NULL;
        if ((err = stripe__sget(f, "amount[value]", &a, errmsg)) != KB_OK ||
            (err = stripe__sget(f, "amount[currency]", &c, errmsg)) != KB_OK)
            return err;
        if (a)
            v = *a;
        if (c) {
            cur = c->val;
            cur_len = c->vlen;
        }
    }
    err = KB_OK;
    if (v.val && cur) {
        int64_t mm;
        if (!stripe__parse_int_minor(&v, &mm)) {
            kb_set_errmsg(errmsg, "amount.value must be an integer amount in minor units");
            err = KB_E_INVALID;
        } else {
            err = stripe__convert(cfg, cur, cur_len, mm, bound, errmsg);
        }
    }
    json_decref(root);
    return err;
}

/* ---- begin ---- */

/* The body, and the query string when the proxy forwards one on a write
 * (it should have folded it into the body; both are read, so a key given
 * in each is ambiguous rather than read from one). */
static enum kb_err parse_request(const struct kb_meter_req *req, struct meter__form *f,
                                 char **errmsg)
{
    struct meter__form q = {0};
    enum kb_err err = KB_OK;
    /* A JSON body (API v2 sent as is) is read by v2_amount, not as a form. */
    bool json = req->content_type && strncasecmp(req->content_type, "application/json", 16) == 0;

    if (json && req->body_len && (req->path_len < 4 || strncasecmp(req->path, "/v2/", 4) != 0)) {
        /* v1 takes forms; the proxy transcodes JSON before metering */
        kb_set_errmsg(errmsg, "a Stripe v1 request body must be form-encoded");
        return KB_E_INVALID;
    }
    if (!json &&
        (err = meter__form_parse(req->body ? req->body : "", req->body_len, f, errmsg)) != KB_OK)
        return err;
    if (req->query && req->query_len) {
        if ((err = meter__form_parse(req->query, req->query_len, &q, errmsg)) != KB_OK)
            return err;
        f->v = kb_realloc(f->v, (f->n + q.n + 1) * sizeof *f->v);
        memcpy(f->v + f->n, q.v, q.n * sizeof *q.v);
        f->n += q.n;
        free(q.v); /* the pairs' strings now belong to f */
    }
    if (f->n > MAX_FORM_FIELDS) {
        /* Every money field is looked up across the whole form: bound the
         * work a request can make the event loop do. */
        kb_set_errmsg(errmsg, "the form body has more than %d fields", MAX_FORM_FIELDS);
        return KB_E_INVALID;
    }
    return KB_OK;
}

/* A copy of an id segment fit for the ledger, or NULL. Stripe's ids are
 * printable ASCII; anything else (a percent-decoded byte >= 0x80 in a form
 * field, say) names no Stripe object, and must not reach the store, whose
 * text columns may refuse it (PostgreSQL refuses what is not UTF-8, and
 * that would fail every request of the writer's batch). */
static char *object_id(const char *s, size_t n)
{
    if (n == 0 || n > OBJECT_ID_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return NULL;
    return kb_strndup(s, n);
}

/* Reads the request's amount per its route into st; *free_req is set when
 * this particular request moves no money (an update touching no amount). */
static enum kb_err price(const struct meter__stripe_cfg *cfg, const struct kb_meter_req *req,
                         const struct meter__form *f, struct stripe__state *st, bool *free_req,
                         bool *claimed, char **errmsg)
{
    const struct stripe__route *r = st->route;
    const struct meter__form_pair *v = NULL, *cur = NULL;
    enum kb_err err = KB_OK;
    int64_t sum = 0;
    bool unknown = false, exact = false;

    switch (r->rule) {
    case SR_AMOUNT:
        err = rule_amount(cfg, f, "amount", true, &st->bound, &exact, errmsg);
        if (exact)
            st->fixed = st->bound;
        break;
    case SR_AMOUNT_NOCUR:
        err = rule_amount(cfg, f, "amount", false, &st->bound, &exact, errmsg);
        break;
    case SR_PI_UPDATE:
        if ((err = stripe__sget(f, "amount", &v, errmsg)) != KB_OK ||
            (err = stripe__sget(f, "currency", &cur, errmsg)) != KB_OK)
            break;
        if (!v && !cur) {
            *free_req = true; /* metadata, payment method, shipping, ... */
            break;
        }
        err = rule_amount(cfg, f, "amount", true, &st->bound, &st->bound_exact, errmsg);
        break;
    case SR_CONFIRM:
    case SR_INVOICE_DUE:
    case SR_QUOTE_TOTAL:
    case SR_UNKNOWN:
        if (r->rule == SR_INVOICE_DUE &&
            (err = stripe__sget(f, "paid_out_of_band", &v, errmsg)) == KB_OK &&
            stripe__val_is(v, "true"))
            *free_req = true; /* paid outside Stripe: marks it, moves nothing */
        break;
    case SR_CAPTURE:
        err = rule_amount(
            cfg, f, strcmp(r->seg[1], "payment_intents") == 0 ? "amount_to_capture" : "amount",
            false, &st->bound, &exact, errmsg);
        break;
    case SR_INCREMENT:
        err = rule_amount(cfg, f, "amount", false, &st->bound, &exact, errmsg);
        break;
    case SR_INVOICEITEM:
    case SR_INVOICEITEM_UPDATE:
    case SR_SUBITEM:
        err = rule_item(cfg, f, r->rule != SR_INVOICEITEM, &sum, errmsg);
        if (err == KB_OK && sum == 0 && r->rule != SR_INVOICEITEM)
            *free_req = true;
        st->bound = st->fixed = sum;
        break;
    case SR_CHECKOUT:
        if ((err = stripe__sget(f, "mode", &v, errmsg)) != KB_OK ||
            (err = stripe__sget(f, "currency", &cur, errmsg)) != KB_OK)
            break;
        if (stripe__val_is(v, "setup")) {
            *free_req = true; /* saves a payment method, moves no money */
            break;
        }
        if ((err = stripe__sum_items(cfg, f, "line_items", cur, false, &sum, &unknown, errmsg)) !=
                KB_OK ||
            (err = stripe__max_shipping(cfg, f, cur, &sum, &unknown, errmsg)) != KB_OK)
            break;
        if (!unknown) {
            st->bound = st->fixed = sum;
            st->checkout_max = true; /* tax, and what Stripe adds: its amount_total */
        }
        break;
    case SR_SUB_UPDATE:
        if (only_keys(f, sub_free_keys) == false) {
            unknown = true; /* billing_cycle_anchor, trial_end, tax rates, ... */
            break;
        }
        if ((err = stripe__sget(f, "currency", &cur, errmsg)) != KB_OK ||
            (err = stripe__sum_items(cfg, f, "items", cur, true, &sum, &unknown, errmsg)) !=
                KB_OK ||
            (err = stripe__sum_items(cfg, f, "add_invoice_items", cur, true, &sum, &unknown,
                                     errmsg)) != KB_OK)
            break;
        if (!unknown && sum == 0)
            *free_req = true;
        else if (!unknown)
            st->bound = st->fixed = sum;
        break;
    case SR_SUBSCRIPTION:
        if ((err = stripe__sget(f, "currency", &cur, errmsg)) != KB_OK ||
            (err = stripe__sum_items(cfg, f, "items", cur, false, &sum, &unknown, errmsg)) !=
                KB_OK ||
            (err = stripe__sum_items(cfg, f, "add_invoice_items", cur, false, &sum, &unknown,
                                     errmsg)) != KB_OK)
            break;
        if (!unknown)
            st->bound = st->fixed = sum;
        break;
    case SR_INVOICE_CREATE:
        if ((err = stripe__sget(f, "pending_invoice_items_behavior", &v, errmsg)) != KB_OK)
            break;
        /* A new draft is empty unless it pulls in pending items, copies
         * another invoice or adds shipping; its amount_due settles it. */
        st->bound = 0;
        for (size_t i = 0; i < f->n; i++)
            if (strncmp(f->v[i].key, "from_invoice", 12) == 0 ||
                strncmp(f->v[i].key, "shipping_cost", 13) == 0)
                st->bound = -1;
        if (stripe__val_is(v, "include"))
            st->bound = -1;
        break;
    case SR_INVOICE_UPDATE:
        *free_req = true;
        for (size_t i = 0; i < f->n; i++)
            if (strncmp(f->v[i].key, "shipping_cost", 13) == 0)
                *free_req = false; /* priced as a finalize: amount_due */
        break;
    case SR_CUSTOMER:
        if ((err = stripe__sget(f, "balance", &v, errmsg)) != KB_OK)
            break;
        if (!v) {
            *free_req = true; /* name, email, address, payment method, ... */
            break;
        }
        /* The customer's currency is not in the request. The previous
         * balance is unknown too, so the whole new balance counts. */
        err = rule_amount(cfg, f, "balance", false, &st->bound, &exact, errmsg);
        st->fixed = st->bound;
        break;
    case SR_PAYMENT_LINK_UPDATE: {
        static const char *const link_free[] = {"metadata", "active", NULL};
        if ((err = stripe__sget(f, "active", &v, errmsg)) != KB_OK)
            break;
        /* Deactivating or labelling a link is free; anything that could let
         * it take (more) money is refused like creating one. */
        if (only_keys(f, link_free) && (!v || stripe__val_is(v, "false")))
            *free_req = true;
        else
            *claimed = false;
        break;
    }
    case SR_V2_AMOUNT:
        err = v2_amount(cfg, req, f, &st->bound, errmsg);
        st->fixed = st->bound;
        break;
    case SR_FREE:
        *free_req = true;
        break;
    }
    return err;
}

enum kb_err meter__stripe_begin(struct kb_meter *m, const struct kb_meter_req *req, bool *metered,
                                char **new_body, size_t *new_len, char **errmsg)
{
    (void)new_body; /* the request goes as sent */
    (void)new_len;
    enum kb_err err = KB_OK;
    const struct meter__stripe_cfg *cfg = &m->p->stripe;
    const struct stripe__route *r;
    struct meter__form f = {0};
    struct stripe__state *st = NULL;
    const char *id = NULL, *idem, *account;
    size_t id_len = 0;
    int idem_n = 0, account_n = 0;
    bool free_req = false, claimed = true;

    if (strcmp(req->method, "POST") != 0 ||
        !(r = stripe__route_find(req->path, req->path_len, &id, &id_len)))
        goto out; /* reads and unlisted endpoints: not claimed here */
    if (r->rule == SR_FREE) {
        *metered = true; /* free by declaration */
        goto out;
    }
    if ((err = parse_request(req, &f, errmsg)) != KB_OK)
        goto out;
    st = kb_calloc(1, sizeof *st);
    st->route = r;
    st->bound = st->fixed = st->charged = -1;
    st->unknown = cfg->unknown_amount_reserve;
    if ((err = price(cfg, req, &f, st, &free_req, &claimed, errmsg)) != KB_OK)
        goto out;
    *metered = claimed;
    if (!claimed || free_req)
        goto out;

    /* The ledger object whose earlier charges on this key count. */
    idem = hdr_find(req->headers, req->nheaders, "Idempotency-Key", &idem_n);
    account = hdr_find(req->headers, req->nheaders, "Stripe-Account", &account_n);
    if (idem_n > 1 || account_n > 1) {
        kb_set_errmsg(errmsg, "the %s header is given more than once",
                      idem_n > 1 ? "Idempotency-Key" : "Stripe-Account");
        err = KB_E_AMBIGUOUS_REQUEST;
        goto out;
    }
    if (r->flags & STRIPE_OBJECT) {
        st->object = object_id(id, id_len);
    } else if (r->flags & STRIPE_ADD) {
        const struct meter__form_pair *inv = NULL;
        if ((err = stripe__sget(&f, "invoice", &inv, errmsg)) != KB_OK)
            goto out;
        if (inv)
            st->object = object_id(inv->val, inv->vlen);
    }
    if (!st->object && !(r->flags & STRIPE_OBJECT) && idem && idem[0]) {
        st->object = stripe__idem_id(req, idem, account);
        st->idem = true;
    }

    m->reserve = stripe__reserve_for(st, -1);
    if (m->reserve < 0) {
        kb_set_errmsg(errmsg, "the amount of this request cannot be read from its body; "
                              "set stripe.unknown_amount_reserve in the pricing file to "
                              "allow it");
        err = KB_E_INVALID;
        goto out;
    }
    /* The key's ceiling per request, on the amount the request states, in
     * USD. One that states none (a confirm, a capture of the whole, a
     * subscription to a price) may move any amount: refused on such a key. */
    if (req->max_amount > 0 && st->bound < 0) {
        kb_set_errmsg(errmsg,
                      "this request does not state the amount it moves, and this vault key has a "
                      "max_amount_per_request: state it (e.g. amount, amount_to_capture)");
        err = KB_E_AMOUNT_TOO_LARGE;
        goto out;
    }
    int64_t amount = st->bound;
    if (req->max_amount > 0 && amount > req->max_amount) {
        char a[32], c[32];
        kb_set_errmsg(errmsg,
                      "the payment amount (USD %s) exceeds this vault key's "
                      "max_amount_per_request (USD %s)",
                      money_format(amount, a, sizeof a),
                      money_format(req->max_amount, c, sizeof c));
        err = KB_E_AMOUNT_TOO_LARGE;
        goto out;
    }
    /* Every claimed, non-free Stripe write moves money: a 5xx may have. */
    m->charge_on_5xx = true;
    m->body_cap = RESPONSE_CAP;
    m->ops = &stripe__ops;
    m->state = st;
    st = NULL;
out:
    stripe__state_free(st);
    meter__form_cleanup(&f);
    return err;
}
