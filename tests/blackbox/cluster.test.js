'use strict';
// cluster.test.js - several nodes on one PostgreSQL (issue 17): the same
// guarantees as one node. Three real daemons share a throwaway PostgreSQL
// (lib/pg.js, started by this test, stopped by pid at exit); the mock
// vendors count what reaches them.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const { REPO, assertError, startDaemon, uniquePrefix, waitFor, mkTempDir, rmTempDir } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');
const { freshDb, psql, pausePg, resumePg } = require('./lib/pg');

const BIN = process.env.KEYBRAKE_BIN;

const pay = (d, token, amount = 1000) =>
  d.proxy({
    method: 'POST',
    path: '/stripe/v1/payment_intents',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: `amount=${amount}&currency=usd`,
  });

async function usage(d, id) {
  const r = await d.admin.get(`/v1/keys/${id}`);
  assert.equal(r.status, 200, r.text);
  return r.json.usage;
}

// 12 clients across the nodes, each sending its next $10 read when the
// last is answered, until each was refused at the cap 3 times: every
// node's batches mix settlements and admissions. A 503 (the store
// unreachable) is allowed when `outage`, and then waits for the node's
// /readyz. Resolves to how many were forwarded and answered 503.
async function readLoop(nodes, token, { outage = false } = {}) {
  const n = { forwarded: 0, unavailable: 0 };
  const client = async (d) => {
    for (let refused = 0; refused < 3; ) {
      const r = await d.proxy({ method: 'GET', path: '/stripe/v1/payment_intents', headers: { authorization: `Bearer ${token}` } });
      if (r.status === 200) {
        n.forwarded++;
      } else if (outage && r.status === 503) {
        assert.match(r.json.code, /^(store_unavailable|audit_unavailable)$/, r.text);
        n.unavailable++;
        await waitFor(async () => (await d.admin.get('/readyz', { token: null })).status === 200, { timeoutMs: 40_000, what: 'ready again' });
      } else {
        assertError(r, 429, 'cap_exhausted');
        refused++;
      }
    }
  };
  await Promise.all(Array.from({ length: 12 }, (_, i) => client(nodes[i % nodes.length])));
  return n;
}

// Every node reads the key's usage as exactly `spent` and nothing reserved
// (once the last reservation is settled, within `settleMs`).
async function assertSettled(nodes, id, spent, settleMs = 0) {
  if (settleMs) await waitFor(async () => (await usage(nodes[0], id)).reserved_usd === 0, { timeoutMs: settleMs, what: 'nothing reserved' });
  for (const d of nodes) {
    const u = await usage(d, id);
    assert.equal(u.spent_usd, spent, 'charged exactly what the vendor got');
    assert.equal(u.reserved_usd, 0);
  }
}

