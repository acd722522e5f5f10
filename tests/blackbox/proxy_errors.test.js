'use strict';
// proxy_errors.test.js - every refusal of the proxy through the real binary:
// status, JSON {code, message}, the Keybrake-Error header, and (where the
// request must not leave Keybrake) that the mock vendor received nothing.
// Also expiry by the wall clock, unreachable and silent upstreams.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');

const {
  assertError,
  basic,
  closedPort,
  rawRequest,
  startDaemon,
  statusOf,
  streamRequest,
  uniquePrefix,
  waitUntilClock,
} = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

describe('proxy refusals', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
  });

  after(async () => {
    try {
      if (d) await d.kill(); // only if the last test did not stop it
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  const getPI = (auth, path = '/stripe/v1/payment_intents/pi_err1') =>
    d.proxy({ method: 'GET', path, headers: auth === undefined ? {} : { authorization: auth } });

  describe('invalid_token', () => {
    it('missing, garbage, wrong-checksum and unknown tokens get the same 401 body', async () => {
      const key = await d.issueKey({ label: uniquePrefix('tok'), vendor: 'stripe' });
      // Sanity: the real token works.
      const ok = await getPI(`Bearer ${key.token}`);
      assert.equal(ok.status, 200, ok.text);
      mocks.reset();

      const last = key.token.slice(-1);
      const wrongChecksum = key.token.slice(0, -1) + (last === 'A' ? 'B' : 'A');
      // A well-formed token that this daemon never issued: from another daemon.
      const other = await startDaemon({ mocks });
      let unknown;
      try {
        unknown = (await other.issueKey({ label: uniquePrefix('other'), vendor: 'stripe' })).token;
      } finally {
        await other.stop();
      }
      assert.notEqual(unknown, key.token);

      const cases = [
        ['missing', undefined],
        ['empty bearer', 'Bearer '],
        ['garbage', 'Bearer garbage-not-a-token'],
        ['garbage kb_ prefix', 'Bearer kb_' + 'z'.repeat(40)],
        ['wrong checksum', `Bearer ${wrongChecksum}`],
        ['truncated', `Bearer ${key.token.slice(0, -4)}`],
        ['unknown (other daemon)', `Bearer ${unknown}`],
        ['unknown via Basic', basic(unknown, '')],
      ];
      const bodies = new Map();
      for (const [name, auth] of cases) {
        const r = await getPI(auth);
        assertError(r, 401, 'invalid_token', name);
        bodies.set(name, r.text);
      }
      const distinct = new Set(bodies.values());
      assert.equal(distinct.size, 1, `bodies differ: ${JSON.stringify([...bodies])}`);
      assert.equal(mocks.count(), 0, 'nothing forwarded');
    });

    it('a vendor-prefixed path with no token is 401 invalid_token for every vendor', async () => {
      for (const p of [
        '/stripe/v1/payment_intents',
        '/openai/v1/models',
        '/anthropic/v1/models',
        '/twilio/2010-04-01/Accounts/AC00/Messages.json',
        '/v1/payment_intents',
      ]) {
        const r = await d.proxy({ method: 'GET', path: p });
        assertError(r, 401, 'invalid_token', p);
      }
      assert.equal(mocks.count(), 0);
    });
  });

  it('401 key_revoked after DELETE, nothing forwarded', async () => {
    const key = await d.issueKey({ label: uniquePrefix('rev'), vendor: 'stripe' });
    assert.equal((await d.admin.del(`/v1/keys/${key.id}`)).status, 204);
    const r = await getPI(`Bearer ${key.token}`);
    assertError(r, 401, 'key_revoked');
    assert.equal(mocks.count(), 0);
  });

  it('a stream in flight when its key expires is cut like a revoked one, and charged its worst case', async () => {
    const key = await d.issueKey({ label: uniquePrefix('exp-stream'), vendor: 'openai', expires_in: '2s', allowed_endpoints: ['/v1/*'] });
    const expiresAt = Date.parse(key.expires_at);
    const streamCtl = mocks.openai.nextStream();
    const clientP = streamRequest({
      port: d.proxyPort,
      method: 'POST',
      path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const ctl = await streamCtl;
    const upstreamClosed = new Promise((resolve) => ctl.res.on('close', resolve));
    ctl.send({ id: 'c1', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'a' } }] });
    const client = await clientP;
    assert.equal(client.status, 200);
    await client.readUntil((s) => s.includes('\n\n'));
    await waitUntilClock(expiresAt + 1000);
    // the vendor keeps the stream open: only the proxy can end it
    await client.rest().catch(() => {});
    assert.equal(client.res.complete, false, 'the cut response did not end as a complete message');
    await upstreamClosed;
    const g = await d.admin.get(`/v1/keys/${key.id}`);
    assert.ok(g.json.usage.spent_usd > 0, g.text); // usage never seen: the reservation
    assert.equal(g.json.usage.reserved_usd, 0, g.text);
  });

  it('401 key_expired once the wall clock passes expires_at, nothing forwarded', async () => {
    const key = await d.issueKey({ label: uniquePrefix('exp'), vendor: 'stripe', expires_in: '2s' });
    const expiresAt = Date.parse(key.expires_at);
    assert.equal(expiresAt - Date.parse(key.created_at), 2000);

    const first = await getPI(`Bearer ${key.token}`);
    assert.equal(first.status, 200, `first call within the TTL: ${first.text}`);
    assert.equal(mocks.stripe.requests.length, 1);

    // expires_at has whole seconds: give the daemon's sub-second creation time one more second.
    await waitUntilClock(expiresAt + 1000);
    const r = await getPI(`Bearer ${key.token}`);
    assertError(r, 401, 'key_expired');
    assert.equal(mocks.stripe.requests.length, 1, 'nothing forwarded after expiry');

    const g = await d.admin.get(`/v1/keys/${key.id}`);
    assert.equal(g.json.status, 'expired', g.text);
    const l = await d.admin.get(`/v1/keys?status=expired&label_prefix=${encodeURIComponent(key.label)}`);
    assert.deepEqual(
      l.json.data.map((k) => k.id),
      [key.id],
    );
  });

  it('403 vendor_mismatch: a prefix naming another vendor than the key', async () => {
    const stripeKey = await d.issueKey({ label: uniquePrefix('mm'), vendor: 'stripe' });
    const openaiKey = await d.issueKey({ label: uniquePrefix('mm'), vendor: 'openai' });
    const cases = [
      [stripeKey, 'GET', '/openai/v1/models', { authorization: `Bearer ${stripeKey.token}` }],
      [stripeKey, 'GET', '/anthropic/v1/models', { 'x-api-key': stripeKey.token }],
      [openaiKey, 'POST', '/stripe/v1/payment_intents', { authorization: `Bearer ${openaiKey.token}` }],
      [
        openaiKey,
        'GET',
        '/twilio/2010-04-01/Accounts/AC00/Messages.json',
        { authorization: basic('AC00', openaiKey.token) },
      ],
    ];
    for (const [, method, path, headers] of cases) {
      const r = await d.proxy({ method, path, headers, body: method === 'POST' ? 'amount=1&currency=usd' : undefined });
      assertError(r, 403, 'vendor_mismatch', `${method} ${path}`);
    }
    assert.equal(mocks.count(), 0, 'nothing forwarded to any vendor');
  });

  describe('endpoint_not_allowed', () => {
    // Table: allowed_endpoints, method, vendor path, allowed?
    const table = [
      [['/v1/payment_intents'], 'GET', '/v1/payment_intents', true],
      [['/v1/payment_intents'], 'POST', '/v1/payment_intents', true],
      [['/v1/payment_intents'], 'POST', '/v1/customers', false],
      [['/v1/payment_intents'], 'GET', '/v1/payment_intents/pi_123', false],
      [['/v1/payment_intents'], 'GET', '/v1/payment_intents_extra', false],
      [['/v1/payment_intents/*'], 'GET', '/v1/payment_intents/pi_123', true],
      [['/v1/payment_intents/*'], 'POST', '/v1/payment_intents/pi_123/confirm', true],
      [['/v1/payment_intents/*'], 'GET', '/v1/payment_intents', false],
      [['/v1/payment_intents/*'], 'GET', '/v1/refunds/re_1', false],
      [['POST /v1/payment_intents'], 'POST', '/v1/payment_intents', true],
      [['POST /v1/payment_intents'], 'GET', '/v1/payment_intents', false],
      [['POST /v1/payment_intents'], 'DELETE', '/v1/payment_intents', false],
      [['GET /v1/customers/*', 'POST /v1/payment_intents'], 'GET', '/v1/customers/cus_1', true],
      [['GET /v1/customers/*', 'POST /v1/payment_intents'], 'POST', '/v1/customers/cus_1', false],
    ];
    for (const [allowed, method, p, ok] of table) {
      it(`${JSON.stringify(allowed)}: ${method} ${p} -> ${ok ? 'forwarded' : '403'}`, async () => {
        const key = await d.issueKey({
          label: uniquePrefix('ep'),
          vendor: 'stripe',
          allowed_endpoints: allowed,
        });
        const hasBody = method === 'POST';
        const r = await d.proxy({
          method,
          path: `/stripe${p}`,
          headers: {
            authorization: `Bearer ${key.token}`,
            ...(hasBody ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
          },
          body: hasBody ? 'amount=100&currency=usd' : undefined,
        });
        if (ok) {
          assert.notEqual(r.headers['keybrake-error'], 'endpoint_not_allowed', r.text);
          assert.equal(mocks.stripe.requests.length, 1, `forwarded: ${r.status} ${r.text}`);
          assert.equal(mocks.stripe.requests[0].method, method);
          assert.equal(mocks.stripe.requests[0].path, p);
        } else {
          assertError(r, 403, 'endpoint_not_allowed');
          assert.equal(mocks.count(), 0, 'nothing forwarded');
        }
      });
    }

    it('the same applies to paths without the vendor prefix', async () => {
      const key = await d.issueKey({
        label: uniquePrefix('ep-np'),
        vendor: 'stripe',
        allowed_endpoints: ['/v1/payment_intents'],
      });
      const r = await d.proxy({
        method: 'GET',
        path: '/v1/customers',
        headers: { authorization: `Bearer ${key.token}` },
      });
      assertError(r, 403, 'endpoint_not_allowed');
      assert.equal(mocks.count(), 0);
    });
  });

  it('refusals carry Keybrake-Request-Id too', async () => {
    const r = await getPI('Bearer garbage');
    assertError(r, 401, 'invalid_token');
    assert.ok(r.headers['keybrake-request-id'], JSON.stringify(r.headers));
  });

  // Last in this describe: a sanitizer report or a crash on shutdown fails here.
  it('the daemon stops on SIGTERM with exit code 0', async () => {
    await d.stop();
  });
});

describe('upstream failures', () => {
  it('502 upstream_unreachable when the vendor base URL is a closed port', async () => {
    const port = await closedPort();
    const d = await startDaemon({
      baseUrls: {
        stripe: `http://127.0.0.1:${port}`,
        openai: `http://127.0.0.1:${port}`,
        anthropic: `http://127.0.0.1:${port}`,
        twilio: `http://127.0.0.1:${port}`,
      },
      env: { KEYBRAKE_UPSTREAM_CONNECT_TIMEOUT: '5' },
    });
    try {
      const key = await d.issueKey({ label: uniquePrefix('unreach'), vendor: 'stripe' });
      const r = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents',
        headers: {
          authorization: `Bearer ${key.token}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: 'amount=100&currency=usd',
      });
      assertError(r, 502, 'upstream_unreachable');
      assert.ok(!r.text.includes(d.secrets.stripe), 'secret in an error body');
      // The daemon stays up and answers the next request the same way.
      const r2 = await d.proxy({
        method: 'GET',
        path: '/stripe/v1/payment_intents/pi_1',
        headers: { authorization: `Bearer ${key.token}` },
      });
      assertError(r2, 502, 'upstream_unreachable');
    } finally {
      await d.stop();
    }
  });

  it('a vendor that dies inside its head: 502 with only the proxy\'s headers (regression)', async () => {
    // The vendor's headers are passed on as they arrive; when it fails before
    // its head ends, the error answer must not carry them (a second
    // Content-Length would make the client misread the body).
    const mocks = await startMockVendors();
    mocks.stripe.setHandler((rec, res) => {
      res.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 999\r\nContent-Type: text/html\r\nX-Vendor-Half: 1\r\n');
      res.socket.destroy();
    });
    const d = await startDaemon({ mocks });
    try {
      const key = await d.issueKey({ label: uniquePrefix('half'), vendor: 'stripe' });
      const r = await rawRequest(
        d.proxyPort,
        `GET /stripe/v1/payment_intents/pi_1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(statusOf(r.text), 502, r.text);
      const head = r.text.slice(0, r.text.indexOf('\r\n\r\n'));
      assert.equal((head.match(/\r\ncontent-length:/gi) || []).length, 1, head);
      assert.doesNotMatch(head, /X-Vendor-Half|text\/html/i);
      assert.match(head, /\r\nKeybrake-Request-Id: req_/);
      const body = JSON.parse(r.text.slice(head.length + 4));
      assert.equal(body.code, 'upstream_error');
    } finally {
      try {
        await d.stop();
      } finally {
        await mocks.close();
      }
    }
  });

  it('504 upstream_timeout when the vendor accepts and never answers', { timeout: 60_000 }, async () => {
    const mocks = await startMockVendors();
    mocks.stripe.setHang(true);
    const d = await startDaemon({ mocks, env: { KEYBRAKE_UPSTREAM_TIMEOUT: '1s' } });
    try {
      const key = await d.issueKey({ label: uniquePrefix('hang'), vendor: 'stripe' });
      const t0 = Date.now();
      const r = await d.proxy({
        method: 'GET',
        path: '/stripe/v1/payment_intents/pi_hang',
        headers: { authorization: `Bearer ${key.token}` },
        timeoutMs: 30_000,
      });
      const elapsed = Date.now() - t0;
      assertError(r, 504, 'upstream_timeout');
      assert.equal(mocks.stripe.requests.length, 1, 'the request did reach the vendor');
      assert.ok(elapsed >= 900, `answered after ${elapsed} ms, before the 1 s idle timeout`);
      assert.ok(elapsed < 15_000, `answered after ${elapsed} ms`);
    } finally {
      try {
        await d.stop();
      } finally {
        await mocks.close();
      }
    }
  });

  it('504 upstream_timeout does not cut a slow but steady stream', { timeout: 60_000 }, async () => {
    // UPSTREAM_TIMEOUT is an idle timeout: a stream that keeps sending is not cut.
    const mocks = await startMockVendors();
    const d = await startDaemon({ mocks, env: { KEYBRAKE_UPSTREAM_TIMEOUT: '2' } });
    try {
      const key = await d.issueKey({ label: uniquePrefix('steady'), vendor: 'openai' });
      const ctlP = mocks.openai.nextStream();
      const clientP = streamRequest({
        port: d.proxyPort,
        path: '/openai/v1/responses/resp_steady?stream=true',
        headers: { authorization: `Bearer ${key.token}` },
      });
      const ctl = await ctlP;
      ctl.send({ n: 0 });
      const client = await clientP;
      // Keep the stream busy for longer than the idle timeout, one event each time the
      // previous one came through the proxy; stop once 3 s of wall clock have passed.
      const t0 = Date.now();
      let n = 0;
      for (;;) {
        await client.readUntil((s) => s.includes(`{"n":${n}}`));
        if (Date.now() - t0 > 3000) break;
        await waitUntilClock(Date.now() + 250); // pacing the slow upstream, not synchronisation
        n += 1;
        ctl.send({ n });
      }
      ctl.end();
      const all = await client.rest();
      assert.equal(client.status, 200);
      assert.ok(all.endsWith(`data: {"n":${n}}\n\n`), all.slice(-200));
    } finally {
      try {
        await d.stop();
      } finally {
        await mocks.close();
      }
    }
  });
});
