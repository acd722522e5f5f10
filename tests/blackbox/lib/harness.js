'use strict';
// lib/harness.js - start the real keybrake binary for a black-box test and talk to it.
//
// startDaemon() spawns `keybrake serve` configured by environment only: a fresh
// temporary data dir, both listeners on 127.0.0.1:0, an admin token, vendor
// secrets generated for this run (never a committed fixture) and base URLs
// pointing at the mock vendors. It waits for the one `keybrake: ready ...` line
// on stdout (bounded, no sleeps), parses the ports, and collects all
// stdout+stderr so a test can check the logs. daemon.stop() sends SIGTERM by
// pid, awaits the exit and asserts exit code 0: a sanitizer report makes the
// exit code non-zero and so fails the test.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '../../..');
const BIN = process.env.KEYBRAKE_BIN
  ? path.resolve(process.env.KEYBRAKE_BIN)
  : path.join(REPO, 'build/keybrake');

// Generous: a sanitizer build starts slowly on a loaded 2-core machine.
const READY_TIMEOUT_MS = Number(process.env.KEYBRAKE_TEST_READY_TIMEOUT_MS || 20_000);
const STOP_TIMEOUT_MS = Number(process.env.KEYBRAKE_TEST_STOP_TIMEOUT_MS || 20_000);

const READY_RE = /^keybrake: ready proxy=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)$/;
const TOKEN_WRITTEN_RE = /^keybrake: admin token written to (.+)$/;

function hex(n) {
  return crypto.randomBytes(n).toString('hex');
}

// Every vendor secret any daemon of this process was given: the suite-wide
// canary. request() fails a test whose response (body or header) contains
// one, and stop()/kill() fail when the daemon's log does.
const CANARIES = new Set();

function findCanary(text) {
  for (const c of CANARIES) if (text.includes(c)) return c;
  return null;
}

// Vendor secrets for one test run. Made up, random, recognisable in a dump.
function makeSecrets() {
  return {
    stripe: 'sk_test_mockstripe_' + hex(12),
    openai: 'sk-proj-mockopenai' + hex(12),
    anthropic: 'sk-ant-api03-mockanthropic' + hex(12),
    twilioSid: 'AC' + hex(16),
    twilioToken: 'mocktwilio' + hex(11),
  };
}

function uniquePrefix(name) {
  return `${name}-${hex(4)}-`;
}

function mkTempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'keybrake-bb-'));
}

function rmTempDir(dir) {
  if (dir && dir.startsWith(os.tmpdir())) fs.rmSync(dir, { recursive: true, force: true });
}

// A loopback port nothing listens on: bind port 0, read it, close it.
async function closedPort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

// ---- HTTP -----------------------------------------------------------------------------------

