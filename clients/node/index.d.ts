// Type declarations for @keybrake/client (hand-written; the code is index.js).
// Self-contained: no types from express, @nestjs/common or rxjs are needed.

export type Vendor = 'stripe' | 'openai' | 'anthropic' | 'twilio' | (string & {});

/** A budget named at issuance, or one created by it (docs/budgets.md). */
export interface BudgetSpec {
  name: string;
  usdCap: number;
  window: 'day' | 'month' | 'total';
  parent?: string;
}

export interface CreateKeyOptions {
  /** 1-256 printable bytes; label prefixes are what revokePrefix() and list filters match. */
  label: string;
  vendor: Vendor;
  /** 1-100 endpoint patterns, e.g. "POST /v1/chat/completions" (docs/policy.md). */
  allowedEndpoints: string[];
  /** USD per UTC day; at most 6 decimals. */
  dailyUsdCap: number;
  /** "30s", "5m", "2h" or seconds; at most the server's max_ttl. Default "1h". */
  expiresIn?: string | number;
  /** At most 4 KiB of JSON; passed through untouched. */
  metadata?: Record<string, unknown>;
  rateLimit?: { requests: number; per: 'second' | 'minute' };
  allowedAccounts?: string[];
  budgets?: Array<string | BudgetSpec>;
  /** openai and anthropic keys: the exact model ids the key may name. */
  allowedModels?: string[];
  /** stripe keys: the largest payment amount in USD. */
  maxAmountPerRequest?: number;
}

export interface KeyUsage {
  day: string;
  spentUsd: number;
  reservedUsd: number;
  remainingUsd: number;
  requests: number;
}

export interface VaultKey {
  id: string;
  label: string;
  vendor: Vendor;
  allowedEndpoints: string[];
  dailyUsdCap: number;
  createdAt: string;
  expiresAt: string;
  metadata: Record<string, unknown>;
  status: 'active' | 'revoked' | 'expired';
  revokedAt: string | null;
  allowedAccounts: string[] | null;
  allowedModels: string[] | null;
  maxAmountPerRequest: number | null;
  rateLimit: { requests: number; per: 'second' | 'minute' } | null;
  budgets?: string[];
  /** getKey() only: today's (UTC) usage. */
  usage?: KeyUsage;
}

/** What createKey() resolves with: the key and its token, shown this once. */
export interface IssuedKey extends VaultKey {
  token: string;
}

export interface ListKeysFilter {
  labelPrefix?: string;
  vendor?: Vendor;
  status?: 'active' | 'revoked' | 'expired';
  /** 1-200, default 50. */
  limit?: number;
  cursor?: string;
}

export interface KeyPage {
  data: VaultKey[];
  nextCursor: string | null;
}

export interface KeybrakeOptions {
  /** Admin API base URL; default KEYBRAKE_ADDR. */
  adminUrl?: string;
  /** Admin token; default KEYBRAKE_ADMIN_TOKEN. */
  adminToken?: string;
  /** Proxy base URL (what vendor SDKs are pointed at); default KEYBRAKE_PROXY_URL. */
  proxyUrl?: string;
  /** Per admin call; default 10000. */
  timeoutMs?: number;
  /** Where revocation failures go when nothing can throw them (default: console.error). */
  onRevokeError?: (err: unknown, key: IssuedKey) => void;
  /** A fetch implementation; default globalThis.fetch. */
  fetch?: typeof fetch;
}

export class Keybrake {
  constructor(opts?: KeybrakeOptions);
  readonly adminUrl: string;
  readonly proxyUrl: string | null;
  createKey(opts: CreateKeyOptions): Promise<IssuedKey>;
  /** Rejects with NotFoundError for an unknown id. */
  getKey(id: string): Promise<VaultKey & { usage: KeyUsage; budgets: string[] }>;
  listKeys(filter?: ListKeysFilter): Promise<KeyPage>;
  iterateKeys(filter?: ListKeysFilter): AsyncGenerator<VaultKey, void, undefined>;
  updateKey(id: string, opts: { dailyUsdCap?: number; expiresIn?: string | number }): Promise<VaultKey>;
  /** Idempotent; rejects with NotFoundError for an unknown id. */
  revokeKey(id: string): Promise<void>;
  /** revokeKey, tried again (at most `attempts` times) while the error is retryable. */
  revokeSurely(id: string, attempts?: number): Promise<void>;
  /** Revokes every key whose label starts with prefix; resolves with the count. */
  revokePrefix(prefix: string): Promise<number>;
  /** Issues a key, runs fn, revokes the key in finally (also when fn throws). */
  withKey<T>(opts: CreateKeyOptions, fn: (key: IssuedKey) => Promise<T> | T): Promise<T>;
  /** openai: `${proxyUrl}/openai/v1`; other vendors: `${proxyUrl}/${vendor}`. */
  vendorBaseUrl(vendor: Vendor): string;
  /** Host, port and protocol for stripe-node: new Stripe(key.token, kb.stripeOptions()). */
  stripeOptions(): { host: string; port: number; protocol: 'http' | 'https' | string };
}

