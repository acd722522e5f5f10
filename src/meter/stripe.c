/*
 * stripe.c - the Stripe meter: money-moving requests cost the money they
 * move, converted to USD.
 *
 * The proxy has already turned a JSON body into Stripe's form encoding, so
 * this reads `amount=1000&currency=usd` (keys and values percent-decoded).
 * An amount is in the currency's minor unit: USD cents, yen for the
 * zero-decimal currencies, thousandths for the three-decimal ones, per
 * stripe.minor_unit_exponents in pricing.json. A currency other than USD
 * needs a rate in stripe.currency_rates (USD per unit, a decimal string) or
 * the request is refused with KB_E_CURRENCY_NOT_SUPPORTED; the embedded file
 * has no rates, so non-USD is refused until the operator sets one.
 *
 * Which requests cost what is the table `routes` below (docs/metering.md
 * explains each). When the amount is not in the request (checkout with
 * price ids, paying an invoice, a payout without currency), the request
 * reserves stripe.unknown_amount_reserve - or is refused when that is not
 * configured - and settles from the amount in Stripe's 2xx response when it
 * carries one, else at the reservation. A 2xx whose amount was read from the
 * request settles at that amount; a non-2xx costs zero.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/money.h"
#include "meter/meter_int.h"

/* Line items read from one request: Stripe allows 100 per checkout. */
#define MAX_ITEMS 250
/* Quantity a customer may choose when adjustable_quantity[maximum] is absent
 * (Stripe's default maximum). */
#define ADJUSTABLE_DEFAULT_MAX 99
/* Stripe response objects are small; a checkout session with many items
 * stays well below this. */
#define RESPONSE_CAP (1024 * 1024)

static const int64_t pow10_tab[] = {1LL,         10LL,         100LL,         1000LL,
                                    10000LL,     100000LL,     1000000LL,     10000000LL,
                                    100000000LL, 1000000000LL, 10000000000LL, 100000000000LL};

/* ---- configuration ---- */

static const char *const stripe_keys[] = {"currency_rates", "minor_unit_exponents",
                                          "unknown_amount_reserve", NULL};

/* Three ASCII letters, lowercased into out. */
static bool currency_code(const char *s, size_t n, char out[4])
{
    if (n != 3)
        return false;
    for (size_t i = 0; i < 3; i++) {
        if (!isalpha((unsigned char)s[i]))
            return false;
        out[i] = (char)tolower((unsigned char)s[i]);
    }
    out[3] = '\0';
    return true;
}

static struct meter__currency *cur_find(const struct meter__stripe_cfg *cfg, const char *code)
{
    for (size_t i = 0; i < cfg->ncur; i++)
        if (strcmp(cfg->cur[i].code, code) == 0)
            return &cfg->cur[i];
    return NULL;
}

static struct meter__currency *cur_add(struct meter__stripe_cfg *cfg, const char *code)
{
    struct meter__currency *c = cur_find(cfg, code);
    if (c)
        return c;
    cfg->cur = kb_realloc(cfg->cur, (cfg->ncur + 1) * sizeof *cfg->cur);
    c = &cfg->cur[cfg->ncur++];
    memcpy(c->code, code, 4);
    c->exponent = 2;
    c->rate = -1;
    return c;
}

void meter__stripe_config_cleanup(struct meter__stripe_cfg *cfg)
{
    free(cfg->cur);
    cfg->cur = NULL;
    cfg->ncur = 0;
}

/* Checks a currency key of a stripe.* map; fills code. */
static enum kb_err config_code(const char *map, const char *k, char code[4], char **errmsg)
{
    if (!currency_code(k, strlen(k), code)) {
        kb_set_errmsg(errmsg, "pricing: stripe.%s: \"%s\" is not a 3-letter currency code", map, k);
        return KB_E_CONFIG;
    }
    if (strcmp(code, "usd") == 0) {
        kb_set_errmsg(errmsg, "pricing: stripe.%s: usd is the unit of account, not configurable",
                      map);
        return KB_E_CONFIG;
    }
    return KB_OK;
}

enum kb_err meter__stripe_config(json_t *obj, struct meter__stripe_cfg *cfg, char **errmsg)
{
    enum kb_err err;
    struct meter__stripe_cfg x = {NULL, 0, -1};
    json_t *rates, *exps, *unk, *v;
    const char *k;
    char code[4];

