/*
 * test_codec.c - core/codec.c: Content-Encoding names, and the gzip,
 * deflate (zlib and raw), br and zstd decoders fed whole, byte by byte and
 * at random cut points; truncated, corrupt and trailing-garbage streams;
 * the output and ratio caps (bombs stop after a bounded amount of output);
 * and codec_decode_all's errors.
 *
 * All compressed data is made in the test from text (codec_test.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec_test.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/codec.h"

#define GIB ((size_t)1 << 30)

static enum kb_coding coding_of(enum test_enc e)
{
    switch (e) {
    case ENC_GZIP:
        return KB_CODING_GZIP;
    case ENC_ZLIB:
    case ENC_RAW:
        return KB_CODING_DEFLATE;
    case ENC_BR:
        return KB_CODING_BR;
    default:
        return KB_CODING_ZSTD;
    }
}

/* Text that compresses like JSON does (a few x), not like zeros. */
static char *sample_text(size_t n, unsigned seed)
{
    static const char *const words[] = {"{\"id\":",    "\"chatcmpl-", "token",  "usage",
                                        "\"content\"", " the ",       "model",  "12345",
                                        "\\n",         "delta",       "choice", "\"}"};
    char *s = kb_malloc(n + 1);
    for (size_t i = 0; i < n;) {
        const char *w = words[test_rand(&seed) % (sizeof words / sizeof words[0])];
        for (size_t k = 0; w[k] && i < n; k++)
            s[i++] = w[k];
        if (i < n && test_rand(&seed) % 3 == 0)
            s[i++] = (char)('a' + test_rand(&seed) % 26);
    }
    s[n] = '\0';
    return s;
}

struct sink {
    struct kb_buf got; /* everything the callback received */
    size_t calls;      /* callbacks */
    size_t max_piece;  /* largest piece */
};

static void sink_cb(void *ctx, const char *data, size_t len)
{
    struct sink *s = ctx;
    assert_true(len > 0);
    if (len > s->max_piece)
        s->max_piece = len;
    s->calls++;
    buf_append(&s->got, data, len);
}

enum split { SPLIT_WHOLE = 0, SPLIT_BYTES = 1, SPLIT_RANDOM = 2 };

/* Decodes in[0, n) in the given split; returns the first error (KB_OK if
 * none) and leaves the output in s. */
static enum kb_err decode_split(struct kb_decoder *d, const char *in, size_t n, enum split how,
                                unsigned seed, struct sink *s)
{
    for (size_t i = 0; i < n;) {
        size_t k = n - i;
        if (how == SPLIT_BYTES)
            k = 1;
        else if (how == SPLIT_RANDOM)
            k = 1 + test_rand(&seed) % (test_rand(&seed) % 2 ? 7 : 9000);
        if (k > n - i)
            k = n - i;
        enum kb_err err = codec_decode(d, in + i, k, sink_cb, s);
        if (err != KB_OK)
            return err;
        i += k;
    }
    return KB_OK;
}

static void test_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        enum kb_coding want;
    } cases[] = {
        {NULL, KB_CODING_IDENTITY},
        {"", KB_CODING_IDENTITY},
        {"identity", KB_CODING_IDENTITY},
        {" Identity\t", KB_CODING_IDENTITY},
        {"gzip", KB_CODING_GZIP},
        {"GZIP", KB_CODING_GZIP},
        {"x-gzip", KB_CODING_GZIP},
        {"  gzip ", KB_CODING_GZIP},
        {"deflate", KB_CODING_DEFLATE},
        {"br", KB_CODING_BR},
        {"Br", KB_CODING_BR},
        {"zstd", KB_CODING_ZSTD},
        {"compress", KB_CODING_UNKNOWN},
        {"gzip, br", KB_CODING_UNKNOWN},
        {"gzip,gzip", KB_CODING_UNKNOWN},
        {"gzip;q=1", KB_CODING_UNKNOWN},
        {"gzipx", KB_CODING_UNKNOWN},
        {"g zip", KB_CODING_UNKNOWN},
        {"bro", KB_CODING_UNKNOWN},
        {"x-compress", KB_CODING_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (codec_parse(cases[i].in) != cases[i].want)
            print_message("case %zu: \"%s\"\n", i, cases[i].in ? cases[i].in : "(null)");
        assert_int_equal(codec_parse(cases[i].in), cases[i].want);
    }
    assert_null(codec_decoder_new(KB_CODING_IDENTITY, GIB, 1000));
    assert_null(codec_decoder_new(KB_CODING_UNKNOWN, GIB, 1000));
}

