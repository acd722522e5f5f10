'use strict';
// headers.test.js - the request headers each vendor receives are an
// explicit list (issue 14 item 6, vendor/profile.c): what the official SDKs
// send for that vendor passes, anything else is dropped; an operator widens
// a vendor's list with `forward_headers`; the never-forwarded headers
// (credentials, framing, overrides) stay out whatever a list says.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { OpenAI } = require('openai');
const { Anthropic } = require('@anthropic-ai/sdk');

const { mkTempDir, rmTempDir, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

// What a request of each vendor carries besides its credential: headers
// its SDKs send (must arrive as sent) and look-alikes (must not).
const CASES = {
  stripe: {
    path: '/v1/payment_intents/pi_hdr1',
    pass: {
      'stripe-version': '2025-10-29.clover',
      'x-stripe-client-user-agent': '{"lang":"node"}',
      'x-stripe-client-telemetry': '{"last_request_metrics":{}}',
      'idempotency-key': 'idem-hdr-1',
      'user-agent': 'Stripe/v1 NodeBindings/19',
      accept: 'application/json',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    },
  },
  openai: {
    path: '/v1/models',
    pass: {
      'x-stainless-lang': 'js',
      'X-Stainless-Package-Version': '6.0.0',
      'x-stainless-retry-count': '0',
      'openai-beta': 'assistants=v2',
      'x-client-request-id': 'c-123',
    },
  },
  anthropic: {
    path: '/v1/models',
    pass: {
      'anthropic-version': '2023-06-01',
      'anthropic-beta': 'prompt-caching-2024-07-31',
      'x-stainless-os': 'Linux',
    },
  },
  twilio: {
    path: null, // the account's path, once the secrets are known
    pass: { 'accept-charset': 'utf-8', 'x-twilio-webhook-enabled': 'true' },
  },
};
const DROPPED = {
  'x-custom-header': 'not listed',
  'x-debug-mode': 'on',
  x_stainless_lang: 'underscore look-alike',
  'stainless-lang': 'near miss',
  'x-stripe-version': 'near miss',
  'openai-beta-x': 'near miss',
};

function credential(vendor, token) {
  return vendor === 'anthropic' ? { 'x-api-key': token } : { authorization: `Bearer ${token}` };
}

function recordHeaderNames(rec) {
  return rec.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
}

describe('request headers forwarded to each vendor', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    CASES.twilio.path = `/2010-04-01/Accounts/${d.secrets.twilioSid}/Messages/SM123.json`;
  });
  after(async () => {
    if (d) await d.stop();
    if (mocks) await mocks.close();
  });
  beforeEach(() => mocks.reset());

  for (const vendor of Object.keys(CASES)) {
    it(`${vendor}: what its SDKs send arrives as sent; anything else is dropped`, async () => {
      const c = CASES[vendor];
      const key = await d.issueKey({ label: uniquePrefix(`hdr-${vendor}`), vendor });
      const r = await d.proxy({
        method: 'GET',
        path: `/${vendor}${c.path}`,
        headers: { ...credential(vendor, key.token), ...c.pass, ...DROPPED },
      });
      assert.equal(r.headers['keybrake-error'], undefined, r.text);
      assert.equal(mocks[vendor].requests.length, 1);
      const rec = mocks[vendor].requests[0];
      for (const [n, v] of Object.entries(c.pass))
        assert.equal(rec.headers[n.toLowerCase()], v, `${n} did not arrive as sent`);
      const names = recordHeaderNames(rec);
      for (const n of Object.keys(DROPPED)) assert.ok(!names.includes(n), `${n} was forwarded to ${vendor}`);
    });
  }

  it('a header of one vendor is not forwarded to another', async () => {
    const key = await d.issueKey({ label: uniquePrefix('hdr-cross'), vendor: 'anthropic' });
    const r = await d.proxy({
      method: 'GET',
      path: '/anthropic/v1/models',
      headers: { 'x-api-key': key.token, 'stripe-version': '2025-10-29.clover', 'openai-beta': 'x' },
    });
    assert.equal(r.status, 200, r.text);
    const names = recordHeaderNames(mocks.anthropic.requests[0]);
    assert.ok(!names.includes('stripe-version') && !names.includes('openai-beta'), names.join(','));
  });

  it('the openai and anthropic SDKs reach the vendor with their own headers', async () => {
    const ok = await d.issueKey({ label: uniquePrefix('hdr-sdk-o'), vendor: 'openai' });
    const openai = new OpenAI({ apiKey: ok.token, baseURL: `${d.proxyUrl}/openai/v1`, maxRetries: 0 });
    await openai.models.list();
    const orec = mocks.openai.requests[0];
    for (const n of ['x-stainless-lang', 'x-stainless-package-version', 'x-stainless-runtime', 'user-agent'])
      assert.ok(orec.headers[n], `openai SDK header ${n} missing: ${JSON.stringify(orec.headers)}`);

    const ak = await d.issueKey({ label: uniquePrefix('hdr-sdk-a'), vendor: 'anthropic' });
    const anthropic = new Anthropic({ apiKey: ak.token, baseURL: `${d.proxyUrl}/anthropic`, maxRetries: 0 });
    await anthropic.models.list();
    const arec = mocks.anthropic.requests[0];
    assert.match(arec.headers['anthropic-version'] || '', /^\d{4}-\d{2}-\d{2}$/, JSON.stringify(arec.headers));
    assert.ok(arec.headers['x-stainless-lang'], JSON.stringify(arec.headers));
  });
});

