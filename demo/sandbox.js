#!/usr/bin/env node
'use strict';
// demo/sandbox.js - a pretend Stripe, OpenAI, Anthropic and Twilio for
// `make demo`, so Keybrake can be tried without a vendor account.
//
// NOT A REAL VENDOR. Nothing is charged, sent or generated: every answer is
// made up here, and says so three ways: the header
// `X-Sandbox: not-a-real-vendor` (not Keybrake-*: the proxy drops those from
// a vendor's answer, by design), a "keybrake_sandbox" member in each
// JSON body, and ids that start with the vendor's prefix plus "sandbox_"
// (pi_sandbox_..., chatcmpl-sandbox_...). The answers have the vendors'
// shapes, so their SDKs and Keybrake's meters read them as the real thing.
//
// One port, one path prefix per vendor: Keybrake's demo config
// (demo/keybrake-demo.ini) points each vendor's base_url here:
//   http://HOST:PORT/stripe  /openai  /anthropic  /twilio
// A request must carry the vendor credential the demo config gives
// Keybrake (the sandbox secrets below): the agent's vault token never gets
// here, which is the point. Anything else is the vendor's 401.
//
//   node demo/sandbox.js [--listen 127.0.0.1:8429]
// prints `sandbox: ready http://127.0.0.1:8429` once listening; stops on
// SIGINT or SIGTERM. Only node's standard library.

const http = require('node:http');
const crypto = require('node:crypto');

const MARK = 'not-a-real-vendor';
const NOTE = "Keybrake's demo sandbox: not a real vendor, nothing was charged or sent";

// The credentials demo/keybrake-demo.ini gives Keybrake for each vendor.
const SECRETS = {
  stripe: 'sk_test_sandbox_not_a_real_key',
  openai: 'sk-sandbox-not-a-real-key',
  anthropic: 'sk-ant-sandbox-not-a-real-key',
  twilio: { sid: 'AC00000000000000000000000000000000', token: 'sandbox_not_a_real_token' },
};

const MAX_BODY = 1 << 20;

function rid(prefix, n = 20) {
  return prefix + 'sandbox_' + crypto.randomBytes(n).toString('base64url').replace(/[-_]/g, 'x').slice(0, n);
}

function nowSec() {
  return Math.floor(Date.now() / 1000);
}

function send(res, status, obj, headers = {}) {
  const body = Buffer.from(JSON.stringify({ ...obj, keybrake_sandbox: NOTE }));
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': body.length,
    'x-sandbox': MARK,
    ...headers,
  });
  res.end(body);
}

// Stripe's form encoding, nested: "metadata[k]=v" -> {metadata: {k: "v"}}.
function parseForm(text) {
  const out = {};
  for (const [k, v] of new URLSearchParams(text)) {
    const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(k);
    if (!m) continue;
    const parts = [m[1], ...[...m[2].matchAll(/\[([^[\]]*)\]/g)].map((b) => b[1])];
    let o = out;
    for (let i = 0; i < parts.length - 1; i++) {
      if (typeof o[parts[i]] !== 'object' || o[parts[i]] === null) o[parts[i]] = {};
      o = o[parts[i]];
    }
    o[parts[parts.length - 1]] = v;
  }
  return out;
}

function parseJson(text) {
  try {
    const j = JSON.parse(text);
    return j && typeof j === 'object' ? j : {};
  } catch {
    return {};
  }
}

function bearer(req) {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization || '');
  return m ? m[1] : null;
}

// ---- Stripe ---------------------------------------------------------------------------------

function paymentIntent(f, id) {
  return {
    id: id || rid('pi_'),
    object: 'payment_intent',
    amount: f.amount !== undefined ? Number(f.amount) : 1000,
    amount_capturable: 0,
    amount_received: 0,
    capture_method: 'automatic',
    client_secret: null,
    confirmation_method: 'automatic',
    created: nowSec(),
    currency: f.currency || 'usd',
    customer: f.customer || null,
    description: f.description || null,
    livemode: false,
    metadata: f.metadata || {},
    payment_method: null,
    payment_method_types: ['card'],
    status: 'requires_payment_method',
  };
}

function stripe(req, res, p, text) {
  if (bearer(req) !== SECRETS.stripe) {
    return send(res, 401, {
      error: { type: 'invalid_request_error', message: 'Invalid API Key provided (sandbox).' },
    });
  }
  const f = req.headers['content-type']?.startsWith('application/json') ? parseJson(text) : parseForm(text);
  const rq = { 'request-id': rid('req_', 14) };
  if (p === '/v1/payment_intents' && req.method === 'POST') return send(res, 200, paymentIntent(f), rq);
  if (p === '/v1/payment_intents' && req.method === 'GET') {
    return send(res, 200, { object: 'list', data: [], has_more: false, url: '/v1/payment_intents' }, rq);
  }
  const m = /^\/v1\/payment_intents\/(pi_[A-Za-z0-9_]+)(\/confirm|\/cancel)?$/.exec(p);
  if (m) {
    const pi = paymentIntent(f, m[1]);
    if (m[2] === '/confirm') pi.status = 'succeeded';
    if (m[2] === '/cancel') pi.status = 'canceled';
    return send(res, 200, pi, rq);
  }
  if (p === '/v1/customers' && req.method === 'POST') {
    return send(res, 200, { id: rid('cus_'), object: 'customer', created: nowSec(), email: f.email || null, livemode: false, metadata: f.metadata || {} }, rq);
  }
  return send(res, 404, {
    error: { type: 'invalid_request_error', message: `Unrecognized request URL (${req.method}: ${p}). The sandbox knows payment_intents and customers.` },
  });
}

