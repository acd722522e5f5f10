/*
 * stripe_read.c - reading Stripe amounts the way Stripe does: the stripe
 * section of pricing.json (rates, minor-unit exponents), amounts in minor
 * units and their conversion to micro-dollars, form fields with Stripe's
 * bracket syntax (refusing the ones it could read two ways), and the sums
 * over line items and shipping options. stripe.c decides which of these a
 * request needs.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/money.h"
#include "meter/stripe_int.h"

/* Line items read from one request: Stripe allows 100 per checkout. */
#define MAX_ITEMS 250
/* Quantity a customer may choose when adjustable_quantity[maximum] is absent
 * (Stripe's default maximum). */
#define ADJUSTABLE_DEFAULT_MAX 99

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
bool stripe__parse_int_minor(const struct meter__form_pair *v, int64_t *mm)
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
bool stripe__parse_dec_minor(const struct meter__form_pair *v, int64_t *mm)
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

enum kb_err stripe__convert(const struct meter__stripe_cfg *cfg, const char *currency,
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

/* mm micro-minor units of a currency the request does not name (a capture,
 * an increment, a payout in the account's default currency): the most they
 * can be worth in any currency this meter accepts, so never under-counted.
 * Settlement reads the currency from Stripe's answer. */
int64_t stripe__convert_any(const struct meter__stripe_cfg *cfg, int64_t mm)
{
    int64_t best = meter__mul_div_ceil(mm, KB_MICROS_PER_USD, pow10_tab[8]);
    for (size_t i = 0; i < cfg->ncur; i++) {
        const struct meter__currency *c = &cfg->cur[i];
        if (c->rate < 0)
            continue;
        int64_t v = meter__mul_div_ceil(mm, c->rate, pow10_tab[c->exponent + 6]);
        if (v > best)
            best = v;
    }
    return best;
}

/* ---- reading the form as Stripe does ---- */

/*
 * The value of `key`, *val NULL when absent. Refused as ambiguous
 * (KB_E_AMBIGUOUS_REQUEST): the key given twice with different values, a
 * key equal to it but for letter case, or the key also used as a hash or
 * array (`amount[]`, `amount[x]`), since which one Stripe reads is not
 * ours to guess.
 */
enum kb_err stripe__sget(const struct meter__form *f, const char *key,
                         const struct meter__form_pair **val, char **errmsg)
{
    const struct meter__form_pair *found = NULL;
    size_t kl = strlen(key);
    bool plain = false;

    for (size_t i = 0; i < f->n && !plain; i++)
        plain = f->v[i].klen == kl && strncasecmp(f->v[i].key, key, kl) == 0;
    for (size_t i = 0; plain && i < f->n; i++) {
        const struct meter__form_pair *pr = &f->v[i];
        if (pr->klen < kl || strncasecmp(pr->key, key, kl) != 0)
            continue;
        if (pr->klen > kl) {
            if (pr->key[kl] != '[')
                continue; /* "amount_details": another name */
            kb_set_errmsg(errmsg, "form field \"%s\" is given both as a value and as \"%.*s\"", key,
                          (int)(pr->klen > 100 ? 100 : pr->klen), pr->key);
            return KB_E_AMBIGUOUS_REQUEST;
        }
        if (memcmp(pr->key, key, kl) != 0) {
            kb_set_errmsg(errmsg, "form field \"%s\" is also given as \"%s\"", key, pr->key);
            return KB_E_AMBIGUOUS_REQUEST;
        }
        if (!found) {
            found = pr;
        } else if (found->vlen != pr->vlen || memcmp(found->val, pr->val, pr->vlen) != 0) {
            kb_set_errmsg(errmsg, "form field \"%s\" is given twice with different values", key);
            return KB_E_AMBIGUOUS_REQUEST;
        }
    }
    *val = found;
    return KB_OK;
}

bool stripe__val_is(const struct meter__form_pair *v, const char *s)
{
    return v && v->vlen == strlen(s) && memcmp(v->val, s, v->vlen) == 0;
}

/* The value of "<prefix>[<i>]<suffix>", or NULL. */
static enum kb_err item_get(const struct meter__form *f, const char *prefix, size_t i,
                            const char *suffix, const struct meter__form_pair **v, char **errmsg)
{
    char *key = kb_asprintf("%s[%zu]%s", prefix, i, suffix);
    enum kb_err err = stripe__sget(f, key, v, errmsg);
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
    if (ua && !stripe__parse_int_minor(ua, mm)) {
        kb_set_errmsg(errmsg, "%s[%zu]%s[unit_amount] must be an integer", prefix, i, base);
        err = KB_E_INVALID;
    } else if (!ua && uad && !stripe__parse_dec_minor(uad, mm)) {
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
bool stripe__parse_qty(const struct meter__form_pair *v, int64_t dflt, int64_t *q)
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

/* The distinct indexes i of "<prefix>[i]..." keys, in body order. *unknown
 * is set for "<prefix>[][...]" (items Stripe numbers itself: we cannot tell
 * them apart); an index written two ways ("[00]", "[+1]") is ambiguous. */
static enum kb_err item_indexes(const struct meter__form *f, const char *prefix, size_t *idx,
                                size_t *n, bool *unknown, char **errmsg)
{
    size_t plen = strlen(prefix);
    *n = 0;
    for (size_t k = 0; k < f->n; k++) {
        const char *key = f->v[k].key;
        size_t i = plen + 1, v = 0;
        if (f->v[k].klen <= plen || strncasecmp(key, prefix, plen) != 0 || key[plen] != '[')
            continue;
        for (; key[i] >= '0' && key[i] <= '9' && i < plen + 7; i++)
            v = v * 10 + (size_t)(key[i] - '0');
        if (i == plen + 1 && key[i] == ']') {
            *unknown = true;
            continue;
        }
        if (i == plen + 1 || key[i] != ']' || (key[plen + 1] == '0' && i > plen + 2) ||
            memcmp(key, prefix, plen) != 0) {
            kb_set_errmsg(errmsg, "%s: index \"%.*s\" is not a plain number", prefix,
                          (int)(f->v[k].klen > 60 ? 60 : f->v[k].klen), key);
            return KB_E_AMBIGUOUS_REQUEST;
        }
        bool seen = false;
        for (size_t j = 0; j < *n && !seen; j++)
            seen = idx[j] == v;
        if (seen)
            continue;
        if (*n == MAX_ITEMS) {
            kb_set_errmsg(errmsg, "too many %s", prefix);
            return KB_E_INVALID;
        }
        idx[(*n)++] = v;
    }
    return KB_OK;
}

/*
 * Sums unit amount x quantity over prefix[0..], e.g. line_items[i][price_data]
 * [unit_amount] x line_items[i][quantity]. Sets *unknown when an item's
 * amount is not in the body (a price id). With `update`, items being
 * deleted, and items that change neither price nor quantity, cost nothing.
 */
enum kb_err stripe__sum_items(const struct meter__stripe_cfg *cfg, const struct meter__form *f,
                              const char *prefix, const struct meter__form_pair *top_currency,
                              bool update, int64_t *sum, bool *unknown, char **errmsg)
{
    enum kb_err err;
    size_t idx[MAX_ITEMS], n = 0;
    int64_t total = 0;

    if ((err = item_indexes(f, prefix, idx, &n, unknown, errmsg)) != KB_OK)
        return err;
    for (size_t j = 0; j < n && !*unknown; j++) {
        const struct meter__form_pair *q = NULL, *adj = NULL, *adjmax = NULL, *cur = NULL,
                                      *del = NULL, *price = NULL;
        int64_t mm = 0, qty = 1, maxq = ADJUSTABLE_DEFAULT_MAX, cost = 0;
        bool found = false;

        if ((err = unit_amount(f, prefix, idx[j], "[price_data]", &found, &mm, errmsg)) != KB_OK ||
            (err = item_get(f, prefix, idx[j], "[quantity]", &q, errmsg)) != KB_OK ||
            (err = item_get(f, prefix, idx[j], "[adjustable_quantity][enabled]", &adj, errmsg)) !=
                KB_OK ||
            (err = item_get(f, prefix, idx[j], "[adjustable_quantity][maximum]", &adjmax,
                            errmsg)) != KB_OK ||
            (err = item_get(f, prefix, idx[j], "[price_data][currency]", &cur, errmsg)) != KB_OK ||
            (err = item_get(f, prefix, idx[j], "[deleted]", &del, errmsg)) != KB_OK ||
            (err = item_get(f, prefix, idx[j], "[price]", &price, errmsg)) != KB_OK)
            return err;
        if (update && (stripe__val_is(del, "true") || (!found && !price && !q)))
            continue; /* removed, or only metadata/discounts/thresholds */
        if (!found) {
            *unknown = true; /* a price id, or a quantity of an existing price */
            break;
        }
        if (!stripe__parse_qty(q, 1, &qty) ||
            !stripe__parse_qty(adjmax, ADJUSTABLE_DEFAULT_MAX, &maxq)) {
            kb_set_errmsg(errmsg, "%s[%zu]: quantity must be a non-negative integer", prefix,
                          idx[j]);
            return KB_E_INVALID;
        }
        /* The customer may raise the quantity up to the maximum at checkout.
         * Any spelling but a plain false counts as enabled: a flag that
         * raises the cost errs towards on. */
        if (adj && !stripe__val_is(adj, "false") && !stripe__val_is(adj, "0") && adj->vlen &&
            maxq > qty)
            qty = maxq;
        if (!cur)
            cur = top_currency;
        if (!cur) {
            *unknown = true;
            break;
        }
        if ((err = stripe__convert(cfg, cur->val, cur->vlen, meter__mul_sat(mm, qty), &cost,
                                   errmsg)) != KB_OK)
            return err;
        total = meter__add_sat(total, cost);
    }
    *sum = meter__add_sat(*sum, total);
    return KB_OK;
}

/* Checkout shipping: the customer picks one option, so the dearest one
 * counts. An option given by shipping rate id is an unknown amount. */
enum kb_err stripe__max_shipping(const struct meter__stripe_cfg *cfg, const struct meter__form *f,
                                 const struct meter__form_pair *top_currency, int64_t *sum,
                                 bool *unknown, char **errmsg)
{
    enum kb_err err;
    size_t idx[MAX_ITEMS], n = 0;
    int64_t best = 0;

    if ((err = item_indexes(f, "shipping_options", idx, &n, unknown, errmsg)) != KB_OK)
        return err;
    for (size_t j = 0; j < n && !*unknown; j++) {
        const struct meter__form_pair *a = NULL, *cur = NULL;
        int64_t mm = 0, cost = 0;
        if ((err = item_get(f, "shipping_options", idx[j],
                            "[shipping_rate_data][fixed_amount][amount]", &a, errmsg)) != KB_OK ||
            (err = item_get(f, "shipping_options", idx[j],
                            "[shipping_rate_data][fixed_amount][currency]", &cur, errmsg)) != KB_OK)
            return err;
        if (!a) {
            *unknown = true; /* shipping_rate=shr_...: its amount lives in Stripe */
            break;
        }
        if (!stripe__parse_int_minor(a, &mm)) {
            kb_set_errmsg(errmsg, "shipping_options[%zu]: the fixed amount must be an integer",
                          idx[j]);
            return KB_E_INVALID;
        }
        if (!cur)
            cur = top_currency;
        if (!cur) {
            *unknown = true;
            break;
        }
        if ((err = stripe__convert(cfg, cur->val, cur->vlen, mm, &cost, errmsg)) != KB_OK)
            return err;
        if (cost > best)
            best = cost;
    }
    *sum = meter__add_sat(*sum, best);
    return KB_OK;
}
