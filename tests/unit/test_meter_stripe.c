/*
 * test_meter_stripe.c - the Stripe meter on form bodies as the proxy
 * forwards them (JSON already transcoded, brackets percent-encoded as the
 * Stripe SDKs send them): USD and converted amounts with zero- and
 * three-decimal currencies, refused currencies, checkout line items,
 * unknown amounts settled from the response, the zero-cost routes; the cost
 * class of every write endpoint, ambiguous forms, checkout shipping,
 * subscription updates, many items with every field read as a whole-form
 * scan read them, API v2 money movement and the 5xx flag. The object
 * ledger and Idempotency-Key are test_meter_stripe_ledger.c.
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
#include "core/buf.h"
#include "meter/meter.h"
#include "meter/meter_int.h"

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

/* ---- many items, every field ---- */

/* begin() that hands back the error message (caller frees). */
static enum kb_err begin_msg(struct kb_pricing *p, const char *path, const char *body,
                             int64_t *reserve, char **msg)
{
    struct kb_meter_req req = {
        "stripe", "POST",      path, strlen(path), "application/x-www-form-urlencoded",
        body,     strlen(body)};
    struct kb_meter *m = NULL;
    char *nb = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &req, &m, reserve, &nb, &nbl, msg);
    assert_null(nb);
    meter_free(m);
    return err;
}

/*
 * Items are read from an index of the form built once per prefix (issue:
 * items x fields). The index must read what a scan of the whole form read:
 * fields of several items interleaved in any order, every field an item
 * can have, the same refusals with the same messages, the first item the
 * body names deciding which error is reported, and the 250-item cap.
 */
