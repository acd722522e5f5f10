/*
 * test_jscan.c - the JSON skeleton scanner (src/meter/jscan.c).
 *
 * A table of inputs and the skeletons they must give (whole, byte by byte
 * and at random cuts); invalid texts that must fail; the caps (depth,
 * array length, skeleton size, nesting) and the lossy flag; vendor-shaped
 * answers whose usage survives while their bulk goes; text in strings that
 * looks like usage; and a property test: for random JSON documents, the
 * skeleton parses to exactly what a reference transformation of the parsed
 * document gives. The last test measures the scan's speed on 50 MB bodies.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "meter/meter_int.h"

static unsigned rnd(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

/* Scans s in pieces: step 0 whole, 1 bytewise, else random cuts from
 * seed `step`. Returns the skeleton (heap) or NULL when the scan failed. */
static char *scan(const char *s, size_t n, unsigned step, bool *lossy)
{
    struct meter__jscan j;
    const char *sk;
    size_t len;
    char *out = NULL;
    unsigned seed = step;

    meter__jscan_init(&j);
    for (size_t i = 0; i < n;) {
        size_t k = step == 0 ? n - i : step == 1 ? 1 : 1 + rnd(&seed) % 13;
        if (k > n - i)
            k = n - i;
        meter__jscan_feed(&j, s + i, k);
        i += k;
    }
    if (meter__jscan_finish(&j, &sk, &len)) {
        assert_int_equal(strlen(sk), len);
        out = kb_strndup(sk, len);
    }
    if (lossy)
        *lossy = j.lossy;
    meter__jscan_cleanup(&j);
    return out;
}

static char *repeat(char c, size_t n)
{
    char *s = kb_malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void check(const char *in, const char *want, bool want_lossy)
{
    for (unsigned step = 0; step < 12; step++) {
        bool lossy = false;
        char *got = scan(in, strlen(in), step, &lossy);
        if (!got || strcmp(got, want) != 0 || lossy != want_lossy)
            print_message("in %.80s step %u: got %.200s (lossy %d)\n", in, step,
                          got ? got : "(failed)", lossy);
        assert_non_null(got);
        assert_string_equal(got, want);
        assert_int_equal(lossy, want_lossy);
        free(got);
    }
}

static void test_table(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *want;
        bool lossy;
    } cases[] = {
        {"{\"a\":1}", "{\"a\":1}", false},
        {" { \"a\" : [ 1 , 2 , {\"b\" : true} ] ,\n\"c\":\"x\" } ",
         "{\"a\":[{\"b\":true}],\"c\":\"x\"}", false},
        {"[1,2,3]", "[]", false},      /* scalar elements: dropped */
        {"\"top\"", "\"top\"", false}, /* top-level scalars are kept */
        {"42", "42", false},
        {" -1.5e+3 ", "-1.5e+3", false},
        {"null", "null", false},
        {"{}", "{}", false},
        {"[]", "[]", false},
        {"{\"a\":[],\"b\":{}}", "{\"a\":[],\"b\":{}}", false},
        {"{\"emb\":[0.1,-2,3e5,true,null,\"s\"],\"n\":1}", "{\"emb\":[],\"n\":1}", false},
        /* escapes kept as sent; \" and \\ do not end a string */
        {"{\"k\":\"a\\\"b\\\\\",\"u\":{\"x\":1}}", "{\"k\":\"a\\\"b\\\\\",\"u\":{\"x\":1}}", false},
        {"{\"a\":\"\\u00e9\\n\"}", "{\"a\":\"\\u00e9\\n\"}", false},
        /* brackets and commas inside strings are text */
        {"[1,\"]\",{\"a\":\"}\"},2,\"[{\"]", "[{\"a\":\"}\"}]", false},
        {"{\"c\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":1}\",\"usage\":{\"prompt_tokens\":5}}",
         "{\"c\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":1}\",\"usage\":{\"prompt_tokens\":5}}",
         false},
        /* the sixth container is kept, the seventh becomes null */
        {"{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":1}},\"h\":2}}}},\"i\":3}",
         "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":null},\"h\":2}}}},\"i\":3}", true},
        {"[[[[[[[1]],{}]]]]]", "[[[[[[null],{}]]]]]", true},
        {"[[[[[[1]]]]]]", "[[[[[[]]]]]]", false},
        /* elements skipped inside a dropped container do not leak out */
        {"{\"a\":[[[[[[{\"usage\":1}]]]]]],\"b\":1}", "{\"a\":[[[[[null]]]]],\"b\":1}", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check(cases[i].in, cases[i].want, cases[i].lossy);
}