// One HTTP/1.1 request on a fresh connection (no agent reuse, so what a test
// sends is exactly what goes on the wire). Resolves with
// { status, headers, rawHeaders, body: Buffer, text, json } where json is the
// parsed body or undefined.
function request({ port, method = 'GET', path: p = '/', headers = {}, body, timeoutMs = 30_000 }) {
  return new Promise((resolve, reject) => {
    const buf = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body);
    const h = { ...headers };
    if (buf !== undefined && !Object.keys(h).some((k) => k.toLowerCase() === 'content-length')) {
      h['content-length'] = String(buf.length);
    }
    const req = http.request(
      { host: '127.0.0.1', port, method, path: p, headers: h, agent: false },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const b = Buffer.concat(chunks);
          const text = b.toString('utf8');
          const leaked = findCanary(text) || findCanary(res.rawHeaders.join('\n'));
          if (leaked) {
            reject(new Error(`a vendor secret leaked into a response to ${method} ${p}`));
            return;
          }
          let json;
          try {
            json = text.length ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({
            status: res.statusCode,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body: b,
            text,
            json,
          });
        });
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`request timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (buf !== undefined) req.write(buf);
    req.end();
  });
}

// Starts a request and resolves with the live response as soon as its headers
// arrive, for streaming tests: { res, status, headers, readUntil(pred), rest() }.
function streamRequest({ port, method = 'GET', path: p = '/', headers = {}, body }) {
  return new Promise((resolve, reject) => {
    const buf = body === undefined ? undefined : Buffer.from(body);
    const h = { ...headers };
    if (buf !== undefined) h['content-length'] = String(buf.length);
    const req = http.request(
      { host: '127.0.0.1', port, method, path: p, headers: h, agent: false },
      (res) => {
        let received = '';
        let ended = false;
        const waiters = [];
        const wake = () => {
          for (const w of waiters.splice(0)) w();
        };
        res.setEncoding('utf8');
        res.on('data', (c) => {
          received += c;
          wake();
        });
        res.on('end', () => {
          ended = true;
          wake();
        });
        res.on('error', (e) => {
          ended = true;
          wake();
          reject(e);
        });
        const readUntil = async (pred) => {
          for (;;) {
            if (pred(received)) return received;
            if (ended) throw new Error(`stream ended before condition; got: ${JSON.stringify(received)}`);
            await new Promise((r) => waiters.push(r));
          }
        };
        resolve({
          req,
          res,
          status: res.statusCode,
          headers: res.headers,
          readUntil,
          received: () => received,
          rest: async () => {
            while (!ended) await new Promise((r) => waiters.push(r));
            return received;
          },
        });
      },
    );
    req.on('error', reject);
    if (buf !== undefined) req.write(buf);
    req.end();
  });
}

// Asserts a Keybrake error answer: status, JSON {code, message}, Keybrake-Error header.
function assertError(res, status, code, msg = '') {
  const where = `${msg ? msg + ': ' : ''}got ${res.status} ${res.text}`;
  assert.equal(res.status, status, where);
  assert.ok(res.json && typeof res.json === 'object', `error body is not JSON: ${where}`);
  assert.equal(res.json.code, code, where);
  assert.equal(typeof res.json.message, 'string', `message must be a string: ${where}`);
  assert.ok(res.json.message.length > 0, `message must not be empty: ${where}`);
  assert.equal(res.headers['keybrake-error'], code, `Keybrake-Error header: ${where}`);
  assert.match(String(res.headers['content-type'] || ''), /^application\/json/, where);
}

// ---- admin client -----------------------------------------------------------------------------

class AdminClient {
  constructor(port, token) {
    this.port = port;
    this.token = token;
  }

  // { status, headers, text, json }. opts.token overrides the admin token;
  // opts.token === null sends no Authorization header; opts.auth sets it raw.
  async req(method, p, body, opts = {}) {
    const headers = { ...(opts.headers || {}) };
    if (opts.auth !== undefined) headers.authorization = opts.auth;
    else {
      const tok = opts.token === undefined ? this.token : opts.token;
      if (tok !== null) headers.authorization = `Bearer ${tok}`;
    }
    let raw;
    if (body !== undefined) {
      raw = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
      if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) {
        headers['content-type'] = 'application/json';
      }
    }
    return request({ port: this.port, method, path: p, headers, body: raw });
  }

  get(p, opts) {
    return this.req('GET', p, undefined, opts);
  }
  post(p, body, opts) {
    return this.req('POST', p, body, opts);
  }
  del(p, opts) {
    return this.req('DELETE', p, undefined, opts);
  }
}

// Default allow-lists: everything under the vendor's API root.
const DEFAULT_ENDPOINTS = {
  stripe: ['/v1/*'],
  openai: ['/v1/*'],
  anthropic: ['/v1/*'],
  twilio: ['/2010-04-01/*'],
};

// ---- the daemon -----------------------------------------------------------------------------

class Daemon {
  constructor() {
    this.stdout = '';
    this.stderr = '';
    this.stdoutLines = [];
    this.exited = false;
    this.exitCode = null;
    this.exitSignal = null;
  }

  output() {
    return `--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`;
  }

  // Issues a vault key; asserts 201 and returns the key object (with token).
  async issueKey(spec = {}) {
    const vendor = spec.vendor || 'stripe';
    const body = {
      label: spec.label || uniquePrefix('key'),
      vendor,
      allowed_endpoints: spec.allowed_endpoints || DEFAULT_ENDPOINTS[vendor] || ['/*'],
      daily_usd_cap: spec.daily_usd_cap === undefined ? 1000 : spec.daily_usd_cap,
      expires_in: spec.expires_in === undefined ? '1h' : spec.expires_in,
    };
    if (spec.metadata !== undefined) body.metadata = spec.metadata;
    if (spec.allowed_accounts !== undefined) body.allowed_accounts = spec.allowed_accounts;
    const res = await this.admin.post('/v1/keys', body);
    assert.equal(res.status, 201, `issue key ${JSON.stringify(body)}: ${res.status} ${res.text}`);
    return res.json;
  }

  // Proxy request helper: { port: proxy } filled in.
  proxy(opts) {
    return request({ port: this.proxyPort, ...opts });
  }

  // Last-resort cleanup after a failed test: SIGKILL; still checks the canary.
  async kill() {
    if (!this.exited) {
      this.child.kill('SIGKILL');
      await this.exitPromise;
    }
    if (this.cleanupDataDir) rmTempDir(this.dataDir);
    this.assertNoSecretInLog();
  }

  assertNoSecretInLog() {
    assert.equal(findCanary(this.stdout + this.stderr), null, 'a vendor secret reached the log');
  }

  signal(sig) {
    if (!this.exited) process.kill(this.child.pid, sig);
  }

  // SIGTERM by pid, await exit (bounded), assert exit code 0 with no signal.
  async stop({ expectCode = 0 } = {}) {
    if (!this.exited) {
      this.signal('SIGTERM');
      await this.waitExit(STOP_TIMEOUT_MS);
    }
    if (this.cleanupDataDir) rmTempDir(this.dataDir);
    this.assertNoSecretInLog();
    assert.equal(
      this.exitSignal,
      null,
      `daemon killed by signal ${this.exitSignal}\n${this.output()}`,
    );
    assert.equal(this.exitCode, expectCode, `daemon exit code ${this.exitCode}\n${this.output()}`);
    return { code: this.exitCode, signal: this.exitSignal };
  }

  // Resolves when the process has exited; SIGKILLs and throws after timeoutMs.
  async waitExit(timeoutMs = STOP_TIMEOUT_MS) {
    if (this.exited) return;
    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const r = await Promise.race([this.exitPromise, timedOut]);
    clearTimeout(timer);
    if (r === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exitPromise;
      throw new Error(`daemon did not exit within ${timeoutMs} ms\n${this.output()}`);
    }
  }
}

// KEYBRAKE_TEST_STORE=postgres: every daemon on its own PostgreSQL database
// (the black-box suite's second pass in `make test`).
const PG_MODE = process.env.KEYBRAKE_TEST_STORE === 'postgres';

// What a CLI run against a daemon's data dir needs beside KEYBRAKE_DATA_DIR
// to find its store ({} on the embedded SQLite file).
function storeEnv(dataDir) {
  const keep = path.join(dataDir, '.test-store-url');
  return fs.existsSync(keep) ? { KEYBRAKE_STORE_URL: fs.readFileSync(keep, 'utf8') } : {};
}

// For it()'s skip option: a test of the embedded SQLite file itself (it
// reads or edits the file, fills its disk, ...) says why it does not run
// on PostgreSQL; false on SQLite.
function sqliteOnly(why) {
  return PG_MODE ? `SQLite only: ${why}` : false;
}

// Starts `keybrake serve`. Options:
//   args         extra arguments after `serve` (e.g. ['--config', file])
//   dataDir      reuse a data dir (restart tests); default a fresh temp dir,
//                removed by stop() unless keepDataDir
//   adminToken   the admin token; null leaves KEYBRAKE_ADMIN_TOKEN unset
//   mocks        result of startMockVendors(): base URLs point at them
//   baseUrls     per-vendor base URL overrides { stripe: 'http://127.0.0.1:1' }
//   secrets      makeSecrets() result; a vendor set to null leaves it unconfigured
//   env          extra environment (wins over everything)
async function startDaemon(opts = {}) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`keybrake binary not found at ${BIN} (build it, or set KEYBRAKE_BIN)`);
  }
  const d = new Daemon();
  d.dataDir = opts.dataDir || mkTempDir();
  d.cleanupDataDir = !opts.dataDir && !opts.keepDataDir;
  d.adminToken = opts.adminToken === undefined ? 'kba_test_' + hex(16) : opts.adminToken;
  d.secrets = opts.secrets || makeSecrets();
  // the account SID is an identifier (it is in Twilio's URLs), not a secret
  for (const [k, v] of Object.entries(d.secrets)) if (v && k !== 'twilioSid') CANARIES.add(v);

  // Start from the runner's environment minus anything that would configure
  // the daemon behind the test's back (sanitizer options pass through).
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('KEYBRAKE_') || /^(STRIPE|OPENAI|ANTHROPIC|TWILIO)_/.test(k)) continue;
    env[k] = v;
  }
  Object.assign(env, {
    KEYBRAKE_DATA_DIR: d.dataDir,
    KEYBRAKE_PROXY_LISTEN: '127.0.0.1:0',
    KEYBRAKE_ADMIN_LISTEN: '127.0.0.1:0',
    KEYBRAKE_WORKERS: '2',
    KEYBRAKE_LOG_LEVEL: 'debug',
  });
  if (d.adminToken !== null) env.KEYBRAKE_ADMIN_TOKEN = d.adminToken;
  const s = d.secrets;
  if (s.stripe) env.STRIPE_SECRET_KEY = s.stripe;
  if (s.openai) env.OPENAI_API_KEY = s.openai;
  if (s.anthropic) env.ANTHROPIC_API_KEY = s.anthropic;
  if (s.twilioSid) env.TWILIO_ACCOUNT_SID = s.twilioSid;
  if (s.twilioToken) env.TWILIO_AUTH_TOKEN = s.twilioToken;
  const base = { ...(opts.baseUrls || {}) };
  for (const v of ['stripe', 'openai', 'anthropic', 'twilio']) {
    if (!base[v] && opts.mocks && opts.mocks[v]) base[v] = opts.mocks[v].url;
    if (base[v]) env[`KEYBRAKE_${v.toUpperCase()}_BASE_URL`] = base[v];
  }
  // KEYBRAKE_TEST_STORE=postgres runs every daemon on its own PostgreSQL
  // database (lib/pg.js), kept with the data dir so that a restart on the
  // same data dir finds the same store
  if (PG_MODE && !(opts.env && 'KEYBRAKE_STORE_URL' in opts.env)) {
    const keep = path.join(d.dataDir, '.test-store-url');
    if (!fs.existsSync(keep)) fs.writeFileSync(keep, require('./pg').freshDb().url);
    env.KEYBRAKE_STORE_URL = fs.readFileSync(keep, 'utf8');
  }
  Object.assign(env, opts.env || {});
  d.env = env;

  const child = spawn(BIN, ['serve', ...(opts.args || [])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  d.child = child;
  d.pid = child.pid;
  d.exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      d.exited = true;
      d.exitCode = code;
      d.exitSignal = signal;
      resolve();
    });
  });

  let partial = '';
  const lineWaiters = [];
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (c) => {
    d.stdout += c;
    partial += c;
    let i;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i).replace(/\r$/, '');
      partial = partial.slice(i + 1);
      d.stdoutLines.push(line);
      for (const w of lineWaiters.slice()) w(line);
    }
  });
  const stderrWaiters = [];
  child.stderr.on('data', (c) => {
    d.stderr += c;
    for (const w of stderrWaiters.slice()) w();
  });
  // Resolves once stderr, from byte `from` on (default: now), matches re.
  d.waitForStderr = (re, from = d.stderr.length) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const m = re.exec(d.stderr.slice(from));
        if (!m) return false;
        stderrWaiters.splice(stderrWaiters.indexOf(check), 1);
        resolve(m);
        return true;
      };
      stderrWaiters.push(check);
      if (!check()) d.exitPromise.then(() => reject(new Error(`daemon exited before ${re}\n${d.output()}`)));
    });

  let timer;
  const ready = await new Promise((resolve, reject) => {
    const onLine = (line) => {
      const m = READY_RE.exec(line);
      if (m) resolve({ proxyPort: Number(m[1]), adminPort: Number(m[2]) });
    };
    lineWaiters.push(onLine);
    d.exitPromise.then(() =>
      reject(
        new Error(
          `daemon exited (code ${d.exitCode}, signal ${d.exitSignal}) before ready\n${d.output()}`,
        ),
      ),
    );
    child.on('error', reject);
    timer = setTimeout(
      () => reject(new Error(`daemon not ready within ${READY_TIMEOUT_MS} ms\n${d.output()}`)),
      READY_TIMEOUT_MS,
    );
  }).catch(async (e) => {
    clearTimeout(timer);
    if (!d.exited) {
      child.kill('SIGKILL');
      await d.exitPromise;
    }
    if (d.cleanupDataDir) rmTempDir(d.dataDir);
    throw e;
  });
  clearTimeout(timer);

  d.proxyPort = ready.proxyPort;
  d.adminPort = ready.adminPort;
  d.proxyUrl = `http://127.0.0.1:${d.proxyPort}`;
  d.adminUrl = `http://127.0.0.1:${d.adminPort}`;
  for (const line of d.stdoutLines) {
    const m = TOKEN_WRITTEN_RE.exec(line);
    if (m) d.tokenWrittenTo = m[1];
  }
  if (d.adminToken === null && d.tokenWrittenTo) {
    d.adminToken = fs.readFileSync(d.tokenWrittenTo, 'utf8').trim();
  }
  d.admin = new AdminClient(d.adminPort, d.adminToken);
  return d;
}

// Awaits until `Date.now()` passes `ms` (epoch milliseconds): waiting on the
// clock in short steps, bounded by `maxWaitMs`, not a fixed sleep.
async function waitUntilClock(ms, maxWaitMs = 30_000) {
  const deadline = Date.now() + maxWaitMs;
  while (Date.now() < ms) {
    if (Date.now() > deadline) throw new Error(`clock did not reach ${new Date(ms).toISOString()}`);
    await new Promise((r) => setTimeout(r, Math.min(100, Math.max(1, ms - Date.now()))));
  }
}

// Polls `fn` (async, returns truthy when done) in short steps, bounded.
async function waitFor(fn, { timeoutMs = 10_000, stepMs = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

// True when `needle` (string) occurs anywhere in a recorded request: URL,
// any header name or value, or the body (raw and URL-decoded).
function recordContains(rec, needle) {
  const hay = [rec.url, ...rec.rawHeaders, rec.bodyText];
  try {
    hay.push(decodeURIComponent(rec.url));
  } catch {
    /* not decodable: raw form already checked */
  }
  try {
    hay.push(decodeURIComponent(rec.bodyText.replace(/\+/g, ' ')));
  } catch {
    /* idem */
  }
  hay.push(rec.body.toString('latin1'));
  // Basic credentials carry the token base64-encoded: decode them too.
  for (let i = 1; i < rec.rawHeaders.length; i += 2) {
    const m = /^\s*basic\s+(\S+)/i.exec(rec.rawHeaders[i]);
    if (m) hay.push(Buffer.from(m[1], 'base64').toString('latin1'));
  }
  return hay.some((h) => h.includes(needle));
}

// Header values (all occurrences) of `name` in a raw header list.
function rawHeaderValues(rawHeaders, name) {
  const out = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === name.toLowerCase()) out.push(rawHeaders[i + 1]);
  }
  return out;
}

// Sends raw bytes (a string or a list of strings, written one after the
// other) and resolves with everything the server sent back, once it closed
// the connection (or after `timeoutMs`: a bounded read, not
// synchronisation; callers expecting the server to close check `closed`).
function rawRequest(port, bytes, { timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    sock.setTimeout(timeoutMs, () => {
      sock.destroy();
      resolve({ text: got, closed: false });
    });
    sock.on('data', (c) => (got += c.toString('latin1')));
    sock.on('end', () => resolve({ text: got, closed: true }));
    sock.on('close', () => resolve({ text: got, closed: true }));
    sock.on('error', (e) => (e.code === 'ECONNRESET' ? resolve({ text: got, closed: true, reset: true }) : reject(e)));
    for (const b of [].concat(bytes)) sock.write(b);
  });
}

// The value of Prometheus sample `name` (a whole line's name, labels
// included) in /metrics text; fails the test when it is absent.
function metric(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} missing from /metrics`);
  return Number(line.slice(name.length + 1));
}

// The status code of the first response in raw text, 0 if none.
function statusOf(text) {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  return m ? Number(m[1]) : 0;
}

function basic(user, pass) {
  return 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');
}

const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

module.exports = {
  PG_MODE,
  storeEnv,
  sqliteOnly,
  BIN,
  REPO,
  AdminClient,
  Daemon,
  DEFAULT_ENDPOINTS,
  RFC3339_UTC,
  assertError,
  basic,
  closedPort,
  hex,
  makeSecrets,
  metric,
  mkTempDir,
  rawHeaderValues,
  rawRequest,
  recordContains,
  request,
  rmTempDir,
  startDaemon,
  statusOf,
  streamRequest,
  uniquePrefix,
  waitFor,
  waitUntilClock,
};
