/*
 * stripe_read.c - reading Stripe amounts the way Stripe does: the stripe
 * section of pricing.json (rates, minor-unit exponents), amounts in minor
 * units and their conversion to micro-dollars, form fields with Stripe's
 * bracket syntax (refusing the ones it could read two ways), and the sums
 * over line items and shipping options. stripe.c decides which of these a
 * request needs.
 */
#include <ctype.h>
#include <stdint.h>
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

/* stripe__sget over the fields f->v[pick[0..n)] in that order, or over all
 * of f when pick is NULL. Every field that could be read as `key`, or
 * conflict with it, must be among them. */
static enum kb_err sget_among(const struct meter__form *f, const size_t *pick, size_t n,
                              const char *key, const struct meter__form_pair **val, char **errmsg)
{
    const struct meter__form_pair *found = NULL;
    size_t kl = strlen(key);
    bool plain = false;

    for (size_t i = 0; i < n && !plain; i++) {
        const struct meter__form_pair *pr = &f->v[pick ? pick[i] : i];
        plain = pr->klen == kl && strncasecmp(pr->key, key, kl) == 0;
    }
    for (size_t i = 0; plain && i < n; i++) {
        const struct meter__form_pair *pr = &f->v[pick ? pick[i] : i];
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
    return sget_among(f, NULL, f->n, key, val, errmsg);
}

bool stripe__val_is(const struct meter__form_pair *v, const char *s)
{
    return v && v->vlen == strlen(s) && memcmp(v->val, s, v->vlen) == 0;
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

/* ---- items: "<prefix>[i][...]" ---- */

/*
 * The items of one prefix (line_items, items, shipping_options) with their
 * fields grouped by item, built in one pass over the form. Looking a field
 * of item i up across the whole form would cost items x fields per request
 * (~7 fields an item, up to 250 items in 4096 fields); looking it up among
 * item i's own fields costs the form's size in all.
 *
 * The group is exact: a field Stripe could read as "<prefix>[i]<suffix>",
 * or that conflicts with it (letter case, "[...]" after it), begins with
 * "<prefix>[i]" but for letter case. Such a field either is in item i's
 * group or made items_index refuse the form (a prefix in another case, an
 * index with leading zeros), so stripe__sget over the group finds the same
 * value and refuses the same things, with the same message, as over the
 * whole form.
 */
struct items {
    const struct meter__form *f; /* borrowed */
    const char *prefix;          /* borrowed */
    size_t n;                    /* items, in the order the body first names them */
    size_t num[MAX_ITEMS];       /* each item's number: the i of prefix[i] */
    size_t start[MAX_ITEMS + 1]; /* item j's fields are field[start[j] .. start[j + 1]) */
    size_t *field;               /* owned; indexes into f->v, in body order within an item */
};

/* An item slot (0..MAX_ITEMS-1) fits a uint16_t; this one is no slot. */
#define NO_ITEM UINT16_MAX
_Static_assert(MAX_ITEMS < NO_ITEM, "item slots are uint16_t");

static void items_cleanup(struct items *it)
{
    free(it->field);
    it->field = NULL;
    it->n = 0;
}

/* Indexes the items "<prefix>[i]..." of f into it, whose cleanup frees it
 * whatever the result. *unknown is set for "<prefix>[][...]" (items Stripe
 * numbers itself: we cannot tell them apart); an index written two ways
 * ("[00]", "[+1]") is ambiguous; more than MAX_ITEMS items are refused.
 * Whichever of these comes first in body order decides. */
static enum kb_err items_index(const struct meter__form *f, const char *prefix, struct items *it,
                               bool *unknown, char **errmsg)
{
    enum kb_err err = KB_OK;
    size_t plen = strlen(prefix), at[MAX_ITEMS];
    /* slots sorted by item number, for a binary search per field */
    uint16_t by_num[MAX_ITEMS];
    /* each field's item slot, or NO_ITEM */
    uint16_t *slot = kb_malloc((f->n ? f->n : 1) * sizeof *slot);

    it->f = f;
    it->prefix = prefix;
    it->n = 0;
    it->field = NULL;
    memset(it->start, 0, sizeof it->start);
    for (size_t k = 0; k < f->n; k++) {
        const char *key = f->v[k].key;
        size_t i = plen + 1, v = 0, lo = 0, hi = it->n;
        slot[k] = NO_ITEM;
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
            err = KB_E_AMBIGUOUS_REQUEST;
            goto out;
        }
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (it->num[by_num[mid]] < v)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == it->n || it->num[by_num[lo]] != v) {
            /* a new item: MAX_ITEMS of them, each moving at most as many slots */
            if (it->n == MAX_ITEMS) {
                kb_set_errmsg(errmsg, "too many %s", prefix);
                err = KB_E_INVALID;
                goto out;
            }
            memmove(by_num + lo + 1, by_num + lo, (it->n - lo) * sizeof *by_num);
            by_num[lo] = (uint16_t)it->n;
            it->num[it->n++] = v;
        }
        slot[k] = by_num[lo];
        it->start[slot[k] + 1]++;
    }
    if (it->n == 0)
        goto out;
    /* Counts to offsets, then each item's fields in body order. */
    for (size_t j = 0; j < it->n; j++) {
        it->start[j + 1] += it->start[j];
        at[j] = it->start[j];
    }
    it->field = kb_malloc(it->start[it->n] * sizeof *it->field);
    for (size_t k = 0; k < f->n; k++)
        if (slot[k] != NO_ITEM)
            it->field[at[slot[k]]++] = k;
out:
    free(slot);
    return err;
}

/* The value of "<prefix>[<i>]<suffix>" for item j (i = it->num[j]), or
 * NULL; refused as stripe__sget refuses. */
