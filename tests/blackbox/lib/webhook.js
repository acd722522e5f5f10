'use strict';
// webhook.js - a local receiver for Keybrake's budget threshold alerts
// (docs/budgets.md, "Usage and alerts"): a node http server on 127.0.0.1
// that records every POST it gets (headers, raw body, parsed JSON) and
// answers with what `respond(rec, all)` returns (a status; default 200),
// and the receiver-side check of the Keybrake-Signature header.

const http = require('node:http');
const https = require('node:https');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

// A test CA (made by the openssl CLI in dir) and two leaves it signed: one
// for localhost, one for other.example. { caFile, localhost, other }.
function makeCerts(dir) {
  const ossl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=Keybrake webhook test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  for (const name of ['localhost', 'other.example']) {
    fs.writeFileSync(
      path.join(dir, `${name}.ext`),
      `subjectAltName=DNS:${name}\nbasicConstraints=CA:FALSE\n` +
        'keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n',
    );
    ossl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ossl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  }
  const read = (f) => fs.readFileSync(path.join(dir, f));
  return {
    caFile: path.join(dir, 'ca.pem'),
    localhost: { key: read('localhost.key'), cert: read('localhost.pem') },
    other: { key: read('other.example.key'), cert: read('other.example.pem') },
  };
}

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

// tls: { key, cert } serves https (the URL names localhost).
async function startWebhookReceiver({ respond, tls } = {}) {
  const received = [];
  const r = { received, respond: respond || (() => 200) };
  const handler = (req, res) => {
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
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  r.port = server.address().port;
  r.url = tls ? `https://localhost:${r.port}/hooks/keybrake` : `http://127.0.0.1:${r.port}/hooks/keybrake`;
  r.forBudget = (name) => received.filter((x) => x.json && x.json.budget === name);
  r.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    });
  return r;
}

module.exports = { makeCerts, startWebhookReceiver, verifySignature };
