'use strict';
// hunt_trust_live.test.js - adversarial probes of isolation and of what
// stops spend (docs/tenants.md, docs/budgets.md, docs/policy.md): a scoped
// token against another tenant's objects, revocation of queued and pipelined
// requests, budgets shared through a hierarchy, rate limits, and requests
// that never reached the vendor released, not charged.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');

const { assertError, mkTempDir, rmTempDir, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');
const { pay, allAudit, patch, rawConn, rawPay, statuses } = require('./lib/hunt_trust_util');

// ---- tenant isolation ----------------------------------------------------------------------------

describe('tenant isolation under spellings, parameters and escalation', () => {
  let mocks;
  let d;
  let A, B, tA, tB, kA, kB, kR;

  async function mk(pathname, body, token) {
    const r = await d.admin.post(pathname, body, token ? { token } : undefined);
    assert.equal(r.status, 201, `${pathname} ${JSON.stringify(body)}: ${r.text}`);
    return r.json;
  }
  function keyBody(extra = {}) {
    return {
      label: uniquePrefix('iso'),
      vendor: 'stripe',
      allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 100,
      expires_in: '1h',
      ...extra,
    };
  }

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    A = await mk('/v1/tenants', { name: uniquePrefix('a') });
    B = await mk('/v1/tenants', { name: uniquePrefix('b') });
    tA = await mk('/v1/admin-tokens', { label: 'a ops', tenant: A.id });
    tB = await mk('/v1/admin-tokens', { label: 'b ops', tenant: B.id });
    await mk('/v1/budgets', { name: 'team', usd_cap: 10, window: 'day' }, tB.token);
    await mk('/v1/budgets', { name: 'rootb', usd_cap: 10, window: 'day' });
    kA = await mk('/v1/keys', keyBody(), tA.token);
    kB = await mk('/v1/keys', keyBody({ budgets: ['team'] }), tB.token);
    kR = await mk('/v1/keys', keyBody());
    const r = await pay(d, kB.token);
    assert.equal(r.status, 200, r.text);
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  it("another tenant's key id in every spelling is 404 for GET, PATCH and DELETE, and nothing changes", async () => {
    const id = kB.id;
    const spellings = [
      id,
      id.toUpperCase(),
      id.toLowerCase(),
      encodeURIComponent(id).replace(/v/, '%76'),
      id.replace('_', '%5F'),
      `${id}%20`,
      `%20${id}`,
      `${id}/`,
      `${id}?tenant=${B.id}`,
      `${id}%00`,
      `./${id}`,
      `x/../${id}`,
    ];
    for (const s of spellings) {
      for (const m of ['GET', 'PATCH', 'DELETE']) {
        const r = await d.admin.req(m, `/v1/keys/${s}`, m === 'PATCH' ? { daily_usd_cap: 1 } : undefined, {
          token: tA.token,
        });
        assert.ok(r.status === 404 || r.status === 400, `${m} ${s}: ${r.status} ${r.text}`);
        assert.ok(!r.text.includes(kB.label), `${m} ${s} leaked the label: ${r.text}`);
      }
    }
    const g = await d.admin.get(`/v1/keys/${id}`);
    assert.equal(g.json.status, 'active', g.text);
    assert.equal(g.json.daily_usd_cap, 100, g.text);
  });

  it('?tenant= of another tenant on every list is ignored for a scoped token', async () => {
    for (const p of ['/v1/keys', '/v1/budgets', '/v1/audit', '/v1/admin-tokens', '/v1/tenants']) {
      for (const q of [`?tenant=${B.id}`, `?tenant=${B.id}&tenant=${A.id}`, `?tenant=${A.id}&tenant=${B.id}`, '?tenant=']) {
        const r = await d.admin.get(p + q, { token: tA.token });
        if (r.status !== 200) {
          assert.ok(r.status === 400 || r.status === 404, `${p}${q}: ${r.status} ${r.text}`);
          continue;
        }
        assert.ok(!r.text.includes(B.id), `${p}${q} leaked tenant B: ${r.text.slice(0, 400)}`);
        assert.ok(!r.text.includes(kB.id), `${p}${q} leaked B's key: ${r.text.slice(0, 400)}`);
        assert.ok(!r.text.includes(kR.id), `${p}${q} leaked root's key: ${r.text.slice(0, 400)}`);
      }
    }
  });

  it("a scoped token's audit filters never reach another tenant's records", async () => {
    for (const q of [`key_id=${kB.id}`, `label_prefix=${kB.label}`, 'vendor=stripe', 'decision=allowed', `key_id=${kR.id}`]) {
      const all = await allAudit(d, q, tA.token);
      for (const e of all) {
        assert.equal(e.tenant, A.id, `${q}: ${JSON.stringify(e)}`);
      }
    }
  });

  it('budgets of another tenant and root: no spelling of a name reaches them', async () => {
    for (const s of ['team', 'rootb', `${B.id}%1Fteam`, 'TEAM', 'team%20', encodeURIComponent(`${B.id}\u001fteam`)]) {
      for (const m of ['GET', 'PATCH', 'DELETE']) {
        const r = await d.admin.req(m, `/v1/budgets/${s}?tenant=${B.id}`, m === 'PATCH' ? { usd_cap: 0 } : undefined, {
          token: tA.token,
        });
        assert.ok(r.status === 404 || r.status === 400, `${m} ${s}: ${r.status} ${r.text}`);
      }
    }
    const b = await d.admin.get(`/v1/budgets/team?tenant=${B.id}`);
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.usd_cap, 10);
  });

  it("a key of one tenant cannot name another tenant's budget, not even by its internal name", async () => {
    for (const name of [`${B.id}\u001fteam`, 'rootb']) {
      const r = await d.admin.post('/v1/keys', keyBody({ budgets: [name] }), { token: tA.token });
      assert.ok(r.status === 400, `${JSON.stringify(name)}: ${r.status} ${r.text}`);
    }
    // root cannot link its own key to tenant B's budget through the internal name either
    const r = await d.admin.post('/v1/keys', keyBody({ budgets: [`${B.id}\u001fteam`] }));
    assert.equal(r.status, 400, r.text);
    // nor define one there
    const r2 = await d.admin.post('/v1/keys', keyBody({ budgets: [{ name: `${B.id}\u001fteam`, usd_cap: 1, window: 'day' }] }));
    assert.equal(r2.status, 400, r2.text);
  });

  it('a scoped token cannot mint a root token or a token of another tenant, nor revoke others', async () => {
    const r1 = await d.admin.post('/v1/admin-tokens', { label: 'x', tenant: null }, { token: tA.token });
    if (r1.status === 201) {
      assert.equal(r1.json.tenant, A.id, r1.text);
      const m = await d.admin.get('/metrics', { token: r1.json.token });
      assert.equal(m.status, 404, 'the minted token is not root');
      const l = await d.admin.get('/v1/keys', { token: r1.json.token });
      assert.ok(!l.text.includes(kR.id) && !l.text.includes(kB.id), l.text);
    } else {
      assert.ok(r1.status === 404 || r1.status === 400, r1.text);
    }
    const r2 = await d.admin.post('/v1/admin-tokens', { label: 'x', tenant: B.id }, { token: tA.token });
    assert.equal(r2.status, 404, r2.text);
    const r3 = await d.admin.del(`/v1/admin-tokens/${tB.id}`, { token: tA.token });
    assert.equal(r3.status, 404, r3.text);
    const still = await d.admin.get('/v1/keys', { token: tB.token });
    assert.equal(still.status, 200, 'B token still works');
    for (const p of [`/v1/tenants/${B.id}`, `/v1/tenants/${B.id}/vendors`, `/v1/tenants/${B.id}/vendors/openai`]) {
      const g = await d.admin.get(p, { token: tA.token });
      assert.equal(g.status, 404, `${p}: ${g.text}`);
    }
    const put = await d.admin.req('PUT', `/v1/tenants/${B.id}/vendors/openai`, { secret: 'sk-evil' }, { token: tA.token });
    assert.equal(put.status, 404, put.text);
    for (const p of ['/v1/usage', '/v1/alerts', '/metrics', '/v1/secrets/reencrypt']) {
      const g = await d.admin.req(p === '/v1/secrets/reencrypt' ? 'POST' : 'GET', p, undefined, { token: tA.token });
      assert.equal(g.status, 404, `${p}: ${g.text}`);
    }
    const bulk = await d.admin.post('/v1/keys/revoke', { label_prefix: 'iso' }, { token: tA.token });
    assert.equal(bulk.status, 200, bulk.text);
    assert.equal((await d.admin.get(`/v1/keys/${kB.id}`)).json.status, 'active');
    assert.equal((await d.admin.get(`/v1/keys/${kR.id}`)).json.status, 'active');
  });

  it("root's bulk revocation of a tenant's keys is in that tenant's audit log", async () => {
    const pfx = uniquePrefix('rootbulk') + '/';
    const k1 = await mk('/v1/keys', keyBody({ label: `${pfx}1` }), tA.token);
    await mk('/v1/keys', keyBody({ label: `${pfx}2` }), tA.token);
    const r = await d.admin.post('/v1/keys/revoke', { label_prefix: pfx });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.revoked, 2);
    assert.equal((await d.admin.get(`/v1/keys/${k1.id}`, { token: tA.token })).json.status, 'revoked');
    // docs/tenants.md: keys.bulk_revoked carries the tenant of the keys it changed
    const mine = await allAudit(d, '', tA.token);
    const rev = mine.filter((e) => (e.action === 'keys.bulk_revoked' && e.label === pfx) || (e.action === 'key.revoked' && e.key_id === k1.id));
    assert.equal(rev.length, 1, `tenant A's audit shows no revocation of its keys: ${JSON.stringify(mine.slice(0, 3))}`);
    assert.equal(rev[0].tenant, A.id);
    assert.match(JSON.stringify(rev[0].detail), /"revoked":2/);
    // root's own record of the whole, beside it
    const all = await allAudit(d, `label_prefix=${encodeURIComponent(pfx)}`);
    const roots = all.filter((e) => e.action === 'keys.bulk_revoked' && e.label === pfx);
    assert.equal(roots.length, 2, JSON.stringify(roots));
    assert.deepEqual(roots.map((e) => e.tenant ?? null).sort(), [A.id, null].sort());
  });

  it('deleting a tenant with a live key is refused; its tokens go with it once deleted', async () => {
    const T = await mk('/v1/tenants', { name: uniquePrefix('t') });
    const tt = await mk('/v1/admin-tokens', { label: 't', tenant: T.id });
    const k = await mk('/v1/keys', keyBody(), tt.token);
    const del = await d.admin.del(`/v1/tenants/${T.id}`);
    assertError(del, 409, 'tenant_in_use');
    const rv = await d.admin.del(`/v1/keys/${k.id}`, { token: tt.token });
    assert.equal(rv.status, 204, rv.text);
    const del2 = await d.admin.del(`/v1/tenants/${T.id}`);
    assert.equal(del2.status, 204, del2.text);
    const after = await d.admin.get('/v1/keys', { token: tt.token });
    assert.equal(after.status, 401, after.text);
    // a key cannot be issued for the deleted tenant by root
    const r = await d.admin.post('/v1/keys', keyBody({ tenant: T.id }));
    assert.equal(r.status, 404, r.text);
  });
});