/* Strings up to 256 raw bytes are kept, longer ones become ""; keys and
 * numbers past 256 bytes drop the member or become null (lossy). */
static void test_long_tokens(void **state)
{
    (void)state;
    char *s256 = repeat('x', 256), *s257 = repeat('y', 257), *d300 = repeat('7', 300);
    char *in, *want;

    in = kb_asprintf("{\"a\":\"%s\",\"b\":\"%s\"}", s256, s257);
    want = kb_asprintf("{\"a\":\"%s\",\"b\":\"\"}", s256);
    check(in, want, false);
    free(in);
    free(want);

    in = kb_asprintf("{\"%s\":{\"usage\":{\"x\":1}},\"b\":2,\"%s\":3}", s257, s256);
    want = kb_asprintf("{\"b\":2,\"%s\":3}", s256);
    check(in, want, true);
    free(in);
    free(want);

    /* a 300-digit count is not a count: null, never a smaller figure */
    in = kb_asprintf("{\"n\":%s,\"m\":1}", d300);
    check(in, "{\"n\":null,\"m\":1}", true);
    free(in);

    /* long strings with escapes right at the cut */
    in = kb_asprintf("{\"a\":\"%s\\\"\\\\\",\"b\":1}", s256);
    check(in, "{\"a\":\"\",\"b\":1}", false);
    free(in);
    free(s256);
    free(s257);
    free(d300);
}

/* Texts that are not one JSON value fail the scan. */
static void test_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "{\"a\":}",
        "[1,]",
        "{\"a\" 1}",
        "}",
        "{}x",
        "[DONE]",
        "{\"a\":1,}",
        "[}",
        "{]",
        "\"abc",
        "{\"a\":[1,2}",
        "{\"a\":1}}",
        "{\"a\":1 \"b\":2}",
        "[,1]",
        "{,}",
        "{1:2}",
        "'a'",
        "{\"a\":Nan}",
        "[1]]",
        "{\"a\":{\"b\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (unsigned step = 0; step < 3; step++) {
            char *got = scan(bad[i], strlen(bad[i]), step, NULL);
            if (got)
                print_message("\"%s\" step %u gave %s\n", bad[i], step, got);
            assert_null(got);
        }
    }
}

/* Every escape sequence split at every point gives the same skeleton. */
static void test_escapes_split_everywhere(void **state)
{
    (void)state;
    const char *in =
        "{\"t\":\"\\\\\",\"u\":\"\\\"\",\"v\":\"\\\\\\\"x\\u0041\\/\",\"w\":[\"\\\"]\"],"
        "\"usage\":{\"n\":1}}";
    const char *want = "{\"t\":\"\\\\\",\"u\":\"\\\"\",\"v\":\"\\\\\\\"x\\u0041\\/\",\"w\":[],"
                       "\"usage\":{\"n\":1}}";
    size_t n = strlen(in);
    for (size_t cut = 0; cut <= n; cut++) {
        for (size_t cut2 = cut; cut2 <= n; cut2 += 3) {
            struct meter__jscan j;
            const char *sk;
            size_t len;
            meter__jscan_init(&j);
            meter__jscan_feed(&j, in, cut);
            meter__jscan_feed(&j, in + cut, cut2 - cut);
            meter__jscan_feed(&j, in + cut2, n - cut2);
            assert_true(meter__jscan_finish(&j, &sk, &len));
            assert_string_equal(sk, want);
            meter__jscan_cleanup(&j);
        }
    }
}

