'use strict';
// canonical.test.js - one reading of a request for policy, meter and vendor
// (issue 13): every escaped spelling of a metered route reserves and settles
// as the plain one and reaches the vendor in its canonical spelling; money
// parameters in the query of a form vendor's POST are metered (or refused
// when they are also in the body); coded request bodies are decoded before
// metering; the vendor is asked only for codings the meter reads; an
// outcome the vendor may have billed (timeout or reset after the request
// went out) is charged and audited as unknown; permanent refusals tell the
// SDKs not to retry.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const zlib = require('node:zlib');

const { OpenAI } = require('openai');
const { Anthropic } = require('@anthropic-ai/sdk');

const { basic, closedPort, rawRequest, startDaemon, streamRequest, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const FORM = 'application/x-www-form-urlencoded';

describe('canonical request', () => {
  let mocks;
  let d;
  let S;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks, env: { KEYBRAKE_UPSTREAM_TIMEOUT: '1s' } });
    S = d.secrets;
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  const stripeKey = (cap, endpoints = ['POST /v1/payment_intents']) =>
    d.issueKey({ label: uniquePrefix('canon'), vendor: 'stripe', daily_usd_cap: cap, allowed_endpoints: endpoints });
  const usage = async (key) => (await d.admin.get(`/v1/keys/${key.id}`)).json.usage;
  // the proxy records of a key, newest first (its key.issued record left out)
  const auditOf = async (key) =>
    (await d.admin.get(`/v1/audit?key_id=${key.id}&limit=200`)).json.data.filter((a) => a.kind === 'proxy');

  describe('escaped spellings of a metered route', () => {
    const SPELLINGS = [
      '/v1/payment_intents',
      '/v1/p%61yment_intents',
      '/v1/payment%5Fintents',
      '/v1/payment%5fintents',
      '/v1/%70%61%79%6d%65%6e%74%5f%69%6e%74%65%6e%74%73',
      '/v1/payment_intent%73',
    ];

    for (const sp of SPELLINGS) {
      it(`${sp}: reserved and settled as the plain route, forwarded canonical`, async () => {
        const key = await stripeKey(1000);
        const r = await d.proxy({
          method: 'POST',
          path: `/stripe${sp}`,
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
          body: 'amount=5000&currency=usd',
        });
        assert.equal(r.status, 200, r.text);
        assert.equal(Number(r.headers['keybrake-cost-usd']), 50);
        assert.equal(mocks.stripe.requests.length, 1);
        assert.equal(mocks.stripe.requests[0].url, '/v1/payment_intents');
        const u = await usage(key);
        assert.equal(u.spent_usd, 50);
        const rec = (await auditOf(key))[0];
        assert.equal(rec.path, '/v1/payment_intents');
      });

      it(`${sp}: a $40 key is refused cap_exhausted and nothing reaches Stripe`, async () => {
        const key = await stripeKey(40);
        const r = await d.proxy({
          method: 'POST',
          path: `/stripe${sp}`,
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
          body: 'amount=5000&currency=usd',
        });
        assert.equal(r.status, 429, r.text);
        assert.equal(r.json.code, 'cap_exhausted');
        assert.equal(mocks.stripe.requests.length, 0);
      });
    }

    it('OpenAI, Anthropic and Twilio: an escaped letter costs what the plain path costs', async () => {
      const cases = [
        {
          vendor: 'openai',
          plain: '/openai/v1/chat/completions',
          escaped: '/openai/v1/chat/c%6fmpletions',
          headers: (t) => ({ authorization: `Bearer ${t}`, 'content-type': 'application/json' }),
          body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 50 }),
          upstream: '/v1/chat/completions',
        },
        {
          vendor: 'anthropic',
          plain: '/anthropic/v1/messages',
          escaped: '/anthropic/v1/m%65ssages',
          headers: (t) => ({ 'x-api-key': t, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' }),
          body: JSON.stringify({ model: 'claude-3-5-haiku-20241022', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] }),
          upstream: '/v1/messages',
        },
        {
          vendor: 'twilio',
          plain: `/twilio/2010-04-01/Accounts/${S.twilioSid}/Messages.json`,
          escaped: `/twilio/2010-04-01/Accounts/${S.twilioSid}/M%65ssages.json`,
          headers: (t) => ({ authorization: basic(S.twilioSid, t), 'content-type': FORM }),
          body: 'To=%2B14155550100&From=%2B14155550199&Body=hello',
          upstream: `/2010-04-01/Accounts/${S.twilioSid}/Messages.json`,
        },
      ];
      for (const c of cases) {
        const costs = [];
        for (const path of [c.plain, c.escaped]) {
          const key = await d.issueKey({ label: uniquePrefix('canon-' + c.vendor), vendor: c.vendor, daily_usd_cap: 100 });
          mocks.reset();
          const r = await d.proxy({ method: 'POST', path, headers: c.headers(key.token), body: c.body });
          assert.equal(r.status < 300, true, `${c.vendor} ${path}: ${r.status} ${r.text}`);
          assert.equal(mocks[c.vendor].requests[0].url, c.upstream, `${c.vendor} ${path}`);
          costs.push([r.headers['keybrake-cost-usd'], (await usage(key)).spent_usd]);
        }
        assert.deepEqual(costs[1], costs[0], `${c.vendor}: escaped spelling priced differently`);
        assert.ok(costs[0][1] > 0, `${c.vendor}: the plain request costs something`);
      }
    });
  });

  describe('parameters in the query of a form vendor\'s write', () => {
    it('Stripe amount in the query is metered: a $40 key is refused, nothing forwarded', async () => {
      const key = await stripeKey(40);
      const r = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents?amount=5000&currency=usd',
        headers: { authorization: `Bearer ${key.token}` },
      });
      assert.equal(r.status, 429, r.text);
      assert.equal(r.json.code, 'cap_exhausted');
      assert.equal(mocks.stripe.requests.length, 0);
    });

    it('Stripe amount in the query is folded into the body the vendor receives, and charged', async () => {
      const key = await stripeKey(1000);
      const r = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents?amount=5000&currency=usd',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
        body: 'description=x',
      });
      assert.equal(r.status, 200, r.text);
      const rec = mocks.stripe.requests[0];
      assert.equal(rec.url, '/v1/payment_intents');
      assert.equal(rec.bodyText, 'description=x&amount=5000&currency=usd');
      assert.equal(rec.headers['content-type'], FORM);
      assert.equal((await usage(key)).spent_usd, 50);
    });

    for (const [what, path, body] of [
      ['same key in query and body', '/stripe/v1/payment_intents?amount=1', 'amount=5000&currency=usd'],
      ['escaped key in the query', '/stripe/v1/payment_intents?amoun%74=1', 'amount=5000&currency=usd'],
      ['bracketed key in both', '/stripe/v1/payment_intents?metadata%5Bk%5D=1', 'amount=5000&currency=usd&metadata[k]=2'],
    ]) {
      it(`${what}: 400 ambiguous_request, nothing forwarded`, async () => {
        const key = await stripeKey(1000);
        const r = await d.proxy({
          method: 'POST',
          path,
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
          body,
        });
        assert.equal(r.status, 400, r.text);
        assert.equal(r.json.code, 'ambiguous_request');
        assert.equal(mocks.stripe.requests.length, 0);
      });
    }

    it('a query beside a JSON body is refused (it cannot be read one way)', async () => {
      const key = await d.issueKey({ label: uniquePrefix('canon-tw'), vendor: 'twilio', daily_usd_cap: 100 });
      const r = await d.proxy({
        method: 'POST',
        path: `/twilio/2010-04-01/Accounts/${S.twilioSid}/Messages.json?To=%2B14155550100`,
        headers: { authorization: basic(S.twilioSid, key.token), 'content-type': 'application/json' },
        body: '{"Body":"x"}',
      });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.code, 'ambiguous_request');
      assert.equal(mocks.twilio.requests.length, 0);
    });

    it('Twilio message parameters in the query are metered like the body', async () => {
      const key = await d.issueKey({ label: uniquePrefix('canon-tw'), vendor: 'twilio', daily_usd_cap: 100 });
      const plainKey = await d.issueKey({ label: uniquePrefix('canon-tw'), vendor: 'twilio', daily_usd_cap: 100 });
      const base = `/twilio/2010-04-01/Accounts/${S.twilioSid}/Messages.json`;
      const q = await d.proxy({
        method: 'POST',
        path: `${base}?To=%2B14155550100&From=%2B14155550199&Body=${'x'.repeat(300)}`,
        headers: { authorization: basic(S.twilioSid, key.token) },
      });
      const p = await d.proxy({
        method: 'POST',
        path: base,
        headers: { authorization: basic(S.twilioSid, plainKey.token), 'content-type': FORM },
        body: `To=%2B14155550100&From=%2B14155550199&Body=${'x'.repeat(300)}`,
      });
      assert.equal(q.status, 201, q.text);
      assert.equal(p.status, 201, p.text);
      assert.equal(q.headers['keybrake-cost-usd'], p.headers['keybrake-cost-usd']);
      assert.equal(mocks.twilio.requests[0].url, `/2010-04-01/Accounts/${S.twilioSid}/Messages.json`);
    });

    it('a GET keeps its query as sent', async () => {
      const key = await stripeKey(10, ['GET /v1/payment_intents']);
      const r = await d.proxy({ path: '/stripe/v1/payment_intents?limit=3', headers: { authorization: `Bearer ${key.token}` } });
      assert.equal(r.status, 200, r.text);
      assert.equal(mocks.stripe.requests[0].url, '/v1/payment_intents?limit=3');
    });
  });

  describe('what else could be read two ways', () => {
    it('method and URL override headers never reach the vendor', async () => {
      const key = await stripeKey(1000, ['GET /v1/payment_intents']);
      const names = ['x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-method', 'x-original-url', 'x-rewrite-url', 'x-override-url'];
      const headers = { authorization: `Bearer ${key.token}` };
      for (const n of names) headers[n] = n.endsWith('url') ? '/v1/payouts' : 'POST';
      const r = await d.proxy({ path: '/stripe/v1/payment_intents', headers });
      assert.equal(r.status, 200, r.text);
      for (const n of names) assert.equal(mocks.stripe.requests[0].headers[n], undefined, n);
    });

    it('Content_Encoding, Content_Type and Accept_Encoding spellings are refused ambiguous_request', async () => {
      const key = await stripeKey(1000, ['/v1/*']);
      for (const name of ['Content_Encoding', 'content_type', 'Accept_Encoding']) {
        const r = await d.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM, [name]: 'gzip' },
          body: 'amount=5000&currency=usd',
        });
        assert.equal(r.status, 400, `${name}: ${r.text}`);
        assert.equal(r.json.code, 'ambiguous_request');
      }
      assert.equal(mocks.stripe.requests.length, 0);
    });

    it('a GET with a body, and two Content-Type headers, are refused ambiguous_request', async () => {
      const key = await stripeKey(1000, ['/v1/*']);
      const get = await d.proxy({
        path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
        body: 'amount=5000&currency=usd',
      });
      assert.equal(get.status, 400, get.text);
      assert.equal(get.json.code, 'ambiguous_request');
      const two = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': ['application/json', FORM] },
        body: '{"amount":5000,"currency":"usd"}',
      });
      assert.equal(two.status, 400, two.text);
      assert.equal(two.json.code, 'ambiguous_request');
      assert.equal(mocks.stripe.requests.length, 0);
    });
  });

  describe('who pays: account selectors', () => {
    for (const [vendor, name] of [
      ['stripe', 'Stripe-Account'],
      ['stripe', 'stripe-context'],
      ['openai', 'OpenAI-Organization'],
      ['openai', 'OpenAI-Project'],
      ['openai', 'openai_project'],
    ]) {
      it(`${name} is refused 403 account_not_allowed, nothing forwarded`, async () => {
        const key = await d.issueKey({ label: uniquePrefix('acct'), vendor, allowed_endpoints: ['/v1/*'] });
        const path = vendor === 'stripe' ? '/stripe/v1/customers' : '/openai/v1/models';
        const r = await d.proxy({ path, headers: { authorization: `Bearer ${key.token}`, [name]: 'acct_other' } });
        assert.equal(r.status, 403, r.text);
        assert.equal(r.json.code, 'account_not_allowed');
        assert.equal(mocks[vendor].requests.length, 0);
      });
    }

    it('a selector naming one of the key\'s allowed_accounts is forwarded as sent; another is refused', async () => {
      const key = await d.issueKey({ label: uniquePrefix('acct-ok'), vendor: 'stripe', allowed_endpoints: ['/v1/*'], allowed_accounts: ['acct_1A', 'acct_2B'] });
      assert.deepEqual(key.allowed_accounts, ['acct_1A', 'acct_2B']);
      const ok = await d.proxy({ path: '/stripe/v1/payment_intents', headers: { authorization: `Bearer ${key.token}`, 'Stripe-Account': 'acct_2B' } });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(mocks.stripe.requests[0].headers['stripe-account'], 'acct_2B');
      for (const headers of [{ 'Stripe-Account': 'acct_3C' }, { Stripe_Account: 'acct_1A' }, { 'Stripe-Account': ['acct_1A', 'acct_1A'] }]) {
        const r = await d.proxy({ path: '/stripe/v1/payment_intents', headers: { authorization: `Bearer ${key.token}`, ...headers } });
        assert.equal(r.status, 403, `${JSON.stringify(headers)}: ${r.text}`);
        assert.equal(r.json.code, 'account_not_allowed');
      }
      assert.equal(mocks.stripe.requests.length, 1);
      const got = await d.admin.get(`/v1/keys/${key.id}`);
      assert.deepEqual(got.json.allowed_accounts, ['acct_1A', 'acct_2B']);
      const plain = await stripeKey(1);
      assert.equal(plain.allowed_accounts, null);
    });

    it('allowed_accounts is validated at issuance', async () => {
      for (const bad of [[], 'acct_1', [''], ['has space'], [42], Array.from({ length: 17 }, (_, i) => `a${i}`), ['x'.repeat(129)]]) {
        const r = await d.admin.post('/v1/keys', {
          label: uniquePrefix('acct-bad'), vendor: 'stripe', allowed_endpoints: ['/v1/*'], daily_usd_cap: 1, expires_in: 60, allowed_accounts: bad,
        });
        assert.equal(r.status, 400, JSON.stringify(bad));
        assert.equal(r.json.field, 'allowed_accounts');
      }
    });

    it('a Twilio account SID other than the configured one is refused', async () => {
      const key = await d.issueKey({ label: uniquePrefix('acct-tw'), vendor: 'twilio', daily_usd_cap: 10 });
      for (const sid of ['AC00000000000000000000000000000000', `${S.twilioSid}x`]) {
        const r = await d.proxy({
          method: 'POST',
          path: `/twilio/2010-04-01/Accounts/${sid}/Messages.json`,
          headers: { authorization: basic(S.twilioSid, key.token), 'content-type': FORM },
          body: 'To=%2B14155550100&From=%2B14155550199&Body=hi',
        });
        assert.equal(r.status, 403, r.text);
        assert.equal(r.json.code, 'account_not_allowed');
      }
      assert.equal(mocks.twilio.requests.length, 0);
    });

    it('underscore spellings of framing and credential headers never reach the vendor', async () => {
      const key = await stripeKey(1000, ['/v1/*']);
      const r = await d.proxy({
        path: '/stripe/v1/payment_intents',
        headers: {
          authorization: `Bearer ${key.token}`,
          Content_Length: '5',
          Transfer_Encoding: 'chunked',
          X_Api_Key: 'sk_other',
          Keybrake_Cost_USD: '0',
          X_Forwarded_For: '10.0.0.1',
        },
      });
      assert.equal(r.status, 200, r.text);
      const names = mocks.stripe.requests[0].rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      for (const n of ['content_length', 'transfer_encoding', 'x_api_key', 'keybrake_cost_usd', 'x_forwarded_for'])
        assert.ok(!names.includes(n), `${n} was forwarded`);
    });
  });

  describe('what a refused path leaves in the audit and the log', () => {
    it('invalid UTF-8 in a refused path is kept, escaped, in the audit record; JSON log lines stay valid', async () => {
      const d2 = await startDaemon({ mocks, env: { KEYBRAKE_LOG_FORMAT: 'json' } });
      try {
        const key = await d2.issueKey({ label: uniquePrefix('utf8'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
        const raw = Buffer.concat([
          Buffer.from('GET /stripe/v1/caf'),
          Buffer.from([0xff, 0xfe, 0xc3, 0x28]),
          Buffer.from(` HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\nConnection: close\r\n\r\n`),
        ]);
        const r = await rawRequest(d2.proxyPort, raw);
        assert.match(r.text, /^HTTP\/1\.1 400/, r.text);
        const id = /\r\nKeybrake-Request-Id: (req_[0-9a-f]+)\r\n/.exec(r.text)[1];
        const recs = (await d2.admin.get('/v1/audit?limit=50')).json.data.filter((a) => a.request_id === id);
        assert.equal(recs.length, 1);
        assert.equal(recs[0].code, 'bad_path');
        assert.equal(recs[0].path, '/stripe/v1/caf%FF%FE%C3(');
        for (const line of (d2.stderr + d2.stdout).split('\n').filter((l) => l.startsWith('{')))
          assert.doesNotThrow(() => JSON.parse(line), line);
      } finally {
        await d2.stop();
      }
    });
  });

  describe('the vendor secret stays in', () => {
    it('a vendor echoing the injected secret in headers and body: the client sees asterisks', async () => {
      const key = await stripeKey(1000, ['/v1/*']);
      mocks.stripe.nextHandler((rec, res) => {
        const body = JSON.stringify({ error: { message: `Invalid API Key provided: ${rec.headers.authorization}` } });
        res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-echo': rec.headers.authorization });
        res.end(body);
      });
      const r = await d.proxy({ path: '/stripe/v1/payment_intents', headers: { authorization: `Bearer ${key.token}` } });
      assert.equal(r.status, 401);
      assert.ok(!r.text.includes(S.stripe), r.text);
      assert.ok(!r.headers['x-echo'].includes(S.stripe), r.headers['x-echo']);
      assert.ok(r.text.includes('*'.repeat(S.stripe.length)), r.text);
      assert.equal(r.headers['x-echo'], `Bearer ${'*'.repeat(S.stripe.length)}`);
    });

    it('a secret split across stream chunks is masked too, and the stream still flows', async () => {
      const key = await d.issueKey({ label: uniquePrefix('scrub-sse'), vendor: 'openai', daily_usd_cap: 10 });
      const ctlP = mocks.openai.nextStream();
      const clientP = streamRequest({
        port: d.proxyPort,
        method: 'POST',
        path: '/openai/v1/chat/completions',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
      });
      const ctl = await ctlP;
      const client = await clientP;
      ctl.write('data: {"a":1}\n\n');
      await client.readUntil((t) => t.includes('{"a":1}')); // not held back
      const half = Math.floor(S.openai.length / 2);
      ctl.write(`data: {"echo":"${S.openai.slice(0, half)}`);
      ctl.write(`${S.openai.slice(half)}"}\n\n`);
      ctl.write('data: [DONE]\n\n');
      ctl.end();
      const all = await client.rest();
      assert.ok(!all.includes(S.openai), all);
      assert.ok(all.includes(`{"echo":"${'*'.repeat(S.openai.length)}"}`), all);
    });
  });

  describe('coded request bodies', () => {
    const form = 'amount=5000&currency=usd';
    for (const [coding, encode] of [
      ['gzip', zlib.gzipSync],
      ['x-gzip', zlib.gzipSync],
      ['deflate', zlib.deflateSync],
      ['br', zlib.brotliCompressSync],
    ]) {
      it(`${coding}: decoded, metered, forwarded decoded without Content-Encoding`, async () => {
        const key = await stripeKey(1000);
        const r = await d.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM, 'content-encoding': coding },
          body: encode(Buffer.from(form)),
        });
        assert.equal(r.status, 200, r.text);
        assert.equal(Number(r.headers['keybrake-cost-usd']), 50);
        const rec = mocks.stripe.requests[0];
        assert.equal(rec.bodyText, form);
        assert.equal(rec.headers['content-encoding'], undefined);
        assert.equal(Number(rec.headers['content-length']), form.length);
      });
    }

    it('a gzip OpenAI body is metered on its decoded bytes', async () => {
      const key = await d.issueKey({ label: uniquePrefix('canon-oai'), vendor: 'openai', daily_usd_cap: 100 });
      const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 });
      const r = await d.proxy({
        method: 'POST',
        path: '/openai/v1/chat/completions',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: zlib.gzipSync(Buffer.from(body)),
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(mocks.openai.requests[0].bodyText.includes('"include_usage"') || mocks.openai.requests[0].bodyText === body, true);
      assert.equal(mocks.openai.requests[0].headers['content-encoding'], undefined);
    });

    for (const [what, headers, body, status, code] of [
      ['an unknown coding', { 'content-encoding': 'compress' }, Buffer.from(form), 415, 'unsupported_content_encoding'],
      ['two codings stacked', { 'content-encoding': 'gzip, br' }, zlib.gzipSync(Buffer.from(form)), 415, 'unsupported_content_encoding'],
      ['a corrupt gzip body', { 'content-encoding': 'gzip' }, Buffer.from('not gzip at all'), 400, 'invalid_request'],
      ['a truncated gzip body', { 'content-encoding': 'gzip' }, zlib.gzipSync(Buffer.from(form)).subarray(0, 15), 400, 'invalid_request'],
      ['a gzip bomb (64 MiB of zeros)', { 'content-encoding': 'gzip' }, zlib.gzipSync(Buffer.alloc(64 << 20)), 413, 'body_too_large'],
    ]) {
      it(`${what}: ${status} ${code}, nothing forwarded`, async () => {
        const key = await stripeKey(1000);
        const r = await d.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM, ...headers },
          body,
        });
        assert.equal(r.status, status, r.text);
        assert.equal(r.json.code, code);
        assert.equal(mocks.stripe.requests.length, 0);
      });
    }
  });

  describe('answer codings', () => {
    it('the vendor is asked only for codings the meter reads, in the client\'s order', async () => {
      const key = await d.issueKey({ label: uniquePrefix('canon-ae'), vendor: 'openai', daily_usd_cap: 10 });
      for (const [sent, want] of [
        ['gzip, deflate, br, zstd', 'gzip, deflate, br'],
        ['br;q=1.0, gzip;q=0.5, *;q=0.1', 'br, gzip'],
        ['gzip;q=0, deflate', 'deflate'],
        ['zstd', 'identity'],
        [undefined, 'identity'],
      ]) {
        mocks.reset();
        const headers = { authorization: `Bearer ${key.token}` };
        if (sent) headers['accept-encoding'] = sent;
        const r = await d.proxy({ path: '/openai/v1/models', headers });
        assert.equal(r.status, 200, r.text);
        assert.equal(mocks.openai.requests[0].headers['accept-encoding'], want, `client sent ${sent}`);
      }
    });

    it('a gzip-compressed chat answer settles as the plain one', async () => {
      const costs = [];
      for (const coding of ['identity', 'gzip', 'deflate', 'br']) {
        const key = await d.issueKey({ label: uniquePrefix('canon-gz'), vendor: 'openai', daily_usd_cap: 100 });
        mocks.openai.nextHandler((rec, res) => {
          const text = JSON.stringify({
            id: 'chatcmpl-1', object: 'chat.completion', created: 1, model: 'gpt-4o-mini',
            choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
            usage: { prompt_tokens: 1000, completion_tokens: 2000, total_tokens: 3000 },
            service_tier: 'default',
          });
          const enc = { identity: (b) => b, gzip: zlib.gzipSync, deflate: zlib.deflateSync, br: zlib.brotliCompressSync }[coding];
          const body = enc(Buffer.from(text));
          const h = { 'content-type': 'application/json', 'content-length': body.length };
          if (coding !== 'identity') h['content-encoding'] = coding;
          res.writeHead(200, h);
          res.end(body);
        });
        const r = await d.proxy({
          method: 'POST',
          path: '/openai/v1/chat/completions',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json', 'accept-encoding': 'gzip, deflate, br' },
          body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4000 }),
        });
        assert.equal(r.status, 200, r.text);
        costs.push((await usage(key)).spent_usd);
      }
      // gpt-4o-mini: 1000 in at $0.15/M = 150 µ$, 2000 out at $0.60/M = 1200 µ$
      assert.deepEqual(costs, [0.00135, 0.00135, 0.00135, 0.00135]);
    });
  });

  describe('outcomes the vendor may have billed', () => {
    it('a timeout after the request went out: 504, the reservation charged, audited as unknown', async () => {
      const key = await stripeKey(1000);
      mocks.stripe.setHang(true);
      const r = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
        body: 'amount=5000&currency=usd',
      });
      mocks.stripe.setHang(false);
      assert.equal(r.status, 504, r.text);
      assert.equal(mocks.stripe.requests.length, 1);
      const u = await usage(key);
      assert.equal(u.spent_usd, 50);
      assert.equal(u.reserved_usd, 0);
      const rec = (await auditOf(key))[0];
      assert.equal(rec.code, 'upstream_timeout');
      assert.equal(rec.settled_usd, 50);
      assert.deepEqual(rec.detail, { outcome: 'unknown' });
    });

    it('a reset after the vendor read the request: 502, charged, not re-sent', async () => {
      const key = await stripeKey(1000);
      mocks.stripe.nextHandler((rec, res, req) => req.socket.destroy());
      const r = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
        body: 'amount=5000&currency=usd',
      });
      assert.equal(r.status, 502, r.text);
      assert.equal(mocks.stripe.requests.length, 1);
      assert.equal((await usage(key)).spent_usd, 50);
      assert.deepEqual((await auditOf(key))[0].detail, { outcome: 'unknown' });
    });

    it('a Stripe 500 on a money-moving POST is charged; a 400 is not', async () => {
      const key = await stripeKey(1000);
      for (const status of [500, 400]) {
        mocks.stripe.nextHandler((rec, res) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { type: 'api_error', message: 'x' } }));
        });
        const r = await d.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
          body: 'amount=5000&currency=usd',
        });
        assert.equal(r.status, status);
      }
      assert.equal((await usage(key)).spent_usd, 50);
      const [r400, r500] = await auditOf(key); // newest first
      assert.equal(r500.status, 500);
      assert.deepEqual(r500.detail, { outcome: 'unknown' });
      assert.equal(r400.status, 400);
      assert.ok(!r400.detail);
    });

    it('a vendor that cannot be reached was never sent anything: 502, nothing charged', async () => {
      const port = await closedPort();
      const d2 = await startDaemon({ baseUrls: { stripe: `http://127.0.0.1:${port}` } });
      try {
        const key = await d2.issueKey({ label: uniquePrefix('canon-unreach'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['/v1/*'] });
        const r = await d2.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
          body: 'amount=5000&currency=usd',
        });
        assert.equal(r.status, 502, r.text);
        assert.equal(r.json.code, 'upstream_unreachable');
        const u = (await d2.admin.get(`/v1/keys/${key.id}`)).json.usage;
        assert.equal(u.spent_usd, 0);
        assert.equal(u.reserved_usd, 0);
      } finally {
        await d2.stop();
      }
    });
  });

  describe('an answer ends after its settlement', () => {
    it('a client that read a whole Content-Length answer sees its cost in the key\'s usage at once', async () => {
      const key = await stripeKey(1000);
      for (let i = 1; i <= 20; i++) {
        const r = await d.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
          body: 'amount=100&currency=usd',
        });
        assert.equal(r.status, 200, r.text);
        assert.ok(r.headers['content-length'], 'the mock frames by Content-Length');
        const u = await usage(key);
        assert.equal(u.reserved_usd, 0, `request ${i}: still reserved`);
        assert.equal(u.spent_usd, i, `request ${i}`);
      }
    });
  });

  describe('refusals tell SDKs not to retry', () => {
    it('cap_exhausted and other permanent refusals carry x-should-retry: false; rate_limited does not', async () => {
      const key = await stripeKey(1);
      const r = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': FORM },
        body: 'amount=5000&currency=usd',
      });
      assert.equal(r.status, 429);
      assert.equal(r.headers['x-should-retry'], 'false');
      assert.equal(r.headers['stripe-should-retry'], 'false');
      assert.equal(r.headers['retry-after'], undefined);
      const bad = await d.proxy({ path: '/stripe/v1/payment_intents', headers: { authorization: 'Bearer kb_nope' } });
      assert.equal(bad.status, 401);
      assert.equal(bad.headers['x-should-retry'], 'false');
    });

    it('the openai and anthropic SDKs make exactly one call on cap_exhausted', async () => {
      const oKey = await d.issueKey({ label: uniquePrefix('canon-sdk'), vendor: 'openai', daily_usd_cap: 0.000001 });
      const openai = new OpenAI({ apiKey: oKey.token, baseURL: `http://127.0.0.1:${d.proxyPort}/openai/v1` });
      await assert.rejects(
        openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1000 }),
        (e) => e.status === 429,
      );
      const aKey = await d.issueKey({ label: uniquePrefix('canon-sdk'), vendor: 'anthropic', daily_usd_cap: 0.000001 });
      const anthropic = new Anthropic({ apiKey: aKey.token, baseURL: `http://127.0.0.1:${d.proxyPort}/anthropic` });
      await assert.rejects(
        anthropic.messages.create({ model: 'claude-3-5-haiku-20241022', max_tokens: 1000, messages: [{ role: 'user', content: 'hi' }] }),
        (e) => e.status === 429,
      );
      for (const k of [oKey, aKey]) {
        const recs = await auditOf(k);
        assert.equal(recs.length, 1, `${k.vendor}: ${JSON.stringify(recs)}`);
        assert.equal(recs[0].code, 'cap_exhausted');
      }
      assert.equal(mocks.openai.requests.length + mocks.anthropic.requests.length, 0);
    });
  });
});
