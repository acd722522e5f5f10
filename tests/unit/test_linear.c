/*
 * test_linear.c - every parser and meter that reads a request or an answer
 * body costs time linear in its size, on the inputs that make a careless
 * parser quadratic (issue 14, item 5): deep nesting, many tiny keys, keys
 * that look alike, long escape runs, many SSE events or data lines, many
 * '&' separators, many path segments and escapes, near-miss secrets,
 * input fed in tiny pieces.
 *
 * Each case builds its adversarial input at size n and 8n and measures the
 * process CPU time (CLOCK_PROCESS_CPUTIME_ID, not the wall clock) of
 * parsing it, repeated until the small run takes a few milliseconds, the
 * minimum of several runs. Linear work gives a ratio near 8, quadratic 64:
 * the bound, 24, leaves room for a sanitizer build on a loaded machine and
 * for caches that a larger input no longer fits. The harness proves it can
 * fail: a deliberately quadratic function must come out above the bound.
 *
 * Counting work would be deterministic, but it needs counters inside the
 * parsers; CPU time measures them as they are.
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

#include "codec_test.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/codec.h"
#include "meter/meter.h"
#include "meter/meter_int.h"
#include "net/h1.h"
#include "policy/canon.h"
#include "policy/pattern.h"
#include "proxy/hygiene.h"
#include "proxy/scrub.h"
#include "proxy/stripe_form.h"

#if defined(__SANITIZE_ADDRESS__)
/* ASan's memmem interceptor checks the whole haystack after each call, so
 * a parser that finds one multipart boundary after another (linear without
 * the sanitizer: memmem stops at the match) measures quadratic under it.
 * Only memmem's range check is off; every other check stays. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "intercept_memmem=0";
}
#endif

#define RATIO_MAX 24.0 /* for 8x the input; linear ~8, quadratic ~64 */
#define RUNS 5         /* the minimum of these many measurements */
#define MIN_NS 3e6     /* a small measurement lasts at least this long */

/* Builds the adversarial input of about `n` bytes into b. */
typedef void build_fn(struct kb_buf *b, size_t n);
/* Parses in[0, n) once. */
typedef void work_fn(const char *in, size_t n);

static volatile size_t g_sink; /* results go here, so no work is optimised away */

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The fastest of RUNS measurements of `reps` calls. */
static double measure(work_fn *fn, const char *in, size_t n, int reps)
{
    double best = 0;
    for (int r = 0; r < RUNS; r++) {
        double t0 = cpu_ns();
        for (int i = 0; i < reps; i++)
            fn(in, n);
        double t = cpu_ns() - t0;
        if (r == 0 || t < best)
            best = t;
    }
    return best;
}

/* The cost ratio of parsing the 8n input against the n input. */
static double ratio_of(build_fn *build, work_fn *fn, size_t n)
{
    struct kb_buf small = KB_BUF_INIT, big = KB_BUF_INIT;
    build(&small, n);
    build(&big, 8 * n);
    if (big.len < 4 * small.len || big.len > 12 * small.len) /* coded: 8x decoded */
        fail_msg("inputs of %zu and %zu bytes: not 8x", small.len, big.len);
    int reps = 1;
    fn(small.data, small.len); /* warm up: first-touch page faults, lazy init */
    while (reps < 4096 && measure(fn, small.data, small.len, reps) < MIN_NS)
        reps *= 2;
    double a = measure(fn, small.data, small.len, reps);
    double b = measure(fn, big.data, big.len, reps);
    buf_cleanup(&small);
    buf_cleanup(&big);
    return b / (a > 1 ? a : 1);
}

static void check(const char *what, build_fn *build, work_fn *fn, size_t n)
{
    double r = ratio_of(build, fn, n);
    print_message("  %-44s 8x input: %5.1fx time\n", what, r);
    if (r >= RATIO_MAX)
        fail_msg("%s: 8x the input took %.1fx the time (quadratic is 64x)", what, r);
}

/*
 * A case known to be super-linear in code this test's owner does not edit
 * (reported, not fixed here): measured and printed on every run, failing
 * only with KB_LINEAR_STRICT=1 in the environment, so that whoever fixes it
 * can prove the fix and turn it into a check(). None is known today (the
 * Stripe meter's items were, until meter/stripe_read.c indexed them).
 */
