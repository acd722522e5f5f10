'use strict';
// proxy.test.js - what the proxy forwards: routing by vendor prefix or by the
// key's vendor, credential hygiene (the upstream sees exactly one credential,
// the injected secret, and never the vault token), headers, query and body
// forwarding, Stripe JSON-to-form transcoding, streaming (SSE events reach the
// client before the upstream finishes), and the issue -> call -> revoke cycle.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');

const {
  assertError,
  basic,
  rawHeaderValues,
  recordContains,
  startDaemon,
  streamRequest,
  uniquePrefix,
} = require('./lib/harness');
const { startMockVendors, parseStripeForm } = require('./mock/vendor');

// Credential-bearing request headers: the upstream must see exactly one of
// these, carrying the injected vendor secret.
const CREDENTIAL_HEADERS = ['authorization', 'x-api-key', 'proxy-authorization', 'cookie'];

function credentialsSeen(rec) {
  const out = [];
  for (let i = 0; i < rec.rawHeaders.length; i += 2) {
    const n = rec.rawHeaders[i].toLowerCase();
    if (CREDENTIAL_HEADERS.includes(n)) out.push([n, rec.rawHeaders[i + 1]]);
  }
  return out;
}

describe('proxy forwarding', () => {
  let mocks;
  let d;
  let S; // vendor secrets of this daemon

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    S = d.secrets;
  });

  after(async () => {
    try {
      if (d) await d.kill(); // only if the last test did not stop it
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  it('issue -> call -> 200 from the vendor -> revoke -> 401 key_revoked, nothing forwarded', async () => {
    const key = await d.issueKey({ label: uniquePrefix('cycle'), vendor: 'stripe' });
    const auth = { authorization: `Bearer ${key.token}` };
    const form = 'amount=2000&currency=usd&description=cycle+test';

    const r1 = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' },
      body: form,
    });
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.json.object, 'payment_intent');
    assert.equal(r1.json.amount, 2000);
    assert.equal(r1.json.currency, 'usd');
    assert.match(r1.json.id, /^pi_/);
    assert.ok(r1.headers['keybrake-request-id'], 'Keybrake-Request-Id on a forwarded answer');
    assert.equal(mocks.stripe.requests.length, 1);
    const rec = mocks.stripe.requests[0];
    assert.equal(rec.method, 'POST');
    assert.equal(rec.url, '/v1/payment_intents');
    assert.equal(rec.bodyText, form);
    assert.equal(rec.headers.authorization, `Bearer ${S.stripe}`);

    const del = await d.admin.del(`/v1/keys/${key.id}`);
    assert.equal(del.status, 204, del.text);

    const r2 = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' },
      body: form,
    });
    assertError(r2, 401, 'key_revoked');
    assert.equal(mocks.count(), 1, 'nothing forwarded for the revoked key');
  });

  it("the vendor's own Keybrake-* headers never reach the client", async () => {
    const key = await d.issueKey({ label: uniquePrefix('spoof'), vendor: 'stripe' });
    mocks.stripe.setHandler((rec, res) => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'keybrake-cost-usd': '999.000000',
        'keybrake-remaining-usd': '999.000000',
        'keybrake-request-id': 'req_spoofed',
        'keybrake-error': 'cap_exhausted',
      });
      res.end('{"id":"pi_spoof","object":"payment_intent"}');
      return true;
    });
    try {
      const r = await d.proxy({
        path: '/stripe/v1/payment_intents/pi_spoof',
        headers: { authorization: `Bearer ${key.token}` },
      });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(rawHeaderValues(r.rawHeaders, 'keybrake-cost-usd'), ['0.000000']);
      assert.deepEqual(rawHeaderValues(r.rawHeaders, 'keybrake-remaining-usd').length, 1);
      const ids = rawHeaderValues(r.rawHeaders, 'keybrake-request-id');
      assert.equal(ids.length, 1);
      assert.notEqual(ids[0], 'req_spoofed');
      assert.deepEqual(rawHeaderValues(r.rawHeaders, 'keybrake-error'), [], 'a vendor answer is not a Keybrake error');
    } finally {
      mocks.stripe.setHandler(() => false);
    }
  });

  it('usage counts a forwarded request', async () => {
    const key = await d.issueKey({ label: uniquePrefix('usage'), vendor: 'stripe' });
    const r = await d.proxy({
      method: 'GET',
      path: '/stripe/v1/payment_intents/pi_usage1',
      headers: { authorization: `Bearer ${key.token}` },
    });
    assert.equal(r.status, 200, r.text);
    const g = await d.admin.get(`/v1/keys/${key.id}`);
    assert.equal(g.status, 200, g.text);
    assert.equal(g.json.usage.requests, 1, g.text);
  });

  it('a path without vendor prefix goes to the key vendor, path unchanged', async () => {
    const key = await d.issueKey({ label: uniquePrefix('noprefix'), vendor: 'stripe' });
    const r = await d.proxy({
      method: 'POST',
      path: '/v1/payment_intents',
      headers: {
        authorization: `Bearer ${key.token}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'amount=500&currency=usd',
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.stripe.requests.length, 1);
    assert.equal(mocks.stripe.requests[0].url, '/v1/payment_intents');
    assert.equal(mocks.count(), 1);
  });

  it('the query string is forwarded unchanged', async () => {
    const key = await d.issueKey({ label: uniquePrefix('query'), vendor: 'stripe' });
    const query = 'limit=3&expand%5B%5D=data.customer&created%5Bgte%5D=1700000000&q=a%2Bb+c';
    const r = await d.proxy({
      method: 'GET',
      path: `/stripe/v1/payment_intents?${query}`,
      headers: { authorization: `Bearer ${key.token}` },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.stripe.requests.length, 1);
    assert.equal(mocks.stripe.requests[0].url, `/v1/payment_intents?${query}`);
  });

  it('the vendor status and body come back unchanged (vendor 404)', async () => {
    const key = await d.issueKey({ label: uniquePrefix('vendor404'), vendor: 'stripe' });
    mocks.stripe.nextHandler((rec, res) => {
      res.writeHead(404, { 'content-type': 'application/json', 'request-id': 'req_mock404' });
      res.end('{"error":{"type":"invalid_request_error","message":"No such payment_intent"}}');
    });
    const r = await d.proxy({
      method: 'GET',
      path: '/stripe/v1/payment_intents/pi_missing',
      headers: { authorization: `Bearer ${key.token}` },
    });
    assert.equal(r.status, 404);
    assert.equal(r.text, '{"error":{"type":"invalid_request_error","message":"No such payment_intent"}}');
    assert.equal(r.headers['request-id'], 'req_mock404', 'vendor response headers pass through');
    assert.equal(r.headers['keybrake-error'], undefined, 'a vendor error is not a Keybrake error');
  });

  describe('credential hygiene', () => {
    it('Stripe: client credentials stripped, exactly one credential upstream = the secret', async () => {
      const key = await d.issueKey({ label: uniquePrefix('hyg-stripe'), vendor: 'stripe' });
      const r = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents?note=hygiene',
        headers: {
          authorization: `Bearer ${key.token}`,
          cookie: `session=abc; vault=${key.token}`,
          'proxy-authorization': `Bearer ${key.token}`,
          'x-api-key': key.token,
          'content-type': 'application/x-www-form-urlencoded',
          'idempotency-key': 'idem-123',
          'stripe-version': '2025-10-29.clover',
          'x-custom-header': 'keep me',
          'user-agent': 'blackbox-test/1.0',
        },
        body: 'amount=1234&currency=usd&metadata%5Brun%5D=hyg',
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(mocks.stripe.requests.length, 1);
      const rec = mocks.stripe.requests[0];
      assert.deepEqual(credentialsSeen(rec), [['authorization', `Bearer ${S.stripe}`]]);
      assert.equal(recordContains(rec, key.token), false, 'vault token reached the vendor');
      // other headers and body pass through
      assert.equal(rec.headers['idempotency-key'], 'idem-123');
      assert.equal(rec.headers['stripe-version'], '2025-10-29.clover');
      assert.equal(rec.headers['x-custom-header'], undefined, 'a header not in the list passed');
      assert.equal(rec.headers['user-agent'], 'blackbox-test/1.0');
      assert.equal(rec.headers['content-type'], 'application/x-www-form-urlencoded');
      // Stripe reads a POST's query too: it is folded into the body the meter reads
      assert.equal(rec.bodyText, 'amount=1234&currency=usd&metadata%5Brun%5D=hyg&note=hygiene');
      assert.equal(rec.url, '/v1/payment_intents');
      assert.equal(Number(rec.headers['content-length']), rec.body.length);
    });

    it('Stripe: Basic auth with the token as username is accepted', async () => {
      const key = await d.issueKey({ label: uniquePrefix('hyg-basic'), vendor: 'stripe' });
      const r = await d.proxy({
        method: 'GET',
        path: '/stripe/v1/payment_intents/pi_basic1',
        headers: { authorization: basic(key.token, '') },
      });
      assert.equal(r.status, 200, r.text);
      const rec = mocks.stripe.requests[0];
      assert.deepEqual(credentialsSeen(rec), [['authorization', `Bearer ${S.stripe}`]]);
      assert.equal(recordContains(rec, key.token), false);
    });

    it('a vault token in the query string never reaches the vendor', async () => {
      const key = await d.issueKey({ label: uniquePrefix('hyg-query'), vendor: 'stripe' });
      for (const query of [`api_key=${key.token}`, `limit=3&key=${encodeURIComponent(key.token)}`]) {
        mocks.reset();
        const r = await d.proxy({
          method: 'GET',
          path: `/stripe/v1/payment_intents?${query}`,
          headers: { authorization: `Bearer ${key.token}` },
        });
        for (const rec of mocks.stripe.requests) {
          assert.equal(recordContains(rec, key.token), false, `vault token forwarded in ${rec.url}`);
        }
        if (mocks.count() === 0) {
          assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.text}`);
          assert.equal(r.headers['keybrake-error'], r.json && r.json.code, r.text);
        }
      }
    });

    it('hop-by-hop headers (and those named in Connection) are not forwarded', async () => {
      const key = await d.issueKey({ label: uniquePrefix('hyg-hop'), vendor: 'stripe' });
      const r = await d.proxy({
        method: 'GET',
        path: '/stripe/v1/payment_intents/pi_hop1',
        headers: {
          authorization: `Bearer ${key.token}`,
          connection: 'close, x-hop-secret',
          'x-hop-secret': 'must-not-pass',
          'keep-alive': 'timeout=5',
          te: 'trailers',
          'proxy-connection': 'keep-alive',
          'x-end-to-end': 'not listed',
          'stripe-version': '2025-10-29.clover',
        },
      });
      assert.equal(r.status, 200, r.text);
      const rec = mocks.stripe.requests[0];
      for (const h of ['x-hop-secret', 'keep-alive', 'proxy-connection']) {
        assert.equal(rec.headers[h], undefined, `${h} forwarded: ${JSON.stringify(rec.headers)}`);
      }
      assert.equal(rec.headers['x-end-to-end'], undefined, 'a header not in the list passed');
      assert.equal(rec.headers['stripe-version'], '2025-10-29.clover');
    });

    it('OpenAI: Bearer vault token in, Bearer secret out', async () => {
      // the organisation header passes because the key was issued for it
      const key = await d.issueKey({ label: uniquePrefix('hyg-openai'), vendor: 'openai', allowed_accounts: ['org-mock'] });
      const r = await d.proxy({
        method: 'GET',
        path: '/openai/v1/models',
        headers: {
          authorization: `Bearer ${key.token}`,
          'openai-organization': 'org-mock',
          'x-api-key': key.token,
          cookie: 'a=b',
        },
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.object, 'list');
      assert.equal(mocks.openai.requests.length, 1);
      const rec = mocks.openai.requests[0];
      assert.equal(rec.url, '/v1/models');
      assert.deepEqual(credentialsSeen(rec), [['authorization', `Bearer ${S.openai}`]]);
      assert.equal(rec.headers['openai-organization'], 'org-mock');
      assert.equal(recordContains(rec, key.token), false);
    });

    for (const how of ['x-api-key', 'bearer']) {
      it(`Anthropic: vault token in ${how}, x-api-key secret out, no Authorization`, async () => {
        const key = await d.issueKey({ label: uniquePrefix('hyg-anth'), vendor: 'anthropic' });
        const headers = { 'anthropic-version': '2023-06-01', 'anthropic-beta': 'mock-beta' };
        if (how === 'x-api-key') headers['x-api-key'] = key.token;
        else headers.authorization = `Bearer ${key.token}`;
        const r = await d.proxy({ method: 'GET', path: '/anthropic/v1/models', headers });
        assert.equal(r.status, 200, r.text);
        assert.equal(mocks.anthropic.requests.length, 1);
        const rec = mocks.anthropic.requests[0];
        assert.equal(rec.url, '/v1/models');
        assert.deepEqual(credentialsSeen(rec), [['x-api-key', S.anthropic]]);
        assert.equal(rec.headers['anthropic-version'], '2023-06-01');
        assert.equal(rec.headers['anthropic-beta'], 'mock-beta');
        assert.equal(recordContains(rec, key.token), false);
      });
    }

    it('Twilio: Basic SID:vault-token in, Basic SID:auth-token out', async () => {
      const key = await d.issueKey({ label: uniquePrefix('hyg-twilio'), vendor: 'twilio' });
      const p = `/2010-04-01/Accounts/${S.twilioSid}/Messages.json`;
      const r = await d.proxy({
        method: 'GET',
        path: `/twilio${p}?PageSize=20`,
        headers: { authorization: basic(S.twilioSid, key.token), cookie: 'tw=1' },
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(mocks.twilio.requests.length, 1);
      const rec = mocks.twilio.requests[0];
      assert.equal(rec.url, `${p}?PageSize=20`);
      assert.deepEqual(credentialsSeen(rec), [
        ['authorization', basic(S.twilioSid, S.twilioToken)],
      ]);
      assert.equal(recordContains(rec, key.token), false);
    });

    it('the vault token is in no log line', async () => {
      const key = await d.issueKey({ label: uniquePrefix('hyg-log'), vendor: 'stripe' });
      await d.proxy({
        method: 'GET',
        path: '/stripe/v1/payment_intents/pi_log1',
        headers: { authorization: `Bearer ${key.token}` },
      });
      // and once refused, which logs differently
      await d.admin.del(`/v1/keys/${key.id}`);
      await d.proxy({
        method: 'GET',
        path: '/stripe/v1/payment_intents/pi_log2',
        headers: { authorization: `Bearer ${key.token}` },
      });
      const out = d.stdout + d.stderr;
      assert.ok(!out.includes(key.token), 'vault token in the logs');
      for (const s of [S.stripe, S.openai, S.anthropic, S.twilioToken]) {
        assert.ok(!out.includes(s), 'a vendor secret is in the logs');
      }
      assert.ok(!out.includes(d.adminToken), 'the admin token is in the logs');
    });
  });

  describe('Stripe JSON bodies', () => {
    const cases = [
      [
        'flat with nested metadata',
        { amount: 1000, currency: 'usd', metadata: { order: '42' } },
        'amount=1000&currency=usd&metadata%5Border%5D=42',
      ],
      [
        'arrays, booleans and nested objects keep member order',
        {
          amount: 1500,
          currency: 'usd',
          payment_method_types: ['card', 'link'],
          capture_method: 'manual',
          confirm: false,
          automatic_payment_methods: { enabled: true },
        },
        'amount=1500&currency=usd&payment_method_types%5B0%5D=card&payment_method_types%5B1%5D=link' +
          '&capture_method=manual&confirm=false&automatic_payment_methods%5Benabled%5D=true',
      ],
      [
        'values are percent-encoded',
        { amount: 700, currency: 'usd', description: 'Tea & cake = 7€' },
        'amount=700&currency=usd&description=' + encodeURIComponent('Tea & cake = 7€'),
      ],
    ];
    for (const [name, json, form] of cases) {
      it(`POST JSON is forwarded form-encoded: ${name}`, async () => {
        const key = await d.issueKey({ label: uniquePrefix('json'), vendor: 'stripe' });
        const r = await d.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(json),
        });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.object, 'payment_intent');
        assert.equal(r.json.amount, json.amount);
        assert.equal(mocks.stripe.requests.length, 1);
        const rec = mocks.stripe.requests[0];
        assert.match(rec.headers['content-type'], /^application\/x-www-form-urlencoded/);
        // Stripe reads brackets literal or as %5B/%5D (stripe-node sends them literal,
        // stripe_form.h); the escaping of other bytes may differ too. So: decoded pairs in
        // order always, and exact bytes (brackets normalised) where nothing else is escaped.
        const pairs = (s) => [...new URLSearchParams(s)];
        assert.deepEqual(pairs(rec.bodyText), pairs(form));
        const lit = (s) => s.replace(/%5B/gi, '[').replace(/%5D/gi, ']');
        if (!/%[0-9A-F]{2}/i.test(lit(form))) assert.equal(lit(rec.bodyText), lit(form));
        assert.equal(Number(rec.headers['content-length']), rec.body.length);
        assert.deepEqual(parseStripeForm(rec.bodyText), parseStripeForm(form));
      });
    }

    it('invalid JSON to Stripe is refused, nothing forwarded', async () => {
      const key = await d.issueKey({ label: uniquePrefix('badjson'), vendor: 'stripe' });
      const r = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
        body: '{"amount": 10',
      });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.headers['keybrake-error'], r.json && r.json.code);
      assert.equal(mocks.count(), 0);
    });
  });

  describe('connections and bodies', () => {
    it('a chunked request body is forwarded whole', async () => {
      const key = await d.issueKey({ label: uniquePrefix('chunked'), vendor: 'stripe' });
      const parts = ['amount=3100', '&currency=usd', '&description=sent+in+chunks'];
      const r = await new Promise((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port: d.proxyPort,
            method: 'POST',
            path: '/stripe/v1/payment_intents',
            agent: false,
            headers: {
              authorization: `Bearer ${key.token}`,
              'content-type': 'application/x-www-form-urlencoded',
              'transfer-encoding': 'chunked',
            },
          },
          (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (c) => (text += c));
            res.on('end', () => resolve({ status: res.statusCode, text }));
          },
        );
        req.on('error', reject);
        for (const p of parts) req.write(p);
        req.end();
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(JSON.parse(r.text).amount, 3100);
      assert.equal(mocks.stripe.requests.length, 1);
      assert.equal(mocks.stripe.requests[0].bodyText, parts.join(''));
    });

    it('keep-alive: each request on one connection is authenticated on its own', async () => {
      const good = await d.issueKey({ label: uniquePrefix('ka'), vendor: 'stripe' });
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const sockets = new Set();
      const send = (auth, id) =>
        new Promise((resolve, reject) => {
          const req = http.request(
            {
              host: '127.0.0.1',
              port: d.proxyPort,
              method: 'GET',
              path: `/stripe/v1/payment_intents/${id}`,
              agent,
              headers: auth ? { authorization: auth } : {},
            },
            (res) => {
              let text = '';
              res.setEncoding('utf8');
              res.on('data', (c) => (text += c));
              res.on('end', () => resolve({ status: res.statusCode, text, headers: res.headers }));
            },
          );
          req.on('socket', (s) => sockets.add(s));
          req.on('error', reject);
          req.end();
        });
      try {
        const r1 = await send(`Bearer ${good.token}`, 'pi_ka1');
        assert.equal(r1.status, 200, r1.text);
        const r2 = await send(undefined, 'pi_ka2');
        assert.equal(r2.status, 401, r2.text);
        assert.equal(r2.headers['keybrake-error'], 'invalid_token');
        const r3 = await send(`Bearer ${good.token}`, 'pi_ka3');
        assert.equal(r3.status, 200, r3.text);
      } finally {
        agent.destroy();
      }
      assert.deepEqual(
        mocks.stripe.requests.map((r) => r.path),
        ['/v1/payment_intents/pi_ka1', '/v1/payment_intents/pi_ka3'],
      );
    });

    it('20 concurrent requests each get their own answer', async () => {
      const key = await d.issueKey({ label: uniquePrefix('conc'), vendor: 'stripe' });
      const n = 20;
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          d.proxy({
            method: 'POST',
            path: '/stripe/v1/payment_intents',
            headers: {
              authorization: `Bearer ${key.token}`,
              'content-type': 'application/x-www-form-urlencoded',
            },
            body: `amount=${1000 + i}&currency=usd`,
          }),
        ),
      );
      results.forEach((r, i) => {
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.amount, 1000 + i);
      });
      assert.equal(mocks.stripe.requests.length, n);
      const amounts = mocks.stripe.requests.map((r) => Number(parseStripeForm(r.bodyText).amount));
      assert.deepEqual(
        amounts.sort((a, b) => a - b),
        Array.from({ length: n }, (_, i) => 1000 + i),
      );
    });

    it('a vendor 500 with a body comes back as is', async () => {
      const key = await d.issueKey({ label: uniquePrefix('v500'), vendor: 'stripe' });
      mocks.stripe.nextHandler((rec, res) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":{"type":"api_error","message":"mock failure"}}');
      });
      const r = await d.proxy({
        method: 'GET',
        path: '/stripe/v1/payment_intents/pi_500',
        headers: { authorization: `Bearer ${key.token}` },
      });
      assert.equal(r.status, 500);
      assert.equal(r.text, '{"error":{"type":"api_error","message":"mock failure"}}');
      assert.equal(r.headers['keybrake-error'], undefined);
    });
  });

  describe('streaming', () => {
    it('SSE: the first event reaches the client before the upstream ends the stream', { timeout: 30_000 }, async () => {
      const key = await d.issueKey({ label: uniquePrefix('sse'), vendor: 'openai' });
      const streamCtl = mocks.openai.nextStream();
      const clientP = streamRequest({
        port: d.proxyPort,
        method: 'GET',
        path: '/openai/v1/responses/resp_mock123?stream=true',
        headers: { authorization: `Bearer ${key.token}`, accept: 'text/event-stream' },
      });
      const ctl = await streamCtl;
      assert.equal(ctl.request.url, '/v1/responses/resp_mock123?stream=true');
      assert.equal(ctl.request.headers.authorization, `Bearer ${S.openai}`);
      ctl.send({ type: 'response.created', sequence_number: 0 }, { event: 'response.created' });
      const client = await clientP;
      assert.equal(client.status, 200);
      assert.match(client.headers['content-type'], /^text\/event-stream/);
      // The stream is still open upstream: this only resolves if the proxy streams.
      const first = await client.readUntil((s) => s.includes('\n\n'));
      assert.match(first, /event: response\.created\ndata: \{"type":"response\.created"/);
      ctl.send({ type: 'response.output_text.delta', delta: 'Hel', sequence_number: 1 }, { event: 'response.output_text.delta' });
      await client.readUntil((s) => s.includes('"delta":"Hel"'));
      ctl.send({ type: 'response.completed', sequence_number: 2 }, { event: 'response.completed' });
      ctl.end();
      const all = await client.rest();
      assert.equal(
        all,
        'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n' +
          'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hel","sequence_number":1}\n\n' +
          'event: response.completed\ndata: {"type":"response.completed","sequence_number":2}\n\n',
      );
    });

    it('SSE chat completion stream: chunks arrive one by one, usage chunk passes through', { timeout: 30_000 }, async () => {
      const key = await d.issueKey({ label: uniquePrefix('sse-chat'), vendor: 'openai' });
      const streamCtl = mocks.openai.nextStream();
      const clientP = streamRequest({
        port: d.proxyPort,
        method: 'POST',
        path: '/openai/v1/chat/completions',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o-mini',
          stream: true,
          max_tokens: 16,
          messages: [{ role: 'user', content: 'Say hello' }],
        }),
      });
      const ctl = await streamCtl;
      const sent = JSON.parse(ctl.request.bodyText);
      assert.equal(sent.model, 'gpt-4o-mini');
      assert.equal(sent.stream, true);
      assert.equal(ctl.request.headers.authorization, `Bearer ${S.openai}`);
      const chunk = (delta, extra = {}) => ({
        id: 'chatcmpl-mock',
        object: 'chat.completion.chunk',
        created: 1700000000,
        model: 'gpt-4o-mini',
        choices: delta === null ? [] : [{ index: 0, delta, finish_reason: null }],
        ...extra,
      });
      ctl.send(chunk({ role: 'assistant', content: '' }));
      const client = await clientP;
      assert.equal(client.status, 200);
      await client.readUntil((s) => s.includes('"role":"assistant"'));
      ctl.send(chunk({ content: 'Hello' }));
      await client.readUntil((s) => s.includes('"content":"Hello"'));
      ctl.send(chunk(null, { usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 } }));
      ctl.send('[DONE]');
      ctl.end();
      const all = await client.rest();
      assert.match(all, /"total_tokens":10/);
      assert.match(all, /data: \[DONE\]\n\n$/);
    });
  });

  // Last in this describe: a sanitizer report or a crash on shutdown fails here.
  it('the daemon stops on SIGTERM with exit code 0', async () => {
    await d.stop();
  });
});
