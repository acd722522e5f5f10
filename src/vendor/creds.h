/*
 * creds.h - the vendor credentials in force: for each configured vendor,
 * the header line the proxy injects, the account it acts for and what the
 * scrubber masks in answers. Built from the configuration at start and
 * again by each SIGHUP reload, which swaps the whole set at once
 * (runtime_creds()); a request reads one set when it is admitted and uses
 * it to the end, so a reload never mixes two secrets in one exchange.
 * A set is immutable once built; replaced sets are kept until exit (a
 * request in flight may point into one).
 */
#ifndef KB_VENDOR_CREDS_H
#define KB_VENDOR_CREDS_H
#include <stddef.h>

#include "core/err.h"
#include "proxy/scrub.h"

struct kb_config;

struct kb_cred {
    char *inject;          /* owned; "Authorization: Bearer sk_...\r\n", NULL: no secret */
    char *basic;           /* owned; the base64 of a Basic credential, or NULL */
    char *secret;          /* owned; as configured, or NULL */
    char *account;         /* owned; the Basic user name (Twilio account SID), or NULL */
    struct kb_scrub scrub; /* masks secret and basic in answers, and earlier sets' */
};

struct kb_creds {
    size_t n;             /* == the running configuration's nvendors */
    struct kb_cred v[];   /* by vendor index of the running configuration */
};

/*
 * Builds the set for the vendors of `running` (by index) from the secrets
 * and accounts `from` gives them (the same configuration at start, a newly
 * loaded one on reload; vendors `from` adds are ignored: the vendor set
 * changes at the next start). `prev` (NULL at start) is the set being
 * replaced: each vendor's scrubber also masks what prev's masked (its
 * secrets, newest first, as many as KB_SCRUB_NEEDLES holds), so an answer
 * quoting the secret of before a rotation does not hand it out; prev must
 * outlive the new set (replaced sets are kept until exit). Refuses
 * (KB_E_CONFIG) a secret or account with a line break, or Basic auth
 * without an account. *out is the caller's (creds_free).
 */
KB_MUSTCHECK enum kb_err creds_build(const struct kb_config *running, const struct kb_config *from,
                                     const struct kb_creds *prev, struct kb_creds **out,
                                     char **errmsg);
void creds_free(struct kb_creds *c);

/*
 * One credential for vendor v from a tenant's own secret and account
 * (docs/tenants.md): as creds_build makes each of the set's. KB_E_INVALID
 * for a line break, KB_E_CONFIG for Basic auth without an account; *out is
 * the caller's (creds_one_free, which wipes the secret). Any thread.
 */
struct kb_vendor;
KB_MUSTCHECK enum kb_err creds_one(const struct kb_vendor *v, const char *secret,
                                   const char *account, struct kb_cred **out, char **errmsg);
void creds_one_free(struct kb_cred *c);

#endif