describe('three nodes on one PostgreSQL', () => {
  let mocks;
  let db;
  const nodes = [];
  const dataDirs = [mkTempDir(), mkTempDir(), mkTempDir()];
  const serverKey = crypto.randomBytes(32).toString('hex');
  const adminToken = 'kba_test_' + crypto.randomBytes(16).toString('hex');
  const env = () => ({
    KEYBRAKE_STORE_URL: db.url,
    KEYBRAKE_SERVER_KEY: serverKey,
    KEYBRAKE_CLUSTER_HEARTBEAT: '200ms',
    KEYBRAKE_CLUSTER_DEAD_AFTER: '2s',
    // a fixed price for a read, so that its admissions take the
    // one-statement path (kb_admit) as a hot generic key's do
    KEYBRAKE_STRIPE_COST: 'GET /v1/payment_intents 10',
  });
  const start = (i, extra = {}) => startDaemon({ mocks, adminToken, dataDir: dataDirs[i], env: { ...env(), ...extra } });

  before(async () => {
    mocks = await startMockVendors();
    db = freshDb();
    // all three at once: the migrations must be applied once
    const started = await Promise.all([0, 1, 2].map((i) => start(i)));
    nodes.push(...started);
  });

  after(async () => {
    for (const d of nodes) if (d) await d.kill();
    if (mocks) await mocks.close();
    for (const dir of dataDirs) rmTempDir(dir);
  });

  beforeEach(() => {
    mocks.reset();
    mocks.stripe.setHandler(() => false);
  });

  it('nodes that start together apply the schema once and register each', () => {
    // one row per migration file, each applied once
    const files = fs.readdirSync(path.join(__dirname, '../../src/store/schema_pg')).filter((f) => f.endsWith('.sql'));
    assert.equal(psql('SELECT count(*) FROM schema_migrations', db.name), String(files.length));
    assert.equal(psql('SELECT count(*) FROM nodes', db.name), '3');
  });

  it('1,000 concurrent $10 payments spread across the nodes on a $500 key: exactly 50 reach the vendor', async () => {
    const key = await nodes[0].issueKey({ label: uniquePrefix('cap'), vendor: 'stripe', daily_usd_cap: 500, allowed_endpoints: ['POST /v1/payment_intents'] });
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => pay(nodes[i % 3], key.token)));
    const ok = results.filter((r) => r.status === 200);
    const capped = results.filter((r) => r.status === 429);
    assert.equal(ok.length, 50, `forwarded: ${ok.length}; statuses ${[...new Set(results.map((r) => r.status))]}`);
    assert.equal(capped.length, 950);
    for (const r of capped) assertError(r, 429, 'cap_exhausted');
    assert.equal(mocks.stripe.requests.length, 50, 'the vendor saw exactly 50');
    for (const d of nodes) {
      const u = await usage(d, key.id);
      assert.equal(u.spent_usd, 500);
      assert.equal(u.reserved_usd, 0);
    }
  });

  it('a steady stream of $10 reads from 12 clients across the nodes on a $500 key stops at exactly 50', async () => {
    // each client sends its next request when the last is answered, so
    // every node's batches mix settlements and admissions, and the three
    // writers take the cluster lock in turn
    const key = await nodes[0].issueKey({ label: uniquePrefix('stream'), vendor: 'stripe', daily_usd_cap: 500, allowed_endpoints: ['GET /v1/payment_intents'] });
    const { forwarded } = await readLoop(nodes, key.token);
    assert.equal(forwarded, 50, 'exactly 50 forwarded');
    assert.equal(mocks.stripe.requests.length, 50, 'the vendor saw exactly 50');
    await assertSettled(nodes, key.id, 500);
  });

  it('a key revoked on node A is refused by B and C on their next request', async () => {
    const key = await nodes[0].issueKey({ label: uniquePrefix('rev'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    // B and C know the key (it is in their caches)
    for (const d of [nodes[1], nodes[2]]) assert.equal((await pay(d, key.token, 100)).status, 200);
    const del = await nodes[0].admin.del(`/v1/keys/${key.id}`);
    assert.equal(del.status, 204, del.text);
    const before = mocks.stripe.requests.length;
    for (const d of [nodes[1], nodes[2], nodes[0]]) assertError(await pay(d, key.token, 100), 401, 'key_revoked');
    assert.equal(mocks.stripe.requests.length, before, 'nothing forwarded after the DELETE returned');
  });

  it('GET /v1/audit on any node answers with every node\'s records', async () => {
    const key = await nodes[2].issueKey({ label: uniquePrefix('aud'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    assert.equal((await pay(nodes[2], key.token, 100)).status, 200);
    for (const d of nodes) {
      const r = await d.admin.get(`/v1/audit?key_id=${key.id}`);
      assert.equal(r.status, 200, r.text);
      const entries = r.json.data || r.json.entries || r.json;
      assert.ok(Array.isArray(entries) && entries.length >= 1, r.text);
    }
  });

  it('a node started with another server key refuses to start', async () => {
    const dir = mkTempDir();
    try {
      await assert.rejects(
        startDaemon({ mocks, adminToken, dataDir: dir, env: { ...env(), KEYBRAKE_SERVER_KEY: crypto.randomBytes(32).toString('hex') } }),
        /server key differs/,
      );
    } finally {
      rmTempDir(dir);
    }
  });

  it('a second live process with a node\'s id refuses to start', async () => {
    const id = psql("SELECT node_id FROM nodes ORDER BY node_id LIMIT 1", db.name);
    const dir = mkTempDir();
    try {
      await assert.rejects(
        startDaemon({ mocks, adminToken, dataDir: dir, env: { ...env(), KEYBRAKE_NODE_ID: id } }),
        (e) => /exited \(code [1-9]/.test(e.message) && e.message.includes(id),
      );
    } finally {
      rmTempDir(dir);
    }
  });

  it('kill -9 of a node with requests in flight: another node settles its reservations at their worst case', async () => {
    const key = await nodes[0].issueKey({ label: uniquePrefix('kill'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    const victim = nodes[2];
    const holds = [mocks.stripe.nextHold(), mocks.stripe.nextHold(), mocks.stripe.nextHold()];
    const inflight = [1, 2, 3].map(() => pay(victim, key.token, 1000).catch((e) => e));
    await Promise.all(holds); // all three reached the vendor: reserved on the victim
    let u = await usage(nodes[0], key.id);
    assert.equal(u.reserved_usd, 30);
    victim.child.kill('SIGKILL');
    await victim.exitPromise;
    await Promise.all(inflight);
    // dead_after is 2 s: the survivors settle the victim's three at $10 each
    await waitFor(async () => (await usage(nodes[0], key.id)).reserved_usd === 0, { timeoutMs: 15_000, what: 'reservations settled' });
    u = await usage(nodes[1], key.id);
    assert.equal(u.spent_usd, 30, 'charged at the worst case: the vendor may have billed them');
    assert.equal(u.remaining_usd, 70);
    // the node comes back under its id and serves
    nodes[2] = await start(2);
    assert.equal((await pay(nodes[2], key.token, 1000)).status, 200);
    u = await usage(nodes[2], key.id);
    assert.equal(u.spent_usd, 40);
    assert.equal(u.reserved_usd, 0);
  });

  it('PostgreSQL stopped: 503 and nothing forwarded; started again: every node serves without a restart', async () => {
    const key = await nodes[0].issueKey({ label: uniquePrefix('pgdown'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    assert.equal((await pay(nodes[1], key.token, 100)).status, 200);
    const seen = mocks.stripe.requests.length;
    pausePg();
    try {
      for (const d of nodes) {
        const r = await pay(d, key.token, 100);
        assert.equal(r.status, 503, r.text);
        assert.match(r.json.code, /^(store_unavailable|audit_unavailable)$/);
        const ready = await d.admin.get('/readyz', { token: null });
        assert.equal(ready.status, 503, ready.text);
        // the admin token's row cannot be read: that is not a bad token
        assertError(await d.admin.get('/v1/keys'), 503, 'store_unavailable');
      }
      assert.equal(mocks.stripe.requests.length, seen, 'nothing forwarded while the store is down');
    } finally {
      resumePg();
    }
    for (const d of nodes) {
      await waitFor(async () => (await pay(d, key.token, 100)).status === 200, { timeoutMs: 20_000, what: 'serving again' });
      await waitFor(async () => (await d.admin.get('/readyz', { token: null })).status === 200, { timeoutMs: 10_000, what: 'ready again' });
    }
    const u = await usage(nodes[0], key.id);
    assert.equal(u.reserved_usd, 0);
    assert.equal(u.spent_usd, 4);
  });

  it('PostgreSQL crashed and restarted under load: exactly the cap reaches the vendor, nothing stays reserved, every charge is one the vendor got', async () => {
    // 12 clients loop $10 reads across the nodes on a $3,000 key; PostgreSQL
    // is stopped as a crash would stop it, and started again, under them
    // (the runner's loop is blocked meanwhile: the requests in flight in
    // the nodes ride through it). A COMMIT whose answer the crash cut is
    // read back before its batch completes, so no reservation stays behind
    // a request never forwarded and no settlement counts twice.
    const key = await nodes[0].issueKey({ label: uniquePrefix('restart'), vendor: 'stripe', daily_usd_cap: 3000, allowed_endpoints: ['GET /v1/payment_intents'] });
    const load = readLoop(nodes, key.token, { outage: true });
    await waitFor(() => mocks.stripe.requests.length >= 30, { timeoutMs: 20_000, what: 'the load under way' });
    pausePg('immediate'); // a crash: sessions cut mid-commit too
    resumePg();
    const { forwarded, unavailable } = await load;
    assert.equal(forwarded, 300, `forwarded ${forwarded} (${unavailable} answered 503)`);
    assert.equal(mocks.stripe.requests.length, 300, 'the vendor saw exactly the cap');
    await assertSettled(nodes, key.id, 3000, 40_000);
  });

  it('every node\'s sessions cut three times under load: exactly the cap reaches the vendor, nothing stays reserved, every charge is one the vendor got', async () => {
    // pg_terminate_backend on every Keybrake session while requests are in
    // flight: a COMMIT whose answer is cut is read back on a new session
    const key = await nodes[0].issueKey({ label: uniquePrefix('cut'), vendor: 'stripe', daily_usd_cap: 3000, allowed_endpoints: ['GET /v1/payment_intents'] });
    const load = readLoop(nodes, key.token, { outage: true });
    for (const at of [30, 120, 210]) {
      await waitFor(() => mocks.stripe.requests.length >= at, { timeoutMs: 20_000, what: `${at} forwarded` });
      psql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db.name}' AND application_name = 'keybrake'`);
    }
    const { forwarded } = await load;
    assert.equal(forwarded, 300);
    assert.equal(mocks.stripe.requests.length, 300, 'the vendor saw exactly the cap');
    await assertSettled(nodes, key.id, 3000, 40_000);
  });

  it('keybrake audit verify checks every node\'s chain after all of it', () => {
    const r = spawnSync(BIN, ['audit', 'verify'], {
      env: { ...process.env, KEYBRAKE_DATA_DIR: dataDirs[0], KEYBRAKE_STORE_URL: db.url, KEYBRAKE_SERVER_KEY: serverKey },
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const chains = psql('SELECT count(DISTINCT node_id) FROM audit', db.name);
    assert.equal(chains, '3');
  });
});
