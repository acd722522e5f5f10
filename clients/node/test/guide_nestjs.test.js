'use strict';
// guide_nestjs.test.js - docs/integrations/nestjs.md as printed: its three
// checked TypeScript files are extracted, compiled the way a Nest project
// builds them (tsc, experimentalDecorators, emitDecoratorMetadata, strict)
// against the real @nestjs/* and openai packages and this kit's
// index.d.ts, and run as a Nest application against the real binary.
// The build goes to clients/node/.guide-*/ so that `@keybrake/client`
// resolves to this package by its own name.

require('reflect-metadata');
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { writeSnippets } = require('../../../tests/integrations/lib/snippets');
const { harness, keyStatus, startKeybrake } = require('./lib');

const FILES = ['keybrake.ts', 'agent.controller.ts', 'app.module.ts'];

describe('NestJS guide: its code compiled and run against the real binary', () => {
  let k;
  let dir;
  let app;
  let port;
  const saved = {};

  before(async () => {
    dir = fs.mkdtempSync(path.join(__dirname, '..', '.guide-'));
    writeSnippets('nestjs.md', FILES, dir);
    fs.writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          target: 'es2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          experimentalDecorators: true,
          emitDecoratorMetadata: true,
          esModuleInterop: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [path.join(__dirname, '..', 'node_modules', '@types')],
          rootDir: '.',
          outDir: 'out',
        },
        files: FILES,
      }),
    );
    const tsc = require.resolve('typescript/bin/tsc');
    const c = spawnSync(process.execPath, [tsc, '-p', path.join(dir, 'tsconfig.json')], { encoding: 'utf8' });
    assert.equal(c.status, 0, `tsc:\n${c.stdout}${c.stderr}`);

    k = await startKeybrake();
  });

  // Loads the compiled guide afresh with the guide's configuration in the
  // environment (keybrake.ts reads it when it loads) and starts the app.
  async function startApp(capUsd) {
    const env = {
      KEYBRAKE_ADDR: k.d.adminUrl,
      KEYBRAKE_ADMIN_TOKEN: k.d.adminToken,
      KEYBRAKE_PROXY_URL: k.d.proxyUrl,
      AGENT_RUN_CAP_USD: capUsd,
    };
    for (const [n, v] of Object.entries(env)) {
      if (!(n in saved)) saved[n] = process.env[n];
      process.env[n] = v;
    }
    const out = path.join(dir, 'out');
    for (const f of Object.keys(require.cache)) if (f.startsWith(out)) delete require.cache[f];
    const { NestFactory } = require('@nestjs/core');
    const { AppModule } = require(path.join(out, 'app.module.js'));
    if (app) await app.close();
    app = await NestFactory.create(AppModule, { logger: false });
    await app.listen(0, '127.0.0.1');
    port = app.getHttpServer().address().port;
  }

  after(async () => {
    for (const [n, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[n];
      else process.env[n] = v;
    }
    try {
      if (app) await app.close();
      if (k) await k.close();
    } finally {
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  const ask = (question) =>
    harness.request({
      port,
      method: 'POST',
      path: '/agent/run',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ question }),
    });

  it('a run gets its own key, the OpenAI call goes through the proxy, the key is revoked after', async () => {
    await startApp('0.5');
    k.mocks.reset();
    const r = await ask('Say hello');
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.answer, 'Hello from the mock.');
    await harness.waitFor(async () => (await keyStatus(k.d, r.json.keyId)) === 'revoked', { what: 'revoked' });
    const key = await k.kb.getKey(r.json.keyId);
    assert.match(key.label, /^user-anon\/run-[0-9a-f-]{36}$/);
    assert.equal(key.dailyUsdCap, 0.5);
    assert.equal(key.usage.requests, 1);
    assert.equal(k.mocks.openai.requests.length, 1);
    assert.equal(k.mocks.openai.requests[0].headers.authorization, `Bearer ${k.d.secrets.openai}`);
    assert.equal(JSON.parse(k.mocks.openai.requests[0].bodyText).messages[0].content, 'Say hello');
  });

  it('a cap too small for the call answers 402 after one call (the SDK does not retry it); the key is revoked', async () => {
    await startApp('0.000001');
    k.mocks.reset();
    const r = await ask('Say hello');
    assert.equal(r.status, 402, r.text);
    assert.equal(r.json.error, "this run's budget is spent");
    const refused = (await k.d.admin.get('/v1/audit?decision=refused')).json.data.filter((a) => a.code === 'cap_exhausted');
    assert.equal(refused.length, 1, `exactly one refused call: ${JSON.stringify(refused)}`);
    assert.equal(k.mocks.openai.requests.length, 0);
    await harness.waitFor(async () => (await keyStatus(k.d, refused[0].key_id)) === 'revoked', { what: 'revoked' });
  });
});
