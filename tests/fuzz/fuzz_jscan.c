/*
 * fuzz_jscan.c - libFuzzer target for the JSON skeleton scanner
 * (src/meter/jscan.c).
 *
 * The first byte seeds the cut points; the rest is the text. Checks:
 *  (a) fed in random pieces, the scan gives exactly what it gives fed
 *      whole (success, skeleton bytes, lossy flag): the state machine does
 *      not depend on where the network cut the answer;
 *  (b) the skeleton stays within METER__JSCAN_SKEL_MAX and the buffer
 *      within twice that (bounded memory);
 *  (c) when jansson accepts the text (without NUL bytes), the scan succeeds and jansson
 *      accepts the skeleton too (valid input -> valid skeleton), and when
 *      the text is an object, so is the skeleton.
 * Any violation aborts, which libFuzzer reports as a crash.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meter/meter_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct result {
    bool ok;    /* finish succeeded */
    bool lossy; /* the lossy flag */
    char *skel; /* heap copy of the skeleton when ok */
    size_t len; /* its length */
};

static struct result run(const char *text, size_t n, unsigned seed, bool whole)
{
    struct meter__jscan j;
    struct result r = {false, false, NULL, 0};
    const char *sk;
    size_t len;

    meter__jscan_init(&j);
    for (size_t i = 0; i < n;) {
        size_t k = n - i;
        if (!whole) {
            seed = seed * 1103515245u + 12345u;
            k = 1 + (seed >> 16) % 9;
            if (k > n - i)
                k = n - i;
        }
        meter__jscan_feed(&j, text + i, k);
        if (j.out.len > METER__JSCAN_SKEL_MAX || j.out.cap > 2 * (size_t)METER__JSCAN_SKEL_MAX + 64)
            abort();
        i += k;
    }
    if (meter__jscan_finish(&j, &sk, &len)) {
        /* NUL-terminated; invalid input may put a NUL inside (jansson then
         * refuses the skeleton, as it refused the input) */
        if (sk[len] != '\0')
            abort();
        r.ok = true;
        r.skel = malloc(len + 1);
        if (!r.skel)
            abort();
        memcpy(r.skel, sk, len + 1);
        r.len = len;
    }
    r.lossy = j.lossy;
    meter__jscan_cleanup(&j);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned seed = data[0];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;

    struct result whole = run(text, n, 0, true);
    struct result cut = run(text, n, seed, false);
    if (whole.ok != cut.ok || whole.lossy != cut.lossy)
        abort();
    if (whole.ok && (whole.len != cut.len || memcmp(whole.skel, cut.skel, whole.len) != 0))
        abort();

    /* jansson stops at a NUL byte (it reads "true\0" as true); the
     * scanner refuses one: stricter, so the property is checked on text
     * without NUL bytes. */
    json_t *in = memchr(text, '\0', n) ? NULL : json_loadb(text, n, JSON_DECODE_ANY, NULL);
    if (in) {
        if (!whole.ok)
            abort(); /* jansson read it: so must the scanner */
        json_t *sk = json_loadb(whole.skel, whole.len, JSON_DECODE_ANY, NULL);
        if (!sk)
            abort();
        if (json_is_object(in) != json_is_object(sk))
            abort();
        json_decref(sk);
        json_decref(in);
    }
    free(whole.skel);
    free(cut.skel);
    return 0;
}
