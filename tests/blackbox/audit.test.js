'use strict';
// audit.test.js - the audit log (issue 5): every request, allowed or refused
// for each reason or failed upstream, has exactly one complete record with
// the right fields, findable by its Keybrake-Request-Id; an unwritable audit
// store refuses to forward (503 audit_unavailable) and recovers by itself;
// `keybrake audit verify` passes untouched and names the record after an
// edit, a deletion or an insertion made directly in the database file; a
// kill -9 mid-burst leaves a chain that verifies, with a record for every
// answer a client saw.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { BIN, sqliteOnly, storeEnv, assertError, closedPort, makeSecrets, mkTempDir, rmTempDir, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

function verify(dataDir) {
  const r = spawnSync(BIN, ['audit', 'verify'], { env: { ...process.env, KEYBRAKE_DATA_DIR: dataDir, ...storeEnv(dataDir) }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

function sql(dataDir, q) {
  return execFileSync('sqlite3', [path.join(dataDir, 'keybrake.db'), q], { encoding: 'utf8' }).trim();
}

async function allRecords(d, query = '') {
  const out = [];
  let cursor = null;
  for (;;) {
    const r = await d.admin.get(`/v1/audit?limit=200${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(r.status, 200, r.text);
    out.push(...r.json.data);
    if (!r.json.next_cursor) return out;
    cursor = r.json.next_cursor;
  }
}

describe('audit log', () => {
  let mocks;
  let d;
  let dataDir;
  let failFlag; // while this file exists, the test build fails audit appends

  before(async () => {
    mocks = await startMockVendors();
    dataDir = mkTempDir();
    failFlag = path.join(mkTempDir(), 'fail-audit');
    d = await startDaemon({
      mocks,
      dataDir,
      env: { KEYBRAKE_UPSTREAM_TIMEOUT: '1', KEYBRAKE_AUDIT_CHECKPOINT_EVERY: '5', KEYBRAKE_TEST_FAIL_AUDIT: failFlag },
    });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
      rmTempDir(dataDir);
    }
  });

  beforeEach(() => mocks.reset());

  it('300 requests without a valid token cost a handful of audit records, not 300 durable writes', async () => {
    const sum = (recs) => recs.filter((r) => r.action === 'proxy.unauthenticated').reduce((n, r) => n + r.detail.count, 0);
    const first = await allRecords(d);
    const before = first.length;
    const base = sum(first);
    const bad = [];
    for (let i = 0; i < 300; i++) {
      const headers = i % 3 === 0 ? {} : { authorization: `Bearer kb_${'x'.repeat(46)}` };
      bad.push(d.proxy({ method: 'POST', path: '/stripe/v1/payment_intents', headers, body: 'amount=1' }));
    }
    for (const r of await Promise.all(bad)) assert.equal(r.status, 401);
    const counted = async () => sum(await allRecords(d)) - base >= 300;
    await waitFor(counted, { what: 'the 300 refusals in aggregated records' });
    const grown = (await allRecords(d)).length - before;
    assert.ok(grown <= 6, `${grown} new records for 300 refusals`);
  });

  it('every request of a mixed run has exactly one complete record with the right fields', async () => {
    const label = uniquePrefix('mixed');
    const key = await d.issueKey({ label, vendor: 'stripe', daily_usd_cap: 15, allowed_endpoints: ['POST /v1/payment_intents', 'GET /v1/payment_intents/*'] });
    const auth = { authorization: `Bearer ${key.token}` };
    const form = { ...auth, 'content-type': 'application/x-www-form-urlencoded' };
    const sent = [];
    const send = async (what, opts, expect) => {
      const r = await d.proxy(opts);
      assert.equal(r.status, expect.status, `${what}: ${r.text}`);
      assert.ok(r.headers['keybrake-request-id'], `${what}: no request id`);
      sent.push({ what, id: r.headers['keybrake-request-id'], ...expect });
    };
    await send('allowed', { method: 'POST', path: '/stripe/v1/payment_intents?expand[]=latest_charge', headers: form, body: 'amount=1000&currency=usd' }, { status: 200, decision: 'allowed', code: null, upstream: 200, settled: 10 });
    await send('read', { path: '/stripe/v1/payment_intents/pi_1', headers: auth }, { status: 200, decision: 'allowed', code: null, upstream: 200, settled: 0 });
    await send('cap', { method: 'POST', path: '/stripe/v1/payment_intents', headers: form, body: 'amount=1000&currency=usd' }, { status: 429, decision: 'refused', code: 'cap_exhausted' });
    await send('endpoint', { path: '/stripe/v1/customers', headers: auth }, { status: 403, decision: 'refused', code: 'endpoint_not_allowed' });
    // a request with no valid key is a stranger's: answered at once, recorded aggregated (below)
    const stranger = await d.proxy({ path: '/stripe/v1/customers', headers: { authorization: 'Bearer nope' } });
    assert.equal(stranger.status, 401);
    await send('path', { path: '/stripe/v1/%2e%2e/x', headers: auth }, { status: 400, decision: 'refused', code: 'bad_path' });
    mocks.stripe.setHang(true);
    await send('timeout', { path: '/stripe/v1/payment_intents/pi_2', headers: auth }, { status: 504, decision: 'allowed', code: 'upstream_timeout', upstream: null, settled: 0 });
    mocks.stripe.setHang(false);

    const records = await allRecords(d);
    assert.equal(records.filter((r) => r.request_id === stranger.headers['keybrake-request-id']).length, 0);
    // strangers' refusals become one record per source and interval
    const agg = await waitFor(async () => (await allRecords(d)).find((r) => r.action === 'proxy.unauthenticated'), {
      what: 'the aggregated record of unauthenticated refusals',
    });
    assert.equal(agg.kind, 'proxy');
    assert.equal(agg.decision, 'refused');
    assert.equal(agg.detail.source, '127.0.0.1');
    assert.ok(agg.detail.count >= 1 && agg.detail.codes.invalid_token >= 1, JSON.stringify(agg));
    assert.equal(agg.key_id, null);
    for (const s of sent) {
      const mine = records.filter((r) => r.request_id === s.id);
      assert.equal(mine.length, 1, `${s.what}: exactly one record, got ${JSON.stringify(mine)}`);
      const rec = mine[0];
      assert.equal(rec.decision, s.decision, s.what);
      assert.equal(rec.code, s.code, s.what);
      assert.equal(rec.completed, true, `${s.what}: complete`);
      // a refused path is not routed, so it has no vendor
      assert.equal(rec.vendor, s.what === 'path' ? null : 'stripe', s.what);
      if (s.what !== 'token' && s.what !== 'path') {
        assert.equal(rec.key_id, key.id, s.what);
        assert.equal(rec.label, label, s.what);
      }
      if (s.upstream !== undefined) {
        assert.equal(rec.status, s.upstream, s.what);
        assert.equal(rec.settled_usd, s.settled, s.what);
      }
      assert.ok(!String(rec.path).includes('?'), `${s.what}: no query in the path`);
    }
    const allowed = records.find((r) => r.request_id === sent[0].id);
    assert.equal(allowed.method, 'POST');
    assert.equal(allowed.path, '/v1/payment_intents');
    assert.equal(allowed.reserved_usd, 10);
    assert.equal(allowed.bytes_in, 'amount=1000&currency=usd'.length);
    assert.ok(allowed.bytes_out > 0);
    assert.ok(allowed.latency_ms >= 0);
    const text = JSON.stringify(records);
    assert.ok(!text.includes(key.token), 'no vault token in any record');
    assert.ok(!text.includes(d.secrets.stripe), 'no vendor secret in any record');
    // admin actions are recorded too
    assert.ok(records.some((r) => r.action === 'key.issued' && r.key_id === key.id));
  });

  it('GET /v1/audit filters by key, label prefix, vendor, decision and pages with a cursor', async () => {
    const label = uniquePrefix('filter');
    const key = await d.issueKey({ label, vendor: 'stripe', allowed_endpoints: ['GET /v1/payment_intents/*'] });
    for (let i = 0; i < 5; i++) {
      const r = await d.proxy({ path: `/stripe/v1/payment_intents/pi_${i}`, headers: { authorization: `Bearer ${key.token}` } });
      assert.equal(r.status, 200);
    }
    const denied = await d.proxy({ path: '/stripe/v1/charges', headers: { authorization: `Bearer ${key.token}` } });
    assert.equal(denied.status, 403);
    const byKey = await allRecords(d, `&key_id=${key.id}`);
    assert.ok(byKey.every((r) => r.key_id === key.id));
    assert.equal(byKey.filter((r) => r.kind === 'proxy' || r.action === 'proxy.request').length, 6);
    const refused = await allRecords(d, `&key_id=${key.id}&decision=refused`);
    assert.equal(refused.length, 1);
    assert.equal(refused[0].code, 'endpoint_not_allowed');
    const byLabel = await allRecords(d, `&label_prefix=${encodeURIComponent(label)}&vendor=stripe`);
    assert.ok(byLabel.length >= 6 && byLabel.every((r) => r.label.startsWith(label)));
    // paging: 2 at a time, every record once
    const seen = new Set();
    let cursor = null;
    for (let pages = 0; pages < 10; pages++) {
      const r = await d.admin.get(`/v1/audit?key_id=${key.id}&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      assert.equal(r.status, 200, r.text);
      assert.ok(r.json.data.length <= 2);
      for (const rec of r.json.data) {
        assert.ok(!seen.has(rec.seq), 'no record twice');
        seen.add(rec.seq);
      }
      cursor = r.json.next_cursor;
      if (!cursor) break;
    }
    assert.equal(seen.size, byKey.length);
  });

  // The test build's hook fails every audit append while its flag file
  // exists, as a full or read-only disk would (so this always runs).
  it('an unwritable audit store: 503 audit_unavailable, nothing forwarded; then it recovers', async () => {
    const key = await d.issueKey({ label: uniquePrefix('ro'), vendor: 'stripe', allowed_endpoints: ['GET /v1/payment_intents/*'] });
    const call = () => d.proxy({ path: '/stripe/v1/payment_intents/pi_ro', headers: { authorization: `Bearer ${key.token}` } });
    assert.equal((await call()).status, 200);
    fs.writeFileSync(failFlag, '');
    try {
      mocks.reset();
      for (let i = 0; i < 3; i++) assertError(await call(), 503, 'audit_unavailable');
      assert.equal(mocks.count(), 0, 'nothing reached the vendor without an audit record');
    } finally {
      fs.rmSync(failFlag);
    }
    const r = await call();
    assert.equal(r.status, 200, `recovered by itself: ${r.text}`);
    assert.equal(mocks.count(), 1);
  });

  it('stops cleanly; the chain verifies', async () => {
    await d.stop();
    const v = verify(dataDir);
    assert.equal(v.code, 0, v.out);
    assert.match(v.out, /chain intact/);
  });

  describe('keybrake audit verify detects tampering', { skip: sqliteOnly('edits the SQLite file with sqlite3; test_audit_pg covers PostgreSQL') }, () => {
    for (const [name, q, re] of [
      ['an edited record', 'UPDATE audit SET settled_micros = 1 WHERE seq = 3', /altered|seq 3/],
      ['a deleted record', 'DELETE FROM audit WHERE seq = 4', /seq 4|removed/],
      ['an inserted record', "INSERT INTO audit SELECT 999999, ref_seq, kind, ts_ms, request_id, action, key_id, label, vendor, method, path, decision, code, status, reserved_micros, settled_micros, latency_us, bytes_in, bytes_out, detail, hash, tenant_id FROM audit WHERE seq = 2", /seq|inserted|removed/],
    ]) {
      it(`names ${name}`, () => {
        const copy = mkTempDir();
        try {
          for (const f of ['keybrake.db', 'server.key']) fs.copyFileSync(path.join(dataDir, f), path.join(copy, f));
          assert.equal(verify(copy).code, 0);
          sql(copy, q);
          const v = verify(copy);
          assert.notEqual(v.code, 0, v.out);
          assert.match(v.out, /FAILED at seq \d+/);
          assert.match(v.out, re);
        } finally {
          rmTempDir(copy);
        }
      });
    }
  });
});

describe('audit log after kill -9 mid-burst', () => {
  it('the chain verifies and every answer a client saw has its record', async () => {
    const mocks = await startMockVendors();
    const dataDir = mkTempDir();
    const secrets = makeSecrets();
    try {
      const d1 = await startDaemon({ mocks, dataDir, secrets });
      const key = await d1.issueKey({ label: uniquePrefix('burst'), vendor: 'stripe', allowed_endpoints: ['GET /v1/payment_intents/*'] });
      const answered = [];
      let killed = false;
      const one = async (i) => {
        try {
          const r = await d1.proxy({ path: `/stripe/v1/payment_intents/pi_${i}`, headers: { authorization: `Bearer ${key.token}` } });
          if (r.headers['keybrake-request-id']) answered.push(r.headers['keybrake-request-id']);
          if (answered.length === 40 && !killed) {
            killed = true;
            d1.child.kill('SIGKILL');
          }
        } catch {
          // the connection died with the daemon
        }
      };
      await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
      if (!killed) d1.child.kill('SIGKILL');
      await d1.exitPromise;
      assert.ok(answered.length >= 40);
      const v = verify(dataDir);
      assert.equal(v.code, 0, v.out);
      const d2 = await startDaemon({ mocks, dataDir, secrets });
      try {
        const ids = new Set();
        let cursor = null;
        for (;;) {
          const r = await d2.admin.get(`/v1/audit?key_id=${key.id}&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
          assert.equal(r.status, 200, r.text);
          for (const rec of r.json.data) ids.add(rec.request_id);
          cursor = r.json.next_cursor;
          if (!cursor) break;
        }
        for (const id of answered) assert.ok(ids.has(id), `answered request ${id} has a record`);
      } finally {
        await d2.stop();
      }
    } finally {
      await mocks.close();
      rmTempDir(dataDir);
    }
  });
});
