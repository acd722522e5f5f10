/*
 * canonical.h - the one reading of a proxied request.
 *
 * A request is parsed once into the form the vendor will act on, and the
 * endpoint policy, the meter and the upstream request are all built from
 * that one value: what was checked is what is metered is what is forwarded.
 *
 *   path   the canonical spelling (policy/canon.h): "%61" and "a" are one path
 *   body   decoded from its Content-Encoding (gzip, deflate, br, zstd; capped);
 *          Stripe JSON transcoded to Stripe's form encoding; for the form
 *          vendors (stripe, twilio) the query of a write folded into the body,
 *          since those vendors read parameters from both places
 *   accept the codings the vendor may answer with: only those the meter reads
 *
 * A request whose meaning for the vendor could differ from what the meter
 * reads is refused: a parameter in both query and body (ambiguous_request),
 * a coding the proxy cannot decode (unsupported_content_encoding).
 */
#ifndef KB_PROXY_CANONICAL_H
#define KB_PROXY_CANONICAL_H
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

struct kb_hreq;
struct kb_vendor;

struct kb_canon_req {
    char *path;               /* owned; canonical vendor path, no query, NUL-terminated */
    size_t path_len;          /* bytes of path */
    const char *query;        /* borrowed from the target, after '?'; NULL when none or folded */
    size_t query_len;         /* bytes of query */
    const char *body;         /* the body to meter and forward: the request's or `owned` */
    size_t body_len;          /* bytes of body */
    char *owned;              /* owned; a decoded, transcoded or folded body, else NULL */
    const char *content_type; /* as forwarded (borrowed or static); may be NULL */
    bool body_rewritten;      /* Content-Type and Content-Encoding are the proxy's own */
    char accept[32];          /* Accept-Encoding for the vendor; "" asks for identity */
};

/*
 * Builds the canonical form of `req` for vendor `v`. `path` (path_len bytes)
 * is the vendor path that policy_canon_check accepted, `query` the part after
 * '?' (NULL when none). `max_body` caps a decoded body. On KB_OK *c is filled
 * (release with canonical_cleanup). Refusals: KB_E_UNSUPPORTED_ENCODING,
 * KB_E_BODY_TOO_LARGE (decodes past max_body or a 100:1 ratio),
 * KB_E_INVALID (a corrupt coded body, Stripe JSON that cannot be transcoded),
 * KB_E_ACCOUNT_NOT_ALLOWED (a Stripe-Account, Stripe-Context,
 * OpenAI-Organization or OpenAI-Project header, in any case or with '_' for
 * '-', whose value is not in the key's `allowed_accounts` (a JSON array,
 * NULL: none), or given twice; a Twilio account SID in the path other than
 * `account`, the one its credentials act for),
 * KB_E_AMBIGUOUS_REQUEST (two Content-Type or Content-Encoding headers, a
 * body on a GET or HEAD, a parameter both in the query and the body of a
 * form vendor's write, or a query beside a body that is not a form);
 * *errmsg (caller frees) says why. Worker thread.
 */
KB_MUSTCHECK enum kb_err canonical_build(const struct kb_hreq *req, const struct kb_vendor *v,
                                         const char *account, const char *allowed_accounts,
                                         const char *method,
                                         const char *path, size_t path_len, const char *query,
                                         size_t max_body, struct kb_canon_req *c, char **errmsg);

void canonical_cleanup(struct kb_canon_req *c);

/* Whether header `name`, lower-cased and with '_' read as '-', is in the
 * NULL-terminated list of lower-case names: "Content_Length" is
 * "content-length" to a server that maps underscores. */
bool canonical_folded_in(const char *name, const char *const *list);

/* Whether header `name` reads as `other` to such a server (whole == false:
 * starts with it). The one place that says how names are folded. */
bool canonical_name_is(const char *name, const char *other, bool whole);

/* True for the request headers canonical_build replaces when it rewrote
 * the body or chose the codings (name is nlen bytes). */
bool canonical_replaces_header(const struct kb_canon_req *c, const char *name, size_t nlen);

#endif