describe('forward_headers: an operator widens a vendor list', () => {
  let mocks;
  let d;
  let conf;
  let dir;

  before(async () => {
    mocks = await startMockVendors();
    dir = mkTempDir();
    conf = path.join(dir, 'keybrake.ini');
    // a generic vendor fronting the Stripe mock, with its own list; its
    // secret is injected like any vendor's
    fs.writeFileSync(
      conf,
      `[vendor.acme]\nbase_url = ${mocks.stripe.url}\nsecret = sk_acme_generic_secret\n` +
        'forward_headers = X-Acme-Version, x-acme-trace-*\n',
    );
    d = await startDaemon({
      mocks,
      args: ['--config', conf],
      // authorization and host are in the list but never forwarded
      env: { KEYBRAKE_STRIPE_FORWARD_HEADERS: 'x-team-id, x-run-*, authorization, host' },
    });
  });
  after(async () => {
    if (d) await d.stop();
    if (mocks) await mocks.close();
    if (dir) rmTempDir(dir);
  });
  beforeEach(() => mocks.reset());

  it('a built-in vendor: the operator names pass, the built-in list still does, the rest is dropped', async () => {
    const key = await d.issueKey({ label: uniquePrefix('fh-stripe'), vendor: 'stripe' });
    const r = await d.proxy({
      method: 'GET',
      path: '/stripe/v1/payment_intents/pi_fh',
      headers: {
        authorization: `Bearer ${key.token}`,
        'x-team-id': 'team-7',
        'x-run-id': 'run-9',
        'stripe-version': '2025-10-29.clover',
        'x-other': 'dropped',
      },
    });
    assert.equal(r.status, 200, r.text);
    const rec = mocks.stripe.requests[0];
    assert.equal(rec.headers['x-team-id'], 'team-7');
    assert.equal(rec.headers['x-run-id'], 'run-9');
    assert.equal(rec.headers['stripe-version'], '2025-10-29.clover');
    assert.equal(rec.headers['x-other'], undefined);
    assert.equal(rec.headers.authorization, `Bearer ${d.secrets.stripe}`, 'exactly one credential, ours');
    assert.equal(rec.rawHeaders.filter((n) => n.toLowerCase() === 'authorization').length, 1);
  });

  it('a generic vendor: the common list and its forward_headers, nothing else', async () => {
    const key = await d.issueKey({ label: uniquePrefix('fh-acme'), vendor: 'acme' });
    const r = await d.proxy({
      method: 'GET',
      path: '/acme/v1/things',
      headers: {
        authorization: `Bearer ${key.token}`,
        'x-acme-version': '3',
        'x-acme-trace-id': 't-1',
        'user-agent': 'agent/1',
        'idempotency-key': 'i-1',
        'x-team-id': 'only stripe lists it',
        'stripe-version': 'only stripe lists it',
      },
    });
    assert.equal(r.headers['keybrake-error'], undefined, r.text);
    assert.equal(mocks.stripe.requests.length, 1);
    const rec = mocks.stripe.requests[0];
    assert.equal(rec.headers['x-acme-version'], '3');
    assert.equal(rec.headers['x-acme-trace-id'], 't-1');
    assert.equal(rec.headers['user-agent'], 'agent/1');
    assert.equal(rec.headers['idempotency-key'], 'i-1');
    assert.equal(rec.headers['x-team-id'], undefined);
    assert.equal(rec.headers['stripe-version'], undefined);
    assert.equal(rec.headers.authorization, 'Bearer sk_acme_generic_secret');
  });

  it('a forward_headers entry that is not a header name stops the start, naming it', async () => {
    const dataDir = mkTempDir();
    try {
      await assert.rejects(
        startDaemon({ dataDir, env: { KEYBRAKE_OPENAI_FORWARD_HEADERS: 'x-ok, x:bad' } }),
        /exited \(code [1-9]\d*, signal null\) before ready[\s\S]*forward_headers[\s\S]*x:bad/i,
      );
      await assert.rejects(
        startDaemon({ dataDir, env: { KEYBRAKE_OPENAI_FORWARD_HEADERS: 'x-*-bad' } }),
        /exited \(code [1-9]\d*, signal null\) before ready[\s\S]*forward_headers/i,
      );
    } finally {
      rmTempDir(dataDir);
    }
  });
});
