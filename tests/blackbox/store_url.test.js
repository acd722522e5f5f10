'use strict';
// store_url.test.js - the store is chosen at run time by its URL (issue 15
// item 1): `[store] url` / KEYBRAKE_STORE_URL puts the embedded SQLite file
// anywhere; a store outside the data dir is still one daemon's; a URL no
// backend of this build serves stops the start with a clear message.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { mkTempDir, sqliteOnly, rmTempDir, startDaemon, uniquePrefix } = require('./lib/harness');

describe('store URL', { skip: sqliteOnly('where the embedded store file lives') }, () => {
  it('sqlite:PATH keeps the store there, across restarts', async () => {
    const where = mkTempDir();
    const file = path.join(where, 'elsewhere.db');
    const dataDir = mkTempDir();
    try {
      const env = { KEYBRAKE_STORE_URL: `sqlite:${file}` };
      let d = await startDaemon({ dataDir, env });
      const key = await d.issueKey({ label: uniquePrefix('url'), vendor: 'stripe' });
      await d.stop();
      assert.ok(fs.existsSync(file), 'the store file is where the URL says');
      assert.ok(!fs.existsSync(path.join(dataDir, 'keybrake.db')), 'nothing in the data dir');
      d = await startDaemon({ dataDir, env });
      try {
        const r = await d.admin.get(`/v1/keys/${key.id}`);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.label, key.label);
      } finally {
        await d.stop();
      }
    } finally {
      rmTempDir(dataDir);
      rmTempDir(where);
    }
  });

  it('a store outside the data dir is one daemon\'s: a second refuses, naming the first', async () => {
    const where = mkTempDir();
    const file = path.join(where, 'shared.db');
    const env = { KEYBRAKE_STORE_URL: file };
    const first = await startDaemon({ env });
    try {
      await assert.rejects(
        startDaemon({ env }), // another data dir, the same store
        new RegExp(`exited \\(code [1-9]\\d*, signal null\\) before ready[\\s\\S]*another keybrake \\(pid ${first.pid}\\) is serving store`),
      );
    } finally {
      await first.stop();
      rmTempDir(where);
    }
  });

  it('another data dir naming the first daemon\'s default store, however spelled, is refused', async () => {
    const first = await startDaemon({});
    try {
      for (const url of [
        path.join(first.dataDir, 'keybrake.db'),
        `sqlite:${first.dataDir}/./keybrake.db`,
        `sqlite://${path.dirname(first.dataDir)}/${path.basename(first.dataDir)}/../${path.basename(first.dataDir)}/keybrake.db`,
      ]) {
        await assert.rejects(
          startDaemon({ env: { KEYBRAKE_STORE_URL: url } }),
          new RegExp(`exited \\(code [1-9]\\d*, signal null\\) before ready[\\s\\S]*another keybrake \\(pid ${first.pid}\\) is serving store`),
          url,
        );
      }
    } finally {
      await first.stop();
    }
  });

  for (const [url, want] of [
    ['sqlite::memory:', /in-memory store cannot be shared/],
    ['postgres://kb@127.0.0.1:1/kb', /cannot connect to postgres:\/\/kb@127.0.0.1:1\/kb:/],
    // the password is never repeated, wherever the URL puts it
    ['postgresql://kb:hunter2@127.0.0.1:1/kb', /cannot connect to postgres:\/\/kb@127.0.0.1:1\/kb:(?![\s\S]*hunter2)/],
    ['postgres://127.0.0.1:1/kb?user=kb&password=hunter2', /cannot connect to postgres:\/\/kb@127.0.0.1:1\/kb:(?![\s\S]*hunter2)/],
    ['mysql://127.0.0.1/kb', /unknown scheme/],
    ['sqlite:', /names no file/],
  ]) {
    it(`${url}: the start stops, saying why`, async () => {
      const dataDir = mkTempDir();
      try {
        await assert.rejects(
          startDaemon({ dataDir, env: { KEYBRAKE_STORE_URL: url } }),
          (e) => /exited \(code [1-9]\d*, signal null\) before ready/.test(e.message) && want.test(e.message),
        );
        // a refused URL leaves nothing behind (no stray lock file where it ran)
        const stray = fs.readdirSync(process.cwd()).filter((f) => f.endsWith('.lock'));
        assert.deepEqual(stray, [], 'a lock file was left in the cwd');
      } finally {
        rmTempDir(dataDir);
      }
    });
  }
});
