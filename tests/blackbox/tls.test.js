'use strict';
// tls.test.js - TLS on the proxy and admin listeners (issue 18, item 1):
// a throwaway CA and server certificates made with the openssl CLI, the
// real daemon with tls_cert/tls_key (the admin listener inheriting them, or
// its own pair), and real clients: node's https, the official openai SDK,
// Ruby's Net::HTTP with use_ssl, Java's java.net.http.HttpClient, and the
// keybrake CLI. Plain HTTP and TLS 1.1 are refused, a handshake that never
// ends is dropped and counts against the connection limits meanwhile, and
// SIGHUP swaps the certificate under an open keep-alive connection.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const tls = require('node:tls');
const https = require('node:https');

const { BIN, metric, mkTempDir, rmTempDir, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');
const { makePki, httpsRequest, run } = require('./lib/tls');

const OPENAI_MAIN = require.resolve('openai');

// The runner's environment minus KEYBRAKE_* (a child must not be pointed
// elsewhere behind the test's back).
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KEYBRAKE_')) env[k] = v;
  delete env.NODE_EXTRA_CA_CERTS;
  return { ...env, ...extra };
}

// Resolves when the socket closes: { ms, data } (what it received first).
function untilClosed(sock, deadlineMs = 15_000) {
  const t0 = Date.now();
  let data = Buffer.alloc(0);
  sock.on('data', (c) => (data = Buffer.concat([data, c])));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still open after ${deadlineMs} ms`)), deadlineMs);
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ ms: Date.now() - t0, data: data.toString('latin1') });
    });
  });
}

function connectRaw(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.on('error', reject);
  });
}

// A TLS client limited to [min, max]; resolves { ok, protocol, code }.
function tlsProbe(port, ca, minVersion, maxVersion) {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: '127.0.0.1', port, ca, minVersion, maxVersion, servername: 'localhost',
      // TLS 1.0/1.1 need the weakest security level on the client side even to be offered
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    s.on('secureConnect', () => {
      const protocol = s.getProtocol();
      s.end();
      resolve({ ok: true, protocol });
    });
    s.on('error', (e) => resolve({ ok: false, code: e.code, message: e.message }));
  });
}

describe('TLS listeners', () => {
  let dir;
  let pki;
  let s1;
  let s2;
  let mocks;
  let d;
  const live = {};

  const admin = (method, p, body, extra = {}) =>
    httpsRequest({
      port: d.adminPort, method, path: p, body, ca: pki.caPem,
      headers: { authorization: `Bearer ${d.adminToken}` }, ...extra,
    });

  before(async () => {
    dir = mkTempDir();
    pki = makePki(dir);
    s1 = pki.server('1001');
    s2 = pki.server('1002');
    live.cert = path.join(dir, 'live.pem');
    live.key = path.join(dir, 'live.key');
    fs.copyFileSync(s1.cert, live.cert);
    fs.copyFileSync(s1.key, live.key);
    mocks = await startMockVendors();
    d = await startDaemon({
      mocks,
      env: {
        KEYBRAKE_TLS_CERT: live.cert,
        KEYBRAKE_TLS_KEY: live.key,
      },
    });
  });

  after(async () => {
    try {
      if (d) await d.stop();
    } finally {
      if (mocks) await mocks.close();
      rmTempDir(dir);
    }
  });

  beforeEach(() => mocks.reset());

  it('issues a key over https on the admin listener (TLS 1.2+, ALPN http/1.1)', async () => {
    const r = await admin('POST', '/v1/keys', {
      label: uniquePrefix('tls-admin'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '1h',
    });
    assert.equal(r.status, 201, r.text);
    assert.match(r.json.token, /\S{20,}/);
    assert.ok(['TLSv1.2', 'TLSv1.3'].includes(r.protocol), r.protocol);
    assert.equal(r.alpn, 'http/1.1');
    assert.equal(r.serial, '1001');
    // the proxy listener speaks TLS with the same pair
    const h = await httpsRequest({ port: d.proxyPort, path: '/healthz', ca: pki.caPem });
    assert.equal(h.serial, '1001');
  });

  it('the openai SDK calls the proxy at an https:// base URL (CA from NODE_EXTRA_CA_CERTS)', async () => {
    const key = (await admin('POST', '/v1/keys', {
      label: uniquePrefix('tls-sdk'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '1h',
    })).json;
    const script = `
      const { OpenAI } = require(${JSON.stringify(OPENAI_MAIN)});
      const openai = new OpenAI({ apiKey: process.env.TOKEN, baseURL: process.env.BASE,
        organization: null, project: null, maxRetries: 0 });
      openai.chat.completions.create({ model: 'gpt-4o-mini', max_tokens: 16,
        messages: [{ role: 'user', content: 'Say hello' }] })
        .then((c) => process.stdout.write(JSON.stringify(c)))
        .catch((e) => {
          for (let x = e; x; x = x.cause) process.stderr.write(\`\${x.code || ''} \${x.message || x}\\n\`);
          process.exit(1);
        });`;
    const base = `https://127.0.0.1:${d.proxyPort}/openai/v1`;
    const r = await run(process.execPath, ['-e', script], {
      env: cleanEnv({ TOKEN: key.token, BASE: base, NODE_EXTRA_CA_CERTS: pki.ca }),
    });
    assert.equal(r.code, 0, r.stderr);
    const c = JSON.parse(r.stdout);
    assert.equal(c.choices[0].message.content, 'Hello from the mock.');
    assert.equal(mocks.openai.requests.length, 1);
    assert.equal(mocks.openai.requests[0].headers.authorization, `Bearer ${d.secrets.openai}`);

    // the same call without the CA fails on the certificate, and reaches no vendor
    const bad = await run(process.execPath, ['-e', script], { env: cleanEnv({ TOKEN: key.token, BASE: base }) });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify/i, bad.stderr);
    assert.equal(mocks.openai.requests.length, 1);
  });

  it('big bodies both ways, a streamed answer and pipelined requests cross TLS intact', async () => {
    const key = (await admin('POST', '/v1/keys', {
      label: uniquePrefix('tls-big'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '1h',
    })).json;
    // 3 MiB up (many TLS records, more than one read buffer), 5 MiB down
    const prompt = 'q'.repeat(3 * 1024 * 1024);
    const answer = Buffer.from(JSON.stringify({
      id: 'chatcmpl-big', object: 'chat.completion', created: 1, model: 'gpt-4o-mini',
      choices: [{ index: 0, message: { role: 'assistant', content: 'a'.repeat(5 * 1024 * 1024) }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 10, completion_tokens: 10, total_tokens: 20 }, service_tier: 'default',
    }));
    mocks.openai.nextHandler((rec, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length });
      res.end(answer);
    });
    const body = JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 20, messages: [{ role: 'user', content: prompt }] });
    const r = await httpsRequest({
      port: d.proxyPort, method: 'POST', path: '/openai/v1/chat/completions', ca: pki.caPem, body,
      headers: { authorization: `Bearer ${key.token}` },
    });
    assert.equal(r.status, 200, r.text.slice(0, 300));
    assert.equal(Buffer.byteLength(r.text), answer.length);
    assert.equal(r.text, answer.toString());
    assert.equal(mocks.openai.requests.length, 1);
    assert.equal(mocks.openai.requests[0].bodyText, body, 'the vendor received the body byte for byte');

    // a streamed (chunked) answer, event by event
    const streamP = mocks.openai.nextStream();
    const resP = httpsRequest({
      port: d.proxyPort, method: 'POST', path: '/openai/v1/chat/completions', ca: pki.caPem,
      headers: { authorization: `Bearer ${key.token}` },
      body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, max_tokens: 20, messages: [{ role: 'user', content: 'x' }] }),
    });
    const up = await streamP;
    const base = { id: 'c', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini', service_tier: 'default' };
    for (let i = 0; i < 50; i++) up.send({ ...base, choices: [{ index: 0, delta: { content: `w${i} ` } }], usage: null });
    up.send({ ...base, choices: [], usage: { prompt_tokens: 1, completion_tokens: 50, total_tokens: 51 } });
    up.send('[DONE]');
    up.end();
    const sr = await resP;
    assert.equal(sr.status, 200);
    assert.equal((sr.text.match(/^data: /gm) || []).length, 52, sr.text.slice(0, 300));
    assert.match(sr.text, /data: w49 |"w49 "/);
    assert.match(sr.text, /data: \[DONE\]\n\n$/);

    // two requests in one TLS write: both answered, in order, on the one connection
    const sock = tls.connect({ host: '127.0.0.1', port: d.adminPort, ca: pki.caPem, servername: 'localhost' });
    await new Promise((res, rej) => sock.once('secureConnect', res).once('error', rej));
    const auth = `Authorization: Bearer ${d.adminToken}\r\n`;
    sock.write(`GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/keys?limit=1 HTTP/1.1\r\nHost: x\r\n${auth}Connection: close\r\n\r\n`);
    const { data } = await untilClosed(sock);
    const statuses = [...data.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200', '200'], data);
  });

  it('close_notify ends a whole answer, never one cut short (it would look complete)', async () => {
    // openssl s_client -msg shows each alert received ("<<<")
    const sclient = (port, input) => run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', pki.ca,
      '-servername', 'localhost', '-msg', '-ign_eof', '-quiet'], { input, timeoutMs: 30_000 });
    const whole = await sclient(d.adminPort, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(whole.stdout + whole.stderr, /HTTP\/1\.1 200/);
    assert.match(whole.stdout + whole.stderr, /<<< TLS [\d.]+, Alert \[length 0002\], warning close_notify/);

    const key = (await admin('POST', '/v1/keys', {
      label: uniquePrefix('tls-cut'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '1h',
    })).json;
    const streamP = mocks.openai.nextStream();
    const body = JSON.stringify({ model: 'gpt-4o-mini', stream: true, max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${d.proxyPort}`, '-CAfile', pki.ca,
      '-servername', 'localhost', '-msg', '-ign_eof', '-quiet'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    const grew = [];
    const onData = (c) => {
      out += c;
      for (const w of grew.splice(0)) w();
    };
    child.stdout.setEncoding('latin1').on('data', onData);
    child.stderr.setEncoding('latin1').on('data', onData);
    let done = false;
    const exited = new Promise((resolve) => child.on('close', () => {
      done = true;
      for (const w of grew.splice(0)) w();
      resolve();
    }));
    const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const until = async (re) => {
      while (!re.test(out)) {
        if (done) throw new Error(`s_client ended before ${re}:\n${out}`);
        await new Promise((r) => grew.push(r));
      }
    };
    child.stdin.end(`POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n` +
      `Authorization: Bearer ${key.token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    const up = await streamP;
    up.send({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini', choices: [{ index: 0, delta: { content: 'par' } }] });
    await until(/"content":"par"/); // the client has the head and the first event
    up.res.socket.destroy(); // then the vendor dies mid-stream: the proxy cuts the answer
    await exited;
    clearTimeout(killer);
    assert.match(out, /HTTP\/1\.1 200/);
    assert.doesNotMatch(out, /\r\n0\r\n\r\n/, 'the cut answer has no last chunk');
    assert.doesNotMatch(out, /<<< TLS [\d.]+, Alert \[length 0002\], warning close_notify/, out);
  });

  it('a plain HTTP request to a TLS port gets a 400 and a closed connection', async () => {
    for (const port of [d.proxyPort, d.adminPort]) {
      const s = await connectRaw(port);
      s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      const { data } = await untilClosed(s);
      assert.match(data, /^HTTP\/1\.1 400 /);
      assert.match(data, /"code":"bad_request"/);
      assert.match(data, /use https:\/\//);
    }
    // a plain POST with a big body: the answer arrives whole, the connection ends without a
    // reset (the rest of the body is swallowed, as after any refused request)
    for (let i = 0; i < 5; i++) {
      const big = await connectRaw(d.proxyPort);
      let err = null;
      big.on('error', (e) => (err = e));
      big.write(`POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${4 << 20}\r\n\r\n`);
      big.write(Buffer.alloc(4 << 20, 0x61));
      const { data } = await untilClosed(big);
      assert.match(data, /^HTTP\/1\.1 400 [^]*use https:\/\//, `try ${i}: ${data.slice(0, 80)}`);
      assert.equal(err, null, `try ${i}: ${err}`);
    }
    // garbage that is not even HTTP: closed, no answer
    const s = await connectRaw(d.proxyPort);
    s.write(Buffer.from('\x00\x01\x02garbage\r\n\r\n', 'latin1'));
    assert.equal((await untilClosed(s)).data, '');
    // the daemon serves on
    assert.equal((await admin('GET', '/healthz')).status, 200);
  });

  it('a TLS 1.1 client is refused; TLS 1.2 and 1.3 are accepted', async () => {
    const old = await tlsProbe(d.proxyPort, pki.caPem, 'TLSv1', 'TLSv1.1');
    assert.equal(old.ok, false);
    // the server's protocol_version alert, not a local refusal to offer TLS 1.1
    assert.equal(old.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', old.message);
    assert.deepEqual(await tlsProbe(d.proxyPort, pki.caPem, 'TLSv1.2', 'TLSv1.2'), { ok: true, protocol: 'TLSv1.2' });
    assert.deepEqual(await tlsProbe(d.adminPort, pki.caPem, 'TLSv1.3', 'TLSv1.3'), { ok: true, protocol: 'TLSv1.3' });
  });

  it('SIGHUP swaps the certificate: a keep-alive connection keeps working, new ones get the new one', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: pki.caPem });
    try {
      const first = await admin('GET', '/healthz', undefined, { agent });
      assert.equal(first.serial, '1001');
      fs.copyFileSync(s2.cert, live.cert);
      fs.copyFileSync(s2.key, live.key);
      const from = d.stderr.length;
      d.signal('SIGHUP');
      await d.waitForStderr(/TLS certificate reloaded/, from);
      const again = await admin('GET', '/v1/keys?limit=1', undefined, { agent });
      assert.equal(again.status, 200, again.text);
      assert.equal(again.reused, true, 'the keep-alive connection was not reused');
      assert.equal(again.localPort, first.localPort);
      assert.equal(again.serial, '1001', 'an open connection keeps its certificate');
      for (const port of [d.adminPort, d.proxyPort]) {
        const fresh = await httpsRequest({ port, path: '/healthz', ca: pki.caPem });
        assert.equal(fresh.serial, '1002', `a new connection to ${port} sees the new certificate`);
      }

      // a bad file keeps the certificate in force, and says why
      fs.writeFileSync(live.cert, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
      const from2 = d.stderr.length;
      d.signal('SIGHUP');
      const m = await d.waitForStderr(/cannot reload the TLS certificate[^\n]*/, from2);
      assert.match(m[0], /live\.pem/);
      assert.equal((await httpsRequest({ port: d.proxyPort, path: '/healthz', ca: pki.caPem })).serial, '1002');
      const still = await admin('GET', '/healthz', undefined, { agent });
      assert.equal(still.status, 200);
      // a key that does not match the certificate is refused too
      fs.copyFileSync(s1.cert, live.cert); // s2's key still in place
      const from3 = d.stderr.length;
      d.signal('SIGHUP');
      const m3 = await d.waitForStderr(/cannot reload the TLS certificate[^\n]*/, from3);
      assert.match(m3[0], /does not match/);
      assert.equal((await httpsRequest({ port: d.adminPort, path: '/healthz', ca: pki.caPem })).serial, '1002');
      fs.copyFileSync(s2.cert, live.cert);
    } finally {
      agent.destroy();
    }
  });

  it('keybrake keys list over https: with KEYBRAKE_CA_FILE it works, without it fails clearly', async () => {
    const label = uniquePrefix('tls-cli');
    const r0 = await admin('POST', '/v1/keys', {
      label, vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'], daily_usd_cap: 5, expires_in: '1h',
    });
    assert.equal(r0.status, 201);
    const base = { KEYBRAKE_ADDR: `https://127.0.0.1:${d.adminPort}`, KEYBRAKE_ADMIN_TOKEN: d.adminToken };
    const ok = await run(BIN, ['keys', 'list'], { env: cleanEnv({ ...base, KEYBRAKE_CA_FILE: pki.ca }) });
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(ok.stdout.includes(label), ok.stdout);
    const js = await run(BIN, ['keys', 'list', '--json'], { env: cleanEnv({ ...base, KEYBRAKE_CA_FILE: pki.ca }) });
    assert.equal(js.code, 0, js.stderr);
    assert.ok(JSON.parse(js.stdout).data.some((k) => k.label === label));

    const no = await run(BIN, ['keys', 'list'], { env: cleanEnv(base) });
    assert.equal(no.code, 3, no.stdout + no.stderr);
    assert.match(no.stderr, /certificate of 127\.0\.0\.1:\d+ is not trusted: .*KEYBRAKE_CA_FILE/);
    assert.equal(no.stdout, '');
    assert.ok(!no.stderr.includes(d.adminToken));

    // a CA file that cannot be read: a usage error
    const noCa = await run(BIN, ['keys', 'list'], { env: cleanEnv({ ...base, KEYBRAKE_CA_FILE: '/nonexistent/ca.pem' }) });
    assert.equal(noCa.code, 2, noCa.stderr);
    assert.match(noCa.stderr, /cannot load the CA file \/nonexistent\/ca\.pem/);

    // a name the certificate does not list
    const other = await run(BIN, ['keys', 'list'], {
      env: cleanEnv({ ...base, KEYBRAKE_CA_FILE: pki.ca, KEYBRAKE_ADDR: `https://127.0.0.2:${d.adminPort}` }),
    });
    assert.notEqual(other.code, 0);

    // http:// to the TLS port: the daemon's plain answer, exit 1
    const plain = await run(BIN, ['keys', 'list'], {
      env: cleanEnv({ ...base, KEYBRAKE_ADDR: `http://127.0.0.1:${d.adminPort}` }),
    });
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /use https:\/\//);
  });

  it("Ruby's Net::HTTP with use_ssl calls the proxy (the Rails seed's client)", async () => {
    const key = (await admin('POST', '/v1/keys', {
      label: uniquePrefix('tls-ruby'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '1h',
    })).json;
    const rb = `
      require 'net/http'
      require 'json'
      uri = URI(ARGV[0])
      http = Net::HTTP.new(uri.host, uri.port)
      http.use_ssl = true
      http.ca_file = ENV['CA']
      http.verify_mode = OpenSSL::SSL::VERIFY_PEER
      req = Net::HTTP::Post.new(uri.path, 'Authorization' => "Bearer #{ENV['TOKEN']}",
                                'Content-Type' => 'application/json')
      req.body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Say hello' }] }.to_json
      res = http.request(req)
      puts res.code
      puts res.body`;
    const url = `https://127.0.0.1:${d.proxyPort}/openai/v1/chat/completions`;
    const r = await run('ruby', ['-e', rb, url], { env: cleanEnv({ CA: pki.ca, TOKEN: key.token }) });
    assert.equal(r.code, 0, r.stderr);
    const [code, ...rest] = r.stdout.split('\n');
    assert.equal(code, '200', r.stdout);
    assert.equal(JSON.parse(rest.join('\n')).choices[0].message.content, 'Hello from the mock.');
    assert.equal(mocks.openai.requests.length, 1);
    // without the CA, Ruby refuses the certificate
    const bad = await run('ruby', ['-e', rb, url], { env: cleanEnv({ CA: '/nonexistent', TOKEN: key.token }) });
    assert.notEqual(bad.code, 0);
    assert.equal(mocks.openai.requests.length, 1);
  });

  it("Java's java.net.http.HttpClient calls the proxy with a keytool trust store", { timeout: 120_000 }, async () => {
    const key = (await admin('POST', '/v1/keys', {
      label: uniquePrefix('tls-java'), vendor: 'openai', allowed_endpoints: ['POST /v1/chat/completions'],
      daily_usd_cap: 5, expires_in: '1h',
    })).json;
    const store = path.join(dir, 'trust.p12');
    fs.rmSync(store, { force: true });
    const kt = await run('keytool', ['-importcert', '-noprompt', '-alias', 'keybrake-test-ca', '-file', pki.ca,
      '-keystore', store, '-storetype', 'PKCS12', '-storepass', 'changeit']);
    assert.equal(kt.code, 0, kt.stderr);
    const src = path.join(dir, 'Client.java');
    fs.writeFileSync(src, `
      import java.net.URI;
      import java.net.http.HttpClient;
      import java.net.http.HttpRequest;
      import java.net.http.HttpResponse;
      public class Client {
        public static void main(String[] a) throws Exception {
          HttpClient c = HttpClient.newHttpClient(); // offers h2 and http/1.1 by ALPN
          HttpRequest r = HttpRequest.newBuilder(URI.create(a[0]))
            .header("Authorization", "Bearer " + System.getenv("TOKEN"))
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(
              "{\\"model\\":\\"gpt-4o-mini\\",\\"messages\\":[{\\"role\\":\\"user\\",\\"content\\":\\"Say hello\\"}]}"))
            .build();
          HttpResponse<String> res = c.send(r, HttpResponse.BodyHandlers.ofString());
          System.out.println(res.statusCode() + " " + res.version());
          System.out.println(res.body());
        }
      }`);
    const url = `https://127.0.0.1:${d.proxyPort}/openai/v1/chat/completions`;
    const r = await run('java', [`-Djavax.net.ssl.trustStore=${store}`, '-Djavax.net.ssl.trustStorePassword=changeit',
      '-Djavax.net.ssl.trustStoreType=PKCS12', src, url], { env: cleanEnv({ TOKEN: key.token }), timeoutMs: 100_000 });
    assert.equal(r.code, 0, r.stderr);
    const [status, ...rest] = r.stdout.split('\n');
    assert.equal(status, '200 HTTP_1_1', r.stdout);
    assert.equal(JSON.parse(rest.join('\n')).choices[0].message.content, 'Hello from the mock.');
    assert.equal(mocks.openai.requests.length, 1);
  });
});

describe('TLS configuration', () => {
  let dir;
  let pki;
  before(() => {
    dir = mkTempDir();
    pki = makePki(dir);
  });
  after(() => rmTempDir(dir));

  it('the admin listener can have its own pair', async () => {
    const a = pki.server('2001');
    const b = pki.server('2002');
    const d = await startDaemon({
      env: {
        KEYBRAKE_TLS_CERT: a.cert, KEYBRAKE_TLS_KEY: a.key,
        KEYBRAKE_ADMIN_TLS_CERT: b.cert, KEYBRAKE_ADMIN_TLS_KEY: b.key,
      },
    });
    try {
      assert.equal((await httpsRequest({ port: d.proxyPort, path: '/healthz', ca: pki.caPem })).serial, '2001');
      assert.equal((await httpsRequest({ port: d.adminPort, path: '/healthz', ca: pki.caPem })).serial, '2002');
    } finally {
      await d.stop();
    }
  });

  it('only the admin listener on TLS: the proxy stays plain HTTP', async () => {
    const b = pki.server('2003');
    const d = await startDaemon({ env: { KEYBRAKE_ADMIN_TLS_CERT: b.cert, KEYBRAKE_ADMIN_TLS_KEY: b.key } });
    try {
      const plain = await d.proxy({ path: '/openai/v1/models' });
      assert.equal(plain.status, 401);
      assert.equal(plain.json.code, 'invalid_token');
      assert.equal((await httpsRequest({ port: d.adminPort, path: '/healthz', ca: pki.caPem })).serial, '2003');
    } finally {
      await d.stop();
    }
  });

  it('a handshake that never completes is dropped after tls_handshake_timeout, counted meanwhile', async () => {
    // a daemon of its own: a short handshake deadline would cut slow real clients (a JVM) elsewhere
    // (1.5 s: long enough for the test's own handshakes on a loaded machine under ASan)
    const pair = pki.server('2007');
    const d = await startDaemon({
      env: { KEYBRAKE_TLS_CERT: pair.cert, KEYBRAKE_TLS_KEY: pair.key, KEYBRAKE_TLS_HANDSHAKE_TIMEOUT: '1500ms' },
    });
    try {
      const metrics = async () => (await httpsRequest({
        port: d.adminPort, path: '/metrics', ca: pki.caPem, headers: { authorization: `Bearer ${d.adminToken}` },
      })).text;
      const open0 = metric(await metrics(), 'keybrake_open_connections{listener="proxy"}');
      const silent = await connectRaw(d.proxyPort); // TCP only: no ClientHello
      const partial = await connectRaw(d.proxyPort); // half a ClientHello
      partial.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
      const closedA = untilClosed(silent);
      const closedB = untilClosed(partial);
      await waitFor(async () => metric(await metrics(), 'keybrake_open_connections{listener="proxy"}') >= open0 + 2, {
        what: 'the two handshaking connections counted',
      });
      const [a, b] = await Promise.all([closedA, closedB]);
      for (const r of [a, b]) {
        assert.ok(r.ms >= 1000, `dropped too early (${r.ms} ms): not the handshake timer`);
        assert.equal(r.data, '');
      }
      await waitFor(async () => metric(await metrics(), 'keybrake_open_connections{listener="proxy"}') === open0, {
        what: 'the dropped connections uncounted',
      });
    } finally {
      await d.stop();
    }
  });

  it('a handshaking connection counts against max_connections_per_source', async () => {
    const a = pki.server('2004');
    const d = await startDaemon({
      env: {
        KEYBRAKE_TLS_CERT: a.cert, KEYBRAKE_TLS_KEY: a.key, KEYBRAKE_MAX_CONNECTIONS_PER_SOURCE: '2',
        KEYBRAKE_TLS_HANDSHAKE_TIMEOUT: '1500ms',
      },
    });
    try {
      const held = [await connectRaw(d.proxyPort), await connectRaw(d.proxyPort)];
      const gone = held.map((s) => untilClosed(s));
      // over the limit: closed at once, no handshake
      await assert.rejects(httpsRequest({ port: d.proxyPort, path: '/healthz', ca: pki.caPem }));
      await Promise.all(gone); // the handshake timer frees the slots
      assert.equal((await httpsRequest({ port: d.proxyPort, path: '/healthz', ca: pki.caPem })).serial, '2004');
    } finally {
      await d.stop();
    }
  });

  it('refuses to start on half a pair, an unreadable file or a key that does not match', async () => {
    const a = pki.server('2005');
    const b = pki.server('2006');
    const cases = [
      [{ KEYBRAKE_TLS_CERT: a.cert }, /tls_cert must be set together with server\.tls_key/],
      [{ KEYBRAKE_ADMIN_TLS_KEY: a.key }, /admin_tls_cert must be set together/],
      [{ KEYBRAKE_TLS_CERT: path.join(dir, 'missing.pem'), KEYBRAKE_TLS_KEY: a.key }, /cannot load the TLS certificate .*missing\.pem/],
      [{ KEYBRAKE_TLS_CERT: a.cert, KEYBRAKE_TLS_KEY: b.key }, /does not match/],
    ];
    for (const [env, re] of cases) {
      await assert.rejects(startDaemon({ env }), (e) => {
        assert.match(e.message, re);
        assert.match(e.message, /exited \(code 1/);
        return true;
      });
    }
  });
});