__attribute__((unused)) static void check_known(const char *what, const char *where,
                                                build_fn *build, work_fn *fn, size_t n)
{
    double r = ratio_of(build, fn, n);
    print_message("  %-44s 8x input: %5.1fx time  KNOWN, %s\n", what, r, where);
    const char *strict = getenv("KB_LINEAR_STRICT");
    if (strict && strcmp(strict, "1") == 0 && r >= RATIO_MAX)
        fail_msg("%s: 8x the input took %.1fx the time (%s)", what, r, where);
    if (r < RATIO_MAX / 2)
        print_message("  %s now looks linear: make it a check()\n", what);
}

/* Appends `unit` until b holds at least n bytes. */
static void repeat(struct kb_buf *b, const char *unit, size_t n)
{
    size_t u = strlen(unit);
    while (b->len < n)
        buf_append(b, unit, u);
}

/* ---- the harness can fail ---- */

static void w_quadratic(const char *in, size_t n)
{
    size_t s = 0;
    for (size_t i = 0; i < n; i += 16)
        for (size_t j = 0; j < i; j += 16)
            s += (unsigned char)in[j];
    g_sink = s;
}

static void b_text(struct kb_buf *b, size_t n)
{
    repeat(b, "abcdefgh", n);
}

static void test_harness_detects_quadratic(void **state)
{
    (void)state;
    double r = ratio_of(b_text, w_quadratic, 16 * 1024);
    print_message("  quadratic reference                          8x input: %5.1fx time\n", r);
    assert_true(r > RATIO_MAX);
}

/* ---- form bodies (meter/common.c) ---- */

static void w_form(const char *in, size_t n)
{
    struct meter__form f;
    char *em = NULL;
    if (meter__form_parse(in, n, &f, &em) == KB_OK) {
        const struct meter__form_pair *v = NULL;
        /* one lookup of a key that is everywhere, one of a missing key */
        if (meter__form_get(&f, "a[0]", &v, &em) != KB_OK)
            free(em), em = NULL;
        if (meter__form_get(&f, "zz", &v, &em) != KB_OK)
            free(em), em = NULL;
        g_sink = f.n;
        meter__form_cleanup(&f);
    }
    free(em);
}

static void b_amps(struct kb_buf *b, size_t n)
{
    repeat(b, "&&&&&&&&", n);
}
static void b_tiny_keys(struct kb_buf *b, size_t n)
{
    repeat(b, "a=1&b=&c&", n);
}
static void b_same_keys(struct kb_buf *b, size_t n)
{
    repeat(b, "a[0]=1&", n);
}
static void b_escapes(struct kb_buf *b, size_t n)
{
    buf_puts(b, "a[0]=");
    repeat(b, "%41%2B+", n);
}

static void test_form(void **state)
{
    (void)state;
    check("form: many '&'", b_amps, w_form, 32768);
    check("form: many tiny keys", b_tiny_keys, w_form, 32768);
    check("form: one key many times (lookup too)", b_same_keys, w_form, 32768);
    check("form: long escape run", b_escapes, w_form, 32768);
}

/* ---- Stripe JSON to form (proxy/stripe_form.c) ---- */

static void w_stripe_form(const char *in, size_t n)
{
    char *out = NULL, *em = NULL;
    size_t len = 0;
    if (stripe_form_from_json(in, n, &out, &len, &em) == KB_OK)
        g_sink = len;
    free(out);
    free(em);
}

