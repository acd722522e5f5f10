/*
 * test_meter_stripe.c - the Stripe meter on form bodies as the proxy
 * forwards them (JSON already transcoded, brackets percent-encoded as the
 * Stripe SDKs send them): USD and converted amounts with zero- and
 * three-decimal currencies, refused currencies, checkout line items,
 * unknown amounts settled from the response, the zero-cost routes.
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

/* Rates as an operator would configure them (USD per unit). */
static const char rates[] = "{\"stripe\": {"
                            "\"currency_rates\": {\"eur\": \"1.10\", \"jpy\": \"0.0067\","
                            " \"kwd\": \"3.25\", \"gbp\": \"1.083333\"},"
                            "\"unknown_amount_reserve\": \"50.00\"}}";

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

/* ---- USD ---- */

static void test_payment_intent_usd(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* amount=2000 cents = $20.00 = 20000000 µ$ */
    assert_int_equal(begin(p, "POST", "/v1/payment_intents",
                           "amount=2000&currency=usd&payment_method_types%5B0%5D=card"
                           "&metadata%5Border_id%5D=6735",
                           &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 20000000);
    assert_int_equal(finish(m, 200,
                            "{\"id\":\"pi_3MtwBwLkdIwHu7ix28a3tqPa\",\"object\":\"payment_intent\","
                            "\"amount\":2000,\"currency\":\"usd\",\"status\":"
                            "\"requires_payment_method\"}",
                            true),
                     20000000);
    meter_pricing_free(p);
}

static void test_declined_costs_zero(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* $1000.00 reserved, 402 card_declined: nothing moved, 0. */
    assert_int_equal(
        begin(p, "POST", "/v1/charges", "amount=100000&currency=usd&source=tok_x", &m, &reserve),
        KB_OK);
    assert_int_equal(reserve, 1000000000);
    assert_int_equal(finish(m, 402, "{\"error\":{\"code\":\"card_declined\"}}", true), 0);

    /* No status (Stripe unreachable): 0. */
    assert_int_equal(begin(p, "POST", "/v1/transfers", "amount=5&currency=usd", &m, &reserve),
                     KB_OK);
    assert_int_equal(meter_settle(m, true), 0);
    meter_free(m);
    meter_pricing_free(p);
}

static void test_money_moving_creates(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    static const struct {
        const char *path;
        const char *body;
        int64_t micros;
    } cases[] = {
        /* 12345 cents = $123.45 */
        {"/v1/transfers", "amount=12345&currency=usd&destination=acct_1", 123450000},
        /* 1 cent = 10000 µ$ */
        {"/v1/payouts", "amount=1&currency=usd", 10000},
        {"/v1/topups", "amount=50000&currency=usd", 500000000},
        {"/v1/treasury/outbound_payments", "amount=700&currency=usd", 7000000},
        {"/v1/payment_intents/pi_1/increment_authorization", "amount=3000&currency=usd", 30000000},
        /* upper-case currency is read as usd too */
        {"/v1/charges", "currency=USD&amount=99", 990000},
        /* a negative invoice item is a credit: 0 */
        {"/v1/invoiceitems", "customer=cus_1&amount=-500&currency=usd", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(begin(p, "POST", cases[i].path, cases[i].body, &m, &reserve), KB_OK);
        assert_int_equal(reserve, cases[i].micros);
        /* A 2xx whose reply was cut still moved the money. */
        assert_int_equal(finish(m, 200, "{\"id\":", false), cases[i].micros);
    }
    meter_pricing_free(p);
}

/* ---- other currencies ---- */

static void test_non_usd_refused_without_rate(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL); /* embedded: no rates */
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    assert_int_equal(
        begin(p, "POST", "/v1/payment_intents", "amount=1000&currency=eur", &m, &reserve),
        KB_E_CURRENCY_NOT_SUPPORTED);
    assert_int_equal(reserve, -1); /* untouched on failure */
    assert_int_equal(begin(p, "POST", "/v1/charges", "amount=1000&currency=jpy", &m, &reserve),
                     KB_E_CURRENCY_NOT_SUPPORTED);
    assert_int_equal(begin(p, "POST", "/v1/charges", "amount=1000&currency=12", &m, &reserve),
                     KB_E_CURRENCY_NOT_SUPPORTED);
    meter_pricing_free(p);
}

static void test_converted_currencies(void **state)
{
    (void)state;
    struct kb_pricing *p = load(rates);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    static const struct {
        const char *body;
        int64_t micros;
    } cases[] = {
        /* 1000 eur cents = EUR 10.00 x $1.10 = $11.00 = 11000000 µ$ */
        {"amount=1000&currency=eur", 11000000},
        /* jpy is zero-decimal: 500 = JPY 500 x $0.0067 = $3.35 = 3350000 µ$ */
        {"amount=500&currency=jpy", 3350000},
        /* kwd has 3 decimals: 1230 = KWD 1.230 x $3.25 = $3.9975 = 3997500 µ$ */
        {"amount=1230&currency=kwd", 3997500},
        /* gbp 1 penny = GBP 0.01 x $1.083333 = $0.01083333 = 10833.33 µ$,
         * rounded up to 10834 µ$ */
        {"amount=1&currency=gbp", 10834},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(begin(p, "POST", "/v1/payment_intents", cases[i].body, &m, &reserve),
                         KB_OK);
        assert_int_equal(reserve, cases[i].micros);
        assert_int_equal(finish(m, 200, NULL, true), cases[i].micros);
    }
    /* Still no rate for chf. */
    assert_int_equal(
        begin(p, "POST", "/v1/payment_intents", "amount=1000&currency=chf", &m, &reserve),
        KB_E_CURRENCY_NOT_SUPPORTED);
    meter_pricing_free(p);
}

/* ---- checkout ---- */

static void test_checkout_line_items(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    /* Two items with price_data, as the proxy's transcoder writes them:
     *   1500 cents x 2 = 3000 cents
     *    250 cents x 3 =  750 cents
     * total 3750 cents = $37.50 = 37500000 µ$ */
    const char *body = "mode=payment&success_url=https%3A%2F%2Fexample.com%2Fok"
                       "&line_items%5B0%5D%5Bprice_data%5D%5Bcurrency%5D=usd"
                       "&line_items%5B0%5D%5Bprice_data%5D%5Bproduct_data%5D%5Bname%5D=T-shirt"
                       "&line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=1500"
                       "&line_items%5B0%5D%5Bquantity%5D=2"
                       "&line_items%5B1%5D%5Bprice_data%5D%5Bcurrency%5D=usd"
                       "&line_items%5B1%5D%5Bprice_data%5D%5Bproduct_data%5D%5Bname%5D=Sticker"
                       "&line_items%5B1%5D%5Bprice_data%5D%5Bunit_amount%5D=250"
                       "&line_items%5B1%5D%5Bquantity%5D=3";

    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", body, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 37500000);
    assert_int_equal(finish(m, 200, "{\"id\":\"cs_test_a1\",\"amount_total\":3750}", true),
                     37500000);

    /* Adjustable quantity: 1000 cents x max 5 the customer may pick =
     * 5000 cents = $50.00 */
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions",
                           "line_items[0][price_data][currency]=usd"
                           "&line_items[0][price_data][unit_amount]=1000"
                           "&line_items[0][quantity]=1"
                           "&line_items[0][adjustable_quantity][enabled]=true"
                           "&line_items[0][adjustable_quantity][maximum]=5",
                           &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 50000000);
    meter_free(m);

    /* Setup mode moves no money. */
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions",
                           "mode=setup&currency=usd&customer=cus_1", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 0);
    assert_int_equal(finish(m, 200, "{}", true), 0);
    meter_pricing_free(p);
}