static void test_items_every_field(void **state)
{
    (void)state;
    struct kb_pricing *p = load(rates); /* eur at $1.10, unknown amounts $50 */
    static const struct {
        const char *path, *body;
        enum kb_err err;
        int64_t reserve; /* when KB_OK */
        const char *msg; /* when not */
    } cases[] = {
        /* item 0: 1000 cents x 2 (adjustable off)                 $20.00
         * item 1: 250.5 eur cents x 4 = EUR 10.02 x $1.10         $11.022
         * item 2: 300 cents x the customer's maximum 10           $30.00
         * the dearest shipping option, 700 cents                   $7.00
         *                                                         $68.022 */
        {"/v1/checkout/sessions",
         "line_items[2][price_data][currency]=usd"
         "&line_items[0][price_data][unit_amount]=1000"
         "&shipping_options[0][shipping_rate_data][fixed_amount][amount]=500"
         "&line_items[1][price_data][unit_amount_decimal]=250.5"
         "&line_items[0][quantity]=2&line_items[2][price_data][unit_amount]=300"
         "&line_items[1][price_data][currency]=eur&line_items[0][price_data][currency]=usd"
         "&shipping_options[1][shipping_rate_data][fixed_amount][currency]=usd"
         "&line_items[1][quantity]=4&line_items[2][quantity]=1"
         "&line_items[2][adjustable_quantity][enabled]=true"
         "&line_items[2][adjustable_quantity][maximum]=10"
         "&line_items[0][adjustable_quantity][enabled]=false"
         "&line_items[0][adjustable_quantity][maximum]=50"
         "&shipping_options[0][shipping_rate_data][fixed_amount][currency]=usd"
         "&line_items[1][price_data][product_data][name]=Sticker"
         "&shipping_options[1][shipping_rate_data][fixed_amount][amount]=700"
         "&line_items[0][quantity]=2&mode=payment",
         KB_OK, 68022000, NULL},
        /* items[0] 999 x 2 = $19.98, items[1] 0.5 cents x 3 = $0.015,
         * add_invoice_items[0] $50.00: $69.995 */
        {"/v1/subscriptions",
         "customer=cus_1&items[0][price_data][unit_amount]=999&currency=usd"
         "&add_invoice_items[0][price_data][unit_amount]=5000&items[1][quantity]=3"
         "&items[0][quantity]=2&items[1][price_data][unit_amount_decimal]=0.5"
         "&items[0][price_data][recurring][interval]=month&add_invoice_items[0][quantity]=1"
         "&items[1][price_data][currency]=usd&items[1][price_data][recurring][interval]=month",
         KB_OK, 69995000, NULL},
        /* item 0 deleted (its amount does not count), item 1 metadata only,
         * item 2 800 cents x 3: $24.00 */
        {"/v1/subscriptions/sub_1",
         "items[0][id]=si_1&items[1][id]=si_2&items[0][deleted]=true"
         "&items[2][price_data][unit_amount]=800&items[1][metadata][k]=v&items[2][quantity]=3"
         "&items[2][price_data][currency]=usd&items[0][price_data][unit_amount]=99999"
         "&items[0][price_data][currency]=usd&proration_behavior=always_invoice",
         KB_OK, 24000000, NULL},
        /* an item Stripe numbers itself: unknown, the $50 reserve */
        {"/v1/checkout/sessions",
         "line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=100"
         "&line_items[][price]=price_1",
         KB_OK, 50000000, NULL},
        /* refusals, in a later item */
        {"/v1/checkout/sessions",
         "line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=100"
         "&line_items[1][price_data][currency]=usd&line_items[1][Quantity]=5"
         "&line_items[1][price_data][unit_amount]=100&line_items[1][quantity]=1",
         KB_E_AMBIGUOUS_REQUEST, 0,
         "form field \"line_items[1][quantity]\" is also given as \"line_items[1][Quantity]\""},
        {"/v1/checkout/sessions",
         "line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=100"
         "&line_items[1][price_data][currency]=usd&line_items[1][price_data][unit_amount]=100"
         "&line_items[1][quantity]=1&line_items[0][quantity]=1&line_items[1][quantity][x]=9",
         KB_E_AMBIGUOUS_REQUEST, 0,
         "form field \"line_items[1][quantity]\" is given both as a value and as "
         "\"line_items[1][quantity][x]\""},
        {"/v1/checkout/sessions",
         "line_items[3][quantity]=1&line_items[3][price_data][currency]=usd"
         "&line_items[3][price_data][unit_amount]=100&line_items[4][quantity]=1"
         "&line_items[3][quantity]=2",
         KB_E_AMBIGUOUS_REQUEST, 0,
         "form field \"line_items[3][quantity]\" is given twice with different values"},
        {"/v1/checkout/sessions",
         "line_items[0][price_data][currency]=usd&Line_items[0][price_data][unit_amount]=100",
         KB_E_AMBIGUOUS_REQUEST, 0,
         "line_items: index \"Line_items[0][price_data][unit_amount]\" is not a plain number"},
        {"/v1/subscriptions",
         "currency=usd&items[7][price_data][unit_amount]=1&items[07][quantity]=1",
         KB_E_AMBIGUOUS_REQUEST, 0, "items: index \"items[07][quantity]\" is not a plain number"},
        /* the item the body names first is read first: [5], not [2] */
        {"/v1/checkout/sessions",
         "currency=usd&line_items[5][quantity]=x&line_items[2][price_data][unit_amount]=1"
         "&line_items[2][quantity]=y&line_items[5][price_data][unit_amount]=1",
         KB_E_INVALID, 0, "line_items[5]: quantity must be a non-negative integer"},
        {"/v1/checkout/sessions",
         "currency=usd&line_items[0][price_data][unit_amount]=1"
         "&line_items[1][price_data][unit_amount]=1.5",
         KB_E_INVALID, 0, "line_items[1][price_data][unit_amount] must be an integer"},
        {"/v1/checkout/sessions",
         "currency=usd&line_items[0][price_data][unit_amount]=1"
         "&shipping_options[0][shipping_rate_data][fixed_amount][amount]=1"
         "&shipping_options[1][shipping_rate_data][fixed_amount][amount]=1.5",
         KB_E_INVALID, 0, "shipping_options[1]: the fixed amount must be an integer"},
    };
    int64_t reserve;
    char *msg;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reserve = -1;
        msg = NULL;
        enum kb_err err = begin_msg(p, cases[i].path, cases[i].body, &reserve, &msg);
        if (err != cases[i].err || (msg && (!cases[i].msg || strcmp(msg, cases[i].msg) != 0)))
            print_message("case %zu: %s\n", i, msg ? msg : "(no message)");
        assert_int_equal(err, cases[i].err);
        if (err == KB_OK)
            assert_int_equal(reserve, cases[i].reserve);
        else
            assert_string_equal(msg, cases[i].msg);
        free(msg);
    }

    /* 250 items is the cap (each a price id: unknown, $50); 251 is refused.
     * Numbered downwards and interleaved, each given twice. */
    for (size_t n = 250; n <= 251; n++) {
        struct kb_buf b = {0};
        buf_puts(&b, "mode=payment");
        for (size_t i = 0; i < n; i++)
            buf_printf(&b, "&line_items[%zu][price]=price_%zu", 1000 - i, i);
        for (size_t i = 0; i < n; i++)
            buf_printf(&b, "&line_items[%zu][quantity]=1", 1000 - i);
        reserve = -1;
        msg = NULL;
        enum kb_err err = begin_msg(p, "/v1/checkout/sessions", b.data, &reserve, &msg);
        if (n == 250) {
            assert_int_equal(err, KB_OK);
            assert_int_equal(reserve, 50000000);
        } else {
            assert_int_equal(err, KB_E_INVALID);
            assert_string_equal(msg, "too many line_items");
        }
        free(msg);
        buf_cleanup(&b);
    }

    /* 200 priced items, fields interleaved from both ends: item i costs
     * i + 1 cents x 2, so the sum is 2 x (1 + ... + 200) = 40200 cents. */
    struct kb_buf b = {0};
    buf_puts(&b, "mode=payment&currency=usd");
    for (size_t i = 0; i < 200; i++)
        buf_printf(&b, "&line_items[%zu][price_data][unit_amount]=%zu&line_items[%zu][quantity]=2",
                   i, i + 1, 199 - i);
    reserve = -1;
    msg = NULL;
    assert_int_equal(begin_msg(p, "/v1/checkout/sessions", b.data, &reserve, &msg), KB_OK);
    assert_null(msg);
    assert_int_equal(reserve, 402000000);
    buf_cleanup(&b);
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
        /* an update without amount or currency */
        {"POST", "/v1/payment_intents/pi_1", "metadata%5Bk%5D=v"},
        {"POST", "/v1/payment_intents/pi_1/cancel", "cancellation_reason=duplicate"},
        {"POST", "/v1/customers", "email=a%40example.com"},
        {"POST", "/v1/setup_intents/seti_1/confirm", "payment_method=pm_card_visa"},
        {"POST", "/v1/invoices/in_1/pay", "paid_out_of_band=true"},
        {"POST", "/v1/checkout/sessions/cs_1/expire", ""},
        {"POST", "/v1/subscriptions/sub_1", "metadata%5Bk%5D=v&cancel_at_period_end=true"},
        {"POST", "/v1/payment_links/plink_1", "active=false"},
        {"POST", "/v1/test_helpers/test_clocks/clock_1/advance", "frozen_time=1700000000"},
        {"POST", "/v2/money_management/outbound_payments/obp_1/cancel", ""},
        {"POST", "/v2/core/accounts/acct_1/persons/person_1", "{}"},
        {"POST", "/v1/accounts/acct_1/external_accounts/ba_1", "default_for_currency=true"},
        {"POST", "/v1/billing/meters/mtr_1/deactivate", ""},
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

    /* The PaymentIntent's currency is not in the update: 7500 minor units
     * of the dearest accepted currency (USD only: $75.00) are reserved, and
     * the reply's amount and currency settle it: 7500 cents = $75. */
    assert_int_equal(begin(p, "POST", "/v1/payment_intents/pi_1", "amount=7500", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 75000000);
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
        KB_E_AMBIGUOUS_REQUEST);
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

