/*
 * common.c - what the vendor meters share: the saturating integer
 * arithmetic every cost goes through, the JSON helpers that read prices
 * and request members (prices are decimal strings read by money_parse,
 * never doubles; unknown keys are refused), request path segments, and
 * the application/x-www-form-urlencoded decoder the Stripe and Twilio
 * meters read their bodies with. Pure functions of their arguments, any
 * thread; declared in meter_int.h. The meter's life cycle is meter.c.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/crypto.h"
#include "core/money.h"
#include "meter/meter.h"
#include "meter/meter_int.h"

/* ---- arithmetic ---- */

int64_t meter__mul_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (a <= 0 || b <= 0)
        return 0;
    if (__builtin_mul_overflow(a, b, &r) || r > KB_MONEY_MAX_MICROS)
        return KB_MONEY_MAX_MICROS;
    return r;
}

int64_t meter__add_sat(int64_t a, int64_t b)
{
    if (a < 0)
        a = 0;
    if (b < 0)
        b = 0;
    if (a > KB_MONEY_MAX_MICROS - b)
        return KB_MONEY_MAX_MICROS;
    return a + b;
}

int64_t meter__mul_div_ceil(int64_t a, int64_t b, int64_t d)
{
    int64_t p;
    if (a <= 0 || b <= 0 || d <= 0)
        return 0;
    if (!__builtin_mul_overflow(a, b, &p)) {
        int64_t q = p / d + (p % d != 0);
        return q > KB_MONEY_MAX_MICROS ? KB_MONEY_MAX_MICROS : q;
    }
    /* a * b does not fit: split a = qa * d + ra so that the big part is
     * divided first; ra * b may still overflow, then the result is far
     * beyond any cap and saturates. */
    int64_t qa = a / d, ra = a % d, hi, lo;
    if (__builtin_mul_overflow(qa, b, &hi) || __builtin_mul_overflow(ra, b, &lo))
        return KB_MONEY_MAX_MICROS;
    return meter__add_sat(hi, lo / d + (lo % d != 0));
}

int64_t meter__token_cost(int64_t tokens, int64_t per_mtok)
{
    return meter__mul_div_ceil(tokens, per_mtok, METER__MTOK);
}

/* ---- JSON helpers ---- */

enum kb_err meter__keys_check(json_t *obj, const char *where, const char *const *allowed,
                              char **errmsg)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool ok = k[0] == '_'; /* "_note": comments are allowed anywhere */
        for (size_t i = 0; !ok && allowed[i]; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok) {
            kb_set_errmsg(errmsg, "pricing: %s: unknown key \"%s\"", where, k);
            return KB_E_CONFIG;
        }
    }
    return KB_OK;
}

enum kb_err meter__price_parse(json_t *v, const char *where, int64_t *out, char **errmsg)
{
    enum kb_err err = KB_E_CONFIG;
    char *em = NULL;
    int64_t x = 0;

    if (json_is_string(v)) {
        if (money_parse(json_string_value(v), json_string_length(v), &x, &em) != KB_OK) {
            kb_set_errmsg(errmsg, "pricing: %s: %s", where, em ? em : "invalid price");
            goto out;
        }
    } else if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > KB_MONEY_MAX_MICROS / KB_MICROS_PER_USD) {
            kb_set_errmsg(errmsg, "pricing: %s: price out of range", where);
            goto out;
        }
        x = (int64_t)i * KB_MICROS_PER_USD;
    } else if (json_is_real(v)) {
        /* A double cannot be read back as the decimal that was written. */
        kb_set_errmsg(errmsg, "pricing: %s: write prices as decimal strings (\"2.50\")", where);
        goto out;
    } else {
        kb_set_errmsg(errmsg, "pricing: %s: a price must be a decimal string", where);
        goto out;
    }
    *out = x;
    err = KB_OK;
out:
    free(em);
    return err;
}

bool meter__json_uint(json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

enum kb_err meter__json_opt_uint(json_t *obj, const char *key, int64_t *out, bool *present,
                                 char **errmsg)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *present = false;
        return KB_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        kb_set_errmsg(errmsg, "\"%s\" must be a non-negative integer", key);
        return KB_E_INVALID;
    }
    *out = (int64_t)json_integer_value(v);
    *present = true;
    return KB_OK;
}

