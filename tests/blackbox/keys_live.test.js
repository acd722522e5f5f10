'use strict';
// keys_live.test.js - live changes of a key (issue 16, item 4):
// PATCH /v1/keys/{id} raising a cap under concurrent load with no lost
// update, lowering it so that the very next request is refused, extending
// and shortening the TTL within max_ttl, 409 key_not_active on a revoked or
// expired key, 400 naming the field for anything else (nothing changes),
// and a key.updated audit record per change.
//
// Each $1 call is a Stripe PaymentIntent of 100 cents: reserved $1 and
// settled $1 (the mock creates it).

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');

const { assertError, startDaemon, streamRequest, uniquePrefix, waitUntilClock } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

function pay(d, token, cents = 100) {
  return d.proxy({
    method: 'POST',
    path: '/stripe/v1/payment_intents',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: `amount=${cents}&currency=usd`,
  });
}

function patch(d, id, body) {
  return d.admin.req('PATCH', `/v1/keys/${id}`, body);
}

async function issue(d, extra = {}) {
  const body = {
    label: uniquePrefix('live'),
    vendor: 'stripe',
    allowed_endpoints: ['POST /v1/payment_intents'],
    daily_usd_cap: 100,
    expires_in: '1h',
    ...extra,
  };
  const r = await d.admin.post('/v1/keys', body);
  assert.equal(r.status, 201, r.text);
  return r.json;
}

