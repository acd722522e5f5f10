/*
 * test_meter_stripe_ledger.c - the Stripe meter with the per-key object
 * ledger (meter.h, meter_ledger_*), a fake ledger standing in for the
 * store the way the proxy's writer will use it: a PaymentIntent created
 * then confirmed and (over)captured through one key, intents this key
 * never paid for, updates and increments, invoices and quotes collecting
 * what their items and steps charged, Idempotency-Key replays, and what a
 * proxy without the ledger calls gets (over-counting, never under).
 * Amounts in comments: cents of USD; 1 cent = 10 000 micro-dollars.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "meter_test.h"

#include "core/alloc.h"
#include "meter/meter.h"

/* ---- helpers (each test file carries its own) ---- */

static struct kb_pricing *load(const char *override)
{
    return load_pricing(override);
}

static enum kb_err begin(struct kb_pricing *p, const char *method, const char *path,
                         const char *body, struct kb_meter **m, int64_t *reserve)
{
    struct kb_meter_req req = {
        "stripe", method,      path, strlen(path), "application/x-www-form-urlencoded",
        body,     strlen(body)};
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &req, m, reserve, &nb, &nbl, &em);
    assert_null(nb);
    if (err != KB_OK)
        assert_non_null(em);
    free(em);
    return err;
}

static int64_t finish(struct kb_meter *m, int status, const char *resp, bool complete)
{
    meter_response_status(m, status, "application/json");
    if (resp)
        meter_response_data(m, resp, strlen(resp));
    int64_t cost = meter_settle(m, complete);
    meter_free(m);
    return cost;
}

/* ---- the object ledger, with a fake ledger standing in for the store ---- */

struct fake_entry {
    char id[128];
    int64_t micros;
};

/* One vault key's ledger, as the proxy's writer keeps it in the store. */
struct fake_ledger {
    struct fake_entry v[16];
    size_t n;
};

static int64_t fake_get(const struct fake_ledger *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].id, id) == 0)
            return l->v[i].micros;
    return -1;
}

static void fake_set(struct fake_ledger *l, const char *id, int64_t micros)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].id, id) == 0) {
            if (micros > l->v[i].micros) /* store_object_charge_set never lowers */
                l->v[i].micros = micros;
            return;
        }
    assert_true(l->n < 16);
    snprintf(l->v[l->n].id, sizeof l->v[l->n].id, "%s", id);
    l->v[l->n++].micros = micros;
}

struct exchange {
    const char *path, *body;    /* POST */
    const char *idem, *account; /* headers, may be NULL */
    int status;                 /* the answer */
    const char *answer;         /* its JSON */
    int64_t reserve;            /* expected reservation after the ledger */
    int64_t cost;               /* expected incremental cost */
};

/* Runs one exchange the way the proxy will: begin, ledger lookup inside
 * admission, answer, settle, ledger update. */
static void run(struct kb_pricing *p, struct fake_ledger *l, const struct exchange *x)
{
    struct kb_hdr h[2];
    size_t nh = 0;
    if (x->idem)
        h[nh++] = (struct kb_hdr){"Idempotency-Key", x->idem};
    if (x->account)
        h[nh++] = (struct kb_hdr){"Stripe-Account", x->account};
    struct kb_meter_req req = {.vendor = "stripe",
                               .method = "POST",
                               .path = x->path,
                               .path_len = strlen(x->path),
                               .content_type = "application/x-www-form-urlencoded",
                               .body = x->body,
                               .body_len = strlen(x->body),
                               .headers = h,
                               .nheaders = nh};
    struct kb_meter *m = NULL;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    int64_t reserve = -1, max_age = -1, total = -1;

    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_OK);
    const char *obj = meter_ledger_object(m, &max_age);
    if (obj)
        reserve = meter_ledger_reserve(m, fake_get(l, obj));
    if (reserve != x->reserve)
        print_message("%s: reserve %lld\n", x->path, (long long)reserve);
    assert_int_equal(reserve, x->reserve);
    meter_response_status(m, x->status, "application/json");
    meter_response_data(m, x->answer, strlen(x->answer));
    int64_t cost = meter_settle(m, true);
    if (cost != x->cost)
        print_message("%s: cost %lld\n", x->path, (long long)cost);
    assert_int_equal(cost, x->cost);
    const char *id;
    for (size_t i = 0; (id = meter_ledger_entry(m, i, &total)) != NULL; i++)
        fake_set(l, id, total);
    meter_free(m);
}

