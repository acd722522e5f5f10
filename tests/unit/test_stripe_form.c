/*
 * test_stripe_form.c - unit tests for proxy/stripe_form: JSON bodies to
 * Stripe's bracket form encoding. Table-driven: each row is a JSON body and
 * either the exact form body expected or the error and a message fragment.
 * The expected bodies are what qs.stringify (6.17, arrayFormat "indices")
 * yields for JSON.parse of the input, except where stripe_form.h says
 * otherwise: integers exact beyond 2^53 and members in JSON order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "proxy/stripe_form.h"

struct form_ok {
    const char *json; /* input */
    const char *form; /* expected body */
};

#define L "["
#define R "]"

static const struct form_ok ok_table[] = {
    /* flat */
    {"{\"amount\":1000,\"currency\":\"usd\"}", "amount=1000&currency=usd"},
    {"{}", ""},
    {" {\n\"a\" : \"b\" }\n", "a=b"},
    /* the header's example */
    {"{\"amount\":1000,\"metadata\":{\"k\":\"v\"},\"items\":[{\"price\":\"p_1\"}],"
     "\"expand\":[\"a\"]}",
     "amount=1000&metadata" L "k" R "=v&items" L "0" R L "price" R "=p_1&expand" L "0" R "=a"},
    /* nested objects */
    {"{\"a\":{\"b\":{\"c\":\"d\"}}}", "a" L "b" R L "c" R "=d"},
    {"{\"shipping\":{\"name\":\"N\",\"address\":{\"city\":\"C\",\"line1\":\"L1\"}}}",
     "shipping" L "name" R "=N&shipping" L "address" R L "city" R "=C&shipping" L "address" R L
     "line1" R "=L1"},
    /* arrays of scalars */
    {"{\"expand\":[\"data.customer\",\"data.invoice\"]}",
     "expand" L "0" R "=data.customer&expand" L "1" R "=data.invoice"},
    /* arrays of objects */
    {"{\"items\":[{\"price\":\"p_1\",\"quantity\":2},{\"price\":\"p_2\"}]}",
     "items" L "0" R L "price" R "=p_1&items" L "0" R L "quantity" R "=2&items" L "1" R L "price" R
     "=p_2"},
    /* nested arrays */
    {"{\"a\":[[1,2],[3]]}", "a" L "0" R L "0" R "=1&a" L "0" R L "1" R "=2&a" L "1" R L "0" R "=3"},
    {"{\"a\":[{\"b\":[{\"c\":true}]}]}", "a" L "0" R L "b" R L "0" R L "c" R "=true"},
    /* indices past one digit */
    {"{\"a\":[0,1,2,3,4,5,6,7,8,9,10]}",
     "a" L "0" R "=0&a" L "1" R "=1&a" L "2" R "=2&a" L "3" R "=3&a" L "4" R "=4&a" L "5" R "=5&a" L
     "6" R "=6&a" L "7" R "=7&a" L "8" R "=8&a" L "9" R "=9&a" L "10" R "=10"},
    /* booleans */
    {"{\"capture\":true,\"livemode\":false}", "capture=true&livemode=false"},
    /* null: an empty value ("unset") */
    {"{\"metadata\":{\"k\":null},\"description\":null}", "metadata" L "k" R "=&description="},
    {"{\"a\":[null,1]}", "a" L "0" R "=&a" L "1" R "=1"},
    /* empty strings are values, unlike empty containers */
    {"{\"a\":\"\"}", "a="},
    /* unicode and reserved characters in values */
    {"{\"name\":\"Zo\xc3\xab \xf0\x9f\x98\x80\"}", "name=Zo%C3%AB%20%F0%9F%98%80"},
    {"{\"n\":\"\\u00e9\\ud83d\\ude00\"}", "n=%C3%A9%F0%9F%98%80"},
    {"{\"q\":\"a&b=c+d/e?f#g%h[i]j k!*'()\"}",
     "q=a%26b%3Dc%2Bd%2Fe%3Ff%23g%25h[i]j%20k%21%2A%27%28%29"},
    {"{\"u\":\"AZaz09-._~\"}", "u=AZaz09-._~"},
    {"{\"s\":\"line\\nbreak\\t\\\"q\\\" \\\\ \\/\"}", "s=line%0Abreak%09%22q%22%20%5C%20%2F"},
    {"{\"url\":\"https://x.test/a?b=1&c=2\"}", "url=https%3A%2F%2Fx.test%2Fa%3Fb%3D1%26c%3D2"},
    /* unicode and reserved characters in keys */
    {"{\"a b&c=\":1}", "a%20b%26c%3D=1"},
    {"{\"metadata\":{\"cl\xc3\xa9\":\"v\",\"x/y\":\"w\"}}",
     "metadata" L "cl%C3%A9" R "=v&metadata" L "x%2Fy" R "=w"},
    {"{\"metadata[k]\":\"v\"}", "metadata" L "k" R "=v"}, /* qs encodes it alike */
    {"{\"\":1}", "=1"},
    {"{\"a\":{\"\":1}}", "a" L R "=1"},
    /* integers, exactly */
    {"{\"n\":0,\"m\":-5,\"z\":-0}", "n=0&m=-5&z=0"},
    {"{\"big\":9007199254740993}", "big=9007199254740993"},
    {"{\"max\":9223372036854775807,\"min\":-9223372036854775808}",
     "max=9223372036854775807&min=-9223372036854775808"},
    /* reals: shortest round-trip text, as JS's Number#toString */
    {"{\"r\":1.5}", "r=1.5"},
    {"{\"r\":0.1}", "r=0.1"},
    {"{\"r\":-2.5}", "r=-2.5"},
    {"{\"r\":1.0}", "r=1"},
    {"{\"r\":100.0}", "r=100"},
    {"{\"r\":1e2}", "r=100"},
    {"{\"r\":1.5E-1}", "r=0.15"},
    {"{\"r\":-0.0}", "r=0"},
    {"{\"r\":0.0}", "r=0"},
    {"{\"r\":123.456}", "r=123.456"},
    {"{\"r\":12345678.9}", "r=12345678.9"},
    {"{\"r\":0.30000000000000004}", "r=0.30000000000000004"},
    {"{\"r\":0.1e1}", "r=1"},
    {"{\"r\":2.5e-5}", "r=0.000025"},
    {"{\"r\":1.23e-6}", "r=0.00000123"},
    {"{\"r\":1e-6}", "r=0.000001"},
    {"{\"r\":1e-7}", "r=1e-7"},
    {"{\"r\":1.5e-7}", "r=1.5e-7"},
    {"{\"r\":1e20}", "r=100000000000000000000"},
    {"{\"r\":1e21}", "r=1e%2B21"}, /* "1e+21", '+' encoded */
    {"{\"r\":1.2e21}", "r=1.2e%2B21"},
    {"{\"r\":5e-324}", "r=5e-324"},
    {"{\"r\":1.7976931348623157e308}", "r=1.7976931348623157e%2B308"},
    {"{\"r\":9007199254740993.0}", "r=9007199254740992"},
    /* empty objects and arrays send nothing, as qs does */
    {"{\"metadata\":{},\"expand\":[],\"a\":1}", "a=1"},
    {"{\"a\":{}}", ""},
    {"{\"a\":[[],{}],\"b\":{\"c\":{}}}", ""},
    {"{\"a\":[[],1]}", "a" L "1" R "=1"},
    /* member order is the JSON order, integer-like names included */
    {"{\"b\":1,\"a\":2,\"2\":3,\"1\":4}", "b=1&a=2&2=3&1=4"},
};

