/*
 * test_jparse.c - the meters' fast json_loadb (src/meter/jparse.c) against
 * jansson itself.
 *
 * The parser's contract is "whatever json_loadb says": same acceptance,
 * same tree (members in the same order, last-wins duplicates, the same
 * integers and doubles), jansson's own error text on refusal. Checked on a
 * table of edge cases (escapes, surrogates, UTF-8, number ranges,
 * literals, nesting, duplicates) and on many generated documents, each
 * also mutated byte by byte (flips, cuts, insertions of the bytes that
 * matter), with flags 0 and JSON_REJECT_DUPLICATES. The keep lists are
 * checked against a reference filter of jansson's whole tree.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "meter/meter_int.h"

static unsigned rnd(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

/* The tree as text, members in order, reals to the last bit. */
static char *dump(json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
}

/* Reference for keep: jansson's whole tree, filtered as documented. */
static json_t *filter(json_t *v, const struct meter__jkeep *keep)
{
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) json_array_append_new(a, filter(x, keep));
        return a;
    }
    if (!json_is_object(v))
        return json_incref(v);
    json_t *o = json_object();
    const char *k;
    size_t klen;
    json_t *x;
    void *tmp;
    json_object_keylen_foreach_safe(v, tmp, k, klen, x)
    {
        for (const struct meter__jkeep *e = keep; e->key; e++) {
            if (strlen(e->key) == klen && memcmp(e->key, k, klen) == 0) {
                json_object_setn_new_nocheck(o, k, klen,
                                             e->sub ? filter(x, e->sub) : json_incref(x));
                break;
            }
        }
    }
    return o;
}

static const struct meter__jkeep keep_details[] = {{"cached_tokens", NULL}, {NULL, NULL}};
static const struct meter__jkeep keep_usage[] = {
    {"prompt_tokens", NULL}, {"a", NULL}, {"prompt_tokens_details", keep_details}, {NULL, NULL}};
static const struct meter__jkeep keep_type[] = {{"type", NULL}, {NULL, NULL}};
static const struct meter__jkeep keep_root[] = {
    {"usage", keep_usage}, {"service_tier", NULL}, {"output", keep_type}, {"a", NULL},
    {"\xc3\xa9", NULL},    {"b\"", keep_type},     {NULL, NULL}};

static int checked, accepted;

/* Runs one text through both parsers with flags, and with keep_root. */
static void compare(const char *t, size_t n)
{
    static const size_t flagset[] = {0, JSON_REJECT_DUPLICATES};
    for (size_t f = 0; f < 2; f++) {
        json_error_t e1, e2;
        json_t *a = json_loadb(t, n, flagset[f], &e1);
        json_t *b = meter__json_loadb(t, n, flagset[f], NULL, &e2);
        if (!a != !b)
            fail_msg("acceptance differs (flags %zu, jansson %s): %.*s", flagset[f],
                     a ? "accepts" : e1.text, (int)n, t);
        if (a) {
            char *da = dump(a), *db = dump(b);
            if (strcmp(da, db) != 0)
                fail_msg("trees differ: %s vs %s", da, db);
            free(da);
            free(db);
            accepted++;
        } else {
            assert_string_equal(e1.text, e2.text);
            assert_int_equal(e1.position, e2.position);
        }
        if (f == 0) {
            json_t *c = meter__json_loadb(t, n, 0, keep_root, NULL);
            if (!a != !c)
                fail_msg("keep: acceptance differs: %.*s", (int)n, t);
            if (a) {
                /* filtered, or whole when the text went to jansson (a
                 * superset: the members kept are the same) */
                json_t *r = filter(a, keep_root);
                char *dr = dump(r), *dc = dump(c), *da = dump(a);
                if (strcmp(dr, dc) != 0 && strcmp(da, dc) != 0)
                    fail_msg("keep: trees differ: %s vs %s (%.*s)", dr, dc, (int)n, t);
                free(da);
                free(dr);
                free(dc);
                json_decref(r);
            }
            json_decref(c);
        }
        json_decref(a);
        json_decref(b);
        checked++;
    }
}

