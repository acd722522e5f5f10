'use strict';
// nestjs.js - KeybrakeInterceptor: a NestJS interceptor that issues a vault
// key per HTTP request in intercept(), puts it on request.keybrake (or
// request[opts.property]) for the handler, and revokes it in rxjs finalize()
// when the handler's observable completes, errors or is unsubscribed,
// exactly once. Use it as an instance:
//   app.useGlobalInterceptors(new KeybrakeInterceptor(kb, {...}))
//   @UseInterceptors(new KeybrakeInterceptor(kb, {...}))
// rxjs is the application's (a peer dependency), loaded on first use, or
// given as opts.finalize.

const { keyOptions, revokerOnce } = require('./run');

class KeybrakeInterceptor {
  constructor(client, opts) {
    const { finalize, ...rest } = opts || {};
    this.client = client;
    this.optionsFor = keyOptions(rest, 'KeybrakeInterceptor');
    this.property = rest.property || 'keybrake';
    this.onRevokeError = rest.onRevokeError;
    this.finalize = finalize || null;
  }

  async intercept(context, next) {
    if (typeof context.getType === 'function' && context.getType() !== 'http') return next.handle();
    const finalize = this.finalize || (this.finalize = require('rxjs').finalize);
    const req = context.switchToHttp().getRequest();
    const key = await this.client.createKey(this.optionsFor(req));
    const revoke = revokerOnce(this.client, key, req, this.onRevokeError);
    req[this.property] = key;
    try {
      return next.handle().pipe(finalize(revoke));
    } catch (e) {
      revoke();
      throw e;
    }
  }
}

function keybrakeInterceptor(client, opts) {
  return new KeybrakeInterceptor(client, opts);
}

module.exports = { KeybrakeInterceptor, keybrakeInterceptor };
