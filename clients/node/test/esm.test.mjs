// esm.test.mjs - an ES module imports every export by name (the kit is
// CommonJS; Node's lexer must see each name), and gets the same objects
// as require().
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as kit from '@keybrake/client';

it('every export is importable by name from an ES module', () => {
  const cjs = createRequire(import.meta.url)('@keybrake/client');
  const names = Object.keys(cjs).sort();
  assert.ok(names.length >= 17);
  for (const n of names) assert.equal(kit[n], cjs[n], `export ${n}`);
});