static enum kb_err item_get(const struct items *it, size_t j, const char *suffix,
                            const struct meter__form_pair **v, char **errmsg)
{
    char *key = kb_asprintf("%s[%zu]%s", it->prefix, it->num[j], suffix);
    enum kb_err err = sget_among(it->f, it->field + it->start[j], it->start[j + 1] - it->start[j],
                                 key, v, errmsg);
    free(key);
    return err;
}

/* A unit amount (integer or _decimal) under "<prefix>[<i>]<base>" of item
 * j; *found is false when neither is given. */
static enum kb_err unit_amount(const struct items *it, size_t j, const char *base, bool *found,
                               int64_t *mm, char **errmsg)
{
    const struct meter__form_pair *ua = NULL, *uad = NULL;
    enum kb_err err;
    char *k1 = kb_asprintf("%s[unit_amount]", base);
    char *k2 = kb_asprintf("%s[unit_amount_decimal]", base);

    if ((err = item_get(it, j, k1, &ua, errmsg)) != KB_OK ||
        (err = item_get(it, j, k2, &uad, errmsg)) != KB_OK)
        goto out;
    *found = ua || uad;
    if (ua && !stripe__parse_int_minor(ua, mm)) {
        kb_set_errmsg(errmsg, "%s[%zu]%s[unit_amount] must be an integer", it->prefix, it->num[j],
                      base);
        err = KB_E_INVALID;
    } else if (!ua && uad && !stripe__parse_dec_minor(uad, mm)) {
        kb_set_errmsg(errmsg, "%s[%zu]%s[unit_amount_decimal] must be a decimal", it->prefix,
                      it->num[j], base);
        err = KB_E_INVALID;
    }
out:
    free(k1);
    free(k2);
    return err;
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
    struct items it;
    int64_t total = 0;

    if ((err = items_index(f, prefix, &it, unknown, errmsg)) != KB_OK)
        goto out;
    for (size_t j = 0; j < it.n && !*unknown; j++) {
        const struct meter__form_pair *q = NULL, *adj = NULL, *adjmax = NULL, *cur = NULL,
                                      *del = NULL, *price = NULL;
        int64_t mm = 0, qty = 1, maxq = ADJUSTABLE_DEFAULT_MAX, cost = 0;
        bool found = false;

        if ((err = unit_amount(&it, j, "[price_data]", &found, &mm, errmsg)) != KB_OK ||
            (err = item_get(&it, j, "[quantity]", &q, errmsg)) != KB_OK ||
            (err = item_get(&it, j, "[adjustable_quantity][enabled]", &adj, errmsg)) != KB_OK ||
            (err = item_get(&it, j, "[adjustable_quantity][maximum]", &adjmax, errmsg)) != KB_OK ||
            (err = item_get(&it, j, "[price_data][currency]", &cur, errmsg)) != KB_OK ||
            (err = item_get(&it, j, "[deleted]", &del, errmsg)) != KB_OK ||
            (err = item_get(&it, j, "[price]", &price, errmsg)) != KB_OK)
            goto out;
        if (update && (stripe__val_is(del, "true") || (!found && !price && !q)))
            continue; /* removed, or only metadata/discounts/thresholds */
        if (!found) {
            *unknown = true; /* a price id, or a quantity of an existing price */
            break;
        }
        if (!stripe__parse_qty(q, 1, &qty) ||
            !stripe__parse_qty(adjmax, ADJUSTABLE_DEFAULT_MAX, &maxq)) {
            kb_set_errmsg(errmsg, "%s[%zu]: quantity must be a non-negative integer", prefix,
                          it.num[j]);
            err = KB_E_INVALID;
            goto out;
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
            goto out;
        total = meter__add_sat(total, cost);
    }
    *sum = meter__add_sat(*sum, total);
out:
    items_cleanup(&it);
    return err;
}

/* Checkout shipping: the customer picks one option, so the dearest one
 * counts. An option given by shipping rate id is an unknown amount. */
enum kb_err stripe__max_shipping(const struct meter__stripe_cfg *cfg, const struct meter__form *f,
                                 const struct meter__form_pair *top_currency, int64_t *sum,
                                 bool *unknown, char **errmsg)
{
    enum kb_err err;
    struct items it;
    int64_t best = 0;

    if ((err = items_index(f, "shipping_options", &it, unknown, errmsg)) != KB_OK)
        goto out;
    for (size_t j = 0; j < it.n && !*unknown; j++) {
        const struct meter__form_pair *a = NULL, *cur = NULL;
        int64_t mm = 0, cost = 0;
        if ((err = item_get(&it, j, "[shipping_rate_data][fixed_amount][amount]", &a, errmsg)) !=
                KB_OK ||
            (err = item_get(&it, j, "[shipping_rate_data][fixed_amount][currency]", &cur,
                            errmsg)) != KB_OK)
            goto out;
        if (!a) {
            *unknown = true; /* shipping_rate=shr_...: its amount lives in Stripe */
            break;
        }
        if (!stripe__parse_int_minor(a, &mm)) {
            kb_set_errmsg(errmsg, "shipping_options[%zu]: the fixed amount must be an integer",
                          it.num[j]);
            err = KB_E_INVALID;
            goto out;
        }
        if (!cur)
            cur = top_currency;
        if (!cur) {
            *unknown = true;
            break;
        }
        if ((err = stripe__convert(cfg, cur->val, cur->vlen, mm, &cost, errmsg)) != KB_OK)
            goto out;
        if (cost > best)
            best = cost;
    }
    *sum = meter__add_sat(*sum, best);
out:
    items_cleanup(&it);
    return err;
}