/* Every coding, sizes from empty to several output buffers, fed whole, in
 * single bytes and at random cuts: the same text comes out, the stream is
 * finished, and no piece is larger than the decoder's buffer. */
static void test_round_trips(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 17, 4000, 16384, 16385, 300000};
    for (int e = ENC_GZIP; e <= ENC_ZSTD; e++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            char *text = sample_text(sizes[si], (unsigned)(e * 100 + si));
            size_t zn;
            char *z = test_encode((enum test_enc)e, text, sizes[si], &zn);
            for (int how = SPLIT_WHOLE; how <= SPLIT_RANDOM; how++) {
                if (how == SPLIT_BYTES && zn > 20000)
                    continue; /* covered by the smaller sizes */
                for (unsigned seed = 0; seed < (how == SPLIT_RANDOM ? 5u : 1u); seed++) {
                    struct sink s = {KB_BUF_INIT, 0, 0};
                    struct kb_decoder *d =
                        codec_decoder_new(coding_of((enum test_enc)e), GIB, 1000);
                    assert_non_null(d);
                    enum kb_err err = decode_split(d, z, zn, (enum split)how, seed, &s);
                    if (err != KB_OK || s.got.len != sizes[si])
                        print_message("%s size %zu split %d seed %u: err %d, %zu bytes\n",
                                      test_enc_name[e], sizes[si], how, seed, (int)err, s.got.len);
                    assert_int_equal(err, KB_OK);
                    assert_true(codec_finished(d));
                    assert_int_equal(s.got.len, sizes[si]);
                    assert_true(sizes[si] == 0 || memcmp(s.got.data, text, sizes[si]) == 0);
                    assert_true(s.max_piece <= 16384);
                    codec_decoder_free(d);
                    buf_cleanup(&s.got);
                }
            }
            free(z);
            free(text);
        }
    }
}

/* Cut anywhere before its end, a stream is not finished (a cut response);
 * codec_decode_all calls it truncated. */
static void test_truncated(void **state)
{
    (void)state;
    char *text = sample_text(50000, 7);
    for (int e = ENC_GZIP; e <= ENC_ZSTD; e++) {
        size_t zn;
        char *z = test_encode((enum test_enc)e, text, 50000, &zn);
        size_t cuts[] = {1, zn / 3, zn / 2, zn - 1};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            struct sink s = {KB_BUF_INIT, 0, 0};
            struct kb_decoder *d = codec_decoder_new(coding_of((enum test_enc)e), GIB, 1000);
            enum kb_err err = decode_split(d, z, cuts[c], SPLIT_RANDOM, (unsigned)c, &s);
            assert_int_equal(err, KB_OK); /* nothing wrong yet: just not over */
            assert_false(codec_finished(d));
            assert_true(s.got.len <= 50000); /* a cut trailer: all text, unfinished */
            codec_decoder_free(d);
            buf_cleanup(&s.got);

            char *out = NULL, *em = NULL;
            size_t on = 0;
            assert_int_equal(codec_decode_all(coding_of((enum test_enc)e), z, cuts[c], GIB, 1000,
                                              &out, &on, &em),
                             KB_E_INVALID);
            assert_null(out);
            assert_non_null(em);
            assert_non_null(strstr(em, "truncated"));
            free(em);
        }
        free(z);
    }
    free(text);
}

/* Bytes after the end: gzip takes a further member, nothing else; the
 * other codings take nothing (zstd: a further frame). */
static void test_trailing_bytes(void **state)
{
    (void)state;
    const char *text = "{\"usage\":{\"prompt_tokens\":1}}";
    size_t n = strlen(text);
    for (int e = ENC_GZIP; e <= ENC_ZSTD; e++) {
        size_t zn;
        char *z = test_encode((enum test_enc)e, text, n, &zn);
        char *zz = kb_malloc(zn + 16);
        memcpy(zz, z, zn);
        memcpy(zz + zn, "garbage!", 8);
        for (int how = SPLIT_WHOLE; how <= SPLIT_BYTES; how++) {
            struct sink s = {KB_BUF_INIT, 0, 0};
            struct kb_decoder *d = codec_decoder_new(coding_of((enum test_enc)e), GIB, 1000);
            assert_int_equal(decode_split(d, zz, zn + 8, (enum split)how, 0, &s), KB_E_INVALID);
            assert_false(codec_finished(d));
            /* and it stays failed, calling back no more */
            size_t calls = s.calls;
            assert_int_equal(codec_decode(d, z, zn, sink_cb, &s), KB_E_INVALID);
            assert_int_equal(s.calls, calls);
            codec_decoder_free(d);
            buf_cleanup(&s.got);
        }
        char *out = NULL, *em = NULL;
        size_t on = 0;
        assert_int_equal(
            codec_decode_all(coding_of((enum test_enc)e), zz, zn + 8, GIB, 1000, &out, &on, &em),
            KB_E_INVALID);
        assert_non_null(em);
        free(em);
        free(zz);
        free(z);
    }
}

