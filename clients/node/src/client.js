'use strict';
// client.js - the admin API client: issue, read, list, change and revoke
// vault keys, the scope helper withKey(), and the proxy URL a vendor SDK
// takes. Speaks the admin API of README.md with the global fetch (Node 20+),
// no dependency.
//
// Options are camelCase and map one to one onto the API's snake_case fields
// (dailyUsdCap -> daily_usd_cap); an option the kit does not know is a
// TypeError before anything is sent, as the API refuses unknown fields, so a
// typo never silently drops a limit. Answers come back camelCased the same
// way, except `metadata`, which is the caller's own and passes untouched.

const { ConnectionError, KeybrakeError, fromResponse } = require('./errors');

const CREATE_FIELDS = new Set([
  'label',
  'vendor',
  'allowedEndpoints',
  'dailyUsdCap',
  'expiresIn',
  'metadata',
  'rateLimit',
  'allowedAccounts',
  'budgets',
  'allowedModels',
  'maxAmountPerRequest',
]);
const UPDATE_FIELDS = new Set(['dailyUsdCap', 'expiresIn']);
const LIST_FIELDS = new Set(['labelPrefix', 'vendor', 'status', 'limit', 'cursor']);

const DEFAULT_TTL = '1h';
const DEFAULT_TIMEOUT_MS = 10_000;
const REVOKE_ATTEMPTS = 3;

const snake = (s) => s.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
const camel = (s) => s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());

// Deep key conversion; the value of `metadata` is user data and kept as is.
function convertKeys(v, fn) {
  if (Array.isArray(v)) return v.map((x) => convertKeys(x, fn));
  if (!v || typeof v !== 'object') return v;
  const out = {};
  for (const [k, x] of Object.entries(v)) {
    out[fn(k)] = k === 'metadata' ? x : convertKeys(x, fn);
  }
  return out;
}

function checkFields(opts, known, what) {
  if (!opts || typeof opts !== 'object' || Array.isArray(opts)) {
    throw new TypeError(`${what}: options must be an object`);
  }
  for (const k of Object.keys(opts)) {
    if (!known.has(k)) {
      throw new TypeError(`${what}: unknown option "${k}" (known: ${[...known].join(', ')})`);
    }
  }
}

function checkId(id, what) {
  if (typeof id !== 'string' || id.length === 0) {
    throw new TypeError(`${what}: a key id ("vk_...") is required`);
  }
}

