'use strict';
// rotation.test.js - vendor secrets change on SIGHUP without a restart
// (issue 14 item 3): requests admitted after the reload carry the new
// secret, a request already in flight finishes with the old one (and its
// answer is still scrubbed of it); a vendor given its first secret can be
// issued keys at once; a reload that does not load changes no secret.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { assertError, mkTempDir, rmTempDir, startDaemon, streamRequest, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const OLD = 'sk_test_rotation_old_0123456789abcdef';
const NEW = 'sk_test_rotation_new_fedcba9876543210';
const OPENAI = 'sk-proj-rotation-first-secret-0123456789';

describe('vendor secrets on SIGHUP', () => {
  let mocks;
  let d;
  let dir;
  let conf;

  // rewrites the file, sends SIGHUP and waits for the daemon's verdict
  async function reload(text, verdict = /reloaded/) {
    fs.writeFileSync(conf, text);
    const done = d.waitForStderr(verdict);
    d.signal('SIGHUP');
    await done;
  }

  before(async () => {
    mocks = await startMockVendors();
    dir = mkTempDir();
    conf = path.join(dir, 'keybrake.ini');
    fs.writeFileSync(conf, `[vendor.stripe]\nsecret = ${OLD}\n`);
    // openai starts without a secret
    d = await startDaemon({ mocks, args: ['--config', conf], secrets: { stripe: 'sk_env_unused_0000000000', openai: null } });
  });
  after(async () => {
    if (d) await d.stop();
    if (mocks) await mocks.close();
    if (dir) rmTempDir(dir);
  });
  beforeEach(() => mocks.reset());

  it('new requests carry the new secret; one in flight finishes with the old, scrubbed', async () => {
    const key = await d.issueKey({ label: uniquePrefix('rot'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    const get = () =>
      d.proxy({ method: 'GET', path: '/stripe/v1/payment_intents/pi_rot', headers: { authorization: `Bearer ${key.token}` } });
    assert.equal((await get()).status, 200);
    assert.equal(mocks.stripe.requests[0].headers.authorization, `Bearer ${OLD}`);

    // a request admitted before the reload: its answer arrives after it
    const ctlP = mocks.stripe.nextStream();
    const clientP = streamRequest({
      port: d.proxyPort,
      method: 'GET',
      path: '/stripe/v1/events',
      headers: { authorization: `Bearer ${key.token}` },
    });
    const ctl = await ctlP;
    const client = await clientP;
    assert.equal(mocks.stripe.requests[1].headers.authorization, `Bearer ${OLD}`);

    await reload(`[vendor.stripe]\nsecret = ${NEW}\n`);
    assert.equal((await get()).status, 200);
    assert.equal(mocks.stripe.requests[2].headers.authorization, `Bearer ${NEW}`, 'the new secret is injected');

    // the old request's answer echoes the secret it was sent with
    ctl.write(`{"echo":"${OLD}"}`);
    ctl.end();
    const all = await client.rest();
    assert.ok(!all.includes(OLD), all);
    assert.ok(all.includes(`{"echo":"${'*'.repeat(OLD.length)}"}`), all);

    // and an answer echoing the new secret is scrubbed too
    mocks.stripe.nextHandler((rec, res) => {
      const body = JSON.stringify({ echo: rec.headers.authorization });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    const r = await get();
    assert.ok(!r.text.includes(NEW), r.text);
    assert.ok(r.text.includes('*'.repeat(NEW.length)), r.text);
  });

  it('a vendor given its first secret by a reload can be used at once', async () => {
    const res = await d.admin.post('/v1/keys', { label: uniquePrefix('rot-none'), vendor: 'openai', allowed_endpoints: ['/v1/*'], daily_usd_cap: 1, expires_in: '1h' });
    assertError(res, 400, 'vendor_not_configured');
    await reload(`[vendor.stripe]\nsecret = ${NEW}\n[vendor.openai]\nsecret = ${OPENAI}\n`);
    const key = await d.issueKey({ label: uniquePrefix('rot-first'), vendor: 'openai' });
    const r = await d.proxy({ method: 'GET', path: '/openai/v1/models', headers: { authorization: `Bearer ${key.token}` } });
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.openai.requests[0].headers.authorization, `Bearer ${OPENAI}`);
  });

  it('a reload that does not load changes no secret', async () => {
    const key = await d.issueKey({ label: uniquePrefix('rot-bad'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    await reload(`[vendor.stripe]\nsecret = sk_never_applied_000000000\nbogus = 1\n`, /reload failed; nothing changed/);
    const r = await d.proxy({ method: 'GET', path: '/stripe/v1/payment_intents/pi_rot2', headers: { authorization: `Bearer ${key.token}` } });
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.stripe.requests[0].headers.authorization, `Bearer ${NEW}`);
  });
});
