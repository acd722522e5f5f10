'use strict';
// hunt_money.test.js - metering and caps against realistic vendor answers
// (adversarial probes): streamed usage in odd places, compressed and cut
// answers, outcomes the vendor may have billed, request spellings, Stripe
// and Twilio forms, concurrency at the edge of a cap. Each test compares
// what the mock vendor received with the key's usage and the audit log.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const zlib = require('node:zlib');

const { startDaemon, uniquePrefix, assertError } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const FORM = 'application/x-www-form-urlencoded';

// ceil(tokens x $/Mtok) in µ$
function micros(tokens, perMtok) {
  const [i, f = ''] = perMtok.split('.');
  const scale = 10n ** BigInt(f.length);
  const price = BigInt(i) * scale + BigInt(f || '0');
  return Number((BigInt(tokens) * price + scale - 1n) / scale);
}

// one raw HTTP exchange; resolves with the whole answer text once the
// daemon closes the connection (Connection: close is sent)
function raw(port, text, { headOnly = false } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    s.on('data', (c) => {
      chunks.push(c);
      const t = Buffer.concat(chunks).toString('latin1');
      if (headOnly && t.includes('\r\n\r\n')) {
        s.destroy();
        resolve(t);
      }
    });
    s.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('error', reject);
    s.write(text);
  });
}