static void compare_str(const char *t)
{
    compare(t, strlen(t));
}

static void test_edge_cases(void **state)
{
    static const char *const cases[] = {
        "{}",
        "[]",
        " {} ",
        "\t\r\n[ ]\n",
        "",
        " ",
        "{",
        "}",
        "[",
        "[1,]",
        "{\"a\":1,}",
        "[,1]",
        "{\"a\" 1}",
        "{\"a\":}",
        "{1:2}",
        "{'a':1}",
        "[1 2]",
        "[1]x",
        "[1] [2]",
        "[1]\x01",
        "[1]\f",
        "1",
        "\"a\"",
        "true",
        "null",
        "[true]",
        "[false]",
        "[null]",
        "[tru]",
        "[truex]",
        "[true1]",
        "[nul]",
        "[True]",
        "[NaN]",
        "[Infinity]",
        "[-Infinity]",
        "[0]",
        "[-0]",
        "[00]",
        "[-00]",
        "[01]",
        "[-]",
        "[-a]",
        "[+1]",
        "[.5]",
        "[1.]",
        "[1.5]",
        "[1e5]",
        "[1E5]",
        "[1e+5]",
        "[1e-5]",
        "[1e]",
        "[1e+]",
        "[1.e5]",
        "[0.0e0]",
        "[-0.0]",
        "[9223372036854775807]",
        "[9223372036854775808]",
        "[-9223372036854775808]",
        "[-9223372036854775809]",
        "[18446744073709551616]",
        "[99999999999999999999]",
        "[00000000000000000001]",
        "[1e308]",
        "[1e309]",
        "[-1e309]",
        "[1e-400]",
        "[-1e-400]",
        "[2.2250738585072011e-308]",
        "[4.9e-324]",
        "[1.7976931348623157e308]",
        "[1.7976931348623159e308]",
        "[123456789012345678901234567890.5]",
        "[0.1234567890123456789012345678901234567890123456789012345678901234567890123]",
        "[\"\"]",
        "[\"a\"]",
        "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]",
        "[\"\\a\"]",
        "[\"\\x41\"]",
        "[\"\\u0041\"]",
        "[\"\\u00e9\"]",
        "[\"\\u00E9\"]",
        "[\"\\u20ac\"]",
        "[\"\\u0000\"]",
        "[\"a\\u0000b\"]",
        "[\"\\u00\"]",
        "[\"\\u00g0\"]",
        "[\"\\ud83d\\ude00\"]",
        "[\"\\ud83d\"]",
        "[\"\\ud83dx\"]",
        "[\"\\ud83d\\u0041\"]",
        "[\"\\ude00\"]",
        "[\"\\ud83d\\ud83d\"]",
        "[\"\\udbff\\udfff\"]",
        "[\"\\ud800\\udc00\"]",
        "[\"\\ud83d\\",
        "[\"\\ud83d\\u\"]",
        "[\"a\tb\"]",
        "[\"a\nb\"]",
        "[\"\x7f\"]",
        "[\"\x1f\"]",
        "[\"\xc3\xa9\"]",
        "[\"\xc3\"]",
        "[\"\xc3\xa9",
        "[\"\xc0\x80\"]",
        "[\"\xc1\xbf\"]",
        "[\"\xe2\x82\xac\"]",
        "[\"\xe0\x80\x80\"]",
        "[\"\xe0\xa0\x80\"]",
        "[\"\xed\xa0\x80\"]",
        "[\"\xed\x9f\xbf\"]",
        "[\"\xee\x80\x80\"]",
        "[\"\xf0\x9f\x98\x80\"]",
        "[\"\xf0\x8f\xbf\xbf\"]",
        "[\"\xf4\x8f\xbf\xbf\"]",
        "[\"\xf4\x90\x80\x80\"]",
        "[\"\xf5\x80\x80\x80\"]",
        "[\"\xff\"]",
        "[\"\x80\"]",
        "[\"\xe2\x82\"]",
        "[\"\xe2\x28\xa1\"]",
        "\xef\xbb\xbf{}",
        "[\xc3\xa9]",
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"b\":2,\"a\":3}",
        "{\"a\":{\"x\":1},\"a\":{\"y\":2}}",
        "{\"\":1,\"\":2}",
        "{\"a\":1,\"\\u0061\":2}",
        "{\"\\u0000\":1}",
        "{\"a\\u0000\":1}",
        "{\"\xc3\xa9\":1}",
        "{\"\\u00e9\":1,\"\xc3\xa9\":2}",
        "{\"b\\\"\":{\"type\":1,\"x\":2}}",
        "{\"usage\":{\"prompt_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":1,"
        "\"x\":[1,2]}},\"service_tier\":\"default\",\"id\":\"x\"}",
        "{\"output\":[{\"type\":\"web_search_call\",\"x\":1},[{\"type\":2}],3,null],\"a\":[]}",
        "{\"usage\":null,\"usage\":{\"a\":1}}",
        "{\"usage\":{\"a\":1},\"usage\":7}",
        "{\"id\":\"\\ud800\",\"usage\":{}}",
        "{\"id\":1e999,\"usage\":{}}",
        "{\"id\":99999999999999999999,\"usage\":{}}",
        "{\"id\":[\"\\u0000\"],\"usage\":{}}",
        "{\"id\":{\"a\":1,\"a\":2},\"usage\":{}}",
        "{\"id\":\"\x01\",\"usage\":{}}",
        "{\"\\ud800\":1}",
        /* a key past the stack buffer, escaped, then refused (freed) */
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\n\\ud800\":"
        "1}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\n\":1}",
        "[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\t\\u00e9\"]",
        "{\"a\":1}\x00",
        "{\"a\":\"\x00\"}",
        "{\"a\":1} \n",
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        compare_str(cases[i]);
    /* Inputs with NUL bytes inside the length. */
    compare("{\"a\":1}\0", 8);
    compare("[\"\0\"]", 5);
    compare("[1\0]", 4);
}

/* Nesting around the parser's own limit and jansson's (2048). */
static void test_depth(void **state)
{
    static const size_t depths[] = {1, 2, 100, 127, 128, 129, 130, 500, 2047, 2048, 2049, 3000};
    (void)state;
    for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        size_t d = depths[i];
        struct kb_buf b = KB_BUF_INIT;
        for (int kind = 0; kind < 3; kind++) {
            buf_reset(&b);
            for (size_t k = 0; k < d; k++)
                buf_puts(&b, kind == 1 ? "{\"a\":" : "[");
            if (kind == 2)
                buf_puts(&b, "1");
            for (size_t k = 0; k < d; k++)
                buf_puts(&b, kind == 1 ? "}" : "]");
            if (kind == 1) {
                /* {"a":{"a": ... }} needs a value innermost */
                buf_reset(&b);
                for (size_t k = 0; k < d; k++)
                    buf_puts(&b, "{\"a\":");
                buf_puts(&b, "0");
                for (size_t k = 0; k < d; k++)
                    buf_puts(&b, "}");
            }
            compare(b.data, b.len);
        }
        buf_cleanup(&b);
    }
}

