'use strict';
// keycache.test.js - the key path does not wait on the store (issue 15
// item 2): a worker serves keys it has seen from memory; a revocation
// makes it forget that key only, not every key; a key it has not seen is
// read off the loop; the streams of a revoked key are cut, also when the
// revocation log lost entries (then the keys in flight are read again).

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');

const { assertError, metric, startDaemon, streamRequest, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');


describe('key cache and revocations', () => {
  let mocks;
  let d;
  const reads = async () => metric((await d.admin.get('/metrics')).text, 'keybrake_key_store_reads_total');

  before(async () => {
    mocks = await startMockVendors();
    // one worker: which worker's cache a connection lands on is then known
    d = await startDaemon({ mocks, env: { KEYBRAKE_WORKERS: '1' } });
  });
  after(async () => {
    if (d) await d.stop();
    if (mocks) await mocks.close();
  });
  beforeEach(() => mocks.reset());

  const key = (label) => d.issueKey({ label: uniquePrefix(label), vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
  const call = (k, body) =>
    d.proxy({
      method: body ? 'POST' : 'GET',
      path: body ? '/stripe/v1/customers' : '/stripe/v1/payment_intents/pi_kc',
      headers: { authorization: `Bearer ${k.token}`, ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      body,
    });

  it('a key is read once, then served from memory; another key\'s revocation does not evict it', async () => {
    const a = await key('kc-a');
    const b = await key('kc-b');
    const c = await key('kc-c');
    const r0 = await reads();
    assert.equal((await call(a)).status, 200);
    assert.equal((await call(b)).status, 200);
    assert.equal((await call(c)).status, 200);
    assert.equal(await reads(), r0 + 3, 'each new key read once');
    for (let i = 0; i < 3; i++) {
      assert.equal((await call(a)).status, 200);
      assert.equal((await call(b)).status, 200);
    }
    assert.equal(await reads(), r0 + 3, 'seen keys come from memory');

    assert.equal((await d.admin.del(`/v1/keys/${c.id}`)).status, 204);
    assertError(await call(c), 401, 'key_revoked');
    const r1 = await reads();
    assert.equal(r1, r0 + 4, 'the revoked key, and only it, was read again');
    for (let i = 0; i < 3; i++) {
      assert.equal((await call(a)).status, 200);
      assert.equal((await call(b)).status, 200);
    }
    assert.equal(await reads(), r1, 'a revocation of another key evicted nothing');
  });

  it('revoking by label prefix evicts those keys, at once, and no other', async () => {
    const prefix = uniquePrefix('kc-run');
    const run1 = await d.issueKey({ label: `${prefix}/1`, vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
    const run2 = await d.issueKey({ label: `${prefix}/2`, vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
    const other = await key('kc-other');
    for (const k of [run1, run2, other]) assert.equal((await call(k)).status, 200);
    const r = await d.admin.post('/v1/keys/revoke', { label_prefix: `${prefix}/` });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.revoked, 2);
    const before = await reads();
    assertError(await call(run1), 401, 'key_revoked');
    assertError(await call(run2), 401, 'key_revoked');
    assert.equal((await call(other)).status, 200);
    assert.equal(await reads(), before + 2);
  });

  it('a key first used on a request with a body is read, checked before the body, and served', async () => {
    const k = await d.issueKey({ label: uniquePrefix('kc-body'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    const before = await reads();
    const r = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=500&currency=usd',
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(await reads(), before + 1, 'read once, for the gate and the handler both');
    assert.equal(mocks.stripe.requests.length, 1);
    // a malformed token: refused without a read
    const u = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${k.token.slice(0, -8)}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=500&currency=usd',
    });
    assertError(u, 401, 'invalid_token');
    assert.equal(await reads(), before + 1);
    assert.equal(mocks.stripe.requests.length, 1);
  });
});

describe('streams of revoked keys, when the revocation log lost entries', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    // every revocation publishes "any key may be revoked": the watch then
    // reads the keys in flight from the store
    d = await startDaemon({ mocks, env: { KEYBRAKE_TEST_REVOKE_ALL: '1' } });
  });
  after(async () => {
    if (d) await d.stop();
    if (mocks) await mocks.close();
  });

  async function openStream(k) {
    const upP = mocks.stripe.nextStream();
    const c = await streamRequest({
      port: d.proxyPort,
      method: 'GET',
      path: '/stripe/v1/events',
      headers: { authorization: `Bearer ${k.token}` },
    });
    const up = await upP;
    up.write('{"first":1}');
    await c.readUntil((t) => t.includes('"first"'));
    return { c, up };
  }

  it('the revoked key\'s stream is cut; another key\'s goes on', { timeout: 20_000 }, async () => {
    const prefix = uniquePrefix('lost');
    const victim = await d.issueKey({ label: `${prefix}/victim`, vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
    const bystander = await d.issueKey({ label: uniquePrefix('lost-by'), vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
    const v = await openStream(victim);
    const b = await openStream(bystander);
    const upClosed = new Promise((resolve) => v.up.res.on('close', resolve));
    const r = await d.admin.post('/v1/keys/revoke', { label_prefix: `${prefix}/` });
    assert.equal(r.status, 200, r.text);
    await v.c.rest().catch(() => {});
    assert.equal(v.c.res.complete, false, 'the cut response did not end as a complete message');
    await upClosed;
    // the bystander's stream still flows and ends whole
    b.up.write('{"second":2}');
    await b.c.readUntil((t) => t.includes('"second"'));
    b.up.end();
    const rest = await b.c.rest();
    assert.equal(b.c.res.complete, true, rest);
  });
});
