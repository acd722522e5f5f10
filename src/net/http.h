/*
 * http.h - small helpers over the HTTP server shared by the proxy and the
 * admin API: JSON replies and error replies in the one error shape.
 */
#ifndef KB_NET_HTTP_H
#define KB_NET_HTTP_H
#include <jansson.h>
#include <stddef.h>

#include "core/err.h"

struct kb_hreq;

/*
 * Replies `status` with `body` serialised (steals the reference; may be
 * NULL for an empty body) and Content-Type application/json. The request
 * is finished and must not be touched afterwards.
 */
void http_reply_json(struct kb_hreq *req, int status, json_t *body);

/*
 * Replies with the error shape {"code", "message"[, "field"]}, the status
 * from err.h, and a `Keybrake-Error: <code>` header so clients can tell the
 * proxy's answers from the vendor's. message NULL: the default message.
 */
void http_reply_error(struct kb_hreq *req, enum kb_err err, const char *message, const char *field);

/*
 * The same, for errors the proxy makes itself, plus an `error` member
 * {"type": "keybrake_error", "code", "message"}: vendor SDKs (stripe-node
 * above all) raise an exception only when the body has one, so a refusal
 * reaches tool code as an error instead of as a resource.
 */
void http_reply_proxy_error(struct kb_hreq *req, enum kb_err err, const char *message);

/* The same, with the members of `extra` (may be NULL; a reference is
 * taken) added to the body and to its `error` member: {"budget": ...}. */
void http_reply_proxy_error_with(struct kb_hreq *req, enum kb_err err, const char *message,
                                 json_t *extra);

#endif
