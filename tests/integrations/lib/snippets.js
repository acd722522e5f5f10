'use strict';
// lib/snippets.js - the code blocks a guide marks as checked. A guide in
// docs/integrations/ puts `<!-- checked: NAME -->` on the line before a
// fenced block; the tests extract that block verbatim as file NAME and
// compile or run it, so what a reader copies is what was tested.

const fs = require('node:fs');
const path = require('node:path');

const DOCS = path.resolve(__dirname, '../../../docs/integrations');
const MARKED = /<!-- checked: ([\w.-]+) -->\n```[\w-]*\n([\s\S]*?)\n```/g;

// Map NAME -> source of every checked block of docs/integrations/<guide>.
function snippets(guide) {
  const text = fs.readFileSync(path.join(DOCS, guide), 'utf8');
  const out = new Map();
  for (const m of text.matchAll(MARKED)) {
    if (out.has(m[1])) throw new Error(`${guide}: two blocks are marked ${m[1]}`);
    out.set(m[1], m[2] + '\n');
  }
  return out;
}

// Writes the named blocks of `guide` into `dir`; fails when one is missing.
function writeSnippets(guide, names, dir) {
  const all = snippets(guide);
  for (const n of names) {
    if (!all.has(n)) throw new Error(`${guide} has no block marked <!-- checked: ${n} -->`);
    fs.writeFileSync(path.join(dir, n), all.get(n));
  }
  return all;
}

module.exports = { DOCS, snippets, writeSnippets };
