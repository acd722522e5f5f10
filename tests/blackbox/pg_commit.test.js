'use strict';
// pg_commit.test.js - a node on PostgreSQL whose writer loses the answer
// of a COMMIT (the session cut once the COMMIT is sent, as when
// PostgreSQL restarts or the network drops at that moment): the batch
// completes as the COMMIT really ended, read on a new session. Before,
// such a batch failed whatever had happened: an admission that had
// committed left its reservation blocking spend that never happened, and
// a settlement that had committed was retried and counted twice.
//
// The test hook KEYBRAKE_TEST_PG_LOSE_COMMIT=<file> (built with
// KB_TEST_HOOKS) cuts the session after the next deferred COMMIT when the
// file exists, and removes the file; "rollback" in the file sends a
// ROLLBACK in the COMMIT's place.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { startDaemon, uniquePrefix, waitFor, mkTempDir, rmTempDir } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');
const { freshDb, psql } = require('./lib/pg');

const pay = (d, token, amount = 1000) =>
  d.proxy({
    method: 'POST',
    path: '/stripe/v1/payment_intents',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: `amount=${amount}&currency=usd`,
  });

// A node on a fresh PostgreSQL database whose COMMIT answers are lost
// while the file at n.lose exists; the suite's before/after hooks.
function losingNode(env = {}) {
  const n = { dir: mkTempDir(), serverKey: crypto.randomBytes(32).toString('hex') };
  n.lose = path.join(n.dir, 'lose-commit');
  before(async () => {
    n.mocks = await startMockVendors();
    n.db = freshDb();
    n.d = await startDaemon({
      mocks: n.mocks,
      env: { KEYBRAKE_STORE_URL: n.db.url, KEYBRAKE_SERVER_KEY: n.serverKey, KEYBRAKE_TEST_PG_LOSE_COMMIT: n.lose, ...env },
    });
  });
  after(async () => {
    if (n.d) await n.d.kill();
    if (n.mocks) await n.mocks.close();
    rmTempDir(n.dir);
  });
  return n;
}

describe('a node on PostgreSQL that loses the answer of a COMMIT', () => {
  const n = losingNode();
  let mocks, db, d, lose, serverKey;
  before(() => ({ mocks, db, d, lose, serverKey } = n));

  beforeEach(() => {
    mocks.reset();
    fs.rmSync(lose, { force: true });
  });

  const issue = (label) =>
    d.issueKey({ label: uniquePrefix(label), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
  const usage = async (id) => {
    const r = await d.admin.get(`/v1/keys/${id}`);
    assert.equal(r.status, 200, r.text);
    return r.json.usage;
  };

  it('an admission whose COMMIT happened is forwarded once and charged once; nothing stays reserved', async () => {
    const key = await issue('lost-admit');
    fs.writeFileSync(lose, 'commit');
    const r = await pay(d, key.token, 1000);
    assert.equal(fs.existsSync(lose), false, 'the hook cut a session');
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.stripe.requests.length, 1);
    const u = await usage(key.id);
    assert.equal(u.spent_usd, 10);
    assert.equal(u.reserved_usd, 0);
  });

  it('a settlement whose COMMIT happened is not counted twice', async () => {
    const key = await issue('lost-settle');
    const held = mocks.stripe.nextHold();
    const inflight = pay(d, key.token, 1000);
    const h = await held; // admitted and committed: now the settlement's commit is lost
    fs.writeFileSync(lose, 'commit');
    h.respond();
    const r = await inflight;
    assert.equal(r.status, 200, r.text);
    assert.equal(fs.existsSync(lose), false, 'the hook cut a session');
    // a settlement that failed would stay in flight until a retry commits,
    // and that retry would append a second completion record
    await waitFor(async () => /^keybrake_requests_in_flight 0$/m.test((await d.admin.get('/metrics')).text), {
      timeoutMs: 10_000,
      what: 'nothing in flight',
    });
    const u = await usage(key.id);
    assert.equal(u.spent_usd, 10, 'charged once');
    assert.equal(u.reserved_usd, 0);
    // a retried settlement would append a second completion for the request
    const completions = psql(
      `SELECT count(*) FROM audit WHERE ref_seq IS NOT NULL AND request_id = (SELECT request_id FROM audit WHERE key_id = '${key.id}' AND kind = 0 AND ref_seq IS NULL)`,
      db.name,
    );
    assert.equal(completions, '1');
  });

  it('an admission whose COMMIT did not happen is refused, forwards nothing and reserves nothing', async () => {
    const key = await issue('lost-rollback');
    fs.writeFileSync(lose, 'rollback');
    const r = await pay(d, key.token, 1000);
    assert.equal(fs.existsSync(lose), false, 'the hook cut a session');
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.code, 'audit_unavailable');
    assert.equal(mocks.stripe.requests.length, 0);
    const u = await usage(key.id);
    assert.equal(u.spent_usd, 0);
    assert.equal(u.reserved_usd, 0);
    // and the node goes on: the next one is served
    await waitFor(async () => (await pay(d, key.token, 1000)).status === 200, { timeoutMs: 10_000, what: 'serving again' });
    assert.equal((await usage(key.id)).spent_usd, 10);
  });

  it('the audit chain verifies after all of it', () => {
    const v = spawnSync(process.env.KEYBRAKE_BIN, ['audit', 'verify'], {
      env: { ...process.env, KEYBRAKE_DATA_DIR: d.dataDir, KEYBRAKE_STORE_URL: db.url, KEYBRAKE_SERVER_KEY: serverKey },
      encoding: 'utf8',
    });
    assert.equal(v.status, 0, v.stdout + v.stderr);
  });
});