/* Two gzip members (or zstd frames) are one body: both decode. */
static void test_concatenated_members(void **state)
{
    (void)state;
    static const enum test_enc encs[] = {ENC_GZIP, ENC_ZSTD};
    for (size_t i = 0; i < 2; i++) {
        size_t an, bn;
        char *a = test_encode(encs[i], "{\"a\":", 5, &an);
        char *b = test_encode(encs[i], "1}", 2, &bn);
        char *ab = kb_malloc(an + bn);
        memcpy(ab, a, an);
        memcpy(ab + an, b, bn);
        for (int how = SPLIT_WHOLE; how <= SPLIT_BYTES; how++) {
            struct sink s = {KB_BUF_INIT, 0, 0};
            struct kb_decoder *d = codec_decoder_new(coding_of(encs[i]), GIB, 1000);
            assert_int_equal(decode_split(d, ab, an + bn, (enum split)how, 0, &s), KB_OK);
            assert_true(codec_finished(d));
            assert_string_equal(s.got.data, "{\"a\":1}");
            codec_decoder_free(d);
            buf_cleanup(&s.got);
        }
        free(a);
        free(b);
        free(ab);
    }
}

/* A flipped byte in the middle: refused (or, where the coding has no
 * check there, never finished), never a silent success. */
static void test_corrupt(void **state)
{
    (void)state;
    char *text = sample_text(100000, 3);
    for (int e = ENC_GZIP; e <= ENC_ZSTD; e++) {
        size_t zn;
        char *z = test_encode((enum test_enc)e, text, 100000, &zn);
        for (size_t at = zn / 5; at < zn; at += zn / 5) {
            char *bad = kb_malloc(zn);
            memcpy(bad, z, zn);
            bad[at] ^= 0x55;
            char *out = NULL, *em = NULL;
            size_t on = 0;
            enum kb_err err =
                codec_decode_all(coding_of((enum test_enc)e), bad, zn, GIB, 1000, &out, &on, &em);
            /* zstd and raw deflate carry no whole-stream check by default:
             * a flip can decode to other bytes; what must hold is that
             * gzip, zlib and br detect it. */
            if (e == ENC_GZIP || e == ENC_ZLIB || e == ENC_BR) {
                if (err == KB_OK)
                    print_message("%s flip at %zu accepted\n", test_enc_name[e], at);
                assert_int_equal(err, KB_E_INVALID);
                assert_non_null(em);
            }
            free(out);
            free(em);
            free(bad);
        }
        free(z);
    }
    free(text);
}

/* Random bytes are not a stream of any coding. */
static void test_garbage(void **state)
{
    (void)state;
    unsigned seed = 99;
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)test_rand(&seed);
    static const enum kb_coding cs[] = {KB_CODING_GZIP, KB_CODING_DEFLATE, KB_CODING_BR,
                                        KB_CODING_ZSTD};
    for (size_t i = 0; i < 4; i++) {
        char *out = NULL, *em = NULL;
        size_t on = 0;
        assert_int_equal(codec_decode_all(cs[i], junk, sizeof junk, GIB, 1000, &out, &on, &em),
                         KB_E_INVALID);
        assert_null(out);
        free(em);
    }
}

/* 100 MB of zeros compresses past 1000:1 (gzip ~1030:1, br and zstd far
 * more). With ratio 1000 the decoder stops after a bounded amount of
 * output, long before 100 MB: the work a bomb costs is bounded. */