/* Arrays keep at most 4096 container elements; the skeleton's cap stops
 * new elements at half its size but later members still come in. */
static void test_array_caps(void **state)
{
    (void)state;
    struct kb_buf b = KB_BUF_INIT;
    bool lossy = false;

    buf_puts(&b, "{\"data\":[");
    for (int i = 0; i < 5000; i++)
        buf_printf(&b, "%s{\"i\":%d}", i ? "," : "", i);
    buf_puts(&b, "],\"usage\":{\"total\":7}}");
    char *got = scan(b.data, b.len, 5, &lossy);
    assert_non_null(got);
    assert_true(lossy);
    json_t *root = json_loads(got, 0, NULL);
    assert_non_null(root);
    assert_int_equal(json_array_size(json_object_get(root, "data")), 4096);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "usage"), "total")),
                     7);
    json_decref(root);
    free(got);
    buf_reset(&b);

    /* 4000 elements of 250-byte strings: about 1 MB kept if nothing
     * stopped it; the half-cap stops it and usage after it survives. */
    char *s250 = repeat('s', 250);
    buf_puts(&b, "{\"choices\":[");
    for (int i = 0; i < 4000; i++)
        buf_printf(&b, "%s{\"text\":\"%s\"}", i ? "," : "", s250);
    buf_puts(&b, "],\"usage\":{\"total\":9}}");
    got = scan(b.data, b.len, 0, &lossy);
    assert_non_null(got);
    assert_true(lossy);
    assert_true(strlen(got) <= METER__JSCAN_SKEL_MAX);
    root = json_loads(got, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "usage"), "total")),
                     9);
    assert_true(json_array_size(json_object_get(root, "choices")) < 4000);
    json_decref(root);
    free(got);
    free(s250);
    buf_cleanup(&b);
}

/* An object too big for the skeleton, and nesting past jansson's own
 * limit, fail the scan (the meter then treats usage as unseen). */
static void test_hard_caps(void **state)
{
    (void)state;
    struct kb_buf b = KB_BUF_INIT;
    buf_putc(&b, '{');
    for (int i = 0; i < 150000; i++)
        buf_printf(&b, "%s\"key%d\":%d", i ? "," : "", i, i);
    buf_putc(&b, '}');
    assert_null(scan(b.data, b.len, 0, NULL));
    buf_reset(&b);

    for (int i = 0; i < METER__JSCAN_MAX_DEPTH + 1; i++)
        buf_putc(&b, '[');
    for (int i = 0; i < METER__JSCAN_MAX_DEPTH + 1; i++)
        buf_putc(&b, ']');
    assert_null(scan(b.data, b.len, 0, NULL));
    /* one level less is fine */
    char *got = scan(b.data + 1, b.len - 2, 0, NULL);
    assert_string_equal(got, "[[[[[[null]]]]]]");
    free(got);
    buf_cleanup(&b);
}

/* After reset, a scanner reads the next text from scratch (SSE events). */
static void test_reset(void **state)
{
    (void)state;
    struct meter__jscan j;
    const char *sk;
    size_t len;
    meter__jscan_init(&j);
    meter__jscan_feed(&j, "{\"a\":[}", 7);
    assert_false(meter__jscan_finish(&j, &sk, &len));
    meter__jscan_reset(&j);
    meter__jscan_feed(&j, "{\"b\":2}", 7);
    assert_true(meter__jscan_finish(&j, &sk, &len));
    assert_string_equal(sk, "{\"b\":2}");
    meter__jscan_reset(&j);
    meter__jscan_feed(&j, "{\"c\":", 5);
    meter__jscan_reset(&j);
    meter__jscan_feed(&j, "[{}]", 4);
    assert_true(meter__jscan_finish(&j, &sk, &len));
    assert_string_equal(sk, "[{}]");
    meter__jscan_cleanup(&j);
}