static void test_ledger_create_confirm_capture(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL); /* unknown_amount_reserve $100 */
    struct fake_ledger l = {0};
    const struct exchange xs[] = {
        /* create $20.00: charged at once, the answer's id joins the ledger */
        {"/v1/payment_intents", "amount=2000&currency=usd&capture_method=manual", NULL, NULL, 200,
         "{\"id\":\"pi_A\",\"object\":\"payment_intent\",\"amount\":2000,\"currency\":\"usd\","
         "\"status\":\"requires_payment_method\"}",
         20000000, 20000000},
        /* confirm it: the ledger holds $20, the answer's amount is $20: 0 */
        {"/v1/payment_intents/pi_A/confirm", "payment_method=pm_card_visa", NULL, NULL, 200,
         "{\"id\":\"pi_A\",\"amount\":2000,\"amount_capturable\":2000,\"amount_received\":0,"
         "\"currency\":\"usd\",\"status\":\"requires_capture\"}",
         0, 0},
        /* overcapture $25.00 of the $20.00: the $5.00 difference */
        {"/v1/payment_intents/pi_A/capture", "amount_to_capture=2500", NULL, NULL, 200,
         "{\"id\":\"pi_A\",\"amount\":2000,\"amount_received\":2500,\"currency\":\"usd\","
         "\"status\":\"succeeded\"}",
         5000000, 5000000},
        /* capturing again cannot move more: 0 */
        {"/v1/payment_intents/pi_A/capture", "", NULL, NULL, 200,
         "{\"id\":\"pi_A\",\"amount_received\":2500,\"currency\":\"usd\"}", 0, 0},
    };
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++)
        run(p, &l, &xs[i]);
    assert_int_equal(fake_get(&l, "pi_A"), 25000000);
    meter_pricing_free(p);
}

static void test_ledger_foreign_objects(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct fake_ledger l = {0};
    const struct exchange xs[] = {
        /* confirming an intent made on the dashboard: the unknown-amount
         * reserve, settled at the answer's amount (3000 cents = $30) */
        {"/v1/payment_intents/pi_B/confirm", "payment_method=pm_card_visa", NULL, NULL, 200,
         "{\"id\":\"pi_B\",\"amount\":3000,\"amount_received\":3000,\"currency\":\"usd\"}",
         100000000, 30000000},
        /* its capture now costs nothing more */
        {"/v1/payment_intents/pi_B/capture", "", NULL, NULL, 200,
         "{\"id\":\"pi_B\",\"amount_received\":3000,\"currency\":\"usd\"}", 0, 0},
        /* a capture stating its amount: $15.00 reserved (USD is the only
         * currency with a rate), the answer's amount_received settles */
        {"/v1/payment_intents/pi_C/capture", "amount_to_capture=1500", NULL, NULL, 200,
         "{\"id\":\"pi_C\",\"amount_received\":1500,\"currency\":\"usd\"}", 15000000, 15000000},
        /* an answer that cannot be read settles at the reservation */
        {"/v1/payment_intents/pi_D/capture", "amount_to_capture=1500", NULL, NULL, 200, "<html>",
         15000000, 15000000},
        /* a declined confirm moves nothing */
        {"/v1/payment_intents/pi_E/confirm", "payment_method=pm_card_chargeDeclined", NULL, NULL,
         402, "{\"error\":{\"code\":\"card_declined\"}}", 100000000, 0},
        /* a legacy charge captured: amount_captured */
        {"/v1/charges/ch_F/capture", "amount=700", NULL, NULL, 200,
         "{\"id\":\"ch_F\",\"amount\":1000,\"amount_captured\":700,\"currency\":\"usd\"}", 7000000,
         7000000},
    };
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++)
        run(p, &l, &xs[i]);
    assert_int_equal(fake_get(&l, "pi_B"), 30000000);
    assert_int_equal(fake_get(&l, "pi_E"), -1); /* nothing recorded for a 402 */
    meter_pricing_free(p);
}

