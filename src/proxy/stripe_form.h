/*
 * stripe_form.h - JSON request bodies to Stripe's form encoding.
 *
 * Stripe's API takes application/x-www-form-urlencoded bodies with bracket
 * nesting; agents often send JSON. {"amount":1000,"metadata":{"k":"v"},
 * "items":[{"price":"p_1"}],"expand":["a"]} becomes
 * amount=1000&metadata[k]=v&items[0][price]=p_1&expand[0]=a
 * with the brackets left literal, in keys and values alike, byte for byte
 * what stripe-node sends (qs would write %5B/%5D; Stripe reads both).
 */
#ifndef KB_PROXY_STRIPE_FORM_H
#define KB_PROXY_STRIPE_FORM_H
#include <stddef.h>

#include "core/err.h"

/*
 * Transcodes `json` (len bytes) to a form body. Object members keep their
 * order; true/false become "true"/"false"; null becomes an empty value
 * ("k="), which Stripe reads as "unset"; integers are written exactly;
 * other numbers as the shortest text that reads back as the same double,
 * as JS writes it ("0.1"; "1e-7" and "1e+21" outside [1e-6, 1e21)); empty
 * objects and arrays send nothing; nested depth is capped at 16. Refuses
 * (KB_E_BAD_JSON, *errmsg set) invalid JSON or a top level that is not an
 * object, and (KB_E_BODY_TOO_LARGE) output that would exceed
 * max(4 MiB, 4 x len). *out is a NUL-terminated heap string the
 * caller frees, *out_len its length. Pure; any thread.
 */
KB_MUSTCHECK enum kb_err stripe_form_from_json(const char *json, size_t len, char **out,
                                               size_t *out_len, char **errmsg);

#endif
