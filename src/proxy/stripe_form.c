/*
 * stripe_form.c - JSON request bodies to Stripe's bracket form encoding.
 *
 * Agents speak JSON; Stripe's v1 API reads application/x-www-form-urlencoded
 * with bracket nesting. The target is what stripe-node sends (qs.stringify
 * with arrayFormat "indices" in older releases, a qs-compatible encoder of
 * its own since): one key=value pair per leaf, the key being the path with
 * each level in brackets, keys and values percent-encoded with qs's RFC 3986
 * encoder (unreserved A-Z a-z 0-9 - . _ ~ kept, all else %XX upper case).
 * tests/unit/test_stripe_form.c was checked against qs 6.17 and stripe-node
 * 23.1 row by row.
 *
 * Where this deliberately differs from stripe-node, and why:
 * - brackets are written literally, as stripe-node sends them (stripe_form.h).
 *   stripe-node turns them back into literal [ and ] everywhere, values
 *   included; Stripe decodes both forms identically.
 * - members keep their JSON order. A JS object lists integer-like keys
 *   ("1", "2") first; Stripe does not care about member order.
 * - integers are written exactly ("%lld"), where JS would round above 2^53.
 * As in both, empty objects and arrays produce no pair at all
 * (qs.stringify({a: {}}) === ''), and null produces "key=".
 */
#include "proxy/stripe_form.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"

/* Containers nested deeper than this are refused; the top object is 1. */
#define FORM_MAX_DEPTH 16
/* Output cap: the larger of this and FORM_CAP_FACTOR x the input. Each leaf
 * repeats its whole key path, so a long key over many leaves would otherwise
 * grow the output quadratically in the input. */
#define FORM_MIN_CAP ((size_t)4 << 20)
#define FORM_CAP_FACTOR 4

struct form {
    struct kb_buf out; /* owned; the body being built */
    struct kb_buf key; /* owned; the current key path, already encoded */
    size_t cap;        /* refuse once out.len exceeds this */
};

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Appends s percent-encoded as qs does: RFC 3986 unreserved bytes as they
 * are, every other byte of the UTF-8 text as %XX in upper case. */
static void put_encoded(struct kb_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || c == '[' || c == ']') {
            /* brackets stay literal, byte for byte what stripe-node sends */
            buf_putc(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(b, e, sizeof e);
        }
    }
}

/*
 * Appends the finite, non-zero double v as JavaScript's Number#toString
 * writes it, which is what qs sends: the shortest digit string that reads
 * back as v, in plain notation when the decimal exponent is in [-7, 20]
 * (1e21 and 1e-7 switch to "1e+21" and "1e-7"), percent-encoded as a value
 * like any other (so "1e%2B21"). The digits come from
 * printf's correctly rounded %.*e at increasing precision; in the rare case
 * where the nearest k-digit string misses but another k-digit string would
 * round-trip, this writes one digit more than JS. The same locale is used
 * for printing and reading back, so the check holds under any LC_NUMERIC.
 */
static void put_real(struct kb_buf *b, double v)
{
    char tmp[40], digits[20];
    int k = 0, exp10 = 0;

    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    /* tmp is "-d.ddde+XX" (the separator is whatever the locale says). */
    const char *p = tmp;
    if (*p == '-') {
        buf_putc(b, '-');
        p++;
    }
    for (; *p && *p != 'e'; p++) {
        if (*p >= '0' && *p <= '9' && k < (int)sizeof digits)
            digits[k++] = *p;
    }
    if (*p == 'e')
        exp10 = (int)strtol(p + 1, NULL, 10);
    while (k > 1 && digits[k - 1] == '0')
        k--;

    /* ECMAScript Number::toString: value = 0.d1d2..dk x 10^n. */
    int n = exp10 + 1;
    if (k <= n && n <= 21) {
        buf_append(b, digits, (size_t)k);
        for (int i = k; i < n; i++)
            buf_putc(b, '0');
    } else if (0 < n && n <= 21) {
        buf_append(b, digits, (size_t)n);
        buf_putc(b, '.');
        buf_append(b, digits + n, (size_t)(k - n));
    } else if (-6 < n && n <= 0) {
        buf_puts(b, "0.");
        for (int i = n; i < 0; i++)
            buf_putc(b, '0');
        buf_append(b, digits, (size_t)k);
    } else {
        buf_putc(b, digits[0]);
        if (k > 1) {
            buf_putc(b, '.');
            buf_append(b, digits + 1, (size_t)(k - 1));
        }
        /* The sign goes through the value encoder in qs: '+' is %2B, while
         * digits, '-', '.' and 'e' are unreserved and stay as they are. */
        buf_printf(b, "e%s%d", n - 1 < 0 ? "-" : "%2B", abs(n - 1));
    }
}