static void test_ratio_bomb(void **state)
{
    (void)state;
    size_t block = 1 << 20;
    char *zeros = kb_calloc(1, block);
    for (int e = ENC_GZIP; e <= ENC_ZSTD; e++) {
        if (e == ENC_RAW)
            continue;
        size_t zn;
        char *z = test_encode_rep((enum test_enc)e, zeros, block, 100, &zn);
        struct sink s = {KB_BUF_INIT, 0, 0};
        struct kb_decoder *d = codec_decoder_new(coding_of((enum test_enc)e), GIB, 1000);
        enum kb_err err = decode_split(d, z, zn, SPLIT_WHOLE, 0, &s);
        print_message("%s bomb: %zu bytes in, refused after %zu bytes out\n", test_enc_name[e], zn,
                      s.got.len);
        assert_int_equal(err, KB_E_INVALID);
        assert_false(codec_finished(d));
        /* everything handed out respected the ratio (plus one piece) */
        assert_true(s.got.len <= 1000 * zn + 16384);
        assert_true(s.got.len < 100 * block);
        codec_decoder_free(d);
        buf_cleanup(&s.got);

        /* decode_all names the cap */
        char *out = NULL, *em = NULL;
        size_t on = 0;
        assert_int_equal(
            codec_decode_all(coding_of((enum test_enc)e), z, zn, GIB, 1000, &out, &on, &em),
            KB_E_BODY_TOO_LARGE);
        assert_null(out);
        assert_non_null(em);
        free(em);
        free(z);
    }
    free(zeros);
}

/* max_out: one byte more than allowed is refused; exactly allowed is not. */
static void test_max_out(void **state)
{
    (void)state;
    char *text = sample_text(200000, 5);
    for (int e = ENC_GZIP; e <= ENC_ZSTD; e++) {
        size_t zn;
        char *z = test_encode((enum test_enc)e, text, 200000, &zn);
        char *out = NULL, *em = NULL;
        size_t on = 0;
        assert_int_equal(
            codec_decode_all(coding_of((enum test_enc)e), z, zn, 199999, 1000, &out, &on, &em),
            KB_E_BODY_TOO_LARGE);
        assert_null(out);
        free(em);
        em = NULL;
        assert_int_equal(
            codec_decode_all(coding_of((enum test_enc)e), z, zn, 200000, 1000, &out, &on, &em),
            KB_OK);
        assert_int_equal(on, 200000);
        assert_memory_equal(out, text, 200000);
        assert_int_equal(out[on], '\0');
        free(out);
        free(z);
    }
    free(text);
}

/* Small very compressible bodies are never refused: the ratio applies
 * only once 64 KiB have come out. */
static void test_ratio_grace(void **state)
{
    (void)state;
    char *zeros = kb_calloc(1, 60000);
    size_t zn;
    char *z = test_encode(ENC_GZIP, zeros, 60000, &zn);
    assert_true(60000 / zn > 100); /* far past a ratio of 10 */
    char *out = NULL, *em = NULL;
    size_t on = 0;
    assert_int_equal(codec_decode_all(KB_CODING_GZIP, z, zn, GIB, 10, &out, &on, &em), KB_OK);
    assert_int_equal(on, 60000);
    free(out);
    free(z);
    free(zeros);
}

static void test_decode_all_identity(void **state)
{
    (void)state;
    char *out = NULL, *em = NULL;
    size_t on = 0;
    assert_int_equal(codec_decode_all(KB_CODING_IDENTITY, "abc", 3, 3, 1, &out, &on, &em), KB_OK);
    assert_string_equal(out, "abc");
    free(out);
    out = NULL;
    assert_int_equal(codec_decode_all(KB_CODING_IDENTITY, "abcd", 4, 3, 1, &out, &on, &em),
                     KB_E_BODY_TOO_LARGE);
    assert_null(out);
    free(em);
    em = NULL;
    assert_int_equal(codec_decode_all(KB_CODING_UNKNOWN, "abcd", 4, 100, 10, &out, &on, &em),
                     KB_E_INVALID);
    assert_non_null(em);
    free(em);
}

/* deflate: the zlib header decides between zlib and raw deflate even when
 * its two bytes arrive in separate calls. */
static void test_deflate_header_split(void **state)
{
    (void)state;
    const char *text = "{\"usage\":{\"input_tokens\":3}}";
    for (int e = ENC_ZLIB; e <= ENC_RAW; e++) {
        size_t zn;
        char *z = test_encode((enum test_enc)e, text, strlen(text), &zn);
        struct sink s = {KB_BUF_INIT, 0, 0};
        struct kb_decoder *d = codec_decoder_new(KB_CODING_DEFLATE, GIB, 1000);
        assert_int_equal(codec_decode(d, z, 1, sink_cb, &s), KB_OK);
        assert_int_equal(s.calls, 0);
        assert_int_equal(codec_decode(d, z + 1, zn - 1, sink_cb, &s), KB_OK);
        assert_true(codec_finished(d));
        assert_string_equal(s.got.data, text);
        codec_decoder_free(d);
        buf_cleanup(&s.got);
        free(z);
    }
}

/* ---- UTF-8 (codec_utf8_valid) ---- */

struct utf8_case {
    const char *name;
    const char *s;
    bool valid;
};

