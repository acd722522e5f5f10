'use strict';
// mock/vendor.js - a mock vendor API (Stripe, OpenAI, Anthropic, Twilio) that
// records exactly what it received and answers like the real vendor would.
//
// One MockVendor per vendor, each on its own 127.0.0.1:0 port, so a test can
// say "Stripe received nothing" without filtering. Every request is recorded
// whole (method, url, headers, raw header list, body bytes) BEFORE it is
// answered, so a test may inspect it as soon as a response reaches the client.
//
// How a request is answered, first match wins:
//   1. a one-shot behaviour queued with nextStream()/nextHold()/nextHandler()
//   2. hang mode (setHang(true)): read the request, never answer
//   3. a per-test handler (setHandler(fn)); return false to fall through
//   4. the vendor's default answer (realistic JSON shapes below)
//
// Nothing here sleeps: streaming and held answers are driven by the test
// through controllers (send()/end()/respond()), and arrivals are promises.

const http = require('node:http');
const crypto = require('node:crypto');
const { EventEmitter } = require('node:events');

const VENDORS = ['stripe', 'openai', 'anthropic', 'twilio'];

function rid(prefix, n = 24) {
  return prefix + crypto.randomBytes(n).toString('base64url').replace(/[-_]/g, 'x').slice(0, n);
}

function nowSec() {
  return Math.floor(Date.now() / 1000);
}

// Parses Stripe-style form bodies into a nested object:
// "amount=1&metadata%5Bk%5D=v&items%5B0%5D%5Bprice%5D=p" -> {amount:"1", metadata:{k:"v"}, items:{0:{price:"p"}}}
function parseStripeForm(text) {
  const out = {};
  for (const [k, v] of new URLSearchParams(text)) {
    const parts = [];
    const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(k);
    if (!m) {
      out[k] = v;
      continue;
    }
    parts.push(m[1]);
    for (const b of m[2].matchAll(/\[([^[\]]*)\]/g)) parts.push(b[1]);
    let o = out;
    for (let i = 0; i < parts.length - 1; i++) {
      if (typeof o[parts[i]] !== 'object' || o[parts[i]] === null) o[parts[i]] = {};
      o = o[parts[i]];
    }
    o[parts[parts.length - 1]] = v;
  }
  return out;
}

function sendJson(res, status, obj, headers = {}) {
  const body = Buffer.from(JSON.stringify(obj));
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': body.length,
    ...headers,
  });
  res.end(body);
}

// ---- default answers per vendor ----------------------------------------------------------

function stripePaymentIntent(fields, id) {
  const amount = fields.amount !== undefined ? Number(fields.amount) : 1000;
  return {
    id: id || rid('pi_'),
    object: 'payment_intent',
    amount,
    amount_capturable: 0,
    amount_received: 0,
    automatic_payment_methods: null,
    capture_method: 'automatic',
    client_secret: null,
    confirmation_method: 'automatic',
    created: nowSec(),
    currency: fields.currency || 'usd',
    customer: fields.customer || null,
    description: fields.description || null,
    livemode: false,
    metadata: fields.metadata || {},
    payment_method: null,
    payment_method_types: fields.payment_method_types
      ? Object.values(fields.payment_method_types)
      : ['card'],
    status: 'requires_payment_method',
  };
}

function stripeDefault(rec, res) {
  const fields = rec.bodyText ? parseStripeForm(rec.bodyText) : {};
  const p = rec.path;
  if (p === '/v1/payment_intents' && rec.method === 'POST') {
    return sendJson(res, 200, stripePaymentIntent(fields), { 'request-id': rid('req_', 14) });
  }
  if (p === '/v1/payment_intents' && rec.method === 'GET') {
    return sendJson(res, 200, {
      object: 'list',
      data: [stripePaymentIntent({})],
      has_more: false,
      url: '/v1/payment_intents',
    });
  }
  let m = /^\/v1\/payment_intents\/(pi_[A-Za-z0-9]+)(\/[a-z_]+)?$/.exec(p);
  if (m) {
    const pi = stripePaymentIntent(fields, m[1]);
    if (m[2] === '/confirm') pi.status = 'succeeded';
    if (m[2] === '/cancel') pi.status = 'canceled';
    return sendJson(res, 200, pi);
  }
  if (p === '/v1/customers' && rec.method === 'POST') {
    return sendJson(res, 200, {
      id: rid('cus_', 14),
      object: 'customer',
      created: nowSec(),
      email: fields.email || null,
      livemode: false,
      metadata: fields.metadata || {},
    });
  }
  return sendJson(res, 404, {
    error: {
      type: 'invalid_request_error',
      message: `Unrecognized request URL (${rec.method}: ${p}).`,
    },
  });
}

