'use strict';
// secrets.test.js - per-tenant vendor secrets (issue 16, item 3;
// docs/tenants.md): PUT/GET/DELETE /v1/tenants/{id}/vendors/{vendor}; the
// proxy injecting the tenant's own secret for its keys and the global one
// for root's (the mock vendor records the Authorization header it got); a
// change or deletion taking effect at the next request; the fallback
// setting both ways; master key rotation (old secrets open after it,
// re-encryption moves them to the new key id, a key still needed but not
// configured stops the start with a clear error); and the secret never in
// an answer, a log line, an audit record, /metrics or the store file.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { PG_MODE, assertError, hex, mkTempDir, rmTempDir, startDaemon, uniquePrefix, waitFor } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

function keyFile(dir, name) {
  const key = crypto.randomBytes(32).toString('hex');
  const file = path.join(dir, name);
  fs.writeFileSync(file, key + '\n', { mode: 0o600 });
  return { file, id: crypto.createHash('sha256').update(Buffer.from(key, 'hex')).digest('hex').slice(0, 8) };
}

// Every text the daemon gave us, to search for the secrets afterwards.
const seen = [];
async function admin(d, method, p, body, token) {
  const r = await d.admin.req(method, p, body, { token });
  seen.push(r.text, JSON.stringify(r.headers));
  return r;
}