static void b_json_keys(struct kb_buf *b, size_t n)
{
    buf_putc(b, '{');
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b, "%s\"k%zu\":1", i ? "," : "", i);
    buf_putc(b, '}');
}
static void b_json_same_keys(struct kb_buf *b, size_t n)
{
    buf_puts(b, "{\"a\":1");
    repeat(b, ",\"a\":1", n);
    buf_putc(b, '}');
}
static void b_json_nested_siblings(struct kb_buf *b, size_t n)
{
    /* each member nested to the cap: the longest keys the form can get */
    static const char deep[] = "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
                               "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":1}}}}}}}}}}}}}}";
    buf_putc(b, '{');
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b, "%s\"k%zu\":%s", i ? "," : "", i, deep);
    buf_putc(b, '}');
}
static void b_json_escapes(struct kb_buf *b, size_t n)
{
    buf_puts(b, "{\"a\":\"");
    repeat(b, "\\u0041\\n\\\"", n);
    buf_puts(b, "\"}");
}
static void b_json_array(struct kb_buf *b, size_t n)
{
    buf_puts(b, "{\"a\":[1");
    repeat(b, ",[],{},1", n);
    buf_puts(b, "]}");
}
static void b_json_deep(struct kb_buf *b, size_t n)
{
    /* far past every depth cap: refused, but only after reading it */
    buf_puts(b, "{\"a\":");
    size_t d = (n - 5) / 2;
    for (size_t i = 0; i < d; i++)
        buf_putc(b, '[');
    for (size_t i = 0; i < d; i++)
        buf_putc(b, ']');
    buf_putc(b, '}');
}

static void test_stripe_form(void **state)
{
    (void)state;
    check("stripe form: many keys", b_json_keys, w_stripe_form, 32768);
    check("stripe form: one key many times", b_json_same_keys, w_stripe_form, 32768);
    check("stripe form: siblings nested to the cap", b_json_nested_siblings, w_stripe_form,
          32768);
    check("stripe form: long escape run", b_json_escapes, w_stripe_form, 32768);
    check("stripe form: long array of empties", b_json_array, w_stripe_form, 32768);
    check("stripe form: nesting past the cap", b_json_deep, w_stripe_form, 8192);
}

/* ---- JSON skeleton scanner (meter/jscan.c) ---- */

static void w_jscan(const char *in, size_t n)
{
    static struct meter__jscan j;
    static bool init;
    if (!init)
        meter__jscan_init(&j), init = true;
    meter__jscan_reset(&j);
    /* as an answer arrives: in pieces of 7 bytes */
    for (size_t i = 0; i < n; i += 7)
        meter__jscan_feed(&j, in + i, n - i < 7 ? n - i : 7);
    const char *skel;
    size_t len = 0;
    g_sink = meter__jscan_finish(&j, &skel, &len) ? len : 0;
}

static void b_jscan_deep_objects(struct kb_buf *b, size_t n)
{
    size_t d = n / 7;
    for (size_t i = 0; i < d; i++)
        buf_puts(b, "{\"a\":");
    buf_putc(b, '1');
    for (size_t i = 0; i < d; i++)
        buf_putc(b, '}');
}
static void b_jscan_usage(struct kb_buf *b, size_t n)
{
    /* many members that look like what the meters keep */
    buf_puts(b, "{\"usage\":{\"input_tokens\":1}");
    repeat(b, ",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}", n);
    buf_putc(b, '}');
}
static void b_jscan_long_string(struct kb_buf *b, size_t n)
{
    buf_puts(b, "{\"model\":\"");
    repeat(b, "\\u00e9\\\\\\\"x", n);
    buf_puts(b, "\"}");
}

static void test_jscan(void **state)
{
    (void)state;
    check("jscan: nesting past the depth cap", b_json_deep, w_jscan, 32768);
    check("jscan: deep objects", b_jscan_deep_objects, w_jscan, 8192);
    check("jscan: many keys", b_json_keys, w_jscan, 32768);
    check("jscan: one key many times", b_jscan_usage, w_jscan, 32768);
    check("jscan: long escaped string", b_jscan_long_string, w_jscan, 32768);
    check("jscan: long array of empties", b_json_array, w_jscan, 32768);
}

/* ---- SSE splitter (meter/sse.c) ---- */

static void sse_cb(void *ctx, const char *event, const char *data, size_t len)
{
    (void)ctx;
    (void)event;
    (void)data;
    g_sink += len;
}

static void w_sse(const char *in, size_t n)
{
    struct meter__sse s;
    meter__sse_init(&s);
    for (size_t i = 0; i < n; i += 5)
        meter__sse_feed(&s, in + i, n - i < 5 ? n - i : 5, sse_cb, NULL);
    meter__sse_cleanup(&s);
}

