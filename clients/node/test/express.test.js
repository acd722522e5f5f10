'use strict';
// express.test.js - keybrakeRun() in a real Express app on a loopback port:
// each request gets its own key on req.keybrake, the handler's OpenAI SDK
// call goes through the real binary with it, and the key is revoked exactly
// once when the response is sent or the client goes away.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');

const express = require('express');
const { OpenAI } = require('openai');

const { Keybrake, isSpendExhausted, keybrakeRun } = require('..');
const { harness, keyStatus, startKeybrake, uniquePrefix } = require('./lib');

// A client that counts revocations per key id.
class CountingKeybrake extends Keybrake {
  constructor(opts) {
    super(opts);
    this.revocations = new Map();
  }
  revokeSurely(id, attempts) {
    this.revocations.set(id, (this.revocations.get(id) || 0) + 1);
    return super.revokeSurely(id, attempts);
  }
}

function listen(app) {
  return new Promise((resolve, reject) => {
    const srv = http.createServer(app);
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

describe('Express: keybrakeRun middleware', () => {
  let k;
  let kb;
  let srv;
  let port;
  const prefix = uniquePrefix('express');
  const closed = new Map(); // x-test-id -> promise resolved on the response's 'close'
  const holds = new Map(); // x-test-id -> { started, release }
  let gated; // a client whose issuance the test releases
  let gate = null; // { arrived, open }
  let ranGated = false;

  before(async () => {
    k = await startKeybrake();
    kb = new CountingKeybrake({ adminUrl: k.d.adminUrl, adminToken: k.d.adminToken, proxyUrl: k.d.proxyUrl });
    const app = express();
    app.use((req, res, next) => {
      const id = req.get('x-test-id');
      if (id) closed.set(id, new Promise((r) => res.once('close', r)));
      next();
    });
    const run = keybrakeRun(kb, {
      vendor: 'openai',
      allowedEndpoints: ['POST /v1/chat/completions'],
      dailyUsdCap: (req) => (req.get('x-cap') ? Number(req.get('x-cap')) : 1),
      expiresIn: '10m',
      label: (req) => `${prefix}user-${req.get('x-user') || 'anon'}/run-${crypto.randomUUID()}`,
      metadata: (req) => ({ path: req.path }),
    });
    app.post('/chat', run, async (req, res) => {
      const openai = new OpenAI({ apiKey: req.keybrake.token, baseURL: kb.vendorBaseUrl('openai'), maxRetries: 0 });
      try {
        const c = await openai.chat.completions.create({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 16,
        });
        res.json({ keyId: req.keybrake.id, label: req.keybrake.label, reply: c.choices[0].message.content });
      } catch (e) {
        // the 429 distinction, as a guide tells it
        if (isSpendExhausted(e)) res.status(402).json({ keyId: req.keybrake.id, error: 'spend limit reached' });
        else throw e;
      }
    });
    app.post('/hold', run, async (req, res) => {
      const h = holds.get(req.get('x-test-id'));
      h.started(req.keybrake);
      await h.released;
      res.json({ keyId: req.keybrake.id });
      h.done();
    });
    // issuance held by the test: the POST /v1/keys goes out only when released
    gated = new CountingKeybrake({
      adminUrl: k.d.adminUrl,
      adminToken: k.d.adminToken,
      proxyUrl: k.d.proxyUrl,
      fetch: async (url, init) => {
        if (init.method === 'POST' && gate) {
          const g = gate;
          g.arrived();
          await g.open;
        }
        return fetch(url, init);
      },
    });
    app.post(
      '/gated',
      keybrakeRun(gated, { vendor: 'openai', allowedEndpoints: ['/v1/*'], dailyUsdCap: 1, label: () => prefix + 'gated' }),
      (req, res) => {
        ranGated = true;
        res.json({ keyId: req.keybrake.id });
      },
    );
    app.post(
      '/bad',
      keybrakeRun(kb, { vendor: 'openai', allowedEndpoints: ['/v1/*'], dailyUsdCap: -1, label: () => prefix + 'bad' }),
      () => assert.fail('the handler ran without a key'),
    );
    // Express 5's error handler signature
    app.use((err, req, res, next) => { // eslint-disable-line no-unused-vars
      res.status(err.status || 500).json({ code: err.code || 'error' });
    });
    srv = await listen(app);
    port = srv.address().port;
  });

  after(async () => {
    if (srv) await new Promise((r) => srv.close(r));
    if (k) await k.close();
  });

  beforeEach(() => k.mocks.reset());

  const post = (p, headers = {}) => harness.request({ port, method: 'POST', path: p, headers });

  // Waits until the key is revoked and the response's 'close' has fired
  // too, then asserts exactly one revocation.
  async function assertRevokedOnce(testId, keyId) {
    await closed.get(testId);
    await harness.waitFor(async () => (await keyStatus(k.d, keyId)) === 'revoked', { what: `${keyId} revoked` });
    assert.equal(kb.revocations.get(keyId), 1, `revocations of ${keyId}`);
  }

  it('a request gets its own key, the SDK call goes through the proxy with it, the key is revoked after', async () => {
    const r = await post('/chat', { 'x-user': '42', 'x-test-id': 't1' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.reply, 'Hello from the mock.');
    assert.match(r.json.label, new RegExp(`^${prefix}user-42/run-`));
    const keyId = r.json.keyId;
    await assertRevokedOnce('t1', keyId);

    // the vendor got the real secret, never the vault token
    assert.equal(k.mocks.openai.requests.length, 1);
    const rec = k.mocks.openai.requests[0];
    assert.equal(rec.headers.authorization, `Bearer ${k.d.secrets.openai}`);
    // the call was made with this request's key: its usage counts it
    const key = await kb.getKey(keyId);
    assert.equal(key.usage.requests, 1);
    assert.ok(key.usage.spentUsd > 0);
    assert.deepEqual(key.metadata, { path: '/chat' });
  });

  it('concurrent requests each get their own key, each revoked once', async () => {
    const N = 8;
    const rs = await Promise.all(
      Array.from({ length: N }, (_, i) => post('/chat', { 'x-user': `c${i}`, 'x-test-id': `c${i}` })),
    );
    const ids = rs.map((r) => {
      assert.equal(r.status, 200, r.text);
      return r.json.keyId;
    });
    assert.equal(new Set(ids).size, N, 'every request had its own key');
    for (let i = 0; i < N; i++) {
      assert.match(rs[i].json.label, new RegExp(`user-c${i}/`));
      await assertRevokedOnce(`c${i}`, ids[i]);
      assert.equal((await kb.getKey(ids[i])).usage.requests, 1);
    }
    assert.equal(k.mocks.openai.requests.length, N);
    // the whole run is gone: nothing live is left under the app's prefix
    assert.deepEqual((await kb.listKeys({ labelPrefix: prefix, status: 'active' })).data, []);
  });

  it('a spent cap surfaces in the handler as final (402 here), and the key is still revoked', async () => {
    const r = await post('/chat', { 'x-cap': '0.000001', 'x-test-id': 'cap' });
    assert.equal(r.status, 402, r.text);
    await assertRevokedOnce('cap', r.json.keyId);
    assert.equal(k.mocks.openai.requests.length, 0);
  });

  it('a client that goes away mid-request: the key is revoked at once, once', async () => {
    let started;
    let release;
    let done;
    const seen = new Promise((r) => (started = r));
    const finished = new Promise((r) => (done = r));
    holds.set('gone', { started, done, released: new Promise((r) => (release = r)) });
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/hold', headers: { 'x-test-id': 'gone' }, agent: false });
    req.on('error', () => {}); // we end it ourselves
    req.end();
    const key = await seen;
    assert.equal(await keyStatus(k.d, key.id), 'active');
    req.destroy();
    await assertRevokedOnce('gone', key.id);
    // the handler finishes later: no second revocation
    release();
    await finished;
    const again = await post('/chat', { 'x-test-id': 'after' }); // the app still serves
    assert.equal(again.status, 200);
    await assertRevokedOnce('after', again.json.keyId);
    assert.equal(kb.revocations.get(key.id), 1);
  });

  it('a client that goes away while its key is being issued: the key is revoked, the route never runs', async () => {
    let arrived;
    let open;
    const inFlight = new Promise((r) => (arrived = r));
    gate = { arrived, open: new Promise((r) => (open = r)) };
    try {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/gated', headers: { 'x-test-id': 'early' }, agent: false });
      req.on('error', () => {});
      req.end();
      await inFlight; // the middleware is waiting for Keybrake
      req.destroy();
      await closed.get('early'); // the server saw the client go
      open();
      await harness.waitFor(async () => {
        const page = await gated.listKeys({ labelPrefix: prefix + 'gated' });
        return page.data.length === 1 && page.data[0].status === 'revoked';
      }, { what: 'the gated key issued and revoked' });
      const [key] = (await gated.listKeys({ labelPrefix: prefix + 'gated' })).data;
      assert.equal(gated.revocations.get(key.id), 1);
      assert.equal(ranGated, false, 'the route ran for a client that had left');
    } finally {
      gate = null;
    }
  });

  it('a refused issuance goes to the error handler and the route never runs', async () => {
    const r = await post('/bad');
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.code, 'invalid_request');
  });

  it('label must be a function of the request', () => {
    assert.throws(() => keybrakeRun(kb, { vendor: 'openai', label: 'fixed' }), TypeError);
  });
});