describe('revocation stops queued work at once', () => {
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

  beforeEach(() => mocks.reset());

  it('pipelined requests behind a held one never reach the vendor once DELETE answered', async () => {
    const k = await d.issueKey({ allowed_endpoints: ['POST /v1/payment_intents'] });
    const held = mocks.stripe.nextHold();
    const c = rawConn(d.proxyPort);
    c.sock.write(rawPay(k.token, 1) + rawPay(k.token, 2) + rawPay(k.token, 3));
    const ctl = await held;
    const del = await d.admin.del(`/v1/keys/${k.id}`);
    assert.equal(del.status, 204);
    ctl.respond();
    await waitFor(() => statuses(c.text).length >= 3 || c.closed, { timeoutMs: 10_000, what: 'three answers or close' });
    c.sock.destroy();
    assert.equal(mocks.stripe.requests.length, 1, `the vendor saw ${mocks.stripe.requests.map((r) => r.headers['x-probe'])}`);
    const st = statuses(c.text);
    for (const s of st.slice(1)) assert.equal(s, 401, c.text);
  });

  it('a request held at the vendor with no answer yet gets 401 key_revoked after DELETE', async () => {
    const k = await d.issueKey({ allowed_endpoints: ['POST /v1/payment_intents'] });
    const held = mocks.stripe.nextHold();
    const p = pay(d, k.token);
    const ctl = await held;
    const del = await d.admin.del(`/v1/keys/${k.id}`);
    assert.equal(del.status, 204);
    const r = await p;
    assertError(r, 401, 'key_revoked');
    ctl.res.destroy();
    // the vendor may have acted: the reservation is charged, never released
    const g = await d.admin.get(`/v1/keys/${k.id}`);
    assert.equal(g.json.usage.reserved_usd, 0, g.text);
    assert.equal(g.json.usage.spent_usd, 1, g.text);
  });

  it('bulk revocation by prefix cuts held requests of every matching key, not others', async () => {
    const pfx = uniquePrefix('bulk') + '/';
    const ks = [];
    for (let i = 0; i < 3; i++) ks.push(await d.issueKey({ label: pfx + i, allowed_endpoints: ['POST /v1/payment_intents'] }));
    const other = await d.issueKey({ label: uniquePrefix('other'), allowed_endpoints: ['POST /v1/payment_intents'] });
    const holds = [];
    const ps = [];
    for (const k of [...ks, other]) {
      const h = mocks.stripe.nextHold();
      ps.push(pay(d, k.token));
      holds.push(await h);
    }
    const r = await d.admin.post('/v1/keys/revoke', { label_prefix: pfx });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.revoked, 3);
    const rs = await Promise.all(ps.slice(0, 3));
    for (const x of rs) assertError(x, 401, 'key_revoked');
    holds[3].respond();
    const o = await ps[3];
    assert.equal(o.status, 200, o.text);
    for (const h of holds.slice(0, 3)) h.res.destroy();
  });

  it('PATCH lowering the cap binds the next request; raising it lets it through', async () => {
    const k = await d.issueKey({ allowed_endpoints: ['POST /v1/payment_intents'], daily_usd_cap: 100 });
    assert.equal((await pay(d, k.token, 100)).status, 200);
    const p1 = await patch(d, `/v1/keys/${k.id}`, { daily_usd_cap: 1.5 });
    assert.equal(p1.status, 200, p1.text);
    assertError(await pay(d, k.token, 100), 402 === 0 ? 0 : 429, 'cap_exhausted');
    const p2 = await patch(d, `/v1/keys/${k.id}`, { daily_usd_cap: 2 });
    assert.equal(p2.status, 200, p2.text);
    assert.equal((await pay(d, k.token, 100)).status, 200);
    assertError(await pay(d, k.token, 1), 429, 'cap_exhausted');
  });
});