static void b_sse_events(struct kb_buf *b, size_t n)
{
    repeat(b, "event: x\ndata: {\"a\":1}\n\n", n);
}
static void b_sse_data_lines(struct kb_buf *b, size_t n)
{
    /* one event of many data lines: they are joined */
    repeat(b, "data: {\"a\":1}\n", n);
    buf_puts(b, "\n");
}
static void b_sse_raw_lines(struct kb_buf *b, size_t n)
{
    /* one event of many short non-JSON data lines */
    repeat(b, "data: x\r", n);
    buf_puts(b, "\r");
}
static void b_sse_blank(struct kb_buf *b, size_t n)
{
    repeat(b, "\r\n:\r\n\n\r", n);
}
static void b_sse_long_line(struct kb_buf *b, size_t n)
{
    buf_puts(b, "data: ");
    repeat(b, "[[[[]]]]", n);
    buf_puts(b, "\n\n");
}

static void test_sse(void **state)
{
    (void)state;
    check("sse: many events", b_sse_events, w_sse, 32768);
    check("sse: one event, many JSON data lines", b_sse_data_lines, w_sse, 32768);
    check("sse: one event, many raw data lines (CR)", b_sse_raw_lines, w_sse, 32768);
    check("sse: blank lines and comments", b_sse_blank, w_sse, 32768);
    check("sse: one long data line", b_sse_long_line, w_sse, 32768);
}

/* ---- codecs (core/codec.c) ---- */

static enum test_enc g_enc;

static void decoded(void *ctx, const char *data, size_t len)
{
    (void)ctx;
    (void)data;
    g_sink += len;
}

static void w_codec(const char *in, size_t n)
{
    static const enum kb_coding coding[] = {KB_CODING_GZIP, KB_CODING_DEFLATE, KB_CODING_DEFLATE,
                                            KB_CODING_BR, KB_CODING_ZSTD};
    struct kb_decoder *d = codec_decoder_new(coding[g_enc], (size_t)1 << 30, (size_t)1 << 20);
    assert_non_null(d);
    /* in pieces of 3 bytes: a streamed answer at its most fragmented */
    for (size_t i = 0; i < n; i += 3)
        if (codec_decode(d, in + i, n - i < 3 ? n - i : 3, decoded, NULL) != KB_OK)
            fail_msg("%s: corrupt at %zu", test_enc_name[g_enc], i);
    codec_decoder_free(d);
}

/* Pseudo-random text (barely compressible: long runs of literals). */
static void b_coded_random(struct kb_buf *b, size_t n)
{
    char *plain = kb_malloc(n);
    unsigned seed = 7;
    for (size_t i = 0; i < n; i++)
        plain[i] = (char)(32 + test_rand(&seed) % 90);
    size_t len = 0;
    char *enc = test_encode(g_enc, plain, n, &len);
    buf_append(b, enc, len);
    free(enc);
    free(plain);
}
/* JSON-like text that compresses well (many short back-references), but
 * not to nothing: numbers that count up. */
static void b_coded_repeats(struct kb_buf *b, size_t n)
{
    struct kb_buf plain = KB_BUF_INIT;
    for (size_t i = 0; plain.len < 4 * n; i++)
        buf_printf(&plain, "{\"id\":%zu,\"ok\":[true,false,null]},", i);
    size_t len = 0;
    char *enc = test_encode(g_enc, plain.data, plain.len, &len);
    buf_append(b, enc, len);
    free(enc);
    buf_cleanup(&plain);
}

static void test_codec(void **state)
{
    (void)state;
    char what[64];
    for (g_enc = ENC_GZIP; g_enc <= ENC_ZSTD; g_enc++) {
        snprintf(what, sizeof what, "codec %s: random text, 3-byte pieces", test_enc_name[g_enc]);
        check(what, b_coded_random, w_codec, 16384);
        snprintf(what, sizeof what, "codec %s: repeats, 3-byte pieces", test_enc_name[g_enc]);
        check(what, b_coded_repeats, w_codec, 16384);
    }
}

/* ---- path canonicaliser (policy/canon.c) ---- */