/* A random JSON-ish text: mostly valid, with the pieces that matter. */
static void gen(struct kb_buf *b, unsigned *seed, int depth)
{
    static const char *const strs[] = {"\"\"",
                                       "\"a\"",
                                       "\"usage\"",
                                       "\"type\"",
                                       "\"service_tier\"",
                                       "\"prompt_tokens\"",
                                       "\"\\u0061\"",
                                       "\"us\\u0061ge\"",
                                       "\"\\n\\t\\\"\"",
                                       "\"\\ud83d\\ude00\"",
                                       "\"\\ud83d\"",
                                       "\"\\u0000\"",
                                       "\"\xc3\xa9\"",
                                       "\"\xe2\x82\xac\"",
                                       "\"\xf0\x9f\x98\x80\"",
                                       "\"\xc0\xaf\"",
                                       "\"\xed\xa0\x80\"",
                                       "\"\\/\"",
                                       "\"\\q\"",
                                       "\"output\"",
                                       "\"b\\\"\"",
                                       "\"cached_tokens\"",
                                       "\"web_search_call\"",
                                       "\"prompt_tokens_details\"",
                                       "\"\x7f\"",
                                       "\"\t\""};
    static const char *const scalars[] = {"0",
                                          "-0",
                                          "1",
                                          "42",
                                          "-7",
                                          "1.5",
                                          "-2.5e3",
                                          "1e400",
                                          "1e-400",
                                          "9223372036854775807",
                                          "9223372036854775808",
                                          "-9223372036854775808",
                                          "-9223372036854775809",
                                          "01",
                                          "1.",
                                          "true",
                                          "false",
                                          "null",
                                          "tru",
                                          "nulll",
                                          "0.1",
                                          "3.14159265358979323846",
                                          "1E2",
                                          "-"};
    unsigned r = rnd(seed) % 10;
    if (depth > 5)
        r = r % 4;
    if (r < 2) {
        buf_puts(b, strs[rnd(seed) % (sizeof strs / sizeof strs[0])]);
    } else if (r < 4) {
        buf_puts(b, scalars[rnd(seed) % (sizeof scalars / sizeof scalars[0])]);
    } else if (r < 7) {
        unsigned n = rnd(seed) % 5;
        buf_puts(b, rnd(seed) % 4 ? "{" : "{ ");
        for (unsigned i = 0; i < n; i++) {
            if (i)
                buf_puts(b, rnd(seed) % 8 ? "," : " ,\n");
            buf_puts(b, strs[rnd(seed) % (sizeof strs / sizeof strs[0])]);
            buf_puts(b, rnd(seed) % 8 ? ":" : " : ");
            gen(b, seed, depth + 1);
        }
        buf_puts(b, "}");
    } else {
        unsigned n = rnd(seed) % 5;
        buf_puts(b, "[");
        for (unsigned i = 0; i < n; i++) {
            if (i)
                buf_puts(b, rnd(seed) % 8 ? "," : "\r\n,\t");
            gen(b, seed, depth + 1);
        }
        buf_puts(b, "]");
    }
}

