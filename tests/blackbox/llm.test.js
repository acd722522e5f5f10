'use strict';
// llm.test.js - metering LLM calls (issue 4): the official openai and
// @anthropic-ai/sdk packages stream through the proxy from mocks that emit
// realistic event streams with usage; the cost charged equals the reference
// computed here from pricing.json, and a stream cut before its usage report
// is charged the reservation, never zero.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const OpenAI = require('openai');
const { Anthropic } = require('@anthropic-ai/sdk');

const { startDaemon, uniquePrefix, REPO } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const PRICING = JSON.parse(fs.readFileSync(path.join(REPO, 'src/meter/pricing.json'), 'utf8'));

// µ$ for `tokens` at a "$ per million tokens" decimal string, rounded up:
// $1 per Mtok is exactly 1 µ$ per token. Integer math on the decimal text.
function micros(tokens, perMtok) {
  const [i, f = ''] = perMtok.split('.');
  const scale = 10n ** BigInt(f.length);
  const price = BigInt(i) * scale + BigInt(f || '0');
  const n = BigInt(tokens) * price;
  return Number((n + scale - 1n) / scale);
}

async function spentMicros(d, id) {
  const r = await d.admin.get(`/v1/keys/${id}`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.usage.reserved_usd, 0, 'no reservation left behind');
  return Math.round(r.json.usage.spent_usd * 1e6);
}

describe('LLM metering through the official SDKs', () => {
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

  it('openai: a streamed chat completion is charged exactly its usage', async () => {
    const key = await d.issueKey({ label: uniquePrefix('oa-stream'), vendor: 'openai', daily_usd_cap: 5, allowed_endpoints: ['POST /v1/chat/completions'] });
    const openai = new OpenAI({ apiKey: key.token, baseURL: `${d.proxyUrl}/openai/v1`, organization: null, project: null, maxRetries: 0 });
    const streamP = mocks.openai.nextStream();
    const call = openai.chat.completions.create({
      model: 'gpt-4o-mini',
      stream: true,
      max_tokens: 400,
      messages: [{ role: 'user', content: 'Say hello' }],
    });
    const up = await streamP;
    const body = JSON.parse(up.request.bodyText);
    assert.deepEqual(body.stream_options, { include_usage: true }, 'the proxy asked for usage in the stream');
    // Every chunk names the tier it was served at, as OpenAI's do: an answer that
    // names none is billed at the dearest tier the request allowed (priority).
    const base = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini-2024-07-18', service_tier: 'default' };
    up.send({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: 'Hel' }, finish_reason: null }] });
    up.send({ ...base, choices: [{ index: 0, delta: { content: 'lo' }, finish_reason: 'stop' }] });
    const usage = { prompt_tokens: 1200, completion_tokens: 300, total_tokens: 1500, prompt_tokens_details: { cached_tokens: 200 } };
    up.send({ ...base, choices: [], usage });
    up.send('[DONE]');
    up.end();
    const stream = await call;
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content || '';
    assert.equal(text, 'Hello');
    const m = PRICING.openai.models['gpt-4o-mini'];
    const expected =
      micros(1000, m.input_per_mtok) + micros(200, m.cached_input_per_mtok) + micros(300, m.output_per_mtok);
    assert.equal(await spentMicros(d, key.id), expected);
  });

  it('openai: a stream cut before its usage report is charged the reservation', async () => {
    const key = await d.issueKey({ label: uniquePrefix('oa-cut'), vendor: 'openai', daily_usd_cap: 5, allowed_endpoints: ['POST /v1/chat/completions'] });
    const openai = new OpenAI({ apiKey: key.token, baseURL: `${d.proxyUrl}/openai/v1`, organization: null, project: null, maxRetries: 0 });
    const streamP = mocks.openai.nextStream();
    const callP = openai.chat.completions
      .create({ model: 'gpt-4o-mini', stream: true, max_tokens: 100, messages: [{ role: 'user', content: 'x' }] })
      .withResponse();
    const up = await streamP;
    up.send({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini', choices: [{ index: 0, delta: { content: 'par' } }] });
    const { data, response } = await callP;
    const reserved = Math.round(Number(response.headers.get('keybrake-cost-usd')) * 1e6);
    assert.ok(reserved > 0, 'the reservation is announced in Keybrake-Cost-USD');
    const it = data[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.value.choices[0].delta.content, 'par');
    up.res.destroy(); // the vendor connection dies mid-stream, after the client read a chunk
    await assert.rejects(
      (async () => {
        while (!(await it.next()).done);
      })(),
    );
    assert.equal(await spentMicros(d, key.id), reserved, 'charged the worst case, not zero');
  });

  it('anthropic: a streamed message is charged input, cache reads and output', async () => {
    const key = await d.issueKey({ label: uniquePrefix('an-stream'), vendor: 'anthropic', daily_usd_cap: 5, allowed_endpoints: ['POST /v1/messages'] });
    const anthropic = new Anthropic({ apiKey: key.token, baseURL: `${d.proxyUrl}/anthropic`, maxRetries: 0 });
    const streamP = mocks.anthropic.nextStream();
    const call = anthropic.messages.create({
      model: 'claude-haiku-4-5',
      max_tokens: 1024,
      stream: true,
      messages: [{ role: 'user', content: 'Hello' }],
    });
    const up = await streamP;
    const msg = { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-haiku-4-5-20251001', content: [], stop_reason: null, stop_sequence: null };
    up.send({ type: 'message_start', message: { ...msg, usage: { input_tokens: 500, cache_creation_input_tokens: 0, cache_read_input_tokens: 100, output_tokens: 1 } } }, { event: 'message_start' });
    up.send({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }, { event: 'content_block_start' });
    up.send({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi there' } }, { event: 'content_block_delta' });
    up.send({ type: 'content_block_stop', index: 0 }, { event: 'content_block_stop' });
    up.send({ type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 250 } }, { event: 'message_delta' });
    up.send({ type: 'message_stop' }, { event: 'message_stop' });
    up.end();
    const stream = await call;
    let text = '';
    for await (const ev of stream) if (ev.type === 'content_block_delta') text += ev.delta.text;
    assert.equal(text, 'Hi there');
    const m = PRICING.anthropic.models['claude-haiku-4-5'];
    const expected = micros(500, m.input_per_mtok) + micros(100, m.cache_read_per_mtok) + micros(250, m.output_per_mtok);
    assert.equal(await spentMicros(d, key.id), expected);
  });

  it('an unpriced model is refused before anything is sent', async () => {
    const key = await d.issueKey({ label: uniquePrefix('oa-unpriced'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'] });
    const r = await d.proxy({
      method: 'POST',
      path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'no-such-model', messages: [] }),
    });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.code, 'model_not_priced');
    assert.equal(mocks.count(), 0);
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});
