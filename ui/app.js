// Keybrake dashboard: vanilla JS, no dependencies, served from the binary.
//
// Every number comes from the authenticated admin API of this origin. The
// admin token the operator types is kept in sessionStorage (this tab only)
// and sent as `Authorization: Bearer`: never in a URL, never in a cookie.
// Everything the API returns is rendered with textContent (never innerHTML):
// labels, paths and codes are data an agent or a caller may have chosen.
'use strict';

(function () {
  const TOKEN_KEY = 'keybrake.admin_token';
  const PAGE = 50; // keys and audit records per page
  const STATS_PAGES = 5; // audit pages of 200 read for the chart and refusals
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const TENANT_COUNT_MAX = 200; // active keys counted per tenant (one page); more shows "200+"
  // scope: undefined until known, null for a root token, the tenant id for a scoped one;
  // tenants: id -> name of the tenants the token sees
  const state = {
    keysCursor: null,
    auditCursor: null,
    timer: null,
    killPrefix: null,
    scope: undefined,
    tenants: new Map(),
    created: new Map(), // tenant id -> created_at
  };

  // ---- DOM helpers: text only ------------------------------------------------------------

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('data-')) e.setAttribute(k, v);
        else e[k] = v;
      }
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function usd(x) {
    if (x === null || x === undefined) return '–';
    const n = Number(x);
    if (n !== 0 && Math.abs(n) < 0.01) return n.toFixed(6);
    return n.toFixed(2);
  }

  function when(ts) {
    return ts ? String(ts).replace('T', ' ').replace(/(\.\d+)?Z$/, '') : '–';
  }

  function showError(where, msg) {
    $(where).textContent = msg || '';
  }

  // ---- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.message ? `${body.code}: ${body.message}` : `HTTP ${status}`);
      this.status = status;
      this.code = body && body.code;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  // path: an absolute admin API path; params: query filters (never the token).
  async function api(method, path, params, body) {
    const t = token();
    if (!t) throw new ApiError(401, { code: 'unauthorized', message: 'not signed in' });
    let url = path;
    if (params) {
      // %20, never '+', for a space: a label prefix is matched byte for byte
      const q = Object.entries(params)
        .filter(([, v]) => v !== '' && v !== null && v !== undefined)
        .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
      if (q.length) url += '?' + q.join('&');
    }
    const init = {
      method,
      headers: { Authorization: 'Bearer ' + t },
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    let json = null;
    const text = await res.text();
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
    }
    if (res.status === 401 && json && json.code === 'unauthorized') {
      signOut('The admin token was refused; sign in again.');
    }
    if (!res.ok) throw new ApiError(res.status, json);
    return json;
  }

  // Runs fn over items, at most `n` at a time.
  async function pool(items, n, fn) {
    const out = new Array(items.length);
    let i = 0;
    const worker = async () => {
      while (i < items.length) {
        const k = i++;
        try {
          out[k] = await fn(items[k]);
        } catch (e) {
          out[k] = e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
    return out;
  }

  // ---- keys ------------------------------------------------------------------------------

  function keyFilters() {
    return {
      status: $('keys-status').value,
      label_prefix: $('keys-prefix').value,
      vendor: $('keys-vendor').value.trim(),
      tenant: state.scope === null ? $('keys-tenant').value : '', // a scoped token sees its own alone
    };
  }

  function tenantName(id) {
    if (!id) return 'root';
    return state.tenants.get(id) || id;
  }

  function spendCell(k) {
    const td = el('td', { class: 'num' });
    if (!k.usage) {
      td.textContent = `– / ${usd(k.daily_usd_cap)}`;
      return td;
    }
    const m = el('meter', { min: 0, max: Number(k.daily_usd_cap) || 1, value: Number(k.usage.spent_usd) });
    m.title = `${usd(k.usage.spent_usd)} of ${usd(k.daily_usd_cap)} USD on ${k.usage.day}`;
    td.append(m, el('span', { class: 'spend', text: `${usd(k.usage.spent_usd)} / ${usd(k.daily_usd_cap)}` }));
    return td;
  }

  function keyRow(k) {
    const revoke = el('button', { type: 'button', class: 'revoke', text: 'Revoke' });
    revoke.disabled = k.status !== 'active';
    revoke.addEventListener('click', async () => {
      revoke.disabled = true;
      try {
        await api('DELETE', '/v1/keys/' + encodeURIComponent(k.id));
        showError('dash-error', '');
      } catch (e) {
        showError('dash-error', `Revoking ${k.id} failed: ${e.message}`);
      }
      await Promise.all([loadKeys(), loadAudit()]);
    });
    const tr = el(
      'tr',
      { 'data-key-id': k.id },
      el('td', { class: 'label', text: k.label }),
      el('td', { class: 'mono', text: k.id }),
      el('td', { text: k.vendor }),
      el('td', { class: 'tenant', text: tenantName(k.tenant), title: k.tenant || 'no tenant: root\'s own' }),
      el('td', { class: 'status status-' + k.status, text: k.status }),
      spendCell(k),
      el('td', { class: 'num requests', text: k.usage ? String(k.usage.requests) : '–' }),
      el('td', { text: when(k.expires_at) }),
      el('td', {}, revoke),
    );
    return tr;
  }

  async function loadKeys(more) {
    const body = $('keys-table').tBodies[0];
    const params = { ...keyFilters(), limit: PAGE };
    if (more && state.keysCursor) params.cursor = state.keysCursor;
    let page;
    try {
      page = await api('GET', '/v1/keys', params);
    } catch (e) {
      showError('dash-error', `Loading keys failed: ${e.message}`);
      return;
    }
    // the list has no usage: each shown key's today's usage, a few at a time
    const full = await pool(page.data, 4, (k) => api('GET', '/v1/keys/' + encodeURIComponent(k.id)));
    const rows = page.data.map((k, i) => keyRow(full[i] instanceof Error ? k : full[i]));
    if (!more) body.replaceChildren(...rows);
    else body.append(...rows);
    state.keysCursor = page.next_cursor;
    $('keys-more').hidden = !page.next_cursor;
    $('keys-empty').hidden = body.rows.length > 0;
  }

  // ---- who is signed in, and tenants -------------------------------------------------------

  // Root or one tenant's token? A token's list of admin tokens holds a root token (tenant null)
  // only for root: a scoped token sees its own tenant's tokens alone. Both may read it, so the
  // page asks no route that answers 404 to a scoped token (/metrics, /v1/usage, /v1/alerts).
  async function loadWho() {
    const [toks, tens] = await Promise.all([api('GET', '/v1/admin-tokens'), api('GET', '/v1/tenants')]);
    const root = toks.data.some((t) => t.tenant === null);
    const own = toks.data.find((t) => t.tenant) || tens.data[0] || {};
    state.scope = root ? null : own.tenant || own.id || '?'; // never null: that is root
    state.tenants = new Map(tens.data.map((t) => [t.id, t.name]));
    state.created = new Map(tens.data.map((t) => [t.id, t.created_at]));
    $('who').textContent = root ? 'signed in: root' : `signed in: tenant ${tenantName(state.scope)}`;
    $('tenants-card').hidden = !root;
    $('keys-tenant-wrap').hidden = !root;
    if (!root) return;
    const sel = $('keys-tenant');
    const keep = sel.value;
    sel.replaceChildren(
      el('option', { value: '', text: 'any' }),
      ...tens.data.map((t) => el('option', { value: t.id, text: `${t.name} (${t.id})` })),
    );
    sel.value = state.tenants.has(keep) ? keep : '';
  }

  // Root's tenants with their active keys, each counted from one page of GET /v1/keys.
  async function loadTenants() {
    if (state.scope !== null) return;
    const ids = [...state.tenants.keys()];
    const counts = await pool(ids, 4, (id) =>
      api('GET', '/v1/keys', { tenant: id, status: 'active', limit: TENANT_COUNT_MAX }),
    );
    const rows = ids.map((id, i) => {
      const c = counts[i];
      const n = c instanceof Error ? '?' : c.next_cursor ? `${c.data.length}+` : String(c.data.length);
      const show = el('button', { type: 'button', class: 'show-keys', text: 'Show keys' });
      show.addEventListener('click', () => {
        $('keys-tenant').value = id;
        loadKeys();
        $('keys-card').scrollIntoView();
      });
      return el(
        'tr',
        { 'data-tenant-id': id },
        el('td', { class: 'name', text: state.tenants.get(id) }),
        el('td', { class: 'mono', text: id }),
        el('td', { text: when(state.created.get(id)) }),
        el('td', { class: 'num keys', text: n }),
        el('td', {}, show),
      );
    });
    $('tenants-table').tBodies[0].replaceChildren(...rows);
    $('tenants-empty').hidden = rows.length > 0;
  }

  // ---- kill switch -----------------------------------------------------------------------

  async function askKill(ev) {
    ev.preventDefault();
    const prefix = $('kill-prefix').value;
    $('kill-result').textContent = '';
    if (!prefix) return;
    let n = '?';
    try {
      const p = await api('GET', '/v1/keys', { label_prefix: prefix, status: 'active', limit: 200 });
      n = p.next_cursor ? `more than ${p.data.length}` : String(p.data.length);
    } catch (e) {
      showError('dash-error', `Counting keys failed: ${e.message}`);
    }
    state.killPrefix = prefix;
    $('kill-question').textContent = `Revoke every key whose label starts with “${prefix}”? ${n} active key(s) match now.`;
    $('kill-confirm').hidden = false;
    $('kill-yes').focus();
  }

  async function doKill() {
    const prefix = state.killPrefix;
    $('kill-confirm').hidden = true;
    state.killPrefix = null;
    if (!prefix) return;
    try {
      const r = await api('POST', '/v1/keys/revoke', undefined, { label_prefix: prefix });
      $('kill-result').textContent = `Revoked ${r.revoked} key(s) whose label starts with “${prefix}”.`;
    } catch (e) {
      $('kill-result').textContent = `Kill switch failed: ${e.message}`;
    }
    await Promise.all([loadKeys(), loadAudit()]);
  }

  // ---- audit tail ------------------------------------------------------------------------

  function auditFilters() {
    return {
      key_id: $('audit-key').value.trim(),
      label_prefix: $('audit-prefix').value,
      vendor: $('audit-vendor').value.trim(),
      decision: $('audit-decision').value,
    };
  }

  function auditRow(r) {
    const what = r.kind === 'admin' ? r.action || 'admin' : `${r.method || ''} ${r.path || ''}`;
    const cost = r.settled_usd !== null && r.settled_usd !== undefined ? r.settled_usd : r.reserved_usd;
    return el(
      'tr',
      { 'data-seq': String(r.seq) },
      el('td', { text: when(r.ts) }),
      el('td', { class: 'decision decision-' + (r.decision || ''), text: r.decision || '–' }),
      el('td', { class: 'code mono', text: r.code || '' }),
      el('td', { class: 'path mono', text: what, title: what }),
      el('td', { class: 'mono', text: r.key_id || '' }),
      el('td', { text: r.label || '' }),
      el('td', { text: r.vendor || '' }),
      el('td', { class: 'num', text: r.status ? String(r.status) : '' }),
      el('td', { class: 'num', text: r.kind === 'admin' ? '' : usd(cost) }),
    );
  }

  async function loadAudit(more) {
    const body = $('audit-table').tBodies[0];
    const params = { ...auditFilters(), limit: PAGE };
    if (more && state.auditCursor) params.cursor = state.auditCursor;
    let page;
    try {
      page = await api('GET', '/v1/audit', params);
    } catch (e) {
      showError('dash-error', `Loading the audit log failed: ${e.message}`);
      return;
    }
    const rows = page.data.map(auditRow);
    if (!more) body.replaceChildren(...rows);
    else body.append(...rows);
    state.auditCursor = page.next_cursor;
    $('audit-more').hidden = !page.next_cursor;
    $('audit-empty').hidden = body.rows.length > 0;
  }

  // ---- spend chart and refusals (from the newest audit records) -----------------------------

  async function auditRecent(params) {
    const out = [];
    let cursor = null;
    for (let i = 0; i < STATS_PAGES; i++) {
      const p = await api('GET', '/v1/audit', { ...params, limit: 200, cursor });
      out.push(...p.data);
      if (!p.next_cursor) return { records: out, complete: true };
      cursor = p.next_cursor;
    }
    return { records: out, complete: false };
  }

  const STEPS = [
    [60e3, 'minute'],
    [300e3, '5 minutes'],
    [3600e3, 'hour'],
    [86400e3, 'day'],
  ];

  function drawSpend(records, complete) {
    const box = $('spend-chart');
    const pts = records
      .filter((r) => r.kind === 'proxy')
      .map((r) => ({ t: Date.parse(r.ts), v: Number(r.settled_usd ?? r.reserved_usd ?? 0) }))
      .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v));
    if (pts.length === 0) {
      box.replaceChildren(el('p', { class: 'muted', text: 'No proxied requests yet.' }));
      $('spend-caption').textContent = '';
      return;
    }
    const t1 = Math.max(...pts.map((p) => p.t));
    const t0 = Math.min(...pts.map((p) => p.t));
    let [step, name] = STEPS[STEPS.length - 1];
    for (const [s, n] of STEPS) {
      if ((t1 - t0) / s < 48) {
        [step, name] = [s, n];
        break;
      }
    }
    const last = Math.floor(t1 / step);
    const nb = Math.max(12, Math.min(48, last - Math.floor(t0 / step) + 1));
    const first = last - nb + 1;
    const sums = new Array(nb).fill(0);
    for (const p of pts) sums[Math.floor(p.t / step) - first] += p.v;
    const max = Math.max(...sums);
    const total = sums.reduce((a, b) => a + b, 0);
    const W = 600, H = 180, L = 48, B = 20, T = 10;
    const bw = (W - L) / nb;
    const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', id: 'spend-svg' });
    s.append(svg('title', {}, `USD spent per ${name}, total ${usd(total)}`));
    s.append(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W, y2: H - B }));
    s.append(svg('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, usd(max)));
    s.append(svg('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, '0'));
    sums.forEach((v, i) => {
      const h = max > 0 ? ((H - B - T) * v) / max : 0;
      const start = new Date((first + i) * step).toISOString().slice(0, 16).replace('T', ' ');
      const r = svg('rect', { class: 'bar', x: L + i * bw + 1, y: H - B - h, width: Math.max(1, bw - 2), height: h, 'data-usd': v });
      r.append(svg('title', {}, `${start} UTC: ${usd(v)} USD`));
      s.append(r);
    });
    const label = (i) => new Date((first + i) * step).toISOString().slice(step >= 86400e3 ? 5 : 11, step >= 86400e3 ? 10 : 16);
    s.append(svg('text', { x: L, y: H - 4 }, label(0)));
    s.append(svg('text', { x: W, y: H - 4, 'text-anchor': 'end' }, label(nb - 1)));
    box.replaceChildren(s);
    $('spend-caption').textContent =
      `USD per ${name} (UTC), settled or else reserved, from the ${complete ? '' : 'newest '}${pts.length} proxied request(s); total ${usd(total)}.`;
  }

  function drawRefusals(records, complete) {
    const counts = new Map();
    for (const r of records) if (r.code) counts.set(r.code, (counts.get(r.code) || 0) + 1);
    const rows = [...counts.entries()]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .map(([code, n]) => el('tr', { 'data-code': code }, el('td', { class: 'mono', text: code }), el('td', { class: 'num', text: String(n) })));
    $('refusals-table').tBodies[0].replaceChildren(...rows);
    $('refusals-caption').textContent = rows.length
      ? `From the ${complete ? '' : 'newest '}${records.length} refused record(s) in the audit log.`
      : 'No refusals in the audit log.';
  }

  async function loadStats() {
    try {
      const [all, refused] = await Promise.all([
        auditRecent({ decision: 'allowed' }),
        auditRecent({ decision: 'refused' }),
      ]);
      drawSpend(all.records, all.complete);
      drawRefusals(refused.records, refused.complete);
    } catch (e) {
      showError('dash-error', `Loading statistics failed: ${e.message}`);
    }
  }

  // ---- budgets ---------------------------------------------------------------------------

  async function loadBudgets() {
    let page;
    try {
      page = await api('GET', '/v1/budgets', { limit: 200 });
    } catch (e) {
      if (e.status === 404) {
        $('budgets-card').hidden = true;
        return;
      }
      showError('dash-error', `Loading budgets failed: ${e.message}`);
      return;
    }
    const rows = page.data.map((b) => {
      const u = b.usage || {};
      return el(
        'tr',
        { 'data-budget': b.name },
        el('td', { text: b.name }),
        el('td', { text: b.window }),
        el('td', { text: b.parent || '' }),
        el('td', { class: 'num', text: String(b.keys) }),
        el('td', { class: 'num', text: `${usd(u.spent_usd)} / ${usd(b.usd_cap)}` }),
      );
    });
    $('budgets-table').tBodies[0].replaceChildren(...rows);
    $('budgets-empty').hidden = rows.length > 0;
  }

  // ---- session ---------------------------------------------------------------------------

  async function refreshAll() {
    showError('dash-error', '');
    try {
      await loadWho(); // first: the keys table names tenants, the tenant views are root's
    } catch (e) {
      showError('dash-error', `Loading the token's scope failed: ${e.message}`);
      return;
    }
    await Promise.all([loadKeys(), loadAudit(), loadStats(), loadBudgets(), loadTenants()]);
  }

  function showDash(on) {
    $('login').hidden = on;
    $('dash').hidden = !on;
    $('logout').hidden = !on;
    $('refresh-all').hidden = !on;
    $('auto-wrap').hidden = !on;
    if (!on) $('who').textContent = 'not signed in';
  }

  function signOut(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.scope = undefined;
    state.tenants = new Map();
    $('tenants-card').hidden = true;
    $('keys-tenant-wrap').hidden = true;
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
    $('auto').checked = false;
    showDash(false);
    showError('login-error', why || '');
  }

  async function signIn(ev) {
    ev.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await api('GET', '/v1/keys', { limit: 1 });
    } catch (e) {
      signOut(`Sign-in failed: ${e.message}`);
      return;
    }
    showError('login-error', '');
    showDash(true);
    await refreshAll();
  }

  function start() {
    $('login-form').addEventListener('submit', signIn);
    $('logout').addEventListener('click', () => signOut(''));
    $('refresh-all').addEventListener('click', refreshAll);
    $('auto').addEventListener('change', () => {
      if (state.timer) clearInterval(state.timer);
      state.timer = $('auto').checked ? setInterval(refreshAll, 10_000) : null;
    });
    $('keys-filter').addEventListener('submit', (ev) => {
      ev.preventDefault();
      loadKeys();
    });
    $('keys-more').addEventListener('click', () => loadKeys(true));
    $('audit-filter').addEventListener('submit', (ev) => {
      ev.preventDefault();
      loadAudit();
    });
    $('audit-more').addEventListener('click', () => loadAudit(true));
    $('kill-form').addEventListener('submit', askKill);
    $('kill-yes').addEventListener('click', doKill);
    $('kill-no').addEventListener('click', () => {
      $('kill-confirm').hidden = true;
      state.killPrefix = null;
    });
    if (token()) {
      showDash(true);
      refreshAll();
    } else {
      showDash(false);
    }
  }

  start();
})();
