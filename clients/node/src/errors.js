'use strict';
// errors.js - Keybrake's refusals as typed errors, and the one question a
// caller asks of any error, the kit's or a vendor SDK's: may I try again?
//
// Keybrake answers every refusal with JSON {code, message, ...} and a
// `Keybrake-Error: <code>` header (README, "Errors"). The admin client turns
// those into KeybrakeError subclasses. Through the proxy it is the vendor's
// own SDK that throws (openai's APIError, stripe's StripeError, anthropic's
// APIError); keybrakeError(err) recognises a Keybrake refusal inside such an
// error by that header or by the `error.type: "keybrake_error"` member the
// proxy adds, and isRetryable(err) decides from the code when there is one,
// from the vendor's own hints (x-should-retry, the status) when there is not.

// A spend limit is final for the run: the money the key may spend is gone
// (until its UTC day turns, or an operator raises the cap).
const SPEND_CODES = new Set(['cap_exhausted', 'budget_exhausted']);

// Refusals that a wait cures: nothing was forwarded, and the same request
// may pass later. rate_limited says when (Retry-After).
const UNAVAILABLE_CODES = new Set([
  'store_unavailable',
  'audit_unavailable',
  'shutting_down',
  'overloaded',
  'too_many_connections',
]);
const RETRYABLE_CODES = new Set([
  'rate_limited',
  'upstream_unreachable', // the vendor could not be reached: nothing was sent
  'connection_error', // the kit could not reach Keybrake's admin API
  ...UNAVAILABLE_CODES,
]);
// upstream_error and upstream_timeout are NOT retryable here: the request may
// have reached the vendor (Keybrake charged its reservation and audited the
// outcome as unknown). Retry those only when the call is idempotent, e.g. a
// Stripe write with an Idempotency-Key.

const AUTH_CODES = new Set(['unauthorized', 'invalid_token', 'key_revoked', 'key_expired']);

class KeybrakeError extends Error {
  // fields: { code, status, field, budget, retryAfter, requestId, body, cause }
  constructor(message, fields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = new.target.name;
    this.code = fields.code || 'unknown';
    this.status = fields.status === undefined ? 0 : fields.status;
    this.field = fields.field === undefined ? null : fields.field;
    this.budget = fields.budget === undefined ? null : fields.budget;
    this.retryAfter = fields.retryAfter === undefined ? null : fields.retryAfter;
    this.requestId = fields.requestId === undefined ? null : fields.requestId;
    this.body = fields.body === undefined ? null : fields.body;
  }

  get retryable() {
    return RETRYABLE_CODES.has(this.code);
  }
}

class SpendExhaustedError extends KeybrakeError {}
class RateLimitedError extends KeybrakeError {}
class UnavailableError extends KeybrakeError {}
class NotFoundError extends KeybrakeError {}
class InvalidRequestError extends KeybrakeError {}
class AuthError extends KeybrakeError {}
class ConnectionError extends KeybrakeError {}

function classFor(code, status) {
  if (SPEND_CODES.has(code)) return SpendExhaustedError;
  if (code === 'rate_limited') return RateLimitedError;
  if (UNAVAILABLE_CODES.has(code)) return UnavailableError;
  if (code === 'not_found') return NotFoundError;
  if (code === 'connection_error') return ConnectionError;
  if (AUTH_CODES.has(code)) return AuthError;
  if (status === 400) return InvalidRequestError;
  return KeybrakeError;
}

// A header from a fetch Headers, a plain object (any case) or a raw list.
function header(h, name) {
  if (!h) return undefined;
  if (typeof h.get === 'function') {
    const v = h.get(name);
    return v === null ? undefined : v;
  }
  const lower = name.toLowerCase();
  for (const k of Object.keys(h)) {
    if (k.toLowerCase() === lower) {
      const v = h[k];
      return Array.isArray(v) ? v[0] : v === undefined || v === null ? undefined : String(v);
    }
  }
  return undefined;
}

// Retry-After in seconds (delta-seconds or an HTTP date), or null.
function parseRetryAfter(v) {
  if (v === undefined || v === null || v === '') return null;
  const s = String(v).trim();
  if (/^\d+$/.test(s)) return Number(s);
  const t = Date.parse(s);
  if (Number.isNaN(t)) return null;
  return Math.max(0, Math.ceil((t - Date.now()) / 1000));
}

