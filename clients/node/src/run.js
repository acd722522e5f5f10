'use strict';
// run.js - what the Express middleware and the NestJS interceptor share:
// turning their options into one createKey() call per request, and a
// revocation that happens exactly once however the request ends.

// Options of keybrakeRun() / KeybrakeInterceptor beside the createKey ones.
const OWN = new Set(['onRevokeError', 'property']);

// Checks the options once, at set-up; returns (req) => createKey options.
// Every createKey option may be a value or a function of the request;
// `label` must be one (a label per run is the point).
function keyOptions(opts, what) {
  if (!opts || typeof opts !== 'object') throw new TypeError(`${what}: options are required`);
  if (typeof opts.label !== 'function') {
    throw new TypeError(`${what}: label must be a function of the request`);
  }
  const spec = {};
  for (const [k, v] of Object.entries(opts)) if (!OWN.has(k)) spec[k] = v;
  return (req) => {
    const out = {};
    for (const [k, v] of Object.entries(spec)) out[k] = typeof v === 'function' ? v(req) : v;
    return out;
  };
}

// A function that revokes `key` the first time it is called and does
// nothing after; failures go to onRevokeError(err, key, req).
function revokerOnce(client, key, req, onRevokeError) {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    client.revokeSurely(key.id).catch((e) => {
      const report = onRevokeError || ((err, k) => client.onRevokeError(err, k));
      report(e, key, req);
    });
  };
}

module.exports = { keyOptions, revokerOnce };
