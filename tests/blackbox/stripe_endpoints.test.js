'use strict';
// stripe_endpoints.test.js - issue 13 for Stripe, through the real binary: every
// write endpoint has a cost class (free by declaration, metered, or refused before
// anything is sent), checkout reserves its dearest shipping option, money fields
// Stripe could read two ways are refused, an intent this key never paid for costs
// what Stripe says moved, and API v2 money movement is priced. The mock vendor is
// scripted per test with setHandler; each test asserts what the vendor received.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');

const { assertError, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const FORM = 'application/x-www-form-urlencoded';

function json(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
  return true;
}

async function usage(d, id) {
  const r = await d.admin.get(`/v1/keys/${id}`);
  assert.equal(r.status, 200, r.text);
  return r.json.usage;
}

describe('stripe endpoints: a cost class for every write', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => {
    mocks.reset();
    mocks.stripe.setHandler(() => false);
  });

  const key = (label, cap, endpoints = ['POST /v1/*', 'POST /v2/*']) =>
    d.issueKey({ label: uniquePrefix(label), vendor: 'stripe', daily_usd_cap: cap, allowed_endpoints: endpoints });

  const post = (token, path, body, headers = {}) =>
    d.proxy({
      method: 'POST',
      path: `/stripe${path}`,
      headers: { authorization: `Bearer ${token}`, 'content-type': FORM, ...headers },
      body,
    });

  it('a free endpoint (create a customer) is forwarded and costs $0', async () => {
    const k = await key('free', 1);
    const r = await post(k.token, '/v1/customers', 'email=jenny%40example.com&name=Jenny');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['keybrake-cost-usd'], '0.000000');
    assert.equal(mocks.stripe.requests.length, 1);
    assert.equal(mocks.stripe.requests[0].path, '/v1/customers');
    assert.equal(mocks.stripe.requests[0].bodyText, 'email=jenny%40example.com&name=Jenny');
    const u = await usage(d, k.id);
    assert.equal(u.spent_usd, 0);
    assert.equal(u.reserved_usd, 0);
  });

  it('a write with no cost rule is refused with endpoint_not_metered and never sent', async () => {
    const k = await key('unlisted', 1000);
    for (const [path, body] of [
      // a payment link is a URL anyone can pay through, any number of times
      ['/v1/payment_links', 'line_items%5B0%5D%5Bprice%5D=price_1&line_items%5B0%5D%5Bquantity%5D=1'],
      ['/v1/payment_links/plink_1', 'active=true'],
      ['/v1/issuing/cards', 'cardholder=ich_1&currency=usd&type=virtual'],
      ['/v1/no_such_resource', 'amount=100&currency=usd'],
    ]) {
      assertError(await post(k.token, path, body), 400, 'endpoint_not_metered');
    }
    assert.equal(mocks.count(), 0, 'the vendor received nothing');
    // deactivating a link moves no money
    mocks.stripe.setHandler((rec, res) => json(res, 200, { id: 'plink_1', object: 'payment_link', active: false }));
    const r = await post(k.token, '/v1/payment_links/plink_1', 'active=false');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['keybrake-cost-usd'], '0.000000');
    assert.equal(mocks.stripe.requests.length, 1);
  });

  it('checkout reserves the line items plus the dearest shipping option', async () => {
    // 2 x $10.00 + max($5.00, $15.00) = $35.00
    const body = [
      'mode=payment',
      'line_items[0][price_data][currency]=usd',
      'line_items[0][price_data][product_data][name]=Mug',
      'line_items[0][price_data][unit_amount]=1000',
      'line_items[0][quantity]=2',
      'shipping_options[0][shipping_rate_data][type]=fixed_amount',
      'shipping_options[0][shipping_rate_data][display_name]=Ground',
      'shipping_options[0][shipping_rate_data][fixed_amount][amount]=500',
      'shipping_options[0][shipping_rate_data][fixed_amount][currency]=usd',
      'shipping_options[1][shipping_rate_data][type]=fixed_amount',
      'shipping_options[1][shipping_rate_data][display_name]=Express',
      'shipping_options[1][shipping_rate_data][fixed_amount][amount]=1500',
      'shipping_options[1][shipping_rate_data][fixed_amount][currency]=usd',
      'success_url=https%3A%2F%2Fexample.com%2Fok',
    ].join('&');
    const small = await key('ship-small', 34);
    assertError(await post(small.token, '/v1/checkout/sessions', body), 429, 'cap_exhausted');
    assert.equal(mocks.count(), 0, 'refused before forwarding');

    // Stripe's total with the cheaper option preselected: the bound stands
    mocks.stripe.setHandler((rec, res) =>
      json(res, 200, { id: 'cs_test_a1', object: 'checkout.session', amount_subtotal: 2000, amount_total: 2500, currency: 'usd', mode: 'payment', status: 'open' }),
    );
    const k = await key('ship', 35);
    const r = await post(k.token, '/v1/checkout/sessions', body);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['keybrake-cost-usd'], '35.000000');
    assert.equal(mocks.stripe.requests.length, 1);
    assert.equal(mocks.stripe.requests[0].bodyText, body, 'forwarded as sent');
    const u = await usage(d, k.id);
    assert.equal(u.spent_usd, 35);
    assert.equal(u.reserved_usd, 0);
  });

  it('a money field given two ways is refused as ambiguous, nothing sent', async () => {
    const k = await key('ambiguous', 1000);
    for (const body of [
      'amount=100&currency=usd&amount=900000',
      'amount=100&currency=usd&amount%5B%5D=900000',
      'amount=100&currency=usd&Amount=100',
    ]) {
      assertError(await post(k.token, '/v1/payment_intents', body), 400, 'ambiguous_request');
    }
    assertError(
      await post(k.token, '/v1/transfers', 'amount=100&currency=usd&destination=acct_1', {
        'idempotency-key': ['a', 'b'],
      }),
      400,
      'ambiguous_request',
    );
    assert.equal(mocks.count(), 0);
  });

  it('confirming an intent this key never paid for costs what Stripe says it moved', async () => {
    const k = await key('foreign', 150);
    mocks.stripe.setHandler((rec, res) =>
      json(res, 200, {
        id: 'pi_dashboard1',
        object: 'payment_intent',
        amount: 3000,
        amount_received: 3000,
        currency: 'usd',
        status: 'succeeded',
      }),
    );
    const r = await post(k.token, '/v1/payment_intents/pi_dashboard1/confirm', 'payment_method=pm_card_visa');
    assert.equal(r.status, 200, r.text);
    // the header goes out before the answer's body is read: the reservation
    // (stripe.unknown_amount_reserve, $100); the settled cost is the answer's
    assert.equal(r.headers['keybrake-cost-usd'], '100.000000');
    assert.equal(mocks.stripe.requests.length, 1);
    assert.equal(mocks.stripe.requests[0].path, '/v1/payment_intents/pi_dashboard1/confirm');
    const u = await usage(d, k.id);
    assert.equal(u.spent_usd, 30);
    assert.equal(u.reserved_usd, 0);
  });

  it('a capture stating its amount reserves it and settles at amount_received', async () => {
    const small = await key('capture-small', 14);
    assertError(await post(small.token, '/v1/payment_intents/pi_x1/capture', 'amount_to_capture=1500'), 429, 'cap_exhausted');
    assert.equal(mocks.count(), 0);
    mocks.stripe.setHandler((rec, res) =>
      json(res, 200, { id: 'pi_x1', object: 'payment_intent', amount: 1500, amount_received: 1500, currency: 'usd', status: 'succeeded' }),
    );
    const k = await key('capture', 15);
    const r = await post(k.token, '/v1/payment_intents/pi_x1/capture', 'amount_to_capture=1500');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['keybrake-cost-usd'], '15.000000');
  });

  it('API v2 outbound payments are priced from amount.value and amount.currency', async () => {
    const k = await key('v2', 9);
    const body = JSON.stringify({
      from: { financial_account: 'fa_test_1', currency: 'usd' },
      to: { recipient: 'acct_1', payout_method: 'usba_test_1', currency: 'usd' },
      amount: { value: 1000, currency: 'usd' },
      description: 'Streamer earnings',
    });
    const send = (token) =>
      d.proxy({
        method: 'POST',
        path: '/stripe/v2/money_management/outbound_payments',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body,
      });
    assertError(await send(k.token), 429, 'cap_exhausted');
    assert.equal(mocks.count(), 0, '$10.00 does not fit a $9 cap');
    mocks.stripe.setHandler((rec, res) =>
      json(res, 200, { id: 'obp_test_1', object: 'v2.money_management.outbound_payment', amount: { value: 1000, currency: 'usd' }, status: 'processing' }),
    );
    const k2 = await key('v2-fit', 10);
    const r = await send(k2.token);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['keybrake-cost-usd'], '10.000000');
    assert.equal(mocks.stripe.requests.length, 1);
  });

  it('stops cleanly', async () => {
    await d.stop();
    d = null;
  });
});
