/*
 * codec.c - streaming decoders for HTTP content codings (gzip, deflate, br,
 * zstd) with an output cap and a ratio cap.
 *
 * Every decoder writes into one fixed 16 KiB buffer and hands each filled
 * piece to the caller's callback, so its memory is the library's state plus
 * that buffer, whatever the body's size. The caps are checked before a
 * piece is handed on: max_out on the decoded total, max_ratio on decoded
 * bytes per encoded byte actually consumed so far (once 64 KiB have come
 * out), so the work a decoder does is bounded by max_ratio times the bytes
 * it was given, and a bomb stops within a piece of the cap.
 *
 * What counts as the end of the stream:
 *  - gzip: the end of a member (its CRC and length checked by zlib).
 *    Further members are decoded (RFC 1952 2.2: a gzip file is a series of
 *    members); any byte that does not start a valid member is corrupt.
 *  - deflate: the end of the zlib stream (Adler-32 checked), or of the raw
 *    deflate stream when the first two bytes are not a zlib header (some
 *    servers send raw deflate); nothing may follow it.
 *  - br: the end of the brotli stream; nothing may follow it.
 *  - zstd: the end of a frame (skippable frames and further frames are
 *    legal, RFC 8878 3.1); the window is limited to 8 MiB (RFC 8878 7.4's
 *    HTTP recommendation), so a frame cannot make the decoder allocate more.
 *
 * Memory per decoder, besides the 16 KiB buffer: gzip/deflate about 45 KiB
 * (zlib's 32 KiB window); zstd up to its 8 MiB window; br up to the 16 MiB
 * window a stream may declare (large windows, which need an opt-in, stay
 * off). A stream's header decides how much of that is allocated.
 */
#include "core/codec.h"

#include <brotli/decode.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>
#include <zstd.h>

#include "core/alloc.h"
#include "core/buf.h"

/* Output piece handed to the callback. */
#define CODEC_OUT_BUF (16 * 1024)
/* The ratio cap applies once this much has come out: the first piece of a
 * small, very compressible body is never refused. */
#define CODEC_RATIO_GRACE (64 * 1024)
/* zstd window limit: 2^23 = 8 MiB. */
#define CODEC_ZSTD_WINDOW_LOG 23

enum codec_fail {
    FAIL_NONE = 0,    /* decoding */
    FAIL_CORRUPT = 1, /* corrupt input or bytes after the end */
    FAIL_CAP = 2,     /* max_out or max_ratio passed */
};

struct kb_decoder {
    enum kb_coding coding;  /* GZIP, DEFLATE, BR or ZSTD */
    size_t max_out;         /* decoded bytes allowed in all */
    size_t max_ratio;       /* decoded bytes allowed per encoded byte */
    uint64_t in_used;       /* encoded bytes consumed by earlier calls */
    uint64_t out_total;     /* decoded bytes handed out */
    enum codec_fail fail;   /* set once; the decoder then refuses everything */
    bool finished;          /* at the end of a stream (or gzip member / zstd frame) */
    bool z_ready;           /* z was initialised */
    unsigned char head[2];  /* deflate: the first bytes, to tell zlib from raw */
    size_t head_len;        /* bytes in head */
    z_stream z;             /* gzip, deflate */
    BrotliDecoderState *br; /* owned; br */
    ZSTD_DStream *zs;       /* owned; zstd */
    unsigned char out[CODEC_OUT_BUF];
};

/* A decoder library could not set up its state: only out of memory does
 * that, and the project's rule for out of memory is to abort. */
static void lib_oom(const char *what)
{
    fprintf(stderr, "keybrake: out of memory creating a %s decoder\n", what);
    abort();
}

enum kb_coding codec_parse(const char *ce)
{
    size_t b = 0, e;

