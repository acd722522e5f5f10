'use strict';
// demo.test.js - `make demo` (issue 18, item 6): demo/run.sh starts the
// sandbox vendor (demo/sandbox.js) and the real binary with
// demo/keybrake-demo.ini, prints the dashboard URL and the admin token, and
// stops both on Ctrl-C. This test runs that script as `make demo` does (on
// free ports and a temporary data dir) and follows README's "Try it without
// vendor accounts" steps: issue a key, a call that spends, revoke, the
// refusal. The sandbox answers like Stripe and OpenAI (their official SDKs
// read it) and marks every answer as not real.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const Stripe = require('stripe');
const OpenAI = require('openai');

const { BIN, REPO, assertError, hex, mkTempDir, request, rmTempDir, waitFor } = require('./lib/harness');

const RUN = path.join(REPO, 'demo/run.sh');

function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

describe('make demo: the sandbox and the daemon with the demo config', () => {
  let child;
  let out = '';
  let exited;
  let dataDir;
  let demo; // { sandbox, admin, adminPort, proxy, proxyPort, token }
  // a real-looking vendor secret in the caller's environment: the demo must not use it
  const canary = 'sk_live_canary_' + hex(12);

  before(async () => {
    assert.ok(fs.existsSync(BIN), `keybrake binary not found at ${BIN}`);
    dataDir = mkTempDir();
    const env = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (k.startsWith('KEYBRAKE_') || /^(STRIPE|OPENAI|ANTHROPIC|TWILIO)_/.test(k)) continue;
      env[k] = v;
    }
    Object.assign(env, {
      KEYBRAKE_BIN: BIN,
      KEYBRAKE_DATA_DIR: dataDir,
      KEYBRAKE_PROXY_LISTEN: '127.0.0.1:0',
      KEYBRAKE_ADMIN_LISTEN: '127.0.0.1:0',
      DEMO_SANDBOX_LISTEN: '127.0.0.1:0',
      STRIPE_SECRET_KEY: canary,
      KEYBRAKE_OPENAI_SECRET: canary,
      KEYBRAKE_ADMIN_TOKEN: 'kba_not_the_demo_one_' + hex(8),
    });
    // its own process group, so the test can send Ctrl-C's SIGINT to all of it
    child = spawn(RUN, [], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    await waitFor(() => /Ctrl-C stops the demo/.test(out) || child.exitCode !== null, {
      timeoutMs: 30_000,
      what: 'the demo banner',
    });
    const m = (re) => {
      const r = re.exec(out);
      assert.ok(r, `${re} not in the demo's output:\n${out}`);
      return r[1];
    };
    demo = {
      sandbox: m(/every vendor is the sandbox at (http:\/\/127\.0\.0\.1:\d+)/),
      dashboard: m(/dashboard +(http:\/\/127\.0\.0\.1:\d+\/ui\/)/),
      token: m(/admin token +(kba_\S+)/),
      adminPort: Number(m(/admin API +http:\/\/127\.0\.0\.1:(\d+)/)),
      proxyPort: Number(m(/proxy +http:\/\/127\.0\.0\.1:(\d+)/)),
    };
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await exited;
    }
    rmTempDir(dataDir);
  });

  const admin = (method, p, body) =>
    request({
      port: demo.adminPort,
      method,
      path: p,
      headers: { authorization: `Bearer ${demo.token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  // curl -d: a form body
  const pay = (token, amount) =>
    request({
      port: demo.proxyPort,
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: `amount=${amount}&currency=usd`,
    });

  it('prints the dashboard and the admin token the daemon wrote (not one from the environment)', async () => {
    assert.equal(demo.token, fs.readFileSync(path.join(dataDir, 'admin-token'), 'utf8').trim());
    assert.equal(demo.dashboard, `http://127.0.0.1:${demo.adminPort}/ui/`);
    const ui = await request({ port: demo.adminPort, path: '/ui/' });
    assert.equal(ui.status, 200);
    assert.match(ui.text, /Keybrake dashboard/);
    assert.match(out, /NOT a real vendor/);
  });

  it("follows README's steps: issue, a call that spends, revoke, the refusal", async () => {
    // 1. issue a key ($50 a day, payment intents only, one hour)
    const issued = await admin('POST', '/v1/keys', {
      label: 'demo/run-1',
      vendor: 'stripe',
      allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 50,
      expires_in: '1h',
    });
    assert.equal(issued.status, 201, issued.text);
    const { id, token } = issued.json;

    // 2. a $20 payment intent, answered by the sandbox and marked as such
    const paid = await pay(token, 2000);
    assert.equal(paid.status, 200, paid.text);
    assert.match(paid.json.id, /^pi_sandbox_/);
    assert.equal(paid.json.object, 'payment_intent');
    assert.equal(paid.json.amount, 2000);
    assert.match(paid.json.keybrake_sandbox, /not a real vendor/);
    assert.equal(paid.headers['x-sandbox'], 'not-a-real-vendor');
    assert.equal(paid.headers['keybrake-cost-usd'], '20.000000');
    const shown = await admin('GET', `/v1/keys/${id}`);
    assert.equal(shown.json.usage.spent_usd, 20);
    assert.equal(shown.json.usage.remaining_usd, 30);

    // 3. revoke; the next call is refused and audited
    assert.equal((await admin('DELETE', `/v1/keys/${id}`)).status, 204);
    assertError(await pay(token, 2000), 401, 'key_revoked');
    const audit = await admin('GET', `/v1/audit?key_id=${id}&decision=refused`);
    assert.equal(audit.status, 200);
    assert.equal(audit.json.data[0].code, 'key_revoked');
  });

  it('the official Stripe and OpenAI SDKs read the sandbox through the proxy', async () => {
    const s = await admin('POST', '/v1/keys', {
      label: 'demo/sdk',
      vendor: 'stripe',
      allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 50,
      expires_in: '1h',
    });
    const stripe = new Stripe(s.json.token, { host: '127.0.0.1', port: demo.proxyPort, protocol: 'http', maxNetworkRetries: 0 });
    const pi = await stripe.paymentIntents.create({ amount: 500, currency: 'usd' });
    assert.match(pi.id, /^pi_sandbox_/);
    assert.equal(pi.amount, 500);

    const o = await admin('POST', '/v1/keys', {
      label: 'demo/sdk-openai',
      vendor: 'openai',
      allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 1,
      expires_in: '1h',
    });
    assert.equal(o.status, 201, o.text);
    const openai = new OpenAI({ apiKey: o.json.token, baseURL: `http://127.0.0.1:${demo.proxyPort}/openai/v1`, maxRetries: 0 });
    const chat = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
    assert.match(chat.id, /^chatcmpl-sandbox_/);
    assert.match(chat.choices[0].message.content, /not a real model/);
    const u = await admin('GET', `/v1/keys/${o.json.id}`);
    assert.ok(u.json.usage.spent_usd > 0, 'the completion was metered from its usage');
    const streamed = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    });
    let text = '';
    for await (const c of streamed) text += c.choices[0]?.delta?.content || '';
    assert.match(text, /Keybrake sandbox/);
  });

  it('the sandbox takes only the demo credential Keybrake injects, never a vault token', async () => {
    const port = Number(new URL(demo.sandbox).port);
    const direct = await request({
      port,
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: 'Bearer kb_anything', 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=100&currency=usd',
    });
    assert.equal(direct.status, 401);
    assert.equal(direct.headers['x-sandbox'], 'not-a-real-vendor');
    const unknown = await request({ port, path: '/nowhere' });
    assert.equal(unknown.status, 404);
    assert.match(unknown.json.keybrake_sandbox, /not a real vendor/);
  });

  it('Ctrl-C stops both, cleanly; no secret of the caller reached the daemon', async () => {
    const sandboxPort = Number(new URL(demo.sandbox).port);
    process.kill(-child.pid, 'SIGINT');
    const { code, signal } = await exited;
    assert.equal(signal, null, out);
    assert.equal(code, 0, out);
    assert.match(out, /demo: stopped \(keybrake exit 0\)/);
    for (const p of [demo.adminPort, demo.proxyPort, sandboxPort]) {
      assert.equal(await portOpen(p), false, `port ${p} still open after Ctrl-C`);
    }
    const log = fs.readFileSync(path.join(dataDir, 'keybrake.log'), 'utf8');
    assert.ok(!log.includes(canary) && !out.includes(canary), 'the caller\'s vendor secret was used');
    assert.doesNotMatch(log, /ERROR: AddressSanitizer|runtime error:/);
  });
});
