'use strict';
// retention.test.js - audit retention (issue 15 item 3): with `[audit]
// retention` set, records older than it are archived to a JSONL file in
// archive_dir, in exactly the lines `keybrake audit export` printed for
// them, and pruned from the store at a signed checkpoint; GET /v1/audit
// serves the retained records and shows the prune; `keybrake audit verify`
// passes after pruning (also with --anchor on the live sink) and still
// names a tampered retained record or a prefix deleted by hand; the daemon
// serves throughout. Retention is 2 s, so pruning is awaited by bounded
// polling, never a sleep. `verify --archive` proves the pruned history from
// the archive files and joins it to the store at its cut.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { BIN, sqliteOnly, storeEnv, mkTempDir, rmTempDir, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const RETENTION_MS = 2000;

function cli(dataDir, args, extraEnv = {}) {
  const r = spawnSync(BIN, ['audit', ...args], {
    env: { ...process.env, KEYBRAKE_DATA_DIR: dataDir, ...storeEnv(dataDir), ...extraEnv },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function sql(dataDir, q) {
  return execFileSync('sqlite3', [path.join(dataDir, 'keybrake.db'), q], { encoding: 'utf8' }).trim();
}

function archiveFiles(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => /^audit-\d{12}-\d{12}\.jsonl$/.test(f))
    .sort();
}

async function allRecords(d) {
  const out = [];
  let cursor = null;
  for (;;) {
    const r = await d.admin.get(`/v1/audit?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(r.status, 200, r.text);
    out.push(...r.json.data);
    if (!r.json.next_cursor) return out;
    cursor = r.json.next_cursor;
  }
}

describe('audit retention', () => {
  let mocks;
  let d;
  let dataDir;
  let archiveDir;
  let sinkPath;
  let key;
  let exportBefore; // `audit export` lines taken before anything was pruned
  const ids = []; // request ids of the first burst, oldest first

  before(async () => {
    mocks = await startMockVendors();
    dataDir = mkTempDir();
    archiveDir = path.join(dataDir, 'archive');
    sinkPath = path.join(dataDir, 'sink.jsonl');
    d = await startDaemon({
      mocks,
      dataDir,
      env: {
        KEYBRAKE_AUDIT_RETENTION: `${RETENTION_MS}ms`,
        KEYBRAKE_AUDIT_ARCHIVE_DIR: archiveDir,
        KEYBRAKE_AUDIT_CHECKPOINT_EVERY: '5',
        KEYBRAKE_AUDIT_SINK: sinkPath,
      },
    });
    key = await d.issueKey({ label: uniquePrefix('ret'), vendor: 'stripe', allowed_endpoints: ['GET /v1/payment_intents/*'] });
    // a tenant's record in the history that gets archived: verify --archive
    // must hash its tenant as the chain did (docs/audit.md)
    const t = await d.admin.post('/v1/tenants', { name: 'archived' });
    assert.equal(t.status, 201, t.text);
  });

  after(async () => {
    try {
      if (d && !d.exited) await d.kill();
    } finally {
      if (mocks) await mocks.close();
      rmTempDir(dataDir);
    }
  });

  const call = (i) => d.proxy({ path: `/stripe/v1/payment_intents/pi_${i}`, headers: { authorization: `Bearer ${key.token}` } });

  it('creates the archive directory at start and prunes nothing young', async () => {
    assert.ok(fs.statSync(archiveDir).isDirectory());
    for (let i = 0; i < 20; i++) {
      const r = await call(i);
      assert.equal(r.status, 200, r.text);
      ids.push(r.headers['keybrake-request-id']);
    }
    const e = cli(dataDir, ['export']);
    assert.equal(e.code, 0, e.err);
    exportBefore = e.out.split('\n').filter(Boolean);
    assert.ok(exportBefore.length >= 41, `${exportBefore.length} records`); // key, 2 per request
    assert.equal(JSON.parse(exportBefore[0]).seq, 1);
    // nothing in the store is 2 s old yet, unless the machine is very slow
    const recs = await allRecords(d);
    assert.ok(recs.some((r) => r.request_id === ids[0]) || archiveFiles(archiveDir).length > 0);
  });

  it('archives records older than the retention in the export format and prunes them, serving throughout', { skip: sqliteOnly('reads the SQLite file with sqlite3; test_audit_pg runs retention on PostgreSQL') }, async () => {
    let served = 0;
    const pruned = await waitFor(
      async () => {
        const r = await call(1000 + served);
        assert.equal(r.status, 200, `served while pruning: ${r.text}`);
        served++;
        const recs = await allRecords(d);
        if (recs.some((x) => x.request_id === ids[ids.length - 1])) return null;
        return recs;
      },
      { timeoutMs: 30_000, stepMs: 100, what: 'the first burst to be pruned' },
    );
    assert.ok(served >= 1);
    // GET /v1/audit shows the prune as an admin action
    const prunes = pruned.filter((r) => r.action === 'audit.pruned');
    assert.ok(prunes.length >= 1, JSON.stringify(pruned.slice(0, 3)));
    assert.equal(prunes[0].kind, 'admin');
    assert.equal(prunes[0].decision, 'ok');

    // the archive holds, from seq 1 without a gap, the lines export printed
    const files = archiveFiles(archiveDir);
    assert.ok(files.length >= 1, `archive files: ${fs.readdirSync(archiveDir)}`);
    assert.ok(!fs.readdirSync(archiveDir).some((f) => f.endsWith('.tmp')));
    const lines = files.flatMap((f) => fs.readFileSync(path.join(archiveDir, f), 'utf8').split('\n').filter(Boolean));
    const records = lines.filter((l) => JSON.parse(l).seq !== undefined);
    const checkpoints = lines.map((l) => JSON.parse(l)).filter((j) => j.checkpoint !== undefined);
    records.forEach((l, i) => assert.equal(JSON.parse(l).seq, i + 1, 'contiguous from 1'));
    const common = Math.min(records.length, exportBefore.length);
    assert.ok(common >= 41, `${common} records archived`);
    for (let i = 0; i < common; i++) assert.equal(records[i], exportBefore[i], `record ${i + 1} as export printed it`);
    // each file ends at its cut: a signed checkpoint
    for (const f of files) {
      const cut = Number(/-(\d{12})\.jsonl$/.exec(f)[1]);
      assert.ok(checkpoints.some((c) => c.checkpoint === cut && /^[0-9a-f]{64}$/.test(c.mac)), `${f}: cut checkpoint archived`);
      // the cut's record was older than the retention when its prune ran
      const cutRec = JSON.parse(records[cut - 1]);
      const prune = prunes.find((p) => p.detail.cut === cut) || (await allRecords(d)).find((p) => p.action === 'audit.pruned' && p.detail.cut === cut);
      if (prune) assert.ok(Date.parse(prune.ts) - cutRec.ts_ms >= RETENTION_MS, `${f}: cut record ${cutRec.ts} pruned at ${prune.ts}`);
    }
    // the store keeps what follows the last cut
    const first = Number(sql(dataDir, 'SELECT min(seq) FROM audit'));
    assert.ok(first > 41);
    assert.equal(first, records.length + 1, 'the store starts right after the archive');
  });

  it('audit verify proves the retained part, also anchored on the sink', { skip: sqliteOnly('follows the prune of the test before, which reads the SQLite file') }, async () => {
    const v = cli(dataDir, ['verify']);
    assert.equal(v.code, 0, v.out + v.err);
    assert.match(v.out, /chain intact/);
    assert.match(v.out, /pruned before seq \d+ at checkpoint \d+, archived/);
    const a = cli(dataDir, ['verify', '--anchor', sinkPath]);
    assert.equal(a.code, 0, a.out + a.err);
    assert.match(a.out, /anchor .* matches/);
    const r = await call(5000);
    assert.equal(r.status, 200);
  });

  it('a tampered retained record, or records deleted by hand, still fail verify', { skip: sqliteOnly('edits the SQLite file with sqlite3') }, async () => {
    await d.stop();
    const copy = mkTempDir();
    const fresh = () => {
      for (const f of ['keybrake.db', 'server.key']) fs.copyFileSync(path.join(dataDir, f), path.join(copy, f));
    };
    try {
      fresh();
      assert.equal(cli(copy, ['verify']).code, 0);
      const first = Number(sql(copy, 'SELECT min(seq) FROM audit'));
      sql(copy, `UPDATE audit SET label = 'evil' WHERE seq = ${first + 1}`);
      let v = cli(copy, ['verify']);
      assert.equal(v.code, 1, v.out);
      assert.match(v.out, new RegExp(`FAILED at seq ${first + 1} \\(altered\\)`));

      // a retained prefix deleted up to a later checkpoint, earlier checkpoints with it
      fresh();
      const ck = Number(sql(copy, `SELECT min(seq) FROM audit_checkpoints WHERE seq > ${first}`));
      sql(copy, `DELETE FROM audit WHERE seq <= ${ck}; DELETE FROM audit_checkpoints WHERE seq < ${ck}`);
      v = cli(copy, ['verify']);
      assert.equal(v.code, 1, v.out);
      assert.match(v.out, /FAILED at seq \d+ \(removed\)/);

      // a forged cut checkpoint
      fresh();
      sql(copy, `UPDATE audit_checkpoints SET mac = randomblob(32) WHERE seq = ${first - 1}`);
      v = cli(copy, ['verify']);
      assert.equal(v.code, 1, v.out);
      assert.match(v.out, new RegExp(`FAILED at seq ${first - 1} \\(checkpoint\\)`));
    } finally {
      rmTempDir(copy);
    }
  });

  it('audit verify --archive proves the pruned history too, and names what the archive lost', { skip: sqliteOnly('follows the prune of the test before, which reads the SQLite file') }, async () => {
    const v = cli(dataDir, ['verify', '--archive', archiveDir]);
    assert.equal(v.code, 0, v.out + v.err);
    assert.match(v.out, /archive .*: \d+ files, records 1\.\.\d+, \d+ checkpoints, chain intact; it joins the store/);
    // (the daemon is stopped) a copy of the archive without its last file no longer reaches
    // the store's cut
    const copy = mkTempDir();
    try {
      const files = archiveFiles(archiveDir);
      for (const f of files) fs.copyFileSync(path.join(archiveDir, f), path.join(copy, f));
      const v2 = cli(dataDir, ['verify', '--archive', copy]);
      assert.equal(v2.code, 0, v2.out + v2.err);
      fs.rmSync(path.join(copy, files[files.length - 1]));
      const first = Number(/^audit-(\d{12})-/.exec(files[files.length - 1])[1]);
      const v3 = cli(dataDir, ['verify', '--archive', copy]);
      assert.equal(v3.code, 1, v3.out + v3.err);
      assert.match(v3.out, new RegExp(`FAILED at seq ${first} \\(removed\\): records ${first}\\.\\.\\d+ were pruned from the store but are not in the archive`));
    } finally {
      rmTempDir(copy);
    }
  });
});