    if ((err = meter__keys_check(obj, "stripe", stripe_keys, errmsg)) != KB_OK)
        goto out;
    err = KB_E_CONFIG;
    rates = json_object_get(obj, "currency_rates");
    exps = json_object_get(obj, "minor_unit_exponents");
    if ((rates && !json_is_object(rates)) || (exps && !json_is_object(exps))) {
        kb_set_errmsg(errmsg, "pricing: stripe.currency_rates and stripe.minor_unit_exponents "
                              "must be objects");
        goto out;
    }
    json_object_foreach(exps, k, v)
    {
        if (k[0] == '_')
            continue;
        if ((err = config_code("minor_unit_exponents", k, code, errmsg)) != KB_OK)
            goto out;
        err = KB_E_CONFIG;
        struct meter__currency *c = cur_find(&x, code);
        if (c) {
            kb_set_errmsg(errmsg, "pricing: stripe.minor_unit_exponents: %s is listed twice", code);
            goto out;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 4) {
            kb_set_errmsg(errmsg, "pricing: stripe.minor_unit_exponents.%s: must be 0 to 4", k);
            goto out;
        }
        cur_add(&x, code)->exponent = (int)json_integer_value(v);
    }
    json_object_foreach(rates, k, v)
    {
        if (k[0] == '_')
            continue;
        if ((err = config_code("currency_rates", k, code, errmsg)) != KB_OK)
            goto out;
        struct meter__currency *c = cur_add(&x, code);
        if (c->rate >= 0) {
            kb_set_errmsg(errmsg, "pricing: stripe.currency_rates: %s is listed twice", code);
            err = KB_E_CONFIG;
            goto out;
        }
        char *w = kb_asprintf("stripe.currency_rates.%s", k);
        err = meter__price_parse(v, w, &c->rate, errmsg);
        free(w);
        if (err != KB_OK)
            goto out;
        if (c->rate == 0) {
            /* A zero rate would make every amount in it free. */
            kb_set_errmsg(errmsg, "pricing: stripe.currency_rates.%s: must be positive", k);
            err = KB_E_CONFIG;
            goto out;
        }
    }
    unk = json_object_get(obj, "unknown_amount_reserve");
    if (unk && !json_is_null(unk) &&
        (err = meter__price_parse(unk, "stripe.unknown_amount_reserve", &x.unknown_amount_reserve,
                                  errmsg)) != KB_OK)
        goto out;
    *cfg = x;
    memset(&x, 0, sizeof x);
    err = KB_OK;
out:
    meter__stripe_config_cleanup(&x);
    return err;
}

/* ---- amounts ---- */

/* An integer amount in minor units ("-?[0-9]+") as micro-minor units
 * (minor x 10^6). Negative amounts are credits and count as zero. */
static bool parse_int_minor(const struct meter__form_pair *v, int64_t *mm)
{
    const char *s = v->val;
    size_t i = 0, n = v->vlen;
    bool neg = false;
    int64_t x = 0;

    if (i < n && s[i] == '-') {
        neg = true;
        i++;
    }
    if (i == n || n - i > 18)
        return false;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (s[i] - '0');
    }
    *mm = neg ? 0 : meter__mul_sat(x, 1000000);
    return true;
}

/* A decimal amount in minor units ("1250.5", unit_amount_decimal) as
 * micro-minor units, rounded up past the sixth decimal. */
static bool parse_dec_minor(const struct meter__form_pair *v, int64_t *mm)
{
    const char *s = v->val;
    size_t i = 0, n = v->vlen, digits = 0;
    bool neg = false, rest = false;
    int64_t ip = 0, fp = 0;

    if (i < n && s[i] == '-') {
        neg = true;
        i++;
    }
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, digits++) {
        if (digits >= 18)
            return false;
        ip = ip * 10 + (s[i] - '0');
    }
    if (digits == 0)
        return false;
    if (i < n && s[i] == '.') {
        size_t fd = 0;
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, fd++) {
            if (fd < 6)
                fp = fp * 10 + (s[i] - '0');
            else if (s[i] != '0')
                rest = true;
        }
        if (fd == 0)
            return false;
        for (; fd < 6; fd++)
            fp *= 10;
    }
    if (i != n)
        return false;
    *mm = neg ? 0 : meter__add_sat(meter__mul_sat(ip, 1000000), fp + (rest ? 1 : 0));
    return true;
}