static const struct utf8_case utf8_cases[] = {
    {"empty", "", true},
    {"ASCII", "plain ASCII, 0x7F: \x7f", true},
    {"2-byte min U+0080", "\xc2\x80", true},
    {"2-byte max U+07FF", "\xdf\xbf", true},
    {"2-byte e-acute", "caf\xc3\xa9", true},
    {"3-byte min U+0800", "\xe0\xa0\x80", true},
    {"3-byte CJK", "\xe6\xbc\xa2", true},
    {"3-byte U+D7FF (below the surrogates)", "\xed\x9f\xbf", true},
    {"3-byte U+E000 (above the surrogates)", "\xee\x80\x80", true},
    {"3-byte max U+FFFF", "\xef\xbf\xbf", true},
    {"4-byte min U+10000", "\xf0\x90\x80\x80", true},
    {"4-byte emoji", "\xf0\x9f\x94\x91", true},
    {"4-byte max U+10FFFF", "\xf4\x8f\xbf\xbf", true},
    {"mixed", "a\xc3\xa9\xe6\xbc\xa2\xf0\x9f\x94\x91z", true},
    {"overlong C0 80 (NUL)", "\xc0\x80", false},
    {"overlong C1 BF", "\xc1\xbf", false},
    {"overlong E0 80 80", "\xe0\x80\x80", false},
    {"overlong E0 9F BF", "\xe0\x9f\xbf", false},
    {"overlong F0 80 80 80", "\xf0\x80\x80\x80", false},
    {"overlong F0 8F BF BF", "\xf0\x8f\xbf\xbf", false},
    {"surrogate ED A0 80 (U+D800)", "\xed\xa0\x80", false},
    {"surrogate ED BF BF (U+DFFF)", "\xed\xbf\xbf", false},
    {"surrogate pair as CESU-8", "\xed\xa0\xbd\xed\xb4\x91", false},
    {"past U+10FFFF: F4 90 80 80", "\xf4\x90\x80\x80", false},
    {"past U+10FFFF: F5 80 80 80", "\xf5\x80\x80\x80", false},
    {"lead F8 (5-byte form)", "\xf8\x88\x80\x80\x80", false},
    {"lead FF", "\xff", false},
    {"lead FE", "a\xfe", false},
    {"truncated 2-byte", "\xc3", false},
    {"truncated 3-byte (1 of 2)", "\xe6", false},
    {"truncated 3-byte (2 of 2)", "\xe6\xbc", false},
    {"truncated 4-byte (3 of 3)", "\xf0\x9f\x94", false},
    {"truncated then ASCII",
     "\xe6\xbc"
     "a",
     false},
    {"truncated before the end of a text", "ab\xc3 cd", false},
    {"stray continuation 80", "\x80", false},
    {"stray continuation BF after ASCII", "abc\xbf", false},
    {"continuation after a full sequence", "\xc3\xa9\xa9", false},
    {"two leads", "\xc3\xc3\xa9", false},
};

static void test_utf8_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
        const struct utf8_case *c = &utf8_cases[i];
        if (codec_utf8_valid(c->s) != c->valid)
            fail_msg("%s: codec_utf8_valid gave %d, want %d", c->name, !c->valid, c->valid);
    }
}

/* Every code point, encoded by hand: the scalar values are valid, the
 * surrogates are not. */
static void test_utf8_every_code_point(void **state)
{
    (void)state;
    for (unsigned cp = 1; cp <= 0x10ffff; cp++) {
        char b[5] = {0};
        if (cp < 0x80) {
            b[0] = (char)cp;
        } else if (cp < 0x800) {
            b[0] = (char)(0xc0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            b[0] = (char)(0xe0 | cp >> 12), b[1] = (char)(0x80 | (cp >> 6 & 0x3f));
            b[2] = (char)(0x80 | (cp & 0x3f));
        } else {
            b[0] = (char)(0xf0 | cp >> 18), b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
            b[2] = (char)(0x80 | (cp >> 6 & 0x3f)), b[3] = (char)(0x80 | (cp & 0x3f));
        }
        bool want = cp < 0xd800 || cp > 0xdfff;
        if (codec_utf8_valid(b) != want)
            fail_msg("U+%04X: codec_utf8_valid gave %d", cp, !want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_concatenated_members),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_ratio_bomb),
        cmocka_unit_test(test_max_out),
        cmocka_unit_test(test_ratio_grace),
        cmocka_unit_test(test_decode_all_identity),
        cmocka_unit_test(test_deflate_header_split),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_every_code_point),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
