'use strict';
// hunt_attack.test.js - what a stranger can reach, and faults: request
// framing on both listeners, credentials in odd places, secrets echoed by a
// vendor, bad admin input and bad config files, broken vendors. Each test
// asserts a promise of README.md or docs/policy.md through the real binary.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const {
  BIN,
  mkTempDir,
  rawRequest,
  rmTempDir,
  startDaemon,
  statusOf,
  uniquePrefix,
  waitFor,
} = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

function statuses(text) {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
}

// A vendor of our own on a raw socket: `onData(sock, text)` is called with
// everything received so far on that connection.
async function rawVendor(onData) {
  const received = [];
  const srv = net.createServer((sock) => {
    let got = '';
    sock.on('error', () => {});
    sock.on('data', (c) => {
      got += c.toString('latin1');
      onData(sock, got, received);
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    received,
    close: () => new Promise((r) => { srv.close(r); }),
    srv,
  };
}

describe('framing after a refusal', () => {
  let mocks;
  let d;
  let key;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    key = await d.issueKey({ label: uniquePrefix('hunt'), vendor: 'stripe', allowed_endpoints: ['/v1/*'] });
  });
  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });
  beforeEach(() => mocks.reset());

  it('the unread body of a refused request is never read as a second request', async () => {
    const inner =
      `GET /stripe/v1/payment_intents/pi_smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\n\r\n`;
    const r = await rawRequest(
      d.proxyPort,
      `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer kb_nope\r\n` +
        `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`,
    );
    assert.equal(statusOf(r.text), 401, r.text);
    assert.deepEqual(statuses(r.text), [401], r.text);
    assert.equal(mocks.count(), 0, 'nothing forwarded');
  });

  it('a refused policy (403) with a body: the body is not a request either', async () => {
    const k2 = await d.issueKey({ label: uniquePrefix('hunt'), vendor: 'stripe', allowed_endpoints: ['GET /v1/customers'] });
    const inner =
      `GET /stripe/v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${k2.token}\r\nX-Inner: 1\r\n\r\n`;
    const r = await rawRequest(
      d.proxyPort,
      `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${k2.token}\r\n` +
        `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${inner.length}\r\nConnection: close\r\n\r\n${inner}`,
    );
    assert.deepEqual(statuses(r.text), [403], r.text);
    assert.equal(mocks.count(), 0, 'nothing forwarded');
  });

  it('framing refusals: each 400 bad_request, closed, nothing forwarded', async () => {
    const h = (extra) =>
      `POST /stripe/v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\nContent-Type: application/x-www-form-urlencoded\r\n${extra}`;
    const cases = {
      'CL + TE': h('Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'),
      'TE chunked, identity': h('Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n'),
      'TE xchunked': h('Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n'),
      'CL negative': h('Content-Length: -1\r\n\r\n'),
      'CL 1,1': h('Content-Length: 1,1\r\n\r\nab'),
      'CL huge': h('Content-Length: 99999999999999999999999\r\n\r\n'),
      'chunk size overflow': h('Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\namount=1\r\n0\r\n\r\n'),
      'chunk size negative': h('Transfer-Encoding: chunked\r\n\r\n-8\r\namount=1\r\n0\r\n\r\n'),
      'chunk size space': h('Transfer-Encoding: chunked\r\n\r\n8 \r\namount=1\r\n0\r\n\r\n'),
      // a bare CR ends the line for some parsers: the extension would then
      // be read as data by one and as framing by the other
      'chunk extension with a bare CR': h('Transfer-Encoding: chunked\r\n\r\n8;a\rb\r\namount=1\r\n0\r\n\r\n'),
      'chunk extension with a NUL': h('Transfer-Encoding: chunked\r\n\r\n8;a\0b\r\namount=1\r\n0\r\n\r\n'),
      'NUL in value': h('X-A: a\0b\r\nContent-Length: 0\r\n\r\n'),
      'NUL in name': h('X-\0A: ab\r\nContent-Length: 0\r\n\r\n'),
      'space before colon': h('Content-Length : 0\r\n\r\n'),
      'TE on 1.0': `POST /stripe/v1/payment_intents HTTP/1.0\r\nAuthorization: Bearer ${key.token}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    };
    for (const [what, bytes] of Object.entries(cases)) {
      const r = await rawRequest(d.proxyPort, bytes);
      const st = statusOf(r.text);
      assert.ok(st === 400 || st === 413, `${what}: ${r.text}`);
      assert.ok(r.closed, what);
    }
    assert.equal(mocks.count(), 0);
  });

  it('absolute-form, asterisk-form, CONNECT and a fragment are refused, nothing forwarded', async () => {
    const a = `Authorization: Bearer ${key.token}\r\nHost: x\r\n\r\n`;
    for (const line of [
      `GET http://127.0.0.1:${mocks.stripe.port}/v1/payment_intents/pi_1 HTTP/1.1`,
      'OPTIONS * HTTP/1.1',
      `CONNECT 127.0.0.1:${mocks.stripe.port} HTTP/1.1`,
      'GET /stripe/v1/payment_intents/pi_1#x HTTP/1.1',
    ]) {
      const r = await rawRequest(d.proxyPort, `${line}\r\n${a}`);
      const st = statusOf(r.text);
      assert.ok(st >= 400 && st < 500, `${line}: ${r.text}`);
    }
    assert.equal(mocks.count(), 0);
  });

  it('thousands of headers and a very long header line: 431, the daemon serves on', async () => {
    const many = Array.from({ length: 5000 }, (_, i) => `X-H${i}: v\r\n`).join('');
    let r = await rawRequest(d.proxyPort, `GET /stripe/v1/payment_intents/pi_1 HTTP/1.1\r\nAuthorization: Bearer ${key.token}\r\n${many}\r\n`);
    assert.equal(statusOf(r.text), 431, r.text.slice(0, 300));
    r = await rawRequest(d.proxyPort, `GET /stripe/v1/payment_intents/pi_1 HTTP/1.1\r\nX: ${'a'.repeat(1 << 20)}\r\n\r\n`);
    assert.ok([431, 0].includes(statusOf(r.text)), r.text.slice(0, 300));
    const ok = await d.proxy({ path: '/stripe/v1/payment_intents/pi_1', headers: { authorization: `Bearer ${key.token}` } });
    assert.equal(ok.status, 200);
  });

  it('admin listener: smuggling forms are refused too and nothing is issued', async () => {
    const body = JSON.stringify({ label: uniquePrefix('smug'), vendor: 'stripe', allowed_endpoints: ['/v1/*'], daily_usd_cap: 1, expires_in: 60 });
    const auth = `Authorization: Bearer ${d.adminToken}\r\n`;
    const cases = [
      `POST /v1/keys HTTP/1.1\r\n${auth}Content-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
      `POST /v1/keys HTTP/1.1\r\n${auth}Content-Length: ${body.length}\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      `POST /v1/keys HTTP/1.1\r\n${auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n${body}\r\n0\r\n\r\n`,
    ];
    for (const c of cases) {
      const r = await rawRequest(d.adminPort, c);
      assert.equal(statusOf(r.text), 400, r.text);
      assert.ok(r.closed);
    }
    const list = await d.admin.get(`/v1/keys?label_prefix=smug`);
    assert.equal(list.json.data.length, 0);
  });
});