/* Micro-dollars of mm micro-minor units of `currency`. */
static enum kb_err convert(const struct meter__stripe_cfg *cfg, const char *currency,
                           size_t currency_len, int64_t mm, int64_t *out, char **errmsg)
{
    char code[4];
    int64_t rate = KB_MICROS_PER_USD;
    int exponent = 2;

    if (!currency_code(currency, currency_len, code)) {
        kb_set_errmsg(errmsg, "the currency is not a 3-letter code");
        return KB_E_CURRENCY_NOT_SUPPORTED;
    }
    if (strcmp(code, "usd") != 0) {
        const struct meter__currency *c = cur_find(cfg, code);
        if (!c || c->rate < 0) {
            kb_set_errmsg(
                errmsg, "no USD rate is configured for currency %s (stripe.currency_rates)", code);
            return KB_E_CURRENCY_NOT_SUPPORTED;
        }
        rate = c->rate;
        exponent = c->exponent;
    }
    /* µ$ = mm / 10^6 minor units / 10^exponent x rate µ$, rounded up. */
    *out = meter__mul_div_ceil(mm, rate, pow10_tab[exponent + 6]);
    return KB_OK;
}

/* ---- line items ---- */

/* The value of "<prefix>[<i>]<suffix>", or NULL. */
static enum kb_err item_get(const struct meter__form *f, const char *prefix, size_t i,
                            const char *suffix, const struct meter__form_pair **v, char **errmsg)
{
    char *key = kb_asprintf("%s[%zu]%s", prefix, i, suffix);
    enum kb_err err = meter__form_get(f, key, v, errmsg);
    free(key);
    return err;
}

/* A unit amount (integer or _decimal) under "<prefix>[<i>]<base>"; *found is
 * false when neither is given. */
static enum kb_err unit_amount(const struct meter__form *f, const char *prefix, size_t i,
                               const char *base, bool *found, int64_t *mm, char **errmsg)
{
    const struct meter__form_pair *ua = NULL, *uad = NULL;
    enum kb_err err;
    char *k1 = kb_asprintf("%s[unit_amount]", base);
    char *k2 = kb_asprintf("%s[unit_amount_decimal]", base);

    if ((err = item_get(f, prefix, i, k1, &ua, errmsg)) != KB_OK ||
        (err = item_get(f, prefix, i, k2, &uad, errmsg)) != KB_OK)
        goto out;
    *found = ua || uad;
    if (ua && !parse_int_minor(ua, mm)) {
        kb_set_errmsg(errmsg, "%s[%zu]%s[unit_amount] must be an integer", prefix, i, base);
        err = KB_E_INVALID;
    } else if (!ua && uad && !parse_dec_minor(uad, mm)) {
        kb_set_errmsg(errmsg, "%s[%zu]%s[unit_amount_decimal] must be a decimal", prefix, i, base);
        err = KB_E_INVALID;
    }
out:
    free(k1);
    free(k2);
    return err;
}

/* A quantity: absent is dflt; anything but a small non-negative integer is
 * invalid. */
static bool parse_qty(const struct meter__form_pair *v, int64_t dflt, int64_t *q)
{
    int64_t x = 0;
    if (!v) {
        *q = dflt;
        return true;
    }
    if (v->vlen == 0 || v->vlen > 9)
        return false;
    for (size_t i = 0; i < v->vlen; i++) {
        if (v->val[i] < '0' || v->val[i] > '9')
            return false;
        x = x * 10 + (v->val[i] - '0');
    }
    *q = x;
    return true;
}

/*
 * Sums unit amount x quantity over prefix[0..], e.g. line_items[i][price_data]
 * [unit_amount] x line_items[i][quantity]. Sets *unknown when an item's
 * amount is not in the body (a price id) or its index cannot be read.
 */
