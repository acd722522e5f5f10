'use strict';
// hunt_trust.test.js - adversarial probes of the audit log's promises
// (docs/audit.md): tamper-evidence against direct edits of the SQLite file and
// of retention archives, and completeness of refusals and paging. Tenants,
// revocation, budgets and rate limits: hunt_trust_live.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { BIN, mkTempDir, rmTempDir, sqliteOnly, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');
const { verify, sql, copyStore, recHash, rows, sqlStr, rewriteChain, pay, allAudit } = require('./lib/hunt_trust_util');

// ---- audit tamper-evidence ---------------------------------------------------------------------

describe('audit tamper-evidence against direct edits', { skip: sqliteOnly('edits the SQLite file') }, () => {
  let mocks;
  let dataDir;
  let tenantId;

  before(async () => {
    mocks = await startMockVendors();
    dataDir = mkTempDir();
    const d = await startDaemon({ mocks, dataDir, env: { KEYBRAKE_AUDIT_CHECKPOINT_EVERY: '5' } });
    try {
      const t = await d.admin.post('/v1/tenants', { name: uniquePrefix('acme') });
      assert.equal(t.status, 201, t.text);
      tenantId = t.json.id;
      const k = await d.issueKey({ allowed_endpoints: ['POST /v1/payment_intents'] });
      const kt = await d.admin.post('/v1/keys', {
        label: uniquePrefix('tk'),
        vendor: 'stripe',
        allowed_endpoints: ['POST /v1/payment_intents'],
        daily_usd_cap: 100,
        expires_in: '1h',
        tenant: tenantId,
      });
      assert.equal(kt.status, 201, kt.text);
      for (let i = 0; i < 12; i++) {
        const r = await pay(d, i % 2 ? k.token : kt.json.token);
        assert.equal(r.status, 200, r.text);
      }
    } finally {
      await d.stop();
    }
    const v = verify(dataDir);
    assert.equal(v.code, 0, v.out);
  });

  after(async () => {
    rmTempDir(dataDir);
    if (mocks) await mocks.close();
  });

  function tampered(fn) {
    const copy = copyStore(dataDir);
    try {
      fn(copy);
      return verify(copy);
    } finally {
      rmTempDir(copy);
    }
  }

  it('a record in the middle rewritten with a recomputed chain fails at the next checkpoint', () => {
    const n = rows(dataDir).length;
    assert.ok(n > 20, `${n} records`);
    const v = tampered((c) =>
      rewriteChain(c, 8, (r) => {
        r.settled_micros = 0;
      }),
    );
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /altered/);
    // reported from the record after the last good checkpoint (<= 8)
    const m = /FAILED at seq (\d+)/.exec(v.out);
    assert.ok(m, v.out);
    assert.ok(Number(m[1]) <= 8 && Number(m[1]) >= 4, v.out);
  });

  it("a tenant's record moved to no tenant (chain recomputed) fails", () => {
    const all = rows(dataDir);
    const t = all.find((r) => r.tenant_id === tenantId && r.kind !== undefined && r.seq > 3);
    assert.ok(t, 'a tenant record');
    const v = tampered((c) =>
      rewriteChain(c, t.seq, (r) => {
        r.tenant_id = null;
      }),
    );
    assert.equal(v.code, 1, v.out);
  });

  it('two records swapped fail', () => {
    const v = tampered((c) =>
      sql(
        c,
        'BEGIN; UPDATE audit SET seq = -6 WHERE seq = 6; UPDATE audit SET seq = 6 WHERE seq = 7; UPDATE audit SET seq = 7 WHERE seq = -6; COMMIT;',
      ),
    );
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /FAILED at seq 6/);
  });

  it('one checkpoint deleted in the middle fails as checkpoint/removed', () => {
    const cks = sql(dataDir, 'SELECT seq FROM audit_checkpoints ORDER BY seq').split('\n').map(Number);
    assert.ok(cks.length >= 4, cks.join(','));
    const v = tampered((c) => sql(c, `DELETE FROM audit_checkpoints WHERE seq = ${cks[2]}`));
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /removed|checkpoint/);
  });

  it('the first checkpoint deleted fails', () => {
    const v = tampered((c) => sql(c, 'DELETE FROM audit_checkpoints WHERE seq = 1'));
    assert.equal(v.code, 1, v.out);
  });

  it('every checkpoint deleted fails', () => {
    const v = tampered((c) => sql(c, 'DELETE FROM audit_checkpoints'));
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /checkpoint/);
  });

  it("a checkpoint's every raised (so later ones look not due) fails its signature", () => {
    const cks = sql(dataDir, 'SELECT seq FROM audit_checkpoints ORDER BY seq').split('\n').map(Number);
    const v = tampered((c) =>
      sql(c, `UPDATE audit_checkpoints SET every = 1000000 WHERE seq = ${cks[1]}; DELETE FROM audit_checkpoints WHERE seq > ${cks[1]};`),
    );
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /checkpoint/);
  });

  it('records forged past the last record, more than a checkpoint interval, fail as a missing checkpoint', () => {
    const v = tampered((c) => {
      const all = rows(c);
      const last = all[all.length - 1];
      let prev = Buffer.from(last.hexhash, 'hex');
      const stmts = ['BEGIN;'];
      for (let i = 1; i <= 8; i++) {
        const r = { ...last, seq: last.seq + i, ref_seq: 0, request_id: `forged-${i}` };
        const h = recHash(prev, r);
        prev = h;
        const cols = Object.keys(r).filter((k) => k !== 'hexhash' && k !== 'hash');
        stmts.push(
          `INSERT INTO audit (${cols.join(', ')}, hash) VALUES (${cols.map((k) => sqlStr(r[k])).join(', ')}, X'${h.toString('hex')}');`,
        );
      }
      stmts.push('COMMIT;');
      execFileSync('sqlite3', [path.join(c, 'keybrake.db')], { input: stmts.join('\n'), encoding: 'utf8' });
    });
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /checkpoint/);
  });

  it('a record deleted in the middle and the later ones renumbered fails', () => {
    const v = tampered((c) =>
      sql(c, 'BEGIN; DELETE FROM audit WHERE seq = 9; UPDATE audit SET seq = seq - 1 WHERE seq > 9; COMMIT;'),
    );
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /FAILED at seq 9/);
  });

  it('the tail cut after the last checkpoint: plain verify passes and says what is uncovered; --anchor catches it', () => {
    const copy = copyStore(dataDir);
    const anchorDir = mkTempDir();
    try {
      const anchor = path.join(anchorDir, 'a.jsonl');
      const ex = spawnSync(BIN, ['audit', 'export'], {
        env: { ...process.env, KEYBRAKE_DATA_DIR: copy },
        encoding: 'utf8',
      });
      assert.equal(ex.status, 0, ex.stderr);
      fs.writeFileSync(anchor, ex.stdout);
      const last = Number(sql(copy, 'SELECT max(seq) FROM audit'));
      const lastCk = Number(sql(copy, 'SELECT max(seq) FROM audit_checkpoints'));
      // cut two records; if that reaches the last checkpoint, cut it too
      sql(copy, `DELETE FROM audit WHERE seq > ${last - 2}; DELETE FROM audit_checkpoints WHERE seq > ${last - 2};`);
      const plain = verify(copy);
      assert.equal(plain.code, 0, plain.out);
      assert.ok(lastCk > 0);
      const anch = verify(copy, ['--anchor', anchor]);
      assert.equal(anch.code, 1, anch.out);
      assert.match(anch.out, /truncated/);
      assert.match(anch.out, new RegExp(`seq ${last - 1}\\b`));
    } finally {
      rmTempDir(copy);
      rmTempDir(anchorDir);
    }
  });
});

