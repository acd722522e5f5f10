/*
 * meter.h - what a request may cost before it is sent, and what it did cost
 * after. One file per vendor (stripe.c, openai.c, anthropic.c, twilio.c,
 * fixed.c) behind this interface; prices come from pricing.json (embedded in
 * the binary, overridable by a file named in the config).
 *
 * The proxy calls, per request, on one worker thread:
 *   meter_begin()            -> worst-case reservation (may refuse, may rewrite the body)
 *   meter_response_status()  -> once, when the final upstream status is known
 *   meter_response_data()    -> for every body chunk as it passes (streams are
 *                               never buffered whole: state is bounded)
 *   meter_settle()           -> the actual cost
 *   meter_free()
 * All amounts are int64 micro-dollars (core/money.h).
 */
#ifndef KB_METER_METER_H
#define KB_METER_METER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/hdr.h"

struct kb_pricing; /* immutable after load: share across threads */
struct kb_meter;   /* per-request state; owned by the request */

/*
 * Loads the embedded pricing.json, then, when override_path is non-NULL,
 * the file there, whose entries replace the embedded ones key by key.
 * Refuses (KB_E_CONFIG, *errmsg set) unreadable or malformed files and
 * prices that are negative or not exact micro-dollar decimals.
 */
KB_MUSTCHECK enum kb_err meter_pricing_load(const char *override_path, struct kb_pricing **out,
                                            char **errmsg);
void meter_pricing_free(struct kb_pricing *p);

/*
 * Adds a fixed cost for requests to a generic vendor whose method and path
 * match `pattern` (the pattern language of policy/pattern.h); the first
 * matching entry wins; no match costs zero. Called at start-up only.
 */
KB_MUSTCHECK enum kb_err meter_pricing_add_fixed(struct kb_pricing *p, const char *vendor,
                                                 const char *pattern, int64_t micros,
                                                 char **errmsg);

struct kb_meter_req {
    const char *vendor;           /* "stripe", "openai", "anthropic", "twilio" or a generic name */
    const char *method;           /* "POST" */
    const char *path;             /* canonical vendor path without query: "/v1/chat/completions" */
    size_t path_len;              /* bytes of path */
    const char *content_type;     /* request Content-Type, may be NULL */
    const char *body;             /* request body as it will be forwarded (Stripe: form) */
    size_t body_len;              /* bytes of body */
    const char *query;            /* canonical query as forwarded, without '?'; NULL if none */
    size_t query_len;             /* bytes of query */
    const struct kb_hdr *headers; /* request headers as forwarded (NULL: none) */
    size_t nheaders;              /* entries in headers */
    const char *allowed_models;   /* the key's allowed_models (JSON array text), NULL: any */
    int64_t max_amount;           /* the key's payment ceiling per request, micro-dollars; 0: none */
};

/*
 * Starts metering one request. On KB_OK: *out is the state (caller frees
 * with meter_free), *reserve is the worst-case cost (>= 0) to reserve before
 * forwarding, and *new_body and *new_body_len are set to a rewritten body the
 * proxy must forward instead (heap, caller frees) or NULL when unchanged
 * (OpenAI streams get stream_options.include_usage=true added).
 * Every endpoint of a built-in vendor (stripe, openai, anthropic, twilio)
 * has a cost class: metered by its meter, free by declaration (reads:
 * GET/HEAD/OPTIONS/DELETE, and the POSTs each meter lists as free), a fixed
 * cost (meter_pricing_add_fixed), or refused with KB_E_ENDPOINT_NOT_METERED.
 * Refuses: KB_E_MODEL_NOT_PRICED (unpriced model, no default price),
 * KB_E_CURRENCY_NOT_SUPPORTED (Stripe amount in a currency without a rate),
 * KB_E_INVALID (a body the meter must read but cannot parse, e.g. an OpenAI
 * completion without "model"). *errmsg (caller frees) says why.
 */
KB_MUSTCHECK enum kb_err meter_begin(const struct kb_pricing *p, const struct kb_meter_req *req,
                                     struct kb_meter **out, int64_t *reserve, char **new_body,
                                     size_t *new_body_len, char **errmsg);

/* The final upstream status and response Content-Type (may be NULL). */
void meter_response_status(struct kb_meter *m, int status, const char *content_type);