/* ---- cost classes ---- */

static enum kb_err begin_q(struct kb_pricing *p, const char *path, const char *ctype,
                           const char *body, const char *query, struct kb_meter **m,
                           int64_t *reserve)
{
    struct kb_meter_req req = {.vendor = "stripe",
                               .method = "POST",
                               .path = path,
                               .path_len = strlen(path),
                               .content_type = ctype,
                               .body = body,
                               .body_len = strlen(body),
                               .query = query,
                               .query_len = query ? strlen(query) : 0};
    char *nb = NULL, *em = NULL;
    size_t nbl = 0;
    enum kb_err err = meter_begin(p, &req, m, reserve, &nb, &nbl, &em);
    if (err != KB_OK)
        assert_non_null(em);
    free(em);
    return err;
}

static void test_unlisted_writes_refused(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    static const struct {
        const char *path, *body;
    } cases[] = {
        /* a URL anyone can pay through, any number of times */
        {"/v1/payment_links",
         "line_items%5B0%5D%5Bprice%5D=price_1&line_items%5B0%5D%5Bquantity%5D=1"},
        /* reactivating one */
        {"/v1/payment_links/plink_1", "active=true"},
        {"/v1/issuing/cards", "cardholder=ich_1&currency=usd&type=virtual"},
        {"/v1/subscription_schedules", "customer=cus_1&start_date=now"},
        {"/v1/invoices/in_1/add_lines", "lines%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=100"},
        {"/v1/climate/orders", "metric_tons=10&product=climsku_1"},
        {"/v1/billing/meter_events", "event_name=api&payload%5Bvalue%5D=1000"},
        {"/v1/no_such_thing", "amount=1"},
        {"/v1/test_helpers", ""}, /* '*' needs a segment */
        {"/v1/payment_intents/pi_1/capture/extra", ""},
        {"/v2/billing/meter_events", "{}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (begin(p, "POST", cases[i].path, cases[i].body, &m, &reserve) !=
            KB_E_ENDPOINT_NOT_METERED)
            print_message("%s\n", cases[i].path);
        assert_int_equal(begin(p, "POST", cases[i].path, cases[i].body, &m, &reserve),
                         KB_E_ENDPOINT_NOT_METERED);
    }
    meter_pricing_free(p);
}

