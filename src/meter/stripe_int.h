/*
 * stripe_int.h - what the Stripe meter's files share with each other and
 * with nobody else: the route table (stripe_routes.c), the per-request state
 * behind the object ledger (stripe_ledger.c), and the form readers and
 * currency conversion of stripe.c.
 *
 * How a request is priced is decided by its route: a rule (how the amount
 * is read), the member of Stripe's answer that says how much moved, and
 * flags saying how the request relates to the per-key object ledger
 * (meter.h, meter_ledger_*).
 */
#ifndef KB_METER_STRIPE_INT_H
#define KB_METER_STRIPE_INT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "meter/meter_int.h"

enum stripe__rule {
    SR_FREE = 0,            /* moves no money: claimed, reserve 0 */
    SR_AMOUNT,              /* amount + currency in the body (a create) */
    SR_AMOUNT_NOCUR,        /* optional amount without currency (fee refunds, approvals) */
    SR_PI_UPDATE,           /* PaymentIntent update: the new amount, when it sets one */
    SR_CONFIRM,             /* moves the object's amount; nothing in the request */
    SR_CAPTURE,             /* amount_to_capture / amount in the request, or the whole */
    SR_INCREMENT,           /* amount = the new authorised total (no currency) */
    SR_INVOICEITEM,         /* amount, or unit amount x quantity */
    SR_INVOICEITEM_UPDATE,  /* the same when the update touches price or quantity */
    SR_CHECKOUT,            /* line items + the dearest shipping option; 0 in setup mode */
    SR_SUBSCRIPTION,        /* items and add_invoice_items of the first invoice */
    SR_SUB_UPDATE,          /* subscription update: free unless it touches money keys */
    SR_SUBITEM,             /* subscription item create/update */
    SR_INVOICE_CREATE,      /* a draft: its amount_due (pending items, from_invoice) */
    SR_INVOICE_DUE,         /* finalize/send/pay: amount_due beyond the ledger */
    SR_INVOICE_UPDATE,      /* a draft's settings: free unless it adds shipping_cost */
    SR_CUSTOMER,            /* customer create/update: a positive balance is owed */
    SR_QUOTE_TOTAL,         /* quote finalize/accept: amount_total beyond the ledger */
    SR_PAYMENT_LINK_UPDATE, /* free when it only deactivates or edits metadata */
    SR_V2_AMOUNT,           /* API v2: amount[value] + amount[currency] */
    SR_UNKNOWN,             /* the amount is never in the request */
};

/* Route flags. */
#define STRIPE_RECORD_ID 0x1u /* a create: the answer's "id" joins the ledger */
#define STRIPE_OBJECT 0x2u    /* acts on the object named by the path's id segment */
#define STRIPE_BOUNDED                                                                             \
    0x4u /* the ledger entry bounds the object's amount: an                                        \
            object found there reserves nothing more */
#define STRIPE_ADD                                                                                 \
    0x8u /* the request adds money to the object named in                                          \
            the body ("invoice"); the ledger adds it up */

struct stripe__route {
    const char *seg[6];     /* "v1"/"v2" and the rest of the path; "+" is one id
                               segment, a final "*" any number of segments */
    enum stripe__rule rule; /* how the cost is read */
    const char *resp_key;   /* amount member of the 2xx answer, or NULL */
    unsigned flags;         /* STRIPE_* */
};

/* The route for a POST to `path`, or NULL when the endpoint is not listed.
 * Segments compare case-insensitively (Stripe's router does not, but a
 * spelling it refuses costs nothing and one it accepts must not be free);
 * *id (may be NULL) is the route's first "+" segment, *id_len its length. */
const struct stripe__route *stripe__route_find(const char *path, size_t path_len, const char **id,
                                               size_t *id_len);