/*
 * The response's Content-Encoding as the vendor sent it (NULL or "identity":
 * none). Call after meter_response_status and before any data. The meter
 * decodes gzip, x-gzip, deflate, br and zstd itself (the bytes passed to the
 * client stay as the vendor sent them); an encoding it cannot read (or a
 * list of several), a corrupt coded body, one that decodes past 1 GiB or
 * 1000 times its size, or one that ends before its coding does leaves the
 * meter blind, and a response whose cost is read from the answer then
 * settles at the reservation (never less). Costs nothing when the meter
 * does not read this response (non-2xx, or a cost fixed at begin).
 */
void meter_response_encoding(struct kb_meter *m, const char *content_encoding);

/* One chunk of the response body, in order. Memory use stays bounded
 * whatever the total size (SSE events are parsed as they complete). */
void meter_response_data(struct kb_meter *m, const char *data, size_t len);

/*
 * The actual cost. `complete` is false when the response did not arrive
 * whole (upstream cut, client gone mid-stream): a metered response whose
 * usage was not seen then costs the reservation, never zero. A response
 * that never started (no status) costs zero. Never negative.
 */
int64_t meter_settle(struct kb_meter *m, bool complete);

void meter_free(struct kb_meter *m);

/*
 * The i-th (0, 1, ...) model id the request names, as the meter read it
 * (an LLM request's "model", each entry of a batch), or NULL past the
 * last. A request that names no model (GET /v1/models) has none. *unread
 * (may be NULL) is true for a write to an LLM vendor whose body is not
 * JSON (multipart): it may name a model the meter did not read.
 *
 * With req->allowed_models set, meter_begin refuses a request naming any
 * other model (exact ids), or a write whose model it cannot read, with
 * KB_E_MODEL_NOT_ALLOWED, before any pricing error: the caller never
 * learns more about a model the key may not use.
 */
const char *meter_model(const struct kb_meter *m, size_t i, bool *unread);

/*
 * The per-key object ledger (Stripe; stripe_ledger.c). The store keeps, per
 * (vault key, object id), the micro-dollars that key was already charged
 * for the object (store_object_charged / store_object_charge_set), so that
 * a PaymentIntent created and then confirmed, captured or raised through
 * the same key is charged once, and an Idempotency-Key replay costs 0.
 * Every other meter answers NULL / its own reservation, so the proxy may
 * call these for every request. The proxy's writer thread:
 *
 *   admit, inside the transaction that reserves:
 *     obj = meter_ledger_object(m, &max_age);
 *     nb = max_age ? now - max_age : 0;          (now: epoch seconds)
 *     if (obj) { store_object_charged(s, key_seq, obj, nb, &c);   c = -1 when absent
 *                reserved = meter_ledger_reserve(m, c); }
 *     store_spend_reserve(..., reserved, ...)
 *   settle, after meter_settle() (whose result stays this request's own,
 *   incremental cost) and inside the transaction that settles:
 *     for (i = 0; (id = meter_ledger_entry(m, i, &total)); i++)
 *         store_object_charge_set(s, key_seq, id, total, now, nb);
 *
 * Without the ledger calls every request is charged as if the key had
 * never seen the object (over-counting, never under-counting).
 */

/* The ledger entry whose earlier charges on this key count against this
 * request (the pi_... of a confirm, the "idem:..." of a create carrying an
 * Idempotency-Key), or NULL. *max_age_s (may be NULL): entries last set
 * longer ago than this do not count (0: they always count). Borrowed from
 * m. Any thread that owns m. */
const char *meter_ledger_object(const struct kb_meter *m, int64_t *max_age_s);

/* `charged` is what the key's ledger holds for meter_ledger_object (-1
 * when there is no entry). Returns the reservation to use instead of the
 * one meter_begin gave (>= 0), and makes meter_settle count the same
 * entry. Call once, before forwarding; m's reservation becomes the result. */
int64_t meter_ledger_reserve(struct kb_meter *m, int64_t charged);

/* After meter_settle: the i-th (0, 1, ...) entry to record for this key,
 * with *total its new value; NULL when there are no more (always NULL
 * unless the answer was a 2xx). Borrowed from m. */
const char *meter_ledger_entry(const struct kb_meter *m, size_t i, int64_t *total);

#endif