async function tenant(d, name) {
  const r = await admin(d, 'POST', '/v1/tenants', { name });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

async function issue(d, tenantId) {
  const r = await admin(d, 'POST', '/v1/keys', {
    label: uniquePrefix('sk'),
    vendor: 'stripe',
    allowed_endpoints: ['POST /v1/payment_intents'],
    daily_usd_cap: 100,
    expires_in: '1h',
    ...(tenantId ? { tenant: tenantId } : {}),
  });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

// One $1 payment through the proxy: the Authorization the vendor received.
async function pay(d, mocks, key) {
  const before = mocks.stripe.requests.length;
  const r = await d.proxy({
    method: 'POST',
    path: '/stripe/v1/payment_intents',
    headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'amount=100&currency=usd',
  });
  seen.push(r.text);
  if (r.status !== 200) return { status: r.status, json: r.json };
  assert.equal(mocks.stripe.requests.length, before + 1);
  return { status: 200, auth: mocks.stripe.requests[before].headers.authorization };
}

async function putSecret(d, tenantId, secret, token) {
  const r = await admin(d, 'PUT', `/v1/tenants/${tenantId}/vendors/stripe`, { secret }, token);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

// The secrets appear nowhere the daemon shows: answers, its log, the
// audit log, /metrics, and (SQLite) the store file's bytes.
async function assertNowhere(d, secrets) {
  const audit = await admin(d, 'GET', '/v1/audit?limit=200');
  const metrics = await admin(d, 'GET', '/metrics');
  const texts = [...seen, d.stdout, d.stderr, audit.text, metrics.text];
  if (!PG_MODE) {
    for (const f of fs.readdirSync(d.dataDir)) {
      if (f.startsWith('keybrake.db')) texts.push(fs.readFileSync(path.join(d.dataDir, f)).toString('latin1'));
    }
  }
  for (const s of secrets) {
    for (const t of texts) assert.ok(!t.includes(s), `secret ${s.slice(0, 12)}... leaked`);
  }
}

describe('per-tenant vendor secrets', () => {
  let mocks;
  let keysDir;
  let k1, k2;
  const adminToken = 'kba_test_' + hex(16);
  const SA = 'sk_test_tenantA_' + hex(12);
  const SA2 = 'sk_test_tenantA2_' + hex(12);
  const SB = 'sk_test_tenantB_' + hex(12);

  before(async () => {
    mocks = await startMockVendors();
    keysDir = mkTempDir();
    k1 = keyFile(keysDir, 'master1.key');
    k2 = keyFile(keysDir, 'master2.key');
  });

  after(async () => {
    if (mocks) await mocks.close();
    if (keysDir) rmTempDir(keysDir);
  });

  describe('injection, changes, fallback = global, rotation', () => {
    let d;
    let dataDir;
    let A, B, C, kA, kB, kC, kR;

    before(async () => {
      dataDir = mkTempDir();
      d = await startDaemon({ mocks, dataDir, adminToken, env: { KEYBRAKE_MASTER_KEY_FILE: k1.file } });
      A = await tenant(d, 'acme');
      B = await tenant(d, 'globex');
      C = await tenant(d, 'initech');
      kA = await issue(d, A.id);
      kB = await issue(d, B.id);
      kC = await issue(d, C.id);
      kR = await issue(d);
    });

    after(async () => {
      if (d && !d.exited) await d.stop();
      if (dataDir) rmTempDir(dataDir);
    });

    it('each tenant key reaches the vendor with its own tenant secret', async () => {
      // a tenant's own token may set its secret; root may set any
      const tA = await admin(d, 'POST', '/v1/admin-tokens', { label: 'a', tenant: A.id });
      const set = await putSecret(d, A.id, SA, tA.json.token);
      assert.deepEqual(Object.keys(set).sort(), ['account', 'key_id', 'set', 'updated_at', 'vendor']);
      assert.equal(set.key_id, k1.id);
      await putSecret(d, B.id, SB);
      assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${SA}`);
      assert.equal((await pay(d, mocks, kB)).auth, `Bearer ${SB}`);
      // root's key and a tenant without its own secret: the global one
      assert.equal((await pay(d, mocks, kR)).auth, `Bearer ${d.secrets.stripe}`);
      assert.equal((await pay(d, mocks, kC)).auth, `Bearer ${d.secrets.stripe}`);
      const g = await admin(d, 'GET', `/v1/tenants/${A.id}/vendors/stripe`);
      assert.equal(g.status, 200);
      assert.equal(g.json.set, true);
      assert.equal(g.json.key_id, k1.id);
      const l = await admin(d, 'GET', `/v1/tenants/${A.id}/vendors`);
      assert.deepEqual(l.json.data.map((x) => x.vendor), ['stripe']);
      assertError(await admin(d, 'GET', `/v1/tenants/${C.id}/vendors/stripe`), 404, 'not_found');
    });

    it('a changed or deleted secret takes effect at the next request', async () => {
      assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${SA}`); // cached with its key
      await putSecret(d, A.id, SA2);
      assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${SA2}`);
      const del = await admin(d, 'DELETE', `/v1/tenants/${A.id}/vendors/stripe`);
      assert.equal(del.status, 204, del.text);
      assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${d.secrets.stripe}`);
      assertError(await admin(d, 'DELETE', `/v1/tenants/${A.id}/vendors/stripe`), 404, 'not_found');
      await putSecret(d, A.id, SA);
      assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${SA}`);
    });

    it('refuses bad input without echoing it', async () => {
      assertError(await admin(d, 'PUT', `/v1/tenants/${A.id}/vendors/stripe`, { secret: '' }), 400, 'invalid_request');
      const r = await admin(d, 'PUT', `/v1/tenants/${A.id}/vendors/stripe`, { secret: `${SB}\nX-Evil: 1` });
      assertError(r, 400, 'invalid_request');
      assertError(await admin(d, 'PUT', `/v1/tenants/${A.id}/vendors/stripe`, { secret: SB, nope: 1 }), 400, 'invalid_request');
      assertError(await admin(d, 'PUT', `/v1/tenants/${A.id}/vendors/nosuch`, { secret: SB }), 404, 'not_found');
      assertError(await admin(d, 'PUT', '/v1/tenants/tn_nosuch/vendors/stripe', { secret: SB }), 404, 'not_found');
      assertError(await admin(d, 'PUT', `/v1/tenants/${A.id}/vendors/twilio`, { secret: 'tok' }), 400, 'invalid_request');
      assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${SA}`); // unchanged
    });

    it('every change is audited without the secret', async () => {
      const a = await admin(d, 'GET', `/v1/audit?tenant=${A.id}&limit=200`);
      const sets = a.json.data.filter((e) => e.action === 'tenant.secret_set');
      assert.equal(sets.length, 3);
      assert.deepEqual(sets[0].detail.vendor, 'stripe');
      assert.equal(sets[0].detail.key_id, k1.id);
      assert.ok(a.json.data.some((e) => e.action === 'tenant.secret_deleted'));
    });

    it('rotation: old secrets still open, re-encryption moves them to the new key', async () => {
      await d.stop();
      // the new key alone cannot open what the old one sealed: a clear start-up error
      await assert.rejects(
        startDaemon({ mocks, dataDir, adminToken, env: { KEYBRAKE_MASTER_KEY_FILE: k2.file } }),
        new RegExp(`sealed under master key ${k1.id}, which is not configured`),
      );
      d = await startDaemon({
        mocks, dataDir, adminToken,
        env: { KEYBRAKE_MASTER_KEY_FILE: k2.file, KEYBRAKE_PREVIOUS_MASTER_KEY_FILES: k1.file },
      });
      assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${SA}`);
      assert.equal((await admin(d, 'GET', `/v1/tenants/${B.id}/vendors/stripe`)).json.key_id, k1.id);
      // only root re-encrypts
      const tB = await admin(d, 'POST', '/v1/admin-tokens', { label: 'b', tenant: B.id });
      assertError(await admin(d, 'POST', '/v1/secrets/reencrypt', undefined, tB.json.token), 404, 'not_found');
      const r = await admin(d, 'POST', '/v1/secrets/reencrypt');
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, { reencrypted: 2, key_id: k2.id });
      assert.equal((await admin(d, 'GET', `/v1/tenants/${B.id}/vendors/stripe`)).json.key_id, k2.id);
      assert.equal((await pay(d, mocks, kB)).auth, `Bearer ${SB}`);
      const again = await admin(d, 'POST', '/v1/secrets/reencrypt');
      assert.equal(again.json.reencrypted, 0);
      await assertNowhere(d, [SA, SA2, SB]);
      await d.stop();
      // the old key is no longer needed
      d = await startDaemon({ mocks, dataDir, adminToken, env: { KEYBRAKE_MASTER_KEY_FILE: k2.file } });
      assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${SA}`);
      assert.equal((await pay(d, mocks, kB)).auth, `Bearer ${SB}`);
      await assertNowhere(d, [SA, SA2, SB]);
    });

    it('bad master key settings stop the start with a clear error', async () => {
      await d.stop();
      await assert.rejects(
        startDaemon({ mocks, dataDir, adminToken, env: { KEYBRAKE_MASTER_KEY: 'abc' } }),
        /master_key must be 64 hex digits/,
      );
      await assert.rejects(
        startDaemon({ mocks, dataDir, adminToken, env: { KEYBRAKE_MASTER_KEY_FILE: path.join(keysDir, 'none') } }),
        /cannot read the master key file/,
      );
      await assert.rejects(
        startDaemon({ mocks, dataDir, adminToken, env: { KEYBRAKE_MASTER_KEY_FILE: k2.file, KEYBRAKE_TENANT_FALLBACK: 'maybe' } }),
        /tenant_fallback must be global or refuse/,
      );
    });
  });

  describe('tenant_fallback = refuse, and no master key', () => {
    it('a tenant without its own secret is refused; others are served', async () => {
      const d = await startDaemon({
        mocks,
        env: { KEYBRAKE_MASTER_KEY: crypto.randomBytes(32).toString('hex'), KEYBRAKE_TENANT_FALLBACK: 'refuse' },
      });
      try {
        const A = await tenant(d, 'acme');
        const C = await tenant(d, 'initech');
        const kA = await issue(d, A.id);
        const kC = await issue(d, C.id);
        const kR = await issue(d);
        await putSecret(d, A.id, SA);
        const before = mocks.stripe.requests.length;
        const r = await pay(d, mocks, kC);
        assert.equal(r.status, 403);
        assert.equal(r.json.code, 'tenant_secret_missing');
        assert.equal(mocks.stripe.requests.length, before); // nothing reached the vendor
        assert.equal((await pay(d, mocks, kA)).auth, `Bearer ${SA}`);
        assert.equal((await pay(d, mocks, kR)).auth, `Bearer ${d.secrets.stripe}`);
        await assertNowhere(d, [SA]);
      } finally {
        await d.stop();
      }
    });

    it('without a master key a secret cannot be stored', async () => {
      const d = await startDaemon({ mocks });
      try {
        const A = await tenant(d, 'acme');
        const r = await admin(d, 'PUT', `/v1/tenants/${A.id}/vendors/stripe`, { secret: SA });
        assertError(r, 500, 'config_invalid');
        assert.match(r.json.message, /no master key is configured/);
        assertError(await admin(d, 'POST', '/v1/secrets/reencrypt'), 500, 'config_invalid');
      } finally {
        await d.stop();
      }
    });
  });

  describe('two nodes on one PostgreSQL', { skip: PG_MODE ? false : 'PostgreSQL only: a second node needs a shared store' }, () => {
    it("a secret set on one node reaches the other node's next requests", async () => {
      const { freshDb } = require('./lib/pg');
      const db = freshDb();
      const dirs = [mkTempDir(), mkTempDir()];
      const env = {
        KEYBRAKE_STORE_URL: db.url,
        KEYBRAKE_SERVER_KEY: crypto.randomBytes(32).toString('hex'),
        KEYBRAKE_MASTER_KEY_FILE: k1.file,
      };
      const nodes = [];
      try {
        for (const dir of dirs) nodes.push(await startDaemon({ mocks, adminToken, dataDir: dir, env }));
        const [n0, n1] = nodes;
        const A = await tenant(n0, 'acme');
        const kA = await issue(n0, A.id);
        await putSecret(n0, A.id, SA);
        assert.equal((await pay(n1, mocks, kA)).auth, `Bearer ${SA}`); // n1 caches kA
        await putSecret(n0, A.id, SB);
        assert.equal((await pay(n0, mocks, kA)).auth, `Bearer ${SB}`);
        await waitFor(async () => (await pay(n1, mocks, kA)).auth === `Bearer ${SB}`, { timeoutMs: 10_000, what: 'the new secret on node 1' });
        assert.equal((await admin(n1, 'DELETE', `/v1/tenants/${A.id}/vendors/stripe`)).status, 204);
        assert.equal((await pay(n1, mocks, kA)).auth, `Bearer ${n1.secrets.stripe}`);
        await waitFor(async () => (await pay(n0, mocks, kA)).auth === `Bearer ${n0.secrets.stripe}`, { timeoutMs: 10_000, what: 'the deletion on node 0' });
      } finally {
        for (const d of nodes) await d.stop();
        for (const dir of dirs) rmTempDir(dir);
      }
    });
  });
});
