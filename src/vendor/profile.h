/*
 * profile.h - the built-in vendor profiles, in one table: what Keybrake
 * knows about stripe, openai, anthropic and twilio. Adding a vendor means
 * one entry in profile.c (and, when its spend is metered, a meter in
 * src/meter/).
 *
 * A profile says where the vendor lives and how its credential travels
 * (config.c makes a struct kb_vendor of it, which the INI file and the
 * environment may then change), how its writes carry parameters (the body
 * adapter, proxy/canonical.c), which meter prices its requests
 * (meter/meter.c), which request headers may reach it (an explicit list:
 * any other header is dropped, proxy/admit.c) and which of those select
 * another account or organisation (forwarded only when the vault key was
 * issued for that account, proxy/canonical.c).
 *
 * Generic vendors ([vendor.NAME] in the INI file) have no profile: no
 * meter (fixed costs only), their body as sent, and the common header
 * list plus the operator's `forward_headers`.
 *
 * The table is constant: any thread may read it at any time.
 */
#ifndef KB_VENDOR_PROFILE_H
#define KB_VENDOR_PROFILE_H
#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "core/err.h"

struct kb_meter;
struct kb_meter_req;

/* Sets m up for one request of the vendor (meter/meter_int.h). */
typedef enum kb_err (*kb_meter_begin_fn)(struct kb_meter *m, const struct kb_meter_req *req,
                                         bool *metered, char **new_body, size_t *new_len,
                                         char **errmsg);

struct kb_vendor_profile {
    const char *name;        /* first path segment, and the key's vendor */
    const char *base_url;    /* no trailing slash */
    const char *secret_env;  /* the vendor's usual environment variable for its secret */
    const char *account_env; /* and for the Basic user name, or NULL */
    enum kb_auth_style auth;
    const char *auth_header;  /* KB_AUTH_HEADER: the header the secret goes in */
    enum kb_body_style body;  /* how its writes carry parameters */
    kb_meter_begin_fn meter;  /* prices its requests; a write it cannot price is refused */
    bool charge_on_5xx;       /* a 5xx on a priced write may still have moved money */
    bool names_models;        /* its requests name models: allowed_models applies */
    bool moves_payments;      /* its writes move payment amounts: max_amount_per_request applies */
    const char *account_path; /* paths under this prefix name the account next: only the
                                 configured one may be named (Twilio), or NULL */
    const char *const *forward;  /* request headers forwarded besides the common ones */
    const char *const *accounts; /* of those, the account or organisation selectors */
};

/* The profile called `name`, or NULL (a generic vendor). */
const struct kb_vendor_profile *vendor_profile(const char *name);

/* The whole table: *n profiles. */
const struct kb_vendor_profile *vendor_profiles(size_t *n);

/*
 * True when a request header called `name` may be forwarded to vendor v:
 * it is in the common list (content negotiation, idempotency, tracing), in
 * v's profile or in the operator's forward_headers for v. Names compare
 * case-insensitively and exactly ('_' is not '-'); an entry ending in '*'
 * names a prefix ("x-stainless-*").
 */
bool vendor_forwards_header(const struct kb_vendor *v, const char *name, size_t nlen);

/* True when `name` matches an entry of the NULL-terminated list (as above). */
bool vendor_header_in(const char *const *list, const char *name, size_t nlen);

#endif
