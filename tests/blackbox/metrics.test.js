'use strict';
// metrics.test.js - GET /metrics (issue 5): Prometheus text that parses line
// by line, counters that match the requests sent, and one access log line
// per proxied request keyed by its request id, with nothing secret in it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

// Parses the text exposition format strictly enough to catch a malformed
// line: every sample line is name{labels} value, every family has TYPE.
function parseProm(text) {
  const samples = new Map();
  const types = new Map();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      if (m[1] === 'TYPE') {
        assert.match(m[3], /^(counter|gauge|histogram|summary|untyped)$/, line);
        types.set(m[2], m[3]);
      }
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.eE+-]+|\+Inf|NaN)$/.exec(line);
    assert.ok(m, `not a valid sample line: ${JSON.stringify(line)}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, '');
    assert.ok(types.has(m[1]) || types.has(family), `no TYPE for ${m[1]}`);
    samples.set(m[1] + (m[2] || ''), Number(m[3]));
  }
  return samples;
}

describe('metrics and access log', () => {
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

  it('parses as Prometheus text and counts match the requests sent', async () => {
    const before = parseProm((await d.admin.get('/metrics')).text);
    const key = await d.issueKey({ label: uniquePrefix('m'), vendor: 'stripe', daily_usd_cap: 100, allowed_endpoints: ['POST /v1/payment_intents'] });
    const headers = { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' };
    for (let i = 0; i < 3; i++) {
      const r = await d.proxy({ method: 'POST', path: '/stripe/v1/payment_intents', headers, body: 'amount=250&currency=usd' });
      assert.equal(r.status, 200, r.text);
    }
    for (let i = 0; i < 2; i++) {
      const r = await d.proxy({ path: '/stripe/v1/customers', headers });
      assert.equal(r.status, 403);
    }
    const r = await d.admin.get('/metrics');
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^text\/plain/);
    const after = parseProm(r.text);
    const delta = (name) => (after.get(name) || 0) - (before.get(name) || 0);
    assert.equal(delta('keybrake_requests_total{vendor="stripe",code="ok"}'), 3);
    assert.equal(delta('keybrake_requests_total{vendor="stripe",code="endpoint_not_allowed"}'), 2);
    assert.equal(delta('keybrake_upstream_responses_total{vendor="stripe",class="2xx"}'), 3);
    assert.equal(Math.round(delta('keybrake_spend_settled_usd_total{vendor="stripe"}') * 100), 750);
    assert.ok(after.get('keybrake_active_keys') >= 1);
    assert.equal(after.get('keybrake_requests_in_flight'), 0);
    assert.equal(delta('keybrake_proxy_overhead_seconds_count'), 3);
    assert.equal(delta('keybrake_upstream_seconds_count'), 3);
    assert.ok(after.get('keybrake_store_commit_seconds_count') > 0);
    assert.equal(after.get('keybrake_proxy_overhead_seconds_bucket{le="+Inf"}'), after.get('keybrake_proxy_overhead_seconds_count'));
  });

  it('needs the admin token', async () => {
    const r = await d.admin.get('/metrics', { token: 'kba_wrong_wrong_wrong_wrong' });
    assert.equal(r.status, 401);
  });

  it('one access line per proxied request, keyed by request id, nothing secret', async () => {
    const key = await d.issueKey({ label: uniquePrefix('acc'), vendor: 'stripe', allowed_endpoints: ['GET /v1/payment_intents/*'] });
    const r = await d.proxy({ path: '/stripe/v1/payment_intents/pi_9?expand[]=x%0Ainjected=1', headers: { authorization: `Bearer ${key.token}` } });
    const id = r.headers['keybrake-request-id'];
    assert.ok(id);
    await d.stop();
    const lines = d.stderr.split('\n').filter((l) => l.includes(`request_id=${id}`) && l.includes('msg=access'));
    assert.equal(lines.length, 1, d.stderr);
    assert.match(lines[0], /key_id=vk_\S+ vendor=stripe method=GET path=\/v1\/payment_intents\/pi_9 status=\d+ code=\S+ cost_usd=0\.000000/);
    assert.ok(!d.stderr.includes(key.token), 'no vault token in the log');
    assert.ok(!d.stderr.includes('injected=1'), 'the query never reaches the log');
    for (const l of d.stderr.split('\n')) if (l) assert.match(l, /^ts=\S+ level=\w+ msg=/, 'one record per line');
  });
});
