/*
 * codec_test.h - encoders the codec and meter-scan tests use to make their
 * compressed data (zlib, brotli's encoder, zstd), so that no compressed
 * blob is committed: every test body is made from text in the test.
 * Include after <cmocka.h>.
 */
#ifndef KB_TESTS_CODEC_TEST_H
#define KB_TESTS_CODEC_TEST_H
#include <brotli/encode.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "core/alloc.h"
#include "core/buf.h"

enum test_enc {
    ENC_GZIP = 0, /* gzip member (RFC 1952) */
    ENC_ZLIB = 1, /* "deflate" as the RFC means it: a zlib stream */
    ENC_RAW = 2,  /* "deflate" as some servers send it: raw deflate */
    ENC_BR = 3,   /* brotli */
    ENC_ZSTD = 4, /* one zstd frame */
};

static const char *const test_enc_name[] = {"gzip", "zlib", "raw-deflate", "br", "zstd"};

/* Compresses `reps` copies of in[0, n) (streamed: the input is never held
 * whole) with e; returns a heap buffer and its length. */
static inline char *test_encode_rep(enum test_enc e, const char *in, size_t n, size_t reps,
                                    size_t *out_len)
{
    struct kb_buf out = KB_BUF_INIT;
    unsigned char tmp[65536];

    if (e == ENC_GZIP || e == ENC_ZLIB || e == ENC_RAW) {
        z_stream z;
        memset(&z, 0, sizeof z);
        int wbits = e == ENC_GZIP ? 16 + 15 : e == ENC_ZLIB ? 15 : -15;
        assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
        for (size_t r = 0; r <= reps; r++) {
            int flush = r == reps ? Z_FINISH : Z_NO_FLUSH;
            z.next_in = (unsigned char *)(uintptr_t)in;
            z.avail_in = r == reps ? 0 : (uInt)n;
            int rc;
            do {
                z.next_out = tmp;
                z.avail_out = sizeof tmp;
                rc = deflate(&z, flush);
                assert_true(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR);
                buf_append(&out, tmp, sizeof tmp - z.avail_out);
            } while (z.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
        }
        deflateEnd(&z);
    } else if (e == ENC_BR) {
        BrotliEncoderState *b = BrotliEncoderCreateInstance(NULL, NULL, NULL);
        assert_non_null(b);
        BrotliEncoderSetParameter(b, BROTLI_PARAM_QUALITY, 5);
        BrotliEncoderSetParameter(b, BROTLI_PARAM_LGWIN, 22);
        for (size_t r = 0; r <= reps; r++) {
            BrotliEncoderOperation op =
                r == reps ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_PROCESS;
            size_t avail_in = r == reps ? 0 : n;
            const uint8_t *next_in = (const uint8_t *)in;
            do {
                size_t avail_out = sizeof tmp;
                uint8_t *next_out = tmp;
                assert_true(BrotliEncoderCompressStream(b, op, &avail_in, &next_in, &avail_out,
                                                        &next_out, NULL));
                buf_append(&out, tmp, sizeof tmp - avail_out);
            } while (avail_in > 0 || BrotliEncoderHasMoreOutput(b) ||
                     (op == BROTLI_OPERATION_FINISH && !BrotliEncoderIsFinished(b)));
        }
        BrotliEncoderDestroyInstance(b);
    } else {
        ZSTD_CCtx *c = ZSTD_createCCtx();
        assert_non_null(c);
        for (size_t r = 0; r <= reps; r++) {
            ZSTD_EndDirective op = r == reps ? ZSTD_e_end : ZSTD_e_continue;
            ZSTD_inBuffer ib = {in, r == reps ? 0 : n, 0};
            size_t left;
            do {
                ZSTD_outBuffer ob = {tmp, sizeof tmp, 0};
                left = ZSTD_compressStream2(c, &ob, &ib, op);
                assert_false(ZSTD_isError(left));
                buf_append(&out, tmp, ob.pos);
            } while (ib.pos < ib.size || (op == ZSTD_e_end && left != 0));
        }
        ZSTD_freeCCtx(c);
    }
    return buf_take(&out, out_len);
}

static inline char *test_encode(enum test_enc e, const char *in, size_t n, size_t *out_len)
{
    return test_encode_rep(e, in, n, 1, out_len);
}

/* Deterministic pseudo-random numbers for split points and test text. */
static inline unsigned test_rand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

#endif