// Builds the typed error for a Keybrake answer: its status, headers and
// parsed JSON body (undefined when the body was not JSON).
function fromResponse(status, headers, body) {
  const b = body && typeof body === 'object' ? body : {};
  const code =
    (typeof b.code === 'string' && b.code) || header(headers, 'keybrake-error') || `http_${status}`;
  const message = typeof b.message === 'string' && b.message ? b.message : `Keybrake answered ${status}`;
  const Cls = classFor(code, status);
  return new Cls(message, {
    code,
    status,
    field: typeof b.field === 'string' ? b.field : undefined,
    budget: typeof b.budget === 'string' ? b.budget : undefined,
    retryAfter: parseRetryAfter(header(headers, 'retry-after')),
    requestId: header(headers, 'keybrake-request-id'),
    body: body === undefined ? null : body,
  });
}

// The pieces of an error thrown by a vendor SDK: openai and anthropic
// (status, headers: Headers, error: the body or its `error` member), stripe
// (statusCode, raw: {headers, code, type, ...}), or anything with
// status/statusCode and headers/response.headers.
function anatomy(err) {
  if (!err || typeof err !== 'object') return null;
  const status =
    typeof err.status === 'number'
      ? err.status
      : typeof err.statusCode === 'number'
        ? err.statusCode
        : err.raw && typeof err.raw.statusCode === 'number'
          ? err.raw.statusCode
          : err.response && typeof err.response.status === 'number'
            ? err.response.status
            : undefined;
  const headers =
    err.headers || (err.raw && err.raw.headers) || (err.response && err.response.headers) || null;
  // candidate bodies, most specific first
  const bodies = [err.error, err.raw, err.body, err.response && err.response.data].filter(
    (b) => b && typeof b === 'object',
  );
  return { status, headers, bodies };
}

// The Keybrake refusal carried by `err` as a KeybrakeError (the kit's own
// errors as they are), or null when `err` is not one: a vendor's own error,
// a network failure, a bug.
function keybrakeError(err) {
  if (err instanceof KeybrakeError) return err;
  const a = anatomy(err);
  if (!a) return null;
  let code = header(a.headers, 'keybrake-error');
  let body;
  for (const b of a.bodies) {
    // the proxy's body: {code, message, error: {type: "keybrake_error", code, message}}
    const inner = b.error && typeof b.error === 'object' ? b.error : null;
    if (b.type === 'keybrake_error' || (inner && inner.type === 'keybrake_error')) {
      body = inner && inner.type === 'keybrake_error' ? { ...inner, ...b } : b;
      code = code || body.code;
      break;
    }
    if (code && typeof b.code === 'string' && b.code === code) {
      body = b;
      break;
    }
  }
  if (!code && (err.type === 'keybrake_error' || err.rawType === 'keybrake_error')) {
    code = typeof err.code === 'string' ? err.code : undefined;
  }
  if (!code) return null;
  const b = { ...(body || {}), code };
  if (typeof b.message !== 'string' && typeof err.message === 'string') b.message = err.message;
  const e = fromResponse(a.status || 0, a.headers, b);
  e.cause = err;
  return e;
}

// The Keybrake code of `err` (a string such as "cap_exhausted"), or null.
function errorCode(err) {
  const k = keybrakeError(err);
  return k ? k.code : null;
}

// True for cap_exhausted and budget_exhausted: the run may not spend more.
function isSpendExhausted(err) {
  const k = keybrakeError(err);
  return !!k && SPEND_CODES.has(k.code);
}

// Seconds to wait before a retry, from the error's Retry-After, or null.
function retryAfter(err) {
  const k = keybrakeError(err);
  if (k) return k.retryAfter;
  const a = anatomy(err);
  return a ? parseRetryAfter(header(a.headers, 'retry-after')) : null;
}

// May the same call be made again (after retryAfter(err) seconds, if set)?
//   Keybrake refusals: by code (rate_limited, *_unavailable, shutting_down,
//   overloaded, too_many_connections, upstream_unreachable: yes;
//   cap_exhausted, budget_exhausted and every other refusal: no).
//   Other HTTP errors: the vendor's `x-should-retry` when it sends one, else
//   408, 429 and 5xx. Anything without an HTTP status: no (the outcome is
//   unknown; the kit's own ConnectionError is the exception).
function isRetryable(err) {
  const k = keybrakeError(err);
  if (k) return k.retryable;
  const a = anatomy(err);
  if (!a || a.status === undefined) return false;
  const hint = header(a.headers, 'x-should-retry');
  if (hint === 'true') return true;
  if (hint === 'false') return false;
  return a.status === 408 || a.status === 429 || a.status >= 500;
}

module.exports = {
  AuthError,
  ConnectionError,
  InvalidRequestError,
  KeybrakeError,
  NotFoundError,
  RateLimitedError,
  SpendExhaustedError,
  UnavailableError,
  errorCode,
  fromResponse,
  isRetryable,
  isSpendExhausted,
  keybrakeError,
  retryAfter,
};