static void w_canon(const char *in, size_t n)
{
    size_t plen = 0, olen = 0;
    char *em = NULL;
    if (policy_canon_check(in, n, n, &plen, &em) == KB_OK) {
        char *c = policy_canon_path(in, plen, &olen);
        g_sink = olen;
        free(c);
    }
    free(em);
}

static void b_path_segments(struct kb_buf *b, size_t n)
{
    repeat(b, "/a/b%2C/.a/a.", n);
}
static void b_path_escapes(struct kb_buf *b, size_t n)
{
    buf_putc(b, '/');
    repeat(b, "%61%C3%A9%3a", n);
}
static void b_path_query(struct kb_buf *b, size_t n)
{
    buf_puts(b, "/v1/x?");
    repeat(b, "a=%41&&b=..%2F&", n);
}
static void b_path_dots(struct kb_buf *b, size_t n)
{
    /* segments that start like "." and ".." but are not */
    repeat(b, "/..a/.a./.../a..", n);
}

static void test_canon(void **state)
{
    (void)state;
    check("path: many segments", b_path_segments, w_canon, 32768);
    check("path: long escape run", b_path_escapes, w_canon, 32768);
    check("path: long query of escapes and '&'", b_path_query, w_canon, 32768);
    check("path: dot look-alike segments", b_path_dots, w_canon, 32768);
}

/* ---- endpoint patterns (policy/pattern.c) over a long path ---- */

static struct kb_policy *g_policy;

static void w_policy(const char *in, size_t n)
{
    g_sink = policy_allows(g_policy, "POST", in, n);
}

static void b_policy_path(struct kb_buf *b, size_t n)
{
    repeat(b, "/v1/a", n);
}

static void test_policy(void **state)
{
    (void)state;
    const char *pats[KB_POLICY_MAX_PATTERNS];
    char store[KB_POLICY_MAX_PATTERNS][32];
    for (int i = 0; i < KB_POLICY_MAX_PATTERNS; i++) {
        snprintf(store[i], sizeof store[i], i % 2 ? "/v1/a/+/%d/*" : "POST /v1/+/a/*", i);
        pats[i] = store[i];
    }
    char *em = NULL;
    assert_int_equal(policy_compile(pats, KB_POLICY_MAX_PATTERNS, &g_policy, &em), KB_OK);
    check("patterns: 256 wildcards over many segments", b_policy_path, w_policy, 4096);
    policy_free(g_policy);
}

/* ---- HTTP/1 lines (net/h1.c) ---- */

static void w_h1_field(const char *in, size_t n)
{
    size_t nl, vo, vl;
    g_sink = (size_t)h1_field_line(in, n, &nl, &vo, &vl);
}
static void w_h1_request(const char *in, size_t n)
{
    size_t ml, to, tl;
    int minor;
    bool badv;
    g_sink = h1_request_line(in, n, &ml, &to, &tl, &minor, &badv);
}
static void w_h1_chunk(const char *in, size_t n)
{
    int64_t v;
    g_sink = h1_chunk_size(in, n, &v);
}

static void b_h1_blank_value(struct kb_buf *b, size_t n)
{
    /* a value of blanks with one byte in the middle: trimmed from both ends */
    buf_puts(b, "X-A:");
    repeat(b, " \t", n / 2);
    buf_putc(b, 'x');
    repeat(b, "\t ", n);
}
static void b_h1_target(struct kb_buf *b, size_t n)
{
    buf_puts(b, "GET /");
    repeat(b, "a/%20", n);
    buf_puts(b, " HTTP/1.1");
}
static void b_h1_spaces(struct kb_buf *b, size_t n)
{
    /* a line of spaces: where the target would be */
    buf_puts(b, "GET");
    repeat(b, "    ", n);
}
static void b_h1_chunk_ext(struct kb_buf *b, size_t n)
{
    buf_puts(b, "1f");
    repeat(b, ";a=b", n);
}

static void test_h1(void **state)
{
    (void)state;
    check("h1: field value of blanks", b_h1_blank_value, w_h1_field, 32768);
    check("h1: long request target", b_h1_target, w_h1_request, 32768);
    check("h1: request line of spaces", b_h1_spaces, w_h1_request, 32768);
    check("h1: chunk size with many extensions", b_h1_chunk_ext, w_h1_chunk, 32768);
}

