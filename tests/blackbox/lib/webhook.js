'use strict';
// webhook.js - a local receiver for Keybrake's budget threshold alerts
// (docs/budgets.md, "Usage and alerts"): a node http server on 127.0.0.1
// that records every POST it gets (headers, raw body, parsed JSON) and
// answers with what `respond(rec, all)` returns (a status; default 200),
// and the receiver-side check of the Keybrake-Signature header.

const http = require('node:http');
const crypto = require('node:crypto');

// Keybrake-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
function verifySignature(header, rawBody, secret, { toleranceSec = 300 } = {}) {
  const parts = Object.fromEntries(
    String(header || '')
      .split(',')
      .map((kv) => kv.split('=', 2)),
  );
  if (!/^\d+$/.test(parts.t || '') || !/^[0-9a-f]{64}$/.test(parts.v1 || '')) return false;
  const want = crypto.createHmac('sha256', secret).update(`${parts.t}.${rawBody}`).digest();
  const got = Buffer.from(parts.v1, 'hex');
  if (!crypto.timingSafeEqual(want, got)) return false;
  return Math.abs(Date.now() / 1000 - Number(parts.t)) <= toleranceSec;
}

async function startWebhookReceiver({ respond } = {}) {
  const received = [];
  const r = { received, respond: respond || (() => 200) };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let json;
      try {
        json = JSON.parse(raw);
      } catch {
        json = undefined;
      }
      const rec = { method: req.method, url: req.url, headers: req.headers, raw, json };
      received.push(rec);
      const status = r.respond(rec, received) || 200;
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(status < 300 ? 'ok' : 'no');
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  r.port = server.address().port;
  r.url = `http://127.0.0.1:${r.port}/hooks/keybrake`;
  r.forBudget = (name) => received.filter((x) => x.json && x.json.budget === name);
  r.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    });
  return r;
}

module.exports = { startWebhookReceiver, verifySignature };
