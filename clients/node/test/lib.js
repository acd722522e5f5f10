'use strict';
// test/lib.js - what every kit test starts from: the real keybrake binary
// (KEYBRAKE_BIN, as for tests/blackbox) against the black-box suite's mock
// vendors, both started by that suite's helpers (used read-only), and a
// Keybrake client pointed at the daemon.

const path = require('node:path');

const BB = path.resolve(__dirname, '../../../tests/blackbox');
const harness = require(path.join(BB, 'lib/harness'));
const { startMockVendors } = require(path.join(BB, 'mock/vendor'));
const { Keybrake } = require('..');

// { mocks, d, kb, close() }; opts.env goes to the daemon.
async function startKeybrake(opts = {}) {
  const mocks = await startMockVendors();
  let d;
  try {
    d = await harness.startDaemon({ mocks, env: opts.env });
  } catch (e) {
    await mocks.close();
    throw e;
  }
  const kb = new Keybrake({ adminUrl: d.adminUrl, adminToken: d.adminToken, proxyUrl: d.proxyUrl, ...opts.client });
  return {
    mocks,
    d,
    kb,
    // stop() asserts a clean exit (a sanitizer report fails the test)
    async close() {
      try {
        await d.stop();
      } finally {
        await mocks.close();
      }
    },
  };
}

// The key as the admin API reports it, read with the harness's own client
// (not the kit under test).
async function keyStatus(d, id) {
  const r = await d.admin.get(`/v1/keys/${id}`);
  if (r.status !== 200) throw new Error(`GET /v1/keys/${id}: ${r.status} ${r.text}`);
  return r.json.status;
}

// createKey options for an OpenAI key that may call chat completions.
function openaiKey(label, extra = {}) {
  return {
    label,
    vendor: 'openai',
    allowedEndpoints: ['POST /v1/chat/completions'],
    dailyUsdCap: 5,
    expiresIn: '10m',
    ...extra,
  };
}

module.exports = { harness, keyStatus, openaiKey, startKeybrake, uniquePrefix: harness.uniquePrefix };
