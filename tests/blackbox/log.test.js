'use strict';
// log.test.js - the log writer thread (issue 15, item 2): when nobody reads
// the daemon's stderr (a full pipe), the proxy keeps answering; the log lines
// beyond the log's queue are dropped, counted in keybrake_log_dropped_total,
// and once stderr is read again one line says how many were lost. Every line
// that did come out is whole.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');

const { startDaemon, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

// GET on one keep-alive connection of `agent`; resolves with the status.
function get(agent, port, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`no answer to ${path} in 30 s: a worker is blocked`)));
    req.on('error', reject);
    req.end();
  });
}

const dropped = (text) => Number((/^keybrake_log_dropped_total (\d+)$/m.exec(text) || [])[1]);

describe('the log', () => {
  it('drops lines instead of blocking the proxy when stderr is not read, and says how many', async () => {
    const mocks = await startMockVendors();
    // debug: a refused request logs two lines (the refusal and its access line)
    const d = await startDaemon({ mocks, env: { KEYBRAKE_LOG_LEVEL: 'debug' } });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    try {
      assert.equal(dropped((await d.admin.get('/metrics')).text), 0);
      d.child.stderr.pause(); // the pipe fills: the daemon's writes to stderr would block

      // Requests without a token are answered at once (401) and each logs
      // ~500 bytes: the 4 MiB queue is full after ~9000 of them. Bounded.
      let sent = 0;
      let n = 0;
      const MAX = 60_000;
      while (sent < MAX) {
        const batch = [];
        for (let i = 0; i < 400; i++) batch.push(get(agent, d.proxyPort, `/stripe/v1/customers/cus_${sent + i}`));
        for (const status of await Promise.all(batch)) assert.equal(status, 401);
        sent += batch.length;
        n = dropped((await d.admin.get('/metrics')).text);
        if (n > 0) break;
      }
      assert.ok(n > 0, `no log line dropped after ${sent} requests with stderr unread`);
      // the daemon still answers everything while its stderr is full
      assert.equal((await d.admin.get('/healthz')).status, 200);

      d.child.stderr.resume();
      await waitFor(() => /msg="log lines dropped" count=\d+/.test(d.stderr), { timeoutMs: 30_000, what: 'the drop report' });
      const final = dropped((await d.admin.get('/metrics')).text);
      let reported = 0;
      for (const m of d.stderr.matchAll(/msg="log lines dropped" count=(\d+)/g)) reported += Number(m[1]);
      assert.equal(reported, final, 'the report counts what the metric counts');
      assert.ok(final >= n);
      // every line that came out is whole
      const lines = d.stderr.split('\n').filter((l) => l.length > 0);
      for (const l of lines) assert.match(l, /^ts=\S+ level=(debug|info|warn|error) msg=/, `a torn line: ${l.slice(0, 200)}`);
      const access = lines.filter((l) => / msg=access /.test(l)).length;
      assert.ok(access + final <= 2 * sent + 50, 'no line twice');
      await d.stop();
    } finally {
      agent.destroy();
      if (!d.exited) await d.kill();
      await mocks.close();
    }
  });
});
