/*
 * stripe_routes.c - the one table of Stripe write endpoints and their cost
 * class. meter_begin() refuses (endpoint_not_metered) every POST to Stripe
 * that is not listed here and that no operator fixed cost matches, so a
 * route is added here only with a reason it is free or a rule that prices
 * it. docs/metering.md mirrors this table.
 *
 * Sources, read 2026-12-03: the Stripe API reference,
 * https://docs.stripe.com/api (v1 resources) and
 * https://docs.stripe.com/api/v2/money-management/outbound-payments/create,
 * https://docs.stripe.com/api/v2/money-management/outbound-transfers/create
 * (v2 bodies carry amount as {"value", "currency"}).
 *
 * Deliberately absent (refused unless priced by the operator), because the
 * money they move can neither be bounded from the request nor read from
 * the answer: payment_links (create: a URL anyone can pay through, any
 * number of times), subscription_schedules create/update, invoices
 * add_lines/update_lines, issuing (cards spend outside the proxy),
 * climate orders, billing meter_events and usage_records (usage billed to
 * customers later), treasury credit_reversals, identity verification
 * sessions (a Stripe fee per verification), terminal readers processing a
 * payment, forwarding, and every endpoint not known here.
 */
#include <string.h>
#include <strings.h>

#include "meter/stripe_int.h"

/* One row per endpoint reads better than clang-format's layout. */
/* clang-format off */
#define FREE(...) {{__VA_ARGS__}, SR_FREE, NULL, 0}

