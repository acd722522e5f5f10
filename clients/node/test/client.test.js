'use strict';
// client.test.js - the admin client against the real binary: issue, read,
// list, change and revoke keys; typed errors for what the admin API refuses;
// withKey() revoking whatever its function does; the proxy URLs SDKs take.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');

const {
  AuthError,
  ConnectionError,
  InvalidRequestError,
  Keybrake,
  KeybrakeError,
  NotFoundError,
  isRetryable,
} = require('..');
const { harness, keyStatus, openaiKey, startKeybrake, uniquePrefix } = require('./lib');

describe('Keybrake admin client', () => {
  let k; // { mocks, d, kb, close }

  before(async () => {
    k = await startKeybrake();
  });

  after(async () => {
    if (k) await k.close();
  });

  it('createKey issues a key with every option mapped; getKey shows it with usage', async () => {
    const label = uniquePrefix('kit-create') + 'run-1';
    const key = await k.kb.createKey({
      label,
      vendor: 'openai',
      allowedEndpoints: ['POST /v1/chat/completions'],
      dailyUsdCap: 2.5,
      expiresIn: '5m',
      metadata: { user_id: '42', nested_key: { a_b: 1 } },
      rateLimit: { requests: 10, per: 'second' },
      allowedModels: ['gpt-4o-mini'],
      budgets: [{ name: uniquePrefix('kit-b'), usdCap: 10, window: 'day' }],
    });
    assert.match(key.id, /^vk_/);
    assert.match(key.token, /^kb_/);
    assert.equal(key.label, label);
    assert.equal(key.vendor, 'openai');
    assert.deepEqual(key.allowedEndpoints, ['POST /v1/chat/completions']);
    assert.equal(key.dailyUsdCap, 2.5);
    assert.equal(key.status, 'active');
    assert.equal(key.revokedAt, null);
    assert.deepEqual(key.rateLimit, { requests: 10, per: 'second' });
    assert.deepEqual(key.allowedModels, ['gpt-4o-mini']);
    // metadata is the caller's: its keys are not camelCased
    assert.deepEqual(key.metadata, { user_id: '42', nested_key: { a_b: 1 } });
    const ttl = Date.parse(key.expiresAt) - Date.parse(key.createdAt);
    assert.equal(ttl, 300_000);

    // what the server stored, read with the harness's client, not the kit
    const raw = await k.d.admin.get(`/v1/keys/${key.id}`);
    assert.equal(raw.json.daily_usd_cap, 2.5);
    assert.deepEqual(raw.json.rate_limit, { requests: 10, per: 'second' });
    assert.equal(raw.json.budgets.length, 1);

    const got = await k.kb.getKey(key.id);
    assert.equal(got.id, key.id);
    assert.equal(got.token, undefined, 'the token is shown once');
    assert.equal(got.usage.spentUsd, 0);
    assert.equal(got.usage.remainingUsd, 2.5);
    assert.equal(got.usage.requests, 0);
    assert.deepEqual(got.budgets, raw.json.budgets);
  });

  it('expiresIn defaults to one hour', async () => {
    const key = await k.kb.createKey({
      label: uniquePrefix('kit-ttl'),
      vendor: 'stripe',
      allowedEndpoints: ['/v1/*'],
      dailyUsdCap: 1,
    });
    assert.equal(Date.parse(key.expiresAt) - Date.parse(key.createdAt), 3600_000);
    const again = await k.kb.createKey({ ...openaiKey(uniquePrefix('kit-ttl')), expiresIn: undefined });
    assert.equal(Date.parse(again.expiresAt) - Date.parse(again.createdAt), 3600_000);
  });

  it('an unknown option is a TypeError and nothing is issued', async () => {
    const prefix = uniquePrefix('kit-typo');
    await assert.rejects(
      k.kb.createKey({ ...openaiKey(prefix + 'a'), daily_usd_cap: 1 }),
      (e) => e instanceof TypeError && /unknown option "daily_usd_cap"/.test(e.message),
    );
    await assert.rejects(k.kb.createKey({ ...openaiKey(prefix + 'b'), dailyCap: 1 }), TypeError);
    const page = await k.kb.listKeys({ labelPrefix: prefix });
    assert.deepEqual(page.data, []);
  });

  it('a field the API refuses is an InvalidRequestError naming it, not retryable', async () => {
    await assert.rejects(k.kb.createKey(openaiKey(uniquePrefix('kit-bad'), { expiresIn: 'forever' })), (e) => {
      assert.ok(e instanceof InvalidRequestError, String(e));
      assert.ok(e instanceof KeybrakeError);
      assert.equal(e.status, 400);
      assert.equal(e.code, 'invalid_request');
      assert.equal(e.field, 'expires_in');
      assert.ok(e.message.length > 0);
      assert.equal(e.retryable, false);
      assert.equal(isRetryable(e), false);
      return true;
    });
  });

  it('revokeKey revokes (the proxy refuses the token), again is fine; an unknown id is not_found', async () => {
    const key = await k.kb.createKey(openaiKey(uniquePrefix('kit-revoke')));
    await k.kb.revokeKey(key.id);
    assert.equal(await keyStatus(k.d, key.id), 'revoked');
    await k.kb.revokeKey(key.id);
    const r = await k.d.proxy({
      method: 'POST',
      path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [] }),
    });
    assert.equal(r.status, 401);
    assert.equal(r.json.code, 'key_revoked');

    for (const id of ['vk_doesnotexist000000000', 'not-a-key-id']) {
      await assert.rejects(k.kb.revokeKey(id), (e) => {
        assert.ok(e instanceof NotFoundError, String(e));
        assert.equal(e.code, 'not_found');
        assert.equal(e.status, 404);
        assert.equal(isRetryable(e), false);
        return true;
      });
      await assert.rejects(k.kb.getKey(id), NotFoundError);
    }
  });

  it('listKeys filters by label prefix and status; iterateKeys follows the cursors', async () => {
    const prefix = uniquePrefix('kit-list');
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await k.kb.createKey(openaiKey(`${prefix}${i}`))).id);
    await k.kb.revokeKey(ids[0]);

    const page = await k.kb.listKeys({ labelPrefix: prefix, limit: 2 });
    assert.equal(page.data.length, 2);
    assert.equal(typeof page.nextCursor, 'string');
    const next = await k.kb.listKeys({ labelPrefix: prefix, limit: 2, cursor: page.nextCursor });
    assert.equal(next.data.length, 2);

    const all = [];
    for await (const key of k.kb.iterateKeys({ labelPrefix: prefix, limit: 2 })) all.push(key.id);
    assert.deepEqual(all.sort(), [...ids].sort());

    const active = await k.kb.listKeys({ labelPrefix: prefix, status: 'active' });
    assert.deepEqual(active.data.map((x) => x.id).sort(), ids.slice(1).sort());
    assert.equal(active.nextCursor, null);
    await assert.rejects(k.kb.listKeys({ labelPrefix: prefix, status: 'gone' }), (e) => e.field === 'status');
  });

  it('updateKey changes the cap; a revoked key is key_not_active', async () => {
    const key = await k.kb.createKey(openaiKey(uniquePrefix('kit-patch')));
    const up = await k.kb.updateKey(key.id, { dailyUsdCap: 7 });
    assert.equal(up.dailyUsdCap, 7);
    assert.equal((await k.d.admin.get(`/v1/keys/${key.id}`)).json.daily_usd_cap, 7);
    await k.kb.revokeKey(key.id);
    await assert.rejects(k.kb.updateKey(key.id, { dailyUsdCap: 8 }), (e) => e.code === 'key_not_active' && e.status === 409);
    await assert.rejects(k.kb.updateKey(key.id, { label: 'x' }), TypeError);
  });

  it('revokePrefix revokes every key under a label prefix and says how many', async () => {
    const prefix = uniquePrefix('kit-kill');
    const keys = [];
    for (let i = 0; i < 3; i++) keys.push(await k.kb.createKey(openaiKey(`${prefix}user-${i}/`)));
    const other = await k.kb.createKey(openaiKey(uniquePrefix('kit-other')));
    assert.equal(await k.kb.revokePrefix(prefix), 3);
    for (const key of keys) assert.equal(await keyStatus(k.d, key.id), 'revoked');
    assert.equal(await keyStatus(k.d, other.id), 'active');
    assert.equal(await k.kb.revokePrefix(prefix), 0);
    await assert.rejects(k.kb.revokePrefix(''), TypeError);
  });

  it('a wrong admin token is an AuthError; an unreachable daemon a retryable ConnectionError', async () => {
    const bad = new Keybrake({ adminUrl: k.d.adminUrl, adminToken: 'kba_wrong' });
    await assert.rejects(bad.listKeys(), (e) => e instanceof AuthError && e.code === 'unauthorized' && e.status === 401);

    const port = await harness.closedPort();
    const gone = new Keybrake({ adminUrl: `http://127.0.0.1:${port}`, adminToken: 'x' });
    await assert.rejects(gone.createKey(openaiKey('x')), (e) => {
      assert.ok(e instanceof ConnectionError, String(e));
      assert.equal(e.code, 'connection_error');
      assert.equal(e.status, 0);
      assert.equal(isRetryable(e), true);
      return true;
    });
  });

  it('the admin token is not enumerable: logging the client does not print it', () => {
    const s = JSON.stringify(k.kb) + require('node:util').inspect(k.kb);
    assert.equal(s.includes(k.d.adminToken), false);
  });

  describe('withKey', () => {
    it('revokes the key after the function returns, and returns its value', async () => {
      let seen;
      const v = await k.kb.withKey(openaiKey(uniquePrefix('kit-with')), async (key) => {
        seen = key;
        assert.equal(await keyStatus(k.d, key.id), 'active');
        return 42;
      });
      assert.equal(v, 42);
      assert.equal(await keyStatus(k.d, seen.id), 'revoked');
    });

    it('revokes the key when the function throws, and rethrows that error', async () => {
      let seen;
      const boom = new Error('agent failed');
      await assert.rejects(
        k.kb.withKey(openaiKey(uniquePrefix('kit-throw')), async (key) => {
          seen = key;
          throw boom;
        }),
        (e) => e === boom,
      );
      assert.equal(await keyStatus(k.d, seen.id), 'revoked');
      // a synchronous throw too
      await assert.rejects(
        k.kb.withKey(openaiKey(uniquePrefix('kit-throw')), (key) => {
          seen = key;
          throw boom;
        }),
        (e) => e === boom,
      );
      assert.equal(await keyStatus(k.d, seen.id), 'revoked');
    });

    it('a refused issuance runs nothing', async () => {
      let ran = false;
      await assert.rejects(
        k.kb.withKey(openaiKey(uniquePrefix('kit-with'), { dailyUsdCap: -1 }), () => {
          ran = true;
        }),
        InvalidRequestError,
      );
      assert.equal(ran, false);
    });
  });

  it('vendorBaseUrl and stripeOptions: what the SDKs take', () => {
    const port = k.d.proxyPort;
    assert.equal(k.kb.vendorBaseUrl('openai'), `http://127.0.0.1:${port}/openai/v1`);
    assert.equal(k.kb.vendorBaseUrl('anthropic'), `http://127.0.0.1:${port}/anthropic`);
    assert.equal(k.kb.vendorBaseUrl('twilio'), `http://127.0.0.1:${port}/twilio`);
    assert.deepEqual(k.kb.stripeOptions(), { host: '127.0.0.1', port, protocol: 'http' });
    const tls = new Keybrake({ adminUrl: 'https://kb.internal:8421/', adminToken: 't', proxyUrl: 'https://kb.internal/' });
    assert.equal(tls.vendorBaseUrl('openai'), 'https://kb.internal/openai/v1');
    assert.deepEqual(tls.stripeOptions(), { host: 'kb.internal', port: 443, protocol: 'https' });
    assert.throws(() => tls.vendorBaseUrl('../x'), TypeError);
    const saved = process.env.KEYBRAKE_PROXY_URL;
    delete process.env.KEYBRAKE_PROXY_URL;
    try {
      assert.throws(() => new Keybrake({ adminUrl: k.d.adminUrl, adminToken: 'x' }).vendorBaseUrl('openai'), TypeError);
    } finally {
      if (saved !== undefined) process.env.KEYBRAKE_PROXY_URL = saved;
    }
  });
});