async function getKey(d, id) {
  const r = await d.admin.get(`/v1/keys/${id}`);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

describe('PATCH /v1/keys/{id}', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks, env: { KEYBRAKE_WORKERS: '2', KEYBRAKE_MAX_TTL: '24h' } });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  it('raises a cap under concurrent load without a lost update', async () => {
    const k = await issue(d, { daily_usd_cap: 50 });
    // 150 concurrent $1 calls, the cap raised to $150 among them
    const calls = [];
    for (let i = 0; i < 150; i++) {
      calls.push(pay(d, k.token));
      if (i === 40) calls.push(patch(d, k.id, { daily_usd_cap: 150 }));
    }
    const results = await Promise.all(calls);
    const pr = results.splice(41, 1)[0];
    assert.equal(pr.status, 200, pr.text);
    assert.equal(pr.json.daily_usd_cap, 150);
    const ok = results.filter((r) => r.status === 200).length;
    for (const r of results) if (r.status !== 200) assertError(r, 429, 'cap_exhausted');
    assert.ok(ok >= 50 && ok <= 150, `${ok} admitted`);
    assert.equal(mocks.stripe.requests.length, ok);
    let u = (await getKey(d, k.id)).usage;
    assert.equal(u.spent_usd, ok, 'every admitted call is counted');
    assert.equal(u.reserved_usd, 0);
    // what is left is exactly the new cap minus what was spent: 150 in all
    const more = await Promise.all(Array.from({ length: 160 }, () => pay(d, k.token)));
    assert.equal(more.filter((r) => r.status === 200).length, 150 - ok);
    assert.equal(mocks.stripe.requests.length, 150);
    u = (await getKey(d, k.id)).usage;
    assert.equal(u.spent_usd, 150);
    assert.equal(u.remaining_usd, 0);
  });

  it('lowers a cap: the next request is refused on every worker', async () => {
    const k = await issue(d, { daily_usd_cap: 100 });
    // warm the key caches of both workers (each request may land on either)
    for (let i = 0; i < 6; i++) assert.equal((await pay(d, k.token)).status, 200);
    const r = await patch(d, k.id, { daily_usd_cap: 6.5 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.daily_usd_cap, 6.5);
    assert.equal(r.json.usage.remaining_usd, 0.5);
    for (let i = 0; i < 6; i++) assertError(await pay(d, k.token), 429, 'cap_exhausted');
    assert.equal(mocks.stripe.requests.length, 6, 'nothing past the lowered cap reached the vendor');
    // 50 cents still fit, exactly
    assert.equal((await pay(d, k.token, 50)).status, 200);
    assertError(await pay(d, k.token, 1), 429, 'cap_exhausted');
    // lowered under load: never more than the new cap reaches the vendor
    const k2 = await issue(d, { daily_usd_cap: 1000 });
    mocks.reset();
    const calls = [];
    for (let i = 0; i < 100; i++) {
      calls.push(pay(d, k2.token));
      if (i === 20) calls.push(patch(d, k2.id, { daily_usd_cap: 30 }));
    }
    const res = await Promise.all(calls);
    assert.equal(res.splice(21, 1)[0].status, 200);
    const u0 = (await getKey(d, k2.id)).usage;
    assert.equal(mocks.stripe.requests.length, u0.spent_usd);
    // whatever was admitted before the change, from now on the $30 cap binds exactly
    const after = await Promise.all(Array.from({ length: 40 }, () => pay(d, k2.token)));
    assert.equal(after.filter((x) => x.status === 200).length, Math.max(0, 30 - u0.spent_usd));
    const u = (await getKey(d, k2.id)).usage;
    assert.equal(u.spent_usd, Math.max(30, u0.spent_usd));
    assert.equal(mocks.stripe.requests.length, u.spent_usd);
  });

  it('extends and shortens the TTL from now, within max_ttl', async () => {
    const k = await issue(d, { expires_in: '1h' });
    assert.equal((await pay(d, k.token)).status, 200);
    let t0 = Date.now();
    let r = await patch(d, k.id, { expires_in: '20h' });
    assert.equal(r.status, 200, r.text);
    let exp = Date.parse(r.json.expires_at);
    assert.ok(Math.abs(exp - (t0 + 20 * 3600e3)) < 3000, r.json.expires_at);
    assert.equal(r.json.daily_usd_cap, 100, 'the cap is left alone');
    assert.deepEqual(r.json.budgets, [], 'the answer is the key as GET shows it');
    assert.equal(r.json.status, 'active');
    // max_ttl counts from now: 24h is allowed, one second more is not
    r = await patch(d, k.id, { expires_in: 86401 });
    assertError(r, 400, 'invalid_request');
    assert.equal(r.json.field, 'expires_in');
    assert.equal(Date.parse((await getKey(d, k.id)).expires_at), exp, 'nothing changed');
    r = await patch(d, k.id, { expires_in: 86400 });
    assert.equal(r.status, 200, r.text);
    // shorten to 2 seconds: refused once that passes, and then no longer changeable
    t0 = Date.now();
    r = await patch(d, k.id, { expires_in: '2s' });
    assert.equal(r.status, 200, r.text);
    exp = Date.parse(r.json.expires_at);
    assert.ok(exp <= t0 + 3000, r.json.expires_at);
    await waitUntilClock(exp + 1000);
    assertError(await pay(d, k.token), 401, 'key_expired');
    r = await patch(d, k.id, { expires_in: '1h' });
    assertError(r, 409, 'key_not_active');
    assert.match(r.json.message, /expired/);
    assert.equal(mocks.stripe.requests.length, 1);
  });

  // A stream in flight follows its key's TTL as PATCHed (review, session 7):
  // cut at a shortened expiry, not cut at an extended one's old value.
  it('a stream in flight is cut at a shortened TTL and outlives an extended one', { timeout: 30_000 }, async () => {
    const open = async (k) => {
      const upP = mocks.stripe.nextStream();
      const c = await streamRequest({ port: d.proxyPort, method: 'GET', path: '/stripe/v1/events', headers: { authorization: `Bearer ${k.token}` } });
      const up = await upP;
      up.write('{"first":1}');
      await c.readUntil((t) => t.includes('"first"'));
      return { c, up };
    };
    // shortened: 1 h -> 2 s, the stream is cut once that passes
    const short = await issue(d, { expires_in: '1h', allowed_endpoints: ['GET /v1/*'] });
    const a = await open(short);
    const r1 = await patch(d, short.id, { expires_in: '2s' });
    assert.equal(r1.status, 200, r1.text);
    await a.c.rest().catch(() => {});
    assert.equal(a.c.res.complete, false, 'cut, not ended whole');
    assert.ok(Date.now() >= Date.parse(r1.json.expires_at) - 1000, 'not cut before the new expiry');
    // extended: 3 s -> 1 h, the stream goes on past the old expiry
    const long = await issue(d, { expires_in: '3s', allowed_endpoints: ['GET /v1/*'] });
    const b = await open(long);
    const old = Date.parse((await getKey(d, long.id)).expires_at);
    const r2 = await patch(d, long.id, { expires_in: '1h' });
    assert.equal(r2.status, 200, r2.text);
    await waitUntilClock(old + 1500); // the watch ticks every 250 ms
    b.up.write('{"second":2}');
    await b.c.readUntil((t) => t.includes('"second"'));
    b.up.end();
    await b.c.rest();
    assert.equal(b.c.res.complete, true, 'the extended key\'s stream ended whole');
  });

  it('409 key_not_active on a revoked key; nothing changes', async () => {
    const k = await issue(d, { daily_usd_cap: 10 });
    assert.equal((await d.admin.del(`/v1/keys/${k.id}`)).status, 204);
    const r = await patch(d, k.id, { daily_usd_cap: 500 });
    assertError(r, 409, 'key_not_active');
    assert.match(r.json.message, /revoked/);
    const g = await getKey(d, k.id);
    assert.equal(g.daily_usd_cap, 10);
    assert.equal(g.expires_at, k.expires_at);
    assertError(await pay(d, k.token), 401, 'key_revoked');
    assertError(await patch(d, 'vk_doesnotexist', { daily_usd_cap: 1 }), 404, 'not_found');
  });

  it('400 invalid_request naming the field; nothing changes', async () => {
    const k = await issue(d, { daily_usd_cap: 10 });
    const cases = [
      [{ daily_usd_cap: 20, label: 'x' }, 'label'],
      [{ vendor: 'openai' }, 'vendor'],
      [{ daily_usd_cap: -1 }, 'daily_usd_cap'],
      [{ daily_usd_cap: '20' }, 'daily_usd_cap'],
      ['{"daily_usd_cap": 1.0000001}', 'daily_usd_cap'],
      [{ daily_usd_cap: null }, 'daily_usd_cap'],
      [{ expires_in: 0 }, 'expires_in'],
      [{ expires_in: '1.5s' }, 'expires_in'],
      [{ expires_in: 'soon', daily_usd_cap: 20 }, 'expires_in'],
      [{}, 'daily_usd_cap'],
    ];
    for (const [body, field] of cases) {
      const r = await patch(d, k.id, body);
      assertError(r, 400, 'invalid_request', JSON.stringify(body));
      assert.equal(r.json.field, field, `${JSON.stringify(body)}: ${r.text}`);
    }
    assertError(await patch(d, k.id, '[1]'), 400, 'invalid_json');
    const g = await getKey(d, k.id);
    assert.equal(g.daily_usd_cap, 10);
    assert.equal(g.expires_at, k.expires_at);
    // exact money: 6 decimals are kept as given
    const r = await patch(d, k.id, '{"daily_usd_cap": 12.345678}');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.daily_usd_cap, 12.345678);
  });

  it('audits each change as key.updated with what it set', async () => {
    const k = await issue(d, { daily_usd_cap: 10 });
    assert.equal((await patch(d, k.id, { daily_usd_cap: 25.5 })).status, 200);
    const r2 = await patch(d, k.id, { expires_in: 600, daily_usd_cap: 7 });
    assert.equal(r2.status, 200);
    assertError(await patch(d, k.id, { daily_usd_cap: 'x' }), 400, 'invalid_request');
    const a = await d.admin.get(`/v1/audit?key_id=${k.id}&decision=ok&limit=50`);
    assert.equal(a.status, 200, a.text);
    const ups = a.json.data.filter((e) => e.action === 'key.updated');
    assert.equal(ups.length, 2, a.text);
    const details = ups.map((e) => e.detail);
    assert.deepEqual(
      details.find((x) => !x.expires_at),
      { daily_usd_cap: '25.500000' },
    );
    const both = details.find((x) => x.expires_at);
    assert.equal(both.daily_usd_cap, '7.000000');
    assert.equal(both.expires_at, Date.parse(r2.json.expires_at) / 1000);
  });
});