static enum kb_err sum_items(const struct meter__stripe_cfg *cfg, const struct meter__form *f,
                             const char *prefix, const struct meter__form_pair *top_currency,
                             int64_t *sum, bool *unknown, char **errmsg)
{
    enum kb_err err = KB_OK;
    size_t idx[MAX_ITEMS], n = 0, plen = strlen(prefix);
    int64_t total = 0;

    for (size_t k = 0; k < f->n; k++) {
        const char *key = f->v[k].key;
        size_t i = plen + 1, v = 0;
        if (f->v[k].klen <= plen || memcmp(key, prefix, plen) != 0 || key[plen] != '[')
            continue;
        for (; key[i] >= '0' && key[i] <= '9' && i < plen + 7; i++)
            v = v * 10 + (size_t)(key[i] - '0');
        if (i == plen + 1 || key[i] != ']') {
            /* "items[][price]" or similar: we cannot tell the items apart. */
            *unknown = true;
            continue;
        }
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++)
            seen = idx[j] == v;
        if (seen)
            continue;
        if (n == MAX_ITEMS) {
            kb_set_errmsg(errmsg, "too many %s", prefix);
            return KB_E_INVALID;
        }
        idx[n++] = v;
    }
    for (size_t j = 0; j < n && !*unknown; j++) {
        const struct meter__form_pair *q = NULL, *adj = NULL, *adjmax = NULL, *cur = NULL;
        int64_t mm = 0, qty = 1, maxq = ADJUSTABLE_DEFAULT_MAX, cost = 0;
        bool found = false;

        if ((err = unit_amount(f, prefix, idx[j], "[price_data]", &found, &mm, errmsg)) != KB_OK ||
            (err = item_get(f, prefix, idx[j], "[quantity]", &q, errmsg)) != KB_OK ||
            (err = item_get(f, prefix, idx[j], "[adjustable_quantity][enabled]", &adj, errmsg)) !=
                KB_OK ||
            (err = item_get(f, prefix, idx[j], "[adjustable_quantity][maximum]", &adjmax,
                            errmsg)) != KB_OK ||
            (err = item_get(f, prefix, idx[j], "[price_data][currency]", &cur, errmsg)) != KB_OK)
            return err;
        if (!found) {
            *unknown = true; /* a price id: its amount lives in Stripe */
            break;
        }
        if (!parse_qty(q, 1, &qty) || !parse_qty(adjmax, ADJUSTABLE_DEFAULT_MAX, &maxq)) {
            kb_set_errmsg(errmsg, "%s[%zu]: quantity must be a non-negative integer", prefix,
                          idx[j]);
            return KB_E_INVALID;
        }
        /* The customer may raise the quantity up to the maximum at checkout. */
        if (adj && adj->vlen == 4 && memcmp(adj->val, "true", 4) == 0 && maxq > qty)
            qty = maxq;
        if (!cur)
            cur = top_currency;
        if (!cur) {
            *unknown = true;
            break;
        }
        if ((err = convert(cfg, cur->val, cur->vlen, meter__mul_sat(mm, qty), &cost, errmsg)) !=
            KB_OK)
            return err;
        total = meter__add_sat(total, cost);
    }
    *sum = meter__add_sat(*sum, total);
    return KB_OK;
}

/* ---- rules ---- */

enum rule {
    RULE_ZERO = 0,           /* metered, costs nothing */
    RULE_AMOUNT,             /* amount + currency in the body */
    RULE_AMOUNT_IF_PRESENT,  /* an update: amount + currency when it sets an amount */
    RULE_INVOICEITEM,        /* amount, or unit amount x quantity */
    RULE_INVOICEITEM_UPDATE, /* the same when the update touches price or quantity */
    RULE_CHECKOUT,           /* line items, zero in setup mode */
    RULE_SUBSCRIPTION,       /* items and add_invoice_items of the first invoice */
    RULE_UNKNOWN,            /* the amount is never in the request */
};

struct route {
    const char *seg[3];   /* path after /v1/; "+" is one id segment */
    enum rule rule;       /* how the cost is read */
    const char *resp_key; /* amount member of the 2xx response, or NULL */
};

static const struct route routes[] = {
    {{"payment_intents"}, RULE_AMOUNT, "amount"},
    {{"payment_intents", "+"}, RULE_AMOUNT_IF_PRESENT, "amount"},
    /* amount is the new authorised total; reserved whole (fail-closed). */
    {{"payment_intents", "+", "increment_authorization"}, RULE_AMOUNT, "amount"},
    /* The create reserved the amount; confirming moves that same money. */
    {{"payment_intents", "+", "confirm"}, RULE_ZERO, NULL},
    /* Capturing never exceeds what was authorised (and reserved). */
    {{"payment_intents", "+", "capture"}, RULE_ZERO, NULL},
    {{"payment_intents", "+", "cancel"}, RULE_ZERO, NULL},
    {{"charges"}, RULE_AMOUNT, "amount"},
    {{"charges", "+", "capture"}, RULE_ZERO, NULL},
    {{"transfers"}, RULE_AMOUNT, "amount"},
    {{"payouts"}, RULE_AMOUNT, "amount"},
    {{"topups"}, RULE_AMOUNT, "amount"},
    {{"treasury", "outbound_payments"}, RULE_AMOUNT, "amount"},
    {{"treasury", "outbound_transfers"}, RULE_AMOUNT, "amount"},
    {{"invoiceitems"}, RULE_INVOICEITEM, "amount"},
    {{"invoiceitems", "+"}, RULE_INVOICEITEM_UPDATE, "amount"},
    {{"checkout", "sessions"}, RULE_CHECKOUT, "amount_total"},
    {{"subscriptions"}, RULE_SUBSCRIPTION, NULL},
    {{"invoices", "+", "pay"}, RULE_UNKNOWN, "amount_paid"},
    {{"refunds"}, RULE_ZERO, NULL},
};