/* Appends "&key=value" for the current key path and scalar v. */
static enum kb_err put_pair(struct form *f, json_t *v, char **errmsg)
{
    enum kb_err err = KB_E_BODY_TOO_LARGE;
    struct kb_buf *b = &f->out;

    if (b->len > 0)
        buf_putc(b, '&');
    buf_append(b, f->key.data, f->key.len);
    buf_putc(b, '=');
    switch (json_typeof(v)) {
    case JSON_STRING:
        put_encoded(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL: {
        double d = json_real_value(v);
        if (d == 0) /* 0.0 and -0.0: JS writes both as "0" */
            buf_putc(b, '0');
        else if (isfinite(d)) /* jansson refuses overflow; defensive */
            put_real(b, d);
        break;
    }
    case JSON_TRUE:
        buf_puts(b, "true");
        break;
    case JSON_FALSE:
        buf_puts(b, "false");
        break;
    default: /* JSON_NULL: an empty value, which Stripe reads as "unset" */
        break;
    }
    if (b->len > f->cap) {
        kb_set_errmsg(errmsg, "the form-encoded body would exceed %zu bytes", f->cap);
        goto out;
    }
    err = KB_OK;
out:
    return err;
}

/* Truncates the key path back to saved bytes after a descent. */
static void pop_key(struct form *f, size_t saved)
{
    f->key.len = saved;
    if (f->key.data)
        f->key.data[saved] = '\0';
}

/* Writes every leaf under v, whose key path is f->key; depth counts v's own
 * level when v is a container. Recursion is bounded by FORM_MAX_DEPTH. */
static enum kb_err walk(struct form *f, json_t *v, int depth, char **errmsg)
{
    enum kb_err err = KB_OK;
    const char *name;
    json_t *child;
    size_t i;

    if (!json_is_object(v) && !json_is_array(v)) {
        err = put_pair(f, v, errmsg);
        goto out;
    }
    if (depth > FORM_MAX_DEPTH) {
        kb_set_errmsg(errmsg, "JSON nesting exceeds %d levels", FORM_MAX_DEPTH);
        err = KB_E_BAD_JSON;
        goto out;
    }
    if (json_is_object(v)) {
        json_object_foreach(v, name, child)
        {
            size_t saved = f->key.len;
            /* The top level writes the bare name; below, "[name]" encoded. */
            if (depth > 1)
                buf_puts(&f->key, "[");
            put_encoded(&f->key, name, strlen(name));
            if (depth > 1)
                buf_puts(&f->key, "]");
            err = walk(f, child, depth + 1, errmsg);
            pop_key(f, saved);
            if (err != KB_OK)
                goto out;
        }
    } else {
        json_array_foreach(v, i, child)
        {
            size_t saved = f->key.len;
            buf_printf(&f->key, "[%zu]", i);
            err = walk(f, child, depth + 1, errmsg);
            pop_key(f, saved);
            if (err != KB_OK)
                goto out;
        }
    }
out:
    return err;
}

enum kb_err stripe_form_from_json(const char *json, size_t len, char **out, size_t *out_len,
                                  char **errmsg)
{
    enum kb_err err = KB_E_BAD_JSON;
    struct form f = {KB_BUF_INIT, KB_BUF_INIT, FORM_MIN_CAP};
    json_error_t jerr;
    json_t *root = NULL;

    if (len <= SIZE_MAX / FORM_CAP_FACTOR && len * FORM_CAP_FACTOR > f.cap)
        f.cap = len * FORM_CAP_FACTOR;
    else if (len > SIZE_MAX / FORM_CAP_FACTOR)
        f.cap = SIZE_MAX;

    /* Integers stay json_integer by default (JSON_DECODE_INT_AS_REAL is the
     * opposite flag); one past int64 is refused by jansson as invalid. \u0000
     * is refused too (no JSON_ALLOW_NUL): nothing in Stripe's API wants it.
     * JSON_DECODE_ANY lets a scalar top level reach the clearer error below. */
    root = json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                      &jerr);
    if (root == NULL) {
        kb_set_errmsg(errmsg, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                      jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        kb_set_errmsg(errmsg, "the JSON body must be an object");
        goto out;
    }
    err = walk(&f, root, 1, errmsg);
    if (err != KB_OK)
        goto out;
    *out = buf_take(&f.out, out_len);
out:
    json_decref(root);
    buf_cleanup(&f.out);
    buf_cleanup(&f.key);
    return err;
}
