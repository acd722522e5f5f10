'use strict';
// types.test.js - index.d.ts is hand-written: compile a program that uses
// the kit as its README does (test/types/usage.ts, strict mode) and must be
// refused where the API would refuse (@ts-expect-error lines fail the build
// when they stop being errors).

const { it } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');

it('index.d.ts type-checks a strict program using every export', () => {
  const tsc = require.resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types/tsconfig.json')], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});
