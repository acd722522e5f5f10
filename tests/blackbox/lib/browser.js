'use strict';
// lib/browser.js - Debian's chromium driven by playwright-core, for the
// dashboard's tests. Nothing is downloaded: the browser is the system's
// (/usr/bin/chromium, or KEYBRAKE_CHROMIUM), installed by `make test`
// (scripts/deps.sh). A missing browser fails the test with a message that
// says how to get one; it never skips.

const fs = require('node:fs');

const CHROMIUM = process.env.KEYBRAKE_CHROMIUM || '/usr/bin/chromium';

async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(
      `chromium not found at ${CHROMIUM}: the dashboard tests need a real browser. ` +
        'Install it with `apt-get install chromium` (make test does: scripts/deps.sh test), ' +
        'or point KEYBRAKE_CHROMIUM at one.',
    );
  }
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (e) {
    throw new Error(`playwright-core is missing (run npm ci in tests/blackbox): ${e.message}`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true });
}

// A page that records what the dashboard does: every request URL, every
// console error and uncaught exception, every dialog (none is expected).
async function recordedPage(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const rec = { urls: [], requests: [], errors: [], dialogs: [] };
  page.on('request', (r) => {
    rec.urls.push(r.url());
    rec.requests.push(r);
  });
  page.on('console', (m) => {
    if (m.type() === 'error') rec.errors.push(m.text());
  });
  page.on('pageerror', (e) => rec.errors.push(`uncaught: ${e.message}`));
  page.on('dialog', (d) => {
    rec.dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  return { context, page, rec };
}

module.exports = { CHROMIUM, launchBrowser, recordedPage };
