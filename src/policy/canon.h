/*
 * canon.h - request-target canonicalisation: accept only targets whose path
 * has exactly one reading, so that what the policy matches is byte for byte
 * what the vendor receives. Nothing is rewritten: a target is canonical or
 * refused (issue 3, docs/policy.md lists each refused form and why).
 */
#ifndef KB_POLICY_CANON_H
#define KB_POLICY_CANON_H
#include <stddef.h>

#include "core/err.h"

/*
 * Checks the raw request target `target` (len bytes, not NUL-terminated,
 * as received on the request line: "/v1/x?y=1").
 * Accepts origin-form targets only. Refuses (KB_E_BAD_PATH, *errmsg set to a
 * human reason, caller frees) any: target not starting with '/', absolute or
 * asterisk form, path longer than max_path bytes, empty segment ("//", but a
 * single "/" alone is fine), "." or ".." segment (raw or percent-encoded, any
 * case), percent-encoded '/', '\\', '.', '%' or control byte (%00-%1F, %7F;
 * hex digits in either case), malformed percent escape, backslash, ';', '#',
 * control byte or NUL, space, non-ASCII byte, and any other byte outside
 * RFC 3986 pchar ('"' '<' '>' '[' ']' '^' '`' '{' '|' '}'). Other escapes
 * (%20, %3A, %C3%A9, ...) are accepted and left as they are. The query
 * (after the first '?') is validated for control, NUL, non-ASCII, space, '#'
 * and malformed escapes, and otherwise left as is.
 * On KB_OK, *path_len is the length of the path part (before '?'); it is
 * left alone otherwise. Allocates only the errmsg of a refusal (errmsg may be
 * NULL). Pure function; any thread.
 */
KB_MUSTCHECK enum kb_err policy_canon_check(const char *target, size_t len, size_t max_path,
                                            size_t *path_len, char **errmsg);

/*
 * The canonical spelling of a path that policy_canon_check accepted
 * (path_len bytes, no query): every percent escape of a byte that may stand
 * raw in a path (RFC 3986 pchar but ';') is decoded ("%61" -> "a", "%3A" ->
 * ":"), every other escape is kept with upper-case hex ("%c3%a9" ->
 * "%C3%A9"). Two spellings the vendor decodes to the same path get the same
 * canonical path, and this is what the policy matches, the meter reads and
 * the vendor receives. Returns a NUL-terminated heap string (caller frees);
 * *out_len is its length. Never longer than the input. Any thread.
 */
char *policy_canon_path(const char *path, size_t path_len, size_t *out_len);

#endif
