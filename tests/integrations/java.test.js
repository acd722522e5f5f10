'use strict';
// java.test.js - the Spring Boot guide's Spring-free core, as printed in
// docs/integrations/spring-boot.md: KeybrakeAdmin (java.net.http + Jackson)
// and KeybrakeRefusal, compiled with the JDK and Debian's Jackson and run
// (through GuideCheck.java) against the real binary. A missing toolchain
// fails the test: `make deps-test` installs it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { mkTempDir, rmTempDir, startDaemon, uniquePrefix } = require('../blackbox/lib/harness');
const { startMockVendors } = require('../blackbox/mock/vendor');
const { requireTool, startDriver } = require('./lib/driver');
const { writeSnippets } = require('./lib/snippets');

const JACKSON = ['jackson-databind', 'jackson-core', 'jackson-annotations'].map((j) => `/usr/share/java/${j}.jar`);

describe('Spring Boot guide: the Java core against the real binary', () => {
  let mocks;
  let d;
  let dir;
  let jvm; // GuideCheck: { check(...args), close() }
  const check = (...args) => jvm.check(...args);

  before(async () => {
    for (const t of ['javac', 'java']) requireTool(t, ['-version'], 'make deps-test installs the JDK');
    for (const j of JACKSON) assert.ok(fs.existsSync(j), `${j} missing: apt-get install libjackson2-databind-java (make deps-test)`);
    dir = mkTempDir();
    writeSnippets('spring-boot.md', ['KeybrakeAdmin.java', 'KeybrakeRefusal.java'], dir);
    fs.copyFileSync(path.join(__dirname, 'java/GuideCheck.java'), path.join(dir, 'GuideCheck.java'));
    const c = spawnSync('javac', ['-Xlint:all', '-Werror', '-d', path.join(dir, 'out'), '-cp', JACKSON.join(':'),
      ...['KeybrakeAdmin.java', 'KeybrakeRefusal.java', 'GuideCheck.java'].map((f) => path.join(dir, f))],
      { encoding: 'utf8', timeout: 120_000 });
    assert.equal(c.status, 0, `javac:\n${c.stdout}${c.stderr}`);
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    jvm = startDriver('java', ['-cp', [path.join(dir, 'out'), ...JACKSON].join(':'), 'GuideCheck'], {
      KB_ADMIN_URL: d.adminUrl, KB_ADMIN_TOKEN: d.adminToken, KB_PROXY_URL: d.proxyUrl,
    });
  });

  after(async () => {
    try {
      if (jvm) await jvm.close();
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
    assert.ok(!k.toString.includes(k.token), 'VaultKey.toString() must not print the token');
    const got = await status(k.id);
    assert.equal(got.status, 'active');
    assert.equal(got.daily_usd_cap, 2);
    assert.deepEqual(got.allowed_endpoints, ['POST /v1/chat/completions']);
    assert.equal(Date.parse(got.expires_at) - Date.parse(got.created_at), 15 * 60_000);

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

  it('cap_exhausted: spent, not retryable; the vendor never called', async () => {
    mocks.reset();
    const k = await check('issue', 'openai', '0.000001', '5m', 'POST /v1/chat/completions');
    assert.deepEqual(await check('chat', k.token), {
      status: 429, code: 'cap_exhausted', spent: true, retryable: false, retryAfter: null,
    });
    assert.equal(mocks.openai.requests.length, 0);
  });

  it('budget_exhausted: spent, not retryable', async () => {
    const budget = uniquePrefix('java-b');
    const r = await d.admin.post('/v1/keys', {
      label: uniquePrefix('java-b'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '5m', budgets: [{ name: budget, usd_cap: 0.000001, window: 'day' }],
    });
    assert.equal(r.status, 201, r.text);
    const got = await check('chat', r.json.token);
    assert.equal(got.code, 'budget_exhausted');
    assert.equal(got.spent, true);
    assert.equal(got.retryable, false);
  });

  it('rate_limited: retryable, with Retry-After seconds', async () => {
    const r = await d.admin.post('/v1/keys', {
      label: uniquePrefix('java-rl'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '5m', rate_limit: { requests: 1, per: 'minute' },
    });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(await check('chat', r.json.token), { status: 200 });
    const got = await check('chat', r.json.token);
    assert.equal(got.status, 429);
    assert.equal(got.code, 'rate_limited');
    assert.equal(got.spent, false);
    assert.equal(got.retryable, true);
    assert.ok(got.retryAfter >= 1 && got.retryAfter <= 60, JSON.stringify(got));
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

  it('revokePrefix: the kill switch', async () => {
    const a = await check('issue', 'openai', '1', '5m', '/v1/*');
    const prefix = a.label.slice(0, a.label.indexOf('/') + 1);
    assert.deepEqual(await check('revoke-prefix', prefix), { revoked: 1 });
    assert.equal((await status(a.id)).status, 'revoked');
  });
});
