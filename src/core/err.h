/*
 * err.h - the one list of error conditions.
 *
 * Every fallible function returns an enum kb_err. Each entry also carries the
 * HTTP status and the stable `code` string a client sees when that error ends
 * a request, so a code is defined exactly once (README.md's error table
 * mirrors it; tests/unit/test_err.c checks both).
 */
#ifndef KB_CORE_ERR_H
#define KB_CORE_ERR_H

#define KB_MUSTCHECK __attribute__((warn_unused_result))

/* X(NAME, http status, "code", "default message") */
#define KB_ERR_MAP(X)                                                                              \
    X(OK, 200, "ok", "success")                                                                    \
    X(INVALID, 400, "invalid_request", "the request is invalid")                                   \
    X(BAD_JSON, 400, "invalid_json", "the body is not a JSON object")                              \
    X(BAD_REQUEST, 400, "bad_request", "the request is malformed")                                 \
    X(BAD_PATH, 400, "bad_path", "the request path is not in canonical form")                      \
    X(TOKEN_IN_QUERY, 400, "token_in_query", "credentials are not accepted in the URL")            \
    X(VENDOR_NOT_CONFIGURED, 400, "vendor_not_configured", "no secret is configured for vendor")   \
    X(CURRENCY_NOT_SUPPORTED, 400, "currency_not_supported", "the currency is not supported")      \
    X(MODEL_NOT_PRICED, 400, "model_not_priced", "the model has no configured price")              \
    X(ENDPOINT_NOT_METERED, 400, "endpoint_not_metered",                                           \
      "this endpoint has no cost rule; an operator can price it with a fixed cost")                \
    X(AMBIGUOUS_REQUEST, 400, "ambiguous_request",                                                 \
      "the request could be read two ways by the vendor (a parameter given twice)")                \
    X(UNSUPPORTED_ENCODING, 415, "unsupported_content_encoding",                                   \
      "the request body's Content-Encoding cannot be read")                                        \
    X(UNAUTHORIZED, 401, "unauthorized", "missing or invalid admin token")                         \
    X(INVALID_TOKEN, 401, "invalid_token", "missing or invalid vault token")                       \
    X(KEY_REVOKED, 401, "key_revoked", "the vault key has been revoked")                           \
    X(KEY_EXPIRED, 401, "key_expired", "the vault key has expired")                                \
    X(VENDOR_MISMATCH, 403, "vendor_mismatch", "the vault key belongs to another vendor")          \
    X(ENDPOINT_NOT_ALLOWED, 403, "endpoint_not_allowed",                                           \
      "the vault key does not allow this endpoint")                                                \
    X(ACCOUNT_NOT_ALLOWED, 403, "account_not_allowed",                                             \
      "the vault key does not allow acting for another account or organisation")                   \
    X(MODEL_NOT_ALLOWED, 403, "model_not_allowed",                                                 \
      "the vault key does not allow this model")                                                   \
    X(AMOUNT_TOO_LARGE, 403, "amount_too_large",                                                   \
      "the payment amount exceeds this vault key's max_amount_per_request")                        \
    X(NOT_FOUND, 404, "not_found", "no such resource")                                             \
    X(METHOD_NOT_ALLOWED, 405, "method_not_allowed", "method not allowed")                         \
    X(BODY_TOO_LARGE, 413, "body_too_large", "the request body is too large")                      \
    X(HEADERS_TOO_LARGE, 431, "headers_too_large", "the request headers are too large")            \
    X(CAP_EXHAUSTED, 429, "cap_exhausted", "the daily spend cap of this vault key is exhausted")   \
    X(BUDGET_EXHAUSTED, 429, "budget_exhausted",                                                   \
      "a budget this vault key spends from is exhausted")                                          \
    X(RATE_LIMITED, 429, "rate_limited", "the rate limit of this vault key is exceeded")           \
    X(CLIENT_CLOSED, 499, "client_closed", "the client closed the connection first")               \
    X(INTERNAL, 500, "internal_error", "internal error")                                           \
    X(UPSTREAM_UNREACHABLE, 502, "upstream_unreachable", "the vendor could not be reached")        \
    X(UPSTREAM_ERROR, 502, "upstream_error", "the vendor connection failed")                       \
    X(STORE, 503, "store_unavailable", "the store is unavailable")                                 \
    X(AUDIT_UNAVAILABLE, 503, "audit_unavailable", "the audit log cannot be written")              \
    X(SHUTTING_DOWN, 503, "shutting_down", "the server is shutting down")                          \
    X(TOO_MANY_CONNECTIONS, 503, "too_many_connections", "too many open connections; retry later") \
    X(OVERLOADED, 503, "overloaded",                                                               \
      "the server holds as many request bodies as it may; retry later")                            \
    X(UPSTREAM_TIMEOUT, 504, "upstream_timeout", "the vendor did not answer in time")              \
    X(EXISTS, 409, "conflict", "the resource already exists")                                      \
    X(KEY_NOT_ACTIVE, 409, "key_not_active",                                                       \
      "the vault key is revoked or expired and cannot be changed")                                 \
    X(BUDGET_IN_USE, 409, "budget_in_use", "the budget is still named by a key or a budget")       \
    X(TENANT_IN_USE, 409, "tenant_in_use", "the tenant still owns an active key")                  \
    X(TENANT_SECRET_MISSING, 403, "tenant_secret_missing",                                         \
      "the key's tenant has no secret of its own for this vendor")                                 \
    X(SECRET_UNAVAILABLE, 500, "secret_unavailable",                                               \
      "the tenant's secret cannot be decrypted: its master key is not configured")                 \
    X(CONFIG, 500, "config_invalid", "invalid configuration")                                      \
    X(IO, 500, "io_error", "input/output error")

enum kb_err {
#define KB_ERR_ENUM(name, status, code, msg) KB_E_##name,
    KB_ERR_MAP(KB_ERR_ENUM)
#undef KB_ERR_ENUM
        KB_E__COUNT /* number of entries, not an error */
};
#define KB_OK KB_E_OK

/* The stable client-facing code ("cap_exhausted"); never NULL. */
const char *kb_strerror(enum kb_err err);
/* The default human message for err; never NULL. */
const char *kb_errmsg(enum kb_err err);
/* The HTTP status a request ending with err answers. */
int kb_err_status(enum kb_err err);

#endif