static const struct stripe__route routes[] = {
    /* ---- money in: PaymentIntents and Charges ---- */
    /* A create is charged its amount at once: a client-side confirm with a
     * publishable key moves that money without passing the proxy. */
    {{"v1", "payment_intents"}, SR_AMOUNT, "amount", STRIPE_RECORD_ID},
    {{"v1", "payment_intents", "+"}, SR_PI_UPDATE, "amount", STRIPE_OBJECT | STRIPE_BOUNDED},
    {{"v1", "payment_intents", "+", "confirm"}, SR_CONFIRM, "amount",
     STRIPE_OBJECT | STRIPE_BOUNDED},
    /* Pays the intent from the customer's cash balance: its amount. */
    {{"v1", "payment_intents", "+", "apply_customer_balance"}, SR_CONFIRM, "amount",
     STRIPE_OBJECT | STRIPE_BOUNDED},
    /* amount_received is cumulative over (multi)captures: the total moved. */
    {{"v1", "payment_intents", "+", "capture"}, SR_CAPTURE, "amount_received",
     STRIPE_OBJECT | STRIPE_BOUNDED},
    {{"v1", "payment_intents", "+", "increment_authorization"}, SR_INCREMENT, "amount",
     STRIPE_OBJECT | STRIPE_BOUNDED},
    FREE("v1", "payment_intents", "+", "cancel"),
    FREE("v1", "payment_intents", "+", "verify_microdeposits"),
    {{"v1", "charges"}, SR_AMOUNT, "amount", STRIPE_RECORD_ID},
    FREE("v1", "charges", "+"), /* description, metadata, fraud details */
    {{"v1", "charges", "+", "capture"}, SR_CAPTURE, "amount_captured",
     STRIPE_OBJECT | STRIPE_BOUNDED},

    /* ---- money out ---- */
    {{"v1", "transfers"}, SR_AMOUNT, "amount", 0},
    FREE("v1", "transfers", "+"),
    FREE("v1", "transfers", "+", "reversals"), /* money comes back */
    FREE("v1", "transfers", "+", "reversals", "+"),
    {{"v1", "payouts"}, SR_AMOUNT, "amount", 0},
    FREE("v1", "payouts", "+"),
    FREE("v1", "payouts", "+", "cancel"),
    FREE("v1", "payouts", "+", "reverse"),
    {{"v1", "topups"}, SR_AMOUNT, "amount", 0},
    FREE("v1", "topups", "+"),
    FREE("v1", "topups", "+", "cancel"),
    {{"v1", "treasury", "outbound_payments"}, SR_AMOUNT, "amount", 0},
    FREE("v1", "treasury", "outbound_payments", "+", "cancel"),
    {{"v1", "treasury", "outbound_transfers"}, SR_AMOUNT, "amount", 0},
    FREE("v1", "treasury", "outbound_transfers", "+", "cancel"),
    {{"v1", "treasury", "inbound_transfers"}, SR_AMOUNT, "amount", 0},
    FREE("v1", "treasury", "inbound_transfers", "+", "cancel"),
    FREE("v1", "treasury", "financial_accounts"),
    FREE("v1", "treasury", "financial_accounts", "+"),
    FREE("v1", "treasury", "financial_accounts", "+", "features"),
    FREE("v1", "treasury", "financial_accounts", "+", "close"),
    /* The platform gives fees back to a connected account: money out. */
    {{"v1", "application_fees", "+", "refunds"}, SR_AMOUNT_NOCUR, "amount", 0},
    {{"v1", "application_fees", "+", "refund"}, SR_AMOUNT_NOCUR, "amount", 0}, /* legacy */
    FREE("v1", "application_fees", "+", "refunds", "+"),
    /* A positive amount is added to what the customer owes. */
    {{"v1", "customers", "+", "balance_transactions"}, SR_AMOUNT, "amount", 0},
    FREE("v1", "customers", "+", "balance_transactions", "+"),

    /* ---- money returned: refunds, credit notes, disputes ---- */
    FREE("v1", "refunds"),
    FREE("v1", "refunds", "+"),
    FREE("v1", "refunds", "+", "cancel"),
    FREE("v1", "credit_notes"),
    FREE("v1", "credit_notes", "+"),
    FREE("v1", "credit_notes", "+", "void"),
    FREE("v1", "disputes", "+"),
    FREE("v1", "disputes", "+", "close"),
    FREE("v1", "charges", "+", "refund"), /* legacy refund endpoints */
    FREE("v1", "charges", "+", "refunds"),
    FREE("v1", "charges", "+", "refunds", "+"),
    FREE("v1", "charges", "+", "dispute"),
    FREE("v1", "charges", "+", "dispute", "close"),

    /* ---- billing ---- */
    {{"v1", "invoiceitems"}, SR_INVOICEITEM, "amount", STRIPE_ADD},
    {{"v1", "invoiceitems", "+"}, SR_INVOICEITEM_UPDATE, "amount", STRIPE_ADD},
    {{"v1", "invoices"}, SR_INVOICE_CREATE, "amount_due", STRIPE_RECORD_ID},
    FREE("v1", "invoices", "create_preview"),
    /* A draft's settings cost nothing, but shipping_cost adds to what an
     * auto-advancing draft will collect without another request. */
    {{"v1", "invoices", "+"}, SR_INVOICE_UPDATE, "amount_due", STRIPE_OBJECT},
    /* Finalising makes the hosted invoice payable by anyone with the link;
     * sending mails it; paying charges it: each costs what is due beyond
     * what this key was already charged for the invoice. */
    {{"v1", "invoices", "+", "finalize"}, SR_INVOICE_DUE, "amount_due", STRIPE_OBJECT},
    {{"v1", "invoices", "+", "send"}, SR_INVOICE_DUE, "amount_due", STRIPE_OBJECT},
    {{"v1", "invoices", "+", "pay"}, SR_INVOICE_DUE, "amount_paid", STRIPE_OBJECT},
    FREE("v1", "invoices", "+", "void"),
    FREE("v1", "invoices", "+", "mark_uncollectible"),
    FREE("v1", "invoices", "+", "remove_lines"),
    FREE("v1", "invoices", "+", "attach_payment"), /* a payment made (and charged) elsewhere */
    {{"v1", "subscriptions"}, SR_SUBSCRIPTION, NULL, 0},
    {{"v1", "subscriptions", "+"}, SR_SUB_UPDATE, NULL, 0},
    /* Resuming invoices at once by default (billing_cycle_anchor=now). */
    {{"v1", "subscriptions", "+", "resume"}, SR_UNKNOWN, NULL, 0},
    {{"v1", "subscription_items"}, SR_SUBITEM, NULL, 0},
    {{"v1", "subscription_items", "+"}, SR_SUBITEM, NULL, 0},
    FREE("v1", "subscription_schedules", "+", "cancel"),
    FREE("v1", "subscription_schedules", "+", "release"),
    FREE("v1", "quotes"),
    FREE("v1", "quotes", "+"),
    FREE("v1", "quotes", "+", "cancel"),
    /* A finalised quote can be accepted by the customer on Stripe's page. */
    {{"v1", "quotes", "+", "finalize"}, SR_QUOTE_TOTAL, "amount_total", STRIPE_OBJECT},
    {{"v1", "quotes", "+", "accept"}, SR_QUOTE_TOTAL, "amount_total", STRIPE_OBJECT},
    {{"v1", "checkout", "sessions"}, SR_CHECKOUT, "amount_total", 0},
    FREE("v1", "checkout", "sessions", "+", "expire"),
    {{"v1", "payment_links", "+"}, SR_PAYMENT_LINK_UPDATE, NULL, 0},
    FREE("v1", "billing_portal", "sessions"),
    FREE("v1", "billing_portal", "configurations"),
    FREE("v1", "billing_portal", "configurations", "+"),
    FREE("v1", "customer_sessions"),

    /* ---- catalogue and configuration: no money moves ---- */
    /* balance: what the customer owes, added to their next invoice. */
    {{"v1", "customers"}, SR_CUSTOMER, NULL, 0},
    {{"v1", "customers", "+"}, SR_CUSTOMER, NULL, 0},
    FREE("v1", "customers", "+", "sources"),
    FREE("v1", "customers", "+", "sources", "+"),
    FREE("v1", "customers", "+", "sources", "+", "verify"),
    FREE("v1", "customers", "+", "tax_ids"),
    FREE("v1", "customers", "+", "funding_instructions"),
    FREE("v1", "customers", "+", "cash_balance"),
    FREE("v1", "products"),
    FREE("v1", "products", "+"),
    FREE("v1", "products", "+", "features"),
    FREE("v1", "prices"),
    FREE("v1", "prices", "+"),
    FREE("v1", "coupons"),
    FREE("v1", "coupons", "+"),
    FREE("v1", "promotion_codes"),
    FREE("v1", "promotion_codes", "+"),
    FREE("v1", "shipping_rates"),
    FREE("v1", "shipping_rates", "+"),
    FREE("v1", "tax_rates"),
    FREE("v1", "tax_rates", "+"),
    FREE("v1", "tax", "calculations"),
    FREE("v1", "tax", "transactions", "create_from_calculation"),
    FREE("v1", "tax", "transactions", "create_reversal"),
    FREE("v1", "tax", "registrations"),
    FREE("v1", "tax", "registrations", "+"),
    FREE("v1", "tax", "settings"),
    FREE("v1", "payment_methods"),
    FREE("v1", "payment_methods", "+"),
    FREE("v1", "payment_methods", "+", "attach"),
    FREE("v1", "payment_methods", "+", "detach"),
    FREE("v1", "payment_method_configurations"),
    FREE("v1", "payment_method_configurations", "+"),
    FREE("v1", "payment_method_domains"),
    FREE("v1", "payment_method_domains", "+"),
    FREE("v1", "payment_method_domains", "+", "validate"),
    FREE("v1", "setup_intents"),
    FREE("v1", "setup_intents", "+"),
    FREE("v1", "setup_intents", "+", "confirm"),
    FREE("v1", "setup_intents", "+", "cancel"),
    FREE("v1", "setup_intents", "+", "verify_microdeposits"),
    FREE("v1", "sources"),
    FREE("v1", "sources", "+"),
    FREE("v1", "tokens"),
    FREE("v1", "ephemeral_keys"),
    FREE("v1", "webhook_endpoints"),
    FREE("v1", "webhook_endpoints", "+"),
    FREE("v1", "files"),
    FREE("v1", "file_links"),
    FREE("v1", "file_links", "+"),
    FREE("v1", "accounts"),
    FREE("v1", "accounts", "+"),
    FREE("v1", "accounts", "+", "external_accounts"),
    FREE("v1", "accounts", "+", "external_accounts", "+"),
    FREE("v1", "accounts", "+", "persons"),
    FREE("v1", "accounts", "+", "persons", "+"),
    FREE("v1", "accounts", "+", "login_links"),
    FREE("v1", "accounts", "+", "capabilities", "+"),
    FREE("v1", "accounts", "+", "bank_accounts"),
    FREE("v1", "accounts", "+", "bank_accounts", "+"),
    FREE("v1", "accounts", "+", "reject"),
    FREE("v1", "account_links"),
    FREE("v1", "account_sessions"),
    FREE("v1", "apple_pay", "domains"),
    FREE("v1", "radar", "value_lists"),
    FREE("v1", "radar", "value_lists", "+"),
    FREE("v1", "radar", "value_list_items"),
    FREE("v1", "reviews", "+", "approve"),
    FREE("v1", "reporting", "report_runs"),
    FREE("v1", "financial_connections", "sessions"),
    FREE("v1", "financial_connections", "accounts", "+", "disconnect"),
    FREE("v1", "financial_connections", "accounts", "+", "refresh"),
    FREE("v1", "plans"), /* legacy prices */
    FREE("v1", "plans", "+"),
    FREE("v1", "tax_ids"),
    FREE("v1", "apps", "secrets"),
    FREE("v1", "apps", "secrets", "delete"),
    /* Billing configuration; the usage itself (meter_events) is refused. */
    FREE("v1", "billing", "meters"),
    FREE("v1", "billing", "meters", "+"),
    FREE("v1", "billing", "meters", "+", "deactivate"),
    FREE("v1", "billing", "meters", "+", "reactivate"),
    FREE("v1", "billing", "alerts"),
    FREE("v1", "billing", "alerts", "+", "activate"),
    FREE("v1", "billing", "alerts", "+", "archive"),
    FREE("v1", "billing", "alerts", "+", "deactivate"),
    FREE("v1", "billing", "credit_grants"), /* credit lowers what customers pay */
    FREE("v1", "billing", "credit_grants", "+"),
    FREE("v1", "billing", "credit_grants", "+", "expire"),
    FREE("v1", "billing", "credit_grants", "+", "void"),
    FREE("v1", "climate", "orders", "+", "cancel"),
    FREE("v1", "terminal", "connection_tokens"),
    FREE("v1", "terminal", "locations"),
    FREE("v1", "terminal", "locations", "+"),
    FREE("v1", "terminal", "configurations"),
    FREE("v1", "terminal", "configurations", "+"),
    FREE("v1", "terminal", "readers"),
    FREE("v1", "terminal", "readers", "+"),
    FREE("v1", "terminal", "readers", "+", "cancel_action"),
    FREE("v1", "entitlements", "features"),
    FREE("v1", "entitlements", "features", "+"),
    /* Test mode only: no real money moves with a test key. */
    FREE("v1", "test_helpers", "*"),

    /* ---- API v2 money management ---- */
    {{"v2", "money_management", "outbound_payments"}, SR_V2_AMOUNT, NULL, 0},
    FREE("v2", "money_management", "outbound_payments", "+", "cancel"),
    {{"v2", "money_management", "outbound_transfers"}, SR_V2_AMOUNT, NULL, 0},
    FREE("v2", "money_management", "outbound_transfers", "+", "cancel"),
    FREE("v2", "money_management", "outbound_payment_quotes"),
    FREE("v2", "money_management", "outbound_setup_intents"),
    FREE("v2", "money_management", "outbound_setup_intents", "+"),
    FREE("v2", "money_management", "outbound_setup_intents", "+", "cancel"),
    FREE("v2", "money_management", "payout_methods", "+", "archive"),
    FREE("v2", "money_management", "payout_methods", "+", "unarchive"),
    FREE("v2", "money_management", "financial_accounts"),
    FREE("v2", "money_management", "financial_accounts", "+"),
    FREE("v2", "money_management", "financial_accounts", "+", "close"),
    FREE("v2", "core", "accounts"),
    FREE("v2", "core", "accounts", "+"),
    FREE("v2", "core", "event_destinations"),
    FREE("v2", "core", "event_destinations", "+"),
    FREE("v2", "core", "event_destinations", "+", "enable"),
    FREE("v2", "core", "event_destinations", "+", "disable"),
    FREE("v2", "core", "event_destinations", "+", "ping"),
    FREE("v2", "core", "accounts", "+", "close"),
    FREE("v2", "core", "accounts", "+", "persons"),
    FREE("v2", "core", "accounts", "+", "persons", "+"),
    FREE("v2", "core", "account_links"),
    FREE("v2", "money_management", "recipient_verifications"),
    FREE("v2", "money_management", "recipient_verifications", "+", "acknowledge"),
    FREE("v2", "money_management", "financial_addresses"),
};
/* clang-format on */