struct form_bad {
    const char *json; /* input */
    enum kb_err err;  /* expected error */
    const char *why;  /* substring of the message */
};

static const struct form_bad bad_table[] = {
    /* invalid JSON */
    {"", KB_E_BAD_JSON, "invalid JSON"},
    {"{", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":1,}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":1}x", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":1}{}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":01}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":NaN}", KB_E_BAD_JSON, "invalid JSON"},
    {"{'a':1}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":\"\xff\"}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":\"\\ud800\"}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":\"\\u0000\"}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":9223372036854775808}", KB_E_BAD_JSON, "invalid JSON"},
    {"{\"a\":1e400}", KB_E_BAD_JSON, "invalid JSON"},
    /* a top level that is not an object */
    {"[]", KB_E_BAD_JSON, "must be an object"},
    {"[{\"a\":1}]", KB_E_BAD_JSON, "must be an object"},
    {"1", KB_E_BAD_JSON, "must be an object"},
    {"\"s\"", KB_E_BAD_JSON, "must be an object"},
    {"null", KB_E_BAD_JSON, "must be an object"},
    {"true", KB_E_BAD_JSON, "must be an object"},
    /* duplicate keys, at any level */
    {"{\"a\":1,\"a\":2}", KB_E_BAD_JSON, "duplicate"},
    {"{\"m\":{\"k\":1,\"k\":2}}", KB_E_BAD_JSON, "duplicate"},
    {"{\"i\":[{\"p\":1,\"p\":1}]}", KB_E_BAD_JSON, "duplicate"},
};

