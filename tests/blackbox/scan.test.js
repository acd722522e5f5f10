'use strict';
// scan.test.js - big and compressed vendor answers through the real daemon
// (issue 13): a 6 MiB chat completion and a stream whose final chunk is
// 2 MiB are charged exactly their usage (the meter scans answers into a
// small skeleton instead of buffering them); an answer in a coding the
// meter cannot read is charged the reservation.
// The proxy hands the answer's Content-Encoding to meter_response_encoding().

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');

const { startDaemon, uniquePrefix, REPO } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const PRICING = JSON.parse(fs.readFileSync(path.join(REPO, 'src/meter/pricing.json'), 'utf8'));

// µ$ for `tokens` at a "$ per million tokens" decimal string, rounded up.
function micros(tokens, perMtok) {
  const [i, f = ''] = perMtok.split('.');
  const scale = 10n ** BigInt(f.length);
  const price = BigInt(i) * scale + BigInt(f || '0');
  return Number((BigInt(tokens) * price + scale - 1n) / scale);
}

async function spentMicros(d, id) {
  const r = await d.admin.get(`/v1/keys/${id}`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.usage.reserved_usd, 0, 'no reservation left behind');
  return Math.round(r.json.usage.spent_usd * 1e6);
}

// Prose-like text of about n bytes (compresses a few times, not a thousand),
// with text that looks like usage in it.
function longText(n) {
  const words = ['the ', 'model ', '"usage":{"prompt_tokens":1} ', 'river\n', 'quietly ', 'café ', '\\ ', 'tokens '];
  const parts = [];
  let len = 0;
  let seed = 7;
  while (len < n) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const w = words[(seed >>> 16) % words.length] + (seed % 5 === 0 ? `${seed % 1000} ` : '');
    parts.push(w);
    len += w.length;
  }
  return parts.join('');
}

const USAGE = { prompt_tokens: 1000, completion_tokens: 4000, total_tokens: 5000, prompt_tokens_details: { cached_tokens: 200 } };

function expectedMicros() {
  const m = PRICING.openai.models['gpt-4o-mini'];
  return micros(800, m.input_per_mtok) + micros(200, m.cached_input_per_mtok) + micros(4000, m.output_per_mtok);
}

function chatJson(text) {
  return JSON.stringify({
    id: 'chatcmpl-big',
    object: 'chat.completion',
    created: 1,
    model: 'gpt-4o-mini-2024-07-18',
    choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: 'stop' }],
    usage: USAGE,
    service_tier: 'default', // as OpenAI reports it (unreported is charged at priority)
  });
}

describe('answers of any size and coding are read', () => {
  let mocks;
  let d;
  const big = longText(6 * 1024 * 1024);

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

  async function chat(label, answer) {
    const key = await d.issueKey({ label: uniquePrefix(label), vendor: 'openai', daily_usd_cap: 5, allowed_endpoints: ['POST /v1/chat/completions'] });
    mocks.openai.nextHandler((rec, res) => answer(res));
    const r = await d.proxy({
      method: 'POST',
      path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 8000, messages: [{ role: 'user', content: 'Write a lot.' }] }),
    });
    return { key, r };
  }

  it('a 6 MiB chat completion is charged exactly its usage', async () => {
    const body = Buffer.from(chatJson(big));
    assert.ok(body.length > 6 * 1024 * 1024);
    const { key, r } = await chat('scan-6mib', (res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    });
    assert.equal(r.status, 200);
    assert.equal(r.body.length, body.length, 'the client got the whole answer');
    assert.equal(await spentMicros(d, key.id), expectedMicros());
  });

  it('a stream whose final chunk is 2 MiB is charged exactly its usage', async () => {
    const key = await d.issueKey({ label: uniquePrefix('scan-sse'), vendor: 'openai', daily_usd_cap: 5, allowed_endpoints: ['POST /v1/chat/completions'] });
    const streamP = mocks.openai.nextStream();
    const resP = d.proxy({
      method: 'POST',
      path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, max_tokens: 8000, messages: [{ role: 'user', content: 'x' }] }),
    });
    const up = await streamP;
    const base = { id: 'c', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini', service_tier: 'default' };
    up.send({ ...base, choices: [{ index: 0, delta: { content: 'a' } }], usage: null });
    up.send({ ...base, choices: [{ index: 0, delta: { content: big.slice(0, 2 * 1024 * 1024 + 100) }, finish_reason: 'stop' }], usage: USAGE });
    up.send('[DONE]');
    up.end();
    const r = await resP;
    assert.equal(r.status, 200);
    assert.equal(await spentMicros(d, key.id), expectedMicros());
  });

  for (const [name, ce, encode] of [
    ['gzip', 'gzip', (b) => zlib.gzipSync(b)],
    ['deflate', 'deflate', (b) => zlib.deflateSync(b)],
    ['br', 'br', (b) => zlib.brotliCompressSync(b)],
  ]) {
    it(`a ${name} chat completion is charged exactly its usage`, async () => {
      const raw = Buffer.from(chatJson(big));
      const body = encode(raw);
      const { key, r } = await chat(`scan-${name}`, (res) => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': ce, 'content-length': body.length });
        res.end(body);
      });
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-encoding'], ce, 'the client gets the answer as the vendor sent it');
      assert.equal(r.body.length, body.length);
      assert.equal(await spentMicros(d, key.id), expectedMicros());
    });
  }

  it('an answer in a coding the meter cannot read is charged the reservation', async () => {
    const body = Buffer.from('\x1f\x9d\x90 not readable without LZW');
    const { key, r } = await chat('scan-compress', (res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'compress', 'content-length': body.length });
      res.end(body);
    });
    assert.equal(r.status, 200);
    const reserved = Math.round(Number(r.headers['keybrake-cost-usd']) * 1e6);
    assert.ok(reserved > expectedMicros(), 'the reservation is the worst case');
    assert.equal(await spentMicros(d, key.id), reserved);
  });

  it('stops cleanly', async () => {
    await d.stop();
    d = null;
  });
});