function trimUrl(u, what) {
  if (typeof u !== 'string' || u.length === 0) return null;
  const s = /^[a-z][a-z0-9+.-]*:\/\//i.test(u) ? u : `http://${u}`;
  try {
    new URL(s);
  } catch {
    throw new TypeError(`${what} is not a URL: ${u}`);
  }
  return s.replace(/\/+$/, '');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Keybrake {
  // opts: { adminUrl, adminToken, proxyUrl, timeoutMs, onRevokeError, fetch }
  // adminUrl and adminToken default to KEYBRAKE_ADDR and KEYBRAKE_ADMIN_TOKEN
  // (as for the CLI), proxyUrl to KEYBRAKE_PROXY_URL.
  constructor(opts = {}) {
    const env = process.env;
    this.adminUrl = trimUrl(opts.adminUrl || env.KEYBRAKE_ADDR, 'adminUrl');
    this.proxyUrl = trimUrl(opts.proxyUrl || env.KEYBRAKE_PROXY_URL, 'proxyUrl');
    if (!this.adminUrl) throw new TypeError('Keybrake: adminUrl (or KEYBRAKE_ADDR) is required');
    const token = opts.adminToken || env.KEYBRAKE_ADMIN_TOKEN;
    if (typeof token !== 'string' || token.length === 0) {
      throw new TypeError('Keybrake: adminToken (or KEYBRAKE_ADMIN_TOKEN) is required');
    }
    // not enumerable: never printed by console.log(client) or JSON.stringify
    Object.defineProperty(this, '_token', { value: token, enumerable: false });
    this.timeoutMs = opts.timeoutMs || DEFAULT_TIMEOUT_MS;
    this._fetch = opts.fetch || globalThis.fetch;
    this.onRevokeError =
      opts.onRevokeError ||
      ((err, key) => {
        // the key's id only, never its token; its TTL still bounds it
        console.error(`keybrake: revoking ${key.id} failed (${err.code || err.message}); its TTL ends it`);
      });
  }

  // One admin call: the parsed JSON answer (null for 204), or a KeybrakeError.
  async _call(method, path, body) {
    const headers = { authorization: `Bearer ${this._token}`, accept: 'application/json' };
    let raw;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      raw = JSON.stringify(body);
    }
    let res;
    let text;
    try {
      res = await this._fetch(this.adminUrl + path, {
        method,
        headers,
        body: raw,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await res.text();
    } catch (e) {
      throw new ConnectionError(`Keybrake admin API at ${this.adminUrl} not reachable: ${e.message}`, {
        code: 'connection_error',
        cause: e,
      });
    }
    let json;
    try {
      json = text.length ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (res.status >= 200 && res.status < 300) return json === undefined ? null : json;
    throw fromResponse(res.status, res.headers, json);
  }

  // Issues a key; resolves with it, its one-time `token` included.
  async createKey(opts) {
    checkFields(opts, CREATE_FIELDS, 'createKey');
    const body = convertKeys(opts, snake);
    if (body.expires_in === undefined) body.expires_in = DEFAULT_TTL;
    return convertKeys(await this._call('POST', '/v1/keys', body), camel);
  }

  // One key with today's usage. NotFoundError for an unknown id.
  async getKey(id) {
    checkId(id, 'getKey');
    return convertKeys(await this._call('GET', `/v1/keys/${encodeURIComponent(id)}`), camel);
  }

  // One page: { data: [key...], nextCursor } (pass nextCursor back as cursor).
  async listKeys(filter = {}) {
    checkFields(filter, LIST_FIELDS, 'listKeys');
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v !== undefined && v !== null) q.set(snake(k), String(v));
    const s = q.toString();
    return convertKeys(await this._call('GET', `/v1/keys${s ? '?' + s : ''}`), camel);
  }

  // Every key matching `filter`, following the cursors.
  async *iterateKeys(filter = {}) {
    let cursor = filter.cursor;
    for (;;) {
      const page = await this.listKeys({ ...filter, cursor });
      yield* page.data;
      if (!page.nextCursor) return;
      cursor = page.nextCursor;
    }
  }

  // Changes a live key's cap and/or TTL; resolves with the key.
  async updateKey(id, opts) {
    checkId(id, 'updateKey');
    checkFields(opts, UPDATE_FIELDS, 'updateKey');
    const body = convertKeys(opts, snake);
    return convertKeys(await this._call('PATCH', `/v1/keys/${encodeURIComponent(id)}`, body), camel);
  }

  // Revokes a key (again is fine). NotFoundError for an unknown id.
  async revokeKey(id) {
    checkId(id, 'revokeKey');
    await this._call('DELETE', `/v1/keys/${encodeURIComponent(id)}`);
  }

  // Kill switch: revokes every key whose label starts with `prefix`;
  // resolves with how many were revoked.
  async revokePrefix(prefix) {
    if (typeof prefix !== 'string' || prefix.length === 0) {
      throw new TypeError('revokePrefix: a non-empty label prefix is required');
    }
    const r = await this._call('POST', '/v1/keys/revoke', { label_prefix: prefix });
    return r.revoked;
  }

  // revokeKey, tried again while the failure is one a wait cures
  // (connection refused, store or audit unavailable).
  async revokeSurely(id, attempts = REVOKE_ATTEMPTS) {
    for (let i = 1; ; i++) {
      try {
        await this.revokeKey(id);
        return;
      } catch (e) {
        if (i >= attempts || !(e instanceof KeybrakeError) || !e.retryable) throw e;
        await sleep(100 * 3 ** (i - 1));
      }
    }
  }

  // Issues a key, runs fn(key), and revokes the key when fn settles,
  // returned or thrown. fn's result (or its error) is withKey's. When fn
  // returned but the revocation failed, withKey rejects with that failure;
  // when fn threw, fn's error wins and the failure goes to onRevokeError.
  async withKey(opts, fn) {
    if (typeof fn !== 'function') throw new TypeError('withKey: a function is required');
    const key = await this.createKey(opts);
    let threw = false;
    try {
      return await fn(key);
    } catch (e) {
      threw = true;
      throw e;
    } finally {
      try {
        await this.revokeSurely(key.id);
      } catch (re) {
        if (!threw) throw re; // eslint-disable-line no-unsafe-finally
        this.onRevokeError(re, key);
      }
    }
  }

  // The base URL a vendor SDK takes to go through the proxy:
  //   openai    -> <proxyUrl>/openai/v1   (new OpenAI({ baseURL }))
  //   anthropic -> <proxyUrl>/anthropic   (new Anthropic({ baseURL }))
  //   any other -> <proxyUrl>/<vendor>    (Twilio: rewrite https://api.twilio.com to it)
  // stripe-node takes a host, port and protocol instead: stripeOptions().
  vendorBaseUrl(vendor) {
    if (!this.proxyUrl) throw new TypeError('vendorBaseUrl: the client has no proxyUrl');
    if (typeof vendor !== 'string' || !/^[a-z0-9_-]+$/.test(vendor)) {
      throw new TypeError(`vendorBaseUrl: not a vendor name: ${vendor}`);
    }
    return `${this.proxyUrl}/${vendor}${vendor === 'openai' ? '/v1' : ''}`;
  }

  // new Stripe(key.token, kb.stripeOptions()): stripe-node sends /v1/... with
  // no vendor prefix, which the proxy routes by the key's vendor.
  stripeOptions() {
    if (!this.proxyUrl) throw new TypeError('stripeOptions: the client has no proxyUrl');
    const u = new URL(this.proxyUrl);
    if (u.pathname !== '/' && u.pathname !== '') {
      throw new TypeError('stripeOptions: stripe-node cannot use a proxy URL with a path');
    }
    const protocol = u.protocol.replace(':', '');
    return {
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: Number(u.port || (protocol === 'https' ? 443 : 80)),
      protocol,
    };
  }
}

module.exports = { Keybrake };