static void test_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ok_table / sizeof ok_table[0]; i++) {
        const struct form_ok *t = &ok_table[i];
        char *out = NULL, *msg = NULL;
        size_t out_len = 4242;
        enum kb_err err = stripe_form_from_json(t->json, strlen(t->json), &out, &out_len, &msg);
        if (err != KB_OK || strcmp(out, t->form) != 0)
            print_error("row %zu %s:\n got  %s (%s)\n want %s\n", i, t->json, out ? out : "-",
                        msg ? msg : "-", t->form);
        assert_int_equal(err, KB_OK);
        assert_null(msg);
        assert_string_equal(out, t->form);
        assert_int_equal(out_len, strlen(t->form));
        free(out);
    }
}

static void test_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_table / sizeof bad_table[0]; i++) {
        const struct form_bad *t = &bad_table[i];
        char *out = (char *)&out, *msg = NULL; /* sentinel */
        size_t out_len = 4242;
        enum kb_err err = stripe_form_from_json(t->json, strlen(t->json), &out, &out_len, &msg);
        if (err != t->err || !msg || !strstr(msg, t->why))
            print_error("row %zu %s: err %d msg %s\n", i, t->json, (int)err, msg ? msg : "-");
        assert_int_equal(err, t->err);
        assert_non_null(msg);
        assert_non_null(strstr(msg, t->why));
        assert_ptr_equal(out, (char *)&out); /* untouched on failure */
        assert_int_equal(out_len, 4242);
        free(msg);
    }
}

/* {"a":{"a":...{"a":1}}} with `levels` objects in all, or arrays below the
 * top when arrays is set: {"a":[[...[1]...]]}. */
static char *nested(int levels, int arrays, size_t *len)
{
    struct kb_buf b = KB_BUF_INIT;
    buf_putc(&b, '{');
    for (int i = 1; i < levels; i++)
        buf_puts(&b, arrays ? (i == 1 ? "\"a\":[" : "[") : "\"a\":{");
    buf_puts(&b, arrays ? (levels == 1 ? "\"a\":1" : "1") : "\"a\":1");
    for (int i = 1; i < levels; i++)
        buf_putc(&b, arrays ? ']' : '}');
    buf_putc(&b, '}');
    return buf_take(&b, len);
}

