#!/usr/bin/env node
'use strict';
// bench/runs.js - the workload the seeds' middleware produces: many agent
// runs at once, each issuing its own vault key, making 1-5 vendor calls with
// it and revoking it. Runs the same calls through the nginx baseline (no
// key: nginx only forwards) so that the added latency per call is read in
// the same run.
//
//   node bench/runs.js --target keybrake|nginx|portkey --proxy HOST:PORT
//       [--admin HOST:PORT --admin-token T] [--upstream HOST:PORT]
//       --runs N --seconds S [--seed X]
//
// portkey (the open-source gateway users would otherwise run, bench/peer)
// routes only: every run is a chat run there (JSON, not streamed), sent
// with x-portkey-provider openai and the upstream as its custom host; no
// key is issued.
//
// A run: POST /v1/keys (keybrake only), then 1-5 calls, then DELETE
// /v1/keys/{id} (keybrake only). Three runs in four are "stripe-like"
// (GET /bench/v1/things on the generic vendor), one in four is an OpenAI
// chat completion (POST /openai/v1/chat/completions), half of those
// streamed (Accept: text/event-stream; the upstream answers SSE with usage).
// Prints one line: RUNS_RESULT followed by JSON (latencies in µs).
//
// Node's own client CPU is part of the machine's load for both targets
// alike; the figures are relative (keybrake minus nginx), like the rest of
// bench/.
const http = require('node:http');

function args() {
  const a = { runs: 32, seconds: 10, seed: 1 };
  for (let i = 2; i < process.argv.length; i += 2) a[process.argv[i].replace(/^--/, '').replace(/-/g, '_')] = process.argv[i + 1];
  a.runs = Number(a.runs);
  a.seconds = Number(a.seconds);
  a.seed = Number(a.seed);
  return a;
}

// xorshift: the same sequence of run shapes for both targets
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

function request(agent, hostport, method, path, headers, body) {
  const [host, port] = hostport.split(':');
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.request({ agent, host, port: Number(port), method, path, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString(), us: Number(process.hrtime.bigint() - t0) / 1000 }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) req.end(body);
    else req.end();
  });
}

function pct(v, p) {
  if (!v.length) return 0;
  const s = Float64Array.from(v).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const CHAT = JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content: 'Say ok.' }] });
const CHAT_STREAM = JSON.stringify({
  model: 'gpt-4o-mini',
  max_tokens: 16,
  stream: true,
  messages: [{ role: 'user', content: 'Say ok.' }],
});

async function main() {
  const a = args();
  const kb = a.target === 'keybrake';
  const agent = new http.Agent({ keepAlive: true, maxSockets: a.runs * 2 });
  const adminAgent = new http.Agent({ keepAlive: true, maxSockets: a.runs * 2 });
  const lat = { stripe: [], chat: [], stream: [], issue: [], revoke: [], run: [] };
  let runs = 0;
  let calls = 0;
  const errors = {};
  const err = (what) => (errors[what] = (errors[what] || 0) + 1);
  const deadline = Date.now() + a.seconds * 1000;
  const t0 = process.hrtime.bigint();

  async function slot(i) {
    const rand = rng(a.seed * 1000 + i + 1);
    while (Date.now() < deadline) {
      const start = process.hrtime.bigint();
      const pk = a.target === 'portkey';
      const llm = pk || rand() < 0.25;
      const n = 1 + Math.floor(rand() * 5);
      let token = 'none';
      let id = null;
      if (kb) {
        const body = JSON.stringify({
          label: `run/${i}/${runs}`,
          vendor: llm ? 'openai' : 'bench',
          allowed_endpoints: llm ? ['POST /v1/chat/completions'] : ['GET /v1/*'],
          daily_usd_cap: 5,
          expires_in: '10m',
        });
        const r = await request(adminAgent, a.admin, 'POST', '/v1/keys', {
          authorization: `Bearer ${a.admin_token}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        }, body);
        if (r.status !== 201) {
          err(`issue_${r.status}`);
          continue;
        }
        lat.issue.push(r.us);
        const k = JSON.parse(r.body);
        token = k.token;
        id = k.id;
      }
      for (let c = 0; c < n; c++) {
        let r;
        if (!llm) {
          r = await request(agent, a.proxy, 'GET', '/bench/v1/things', { authorization: `Bearer ${token}` });
          if (r.status === 200) lat.stripe.push(r.us);
        } else {
          // the peer answers our SSE upstream with 500s (its stream parser
          // wants more than a minimal stream): JSON chats only there
          const stream = rand() < 0.5 && !pk;
          const body = stream ? CHAT_STREAM : CHAT;
          const headers = {
            authorization: `Bearer ${pk ? 'sk_bench' : token}`,
            'content-type': 'application/json',
            accept: stream ? 'text/event-stream' : 'application/json',
            'content-length': Buffer.byteLength(body),
          };
          if (pk) {
            headers['x-portkey-provider'] = 'openai';
            headers['x-portkey-custom-host'] = `http://${a.upstream}/v1`;
          }
          r = await request(agent, a.proxy, 'POST', pk ? '/v1/chat/completions' : '/openai/v1/chat/completions', headers, body);
          if (r.status === 200) (stream ? lat.stream : lat.chat).push(r.us);
        }
        if (r.status !== 200) err(`call_${r.status}`);
        calls++;
      }
      if (kb) {
        const r = await request(adminAgent, a.admin, 'DELETE', `/v1/keys/${id}`, { authorization: `Bearer ${a.admin_token}` });
        if (r.status !== 204) err(`revoke_${r.status}`);
        else lat.revoke.push(r.us);
      }
      lat.run.push(Number(process.hrtime.bigint() - start) / 1000);
      runs++;
    }
  }
  await Promise.all(Array.from({ length: a.runs }, (_, i) => slot(i)));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const summary = { target: a.target, concurrent_runs: a.runs, seconds: +secs.toFixed(2), runs, calls, runs_per_s: +(runs / secs).toFixed(1), calls_per_s: +(calls / secs).toFixed(1), errors };
  for (const [k, v] of Object.entries(lat)) summary[k] = { n: v.length, p50_us: Math.round(pct(v, 50)), p90_us: Math.round(pct(v, 90)), p99_us: Math.round(pct(v, 99)) };
  console.log(`RUNS_RESULT ${JSON.stringify(summary)}`);
  agent.destroy();
  adminAgent.destroy();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