static const struct route *route_find(const struct kb_meter_req *req)
{
    const char *seg[5];
    size_t len[5];
    size_t n = meter__path_split(req->path, req->path_len, seg, len, 4);

    if (n < 2 || n > 4 || !meter__seg_is(seg[0], len[0], "v1"))
        return NULL;
    for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
        size_t k = 0;
        while (k < 3 && routes[r].seg[k])
            k++;
        if (k != n - 1)
            continue;
        bool ok = true;
        for (size_t i = 0; i < k && ok; i++)
            ok = strcmp(routes[r].seg[i], "+") == 0
                     ? len[i + 1] > 0
                     : meter__seg_is(seg[i + 1], len[i + 1], routes[r].seg[i]);
        if (ok)
            return &routes[r];
    }
    return NULL;
}

/* amount=..&currency=.. (RULE_AMOUNT and friends). */
static enum kb_err rule_amount(const struct meter__stripe_cfg *cfg, const struct meter__form *f,
                               const char *key, int64_t *cost, bool *unknown, char **errmsg)
{
    const struct meter__form_pair *amount = NULL, *currency = NULL;
    enum kb_err err;
    int64_t mm = 0;

    if ((err = meter__form_get(f, key, &amount, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "currency", &currency, errmsg)) != KB_OK)
        return err;
    if (!amount || !currency) {
        /* Stripe will refuse a create without them, or use a currency we
         * cannot see (a payout's default, an update's existing one). */
        *unknown = true;
        return KB_OK;
    }
    if (!parse_int_minor(amount, &mm)) {
        kb_set_errmsg(errmsg, "%s must be an integer amount in minor units", key);
        return KB_E_INVALID;
    }
    return convert(cfg, currency->val, currency->vlen, mm, cost, errmsg);
}

/* Invoice items: amount, or unit_amount(_decimal) or price_data[...] times
 * quantity. An update touching none of them leaves *cost at zero. */
static enum kb_err rule_invoiceitem(const struct meter__stripe_cfg *cfg,
                                    const struct meter__form *f, bool update, int64_t *cost,
                                    bool *unknown, char **errmsg)
{
    const struct meter__form_pair *amount, *q, *price, *cur, *pdcur;
    enum kb_err err;
    int64_t mm = 0, qty = 1;
    bool found = false, pd = false;

    if ((err = meter__form_get(f, "amount", &amount, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "quantity", &q, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "price", &price, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "currency", &cur, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "price_data[currency]", &pdcur, errmsg)) != KB_OK)
        return err;
    if (amount)
        return rule_amount(cfg, f, "amount", cost, unknown, errmsg);

    /* unit_amount at the top level, else under price_data. */
    const struct meter__form_pair *ua, *uad, *pua, *puad;
    if ((err = meter__form_get(f, "unit_amount", &ua, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "unit_amount_decimal", &uad, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "price_data[unit_amount]", &pua, errmsg)) != KB_OK ||
        (err = meter__form_get(f, "price_data[unit_amount_decimal]", &puad, errmsg)) != KB_OK)
        return err;
    if (!ua && !uad) {
        ua = pua;
        uad = puad;
        pd = true;
    }
    found = ua || uad;
    if (update && !found && !q && !price)
        return KB_OK; /* metadata, description, ... */
    if (!found) {
        *unknown = true;
        return KB_OK;
    }
    if ((ua && !parse_int_minor(ua, &mm)) || (!ua && !parse_dec_minor(uad, &mm))) {
        kb_set_errmsg(errmsg, "unit_amount must be an amount in minor units");
        return KB_E_INVALID;
    }
    if (!parse_qty(q, 1, &qty)) {
        kb_set_errmsg(errmsg, "quantity must be a non-negative integer");
        return KB_E_INVALID;
    }
    if (pd && pdcur)
        cur = pdcur;
    if (!cur) {
        *unknown = true;
        return KB_OK;
    }
    return convert(cfg, cur->val, cur->vlen, meter__mul_sat(mm, qty), cost, errmsg);
}

