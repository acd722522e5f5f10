'use strict';
// audit_sink.test.js - the JSONL sink ([audit] sink) against the real binary,
// and `keybrake audit verify --anchor` using it.
//
// The sink file must hold exactly the records `keybrake audit export` prints
// (same seq, hash, fields, byte for byte), for allowed and refused proxied
// requests and admin actions alike. A tail cut from the SQLite file together
// with its checkpoints passes plain `audit verify` (the documented limit) but
// not `audit verify --anchor <sink>`, which names the first missing record;
// an untouched store passes with the anchor; an anchor that cannot be read is
// exit 2. A restart catches up lines the sink lost, ends a torn line, and a
// sink that resumed on a cut log still betrays the cut.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { BIN, sqliteOnly, storeEnv, hex, makeSecrets, mkTempDir, rmTempDir, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

function cli(dataDir, args) {
  const r = spawnSync(BIN, ['audit', ...args], { env: { ...process.env, KEYBRAKE_DATA_DIR: dataDir, ...storeEnv(dataDir) }, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, out: r.stdout + r.stderr };
}

// The export's lines, raw; asserts it succeeded.
function exportLines(dataDir) {
  const r = cli(dataDir, ['export']);
  assert.equal(r.code, 0, r.out);
  return r.stdout.split('\n').filter((l) => l.length > 0);
}

// The sink's record lines, raw, as a reader should take them: lines that do
// not parse are skipped, a repeated seq keeps its last copy (torn-line redo).
function sinkLines(file) {
  const bySeq = new Map();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    let rec;
    try {
      rec = JSON.parse(line);
    } catch {
      continue;
    }
    bySeq.set(rec.seq, line);
  }
  return [...bySeq.entries()].sort((a, b) => a[0] - b[0]).map(([, l]) => l);
}

const seqOf = (line) => JSON.parse(line).seq;

// Polls the sink file (bounded) until it holds record `seq`: lines are written
// after their batch commits, by the sink's own thread, so they trail the answer.
function waitSink(file, seq) {
  return waitFor(() => fs.existsSync(file) && sinkLines(file).some((l) => seqOf(l) === seq), {
    what: `record ${seq} in the sink`,
  });
}

function sql(dataDir, q) {
  return execFileSync('sqlite3', [path.join(dataDir, 'keybrake.db'), q], { encoding: 'utf8' }).trim();
}

// A copy of a stopped daemon's store and key, to tamper with.
function copyStore(dataDir) {
  const copy = mkTempDir();
  for (const f of ['keybrake.db', 'keybrake.db-wal', 'server.key']) {
    if (fs.existsSync(path.join(dataDir, f))) fs.copyFileSync(path.join(dataDir, f), path.join(copy, f));
  }
  return copy;
}

