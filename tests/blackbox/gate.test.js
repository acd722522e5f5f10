'use strict';
// gate.test.js - a request with a body is judged on its head, before any of
// the body is read, also when the worker has to read the key from the store
// first (issue 14 item 4, issue 15 item 2): the head waits, off the loop,
// for the key; an unknown or revoked key is refused without the body ever
// being sent; a good key's body is then read and forwarded.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const zlib = require('node:zlib');

const { assertError, metric, rawRequest, startDaemon, statusOf, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const B62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

// A token Keybrake's format check accepts (the checksum is a CRC, not a
// secret) but that no key has: the store must be asked.
function forgedToken() {
  let r = 'kb_';
  while (r.length < 3 + 40) {
    const b = crypto.randomBytes(1)[0];
    if (b < 248) r += B62[b % 62];
  }
  let c = zlib.crc32(Buffer.from(r, 'latin1')) >>> 0;
  let check = '';
  for (let i = 0; i < 6; i++) {
    check = B62[c % 62] + check;
    c = Math.floor(c / 62);
  }
  return r + check;
}


describe('the body gate waits for a key read off the loop', () => {
  let mocks;
  let d;
  const reads = async () => metric((await d.admin.get('/metrics')).text, 'keybrake_key_store_reads_total');

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
  });
  after(async () => {
    if (d) await d.stop();
    if (mocks) await mocks.close();
  });
  beforeEach(() => mocks.reset());

  // only the head: if the proxy waited for the body, no answer would come
  // before the socket timeout
  const headOnly = (token) =>
    rawRequest(
      d.proxyPort,
      'POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\n' +
        `Authorization: Bearer ${token}\r\n` +
        'Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n',
    );

  it('a well-formed token no key has: 401 invalid_token on the head alone', async () => {
    const before = await reads();
    const r = await headOnly(forgedToken());
    assert.equal(statusOf(r.text), 401, r.text);
    assert.match(r.text, /"code":"invalid_token"/);
    assert.equal(r.closed, true);
    assert.ok((await reads()) > before, 'the store was asked');
    assert.equal(mocks.count(), 0);
  });

  it('a revoked key no worker has cached: 401 key_revoked on the head alone', async () => {
    const k = await d.issueKey({ label: uniquePrefix('gate-rev'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    assert.equal((await d.admin.del(`/v1/keys/${k.id}`)).status, 204);
    const r = await headOnly(k.token);
    assert.equal(statusOf(r.text), 401, r.text);
    assert.match(r.text, /"code":"key_revoked"/);
    assert.equal(mocks.count(), 0);
  });

  it('a new good key: read, then its body is read and forwarded whole', async () => {
    const k = await d.issueKey({ label: uniquePrefix('gate-ok'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    const body = 'amount=700&currency=usd&metadata[run]=' + 'x'.repeat(20000);
    const r = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body,
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.stripe.requests.length, 1);
    assert.ok(mocks.stripe.requests[0].bodyText.includes('x'.repeat(20000)));
  });

  it('many heads waiting at once, good and forged, each gets its own verdict', async () => {
    const good = [];
    for (let i = 0; i < 8; i++)
      good.push(await d.issueKey({ label: uniquePrefix(`gate-many-${i}`), vendor: 'stripe', allowed_endpoints: ['/v1/*'] }));
    const calls = [];
    for (const k of good)
      calls.push(
        d.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/x-www-form-urlencoded' },
          body: 'amount=100&currency=usd',
        }),
      );
    const forged = Array.from({ length: 8 }, () => headOnly(forgedToken()));
    const ok = await Promise.all(calls);
    for (const r of ok) assert.equal(r.status, 200, r.text);
    for (const r of await Promise.all(forged)) assert.equal(statusOf(r.text), 401, r.text);
    assert.equal(mocks.stripe.requests.length, 8);
    assertError(await d.proxy({ method: 'GET', path: '/stripe/v1/payment_intents/pi_1', headers: { authorization: `Bearer ${forgedToken()}` } }), 401, 'invalid_token');
  });
});