static void test_checkout_price_ids_unknown_amount(void **state)
{
    (void)state;
    struct kb_pricing *p = load(rates); /* unknown_amount_reserve $50 */
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    const char *body = "mode=payment&line_items%5B0%5D%5Bprice%5D=price_1MotwRLkdIwHu7ixYcPLm5uZ"
                       "&line_items%5B0%5D%5Bquantity%5D=2";

    /* The amount lives in Stripe: reserve $50.00 = 50000000 µ$, settle
     * from the session's amount_total 4200 usd = $42.00 = 42000000 µ$. */
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", body, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 50000000);
    assert_int_equal(finish(m, 200,
                            "{\"id\":\"cs_test_b2\",\"object\":\"checkout.session\","
                            "\"amount_subtotal\":4200,\"amount_total\":4200,\"currency\":\"usd\"}",
                            true),
                     42000000);

    /* Reply in eur: 4200 eur cents x $1.10 = $46.20 */
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", body, &m, &reserve), KB_OK);
    assert_int_equal(finish(m, 200, "{\"amount_total\":4200,\"currency\":\"eur\"}", true),
                     46200000);

    /* Reply cut before the amount: the reservation is charged. */
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", body, &m, &reserve), KB_OK);
    assert_int_equal(finish(m, 200, "{\"id\":\"cs_test_b2\",\"amou", false), 50000000);

    /* Paying an invoice: amount_paid of the reply (1999 cents). */
    assert_int_equal(begin(p, "POST", "/v1/invoices/in_1/pay", "", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 50000000);
    assert_int_equal(finish(m, 200, "{\"amount_paid\":1999,\"currency\":\"usd\"}", true), 19990000);
    meter_pricing_free(p);

    /* Without a configured reserve such requests are refused. */
    p = load("{\"stripe\": {\"unknown_amount_reserve\": null}}");
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", body, &m, &reserve), KB_E_INVALID);
    meter_pricing_free(p);
}

static void test_invoiceitems_and_subscriptions(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* unit_amount_decimal 1250.5 cents x 3 = 3751.5 cents = $37.515 =
     * 37515000 µ$ */
    assert_int_equal(begin(p, "POST", "/v1/invoiceitems",
                           "customer=cus_1&currency=usd&unit_amount_decimal=1250.5&quantity=3", &m,
                           &reserve),
                     KB_OK);
    assert_int_equal(reserve, 37515000);
    meter_free(m);
    /* An update touching only the description costs nothing. */
    assert_int_equal(begin(p, "POST", "/v1/invoiceitems/ii_1", "description=Fix", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 0);
    meter_free(m);
    /* Subscription with price_data: 999 cents x 2 = $19.98 */
    assert_int_equal(begin(p, "POST", "/v1/subscriptions",
                           "customer=cus_1&items[0][price_data][currency]=usd"
                           "&items[0][price_data][product]=prod_1"
                           "&items[0][price_data][unit_amount]=999"
                           "&items[0][price_data][recurring][interval]=month"
                           "&items[0][quantity]=2",
                           &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 19980000);
    assert_int_equal(finish(m, 200, "{\"id\":\"sub_1\"}", true), 19980000);
    meter_pricing_free(p);
}

/* ---- zero-cost routes and refusals ---- */

static void test_zero_cost_routes(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    static const struct {
        const char *method, *path, *body;
    } cases[] = {
        {"GET", "/v1/charges", ""},
        {"GET", "/v1/payment_intents/pi_1", ""},
        {"POST", "/v1/refunds", "charge=ch_1&amount=1000"},
        /* the create reserved it; confirming does not move more money */
        {"POST", "/v1/payment_intents/pi_1/confirm", "payment_method=pm_card_visa"},
        {"POST", "/v1/payment_intents/pi_1/capture", "amount_to_capture=500"},
        /* an update without amount */
        {"POST", "/v1/payment_intents/pi_1", "metadata%5Bk%5D=v"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(begin(p, cases[i].method, cases[i].path, cases[i].body, &m, &reserve),
                         KB_OK);
        assert_int_equal(reserve, 0);
        assert_int_equal(finish(m, 200, "{\"amount\":1000,\"currency\":\"usd\"}", true), 0);
    }
    meter_pricing_free(p);
}

static void test_update_with_amount_but_no_currency(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL); /* embedded reserve $100 */
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* The PaymentIntent's currency is not in the update: reserve the
     * unknown-amount $100.00, settle from the reply: 7500 cents = $75. */
    assert_int_equal(begin(p, "POST", "/v1/payment_intents/pi_1", "amount=7500", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 100000000);
    assert_int_equal(finish(m, 200, "{\"id\":\"pi_1\",\"amount\":7500,\"currency\":\"usd\"}", true),
                     75000000);
    meter_pricing_free(p);
}

static void test_malformed_bodies(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* Two different amounts: which one Stripe reads is not ours to guess. */
    assert_int_equal(
        begin(p, "POST", "/v1/payment_intents", "amount=1&currency=usd&amount=9999", &m, &reserve),
        KB_E_INVALID);
    assert_int_equal(
        begin(p, "POST", "/v1/payment_intents", "amount=1e3&currency=usd", &m, &reserve),
        KB_E_INVALID);
    assert_int_equal(
        begin(p, "POST", "/v1/payment_intents", "amount=10%2&currency=usd", &m, &reserve),
        KB_E_INVALID);
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions",
                           "line_items[0][price_data][currency]=usd"
                           "&line_items[0][price_data][unit_amount]=100&line_items[0][quantity]=x",
                           &m, &reserve),
                     KB_E_INVALID);
    /* The same key twice with the same value is harmless. */
    assert_int_equal(
        begin(p, "POST", "/v1/payment_intents", "amount=5&currency=usd&amount=5", &m, &reserve),
        KB_OK);
    assert_int_equal(reserve, 50000);
    meter_free(m);
    meter_pricing_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payment_intent_usd),
        cmocka_unit_test(test_declined_costs_zero),
        cmocka_unit_test(test_money_moving_creates),
        cmocka_unit_test(test_non_usd_refused_without_rate),
        cmocka_unit_test(test_converted_currencies),
        cmocka_unit_test(test_checkout_line_items),
        cmocka_unit_test(test_checkout_price_ids_unknown_amount),
        cmocka_unit_test(test_invoiceitems_and_subscriptions),
        cmocka_unit_test(test_zero_cost_routes),
        cmocka_unit_test(test_update_with_amount_but_no_currency),
        cmocka_unit_test(test_malformed_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
