'use strict';
// packaging.test.js - what a server install gets (issue 18, item 7): the
// sample keybrake.ini lists every setting of the settings table with its
// current default (so it cannot drift) and loads as it stands; the man page
// renders without warnings and names every command and setting; the CMake
// install rules (the prefix given at install time, DESTDIR) put the binary,
// unit, man page and configuration where they belong and never overwrite an
// edited configuration; the systemd unit passes systemd-analyze verify; and
// the .deb built with dpkg-deb holds those files with its control data.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { BIN, REPO, mkTempDir, rmTempDir, startDaemon } = require('./lib/harness');
const { run } = require('./lib/tls');

const SAMPLE = path.join(REPO, 'packaging/keybrake.ini');
const MAN = path.join(REPO, 'packaging/keybrake.1');
const BUILD = path.dirname(BIN);

function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KEYBRAKE_')) env[k] = v;
  return { ...env, ...extra };
}

// The settings table as `keybrake config` prints it: [{ section, key, env, def }].
async function settingsTable() {
  const r = await run(BIN, ['config'], { env: cleanEnv() });
  assert.equal(r.code, 0, r.stderr);
  const rows = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\| `\[(\w+)\] (\w+)` \| `(\w+)` \| (.*?) \| .* \|$/.exec(line);
    if (m) rows.push({ section: m[1], key: m[2], env: m[3], def: m[4] === '(unset)' ? null : m[4].replace(/`/g, '') });
  }
  assert.ok(rows.length >= 30, `settings table too short: ${rows.length}`);
  return rows;
}

// The sample as { section: { key: { value, commented, def, env } } }.
function parseSample(text) {
  const out = {};
  let section = null;
  let def;
  let env;
  for (const line of text.split('\n')) {
    let m;
    if ((m = /^;?\[([\w.]+)\]$/.exec(line))) {
      section = m[1];
      out[section] = out[section] || {};
    } else if ((m = /^; default: (.*?)\s+env: (\w+)$/.exec(line))) {
      def = m[1] === '(unset)' ? null : m[1];
      env = m[2];
    } else if ((m = /^(;?)(\w+) = ?(.*)$/.exec(line)) && section) {
      out[section][m[2]] = { value: m[3], commented: m[1] === ';', def, env };
      def = undefined;
      env = undefined;
    }
  }
  return out;
}

describe('packaging', () => {
  let dir;
  before(() => {
    dir = mkTempDir();
  });
  after(() => rmTempDir(dir));

  it('the sample keybrake.ini lists every setting with its default, and nothing else', async () => {
    const table = await settingsTable();
    const sample = parseSample(fs.readFileSync(SAMPLE, 'utf8'));
    for (const s of table) {
      const e = sample[s.section] && sample[s.section][s.key];
      assert.ok(e, `[${s.section}] ${s.key} is missing from packaging/keybrake.ini`);
      assert.equal(e.def, s.def, `[${s.section}] ${s.key}: the sample's "default:" comment`);
      assert.equal(e.env, s.env, `[${s.section}] ${s.key}: the sample's env name`);
      assert.equal(e.value, s.def === null ? '' : s.def, `[${s.section}] ${s.key}: the sample's value`);
      assert.equal(e.commented, true, `[${s.section}] ${s.key}: commented out, so the file changes nothing`);
    }
    const known = new Set(table.map((s) => `${s.section}.${s.key}`));
    for (const [section, keys] of Object.entries(sample)) {
      if (section.startsWith('vendor.')) continue;
      for (const key of Object.keys(keys)) assert.ok(known.has(`${section}.${key}`), `[${section}] ${key} is not a setting`);
    }
  });

  it('the sample loads as it stands', async () => {
    const d = await startDaemon({ args: ['--config', SAMPLE] });
    await d.stop();
    // and with a setting uncommented, that setting is read from it
    const edited = path.join(dir, 'edited.ini');
    fs.writeFileSync(edited, fs.readFileSync(SAMPLE, 'utf8').replace(';max_headers = 100', 'max_headers = 7'));
    const d2 = await startDaemon({ args: ['--config', edited] });
    try {
      const headers = {};
      for (let i = 0; i < 8; i++) headers[`x-h${i}`] = 'v';
      const r = await d2.proxy({ path: '/openai/v1/models', headers });
      assert.equal(r.status, 431, r.text);
    } finally {
      await d2.stop();
    }
  });

  it('the man page renders without warnings and names every command and setting', async () => {
    const g = await run('groff', ['-man', '-Tutf8', '-ww', '-z', MAN]);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(g.stderr, '', 'groff warnings');
    // rendered without hyphenation (-rHY=0), so that a name is never split at a line end
    const text = (await run('groff', ['-man', '-rHY=0', '-Tutf8', '-P-c', '-P-b', '-P-u', MAN])).stdout
      .replace(/[ \t]+/g, ' '); // justified lines: one blank between words
    const help = (await run(BIN, ['--help'], { env: cleanEnv() })).stdout;
    for (const cmd of ['serve', 'config', 'keys create', 'keys list', 'keys show', 'keys revoke', 'keys revoke-prefix',
      'usage', 'audit tail', 'audit verify', 'audit export', 'budgets list', 'budgets show', 'budgets create',
      'budgets delete', '--version']) {
      assert.ok(text.includes(cmd), `the man page does not name "${cmd}"`);
    }
    for (const word of help.match(/^ {2}([a-z][a-z-]+)/gm).map((w) => w.trim())) {
      assert.ok(text.includes(word), `the man page does not name "${word}" from keybrake --help`);
    }
    const flat = text.replace(/\s+/g, ' ');
    for (const s of await settingsTable()) assert.ok(flat.includes(s.key), `the man page does not name ${s.key}`);
  });

  it('install: the prefix given at install time, DESTDIR, the configuration kept', async () => {
    assert.ok(fs.existsSync(path.join(BUILD, 'cmake_install.cmake')), `${BUILD} is not a CMake build tree`);
    const stage = path.join(dir, 'usr-root');
    const r = await run('cmake', ['--install', BUILD, '--prefix', '/usr'], { env: { ...process.env, DESTDIR: stage } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const f of ['usr/bin/keybrake', 'usr/lib/systemd/system/keybrake.service', 'usr/share/man/man1/keybrake.1',
      'usr/share/doc/keybrake/keybrake.ini', 'etc/keybrake/keybrake.ini']) {
      assert.ok(fs.existsSync(path.join(stage, f)), `${f} not installed`);
    }
    assert.equal(fs.statSync(path.join(stage, 'usr/bin/keybrake')).mode & 0o111, 0o111);
    const unit = fs.readFileSync(path.join(stage, 'usr/lib/systemd/system/keybrake.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/usr\/bin\/keybrake serve --config \/etc\/keybrake\/keybrake\.ini$/m);
    assert.match(unit, /^EnvironmentFile=-\/etc\/keybrake\/keybrake\.env$/m);

    // an operator's edit survives a reinstall
    const conf = path.join(stage, 'etc/keybrake/keybrake.ini');
    fs.appendFileSync(conf, '\n; edited by the operator\n');
    const again = await run('cmake', ['--install', BUILD, '--prefix', '/usr'], { env: { ...process.env, DESTDIR: stage } });
    assert.equal(again.code, 0, again.stderr);
    assert.match(fs.readFileSync(conf, 'utf8'), /edited by the operator/);

    // another prefix: everything under it, the unit pointing there
    const opt = path.join(dir, 'opt-root');
    const o = await run('cmake', ['--install', BUILD, '--prefix', '/opt/kb'], { env: { ...process.env, DESTDIR: opt } });
    assert.equal(o.code, 0, o.stderr);
    assert.ok(fs.existsSync(path.join(opt, 'opt/kb/etc/keybrake/keybrake.ini')));
    assert.match(fs.readFileSync(path.join(opt, 'opt/kb/lib/systemd/system/keybrake.service'), 'utf8'),
      /^ExecStart=\/opt\/kb\/bin\/keybrake serve --config \/opt\/kb\/etc\/keybrake\/keybrake\.ini$/m);
  });

  it('the systemd unit is hardened and passes systemd-analyze verify', async () => {
    const stage = path.join(dir, 'usr-root');
    if (!fs.existsSync(stage)) {
      const r = await run('cmake', ['--install', BUILD, '--prefix', '/usr'], { env: { ...process.env, DESTDIR: stage } });
      assert.equal(r.code, 0, r.stderr);
    }
    const unit = fs.readFileSync(path.join(stage, 'usr/lib/systemd/system/keybrake.service'), 'utf8');
    for (const line of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes',
      'DynamicUser=yes', 'User=keybrake', 'StateDirectory=keybrake', 'CapabilityBoundingSet=',
      'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX', 'SystemCallFilter=@system-service',
      'MemoryDenyWriteExecute=yes', 'ExecReload=/bin/kill -HUP $MAINPID', 'UMask=0077']) {
      assert.ok(unit.split('\n').includes(line), `the unit lacks ${line}`);
    }
    // verified with the staged binary in ExecStart and the staged man page for Documentation=
    const copy = path.join(dir, 'keybrake.service');
    fs.writeFileSync(copy, unit.replace(/\/usr\/bin\/keybrake/g, path.join(stage, 'usr/bin/keybrake')));
    const v = await run('systemd-analyze', ['verify', copy], {
      env: { ...process.env, MANPATH: path.join(stage, 'usr/share/man') },
    });
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.equal((v.stdout + v.stderr).trim(), '', 'systemd-analyze warnings');
  });

  it('a .deb built with dpkg-deb holds the files, conffiles and control data', async () => {
    const stage = path.join(dir, 'deb-root');
    const r = await run('cmake', ['--install', BUILD, '--prefix', '/usr'], { env: { ...process.env, DESTDIR: stage } });
    assert.equal(r.code, 0, r.stderr);
    const mk = await run(path.join(REPO, 'scripts/mkdeb.sh'), [stage, path.join(dir, 'out')]);
    assert.equal(mk.code, 0, mk.stderr);
    const deb = mk.stdout.trim();
    assert.match(path.basename(deb), /^keybrake_\d+\.\d+\.\d+_[a-z0-9]+\.deb$/);
    const c = await run('dpkg-deb', ['-c', deb]);
    assert.equal(c.code, 0, c.stderr);
    for (const f of ['./usr/bin/keybrake', './usr/lib/systemd/system/keybrake.service', './usr/share/man/man1/keybrake.1',
      './etc/keybrake/keybrake.ini', './usr/share/doc/keybrake/keybrake.ini']) {
      assert.ok(c.stdout.split('\n').some((l) => l.endsWith(` ${f}`) && l.includes('root/root')), `${f} not in the .deb:\n${c.stdout}`);
    }
    const info = await run('dpkg-deb', ['-f', deb, 'Package', 'Version', 'Depends']);
    assert.match(info.stdout, /^Package: keybrake$/m);
    const version = (await run(BIN, ['--version'], { env: cleanEnv() })).stdout.trim().split(' ')[1];
    assert.match(info.stdout, new RegExp(`^Version: ${version.replace(/\./g, '\\.')}$`, 'm'));
    assert.match(info.stdout, /libssl3/);
    assert.match(info.stdout, /libevent/);
    const ctl = path.join(dir, 'control');
    const x = await run('dpkg-deb', ['-e', deb, ctl]);
    assert.equal(x.code, 0, x.stderr);
    assert.equal(fs.readFileSync(path.join(ctl, 'conffiles'), 'utf8').trim(), '/etc/keybrake/keybrake.ini');
    assert.match(fs.readFileSync(path.join(ctl, 'postinst'), 'utf8'), /adduser --system --group/);
  });
});
