'use strict';
// spend.test.js - money (issue 4): the worst case is reserved atomically
// before forwarding and replaced by the actual cost after, so a cap is never
// overshot under concurrency and never blocks spend that did not happen.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');

const { assertError, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

async function usage(d, id) {
  const r = await d.admin.get(`/v1/keys/${id}`);
  assert.equal(r.status, 200, r.text);
  return r.json.usage;
}

describe('spend caps', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks, env: { KEYBRAKE_WORKERS: '2' } });
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

  const pay = (token, amount = 1000, currency = 'usd') =>
    d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: `amount=${amount}&currency=${currency}`,
    });

  it('a steady stream (admissions and settlements interleaved in the batches) stops at the cap exactly', async () => {
    // 8 clients, each sending its next payment as soon as the last is
    // answered: the store writer's batches then hold some requests'
    // settlements and others' admissions together (on PostgreSQL, one
    // round trip carries both). Whatever the mix, $500 / $10 is 50.
    const key = await d.issueKey({ label: uniquePrefix('stream'), vendor: 'stripe', daily_usd_cap: 500, allowed_endpoints: ['POST /v1/payment_intents'] });
    let forwarded = 0;
    const client = async () => {
      for (let refused = 0; refused < 3; ) {
        const r = await pay(key.token);
        if (r.status === 200) forwarded++;
        else {
          assertError(r, 429, 'cap_exhausted');
          refused++;
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, client));
    assert.equal(forwarded, 50, 'exactly 50 forwarded');
    assert.equal(mocks.stripe.requests.length, 50, 'the vendor saw exactly 50');
    const u = await usage(d, key.id);
    assert.equal(u.spent_usd, 500);
    assert.equal(u.reserved_usd, 0);
  });

  it('200 concurrent $10 payment intents on a $500 key: exactly 50 reach the vendor', async () => {
    const key = await d.issueKey({ label: uniquePrefix('cap'), vendor: 'stripe', daily_usd_cap: 500, allowed_endpoints: ['POST /v1/payment_intents'] });
    const results = await Promise.all(Array.from({ length: 200 }, () => pay(key.token)));
    const ok = results.filter((r) => r.status === 200);
    const capped = results.filter((r) => r.status === 429);
    assert.equal(ok.length, 50, 'exactly 50 forwarded');
    assert.equal(capped.length, 150);
    for (const r of capped) assertError(r, 429, 'cap_exhausted');
    assert.equal(mocks.stripe.requests.length, 50, 'the vendor saw exactly 50');
    const u = await usage(d, key.id);
    assert.equal(u.spent_usd, 500);
    assert.equal(u.reserved_usd, 0);
    assert.equal(u.remaining_usd, 0);
  });

  it('card errors (402) cost nothing and the freed cap is usable again', async () => {
    const key = await d.issueKey({ label: uniquePrefix('cap402'), vendor: 'stripe', daily_usd_cap: 500, allowed_endpoints: ['POST /v1/payment_intents'] });
    let n = 0;
    mocks.stripe.setHandler((rec, res) => {
      if (n++ % 2 === 0) return false; // the default: a created payment intent
      res.writeHead(402, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { type: 'card_error', code: 'card_declined', message: 'Your card was declined.' } }));
      return true;
    });
    const burst = await Promise.all(Array.from({ length: 200 }, () => pay(key.token)));
    const ok = burst.filter((r) => r.status === 200).length;
    const declined = burst.filter((r) => r.status === 402).length;
    assert.ok(ok <= 50, `never more than the cap: ${ok}`);
    assert.ok(declined > 0);
    let u = await usage(d, key.id);
    assert.equal(u.spent_usd, ok * 10, 'declined intents cost nothing');
    assert.equal(u.reserved_usd, 0, 'no reservation left behind');
    // what the declines released can be spent
    mocks.stripe.setHandler(() => false);
    let more = 0;
    for (;;) {
      const r = await pay(key.token);
      if (r.status === 429) {
        assertError(r, 429, 'cap_exhausted');
        break;
      }
      assert.equal(r.status, 200, r.text);
      more++;
    }
    assert.equal(ok + more, 50);
    u = await usage(d, key.id);
    assert.equal(u.spent_usd, 500);
    assert.equal(u.reserved_usd, 0);
  });

  it('a proxied answer carries Keybrake-Cost-USD and Keybrake-Remaining-USD', async () => {
    const key = await d.issueKey({ label: uniquePrefix('hdr'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    const r = await pay(key.token, 2550);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['keybrake-cost-usd'], '25.500000');
    assert.equal(r.headers['keybrake-remaining-usd'], '74.500000');
  });

  it('a currency without a configured rate is refused before anything is sent', async () => {
    const key = await d.issueKey({ label: uniquePrefix('eur'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    const r = await pay(key.token, 1000, 'eur');
    assertError(r, 400, 'currency_not_supported');
    assert.equal(mocks.count(), 0);
  });

  it('a cap that does not fit refuses with nothing sent; reads cost nothing', async () => {
    const key = await d.issueKey({ label: uniquePrefix('fit'), vendor: 'stripe', daily_usd_cap: 5, allowed_endpoints: ['/v1/payment_intents', '/v1/payment_intents/*'] });
    assertError(await pay(key.token, 600), 429, 'cap_exhausted');
    assert.equal(mocks.count(), 0);
    const g = await d.proxy({ path: '/stripe/v1/payment_intents/pi_1', headers: { authorization: `Bearer ${key.token}` } });
    assert.equal(g.status, 200);
    assert.equal(g.headers['keybrake-cost-usd'], '0.000000');
    assert.equal((await pay(key.token, 500)).status, 200, 'exactly the cap fits');
  });

  it('the UTC day rolls over without losing or resetting the current day', async (t) => {
    const probe = await d.admin.post('/v1/test/clock', { offset_seconds: 0 });
    if (probe.status === 404) return t.skip('binary built without KB_TEST_HOOKS');
    try {
      const key = await d.issueKey({ label: uniquePrefix('day'), vendor: 'stripe', daily_usd_cap: 30, expires_in: '24h', allowed_endpoints: ['POST /v1/payment_intents'] });
      assert.equal((await pay(key.token, 2000)).status, 200);
      const day1 = await usage(d, key.id);
      assert.equal(day1.spent_usd, 20);
      assertError(await pay(key.token, 2000), 429, 'cap_exhausted');
      // a request in flight when the day turns settles on the day it reserved
      const hold = mocks.stripe.nextHold();
      const inflight = pay(key.token, 1000);
      const h = await hold;
      // to the next UTC midnight + 1 s
      const now = Math.floor(Date.now() / 1000);
      const offset = 86400 - (now % 86400) + 1;
      assert.equal((await d.admin.post('/v1/test/clock', { offset_seconds: offset })).status, 200);
      h.respond();
      assert.equal((await inflight).status, 200);
      const day2 = await usage(d, key.id);
      assert.notEqual(day2.day, day1.day);
      assert.equal(day2.spent_usd, 0, 'a new day starts at zero');
      assert.equal((await pay(key.token, 2500)).status, 200, 'the new day has its own cap');
      assert.equal((await d.admin.post('/v1/test/clock', { offset_seconds: 0 })).status, 200);
      const back = await usage(d, key.id);
      assert.equal(back.day, day1.day);
      assert.equal(back.spent_usd, 30, 'day one kept its spend, including the request that crossed midnight');
      assert.equal(back.reserved_usd, 0);
    } finally {
      await d.admin.post('/v1/test/clock', { offset_seconds: 0 });
    }
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});

// A settlement that cannot commit (a full disk) is retried until it does:
// the reservation stays meanwhile (fail closed) and is never left behind to
// block spend that did not happen. The test build's hook fails the first
// three settlement commits.
describe('a settlement that fails is retried until durable', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks, env: { KEYBRAKE_TEST_FAIL_SETTLES: '3' } });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  it('the actual cost replaces the reservation once the store takes it', async () => {
    const key = await d.issueKey({ label: uniquePrefix('retry'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    const r = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=2500&currency=usd',
    });
    assert.equal(r.status, 200, r.text);
    const u = await waitFor(async () => {
      const x = await usage(d, key.id);
      return x.reserved_usd === 0 ? x : null;
    }, { what: 'the settlement to commit' });
    assert.equal(u.spent_usd, 25);
    assert.match(d.stderr + d.stdout, /settlement not committed; retried/);
    const recs = (await d.admin.get(`/v1/audit?key_id=${key.id}&limit=10`)).json.data.filter((a) => a.kind === 'proxy');
    assert.equal(recs.length, 1);
    assert.equal(recs[0].completed, true);
    assert.equal(recs[0].settled_usd, 25);
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});