static void test_depth_cap(void **state)
{
    (void)state;
    for (int arrays = 0; arrays <= 1; arrays++) {
        for (int levels = 15; levels <= 17; levels++) {
            size_t len = 0, out_len = 0;
            char *json = nested(levels, arrays, &len), *out = NULL, *msg = NULL;
            enum kb_err err = stripe_form_from_json(json, len, &out, &out_len, &msg);
            if (levels <= 16) {
                assert_int_equal(err, KB_OK);
                /* a + (levels - 1) bracketed steps, "=1" */
                assert_int_equal(out_len, 1 + (size_t)(levels - 1) * 3 + 2);
                free(out);
            } else {
                assert_int_equal(err, KB_E_BAD_JSON);
                assert_non_null(strstr(msg, "16 levels"));
                free(msg);
            }
            free(json);
        }
    }
    /* An empty container past the cap is still refused. */
    size_t len = 0, out_len = 0;
    char *json = nested(16, 0, &len), *out = NULL, *msg = NULL;
    char *one = strstr(json, "\"a\":1");
    assert_non_null(one);
    struct kb_buf b = KB_BUF_INIT;
    buf_append(&b, json, (size_t)(one - json));
    buf_puts(&b, "\"a\":{}");
    buf_puts(&b, one + 5);
    assert_int_equal(stripe_form_from_json(b.data, b.len, &out, &out_len, &msg), KB_E_BAD_JSON);
    free(msg);
    buf_cleanup(&b);
    free(json);
    /* Hostile depth far past ours (and jansson's 2048) is an error, not a crash. */
    b = (struct kb_buf)KB_BUF_INIT;
    buf_puts(&b, "{\"a\":");
    for (int i = 0; i < 5000; i++)
        buf_putc(&b, '[');
    msg = NULL;
    assert_int_equal(stripe_form_from_json(b.data, b.len, &out, &out_len, &msg), KB_E_BAD_JSON);
    free(msg);
    buf_cleanup(&b);
}

/* Each leaf repeats its key path: a long key over many leaves must hit the
 * output cap rather than grow quadratically. */
static void test_output_cap(void **state)
{
    (void)state;
    struct kb_buf b = KB_BUF_INIT;
    buf_puts(&b, "{\"");
    for (int i = 0; i < 100000; i++)
        buf_putc(&b, '!'); /* encodes to 3 bytes */
    buf_puts(&b, "\":[");
    for (int i = 0; i < 100; i++)
        buf_puts(&b, i ? ",1" : "1");
    buf_puts(&b, "]}");
    char *out = NULL, *msg = NULL;
    size_t out_len = 0;
    assert_int_equal(stripe_form_from_json(b.data, b.len, &out, &out_len, &msg),
                     KB_E_BODY_TOO_LARGE);
    assert_non_null(strstr(msg, "exceed"));
    assert_null(out);
    free(msg);
    buf_cleanup(&b);

    /* A large but ordinary body passes: 1 MiB of escaped text is 3 MiB out. */
    buf_puts(&b, "{\"description\":\"");
    for (int i = 0; i < (1 << 20); i++)
        buf_putc(&b, ' ');
    buf_puts(&b, "\"}");
    msg = NULL;
    assert_int_equal(stripe_form_from_json(b.data, b.len, &out, &out_len, &msg), KB_OK);
    assert_int_equal(out_len, strlen("description=") + 3 * ((size_t)1 << 20));
    free(out);
    buf_cleanup(&b);
}

static void test_length_and_null_errmsg(void **state)
{
    (void)state;
    char *out = NULL;
    size_t out_len = 0;
    /* Only len bytes are read. */
    const char *doc = "{\"a\":1}trailing";
    assert_int_equal(stripe_form_from_json(doc, 7, &out, &out_len, NULL), KB_OK);
    assert_string_equal(out, "a=1");
    free(out);
    /* errmsg may be NULL on failure too. */
    assert_int_equal(stripe_form_from_json(doc, strlen(doc), &out, &out_len, NULL), KB_E_BAD_JSON);
    assert_int_equal(stripe_form_from_json(NULL, 0, &out, &out_len, NULL), KB_E_BAD_JSON);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_depth_cap),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_length_and_null_errmsg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
