/*
 * profile.c - the built-in vendor profiles (see profile.h).
 *
 * Header lists come from the vendors' API references and from what their
 * official SDKs send (stripe-node, openai-node, anthropic-sdk-typescript,
 * twilio-node): a header an SDK sends that is missing here is dropped, and
 * the call goes on without it; an operator adds one with
 * `[vendor.NAME] forward_headers`.
 */
#include <string.h>
#include <strings.h>

#include "meter/meter_int.h"
#include "vendor/profile.h"

/* Forwarded to every vendor: content negotiation, idempotency, tracing. */
static const char *const common_forward[] = {
    "accept",          "accept-language", "content-type", "user-agent",
    "idempotency-key", "traceparent",     "tracestate",   NULL};

static const char *const stripe_accounts[] = {"stripe-account", "stripe-context", NULL};
static const char *const stripe_forward[] = {"stripe-version",
                                             "stripe-account",
                                             "stripe-context",
                                             "x-stripe-client-user-agent",
                                             "x-stripe-client-telemetry",
                                             NULL};

static const char *const openai_accounts[] = {"openai-organization", "openai-project", NULL};
static const char *const openai_forward[] = {"openai-organization", "openai-project", "openai-beta",
                                             "x-client-request-id", "x-stainless-*",  NULL};

static const char *const anthropic_forward[] = {"anthropic-version", "anthropic-beta",
                                                "anthropic-dangerous-direct-browser-access",
                                                "x-stainless-*", NULL};

static const char *const twilio_forward[] = {"accept-charset", "x-twilio-webhook-enabled", NULL};

static const char *const none[] = {NULL};

static const struct kb_vendor_profile profiles[] = {
    {.name = "stripe",
     .base_url = "https://api.stripe.com",
     .secret_env = "STRIPE_SECRET_KEY",
     .auth = KB_AUTH_BEARER,
     .body = KB_BODY_FORM_FROM_JSON,
     .meter = meter__stripe_begin,
     .charge_on_5xx = true,
     .moves_payments = true,
     .forward = stripe_forward,
     .accounts = stripe_accounts},
    {.name = "openai",
     .base_url = "https://api.openai.com",
     .secret_env = "OPENAI_API_KEY",
     .auth = KB_AUTH_BEARER,
     .body = KB_BODY_AS_IS,
     .meter = meter__openai_begin,
     .names_models = true,
     .forward = openai_forward,
     .accounts = openai_accounts},
    {.name = "anthropic",
     .base_url = "https://api.anthropic.com",
     .secret_env = "ANTHROPIC_API_KEY",
     .auth = KB_AUTH_HEADER,
     .auth_header = "x-api-key",
     .body = KB_BODY_AS_IS,
     .meter = meter__anthropic_begin,
     .names_models = true,
     .forward = anthropic_forward,
     .accounts = none},
    {.name = "twilio",
     .base_url = "https://api.twilio.com",
     .secret_env = "TWILIO_AUTH_TOKEN",
     .account_env = "TWILIO_ACCOUNT_SID",
     .auth = KB_AUTH_BASIC,
     .body = KB_BODY_FORM,
     .meter = meter__twilio_begin,
     .charge_on_5xx = true,
     .account_path = "/2010-04-01/Accounts/",
     .forward = twilio_forward,
     .accounts = none},
};
#define NPROFILES (sizeof profiles / sizeof profiles[0])

const struct kb_vendor_profile *vendor_profile(const char *name)
{
    for (size_t i = 0; name && i < NPROFILES; i++)
        if (strcmp(profiles[i].name, name) == 0)
            return &profiles[i];
    return NULL;
}

const struct kb_vendor_profile *vendor_profiles(size_t *n)
{
    *n = NPROFILES;
    return profiles;
}

bool vendor_header_in(const char *const *list, const char *name, size_t nlen)
{
    for (; list && *list; list++) {
        size_t l = strlen(*list);
        if (l && (*list)[l - 1] == '*') {
            if (nlen >= l - 1 && strncasecmp(name, *list, l - 1) == 0)
                return true;
        } else if (l == nlen && strncasecmp(name, *list, l) == 0) {
            return true;
        }
    }
    return false;
}

bool vendor_forwards_header(const struct kb_vendor *v, const char *name, size_t nlen)
{
    return vendor_header_in(common_forward, name, nlen) ||
           (v->profile && vendor_header_in(v->profile->forward, name, nlen)) ||
           vendor_header_in((const char *const *)v->forward, name, nlen);
}
