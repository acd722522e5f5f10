'use strict';
// ruby.test.js - the Rails guide's lib/keybrake.rb, as printed in
// docs/integrations/rails.md, run with Debian's Ruby (through
// ruby/guide_check.rb) against the real binary: issue, a call through the
// proxy, revoke, with_key revoking when its block raises, every refusal
// class. A missing Ruby fails the test: `make deps-test` installs it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const { mkTempDir, rmTempDir, startDaemon, uniquePrefix } = require('../blackbox/lib/harness');
const { startMockVendors } = require('../blackbox/mock/vendor');
const { requireTool, startDriver } = require('./lib/driver');
const { writeSnippets } = require('./lib/snippets');

describe('Rails guide: lib/keybrake.rb against the real binary', () => {
  let mocks;
  let d;
  let dir;
  let rb; // guide_check.rb: { check(...args), close() }
  const check = (...args) => rb.check(...args);

  before(async () => {
    requireTool('ruby', ['--version'], 'make deps-test installs Debian\'s ruby');
    dir = mkTempDir();
    writeSnippets('rails.md', ['keybrake.rb'], dir);
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    rb = startDriver('ruby', ['-w', path.join(__dirname, 'ruby/guide_check.rb'), path.join(dir, 'keybrake.rb')], {
      KB_ADMIN_URL: d.adminUrl, KB_ADMIN_TOKEN: d.adminToken, KB_PROXY_URL: d.proxyUrl,
    });
  });

  after(async () => {
    try {
      if (rb) await rb.close();
      if (d) await d.stop();
    } finally {
      if (mocks) await mocks.close();
      rmTempDir(dir);
    }
  });

  const status = async (id) => (await d.admin.get(`/v1/keys/${id}`)).json;

  it('issues a key, the proxy takes its token, revoke ends it (twice is fine)', async () => {
    const k = await check('issue', 'openai', '2', '15m', 'POST /v1/chat/completions');
    assert.match(k.id, /^vk_/);
    assert.match(k.token, /^kb_/);
    assert.ok(!k.inspect.includes(k.token), 'Key#inspect must not print the token');
    assert.ok(!k.client.includes(d.adminToken), 'Client#inspect must not print the admin token');
    const got = await status(k.id);
    assert.equal(got.status, 'active');
    assert.equal(got.daily_usd_cap, 2);
    assert.deepEqual(got.allowed_endpoints, ['POST /v1/chat/completions']);
    assert.equal(Date.parse(got.expires_at) - Date.parse(got.created_at), 15 * 60_000);

    mocks.reset();
    assert.deepEqual(await check('chat', k.token), { status: 200 });
    assert.equal(mocks.openai.requests.length, 1);
    assert.deepEqual(await check('revoke', k.id), { revoked: true });
    assert.equal((await status(k.id)).status, 'revoked');
    assert.deepEqual(await check('revoke', k.id), { revoked: true });
    const after = await check('chat', k.token);
    assert.equal(after.code, 'key_revoked');
    assert.equal(after.retryable, false);
    assert.equal(mocks.openai.requests.length, 1);
  });

  it('with_key revokes after its block, returned or raised', async () => {
    const ok = await check('with-key', 'ok');
    assert.equal(ok.result, 42);
    assert.equal((await status(ok.id)).status, 'revoked');
    const raised = await check('with-key', 'raise');
    assert.equal(raised.raised, 'tool failed', 'the block\'s own error comes out');
    assert.match(raised.id, /^vk_/);
    assert.equal((await status(raised.id)).status, 'revoked');
  });

  it('cap_exhausted: spent, not retryable; the vendor never called', async () => {
    mocks.reset();
    const k = await check('issue', 'openai', '0.000001', '5m', 'POST /v1/chat/completions');
    assert.deepEqual(await check('chat', k.token), {
      status: 429, code: 'cap_exhausted', spent: true, retryable: false, retry_after: null,
    });
    assert.equal(mocks.openai.requests.length, 0);
  });

  it('budget_exhausted: spent, not retryable', async () => {
    const r = await d.admin.post('/v1/keys', {
      label: uniquePrefix('ruby-b'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '5m', budgets: [{ name: uniquePrefix('ruby-b'), usd_cap: 0.000001, window: 'day' }],
    });
    assert.equal(r.status, 201, r.text);
    const got = await check('chat', r.json.token);
    assert.equal(got.code, 'budget_exhausted');
    assert.equal(got.spent, true);
    assert.equal(got.retryable, false);
  });

  it('rate_limited: retryable, with Retry-After seconds', async () => {
    const r = await d.admin.post('/v1/keys', {
      label: uniquePrefix('ruby-rl'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '5m', rate_limit: { requests: 1, per: 'minute' },
    });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(await check('chat', r.json.token), { status: 200 });
    const got = await check('chat', r.json.token);
    assert.equal(got.status, 429);
    assert.equal(got.code, 'rate_limited');
    assert.equal(got.spent, false);
    assert.equal(got.retryable, true);
    assert.ok(got.retry_after >= 1 && got.retry_after <= 60, JSON.stringify(got));
  });

  it("the vendor's own 429 is not a Keybrake refusal", async () => {
    const k = await check('issue', 'openai', '2', '5m', 'POST /v1/chat/completions');
    mocks.openai.nextHandler((rec, res) => {
      res.writeHead(429, { 'content-type': 'application/json' });
      res.end('{"error":{"type":"requests","message":"slow down"}}');
    });
    assert.deepEqual(await check('chat', k.token), { status: 429, vendor: true });
  });

  it('admin refusals: not_found for an unknown id, invalid_request for a bad TTL', async () => {
    const nf = await check('revoke', 'vk_doesnotexist000000000');
    assert.equal(nf.status, 404);
    assert.equal(nf.code, 'not_found');
    assert.equal(nf.retryable, false);
    const bad = await check('issue', 'openai', '2', 'forever', 'POST /v1/chat/completions');
    assert.equal(bad.status, 400);
    assert.equal(bad.code, 'invalid_request');
  });

  it('revoke_prefix: the kill switch', async () => {
    const a = await check('issue', 'openai', '1', '5m', '/v1/*');
    const prefix = a.label.slice(0, a.label.indexOf('/') + 1);
    assert.deepEqual(await check('revoke-prefix', prefix), { revoked: 1 });
    assert.equal((await status(a.id)).status, 'revoked');
  });
});