static void test_case_insensitive_paths_and_5xx_flag(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    assert_int_equal(
        begin(p, "POST", "/v1/Payment_Intents", "amount=100&currency=usd", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 1000000);
    assert_true(m->charge_on_5xx); /* money-moving: a 5xx may have moved it */
    meter_free(m);
    assert_int_equal(begin(p, "POST", "/V1/CUSTOMERS", "email=x", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 0);
    assert_false(m->charge_on_5xx); /* a free endpoint: a 5xx moved nothing */
    meter_free(m);
    meter_pricing_free(p);
}

static void test_ambiguous_forms(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    static const char *const bodies[] = {
        "amount=1&currency=usd&amount%5B%5D=9999",
        "amount=100&currency=usd&Amount=100",
        "amount=100&currency=usd&currency=eur",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        assert_int_equal(begin(p, "POST", "/v1/payment_intents", bodies[i], &m, &reserve),
                         KB_E_AMBIGUOUS_REQUEST);
    /* one item's index written two ways */
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions",
                           "mode=payment&line_items[0][price_data][currency]=usd"
                           "&line_items[0][price_data][unit_amount]=100"
                           "&line_items[00][price_data][unit_amount]=90000",
                           &m, &reserve),
                     KB_E_AMBIGUOUS_REQUEST);
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions",
                           "line_items[0][price_data][currency]=usd"
                           "&line_items[0][price_data][unit_amount]=100"
                           "&line_items[0][quantity]=1&line_items[0][quantity]=50",
                           &m, &reserve),
                     KB_E_AMBIGUOUS_REQUEST);
    /* the query string counts with the body */
    assert_int_equal(begin_q(p, "/v1/payment_intents", NULL, "amount=100&currency=usd",
                             "amount=99999", &m, &reserve),
                     KB_E_AMBIGUOUS_REQUEST);
    assert_int_equal(
        begin_q(p, "/v1/payment_intents", NULL, "currency=usd", "amount=4200", &m, &reserve),
        KB_OK);
    assert_int_equal(reserve, 42000000);
    meter_free(m);
    /* a form too large to look money fields up in is refused */
    struct kb_buf big = {0};
    buf_puts(&big, "amount=100&currency=usd");
    for (int i = 0; i < 4100; i++)
        buf_printf(&big, "&metadata[k%d]=v", i);
    assert_int_equal(begin(p, "POST", "/v1/payment_intents", big.data, &m, &reserve), KB_E_INVALID);
    buf_cleanup(&big);
    /* a longer name sharing the prefix is another field */
    assert_int_equal(begin(p, "POST", "/v1/payment_intents",
                           "amount=100&currency=usd&amount_details%5Btip%5D%5Bamount%5D=5", &m,
                           &reserve),
                     KB_OK);
    assert_int_equal(reserve, 1000000);
    meter_free(m);
    meter_pricing_free(p);
}