/* ---- secrets in answers (proxy/scrub.c), tokens in URLs (hygiene.c) ---- */

static struct kb_scrub g_scrub;

static void w_scrub(const char *in, size_t n)
{
    struct kb_buf tail = KB_BUF_INIT, out = KB_BUF_INIT;
    const char *data;
    size_t len;
    /* an answer in pieces of 13 bytes */
    for (size_t i = 0; i < n; i += 13) {
        buf_reset(&out);
        scrub_feed(&g_scrub, &tail, in + i, n - i < 13 ? n - i : 13, &out, &data, &len);
        g_sink += len;
    }
    buf_cleanup(&tail);
    buf_cleanup(&out);
}

static void b_near_secrets(struct kb_buf *b, size_t n)
{
    /* every prefix of the secret, each one byte short of a match */
    static const char s[] = "sk_test_0123456789abcdefghij";
    for (size_t k = 1; b->len < n; k = k % (sizeof s - 2) + 1) {
        buf_append(b, s, k);
        buf_putc(b, '!');
    }
}
static void b_same_prefix(struct kb_buf *b, size_t n)
{
    repeat(b, "sk_test_012345678", n);
}

static void w_token(const char *in, size_t n)
{
    g_sink = hygiene_url_has_token(in, n);
}

static void b_token_lookalike(struct kb_buf *b, size_t n)
{
    /* many token prefixes, raw and encoded up to three times */
    buf_puts(b, "/v1/x?");
    repeat(b, "kb_AAAAAAAAAA&k%62_AAAA&%256b%255f&%25256bb_A", n);
}

static void test_secrets(void **state)
{
    (void)state;
    memset(&g_scrub, 0, sizeof g_scrub);
    scrub_add(&g_scrub, "sk_test_0123456789abcdefghijk");
    scrub_add(&g_scrub, "Bearer sk_test_0123456789abcdefghijk");
    check("scrub: every near-miss prefix, 13-byte pieces", b_near_secrets, w_scrub, 32768);
    check("scrub: one long shared prefix, 13-byte pieces", b_same_prefix, w_scrub, 32768);
    check("url token: encoded look-alikes", b_token_lookalike, w_token, 32768);
}

/* ---- request meters (meter/meter.c and the vendors' meters) ---- */

static struct kb_pricing *g_pricing;
static const char *g_vendor, *g_path, *g_ctype;

static void w_meter(const char *in, size_t n)
{
    struct kb_meter_req req = {g_vendor, "POST", g_path, strlen(g_path), g_ctype, in, n};
    struct kb_meter *m = NULL;
    int64_t reserve = 0;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    if (meter_begin(g_pricing, &req, &m, &reserve, &nb, &nbl, &em) == KB_OK)
        g_sink = (size_t)reserve + nbl;
    meter_free(m);
    free(nb);
    free(em);
}

static void b_checkout_items(struct kb_buf *b, size_t n)
{
    /* under the meter's caps (250 items, 4096 fields): every item is priced */
    buf_puts(b, "mode=payment&success_url=https%3A%2F%2Fexample.com%2Fok");
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b,
                   "&line_items[%zu][price_data][currency]=usd"
                   "&line_items[%zu][price_data][unit_amount]=1&line_items[%zu][quantity]=1",
                   i, i, i);
}
static void b_checkout_items_down(struct kb_buf *b, size_t n)
{
    /* each new item number below all before it: the index's worst order
     * (under the 250-item cap at 8x: ~230 items) */
    buf_puts(b, "mode=payment&currency=usd");
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b, "&line_items[%zu][price_data][unit_amount]=1&line_items[%zu][quantity]=1",
                   999999 - i, 999999 - i);
}
static void b_checkout_one_item(struct kb_buf *b, size_t n)
{
    /* every field in one item: its own fields are the whole form */
    buf_puts(b, "mode=payment&line_items[0][price_data][currency]=usd"
                "&line_items[0][price_data][unit_amount]=1&line_items[0][quantity]=1");
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b, "&line_items[0][price_data][product_data][metadata][k%zu]=v", i);
}
static void b_subscription_items(struct kb_buf *b, size_t n)
{
    buf_puts(b, "customer=cus_1&currency=usd");
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b, "&items[%zu][price_data][unit_amount]=1&items[%zu][quantity]=1", i, i);
}
static void b_metadata(struct kb_buf *b, size_t n)
{
    buf_puts(b, "amount=100&currency=usd");
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b, "&metadata[k%zu]=v", i);
}
static void b_chat_messages(struct kb_buf *b, size_t n)
{
    buf_puts(b, "{\"model\":\"gpt-4o-mini\",\"max_tokens\":16,\"messages\":[");
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b, "%s{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}",
                   i ? "," : "");
    buf_puts(b, "]}");
}
static void b_claude_messages(struct kb_buf *b, size_t n)
{
    buf_puts(b, "{\"model\":\"claude-3-5-haiku-20241022\",\"max_tokens\":16,\"messages\":[");
    for (size_t i = 0; b->len < n; i++)
        buf_printf(b, "%s{\"role\":\"user\",\"content\":\"hi\"}", i ? "," : "");
    buf_puts(b, "]}");
}

