'use strict';
// limits.test.js - what a stranger cannot take from the daemon, through the
// real binary: the proxy port (no second process can bind it), request body
// memory (one budget for the whole process, refused 503 overloaded before the
// body is read, never leaked whichever way a request ends), and the admin
// listener's connection slots (a revocation gets through while strangers hold
// every slot).

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');

const { rawRequest, startDaemon, statusOf, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

// The JSON body of the first response in raw text.
function jsonOf(text) {
  const at = text.indexOf('\r\n\r\n');
  return JSON.parse(text.slice(at + 4).split('\n')[0]);
}

function metric(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

async function metrics(d) {
  const r = await d.admin.get('/metrics');
  assert.equal(r.status, 200, r.text);
  return r.text;
}

// A raw keep-alive connection, optionally from a given loopback source
// address: send() writes bytes; response() resolves with the next whole
// response (head plus Content-Length body); `closed` resolves when the
// server closes it.
async function openConn(port, localAddress) {
  const sock = net.connect({ port, host: '127.0.0.1', ...(localAddress ? { localAddress } : {}) });
  await new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  let buf = '';
  let waiter = null;
  let isClosed = false;
  const closed = new Promise((resolve) => sock.on('close', () => {
    isClosed = true;
    resolve();
    if (waiter) waiter();
  }));
  sock.on('error', () => {});
  sock.on('data', (c) => {
    buf += c.toString('latin1');
    if (waiter) waiter();
  });
  const take = () => {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const m = /\r\ncontent-length: (\d+)\r\n/i.exec(buf.slice(0, end + 2));
    const len = m ? Number(m[1]) : 0;
    if (buf.length < end + 4 + len) return null;
    const text = buf.slice(0, end + 4 + len);
    buf = buf.slice(end + 4 + len);
    return { status: statusOf(text), text };
  };
  return {
    sock,
    closed,
    isClosed: () => isClosed,
    send: (b) => sock.write(b),
    response: async () => {
      for (;;) {
        const r = take();
        if (r) return r;
        if (isClosed) throw new Error(`closed before a whole response; got ${JSON.stringify(buf)}`);
        await new Promise((resolve) => (waiter = resolve));
        waiter = null;
      }
    },
    destroy: () => sock.destroy(),
  };
}

describe('listeners do not share their port', () => {
  it('a second daemon (another data dir) on the same proxy or admin port fails to start, naming the port', async () => {
    const d1 = await startDaemon({});
    try {
      for (const [name, port] of [
        ['KEYBRAKE_PROXY_LISTEN', d1.proxyPort],
        ['KEYBRAKE_ADMIN_LISTEN', d1.adminPort],
      ]) {
        await assert.rejects(
          startDaemon({ env: { [name]: `127.0.0.1:${port}` } }),
          (e) => {
            assert.match(e.message, /daemon exited \(code [1-9]\d*, signal null\) before ready/, e.message);
            assert.match(e.message, new RegExp(`port ${port} is already in use`), e.message);
            return true;
          },
        );
      }
      // every connection still reaches the first daemon (nobody took a share)
      const codes = await Promise.all(
        Array.from({ length: 20 }, () => d1.proxy({ path: '/stripe/v1/charges' })),
      );
      for (const r of codes) assert.equal(r.json && r.json.code, 'invalid_token', r.text);
      assert.equal((await d1.admin.get('/v1/keys')).status, 200);
    } finally {
      await d1.stop();
    }
  });
});

describe('the body budget (limits.max_buffered_body_bytes)', () => {
  it('a body that would pass it is 503 overloaded before it is read; the budget always returns to zero', async () => {
    const mocks = await startMockVendors();
    const d = await startDaemon({
      mocks,
      env: { KEYBRAKE_MAX_BODY_BYTES: '64k', KEYBRAKE_MAX_BUFFERED_BODY_BYTES: '100k', KEYBRAKE_WORKERS: '2' },
    });
    const held = [];
    try {
      const key = await d.issueKey({ label: uniquePrefix('budget'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
      const head = (extra) =>
        `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\n` +
        `Content-Type: application/x-www-form-urlencoded\r\n${extra}\r\n`;
      const m0 = await metrics(d);
      assert.equal(metric(m0, 'keybrake_buffered_body_bytes'), 0);
      assert.equal(metric(m0, 'keybrake_buffered_body_limit_bytes'), 100 * 1024);

      // one request holds 60000 bytes of the budget, charged from its Content-Length
      const a = await openConn(d.proxyPort);
      held.push(a);
      a.send(head('Content-Length: 60000\r\n') + 'amount=1');
      await waitFor(async () => metric(await metrics(d), 'keybrake_buffered_body_bytes') === 60000, {
        what: 'the first body charged',
      });

      // a second one would pass 100 KiB: refused from its head alone
      const r = await rawRequest(d.proxyPort, head('Content-Length: 60000\r\n'));
      assert.equal(statusOf(r.text), 503, r.text);
      assert.match(r.text, /\r\nKeybrake-Error: overloaded\r\n/, r.text);
      assert.match(r.text, /\r\nRetry-After: 1\r\n/, r.text);
      assert.equal(jsonOf(r.text).code, 'overloaded');
      assert.match(jsonOf(r.text).message, /max_buffered_body_bytes/);
      assert.ok(r.closed, 'the connection closes: the unread body is never taken for a request');

      // a chunked body is charged as its buffer grows, and refused when it cannot
      const chunk = 'b'.repeat(50000);
      const rc = await rawRequest(d.proxyPort, head('Transfer-Encoding: chunked\r\n') + `c350\r\n${chunk}\r\n0\r\n\r\n`);
      assert.equal(statusOf(rc.text), 503, rc.text);
      assert.equal(jsonOf(rc.text).code, 'overloaded');

      let m = await metrics(d);
      assert.equal(metric(m, 'keybrake_body_budget_refused_total'), 2);
      assert.equal(metric(m, 'keybrake_buffered_body_bytes'), 60000, 'refusals give back what they held');
      assert.equal(mocks.count(), 0, 'nothing refused reached the vendor');

      // a client that leaves mid-body gives its share back
      a.destroy();
      await waitFor(async () => metric(await metrics(d), 'keybrake_buffered_body_bytes') === 0, {
        what: 'the aborted body released',
      });

      const gauge = async () => metric(await metrics(d), 'keybrake_buffered_body_bytes');
      // a chunked body is charged as its buffer grows, and given back when its client leaves
      const ch = await openConn(d.proxyPort);
      held.push(ch);
      ch.send(head('Transfer-Encoding: chunked\r\n') + `4e20\r\n${'c'.repeat(20000)}`);
      await waitFor(async () => (await gauge()) >= 20000, { what: 'the chunked body charged' });
      assert.ok((await gauge()) <= 65536);
      ch.destroy();
      await waitFor(async () => (await gauge()) === 0, { what: 'the aborted chunked body released' });

      // rounds of requests ending every way: three hold 30000 bytes each,
      // the fourth is refused, then all three clients leave mid-body
      for (let round = 0; round < 3; round++) {
        const cs = [];
        for (let i = 1; i <= 3; i++) {
          const c = await openConn(d.proxyPort);
          cs.push(c);
          held.push(c);
          c.send(head('Content-Length: 30000\r\n') + 'amount=2');
          await waitFor(async () => (await gauge()) === 30000 * i, { what: `${i} bodies charged` });
        }
        const x = await openConn(d.proxyPort);
        held.push(x);
        x.send(head('Content-Length: 30000\r\n'));
        const xr = await x.response();
        assert.equal(xr.status, 503, xr.text);
        await x.closed;
        assert.equal(await gauge(), 90000);
        for (const c of cs) c.destroy();
        await waitFor(async () => (await gauge()) === 0, { what: 'every aborted body released' });
      }
      assert.equal(metric(await metrics(d), 'keybrake_body_budget_refused_total'), 5);

      // with the budget free, a body of 60000 bytes goes through whole, and its share comes back
      const body = 'amount=100&currency=usd&description=' + 'd'.repeat(60000 - 36);
      const ok = await d.proxy({
        method: 'POST',
        path: '/stripe/v1/payment_intents',
        headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
        body,
      });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(mocks.stripe.requests.length, 1);
      assert.equal(mocks.stripe.requests[0].body.length, 60000);
      await waitFor(async () => metric(await metrics(d), 'keybrake_buffered_body_bytes') === 0, {
        what: 'the finished body released',
      });
      await d.stop();
    } finally {
      for (const c of held) c.destroy();
      await d.kill();
      await mocks.close();
    }
  });

  it('admin bodies without a valid admin token are refused unread, and charge nothing', async () => {
    const d = await startDaemon({});
    try {
      // only the head is sent: the 401 must come without the body
      const r = await rawRequest(
        d.adminPort,
        'POST /v1/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500000\r\n\r\n',
      );
      assert.equal(statusOf(r.text), 401, r.text);
      assert.equal(jsonOf(r.text).code, 'unauthorized');
      assert.ok(r.closed);
      assert.equal(metric(await metrics(d), 'keybrake_buffered_body_bytes'), 0);
      await d.stop();
    } finally {
      await d.kill();
    }
  });

  it('a budget smaller than max_body_bytes is refused at start', async () => {
    await assert.rejects(
      startDaemon({ env: { KEYBRAKE_MAX_BODY_BYTES: '2m', KEYBRAKE_MAX_BUFFERED_BODY_BYTES: '1m' } }),
      /max_buffered_body_bytes \(1048576\) must be at least limits\.max_body_bytes \(2097152\)/,
    );
  });
});

describe('the admin listener keeps room for revocations', () => {
  it('with every admin slot held by idle strangers, a DELETE still revokes; operators are never evicted', async () => {
    const mocks = await startMockVendors();
    const d = await startDaemon({
      mocks,
      env: { KEYBRAKE_ADMIN_MAX_CONNECTIONS: '6', KEYBRAKE_ADMIN_MAX_CONNECTIONS_PER_SOURCE: '4' },
    });
    const conns = [];
    try {
      const key = await d.issueKey({ label: uniquePrefix('evict'), vendor: 'stripe', allowed_endpoints: ['GET /v1/*'] });
      const use = () =>
        d.proxy({ path: '/stripe/v1/payment_intents/pi_1', headers: { authorization: `Bearer ${key.token}` } });
      assert.equal((await use()).status, 200);

      // an operator's kept-alive connection, authenticated once
      const op = await openConn(d.adminPort);
      conns.push(op);
      op.send(`GET /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\n\r\n`);
      assert.equal((await op.response()).status, 200);

      // an operator's upload under way: its head (with the token) is in,
      // half its body is not (the head is charged to the body budget once
      // it has passed the token check: that is when we know it was read)
      const issue = JSON.stringify({
        label: uniquePrefix('upload'),
        vendor: 'stripe',
        allowed_endpoints: ['GET /v1/*'],
        daily_usd_cap: 5,
        expires_in: '1h',
      });
      const up = await openConn(d.adminPort);
      conns.push(up);
      up.send(
        `POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${issue.length}\r\n\r\n` +
          issue.slice(0, 10),
      );
      await waitFor(async () => metric(await metrics(d), 'keybrake_buffered_body_bytes') === issue.length, {
        what: 'the upload head read',
      });

      // strangers take every other slot: each is served once (so it is
      // surely accepted) and then sits idle, never showing a token
      const strangers = [];
      for (const src of ['127.0.0.2', '127.0.0.2', '127.0.0.2', '127.0.0.3']) {
        const s = await openConn(d.adminPort, src);
        conns.push(s);
        s.send('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        assert.equal((await s.response()).status, 200);
        strangers.push(s);
      }

      // the listener is full (6): the revocation evicts the oldest stranger
      const del = await d.admin.del(`/v1/keys/${key.id}`);
      assert.equal(del.status, 204, del.text);
      await strangers[0].closed;
      assert.ok(!strangers[1].isClosed());
      const after = await use();
      assert.equal(after.status, 401, after.text);
      assert.equal(after.json.code, 'key_revoked');

      // strangers reconnecting evict one another, never the operator
      for (let i = 0; i < 8; i++) {
        const s = await openConn(d.adminPort, '127.0.0.4');
        conns.push(s);
        s.send('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        assert.equal((await s.response()).status, 200);
      }
      op.send(`GET /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\n\r\n`);
      assert.equal((await op.response()).status, 200, 'the operator connection is still served');
      up.send(issue.slice(10));
      const issued = await up.response();
      assert.equal(issued.status, 201, `the upload under way was not evicted: ${issued.text}`);

      // per source: one address over its 4 slots evicts its own oldest
      // stranger first, and an operator from that address still gets in
      const same = [];
      for (let i = 0; i < 4; i++) {
        const s = await openConn(d.adminPort, '127.0.0.5');
        conns.push(s);
        s.send('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        assert.equal((await s.response()).status, 200);
        same.push(s);
      }
      const op5 = await openConn(d.adminPort, '127.0.0.5');
      conns.push(op5);
      op5.send(`GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\n\r\n`);
      const mr = await op5.response();
      assert.equal(mr.status, 200, mr.text);
      await same[0].closed;
      assert.ok(metric(mr.text.slice(mr.text.indexOf('\r\n\r\n') + 4), 'keybrake_connections_evicted_total') >= 10, mr.text);

      // all slots held by operators: a stranger is refused, not let in
      for (const c of conns) c.destroy();
      conns.length = 0;
      await waitFor(async () => metric(await metrics(d), 'keybrake_open_connections{listener="admin"}') === 1, {
        what: 'the admin connections closed',
      });
      for (let i = 0; i < 6; i++) {
        const o = await openConn(d.adminPort, `127.0.1.${i + 1}`);
        conns.push(o);
        o.send(`GET /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\n\r\n`);
        assert.equal((await o.response()).status, 200);
      }
      const refused = await rawRequest(d.adminPort, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      assert.equal(statusOf(refused.text), 503, refused.text);
      assert.equal(jsonOf(refused.text).code, 'too_many_connections');
      for (const c of conns) c.destroy();
      conns.length = 0;
      await d.stop();
    } finally {
      for (const c of conns) c.destroy();
      await d.kill();
      await mocks.close();
    }
  });
  it("a tenant's token holding every admin slot does not lock root out (only root's connections are kept)", async () => {
    const d = await startDaemon({
      env: { KEYBRAKE_ADMIN_MAX_CONNECTIONS: '4', KEYBRAKE_ADMIN_MAX_CONNECTIONS_PER_SOURCE: '4' },
    });
    const conns = [];
    try {
      const t = await d.admin.post('/v1/tenants', { name: uniquePrefix('hog') });
      assert.equal(t.status, 201, t.text);
      const tok = await d.admin.post('/v1/admin-tokens', { label: 'hog', tenant: t.json.id });
      assert.equal(tok.status, 201, tok.text);
      // the tenant takes every slot, each authenticated and kept alive
      for (let i = 0; i < 4; i++) {
        const c = await openConn(d.adminPort, `127.0.2.${i + 1}`);
        conns.push(c);
        c.send(`GET /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok.json.token}\r\n\r\n`);
        assert.equal((await c.response()).status, 200);
      }
      // root still gets in: one of the tenant's connections makes room
      const root = await openConn(d.adminPort, '127.0.3.1');
      conns.push(root);
      root.send(`GET /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\n\r\n`);
      assert.equal((await root.response()).status, 200);
      await conns[0].closed; // the oldest of the tenant's was closed
    } finally {
      for (const c of conns) c.destroy();
      await d.stop();
    }
  });
});
