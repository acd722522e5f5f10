/*
 * fuzz_forms.c - libFuzzer target for the hand-written parsers of request
 * bodies and admin values that had none (issue 14): Stripe's JSON-to-form
 * transcoder (proxy/stripe_form.c), the meters' form decoder
 * (meter__form_parse), USD amounts (money_parse, money_json_number) and
 * durations (duration_parse_ms).
 *
 * Byte 0 picks the parser. Beyond no crash and no sanitizer report: a form
 * the transcoder writes is one the meters' decoder reads; a parsed amount
 * prints back (money_format) to an amount that parses to the same value;
 * a duration is positive and a whole number of ms. Any violation aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/duration.h"
#include "core/money.h"
#include "meter/meter_int.h"
#include "proxy/stripe_form.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    char *em = NULL;
    switch (data[0] % 4) {
    case 0: {
        char *form = NULL;
        size_t flen = 0;
        if (stripe_form_from_json(in, n, &form, &flen, &em) == KB_OK) {
            if (!form || strlen(form) != flen)
                abort();
            struct meter__form f = {0};
            char *e2 = NULL;
            if (meter__form_parse(form, flen, &f, &e2) != KB_OK)
                abort(); /* what we write, we read */
            meter__form_cleanup(&f);
            free(e2);
        }
        free(form);
        break;
    }
    case 1: {
        struct meter__form f = {0};
        if (meter__form_parse(in, n, &f, &em) == KB_OK)
            for (size_t i = 0; i < f.n; i++)
                if (!f.v[i].key || f.v[i].key[f.v[i].klen] != '\0' || f.v[i].val[f.v[i].vlen])
                    abort();
        meter__form_cleanup(&f);
        break;
    }
    case 2: {
        int64_t v = -1, w = -1;
        if (money_parse(in, n, &v, &em) == KB_OK) {
            char buf[40], *e2 = NULL;
            const char *t = money_format(v, buf, sizeof buf);
            if (v < 0 || money_parse(t, strlen(t), &w, &e2) != KB_OK || w != v)
                abort();
            free(e2);
        }
        const char *num;
        size_t numlen;
        if (money_json_number(in, n, "cap", &num, &numlen) == KB_OK &&
            (num < in || num + numlen > in + n))
            abort();
        break;
    }
    case 3: {
        int64_t ms = -1;
        if (duration_parse_ms(in, n, &ms) == KB_OK && ms < 0)
            abort();
        break;
    }
    }
    free(em);
    return 0;
}