describe('the JSONL audit sink and verify --anchor', () => {
  let mocks;
  let d;
  let dataDir; // the daemon's store
  let offDir; // "off the machine": the sink file
  let sink;
  const secrets = makeSecrets();
  // one admin token throughout: a new one would be an audit record of its own
  const adminToken = 'kba_test_' + hex(16);
  // checkpoints every 4 records, so that a cut can take some with it
  const start = (dir, sinkFile) =>
    startDaemon({ mocks, dataDir: dir, secrets, adminToken, env: { KEYBRAKE_AUDIT_SINK: sinkFile, KEYBRAKE_AUDIT_CHECKPOINT_EVERY: '4' } });

  before(async () => {
    mocks = await startMockVendors();
    dataDir = mkTempDir();
    offDir = mkTempDir();
    sink = path.join(offDir, 'audit.jsonl');
    d = await start(dataDir, sink);
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
      rmTempDir(dataDir);
      rmTempDir(offDir);
    }
  });

  it('holds exactly the records export prints once the answers are in', async () => {
    const key = await d.issueKey({ label: uniquePrefix('sink'), vendor: 'stripe', allowed_endpoints: ['GET /v1/payment_intents/*'] });
    const auth = { authorization: `Bearer ${key.token}` };
    // a refusal is the key's own record when the token names a key (an
    // unknown token's refusals are recorded aggregated: audit.test.js)
    const revokedKey = await d.issueKey({ label: uniquePrefix('sink-rev'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
    assert.equal((await d.admin.del(`/v1/keys/${revokedKey.id}`)).status, 204);
    const ids = {};
    const call = async (what, opts, status) => {
      const r = await d.proxy(opts);
      assert.equal(r.status, status, `${what}: ${r.text}`);
      ids[what] = r.headers['keybrake-request-id'];
      assert.ok(ids[what], `${what}: no request id`);
    };
    await call('allowed', { path: '/stripe/v1/payment_intents/pi_1?expand[]=x', headers: auth }, 200);
    await call('endpoint', { path: '/stripe/v1/customers', headers: auth }, 403);
    await call('revoked-before', { path: '/stripe/v1/payment_intents/pi_1', headers: { authorization: `Bearer ${revokedKey.token}` } }, 401);
    const del = await d.admin.del(`/v1/keys/${key.id}`);
    assert.equal(del.status, 204, del.text);
    await call('revoked', { path: '/stripe/v1/payment_intents/pi_2', headers: auth }, 401);
    assert.equal(mocks.count(), 1, 'only the allowed request reached the vendor');

    // Every answer is in; export what the store holds now and wait until the
    // sink has caught up with its last record.
    const exported = exportLines(dataDir);
    const last = seqOf(exported[exported.length - 1]);
    await waitSink(sink, last);
    const lines = sinkLines(sink);
    // The sink opens before the first start records its admin token, so a
    // new sink on a new store holds the whole log from record 1.
    assert.equal(JSON.parse(exported[0]).action, 'admin_token.created');
    assert.equal(seqOf(lines[0]), 1, 'the sink starts at the first record');
    assert.deepEqual(lines.filter((l) => seqOf(l) <= last), exported, 'sink lines are the export, byte for byte');

    // ... and they are the right records
    const recs = lines.map((l) => JSON.parse(l));
    const of = (what) => recs.filter((r) => r.request_id === ids[what]);
    const allowed = of('allowed');
    assert.equal(allowed.length, 2, 'an allowed request: its record and its completion');
    assert.equal(allowed[0].decision, 'allowed');
    assert.equal(allowed[0].path, '/v1/payment_intents/pi_1', 'no query string');
    assert.equal(allowed[1].ref_seq, allowed[0].seq);
    assert.equal(allowed[1].status, 200);
    for (const [what, code] of [['endpoint', 'endpoint_not_allowed'], ['revoked-before', 'key_revoked'], ['revoked', 'key_revoked']]) {
      const r = of(what);
      assert.equal(r.length, 1, `${what}: one record`);
      assert.equal(r[0].decision, 'refused', what);
      assert.equal(r[0].code, code, what);
    }
    assert.ok(recs.some((r) => r.action === 'key.issued' && r.key_id === key.id));
    assert.ok(recs.some((r) => r.action === 'key.revoked' && r.key_id === key.id));
    const text = fs.readFileSync(sink, 'utf8');
    assert.ok(!text.includes(key.token) && !text.includes(secrets.stripe), 'no token or secret in the sink');
    assert.equal((fs.statSync(sink).mode & 0o777).toString(8), '600');
  });

  it('after a clean stop the sink is the whole export from its first line; verify --anchor passes', async () => {
    await d.stop();
    const exported = exportLines(dataDir);
    assert.deepEqual(sinkLines(sink), exported);
    const plain = cli(dataDir, ['verify']);
    assert.equal(plain.code, 0, plain.out);
    const v = cli(dataDir, ['verify', '--anchor', sink]);
    assert.equal(v.code, 0, v.out);
    assert.match(v.out, /chain intact/);
    assert.match(v.out, new RegExp(`anchor .* matches: record ${seqOf(exported[exported.length - 1])} `));
    // a saved export is an anchor too
    const saved = path.join(offDir, 'export.jsonl');
    fs.writeFileSync(saved, exported.join('\n') + '\n');
    assert.equal(cli(dataDir, ['verify', '--anchor', saved]).code, 0);
  });

  it('a tail cut with its checkpoints: plain verify passes (the limit), --anchor reports truncated', { skip: sqliteOnly('cuts the SQLite file with sqlite3; test_audit_pg covers PostgreSQL') }, () => {
    const copy = copyStore(dataDir);
    try {
      const end = Number(sql(copy, 'SELECT max(seq) FROM audit'));
      const cut = Number(sql(copy, `SELECT max(seq) FROM audit_checkpoints WHERE seq < ${end}`));
      assert.ok(cut > 1 && cut < end, `a checkpoint inside the log to cut at (cut ${cut}, end ${end})`);
      sql(copy, `DELETE FROM audit WHERE seq >= ${cut}; DELETE FROM audit_checkpoints WHERE seq >= ${cut}`);
      assert.equal(Number(sql(copy, 'SELECT max(seq) FROM audit')), cut - 1);

      const plain = cli(copy, ['verify']);
      assert.equal(plain.code, 0, `the documented limit: ${plain.out}`);
      assert.match(plain.out, /chain intact/);

      const v = cli(copy, ['verify', '--anchor', sink]);
      assert.equal(v.code, 1, v.out);
      assert.match(v.out, new RegExp(`FAILED at seq ${cut} \\(truncated\\)`));
      assert.match(v.out, new RegExp(`records ${cut}\\.\\.${end} were removed`));
    } finally {
      rmTempDir(copy);
    }
  });

  it('an anchor that cannot be read, or holds no record, is exit 2', () => {
    const missing = cli(dataDir, ['verify', '--anchor', path.join(offDir, 'nope.jsonl')]);
    assert.equal(missing.code, 2, missing.out);
    assert.match(missing.out, /cannot read the anchor .*nope\.jsonl/);
    const empty = path.join(offDir, 'empty.jsonl');
    fs.writeFileSync(empty, '');
    const e = cli(dataDir, ['verify', '--anchor', empty]);
    assert.equal(e.code, 2, e.out);
    assert.match(e.out, /holds no audit record/);
    const usage = cli(dataDir, ['verify', '--anchor']);
    assert.equal(usage.code, 2, usage.out);
  });

  it('a restart catches up lines the sink lost and ends a torn line', async () => {
    // What a power cut can leave: the last lines gone, half of one written.
    const lines = fs.readFileSync(sink, 'utf8').split('\n').filter((l) => l.length > 0);
    const lost = lines.slice(-3).map(seqOf);
    fs.writeFileSync(sink, lines.slice(0, -3).join('\n') + '\n' + lines[lines.length - 3].slice(0, 40));
    assert.ok(!sinkLines(sink).some((l) => lost.includes(seqOf(l))));

    d = await start(dataDir, sink);
    const key = await d.issueKey({ label: uniquePrefix('again'), vendor: 'stripe' }); // the first commit
    for (let i = 0; i < 2; i++) {
      const r = await d.proxy({ path: '/stripe/v1/payment_intents/pi_3', headers: { authorization: 'Bearer nope' } });
      assert.equal(r.status, 401);
    }
    await d.stop();
    const exported = exportLines(dataDir);
    const last = seqOf(exported[exported.length - 1]);
    assert.ok(exported.some((l) => JSON.parse(l).key_id === key.id));
    assert.deepEqual(sinkLines(sink), exported, 'caught up, in full, nothing twice');
    const raw = fs.readFileSync(sink, 'utf8').split('\n');
    assert.ok(raw.includes(lines[lines.length - 3].slice(0, 40)), 'the torn fragment was ended with a newline');
    const v = cli(dataDir, ['verify', '--anchor', sink]);
    assert.equal(v.code, 0, v.out);
    assert.match(v.out, new RegExp(`record ${last} `));
  });

  it('a sink that resumed on a cut log still betrays the cut', { skip: sqliteOnly('cuts the SQLite file with sqlite3') }, async () => {
    const copy = copyStore(dataDir);
    const sinkCopy = path.join(offDir, 'copy.jsonl');
    fs.copyFileSync(sink, sinkCopy);
    let d2;
    try {
      const end = Number(sql(copy, 'SELECT max(seq) FROM audit'));
      const cut = Number(sql(copy, `SELECT max(seq) FROM audit_checkpoints WHERE seq < ${end}`));
      assert.ok(cut > 1 && cut < end, `a checkpoint inside the log to cut at (cut ${cut}, end ${end})`);
      sql(copy, `DELETE FROM audit WHERE seq >= ${cut}; DELETE FROM audit_checkpoints WHERE seq >= ${cut}`);
      // The daemon restarts on the cut log: the sink, ahead of the store,
      // resumes at the store's end and writes a new record under seq `cut`.
      d2 = await start(copy, sinkCopy);
      const r = await d2.proxy({ path: '/stripe/v1/payment_intents/pi_9', headers: { authorization: 'Bearer nope' } });
      assert.equal(r.status, 401);
      await waitSink(sinkCopy, cut);
      await d2.stop();
      const tail = fs.readFileSync(sinkCopy, 'utf8').trimEnd().split('\n').pop();
      assert.equal(seqOf(tail), cut, 'the sink went backwards');
      assert.equal(cli(copy, ['verify']).code, 0);
      const v = cli(copy, ['verify', '--anchor', sinkCopy]);
      assert.equal(v.code, 1, v.out);
      assert.match(v.out, new RegExp(`FAILED at seq ${cut + 1} \\(truncated\\)`));
    } finally {
      if (d2) await d2.kill();
      rmTempDir(copy);
    }
  });
});