// ---- budgets shared through a hierarchy, rate limits --------------------------------------------

describe('budgets and rate limits under concurrency', () => {
  let mocks;
  let d;

  async function mkBudget(spec) {
    const r = await d.admin.post('/v1/budgets', spec);
    assert.equal(r.status, 201, r.text);
    return r.json;
  }
  async function issueB(budgets, extra = {}) {
    const r = await d.admin.post('/v1/keys', {
      label: uniquePrefix('hb'),
      vendor: 'stripe',
      allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 1000,
      expires_in: '1h',
      budgets,
      ...extra,
    });
    assert.equal(r.status, 201, r.text);
    return r.json;
  }
  const getB = async (n) => (await d.admin.get(`/v1/budgets/${encodeURIComponent(n)}`)).json;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks, env: { KEYBRAKE_WORKERS: '2' } });
  });

  after(async () => {
    try {
      await d.admin.post('/v1/test/clock', { offset_seconds: 0 });
      if (d) await d.stop();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  it('two child budgets under one parent, 10 keys, 200 concurrent $1 calls: the parent is never overshot', async () => {
    const p = uniquePrefix('team');
    await mkBudget({ name: p, usd_cap: 50, window: 'day' });
    await mkBudget({ name: `${p}-u1`, usd_cap: 40, window: 'day', parent: p });
    await mkBudget({ name: `${p}-u2`, usd_cap: 40, window: 'month', parent: p });
    const keys = [];
    for (let i = 0; i < 8; i++) keys.push(await issueB([i % 2 ? `${p}-u1` : `${p}-u2`]));
    // two paths to the parent: charged once
    keys.push(await issueB([`${p}-u1`, p]));
    keys.push(await issueB([`${p}-u1`, `${p}-u2`]));
    const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => pay(d, keys[i % keys.length].token)));
    const ok = rs.filter((r) => r.status === 200).length;
    for (const r of rs) if (r.status !== 200) assertError(r, 429, 'budget_exhausted');
    assert.equal(ok, 50, 'exactly the parent cap');
    assert.equal(mocks.stripe.requests.length, 50);
    const team = await getB(p);
    const u1 = await getB(`${p}-u1`);
    const u2 = await getB(`${p}-u2`);
    assert.equal(team.usage.spent_usd, 50);
    assert.equal(team.usage.reserved_usd, 0);
    assert.ok(u1.usage.spent_usd <= 40 && u2.usage.spent_usd <= 40, `${u1.usage.spent_usd} ${u2.usage.spent_usd}`);
    assert.equal(u1.usage.reserved_usd + u2.usage.reserved_usd, 0);
  });

  it('alerts fire once per threshold under concurrent settlement', async () => {
    const n = uniquePrefix('al');
    await mkBudget({ name: n, usd_cap: 10, window: 'day', alert_thresholds: [30, 50, 100] });
    const keys = [];
    for (let i = 0; i < 4; i++) keys.push(await issueB([n]));
    await Promise.all(Array.from({ length: 30 }, (_, i) => pay(d, keys[i % 4].token)));
    const r = await d.admin.get(`/v1/alerts?budget=${encodeURIComponent(n)}`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.data.map((a) => a.threshold).sort((a, b) => a - b), [30, 50, 100]);
  });

  it('a budget deleted right after its last key was revoked with a request in flight: no crash, settled', async () => {
    const n = uniquePrefix('del');
    await mkBudget({ name: n, usd_cap: 10, window: 'day' });
    const k = await issueB([n]);
    const held = mocks.stripe.nextHold();
    const p = pay(d, k.token);
    const ctl = await held;
    assert.equal((await d.admin.del(`/v1/keys/${k.id}`)).status, 204);
    const del = await d.admin.del(`/v1/budgets/${encodeURIComponent(n)}`);
    assert.ok(del.status === 204 || del.status === 409, del.text);
    ctl.respond();
    await p;
    const g = await d.admin.get(`/v1/keys/${k.id}`);
    assert.equal(g.status, 200);
    assert.equal(g.json.usage.reserved_usd, 0, g.text);
    const h = await d.admin.get('/healthz');
    assert.equal(h.status, 200);
  });

  it('a request in flight across UTC midnight settles on the day it reserved in; the new day starts free', async () => {
    const now = Date.now();
    const mid = Math.ceil(now / 86_400_000) * 86_400_000;
    const off = Math.floor((mid - now) / 1000) - 30; // 30 s before the next UTC midnight
    assert.equal((await d.admin.post('/v1/test/clock', { offset_seconds: off })).status, 200);
    try {
      const n = uniquePrefix('mid');
      await mkBudget({ name: n, usd_cap: 1, window: 'day' });
      const k = await issueB([n], { daily_usd_cap: 1 });
      const held = mocks.stripe.nextHold();
      const p = pay(d, k.token);
      const ctl = await held;
      const before = await getB(n);
      assert.equal(before.usage.reserved_usd, 1);
      assert.equal((await d.admin.post('/v1/test/clock', { offset_seconds: off + 60 })).status, 200);
      ctl.respond();
      assert.equal((await p).status, 200);
      const after = await getB(n);
      assert.notEqual(after.usage.period, before.usage.period);
      assert.deepEqual([after.usage.spent_usd, after.usage.reserved_usd], [0, 0], JSON.stringify(after.usage));
      const ku = (await d.admin.get(`/v1/keys/${k.id}`)).json.usage;
      assert.deepEqual([ku.spent_usd, ku.reserved_usd], [0, 0], JSON.stringify(ku));
      const again = await pay(d, k.token);
      assert.equal(again.status, 200, again.text);
      // the old day kept what it spent
      const u = await d.admin.get(`/v1/usage?group_by=budget&budget=${encodeURIComponent(n)}&from=${before.usage.period}&to=${after.usage.period}`);
      assert.equal(u.status, 200, u.text);
      assert.deepEqual(u.json.data.map((r) => [r.day, r.spent_usd]), [[before.usage.period, 1], [after.usage.period, 1]]);
    } finally {
      await d.admin.post('/v1/test/clock', { offset_seconds: 0 });
    }
  });

  it("a parent changed, or deleted and made again, while a reservation is in flight: the reservation settles where it was taken", async () => {
    const p = uniquePrefix('mv');
    for (const n of ['P1', 'P2']) await mkBudget({ name: `${p}-${n}`, usd_cap: 10, window: 'day' });
    await mkBudget({ name: `${p}-C`, usd_cap: 10, window: 'day', parent: `${p}-P1` });
    const k = await issueB([`${p}-C`]);
    let held = mocks.stripe.nextHold();
    let req = pay(d, k.token);
    let ctl = await held;
    assert.equal((await patch(d, `/v1/budgets/${p}-C`, { parent: `${p}-P2` })).status, 200);
    ctl.respond();
    assert.equal((await req).status, 200);
    const u = async (n) => (await getB(`${p}-${n}`)).usage;
    assert.deepEqual([(await u('P1')).spent_usd, (await u('P1')).reserved_usd], [1, 0]);
    assert.deepEqual([(await u('P2')).spent_usd, (await u('P2')).reserved_usd], [0, 0]);
    // reserve on P2, unlink it, delete it, make a new P2: the new one is untouched
    held = mocks.stripe.nextHold();
    req = pay(d, k.token);
    ctl = await held;
    assert.equal((await patch(d, `/v1/budgets/${p}-C`, { parent: null })).status, 200);
    assert.equal((await d.admin.del(`/v1/budgets/${p}-P2`)).status, 204);
    await mkBudget({ name: `${p}-P2`, usd_cap: 5, window: 'day' });
    ctl.respond();
    assert.equal((await req).status, 200);
    assert.deepEqual([(await u('P2')).spent_usd, (await u('P2')).reserved_usd, (await u('P2')).requests], [0, 0, 0]);
    assert.deepEqual([(await u('C')).spent_usd, (await u('C')).reserved_usd], [2, 0]);
  });

  it('a rate limit is exact under concurrency, and Retry-After names when the next request passes', async () => {
    const r0 = await d.admin.post('/v1/keys', {
      label: uniquePrefix('rl'),
      vendor: 'stripe',
      allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 1000,
      expires_in: '2h',
      rate_limit: { requests: 5, per: 'minute' },
    });
    assert.equal(r0.status, 201, r0.text);
    const k = r0.json;
    const rs = await Promise.all(Array.from({ length: 40 }, () => pay(d, k.token)));
    const ok = rs.filter((r) => r.status === 200).length;
    assert.equal(ok, 5);
    assert.equal(mocks.stripe.requests.length, 5);
    let ra = 0;
    for (const r of rs) {
      if (r.status === 200) continue;
      assertError(r, 429, 'rate_limited');
      ra = Math.max(ra, Number(r.headers['retry-after']));
    }
    assert.ok(ra >= 11 && ra <= 12, `Retry-After ${ra}: one request per 12 s refills`);
    // the key's spend: only the 5 admitted
    const g = await d.admin.get(`/v1/keys/${k.id}`);
    assert.equal(g.json.usage.spent_usd, 5, g.text);
    assert.equal(g.json.usage.requests, 5, g.text);
    // Retry-After seconds later exactly one passes
    const c = await d.admin.post('/v1/test/clock', { offset_seconds: ra });
    assert.equal(c.status, 200, c.text);
    const a = await pay(d, k.token);
    assert.equal(a.status, 200, a.text);
    const b = await pay(d, k.token);
    assertError(b, 429, 'rate_limited');
    await d.admin.post('/v1/test/clock', { offset_seconds: 0 });
  });
});

