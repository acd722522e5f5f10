'use strict';
// readyz.test.js - /readyz says whether the proxy can admit requests (issue
// 14, item 8): while store commits fail (the test build's
// KEYBRAKE_TEST_FAIL_AUDIT flag file stands for a full disk) every proxied
// request is refused and /readyz answers 503 store_unavailable; once the
// disk is back, /readyz itself probes the store and answers 200 again with
// no proxied traffic at all.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { assertError, mkTempDir, rmTempDir, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

describe('/readyz follows the store writer', () => {
  let mocks;
  let d;
  let flagDir;
  let failFlag; // while this file exists, the test build's store writes fail

  before(async () => {
    mocks = await startMockVendors();
    flagDir = mkTempDir();
    failFlag = path.join(flagDir, 'fail-audit');
    d = await startDaemon({ mocks, env: { KEYBRAKE_TEST_FAIL_AUDIT: failFlag } });
  });

  after(async () => {
    try {
      if (fs.existsSync(failFlag)) fs.rmSync(failFlag);
      if (d) await d.stop();
    } finally {
      if (mocks) await mocks.close();
      rmTempDir(flagDir);
    }
  });

  const readyz = () => d.admin.get('/readyz', { token: null });

  it('ready, then 503 store_unavailable while commits fail, then ready again without traffic', async () => {
    const key = await d.issueKey({ label: uniquePrefix('ready'), vendor: 'stripe', allowed_endpoints: ['GET /v1/payment_intents/*'] });
    const call = () => d.proxy({ path: '/stripe/v1/payment_intents/pi_ready', headers: { authorization: `Bearer ${key.token}` } });
    let r = await readyz();
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { status: 'ready' });
    assert.equal((await call()).status, 200);

    fs.writeFileSync(failFlag, '');
    mocks.reset();
    assertError(await call(), 503, 'audit_unavailable', 'a proxied request while the disk is "full"');
    assert.equal(mocks.count(), 0);

    // refused traffic and /readyz agree, and stay in agreement
    for (let i = 0; i < 3; i++) {
      r = await readyz();
      assert.equal(r.status, 503, r.text);
      assert.equal(r.json.status, 'unavailable');
      assert.equal(r.json.code, 'store_unavailable');
      assert.equal(typeof r.json.message, 'string');
      assert.match(r.json.failing_since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      assert.equal(r.headers['keybrake-error'], 'store_unavailable');
    }
    // many probes at once: one probe write at a time, every caller answered
    const burst = await Promise.all(Array.from({ length: 20 }, readyz));
    for (const b of burst) assert.equal(b.status, 503, b.text);
    // HEAD too (load balancers use it)
    r = await d.admin.req('HEAD', '/readyz', undefined, { token: null });
    assert.equal(r.status, 503);

    // the disk is back: no proxied request comes, /readyz finds out itself
    const back = d.waitForStderr(/store commits again/);
    fs.rmSync(failFlag);
    r = await readyz();
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { status: 'ready' });
    assert.equal(mocks.count(), 0, 'readiness came back without any proxied traffic');
    await back;
    r = await call();
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.count(), 1);
  });

  it('a failing admin write makes it unready too; the next successful one clears it', async () => {
    fs.writeFileSync(failFlag, '');
    try {
      const r = await d.admin.post('/v1/keys', { label: uniquePrefix('ready'), vendor: 'stripe', allowed_endpoints: ['/v1/*'], daily_usd_cap: 10, expires_in: '1h' });
      assertError(r, 503, 'audit_unavailable', 'issuing a key while the disk is "full"');
      assert.equal((await readyz()).status, 503);
    } finally {
      fs.rmSync(failFlag);
    }
    // traffic alone clears it too: the next admin write commits
    const key = await d.issueKey({ label: uniquePrefix('ready'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    assert.ok(key.token);
    assert.equal((await readyz()).status, 200);
  });
});
