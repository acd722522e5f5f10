'use strict';
// cli.test.js - the `keybrake keys|usage|audit tail` commands against the
// real daemon: the CLI binary runs with KEYBRAKE_ADDR/KEYBRAKE_ADMIN_TOKEN
// (or the daemon's token file) and its tables, --json, exit codes and
// stderr are checked, together with what the daemon and the mock vendor saw.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');

const { BIN, closedPort, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

// The runner's environment without anything that would point the CLI
// somewhere behind the test's back (sanitizer options pass through).
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

describe('keybrake CLI', () => {
  let mocks;
  let d;
  let env;
  const outputs = []; // every CLI run, to check that the admin token never shows
  const run = async (args, e = env) => {
    const r = await cli(args, e);
    outputs.push(r.stdout + r.stderr);
    return r;
  };
  const ok = (r) => assert.equal(r.code, 0, `exit ${r.code} ${r.signal || ''}\n${r.stdout}\n${r.stderr}`);

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

  it('create, list, show, spend, usage, revoke, revoke-prefix and audit tail', async () => {
    const prefix = uniquePrefix('cli');
    // create: --json is the API's answer, token included
    const c = await run([
      'keys', 'create', '--vendor', 'stripe', '--label', `${prefix}a`, '--cap', '25.50',
      '--endpoint', 'POST /v1/payment_intents', '--ttl', '10m', '--metadata', '{"team":"x"}', '--json',
    ]);
    ok(c);
    const key = JSON.parse(c.stdout);
    assert.match(key.id, /^vk_/);
    assert.match(key.token, /^kb_/);
    assert.equal(key.daily_usd_cap, 25.5);
    assert.deepEqual(key.allowed_endpoints, ['POST /v1/payment_intents']);
    assert.deepEqual(key.metadata, { team: 'x' });
    // create for people: one row per field, the token among them
    const c2 = await run([
      'keys', 'create', '--vendor', 'stripe', '--label', `${prefix}b`, '--cap', '5',
      '--endpoint', '/v1/*',
    ]);
    ok(c2);
    assert.match(row(c2.stdout, 'token'), /^token\s+kb_\w+$/);
    assert.match(row(c2.stdout, 'cap'), /\$5\.00$/);
    const id2 = row(c2.stdout, 'id').split(/\s+/)[1];
    assert.match(c2.stderr, /shown only now/);

    // list: a table with a header, and --json with both keys
    const l = await run(['keys', 'list', '--label-prefix', prefix]);
    ok(l);
    assert.match(l.stdout.split('\n')[0], /^ID\s+LABEL\s+VENDOR\s+STATUS\s+CAP\s+EXPIRES$/);
    assert.match(row(l.stdout, key.id), new RegExp(`^${key.id}\\s+${prefix}a\\s+stripe\\s+active\\s+\\$25\\.50\\s`));
    assert.ok(row(l.stdout, id2));
    const lj = await run(['keys', 'list', '--label-prefix', prefix, '--json']);
    ok(lj);
    const listed = JSON.parse(lj.stdout);
    assert.deepEqual(listed.data.map((k) => k.id).sort(), [key.id, id2].sort());
    assert.equal(listed.data.find((k) => k.id === key.id).token, undefined, 'a list never shows tokens');
    // --limit follows no further than asked
    const l1 = await run(['keys', 'list', '--label-prefix', prefix, '--json', '--limit', '1']);
    ok(l1);
    assert.equal(JSON.parse(l1.stdout).data.length, 1);

    // a proxied $10 payment intent
    const pay = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=1000&currency=usd',
    });
    assert.equal(pay.status, 200, pay.text);
    assert.equal(mocks.stripe.requests.filter((r) => r.path === '/v1/payment_intents').length >= 1, true);

    // show: today's spend against the cap
    const s = await run(['keys', 'show', key.id]);
    ok(s);
    assert.match(row(s.stdout, 'status'), /active$/);
    assert.match(s.stdout, /^today\s+\$10\.00 spent \+ \$0\.00 reserved of \$25\.50 \(39%\)$/m);
    assert.match(row(s.stdout, 'requests'), /\s1$/);
    const sj = await run(['keys', 'show', key.id, '--json']);
    ok(sj);
    assert.equal(JSON.parse(sj.stdout).usage.spent_usd, 10);

    // usage: sorted by spend, with totals
    const u = await run(['usage', '--label-prefix', prefix]);
    ok(u);
    const lines = u.stdout.trim().split('\n');
    assert.match(lines[0], /^ID\s+LABEL\s+VENDOR\s+STATUS\s+SPENT\s+RESERVED\s+CAP\s+USED$/);
    assert.match(lines[1], new RegExp(`^${key.id}\\s.*\\$10\\.00\\s+\\$0\\.00\\s+\\$25\\.50\\s+39%$`));
    assert.match(lines[2], new RegExp(`^${id2}\\s.*\\$0\\.00\\s+\\$0\\.00\\s+\\$5\\.00\\s+0%$`));
    assert.match(lines[3], /^TOTAL\s+2 keys\s+\$10\.00\s+\$0\.00\s+\$30\.50\s+33%$/);
    const uj = await run(['usage', '--label-prefix', prefix, '--json']);
    ok(uj);
    const usage = JSON.parse(uj.stdout);
    assert.deepEqual(usage.keys.map((k) => k.id), [key.id, id2]);
    assert.equal(usage.total.spent_usd, 10);
    assert.equal(usage.total.keys, 2);

    // revoke, then show says so and the proxy refuses the key
    const r = await run(['keys', 'revoke', key.id]);
    ok(r);
    assert.equal(r.stdout, `revoked ${key.id}\n`);
    const s2 = await run(['keys', 'show', key.id]);
    ok(s2);
    assert.match(row(s2.stdout, 'status'), /revoked$/);
    assert.match(row(s2.stdout, 'revoked'), /^revoked\s+\d{4}-\d\d-\d\dT/);
    const before = mocks.stripe.requests.length;
    const refused = await d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=1000&currency=usd',
    });
    assert.equal(refused.status, 401);
    assert.equal(mocks.stripe.requests.length, before, 'the vendor saw nothing');

    // revoke-prefix counts what it revoked: b, and three more
    for (const x of ['c', 'd', 'e']) {
      ok(await run(['keys', 'create', '--vendor', 'stripe', '--label', `${prefix}${x}`, '--cap', '1', '--endpoint', '/v1/*']));
    }
    const rp = await run(['keys', 'revoke-prefix', prefix]);
    ok(rp);
    assert.equal(rp.stdout, 'revoked 4 keys\n');
    const rpj = await run(['keys', 'revoke-prefix', prefix, '--json']);
    ok(rpj);
    assert.deepEqual(JSON.parse(rpj.stdout), { revoked: 0 });
    const active = await run(['keys', 'list', '--label-prefix', prefix, '--status', 'active', '--json']);
    ok(active);
    assert.deepEqual(JSON.parse(active.stdout).data, []);

    // audit tail: the refusal, oldest first, for people and as JSON lines
    const t = await run(['audit', 'tail', '--key', key.id, '-n', '10']);
    ok(t);
    const tl = t.stdout.trim().split('\n');
    assert.match(tl[0], /^TIME\s+DECISION\s+STATUS\s+CODE\s+KEY\s+COST\s+REQUEST$/);
    const last = tl[tl.length - 1];
    assert.match(last, new RegExp(`refused\\s+-\\s+key_revoked\\s+${key.id}\\s+\\$0\\.00\\s+POST (/stripe)?/v1/payment_intents$`));
    assert.ok(tl.some((l) => /\sallowed\s+200\s+-\s+vk_\w+\s+\$10\.00\s+POST (\/stripe)?\/v1\/payment_intents$/.test(l)), t.stdout);
    assert.ok(tl.some((l) => new RegExp(`\\sok\\s+-\\s+-\\s+${key.id}\\s+-\\s+key\\.revoked$`).test(l)), t.stdout);
    const tj = await run(['audit', 'tail', '--key', key.id, '--decision', 'refused', '--json']);
    ok(tj);
    const entries = tj.stdout.trim().split('\n').map((x) => JSON.parse(x));
    assert.equal(entries.length, 1);
    assert.equal(entries[0].code, 'key_revoked');
    assert.equal(entries[0].key_id, key.id);
  });

  it('audit tail -f prints new entries as they come and exits 0 on Ctrl-C', async () => {
    const key = await d.issueKey({ label: uniquePrefix('follow'), allowed_endpoints: ['POST /v1/payment_intents'] });
    const child = spawn(BIN, ['audit', 'tail', '-f', '--json', '--key', key.id, '--interval', '0.1'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    let out = '';
    let err = '';
    const waiters = [];
    child.stderr.setEncoding('utf8').on('data', (c) => (err += c));
    child.stdout.setEncoding('utf8').on('data', (c) => {
      out += c;
      for (const w of waiters.slice()) w();
    });
    // resolves when a JSON line of stdout satisfies pred
    const line = (pred, what) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = out.split('\n').filter(Boolean).map((x) => JSON.parse(x)).find(pred);
          if (!hit) return false;
          waiters.splice(waiters.indexOf(check), 1);
          resolve(hit);
          return true;
        };
        waiters.push(check);
        if (!check()) exited.then(() => reject(new Error(`tail exited before ${what}\n${out}\n${err}`)));
      });
    try {
      // the key's issue is in the log before tail starts: tail is following once it shows it
      await line((e) => e.action === 'key.issued', 'the issue');
      const r = await d.proxy({
        method: 'GET',
        path: '/stripe/v1/customers',
        headers: { authorization: `Bearer ${key.token}` },
      });
      assert.equal(r.status, 403);
      const e = await line((x) => x.decision === 'refused', 'the refusal');
      assert.equal(e.code, 'endpoint_not_allowed');
      assert.match(e.path, /^(\/stripe)?\/v1\/customers$/);
      child.kill('SIGINT');
      const x = await exited;
      assert.equal(x.code, 0, `exit ${x.code} ${x.signal}\n${err}`);
      // each entry once, in seq order
      const seqs = out.trim().split('\n').map((l) => JSON.parse(l).seq);
      assert.deepEqual(seqs, [...new Set(seqs)].sort((a, b) => a - b));
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it('exit codes: 1 refused, 2 usage, 3 unreachable', async () => {
    const bad = await run(['keys', 'list'], { ...env, KEYBRAKE_ADMIN_TOKEN: 'kba_not_the_token_at_all' });
    assert.equal(bad.code, 1, bad.stderr);
    assert.equal(bad.stderr, 'keybrake: missing or invalid admin token (unauthorized)\n');
    assert.equal(bad.stdout, '');
    const nf = await run(['keys', 'show', 'vk_doesnotexist']);
    assert.equal(nf.code, 1);
    assert.equal(nf.stderr, 'keybrake: no such key (not_found)\n');
    const inv = await run(['keys', 'create', '--vendor', 'nosuch', '--label', 'x', '--cap', '1', '--endpoint', '/v1/*']);
    assert.equal(inv.code, 1);
    assert.match(inv.stderr, /^keybrake: .*\(invalid_request\)\n$/);

    const port = await closedPort();
    const down = await run(['keys', 'list'], { ...env, KEYBRAKE_ADDR: `http://127.0.0.1:${port}` });
    assert.equal(down.code, 3, down.stderr);
    assert.match(down.stderr, /cannot connect to 127\.0\.0\.1:\d+/);
    const tailDown = await run(['audit', 'tail'], { ...env, KEYBRAKE_ADDR: `127.0.0.1:${port}` });
    assert.equal(tailDown.code, 3);

    for (const args of [
      ['keys', 'create', '--vendor', 'stripe'], // missing --label, --cap, --endpoint
      ['keys', 'create', '--vendor', 'stripe', '--label', 'x', '--cap', '1e3', '--endpoint', '/v1/*'],
      ['keys', 'list', '--limit', '0'],
      ['keys', 'list', '--bogus'],
      ['keys', 'show'],
      ['keys', 'nosuch'],
      ['keys'],
      ['audit', 'tail', '--decision', 'maybe'],
      ['audit', 'tail', '-n', 'x'],
      ['nosuch'],
      [],
    ]) {
      const r = await run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.code}\n${r.stderr}`);
      assert.equal(r.stdout, '', args.join(' '));
    }
    const scheme = await run(['keys', 'list', '--addr', 'ftp://127.0.0.1:8421']);
    assert.equal(scheme.code, 2);
    assert.match(scheme.stderr, /must be an http:\/\/ or https:\/\/ address/);
    // https:// to a plain-HTTP admin listener: the handshake fails, exit 3 (tls.test.js has the rest)
    const tls = await run(['keys', 'list', '--addr', d.adminUrl.replace('http:', 'https:')]);
    assert.equal(tls.code, 3, tls.stderr);
    assert.match(tls.stderr, /TLS handshake with 127\.0\.0\.1:\d+ failed/);
    // no token anywhere: a usage error that says where it looked
    const none = await run(['keys', 'list'], { ...baseEnv(), KEYBRAKE_ADDR: d.adminUrl, KEYBRAKE_DATA_DIR: '/nonexistent' });
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no admin token.*\/nonexistent\/admin-token/);
  });

  it('--help on every command, --version and version', async () => {
    for (const args of [
      ['--help'], ['-h'], ['help'],
      ['keys', '--help'], ['keys', 'create', '--help'], ['keys', 'list', '-h'], ['keys', 'show', '--help'],
      ['keys', 'revoke', '--help'], ['keys', 'revoke-prefix', '--help'],
      ['usage', '--help'], ['audit', '--help'], ['audit', 'tail', '--help'], ['audit', 'verify', '--help'],
      ['audit', 'export', '--help'], ['serve', '--help'], ['config', '--help'], ['version', '--help'],
      ['budgets', '--help'], ['budgets', 'list', '--help'], ['budgets', 'show', '-h'],
      ['budgets', 'create', '--help'], ['budgets', 'delete', '--help'], ['budgets', 'create', 'x', '--cap', '1', '-h'],
    ]) {
      const r = await run(args, baseEnv()); // no address or token needed
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.code}\n${r.stderr}`);
      assert.match(r.stdout, /usage: keybrake/, args.join(' '));
    }
    const k = await run(['keys', '--help'], baseEnv());
    assert.match(k.stdout, /exit codes: 0 ok, 1 the API refused \(4xx\), 2 usage error, 3 daemon unreachable or 5xx/);
    for (const args of [['--version'], ['version']]) {
      const r = await run(args, baseEnv());
      assert.equal(r.code, 0);
      assert.match(r.stdout, /^keybrake \d+\.\d+\.\d+\S*\n$/);
    }
  });

  it('budgets create, list, show and delete (the admin API /v1/budgets)', async () => {
    const team = uniquePrefix('team');
    const user = uniquePrefix('user');
    const c = await run(['budgets', 'create', team, '--cap', '100', '--window', 'month', '--json']);
    ok(c);
    const tj = JSON.parse(c.stdout);
    assert.equal(tj.name, team);
    assert.equal(tj.usd_cap, 100);
    assert.equal(tj.window, 'month');
    assert.equal(tj.parent, null);
    // for people: one row per field; the cap exactly as typed
    const c2 = await run(['budgets', 'create', user, '--cap', '0.05', '--window', 'day', '--parent', team]);
    ok(c2);
    assert.match(row(c2.stdout, 'cap'), /\$0\.05$/);
    assert.match(row(c2.stdout, 'parent'), new RegExp(`${team}$`));
    assert.match(row(c2.stdout, 'window'), /day$/);

    // refusals: the API's (exit 1), and usage errors before any call (exit 2)
    const dup = await run(['budgets', 'create', team, '--cap', '1', '--window', 'day']);
    assert.equal(dup.code, 1, dup.stderr);
    assert.match(dup.stderr, /\(conflict\)$/m);
    const badWin = await run(['budgets', 'create', uniquePrefix('b'), '--cap', '1', '--window', 'week']);
    assert.equal(badWin.code, 1);
    assert.match(badWin.stderr, /window must be/);
    for (const args of [
      ['budgets', 'create', 'x', '--cap', '1'], ['budgets', 'create', 'x', '--window', 'day'],
      ['budgets', 'create', '--cap', '1', '--window', 'day'], ['budgets', 'create', 'x', '--cap', '1e3', '--window', 'day'],
      ['budgets', 'show'], ['budgets', 'delete', 'a', 'b'], ['budgets', 'list', '--limit', '0'], ['budgets', 'nosuch'], ['budgets'],
    ]) {
      const r = await run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.code}\n${r.stderr}`);
      assert.equal(r.stdout, '');
    }

    // list: a table, and --json
    const l = await run(['budgets', 'list', '--limit', '10000']);
    ok(l);
    assert.match(l.stdout.split('\n')[0], /^NAME\s+WINDOW\s+CAP\s+PARENT\s+KEYS\s+USAGE$/);
    assert.match(row(l.stdout, user), new RegExp(`^${user}\\s+day\\s+\\$0\\.05\\s+${team}\\s+0\\s`));
    const lj = JSON.parse((await run(['budgets', 'list', '--json', '--limit', '10000'])).stdout);
    assert.ok(lj.data.some((b) => b.name === team) && lj.data.some((b) => b.name === user));

    // a key spending from the budget: show counts it and its spend
    const issued = await d.admin.post('/v1/keys', {
      label: uniquePrefix('cli-budget'), vendor: 'stripe', allowed_endpoints: ['POST /v1/payment_intents'],
      daily_usd_cap: 10, expires_in: '1h', budgets: [user],
    });
    assert.equal(issued.status, 201, issued.text);
    const key = issued.json;
    const pay = await d.proxy({
      method: 'POST', path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${key.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=3&currency=usd',
    });
    assert.equal(pay.status, 200, pay.text);
    const s = await run(['budgets', 'show', user]);
    ok(s);
    assert.match(row(s.stdout, 'keys'), /1$/);
    assert.match(row(s.stdout, 'usage'), /^usage\s+\$0\.03 spent \+ \$0\.00 reserved of \$0\.05 \(60%\)$/);
    const sj = JSON.parse((await run(['budgets', 'show', user, '--json'])).stdout);
    assert.equal(sj.usage.spent_usd, 0.03);

    // delete: refused while a live key names it, then done; gone after
    const busy = await run(['budgets', 'delete', user]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /\(budget_in_use\)$/m);
    ok(await run(['keys', 'revoke', key.id]));
    const del = await run(['budgets', 'delete', user]);
    ok(del);
    assert.equal(del.stdout, `deleted budget ${user}\n`);
    const gone = await run(['budgets', 'show', user]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /\(not_found\)$/m);
    const dj = await run(['budgets', 'delete', team, '--json']);
    ok(dj);
    assert.deepEqual(JSON.parse(dj.stdout), { name: team, deleted: true });
  });

  it('reads the token file the daemon wrote when no token is given', async () => {
    const d2 = await startDaemon({ mocks, adminToken: null });
    try {
      assert.ok(d2.tokenWrittenTo, d2.output());
      const r = await run(['keys', 'list', '--json'], { ...baseEnv(), KEYBRAKE_ADDR: d2.adminUrl, KEYBRAKE_DATA_DIR: d2.dataDir });
      ok(r);
      assert.deepEqual(JSON.parse(r.stdout), { data: [], next_cursor: null });
      outputs.push(`token:${d2.adminToken}`); // checked by the next test's loop the other way round
      for (const o of outputs.slice(0, -1)) assert.ok(!o.includes(d2.adminToken), 'the admin token was printed');
    } finally {
      await d2.stop();
    }
  });

  it('never prints the admin token', () => {
    assert.ok(outputs.length > 20);
    for (const o of outputs) if (!o.startsWith('token:')) assert.ok(!o.includes(d.adminToken), 'the admin token was printed');
  });
});
