/*
 * test_scrub.c - the vendor secret kept out of answers (src/proxy/scrub.c).
 *
 * A stream cut at any points scrubs to the same bytes as the whole, never
 * lets a needle through, holds back only what may begin a needle, and
 * copies nothing when there is nothing to hide.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/scrub.h"

static const char secret[] = "sk_live_0123456789abcdef";
static const char b64[] = "QUMxMjM6c2VjcmV0dG9rZW4=";

static void setup_scrub(struct kb_scrub *s)
{
    memset(s, 0, sizeof *s);
    scrub_add(s, secret);
    scrub_add(s, b64);
    scrub_add(s, "short"); /* under KB_SCRUB_MIN: ignored */
}

/* Feeds text in pieces cut by `seed`; returns what was sent (caller frees). */
static char *stream(const struct kb_scrub *s, const char *text, size_t len, unsigned seed,
                    size_t *max_tail)
{
    struct kb_buf tail = KB_BUF_INIT, out = KB_BUF_INIT, sent = KB_BUF_INIT;
    size_t i = 0;
    *max_tail = 0;
    srand(seed);
    while (i < len) {
        size_t n = seed ? 1 + (size_t)rand() % 13 : len;
        if (n > len - i)
            n = len - i;
        const char *d;
        size_t dn;
        scrub_feed(s, &tail, text + i, n, &out, &d, &dn);
        buf_append(&sent, d, dn);
        if (tail.len > *max_tail)
            *max_tail = tail.len;
        i += n;
    }
    buf_append(&sent, tail.data ? tail.data : "", tail.len); /* the end flushes the tail */
    buf_putc(&sent, '\0');
    buf_cleanup(&tail);
    buf_cleanup(&out);
    return buf_take(&sent, NULL);
}

static void test_splits(void **state)
{
    (void)state;
    struct kb_scrub s;
    setup_scrub(&s);
    static const char *const texts[] = {
        "{\"error\":{\"message\":\"Invalid API key sk_live_0123456789abcdef\"}}",
        "sk_live_0123456789abcdefsk_live_0123456789abcdef",
        "Basic QUMxMjM6c2VjcmV0dG9rZW4= and sk_live_0123456789abcdeX (not a secret)",
        "data: sk_live_\n\ndata: 0123456789abcdef\n\n",
        "ssssk_live_0123456789abcdef",
        "nothing to hide here at all, only text",
        "ends with a prefix: sk_live_0123",
    };
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        size_t len = strlen(texts[t]), tail;
        char *whole = stream(&s, texts[t], len, 0, &tail);
        assert_int_equal(strlen(whole), len);
        assert_null(strstr(whole, secret));
        assert_null(strstr(whole, b64));
        char *ref = strdup(texts[t]);
        scrub_all(&s, ref, len);
        assert_string_equal(whole, ref);
        for (unsigned seed = 1; seed < 200; seed++) {
            char *cut = stream(&s, texts[t], len, seed, &tail);
            assert_string_equal(cut, whole);
            assert_true(tail < strlen(secret)); /* never a whole needle held */
            free(cut);
        }
        free(ref);
        free(whole);
    }
}

static void test_fast_path(void **state)
{
    (void)state;
    struct kb_scrub s;
    setup_scrub(&s);
    struct kb_buf tail = KB_BUF_INIT, out = KB_BUF_INIT;
    const char text[] = "data: {\"choices\":[]}\n\n";
    const char *d;
    size_t n;
    scrub_feed(&s, &tail, text, sizeof text - 1, &out, &d, &n);
    assert_ptr_equal(d, text); /* no copy */
    assert_int_equal(n, sizeof text - 1);
    assert_int_equal(tail.len, 0);
    /* a chunk ending in "sk_" holds exactly those bytes back */
    scrub_feed(&s, &tail, "abc sk_", 7, &out, &d, &n);
    assert_int_equal(n, 4);
    assert_memory_equal(d, "abc ", 4);
    assert_int_equal(tail.len, 3);
    buf_cleanup(&tail);
    buf_cleanup(&out);
    /* no needles: everything passes as is */
    struct kb_scrub none = {0};
    scrub_add(&none, "tiny");
    assert_int_equal(none.n, 0);
}

/* Regression (review of session 10): struct kb_scrub held KB_SCRUB_NEEDLES
 * needles but only len[2] lengths, so a third needle (a Basic vendor's old
 * secret after one rotation, a Bearer vendor's after two) wrote its length
 * past len[] (into n) and was scrubbed at a wrong length: most of an old
 * secret reached the client. Every needle up to the table's size must be
 * masked whole. */
static void test_every_needle_whole(void **state)
{
    (void)state;
    static const char *const needles[KB_SCRUB_NEEDLES] = {
        "needle-zero-0000", "needle-one-11111", "needle-two-22222",
        "needle-three-333", "needle-four-4444", "needle-five-5555"};
    struct kb_scrub s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < KB_SCRUB_NEEDLES; i++)
        scrub_add(&s, needles[i]);
    assert_int_equal(s.n, KB_SCRUB_NEEDLES);
    for (int i = 0; i < KB_SCRUB_NEEDLES; i++) {
        char buf[64];
        size_t n = strlen(needles[i]);
        memcpy(buf, needles[i], n + 1);
        scrub_all(&s, buf, n);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(buf[k], '*');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splits),
        cmocka_unit_test(test_fast_path),
        cmocka_unit_test(test_every_needle_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
