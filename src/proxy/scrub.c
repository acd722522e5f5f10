/* scrub.c - the vendor secret kept out of answers (see scrub.h). */
#include "proxy/scrub.h"

#include <string.h>

void scrub_add(struct kb_scrub *s, const char *needle)
{
    size_t n = needle ? strlen(needle) : 0;
    if (n < KB_SCRUB_MIN || s->n == sizeof s->needle / sizeof s->needle[0])
        return;
    s->needle[s->n] = needle;
    s->len[s->n] = n;
    s->n++;
}

void scrub_all(const struct kb_scrub *s, char *buf, size_t len)
{
    for (size_t k = 0; k < s->n; k++) {
        char *p = buf, *end = buf + len;
        while ((p = memmem(p, (size_t)(end - p), s->needle[k], s->len[k])) != NULL) {
            memset(p, '*', s->len[k]);
            p += s->len[k];
        }
    }
}

/* The length of the longest proper suffix of buf[0, len) that is a prefix
 * of some needle: those bytes may be the start of a secret. */
static size_t risky_suffix(const struct kb_scrub *s, const char *buf, size_t len)
{
    size_t best = 0;
    for (size_t k = 0; k < s->n; k++) {
        size_t max = s->len[k] - 1 < len ? s->len[k] - 1 : len;
        for (size_t m = max; m > best; m--)
            if (memcmp(buf + len - m, s->needle[k], m) == 0) {
                best = m;
                break;
            }
    }
    return best;
}

static bool has_needle(const struct kb_scrub *s, const char *buf, size_t len)
{
    for (size_t k = 0; k < s->n; k++)
        if (memmem(buf, len, s->needle[k], s->len[k]))
            return true;
    return false;
}

void scrub_feed(const struct kb_scrub *s, struct kb_buf *tail, const char *in, size_t len,
                struct kb_buf *out, const char **out_data, size_t *out_len)
{
    buf_reset(out);
    if (s->n == 0 || (tail->len == 0 && !has_needle(s, in, len) && !risky_suffix(s, in, len))) {
        *out_data = in; /* nothing to hide, nothing to hold: zero copies */
        *out_len = len;
        return;
    }
    buf_append(out, tail->data ? tail->data : "", tail->len);
    buf_append(out, in, len);
    buf_reset(tail);
    scrub_all(s, out->data, out->len);
    size_t keep = risky_suffix(s, out->data, out->len);
    buf_append(tail, out->data + out->len - keep, keep);
    out->len -= keep;
    *out_data = out->data;
    *out_len = out->len;
}
