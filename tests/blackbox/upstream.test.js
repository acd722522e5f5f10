'use strict';
// upstream.test.js - the proxy's upstream HTTP client, the part that forwards
// to the vendor (src/proxy/upstream.c). Written so that a replacement client
// can be checked against it: TLS (trust, name check, SNI, connection reuse),
// response framing (chunked with extensions and trailers, close-delimited,
// HEAD, 204/304, 1xx interim blocks, a head trickled byte by byte, large
// bodies), keep-alive (reuse, Connection: close, idle connections the vendor
// closed, the stale-connection race), the shape of the request the vendor
// receives, and broken vendors.
//
// The vendors here are servers built in this file: a raw `net` server that
// parses requests itself and answers with exact bytes (so odd framing can be
// sent, and every request is attributed to its TCP connection), and node
// `https` servers with certificates made at test time by the openssl CLI.
// Nothing sleeps: a test that needs the vendor to have closed a connection
// waits for that socket's 'close' event.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const path = require('node:path');
const zlib = require('node:zlib');

const {
  assertError,
  mkTempDir,
  rawRequest,
  rmTempDir,
  startDaemon,
  uniquePrefix,
} = require('./lib/harness');

// lib/harness.js starts every daemon with KEYBRAKE_WORKERS=2; each worker has
// its own upstream connection pool.
const WORKERS = 2;

// A broken upstream client should fail a test in seconds, not after the
// 300 s default silence limit.
// The transport cases use made-up Stripe paths: an operator's fixed cost of
// $0 for every /v1 write lets them through (unpriced writes are refused).
const DAEMON_ENV = {
  KEYBRAKE_UPSTREAM_TIMEOUT: '20s',
  KEYBRAKE_UPSTREAM_CONNECT_TIMEOUT: '5s',
  KEYBRAKE_STRIPE_COST: 'POST /v1/* 0; PUT /v1/* 0; PATCH /v1/* 0',
  KEYBRAKE_OPENAI_COST: 'POST /v1/* 0',
};

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

// Issues a key for `vendor` allowing any method under /v1/ and returns its token.
async function tokenFor(d, vendor, name) {
  const key = await d.issueKey({ label: uniquePrefix(name), vendor, allowed_endpoints: ['/v1/*'] });
  return key.token;
}

// ---- a raw upstream ---------------------------------------------------------------------------