static void test_checkout_shipping(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;
    const char *items = "mode=payment&currency=usd"
                        "&line_items[0][price_data][currency]=usd"
                        "&line_items[0][price_data][product_data][name]=Mug"
                        "&line_items[0][price_data][unit_amount]=1000&line_items[0][quantity]=2";
    char *body = kb_asprintf("%s&shipping_options[0][shipping_rate_data][type]=fixed_amount"
                             "&shipping_options[0][shipping_rate_data][fixed_amount][amount]=500"
                             "&shipping_options[0][shipping_rate_data][fixed_amount][currency]=usd"
                             "&shipping_options[1][shipping_rate_data][fixed_amount][amount]=1500"
                             "&shipping_options[1][shipping_rate_data][fixed_amount][currency]=usd",
                             items);
    /* 2 x $10.00 + the dearest option, $15.00 = $35.00 */
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", body, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 35000000);
    /* Stripe's total with the cheaper option chosen: the bound stands */
    assert_int_equal(
        finish(m, 200, "{\"id\":\"cs_1\",\"amount_total\":2500,\"currency\":\"usd\"}", true),
        35000000);
    /* with tax the answer's total is higher: it wins */
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", body, &m, &reserve), KB_OK);
    assert_int_equal(
        finish(m, 200, "{\"id\":\"cs_1\",\"amount_total\":3710,\"currency\":\"usd\"}", true),
        37100000);
    /* adjustable quantity spelled "True": counted as enabled (99 x $10.00
     * + the $15.00 option), never as off */
    char *adj = kb_asprintf("%s&line_items[0][adjustable_quantity][enabled]=True", body);
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", adj, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 1005000000);
    meter_free(m);
    free(adj);
    free(body);
    /* a shipping rate by id: unknown, settled from amount_total */
    body = kb_asprintf("%s&shipping_options[0][shipping_rate]=shr_1", items);
    assert_int_equal(begin(p, "POST", "/v1/checkout/sessions", body, &m, &reserve), KB_OK);
    assert_int_equal(reserve, 100000000);
    assert_int_equal(
        finish(m, 200, "{\"id\":\"cs_2\",\"amount_total\":2700,\"currency\":\"usd\"}", true),
        27000000);
    free(body);
    meter_pricing_free(p);
}

