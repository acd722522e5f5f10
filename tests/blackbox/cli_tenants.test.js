'use strict';
// cli_tenants.test.js - `keybrake tenants` and `keybrake admin-tokens`
// against the real daemon (docs/tenants.md): root makes a tenant and a
// token scoped to it, that token drives `keybrake keys` and sees only its
// tenant's keys, a revoked token is refused at its next CLI call (exit 1,
// unauthorized), a tenant is deleted once its keys are revoked; bad input
// exits 2 (usage) or 1 (the API refused) with a message saying why.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');

const { BIN, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

// The runner's environment without anything pointing the CLI elsewhere.
function baseEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KEYBRAKE_')) env[k] = v;
  return env;
}

// Runs the CLI to its exit: { code, signal, stdout, stderr }.
function cli(args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

// The table row (a line of stdout) whose first column is `first`.
function row(stdout, first) {
  return stdout.split('\n').find((l) => l.split(/\s+/)[0] === first);
}

describe('keybrake tenants and admin-tokens', () => {
  let mocks;
  let d;
  let env;
  const ok = (r) => assert.equal(r.code, 0, `exit ${r.code} ${r.signal || ''}\n${r.stdout}\n${r.stderr}`);
  const as = (token) => ({ ...env, KEYBRAKE_ADMIN_TOKEN: token });
  const keyArgs = (label) => ['keys', 'create', '--vendor', 'stripe', '--label', label, '--cap', '5',
    '--endpoint', 'POST /v1/payment_intents', '--json'];

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    env = { ...baseEnv(), KEYBRAKE_ADDR: d.adminUrl, KEYBRAKE_ADMIN_TOKEN: d.adminToken };
  });

  after(async () => {
    try {
      if (d) await d.stop();
    } finally {
      if (mocks) await mocks.close();
    }
  });

  it('a scoped token sees only its tenant; revoked, it is refused; the tenant is deleted', async () => {
    const prefix = uniquePrefix('clit');
    // tenants create: a table for people, the API's JSON with --json
    const tc = await cli(['tenants', 'create', `${prefix}acme`], env);
    ok(tc);
    const tid = row(tc.stdout, 'id').split(/\s+/)[1];
    assert.match(tid, /^tn_/);
    assert.equal(row(tc.stdout, 'name').split(/\s+/)[1], `${prefix}acme`);
    const tj = await cli(['tenants', 'create', `${prefix}globex`, '--json'], env);
    ok(tj);
    const other = JSON.parse(tj.stdout);
    assert.match(other.id, /^tn_/);
    assert.equal(other.name, `${prefix}globex`);

    const tl = await cli(['tenants', 'list'], env);
    ok(tl);
    assert.match(tl.stdout.split('\n')[0], /^ID\s+NAME\s+CREATED$/);
    assert.ok(row(tl.stdout, tid), tl.stdout);
    assert.ok(row(tl.stdout, other.id), tl.stdout);
    const ts = await cli(['tenants', 'show', tid, '--json'], env);
    ok(ts);
    assert.deepEqual(Object.keys(JSON.parse(ts.stdout)).sort(), ['created_at', 'id', 'name']);

    // a token scoped to the tenant: printed once, in the table and in --json
    const ac = await cli(['admin-tokens', 'create', '--label', `${prefix}ops`, '--tenant', tid], env);
    ok(ac);
    const scoped = row(ac.stdout, 'token').split(/\s+/)[1];
    const scopedId = row(ac.stdout, 'id').split(/\s+/)[1];
    assert.match(scoped, /^kba_/);
    assert.match(scopedId, /^at_/);
    assert.equal(row(ac.stdout, 'tenant').split(/\s+/)[1], tid);
    assert.match(ac.stderr, /shown only now/);
    const aj = await cli(['admin-tokens', 'create', '--label', `${prefix}ci`, '--tenant', tid, '--json'], env);
    ok(aj);
    const second = JSON.parse(aj.stdout);
    assert.equal(second.tenant, tid);
    assert.match(second.token, /^kba_/);

    // the scoped token issues a key of its tenant; root issues one of its own
    const kt = await cli(keyArgs(`${prefix}t`), as(scoped));
    ok(kt);
    const tkey = JSON.parse(kt.stdout);
    assert.equal(tkey.tenant, tid);
    const kr = await cli(keyArgs(`${prefix}r`), env);
    ok(kr);
    const rkey = JSON.parse(kr.stdout);
    // keys list with the scoped token: its tenant's key alone
    const sl = await cli(['keys', 'list', '--json', '--limit', '1000'], as(scoped));
    ok(sl);
    const seen = JSON.parse(sl.stdout).data.map((k) => k.id);
    assert.deepEqual(seen, [tkey.id]);
    const rl = await cli(['keys', 'list', '--json', '--label-prefix', prefix], env);
    ok(rl);
    assert.deepEqual(JSON.parse(rl.stdout).data.map((k) => k.id).sort(), [tkey.id, rkey.id].sort());
    // root issues one for the tenant (--tenant), and lists one tenant's keys
    // (under a prefix of its own: the checks below count the tenant's keys under `prefix`)
    const fprefix = uniquePrefix('clif');
    const kf = await cli([...keyArgs(`${fprefix}f`), '--tenant', tid], env);
    ok(kf);
    assert.equal(JSON.parse(kf.stdout).tenant, tid);
    await cli([...keyArgs(`${fprefix}root`)], env);
    const lt = await cli(['keys', 'list', '--label-prefix', fprefix, '--tenant', tid, '--json'], env);
    ok(lt);
    assert.deepEqual(JSON.parse(lt.stdout).data.map((k) => k.label), [`${fprefix}f`]);
    ok(await cli(['keys', 'revoke', JSON.parse(kf.stdout).id], env)); // the tenant's deletion below counts active keys

    // the scoped token: root's key and the other tenant are not there (404, exit 1)
    const hidden = await cli(['keys', 'show', rkey.id], as(scoped));
    assert.equal(hidden.code, 1);
    assert.equal(hidden.stderr, 'keybrake: no such key (not_found)\n');
    const otherT = await cli(['tenants', 'show', other.id], as(scoped));
    assert.equal(otherT.code, 1);
    assert.equal(otherT.stderr, 'keybrake: no such tenant (not_found)\n');
    const stl = await cli(['tenants', 'list', '--json'], as(scoped));
    ok(stl);
    assert.deepEqual(JSON.parse(stl.stdout).data.map((t) => t.id), [tid]);
    // usage reads /v1/usage, which spans every tenant: root's alone
    const use = await cli(['usage'], as(scoped));
    assert.equal(use.code, 1);
    assert.match(use.stderr, /\(not_found\)\n$/);
    const noCreate = await cli(['tenants', 'create', `${prefix}mine`], as(scoped));
    assert.equal(noCreate.code, 1);
    assert.match(noCreate.stderr, /\(not_found\)\n$/);

    // admin-tokens list: the scoped token sees its tenant's; root filters with --tenant
    const al = await cli(['admin-tokens', 'list'], as(scoped));
    ok(al);
    assert.match(al.stdout.split('\n')[0], /^ID\s+LABEL\s+TENANT\s+CREATED\s+REVOKED$/);
    assert.ok(row(al.stdout, scopedId), al.stdout);
    assert.ok(row(al.stdout, second.id), al.stdout);
    assert.equal(al.stdout.trim().split('\n').length, 3, al.stdout);
    const rlist = await cli(['admin-tokens', 'list', '--json', '--tenant', other.id], env);
    ok(rlist);
    assert.deepEqual(JSON.parse(rlist.stdout).data, []);
    const rall = await cli(['admin-tokens', 'list', '--json'], env);
    ok(rall);
    assert.ok(JSON.parse(rall.stdout).data.some((t) => t.tenant === null), 'root tokens listed for root');
    assert.ok(!rall.stdout.includes(scoped), 'a list never holds a token');

    // revoke: the token's next CLI call is refused (exit 1, unauthorized)
    const rv = await cli(['admin-tokens', 'revoke', scopedId], env);
    ok(rv);
    assert.equal(rv.stdout, `revoked admin token ${scopedId}\n`);
    const after = await cli(['keys', 'list'], as(scoped));
    assert.equal(after.code, 1, after.stderr);
    assert.equal(after.stderr, 'keybrake: missing or invalid admin token (unauthorized)\n');
    assert.equal(after.stdout, '');
    const gone = await cli(['admin-tokens', 'list', '--json', '--tenant', tid], env);
    ok(gone);
    assert.ok(JSON.parse(gone.stdout).data.find((t) => t.id === scopedId).revoked_at);
    // revoking a revoked token is not an error
    const again = await cli(['admin-tokens', 'revoke', scopedId, '--json'], env);
    ok(again);
    assert.deepEqual(JSON.parse(again.stdout), { id: scopedId, revoked: true });

    // delete: refused while the tenant owns an active key, done once it is revoked
    const busy = await cli(['tenants', 'delete', tid], env);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /revoke its keys first \(tenant_in_use\)\n$/);
    ok(await cli(['keys', 'revoke', tkey.id], env));
    const del = await cli(['tenants', 'delete', tid], env);
    ok(del);
    assert.equal(del.stdout, `deleted tenant ${tid}\n`);
    const shown = await cli(['tenants', 'show', tid], env);
    assert.equal(shown.code, 1);
    assert.equal(shown.stderr, 'keybrake: no such tenant (not_found)\n');
    // deletion revoked the tenant's other token too
    const ci = await cli(['tenants', 'list'], as(second.token));
    assert.equal(ci.code, 1);
    assert.match(ci.stderr, /\(unauthorized\)\n$/);
    const dj = await cli(['tenants', 'delete', other.id, '--json'], env);
    ok(dj);
    assert.deepEqual(JSON.parse(dj.stdout), { id: other.id, deleted: true });
    ok(await cli(['keys', 'revoke', rkey.id], env));
  });

  it('bad input: exit 2 for usage, 1 with the API\'s reason', async () => {
    for (const args of [
      ['tenants'],
      ['tenants', 'nosuch'],
      ['tenants', 'create'],
      ['tenants', 'create', 'a', 'b'],
      ['tenants', 'show'],
      ['tenants', 'delete', '--bogus'],
      ['tenants', 'list', 'extra'],
      ['admin-tokens'],
      ['admin-tokens', 'nosuch'],
      ['admin-tokens', 'create'],
      ['admin-tokens', 'create', '--tenant', 'tn_x'],
      ['admin-tokens', 'create', '--label'],
      ['admin-tokens', 'create', '--label', 'x', '--tenant', ''],
      ['admin-tokens', 'list', '--tenant'],
      ['admin-tokens', 'list', '--bogus'],
      ['admin-tokens', 'revoke'],
      ['admin-tokens', 'revoke', 'at_a', 'at_b'],
    ]) {
      const r = await cli(args, env);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.code}\n${r.stderr}`);
      assert.equal(r.stdout, '', args.join(' '));
      assert.match(r.stderr, /^(keybrake: |usage: )/, args.join(' '));
    }
    const prefix = uniquePrefix('clib');
    const unknownTenant = await cli(['admin-tokens', 'create', '--label', 'x', '--tenant', 'tn_doesnotexist'], env);
    assert.equal(unknownTenant.code, 1);
    assert.equal(unknownTenant.stderr, 'keybrake: no such tenant (not_found)\n');
    assert.equal(unknownTenant.stdout, '');
    const badId = await cli(['tenants', 'show', '../v1/keys'], env);
    assert.equal(badId.code, 1);
    assert.equal(badId.stderr, 'keybrake: no such tenant (not_found)\n');
    const noTok = await cli(['admin-tokens', 'revoke', 'at_doesnotexist'], env);
    assert.equal(noTok.code, 1);
    assert.equal(noTok.stderr, 'keybrake: no such admin token (not_found)\n');
    const badName = await cli(['tenants', 'create', 'tab\there'], env);
    assert.equal(badName.code, 1);
    assert.match(badName.stderr, /\(invalid_request\)\n$/);
    ok(await cli(['tenants', 'create', `${prefix}dup`], env));
    const dup = await cli(['tenants', 'create', `${prefix}dup`], env);
    assert.equal(dup.code, 1);
    assert.equal(dup.stderr, 'keybrake: a tenant with this name exists already (conflict)\n');
    const bad = await cli(['tenants', 'list'], as('kba_not_the_token_at_all'));
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, 'keybrake: missing or invalid admin token (unauthorized)\n');
  });

  it('--help on every command', async () => {
    for (const args of [
      ['tenants', '--help'], ['tenants', 'list', '--help'], ['tenants', 'show', '-h'],
      ['tenants', 'create', '--help'], ['tenants', 'delete', '--help'],
      ['admin-tokens', '--help'], ['admin-tokens', 'list', '-h'], ['admin-tokens', 'create', '--help'],
      ['admin-tokens', 'revoke', '--help'], ['admin-tokens', 'create', '--label', 'x', '-h'],
    ]) {
      // no daemon needed: help never calls the API
      const r = await cli(args, baseEnv());
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^usage: keybrake ${args[0]} `), args.join(' '));
      assert.match(r.stdout, /--json/);
      assert.match(r.stdout, /exit codes: 0 ok, 1 the API refused/);
      assert.equal(r.stderr, '');
    }
    const top = await cli(['--help'], baseEnv());
    assert.match(top.stdout, /^ {2}tenants list\|show\|create\|delete /m);
    assert.match(top.stdout, /^ {2}admin-tokens list\|create\|revoke /m);
  });
});