export type KeybrakeCode =
  | 'cap_exhausted'
  | 'budget_exhausted'
  | 'rate_limited'
  | 'store_unavailable'
  | 'audit_unavailable'
  | 'shutting_down'
  | 'overloaded'
  | 'too_many_connections'
  | 'not_found'
  | 'invalid_request'
  | 'unauthorized'
  | 'invalid_token'
  | 'key_revoked'
  | 'key_expired'
  | 'connection_error'
  | (string & {});

export class KeybrakeError extends Error {
  /** Keybrake's stable code, e.g. "cap_exhausted"; "connection_error" when the admin API was not reached. */
  readonly code: KeybrakeCode;
  /** HTTP status; 0 when there was no answer. */
  readonly status: number;
  /** The request field a 400 names. */
  readonly field: string | null;
  /** budget_exhausted: the budget that is full. */
  readonly budget: string | null;
  /** Seconds, from Retry-After. */
  readonly retryAfter: number | null;
  readonly requestId: string | null;
  readonly body: unknown;
  /** True when the same call may pass later (see isRetryable). */
  readonly retryable: boolean;
}
/** cap_exhausted or budget_exhausted: final for the run, never retryable. */
export class SpendExhaustedError extends KeybrakeError {}
/** rate_limited: retryable after retryAfter seconds. */
export class RateLimitedError extends KeybrakeError {}
/** store_unavailable, audit_unavailable, shutting_down, overloaded, too_many_connections: retryable. */
export class UnavailableError extends KeybrakeError {}
export class NotFoundError extends KeybrakeError {}
export class InvalidRequestError extends KeybrakeError {}
/** unauthorized (admin token), invalid_token, key_revoked, key_expired. */
export class AuthError extends KeybrakeError {}
/** The admin API could not be reached; retryable. */
export class ConnectionError extends KeybrakeError {}

/** The Keybrake refusal inside err (a vendor SDK's error included), or null. */
export function keybrakeError(err: unknown): KeybrakeError | null;
export function errorCode(err: unknown): KeybrakeCode | null;
/** May the same call be made again? Works on vendor SDK errors too. */
export function isRetryable(err: unknown): boolean;
/** cap_exhausted or budget_exhausted. */
export function isSpendExhausted(err: unknown): boolean;
/** Seconds from the error's Retry-After, or null. */
export function retryAfter(err: unknown): number | null;

/** Options of the middleware and the interceptor: createKey's, each a value or a function of the request. */
export type RunOptions<Req> = {
  [K in keyof CreateKeyOptions]: CreateKeyOptions[K] | ((req: Req) => CreateKeyOptions[K]);
} & {
  label: (req: Req) => string;
  /** Where the key goes on the request; default "keybrake". */
  property?: string;
  onRevokeError?: (err: unknown, key: IssuedKey, req: Req) => void;
};

interface NodeRequestLike {
  [k: string]: any;
}
interface NodeResponseLike {
  once(event: 'finish' | 'close', fn: () => void): unknown;
}

/** Express/Connect middleware: a key per request on req.keybrake, revoked once when the response finishes or the connection closes. */
export function keybrakeRun<Req extends NodeRequestLike = NodeRequestLike>(
  client: Keybrake,
  opts: RunOptions<Req>,
): (req: Req, res: NodeResponseLike, next: (err?: unknown) => void) => void;

interface ExecutionContextLike {
  getType?(): string;
  switchToHttp(): { getRequest<T = any>(): T };
}
/** Nest's CallHandler; handle() returns an rxjs Observable (typed loosely: rxjs is optional). */
interface CallHandlerLike {
  handle(): any;
}

/** NestJS interceptor: a key per HTTP request on request.keybrake, revoked in rxjs finalize(). */
export class KeybrakeInterceptor<Req extends NodeRequestLike = NodeRequestLike> {
  constructor(client: Keybrake, opts: RunOptions<Req> & { finalize?: (fn: () => void) => any });
  /** Resolves with next.handle() piped through finalize(revoke): an rxjs Observable. */
  intercept(context: ExecutionContextLike, next: CallHandlerLike): Promise<any>;
}
export function keybrakeInterceptor<Req extends NodeRequestLike = NodeRequestLike>(
  client: Keybrake,
  opts: RunOptions<Req> & { finalize?: (fn: () => void) => any },
): KeybrakeInterceptor<Req>;

declare global {
  namespace Express {
    interface Request {
      keybrake?: IssuedKey;
    }
  }
}