// ---- OpenAI ---------------------------------------------------------------------------------

function openai(req, res, p, text) {
  if (bearer(req) !== SECRETS.openai) {
    return send(res, 401, { error: { message: 'Incorrect API key provided (sandbox).', type: 'invalid_request_error', code: 'invalid_api_key' } });
  }
  if (p === '/v1/chat/completions' && req.method === 'POST') {
    const body = parseJson(text);
    const model = typeof body.model === 'string' ? body.model : 'gpt-4o-mini';
    const usage = { prompt_tokens: 12, completion_tokens: 9, total_tokens: 21 };
    const id = rid('chatcmpl-');
    const content = 'Hello from the Keybrake sandbox. This is not a real model.';
    if (body.stream === true) {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-sandbox': MARK });
      const chunk = (delta, finish, extra = {}) =>
        `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: nowSec(), model, choices: finish === undefined ? [] : [{ index: 0, delta, finish_reason: finish }], ...extra })}\n\n`;
      res.write(chunk({ role: 'assistant', content }, null));
      res.write(chunk({}, 'stop'));
      res.write(chunk(undefined, undefined, { usage }));
      res.end('data: [DONE]\n\n');
      return undefined;
    }
    return send(res, 200, {
      id,
      object: 'chat.completion',
      created: nowSec(),
      model,
      choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: 'stop' }],
      usage,
      system_fingerprint: 'fp_sandbox',
    }, { 'x-request-id': rid('req_') });
  }
  if (p === '/v1/models' && req.method === 'GET') {
    return send(res, 200, { object: 'list', data: [{ id: 'gpt-4o-mini', object: 'model', created: 1721172741, owned_by: 'sandbox' }] });
  }
  return send(res, 404, { error: { message: `Invalid URL (${req.method} ${p}); the sandbox knows chat/completions and models`, type: 'invalid_request_error' } });
}

// ---- Anthropic ------------------------------------------------------------------------------

function anthropic(req, res, p, text) {
  if (req.headers['x-api-key'] !== SECRETS.anthropic) {
    return send(res, 401, { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key (sandbox)' } });
  }
  if (p === '/v1/messages' && req.method === 'POST') {
    const body = parseJson(text);
    return send(res, 200, {
      id: rid('msg_'),
      type: 'message',
      role: 'assistant',
      model: typeof body.model === 'string' ? body.model : 'claude-haiku-4-5',
      content: [{ type: 'text', text: 'Hello from the Keybrake sandbox. This is not a real model.' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 10, output_tokens: 12 },
    }, { 'request-id': rid('req_') });
  }
  return send(res, 404, { type: 'error', error: { type: 'not_found_error', message: 'Not found (the sandbox knows /v1/messages)' } });
}

// ---- Twilio ---------------------------------------------------------------------------------

function twilio(req, res, p, text) {
  const want = 'Basic ' + Buffer.from(`${SECRETS.twilio.sid}:${SECRETS.twilio.token}`).toString('base64');
  if (req.headers.authorization !== want) {
    return send(res, 401, { code: 20003, message: 'Authenticate (sandbox)', status: 401 });
  }
  const m = /^\/2010-04-01\/Accounts\/(AC[0-9A-Za-z]+)\/Messages\.json$/.exec(p);
  if (m && req.method === 'POST') {
    const f = Object.fromEntries(new URLSearchParams(text));
    const sid = rid('SM', 24);
    const date = new Date().toUTCString();
    return send(res, 201, {
      account_sid: m[1],
      api_version: '2010-04-01',
      body: f.Body || '',
      date_created: date,
      date_updated: date,
      date_sent: null,
      direction: 'outbound-api',
      from: f.From || null,
      to: f.To || null,
      num_segments: '1',
      price: null,
      price_unit: 'USD',
      sid,
      status: 'queued',
      uri: `/2010-04-01/Accounts/${m[1]}/Messages/${sid}.json`,
    });
  }
  return send(res, 404, { code: 20404, message: 'The requested resource was not found (sandbox)', status: 404 });
}

const VENDORS = { stripe, openai, anthropic, twilio };

function onRequest(req, res) {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) {
      send(res, 413, { error: { message: 'body too large for the sandbox' } });
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    if (res.headersSent) return;
    const url = req.url || '/';
    const q = url.indexOf('?');
    const full = q < 0 ? url : url.slice(0, q);
    const m = /^\/(stripe|openai|anthropic|twilio)(\/.*)$/.exec(full);
    if (!m) {
      return send(res, 404, { error: { message: 'the sandbox serves /stripe, /openai, /anthropic and /twilio' } });
    }
    try {
      VENDORS[m[1]](req, res, m[2], Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      if (!res.headersSent) send(res, 500, { error: { message: `sandbox error: ${e.message}` } });
    }
    return undefined;
  });
}

function main() {
  let listen = process.env.SANDBOX_LISTEN || '127.0.0.1:8429';
  const i = process.argv.indexOf('--listen');
  if (i > 0 && process.argv[i + 1]) listen = process.argv[i + 1];
  const m = /^(.+):(\d+)$/.exec(listen);
  if (!m) {
    console.error(`sandbox: --listen must be host:port, not ${listen}`);
    process.exit(2);
  }
  const server = http.createServer(onRequest);
  server.on('error', (e) => {
    console.error(`sandbox: cannot listen on ${listen}: ${e.message}`);
    process.exit(1);
  });
  server.listen(Number(m[2]), m[1], () => {
    const a = server.address();
    console.log(`sandbox: ready http://${a.address}:${a.port}`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) main();

module.exports = { SECRETS, MARK };