static void test_subscription_updates(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* a new item with price_data: 3 x $8.00; a deleted one costs nothing */
    assert_int_equal(
        begin(p, "POST", "/v1/subscriptions/sub_1",
              "items[0][id]=si_old&items[0][deleted]=true"
              "&items[1][price_data][currency]=usd&items[1][price_data][product]=prod_1"
              "&items[1][price_data][unit_amount]=800"
              "&items[1][price_data][recurring][interval]=month&items[1][quantity]=3"
              "&proration_behavior=always_invoice",
              &m, &reserve),
        KB_OK);
    assert_int_equal(reserve, 24000000);
    assert_int_equal(finish(m, 200, "{\"id\":\"sub_1\",\"object\":\"subscription\"}", true),
                     24000000);
    /* a quantity change of an existing price: unknown, settled at the
     * reservation (a subscription carries no amount) */
    assert_int_equal(begin(p, "POST", "/v1/subscriptions/sub_1",
                           "items[0][id]=si_1&items[0][quantity]=40", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 100000000);
    assert_int_equal(finish(m, 200, "{\"id\":\"sub_1\"}", true), 100000000);
    /* resetting the billing cycle invoices every item now */
    assert_int_equal(
        begin(p, "POST", "/v1/subscriptions/sub_1", "billing_cycle_anchor=now", &m, &reserve),
        KB_OK);
    assert_int_equal(reserve, 100000000);
    meter_free(m);
    /* subscription items */
    assert_int_equal(begin(p, "POST", "/v1/subscription_items",
                           "subscription=sub_1&price_data[currency]=usd&price_data[product]=prod_1"
                           "&price_data[unit_amount]=1999&price_data[recurring][interval]=month",
                           &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 19990000);
    meter_free(m);
    assert_int_equal(begin(p, "POST", "/v1/subscription_items/si_1", "metadata[k]=v", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 0);
    meter_free(m);
    meter_pricing_free(p);
}

static void test_v2_money_movement(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* the API reference's example: 1000 cents = $10.00 */
    assert_int_equal(begin_q(p, "/v2/money_management/outbound_payments", "application/json",
                             "{\"from\":{\"financial_account\":\"fa_1\",\"currency\":\"usd\"},"
                             "\"to\":{\"recipient\":\"acct_1\",\"payout_method\":\"usba_1\","
                             "\"currency\":\"usd\"},"
                             "\"amount\":{\"value\":1000,\"currency\":\"usd\"}}",
                             NULL, &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 10000000);
    assert_int_equal(finish(m, 200, "{\"id\":\"obp_1\"}", true), 10000000);
    /* as the proxy transcodes it today */
    assert_int_equal(begin_q(p, "/v2/money_management/outbound_transfers",
                             "application/x-www-form-urlencoded",
                             "from[financial_account]=fa_1&amount[value]=50&amount[currency]=usd",
                             NULL, &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 500000);
    meter_free(m);
    /* a '%' in a JSON string is not a form escape */
    assert_int_equal(begin_q(p, "/v2/money_management/outbound_payments", "application/json",
                             "{\"description\":\"50% off\","
                             "\"amount\":{\"value\":\"250\",\"currency\":\"usd\"}}",
                             NULL, &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 2500000);
    meter_free(m);
    /* a v1 body the proxy did not transcode cannot be read as a form */
    assert_int_equal(begin_q(p, "/v1/payment_intents", "application/json",
                             "{\"amount\":100,\"currency\":\"usd\"}", NULL, &m, &reserve),
                     KB_E_INVALID);
    /* without an amount: the unknown reserve, charged whole */
    assert_int_equal(begin_q(p, "/v2/money_management/outbound_payments", "application/json",
                             "{\"from\":{\"financial_account\":\"fa_1\"}}", NULL, &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 100000000);
    assert_int_equal(finish(m, 200, "{\"id\":\"obp_2\"}", true), 100000000);
    meter_pricing_free(p);
}

static void test_balances_and_invoice_updates(void **state)
{
    (void)state;
    struct kb_pricing *p = load(NULL);
    struct kb_meter *m = NULL;
    int64_t reserve = -1;

    /* a customer who owes $40.00 pays it on their next invoice */
    assert_int_equal(begin(p, "POST", "/v1/customers/cus_1", "balance=4000", &m, &reserve), KB_OK);
    assert_int_equal(reserve, 40000000);
    assert_int_equal(finish(m, 200, "{\"id\":\"cus_1\",\"balance\":4000}", true), 40000000);
    /* a credit (negative balance) costs nothing */
    assert_int_equal(begin(p, "POST", "/v1/customers", "email=x&balance=-4000", &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 0);
    meter_free(m);
    /* a draft's settings are free ... */
    assert_int_equal(
        begin(p, "POST", "/v1/invoices/in_1", "auto_advance=true&description=x", &m, &reserve),
        KB_OK);
    assert_int_equal(reserve, 0);
    meter_free(m);
    /* ... but shipping added to it is due: amount_due of the answer */
    assert_int_equal(begin(p, "POST", "/v1/invoices/in_1",
                           "shipping_cost[shipping_rate_data][display_name]=Post"
                           "&shipping_cost[shipping_rate_data][fixed_amount][amount]=900"
                           "&shipping_cost[shipping_rate_data][fixed_amount][currency]=usd",
                           &m, &reserve),
                     KB_OK);
    assert_int_equal(reserve, 100000000);
    assert_int_equal(
        finish(m, 200, "{\"id\":\"in_1\",\"amount_due\":900,\"currency\":\"usd\"}", true), 9000000);
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
        cmocka_unit_test(test_items_every_field),
        cmocka_unit_test(test_zero_cost_routes),
        cmocka_unit_test(test_update_with_amount_but_no_currency),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_unlisted_writes_refused),
        cmocka_unit_test(test_case_insensitive_paths_and_5xx_flag),
        cmocka_unit_test(test_ambiguous_forms),
        cmocka_unit_test(test_checkout_shipping),
        cmocka_unit_test(test_subscription_updates),
        cmocka_unit_test(test_v2_money_movement),
        cmocka_unit_test(test_balances_and_invoice_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
