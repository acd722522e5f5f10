'use strict';
// Helpers of hunt_trust*.test.js: the audit chain hash computed outside the
// daemon (what a forger without the server key can do), direct edits of the
// SQLite store, and raw proxy requests.

const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const { BIN, mkTempDir, storeEnv } = require('./harness');

// ---- helpers ----------------------------------------------------------------------------------

function verify(dataDir, extra = []) {
  const r = spawnSync(BIN, ['audit', 'verify', ...extra], {
    env: { ...process.env, KEYBRAKE_DATA_DIR: dataDir, ...storeEnv(dataDir) },
    encoding: 'utf8',
  });
  return { code: r.status, out: r.stdout + r.stderr };
}

function sql(dataDir, q) {
  return execFileSync('sqlite3', [path.join(dataDir, 'keybrake.db'), q], { encoding: 'utf8' }).trim();
}

function copyStore(from) {
  const to = mkTempDir();
  for (const f of fs.readdirSync(from)) {
    if (f === 'keybrake.db' || f === 'server.key' || f.startsWith('keybrake.db-')) {
      fs.copyFileSync(path.join(from, f), path.join(to, f));
    }
  }
  return to;
}

// The chain hash of docs/audit.md ("The chain"), computed outside the daemon:
// what a forger without the server key can do.
function be64(v) {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(v));
  return b;
}
function hI(v) {
  return Buffer.concat([Buffer.from('I'), be64(v === null || v === undefined ? 0 : v)]);
}
function hT(s) {
  if (s === null || s === undefined) return Buffer.from('N');
  const t = Buffer.from(String(s), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(t.length);
  return Buffer.concat([Buffer.from('T'), len, t]);
}
function recHash(prev, r) {
  const parts = [
    prev,
    Buffer.from('KBA1'),
    hI(r.seq),
    hI(r.ref_seq || 0),
    hI(r.kind),
    hI(r.ts_ms),
    hT(r.request_id),
    hT(r.action),
    hT(r.key_id),
    hT(r.label),
    hT(r.vendor),
    hT(r.method),
    hT(r.path),
    hT(r.decision),
    hT(r.code),
    hI(r.status),
    hI(r.reserved_micros),
    hI(r.settled_micros),
    hI(r.latency_us),
    hI(r.bytes_in),
    hI(r.bytes_out),
    hT(r.detail),
  ];
  if (r.tenant_id !== null && r.tenant_id !== undefined) parts.push(Buffer.from('t'), hT(r.tenant_id));
  return crypto.createHash('sha256').update(Buffer.concat(parts)).digest();
}

// Every audit row of a store, as JSON (sqlite3 -json), in seq order.
function rows(dataDir) {
  const out = execFileSync(
    'sqlite3',
    ['-json', path.join(dataDir, 'keybrake.db'), 'SELECT *, hex(hash) AS hexhash FROM audit ORDER BY seq'],
    { encoding: 'utf8' },
  );
  return out.trim() ? JSON.parse(out) : [];
}

function sqlStr(v) {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'number') return String(v);
  return `'${String(v).replace(/'/g, "''")}'`;
}

// Rewrites record `from` with `change(row)` and every later record with a
// recomputed chain hash, as a forger without the server key would.
function rewriteChain(dataDir, from, change) {
  const all = rows(dataDir);
  let prev = Buffer.alloc(32);
  const stmts = ['BEGIN;'];
  for (const r of all) {
    // the forger's hash function is the daemon's: untouched records agree
    if (r.seq <= from) assert.equal(recHash(prev, r).toString('hex'), r.hexhash.toLowerCase(), `recomputed hash of ${r.seq}`);
    if (r.seq === from) change(r);
    if (r.seq >= from) {
      const h = recHash(prev, r);
      const sets = Object.keys(r)
        .filter((k) => k !== 'hash' && k !== 'hexhash' && k !== 'seq')
        .map((k) => `${k} = ${sqlStr(r[k])}`);
      stmts.push(`UPDATE audit SET ${sets.join(', ')}, hash = X'${h.toString('hex')}' WHERE seq = ${r.seq};`);
      prev = h;
    } else {
      prev = Buffer.from(r.hexhash, 'hex');
    }
  }
  stmts.push('COMMIT;');
  execFileSync('sqlite3', [path.join(dataDir, 'keybrake.db')], { input: stmts.join('\n'), encoding: 'utf8' });
}

function pay(d, token, cents = 100, extraHeaders = {}) {
  return d.proxy({
    method: 'POST',
    path: '/stripe/v1/payment_intents',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/x-www-form-urlencoded',
      ...extraHeaders,
    },
    body: `amount=${cents}&currency=usd`,
  });
}

async function allAudit(d, query = '', token) {
  const out = [];
  let cursor = null;
  for (let pages = 0; pages < 1000; pages++) {
    const r = await d.admin.get(
      `/v1/audit?${query}${query ? '&' : ''}limit=7${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      token ? { token } : undefined,
    );
    assert.equal(r.status, 200, r.text);
    out.push(...r.json.data);
    if (!r.json.next_cursor) return out;
    cursor = r.json.next_cursor;
  }
  throw new Error('audit paging did not end');
}

function patch(d, p, body, token) {
  return d.admin.req('PATCH', p, body, token ? { token } : undefined);
}

// ---- revocation of queued, pipelined and held requests -------------------------------------

// Opens a raw connection; collects what comes back.
function rawConn(port) {
  const sock = net.connect(port, '127.0.0.1');
  const c = { sock, text: '', closed: false };
  sock.on('data', (b) => (c.text += b.toString('latin1')));
  sock.on('close', () => (c.closed = true));
  sock.on('error', () => (c.closed = true));
  return c;
}

function rawPay(token, i, extra = '') {
  const body = `amount=100&currency=usd`;
  return (
    `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n` +
    `X-Probe: ${i}\r\n${extra}\r\n${body}`
  );
}

function statuses(text) {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
}

module.exports = { verify, sql, copyStore, recHash, rows, sqlStr, rewriteChain, pay, allAudit, patch, rawConn, rawPay, statuses };