describe('credentials', () => {
  let mocks;
  let d;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
  });
  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });
  beforeEach(() => mocks.reset());

  it('Anthropic: x-api-key and Authorization naming two keys is refused, not guessed between', async () => {
    const a = await d.issueKey({ label: uniquePrefix('hunt'), vendor: 'anthropic', daily_usd_cap: 100 });
    const b = await d.issueKey({ label: uniquePrefix('hunt'), vendor: 'anthropic', daily_usd_cap: 100 });
    const res = await d.proxy({
      method: 'GET',
      path: '/anthropic/v1/models',
      headers: { 'x-api-key': a.token, authorization: `Bearer ${b.token}` },
    });
    assert.equal(res.status, 401, res.text);
    assert.equal(mocks.count(), 0);
  });

  it('a truncated token, a token with a tab, a lower-case bearer', async () => {
    const k = await d.issueKey({ label: uniquePrefix('hunt'), vendor: 'openai', daily_usd_cap: 100 });
    const tries = [
      [`Bearer ${k.token.slice(0, -1)}`, 401],
      [`Bearer ${k.token}x`, 401],
      [`bearer ${k.token}`, 200],
      [`BEARER   ${k.token}`, 200],
    ];
    for (const [auth, want] of tries) {
      const res = await d.proxy({ path: '/openai/v1/models', headers: { authorization: auth } });
      assert.equal(res.status, want, `${auth}: ${res.text}`);
    }
  });

  it('Basic with odd padding never crashes and is refused', async () => {
    for (const b64 of ['====', '=', 'A===', '::::', 'Og==', 'OjpA', '////']) {
      const res = await d.proxy({ path: '/stripe/v1/customers', headers: { authorization: `Basic ${b64}` } });
      assert.equal(res.status, 401, `${b64}: ${res.text}`);
    }
  });

  it('a revoked key: no request forwarded once DELETE answered, across many connections', async () => {
    const k = await d.issueKey({ label: uniquePrefix('hunt'), vendor: 'openai', daily_usd_cap: 100 });
    let stop = false;
    const loop = async () => {
      while (!stop) {
        await d.proxy({ path: '/openai/v1/models', headers: { authorization: `Bearer ${k.token}` } });
      }
    };
    const loops = [loop(), loop(), loop(), loop()];
    await waitFor(() => mocks.count() > 20, { what: 'traffic' });
    const res = await d.admin.del(`/v1/keys/${k.id}`);
    assert.equal(res.status, 204);
    const at = mocks.count();
    for (let i = 0; i < 20; i++) {
      const r = await d.proxy({ path: '/openai/v1/models', headers: { authorization: `Bearer ${k.token}` } });
      assert.equal(r.status, 401);
    }
    stop = true;
    await Promise.all(loops);
    // at most the one request per loop whose admission committed before the revocation
    assert.ok(mocks.count() - at <= 4, `forwarded after revocation: ${mocks.count() - at}`);
    mocks.openai.setHandler(null);
  });
});