#define MAX_SEG 7

const struct stripe__route *stripe__route_find(const char *path, size_t path_len, const char **id,
                                               size_t *id_len)
{
    const char *seg[MAX_SEG + 1];
    size_t len[MAX_SEG + 1];
    size_t n = meter__path_split(path, path_len, seg, len, MAX_SEG);

    if (n < 2 || n > MAX_SEG)
        return NULL;
    for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
        const struct stripe__route *rt = &routes[r];
        size_t k = 0, idx = (size_t)-1;
        bool ok = true, star = false;
        for (; k < 6 && rt->seg[k] && ok; k++) {
            if (strcmp(rt->seg[k], "*") == 0) {
                star = true;
                ok = k < n; /* one or more further segments */
                break;
            }
            if (k >= n)
                ok = false;
            else if (strcmp(rt->seg[k], "+") == 0) {
                ok = len[k] > 0;
                if (idx == (size_t)-1)
                    idx = k;
            } else {
                ok = strlen(rt->seg[k]) == len[k] && strncasecmp(seg[k], rt->seg[k], len[k]) == 0;
            }
        }
        if (!ok || (!star && k != n))
            continue;
        if (id) {
            *id = idx == (size_t)-1 ? NULL : seg[idx];
            *id_len = idx == (size_t)-1 ? 0 : len[idx];
        }
        return rt;
    }
    return NULL;
}
