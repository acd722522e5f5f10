'use strict';
// admin.test.js - the admin REST API through the real binary: issuing keys
// and validation, authentication, listing with filters and cursors, reading
// one key with usage, deleting, bulk revocation, health endpoints.
//
// This file's daemon has no Anthropic secret, to see vendor_not_configured.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');

const {
  RFC3339_UTC,
  assertError,
  makeSecrets,
  startDaemon,
  uniquePrefix,
  waitFor,
} = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

describe('admin API', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks, secrets: { ...makeSecrets(), anthropic: null } });
  });

  after(async () => {
    try {
      if (d) await d.kill(); // only if the last test did not stop it
    } finally {
      if (mocks) await mocks.close();
    }
  });

  const validBody = (over = {}) => ({
    label: uniquePrefix('valid'),
    vendor: 'stripe',
    allowed_endpoints: ['/v1/payment_intents', 'POST /v1/customers'],
    daily_usd_cap: 25,
    expires_in: '5m',
    ...over,
  });

  describe('health', () => {
    it('GET /healthz answers 200 {"status":"ok"} without an admin token', async () => {
      const r = await d.admin.get('/healthz', { token: null });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, { status: 'ok' });
    });

    it('GET /readyz answers 200 without an admin token', async () => {
      const r = await d.admin.get('/readyz', { token: null });
      assert.equal(r.status, 200, r.text);
    });
  });

  describe('authentication', () => {
    it('every way of failing the admin token gets 401 unauthorized with the same body', async () => {
      const token = d.adminToken;
      const attempts = [
        { name: 'missing', opts: { token: null } },
        { name: 'wrong token', opts: { token: 'kba_test_' + '0'.repeat(32) } },
        { name: 'token with a char appended', opts: { token: token + 'x' } },
        { name: 'token missing its last char', opts: { token: token.slice(0, -1) } },
        { name: 'empty bearer', opts: { auth: 'Bearer ' } },
        { name: 'basic scheme', opts: { auth: 'Basic ' + Buffer.from(`${token}:`).toString('base64') } },
        { name: 'bare token without scheme', opts: { auth: token } },
      ];
      const bodies = new Set();
      const label = uniquePrefix('unauth');
      for (const a of attempts) {
        for (const [method, p, body] of [
          ['GET', '/v1/keys'],
          ['POST', '/v1/keys', validBody({ label })],
          ['DELETE', '/v1/keys/vk_doesnotexist'],
          ['GET', '/v1/keys/vk_doesnotexist'],
          ['POST', '/v1/keys/revoke', { label_prefix: label }],
        ]) {
          const r = await d.admin.req(method, p, body, a.opts);
          assertError(r, 401, 'unauthorized', `${a.name} ${method} ${p}`);
          bodies.add(r.text);
        }
      }
      assert.equal(bodies.size, 1, `401 bodies differ: ${[...bodies].join(' | ')}`);
      // None of the refused POSTs created a key.
      const list = await d.admin.get(`/v1/keys?label_prefix=${label}`);
      assert.equal(list.status, 200, list.text);
      assert.deepEqual(list.json.data, []);
    });

    it('the admin token is not accepted on the proxy, and vault tokens not on the admin API', async () => {
      const key = await d.issueKey({ label: uniquePrefix('crossauth') });
      const r = await d.admin.get('/v1/keys', { token: key.token });
      assertError(r, 401, 'unauthorized');
      const p = await d.proxy({
        method: 'GET',
        path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${d.adminToken}` },
      });
      assertError(p, 401, 'invalid_token');
    });
  });

  describe('POST /v1/keys', () => {
    it('issues a key: 201 with id, token and the fields as given', async () => {
      const body = validBody({ metadata: { run_id: 'run_42', agent: 'billing-bot', n: 3 } });
      const before = Date.now();
      const r = await d.admin.post('/v1/keys', body);
      assert.equal(r.status, 201, r.text);
      const k = r.json;
      assert.match(k.id, /^vk_[A-Za-z0-9_]+$/);
      assert.match(k.token, /^kb_[A-Za-z0-9_]+$/);
      assert.equal(k.label, body.label);
      assert.equal(k.vendor, 'stripe');
      assert.deepEqual(k.allowed_endpoints, body.allowed_endpoints);
      assert.equal(Number(k.daily_usd_cap), 25);
      assert.deepEqual(k.metadata, body.metadata);
      assert.equal(k.status, 'active');
      assert.match(k.created_at, RFC3339_UTC);
      assert.match(k.expires_at, RFC3339_UTC);
      const created = Date.parse(k.created_at);
      const expires = Date.parse(k.expires_at);
      assert.ok(Math.abs(created - before) < 5_000, `created_at ${k.created_at} is not now`);
      assert.equal(expires - created, 300_000, 'expires_in "5m" is 300 s after created_at');
    });

    it('two keys get different ids and tokens', async () => {
      const a = await d.issueKey({ label: uniquePrefix('uniq') });
      const b = await d.issueKey({ label: uniquePrefix('uniq') });
      assert.notEqual(a.id, b.id);
      assert.notEqual(a.token, b.token);
    });

    it('clients that leave before their answer: the keys are still issued and the daemon serves on', async () => {
      // Issuance is answered after the store writer commits; the request
      // must outlive a client that has gone by then.
      const label = uniquePrefix('gone');
      const body = JSON.stringify({ label, vendor: 'stripe', allowed_endpoints: ['GET /v1/*'], daily_usd_cap: 1, expires_in: '1h' });
      const raw =
        `POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
      const n = 20;
      await Promise.all(
        Array.from({ length: n }, () => new Promise((resolve, reject) => {
          const sock = net.connect(d.adminPort, '127.0.0.1', () => sock.end(raw, () => { sock.destroy(); resolve(); }));
          sock.on('error', reject);
        })),
      );
      await waitFor(async () => {
        const l = await d.admin.get(`/v1/keys?label_prefix=${label}&limit=100`);
        assert.equal(l.status, 200, l.text);
        return l.json.data.length === n;
      }, { timeoutMs: 10_000, what: `${n} keys issued for clients that left` });
      const k = await d.issueKey({ label });
      assert.ok(k.token);
    });

    it('expires_in accepts integer seconds and "30s" / "2h" forms', async () => {
      for (const [expires_in, secs] of [
        [90, 90],
        ['30s', 30],
        ['2h', 7200],
        ['24h', 86400],
      ]) {
        const k = await d.issueKey({ label: uniquePrefix('ttl'), expires_in });
        const dt = (Date.parse(k.expires_at) - Date.parse(k.created_at)) / 1000;
        assert.equal(dt, secs, `expires_in ${JSON.stringify(expires_in)}`);
      }
    });

    it('metadata is optional', async () => {
      const body = validBody();
      const r = await d.admin.post('/v1/keys', body);
      assert.equal(r.status, 201, r.text);
      assert.ok(
        r.json.metadata === null ||
          (typeof r.json.metadata === 'object' && Object.keys(r.json.metadata).length === 0),
        `metadata when absent: ${JSON.stringify(r.json.metadata)}`,
      );
    });

    // Table: what is wrong -> the field the 400 must name.
    const invalid = [
      ['missing label', (b) => delete b.label, 'label'],
      ['label not a string', (b) => (b.label = 42), 'label'],
      ['label empty', (b) => (b.label = ''), 'label'],
      ['label with a bidi override', (b) => (b.label = 'run-\u202Egnp.exe'), 'label'],
      ['label with a bidi isolate', (b) => (b.label = 'run-\u2066x\u2069'), 'label'],
      ['label with a line separator', (b) => (b.label = 'run\u2028level=error'), 'label'],
      ['label with a zero-width space', (b) => (b.label = 'user\u200B-42'), 'label'],
      ['label with a C1 control', (b) => (b.label = 'run\u0085x'), 'label'],
      ['label with a newline', (b) => (b.label = 'run\nx'), 'label'],
      ['missing vendor', (b) => delete b.vendor, 'vendor'],
      ['unknown vendor', (b) => (b.vendor = 'paypal'), 'vendor'],
      ['vendor not a string', (b) => (b.vendor = ['stripe']), 'vendor'],
      ['missing allowed_endpoints', (b) => delete b.allowed_endpoints, 'allowed_endpoints'],
      ['allowed_endpoints a string', (b) => (b.allowed_endpoints = '/v1/payment_intents'), 'allowed_endpoints'],
      ['allowed_endpoints of numbers', (b) => (b.allowed_endpoints = [1, 2]), 'allowed_endpoints'],
      ['allowed_endpoints mixed', (b) => (b.allowed_endpoints = ['/v1/x', null]), 'allowed_endpoints'],
      ['allowed_endpoints bad pattern', (b) => (b.allowed_endpoints = ['v1/no-leading-slash']), 'allowed_endpoints'],
      ['allowed_endpoints * mid-path', (b) => (b.allowed_endpoints = ['/v1/*/refunds']), 'allowed_endpoints'],
      ['missing daily_usd_cap', (b) => delete b.daily_usd_cap, 'daily_usd_cap'],
      ['negative daily_usd_cap', (b) => (b.daily_usd_cap = -1), 'daily_usd_cap'],
      ['daily_usd_cap a string', (b) => (b.daily_usd_cap = '10'), 'daily_usd_cap'],
      ['missing expires_in', (b) => delete b.expires_in, 'expires_in'],
      ['expires_in garbage', (b) => (b.expires_in = 'soon'), 'expires_in'],
      ['expires_in negative', (b) => (b.expires_in = -5), 'expires_in'],
      ['expires_in zero', (b) => (b.expires_in = 0), 'expires_in'],
      ['expires_in fractional', (b) => (b.expires_in = 1.5), 'expires_in'],
      ['expires_in unknown unit', (b) => (b.expires_in = '5y'), 'expires_in'],
      ['expires_in over the 24h max', (b) => (b.expires_in = '25h'), 'expires_in'],
      ['expires_in over max in seconds', (b) => (b.expires_in = 86401), 'expires_in'],
      ['metadata a string', (b) => (b.metadata = 'run 42'), 'metadata'],
      ['metadata an array', (b) => (b.metadata = ['a']), 'metadata'],
      ['metadata a number', (b) => (b.metadata = 7), 'metadata'],
    ];
    for (const [name, mutate, field] of invalid) {
      it(`400 invalid_request field=${field}: ${name}`, async () => {
        const body = validBody();
        mutate(body);
        const r = await d.admin.post('/v1/keys', body);
        assertError(r, 400, 'invalid_request', name);
        assert.equal(r.json.field, field, `${name}: ${r.text}`);
      });
    }

    it('a label in any script is accepted and returned as sent', async () => {
      const label = 'équipe/日本/run-1 ✓';
      const r = await d.admin.post('/v1/keys', validBody({ label }));
      assert.equal(r.status, 201, r.text);
      assert.equal(r.json.label, label);
    });

    it('400 vendor_not_configured for a known vendor without a secret', async () => {
      const r = await d.admin.post(
        '/v1/keys',
        validBody({ vendor: 'anthropic', allowed_endpoints: ['/v1/messages'] }),
      );
      assertError(r, 400, 'vendor_not_configured');
    });

    it('a body that is not a JSON object is refused with a 400 error', async () => {
      for (const raw of ['{"label": ', 'not json', '[1,2]', '"str"']) {
        const r = await d.admin.post('/v1/keys', raw);
        assert.equal(r.status, 400, `${raw}: ${r.text}`);
        assert.ok(r.json && typeof r.json.code === 'string', `${raw}: ${r.text}`);
        assert.equal(r.headers['keybrake-error'], r.json.code);
      }
    });

    it('no key is created by a refused request', async () => {
      const label = uniquePrefix('refused');
      const r = await d.admin.post('/v1/keys', validBody({ label, daily_usd_cap: -3 }));
      assert.equal(r.status, 400);
      const list = await d.admin.get(`/v1/keys?label_prefix=${encodeURIComponent(label)}`);
      assert.equal(list.status, 200, list.text);
      assert.deepEqual(list.json.data, []);
    });
  });

  describe('GET /v1/keys', () => {
    let prefix;
    let stripeKeys; // in issue order
    let openaiKeys;
    let revokedId;

    before(async () => {
      prefix = uniquePrefix('list');
      stripeKeys = [];
      for (let i = 0; i < 7; i++) {
        stripeKeys.push(await d.issueKey({ label: `${prefix}s${i}`, vendor: 'stripe' }));
      }
      openaiKeys = [];
      for (let i = 0; i < 2; i++) {
        openaiKeys.push(await d.issueKey({ label: `${prefix}o${i}`, vendor: 'openai' }));
      }
      // A key outside the prefix that must never show up.
      await d.issueKey({ label: `x${prefix}`, vendor: 'stripe' });
      revokedId = stripeKeys[2].id;
      const del = await d.admin.del(`/v1/keys/${revokedId}`);
      assert.equal(del.status, 204, del.text);
    });

    const q = (params) => '/v1/keys?' + new URLSearchParams(params).toString();

    it('pages 7 keys with limit 3: 3 + 3 + 1, newest first, no gaps, no repeats, no tokens', async () => {
      const seen = [];
      let cursor = null;
      const sizes = [];
      for (let page = 0; page < 5; page++) {
        const params = { label_prefix: prefix, vendor: 'stripe', limit: '3' };
        if (cursor) params.cursor = cursor;
        const r = await d.admin.get(q(params));
        assert.equal(r.status, 200, r.text);
        assert.ok(Array.isArray(r.json.data), r.text);
        sizes.push(r.json.data.length);
        for (const k of r.json.data) {
          assert.equal(k.token, undefined, `list must not carry tokens: ${JSON.stringify(k)}`);
          for (const sk of stripeKeys) assert.ok(!r.text.includes(sk.token), 'token leaked in list');
          seen.push(k.id);
        }
        cursor = r.json.next_cursor;
        if (cursor === null) break;
        assert.equal(typeof cursor, 'string');
        assert.ok(cursor.length > 0);
      }
      assert.deepEqual(sizes, [3, 3, 1]);
      assert.equal(cursor, null, 'last page has next_cursor null');
      const expected = stripeKeys.map((k) => k.id).reverse();
      assert.deepEqual(seen, expected, 'newest first, each key exactly once');
    });

    it('a list item has the key fields and status', async () => {
      const r = await d.admin.get(q({ label_prefix: `${prefix}s0` }));
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.data.length, 1, r.text);
      const k = r.json.data[0];
      const s0 = stripeKeys[0];
      assert.equal(k.id, s0.id);
      assert.equal(k.label, s0.label);
      assert.equal(k.vendor, 'stripe');
      assert.deepEqual(k.allowed_endpoints, s0.allowed_endpoints);
      assert.equal(Number(k.daily_usd_cap), Number(s0.daily_usd_cap));
      assert.equal(k.created_at, s0.created_at);
      assert.equal(k.expires_at, s0.expires_at);
      assert.equal(k.status, 'active');
      assert.equal(r.json.next_cursor, null);
    });

    it('label_prefix alone returns both vendors (9 keys), not the key outside the prefix', async () => {
      const r = await d.admin.get(q({ label_prefix: prefix }));
      assert.equal(r.status, 200, r.text);
      const ids = r.json.data.map((k) => k.id).sort();
      const expected = [...stripeKeys, ...openaiKeys].map((k) => k.id).sort();
      assert.deepEqual(ids, expected);
      for (const k of r.json.data) assert.ok(k.label.startsWith(prefix), k.label);
    });

    it('vendor filter', async () => {
      const r = await d.admin.get(q({ label_prefix: prefix, vendor: 'openai' }));
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(
        r.json.data.map((k) => k.id),
        openaiKeys.map((k) => k.id).reverse(),
      );
      for (const k of r.json.data) assert.equal(k.vendor, 'openai');
    });

    it('status filter: revoked and active', async () => {
      const rv = await d.admin.get(q({ label_prefix: prefix, status: 'revoked' }));
      assert.equal(rv.status, 200, rv.text);
      assert.deepEqual(
        rv.json.data.map((k) => k.id),
        [revokedId],
      );
      assert.equal(rv.json.data[0].status, 'revoked');

      const ac = await d.admin.get(q({ label_prefix: prefix, status: 'active', limit: '200' }));
      assert.equal(ac.status, 200, ac.text);
      const ids = ac.json.data.map((k) => k.id).sort();
      const expected = [...stripeKeys, ...openaiKeys]
        .map((k) => k.id)
        .filter((id) => id !== revokedId)
        .sort();
      assert.deepEqual(ids, expected);
      for (const k of ac.json.data) assert.equal(k.status, 'active');

      const ex = await d.admin.get(q({ label_prefix: prefix, status: 'expired' }));
      assert.equal(ex.status, 200, ex.text);
      assert.deepEqual(ex.json.data, []);
    });

    it('filters combine with pagination: active stripe keys, limit 2', async () => {
      const seen = [];
      let cursor = null;
      for (let page = 0; page < 6; page++) {
        const params = { label_prefix: prefix, vendor: 'stripe', status: 'active', limit: '2' };
        if (cursor) params.cursor = cursor;
        const r = await d.admin.get(q(params));
        assert.equal(r.status, 200, r.text);
        assert.ok(r.json.data.length <= 2);
        seen.push(...r.json.data.map((k) => k.id));
        cursor = r.json.next_cursor;
        if (cursor === null) break;
      }
      assert.equal(cursor, null);
      assert.deepEqual(
        seen,
        stripeKeys
          .map((k) => k.id)
          .filter((id) => id !== revokedId)
          .reverse(),
      );
    });

    it('limit defaults to 50 and is capped at 200', async () => {
      const big = uniquePrefix('many');
      for (let i = 0; i < 201; i++) {
        const r = await d.admin.post('/v1/keys', {
          label: `${big}${i}`,
          vendor: 'stripe',
          allowed_endpoints: ['/v1/*'],
          daily_usd_cap: 1,
          expires_in: '1h',
        });
        assert.equal(r.status, 201, r.text);
      }
      const def = await d.admin.get(q({ label_prefix: big }));
      assert.equal(def.status, 200, def.text);
      assert.equal(def.json.data.length, 50);
      assert.equal(typeof def.json.next_cursor, 'string');

      const max = await d.admin.get(q({ label_prefix: big, limit: '200' }));
      assert.equal(max.json.data.length, 200);
      assert.equal(typeof max.json.next_cursor, 'string');
      const rest = await d.admin.get(q({ label_prefix: big, limit: '200', cursor: max.json.next_cursor }));
      assert.equal(rest.json.data.length, 1);
      assert.equal(rest.json.next_cursor, null);

      // Over the max: refused with field=limit, or clamped to 200; never more.
      const over = await d.admin.get(q({ label_prefix: big, limit: '500' }));
      if (over.status === 400) {
        assertError(over, 400, 'invalid_request');
        assert.equal(over.json.field, 'limit');
      } else {
        assert.equal(over.status, 200, over.text);
        assert.equal(over.json.data.length, 200);
      }
    });

    it('a prefix that matches nothing gives an empty page', async () => {
      const r = await d.admin.get(q({ label_prefix: uniquePrefix('nothing') }));
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, { data: [], next_cursor: null });
    });

    it('bad query values are refused with 400', async () => {
      for (const [params, field] of [
        [{ status: 'sleeping' }, 'status'],
        [{ limit: 'abc' }, 'limit'],
        [{ cursor: '!!not-a-cursor!!' }, 'cursor'],
      ]) {
        const r = await d.admin.get(q(params));
        assertError(r, 400, 'invalid_request', JSON.stringify(params));
        assert.equal(r.json.field, field, r.text);
      }
    });
  });

  describe('GET /v1/keys/{id}', () => {
    it('returns the key with usage and without the token', async () => {
      const k = await d.issueKey({ label: uniquePrefix('getone'), daily_usd_cap: 12.5 });
      const r = await d.admin.get(`/v1/keys/${k.id}`);
      assert.equal(r.status, 200, r.text);
      const g = r.json;
      assert.equal(g.id, k.id);
      assert.equal(g.token, undefined, 'GET one must not return the token');
      assert.ok(!r.text.includes(k.token), 'token leaked');
      assert.equal(g.label, k.label);
      assert.equal(g.vendor, 'stripe');
      assert.equal(g.status, 'active');
      assert.equal(g.created_at, k.created_at);
      assert.equal(g.expires_at, k.expires_at);
      assert.ok(g.usage && typeof g.usage === 'object', r.text);
      assert.match(g.usage.day, /^\d{4}-\d{2}-\d{2}$/);
      assert.equal(g.usage.day, new Date().toISOString().slice(0, 10));
      assert.equal(Number(g.usage.spent_usd), 0);
      assert.equal(Number(g.usage.reserved_usd), 0);
      assert.equal(Number(g.usage.remaining_usd), 12.5);
      assert.equal(g.usage.requests, 0);
    });

    it('404 not_found for an unknown id', async () => {
      for (const id of ['vk_doesnotexist', 'vk_' + 'a'.repeat(24), 'nothing-like-an-id']) {
        const r = await d.admin.get(`/v1/keys/${id}`);
        assertError(r, 404, 'not_found', id);
      }
    });
  });

  describe('DELETE /v1/keys/{id}', () => {
    it('204, then 204 again, and the key reads as revoked', async () => {
      const k = await d.issueKey({ label: uniquePrefix('del') });
      const r1 = await d.admin.del(`/v1/keys/${k.id}`);
      assert.equal(r1.status, 204, r1.text);
      assert.equal(r1.body.length, 0, '204 has no body');
      const r2 = await d.admin.del(`/v1/keys/${k.id}`);
      assert.equal(r2.status, 204, r2.text);
      const g = await d.admin.get(`/v1/keys/${k.id}`);
      assert.equal(g.status, 200, g.text);
      assert.equal(g.json.status, 'revoked');
    });

    it('404 not_found for an unknown id', async () => {
      const r = await d.admin.del('/v1/keys/vk_doesnotexist');
      assertError(r, 404, 'not_found');
    });
  });

  describe('POST /v1/keys/revoke', () => {
    it('revokes every active key under the prefix and only those', async () => {
      const prefix = uniquePrefix('bulk');
      const inside = [];
      for (let i = 0; i < 3; i++) inside.push(await d.issueKey({ label: `${prefix}${i}` }));
      const outside = await d.issueKey({ label: `other-${prefix}` });
      // used first, so that each worker's key cache holds them (2 workers:
      // a few calls each land on both)
      for (const k of inside) {
        for (let i = 0; i < 4; i++) {
          const p = await d.proxy({
            method: 'GET',
            path: '/stripe/v1/payment_intents',
            headers: { authorization: `Bearer ${k.token}` },
          });
          assert.equal(p.status, 200, p.text);
        }
      }

      const r = await d.admin.post('/v1/keys/revoke', { label_prefix: prefix });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, { revoked: 3 });

      for (const k of inside) {
        const g = await d.admin.get(`/v1/keys/${k.id}`);
        assert.equal(g.json.status, 'revoked', `${k.label}: ${g.text}`);
        const p = await d.proxy({
          method: 'GET',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${k.token}` },
        });
        assertError(p, 401, 'key_revoked', k.label);
      }
      const go = await d.admin.get(`/v1/keys/${outside.id}`);
      assert.equal(go.json.status, 'active');

      const again = await d.admin.post('/v1/keys/revoke', { label_prefix: prefix });
      assert.equal(again.status, 200, again.text);
      assert.deepEqual(again.json, { revoked: 0 }, 'already revoked keys are not counted again');
    });

    it('a prefix that matches nothing revokes 0', async () => {
      const r = await d.admin.post('/v1/keys/revoke', { label_prefix: uniquePrefix('none') });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, { revoked: 0 });
    });

    it('400 field label_prefix when missing, empty or not a string', async () => {
      for (const body of [{}, { label_prefix: '' }, { label_prefix: 3 }]) {
        const r = await d.admin.post('/v1/keys/revoke', body);
        assertError(r, 400, 'invalid_request', JSON.stringify(body));
        assert.equal(r.json.field, 'label_prefix', r.text);
      }
    });
  });

  it('unknown admin routes answer a JSON 404', async () => {
    const r = await d.admin.get('/v1/nothing-here');
    assertError(r, 404, 'not_found');
  });

  // Last in this describe: a sanitizer report or a crash on shutdown fails here.
  it('the daemon stops on SIGTERM with exit code 0', async () => {
    await d.stop();
  });
});