function openaiDefault(rec, res) {
  if (rec.path === '/v1/chat/completions' && rec.method === 'POST') {
    let req = {};
    try {
      req = JSON.parse(rec.bodyText);
    } catch {
      /* answer anyway */
    }
    return sendJson(
      res,
      200,
      {
        id: rid('chatcmpl-'),
        object: 'chat.completion',
        created: nowSec(),
        model: req.model || 'gpt-4o-mini',
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: 'Hello from the mock.', refusal: null },
            logprobs: null,
            finish_reason: 'stop',
          },
        ],
        usage: { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 },
        system_fingerprint: 'fp_mock',
      },
      { 'x-request-id': rid('req_', 16) },
    );
  }
  if (rec.path === '/v1/models' && rec.method === 'GET') {
    return sendJson(res, 200, {
      object: 'list',
      data: [{ id: 'gpt-4o-mini', object: 'model', created: 1721172741, owned_by: 'system' }],
    });
  }
  return sendJson(res, 404, {
    error: { message: `Invalid URL (${rec.method} ${rec.path})`, type: 'invalid_request_error' },
  });
}

function anthropicDefault(rec, res) {
  if (rec.path === '/v1/messages' && rec.method === 'POST') {
    let req = {};
    try {
      req = JSON.parse(rec.bodyText);
    } catch {
      /* answer anyway */
    }
    return sendJson(
      res,
      200,
      {
        id: rid('msg_'),
        type: 'message',
        role: 'assistant',
        model: req.model || 'claude-haiku-4-5',
        content: [{ type: 'text', text: 'Hello from the mock.' }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: { input_tokens: 10, output_tokens: 6 },
      },
      { 'request-id': rid('req_', 16) },
    );
  }
  if (rec.path === '/v1/models' && rec.method === 'GET') {
    return sendJson(res, 200, {
      data: [
        {
          type: 'model',
          id: 'claude-haiku-4-5',
          display_name: 'Claude Haiku 4.5',
          created_at: '2025-09-29T00:00:00Z',
        },
      ],
      has_more: false,
      first_id: 'claude-haiku-4-5',
      last_id: 'claude-haiku-4-5',
    });
  }
  return sendJson(res, 404, {
    type: 'error',
    error: { type: 'not_found_error', message: 'Not found' },
  });
}

function twilioDefault(rec, res) {
  const m = /^\/2010-04-01\/Accounts\/(AC[0-9a-fA-F]+)\/Messages\.json$/.exec(rec.path);
  if (m && rec.method === 'POST') {
    const f = Object.fromEntries(new URLSearchParams(rec.bodyText));
    const sid = rid('SM', 32);
    const date = new Date().toUTCString();
    return sendJson(res, 201, {
      account_sid: m[1],
      api_version: '2010-04-01',
      body: f.Body || '',
      date_created: date,
      date_sent: null,
      date_updated: date,
      direction: 'outbound-api',
      error_code: null,
      error_message: null,
      from: f.From || null,
      messaging_service_sid: f.MessagingServiceSid || null,
      num_media: '0',
      num_segments: '1',
      price: null,
      price_unit: 'USD',
      sid,
      status: 'queued',
      subresource_uris: { media: `/2010-04-01/Accounts/${m[1]}/Messages/${sid}/Media.json` },
      to: f.To || null,
      uri: `/2010-04-01/Accounts/${m[1]}/Messages/${sid}.json`,
    });
  }
  if (m && rec.method === 'GET') {
    return sendJson(res, 200, {
      messages: [],
      end: 0,
      first_page_uri: `/2010-04-01/Accounts/${m[1]}/Messages.json?PageSize=50&Page=0`,
      next_page_uri: null,
      page: 0,
      page_size: 50,
      previous_page_uri: null,
      start: 0,
      uri: `/2010-04-01/Accounts/${m[1]}/Messages.json?PageSize=50&Page=0`,
    });
  }
  return sendJson(res, 404, {
    code: 20404,
    message: 'The requested resource was not found',
    more_info: 'https://www.twilio.com/docs/errors/20404',
    status: 404,
  });
}

const DEFAULTS = {
  stripe: stripeDefault,
  openai: openaiDefault,
  anthropic: anthropicDefault,
  twilio: twilioDefault,
};

// ---- the server --------------------------------------------------------------------------

class MockVendor extends EventEmitter {
  constructor(vendor) {
    super();
    if (!DEFAULTS[vendor]) throw new Error(`unknown mock vendor ${vendor}`);
    this.vendor = vendor;
    this.requests = []; // every request received, in arrival order
    this.handler = null; // per-test override: (rec, res) => any; false = use the default
    this.hang = false;
    this.queue = []; // one-shot behaviours, consumed in order by the next requests
    this.sockets = new Set();
    this.server = http.createServer((req, res) => this.onRequest(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.server.keepAliveTimeout = 60_000;
    this.server.headersTimeout = 0; // do not cut a slow proxy: the proxy is under test, not us
    this.server.requestTimeout = 0;
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = this.server.address().port;
    this.url = `http://127.0.0.1:${this.port}`; // base URL: no trailing slash
    return this;
  }

  onRequest(req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const q = req.url.indexOf('?');
      const rec = {
        vendor: this.vendor,
        method: req.method,
        url: req.url, // raw request target as received
        path: q < 0 ? req.url : req.url.slice(0, q),
        query: q < 0 ? '' : req.url.slice(q + 1),
        headers: req.headers, // lower-cased, duplicates joined by node
        rawHeaders: req.rawHeaders, // [name, value, name, value, ...] as received
        httpVersion: req.httpVersion,
        body,
        bodyText: body.toString('utf8'),
      };
      this.requests.push(rec);
      this.emit('request', rec);
      this.dispatch(rec, req, res);
    });
  }

  dispatch(rec, req, res) {
    const once = this.queue.shift();
    if (once) return once(rec, res, req);
    if (this.hang) return; // never answer; close() destroys the socket
    if (this.handler) {
      const r = this.handler(rec, res, req);
      if (r !== false) return;
    }
    return DEFAULTS[this.vendor](rec, res);
  }

  // A per-test handler `(rec, res) => {...}`; return false to fall back to the default answer.
  setHandler(fn) {
    this.handler = fn;
  }

  setHang(on = true) {
    this.hang = on;
  }

  // Resolves with the next recorded request (or the n-th from now).
  nextRequest() {
    return new Promise((resolve) => this.once('request', resolve));
  }

  // Answer the next request once with `fn(rec, res)`.
  nextHandler(fn) {
    this.queue.push(fn);
  }

  // The next request gets `status` + `headers` at once, then a body the test
  // controls. Returns a promise of a controller, resolved when that request
  // has arrived and the headers were sent:
  //   ctl.request        the recorded request
  //   ctl.send(data, {event, id})   one SSE event (data: string or object -> JSON)
  //   ctl.write(raw)     raw bytes
  //   ctl.end(raw?)      finish the response
  nextStream({ status = 200, headers = {} } = {}) {
    return new Promise((resolve) => {
      this.queue.push((rec, res) => {
        res.writeHead(status, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache',
          ...headers,
        });
        res.flushHeaders();
        resolve({
          request: rec,
          res,
          send(data, { event, id } = {}) {
            let s = '';
            if (event) s += `event: ${event}\n`;
            if (id) s += `id: ${id}\n`;
            const text = typeof data === 'string' ? data : JSON.stringify(data);
            for (const line of text.split('\n')) s += `data: ${line}\n`;
            s += '\n';
            res.write(s);
          },
          write(raw) {
            res.write(raw);
          },
          end(raw) {
            res.end(raw);
          },
        });
      });
    });
  }

  // The next request is held unanswered until the test calls
  // ctl.respond() (default answer) or ctl.respond(fn) with fn(rec, res).
  // Resolves with the controller when the request has arrived.
  nextHold() {
    return new Promise((resolve) => {
      this.queue.push((rec, res, req) => {
        resolve({
          request: rec,
          res,
          respond: (fn) => (fn ? fn(rec, res, req) : DEFAULTS[this.vendor](rec, res)),
        });
      });
    });
  }

  // Clears recordings and overrides (not the listening socket).
  reset() {
    this.requests = [];
    this.handler = null;
    this.hang = false;
    this.queue = [];
  }

  async close() {
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }
}

async function startMockVendor(vendor) {
  return new MockVendor(vendor).start();
}

// Starts one mock per vendor: { stripe, openai, anthropic, twilio, all(), reset(), close() }.
async function startMockVendors() {
  const mocks = {};
  for (const v of VENDORS) mocks[v] = await startMockVendor(v);
  return {
    ...mocks,
    all: () => VENDORS.flatMap((v) => mocks[v].requests),
    count: () => VENDORS.reduce((n, v) => n + mocks[v].requests.length, 0),
    reset: () => VENDORS.forEach((v) => mocks[v].reset()),
    close: () => Promise.all(VENDORS.map((v) => mocks[v].close())),
  };
}

module.exports = { MockVendor, startMockVendor, startMockVendors, parseStripeForm, VENDORS };
