'use strict';
// llm_endpoints.test.js - the cost class of every OpenAI and Anthropic
// endpoint (issue 13), through the real binary: a write no rule prices is
// refused with 400 endpoint_not_metered before anything reaches the
// vendor; a free endpoint is forwarded and costs 0 (Keybrake-Cost-USD and
// the key's usage); a metered call (an image generation, a priority-tier
// chat, an Anthropic web search, a message batch) settles at the price
// computed here from pricing.json; an operator's fixed cost
// ([vendor.openai] cost = POST /v1/batches 0.50) lets a refused endpoint
// through at that cost.
//
// The harness configures the daemon by environment only and fixed costs
// come from a config file, so this file wraps child_process.spawn (before
// loading the harness) to add `--config <file>` when a test asks for it.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const childProcess = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

let configFile = null; // set around startDaemon() to serve with --config
const realSpawn = childProcess.spawn;
childProcess.spawn = (cmd, args, opts) =>
  realSpawn(cmd, configFile && args[0] === 'serve' ? [...args, '--config', configFile] : args, opts);

const { startDaemon, uniquePrefix, assertError, REPO } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const PRICING = JSON.parse(fs.readFileSync(path.join(REPO, 'src/meter/pricing.json'), 'utf8'));

// µ$ for `tokens` at a "$ per million tokens" decimal string, rounded up.
function micros(tokens, perMtok) {
  const [i, f = ''] = perMtok.split('.');
  const scale = 10n ** BigInt(f.length);
  const n = BigInt(tokens) * (BigInt(i) * scale + BigInt(f || '0'));
  return Number((n + scale - 1n) / scale);
}

async function usage(d, id) {
  const r = await d.admin.get(`/v1/keys/${id}`);
  assert.equal(r.status, 200, r.text);
  return { spent: Math.round(r.json.usage.spent_usd * 1e6), reserved: r.json.usage.reserved_usd };
}

