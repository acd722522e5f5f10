/*
 * fuzz_codec.c - libFuzzer target for the content-coding decoders
 * (src/core/codec.c).
 *
 * The first byte picks the coding (gzip, deflate, br, zstd) and seeds the
 * cut points; the rest is the encoded body. Checks:
 *  (a) the caps hold: with max_out 256 KiB and ratio 20, no more than
 *      max_out comes out, and past 64 KiB no more than 20 times the input;
 *      pieces are never empty or larger than the decoder's 16 KiB buffer;
 *  (b) once decoding failed, the decoder calls back no more;
 *  (c) without binding caps, decoding in random pieces gives the same
 *      bytes and the same end state as codec_decode_all on the whole;
 *  (d) codec_decode_all's result is consistent: KB_OK with output only
 *      when the stream finished; an errmsg on every error.
 * Any violation aborts, which libFuzzer reports as a crash.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LOOSE_OUT ((size_t)8 << 20)
#define TIGHT_OUT ((size_t)256 << 10)
#define TIGHT_RATIO 20

struct sink {
    struct kb_buf got; /* what came out */
    bool stopped;      /* decoding failed: no more callbacks allowed */
};

static void sink_cb(void *ctx, const char *d, size_t len)
{
    struct sink *s = ctx;
    if (s->stopped || len == 0 || len > 16384)
        abort();
    buf_append(&s->got, d, len);
}

/* Decodes in random pieces; returns whether every call succeeded. */
static bool decode_cut(struct kb_decoder *d, const char *in, size_t n, unsigned seed,
                       struct sink *s)
{
    bool ok = true;
    for (size_t i = 0; i < n;) {
        seed = seed * 1103515245u + 12345u;
        size_t k = 1 + (seed >> 16) % 300;
        if (k > n - i)
            k = n - i;
        if (codec_decode(d, in + i, k, sink_cb, s) != KB_OK) {
            ok = false;
            s->stopped = true; /* (b): any later call must not call back */
        }
        i += k;
    }
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum kb_coding codings[] = {KB_CODING_GZIP, KB_CODING_DEFLATE, KB_CODING_BR,
                                             KB_CODING_ZSTD};
    if (size < 1)
        return 0;
    enum kb_coding c = codings[data[0] & 3];
    unsigned seed = data[0] >> 2;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;

    /* (a) tight caps */
    struct sink s = {KB_BUF_INIT, false};
    struct kb_decoder *d = codec_decoder_new(c, TIGHT_OUT, TIGHT_RATIO);
    if (!d)
        abort();
    decode_cut(d, in, n, seed, &s);
    if (s.got.len > TIGHT_OUT)
        abort();
    if (s.got.len > 64 * 1024 && s.got.len > (size_t)TIGHT_RATIO * n)
        abort();
    codec_decoder_free(d);
    buf_cleanup(&s.got);

    /* (c), (d) loose caps: cut pieces against the whole */
    char *out = NULL, *em = NULL;
    size_t on = 0;
    enum kb_err all = codec_decode_all(c, in, n, LOOSE_OUT, 1000000, &out, &on, &em);
    if (all == KB_OK && (!out || em || out[on] != '\0'))
        abort();
    if (all != KB_OK && (out || !em))
        abort();

    struct sink t = {KB_BUF_INIT, false};
    d = codec_decoder_new(c, LOOSE_OUT, 1000000);
    bool ok = decode_cut(d, in, n, seed, &t);
    if (all == KB_OK) {
        if (!ok || !codec_finished(d) || t.got.len != on ||
            (on && memcmp(t.got.data, out, on) != 0))
            abort();
    } else if (all == KB_E_INVALID && ok && codec_finished(d)) {
        abort(); /* the whole body was refused, the pieces were not */
    }
    codec_decoder_free(d);
    buf_cleanup(&t.got);
    free(out);
    free(em);
    return 0;
}