// ---- spend that did not happen --------------------------------------------------------------

describe('a request that never reached the vendor is not charged', () => {
  // A vendor behind https:// that takes the TCP connection and reads the
  // TLS ClientHello but never answers it: the handshake never ends, so not
  // one byte of the HTTP request can have been written to it.
  let stall;
  let conns = [];
  let d;

  before(async () => {
    stall = net.createServer((s) => {
      conns.push(s);
      s.on('error', () => {});
      s.on('data', () => {});
    });
    await new Promise((r) => stall.listen(0, '127.0.0.1', r));
    d = await startDaemon({
      baseUrls: { stripe: `https://127.0.0.1:${stall.address().port}` },
      env: { KEYBRAKE_UPSTREAM_TIMEOUT: '60' },
    });
  });

  after(async () => {
    try {
      if (d) await d.stop();
    } finally {
      for (const s of conns) s.destroy();
      stall.close();
    }
  });

  async function usage(k) {
    return (await d.admin.get(`/v1/keys/${k.id}`)).json.usage;
  }

  async function stalled(k) {
    const before = conns.length;
    const c = rawConn(d.proxyPort);
    c.sock.write(rawPay(k.token, 1));
    await waitFor(() => conns.length > before, { what: 'the connection to the vendor' });
    await waitFor(async () => (await usage(k)).reserved_usd === 1, { what: 'the reservation' });
    return c;
  }

  it('the client leaves while the vendor connection is still in its TLS handshake: released, not charged', async () => {
    const k = await d.issueKey({ allowed_endpoints: ['POST /v1/payment_intents'], daily_usd_cap: 10 });
    const c = await stalled(k);
    c.sock.destroy();
    await waitFor(async () => (await usage(k)).reserved_usd === 0, { what: 'the settlement' });
    const u = await usage(k);
    assert.equal(u.spent_usd, 0, `nothing reached the vendor, yet ${u.spent_usd} USD was charged`);
    const recs = (await allAudit(d, `key_id=${k.id}`)).filter((e) => e.kind === 'proxy');
    assert.equal(recs.length, 1, JSON.stringify(recs));
    assert.equal(recs[0].completed, true);
    assert.equal(recs[0].settled_usd, 0, JSON.stringify(recs[0]));
    assert.notDeepEqual(recs[0].detail, { outcome: 'unknown' });
  });

  it('a shutdown timeout while the vendor connection is still in its TLS handshake: released, not charged', async () => {
    const dataDir = mkTempDir();
    const secrets = d.secrets;
    const env = { KEYBRAKE_UPSTREAM_TIMEOUT: '60', KEYBRAKE_SHUTDOWN_TIMEOUT: '300ms' };
    const baseUrls = { stripe: `https://127.0.0.1:${stall.address().port}` };
    let d2 = await startDaemon({ dataDir, secrets, baseUrls, env });
    try {
      const k = await d2.issueKey({ allowed_endpoints: ['POST /v1/payment_intents'], daily_usd_cap: 10 });
      const before = conns.length;
      const c = rawConn(d2.proxyPort);
      c.sock.write(rawPay(k.token, 1));
      await waitFor(() => conns.length > before, { what: 'the connection to the vendor' });
      await waitFor(async () => (await d2.admin.get(`/v1/keys/${k.id}`)).json.usage.reserved_usd === 1, { what: 'the reservation' });
      await d2.stop();
      c.sock.destroy();
      d2 = await startDaemon({ dataDir, secrets, baseUrls, env });
      const u = (await d2.admin.get(`/v1/keys/${k.id}`)).json.usage;
      assert.deepEqual([u.spent_usd, u.reserved_usd], [0, 0], `nothing reached the vendor: ${JSON.stringify(u)}`);
      await d2.stop();
    } finally {
      if (!d2.exited) await d2.kill();
      rmTempDir(dataDir);
    }
  });

  it('the key is revoked while the vendor connection is still in its TLS handshake: 401, released', async () => {
    const k = await d.issueKey({ allowed_endpoints: ['POST /v1/payment_intents'], daily_usd_cap: 10 });
    const c = await stalled(k);
    assert.equal((await d.admin.del(`/v1/keys/${k.id}`)).status, 204);
    await waitFor(() => statuses(c.text).length >= 1 || c.closed, { what: 'the answer' });
    c.sock.destroy();
    assert.deepEqual(statuses(c.text), [401], c.text);
    await waitFor(async () => (await usage(k)).reserved_usd === 0, { what: 'the settlement' });
    const u = await usage(k);
    assert.equal(u.spent_usd, 0, `nothing reached the vendor, yet ${u.spent_usd} USD was charged`);
  });
});