// ---- audit completeness -------------------------------------------------------------------------

describe('audit completeness of refusals and paging', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks, env: { KEYBRAKE_WORKERS: '2', KEYBRAKE_MAX_BODY_BYTES: '4096' } });
  });

  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  it("every refusal of a request carrying a valid token is its key's own record", async () => {
    const k = await d.issueKey({ allowed_endpoints: ['POST /v1/payment_intents', 'GET /v1/customers/+'] });
    const auth = { authorization: `Bearer ${k.token}` };
    const form = { ...auth, 'content-type': 'application/x-www-form-urlencoded' };
    const cases = [
      ['bad_path', { method: 'GET', path: '/stripe/v1/customers/..%2Fx', headers: auth }],
      ['bad_path dot', { method: 'GET', path: '/stripe/v1/customers/../payment_intents', headers: auth }],
      ['endpoint_not_allowed', { method: 'POST', path: '/stripe/v1/refunds', headers: form, body: 'amount=1' }],
      ['ambiguous', { method: 'POST', path: '/stripe/v1/payment_intents?amount=5', headers: form, body: 'amount=100&currency=usd' }],
      ['coding', { method: 'POST', path: '/stripe/v1/payment_intents', headers: { ...form, 'content-encoding': 'compress' }, body: 'x' }],
      ['body too large', { method: 'POST', path: '/stripe/v1/payment_intents', headers: form, body: 'a='.padEnd(8000, 'x') }],
      ['get with body', { method: 'GET', path: '/stripe/v1/customers/cus_1', headers: { ...auth, 'content-type': 'text/plain' }, body: 'x' }],
      ['vendor mismatch', { method: 'POST', path: '/openai/v1/chat/completions', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' }],
      ['account', { method: 'GET', path: '/stripe/v1/customers/cus_1', headers: { ...auth, 'stripe-account': 'acct_x' } }],
    ];
    const missing = [];
    for (const [name, req] of cases) {
      const r = await d.proxy(req);
      assert.ok(r.status >= 400, `${name}: ${r.status} ${r.text}`);
      const id = r.headers['keybrake-request-id'];
      assert.ok(id, `${name}: no request id`);
      const recs = (await allAudit(d, `key_id=${k.id}`)).filter((e) => e.request_id === id);
      if (recs.length !== 1) missing.push(`${name} (${r.status} ${r.json && r.json.code}): ${recs.length} records`);
      else assert.equal(recs[0].code, r.json.code, name);
    }
    assert.deepEqual(missing, []);
    assert.equal(mocks.stripe.requests.length, 0);
  });

  it('paging under concurrent writes: no duplicate, no gap, newest first', async () => {
    const k = await d.issueKey({ label: uniquePrefix('pg'), allowed_endpoints: ['POST /v1/payment_intents'] });
    for (let i = 0; i < 30; i++) await pay(d, k.token);
    const seen = [];
    let cursor = null;
    let extra = 0;
    for (;;) {
      const r = await d.admin.get(`/v1/audit?key_id=${k.id}&limit=4${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(r.status, 200, r.text);
      seen.push(...r.json.data);
      // new records arrive between pages
      if (extra++ < 5) await pay(d, k.token);
      if (!r.json.next_cursor) break;
      cursor = r.json.next_cursor;
    }
    const proxied = seen.filter((e) => e.kind === 'proxy');
    assert.equal(seen.length, proxied.length + 1, 'and the key.issued record');
    const ids = proxied.map((e) => e.request_id);
    assert.equal(new Set(ids).size, ids.length, 'no duplicate');
    assert.equal(ids.length, 30, 'the 30 records before the first page, exactly');
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i - 1].seq > seen[i].seq);
    for (const e of seen) assert.equal(e.completed, true);
  });

  it('since is inclusive, until exclusive, on the record time', async () => {
    const k = await d.issueKey({ label: uniquePrefix('tm'), allowed_endpoints: ['POST /v1/payment_intents'] });
    for (let i = 0; i < 5; i++) await pay(d, k.token);
    const all = (await allAudit(d, `key_id=${k.id}`)).filter((e) => e.kind === 'proxy');
    assert.equal(all.length, 5);
    const t = all[2].ts; // middle one
    const since = (await allAudit(d, `key_id=${k.id}&since=${encodeURIComponent(t)}`)).filter((e) => e.kind === 'proxy');
    const until = (await allAudit(d, `key_id=${k.id}&until=${encodeURIComponent(t)}`)).filter((e) => e.kind === 'proxy');
    assert.ok(since.some((e) => e.request_id === all[2].request_id), 'since inclusive');
    assert.ok(!until.some((e) => e.request_id === all[2].request_id), 'until exclusive');
    assert.equal(since.length + until.length, 5, 'no record in both or neither');
  });
});

// ---- retention archives tampered ------------------------------------------------------------

describe('retention archives tampered by hand', { skip: sqliteOnly('reads the SQLite file') }, () => {
  let mocks;
  let dataDir;
  let archiveDir;
  const files = () =>
    fs
      .readdirSync(archiveDir)
      .filter((f) => /^audit-\d{12}-\d{12}\.jsonl$/.test(f))
      .sort();

  before(async () => {
    mocks = await startMockVendors();
    dataDir = mkTempDir();
    archiveDir = path.join(dataDir, 'archive');
    const d = await startDaemon({
      mocks,
      dataDir,
      env: {
        KEYBRAKE_AUDIT_RETENTION: '1500ms',
        KEYBRAKE_AUDIT_ARCHIVE_DIR: archiveDir,
        KEYBRAKE_AUDIT_CHECKPOINT_EVERY: '5',
      },
    });
    try {
      const key = await d.issueKey({ allowed_endpoints: ['GET /v1/payment_intents/*'] });
      let i = 0;
      await waitFor(
        async () => {
          for (let j = 0; j < 5; j++) {
            const r = await d.proxy({ path: `/stripe/v1/payment_intents/pi_${i++}`, headers: { authorization: `Bearer ${key.token}` } });
            assert.equal(r.status, 200, r.text);
          }
          return fs.existsSync(archiveDir) && files().length >= 3;
        },
        { timeoutMs: 60_000, stepMs: 300, what: 'three archive files' },
      );
    } finally {
      await d.stop();
    }
    const v = verify(dataDir, ['--archive', archiveDir]);
    assert.equal(v.code, 0, v.out);
  });

  after(async () => {
    rmTempDir(dataDir);
    if (mocks) await mocks.close();
  });

  function withArchiveCopy(fn) {
    const copy = mkTempDir();
    try {
      for (const f of files()) fs.copyFileSync(path.join(archiveDir, f), path.join(copy, f));
      fn(copy, files());
      return verify(dataDir, ['--archive', copy]);
    } finally {
      rmTempDir(copy);
    }
  }
  const readLines = (dir, f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean);
  const writeLines = (dir, f, lines) => fs.writeFileSync(path.join(dir, f), lines.join('\n') + '\n');

  it('a middle archive file deleted fails', () => {
    const v = withArchiveCopy((c, fs_) => fs.rmSync(path.join(c, fs_[1])));
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /removed/);
  });

  it('the first archive file deleted fails as removed at 1', () => {
    const v = withArchiveCopy((c, fs_) => fs.rmSync(path.join(c, fs_[0])));
    assert.equal(v.code, 1, v.out);
    assert.match(v.out, /FAILED at seq 1\b/);
  });

  it('a record edited in an archive fails', () => {
    const v = withArchiveCopy((c, fs_) => {
      const lines = readLines(c, fs_[1]);
      const i = lines.findIndex((l) => l.includes('"settled_micros":1'));
      const at = i >= 0 ? i : 1;
      lines[at] = lines[at].replace(/"bytes_out":(\d+)/, (m, n) => `"bytes_out":${Number(n) + 1}`);
      writeLines(c, fs_[1], lines);
    });
    assert.equal(v.code, 1, v.out);
  });

  it('a record edited in an archive with every later hash recomputed fails at a checkpoint', () => {
    const v = withArchiveCopy((c, fs_) => {
      // rewrite from file 2 line 2 onward, through every later file, chaining the hashes
      let prev = null;
      let started = false;
      for (const f of fs_) {
        const lines = readLines(c, f);
        for (let i = 0; i < lines.length; i++) {
          const o = JSON.parse(lines[i]);
          if (o.checkpoint !== undefined) {
            if (started) o.hash = prev.toString('hex');
            lines[i] = JSON.stringify(o);
            continue;
          }
          const r = () => ({ ...o, kind: o.kind === 'admin' ? 1 : 0, tenant_id: o.tenant || null });
          if (!started && prev) {
            // the forger's hash function is the daemon's
            assert.equal(recHash(prev, r()).toString('hex'), o.hash, `${f} line ${i}`);
          }
          if (!started && f === fs_[1] && i >= 1) {
            started = true;
            o.bytes_out += 1;
          }
          if (started) {
            const h = recHash(prev, r());
            o.hash = h.toString('hex');
            lines[i] = JSON.stringify(o);
          }
          prev = Buffer.from(o.hash, 'hex');
        }
        writeLines(c, f, lines);
      }
    });
    assert.equal(v.code, 1, v.out);
  });

  it('a checkpoint line removed from an archive fails', () => {
    const v = withArchiveCopy((c, fs_) => {
      const lines = readLines(c, fs_[1]);
      const i = lines.findIndex((l) => l.startsWith('{"checkpoint"'));
      assert.ok(i >= 0 && i < lines.length - 1, 'a checkpoint before the cut');
      lines.splice(i, 1);
      writeLines(c, fs_[1], lines);
    });
    assert.equal(v.code, 1, v.out);
  });

  it('the last file cut short (its cut checkpoint and last record gone) fails', () => {
    const v = withArchiveCopy((c, fs_) => {
      const f = fs_[fs_.length - 1];
      const lines = readLines(c, f);
      writeLines(c, f, lines.slice(0, -2));
    });
    assert.equal(v.code, 1, v.out);
  });

  it('two files swapped in content (names kept) fail', () => {
    const v = withArchiveCopy((c, fs_) => {
      const a = fs.readFileSync(path.join(c, fs_[0]));
      const b = fs.readFileSync(path.join(c, fs_[1]));
      fs.writeFileSync(path.join(c, fs_[0]), b);
      fs.writeFileSync(path.join(c, fs_[1]), a);
    });
    assert.equal(v.code, 1, v.out);
  });
});
