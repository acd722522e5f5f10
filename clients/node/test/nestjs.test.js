'use strict';
// nestjs.test.js - KeybrakeInterceptor in a real NestJS app (platform
// express) on a loopback port: the key is issued in intercept(), the
// controller's OpenAI SDK call goes through the real binary with it, and
// rxjs finalize() revokes it exactly once, also when the handler throws.
// Plain JS has no decorator syntax, so the decorators are applied as the
// TypeScript compiler would: as functions.

require('reflect-metadata');
const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { Controller, HttpException, Module, Post, Req, UseInterceptors } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { OpenAI } = require('openai');

const { Keybrake, KeybrakeInterceptor, isSpendExhausted } = require('..');
const { harness, keyStatus, startKeybrake, uniquePrefix } = require('./lib');

class CountingKeybrake extends Keybrake {
  constructor(opts) {
    super(opts);
    this.revocations = new Map();
  }
  revokeSurely(id, attempts) {
    this.revocations.set(id, (this.revocations.get(id) || 0) + 1);
    return super.revokeSurely(id, attempts);
  }
}

// @Controller('agent') @UseInterceptors(interceptor) class AgentController {
//   @Post('chat') chat(@Req() req) {...}   @Post('fail') fail(@Req() req) {...} }
function buildModule(kb, interceptor) {
  class AgentController {
    async chat(req) {
      const openai = new OpenAI({ apiKey: req.keybrake.token, baseURL: kb.vendorBaseUrl('openai'), maxRetries: 0 });
      try {
        const c = await openai.chat.completions.create({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 16,
        });
        return { keyId: req.keybrake.id, label: req.keybrake.label, reply: c.choices[0].message.content };
      } catch (e) {
        if (isSpendExhausted(e)) throw new HttpException({ keyId: req.keybrake.id, error: 'spend limit reached' }, 402);
        throw e;
      }
    }

    async fail(req) {
      throw new HttpException({ keyId: req.keybrake.id, error: 'tool failed' }, 500);
    }
  }
  for (const name of ['chat', 'fail']) {
    Req()(AgentController.prototype, name, 0);
    Post(name)(AgentController.prototype, name, Object.getOwnPropertyDescriptor(AgentController.prototype, name));
  }
  UseInterceptors(interceptor)(AgentController);
  Controller('agent')(AgentController);
  class AppModule {}
  Module({ controllers: [AgentController] })(AppModule);
  return AppModule;
}

describe('NestJS: KeybrakeInterceptor', () => {
  let k;
  let kb;
  let app;
  let port;
  const prefix = uniquePrefix('nest');

  before(async () => {
    k = await startKeybrake();
    kb = new CountingKeybrake({ adminUrl: k.d.adminUrl, adminToken: k.d.adminToken, proxyUrl: k.d.proxyUrl });
    const interceptor = new KeybrakeInterceptor(kb, {
      vendor: 'openai',
      allowedEndpoints: ['POST /v1/chat/completions'],
      dailyUsdCap: (req) => (req.headers['x-cap'] ? Number(req.headers['x-cap']) : 1),
      expiresIn: '10m',
      label: (req) => `${prefix}user-${req.headers['x-user'] || 'anon'}/run-${crypto.randomUUID()}`,
    });
    app = await NestFactory.create(buildModule(kb, interceptor), { logger: false });
    await app.listen(0, '127.0.0.1');
    port = app.getHttpServer().address().port;
  });

  after(async () => {
    if (app) await app.close();
    if (k) await k.close();
  });

  beforeEach(() => k.mocks.reset());

  const post = (p, headers = {}) => harness.request({ port, method: 'POST', path: p, headers });

  async function assertRevokedOnce(keyId) {
    await harness.waitFor(async () => (await keyStatus(k.d, keyId)) === 'revoked', { what: `${keyId} revoked` });
    assert.equal(kb.revocations.get(keyId), 1, `revocations of ${keyId}`);
  }

  it('a request gets its own key, the SDK call goes through the proxy with it, the key is revoked after', async () => {
    const r = await post('/agent/chat', { 'x-user': '7' });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.reply, 'Hello from the mock.');
    assert.match(r.json.label, new RegExp(`^${prefix}user-7/run-`));
    await assertRevokedOnce(r.json.keyId);
    assert.equal(k.mocks.openai.requests.length, 1);
    assert.equal(k.mocks.openai.requests[0].headers.authorization, `Bearer ${k.d.secrets.openai}`);
    assert.equal((await kb.getKey(r.json.keyId)).usage.requests, 1);
  });

  it('a handler that throws: the key is revoked all the same', async () => {
    const r = await post('/agent/fail');
    assert.equal(r.status, 500, r.text);
    assert.equal(r.json.error, 'tool failed');
    await assertRevokedOnce(r.json.keyId);
  });

  it('a spent cap is final: the handler answers 402 and the key is revoked', async () => {
    const r = await post('/agent/chat', { 'x-cap': '0.000001' });
    assert.equal(r.status, 402, r.text);
    await assertRevokedOnce(r.json.keyId);
    assert.equal(k.mocks.openai.requests.length, 0);
  });

  it('concurrent requests each get their own key, each revoked once', async () => {
    const N = 8;
    const rs = await Promise.all(Array.from({ length: N }, (_, i) => post('/agent/chat', { 'x-user': `n${i}` })));
    const ids = rs.map((r) => {
      assert.equal(r.status, 201, r.text);
      return r.json.keyId;
    });
    assert.equal(new Set(ids).size, N);
    for (let i = 0; i < N; i++) {
      assert.match(rs[i].json.label, new RegExp(`user-n${i}/`));
      await assertRevokedOnce(ids[i]);
      assert.equal((await kb.getKey(ids[i])).usage.requests, 1);
    }
    assert.equal(k.mocks.openai.requests.length, N);
    assert.deepEqual((await kb.listKeys({ labelPrefix: prefix, status: 'active' })).data, []);
  });
});
