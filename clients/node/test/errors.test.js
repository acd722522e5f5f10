'use strict';
// errors.test.js - the 429 distinction as an application sees it: the
// official openai, anthropic and stripe SDKs, pointed at the real binary with a kit
// key, throw their own errors; keybrakeError()/isRetryable() tell a spent
// cap or budget (final) from a rate limit (retry after Retry-After) and from
// an unwritable audit log (retry), and leave the vendor's own errors to the
// vendor's hints. The test build's KEYBRAKE_TEST_FAIL_AUDIT flag file stands
// for a full disk.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { Anthropic } = require('@anthropic-ai/sdk');
const { OpenAI } = require('openai');
const Stripe = require('stripe');

const {
  KeybrakeError,
  RateLimitedError,
  SpendExhaustedError,
  UnavailableError,
  errorCode,
  isRetryable,
  isSpendExhausted,
  keybrakeError,
  retryAfter,
} = require('..');
const { harness, keyStatus, openaiKey, startKeybrake, uniquePrefix } = require('./lib');

const CHAT = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1000 };

describe('refusals through the vendor SDKs', () => {
  let k;
  let flagDir;
  let failFlag; // while this file exists, the daemon's store writes fail

  before(async () => {
    flagDir = harness.mkTempDir();
    failFlag = path.join(flagDir, 'fail-audit');
    k = await startKeybrake({ env: { KEYBRAKE_TEST_FAIL_AUDIT: failFlag } });
  });

  after(async () => {
    try {
      if (fs.existsSync(failFlag)) fs.rmSync(failFlag);
      if (k) await k.close();
    } finally {
      harness.rmTempDir(flagDir);
    }
  });

  beforeEach(() => k.mocks.reset());

  const openai = (key) => new OpenAI({ apiKey: key.token, baseURL: k.kb.vendorBaseUrl('openai'), maxRetries: 0 });

  it('cap_exhausted (openai SDK): a SpendExhaustedError, final, the vendor never called', async () => {
    const key = await k.kb.createKey(openaiKey(uniquePrefix('err-cap'), { dailyUsdCap: 0.000001 }));
    const err = await openai(key).chat.completions.create(CHAT).then(
      () => assert.fail('the call passed'),
      (e) => e,
    );
    assert.equal(err.status, 429, String(err));
    assert.ok(err instanceof OpenAI.RateLimitError, 'the SDK throws its own 429 class');
    const kbe = keybrakeError(err);
    assert.ok(kbe instanceof SpendExhaustedError, String(kbe));
    assert.ok(kbe instanceof KeybrakeError);
    assert.equal(kbe.code, 'cap_exhausted');
    assert.equal(kbe.status, 429);
    assert.equal(kbe.retryable, false);
    assert.equal(kbe.cause, err);
    assert.match(kbe.message, /cap/);
    assert.equal(errorCode(err), 'cap_exhausted');
    assert.equal(isSpendExhausted(err), true);
    assert.equal(isRetryable(err), false, 'a 429 that no wait cures');
    assert.equal(retryAfter(err), null);
    assert.equal(k.mocks.openai.requests.length, 0);
  });

  it('cap_exhausted (stripe SDK): the same answer from a StripeError', async () => {
    const key = await k.kb.createKey({
      label: uniquePrefix('err-stripe'),
      vendor: 'stripe',
      allowedEndpoints: ['POST /v1/payment_intents'],
      dailyUsdCap: 1,
    });
    const stripe = new Stripe(key.token, { ...k.kb.stripeOptions(), maxNetworkRetries: 0 });
    const err = await stripe.paymentIntents.create({ amount: 5000, currency: 'usd' }).then(
      () => assert.fail('the call passed'),
      (e) => e,
    );
    assert.equal(err.statusCode, 429, String(err));
    assert.equal(err.type, 'StripeRateLimitError', 'stripe-node calls every 429 a rate limit');
    const kbe = keybrakeError(err);
    assert.ok(kbe instanceof SpendExhaustedError, String(kbe));
    assert.equal(kbe.code, 'cap_exhausted');
    assert.equal(isRetryable(err), false);
    assert.equal(k.mocks.stripe.requests.length, 0);
  });

  it('cap_exhausted (anthropic SDK): the same answer from its APIError', async () => {
    const key = await k.kb.createKey({
      label: uniquePrefix('err-anthropic'),
      vendor: 'anthropic',
      allowedEndpoints: ['POST /v1/messages'],
      dailyUsdCap: 0.000001,
    });
    const anthropic = new Anthropic({ apiKey: key.token, baseURL: k.kb.vendorBaseUrl('anthropic'), maxRetries: 0 });
    const err = await anthropic.messages
      .create({ model: 'claude-3-5-haiku-20241022', max_tokens: 1000, messages: [{ role: 'user', content: 'hi' }] })
      .then(
        () => assert.fail('the call passed'),
        (e) => e,
      );
    assert.equal(err.status, 429, String(err));
    const kbe = keybrakeError(err);
    assert.ok(kbe instanceof SpendExhaustedError, String(kbe));
    assert.equal(kbe.code, 'cap_exhausted');
    assert.equal(isRetryable(err), false);
    assert.equal(k.mocks.anthropic.requests.length, 0);
  });

  it('budget_exhausted: a SpendExhaustedError naming the budget', async () => {
    const budget = uniquePrefix('err-budget');
    const key = await k.kb.createKey(
      openaiKey(uniquePrefix('err-budget'), { budgets: [{ name: budget, usdCap: 0.000001, window: 'day' }] }),
    );
    const err = await openai(key).chat.completions.create(CHAT).then(
      () => assert.fail('the call passed'),
      (e) => e,
    );
    const kbe = keybrakeError(err);
    assert.ok(kbe instanceof SpendExhaustedError, String(err));
    assert.equal(kbe.code, 'budget_exhausted');
    assert.equal(kbe.budget, budget);
    assert.equal(isSpendExhausted(err), true);
    assert.equal(isRetryable(err), false);
  });

  it('rate_limited: a RateLimitedError, retryable after Retry-After seconds', async () => {
    const key = await k.kb.createKey(openaiKey(uniquePrefix('err-rate'), { rateLimit: { requests: 1, per: 'minute' } }));
    const client = openai(key);
    const ok = await client.chat.completions.create(CHAT);
    assert.equal(ok.object, 'chat.completion');
    const err = await client.chat.completions.create(CHAT).then(
      () => assert.fail('the second call passed'),
      (e) => e,
    );
    assert.equal(err.status, 429);
    const kbe = keybrakeError(err);
    assert.ok(kbe instanceof RateLimitedError, String(err));
    assert.equal(kbe.code, 'rate_limited');
    assert.equal(isSpendExhausted(err), false);
    assert.equal(isRetryable(err), true);
    const wait = retryAfter(err);
    assert.ok(Number.isInteger(wait) && wait >= 1 && wait <= 60, `Retry-After ${wait}`);
    assert.equal(kbe.retryAfter, wait);
    assert.equal(k.mocks.openai.requests.length, 1, 'only the first call reached the vendor');
  });

  it("the vendor's own 429 and 400 are not Keybrake's: judged by the vendor's hints", async () => {
    const key = await k.kb.createKey(openaiKey(uniquePrefix('err-vendor')));
    k.mocks.openai.nextHandler((rec, res) => {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '7' });
      res.end(JSON.stringify({ error: { type: 'requests', code: 'rate_limit_exceeded', message: 'slow down' } }));
    });
    const e429 = await openai(key).chat.completions.create(CHAT).then(assert.fail, (e) => e);
    assert.equal(e429.status, 429);
    assert.equal(keybrakeError(e429), null);
    assert.equal(errorCode(e429), null);
    assert.equal(isRetryable(e429), true);
    assert.equal(retryAfter(e429), 7);

    k.mocks.openai.nextHandler((rec, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { type: 'invalid_request_error', message: 'bad messages' } }));
    });
    const e400 = await openai(key).chat.completions.create(CHAT).then(assert.fail, (e) => e);
    assert.equal(keybrakeError(e400), null);
    assert.equal(isRetryable(e400), false);
    assert.equal(isRetryable(new Error('no status')), false);
    assert.equal(isRetryable(undefined), false);
  });

  it('audit_unavailable: retryable, through the SDK and from the admin API; revokeSurely waits it out', async () => {
    const key = await k.kb.createKey(openaiKey(uniquePrefix('err-audit')));
    fs.writeFileSync(failFlag, '');
    try {
      const err = await openai(key).chat.completions.create(CHAT).then(assert.fail, (e) => e);
      assert.equal(err.status, 503);
      const kbe = keybrakeError(err);
      assert.ok(kbe instanceof UnavailableError, String(err));
      assert.equal(kbe.code, 'audit_unavailable');
      assert.equal(isRetryable(err), true);
      assert.equal(k.mocks.openai.requests.length, 0);

      await assert.rejects(k.kb.createKey(openaiKey(uniquePrefix('err-audit'))), (e) => {
        assert.ok(e instanceof UnavailableError, String(e));
        assert.equal(e.status, 503);
        assert.equal(isRetryable(e), true);
        return true;
      });
      await assert.rejects(k.kb.revokeKey(key.id), UnavailableError);
      assert.equal(await keyStatus(k.d, key.id), 'active');

      // revokeSurely tries again: the disk comes back after its first refusal
      let deletes = 0;
      const { Keybrake } = require('..');
      const watched = new Keybrake({
        adminUrl: k.d.adminUrl,
        adminToken: k.d.adminToken,
        fetch: async (url, init) => {
          const res = await fetch(url, init);
          if (init.method === 'DELETE' && ++deletes === 1) {
            assert.equal(res.status, 503);
            fs.rmSync(failFlag);
          }
          return res;
        },
      });
      await watched.revokeSurely(key.id);
      assert.equal(deletes, 2);
      assert.equal(await keyStatus(k.d, key.id), 'revoked');
    } finally {
      if (fs.existsSync(failFlag)) fs.rmSync(failFlag);
    }
  });
});