describe('allowed_models', () => {
  const { OpenAI } = require('openai');
  const { Anthropic } = require('@anthropic-ai/sdk');
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  async function llmKey(vendor, allowed_models) {
    const body = {
      label: uniquePrefix(`models-${vendor}`),
      vendor,
      allowed_endpoints: ['/v1/*'],
      daily_usd_cap: 100,
      expires_in: '1h',
    };
    if (allowed_models !== undefined) body.allowed_models = allowed_models;
    const r = await d.admin.post('/v1/keys', body);
    assert.equal(r.status, 201, r.text);
    return r.json;
  }

  it('issuance stores them, GET shows them; bad lists and other vendors are 400', async () => {
    const k = await llmKey('openai', ['gpt-4o-mini', 'gpt-5.4-mini']);
    assert.deepEqual(k.allowed_models, ['gpt-4o-mini', 'gpt-5.4-mini']);
    assert.deepEqual((await getKey(d, k.id)).allowed_models, ['gpt-4o-mini', 'gpt-5.4-mini']);
    assert.equal((await llmKey('anthropic')).allowed_models, null);
    const bad = [
      ['openai', []],
      ['openai', 'gpt-4o-mini'],
      ['openai', [1]],
      ['openai', ['']],
      ['openai', ['gpt 4']],
      ['openai', Array.from({ length: 65 }, (_, i) => `m${i}`)],
      ['stripe', ['gpt-4o-mini']],
    ];
    for (const [vendor, allowed_models] of bad) {
      const r = await d.admin.post('/v1/keys', {
        label: uniquePrefix('bad'),
        vendor,
        allowed_endpoints: ['/v1/*'],
        daily_usd_cap: 1,
        expires_in: 60,
        allowed_models,
      });
      assertError(r, 400, 'invalid_request', JSON.stringify(allowed_models));
      assert.equal(r.json.field, 'allowed_models');
    }
  });

  it('openai-node: a listed model passes, another is refused before the vendor', async () => {
    const k = await llmKey('openai', ['gpt-4o-mini']);
    const openai = new OpenAI({
      apiKey: k.token,
      baseURL: `${d.proxyUrl}/openai/v1`,
      organization: null,
      project: null,
      maxRetries: 0,
    });
    const ok = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 16,
    });
    assert.equal(ok.object, 'chat.completion');
    assert.equal(mocks.openai.requests.length, 1);
    for (const model of ['gpt-5.4', 'gpt-4o-mini-2024-07-18', 'GPT-4O-MINI']) {
      await assert.rejects(
        openai.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 16 }),
        (e) => {
          assert.equal(e.status, 403, String(e));
          assert.match(String(e.message), /model_not_allowed|allowed_models/);
          return true;
        },
      );
    }
    await assert.rejects(openai.embeddings.create({ model: 'text-embedding-3-small', input: 'x' }), (e) => e.status === 403);
    assert.equal(mocks.openai.requests.length, 1, 'refused requests never reached the vendor');
    // no model in the request: unaffected
    const list = await openai.models.list();
    assert.ok(list);
    assert.equal(mocks.openai.requests.length, 2);
    // refusals are audited with their code
    const a = await d.admin.get(`/v1/audit?key_id=${k.id}&decision=refused&limit=50`);
    const codes = a.json.data.map((e) => e.code);
    assert.equal(codes.filter((c) => c === 'model_not_allowed').length, 4, a.text);
    // a key without the list is unchanged
    const free = await llmKey('openai');
    const o2 = new OpenAI({ apiKey: free.token, baseURL: `${d.proxyUrl}/openai/v1`, organization: null, project: null, maxRetries: 0 });
    await o2.chat.completions.create({ model: 'gpt-5.4', messages: [{ role: 'user', content: 'hi' }], max_tokens: 16 });
    assert.equal(mocks.openai.requests.length, 3);
  });

  it('raw: the error body names the code; a multipart body is refused for a restricted key', async () => {
    const k = await llmKey('openai', ['gpt-4o-mini']);
    const r = await d.proxy({
      method: 'POST',
      path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-5.4', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }),
    });
    assertError(r, 403, 'model_not_allowed');
    assert.match(r.json.message, /gpt-5\.4/);
    const b = 'kbboundary';
    const form =
      `--${b}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n` +
      `--${b}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n` +
      `Content-Type: audio/wav\r\n\r\nRIFF\r\n--${b}--\r\n`;
    const mp = await d.proxy({
      method: 'POST',
      path: '/openai/v1/audio/transcriptions',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': `multipart/form-data; boundary=${b}` },
      body: form,
    });
    assertError(mp, 403, 'model_not_allowed');
    assert.equal(mocks.openai.requests.length, 0);
  });

  it('anthropic-sdk: a listed model passes, another is refused, batches check every entry', async () => {
    const k = await llmKey('anthropic', ['claude-haiku-4-5']);
    const anthropic = new Anthropic({ apiKey: k.token, authToken: null, baseURL: `${d.proxyUrl}/anthropic`, maxRetries: 0 });
    const msg = await anthropic.messages.create({
      model: 'claude-haiku-4-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Hello' }],
    });
    assert.equal(msg.type, 'message');
    assert.equal(mocks.anthropic.requests.length, 1);
    await assert.rejects(
      anthropic.messages.create({ model: 'claude-opus-5-5', max_tokens: 64, messages: [{ role: 'user', content: 'Hello' }] }),
      (e) => {
        assert.equal(e.status, 403, String(e));
        return true;
      },
    );
    const batch = (models) => ({
      requests: models.map((model, i) => ({
        custom_id: `r${i}`,
        params: { model, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] },
      })),
    });
    const r = await d.proxy({
      method: 'POST',
      path: '/anthropic/v1/messages/batches',
      headers: { 'x-api-key': k.token, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify(batch(['claude-haiku-4-5', 'claude-opus-5-5'])),
    });
    assertError(r, 403, 'model_not_allowed');
    assert.match(r.json.message, /claude-opus-5-5/);
    assert.equal(mocks.anthropic.requests.length, 1, 'refused requests never reached the vendor');
  });
});