/* ---- vendor-shaped answers ---- */

static json_t *skel_of(const char *s, size_t n, unsigned step)
{
    char *sk = scan(s, n, step, NULL);
    assert_non_null(sk);
    json_error_t e;
    json_t *root = json_loads(sk, 0, &e);
    if (!root)
        print_message("skeleton does not parse: %s\n", e.text);
    assert_non_null(root);
    assert_true(strlen(sk) < 4096); /* the bulk is gone */
    free(sk);
    return root;
}

static int64_t iget(json_t *o, const char *path)
{
    char *p = kb_strdup(path), *save = NULL;
    for (char *k = strtok_r(p, ".", &save); k; k = strtok_r(NULL, ".", &save))
        o = json_object_get(o, k);
    free(p);
    assert_true(json_is_integer(o));
    return (int64_t)json_integer_value(o);
}

/* Long content with escapes and usage-looking text; usage after it. */
static void test_vendor_answers(void **state)
{
    (void)state;
    struct kb_buf text = KB_BUF_INIT, b = KB_BUF_INIT;
    for (int i = 0; i < 20000; i++)
        buf_puts(&text, "line \\\"usage\\\":{\\\"prompt_tokens\\\":1} \\\\ \\u00e9\\n");

    /* OpenAI chat completion */
    buf_printf(&b,
               "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"gpt-4o\","
               "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},"
               "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":19,"
               "\"completion_tokens\":310000,\"total_tokens\":310019,\"prompt_tokens_details\":"
               "{\"cached_tokens\":0}}}",
               text.data);
    for (unsigned step = 0; step < 3; step++) {
        json_t *r = skel_of(b.data, b.len, step);
        assert_int_equal(iget(r, "usage.prompt_tokens"), 19);
        assert_int_equal(iget(r, "usage.completion_tokens"), 310000);
        assert_int_equal(iget(r, "usage.prompt_tokens_details.cached_tokens"), 0);
        json_decref(r);
    }
    buf_reset(&b);

    /* Anthropic message */
    buf_printf(
        &b,
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":"
        "\"text\",\"text\":\"%s\"}],\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":"
        "12,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":4,"
        "\"cache_creation\":{\"ephemeral_5m_input_tokens\":1,\"ephemeral_1h_input_tokens\":2},"
        "\"output_tokens\":99}}",
        text.data);
    json_t *r = skel_of(b.data, b.len, 2);
    assert_int_equal(iget(r, "usage.cache_creation.ephemeral_1h_input_tokens"), 2);
    assert_int_equal(iget(r, "usage.output_tokens"), 99);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(r, "content"), 0), "type")),
                        "text");
    json_decref(r);
    buf_reset(&b);

    /* OpenAI Responses API, terminal event */
    buf_printf(
        &b,
        "{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_1\","
        "\"output\":[{\"type\":\"reasoning\",\"summary\":[]},{\"type\":\"message\","
        "\"content\":[{\"type\":\"output_text\",\"text\":\"%s\",\"annotations\":[]}]}],"
        "\"usage\":{\"input_tokens\":5,\"input_tokens_details\":{\"cached_tokens\":2},"
        "\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":3}}}}",
        text.data);
    r = skel_of(b.data, b.len, 1);
    assert_string_equal(json_string_value(json_object_get(r, "type")), "response.completed");
    assert_int_equal(iget(r, "response.usage.input_tokens_details.cached_tokens"), 2);
    assert_int_equal(iget(r, "response.usage.output_tokens"), 7);
    json_decref(r);
    buf_reset(&b);

    /* OpenAI embeddings: 300 vectors of 1536 floats */
    buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < 300; i++) {
        buf_printf(&b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":[", i ? "," : "", i);
        for (int k = 0; k < 1536; k++)
            buf_printf(&b, "%s-0.0%d", k ? "," : "", 1000 + k);
        buf_puts(&b, "]}");
    }
    buf_puts(&b, "],\"model\":\"text-embedding-3-small\",\"usage\":{\"prompt_tokens\":8,"
                 "\"total_tokens\":8}}");
    char *sk = scan(b.data, b.len, 0, NULL);
    assert_non_null(sk);
    assert_true(strlen(sk) < 20000);
    r = json_loads(sk, 0, NULL);
    assert_int_equal(iget(r, "usage.prompt_tokens"), 8);
    assert_int_equal(json_array_size(json_object_get(r, "data")), 300);
    json_decref(r);
    free(sk);
    buf_reset(&b);

    /* Stripe checkout session with a long description and line items */
    buf_printf(&b,
               "{\"id\":\"cs_1\",\"object\":\"checkout.session\",\"metadata\":{\"note\":\"%s\"},"
               "\"line_items\":{\"data\":[{\"amount_total\":1}]},\"amount_total\":4200,"
               "\"currency\":\"usd\"}",
               text.data);
    r = skel_of(b.data, b.len, 3);
    assert_int_equal(iget(r, "amount_total"), 4200);
    assert_string_equal(json_string_value(json_object_get(r, "currency")), "usd");
    json_decref(r);
    buf_reset(&b);

    /* Twilio message */
    buf_printf(&b,
               "{\"sid\":\"SM1\",\"body\":\"%s\",\"num_segments\":\"2\",\"price\":null,"
               "\"subresource_uris\":{\"media\":\"/x\"}}",
               text.data);
    r = skel_of(b.data, b.len, 4);
    assert_string_equal(json_string_value(json_object_get(r, "num_segments")), "2");
    json_decref(r);
    buf_cleanup(&b);
    buf_cleanup(&text);
}