enum kb_err meter__json_body(const struct kb_meter_req *req, json_t **out, char **errmsg)
{
    json_error_t jerr;
    json_t *root = meter__json_loadb(req->body ? req->body : "", req->body_len,
                                     JSON_REJECT_DUPLICATES, NULL, &jerr);
    if (!root) {
        kb_set_errmsg(errmsg, "the request body is not valid JSON: %s", jerr.text);
        return KB_E_INVALID;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        kb_set_errmsg(errmsg, "the request body is not a JSON object");
        return KB_E_INVALID;
    }
    *out = root;
    return KB_OK;
}

/* ---- request paths ---- */

size_t meter__path_split(const char *path, size_t len, const char **seg, size_t *seg_len,
                         size_t max)
{
    size_t n = 0, i = 0;

    if (len > 0 && path[0] == '/')
        i = 1;
    while (i < len) {
        size_t j = i;
        while (j < len && path[j] != '/')
            j++;
        if (n == max)
            return max + 1;
        seg[n] = path + i;
        seg_len[n] = j - i;
        n++;
        i = j + 1;
    }
    return n;
}

bool meter__seg_is(const char *seg, size_t len, const char *s)
{
    return strlen(s) == len && memcmp(seg, s, len) == 0;
}

/* ---- form bodies ---- */

/* Decodes s (n bytes) into a fresh string; false on a malformed escape. */
static bool form_decode(const char *s, size_t n, char **out, size_t *out_len)
{
    char *d = kb_malloc(n + 1);
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            d[k++] = ' ';
        } else if (s[i] == '%') {
            int hi = i + 2 < n ? crypto_hexdigit(s[i + 1]) : -1;
            int lo = i + 2 < n ? crypto_hexdigit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free(d);
                return false;
            }
            d[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            d[k++] = s[i];
        }
    }
    d[k] = '\0';
    *out = d;
    *out_len = k;
    return true;
}

void meter__form_cleanup(struct meter__form *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].key);
        free(f->v[i].val);
    }
    free(f->v);
    f->v = NULL;
    f->n = 0;
}

enum kb_err meter__form_parse(const char *body, size_t len, struct meter__form *f, char **errmsg)
{
    enum kb_err err = KB_E_INVALID;
    struct meter__form x = {0};
    size_t cap = 0, i = 0;

    while (i < len) {
        size_t j = i, eq;
        while (j < len && body[j] != '&')
            j++;
        for (eq = i; eq < j && body[eq] != '='; eq++)
            ;
        if (j > i) {
            struct meter__form_pair pr = {0};
            if (!form_decode(body + i, eq - i, &pr.key, &pr.klen)) {
                kb_set_errmsg(errmsg, "the form body has a malformed %%-escape");
                goto out;
            }
            if (!form_decode(body + (eq < j ? eq + 1 : j), eq < j ? j - eq - 1 : 0, &pr.val,
                             &pr.vlen)) {
                free(pr.key);
                kb_set_errmsg(errmsg, "the form body has a malformed %%-escape");
                goto out;
            }
            if (x.n == cap) {
                cap = cap ? cap * 2 : 16;
                x.v = kb_realloc(x.v, cap * sizeof *x.v);
            }
            x.v[x.n++] = pr;
        }
        i = j + 1;
    }
    *f = x;
    memset(&x, 0, sizeof x);
    err = KB_OK;
out:
    meter__form_cleanup(&x);
    return err;
}

enum kb_err meter__form_get(const struct meter__form *f, const char *key,
                            const struct meter__form_pair **val, char **errmsg)
{
    const struct meter__form_pair *found = NULL;
    size_t kl = strlen(key);

    for (size_t i = 0; i < f->n; i++) {
        const struct meter__form_pair *pr = &f->v[i];
        if (pr->klen != kl || memcmp(pr->key, key, kl) != 0)
            continue;
        if (!found) {
            found = pr;
        } else if (found->vlen != pr->vlen || memcmp(found->val, pr->val, pr->vlen) != 0) {
            kb_set_errmsg(errmsg, "form field \"%s\" is given twice with different values", key);
            return KB_E_INVALID;
        }
    }
    *val = found;
    return KB_OK;
}
