/*
 * fuzz_jparse.c - libFuzzer target for the meters' fast json_loadb
 * (src/meter/jparse.c), differential against jansson.
 *
 * The first byte picks the flags (bit 0: JSON_REJECT_DUPLICATES); the rest
 * is the text. Checks, any violation aborts:
 *  (a) meter__json_loadb accepts exactly when json_loadb accepts;
 *  (b) on acceptance both trees dump to the same bytes (members in the
 *      same order, duplicates resolved the same way, reals to the bit);
 *  (c) on refusal the error text and position are jansson's;
 *  (d) with a keep list (flags 0), acceptance is the same, and each kept
 *      member equals jansson's (the filtered tree, or the whole tree when
 *      the text went to jansson);
 *  (e) with a keep list and METER_JSON_KEPT_ONCE, nothing jansson refuses
 *      is accepted, a text jansson accepts with JSON_REJECT_DUPLICATES is
 *      accepted, and an accepted one keeps what (d) kept.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meter/meter_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct meter__jkeep keep_type[] = {{"type", NULL}, {NULL, NULL}};
static const struct meter__jkeep keep_root[] = {
    {"usage", NULL}, {"service_tier", NULL}, {"output", keep_type}, {"type", NULL}, {NULL, NULL}};

static char *dump(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!s)
        abort();
    return s;
}

static bool same(json_t *a, json_t *b)
{
    char *da = dump(a), *db = dump(b);
    bool eq = strcmp(da, db) == 0;
    free(da);
    free(db);
    return eq;
}

/* Each member keep_root names, taken from the whole tree and the kept one:
 * equal, and (sub-list "output") each element's "type" equal. */
static bool kept_same(json_t *whole, json_t *kept)
{
    if (!json_is_object(whole))
        return json_is_object(kept) == json_is_object(whole);
    for (const struct meter__jkeep *k = keep_root; k->key; k++) {
        json_t *a = json_object_get(whole, k->key), *b = json_object_get(kept, k->key);
        if (!a != !b)
            return false;
        if (!a)
            continue;
        if (!k->sub) {
            if (!same(a, b))
                return false;
        } else if (json_is_array(a)) {
            if (!json_is_array(b) || json_array_size(a) != json_array_size(b))
                return false;
            for (size_t i = 0; i < json_array_size(a); i++) {
                json_t *ta = json_object_get(json_array_get(a, i), "type");
                json_t *tb = json_object_get(json_array_get(b, i), "type");
                if (!ta != !tb || (ta && !same(ta, tb)))
                    return false;
            }
        }
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t flags = data[0] & 1 ? JSON_REJECT_DUPLICATES : 0;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    json_error_t e1, e2;

    json_t *a = json_loadb(text, n, flags, &e1);
    json_t *b = meter__json_loadb(text, n, flags, NULL, &e2);
    if (!a != !b)
        abort();
    if (a && !same(a, b))
        abort();
    if (!a && (strcmp(e1.text, e2.text) != 0 || e1.position != e2.position))
        abort();
    if (!flags) {
        json_t *c = meter__json_loadb(text, n, 0, keep_root, NULL);
        if (!a != !c)
            abort();
        if (a && !kept_same(a, c))
            abort();
        json_t *o = meter__json_loadb(text, n, METER_JSON_KEPT_ONCE, keep_root, NULL);
        json_t *strict = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
        if ((o && !a) || (strict && !o) || (o && !kept_same(a, o)))
            abort();
        json_decref(strict);
        json_decref(o);
        json_decref(c);
    }
    json_decref(a);
    json_decref(b);
    return 0;
}