static void test_ledger_update_and_increment(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct fake_ledger l = {0};
    const struct exchange xs[] = {
        {"/v1/payment_intents", "amount=2000&currency=usd", NULL, NULL, 200,
         "{\"id\":\"pi_G\",\"amount\":2000,\"currency\":\"usd\"}", 20000000, 20000000},
        /* raised to $30.00: the $10.00 raise */
        {"/v1/payment_intents/pi_G", "amount=3000&currency=usd", NULL, NULL, 200,
         "{\"id\":\"pi_G\",\"amount\":3000,\"currency\":\"usd\"}", 10000000, 10000000},
        /* lowered to $10.00: nothing (and the ledger keeps $30) */
        {"/v1/payment_intents/pi_G", "amount=1000", NULL, NULL, 200,
         "{\"id\":\"pi_G\",\"amount\":1000,\"currency\":\"usd\"}", 0, 0},
        /* authorisation incremented to $45.00: $15.00 */
        {"/v1/payment_intents/pi_G/increment_authorization", "amount=4500", NULL, NULL, 200,
         "{\"id\":\"pi_G\",\"amount\":4500,\"currency\":\"usd\"}", 15000000, 15000000},
    };
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++)
        run(p, &l, &xs[i]);
    assert_int_equal(fake_get(&l, "pi_G"), 45000000);
    meter_pricing_free(p);
}

static void test_ledger_invoices(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct fake_ledger l = {0};
    const struct exchange xs[] = {
        /* an empty draft: 0, its id recorded */
        {"/v1/invoices", "customer=cus_1&auto_advance=false", NULL, NULL, 200,
         "{\"id\":\"in_H\",\"object\":\"invoice\",\"amount_due\":0,\"currency\":\"usd\"}", 0, 0},
        /* an item on it: $12.50, counted for the invoice */
        {"/v1/invoiceitems", "customer=cus_1&invoice=in_H&amount=1250&currency=usd", NULL, NULL,
         200, "{\"id\":\"ii_1\",\"amount\":1250,\"currency\":\"usd\"}", 12500000, 12500000},
        /* finalised with $15.00 due (a line added elsewhere): the $2.50 over
         * the ledger; the reservation is the unknown reserve less $12.50 */
        {"/v1/invoices/in_H/finalize", "", NULL, NULL, 200,
         "{\"id\":\"in_H\",\"amount_due\":1500,\"currency\":\"usd\",\"status\":\"open\"}", 87500000,
         2500000},
        /* paying it moves what finalising already charged */
        {"/v1/invoices/in_H/pay", "", NULL, NULL, 200,
         "{\"id\":\"in_H\",\"amount_paid\":1500,\"currency\":\"usd\",\"status\":\"paid\"}",
         85000000, 0},
        /* a quote finalised: its amount_total ($99.00) */
        {"/v1/quotes/qt_1/finalize", "", NULL, NULL, 200,
         "{\"id\":\"qt_1\",\"amount_total\":9900,\"currency\":\"usd\"}", 100000000, 99000000},
        {"/v1/quotes/qt_1/accept", "", NULL, NULL, 200,
         "{\"id\":\"qt_1\",\"amount_total\":9900,\"currency\":\"usd\"}", 1000000, 0},
    };
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++)
        run(p, &l, &xs[i]);
    assert_int_equal(fake_get(&l, "in_H"), 15000000);
    meter_pricing_free(p);
}

