'use strict';
// usage.test.js - GET /v1/usage (issue 16, item 5; docs/budgets.md "Usage
// and alerts"): daily rows of spend grouped by key, label, label prefix and
// budget (through child budgets) after real proxied calls against the mock
// Stripe, paging with a cursor, a second day through the test clock, and
// every parameter refusal with its `field`.
//
// Each call is a Stripe PaymentIntent: reserved and settled at its amount.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { assertError, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

function pay(d, token, cents) {
  return d.proxy({
    method: 'POST',
    path: '/stripe/v1/payment_intents',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: `amount=${cents}&currency=usd`,
  });
}

function day(offsetDays = 0) {
  return new Date(Date.now() + offsetDays * 86400_000).toISOString().slice(0, 10);
}

async function usage(d, query) {
  const r = await d.admin.get(`/v1/usage?${new URLSearchParams(query)}`);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

describe('usage', () => {
  let mocks;
  let d;
  const p = uniquePrefix('use');
  const keys = {};

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    mocks.stripe.setHandler(() => false);
    for (const [name, body] of [
      ['team', { name: `${p}team`, usd_cap: 100, window: 'month' }],
      ['user', { name: `${p}user`, usd_cap: 100, window: 'day', parent: `${p}team` }],
    ]) {
      const r = await d.admin.post('/v1/budgets', body);
      assert.equal(r.status, 201, r.text);
    }
    for (const [name, label, budgets] of [
      ['a1', `${p}agent-1`, [`${p}user`]],
      ['a2', `${p}agent-2`, [`${p}user`]],
      ['b', `${p}batch`, [`${p}team`]],
    ]) {
      const r = await d.admin.post('/v1/keys', {
        label,
        vendor: 'stripe',
        allowed_endpoints: ['POST /v1/payment_intents'],
        daily_usd_cap: 1000,
        expires_in: '24h', // the clock moves to the next UTC day below
        budgets,
      });
      assert.equal(r.status, 201, r.text);
      keys[name] = r.json;
    }
    for (const [k, cents] of [['a1', 100], ['a1', 100], ['a2', 250], ['b', 50]]) {
      const r = await pay(d, keys[k].token, cents);
      assert.equal(r.status, 200, r.text);
    }
    assert.equal(mocks.stripe.requests.length, 4);
  });

  after(async () => {
    try {
      if (d) await d.stop(); // a clean exit: no leak report from a sanitizer build
    } finally {
      if (mocks) await mocks.close();
    }
  });

  it('groups by key, label, label prefix and budget', async () => {
    const range = { from: day(-1), to: day(1) };
    const byKey = await usage(d, { ...range, group_by: 'key', label_prefix: p });
    assert.equal(byKey.group_by, 'key');
    assert.equal(byKey.next_cursor, null);
    const today = byKey.data[0].day;
    assert.match(today, /^\d{4}-\d{2}-\d{2}$/);
    const want = [
      [keys.a1.id, 2, 2],
      [keys.a2.id, 2.5, 1],
      [keys.b.id, 0.5, 1],
    ].sort((x, y) => (x[0] < y[0] ? -1 : 1));
    assert.deepEqual(
      byKey.data.map((r) => [r.group, r.spent_usd, r.requests]),
      want,
    );
    for (const r of byKey.data) {
      assert.equal(r.day, today);
      assert.equal(r.reserved_usd, 0);
    }

    const byLabel = await usage(d, { ...range, group_by: 'label', label_prefix: `${p}agent-` });
    assert.deepEqual(
      byLabel.data.map((r) => [r.group, r.spent_usd, r.requests]),
      [[`${p}agent-1`, 2, 2], [`${p}agent-2`, 2.5, 1]],
    );

    const byPrefix = await usage(d, { ...range, group_by: 'label_prefix', label_prefix: `${p}agent-` });
    assert.deepEqual(byPrefix.data, [
      { day: today, group: `${p}agent-`, spent_usd: 4.5, reserved_usd: 0, requests: 3 },
    ]);

    // team counts its own key and its child budget's keys
    const team = await usage(d, { ...range, group_by: 'budget', budget: `${p}team` });
    assert.deepEqual(team.data.map((r) => [r.group, r.spent_usd, r.requests]), [[`${p}team`, 5, 4]]);
    const user = await usage(d, { ...range, group_by: 'budget', budget: `${p}user` });
    assert.deepEqual(user.data.map((r) => [r.group, r.spent_usd, r.requests]), [[`${p}user`, 4.5, 3]]);

    // the budget's own counter agrees
    const b = await d.admin.get(`/v1/budgets/${encodeURIComponent(`${p}team`)}`);
    assert.equal(b.json.usage.spent_usd, 5);

    // a range without spend has no rows
    const empty = await usage(d, { from: '2001-01-01', to: '2001-12-31', group_by: 'key' });
    assert.deepEqual(empty.data, []);
  });

  it('pages with a cursor, each row once', async () => {
    const seen = [];
    let cursor = null;
    let pages = 0;
    do {
      const q = { from: day(-1), to: day(1), label_prefix: p, limit: '1' };
      if (cursor) q.cursor = cursor;
      const r = await usage(d, q);
      assert.ok(r.data.length <= 1);
      seen.push(...r.data.map((x) => x.group));
      cursor = r.next_cursor;
      pages++;
    } while (cursor && pages < 10);
    assert.deepEqual(seen, [keys.a1.id, keys.a2.id, keys.b.id].sort());
  });

  it('a later day gets rows of its own (test clock)', async (t) => {
    const probe = await d.admin.post('/v1/test/clock', { offset_seconds: 0 });
    if (probe.status === 404) {
      t.skip('needs a build with KB_TEST_HOOKS');
      return;
    }
    try {
      // to a minute into the next UTC day
      const next = Math.ceil((Date.now() + 1) / 86400_000) * 86400;
      const offset = next + 60 - Math.floor(Date.now() / 1000);
      assert.equal((await d.admin.post('/v1/test/clock', { offset_seconds: offset })).status, 200);
      assert.equal((await pay(d, keys.a1.token, 300)).status, 200);
      const r = await usage(d, { from: day(-1), to: day(2), group_by: 'key', label_prefix: `${p}agent-1` });
      assert.deepEqual(
        r.data.map((x) => [x.day, x.spent_usd, x.requests]),
        [[r.data[0].day, 2, 2], [day(1), 3, 1]],
      );
      assert.notEqual(r.data[0].day, day(1));
      // no `to`: the server's today, moved by the clock
      const today = await usage(d, { group_by: 'key', label_prefix: `${p}agent-1` });
      assert.deepEqual(today.data.map((x) => [x.day, x.spent_usd]), [[day(1), 3]]);
    } finally {
      await d.admin.post('/v1/test/clock', { offset_seconds: 0 });
    }
  });

  it('refuses bad parameters with a field, and other methods', async () => {
    const bad = [
      [{ group_by: 'tenants' }, 'group_by'],
      [{ group_by: '' }, 'group_by'],
      [{ from: '2026-13-01' }, 'from'],
      [{ from: '2026-02-30' }, 'from'],
      [{ from: '2026-1-01' }, 'from'],
      [{ to: 'yesterday' }, 'to'],
      [{ from: '2026-03-02', to: '2026-03-01' }, 'from'],
      [{ from: '2025-01-01', to: '2026-01-02' }, 'to'],
      [{ group_by: 'label_prefix' }, 'label_prefix'],
      [{ label_prefix: '' }, 'label_prefix'],
      [{ label_prefix: 'a\u0007' }, 'label_prefix'],
      [{ budget: 'x' }, 'budget'],
      [{ limit: '0' }, 'limit'],
      [{ limit: '1001' }, 'limit'],
      [{ limit: '-1' }, 'limit'],
      [{ cursor: 'abc' }, 'cursor'],
      [{ cursor: '0' }, 'cursor'],
      [{ colour: 'red' }, 'colour'],
    ];
    for (const [q, field] of bad) {
      const r = await d.admin.get(`/v1/usage?${new URLSearchParams(q)}`);
      assertError(r, 400, 'invalid_request', JSON.stringify(q));
      assert.equal(r.json.field, field, `${JSON.stringify(q)}: ${r.text}`);
    }
    // 366 days is the widest range
    assert.equal((await d.admin.get('/v1/usage?from=2025-01-01&to=2026-01-01')).status, 200);
    assertError(await d.admin.post('/v1/usage', {}), 405, 'method_not_allowed');
    assertError(await d.admin.get('/v1/usage', { token: null }), 401, 'unauthorized');
  });

  it("groups by tenant (root's keys under null), and names a tenant's budget as its API does", async () => {
    const q = uniquePrefix('use-t');
    const t = await d.admin.post('/v1/tenants', { name: `${q}acme` });
    assert.equal(t.status, 201, t.text);
    const tid = t.json.id;
    const b = await d.admin.post('/v1/budgets', { name: `${q}acme-team`, usd_cap: 100, window: 'month', tenant: tid });
    assert.equal(b.status, 201, b.text);
    const k = await d.admin.post('/v1/keys', {
      label: `${q}acme-agent`, vendor: 'stripe', allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 1000, expires_in: '24h', tenant: tid, budgets: [`${q}acme-team`],
    });
    assert.equal(k.status, 201, k.text);
    assert.equal((await pay(d, k.json.token, 300)).status, 200);
    const r0 = await d.admin.post('/v1/keys', {
      label: `${q}root-agent`, vendor: 'stripe', allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 1000, expires_in: '24h',
    });
    assert.equal(r0.status, 201, r0.text);
    assert.equal((await pay(d, r0.json.token, 500)).status, 200);
    const range = { from: day(), to: day() };
    const byTenant = await usage(d, { ...range, group_by: 'tenant', label_prefix: `${q}` });
    assert.deepEqual(
      byTenant.data.map((r) => [r.group, r.spent_usd, r.requests]),
      [[null, 5, 1], [tid, 3, 1]],
    );
    const byBudget = await usage(d, { ...range, group_by: 'budget', label_prefix: `${q}acme` });
    assert.deepEqual(byBudget.data.map((r) => [r.group, r.tenant, r.spent_usd]), [[`${q}acme-team`, tid, 3]]);
  });
});