    if (!ce)
        return KB_CODING_IDENTITY;
    while (ce[b] == ' ' || ce[b] == '\t')
        b++;
    e = strlen(ce);
    while (e > b && (ce[e - 1] == ' ' || ce[e - 1] == '\t'))
        e--;
    static const struct {
        const char *name;
        enum kb_coding coding;
    } names[] = {
        {"identity", KB_CODING_IDENTITY}, {"gzip", KB_CODING_GZIP}, {"x-gzip", KB_CODING_GZIP},
        {"deflate", KB_CODING_DEFLATE},   {"br", KB_CODING_BR},     {"zstd", KB_CODING_ZSTD},
    };
    if (e == b)
        return KB_CODING_IDENTITY;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == e - b && strncasecmp(ce + b, names[i].name, e - b) == 0)
            return names[i].coding;
    /* Stacked codings ("gzip, br"), parameters, or a name we do not know. */
    return KB_CODING_UNKNOWN;
}

struct kb_decoder *codec_decoder_new(enum kb_coding coding, size_t max_out, size_t max_ratio)
{
    struct kb_decoder *d;

    if (coding != KB_CODING_GZIP && coding != KB_CODING_DEFLATE && coding != KB_CODING_BR &&
        coding != KB_CODING_ZSTD)
        return NULL;
    d = kb_calloc(1, sizeof *d);
    d->coding = coding;
    d->max_out = max_out;
    d->max_ratio = max_ratio;
    if (coding == KB_CODING_GZIP) {
        if (inflateInit2(&d->z, 16 + MAX_WBITS) != Z_OK)
            lib_oom("gzip");
        d->z_ready = true;
    } else if (coding == KB_CODING_BR) {
        d->br = BrotliDecoderCreateInstance(NULL, NULL, NULL);
        if (!d->br)
            lib_oom("brotli");
    } else if (coding == KB_CODING_ZSTD) {
        d->zs = ZSTD_createDStream();
        if (!d->zs)
            lib_oom("zstd");
        if (ZSTD_isError(ZSTD_DCtx_setParameter(d->zs, ZSTD_d_windowLogMax, CODEC_ZSTD_WINDOW_LOG)))
            d->fail = FAIL_CORRUPT; /* cannot happen with a valid libzstd */
    }
    /* deflate: initialised once the first two bytes show which format. */
    return d;
}

void codec_decoder_free(struct kb_decoder *d)
{
    if (!d)
        return;
    if (d->z_ready)
        inflateEnd(&d->z);
    if (d->br)
        BrotliDecoderDestroyInstance(d->br);
    if (d->zs)
        ZSTD_freeDStream(d->zs);
    free(d);
}

bool codec_finished(const struct kb_decoder *d)
{
    return d && d->fail == FAIL_NONE && d->finished;
}

/* Checks the caps for n more output bytes when `used` encoded bytes have
 * been consumed in all, then hands them on. False once a cap is passed. */
static bool emit(struct kb_decoder *d, size_t n, uint64_t used, kb_decoded_cb cb, void *ctx)
{
    uint64_t total = d->out_total + n, allowed;

    if (n == 0)
        return true;
    if (total > d->max_out) {
        d->fail = FAIL_CAP;
        return false;
    }
    if (total > CODEC_RATIO_GRACE &&
        (__builtin_mul_overflow(used, (uint64_t)d->max_ratio, &allowed) ? false
                                                                        : total > allowed)) {
        d->fail = FAIL_CAP;
        return false;
    }
    d->out_total = total;
    cb(ctx, (const char *)d->out, n);
    return true;
}

/* A zlib header: compression method 8 and a header checksum (RFC 1950). */
static bool is_zlib_header(const unsigned char *h)
{
    return (h[0] & 0x0f) == 8 && (h[0] >> 4) <= 7 && ((unsigned)h[0] * 256 + h[1]) % 31 == 0;
}