describe('a node on PostgreSQL that cannot read a lost COMMIT\'s outcome in time', () => {
  // KEYBRAKE_TEST_PG_LIMBO_BLIND: the outcome of a lost COMMIT is never
  // read (as when PostgreSQL stays away past the bound): its batch fails as
  // unknown although it committed. A settlement in it is retried; the retry
  // finds its completion record and applies nothing. Before, the retry ran
  // kb_settle again: it released another request's reservation (the node's
  // reservations of a key are one figure) and counted the cost twice.
  const n = losingNode({ KEYBRAKE_TEST_PG_LIMBO_BLIND: '1' });
  let mocks, db, d, lose;
  before(() => ({ mocks, db, d, lose } = n));

  it('a settlement retried after an unknown outcome is applied once: the other request keeps its reservation', async () => {
    const key = await d.issueKey({ label: uniquePrefix('blind'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    const usage = async () => (await d.admin.get(`/v1/keys/${key.id}`)).json.usage;
    const heldB = mocks.stripe.nextHold();
    const b = pay(d, key.token, 1000);
    const hb = await heldB;
    const heldA = mocks.stripe.nextHold();
    const a = pay(d, key.token, 1000);
    const ha = await heldA;
    fs.writeFileSync(lose, 'commit'); // A's settlement commits, its answer is lost and not read back
    ha.respond();
    assert.equal((await a).status, 200);
    assert.equal(fs.existsSync(lose), false, 'the hook cut a session');
    // A is done once its retried settlement went through; B is still held
    await waitFor(async () => /^keybrake_requests_in_flight 1$/m.test((await d.admin.get('/metrics')).text), {
      timeoutMs: 10_000,
      what: 'only B in flight',
    });
    let u = await usage();
    assert.equal(u.spent_usd, 10, 'A counted once');
    assert.equal(u.reserved_usd, 10, "B's reservation untouched");
    hb.respond();
    assert.equal((await b).status, 200);
    u = await usage();
    assert.equal(u.spent_usd, 20);
    assert.equal(u.reserved_usd, 0);
    assert.equal(psql(`SELECT count(*) FROM audit WHERE ref_seq IS NOT NULL AND key_id = '${key.id}'`, db.name), '2', 'one completion each');
  });
});