// A vendor that speaks HTTP/1.1 by hand. It parses each request off its
// socket (Content-Length or chunked bodies), records it with the connection
// it came on, and hands it to `handler(rec, conn)`, which writes whatever
// bytes the test wants.
class RawUpstream {
  constructor() {
    this.conns = [];
    this.requests = [];
    this.handler = (rec, conn) =>
      conn.sock.write(response(200, { 'Content-Type': 'application/json' }, '{"ok":true}'));
    this.server = net.createServer((sock) => this.accept(sock));
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  accept(sock) {
    // closedP: resolves once the socket is closed on both sides
    const conn = { id: this.conns.length, sock, requests: [] };
    conn.closedP = new Promise((resolve) => sock.on('close', resolve));
    this.conns.push(conn);
    sock.setNoDelay(true);
    sock.on('error', () => {}); // resets by the proxy are part of some tests
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const parsed = parseRequest(buf);
        if (!parsed) return;
        buf = buf.subarray(parsed.used);
        const rec = parsed.rec;
        rec.conn = conn.id;
        rec.seqOnConn = conn.requests.length;
        conn.requests.push(rec);
        this.requests.push(rec);
        this.handler(rec, conn);
        if (sock.destroyed) return;
      }
    });
  }

  // Requests recorded from index `from` on.
  since(from) {
    return this.requests.slice(from);
  }

  async close() {
    for (const c of this.conns) c.sock.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

// Parses one request at the start of buf: { used, rec } or null when more
// bytes are needed. rec: { method, target, version, head (text before the
// blank line), rawHeaders, headers (lower-case name -> [values]), body }.
function parseRequest(buf) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = buf.subarray(0, end).toString('latin1');
  const lines = head.split('\r\n');
  const [method, target, version] = lines[0].split(' ');
  const rawHeaders = [];
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    const name = l.slice(0, i);
    const value = l.slice(i + 1).trim();
    rawHeaders.push(name, value);
    (headers[name.toLowerCase()] ||= []).push(value);
  }
  let at = end + 4;
  let body;
  const te = headers['transfer-encoding'];
  if (te && /chunked/i.test(te.join(','))) {
    const parts = [];
    for (;;) {
      const eol = buf.indexOf('\r\n', at);
      if (eol < 0) return null;
      const size = parseInt(buf.subarray(at, eol).toString('latin1').split(';')[0], 16);
      if (size === 0) {
        // trailer fields, if any, then an empty line
        const tend = buf.indexOf('\r\n\r\n', eol);
        if (tend < 0) return null;
        at = tend + 4;
        break;
      }
      if (buf.length < eol + 2 + size + 2) return null;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else {
    const cl = headers['content-length'] ? Number(headers['content-length'][0]) : 0;
    if (buf.length < at + cl) return null;
    body = Buffer.from(buf.subarray(at, at + cl));
    at += cl;
  }
  return {
    used: at,
    rec: { method, target, version, head, rawHeaders, headers, body },
  };
}

// An HTTP/1.1 response as bytes, with a Content-Length unless the headers
// already frame the body.
function response(status, headers = {}, body = '') {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const names = Object.keys(headers).map((n) => n.toLowerCase());
  const h = { ...headers };
  if (!names.includes('content-length') && !names.includes('transfer-encoding')) {
    h['Content-Length'] = String(b.length);
  }
  let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n`;
  for (const [n, v] of Object.entries(h)) head += `${n}: ${v}\r\n`;
  return Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), b]);
}

// A 200 text/plain answer with a Content-Length.
const okText = (body) => response(200, { 'Content-Type': 'text/plain' }, body);

// Writes buf in pieces of `size` bytes, each write waiting for the last one
// to be handed to the kernel (with Nagle off, so they leave as separate
// segments).
function writeInPieces(sock, buf, size) {
  return new Promise((resolve, reject) => {
    let at = 0;
    const next = (err) => {
      if (err) return reject(err);
      if (at >= buf.length) return resolve();
      const piece = buf.subarray(at, at + size);
      at += size;
      sock.write(piece, next);
    };
    next();
  });
}

// Splits a raw HTTP response (as latin1 text) into status, headers, body;
// `complete` says whether the body ended as its framing says it must.
function parseRawResponse(text) {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: {}, body: '', complete: false };
  const lines = text.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1] || 0);
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  const rest = text.slice(end + 4);
  if (headers['transfer-encoding'] === 'chunked') {
    let at = 0;
    let body = '';
    for (;;) {
      const eol = rest.indexOf('\r\n', at);
      if (eol < 0) return { status, headers, body, complete: false };
      const size = parseInt(rest.slice(at, eol), 16);
      if (Number.isNaN(size)) return { status, headers, body, complete: false };
      if (size === 0) return { status, headers, body, complete: rest.slice(eol, eol + 4) === '\r\n\r\n' };
      if (rest.length < eol + 2 + size + 2) {
        return { status, headers, body: body + rest.slice(eol + 2), complete: false };
      }
      body += rest.slice(eol + 2, eol + 2 + size);
      at = eol + 2 + size + 2;
    }
  }
  if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    return { status, headers, body: rest.slice(0, n), complete: rest.length >= n };
  }
  return { status, headers, body: rest, complete: null }; // close-delimited: cannot tell
}

// The header values of `name` in a node rawHeaders list.
function rawValues(rawHeaders, name) {
  const out = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === name) out.push(rawHeaders[i + 1]);
  }
  return out;
}

// ---- TLS material -----------------------------------------------------------------------------

// A CA and two leaves it signed: one for localhost, one for other.example.
function makeCerts(dir) {
  const ossl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=Keybrake upstream test CA',
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

// An https vendor on 127.0.0.1:0 that records requests (with the SNI name
// of their TLS connection) and counts TCP connections and completed
// handshakes (on its side: in TLS 1.3 the server may finish before the
// client has checked the certificate).
async function startHttpsVendor({ key, cert }) {
  const v = { requests: [], tcpConnections: 0, secureConnections: 0 };
  const srv = https.createServer({ key, cert }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      v.requests.push({
        method: req.method,
        url: req.url,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        servername: req.socket.servername,
        body: Buffer.concat(chunks),
      });
      const body = JSON.stringify({ ok: true, n: v.requests.length });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  srv.keepAliveTimeout = 60_000; // idle closes must not muddle the connection count
  srv.on('connection', () => v.tcpConnections++);
  srv.on('secureConnection', () => v.secureConnections++);
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  v.port = srv.address().port;
  v.url = `https://localhost:${v.port}`;
  v.close = () =>
    new Promise((resolve) => {
      srv.closeAllConnections();
      srv.close(resolve);
    });
  return v;
}

// =================================================================================================

describe('upstream: TLS to the vendor', () => {
  let dir;
  let certs;
  let good; // cert for localhost, signed by the test CA
  let wrong; // cert for other.example, signed by the test CA
  let d; // trusts the test CA
  let dNoCa; // system store only
  let token;
  let wrongToken;
  let noCaToken;

  before(async () => {
    dir = mkTempDir();
    certs = makeCerts(dir);
    good = await startHttpsVendor(certs.localhost);
    wrong = await startHttpsVendor(certs.other);
    d = await startDaemon({
      baseUrls: { stripe: good.url, openai: wrong.url },
      env: { ...DAEMON_ENV, KEYBRAKE_CA_FILE: certs.caFile },
    });
    dNoCa = await startDaemon({ baseUrls: { stripe: good.url }, env: DAEMON_ENV });
    token = await tokenFor(d, 'stripe', 'tls');
    wrongToken = await tokenFor(d, 'openai', 'tls-name');
    noCaToken = await tokenFor(dNoCa, 'stripe', 'tls-noca');
  });

  after(async () => {
    try {
      if (d) await d.kill();
      if (dNoCa) await dNoCa.kill();
    } finally {
      if (good) await good.close();
      if (wrong) await wrong.close();
      rmTempDir(dir);
    }
  });

  // The normal case for every real vendor: verified TLS, with SNI so the
  // vendor's front end picks the right certificate.
  it('a trusted certificate for the right name: 200, the secret injected, SNI and Host name the vendor', async () => {
    const r = await d.proxy({
      path: '/stripe/v1/tls_probe?x=1',
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { ok: true, n: 1 });
    assert.equal(good.requests.length, 1);
    const rec = good.requests[0];
    assert.equal(rec.method, 'GET');
    assert.equal(rec.url, '/v1/tls_probe?x=1');
    assert.equal(rec.servername, 'localhost', 'SNI');
    assert.deepEqual(rawValues(rec.rawHeaders, 'host'), [`localhost:${good.port}`]);
    assert.deepEqual(rawValues(rec.rawHeaders, 'authorization'), [`Bearer ${d.secrets.stripe}`]);
    assert.equal(good.secureConnections, 1);
  });

  // A certificate the CA signed but for another name is a man in the middle
  // as far as we know: no request (and so no secret) may reach it.
  it('a certificate for another name: 502 upstream_unreachable, no HTTP request reaches the server', async () => {
    const tried = wrong.tcpConnections;
    const r = await d.proxy({
      path: '/openai/v1/models',
      headers: { authorization: `Bearer ${wrongToken}` },
    });
    assertError(r, 502, 'upstream_unreachable');
    // the daemon did connect (and the server answered its hello before the
    // 502 could exist): the refusal is the certificate's
    assert.ok(wrong.tcpConnections > tried, 'the daemon connected');
    assert.equal(wrong.requests.length, 0);
  });

  // Without the CA file the daemon trusts only the system store, where the
  // test CA is not.
  it('a daemon without the CA file refuses the same server: 502 upstream_unreachable, nothing received', async () => {
    const before = good.requests.length;
    const tried = good.tcpConnections;
    const r = await dNoCa.proxy({
      path: '/stripe/v1/tls_probe',
      headers: { authorization: `Bearer ${noCaToken}` },
    });
    assertError(r, 502, 'upstream_unreachable');
    assert.ok(good.tcpConnections > tried, 'the daemon connected');
    assert.equal(good.requests.length, before);
  });

  // A TLS handshake per request would add a round trip or two to every
  // vendor call: connections are pooled per worker and reused.
  it('sequential requests over TLS reuse connections: at most one handshake per worker', async () => {
    const before = good.requests.length;
    for (let i = 0; i < 20; i++) {
      const r = await d.proxy({
        method: i % 2 ? 'POST' : 'GET',
        path: `/stripe/v1/tls_seq/${i}`,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' },
        body: i % 2 ? `body-${i}` : undefined,
      });
      assert.equal(r.status, 200, r.text);
    }
    const recs = good.requests.slice(before);
    assert.deepEqual(
      recs.map((x) => x.url),
      Array.from({ length: 20 }, (_, i) => `/v1/tls_seq/${i}`),
    );
    for (const [i, x] of recs.entries()) {
      assert.equal(x.body.toString(), i % 2 ? `body-${i}` : '');
      assert.equal(x.servername, 'localhost');
    }
    // the first test's connection counts too: the whole daemon's lifetime
    assert.ok(
      good.secureConnections <= WORKERS,
      `${good.secureConnections} TLS connections for 21 sequential requests and ${WORKERS} workers`,
    );
  });

  it('stops cleanly', async () => {
    await dNoCa.stop();
    await d.stop();
  });
});

// =================================================================================================

describe('upstream: response framing', () => {
  let up;
  let d;
  let auth;

  before(async () => {
    up = await new RawUpstream().start();
    d = await startDaemon({ baseUrls: { stripe: up.url }, env: DAEMON_ENV });
    auth = { authorization: `Bearer ${await tokenFor(d, 'stripe', 'framing')}` };
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (up) await up.close();
    }
  });

  const get = (p, opts = {}) => d.proxy({ path: p, headers: auth, ...opts });

  // Chunk extensions are legal and rare; a client that chokes on them, or
  // leaks chunk framing or trailer fields into the body, corrupts answers.
  it('chunked with extensions, upper-case and zero-padded sizes and a trailer: the decoded body exactly', async () => {
    up.handler = (rec, conn) =>
      conn.sock.write(
        'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n' +
          '5;name=value\r\nhello\r\n' +
          '7;a=1;b="q;x"\r\n, world\r\n' +
          '00A\r\n0123456789\r\n' +
          '1A\r\nabcdefghijklmnopqrstuvwxyz\r\n' +
          '0;last\r\nX-Digest: abc\r\nX-Other: def\r\n\r\n',
      );
    const n = up.requests.length;
    const r = await get('/stripe/v1/chunked');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, 'hello, world0123456789abcdefghijklmnopqrstuvwxyz');
    assert.equal(r.headers['content-type'], 'text/plain');
    assert.equal(r.headers['x-digest'], undefined, 'a trailer field is not a header');
    assert.equal(r.headers['trailer'], undefined, 'Trailer is hop-by-hop');
    assert.equal(up.since(n).length, 1);
    assert.equal(up.since(n)[0].target, '/v1/chunked');
  });

  // HTTP/1.1 still allows a body delimited by the close of the connection.
  it('no Content-Length, Connection: close, body ends with the connection: the full body', async () => {
    const body = 'close-delimited body '.repeat(500);
    up.handler = (rec, conn) => {
      conn.sock.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n`);
      conn.sock.write(body.slice(0, 4000));
      conn.sock.end(body.slice(4000));
    };
    const n = up.requests.length;
    const r = await get('/stripe/v1/close_delimited');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, body);
    assert.equal(up.since(n).length, 1);
  });

  // A HEAD answer's Content-Length describes the GET body that was not
  // sent; a client that waits for those bytes hangs, one that forwards
  // none loses the information.
  it('HEAD answered with Content-Length: 1234 and no body: the client sees 1234, nothing hangs', async () => {
    up.handler = (rec, conn) =>
      conn.sock.write(
        'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\nETag: "v1"\r\n\r\n',
      );
    const n = up.requests.length;
    const r = await d.proxy({ method: 'HEAD', path: '/stripe/v1/head_probe', headers: auth });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], '1234');
    assert.equal(r.headers.etag, '"v1"');
    assert.equal(r.body.length, 0);
    const recs = up.since(n);
    assert.equal(recs.length, 1);
    assert.equal(recs[0].method, 'HEAD');
    assert.equal(recs[0].body.length, 0);

    // the connection the HEAD used is still in step: the next answers are whole
    up.handler = (rec, conn) => conn.sock.write(okText(`after-head-${rec.seqOnConn}`));
    for (let i = 0; i < WORKERS * 2; i++) {
      const g = await get('/stripe/v1/after_head');
      assert.equal(g.status, 200, g.text);
      assert.match(g.text, /^after-head-\d+$/);
    }
  });

  // 204 and 304 never have a body, whatever they say; the next response on
  // the same connection must not be read as one.
  it('204 and 304 with no body: passed through bodiless, the connection stays usable', async () => {
    const answers = [
      'HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n',
      'HTTP/1.1 304 Not Modified\r\nETag: "abc"\r\n\r\n',
    ];
    for (const a of answers) {
      up.handler = (rec, conn) => conn.sock.write(a);
      const n = up.requests.length;
      const r = await d.proxy({ method: 'DELETE', path: '/stripe/v1/things/th_1', headers: auth });
      const status = Number(a.slice(9, 12));
      assert.equal(r.status, status);
      assert.equal(r.body.length, 0);
      assert.equal(r.headers['transfer-encoding'], undefined);
      assert.equal(up.since(n).length, 1);
    }
    up.handler = (rec, conn) => conn.sock.write(response(200, {}, 'next'));
    for (let i = 0; i < WORKERS * 2; i++) {
      const g = await get('/stripe/v1/after_204');
      assert.equal(g.status, 200, g.text);
      assert.equal(g.text, 'next');
    }
  });

  // 1xx blocks (100 Continue, 103 Early Hints) precede the real answer;
  // their fields must not leak into it, and the status is the final one.
  it('100 and 103 interim blocks, then 201: the client gets the 201 with only the final block headers', async () => {
    up.handler = (rec, conn) =>
      conn.sock.write(
        'HTTP/1.1 100 Continue\r\nX-Interim-A: 1\r\n\r\n' +
          'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nX-Interim-B: 2\r\n\r\n' +
          'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Final: yes\r\nContent-Length: 11\r\n\r\n{"ok":true}',
      );
    const n = up.requests.length;
    const r = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/early_hints',
      headers: { ...auth, 'content-type': 'text/plain' },
      body: 'x',
    });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.json, { ok: true });
    assert.equal(r.headers['x-final'], 'yes');
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers.link, undefined);
    assert.equal(r.headers['x-interim-a'], undefined);
    assert.equal(r.headers['x-interim-b'], undefined);
    assert.equal(up.since(n).length, 1);
  });

  // A parser that assumes a status line or a header arrives in one read
  // breaks on slow or congested links.
  it('a response written one byte at a time (head and chunked body): intact', async () => {
    const bytes = Buffer.from(
      'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Trickle: one byte at a time\r\n' +
        'Transfer-Encoding: chunked\r\n\r\n' +
        '8\r\n{"tricke\r\n' +
        '9;ext=1\r\nd":"yes"}\r\n' +
        '0\r\n\r\n',
    );
    up.handler = (rec, conn) => {
      writeInPieces(conn.sock, bytes, 1).catch(() => {});
    };
    const n = up.requests.length;
    const r = await get('/stripe/v1/trickle');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { tricked: 'yes' });
    assert.equal(r.headers['x-trickle'], 'one byte at a time');
    assert.equal(up.since(n).length, 1);
  });

  // Large answers (files, batch results) go through flow control and many
  // reads: not a byte may be lost, repeated or reordered.
  it('a 5 MB body with Content-Length: identical bytes (sha256)', async () => {
    const big = crypto.randomBytes(5 * 1024 * 1024);
    up.handler = (rec, conn) =>
      conn.sock.write(response(200, { 'Content-Type': 'application/octet-stream' }, big));
    const n = up.requests.length;
    const r = await get('/stripe/v1/files/big', { timeoutMs: 60_000 });
    assert.equal(r.status, 200);
    assert.equal(r.body.length, big.length);
    assert.equal(sha256(r.body), sha256(big));
    assert.equal(up.since(n).length, 1);
  });

  it('a 5 MB chunked body in uneven chunks: identical bytes (sha256)', async () => {
    const big = crypto.randomBytes(5 * 1024 * 1024 + 7);
    up.handler = (rec, conn) => {
      const parts = [
        Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n'),
      ];
      let at = 0;
      for (let i = 0; at < big.length; i++) {
        const size = Math.min(big.length - at, 1 + ((i * 7919) % 70_000));
        parts.push(Buffer.from(size.toString(16) + '\r\n'), big.subarray(at, at + size), Buffer.from('\r\n'));
        at += size;
      }
      parts.push(Buffer.from('0\r\n\r\n'));
      conn.sock.write(Buffer.concat(parts));
    };
    const n = up.requests.length;
    const r = await get('/stripe/v1/files/big_chunked', { timeoutMs: 60_000 });
    assert.equal(r.status, 200);
    assert.equal(r.body.length, big.length);
    assert.equal(sha256(r.body), sha256(big));
    assert.equal(up.since(n).length, 1);
  });

  // Vendor headers reach the SDK: repeated fields stay separate, values
  // are not rewritten; the vendor's hop-by-hop fields stop at the proxy.
  it('response headers: repeated fields kept, hop-by-hop fields of the vendor dropped', async () => {
    up.handler = (rec, conn) =>
      conn.sock.write(
        'HTTP/1.1 402 Payment Required\r\nContent-Type: application/json\r\n' +
          'Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\nRequest-Id: req_abc\r\n' +
          'Keep-Alive: timeout=5\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}',
      );
    const r = await get('/stripe/v1/headers');
    assert.equal(r.status, 402);
    assert.equal(r.text, '{}');
    assert.deepEqual(r.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/']);
    assert.equal(r.headers['request-id'], 'req_abc');
    assert.equal(r.headers['keep-alive'], undefined);
  });

  // SDKs ask for gzip and decode it themselves: the proxy must pass the
  // encoded bytes and Content-Encoding through, and not ask for (or undo)
  // an encoding the client did not.
  it('gzip: Accept-Encoding forwarded as sent, the encoded body and Content-Encoding passed through untouched', async () => {
    const data = Array.from({ length: 200 }, (_, i) => ({ id: `pi_${i}` }));
    const plain = JSON.stringify({ object: 'list', data });
    const gz = zlib.gzipSync(plain);
    const json = { 'Content-Type': 'application/json' };
    up.handler = (rec, conn) =>
      conn.sock.write(
        rec.headers['accept-encoding'] && rec.headers['accept-encoding'][0].includes('gzip')
          ? response(200, { ...json, 'Content-Encoding': 'gzip', Vary: 'Accept-Encoding' }, gz)
          : response(200, json, plain),
      );
    const n = up.requests.length;
    const r = await get('/stripe/v1/payment_intents', {
      headers: { ...auth, 'accept-encoding': 'gzip, deflate' },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-encoding'], 'gzip');
    assert.equal(sha256(r.body), sha256(gz), 'the gzip bytes, not a re-encoding or a decoding');
    assert.equal(zlib.gunzipSync(r.body).toString(), plain);
    assert.deepEqual(up.since(n)[0].headers['accept-encoding'], ['gzip, deflate']);

    const plainRes = await get('/stripe/v1/payment_intents');
    assert.equal(plainRes.status, 200);
    assert.equal(plainRes.headers['content-encoding'], undefined);
    assert.equal(plainRes.text, plain);
    // no coding the client did not ask for: identity, said out loud (no header accepts any)
    assert.deepEqual(up.since(n)[1].headers['accept-encoding'], ['identity']);
  });

  // A redirect is the vendor's answer to the SDK, not an instruction to
  // the proxy: following it would send the secret somewhere else.
  it('a 302 is passed back, not followed', async () => {
    const other = await new RawUpstream().start();
    try {
      up.handler = (rec, conn) =>
        conn.sock.write(response(302, { Location: `${other.url}/v1/elsewhere` }, ''));
      const n = up.requests.length;
      const r = await get('/stripe/v1/redirect_me');
      assert.equal(r.status, 302);
      assert.equal(r.headers.location, `${other.url}/v1/elsewhere`);
      assert.equal(up.since(n).length, 1);
      assert.equal(other.requests.length, 0);
    } finally {
      await other.close();
    }
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});

// =================================================================================================

describe('upstream: keep-alive', () => {
  let up; // raw vendor, behind stripe
  let idle; // node http vendor with a tiny keepAliveTimeout, behind openai
  let idleSockets;
  let d;
  let auth;
  let openaiAuth;

  before(async () => {
    up = await new RawUpstream().start();
    idleSockets = [];
    const idleSrv = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
        res.end('{}');
      });
    });
    idleSrv.keepAliveTimeout = 5; // ms: every connection is closed almost as soon as it idles
    idleSrv.on('connection', (s) => {
      const rec = { sock: s, requests: 0 };
      rec.closedP = new Promise((resolve) => s.on('close', resolve));
      idleSockets.push(rec);
    });
    idleSrv.on('request', (req) => {
      idleSockets.find((x) => x.sock === req.socket).requests++;
    });
    await new Promise((resolve) => idleSrv.listen(0, '127.0.0.1', resolve));
    idle = {
      url: `http://127.0.0.1:${idleSrv.address().port}`,
      close: () =>
        new Promise((resolve) => {
          idleSrv.closeAllConnections();
          idleSrv.close(resolve);
        }),
    };
    d = await startDaemon({ baseUrls: { stripe: up.url, openai: idle.url }, env: DAEMON_ENV });
    auth = { authorization: `Bearer ${await tokenFor(d, 'stripe', 'ka')}` };
    openaiAuth = { authorization: `Bearer ${await tokenFor(d, 'openai', 'ka-idle')}` };
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (up) await up.close();
      if (idle) await idle.close();
    }
  });

  const get = (p) => d.proxy({ path: p, headers: auth });

  // A connection (and TCP handshake) per request costs latency and, at a
  // vendor, connection-rate limits.
  it('50 sequential requests use at most one connection per worker', async () => {
    up.handler = (rec, conn) => conn.sock.write(okText(`r${rec.target}`));
    const n = up.requests.length;
    for (let i = 0; i < 50; i++) {
      const r = await get(`/stripe/v1/seq/${i}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, `r/v1/seq/${i}`);
    }
    const recs = up.since(n);
    assert.equal(recs.length, 50);
    const conns = new Set(recs.map((x) => x.conn));
    assert.ok(conns.size <= WORKERS, `50 sequential requests took ${conns.size} connections`);
    assert.ok(up.conns.length <= WORKERS, `${up.conns.length} connections accepted in all`);
  });

  // A vendor may end every connection after one answer; reusing such a
  // connection would fail every other request.
  it('a vendor that answers Connection: close and closes: all 50 succeed, one connection each', async () => {
    up.handler = (rec, conn) =>
      conn.sock.end(response(200, { 'Content-Type': 'text/plain', Connection: 'close' }, `c${rec.target}`));
    const n = up.requests.length;
    for (let i = 0; i < 50; i++) {
      const r = await get(`/stripe/v1/close/${i}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, `c/v1/close/${i}`);
    }
    const recs = up.since(n);
    assert.equal(recs.length, 50, 'no request was sent twice');
    const conns = new Set(recs.map((x) => x.conn));
    assert.equal(conns.size, 50, 'a connection the vendor said it would close is not reused');
  });

  // Vendors and load balancers drop idle keep-alive connections without
  // notice; the next request must go out on a fresh one, not fail.
  it('the vendor closes each connection after answering without saying so: the next request still succeeds', async () => {
    const served = [];
    up.handler = (rec, conn) => {
      // answer as if keeping the connection, then close it once the answer is out
      conn.sock.write(okText(`k${rec.target}`), () => conn.sock.destroy());
      served.push(conn);
    };
    const n = up.requests.length;
    for (let i = 0; i < 10; i++) {
      const r = await get(`/stripe/v1/silent_close/${i}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, `k/v1/silent_close/${i}`);
      await served[served.length - 1].closedP; // the vendor's close happened before the next request
    }
    const recs = up.since(n);
    assert.equal(recs.length, 10);
    assert.equal(new Set(recs.map((x) => x.conn)).size, 10);
  });

  // A vendor ending an idle pooled connection (FIN) must see the proxy
  // close its side at once: a client that only notices on reuse leaves
  // the socket in CLOSE_WAIT for as long as the pool is quiet. The socket's
  // 'close' fires only once both sides closed; the test timeout bounds it.
  it('a pooled connection the vendor ends is closed by the proxy right away', { timeout: 20_000 }, async () => {
    const ended = [];
    up.handler = (rec, conn) => {
      conn.sock.write(okText('half'), () => conn.sock.end()); // FIN, no Connection: close
      ended.push(conn);
    };
    const r = await get('/stripe/v1/half_close');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, 'half');
    await ended[0].closedP;
  });

  // node 20 closes an idle connection about a second after keepAliveTimeout
  // (its own safety margin), so a few rounds suffice.
  it('an http server with a tiny keepAliveTimeout closes idle connections: every next request succeeds', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await d.proxy({ path: `/openai/v1/models/m${i}`, headers: openaiAuth });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, '{}');
      const s = idleSockets.filter((x) => x.requests > 0);
      await s[s.length - 1].closedP; // wait for the server's idle close
    }
    const total = idleSockets.reduce((a, x) => a + x.requests, 0);
    assert.equal(total, 3, 'each request reached the vendor once');
  });

  // HTTP/1.0 connections close after the answer unless they say
  // otherwise; one that stays open must not be reused.
  it('an HTTP/1.0 answer without keep-alive: its connection is not reused', async () => {
    up.handler = (rec, conn) =>
      conn.sock.write(`HTTP/1.0 200 OK\r\nContent-Length: ${rec.target.length}\r\n\r\n${rec.target}`);
    const n = up.requests.length;
    for (let i = 0; i < WORKERS * 3; i++) {
      const r = await get(`/stripe/v1/old/${i}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, `/v1/old/${i}`);
    }
    const recs = up.since(n);
    assert.equal(recs.length, WORKERS * 3);
    const conns = new Set(recs.map((x) => x.conn));
    assert.equal(conns.size, recs.length, 'no connection carried a request after its HTTP/1.0 answer');
  });

  // The race every keep-alive client meets: the vendor closes a pooled
  // connection just as the next request goes out on it. Nothing was
  // answered, so a GET is safe to send again on a fresh connection
  // (RFC 9112 9.3.1); the caller must not see a 502.
  it('a pooled connection dropped after the request was written: never re-sent, 502, the reservation charged', async () => {
    // issue 13: the vendor read the request before dropping it, so it may
    // have acted on it; a second copy could be billed twice
    up.handler = (rec, conn) => {
      if (rec.seqOnConn === 0) conn.sock.write(okText(`s${rec.target}`));
      else conn.sock.destroy(); // a second request on this connection: read, then drop it unanswered
    };
    const key = await d.issueKey({ label: uniquePrefix('stale'), vendor: 'stripe', allowed_endpoints: ['/v1/*'], daily_usd_cap: 1000 });
    const form = { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' };
    const n = up.requests.length;
    const status = [];
    // every request after a worker's first lands on a pooled connection that
    // is dropped: with more requests than workers, at least one does.
    for (let i = 0; i < WORKERS * 3; i++) {
      const r = await d.proxy({ method: 'POST', path: `/stripe/v1/payment_intents?i=${i}`, headers: form, body: 'amount=100&currency=usd' });
      assert.ok(r.status === 200 || (r.status === 502 && r.json.code === 'upstream_error'), `request ${i}: ${r.status} ${r.text}`);
      status.push(r.status);
    }
    const recs = up.since(n);
    const dropped = recs.filter((x) => x.seqOnConn > 0);
    assert.ok(dropped.length >= 1, 'the race happened at least once');
    // each request reached the vendor exactly once: nothing was re-sent
    assert.equal(recs.length, WORKERS * 3);
    assert.equal(new Set(recs.map((x) => x.body.toString())).size, WORKERS * 3);
    assert.equal(status.filter((s) => s === 502).length, dropped.length);
    // answered and unknown outcomes alike are charged: $1 each
    const usage = (await d.admin.get(`/v1/keys/${key.id}`)).json.usage;
    assert.equal(usage.spent_usd, WORKERS * 3);
    assert.equal(usage.reserved_usd, 0);
    const audit = (await d.admin.get(`/v1/audit?key_id=${key.id}&limit=50`)).json.data;
    assert.equal(audit.filter((a) => a.detail && a.detail.outcome === 'unknown').length, dropped.length);
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});

// =================================================================================================

describe('upstream: the request the vendor receives', () => {
  let up;
  let d;
  let token;
  let openaiToken;

  before(async () => {
    up = await new RawUpstream().start();
    d = await startDaemon({
      baseUrls: { stripe: up.url, openai: `${up.url}/prefix` },
      env: DAEMON_ENV,
    });
    token = await tokenFor(d, 'stripe', 'shape');
    openaiToken = await tokenFor(d, 'openai', 'shape-prefix');
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (up) await up.close();
    }
  });

  // Sends one request through the proxy; returns [client response, the one
  // request the vendor received].
  async function through(opts) {
    const n = up.requests.length;
    const headers = { authorization: `Bearer ${token}`, ...(opts.headers || {}) };
    const r = await d.proxy({ ...opts, headers });
    assert.equal(r.status, 200, `${opts.method || 'GET'} ${opts.path}: ${r.text}`);
    const recs = up.since(n);
    assert.equal(recs.length, 1, `${opts.method || 'GET'} ${opts.path} reached the vendor once`);
    return [r, recs[0]];
  }

  // Vendors frame request bodies by Content-Length; some (and some load
  // balancers) refuse chunked request bodies or 100-continue handshakes.
  it('POST, PUT, PATCH and DELETE with a body: that exact body, a correct Content-Length, no Transfer-Encoding', async () => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      const body = `method=${method}&note=caf%C3%A9+%26+more&bin=\u00e9\u4e2d`;
      const [, rec] = await through({
        method,
        path: `/stripe/v1/shape/${method.toLowerCase()}`,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body,
      });
      assert.equal(rec.method, method);
      assert.equal(rec.version, 'HTTP/1.1');
      assert.equal(rec.body.toString('utf8'), body, method);
      assert.deepEqual(rec.headers['content-length'], [String(Buffer.byteLength(body))], method);
      assert.equal(rec.headers['transfer-encoding'], undefined, method);
      assert.equal(rec.headers.expect, undefined, method);
      assert.deepEqual(rec.headers['content-type'], ['application/x-www-form-urlencoded'], method);
    }
  });

  // A body-less GET or DELETE with a Content-Length or Transfer-Encoding is
  // odd enough that some servers refuse it; a POST without any framing
  // makes some servers answer 411.
  it('GET and DELETE without a body carry no framing headers; an empty POST says Content-Length: 0', async () => {
    for (const method of ['GET', 'DELETE']) {
      const [, rec] = await through({ method, path: '/stripe/v1/shape/nobody' });
      assert.equal(rec.method, method);
      assert.equal(rec.headers['content-length'], undefined, method);
      assert.equal(rec.headers['transfer-encoding'], undefined, method);
      assert.equal(rec.body.length, 0);
    }
    const [, rec] = await through({ method: 'POST', path: '/stripe/v1/shape/empty_post', body: '' });
    assert.deepEqual(rec.headers['content-length'], ['0']);
    assert.equal(rec.headers['transfer-encoding'], undefined);
  });

  // Uploads (files, long prompts) are written in many pieces.
  it('a 3 MB request body arrives intact with its Content-Length', async () => {
    const big = crypto.randomBytes(3 * 1024 * 1024);
    const [, rec] = await through({
      method: 'POST',
      path: '/stripe/v1/files',
      headers: { 'content-type': 'application/octet-stream' },
      body: big,
    });
    assert.deepEqual(rec.headers['content-length'], [String(big.length)]);
    assert.equal(rec.body.length, big.length);
    assert.equal(sha256(rec.body), sha256(big));
  });

  // Virtual hosting at the vendor routes on Host; it must name the base
  // URL's authority, port included, exactly once. The target is
  // origin-form: an absolute URI would be read as a proxy request.
  it('Host is host:port of the base URL, once; the request line is origin-form HTTP/1.1', async () => {
    const [, rec] = await through({ path: '/stripe/v1/shape/host', headers: { host: 'evil.example' } });
    assert.deepEqual(rec.headers.host, [`127.0.0.1:${up.port}`]);
    assert.equal(rec.head.split('\r\n')[0], 'GET /v1/shape/host HTTP/1.1');
  });

  // An operator may route a vendor through a gateway under a path prefix.
  it('a base URL with a path prefix gets the vendor path (and query) appended', async () => {
    const n = up.requests.length;
    const r = await d.proxy({
      path: '/openai/v1/models/gpt-x?limit=2',
      headers: { authorization: `Bearer ${openaiToken}` },
    });
    assert.equal(r.status, 200, r.text);
    const recs = up.since(n);
    assert.equal(recs.length, 1);
    assert.equal(recs[0].target, '/prefix/v1/models/gpt-x?limit=2');
    assert.deepEqual(recs[0].headers.host, [`127.0.0.1:${up.port}`]);
  });

  // Stripe's expand[]=, list filters and search queries depend on the
  // exact bytes: no re-encoding, no reordering, no merging of repeated keys.
  it('the query string arrives byte for byte', async () => {
    const q =
      '?q=a%2Fb+c%20d&tag=x&tag=y&tag=x&expand%5B%5D=customer&expand[]=invoice&empty=&flag' +
      '&email=a%40b.example&plus=%2B&amp=%26&eq=a%3Db&tilde=~&star=*&utf=%C3%A9';
    const [, rec] = await through({ path: `/stripe/v1/shape/query${q}` });
    assert.equal(rec.target, `/v1/shape/query${q}`);
  });

  // The vendor gets what the SDK sent, not libcurl's defaults: a stray
  // Expect: 100-continue stalls uploads, an invented Accept changes what
  // some endpoints return.
  it('no Expect and no invented Accept; the client Accept and User-Agent pass through unchanged, once', async () => {
    const [, bare] = await through({
      method: 'POST',
      path: '/stripe/v1/shape/defaults',
      headers: { 'content-type': 'text/plain' },
      body: 'x'.repeat(2048),
    });
    assert.equal(bare.headers.expect, undefined);
    assert.equal(bare.headers.accept, undefined, `Accept: ${bare.headers.accept}`);

    const [, withAccept] = await through({
      path: '/stripe/v1/shape/accept',
      headers: {
        accept: 'application/json; q=0.9, text/event-stream',
        'user-agent': 'Stripe/v1 NodeBindings/23.1.0',
      },
    });
    assert.deepEqual(withAccept.headers.accept, ['application/json; q=0.9, text/event-stream']);
    assert.deepEqual(withAccept.headers['user-agent'], ['Stripe/v1 NodeBindings/23.1.0']);
    assert.deepEqual(withAccept.headers.authorization, [`Bearer ${d.secrets.stripe}`]);
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});

// =================================================================================================

describe('upstream: broken vendors', () => {
  let up; // raw vendor behind stripe
  let resetter; // accepts and resets every connection, behind openai
  let resetCount;
  let d;
  let token;
  let openaiToken;

  before(async () => {
    up = await new RawUpstream().start();
    resetCount = 0;
    resetter = net.createServer((sock) => {
      resetCount++;
      sock.on('error', () => {});
      sock.resetAndDestroy();
    });
    await new Promise((resolve) => resetter.listen(0, '127.0.0.1', resolve));
    d = await startDaemon({
      baseUrls: { stripe: up.url, openai: `http://127.0.0.1:${resetter.address().port}` },
      env: DAEMON_ENV,
    });
    token = await tokenFor(d, 'stripe', 'broken');
    openaiToken = await tokenFor(d, 'openai', 'broken-reset');
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (up) await up.close();
      if (resetter) await new Promise((resolve) => resetter.close(resolve));
    }
  });

  const get = (p) => d.proxy({ path: p, headers: { authorization: `Bearer ${token}` } });

  // The same request, written by hand with Connection: close, so whatever
  // the proxy answers (or cuts) ends with the connection.
  const rawGet = (p) =>
    rawRequest(
      d.proxyPort,
      `GET ${p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
      { timeoutMs: 30_000 },
    );

  // Not HTTP at all (a misconfigured base URL pointing at another service):
  // a clean error, never the garbage passed off as a vendor answer.
  it('garbage instead of a status line: 502 upstream_error', async () => {
    up.handler = (rec, conn) => conn.sock.end('SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n');
    const n = up.requests.length;
    const r = await get('/stripe/v1/garbage');
    assertError(r, 502, 'upstream_error');
    assert.ok(up.since(n).length >= 1, 'the request reached the vendor');
  });

  it('a malformed status line (HTTP/1.1 2x0): 502 upstream_error', async () => {
    up.handler = (rec, conn) => conn.sock.end('HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}');
    const r = await get('/stripe/v1/bad_status');
    assertError(r, 502, 'upstream_error');
  });

  // The line grammar is net/h1.c, shared with the server: a vendor's head
  // is held to the same rules as a client's.
  for (const [what, head] of [
    ['a control byte in a header value', 'HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\n{}'],
    ['a folded header line', 'HTTP/1.1 200 OK\r\nX-A: a\r\n  b\r\nContent-Length: 2\r\n\r\n{}'],
    ['a space before a field\'s colon', 'HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n{}'],
  ]) {
    it(`${what}: 502 upstream_error`, async () => {
      up.handler = (rec, conn) => conn.sock.end(head);
      assertError(await get('/stripe/v1/bad_head'), 502, 'upstream_error');
    });
  }
  // a bad chunk-size line comes after the head went out: the answer is cut
  for (const [what, body] of [
    ['a blank before a chunk extension', '2 ;x\r\n{}\r\n0\r\n\r\n'],
    ['a 16-digit chunk size', '0000000000000002\r\n{}\r\n0\r\n\r\n'],
  ]) {
    it(`${what}: the client never gets a whole answer`, async () => {
      up.handler = (rec, conn) => conn.sock.end(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body}`);
      await assert.rejects(get('/stripe/v1/bad_chunk'), /aborted|socket hang up|ECONNRESET/);
    });
  }

  // A connection that dies mid-body: the SDK must not take a short body
  // for a whole one (a truncated JSON list looks valid to nobody, a
  // truncated file does). Either the proxy answers an error, or it passes
  // the head on and then cuts the connection short of the promised length.
  it('the vendor closes halfway through a Content-Length body: the client never gets a whole answer', async () => {
    const full = 'A'.repeat(100);
    up.handler = (rec, conn) => {
      conn.sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${full.length}\r\n\r\n`);
      conn.sock.end(full.slice(0, 50));
    };
    const n = up.requests.length;
    const r = await rawGet('/stripe/v1/half');
    assert.ok(r.closed, 'the proxy closed the connection');
    const p = parseRawResponse(r.text);
    if (p.status === 502) {
      assert.equal(p.headers['keybrake-error'], 'upstream_error', r.text);
    } else {
      assert.equal(p.status, 200, r.text);
      assert.equal(p.complete, false, `a short body must not look whole: ${JSON.stringify(r.text)}`);
      assert.ok(p.body.length <= 50);
      assert.ok(full.startsWith(p.body));
    }
    assert.equal(up.since(n).length, 1);
  });

  it('the vendor closes in the middle of a chunked body: the client sees no last chunk', async () => {
    up.handler = (rec, conn) => {
      conn.sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n');
      conn.sock.end('5\r\nhello\r\n10\r\nonly eight');
    };
    const r = await rawGet('/stripe/v1/half_chunked');
    assert.ok(r.closed, 'the proxy closed the connection');
    const p = parseRawResponse(r.text);
    if (p.status === 502) {
      assert.equal(p.headers['keybrake-error'], 'upstream_error', r.text);
    } else {
      assert.equal(p.status, 200, r.text);
      assert.equal(p.complete, false, `a cut stream must not look whole: ${JSON.stringify(r.text)}`);
      assert.ok(p.body.startsWith('hello') || p.body === '', p.body);
    }
  });

  // Transfer-Encoding overrides Content-Length, and an intermediary that
  // forwards such an answer MUST drop the Content-Length (RFC 9112 6.3):
  // passing on "Content-Length: 5" with the 11 decoded bytes leaves 6 stray
  // bytes that a keep-alive client reads as the start of its next response.
  it(
    'Content-Length together with chunked: chunked wins, the length is dropped, no stray bytes',
    async () => {
      up.handler = (rec, conn) =>
        conn.sock.write(
          'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n' +
            'b\r\nhello world\r\n0\r\n\r\n',
        );
      const r = await rawGet('/stripe/v1/cl_and_te');
      const p = parseRawResponse(r.text);
      // chunked wins: the body is forwarded whole, without the stray length
      assert.equal(p.status, 200, r.text);
      assert.equal(p.body, 'hello world', r.text);
      assert.equal(p.complete, true, r.text);
      assert.equal(p.headers['content-length'], undefined, r.text);
      assert.ok(r.text.endsWith(p.headers['transfer-encoding'] === 'chunked' ? '0\r\n\r\n' : 'hello world'),
        `bytes after the framed body: ${JSON.stringify(r.text)}`);
    },
  );

  // A Content-Length that is not one number leaves the body length
  // ambiguous; a proxy MUST answer 502 and drop the connection (RFC 9112
  // 6.3), not guess and pass the ambiguity on to the client.
  it(
    'conflicting or malformed Content-Length (5 and 6; "5x"): 502 upstream_error',
    async () => {
      for (const fields of ['Content-Length: 5\r\nContent-Length: 6', 'Content-Length: 5x']) {
        up.handler = (rec, conn) => conn.sock.write(`HTTP/1.1 200 OK\r\n${fields}\r\n\r\nhello!`);
        const r = await get('/stripe/v1/bad_length');
        assertError(r, 502, 'upstream_error', fields);
      }
    },
  );

  // Identical repeated values may be read as one (RFC 9110 8.6); the
  // client must then see one valid Content-Length, not the vendor's list.
  it(
    'repeated identical Content-Length: one Content-Length: 5 reaches the client; "5, 5" is a 502',
    async () => {
      for (const fields of ['Content-Length: 5\r\nContent-Length: 5', 'Content-Length: 5, 5']) {
        up.handler = (rec, conn) => conn.sock.write(`HTTP/1.1 200 OK\r\n${fields}\r\n\r\nhello`);
        const r = await rawGet('/stripe/v1/same_length');
        const p = parseRawResponse(r.text);
        // a list value is not one number: refused like any malformed length
        if (fields.includes(',')) {
          assert.equal(p.status, 502, r.text);
          continue;
        }
        assert.equal(p.status, 200, r.text);
        const lengths = r.text.split('\r\n\r\n')[0].split('\r\n').filter((l) => /^content-length:/i.test(l));
        assert.deepEqual(lengths, ['Content-Length: 5'], `${fields}: ${JSON.stringify(r.text)}`);
        assert.equal(p.body, 'hello');
      }
    },
  );

  // A Transfer-Encoding whose last coding is not chunked frames the body
  // by the connection's end, and overrides any Content-Length (RFC 9112
  // 6.3): the length must neither frame the body nor reach the client.
  it('Transfer-Encoding other than chunked beside a Content-Length: the body runs to the close', async () => {
    up.handler = (rec, conn) =>
      conn.sock.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\nabcdef');
    const r = await rawGet('/stripe/v1/te_gzip');
    const p = parseRawResponse(r.text);
    assert.equal(p.status, 200, r.text);
    assert.equal(p.headers['content-length'], undefined, r.text);
    assert.equal(p.body, 'abcdef', r.text);
    assert.equal(p.complete, true, r.text);
  });

  // 1xx answers are allowed before the final one, but not without end: a
  // vendor sending them forever would hold the request past every timeout.
  it('up to 16 interim 1xx blocks are skipped; a 17th is a 502 upstream_error', async () => {
    const interim = (n) => 'HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n'.repeat(n);
    up.handler = (rec, conn) => conn.sock.write(interim(16) + response(200, { 'Content-Type': 'text/plain' }, 'fine'));
    const ok = await get('/stripe/v1/interim16');
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.text, 'fine');
    up.handler = (rec, conn) => conn.sock.write(interim(17) + response(200, { 'Content-Type': 'text/plain' }, 'late'));
    assertError(await get('/stripe/v1/interim17'), 502, 'upstream_error');
  });

  // The proxy read the request, the vendor hung up without a word.
  it('the vendor closes without answering: 502 upstream_error', async () => {
    up.handler = (rec, conn) => conn.sock.end();
    const n = up.requests.length;
    const r = await get('/stripe/v1/no_answer');
    assertError(r, 502, 'upstream_error');
    assert.ok(up.since(n).length >= 1);
  });

  // A TCP reset right after accept (an overloaded or misconfigured vendor
  // front end).
  it('the vendor accepts the connection and resets it at once: 502', async () => {
    const r = await d.proxy({
      path: '/openai/v1/models',
      headers: { authorization: `Bearer ${openaiToken}` },
    });
    // the TCP connection was made, then failed: not "could not be reached"
    assertError(r, 502, 'upstream_error');
    assert.ok(resetCount >= 1, 'the vendor was reached');
  });

  // After all that, the pool holds nothing broken: an ordinary answer works.
  it('a healthy answer afterwards is forwarded normally', async () => {
    up.handler = (rec, conn) => conn.sock.write(okText('fine'));
    for (let i = 0; i < WORKERS * 2; i++) {
      const r = await get('/stripe/v1/healthy');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, 'fine');
    }
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});
