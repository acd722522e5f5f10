'use strict';
// @keybrake/client - issue a Keybrake vault key per agent run, hand it to
// the vendor SDK through the proxy, revoke it when the run ends. See
// README.md; the types are in index.d.ts.

const { Keybrake } = require('./src/client');
const errors = require('./src/errors');
const { keybrakeRun } = require('./src/express');
const { KeybrakeInterceptor, keybrakeInterceptor } = require('./src/nestjs');

module.exports = {
  Keybrake,
  keybrakeRun,
  KeybrakeInterceptor,
  keybrakeInterceptor,
  KeybrakeError: errors.KeybrakeError,
  SpendExhaustedError: errors.SpendExhaustedError,
  RateLimitedError: errors.RateLimitedError,
  UnavailableError: errors.UnavailableError,
  NotFoundError: errors.NotFoundError,
  InvalidRequestError: errors.InvalidRequestError,
  AuthError: errors.AuthError,
  ConnectionError: errors.ConnectionError,
  keybrakeError: errors.keybrakeError,
  errorCode: errors.errorCode,
  isRetryable: errors.isRetryable,
  isSpendExhausted: errors.isSpendExhausted,
  retryAfter: errors.retryAfter,
};
