'use strict';
// reload.test.js - SIGHUP (issue 14, item 3) beyond the configuration reload
// that startup.test.js covers: the log file and the audit sink are reopened
// for logrotate (rename, then HUP) while requests are being served, with no
// line lost, torn or written twice and the old files let go; limits read per
// request (max_ttl, max_path_bytes) change live; the reload log line names
// exactly the changed settings that need a restart; a file that cannot be
// reopened keeps the old one in use.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const { assertError, sqliteOnly, mkTempDir, rmTempDir, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');

// Every line of a JSONL text, parsed; a torn or foreign line fails the test.
function jsonLines(text, what) {
  assert.ok(text === '' || text.endsWith('\n'), `${what} ends inside a line`);
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        assert.fail(`${what}: a line is not JSON: ${JSON.stringify(l)}`);
      }
    });
}

// The files the daemon holds open, as paths.
function openFiles(pid) {
  const dir = `/proc/${pid}/fd`;
  const out = [];
  for (const fd of fs.readdirSync(dir)) {
    try {
      out.push(fs.readlinkSync(path.join(dir, fd)));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

describe('SIGHUP', () => {
  it('reopens the log file and the audit sink under load: every line once, whole, old files closed', { skip: sqliteOnly('reads the SQLite file with sqlite3') }, async () => {
    const mocks = await startMockVendors();
    const dir = mkTempDir();
    const logFile = path.join(dir, 'keybrake.log');
    const sinkFile = path.join(dir, 'audit.jsonl');
    const conf = path.join(dir, 'keybrake.ini');
    fs.writeFileSync(conf, `[server]\nlog_file = ${logFile}\nlog_format = json\n[audit]\nsink = ${sinkFile}\n`);
    const dataDir = mkTempDir(); // kept after the stop, for the last seq
    const d = await startDaemon({ mocks, dataDir, args: ['--config', conf] });
    const ids = [];
    try {
      const key = await d.issueKey({ label: uniquePrefix('rot'), vendor: 'stripe', allowed_endpoints: ['GET /v1/payment_intents/*'] });
      let stop = false;
      const worker = async (w) => {
        for (let i = 0; !stop; i++) {
          const r = await d.proxy({ path: `/stripe/v1/payment_intents/pi_w${w}n${i}`, headers: { authorization: `Bearer ${key.token}` } });
          assert.equal(r.status, 200, r.text);
          ids.push(r.headers['keybrake-request-id']);
        }
      };
      const load = [0, 1, 2, 3].map(worker);
      const ROTATIONS = 3;
      for (let n = 1; n <= ROTATIONS; n++) {
        const served = ids.length;
        await waitFor(() => ids.length >= served + 50, { timeoutMs: 30_000, what: 'traffic before the rotation' });
        fs.renameSync(logFile, `${logFile}.${n}`);
        fs.renameSync(sinkFile, `${sinkFile}.${n}`);
        d.signal('SIGHUP');
        // the new files appear and are written: the reload line, then records
        await waitFor(() => /"msg":"reloaded"/.test(read(logFile)), { timeoutMs: 20_000, what: `rotation ${n}: the reload line in the new log` });
        const after = ids.length;
        await waitFor(() => ids.length >= after + 10 && read(sinkFile).length > 0, { timeoutMs: 30_000, what: `rotation ${n}: records in the new sink` });
        const held = openFiles(d.child.pid);
        assert.ok(held.includes(logFile), `the new log is open: ${held}`);
        assert.ok(held.includes(sinkFile), `the new sink is open: ${held}`);
        for (const f of held) assert.ok(!/\.\d+$/.test(f), `a rotated file is still open: ${f}`);
      }
      stop = true;
      await Promise.all(load);
      await d.stop();

      // the log: every line whole, every access line exactly once across the files
      const logs = [...Array.from({ length: ROTATIONS }, (_, i) => `${logFile}.${i + 1}`), logFile];
      const access = new Map();
      for (const f of logs) {
        const lines = jsonLines(read(f), f);
        assert.ok(lines.length > 0, `${f} is empty`);
        for (const l of lines) if (l.msg === 'access') access.set(l.request_id, (access.get(l.request_id) || 0) + 1);
      }
      assert.ok(ids.length >= ROTATIONS * 30);
      for (const id of ids) assert.equal(access.get(id), 1, `access line of ${id}`);

      // the sink: every record once, in order, up to the last one committed
      const sinks = [...Array.from({ length: ROTATIONS }, (_, i) => `${sinkFile}.${i + 1}`), sinkFile];
      const seqs = [];
      for (const f of sinks) {
        const recs = jsonLines(read(f), f);
        assert.ok(recs.length > 0, `${f} is empty`);
        for (const r of recs) seqs.push(r.seq);
      }
      for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `sink seq after ${seqs[i - 1]}`);
      const last = Number(execFileSync('sqlite3', [path.join(dataDir, 'keybrake.db'), 'SELECT max(seq) FROM audit'], { encoding: 'utf8' }).trim());
      assert.equal(seqs[seqs.length - 1], last);
    } finally {
      if (!d.exited) await d.kill();
      await mocks.close();
      rmTempDir(dir);
      rmTempDir(dataDir);
    }
  });

  it('a sink that cannot be reopened keeps the old file in use, and says so', async () => {
    const mocks = await startMockVendors();
    const dir = mkTempDir();
    const logFile = path.join(dir, 'keybrake.log');
    const sinkFile = path.join(dir, 'audit.jsonl');
    const conf = path.join(dir, 'keybrake.ini');
    fs.writeFileSync(conf, `[server]\nlog_file = ${logFile}\n[audit]\nsink = ${sinkFile}\n`);
    const d = await startDaemon({ mocks, args: ['--config', conf] });
    try {
      fs.renameSync(sinkFile, `${sinkFile}.1`);
      fs.mkdirSync(sinkFile); // open(2) of a directory for writing fails
      d.signal('SIGHUP');
      await waitFor(() => /cannot reopen the audit sink; still writing the old one/.test(read(logFile)), { timeoutMs: 20_000, what: 'the reopen failure in the log' });
      await waitFor(() => /reloaded/.test(read(logFile)), { timeoutMs: 20_000, what: 'the reload line' });
      const before = read(`${sinkFile}.1`).length;
      await d.issueKey({ label: uniquePrefix('keep'), vendor: 'stripe' });
      await waitFor(() => read(`${sinkFile}.1`).length > before, { timeoutMs: 10_000, what: 'the old sink written' });
      assert.equal(d.exited, false);
    } finally {
      if (!d.exited) await d.stop();
      await mocks.close();
      rmTempDir(dir);
    }
  });

  it('applies max_ttl, max_path_bytes and max_body_bytes live and names each change that needs a restart', async () => {
    const mocks = await startMockVendors();
    const dir = mkTempDir();
    const conf = path.join(dir, 'keybrake.ini');
    fs.writeFileSync(conf, '[server]\nmax_ttl = 1h\n[limits]\nmax_path_bytes = 64\nmax_body_bytes = 1k\n');
    const d = await startDaemon({ mocks, args: ['--config', conf] });
    try {
      const issue = (expires_in) => d.admin.post('/v1/keys', { label: uniquePrefix('ttl'), vendor: 'stripe', allowed_endpoints: ['/v1/*'], daily_usd_cap: 10, expires_in });
      assertError(await issue('2h'), 400, 'invalid_request');
      const key = await d.issueKey({ label: uniquePrefix('path'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
      const long = `/stripe/v1/payment_intents/pi_${'x'.repeat(80)}`;
      const call = () => d.proxy({ path: long, headers: { authorization: `Bearer ${key.token}` } });
      assertError(await call(), 400, 'bad_path');
      const post = () =>
        d.proxy({
          method: 'POST',
          path: '/stripe/v1/payment_intents',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
          body: `amount=100&currency=usd&metadata[pad]=${'p'.repeat(5000)}`,
        });
      assertError(await post(), 413, 'body_too_large');
      assert.equal(mocks.count(), 0);

      fs.writeFileSync(conf, '[server]\nmax_ttl = 3h\n[upstream]\nconnect_timeout = 5s\n[limits]\nmax_path_bytes = 256\nmax_body_bytes = 1m\n');
      const done = d.waitForStderr(/reloaded[^\n]*/);
      d.signal('SIGHUP');
      const line = (await done)[0];
      assert.match(line, /restart_needed="?upstream\.connect_timeout"?( |$)/);
      assert.doesNotMatch(line, /restart_needed="[^"]*(max_ttl|max_path_bytes|max_body_bytes)/);

      const r = await issue('2h');
      assert.equal(r.status, 201, r.text);
      assert.equal((await call()).status, 200);
      assert.equal(mocks.count(), 1, 'the long path reached the vendor');
      assert.equal((await post()).status, 200, 'the larger body is accepted now');
      // and back down: the new limit holds for the next request
      fs.writeFileSync(conf, '[server]\nmax_ttl = 1h\n[limits]\nmax_path_bytes = 64\nmax_body_bytes = 1k\n');
      const again = d.waitForStderr(/reloaded[^\n]*/);
      d.signal('SIGHUP');
      assert.doesNotMatch((await again)[0], /restart_needed/);
      assertError(await call(), 400, 'bad_path');
      assertError(await issue('2h'), 400, 'invalid_request');
      assertError(await post(), 413, 'body_too_large');
    } finally {
      await d.stop();
      await mocks.close();
      rmTempDir(dir);
    }
  });

  // A limit lowered while a chunked body is arriving: the request goes on
  // under the limits it started with, and is answered (413 here), not left
  // with a full buffer that never reads again (the worker used to spin on
  // the socket until the client timeout).
  it('a body limit lowered mid-upload: that request keeps its limits and is answered', async () => {
    const mocks = await startMockVendors();
    const dir = mkTempDir();
    const conf = path.join(dir, 'keybrake.ini');
    fs.writeFileSync(conf, '[limits]\nmax_body_bytes = 4m\n');
    const d = await startDaemon({ mocks, args: ['--config', conf], env: { KEYBRAKE_WORKERS: '1' } });
    try {
      const key = await d.issueKey({ label: uniquePrefix('chunk'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
      const sock = net.connect(d.proxyPort, '127.0.0.1');
      let got = '';
      const answered = new Promise((resolve) => {
        sock.on('data', (c) => {
          got += c.toString('latin1');
          if (/\r\n\r\n/.test(got)) resolve();
        });
        sock.on('close', resolve);
        sock.on('error', resolve);
      });
      await new Promise((r) => sock.once('connect', r));
      const MiB = 1024 * 1024;
      sock.write(
        'POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\n' +
          `Authorization: Bearer ${key.token}\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
          'Transfer-Encoding: chunked\r\n\r\n' +
          `${(3 * MiB).toString(16)}\r\n`,
      );
      sock.write(Buffer.alloc(2.5 * MiB, 'a'));
      fs.writeFileSync(conf, '[limits]\nmax_body_bytes = 1m\n');
      const done = d.waitForStderr(/reloaded/);
      d.signal('SIGHUP');
      await done;
      sock.write(Buffer.alloc(0.5 * MiB, 'a'));
      sock.write(`\r\n${(2 * MiB).toString(16)}\r\n`);
      sock.write(Buffer.alloc(2 * MiB, 'b'));
      sock.end('\r\n0\r\n\r\n');
      await answered;
      assert.match(got, /^HTTP\/1\.1 413 /, got.slice(0, 200));
      assert.equal(mocks.count(), 0);
      sock.destroy();
      // the worker is free: the next request (under the new 1m) is served
      const r = await d.proxy({ method: 'GET', path: '/stripe/v1/payment_intents/pi_after', headers: { authorization: `Bearer ${key.token}` } });
      assert.equal(r.status, 200, r.text);
    } finally {
      await d.stop();
      await mocks.close();
      rmTempDir(dir);
    }
  });
});