describe('max_amount_per_request', () => {
  const Stripe = require('stripe');
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  async function stripeKey(extra) {
    const r = await d.admin.post('/v1/keys', {
      label: uniquePrefix('maxamt'),
      vendor: 'stripe',
      allowed_endpoints: ['POST /v1/payment_intents', 'POST /v1/charges'],
      daily_usd_cap: 1000,
      expires_in: '1h',
      ...extra,
    });
    return r;
  }

  it('issuance: exact USD, shown by GET; bad values and other vendors are 400', async () => {
    const r = await stripeKey({ max_amount_per_request: 5.01 });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.max_amount_per_request, 5.01);
    assert.equal((await getKey(d, r.json.id)).max_amount_per_request, 5.01);
    const none = await stripeKey({});
    assert.equal(none.json.max_amount_per_request, null);
    for (const v of [0, -1, '5', 1.0000001, true]) {
      const b = await stripeKey({ max_amount_per_request: v });
      assertError(b, 400, 'invalid_request', String(v));
      assert.equal(b.json.field, 'max_amount_per_request');
    }
    const o = await d.admin.post('/v1/keys', {
      label: uniquePrefix('maxamt'),
      vendor: 'openai',
      allowed_endpoints: ['/v1/*'],
      daily_usd_cap: 1,
      expires_in: 60,
      max_amount_per_request: 5,
    });
    assertError(o, 400, 'invalid_request');
    assert.equal(o.json.field, 'max_amount_per_request');
  });

  it('a payment of exactly the ceiling passes; one cent more is refused before the vendor', async () => {
    const k = (await stripeKey({ max_amount_per_request: 5 })).json;
    const stripe = new Stripe(k.token, { host: '127.0.0.1', port: d.proxyPort, protocol: 'http', maxNetworkRetries: 0 });
    const pi = await stripe.paymentIntents.create({ amount: 500, currency: 'usd' });
    assert.equal(pi.amount, 500);
    assert.equal(mocks.stripe.requests.length, 1);
    await assert.rejects(stripe.paymentIntents.create({ amount: 501, currency: 'usd' }), (e) => {
      assert.equal(e.statusCode, 403, String(e));
      assert.equal(e.code, 'amount_too_large', String(e));
      return true;
    });
    const raw = await pay(d, k.token, 501);
    assertError(raw, 403, 'amount_too_large');
    assert.match(raw.json.message, /5\.010000/);
    const ch = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/charges',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=100000&currency=usd&source=tok_visa',
    });
    assertError(ch, 403, 'amount_too_large');
    assert.equal(mocks.stripe.requests.length, 1, 'refused payments never reached the vendor');
    // nothing was reserved for the refusals
    const u = (await getKey(d, k.id)).usage;
    assert.equal(u.reserved_usd, 0);
    assert.equal(u.requests, 1);
    const a = await d.admin.get(`/v1/audit?key_id=${k.id}&decision=refused&limit=50`);
    assert.equal(a.json.data.filter((e) => e.code === 'amount_too_large').length, 3, a.text);
    // a key without a ceiling is unchanged
    const free = (await stripeKey({})).json;
    assert.equal((await pay(d, free.token, 100000)).status, 200);
  });
});
