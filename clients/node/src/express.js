'use strict';
// express.js - keybrakeRun(): Express (or plain node:http / Connect)
// middleware that issues a vault key per request, puts it on
// req.keybrake (or req[opts.property]) and revokes it when the response has
// been sent or the connection closed, whichever comes first, exactly once.
// Needs nothing from Express itself.

const { keyOptions, revokerOnce } = require('./run');

function keybrakeRun(client, opts) {
  const optionsFor = keyOptions(opts, 'keybrakeRun');
  const property = opts.property || 'keybrake';
  return function keybrakeRunMiddleware(req, res, next) {
    // Watch the response from the start: a client that leaves while the
    // key is being issued must not leave the key live.
    let ended = false;
    let revoke = null;
    const onEnd = () => {
      ended = true;
      if (revoke) revoke();
    };
    res.once('finish', onEnd);
    res.once('close', onEnd);
    let spec;
    try {
      spec = optionsFor(req);
    } catch (e) {
      next(e);
      return;
    }
    client.createKey(spec).then(
      (key) => {
        revoke = revokerOnce(client, key, req, opts.onRevokeError);
        if (ended) {
          revoke();
          return;
        }
        req[property] = key;
        next();
      },
      (e) => next(e),
    );
  };
}

module.exports = { keybrakeRun };
