/*
 * pattern.h - the endpoint pattern language of `allowed_endpoints`.
 * (The examples are line comments: a slash-star inside a block comment trips -Wcomment.)
 */
//   "POST /v1/payment_intents"   method prefix (optional; none means any method)
//   "/v1/customers/+"            '+' matches exactly one segment
//   "/v1/payment_intents/*"      trailing '*' matches one or more further segments
//   "deny:/v1/payouts/*"         deny wins over any allow ("deny:POST /v1/x" too)
/*
 * '*' is valid only as the whole last segment, '+' only as a whole segment.
 * Literal segments are case-sensitive and match the path's bytes after its
 * percent escapes are decoded ("/v1/a:b" matches "/v1/a%3Ab"), so a deny
 * cannot be stepped around by escaping a byte the vendor will decode; paths
 * are canonical first (canon.h), which keeps '/' '.' '%' from being escaped.
 * The root "/" is a pattern of its own; any other trailing '/' is refused.
 * A policy allows a request when at least one allow pattern matches and no
 * deny pattern does. Full rules and examples: docs/policy.md.
 */
#ifndef KB_POLICY_PATTERN_H
#define KB_POLICY_PATTERN_H
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

#define KB_PATTERN_MAX_LEN 512     /* bytes in one pattern string */
#define KB_POLICY_MAX_PATTERNS 256 /* patterns in one policy */

struct kb_policy; /* compiled, immutable after compile: share freely across threads */

/*
 * Compiles `n` pattern strings ("[deny:][METHOD ]/path", exactly one space
 * after the method). Rejects (KB_E_INVALID, *errmsg names the offending
 * pattern by index and text, caller frees) an empty list or one over
 * KB_POLICY_MAX_PATTERNS, a NULL, empty or over-long pattern, an unknown
 * method (methods are upper case: GET HEAD POST PUT PATCH DELETE OPTIONS), a
 * path not starting with '/', an empty segment, a trailing '/' (except the
 * root "/"), a "." or ".." segment, '*' anywhere but as the whole last
 * segment, '+' or '*' inside a literal segment, '%', '?', and any byte
 * outside [A-Za-z0-9-._~!$&'(),=:@]. A list of only deny patterns compiles
 * (it allows nothing). *out is set only on success and owned by the caller
 * (policy_free). Any thread.
 */
KB_MUSTCHECK enum kb_err policy_compile(const char *const *patterns, size_t n,
                                        struct kb_policy **out, char **errmsg);

/* True when the policy lets `method` reach `path` (path_len bytes, accepted
 * by policy_canon_check, query cut off). A method outside the list above only
 * matches patterns without a method. Allocates nothing; pure; any thread. */
bool policy_allows(const struct kb_policy *p, const char *method, const char *path,
                   size_t path_len);

/* Frees p; policy_free(NULL) is a no-op. */
void policy_free(struct kb_policy *p);

#endif