static void inflate_run(struct kb_decoder *d, const unsigned char *in, size_t len, kb_decoded_cb cb,
                        void *ctx)
{
    uint64_t base = d->in_used;

    d->z.next_in = (unsigned char *)(uintptr_t)in; /* zlib's API is not const */
    d->z.avail_in = (uInt)len;
    while (d->fail == FAIL_NONE) {
        if (d->finished) {
            if (d->z.avail_in == 0)
                break;
            /* gzip: another member may follow; deflate: nothing may. */
            if (d->coding != KB_CODING_GZIP || inflateReset(&d->z) != Z_OK) {
                d->fail = FAIL_CORRUPT;
                break;
            }
            d->finished = false;
        }
        d->z.next_out = d->out;
        d->z.avail_out = sizeof d->out;
        int rc = inflate(&d->z, Z_NO_FLUSH);
        size_t produced = sizeof d->out - d->z.avail_out;
        uint64_t used = base + (len - d->z.avail_in);
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            d->fail = FAIL_CORRUPT;
            break;
        }
        if (!emit(d, produced, used, cb, ctx))
            break;
        if (rc == Z_STREAM_END) {
            d->finished = true;
            continue;
        }
        /* Out of input with room left: all that can be decoded was. */
        if (d->z.avail_in == 0 && d->z.avail_out != 0)
            break;
        if (rc == Z_BUF_ERROR && d->z.avail_out != 0) {
            d->fail = FAIL_CORRUPT; /* no progress with input and room: cannot happen */
            break;
        }
    }
}

static void deflate_start(struct kb_decoder *d, const unsigned char **in, size_t *len,
                          kb_decoded_cb cb, void *ctx)
{
    while (d->head_len < 2 && *len > 0) {
        d->head[d->head_len++] = **in;
        (*in)++;
        (*len)--;
    }
    if (d->head_len < 2)
        return;
    if (inflateInit2(&d->z, is_zlib_header(d->head) ? MAX_WBITS : -MAX_WBITS) != Z_OK)
        lib_oom("deflate");
    d->z_ready = true;
    inflate_run(d, d->head, 2, cb, ctx);
    d->in_used += 2;
}

static void brotli_run(struct kb_decoder *d, const unsigned char *in, size_t len, kb_decoded_cb cb,
                       void *ctx)
{
    size_t avail_in = len;
    const uint8_t *next_in = in;

    if (d->finished && len > 0) {
        d->fail = FAIL_CORRUPT; /* bytes after the end of the stream */
        return;
    }
    while (d->fail == FAIL_NONE) {
        size_t avail_out = sizeof d->out;
        uint8_t *next_out = d->out;
        BrotliDecoderResult r =
            BrotliDecoderDecompressStream(d->br, &avail_in, &next_in, &avail_out, &next_out, NULL);
        if (r == BROTLI_DECODER_RESULT_ERROR) {
            d->fail = FAIL_CORRUPT;
            break;
        }
        if (!emit(d, sizeof d->out - avail_out, d->in_used + (len - avail_in), cb, ctx))
            break;
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            d->finished = true;
            if (avail_in > 0)
                d->fail = FAIL_CORRUPT;
            break;
        }
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT)
            break;
        /* NEEDS_MORE_OUTPUT: go round with an empty buffer. */
    }
}

static void zstd_run(struct kb_decoder *d, const unsigned char *in, size_t len, kb_decoded_cb cb,
                     void *ctx)
{
    ZSTD_inBuffer ib = {in, len, 0};

    while (d->fail == FAIL_NONE) {
        ZSTD_outBuffer ob = {d->out, sizeof d->out, 0};
        size_t r = ZSTD_decompressStream(d->zs, &ob, &ib);
        if (ZSTD_isError(r)) {
            d->fail = FAIL_CORRUPT;
            break;
        }
        if (!emit(d, ob.pos, d->in_used + ib.pos, cb, ctx))
            break;
        /* 0: a frame ended and all of it was flushed. */
        d->finished = r == 0;
        if (ib.pos == ib.size && (ob.pos < ob.size || r == 0))
            break;
    }
}

