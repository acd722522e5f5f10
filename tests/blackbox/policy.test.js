'use strict';
// policy.test.js - enforcement that cannot be bypassed (issue 3): framing and
// header forms that could be read two ways, refused over
// raw sockets with nothing reaching the vendor; tokens in query strings;
// per-key rate limits; and revocation cutting a response mid-stream.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');

const { assertError, rawRequest: raw, startDaemon, statusOf, streamRequest, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

describe('request hygiene and policy enforcement', () => {
  let mocks;
  let d;
  let key;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    key = await d.issueKey({ label: uniquePrefix('hyg'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  const framing = [
    ['two different Content-Length values', 'Content-Length: 4\r\nContent-Length: 5\r\n', 'abcd'],
    ['two equal Content-Length values', 'Content-Length: 4\r\nContent-Length: 4\r\n', 'abcd'],
    ['Content-Length with a sign', 'Content-Length: +4\r\n', 'abcd'],
    ['space before the colon of Transfer-Encoding', 'Transfer-Encoding : chunked\r\nContent-Length: 4\r\n', 'abcd'],
    ['a header name with a space', 'X Bad: 1\r\nContent-Length: 4\r\n', 'abcd'],
    ['a control byte in a header value', 'X-Bad: a\x01b\r\nContent-Length: 4\r\n', 'abcd'],
  ];
  for (const [name, headers, body] of framing) {
    it(`refuses ${name} with 400 and closes, forwarding nothing`, async () => {
      const r = await raw(
        d.proxyPort,
        `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\n${headers}\r\n${body}`,
      );
      assert.equal(statusOf(r.text), 400, r.text);
      assert.ok(r.closed, 'connection closed after an ambiguous request');
      assert.equal(mocks.count(), 0, 'nothing reached the vendor');
    });
  }

  it('refuses Transfer-Encoding on HTTP/1.0', async () => {
    const r = await raw(
      d.proxyPort,
      `POST /stripe/v1/payment_intents HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n`,
    );
    assert.equal(statusOf(r.text), 400, r.text);
    assert.equal(mocks.count(), 0);
  });

  it('refuses absolute-form and asterisk-form targets and encoded dot segments as bad_path', async () => {
    for (const target of [
      'http://127.0.0.1/stripe/v1/payment_intents',
      '*',
      '/stripe/v1/%2e%2e/v1/payouts',
      '/stripe/v1/payment_intents/..%2Fpayouts',
      '/stripe//v1/payment_intents',
    ]) {
      const r = await raw(d.proxyPort, `GET ${target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\nConnection: close\r\n\r\n`);
      assert.equal(statusOf(r.text), 400, `${target}: ${r.text}`);
      assert.match(r.text, /bad_path/, target);
    }
    assert.equal(mocks.count(), 0);
  });

  it('refuses a vault token in the query string and never logs it', async () => {
    const r = await d.proxy({
      path: `/stripe/v1/payment_intents?api_key=${key.token}`,
      headers: { authorization: `Bearer ${key.token}` },
    });
    assertError(r, 400, 'token_in_query');
    assert.equal(mocks.count(), 0);
    assert.ok(!(d.stdout + d.stderr).includes(key.token), 'token not in the log');
  });

  it('refuses a percent-encoded vault token, once or twice over, and never logs it', async () => {
    const once = [...key.token].map((ch) => '%' + ch.charCodeAt(0).toString(16).toUpperCase()).join('');
    const partly = `k%62_${key.token.slice(3)}`;
    const twice = key.token.replace('k', '%256B');
    for (const spelled of [once, partly, twice]) {
      const r = await d.proxy({ path: `/stripe/v1/payment_intents?api_key=${spelled}`, headers: { authorization: `Bearer ${key.token}` } });
      assertError(r, 400, 'token_in_query', spelled);
      const p = await d.proxy({ path: `/stripe/v1/customers/${spelled}`, headers: { authorization: `Bearer ${key.token}` } });
      assertError(p, 400, 'token_in_query', spelled);
    }
    assert.equal(mocks.count(), 0);
    const log = d.stdout + d.stderr;
    assert.ok(!log.includes(key.token) && !log.includes(once) && !log.includes(partly), 'token not in the log');
  });

  it('refuses a vault token in the path too, and neither logs nor audits the URL', async () => {
    const r = await d.proxy({
      path: `/stripe/v1/customers/${key.token}`,
      headers: { authorization: `Bearer ${key.token}` },
    });
    assertError(r, 400, 'token_in_query');
    assert.equal(mocks.count(), 0);
    const audit = await d.admin.get('/v1/audit?limit=200');
    assert.equal(audit.status, 200);
    assert.ok(!audit.text.includes(key.token), 'token not in the audit log');
    assert.ok(!(d.stdout + d.stderr).includes(key.token), 'token not in the log');
  });

  it('a well-formed request still goes through (the checks are not blanket refusals)', async () => {
    const r = await raw(
      d.proxyPort,
      `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\nConnection: close\r\n\r\namount=100&currency=usd`,
    );
    assert.equal(statusOf(r.text), 200, r.text);
    assert.equal(mocks.count(), 1);
    assert.equal(mocks.stripe.requests[0].bodyText, 'amount=100&currency=usd');
  });

  it('rate_limit: over the limit is 429 rate_limited with Retry-After, distinct from cap_exhausted', async () => {
    const res = await d.admin.post('/v1/keys', {
      label: uniquePrefix('rate'),
      vendor: 'stripe',
      allowed_endpoints: ['GET /v1/*'],
      daily_usd_cap: 10,
      expires_in: '1h',
      rate_limit: { requests: 3, per: 'minute' },
    });
    assert.equal(res.status, 201, res.text);
    assert.deepEqual(res.json.rate_limit, { requests: 3, per: 'minute' });
    const call = () =>
      d.proxy({ path: '/stripe/v1/payment_intents/pi_1', headers: { authorization: `Bearer ${res.json.token}` } });
    for (let i = 0; i < 3; i++) assert.equal((await call()).status, 200);
    const r = await call();
    assertError(r, 429, 'rate_limited');
    const ra = Number(r.headers['retry-after']);
    assert.ok(ra >= 1 && ra <= 60, `Retry-After ${r.headers['retry-after']}`);
    assert.equal(mocks.count(), 3, 'the refused request did not reach the vendor');
  });

  it('rate_limit is validated at issuance', async () => {
    for (const rl of [{ requests: 0, per: 'second' }, { requests: 5, per: 'hour' }, { requests: 1.5, per: 'second' }, 'fast', { requests: 5 }]) {
      const r = await d.admin.post('/v1/keys', {
        label: uniquePrefix('rate-bad'),
        vendor: 'stripe',
        allowed_endpoints: ['/v1/*'],
        daily_usd_cap: 1,
        expires_in: 60,
        rate_limit: rl,
      });
      assertError(r, 400, 'invalid_request', JSON.stringify(rl));
      assert.equal(r.json.field, 'rate_limit');
    }
  });

  it('revoking a key cuts its response mid-stream, within one second', { timeout: 10_000 }, async () => {
    const k = await d.issueKey({ label: uniquePrefix('cut'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'] });
    const streamP = mocks.openai.nextStream();
    const client = await Promise.all([
      streamRequest({
        port: d.proxyPort,
        method: 'POST',
        path: '/openai/v1/chat/completions',
        headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      }),
      streamP,
    ]);
    const [c, up] = client;
    const upstreamClosed = new Promise((resolve) => up.res.on('close', resolve));
    up.send({ id: 'c1', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'one' } }] });
    await c.readUntil((t) => t.includes('"one"'));
    const t0 = Date.now();
    assert.equal((await d.admin.del(`/v1/keys/${k.id}`)).status, 204);
    // the proxy must end the client's response and drop the vendor transfer
    await c.rest().catch(() => {});
    assert.equal(c.res.complete, false, 'the cut response did not end as a complete message');
    await upstreamClosed;
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 1000, `cut after ${elapsed} ms`);
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});

describe('slow clients', () => {
  it('a client trickling its headers is cut by the timeout without holding up others', async () => {
    const mocks = await startMockVendors();
    const d = await startDaemon({ mocks, env: { KEYBRAKE_CLIENT_TIMEOUT: '1s', KEYBRAKE_WORKERS: '1' } });
    try {
      const key = await d.issueKey({ label: uniquePrefix('slow'), vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
      // headers never finished: the read timeout must close the connection
      const slow = raw(d.proxyPort, `GET /stripe/v1/payment_intents/pi_1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\n`);
      // meanwhile, on the same single worker, another client is served at once
      const r = await d.proxy({ path: '/stripe/v1/payment_intents/pi_2', headers: { authorization: `Bearer ${key.token}` } });
      assert.equal(r.status, 200);
      const s = await slow;
      assert.ok(s.closed, 'the trickling connection was closed by the proxy');
      assert.ok(!/^HTTP\/1\.1 200/.test(s.text), s.text);
      assert.equal(mocks.stripe.requests.filter((q) => q.url.endsWith('pi_1')).length, 0, 'the partial request was never forwarded');
      await d.stop();
    } finally {
      await d.kill();
      await mocks.close();
    }
  });
});
