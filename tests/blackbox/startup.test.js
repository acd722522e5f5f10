'use strict';
// startup.test.js - the daemon's life cycle: the ready line, the admin token
// created on first start (file mode 0600, path printed), restart on the same
// data dir keeping keys and token, and SIGTERM with a request in flight
// (the request completes, then the daemon exits 0).

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const {
  assertError,
  makeSecrets,
  mkTempDir,
  request,
  rmTempDir,
  sqliteOnly,
  startDaemon,
  uniquePrefix,
  waitFor,
} = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

describe('startup and shutdown', () => {
  it('prints exactly one ready line with two distinct loopback ports', async () => {
    const d = await startDaemon({});
    try {
      const ready = d.stdoutLines.filter((l) => l.startsWith('keybrake: ready'));
      assert.equal(ready.length, 1, d.output());
      assert.notEqual(d.proxyPort, d.adminPort);
      assert.ok(d.proxyPort > 0 && d.adminPort > 0);
      const h = await d.admin.get('/healthz', { token: null });
      assert.equal(h.status, 200);
      // An admin token given by environment is not written to the data dir.
      assert.ok(!d.stdoutLines.some((l) => l.startsWith('keybrake: admin token written')), d.output());
    } finally {
      await d.stop();
    }
  });

  it('no admin token configured: one is created (0600, path printed), works, and survives a restart with the keys', async () => {
    const mocks = await startMockVendors();
    const dataDir = mkTempDir();
    const secrets = makeSecrets();
    try {
      const d1 = await startDaemon({ dataDir, adminToken: null, mocks, secrets });
      let key;
      let token;
      try {
        const file = path.join(dataDir, 'admin-token');
        assert.equal(d1.tokenWrittenTo, file, `token path line:\n${d1.output()}`);
        // The line comes before the ready line.
        const iWritten = d1.stdoutLines.findIndex((l) => l.startsWith('keybrake: admin token written'));
        const iReady = d1.stdoutLines.findIndex((l) => l.startsWith('keybrake: ready'));
        assert.ok(iWritten >= 0 && iWritten < iReady, d1.output());
        const st = fs.statSync(file);
        assert.equal(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`);
        token = fs.readFileSync(file, 'utf8').trim();
        assert.ok(token.length >= 32, `admin token too short: ${token.length} chars`);
        assert.ok(!/\s/.test(token));
        assert.ok(!d1.output().includes(token), 'the admin token itself is printed or logged');

        const list = await d1.admin.get('/v1/keys', { token });
        assert.equal(list.status, 200, list.text);
        const wrong = await d1.admin.get('/v1/keys', { token: token.slice(0, -1) + (token.endsWith('x') ? 'y' : 'x') });
        assertError(wrong, 401, 'unauthorized');

        key = await d1.issueKey({ label: uniquePrefix('persist'), vendor: 'stripe' });
        const p = await d1.proxy({
          method: 'GET',
          path: '/stripe/v1/payment_intents/pi_persist1',
          headers: { authorization: `Bearer ${key.token}` },
        });
        assert.equal(p.status, 200, p.text);
      } finally {
        await d1.stop();
      }
      assert.ok(fs.existsSync(path.join(dataDir, 'admin-token')), 'token file kept after stop');

      const d2 = await startDaemon({ dataDir, adminToken: null, mocks, secrets });
      try {
        assert.equal(d2.tokenWrittenTo, undefined, `no new token on restart:\n${d2.output()}`);
        assert.equal(fs.readFileSync(path.join(dataDir, 'admin-token'), 'utf8').trim(), token);
        const g = await d2.admin.get(`/v1/keys/${key.id}`, { token });
        assert.equal(g.status, 200, g.text);
        assert.equal(g.json.label, key.label);
        assert.equal(g.json.status, 'active');
        assert.equal(g.json.usage.requests, 1, 'usage survives the restart');
        mocks.reset();
        const p = await d2.proxy({
          method: 'GET',
          path: '/stripe/v1/payment_intents/pi_persist2',
          headers: { authorization: `Bearer ${key.token}` },
        });
        assert.equal(p.status, 200, `the vault token still works after restart: ${p.text}`);
        assert.equal(mocks.stripe.requests.length, 1);

        // Revocation is durable too.
        assert.equal((await d2.admin.del(`/v1/keys/${key.id}`, { token })).status, 204);
      } finally {
        await d2.stop();
      }

      const d3 = await startDaemon({ dataDir, adminToken: null, mocks, secrets });
      try {
        const p = await d3.proxy({
          method: 'GET',
          path: '/stripe/v1/payment_intents/pi_persist3',
          headers: { authorization: `Bearer ${key.token}` },
        });
        assertError(p, 401, 'key_revoked');
      } finally {
        await d3.stop();
      }
    } finally {
      rmTempDir(dataDir);
      await mocks.close();
    }
  });

  it('SIGTERM with a request in flight: the request completes, then exit code 0', { timeout: 60_000 }, async () => {
    const mocks = await startMockVendors();
    let d;
    try {
      d = await startDaemon({ mocks });
      const key = await d.issueKey({ label: uniquePrefix('drain'), vendor: 'stripe' });
      const held = mocks.stripe.nextHold();
      const inflight = d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents',
        headers: {
          authorization: `Bearer ${key.token}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: 'amount=4200&currency=usd',
      });
      const ctl = await held; // the request has reached the vendor and waits there
      d.signal('SIGTERM');

      // Wait until the daemon shows it is shutting down: a new request is refused
      // (connection refused/reset, or 503 shutting_down) instead of the usual 401.
      await waitFor(
        async () => {
          if (d.exited) return true;
          try {
            const r = await request({ port: d.proxyPort, path: '/stripe/v1/payment_intents', timeoutMs: 2000 });
            if (r.status === 503) {
              assert.equal(r.json && r.json.code, 'shutting_down', r.text);
              return true;
            }
            return false;
          } catch {
            return true; // refused: listener closed
          }
        },
        { timeoutMs: 10_000, what: 'the daemon to stop accepting after SIGTERM' },
      );
      assert.equal(d.exited, false, `daemon exited with a request in flight:\n${d.output()}`);

      ctl.respond(); // the vendor answers now
      const r = await inflight;
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.object, 'payment_intent');
      assert.equal(r.json.amount, 4200);

      await d.waitExit();
      await d.stop(); // asserts exit code 0
    } finally {
      if (d) await d.kill();
      await mocks.close();
    }
  });

  it('a request still at the vendor when the shutdown deadline passes is charged and completed in the audit', { timeout: 60_000 }, async () => {
    const mocks = await startMockVendors();
    let d, d2;
    try {
      d = await startDaemon({ mocks, keepDataDir: true, env: { KEYBRAKE_SHUTDOWN_TIMEOUT: '1s' } });
      const key = await d.issueKey({ label: uniquePrefix('deadline'), vendor: 'stripe', daily_usd_cap: 100 });
      const held = mocks.stripe.nextHold(); // never answered
      const inflight = d
        .proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
          body: 'amount=4200&currency=usd',
        })
        .catch((e) => e);
      await held;
      await d.stop(); // SIGTERM; the 1 s deadline passes with the request still out
      await inflight;
      d2 = await startDaemon({ mocks, dataDir: d.dataDir });
      const recs = (await d2.admin.get(`/v1/audit?key_id=${key.id}&limit=10`)).json.data.filter((a) => a.kind === 'proxy');
      assert.equal(recs.length, 1, JSON.stringify(recs));
      assert.equal(recs[0].completed, true);
      assert.equal(recs[0].code, 'shutting_down');
      assert.equal(recs[0].settled_usd, 42);
      assert.deepEqual(recs[0].detail, { outcome: 'unknown' });
      const u = (await d2.admin.get(`/v1/keys/${key.id}`)).json.usage;
      assert.equal(u.spent_usd, 42);
      assert.equal(u.reserved_usd, 0);
    } finally {
      if (d2) await d2.stop();
      if (d) rmTempDir(d.dataDir);
      await mocks.close();
    }
  });

  it('SIGTERM with key issuances in flight: every 201 is a durable key, then exit code 0', { timeout: 60_000 }, async () => {
    // Issuance is answered once the store writer's batch committed; the
    // admin thread waits for the batches in flight before it stops.
    const dataDir = mkTempDir();
    try {
      const d = await startDaemon({ dataDir });
      const label = uniquePrefix('sigterm-issue');
      const body = { label, vendor: 'stripe', allowed_endpoints: ['GET /v1/*'], daily_usd_cap: 1, expires_in: '1h' };
      const posts = [];
      for (let i = 0; i < 64; i++) posts.push(d.admin.post('/v1/keys', body).catch((e) => ({ error: e })));
      // once the first answer is back the others are in the pipeline
      await Promise.race(posts);
      d.signal('SIGTERM');
      const results = await Promise.all(posts);
      await d.waitExit();
      await d.stop(); // asserts exit code 0 (and no leak report under ASan)
      const issued = results.filter((r) => r.status === 201).map((r) => r.json.id);
      for (const r of results) {
        if (r.error) continue; // the connection was closed before the request was read
        assert.ok(r.status === 201 || r.status === 503, `${r.status} ${r.text}`);
      }
      assert.ok(issued.length >= 1);

      const d2 = await startDaemon({ dataDir, adminToken: d.adminToken });
      try {
        const l = await d2.admin.get(`/v1/keys?label_prefix=${label}&limit=200`);
        assert.equal(l.status, 200, l.text);
        const stored = new Set(l.json.data.map((k) => k.id));
        for (const id of issued) assert.ok(stored.has(id), `key ${id} was answered 201 but is not in the store`);
      } finally {
        await d2.stop();
      }
    } finally {
      rmTempDir(dataDir);
    }
  });

  it('SIGINT stops the daemon with exit code 0', async () => {
    const d = await startDaemon({});
    d.signal('SIGINT');
    await d.waitExit();
    await d.stop();
  });

  it('a node-id file that holds no node id (a NUL inside, a bad character) stops the start, naming it', async () => {
    // a regression: a NUL hid bytes from the check and overflowed the copy
    for (const content of [Buffer.concat([Buffer.from('a\0'), Buffer.alloc(63, 0x61)]), Buffer.from('node one\n')]) {
      const dataDir = mkTempDir();
      try {
        fs.writeFileSync(path.join(dataDir, 'node-id'), content);
        await assert.rejects(
          startDaemon({ dataDir }),
          (e) => /exited \(code [1-9]\d*, signal null\) before ready/.test(e.message) && /node-id does not hold a node id/.test(e.message),
        );
      } finally {
        rmTempDir(dataDir);
      }
    }
  });

  it('refuses to start with an invalid configuration, with a message and non-zero exit', async () => {
    const dataDir = mkTempDir();
    try {
      await assert.rejects(
        startDaemon({ dataDir, env: { KEYBRAKE_MAX_TTL: 'forever' } }),
        /exited \(code [1-9]\d*, signal null\) before ready[\s\S]*MAX_TTL/i,
      );
    } finally {
      rmTempDir(dataDir);
    }
  });
  // A vendor base URL the upstream client cannot use (user info, no host)
  // is refused at start, naming the vendor, not at the first request.
  it('refuses to start with an unusable vendor base URL, naming the vendor', async () => {
    const dataDir = mkTempDir();
    try {
      await assert.rejects(
        startDaemon({ dataDir, baseUrls: { stripe: 'http://user@127.0.0.1:1' } }),
        /exited \(code [1-9]\d*, signal null\) before ready[\s\S]*vendor\.stripe: base_url/i,
      );
    } finally {
      rmTempDir(dataDir);
    }
  });

  // The vendor CA bundle is read once at start: a path that cannot be read
  // stops the start, instead of every TLS request failing later.
  it('refuses to start with an unreadable CA file, and says which', async () => {
    const dataDir = mkTempDir();
    try {
      await assert.rejects(
        startDaemon({ dataDir, env: { KEYBRAKE_CA_FILE: path.join(dataDir, 'no-such-ca.pem') } }),
        /exited \(code [1-9]\d*, signal null\) before ready[\s\S]*no-such-ca\.pem/i,
      );
    } finally {
      rmTempDir(dataDir);
    }
  });

  it('a second daemon on the same data dir refuses to start, naming the first one\'s pid', async () => {
    const first = await startDaemon({ keepDataDir: true });
    try {
      await assert.rejects(
        startDaemon({ dataDir: first.dataDir }),
        new RegExp(`exited \\(code [1-9]\\d*, signal null\\) before ready[\\s\\S]*another keybrake \\(pid ${first.pid}\\)`),
      );
      // the first one still serves
      const k = await first.issueKey({ label: uniquePrefix('lock'), vendor: 'stripe' });
      assert.ok(k.id);
    } finally {
      await first.stop();
    }
    // once it stopped, the data dir can be served again
    const again = await startDaemon({ dataDir: first.dataDir });
    await again.stop();
    rmTempDir(first.dataDir);
  });

  it('SIGHUP reloads fixed costs and the log level while serving; a broken config changes nothing', async () => {
    const mocks = await startMockVendors();
    const dir = mkTempDir();
    const conf = path.join(dir, 'keybrake.ini');
    fs.writeFileSync(conf, '[server]\nlog_level = info\n');
    const d = await startDaemon({ mocks, args: ['--config', conf] });
    try {
      const key = await d.issueKey({ label: uniquePrefix('hup'), vendor: 'stripe', allowed_endpoints: ['/v1/*'], daily_usd_cap: 10 });
      const call = () =>
        d.proxy({ method: 'POST', path: '/stripe/v1/reload_probe', headers: { authorization: `Bearer ${key.token}` } });
      assertError(await call(), 400, 'endpoint_not_metered');
      fs.writeFileSync(conf, '[server]\nlog_level = debug\n[vendor.stripe]\ncost = POST /v1/reload_probe 1.25\n');
      let done = d.waitForStderr(/reloaded/);
      d.signal('SIGHUP');
      await done;
      const r = await call();
      assert.equal(r.status, 404, r.text); // the mock does not know the path: priced and forwarded
      assert.equal(Number(r.headers['keybrake-cost-usd']), 1.25);
      assert.equal(mocks.stripe.requests.length, 1);
      // a configuration that does not load: logged, nothing changes, still serving
      fs.writeFileSync(conf, '[vendor.stripe]\ncost = not a cost\n');
      done = d.waitForStderr(/reload failed; nothing changed/);
      d.signal('SIGHUP');
      await done;
      const again = await call();
      assert.equal(Number(again.headers['keybrake-cost-usd']), 1.25);
      assert.equal(d.exited, false);
    } finally {
      await d.stop();
      await mocks.close();
      rmTempDir(dir);
    }
  });

  // A small tmpfs of our own (the test runs as root, like make test) fills
  // up for real; SQLite alone would say only "disk I/O error".
  it('a start on a full disk says the disk is full', { skip: sqliteOnly('fills the disk of the SQLite file') }, async () => {
    const mnt = mkTempDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
    try {
      const dataDir = path.join(mnt, 'data');
      const first = await startDaemon({ dataDir });
      await first.stop();
      const fill = fs.openSync(path.join(mnt, 'fill'), 'w');
      const block = Buffer.alloc(64 * 1024);
      try {
        for (;;) fs.writeSync(fill, block);
      } catch (e) {
        assert.equal(e.code, 'ENOSPC');
      } finally {
        fs.closeSync(fill);
      }
      await assert.rejects(startDaemon({ dataDir }), /before ready[\s\S]*the disk holding .* is full/);
    } finally {
      execFileSync('umount', [mnt]);
      rmTempDir(mnt);
    }
  });

  it('kill -9 with a payment in flight: after restart no reservation is left, it is charged', async () => {
    const mocks = await startMockVendors();
    const dataDir = mkTempDir();
    const secrets = makeSecrets();
    try {
      const d1 = await startDaemon({ dataDir, mocks, secrets });
      let key;
      try {
        key = await d1.issueKey({ label: uniquePrefix('crash'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
        const hold = mocks.stripe.nextHold();
        const inflight = d1
          .proxy({
            method: 'POST',
            path: '/stripe/v1/payment_intents',
            headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
            body: 'amount=4000&currency=usd',
          })
          .catch((e) => e);
        await hold; // the vendor has the request: its outcome is now unknown to Keybrake
        const before = await d1.admin.get(`/v1/keys/${key.id}`);
        assert.equal(before.json.usage.reserved_usd, 40, before.text);
        d1.child.kill('SIGKILL');
        await d1.exitPromise;
        assert.ok((await inflight) instanceof Error, 'the client saw the connection die');
      } finally {
        await d1.kill();
      }
      const d2 = await startDaemon({ dataDir, mocks, secrets });
      try {
        const after = await d2.admin.get(`/v1/keys/${key.id}`);
        assert.equal(after.status, 200, after.text);
        assert.equal(after.json.usage.reserved_usd, 0, 'no reservation survives the crash');
        assert.equal(after.json.usage.spent_usd, 40, 'settled at its worst case, not dropped');
        assert.match(d2.stderr, /reservations left by an unclean stop/);
      } finally {
        await d2.stop();
      }
    } finally {
      await mocks.close();
      rmTempDir(dataDir);
    }
  });
});