static void test_idempotency_key(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct fake_ledger l = {0};
    const char *body = "amount=5000&currency=usd&destination=acct_1";
    const char *ans =
        "{\"id\":\"tr_1\",\"object\":\"transfer\",\"amount\":5000,\"currency\":\"usd\"}";
    const struct exchange first = {"/v1/transfers", body,    "k-123", NULL, 200, ans,
                                   50000000,        50000000};
    /* the replay: Stripe answers the saved result and moves nothing */
    const struct exchange replay = {"/v1/transfers", body, "k-123", NULL, 200, ans, 0, 0};
    /* the same key on another connected account is another request */
    const struct exchange other_account = {"/v1/transfers", body,    "k-123", "acct_9", 200, ans,
                                           50000000,        50000000};
    /* the same key with another body: Stripe refuses it (400), we charge
     * it normally until then */
    const struct exchange other_body = {"/v1/transfers",
                                        "amount=9000&currency=usd&destination=acct_1",
                                        "k-123",
                                        NULL,
                                        400,
                                        "{\"error\":{\"type\":\"idempotency_error\"}}",
                                        90000000,
                                        0};
    run(p, &l, &first);
    run(p, &l, &replay);
    run(p, &l, &other_account);
    run(p, &l, &other_body);

    /* the entry expires with Stripe's 24 h */
    struct kb_meter_req req = {.vendor = "stripe",
                               .method = "POST",
                               .path = "/v1/transfers",
                               .path_len = 13,
                               .body = body,
                               .body_len = strlen(body),
                               .headers = (struct kb_hdr[]){{"idempotency-key", "k-123"}},
                               .nheaders = 1};
    struct kb_meter *m = NULL;
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    int64_t reserve, age = 0;
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_OK);
    const char *obj = meter_ledger_object(m, &age);
    assert_non_null(obj);
    assert_int_equal(strncmp(obj, "idem:", 5), 0);
    assert_int_equal(age, 23 * 3600);
    meter_free(m);

    /* the header twice: which one Stripe reads is unknown */
    req.headers = (struct kb_hdr[]){{"Idempotency-Key", "a"}, {"idempotency-key", "b"}};
    req.nheaders = 2;
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_E_AMBIGUOUS_REQUEST);
    free(em);
    meter_pricing_free(p);
}

/* A request that never goes through the ledger calls is charged as if the
 * key had never seen the object (the proxy without the wiring). */
static void test_ledger_unwired_overcounts(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    assert_int_equal(begin(p, "POST", "/v1/payment_intents/pi_A/confirm", "", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 100000000);
    assert_int_equal(finish(m, 200, "{\"id\":\"pi_A\",\"amount\":2000,\"currency\":\"usd\"}", true),
                     20000000);
    /* other meters answer NULL */
    struct kb_meter_req req = {.vendor = "generic", .method = "POST", .path = "/x", .path_len = 2};
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    int64_t age = 5;
    assert_int_equal(meter_begin(p, &req, &m, &reserve, &nb, &nbl, &em), KB_OK);
    assert_null(meter_ledger_object(m, &age));
    assert_int_equal(age, 0);
    assert_int_equal(meter_ledger_reserve(m, 5), 0);
    meter_response_status(m, 200, NULL);
    assert_int_equal(meter_settle(m, true), 0);
    int64_t total;
    assert_null(meter_ledger_entry(m, 0, &total));
    meter_free(m);
    meter_pricing_free(p);
}

/* An object id that is not printable ASCII names no Stripe object: the
 * request is priced on its own, and the bytes never reach the store (a
 * regression: invoice=%FF failed whole PostgreSQL batches). */
static void test_ledger_object_ascii_only(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    static const char *const bodies[] = {
        "customer=cus_1&invoice=%FF&amount=1250&currency=usd",
        "customer=cus_1&invoice=in_%C3%A9&amount=1250&currency=usd",
        "customer=cus_1&invoice=in_%7F&amount=1250&currency=usd",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        struct kb_meter *m = NULL;
        int64_t reserve = -1, age = 0;
        assert_int_equal(begin(p, "POST", "/v1/invoiceitems", bodies[i], &m, &reserve), KB_OK);
        assert_null(meter_ledger_object(m, &age));
        assert_int_equal(reserve, 12500000);
        meter_free(m);
    }
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ledger_object_ascii_only),
        cmocka_unit_test(test_ledger_create_confirm_capture),
        cmocka_unit_test(test_ledger_foreign_objects),
        cmocka_unit_test(test_ledger_update_and_increment),
        cmocka_unit_test(test_ledger_invoices),
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_ledger_unwired_overcounts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