function post(d, key, vendor, p, body) {
  return d.proxy({
    method: 'POST',
    path: `/${vendor}${p}`,
    headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

describe('LLM endpoint cost classes', () => {
  let mocks;
  let d;
  let dir;

  before(async () => {
    mocks = await startMockVendors();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kb-llm-endpoints-'));
    configFile = path.join(dir, 'keybrake.ini');
    fs.writeFileSync(
      configFile,
      '[vendor.openai]\ncost = POST /v1/batches 0.50\n',
    );
    try {
      d = await startDaemon({ mocks });
    } finally {
      configFile = null;
    }
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  beforeEach(() => mocks.reset());

  const refusedOpenai = [
    '/v1/fine_tuning/jobs',
    '/v1/threads/runs',
    '/v1/threads/thread_abc/runs',
    '/v1/realtime/client_secrets',
    '/v1/realtime/sessions',
    '/v1/realtime/transcription_sessions',
    '/v1/audio/transcriptions',
    '/v1/images/edits',
    '/v1/containers',
    '/v1/vector_stores',
  ];
  for (const p of refusedOpenai) {
    it(`openai POST ${p} is refused before forwarding`, async () => {
      const key = await d.issueKey({ label: uniquePrefix('ref'), vendor: 'openai', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/*'] });
      const r = await post(d, key, 'openai', p, { model: 'gpt-5.5', input_file_id: 'file-1' });
      assertError(r, 400, 'endpoint_not_metered');
      assert.equal(mocks.openai.requests.length, 0, 'the vendor received nothing');
      assert.deepEqual(await usage(d, key.id), { spent: 0, reserved: 0 });
    });
  }

  it('anthropic POST /v1/complete (legacy) is refused before forwarding', async () => {
    const key = await d.issueKey({ label: uniquePrefix('ref'), vendor: 'anthropic', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/*'] });
    const r = await post(d, key, 'anthropic', '/v1/complete', { model: 'claude-2.1', prompt: '\n\nHuman: hi\n\nAssistant:', max_tokens_to_sample: 10 });
    assertError(r, 400, 'endpoint_not_metered');
    assert.equal(mocks.anthropic.requests.length, 0);
  });

  const freeCases = [
    ['openai', '/v1/moderations', { model: 'omni-moderation-latest', input: 'hello' }],
    ['openai', '/v1/responses/input_tokens', { model: 'gpt-5.5', input: 'hello' }],
    ['openai', '/v1/batches/batch_abc/cancel', {}],
    ['openai', '/v1/conversations', { items: [] }],
    ['anthropic', '/v1/messages/count_tokens', { model: 'claude-opus-5-5', messages: [{ role: 'user', content: 'hi' }] }],
    ['anthropic', '/v1/messages/batches/msgbatch_01/cancel', {}],
  ];
  for (const [vendor, p, body] of freeCases) {
    it(`${vendor} POST ${p} is forwarded and costs 0`, async () => {
      mocks[vendor].setHandler((rec, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'x_1', object: 'ok', input_tokens: 12 }));
      });
      const key = await d.issueKey({ label: uniquePrefix('free'), vendor, daily_usd_cap: 1, allowed_endpoints: ['POST /v1/*'] });
      const r = await post(d, key, vendor, p, body);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['keybrake-cost-usd'], '0.000000');
      assert.equal(mocks[vendor].requests.length, 1, 'forwarded once');
      assert.equal(mocks[vendor].requests[0].path, p);
      assert.deepEqual(await usage(d, key.id), { spent: 0, reserved: 0 });
    });
  }

  it('an operator fixed cost lets a refused endpoint (batches) through at its price', async () => {
    mocks.openai.setHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'batch_1', object: 'batch', status: 'validating' }));
    });
    const key = await d.issueKey({ label: uniquePrefix('fixed'), vendor: 'openai', daily_usd_cap: 1, allowed_endpoints: ['POST /v1/*'] });
    const r = await post(d, key, 'openai', '/v1/batches', { input_file_id: 'file-abc', endpoint: '/v1/chat/completions', completion_window: '24h' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['keybrake-cost-usd'], '0.500000');
    assert.equal(mocks.openai.requests.length, 1);
    assert.deepEqual(await usage(d, key.id), { spent: 500000, reserved: 0 });
  });

  it('a dall-e-3 image generation settles at its per-image price', async () => {
    mocks.openai.setHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ created: 1, data: [{ url: 'https://example.com/i.png', revised_prompt: 'a cat' }] }));
    });
    const key = await d.issueKey({ label: uniquePrefix('img'), vendor: 'openai', daily_usd_cap: 1, allowed_endpoints: ['POST /v1/images/generations'] });
    const r = await post(d, key, 'openai', '/v1/images/generations', { model: 'dall-e-3', prompt: 'a cat', n: 1, quality: 'hd', size: '1792x1024' });
    assert.equal(r.status, 200, r.text);
    const want = Math.round(Number(PRICING.openai.images['dall-e-3'].per_image['hd/1792x1024']) * 1e6);
    assert.equal(want, 120000);
    assert.equal(r.headers['keybrake-cost-usd'], '0.120000');
    assert.equal(mocks.openai.requests.length, 1);
    assert.deepEqual(await usage(d, key.id), { spent: want, reserved: 0 });
  });

  it('a gpt-image-1 generation settles from the usage in the answer', async () => {
    mocks.openai.setHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ created: 1, data: [{ b64_json: 'iVBORw0KGgo=' }], usage: { total_tokens: 4172, input_tokens: 12, output_tokens: 4160, input_tokens_details: { text_tokens: 12, image_tokens: 0 } } }));
    });
    const key = await d.issueKey({ label: uniquePrefix('gimg'), vendor: 'openai', daily_usd_cap: 1, allowed_endpoints: ['POST /v1/images/generations'] });
    const r = await post(d, key, 'openai', '/v1/images/generations', { model: 'gpt-image-1', prompt: 'a lighthouse', quality: 'high', size: '1024x1024' });
    assert.equal(r.status, 200, r.text);
    const im = PRICING.openai.images['gpt-image-1'];
    const want = micros(12, im.text_input_per_mtok) + micros(4160, im.output_per_mtok);
    assert.equal(want, 166460);
    assert.deepEqual(await usage(d, key.id), { spent: want, reserved: 0 });
  });

  it('gpt-5.5 at the priority tier the answer reports settles to the micro-dollar', async () => {
    const usageBlock = { prompt_tokens: 1000, completion_tokens: 500, total_tokens: 1500, prompt_tokens_details: { cached_tokens: 200 } };
    mocks.openai.setHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion', model: 'gpt-5.5-2026-04-23', service_tier: 'priority', choices: [{ index: 0, message: { role: 'assistant', content: '2, 3, 5' }, finish_reason: 'stop' }], usage: usageBlock }));
    });
    const key = await d.issueKey({ label: uniquePrefix('tier'), vendor: 'openai', daily_usd_cap: 5, allowed_endpoints: ['POST /v1/chat/completions'] });
    const r = await post(d, key, 'openai', '/v1/chat/completions', { model: 'gpt-5.5', max_completion_tokens: 1000, messages: [{ role: 'user', content: 'Name three primes.' }] });
    assert.equal(r.status, 200, r.text);
    const pr = PRICING.openai.models['gpt-5.5'].priority;
    const want = micros(800, pr.input_per_mtok) + micros(200, pr.cached_input_per_mtok) + micros(500, pr.output_per_mtok);
    assert.equal(want, 47750);
    assert.deepEqual(await usage(d, key.id), { spent: want, reserved: 0 });
  });

  it('an Anthropic web search is charged its fee; without max_uses it is refused', async () => {
    const key = await d.issueKey({ label: uniquePrefix('ws'), vendor: 'anthropic', daily_usd_cap: 50, allowed_endpoints: ['POST /v1/messages'] });
    const tool = { type: 'web_search_20250305', name: 'web_search' };
    const refused = await post(d, key, 'anthropic', '/v1/messages', { model: 'claude-sonnet-5-5', max_tokens: 100, tools: [tool], messages: [{ role: 'user', content: 'news?' }] });
    assertError(refused, 400, 'invalid_request');
    assert.equal(mocks.anthropic.requests.length, 0);

    mocks.anthropic.setHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'msg_1', type: 'message', role: 'assistant', content: [{ type: 'text', text: 'News.' }], stop_reason: 'end_turn', usage: { input_tokens: 5000, output_tokens: 400, server_tool_use: { web_search_requests: 2 } } }));
    });
    const r = await post(d, key, 'anthropic', '/v1/messages', { model: 'claude-sonnet-5-5', max_tokens: 100, tools: [{ ...tool, max_uses: 2 }], messages: [{ role: 'user', content: 'news?' }] });
    assert.equal(r.status, 200, r.text);
    const m = PRICING.anthropic.models['claude-sonnet-5-5'];
    const fee = Math.round(Number(PRICING.anthropic.web_search_per_call) * 1e6);
    const want = micros(5000, m.input_per_mtok) + micros(400, m.output_per_mtok) + 2 * fee;
    assert.equal(want, 34000);
    assert.deepEqual(await usage(d, key.id), { spent: want, reserved: 0 });
  });

  it('an Anthropic message batch is charged its reservation at the batch price', async () => {
    mocks.anthropic.setHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'msgbatch_01', type: 'message_batch', processing_status: 'in_progress' }));
    });
    const key = await d.issueKey({ label: uniquePrefix('batch'), vendor: 'anthropic', daily_usd_cap: 5, allowed_endpoints: ['POST /v1/messages/batches'] });
    const params = { model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'Hello, world' }] };
    const r = await post(d, key, 'anthropic', '/v1/messages/batches', { requests: [{ custom_id: 'a', params }] });
    assert.equal(r.status, 200, r.text);
    // 50% of the prices, from the entry's compact text plus 1024 tokens of slack.
    const m = PRICING.anthropic.models['claude-haiku-4-5'];
    const bytes = Buffer.byteLength(JSON.stringify(params));
    const want = Math.ceil(((bytes + 1024) * Number(m.input_per_mtok) * 1e6) / 2e6) + micros(100, '2.5');
    assert.equal(r.headers['keybrake-cost-usd'], (want / 1e6).toFixed(6));
    assert.deepEqual(await usage(d, key.id), { spent: want, reserved: 0 });
    assert.equal(mocks.anthropic.requests.length, 1);
  });

  it('stops cleanly', async () => {
    await d.stop();
    d = null;
  });
});
