'use strict';
// @keybrake/client - issue a Keybrake vault key per agent run, hand it to
// the vendor SDK through the proxy, revoke it when the run ends. See
// README.md; the types are in index.d.ts.
//
// The export list is one object literal of plain names: that is the form
// Node's CommonJS lexer reads, so ES modules can `import { Keybrake }` too.

const { Keybrake } = require('./src/client');
const {
  AuthError,
  ConnectionError,
  InvalidRequestError,
  KeybrakeError,
  NotFoundError,
  RateLimitedError,
  SpendExhaustedError,
  UnavailableError,
  errorCode,
  isRetryable,
  isSpendExhausted,
  keybrakeError,
  retryAfter,
} = require('./src/errors');
const { keybrakeRun } = require('./src/express');
const { KeybrakeInterceptor, keybrakeInterceptor } = require('./src/nestjs');

module.exports = {
  Keybrake,
  keybrakeRun,
  KeybrakeInterceptor,
  keybrakeInterceptor,
  KeybrakeError,
  SpendExhaustedError,
  RateLimitedError,
  UnavailableError,
  NotFoundError,
  InvalidRequestError,
  AuthError,
  ConnectionError,
  keybrakeError,
  errorCode,
  isRetryable,
  isSpendExhausted,
  retryAfter,
};
