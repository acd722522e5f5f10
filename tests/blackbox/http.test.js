'use strict';
// http.test.js - the proxy's own HTTP/1.1 server (src/net/httpd.c), over raw
// sockets: body and header limits answered in the one error shape (and
// audited), chunked request bodies, Expect: 100-continue, pipelining, and the
// connection cap with its metrics.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');

const { rawRequest, startDaemon, statusOf, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

// The JSON body of the first response in raw text.
function jsonOf(text) {
  const at = text.indexOf('\r\n\r\n');
  return JSON.parse(text.slice(at + 4).split('\n')[0]);
}

function assertRefused(r, status, code) {
  assert.equal(statusOf(r.text), status, r.text);
  assert.match(r.text, new RegExp(`\r\nKeybrake-Error: ${code}\r\n`), r.text);
  assert.match(r.text, /\r\nKeybrake-Request-Id: req_[0-9a-f]+\r\n/, r.text);
  assert.match(r.text, /\r\nContent-Type: application\/json\r\n/, r.text);
  assert.equal(jsonOf(r.text).code, code, r.text);
}

function metric(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe('HTTP server: limits and framing', () => {
  let mocks;
  let d;
  let key;
  let head;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({
      mocks,
      env: { KEYBRAKE_MAX_BODY_BYTES: '1k', KEYBRAKE_MAX_HEADER_BYTES: '2k' },
    });
    key = await d.issueKey({ label: uniquePrefix('http'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    head = (method, path, extra = '') =>
      `${method} ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\n${extra}`;
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  it('a Content-Length over max_body_bytes is 413 body_too_large before the body is sent, and audited', async () => {
    const r = await rawRequest(
      d.proxyPort,
      head('POST', '/stripe/v1/payment_intents', 'Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\n'),
    );
    assertRefused(r, 413, 'body_too_large');
    assert.ok(r.closed, 'the connection is closed: the unread body cannot be taken for a request');
    assert.equal(mocks.count(), 0, 'nothing reached the vendor');
    const id = /\r\nKeybrake-Request-Id: (req_[0-9a-f]+)\r\n/.exec(r.text)[1];
    const audit = await d.admin.get('/v1/audit?decision=refused&limit=200');
    const rec = audit.json.data.find((e) => e.request_id === id);
    assert.ok(rec, 'the refusal has its audit record');
    assert.equal(rec.code, 'body_too_large');
    assert.equal(rec.path, '/stripe/v1/payment_intents');
  });

  it('a body without a valid, active vault token is refused before it is read', async () => {
    const revoked = await d.issueKey({ label: uniquePrefix('http-rev'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    assert.equal((await d.admin.del(`/v1/keys/${revoked.id}`)).status, 204);
    for (const [auth, code] of [
      ['', 'invalid_token'],
      ['Authorization: Bearer kb_not_a_token\r\n', 'invalid_token'],
      [`Authorization: Bearer ${revoked.token}\r\n`, 'key_revoked'],
    ]) {
      // only the head is sent: the answer must come without the body
      const r = await rawRequest(
        d.proxyPort,
        `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n`,
      );
      assertRefused(r, 401, code);
      assert.ok(r.closed, 'the connection is closed: the unread body cannot be taken for a request');
    }
    for (const te of ['Transfer-Encoding: chunked\r\n']) {
      const r = await rawRequest(d.proxyPort, `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\n${te}\r\n`);
      assertRefused(r, 401, 'invalid_token');
    }
    assert.equal(mocks.count(), 0);
  });

  it('a chunked body over max_body_bytes is 413 too, counted after de-chunking', async () => {
    const chunk = 'a'.repeat(400);
    const body = [1, 2, 3].map(() => `190\r\n${chunk}\r\n`).join('') + '0\r\n\r\n';
    const r = await rawRequest(d.proxyPort, head('POST', '/stripe/v1/payment_intents', 'Transfer-Encoding: chunked\r\n\r\n') + body);
    assertRefused(r, 413, 'body_too_large');
    assert.ok(r.closed);
    assert.equal(mocks.count(), 0);
  });

  it('a chunked body within the limit is de-chunked and forwarded byte for byte', async () => {
    const r = await rawRequest(d.proxyPort, [
      head('POST', '/stripe/v1/payment_intents', 'Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'),
      '8;ext=1\r\namount=1\r\n',
      'f\r\n00&currency=usd\r\n',
      '0\r\nX-Trailer: dropped\r\n\r\n',
    ]);
    assert.equal(statusOf(r.text), 200, r.text);
    assert.equal(mocks.count(), 1);
    const got = mocks.stripe.requests[0];
    assert.equal(got.bodyText, 'amount=100&currency=usd');
    assert.equal(got.headers['content-length'], '23', 'forwarded with its length, not chunked');
    assert.equal(got.headers['x-trailer'], undefined, 'trailers are not forwarded');
  });

  it('a malformed chunk size is 400 bad_request and nothing is forwarded', async () => {
    const r = await rawRequest(d.proxyPort, head('POST', '/stripe/v1/payment_intents', 'Transfer-Encoding: chunked\r\n\r\n') + '0x8\r\namount=1\r\n0\r\n\r\n');
    assertRefused(r, 400, 'bad_request');
    assert.ok(r.closed);
    assert.equal(mocks.count(), 0);
  });

  it('Expect: 100-continue gets the interim answer, then the final one once the body arrives', async () => {
    const body = 'amount=100&currency=usd';
    const sock = net.connect(d.proxyPort, '127.0.0.1');
    let got = '';
    const closed = new Promise((resolve) => sock.on('close', resolve));
    const waiters = [];
    sock.on('data', (c) => {
      got += c.toString('latin1');
      for (const w of waiters.splice(0)) w();
    });
    const until = async (pred) => {
      while (!pred(got)) await new Promise((r) => waiters.push(r));
    };
    sock.write(head('POST', '/stripe/v1/payment_intents', `Content-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`));
    await until((t) => t.includes('\r\n\r\n'));
    assert.match(got, /^HTTP\/1\.1 100 Continue\r\n\r\n$/, 'the interim answer, and nothing else yet');
    assert.equal(mocks.count(), 0, 'nothing forwarded before the body');
    sock.write(body);
    await closed;
    assert.equal(statusOf(got.slice(got.indexOf('\r\n\r\n') + 4)), 200, got);
    assert.equal(mocks.stripe.requests[0].bodyText, body);
  });

  it('headers over max_header_bytes are 431 headers_too_large', async () => {
    const r = await rawRequest(d.proxyPort, head('GET', '/stripe/v1/payment_intents/pi_1', `X-Big: ${'a'.repeat(3000)}\r\n\r\n`));
    assertRefused(r, 431, 'headers_too_large');
    assert.ok(r.closed);
    assert.equal(mocks.count(), 0);
  });

  it('a folded header line (obs-fold) and a bare CR are 400 bad_request', async () => {
    for (const extra of ['X-A: 1\r\n folded\r\n\r\n', 'X-A: 1\rX-B: 2\r\n\r\n']) {
      const r = await rawRequest(d.proxyPort, head('GET', '/stripe/v1/payment_intents/pi_1', extra));
      assertRefused(r, 400, 'bad_request');
      assert.ok(r.closed);
    }
    assert.equal(mocks.count(), 0);
  });

  it('an unsupported HTTP version and a malformed request line are 400', async () => {
    for (const line of ['GET /stripe/v1/payment_intents/pi_1 HTTP/2.0\r\n', 'GET  /stripe/v1/payment_intents/pi_1 HTTP/1.1\r\n', 'GET /x\r\n']) {
      const r = await rawRequest(d.proxyPort, `${line}Host: x\r\n\r\n`);
      assertRefused(r, 400, 'bad_request');
      assert.ok(r.closed, line);
    }
    assert.equal(mocks.count(), 0);
  });

  it('two pipelined requests in one write get two answers, in order', async () => {
    const r = await rawRequest(
      d.proxyPort,
      head('GET', '/stripe/v1/payment_intents/pi_1', '\r\n') + head('GET', '/stripe/v1/payment_intents/pi_2', 'Connection: close\r\n\r\n'),
    );
    const statuses = [...r.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 200], r.text);
    assert.ok(r.text.indexOf('pi_1') < r.text.indexOf('pi_2'), 'answers in request order');
    assert.deepEqual(mocks.stripe.requests.map((q) => q.url), ['/v1/payment_intents/pi_1', '/v1/payment_intents/pi_2']);
    assert.ok(r.closed, 'closed after the request that asked for it');
  });

  it('HTTP/1.0 is answered and the connection closed unless it asked for keep-alive', async () => {
    const r = await rawRequest(d.proxyPort, `GET /stripe/v1/payment_intents/pi_1 HTTP/1.0\r\nAuthorization: Bearer ${key.token}\r\n\r\n`);
    assert.equal(statusOf(r.text), 200, r.text);
    assert.match(r.text, /\r\nConnection: close\r\n/);
    assert.ok(r.closed);
  });

  it('an ordinary client sending a large body gets the 413, not a reset', async () => {
    const body = Buffer.alloc(256 * 1024, 'a');
    const res = await new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: d.proxyPort,
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          agent: false,
          headers: { authorization: `Bearer ${key.token}`, 'content-length': body.length },
        },
        (r) => {
          let text = '';
          r.on('data', (c) => (text += c));
          r.on('end', () => resolve({ status: r.statusCode, text }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(res.status, 413);
    assert.equal(JSON.parse(res.text).code, 'body_too_large');
    assert.equal(mocks.count(), 0);
  });

  it('the admin API answers an over-size body in the error shape too', async () => {
    const r = await rawRequest(
      d.adminPort,
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nContent-Length: 2000000\r\n\r\n`,
    );
    assert.equal(statusOf(r.text), 413, r.text);
    assert.equal(jsonOf(r.text).code, 'body_too_large');
    assert.ok(r.closed);
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});

describe('HTTP server: connection cap', () => {
  it('over max_connections (all workers together) a connection gets 503 too_many_connections; a freed slot is reused', async () => {
    const mocks = await startMockVendors();
    const d = await startDaemon({ mocks, env: { KEYBRAKE_MAX_CONNECTIONS: '3', KEYBRAKE_WORKERS: '2' } });
    const held = [];
    try {
      const key = await d.issueKey({ label: uniquePrefix('cap'), vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
      const open = async () => Number(metric((await d.admin.get('/metrics')).text, 'keybrake_open_connections{listener="proxy"}'));
      for (let i = 0; i < 3; i++) {
        const s = net.connect(d.proxyPort, '127.0.0.1');
        await new Promise((resolve, reject) => s.on('connect', resolve).on('error', reject));
        held.push(s);
      }
      await waitFor(async () => (await open()) === 3, { what: 'three proxy connections open' });
      const r = await rawRequest(d.proxyPort, `GET /stripe/v1/payment_intents/pi_1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\n\r\n`);
      assert.equal(statusOf(r.text), 503, r.text);
      assert.equal(jsonOf(r.text).code, 'too_many_connections');
      assert.ok(r.closed);
      const m = (await d.admin.get('/metrics')).text;
      assert.equal(metric(m, 'keybrake_connections_refused_total'), 1);
      assert.equal(mocks.count(), 0);

      held.pop().destroy();
      await waitFor(async () => (await open()) === 2, { what: 'the freed connection counted out' });
      const ok = await d.proxy({ path: '/stripe/v1/payment_intents/pi_1', headers: { authorization: `Bearer ${key.token}` } });
      assert.equal(ok.status, 200);
      for (const s of held.splice(0)) s.destroy();
      await waitFor(async () => (await open()) === 0, { what: 'every proxy connection counted out' });
      await d.stop();
    } finally {
      for (const s of held) s.destroy();
      await d.kill();
      await mocks.close();
    }
  });

  it('over max_connections_per_source one address gets 503 too_many_connections while the total has room', async () => {
    const mocks = await startMockVendors();
    const d = await startDaemon({ mocks, env: { KEYBRAKE_MAX_CONNECTIONS_PER_SOURCE: '2', KEYBRAKE_WORKERS: '2' } });
    const held = [];
    try {
      const key = await d.issueKey({ label: uniquePrefix('per-src'), vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
      const open = async () => Number(metric((await d.admin.get('/metrics')).text, 'keybrake_open_connections{listener="proxy"}'));
      for (let i = 0; i < 2; i++) {
        const s = net.connect(d.proxyPort, '127.0.0.1');
        await new Promise((resolve, reject) => s.on('connect', resolve).on('error', reject));
        held.push(s);
      }
      await waitFor(async () => (await open()) === 2, { what: 'two proxy connections open' });
      const r = await rawRequest(d.proxyPort, `GET /stripe/v1/payment_intents/pi_1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\n\r\n`);
      assert.equal(statusOf(r.text), 503, r.text);
      assert.equal(jsonOf(r.text).code, 'too_many_connections');
      assert.equal(mocks.count(), 0);
      held.pop().destroy();
      await waitFor(async () => (await open()) === 1, { what: 'the freed connection counted out' });
      const ok = await d.proxy({ path: '/stripe/v1/payment_intents/pi_1', headers: { authorization: `Bearer ${key.token}` } });
      assert.equal(ok.status, 200);
      for (const s of held.splice(0)) s.destroy();
      await d.stop();
    } finally {
      for (const s of held) s.destroy();
      await d.kill();
      await mocks.close();
    }
  });
});