static void b_multipart(struct kb_buf *b, size_t n)
{
    /* many parts, most unnamed look-alikes, with near-miss boundaries */
    while (b->len < n)
        buf_puts(b, "--XyZ\r\nContent-Disposition: form-data; xname=\"model\"\r\n\r\n--Xy\r\n"
                    "--XyZ\r\nContent-Disposition: form-data; name=\"seconds\"\r\n\r\n4\r\n");
    buf_puts(b, "--XyZ--\r\n");
}

static void w_sms(const char *in, size_t n)
{
    g_sink = (size_t)meter__sms_segments(in, n);
}

static void b_sms(struct kb_buf *b, size_t n)
{
    /* GSM-7 extension characters, then UCS-2 forcing ones, then invalid UTF-8 */
    repeat(b, "{}[]~^\\|\xe2\x82\xac\xf0\x9f\x98\x80" "a\xc3", n);
}

static void test_meters(void **state)
{
    (void)state;
    char *em = NULL;
    assert_int_equal(meter_pricing_load(NULL, &g_pricing, &em), KB_OK);
    g_vendor = "stripe";
    g_ctype = "application/x-www-form-urlencoded";
    g_path = "/v1/checkout/sessions";
    /* items are read from an index of the form built once (items_index in
     * meter/stripe_read.c), not by a scan of the form per field of each
     * item: that was items x fields, bounded only by the caps */
    check("stripe meter: checkout, many line items", b_checkout_items, w_meter, 3000);
    check("stripe meter: checkout, items numbered down", b_checkout_items_down, w_meter, 2200);
    check("stripe meter: checkout, one item many fields", b_checkout_one_item, w_meter, 8192);
    g_path = "/v1/subscriptions";
    check("stripe meter: subscription, many items", b_subscription_items, w_meter, 1700);
    g_path = "/v1/payment_intents";
    check("stripe meter: payment intent, much metadata", b_metadata, w_meter, 8192);
    g_vendor = "openai";
    g_ctype = "application/json";
    g_path = "/v1/chat/completions";
    check("openai meter: many messages", b_chat_messages, w_meter, 32768);
    g_path = "/v1/videos";
    g_ctype = "multipart/form-data; boundary=XyZ";
    check("openai meter: video form, many parts", b_multipart, w_meter, 32768);
    g_vendor = "anthropic";
    g_ctype = "application/json";
    g_path = "/v1/messages";
    check("anthropic meter: many messages", b_claude_messages, w_meter, 32768);
    meter_pricing_free(g_pricing);
    check("twilio: SMS segments of adversarial text", b_sms, w_sms, 32768);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_harness_detects_quadratic),
        cmocka_unit_test(test_form),
        cmocka_unit_test(test_stripe_form),
        cmocka_unit_test(test_jscan),
        cmocka_unit_test(test_sse),
        cmocka_unit_test(test_codec),
        cmocka_unit_test(test_canon),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_h1),
        cmocka_unit_test(test_secrets),
        cmocka_unit_test(test_meters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