describe('a vendor that echoes or misbehaves', () => {
  let d;
  let v;
  let key;
  let mode = 'ok';
  let secret;

  before(async () => {
    v = await rawVendor((sock, got) => {
      if (!got.includes('\r\n\r\n')) return;
      const auth = /\r\nauthorization: ([^\r]*)\r\n/i.exec(got);
      const a = auth ? auth[1] : '';
      const s = a.replace(/^Bearer /, '');
      switch (mode) {
        case 'reason':
          sock.end(`HTTP/1.1 401 ${s}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
          break;
        case 'hname':
          sock.end(`HTTP/1.1 200 OK\r\nX-${s}: 1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
          break;
        case 'garbage':
          sock.end(`HTTP/1.1 2x0 ${s}\r\nX-Echo: ${a}\r\n\r\n${s}`);
          break;
        case 'badheader':
          sock.end(`HTTP/1.1 200 OK\r\nX-Echo ${s}: 1\r\n\r\n`);
          break;
        case 'trailer':
          sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\nX-T: ${s}\r\n\r\n`);
          break;
        case 'hugehead':
          sock.write('HTTP/1.1 200 OK\r\n');
          for (let i = 0; i < 2000; i++) if (!sock.destroyed) sock.write(`X-Pad-${i}: ${'a'.repeat(1000)}\r\n`);
          sock.end('\r\n');
          break;
        case 'http10':
          sock.end(`HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":"${s}"}`);
          break;
        case 'chunkjunk':
          sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n${s}`);
          break;
        default:
          sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}');
      }
    });
    d = await startDaemon({ baseUrls: { openai: v.url } });
    secret = d.secrets.openai;
    key = await d.issueKey({ label: uniquePrefix('hunt'), vendor: 'openai', daily_usd_cap: 100 });
  });
  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (v) await v.close();
    }
  });

  for (const m of ['reason', 'hname', 'garbage', 'badheader', 'trailer', 'hugehead', 'http10', 'chunkjunk']) {
    it(`${m}: the secret reaches neither the client nor the log, the audit or /metrics`, async () => {
      mode = m;
      const r = await rawRequest(
        d.proxyPort,
        `GET /openai/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\nConnection: close\r\n\r\n`,
      );
      assert.ok(statusOf(r.text) > 0, r.text);
      assert.ok(!r.text.includes(secret), `leaked to the client: ${r.text.slice(0, 400)}`);
      const audit = await d.admin.get(`/v1/audit?key_id=${key.id}`);
      assert.ok(!audit.text.includes(secret), 'leaked to the audit');
      const met = await d.admin.get('/metrics');
      assert.ok(!met.text.includes(secret), 'leaked to /metrics');
      assert.ok(!d.stderr.includes(secret) && !d.stdout.includes(secret), 'leaked to the log');
    });
  }

  it('stops cleanly', async () => {
    await d.stop();
  });
});

describe('configuration that cannot work is refused at start', () => {
  async function refused(ini, re) {
    const dir = mkTempDir();
    try {
      const file = path.join(dir, 'keybrake.ini');
      fs.writeFileSync(file, ini);
      const dataDir = path.join(dir, 'data');
      fs.mkdirSync(dataDir, { mode: 0o700 }); // on PostgreSQL the harness keeps its store URL there
      await assert.rejects(
        startDaemon({ dataDir, args: ['--config', file] }),
        (e) => {
          assert.match(e.message, /exited \(code [1-9]\d*, signal null\) before ready/, e.message);
          assert.match(e.message, re, e.message);
          return true;
        },
      );
    } finally {
      rmTempDir(dir);
    }
  }

  // the name is sent as a request header line to the vendor: one that is not
  // a token breaks the request, and a framing or routing header (a second
  // Content-Length, Transfer-Encoding, Host) would reframe or reroute it
  for (const name of ['X Y', 'X:Y', '@@', 'Content-Length', 'Transfer-Encoding', 'Host', 'Connection', 'Keybrake-Cost-USD']) {
    it(`auth = header:${name} is refused, naming the vendor`, async () => {
      await refused(
        `[vendor.acme]\nbase_url = http://127.0.0.1:1\nauth = header:${name}\nsecret = abcdefghijkl\n`,
        /vendor\.acme[^\n]*auth/,
      );
    });
  }

  for (const url of ['http://', 'https://:443/x', 'http://a b/', 'http://127.0.0.1:99999/x']) {
    it(`alerts.webhook_url = ${url} is refused`, async () => {
      await refused(
        `[alerts]\nwebhook_url = ${url}\nwebhook_secret = 0123456789abcdef0123\n`,
        /webhook_url/,
      );
    });
  }
});

describe('clients that leave at every stage', () => {
  let mocks;
  let d;
  let key;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    key = await d.issueKey({ label: uniquePrefix('hunt'), vendor: 'openai', daily_usd_cap: 1000 });
  });
  after(async () => {
    try {
      if (d) await d.kill();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  it('a client cut after every byte of a request: the daemon serves on and ends with nothing held', async () => {
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
    const req =
      `POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    // cut at every 7th byte, and right after the whole request (the vendor may be answering)
    const cuts = [];
    for (let i = 1; i < req.length; i += 7) cuts.push(i);
    cuts.push(req.length, req.length, req.length);
    await Promise.all(
      cuts.map(
        (n) =>
          new Promise((resolve) => {
            const s = net.connect(d.proxyPort, '127.0.0.1', () => {
              s.write(req.slice(0, n), () => {
                if (n === req.length) setImmediate(() => s.resetAndDestroy());
                else s.destroy();
              });
            });
            s.on('error', () => {});
            s.on('close', resolve);
          }),
      ),
    );
    // the vendor gets slow streams too: a client that leaves mid-stream
    const ctl = mocks.openai.nextStream();
    const s = net.connect(d.proxyPort, '127.0.0.1');
    s.on('error', () => {});
    s.write(req.replace(body, body.replace('}]}', '}],"stream":true}')).replace(`Content-Length: ${body.length}`, `Content-Length: ${body.length + 14}`));
    const c = await ctl;
    c.send({ id: 'x', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'a' } }] });
    s.destroy();
    const ok = await d.proxy({ path: '/openai/v1/models', headers: { authorization: `Bearer ${key.token}` } });
    assert.equal(ok.status, 200);
    await waitFor(async () => {
      const m = await d.admin.get('/metrics');
      const line = m.text.split('\n').find((l) => l.startsWith('keybrake_buffered_body_bytes '));
      return line && Number(line.split(' ')[1]) === 0;
    }, { what: 'buffered body bytes back to 0' });
    await waitFor(async () => (await d.admin.get(`/v1/keys/${key.id}`)).json.usage.reserved_usd === 0, {
      what: 'no reservation left',
    });
    try { c.end(); } catch { /* the stream was cut */ }
  });

  it('stops cleanly', async () => {
    await d.stop();
  });
});

describe('secret rotation by SIGHUP', () => {
  // docs/operations.md: after a reload "requests admitted from then on carry
  // the new secret, requests in flight finish with theirs, and answers are
  // scrubbed of both"
  it('an answer echoing the secret of before the reload is masked too', async () => {
    const mocks = await startMockVendors();
    const dir = mkTempDir();
    const conf = path.join(dir, 'keybrake.ini');
    const oldSecret = 'sk-proj-hunt-old-' + require('node:crypto').randomBytes(12).toString('hex');
    const newSecret = 'sk-proj-hunt-new-' + require('node:crypto').randomBytes(12).toString('hex');
    fs.writeFileSync(conf, `[vendor.openai]\nsecret = ${oldSecret}\n`);
    const secrets = require('./lib/harness').makeSecrets();
    secrets.openai = null;
    const d = await startDaemon({ mocks, secrets, args: ['--config', conf] });
    try {
      const key = await d.issueKey({ label: uniquePrefix('rot'), vendor: 'openai', daily_usd_cap: 10 });
      const auth = { authorization: `Bearer ${key.token}` };
      let r = await d.proxy({ path: '/openai/v1/models', headers: auth });
      assert.equal(r.status, 200);
      assert.equal(mocks.openai.requests[0].headers.authorization, `Bearer ${oldSecret}`);
      fs.writeFileSync(conf, `[vendor.openai]\nsecret = ${newSecret}\n`);
      const done = d.waitForStderr(/reloaded/);
      d.signal('SIGHUP');
      await done;
      // a vendor (or a cache in front of it) still quoting the old key
      mocks.openai.nextHandler((rec, res) => {
        res.writeHead(401, { 'content-type': 'application/json', 'x-old-key': oldSecret });
        res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${oldSecret} (now ${rec.headers.authorization})` } }));
      });
      r = await d.proxy({ path: '/openai/v1/models', headers: auth });
      assert.equal(r.status, 401);
      assert.equal(mocks.openai.requests[1].headers.authorization, `Bearer ${newSecret}`);
      assert.ok(!r.text.includes(newSecret), `new secret leaked: ${r.text}`);
      assert.ok(!r.text.includes(oldSecret), `old secret leaked: ${r.text}`);
      assert.ok(!JSON.stringify(r.rawHeaders).includes(oldSecret), `old secret leaked in a header: ${r.rawHeaders}`);
      assert.ok(!d.stderr.includes(oldSecret) && !d.stderr.includes(newSecret), 'a secret in the log');
    } finally {
      await d.stop();
      await mocks.close();
      rmTempDir(dir);
    }
  });
});

