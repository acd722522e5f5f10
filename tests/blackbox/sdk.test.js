'use strict';
// sdk.test.js - the official vendor SDKs, pointed at Keybrake with a vault
// token as their API key, work against the mock vendors through the proxy.
// Compatibility is the point: each test asserts what the vendor received.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');

const Stripe = require('stripe');
const { OpenAI } = require('openai');
const { Anthropic } = require('@anthropic-ai/sdk');
const twilio = require('twilio');

const { basic, recordContains, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors, parseStripeForm } = require('./mock/vendor');

describe('vendor SDKs through the proxy', () => {
  let mocks;
  let d;
  let S;

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

  describe('stripe-node', () => {
    // Configured only with host, port, protocol and the vault token, as a user would.
    const client = (token) =>
      new Stripe(token, { host: '127.0.0.1', port: d.proxyPort, protocol: 'http' });

    it('creates a payment intent; the vendor receives form data and the real secret', async () => {
      const key = await d.issueKey({
        label: uniquePrefix('sdk-stripe'),
        vendor: 'stripe',
        allowed_endpoints: ['POST /v1/payment_intents', 'GET /v1/payment_intents/*'],
      });
      const stripe = client(key.token);
      const pi = await stripe.paymentIntents.create({
        amount: 2000,
        currency: 'usd',
        metadata: { order_id: '6735' },
        payment_method_types: ['card'],
      });
      assert.match(pi.id, /^pi_/);
      assert.equal(pi.object, 'payment_intent');
      assert.equal(pi.amount, 2000);
      assert.equal(pi.currency, 'usd');
      assert.equal(pi.status, 'requires_payment_method');
      assert.deepEqual(pi.metadata, { order_id: '6735' });

      assert.equal(mocks.stripe.requests.length, 1);
      const rec = mocks.stripe.requests[0];
      assert.equal(rec.method, 'POST');
      assert.equal(rec.path, '/v1/payment_intents', 'stripe-node sends no vendor prefix');
      assert.match(rec.headers['content-type'], /^application\/x-www-form-urlencoded/);
      assert.deepEqual(parseStripeForm(rec.bodyText), {
        amount: '2000',
        currency: 'usd',
        metadata: { order_id: '6735' },
        payment_method_types: { 0: 'card' },
      });
      assert.match(rec.bodyText, /^amount=2000&currency=usd&/);
      assert.equal(rec.headers.authorization, `Bearer ${S.stripe}`);
      assert.ok(rec.headers['stripe-version'], 'Stripe-Version passes through');
      assert.ok(rec.headers['idempotency-key'], 'Idempotency-Key passes through');
      assert.equal(recordContains(rec, key.token), false, 'vault token reached the vendor');

      const got = await stripe.paymentIntents.retrieve(pi.id);
      assert.equal(got.id, pi.id);
      assert.equal(mocks.stripe.requests.length, 2);
      assert.equal(mocks.stripe.requests[1].method, 'GET');
      assert.equal(mocks.stripe.requests[1].path, `/v1/payment_intents/${pi.id}`);
      assert.equal(mocks.stripe.requests[1].headers.authorization, `Bearer ${S.stripe}`);
    });

    // stripe-node raises an error only when the body has an `error` member, so
    // the proxy's refusals carry one ({type: "keybrake_error", code, message}).
    it('a refused call surfaces as a Stripe SDK error with the HTTP status', async () => {
      const key = await d.issueKey({
        label: uniquePrefix('sdk-stripe-deny'),
        vendor: 'stripe',
        allowed_endpoints: ['POST /v1/payment_intents'],
      });
      const stripe = client(key.token);
      await assert.rejects(stripe.customers.create({ email: 'a@example.com' }), (e) => {
        assert.equal(e.statusCode, 403, String(e));
        assert.equal(e.code, 'endpoint_not_allowed', String(e));
        return true;
      });
      assert.equal(await d.admin.del(`/v1/keys/${key.id}`).then((r) => r.status), 204);
      await assert.rejects(stripe.paymentIntents.create({ amount: 100, currency: 'usd' }), (e) => {
        assert.equal(e.statusCode, 401, String(e));
        return true;
      });
      assert.equal(mocks.count(), 0);
    });
  });

  it('openai-node: chat completion with the vault token as apiKey', async () => {
    const key = await d.issueKey({
      label: uniquePrefix('sdk-openai'),
      vendor: 'openai',
      allowed_endpoints: ['POST /v1/chat/completions'],
    });
    const openai = new OpenAI({
      apiKey: key.token,
      baseURL: `${d.proxyUrl}/openai/v1`,
      organization: null,
      project: null,
      maxRetries: 0,
    });
    const c = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Say hello' }],
      max_tokens: 16,
    });
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.choices[0].message.content, 'Hello from the mock.');
    assert.equal(c.usage.total_tokens, 17);
    assert.equal(mocks.openai.requests.length, 1);
    const rec = mocks.openai.requests[0];
    assert.equal(rec.url, '/v1/chat/completions');
    assert.equal(rec.headers.authorization, `Bearer ${S.openai}`);
    const body = JSON.parse(rec.bodyText);
    assert.equal(body.model, 'gpt-4o-mini');
    assert.deepEqual(body.messages, [{ role: 'user', content: 'Say hello' }]);
    assert.equal(recordContains(rec, key.token), false);
  });

  it('openai-node: streamed chat completion arrives chunk by chunk', { timeout: 30_000 }, async () => {
    const key = await d.issueKey({ label: uniquePrefix('sdk-openai-sse'), vendor: 'openai' });
    const openai = new OpenAI({
      apiKey: key.token,
      baseURL: `${d.proxyUrl}/openai/v1`,
      organization: null,
      project: null,
      maxRetries: 0,
    });
    const ctlP = mocks.openai.nextStream();
    const streamP = openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Count' }],
      stream: true,
    });
    const ctl = await ctlP;
    const chunk = (content) => ({
      id: 'chatcmpl-mock',
      object: 'chat.completion.chunk',
      created: 1700000000,
      model: 'gpt-4o-mini',
      choices: [{ index: 0, delta: { content }, finish_reason: null }],
    });
    ctl.send(chunk('one'));
    const stream = await streamP;
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next(); // resolves only if the proxy streams: the upstream is still open
    assert.equal(first.value.choices[0].delta.content, 'one');
    ctl.send(chunk('two'));
    const second = await it.next();
    assert.equal(second.value.choices[0].delta.content, 'two');
    ctl.send({
      id: 'chatcmpl-mock',
      object: 'chat.completion.chunk',
      created: 1700000000,
      model: 'gpt-4o-mini',
      choices: [],
      usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 },
    });
    ctl.send('[DONE]');
    ctl.end();
    const rest = [];
    for (;;) {
      const n = await it.next();
      if (n.done) break;
      rest.push(n.value);
    }
    assert.equal(rest.length, 1);
    assert.equal(rest[0].usage.total_tokens, 7);
    assert.equal(ctl.request.headers.authorization, `Bearer ${S.openai}`);
  });

  it('anthropic-sdk: messages.create with the vault token as apiKey', async () => {
    const key = await d.issueKey({
      label: uniquePrefix('sdk-anthropic'),
      vendor: 'anthropic',
      allowed_endpoints: ['POST /v1/messages'],
    });
    const anthropic = new Anthropic({
      apiKey: key.token,
      authToken: null,
      baseURL: `${d.proxyUrl}/anthropic`,
      maxRetries: 0,
    });
    const msg = await anthropic.messages.create({
      model: 'claude-haiku-4-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Hello' }],
    });
    assert.equal(msg.type, 'message');
    assert.equal(msg.content[0].text, 'Hello from the mock.');
    assert.equal(mocks.anthropic.requests.length, 1);
    const rec = mocks.anthropic.requests[0];
    assert.equal(rec.url, '/v1/messages');
    assert.equal(rec.headers['x-api-key'], S.anthropic);
    assert.equal(rec.headers.authorization, undefined);
    assert.ok(rec.headers['anthropic-version'], 'anthropic-version passes through');
    assert.equal(JSON.parse(rec.bodyText).model, 'claude-haiku-4-5');
    assert.equal(recordContains(rec, key.token), false);
  });

  it('twilio-node: messages.create with the vault token as auth token', async () => {
    const key = await d.issueKey({
      label: uniquePrefix('sdk-twilio'),
      vendor: 'twilio',
      allowed_endpoints: ['POST /2010-04-01/Accounts/*'],
    });
    // twilio-node has no base URL option: a RequestClient that sends its
    // https://api.twilio.com/... requests to the proxy's /twilio prefix instead.
    class ToProxy extends twilio.RequestClient {
      request(opts) {
        const u = new URL(opts.uri);
        assert.equal(u.hostname, 'api.twilio.com');
        return super.request({ ...opts, uri: `${d.proxyUrl}/twilio${u.pathname}${u.search}` });
      }
    }
    const client = twilio(S.twilioSid, key.token, { httpClient: new ToProxy() });
    const m = await client.messages.create({
      to: '+15005550006',
      from: '+15005550001',
      body: 'hello from the blackbox suite',
    });
    assert.match(m.sid, /^SM/);
    assert.equal(m.status, 'queued');
    assert.equal(m.body, 'hello from the blackbox suite');
    assert.equal(mocks.twilio.requests.length, 1);
    const rec = mocks.twilio.requests[0];
    assert.equal(rec.method, 'POST');
    assert.equal(rec.url, `/2010-04-01/Accounts/${S.twilioSid}/Messages.json`);
    assert.equal(rec.headers.authorization, basic(S.twilioSid, S.twilioToken));
    const form = Object.fromEntries(new URLSearchParams(rec.bodyText));
    assert.deepEqual(form, {
      To: '+15005550006',
      From: '+15005550001',
      Body: 'hello from the blackbox suite',
    });
    assert.equal(recordContains(rec, key.token), false);
  });

  // Last in this describe: a sanitizer report or a crash on shutdown fails here.
  it('the daemon stops on SIGTERM with exit code 0', async () => {
    await d.stop();
  });
});