enum kb_err codec_decode(struct kb_decoder *d, const char *in, size_t len, kb_decoded_cb cb,
                         void *ctx)
{
    const unsigned char *p = (const unsigned char *)in;

    if (!d || (!in && len))
        return KB_E_INVALID;
    if (d->fail != FAIL_NONE)
        return KB_E_INVALID;
    if (len == 0)
        return KB_OK;
    switch (d->coding) {
    case KB_CODING_GZIP:
        inflate_run(d, p, len, cb, ctx);
        break;
    case KB_CODING_DEFLATE:
        if (!d->z_ready)
            deflate_start(d, &p, &len, cb, ctx);
        if (d->z_ready && len > 0 && d->fail == FAIL_NONE)
            inflate_run(d, p, len, cb, ctx);
        break;
    case KB_CODING_BR:
        brotli_run(d, p, len, cb, ctx);
        break;
    case KB_CODING_ZSTD:
        zstd_run(d, p, len, cb, ctx);
        break;
    default:
        d->fail = FAIL_CORRUPT;
        break;
    }
    d->in_used += len;
    return d->fail == FAIL_NONE ? KB_OK : KB_E_INVALID;
}

/* ---- UTF-8 ---- */

/* Decodes each sequence and checks the code point against the smallest one
 * its length may carry (overlong), the surrogates and U+10FFFF. A lead byte
 * past F4 or below C2 is refused at once. A truncated sequence stops at a
 * byte that is not a continuation (the NUL at the latest): nothing past the
 * terminator is read. */
bool codec_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1, min = 0x80, c &= 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2, min = 0x800, c &= 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            c = c << 6 | (p[i] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* ---- whole bodies ---- */

struct collect {
    struct kb_buf buf; /* decoded so far */
};

static void collect_cb(void *ctx, const char *data, size_t len)
{
    struct collect *c = ctx;
    buf_append(&c->buf, data, len);
}

enum kb_err codec_decode_all(enum kb_coding coding, const char *in, size_t len, size_t max_out,
                             size_t max_ratio, char **out, size_t *out_len, char **errmsg)
{
    enum kb_err err = KB_E_INVALID;
    struct collect c = {KB_BUF_INIT};
    struct kb_decoder *d = NULL;

    if (!out || !out_len || (!in && len)) {
        kb_set_errmsg(errmsg, "codec_decode_all: missing argument");
        return KB_E_INTERNAL;
    }
    if (coding == KB_CODING_IDENTITY) {
        if (len > max_out) {
            kb_set_errmsg(errmsg, "the body is larger than %zu bytes", max_out);
            return KB_E_BODY_TOO_LARGE;
        }
        buf_append(&c.buf, in ? in : "", len);
        *out = buf_take(&c.buf, out_len);
        return KB_OK;
    }
    d = codec_decoder_new(coding, max_out, max_ratio);
    if (!d) {
        kb_set_errmsg(errmsg, "unsupported content coding");
        goto out;
    }
    if (codec_decode(d, in, len, collect_cb, &c) == KB_OK && d->finished) {
        *out = buf_take(&c.buf, out_len);
        err = KB_OK;
        goto out;
    }
    if (d->fail == FAIL_CAP) {
        kb_set_errmsg(errmsg,
                      "the body decodes to more than %zu bytes or more than %zu times its "
                      "encoded size",
                      max_out, max_ratio);
        err = KB_E_BODY_TOO_LARGE;
        goto out;
    }
    if (d->fail != FAIL_NONE) {
        kb_set_errmsg(errmsg, "the body is not valid for its content coding");
        goto out;
    }
    kb_set_errmsg(errmsg, "the body ends before its content coding does (truncated)");
out:
    buf_cleanup(&c.buf);
    codec_decoder_free(d);
    return err;
}