describe('an answer the meter cannot read one way', () => {
  // Unknown fails closed: an answer naming its usage twice (two "usage"
  // members, the second zero) cannot be known, so it must be charged its
  // worst case (the reservation), never the smaller reading.
  it(
    'a chat answer with two usage members is charged its reservation',
    async () => {
      const usage = '"usage":{"prompt_tokens":1000,"completion_tokens":1000,"total_tokens":2000}';
      const zero = '"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}';
      const answer = `{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],${usage},${zero}}`;
      const v = await rawVendor((sock, got) => {
        const he = got.indexOf('\r\n\r\n');
        if (he < 0) return;
        const cl = Number((/content-length: (\d+)/i.exec(got) || [0, 0])[1]);
        if (got.length < he + 4 + cl) return;
        sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${answer.length}\r\nConnection: close\r\n\r\n${answer}`);
      });
      const d = await startDaemon({ baseUrls: { openai: v.url } });
      try {
        const key = await d.issueKey({ label: uniquePrefix('dup'), vendor: 'openai', daily_usd_cap: 10 });
        const r = await d.proxy({
          method: 'POST',
          path: '/openai/v1/chat/completions',
          headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 100 }),
        });
        assert.equal(r.status, 200, r.text);
        const reserved = Number(r.headers['keybrake-cost-usd']);
        assert.ok(reserved > 0, r.headers['keybrake-cost-usd']);
        let u;
        await waitFor(async () => {
          u = (await d.admin.get(`/v1/keys/${key.id}`)).json.usage;
          return u.reserved_usd === 0;
        }, { what: 'the settlement' });
        assert.ok(u.spent_usd >= reserved, `charged ${u.spent_usd}, reserved ${reserved}`);
      } finally {
        await d.stop();
        await v.close();
      }
    },
  );
});