/* Per-request state of every claimed, non-free Stripe request. */
struct stripe__state {
    const struct stripe__route *route; /* static */
    int64_t bound;                     /* request's worst case for the object's new total or
                                          for this request (µ$); -1: not in the request */
    bool bound_exact;                  /* bound is the exact figure (currency known) */
    int64_t fixed;                     /* exact cost read from the request for non-ledger
                                          rules; -1: settle from the answer */
    int64_t unknown;                   /* stripe.unknown_amount_reserve (-1: refuse) */
    char *object;                      /* owned; the ledger object looked up, or NULL */
    bool idem;                         /* object is an Idempotency-Key entry */
    int64_t charged;                   /* what the ledger held for object; -1: none */
    char *created;                     /* owned; the answer's "id" after a create */
    int64_t cost;                      /* this request's incremental cost, after settle */
    bool settled;                      /* settle ran on a 2xx */
    bool checkout_max;                 /* settle at max(bound, answer) (checkout) */
};

/* The settle callbacks of every claimed, non-free Stripe request
 * (stripe_ledger.c); m->state is a struct stripe__state. */
extern const struct meter__ops stripe__ops;
void stripe__state_free(void *state);

/* The reservation for a request whose ledger object holds `charged`
 * (-1: no entry). */
int64_t stripe__reserve_for(const struct stripe__state *st, int64_t charged);

/* ---- stripe_read.c ---- */

/* An integer amount in minor units ("-?[0-9]+") as micro-minor units
 * (minor x 10^6); negative amounts are credits and count as zero. False
 * for anything else ("1e3", "+5", " 5"). */
bool stripe__parse_int_minor(const struct meter__form_pair *v, int64_t *mm);
/* A decimal amount in minor units ("1250.5") as micro-minor units, rounded
 * up past the sixth decimal. */
bool stripe__parse_dec_minor(const struct meter__form_pair *v, int64_t *mm);
/* A quantity: absent is dflt; false unless a small non-negative integer. */
bool stripe__parse_qty(const struct meter__form_pair *v, int64_t dflt, int64_t *q);
/* mm micro-minor units of a currency the request does not name: the most
 * they are worth in any currency with a rate (USD included). */
int64_t stripe__convert_any(const struct meter__stripe_cfg *cfg, int64_t mm);
/* The value of form key `key` (*val NULL when absent); refuses with
 * KB_E_AMBIGUOUS_REQUEST a key given twice with different values, in
 * another letter case, or also as a hash/array (`amount[]`). */
KB_MUSTCHECK enum kb_err stripe__sget(const struct meter__form *f, const char *key,
                                      const struct meter__form_pair **val, char **errmsg);
/* v is present and equals s. */
bool stripe__val_is(const struct meter__form_pair *v, const char *s);
/* Adds to *sum the unit amount x quantity of prefix[i] items (price_data;
 * the customer's maximum for adjustable quantities); *unknown when one is
 * a price id. With `update`, deleted items and items changing neither
 * price nor quantity are skipped. */
KB_MUSTCHECK enum kb_err stripe__sum_items(const struct meter__stripe_cfg *cfg,
                                           const struct meter__form *f, const char *prefix,
                                           const struct meter__form_pair *top_currency, bool update,
                                           int64_t *sum, bool *unknown, char **errmsg);
/* Adds to *sum the dearest checkout shipping option; *unknown when one is
 * given by shipping rate id. */
KB_MUSTCHECK enum kb_err stripe__max_shipping(const struct meter__stripe_cfg *cfg,
                                              const struct meter__form *f,
                                              const struct meter__form_pair *top_currency,
                                              int64_t *sum, bool *unknown, char **errmsg);

/* Micro-dollars of mm micro-minor units of `currency`. */
KB_MUSTCHECK enum kb_err stripe__convert(const struct meter__stripe_cfg *cfg, const char *currency,
                                         size_t currency_len, int64_t mm, int64_t *out,
                                         char **errmsg);

/* The idempotency ledger id for a request: "idem:" + hex of a MAC over the
 * Stripe-Account header, method, path, body and the Idempotency-Key. Caller
 * frees. */
char *stripe__idem_id(const struct kb_meter_req *req, const char *idem_key, const char *account);

#endif