static void test_generated(void **state)
{
    static const char specials[] = "{}[]\",:\\ 0-.eE+u\x00\x01\x7f\x80\xc3\xed\xff";
    unsigned seed = 1234567;
    struct kb_buf b = KB_BUF_INIT, m = KB_BUF_INIT;
    (void)state;
    checked = accepted = 0;
    for (int i = 0; i < 20000; i++) {
        buf_reset(&b);
        buf_puts(&b, rnd(&seed) % 3 ? "{" : "[");
        unsigned n = rnd(&seed) % 4;
        for (unsigned k = 0; k < n; k++) {
            if (k)
                buf_puts(&b, ",");
            if (b.data[0] == '{') {
                buf_puts(&b, k % 2 ? "\"usage\":" : "\"a\":");
            }
            gen(&b, &seed, 0);
        }
        buf_puts(&b, b.data[0] == '{' ? "}" : "]");
        compare(b.data, b.len);
        /* and a few mutations of it */
        for (int k = 0; k < 4; k++) {
            buf_reset(&m);
            buf_append(&m, b.data, b.len);
            size_t at = rnd(&seed) % m.len;
            switch (rnd(&seed) % 4) {
            case 0: /* overwrite */
                m.data[at] = specials[rnd(&seed) % (sizeof specials - 1)];
                break;
            case 1: /* cut */
                m.len = at;
                break;
            case 2: { /* insert */
                char c = specials[rnd(&seed) % (sizeof specials - 1)];
                buf_append(&m, "", 1);
                memmove(m.data + at + 1, m.data + at, m.len - at - 1);
                m.data[at] = c;
                break;
            }
            default: /* drop a byte */
                memmove(m.data + at, m.data + at + 1, m.len - at - 1);
                m.len--;
                break;
            }
            compare(m.data, m.len);
        }
    }
    buf_cleanup(&b);
    buf_cleanup(&m);
    /* the generator reaches both sides */
    assert_true(accepted > checked / 10);
    assert_true(accepted < checked * 9 / 10);
}

