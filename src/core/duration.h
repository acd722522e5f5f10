/*
 * duration.h - durations as written by people: "30s", "5m", "2h", "1d",
 * "250ms", or a bare integer of seconds.
 */
#ifndef KB_CORE_DURATION_H
#define KB_CORE_DURATION_H
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/*
 * Parses text (len bytes) into milliseconds. Accepts one non-negative
 * integer (no sign, no leading '+', no spaces, at most 12 digits) followed
 * by nothing (seconds) or one unit: ms, s, m, h, d. Refuses anything else,
 * and results above 100 years, with KB_E_INVALID. Pure.
 */
KB_MUSTCHECK enum kb_err duration_parse_ms(const char *text, size_t len, int64_t *out_ms);

#endif
