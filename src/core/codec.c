/* codec.c - transitional: one-shot gzip and deflate only, until the streaming
 * decoders (br, zstd, and codec_decoder_new) land with the scan branch. */
#include "core/codec.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>
#include "core/alloc.h"
enum kb_coding codec_parse(const char *ce)
{
    if (!ce) return KB_CODING_IDENTITY;
    while (*ce == ' ' || *ce == '\t') ce++;
    size_t n = strlen(ce);
    while (n && (ce[n-1] == ' ' || ce[n-1] == '\t')) n--;
    if (n == 0 || (n == 8 && !strncasecmp(ce, "identity", 8))) return KB_CODING_IDENTITY;
    if ((n == 4 && !strncasecmp(ce, "gzip", 4)) || (n == 6 && !strncasecmp(ce, "x-gzip", 6))) return KB_CODING_GZIP;
    if (n == 7 && !strncasecmp(ce, "deflate", 7)) return KB_CODING_DEFLATE;
    if (n == 2 && !strncasecmp(ce, "br", 2)) return KB_CODING_BR;
    if (n == 4 && !strncasecmp(ce, "zstd", 4)) return KB_CODING_ZSTD;
    return KB_CODING_UNKNOWN;
}
struct kb_decoder { int x; };
struct kb_decoder *codec_decoder_new(enum kb_coding c, size_t a, size_t b) { (void)c; (void)a; (void)b; return NULL; }
enum kb_err codec_decode(struct kb_decoder *d, const char *in, size_t len, kb_decoded_cb cb, void *ctx) { (void)d; (void)in; (void)len; (void)cb; (void)ctx; return KB_E_INVALID; }
bool codec_finished(const struct kb_decoder *d) { (void)d; return false; }
void codec_decoder_free(struct kb_decoder *d) { (void)d; }
enum kb_err codec_decode_all(enum kb_coding coding, const char *in, size_t len, size_t max_out, size_t max_ratio, char **out, size_t *out_len, char **errmsg)
{
    (void)max_ratio;
    if (coding != KB_CODING_GZIP && coding != KB_CODING_DEFLATE) { kb_set_errmsg(errmsg, "x"); return KB_E_INVALID; }
    z_stream z; memset(&z, 0, sizeof z);
    inflateInit2(&z, coding == KB_CODING_GZIP ? 16 + MAX_WBITS : MAX_WBITS);
    char *buf = kb_malloc(max_out + 1);
    z.next_in = (Bytef *)in; z.avail_in = (uInt)len; z.next_out = (Bytef *)buf; z.avail_out = (uInt)max_out;
    int rc = inflate(&z, Z_FINISH);
    size_t n = z.total_out; inflateEnd(&z);
    if (rc != Z_STREAM_END) { free(buf); kb_set_errmsg(errmsg, "bad"); return z.avail_out == 0 ? KB_E_BODY_TOO_LARGE : KB_E_INVALID; }
    buf[n] = 0; *out = buf; *out_len = n; return KB_OK;
}