/* ---- settling requests whose amount was unknown ---- */

struct stripe_state {
    const char *resp_key; /* static; amount member of the response, or NULL */
};

static int64_t settle_unknown(struct kb_meter *m, bool complete)
{
    const struct stripe_state *st = m->state;
    int64_t cost = m->reserve, amount = 0, mm;
    json_t *root = NULL;
    char *em = NULL;

    (void)complete; /* a truncated body does not parse: the reservation stays */
    if (!st->resp_key || m->body_over || !m->body.data)
        goto out;
    root = json_loadb(m->body.data, m->body.len, 0, NULL);
    json_t *cur = json_object_get(root, "currency");
    if (!meter__json_uint(root, st->resp_key, &amount) || !json_is_string(cur))
        goto out;
    mm = meter__mul_sat(amount, 1000000);
    if (convert(&m->p->stripe, json_string_value(cur), json_string_length(cur), mm, &amount, &em) ==
        KB_OK)
        cost = amount;
out:
    free(em);
    json_decref(root);
    return cost;
}

static const struct meter__ops unknown_ops = {NULL, settle_unknown, free};

enum kb_err meter__stripe_begin(struct kb_meter *m, const struct kb_meter_req *req, bool *metered,
                                char **errmsg)
{
    enum kb_err err = KB_OK;
    const struct meter__stripe_cfg *cfg = &m->p->stripe;
    const struct route *r;
    struct meter__form f = {0};
    const struct meter__form_pair *mode = NULL, *cur = NULL;
    int64_t cost = 0;
    bool unknown = false;

    if (strcmp(req->method, "POST") != 0 || !(r = route_find(req)))
        goto out; /* reads and unlisted endpoints: not metered here */
    *metered = true;
    if (r->rule == RULE_ZERO)
        goto out;
    if ((err = meter__form_parse(req->body, req->body_len, &f, errmsg)) != KB_OK)
        goto out;

    switch (r->rule) {
    case RULE_AMOUNT:
        err = rule_amount(cfg, &f, "amount", &cost, &unknown, errmsg);
        break;
    case RULE_AMOUNT_IF_PRESENT: {
        const struct meter__form_pair *a = NULL;
        if ((err = meter__form_get(&f, "amount", &a, errmsg)) == KB_OK && a)
            err = rule_amount(cfg, &f, "amount", &cost, &unknown, errmsg);
        break;
    }
    case RULE_INVOICEITEM:
    case RULE_INVOICEITEM_UPDATE:
        err =
            rule_invoiceitem(cfg, &f, r->rule == RULE_INVOICEITEM_UPDATE, &cost, &unknown, errmsg);
        break;
    case RULE_CHECKOUT:
        if ((err = meter__form_get(&f, "mode", &mode, errmsg)) != KB_OK ||
            (err = meter__form_get(&f, "currency", &cur, errmsg)) != KB_OK)
            break;
        if (mode && mode->vlen == 5 && memcmp(mode->val, "setup", 5) == 0)
            break; /* saves a payment method, moves no money */
        err = sum_items(cfg, &f, "line_items", cur, &cost, &unknown, errmsg);
        break;
    case RULE_SUBSCRIPTION:
        if ((err = meter__form_get(&f, "currency", &cur, errmsg)) != KB_OK ||
            (err = sum_items(cfg, &f, "items", cur, &cost, &unknown, errmsg)) != KB_OK)
            break;
        err = sum_items(cfg, &f, "add_invoice_items", cur, &cost, &unknown, errmsg);
        break;
    case RULE_UNKNOWN:
        unknown = true;
        break;
    case RULE_ZERO:
        break;
    }
    if (err != KB_OK)
        goto out;

    if (unknown) {
        if (cfg->unknown_amount_reserve < 0) {
            kb_set_errmsg(errmsg, "the amount of this request cannot be read from its body; "
                                  "set stripe.unknown_amount_reserve in the pricing file to "
                                  "allow it");
            err = KB_E_INVALID;
            goto out;
        }
        struct stripe_state *st = kb_calloc(1, sizeof *st);
        st->resp_key = r->resp_key;
        m->state = st;
        m->ops = &unknown_ops;
        m->reserve = cfg->unknown_amount_reserve;
        m->body_cap = RESPONSE_CAP;
        goto out;
    }
    m->reserve = m->on_success = cost;
out:
    meter__form_cleanup(&f);
    return err;
}