/* ---- property: skeleton == reference transformation ---- */

/* What the skeleton of v must parse to (v at `depth` containers deep);
 * strings here are plain ASCII, so raw and decoded lengths agree. */
static json_t *reference(json_t *v, int depth)
{
    if (json_is_object(v) || json_is_array(v)) {
        if (depth + 1 > METER__JSCAN_KEEP_DEPTH)
            return json_null();
    }
    if (json_is_object(v)) {
        json_t *o = json_object(), *x;
        const char *k;
        json_object_foreach(v, k, x)
        {
            if (strlen(k) <= METER__JSCAN_STR_MAX)
                json_object_set_new(o, k, reference(x, depth + 1));
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array(), *x;
        size_t i;
        json_array_foreach(v, i, x)
        {
            if ((json_is_object(x) || json_is_array(x)) &&
                json_array_size(a) < METER__JSCAN_ARRAY_MAX)
                json_array_append_new(a, reference(x, depth + 1));
        }
        return a;
    }
    if (json_is_string(v) && json_string_length(v) > METER__JSCAN_STR_MAX)
        return json_string("");
    return json_deep_copy(v);
}

static json_t *random_value(unsigned *seed, int depth)
{
    unsigned r = rnd(seed) % (depth > 9 ? 5 : 8);
    switch (r) {
    case 0:
        return json_integer((json_int_t)rnd(seed) * 1000 + rnd(seed) % 1000);
    case 1: {
        size_t n = rnd(seed) % 4 == 0 ? 240 + rnd(seed) % 40 : rnd(seed) % 20;
        char *s = kb_malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)(' ' + 1 + rnd(seed) % 90); /* no quote or backslash issues: */
        for (size_t i = 0; i < n; i++)
            if (s[i] == '"' || s[i] == '\\')
                s[i] = 'q';
        s[n] = '\0';
        json_t *j = json_string(s);
        free(s);
        return j;
    }
    case 2:
        return rnd(seed) % 2 ? json_true() : json_null();
    case 3:
        return json_real((double)(rnd(seed) % 1000) / 8.0);
    case 4:
        return json_false();
    case 5:
    case 6: {
        json_t *o = json_object();
        int n = (int)(rnd(seed) % 6);
        for (int i = 0; i < n; i++) {
            char key[300];
            size_t kl = rnd(seed) % 10 == 0 ? 250 + rnd(seed) % 20 : 1 + rnd(seed) % 8;
            for (size_t k = 0; k < kl; k++)
                key[k] = (char)('a' + rnd(seed) % 26);
            key[kl] = '\0';
            json_object_set_new(o, key, random_value(seed, depth + 1));
        }
        return o;
    }
    default: {
        json_t *a = json_array();
        int n = (int)(rnd(seed) % 6);
        for (int i = 0; i < n; i++)
            json_array_append_new(a, random_value(seed, depth + 1));
        return a;
    }
    }
}

