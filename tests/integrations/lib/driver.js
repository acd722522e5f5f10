'use strict';
// lib/driver.js - a guide's snippet runs inside one long-lived child (a JVM,
// a Ruby) that reads commands from stdin, one JSON array a line, and
// answers each with one JSON line, in order. Asynchronous on purpose: the
// mock vendors answer from this process's event loop.

const { spawn, spawnSync } = require('node:child_process');
const readline = require('node:readline');

// Fails loudly when a toolchain is missing: these tests never skip.
function requireTool(cmd, versionArgs, hint) {
  const r = spawnSync(cmd, versionArgs, { encoding: 'utf8', timeout: 60_000 });
  if (r.error || r.status !== 0) {
    throw new Error(`${cmd} is needed by this test and did not run (${r.error ? r.error.message : r.stderr}); ${hint}`);
  }
}

// { check(...args) -> Promise<answer>, close() }
function startDriver(cmd, args, env) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  const waiting = [];
  let stderr = '';
  let exited = false;
  child.stderr.on('data', (c) => (stderr += c));
  readline.createInterface({ input: child.stdout }).on('line', (l) => {
    const w = waiting.shift();
    if (!w) return;
    try {
      w.resolve(JSON.parse(l));
    } catch {
      w.reject(new Error(`${cmd} printed a line that is not JSON: ${l}\n${stderr}`));
    }
  });
  const exit = new Promise((resolve) =>
    child.on('exit', (code) => {
      exited = true;
      for (const w of waiting.splice(0)) w.reject(new Error(`${cmd} exited (${code}):\n${stderr}`));
      resolve(code);
    }),
  );
  child.on('error', (e) => {
    for (const w of waiting.splice(0)) w.reject(e);
  });
  return {
    check(...a) {
      if (exited) return Promise.reject(new Error(`${cmd} has exited:\n${stderr}`));
      return new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        child.stdin.write(JSON.stringify(a) + '\n');
      });
    },
    async close() {
      child.stdin.end();
      const code = await exit;
      if (code !== 0) throw new Error(`${cmd} exited with ${code}:\n${stderr}`);
    },
  };
}

module.exports = { requireTool, startDriver };
