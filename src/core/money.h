/*
 * money.h - USD amounts as int64 micro-dollars (1 USD = 1,000,000), parsed
 * strictly from decimal text: no binary floating point anywhere on the path.
 */
#ifndef KB_CORE_MONEY_H
#define KB_CORE_MONEY_H
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define KB_MICROS_PER_USD 1000000LL
/* Largest amount accepted anywhere: 1e12 USD, far below INT64_MAX micros. */
#define KB_MONEY_MAX_MICROS (1000000000000LL * KB_MICROS_PER_USD)

/*
 * Parses a JSON number's text ("10", "0.25", "1e2", "12.500000") into
 * micro-dollars. Refuses (KB_E_INVALID, *errmsg set) negatives, more than 6
 * decimals of precision after applying the exponent, values above
 * KB_MONEY_MAX_MICROS, and anything not a JSON number. Pure.
 */
KB_MUSTCHECK enum kb_err money_parse(const char *text, size_t len, int64_t *out, char **errmsg);

/* Writes micros as a decimal USD string with 6 decimals ("12.500000") into
 * buf (at least 32 bytes). Returns buf. */
char *money_format(int64_t micros, char *buf, size_t size);

/*
 * Finds the value of top-level member `key` in the JSON object text `json`
 * and, when it is a number, sets *start and *vlen to its exact text. Returns
 * KB_OK when found as a number, KB_E_NOT_FOUND when absent, KB_E_INVALID
 * when present but not a number, KB_E_BAD_JSON when the text is malformed.
 * Needed because jansson turns reals into doubles.
 */
KB_MUSTCHECK enum kb_err money_json_number(const char *json, size_t len, const char *key,
                                           const char **start, size_t *vlen);

#endif