static void test_property_random_documents(void **state)
{
    (void)state;
    for (unsigned doc = 0; doc < 400; doc++) {
        unsigned seed = doc * 7919u + 1;
        json_t *v = random_value(&seed, 0);
        char *text = json_dumps(v, JSON_ENCODE_ANY | (doc % 2 ? JSON_INDENT(2) : JSON_COMPACT));
        json_t *want = reference(v, 0);
        for (unsigned step = 0; step < 3; step++) {
            char *sk = scan(text, strlen(text), step * 5, NULL);
            assert_non_null(sk);
            json_t *got = json_loads(sk, JSON_DECODE_ANY, NULL);
            if (!got || !json_equal(got, want)) {
                char *w = json_dumps(want, JSON_ENCODE_ANY);
                print_message("doc %u\n in:   %.300s\n skel: %.300s\n want: %.300s\n", doc, text,
                              sk, w);
                free(w);
            }
            assert_non_null(got);
            assert_true(json_equal(got, want));
            json_decref(got);
            free(sk);
        }
        json_decref(want);
        free(text);
        json_decref(v);
    }
}

/* ---- speed ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 50 MB of a chat completion's content (text with an escape every ~50
 * bytes), and 50 MB of embeddings (numbers and commas: the worst case,
 * every byte through the state machine), scanned in 64 KiB pieces. The
 * figures are printed; the bound only catches a scan that is not linear. */
static void test_speed_50mb(void **state)
{
    (void)state;
    size_t target = 50u * 1000 * 1000;
    struct kb_buf b = KB_BUF_INIT;

    for (int kind = 0; kind < 2; kind++) {
        buf_reset(&b);
        if (kind == 0) {
            buf_puts(&b, "{\"choices\":[{\"message\":{\"content\":\"");
            while (b.len < target)
                buf_puts(&b, "The quick brown fox jumps over the lazy dog.\\n Then ");
            buf_puts(&b, "\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}");
        } else {
            buf_puts(&b, "{\"data\":[{\"embedding\":[");
            while (b.len < target)
                buf_puts(&b, "-0.012345678,0.0234567891,0.93456789,-0.1,");
            buf_puts(&b, "0]}],\"usage\":{\"prompt_tokens\":1}}");
        }
        struct meter__jscan j;
        const char *sk;
        size_t len;
        meter__jscan_init(&j);
        double t0 = now_s();
        for (size_t i = 0; i < b.len; i += 65536)
            meter__jscan_feed(&j, b.data + i, b.len - i < 65536 ? b.len - i : 65536);
        assert_true(meter__jscan_finish(&j, &sk, &len));
        double t = now_s() - t0;
        double ns = t * 1e9 / (double)b.len;
        print_message("jscan %s: %zu bytes in %.3f s = %.2f ns/byte; skeleton %s\n",
                      kind == 0 ? "long string" : "number array", b.len, t, ns, sk);
        assert_non_null(strstr(sk, "\"usage\":{\"prompt_tokens\":1"));
        assert_true(ns < 100.0);
        meter__jscan_cleanup(&j);
    }
    buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_long_tokens),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_escapes_split_everywhere),
        cmocka_unit_test(test_array_caps),
        cmocka_unit_test(test_hard_caps),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_vendor_answers),
        cmocka_unit_test(test_property_random_documents),
        cmocka_unit_test(test_speed_50mb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
