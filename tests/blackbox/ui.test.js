'use strict';
// ui.test.js - the dashboard (issue 18, item 3) served by the admin listener
// under /ui/: its files' headers (CSP, nosniff, ETag), 404s and traversal,
// and the page itself in a real headless browser (Debian's chromium through
// playwright-core): sign in with the admin token, see a key with its spend
// against its cap, revoke it with its button, see the refusal in the audit
// tail and in the refusals by code, pull the kill switch by label prefix.
// The token never appears in a request URL or a cookie, and the page logs no
// console error (a CSP violation would be one). With tenants: root sees them
// and filters keys by tenant; a tenant's token sees its own keys alone.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { REPO, assertError, rawRequest, request, startDaemon, statusOf, uniquePrefix, waitFor } =
  require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');
const { launchBrowser, recordedPage } = require('./lib/browser');

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
  "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

function assertUiHeaders(h, what) {
  assert.equal(h['content-security-policy'], CSP, what);
  assert.equal(h['x-content-type-options'], 'nosniff', what);
  assert.equal(h['referrer-policy'], 'no-referrer', what);
  assert.equal(h['x-frame-options'], 'DENY', what);
  assert.equal(h['set-cookie'], undefined, what);
}

describe('dashboard files on the admin listener', () => {
  let d;

  before(async () => {
    d = await startDaemon();
  });

  after(async () => {
    if (d) await d.stop();
  });

  const get = (p, headers = {}) => request({ port: d.adminPort, path: p, headers });

  it('serves every file of ui/ without a token, byte for byte, with its type and the CSP', async () => {
    const names = fs.readdirSync(path.join(REPO, 'ui'));
    assert.ok(names.includes('index.html') && names.includes('app.js') && names.includes('app.css'));
    for (const name of names) {
      const r = await get('/ui/' + name);
      assert.equal(r.status, 200, `${name}: ${r.status} ${r.text}`);
      assert.equal(r.headers['content-type'], TYPES[path.extname(name)], name);
      assert.deepEqual(r.body, fs.readFileSync(path.join(REPO, 'ui', name)), `${name} as in ui/`);
      assertUiHeaders(r.headers, name);
      assert.equal(r.headers['cache-control'], 'no-cache', name);
      assert.match(r.headers.etag, /^"[0-9a-f]{32}"$/, name);
    }
    const index = await get('/ui/');
    assert.equal(index.status, 200);
    assert.deepEqual(index.body, fs.readFileSync(path.join(REPO, 'ui/index.html')));
    assert.equal(index.headers['content-type'], 'text/html; charset=utf-8');
  });

  it('answers a matching If-None-Match with 304 and no body, a stale one with the file', async () => {
    const first = await get('/ui/app.js');
    const etag = first.headers.etag;
    for (const inm of [etag, `W/${etag}`, `"x", ${etag}`, '*']) {
      const r = await get('/ui/app.js', { 'if-none-match': inm });
      assert.equal(r.status, 304, inm);
      assert.equal(r.body.length, 0, inm);
      assert.equal(r.headers.etag, etag, inm);
      assertUiHeaders(r.headers, inm);
    }
    const stale = await get('/ui/app.js', { 'if-none-match': '"0123456789abcdef0123456789abcdef"' });
    assert.equal(stale.status, 200);
    assert.deepEqual(stale.body, first.body);
    // each file its own ETag
    const css = await get('/ui/app.css');
    assert.notEqual(css.headers.etag, etag);
  });

  it('HEAD gives the headers and the length, no body', async () => {
    const r = await rawRequest(d.adminPort, 'HEAD /ui/app.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(statusOf(r.text), 200, r.text);
    const len = fs.statSync(path.join(REPO, 'ui/app.css')).size;
    assert.match(r.text, new RegExp(`\r\nContent-Length: ${len}\r\n`, 'i'));
    assert.match(r.text, /\r\nContent-Type: text\/css; charset=utf-8\r\n/i);
    assert.ok(r.text.endsWith('\r\n\r\n'), 'nothing after the head');
  });

  it('/ui redirects to /ui/ (the page\'s links are relative)', async () => {
    const r = await get('/ui');
    assert.equal(r.status, 308);
    assert.equal(r.headers.location, '/ui/');
    assertUiHeaders(r.headers, '/ui');
  });

  it('unknown names are 404 JSON like the rest of the API, with the CSP', async () => {
    for (const p of ['/ui/nope.js', '/ui/app.js.map', '/ui/sub/app.js', '/ui/APP.JS', '/ui/index.htm']) {
      const r = await get(p);
      assertError(r, 404, 'not_found', p);
      assertUiHeaders(r.headers, p);
    }
  });

  it('no traversal: dot segments and escapes never leave the embedded table', async () => {
    const targets = [
      '/ui/../v1/keys',
      '/ui/%2e%2e/v1/keys',
      '/ui/..%2fv1%2fkeys',
      '/ui/./index.html',
      '/ui//index.html',
      '/ui/%61pp.js',
      '/ui/app.js%00',
      '/ui/..',
      '/ui/../../../../etc/passwd',
      '/ui/..\\..\\etc\\passwd',
    ];
    for (const t of targets) {
      // with the admin token too: a /ui/ path never reaches the API
      const raw = await rawRequest(
        d.adminPort,
        `GET ${t} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${d.adminToken}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(statusOf(raw.text), 404, `${t}: ${raw.text.slice(0, 200)}`);
      assert.match(raw.text, /"code":"not_found"/, t);
      assert.doesNotMatch(raw.text, /"data":|root:/, t);
    }
  });

  it('other methods are 405; the API beside it still wants the token', async () => {
    const r = await d.admin.req('POST', '/ui/app.js', '');
    assertError(r, 405, 'method_not_allowed');
    assert.equal(r.headers.allow, 'GET, HEAD');
    const del = await d.admin.req('DELETE', '/ui/');
    assertError(del, 405, 'method_not_allowed');
    // a body without a token is refused unread, as on every admin route
    const anon = await d.admin.req('POST', '/ui/', '{"x":1}', { token: null });
    assertError(anon, 401, 'unauthorized');
    for (const p of ['/v1/keys', '/uix', '/ui.html', '/metrics']) {
      assertError(await d.admin.get(p, { token: null }), 401, 'unauthorized', p);
    }
  });
});

describe('dashboard in a headless browser', () => {
  let mocks;
  let d;
  let browser;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    browser = await launchBrowser();
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      try {
        if (d) await d.stop();
      } finally {
        if (mocks) await mocks.close();
      }
    }
  });

  const pay = (token, amount = 1000) =>
    d.proxy({
      method: 'POST',
      path: '/stripe/v1/payment_intents',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: `amount=${amount}&currency=usd`,
    });

  async function signIn(page, token) {
    await page.fill('#token', token);
    await page.click('#login-submit');
  }

  // Clicks the page's Refresh and waits until `fn` (run in the page) holds.
  async function refreshUntil(page, fn, arg, what) {
    await waitFor(
      async () => {
        await page.click('#refresh-all');
        return page.waitForFunction(fn, arg, { timeout: 1000 }).then(() => true, () => false);
      },
      { timeoutMs: 15_000, what },
    );
  }

  it('sign in, see spend against the cap, revoke with the button, see the refusal', async () => {
    const { context, page, rec } = await recordedPage(browser);
    const prefix = uniquePrefix('ui');
    try {
      const res = await page.goto(`${d.adminUrl}/ui/`);
      assert.equal(res.status(), 200);
      assertUiHeaders(res.headers(), '/ui/ in the browser');
      assert.ok(await page.isVisible('#login'));
      assert.ok(await page.isHidden('#dash'));

      await signIn(page, d.adminToken);
      await page.waitForSelector('#dash', { state: 'visible' });
      assert.ok(await page.isHidden('#login'));
      assert.equal(await page.evaluate(() => sessionStorage.getItem('keybrake.admin_token')), d.adminToken);
      assert.equal(await page.inputValue('#token'), '', 'the field is cleared');

      const key = await d.issueKey({
        label: `${prefix}run-1`,
        vendor: 'stripe',
        daily_usd_cap: 100,
        allowed_endpoints: ['POST /v1/payment_intents'],
      });
      const row = `tr[data-key-id="${key.id}"]`;
      await page.click('#refresh-all');
      await page.waitForSelector(row);
      assert.equal(await page.textContent(`${row} td.label`), `${prefix}run-1`);
      assert.equal(await page.textContent(`${row} td.status`), 'active');
      assert.equal(await page.textContent(`${row} .spend`), '0.00 / 100.00');

      // a proxied call that spends $10
      const paid = await pay(key.token);
      assert.equal(paid.status, 200, paid.text);
      await refreshUntil(
        page,
        (sel) => document.querySelector(sel + ' .spend')?.textContent === '10.00 / 100.00',
        row,
        'spend shown',
      );
      assert.equal(await page.textContent(`${row} td.requests`), '1');
      assert.equal(await page.evaluate((sel) => document.querySelector(sel + ' meter').value, row), 10);
      // the chart: one bar holds the $10
      await page.waitForFunction(() =>
        [...document.querySelectorAll('#spend-svg rect.bar')].some((r) => r.getAttribute('data-usd') === '10'),
      );
      const bars = await page.$$eval('#spend-svg rect.bar', (rs) => rs.map((r) => Number(r.getAttribute('data-usd'))));
      assert.equal(bars.reduce((a, b) => a + b, 0), 10);
      assert.equal(bars.filter((v) => v > 0).length, 1);

      // revoke with the row's button
      await page.click(`${row} button.revoke`);
      await page.waitForFunction((sel) => document.querySelector(sel + ' td.status')?.textContent === 'revoked', row);
      assert.ok(await page.isDisabled(`${row} button.revoke`));
      assert.equal((await d.admin.get(`/v1/keys/${key.id}`)).json.status, 'revoked');

      // the key's next call is refused, and the audit tail shows it
      assertError(await pay(key.token), 401, 'key_revoked');
      await page.fill('#audit-key', key.id);
      await page.selectOption('#audit-decision', 'refused');
      await waitFor(
        async () => {
          await page.click('#audit-filter button[type=submit]');
          const codes = await page.$$eval('#audit-table tbody td.code', (tds) => tds.map((t) => t.textContent));
          return codes.includes('key_revoked');
        },
        { timeoutMs: 15_000, what: 'key_revoked in the audit tail' },
      );
      const auditRows = await page.$$eval('#audit-table tbody tr', (trs) =>
        trs.map((tr) => [...tr.cells].map((c) => c.textContent)),
      );
      assert.ok(auditRows.length >= 1);
      for (const r of auditRows) {
        assert.equal(r[1], 'refused');
        assert.equal(r[4], key.id);
      }
      // refusals by code
      await refreshUntil(
        page,
        () => document.querySelector('#refusals-table tr[data-code="key_revoked"]') !== null,
        undefined,
        'key_revoked in refusals by code',
      );
      assert.equal(await page.textContent('#refusals-table tr[data-code="key_revoked"] td.num'), '1');

      // status filter: revoked shows it, active does not
      await page.fill('#keys-prefix', prefix);
      await page.selectOption('#keys-status', 'active');
      await page.click('#keys-filter button[type=submit]');
      await page.waitForSelector(row, { state: 'detached' });
      assert.ok(await page.isVisible('#keys-empty'));
      await page.selectOption('#keys-status', 'revoked');
      await page.click('#keys-filter button[type=submit]');
      await page.waitForSelector(row);

      // the token went only in Authorization headers: no URL, no cookie
      const enc = encodeURIComponent(d.adminToken);
      for (const u of rec.urls) {
        assert.ok(!u.includes(d.adminToken) && !u.includes(enc), `token in a URL: ${u}`);
      }
      const apiCalls = rec.requests.filter((r) => new URL(r.url()).pathname.startsWith('/v1/'));
      assert.ok(apiCalls.length > 5, 'the page called the API');
      for (const r of apiCalls) {
        assert.equal(r.headers().authorization, `Bearer ${d.adminToken}`, r.url());
        assert.equal(r.headers().cookie, undefined, r.url());
      }
      assert.deepEqual(await context.cookies(), []);
      assert.deepEqual(rec.errors, [], 'console errors');
      assert.deepEqual(rec.dialogs, []);

      // sign out forgets the token
      await page.click('#logout');
      await page.waitForSelector('#login', { state: 'visible' });
      assert.equal(await page.evaluate(() => sessionStorage.getItem('keybrake.admin_token')), null);
    } finally {
      await context.close();
    }
  });

  it('kill switch by label prefix: asks first, cancel changes nothing, confirm revokes them all', async () => {
    const { context, page, rec } = await recordedPage(browser);
    const prefix = uniquePrefix('team');
    try {
      const mine = [];
      for (let i = 0; i < 3; i++) mine.push(await d.issueKey({ label: `${prefix}agent-${i}` }));
      const other = await d.issueKey({ label: uniquePrefix('other') });
      await page.goto(`${d.adminUrl}/ui/`);
      await signIn(page, d.adminToken);
      await page.waitForSelector('#dash', { state: 'visible' });

      await page.fill('#kill-prefix', prefix);
      await page.click('#kill-form button[type=submit]');
      await page.waitForSelector('#kill-confirm', { state: 'visible' });
      assert.match(await page.textContent('#kill-question'), /3 active key\(s\) match now/);
      assert.ok((await page.textContent('#kill-question')).includes(prefix));
      await page.click('#kill-no');
      await page.waitForSelector('#kill-confirm', { state: 'hidden' });
      for (const k of mine) assert.equal((await d.admin.get(`/v1/keys/${k.id}`)).json.status, 'active');

      await page.click('#kill-form button[type=submit]');
      await page.waitForSelector('#kill-confirm', { state: 'visible' });
      await page.click('#kill-yes');
      await page.waitForFunction(() => /Revoked 3 key/.test(document.getElementById('kill-result').textContent));
      for (const k of mine) assert.equal((await d.admin.get(`/v1/keys/${k.id}`)).json.status, 'revoked');
      assert.equal((await d.admin.get(`/v1/keys/${other.id}`)).json.status, 'active');
      // the table shows them revoked
      await page.waitForFunction(
        (id) => document.querySelector(`tr[data-key-id="${id}"] td.status`)?.textContent === 'revoked',
        mine[0].id,
      );
      const kill = rec.requests.find((r) => r.method() === 'POST' && r.url().endsWith('/v1/keys/revoke'));
      assert.ok(kill, 'the kill switch POSTed the revoke-prefix endpoint');
      assert.deepEqual(JSON.parse(kill.postData()), { label_prefix: prefix });
      assert.deepEqual(rec.errors, [], 'console errors');
    } finally {
      await context.close();
    }
  });

  it('renders data as text: a label full of markup stays a label', async () => {
    const { context, page, rec } = await recordedPage(browser);
    const label = `<img src=x onerror="alert(1)"><script>alert(2)</script>${uniquePrefix('x')}`;
    try {
      const key = await d.issueKey({ label });
      await page.goto(`${d.adminUrl}/ui/`);
      await signIn(page, d.adminToken);
      const row = `tr[data-key-id="${key.id}"]`;
      await page.waitForSelector(row);
      assert.equal(await page.textContent(`${row} td.label`), label);
      assert.equal(await page.$$eval('#keys-table img, #keys-table script, #audit-table img', (e) => e.length), 0);
      await page.waitForFunction((l) => [...document.querySelectorAll('#audit-table td')].some((t) => t.textContent === l), label);
      assert.deepEqual(rec.dialogs, [], 'no script ran');
      assert.deepEqual(rec.errors, [], 'console errors');
    } finally {
      await context.close();
    }
  });

  it('filters pass a label prefix byte for byte: spaces, plus signs, slashes, non-ASCII', async () => {
    const { context, page, rec } = await recordedPage(browser);
    const prefix = `${uniquePrefix('odd')}a+b c/é&x=1#`;
    try {
      const mine = await d.issueKey({ label: `${prefix}run` });
      const near = await d.issueKey({ label: `${prefix.replace('a+b c', 'a b c')}run` });
      await page.goto(`${d.adminUrl}/ui/`);
      await signIn(page, d.adminToken);
      await page.waitForSelector('#dash', { state: 'visible' });
      await page.fill('#keys-prefix', prefix);
      await page.click('#keys-filter button[type=submit]');
      await page.waitForFunction(
        (id) => {
          const rows = [...document.querySelectorAll('#keys-table tbody tr')];
          return rows.length === 1 && rows[0].getAttribute('data-key-id') === id;
        },
        mine.id,
      );
      assert.equal(await page.$(`tr[data-key-id="${near.id}"]`), null);
      await page.fill('#audit-prefix', prefix);
      await page.click('#audit-filter button[type=submit]');
      await page.waitForFunction(
        (id) => {
          const rows = [...document.querySelectorAll('#audit-table tbody tr')];
          return rows.length === 1 && rows[0].cells[4].textContent === id;
        },
        mine.id,
      );
      assert.deepEqual(rec.errors, [], 'console errors');
    } finally {
      await context.close();
    }
  });

  // A tenant, and a key of it issued by root (docs/tenants.md).
  async function tenantWithKey(name, label) {
    const t = await d.admin.post('/v1/tenants', { name });
    assert.equal(t.status, 201, t.text);
    const k = await d.admin.post('/v1/keys', {
      label, vendor: 'stripe', allowed_endpoints: ['/v1/*'], daily_usd_cap: 5, expires_in: '1h', tenant: t.json.id,
    });
    assert.equal(k.status, 201, k.text);
    return { tenant: t.json, key: k.json };
  }

  // Every API call the page made answered 2xx: no view asked a route its token may not see.
  async function assertNoFailedCalls(rec) {
    for (const r of rec.requests.filter((x) => new URL(x.url()).pathname.startsWith('/v1/'))) {
      const res = await r.response();
      assert.ok(res && res.status() < 400, `${r.method()} ${r.url()}: ${res && res.status()}`);
    }
  }

  it('root sees the tenants with their keys and filters the keys by tenant', async () => {
    const { context, page, rec } = await recordedPage(browser);
    const prefix = uniquePrefix('uit');
    try {
      const a = await tenantWithKey(`${prefix}acme`, `${prefix}a-1`);
      const b = await tenantWithKey(`${prefix}globex`, `${prefix}b-1`);
      const rootKey = await d.issueKey({ label: `${prefix}r-1` });
      await page.goto(`${d.adminUrl}/ui/`);
      await signIn(page, d.adminToken);
      await page.waitForSelector('#tenants-card', { state: 'visible' });
      assert.equal(await page.textContent('#who'), 'signed in: root');
      const ta = `#tenants-table tr[data-tenant-id="${a.tenant.id}"]`;
      await page.waitForSelector(ta);
      assert.equal(await page.textContent(`${ta} td.name`), `${prefix}acme`);
      assert.equal(await page.textContent(`${ta} td.keys`), '1');
      // the keys table names each key's tenant
      await page.fill('#keys-prefix', prefix);
      await page.click('#keys-filter button[type=submit]');
      await page.waitForFunction(() => document.querySelectorAll('#keys-table tbody tr').length === 3);
      assert.equal(await page.textContent(`tr[data-key-id="${a.key.id}"] td.tenant`), `${prefix}acme`);
      assert.equal(await page.textContent(`tr[data-key-id="${rootKey.id}"] td.tenant`), 'root');
      // the tenant filter: ?tenant= on GET /v1/keys
      assert.ok(await page.isVisible('#keys-tenant'));
      await page.selectOption('#keys-tenant', a.tenant.id);
      await page.click('#keys-filter button[type=submit]');
      await page.waitForFunction(
        (id) => {
          const rows = [...document.querySelectorAll('#keys-table tbody tr')];
          return rows.length === 1 && rows[0].getAttribute('data-key-id') === id;
        },
        a.key.id,
      );
      const filtered = rec.requests.filter((r) => {
        const u = new URL(r.url());
        return u.pathname === '/v1/keys' && u.searchParams.get('tenant') === a.tenant.id &&
          u.searchParams.get('label_prefix') === prefix;
      });
      assert.ok(filtered.length >= 1, 'the filter went to the API as ?tenant=');
      // the tenant row's button shows that tenant's keys
      await page.click(`#tenants-table tr[data-tenant-id="${b.tenant.id}"] button.show-keys`);
      await page.waitForFunction(
        (id) => {
          const rows = [...document.querySelectorAll('#keys-table tbody tr')];
          return rows.length === 1 && rows[0].getAttribute('data-key-id') === id;
        },
        b.key.id,
      );
      assert.equal(await page.inputValue('#keys-tenant'), b.tenant.id);
      await assertNoFailedCalls(rec);
      assert.deepEqual(rec.errors, [], 'console errors');
    } finally {
      await context.close();
    }
  });

  it("a tenant's token sees only its tenant's keys; root's views are hidden, not errors", async () => {
    const { context, page, rec } = await recordedPage(browser);
    const prefix = uniquePrefix('uis');
    try {
      const a = await tenantWithKey(`${prefix}acme`, `${prefix}a-1`);
      const b = await tenantWithKey(`${prefix}globex`, `${prefix}b-1`);
      const rootKey = await d.issueKey({ label: `${prefix}r-1` });
      const tok = await d.admin.post('/v1/admin-tokens', { label: `${prefix}ops`, tenant: a.tenant.id });
      assert.equal(tok.status, 201, tok.text);
      const scoped = tok.json.token;
      // a second key of the tenant, issued with its own token
      const a2 = await d.admin.post('/v1/keys', {
        label: `${prefix}a-2`, vendor: 'stripe', allowed_endpoints: ['/v1/*'], daily_usd_cap: 5, expires_in: '1h',
      }, { token: scoped });
      assert.equal(a2.status, 201, a2.text);
      assert.equal(a2.json.tenant, a.tenant.id);

      await page.goto(`${d.adminUrl}/ui/`);
      await signIn(page, scoped);
      await page.waitForSelector('#dash', { state: 'visible' });
      await page.waitForFunction(() => /^signed in: tenant /.test(document.getElementById('who').textContent));
      assert.equal(await page.textContent('#who'), `signed in: tenant ${prefix}acme`);
      await page.waitForFunction(() => document.querySelectorAll('#keys-table tbody tr').length === 2);
      const ids = await page.$$eval('#keys-table tbody tr', (trs) => trs.map((t) => t.getAttribute('data-key-id')));
      assert.deepEqual(ids.sort(), [a.key.id, a2.json.id].sort());
      for (const t of await page.$$eval('#keys-table td.tenant', (tds) => tds.map((x) => x.textContent))) {
        assert.equal(t, `${prefix}acme`);
      }
      assert.equal(await page.$(`tr[data-key-id="${b.key.id}"]`), null);
      assert.equal(await page.$(`tr[data-key-id="${rootKey.id}"]`), null);
      // root's views are hidden
      assert.ok(await page.isHidden('#tenants-card'));
      assert.ok(await page.isHidden('#keys-tenant-wrap'));
      // the audit tail: the tenant's records only (its key's issuance among them)
      await page.waitForFunction(() => document.querySelectorAll('#audit-table tbody tr').length > 0);
      const keyCells = await page.$$eval('#audit-table tbody tr', (trs) => trs.map((tr) => tr.cells[4].textContent));
      for (const k of keyCells) assert.ok(['', a.key.id, a2.json.id].includes(k), `another tenant's record: ${k}`);
      // the kill switch reaches the tenant's keys only
      await page.fill('#kill-prefix', prefix);
      await page.click('#kill-form button[type=submit]');
      await page.waitForSelector('#kill-confirm', { state: 'visible' });
      assert.match(await page.textContent('#kill-question'), /2 active key\(s\) match now/);
      await page.click('#kill-yes');
      await page.waitForFunction(() => /Revoked 2 key/.test(document.getElementById('kill-result').textContent));
      assert.equal((await d.admin.get(`/v1/keys/${b.key.id}`)).json.status, 'active');
      assert.equal((await d.admin.get(`/v1/keys/${rootKey.id}`)).json.status, 'active');
      // a refresh while signed in as the tenant stays clean
      await page.click('#refresh-all');
      await page.waitForFunction(
        () => [...document.querySelectorAll('#keys-table td.status')].every((t) => t.textContent === 'revoked'),
      );
      assert.equal(await page.textContent('#dash-error'), '');
      for (const r of rec.requests) {
        const p = new URL(r.url()).pathname;
        assert.ok(!['/metrics', '/v1/usage', '/v1/alerts'].includes(p), `asked ${p}`);
        if (p.startsWith('/v1/')) assert.equal(r.headers().authorization, `Bearer ${scoped}`, r.url());
      }
      await assertNoFailedCalls(rec);
      assert.deepEqual(rec.errors, [], 'console errors');
      assert.deepEqual(rec.dialogs, []);
    } finally {
      await context.close();
    }
  });

  it('a wrong token is refused at sign-in and nothing is shown', async () => {
    const { context, page } = await recordedPage(browser);
    try {
      await page.goto(`${d.adminUrl}/ui/`);
      await signIn(page, 'kba_wrong_' + 'x'.repeat(24));
      await page.waitForFunction(() => /Sign-in failed/.test(document.getElementById('login-error').textContent));
      assert.ok(await page.isHidden('#dash'));
      assert.equal(await page.evaluate(() => sessionStorage.getItem('keybrake.admin_token')), null);
    } finally {
      await context.close();
    }
  });
});