describe('hunt: money', () => {
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

  async function usage(key) {
    const r = await d.admin.get(`/v1/keys/${key.id}`);
    assert.equal(r.status, 200, r.text);
    return {
      spent: Math.round(r.json.usage.spent_usd * 1e6),
      reserved: Math.round(r.json.usage.reserved_usd * 1e6),
    };
  }

  async function settled(key) {
    // the usage once nothing is reserved any more
    let u;
    const deadline = Date.now() + 10_000;
    for (;;) {
      u = await usage(key);
      if (u.reserved === 0 || Date.now() > deadline) return u;
      await new Promise((r) => setImmediate(r));
    }
  }

  async function auditOf(key) {
    const r = await d.admin.get(`/v1/audit?key_id=${key.id}&limit=50`);
    assert.equal(r.status, 200, r.text);
    return r.json.records || r.json.items || r.json.data || r.json;
  }

  const key = (vendor, cap, eps = ['/v1/*']) =>
    d.issueKey({ label: uniquePrefix(`hunt-${vendor}`), vendor, daily_usd_cap: cap, allowed_endpoints: eps });

  // ---- OpenAI streams ------------------------------------------------------------------

  async function chatStream(k, body, feed) {
    const streamP = mocks.openai.nextStream();
    const resP = d.proxy({
      method: 'POST',
      path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const up = await streamP;
    await feed(up);
    return { r: await resP, up };
  }

  const CHUNK = { id: 'c', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini-2024-07-18', service_tier: 'default' };
  const mini = (inTok, outTok, cached = 0) => {
    const m = { input_per_mtok: '0.15', cached_input_per_mtok: '0.075', output_per_mtok: '0.60' };
    return micros(inTok - cached, m.input_per_mtok) + micros(cached, m.cached_input_per_mtok) + micros(outTok, m.output_per_mtok);
  };

  it('chat stream: CRLF line ends, comments, usage split byte by byte: exact usage', async () => {
    const k = await key('openai', 5);
    const usageObj = { prompt_tokens: 1000, completion_tokens: 3000, total_tokens: 4000, prompt_tokens_details: { cached_tokens: 400 } };
    const { r } = await chatStream(k, { model: 'gpt-4o-mini', stream: true, max_tokens: 4000, messages: [{ role: 'user', content: 'x' }] }, async (up) => {
      up.write(': keep-alive\r\n\r\n');
      up.write(`data: ${JSON.stringify({ ...CHUNK, choices: [{ index: 0, delta: { content: 'hi' } }], usage: null })}\r\n\r\n`);
      const last = `data: ${JSON.stringify({ ...CHUNK, choices: [], usage: usageObj })}\r\n\r\ndata: [DONE]\r\n\r\n`;
      for (const ch of last) up.write(ch);
      up.end();
    });
    assert.equal(r.status, 200);
    assert.equal((await settled(k)).spent, mini(1000, 3000, 400));
  });

  it('chat stream: usage never arrives ([DONE], no usage chunk): the reservation is charged', async () => {
    const k = await key('openai', 5);
    const { r } = await chatStream(k, { model: 'gpt-4o-mini', stream: true, max_tokens: 100, messages: [{ role: 'user', content: 'x' }] }, async (up) => {
      up.send({ ...CHUNK, choices: [{ index: 0, delta: { content: 'hi' }, finish_reason: 'stop' }], usage: null });
      up.send('[DONE]');
      up.end();
    });
    assert.equal(r.status, 200);
    const u = await settled(k);
    assert.ok(u.spent > mini(1000, 100) / 2, `charged ${u.spent}`);
  });

  // ---- Anthropic streams ---------------------------------------------------------------

  async function antStream(k, body, feed) {
    const streamP = mocks.anthropic.nextStream();
    const resP = d.proxy({
      method: 'POST',
      path: '/anthropic/v1/messages',
      headers: { 'x-api-key': k.token, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const up = await streamP;
    await feed(up);
    return { r: await resP, up };
  }

  const haiku = (inTok, outTok) => micros(inTok, '1.00') + micros(outTok, '5.00');
  const MSG = { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-haiku-4-5-20251001', content: [], stop_reason: null };

  it('anthropic stream ending in an error event after a message_delta: charged the reservation', async () => {
    const k = await key('anthropic', 5);
    const body = { model: 'claude-haiku-4-5', max_tokens: 1000, stream: true, messages: [{ role: 'user', content: 'x' }] };
    const { r } = await antStream(k, body, async (up) => {
      up.send({ type: 'message_start', message: { ...MSG, usage: { input_tokens: 10, output_tokens: 1 } } }, { event: 'message_start' });
      up.send({ type: 'message_delta', delta: { stop_reason: null }, usage: { output_tokens: 5 } }, { event: 'message_delta' });
      up.send({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }, { event: 'error' });
      up.end();
    });
    assert.equal(r.status, 200);
    const u = await settled(k);
    const reservation = micros(Buffer.byteLength(JSON.stringify(body)) + 1024, '1.00') + micros(1000, '5.00');
    assert.equal(u.spent, reservation, `charged ${u.spent}, usage would be ${haiku(10, 5)}`);
  });

  it('anthropic stream: message_delta figures are cumulative (largest kept, not first, not summed)', async () => {
    const k = await key('anthropic', 5);
    const body = { model: 'claude-haiku-4-5', max_tokens: 1000, stream: true, messages: [{ role: 'user', content: 'x' }] };
    const { r } = await antStream(k, body, async (up) => {
      up.send({ type: 'message_start', message: { ...MSG, usage: { input_tokens: 10, output_tokens: 1 } } }, { event: 'message_start' });
      up.send({ type: 'message_delta', delta: { stop_reason: 'pause_turn' }, usage: { input_tokens: 10, output_tokens: 50 } }, { event: 'message_delta' });
      up.send({ type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { input_tokens: 900, output_tokens: 400 } }, { event: 'message_delta' });
      up.send({ type: 'message_stop' }, { event: 'message_stop' });
      up.end();
    });
    assert.equal(r.status, 200);
    assert.equal((await settled(k)).spent, haiku(900, 400));
  });

  // ---- inline documents ------------------------------------------------------------------

  // A PDF of many near-empty pages: a few dozen bytes a page, yet each page
  // is billed as an image (about 1,600 tokens on Claude, more on
  // gpt-4o-mini) plus its text. The body's bytes do not bound its tokens.
  function thinPdf(pages) {
    const objs = ['<< /Type /Catalog /Pages 2 0 R >>', `<< /Type /Pages /Count ${pages} /Kids [${Array.from({ length: pages }, (_, i) => `${i + 3} 0 R`).join(' ')}] >>`];
    for (let i = 0; i < pages; i++) objs.push('<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>');
    let out = '%PDF-1.4\n';
    objs.forEach((o, i) => (out += `${i + 1} 0 obj ${o} endobj\n`));
    return Buffer.from(out + 'trailer << /Root 1 0 R >>\n%%EOF\n').toString('base64');
  }

  it('anthropic: an inline base64 PDF is reserved at the context window, not its bytes', async () => {
    const pdf = thinPdf(100); // ~8 KB of base64, ~160k tokens billed
    const body = {
      model: 'claude-haiku-4-5', max_tokens: 100,
      messages: [{ role: 'user', content: [
        { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: pdf } },
        { type: 'text', text: 'Summarise.' },
      ] }],
    };
    const cap = 0.05; // far above the body's bytes, below a 200k-token context
    const k = await key('anthropic', cap);
    mocks.anthropic.nextHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ...MSG, content: [{ type: 'text', text: 'ok' }], stop_reason: 'end_turn', usage: { input_tokens: 160_000, output_tokens: 10 } }));
    });
    const r = await d.proxy({
      method: 'POST', path: '/anthropic/v1/messages',
      headers: { 'x-api-key': k.token, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const u = await settled(k);
    assert.ok(u.spent <= cap * 1e6, `spent ${u.spent} µ$ on a ${cap * 1e6} µ$ cap (status ${r.status}, vendor saw ${mocks.anthropic.requests.length})`);
  });

  for (const [what, pathName, body] of [
    ['responses input_file', '/openai/v1/responses', (pdf) => ({ model: 'gpt-4o-mini', max_output_tokens: 100, input: [{ role: 'user', content: [{ type: 'input_file', filename: 'a.pdf', file_data: `data:application/pdf;base64,${pdf}` }, { type: 'input_text', text: 'Summarise.' }] }] })],
    ['chat file', '/openai/v1/chat/completions', (pdf) => ({ model: 'gpt-4o-mini', max_tokens: 100, messages: [{ role: 'user', content: [{ type: 'file', file: { filename: 'a.pdf', file_data: `data:application/pdf;base64,${pdf}` } }, { type: 'text', text: 'Summarise.' }] }] })],
  ]) {
    it(`openai ${what}: an inline PDF (file_data) is reserved at the context window, not its bytes`, async () => {
      const cap = 0.01; // gpt-4o-mini: 128k tokens of context is $0.032 at the priority input price
      const k = await key('openai', cap);
      const responses = pathName.endsWith('responses');
      mocks.openai.nextHandler((rec, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(responses
          ? { id: 'resp_1', object: 'response', status: 'completed', model: 'gpt-4o-mini', service_tier: 'default', output: [], usage: { input_tokens: 120_000, output_tokens: 10, total_tokens: 120_010 } }
          : { id: 'c', object: 'chat.completion', model: 'gpt-4o-mini', service_tier: 'default', choices: [], usage: { prompt_tokens: 120_000, completion_tokens: 10, total_tokens: 120_010 } }));
      });
      const r = await d.proxy({
        method: 'POST', path: pathName,
        headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body(thinPdf(60))),
      });
      const u = await settled(k);
      assert.ok(u.spent <= cap * 1e6, `spent ${u.spent} µ$ on a ${cap * 1e6} µ$ cap (status ${r.status}, vendor saw ${mocks.openai.requests.length})`);
    });
  }

  // ---- compressed answers --------------------------------------------------------------

  it('a gzip chat stream cut before its trailer: the reservation, though usage was decoded', async () => {
    const k = await key('openai', 5);
    const usageObj = { prompt_tokens: 10, completion_tokens: 10, total_tokens: 20 };
    const text = `data: ${JSON.stringify({ ...CHUNK, choices: [], usage: usageObj })}\n\ndata: [DONE]\n\n`;
    const gz = zlib.gzipSync(Buffer.from(text));
    const { r } = await chatStream(k, { model: 'gpt-4o-mini', stream: true, max_tokens: 100, messages: [{ role: 'user', content: 'x' }] }, async (up) => {
      up.res.setHeader && 0;
      up.write(gz.subarray(0, gz.length - 8));
      up.end();
    });
    assert.equal(r.status, 200);
    const u = await settled(k);
    assert.ok(u.spent >= mini(1000, 100), `charged ${u.spent}`);
  });

  // ---- request spellings ----------------------------------------------------------------

  it('a lower-case "post" never reaches the vendor unmetered', async () => {
    const k = await key('stripe', 10);
    const body = 'amount=500000&currency=usd';
    const text = await raw(d.proxyPort,
      `post /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${k.token}\r\nContent-Type: ${FORM}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    assert.equal(mocks.stripe.requests.length, 0, `forwarded: ${text.slice(0, 200)}`);
  });

  for (const m of ['PROPFIND', 'Post', 'PUT', 'PATCH']) {
    it(`method ${m} to a money route: metered or refused, never free`, async () => {
      const k = await key('stripe', 10);
      const body = 'amount=500000&currency=usd';
      const text = await raw(d.proxyPort,
        `${m} /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${k.token}\r\nContent-Type: ${FORM}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      assert.equal(mocks.stripe.requests.length, 0, `forwarded: ${text.slice(0, 300)}`);
    });
  }

  // ---- Stripe ---------------------------------------------------------------------------

  it('stripe amount with leading zeros is its value', async () => {
    const k = await key('stripe', 10);
    const r = await d.proxy({
      method: 'POST', path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': FORM },
      body: 'amount=0000001001&currency=usd',
    });
    assertError(r, 429, 'cap_exhausted');
    assert.equal(mocks.stripe.requests.length, 0);
  });

  it('stripe: exactly at the cap passes, one cent over is refused, concurrently', async () => {
    const k = await key('stripe', 10);
    const go = (amt) => d.proxy({
      method: 'POST', path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': FORM },
      body: `amount=${amt}&currency=usd`,
    });
    const rs = await Promise.all([go(500), go(500), go(500), go(500), go(500)]);
    const ok = rs.filter((r) => r.status === 200).length;
    assert.equal(ok, 2, rs.map((r) => r.status).join(','));
    assertError(await go(1), 429, 'cap_exhausted');
    assert.equal(mocks.stripe.requests.length, 2);
    assert.equal((await settled(k)).spent, 10_000_000);
  });

  it('stripe idempotent replay with an empty Idempotency-Key is charged again', async () => {
    const k = await key('stripe', 100);
    for (let i = 0; i < 2; i++) {
      const r = await d.proxy({
        method: 'POST', path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${k.token}`, 'content-type': FORM, 'idempotency-key': '' },
        body: 'amount=1000&currency=usd',
      });
      assert.ok(r.status === 200 || r.status === 400, r.text);
    }
    const u = await settled(k);
    assert.equal(u.spent, 10_000_000 * mocks.stripe.requests.length);
  });

  // ---- probes batch 2 ---------------------------------------------------------------------

  it('a websocket upgrade (GET /v1/realtime) never reaches the vendor as an upgrade', async () => {
    const k = await key('openai', 5);
    const text = await raw(d.proxyPort,
      `GET /openai/v1/realtime?model=gpt-4o-realtime-preview HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${k.token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`, { headOnly: true });
    const got = mocks.openai.requests.map((r) => r.headers);
    assert.ok(got.every((h) => !h.upgrade && !/upgrade/i.test(h.connection || '')), JSON.stringify(got) + text.slice(0, 200));
  });

  it('stripe: a multipart/form-data payment intent is metered or refused, never free', async () => {
    const k = await key('stripe', 10);
    const b = 'XyZ';
    const body = `--${b}\r\nContent-Disposition: form-data; name="amount"\r\n\r\n500000\r\n--${b}\r\nContent-Disposition: form-data; name="currency"\r\n\r\nusd\r\n--${b}--\r\n`;
    const r = await d.proxy({
      method: 'POST', path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': `multipart/form-data; boundary=${b}` },
      body,
    });
    assert.equal(mocks.stripe.requests.length, 0, `status ${r.status} ${r.text}`);
  });

  for (const ct of [null, 'text/plain', 'application/octet-stream', 'application/x-www-form-urlencoded; charset=utf-8']) {
    it(`stripe: a form body with Content-Type ${ct}: metered`, async () => {
      const k = await key('stripe', 10);
      const headers = { authorization: `Bearer ${k.token}` };
      if (ct) headers['content-type'] = ct;
      const r = await d.proxy({ method: 'POST', path: '/stripe/v1/payment_intents', headers, body: 'amount=500000&currency=usd' });
      assert.equal(mocks.stripe.requests.length, 0, `status ${r.status} ${r.text}`);
    });
  }

  it('stripe: a JSON body with a repeated amount is refused', async () => {
    const k = await key('stripe', 10);
    const r = await d.proxy({
      method: 'POST', path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' },
      body: '{"amount": 100, "currency": "usd", "amount": 500000}',
    });
    assert.equal(mocks.stripe.requests.length, 0, `status ${r.status} ${r.text}`);
  });

  it('a chat answer whose Content-Encoding lies (gzip, plain body): the reservation', async () => {
    const k = await key('openai', 5);
    mocks.openai.nextHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-4o-mini', service_tier: 'default', choices: [], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
    });
    const r = await d.proxy({
      method: 'POST', path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json', 'accept-encoding': 'gzip' },
      body: JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(r.status, 200);
    assert.ok((await settled(k)).spent > mini(1, 1) * 10);
  });

  it('twilio: a 5xx to a message is charged (audited unknown); a 4xx is released', async () => {
    const k = await key('twilio', 10, ['/2010-04-01/*']);
    const sid = d.secrets.twilioSid;
    const send = () => d.proxy({
      method: 'POST', path: `/twilio/2010-04-01/Accounts/${sid}/Messages.json`,
      headers: { authorization: 'Basic ' + Buffer.from(`${sid}:${k.token}`).toString('base64'), 'content-type': FORM },
      body: 'To=%2B15005550006&From=%2B15005550001&Body=hello',
    });
    mocks.twilio.nextHandler((rec, res) => { res.writeHead(503, { 'content-type': 'application/json' }); res.end('{"code":20500,"message":"x","status":503}'); });
    assert.equal((await send()).status, 503);
    const after5xx = (await settled(k)).spent;
    assert.ok(after5xx > 0, 'a 5xx message is charged');
    mocks.twilio.nextHandler((rec, res) => { res.writeHead(400, { 'content-type': 'application/json' }); res.end('{"code":21211,"message":"invalid To","status":400}'); });
    assert.equal((await send()).status, 400);
    assert.equal((await settled(k)).spent, after5xx, 'a 4xx is not');
  });

  it('responses stream ending in response.failed without usage: the reservation', async () => {
    const k = await key('openai', 5);
    const streamP = mocks.openai.nextStream();
    const resP = d.proxy({
      method: 'POST', path: '/openai/v1/responses',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, max_output_tokens: 100, input: 'x' }),
    });
    const up = await streamP;
    up.send({ type: 'response.created', response: { id: 'r', status: 'in_progress', usage: null } }, { event: 'response.created' });
    up.send({ type: 'response.failed', response: { id: 'r', status: 'failed', error: { code: 'server_error' }, usage: null } }, { event: 'response.failed' });
    up.end();
    assert.equal((await resP).status, 200);
    assert.ok((await settled(k)).spent >= micros(100, '1.00'));
  });

  // ---- outcomes: usage, audit and the vendor agree ------------------------------------------

  async function auditFor(k, n = 1) {
    let recs;
    await require('./lib/harness').waitFor(async () => {
      recs = (await d.admin.get(`/v1/audit?key_id=${k.id}&limit=50`)).json.data.filter((x) => x.kind !== 'admin');
      return recs.filter((x) => x.completed).length >= n;
    }, { what: 'audit completion' });
    return recs;
  }

  it('a client that leaves before the status: the reservation, audited unknown, usage and audit agree, sent once', async () => {
    const k = await key('stripe', 100);
    const hold = mocks.stripe.nextHold();
    const req = require('node:http').request({ host: '127.0.0.1', port: d.proxyPort, method: 'POST', path: '/stripe/v1/payment_intents', agent: false,
      headers: { authorization: `Bearer ${k.token}`, 'content-type': FORM, 'content-length': 24 } });
    req.on('error', () => {});
    req.end('amount=2500&currency=usd');
    const held = await hold;
    req.destroy();
    held.respond(); // the vendor answers after the client left
    const u = await settled(k);
    assert.equal(u.spent, 25_000_000, 'charged the reservation');
    const rec = (await auditFor(k))[0];
    assert.equal(rec.settled_usd, 25);
    assert.deepEqual(rec.detail, { outcome: 'unknown' });
    assert.equal(mocks.stripe.requests.length, 1);
  });

  it('a key revoked mid-stream before usage: the stream is cut, the reservation charged and audited', async () => {
    const k = await key('openai', 5);
    const streamP = mocks.openai.nextStream();
    const body = { model: 'gpt-4o-mini', stream: true, max_tokens: 100, messages: [{ role: 'user', content: 'x' }] };
    const cli = await require('./lib/harness').streamRequest({ port: d.proxyPort, method: 'POST', path: '/openai/v1/chat/completions',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const up = await streamP;
    up.send({ ...CHUNK, choices: [{ index: 0, delta: { content: 'hi' } }], usage: null });
    await cli.readUntil((t) => t.includes('hi'));
    assert.equal((await d.admin.del(`/v1/keys/${k.id}`)).status, 204);
    await cli.rest().catch(() => {});
    const u = await settled(k);
    const reservation = (await auditFor(k))[0];
    assert.ok(u.spent > 0 && u.reserved === 0, JSON.stringify(u));
    assert.equal(Math.round(reservation.settled_usd * 1e6), u.spent, JSON.stringify(reservation));
    up.end();
  });

  it('anthropic ?beta=true (the SDK\'s beta.messages) is metered like /v1/messages', async () => {
    const k = await key('anthropic', 5);
    mocks.anthropic.nextHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ...MSG, content: [{ type: 'text', text: 'ok' }], stop_reason: 'end_turn', usage: { input_tokens: 20, output_tokens: 30 } }));
    });
    const r = await d.proxy({
      method: 'POST', path: '/anthropic/v1/messages?beta=true',
      headers: { 'x-api-key': k.token, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.anthropic.requests[0].url, '/v1/messages?beta=true');
    assert.equal((await settled(k)).spent, haiku(20, 30));
  });

  it('responses stream without event: lines settles from the terminal data', async () => {
    const k = await key('openai', 5);
    const streamP = mocks.openai.nextStream();
    const resP = d.proxy({
      method: 'POST', path: '/openai/v1/responses',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, max_output_tokens: 100, input: 'x' }),
    });
    const up = await streamP;
    up.write('data: {"type":"response.output_text.delta","delta":"hi"}\r\n\r\n');
    up.write('data: {"type":"response.completed",\r\ndata: "response":{"id":"r","status":"completed","service_tier":"default","output":[],\r\ndata: "usage":{"input_tokens":30,"output_tokens":40,"total_tokens":70}}}\r\n\r\n');
    up.end();
    assert.equal((await resP).status, 200);
    assert.equal((await settled(k)).spent, mini(30, 40));
  });

  for (const model of ['GPT-4o-mini', 'gpt-4o-mini ', 'gpt-4o-mini-2024-07-18-x', 'gpt-4o-mini-20240718', 'gpt-4o-mini\u0000']) {
    it(`openai model ${JSON.stringify(model)}: refused, nothing forwarded`, async () => {
      const k = await key('openai', 5);
      const r = await d.proxy({
        method: 'POST', path: '/openai/v1/chat/completions',
        headers: { authorization: `Bearer ${k.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
      });
      assertError(r, 400, model.includes('\u0000') ? 'invalid_request' : 'model_not_priced');
      assert.equal(mocks.openai.requests.length, 0);
    });
  }

  it('stripe: confirming an intent this key never paid for cannot take the key past its cap', {
    todo: 'known limit (docs/metering.md, Limits, Stripe; a fix reads the object before forwarding): the unknown amount is reserved at stripe.unknown_amount_reserve ($100) and settled at the answer\'s amount, so a $500 intent made on the dashboard and confirmed through a $150 key leaves it at $500 spent',
  }, async () => {
    const k = await key('stripe', 150);
    mocks.stripe.nextHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'pi_dash', object: 'payment_intent', amount: 50000, amount_received: 50000, currency: 'usd', status: 'succeeded' }));
    });
    const r = await d.proxy({
      method: 'POST', path: '/stripe/v1/payment_intents/pi_dash/confirm',
      headers: { authorization: `Bearer ${k.token}`, 'content-type': FORM },
      body: 'payment_method=pm_card_visa',
    });
    const u = await settled(k);
    assert.ok(u.spent <= 150_000_000, `spent ${u.spent / 1e6} USD on a 150 USD cap (status ${r.status}, vendor saw ${mocks.stripe.requests.length})`);
  });

  it('the daemon stops cleanly (exit 0, no sanitizer report) after all of the above', async () => {
    await d.stop();
    assert.doesNotMatch(d.stderr, /AddressSanitizer|LeakSanitizer|runtime error/);
    d = null;
  });
});
