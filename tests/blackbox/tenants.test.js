'use strict';
// tenants.test.js - tenants and scoped admin tokens (issue 16, item 2;
// docs/tenants.md): /v1/tenants, /v1/admin-tokens, a tenant token against
// every route on another tenant's objects and on root's (404 each time,
// never 403), budget names unique per tenant, revoked admin tokens refused
// at their next request, a tenant deleted only once it owns no active key,
// and audit records carrying their tenant while the chain still verifies.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { BIN, assertError, mkTempDir, rmTempDir, startDaemon, storeEnv, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

function patch(d, p, body, token) {
  return d.admin.req('PATCH', p, body, { token });
}

async function tenant(d, name) {
  const r = await d.admin.post('/v1/tenants', { name });
  assert.equal(r.status, 201, r.text);
  assert.match(r.json.id, /^tn_[A-Za-z0-9]+$/);
  assert.equal(r.json.name, name);
  return r.json;
}

async function token(d, body, as) {
  const r = await d.admin.post('/v1/admin-tokens', body, { token: as });
  assert.equal(r.status, 201, r.text);
  assert.match(r.json.id, /^at_/);
  assert.equal(typeof r.json.token, 'string');
  return r.json;
}

async function issue(d, as, extra = {}) {
  const body = {
    label: uniquePrefix('tk'),
    vendor: 'stripe',
    allowed_endpoints: ['POST /v1/payment_intents'],
    daily_usd_cap: 100,
    expires_in: '1h',
    ...extra,
  };
  const r = await d.admin.post('/v1/keys', body, { token: as });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

async function budget(d, as, spec) {
  const r = await d.admin.post('/v1/budgets', spec, { token: as });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

describe('tenants and scoped admin tokens', () => {
  let mocks;
  let d;
  let A, B, tA, tB, kA, kB, kR;
  const sinkDir = mkTempDir();
  const sink = path.join(sinkDir, 'audit.jsonl');

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks, env: { KEYBRAKE_AUDIT_SINK: sink, KEYBRAKE_AUDIT_CHECKPOINT_EVERY: '5' } });
    A = await tenant(d, 'acme');
    B = await tenant(d, 'globex');
    tA = await token(d, { label: 'acme ops', tenant: A.id });
    tB = await token(d, { label: 'globex ops', tenant: B.id });
    assert.equal(tA.tenant, A.id);
    // each tenant makes its own objects with its own token
    await budget(d, tA.token, { name: 'team', usd_cap: 50, window: 'day' });
    await budget(d, tB.token, { name: 'team', usd_cap: 70, window: 'day' }); // same name, own tenant
    await budget(d, tB.token, { name: 'b-only', usd_cap: 5, window: 'total' });
    await budget(d, undefined, { name: 'root-only', usd_cap: 5, window: 'total' });
    kA = await issue(d, tA.token, { budgets: ['team'] });
    kB = await issue(d, tB.token, { budgets: ['team'] });
    kR = await issue(d);
  });

  after(async () => {
    if (d) await d.stop();
    if (mocks) await mocks.close();
    rmTempDir(sinkDir);
  });

  it('objects belong to the tenant of the token that made them', async () => {
    assert.equal(kA.tenant, A.id);
    assert.equal(kB.tenant, B.id);
    assert.equal(kR.tenant, null);
    assert.deepEqual(kA.budgets, ['team']);
    const a = await d.admin.get('/v1/budgets/team', { token: tA.token });
    const b = await d.admin.get('/v1/budgets/team', { token: tB.token });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.usd_cap, 50);
    assert.equal(a.json.tenant, A.id);
    assert.equal(b.json.usd_cap, 70);
    assert.equal(a.json.keys, 1);
    // root reads a tenant's budget with ?tenant=, and root's own by name
    const r = await d.admin.get(`/v1/budgets/team?tenant=${B.id}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.usd_cap, 70);
    assertError(await d.admin.get('/v1/budgets/team'), 404, 'not_found');
  });

  it("a tenant's budget chains stay in its tenant, and refusals name its own names", async () => {
    await budget(d, tA.token, { name: 'org', usd_cap: 500, window: 'month' });
    const child = await budget(d, tA.token, { name: 'squad', usd_cap: 20, window: 'day', parent: 'org' });
    assert.equal(child.parent, 'org');
    assert.equal(child.tenant, A.id);
    // root's budget and B's are not parents A can name
    for (const parent of ['root-only', 'b-only']) {
      const r = await d.admin.post('/v1/budgets', { name: `x-${parent}`, usd_cap: 1, window: 'day', parent }, { token: tA.token });
      assertError(r, 400, 'invalid_request');
      assert.ok(!r.text.includes(A.id) && !r.text.includes('\\u001f'), r.text);
    }
    const dup = await d.admin.post('/v1/budgets', { name: 'team', usd_cap: 1, window: 'day' }, { token: tA.token });
    assertError(dup, 409, 'conflict');
    assert.match(dup.json.message, /"team"/);
    assert.ok(!dup.text.includes(A.id) && !dup.text.includes('\\u001f'), dup.text);
    const inUse = await d.admin.del('/v1/budgets/team', { token: tA.token });
    assertError(inUse, 409, 'budget_in_use');
    const p = await d.admin.req('PATCH', '/v1/budgets/squad', { parent: null }, { token: tA.token });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.parent, null);
    assert.equal((await d.admin.del('/v1/budgets/squad', { token: tA.token })).status, 204);
  });

  it("tenant A's token gets 404 on every route of tenant B's objects", async () => {
    const t = tA.token;
    const probes = [
      ['GET', `/v1/keys/${kB.id}`],
      ['PATCH', `/v1/keys/${kB.id}`, { daily_usd_cap: 1 }],
      ['DELETE', `/v1/keys/${kB.id}`],
      ['GET', '/v1/budgets/b-only'],
      ['PATCH', '/v1/budgets/b-only', { usd_cap: 1 }],
      ['DELETE', '/v1/budgets/b-only'],
      ['GET', `/v1/budgets/b-only?tenant=${B.id}`],
      ['GET', `/v1/tenants/${B.id}`],
      ['DELETE', `/v1/tenants/${B.id}`],
      ['DELETE', `/v1/admin-tokens/${tB.id}`],
      ['POST', '/v1/keys', { label: 'x', vendor: 'stripe', allowed_endpoints: ['POST /v1/payment_intents'], daily_usd_cap: 1, expires_in: '1h', tenant: B.id }],
      ['POST', '/v1/budgets', { name: 'x', usd_cap: 1, window: 'day', tenant: B.id }],
      ['POST', '/v1/admin-tokens', { label: 'x', tenant: B.id }],
      ['PUT', `/v1/tenants/${B.id}/vendors/stripe`, { secret: 'sk_test_nope' }],
      ['GET', `/v1/tenants/${B.id}/vendors/stripe`],
      ['DELETE', `/v1/tenants/${B.id}/vendors/stripe`],
    ];
    for (const [method, p, body] of probes) {
      const r = await d.admin.req(method, p, body, { token: t });
      assert.equal(r.status, 404, `${method} ${p}: ${r.status} ${r.text}`);
      assert.equal(r.json.code, 'not_found', `${method} ${p}`);
    }
    // nothing changed: B's key is active with its cap, B's budget is there
    const k = await d.admin.get(`/v1/keys/${kB.id}`);
    assert.equal(k.json.status, 'active');
    assert.equal(k.json.daily_usd_cap, 100);
    assert.equal((await d.admin.get(`/v1/budgets/b-only?tenant=${B.id}`)).json.usd_cap, 5);
  });

  it("a scoped token cannot see root's objects", async () => {
    const t = tA.token;
    for (const [method, p, body] of [
      ['GET', `/v1/keys/${kR.id}`],
      ['PATCH', `/v1/keys/${kR.id}`, { daily_usd_cap: 1 }],
      ['DELETE', `/v1/keys/${kR.id}`],
      ['GET', '/v1/budgets/root-only'],
      ['DELETE', '/v1/budgets/root-only'],
      ['GET', '/metrics'],
      // usage and alerts span every tenant: root's alone for now
      ['GET', '/v1/usage?group_by=key'],
      ['GET', '/v1/alerts'],
      ['POST', '/v1/tenants', { name: 'sneaky' }],
    ]) {
      const r = await d.admin.req(method, p, body, { token: t });
      assert.equal(r.status, 404, `${method} ${p}: ${r.status} ${r.text}`);
    }
    // root's budgets are not nameable by a tenant's key either
    const r = await d.admin.post('/v1/keys', {
      label: 'x', vendor: 'stripe', allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 1, expires_in: '1h', budgets: ['root-only'],
    }, { token: t });
    assertError(r, 400, 'invalid_request');
    assert.match(r.json.message, /no budget named "root-only"/);
  });

  it('lists show a scoped token its own tenant only', async () => {
    const keys = await d.admin.get('/v1/keys?limit=200', { token: tA.token });
    assert.deepEqual(keys.json.data.map((k) => k.id), [kA.id]);
    const budgets = await d.admin.get('/v1/budgets', { token: tA.token });
    assert.deepEqual(budgets.json.data.map((b) => b.name), ['team', 'org']);
    const tenants = await d.admin.get('/v1/tenants', { token: tA.token });
    assert.deepEqual(tenants.json.data.map((t) => t.id), [A.id]);
    const toks = await d.admin.get('/v1/admin-tokens', { token: tA.token });
    assert.ok(toks.json.data.every((t) => t.tenant === A.id), toks.text);
    assert.ok(toks.json.data.every((t) => !('token' in t)));
    // root sees all, and filters by tenant
    const all = await d.admin.get('/v1/keys?limit=200');
    for (const k of [kA, kB, kR]) assert.ok(all.json.data.some((x) => x.id === k.id));
    const onlyB = await d.admin.get(`/v1/keys?tenant=${B.id}`);
    assert.deepEqual(onlyB.json.data.map((k) => k.id), [kB.id]);
    const rb = await d.admin.get(`/v1/budgets?tenant=${B.id}`);
    assert.deepEqual(rb.json.data.map((b) => b.name).sort(), ['b-only', 'team']);
    const rt = await d.admin.get('/v1/tenants');
    assert.deepEqual(rt.json.data.map((t) => t.id), [A.id, B.id]);
  });

  it("bulk revoke by a scoped token reaches its own keys only", async () => {
    // kB's label starts with 'tk': the same prefix as kA's
    const before = await issue(d, tA.token, { label: 'shared-prefix-a' });
    const other = await issue(d, tB.token, { label: 'shared-prefix-b' });
    const r = await d.admin.post('/v1/keys/revoke', { label_prefix: 'shared-prefix' }, { token: tA.token });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.revoked, 1);
    assert.equal((await d.admin.get(`/v1/keys/${before.id}`)).json.status, 'revoked');
    assert.equal((await d.admin.get(`/v1/keys/${other.id}`)).json.status, 'active');
  });

  it("the audit log shows a scoped token its tenant's records only", async () => {
    const r = await d.admin.get('/v1/audit?limit=200', { token: tA.token });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.data.length >= 2, r.text);
    assert.ok(r.json.data.every((e) => e.tenant === A.id), r.text);
    assert.ok(r.json.data.some((e) => e.action === 'key.issued' && e.key_id === kA.id));
    const none = await d.admin.get(`/v1/audit?key_id=${kB.id}`, { token: tA.token });
    assert.deepEqual(none.json.data, []);
    const root = await d.admin.get(`/v1/audit?tenant=${B.id}&limit=200`);
    assert.ok(root.json.data.length > 0);
    assert.ok(root.json.data.every((e) => e.tenant === B.id));
    const mine = await d.admin.get('/v1/audit?limit=200');
    assert.ok(mine.json.data.some((e) => e.action === 'tenant.created' && e.tenant === A.id));
    assert.ok(mine.json.data.some((e) => e.action === 'admin_token.created' && e.detail.token_id === tA.id));
  });

  it('a revoked admin token is refused at its next request', async () => {
    const t2 = await token(d, { label: 'short-lived' }, tA.token);
    assert.equal(t2.tenant, A.id); // a scoped token makes tokens of its own tenant
    assert.equal((await d.admin.get('/v1/keys', { token: t2.token })).status, 200);
    const r = await d.admin.del(`/v1/admin-tokens/${t2.id}`, { token: tA.token });
    assert.equal(r.status, 204, r.text);
    assertError(await d.admin.get('/v1/keys', { token: t2.token }), 401, 'unauthorized');
    const list = await d.admin.get('/v1/admin-tokens', { token: tA.token });
    const row = list.json.data.find((t) => t.id === t2.id);
    assert.ok(row && row.revoked_at, list.text);
    // only root makes root tokens; root may revoke any token
    const rootTok = await token(d, { label: 'second root' });
    assert.equal(rootTok.tenant, null);
    assert.equal((await d.admin.get('/metrics', { token: rootTok.token })).status, 200);
    assert.equal((await d.admin.del(`/v1/admin-tokens/${rootTok.id}`)).status, 204);
    assertError(await d.admin.get('/v1/keys', { token: rootTok.token }), 401, 'unauthorized');
  });

  it('refuses bad input with a clear error and changes nothing', async () => {
    assertError(await d.admin.post('/v1/tenants', { name: '' }), 400, 'invalid_request');
    assertError(await d.admin.post('/v1/tenants', { name: 'acme' }), 409, 'conflict');
    assertError(await d.admin.post('/v1/tenants', { name: 'x', extra: 1 }), 400, 'invalid_request');
    assertError(await d.admin.post('/v1/admin-tokens', { label: 'x', tenant: 'tn_nope' }), 404, 'not_found');
    assertError(await d.admin.post('/v1/admin-tokens', { tenant: A.id }), 400, 'invalid_request');
    assertError(await d.admin.del('/v1/admin-tokens/at_unknown'), 404, 'not_found');
    assertError(await d.admin.get('/v1/tenants/tn_unknown'), 404, 'not_found');
    assertError(await d.admin.post('/v1/keys', {
      label: 'x', vendor: 'stripe', allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 1, expires_in: '1h', tenant: 'tn_unknown',
    }), 404, 'not_found');
  });

  it('a tenant is deleted only once it owns no active key; its tokens stop', async () => {
    const C = await tenant(d, 'initech');
    const tC = await token(d, { label: 'initech', tenant: C.id });
    const k = await issue(d, undefined, { tenant: C.id }); // root acting for C
    assert.equal(k.tenant, C.id);
    assertError(await d.admin.del(`/v1/tenants/${C.id}`), 409, 'tenant_in_use');
    assert.equal((await d.admin.get('/v1/keys', { token: tC.token })).status, 200);
    assert.equal((await d.admin.del(`/v1/keys/${k.id}`, { token: tC.token })).status, 204);
    assert.equal((await d.admin.del(`/v1/tenants/${C.id}`)).status, 204);
    assertError(await d.admin.get(`/v1/tenants/${C.id}`), 404, 'not_found');
    assertError(await d.admin.get('/v1/keys', { token: tC.token }), 401, 'unauthorized');
    // the name is free again
    await tenant(d, 'initech');
  });

  it('proxied requests of a tenant key are audited under its tenant', async () => {
    const r = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${kA.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=100&currency=usd',
    });
    assert.equal(r.status, 200, r.text);
    const a = await d.admin.get(`/v1/audit?key_id=${kA.id}`, { token: tA.token });
    const e = a.json.data.find((x) => x.action === 'proxy.request');
    assert.ok(e, a.text);
    assert.equal(e.tenant, A.id);
  });

  it("a tenant's exhausted budget is named in the 429 and the audit as its tenant names it", async () => {
    // a regression: the stored name "<tenant>\x1f<name>" reached the agent
    await budget(d, tB.token, { name: 'tiny', usd_cap: 1, window: 'day' });
    const k = await issue(d, tB.token, { budgets: ['tiny'] });
    const r = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=500&currency=usd',
    });
    assertError(r, 429, 'budget_exhausted');
    assert.equal(r.json.budget, 'tiny');
    assert.ok(!r.text.includes(B.id) && !r.text.includes('\\u001f'), r.text);
    const a = await d.admin.get(`/v1/audit?key_id=${k.id}`, { token: tB.token });
    const e = a.json.data.find((x) => x.decision === 'refused');
    assert.ok(e, a.text);
    assert.equal(e.detail.budget, 'tiny', a.text);
  });

  it('the audit chain verifies with tenant records in it, against the JSONL sink too', async () => {
    const env = { ...process.env, KEYBRAKE_DATA_DIR: d.dataDir, ...storeEnv(d.dataDir) };
    const v = spawnSync(BIN, ['audit', 'verify'], { env, encoding: 'utf8' });
    assert.equal(v.status, 0, v.stdout + v.stderr);
    d.signal('SIGTERM'); // stopped, not cleaned up: after() checks its exit and removes it
    await d.waitExit();
    const lines = fs.readFileSync(sink, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.some((r) => r.tenant === A.id && r.action === 'key.issued'));
    assert.ok(lines.filter((r) => !r.tenant).every((r) => !('tenant' in r))); // root's: as before
    const a = spawnSync(BIN, ['audit', 'verify', '--anchor', sink], { env, encoding: 'utf8' });
    assert.equal(a.status, 0, a.stdout + a.stderr);
    assert.match(a.stdout + a.stderr, /anchor .* matches/);
  });
});
