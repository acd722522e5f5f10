'use strict';
// cap_stream.test.js - a cap under a steady stream: each client sends its
// next request as soon as the last is answered, so the store writer's
// batches hold some requests' settlements and others' admissions together
// (on PostgreSQL one round trip carries both, and a run of admissions is
// decided by one statement). Whatever the mix, a $500 cap on $10 requests
// lets exactly 50 through. A regression test: an admission alone in its
// run once read the settlements' answer as its own on PostgreSQL, and was
// admitted over the cap.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { assertError, mkTempDir, rmTempDir, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

describe('a cap under a steady stream', () => {
  let mocks;
  let d;
  let dir;

  before(async () => {
    mocks = await startMockVendors();
    dir = mkTempDir();
    const conf = path.join(dir, 'keybrake.ini');
    // a generic vendor with a fixed price, fronting the Stripe mock
    fs.writeFileSync(conf, `[vendor.acme]\nbase_url = ${mocks.stripe.url}\nsecret = sk_acme_stream\ncost = GET /v1/* 10\n`);
    d = await startDaemon({ mocks, args: ['--config', conf], env: { KEYBRAKE_WORKERS: '2' } });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
      if (dir) rmTempDir(dir);
    }
  });

  for (const clients of [1, 3, 8, 24]) {
    it(`${clients} client(s) in a loop, $10 requests on a $500 key: exactly 50 forwarded`, async () => {
      mocks.reset();
      const key = await d.issueKey({ label: uniquePrefix('stream'), vendor: 'acme', daily_usd_cap: 500, allowed_endpoints: ['GET /v1/*'] });
      let forwarded = 0;
      const client = async () => {
        for (let refused = 0; refused < 3; ) {
          const r = await d.proxy({ method: 'GET', path: '/acme/v1/payment_intents', headers: { authorization: `Bearer ${key.token}` } });
          if (r.status === 200) forwarded++;
          else {
            assertError(r, 429, 'cap_exhausted');
            refused++;
          }
        }
      };
      await Promise.all(Array.from({ length: clients }, client));
      assert.equal(forwarded, 50, 'exactly 50 forwarded');
      assert.equal(mocks.stripe.requests.length, 50, 'the vendor saw exactly 50');
      const r = await d.admin.get(`/v1/keys/${key.id}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.usage.spent_usd, 500);
      assert.equal(r.json.usage.reserved_usd, 0);
    });
  }
});