/* Answers shaped like the vendors', kept and whole. */
static void test_vendor_shapes(void **state)
{
    (void)state;
    compare_str("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":"
                "\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                "\"content\":\"Hi \\\"there\\\"\\n\\u00e9\",\"refusal\":null},\"logprobs\":null,"
                "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":62,"
                "\"completion_tokens\":180,\"prompt_tokens_details\":{\"cached_tokens\":3}},"
                "\"service_tier\":\"default\"}");
    compare_str("{\"object\":\"list\",\"data\":[{\"embedding\":[0.0023064255,-0.009327292,"
                "1.5e-5,-3E+2]}],\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}");
}

/* METER_JSON_KEPT_ONCE: a name repeated in what the result holds refuses
 * the text (an answer must not be read last-wins); one repeated only in a
 * skipped value does not; text handed to jansson is refused for a
 * repeated name anywhere. */
static bool kept_once(const char *text, const struct meter__jkeep *keep)
{
    json_t *v = meter__json_loadb(text, strlen(text), METER_JSON_KEPT_ONCE, keep, NULL);
    json_decref(v);
    return v != NULL;
}

static void test_kept_once(void **state)
{
    (void)state;
    assert_true(kept_once("{\"usage\":{\"prompt_tokens\":3}}", keep_root));
    /* a kept member twice, a member of a kept one twice, at any depth */
    assert_false(
        kept_once("{\"usage\":{\"prompt_tokens\":3},\"usage\":{\"prompt_tokens\":0}}", keep_root));
    assert_false(kept_once("{\"usage\":{\"prompt_tokens\":3,\"prompt_tokens\":0}}", keep_root));
    assert_false(kept_once("{\"a\":{\"x\":1,\"x\":0}}", keep_root)); /* "a": kept whole */
    assert_false(kept_once("{\"usage\":{\"prompt_tokens_details\":{\"cached_tokens\":1,"
                           "\"cached_tokens\":0}}}",
                           keep_root));
    assert_false(
        kept_once("{\"output\":[{\"type\":\"a\"},{\"type\":\"b\",\"type\":\"c\"}]}", keep_root));
    /* repeated only where nothing is kept: as before */
    assert_true(kept_once("{\"id\":1,\"id\":2,\"usage\":{\"prompt_tokens\":3}}", keep_root));
    assert_true(
        kept_once("{\"choices\":[{\"x\":1,\"x\":2}],\"usage\":{\"zz\":1,\"zz\":2}}", keep_root));
    /* nested past this parser's depth: jansson decides, stricter */
    char deep[2 * 200 + 64];
    size_t n = 0;
    n += (size_t)snprintf(deep + n, sizeof deep - n, "{\"id\":1,\"id\":2,\"x\":");
    for (int i = 0; i < 200; i++)
        deep[n++] = '[';
    for (int i = 0; i < 200; i++)
        deep[n++] = ']';
    snprintf(deep + n, sizeof deep - n, "}");
    assert_false(kept_once(deep, keep_root));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kept_once),     cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_depth),         cmocka_unit_test(test_generated),
        cmocka_unit_test(test_vendor_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
