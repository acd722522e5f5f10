'use strict';
// twilio_endpoints.test.js - issue 13 for Twilio: every write endpoint has a
// cost class. Through the real binary and the mock Twilio (answers scripted
// here with setHandler/nextHandler, shaped like the API reference): a
// conference participant leg reserved and settled like a call, a number
// purchase charged one month, SendAsMms charged as one MMS, an unlisted
// write refused before anything reaches Twilio, a free update forwarded at
// $0, and twilio-node still working through the proxy.
//
// Prices are the embedded list prices (src/meter/pricing.json):
//   SMS +1 $0.0083/segment, MMS +1 $0.0220, voice +1 $0.0140/min,
//   conference participant $0.0018/min, recording $0.0025/min,
//   local number +1 $1.15/month, toll-free $2.15.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const twilio = require('twilio');

const { assertError, basic, recordContains, startDaemon, uniquePrefix } = require('./lib/harness');
const { startMockVendors } = require('./mock/vendor');

function reply(res, status, obj) {
  const body = Buffer.from(JSON.stringify(obj));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
}

describe('twilio: a cost class for every write endpoint', () => {
  let mocks;
  let d;
  let S;

  before(async () => {
    mocks = await startMockVendors();
    d = await startDaemon({ mocks });
    S = d.secrets;
  });

  after(async () => {
    try {
      if (d) await d.kill(); // only if the last test did not stop it
    } finally {
      if (mocks) await mocks.close();
    }
  });

  beforeEach(() => mocks.reset());

  const acct = () => `/2010-04-01/Accounts/${S.twilioSid}`;

  const key = (cap = 100) =>
    d.issueKey({ label: uniquePrefix('tw-ep'), vendor: 'twilio', daily_usd_cap: cap });

  // POST a form to .../Accounts/{sid}/<rel> through the proxy.
  const post = (k, rel, form, query = '') =>
    d.proxy({
      method: 'POST',
      path: `/twilio${acct()}/${rel}${query ? `?${query}` : ''}`,
      headers: {
        authorization: basic(S.twilioSid, k.token),
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams(form).toString(),
    });

  async function usage(k) {
    const r = await d.admin.get(`/v1/keys/${k.id}`);
    assert.equal(r.status, 200, r.text);
    return r.json.usage;
  }

  it('a conference participant leg is reserved and settled like a call', async () => {
    const conf = 'CF0123456789abcdef0123456789abcdef';
    mocks.twilio.setHandler((rec, res) =>
      reply(res, 201, {
        account_sid: S.twilioSid,
        call_sid: 'CA0123456789abcdef0123456789abcdef',
        conference_sid: conf,
        label: null,
        muted: false,
        hold: false,
        status: 'queued',
        uri: `${acct()}/Conferences/${conf}/Participants/CA0123456789abcdef0123456789abcdef.json`,
      }),
    );
    const form = { From: '+14155550199', To: '+14155550100', TimeLimit: '600', Record: 'true' };
    // 10 minutes x ($0.0140 + $0.0018 conference + $0.0025 recording) =
    // $0.183: a $0.18 key cannot afford the leg, and Twilio never hears of it.
    const poor = await key(0.18);
    const refused = await post(poor, `Conferences/${conf}/Participants.json`, form);
    assertError(refused, 429, 'cap_exhausted');
    assert.equal(mocks.twilio.requests.length, 0);

    const k = await key(1);
    const r = await post(k, `Conferences/${conf}/Participants.json`, form);
    assert.equal(r.status, 201, r.text);
    assert.equal(mocks.twilio.requests.length, 1);
    const rec = mocks.twilio.requests[0];
    assert.equal(rec.url, `${acct()}/Conferences/${conf}/Participants.json`);
    assert.deepEqual(Object.fromEntries(new URLSearchParams(rec.bodyText)), form);
    const u = await usage(k);
    assert.equal(u.spent_usd, 0.183);
    assert.equal(u.reserved_usd, 0);
  });

  it('a number purchase is charged one month of its type', async () => {
    mocks.twilio.setHandler((rec, res) => {
      const f = Object.fromEntries(new URLSearchParams(rec.bodyText));
      reply(res, 201, {
        account_sid: S.twilioSid,
        sid: 'PN0123456789abcdef0123456789abcdef',
        phone_number: f.PhoneNumber,
        friendly_name: f.PhoneNumber,
        origin: 'twilio',
        status: 'in-use',
        type: rec.path.includes('TollFree') ? 'toll-free' : 'local',
      });
    });
    const k = await key(10);
    let r = await post(k, 'IncomingPhoneNumbers/Local.json', { PhoneNumber: '+14155550100' });
    assert.equal(r.status, 201, r.text);
    assert.equal((await usage(k)).spent_usd, 1.15);
    r = await post(k, 'IncomingPhoneNumbers/TollFree.json', { PhoneNumber: '+18005550100' });
    assert.equal(r.status, 201, r.text);
    assert.equal((await usage(k)).spent_usd, 3.3); // 1.15 + 2.15
    assert.equal(mocks.twilio.requests.length, 2);
  });

  it('SendAsMms=true is charged as one MMS, not per SMS segment', async () => {
    const k = await key(1);
    const body = 'x'.repeat(161); // 2 SMS segments ($0.0166) as an SMS
    const r = await post(k, 'Messages.json', {
      To: '+14155550100',
      From: '+14155550199',
      Body: body,
      SendAsMms: 'true',
    });
    assert.equal(r.status, 201, r.text); // the mock's default message resource
    assert.equal(mocks.twilio.requests.length, 1);
    assert.equal(new URLSearchParams(mocks.twilio.requests[0].bodyText).get('SendAsMms'), 'true');
    const u = await usage(k);
    assert.equal(u.spent_usd, 0.022);
    assert.equal(u.reserved_usd, 0);
  });

  it('unlisted writes are refused 400 endpoint_not_metered before reaching Twilio', async () => {
    const k = await key(100);
    for (const rel of [
      'Calls/CA0123456789abcdef0123456789abcdef/Recordings.json', // per minute, unknown length
      'Keys.json', // an API key spends around the proxy
      'Faxes.json', // not an endpoint the meter knows
    ]) {
      const r = await post(k, rel, { FriendlyName: 'x' });
      assertError(r, 400, 'endpoint_not_metered', rel);
    }
    assert.equal(mocks.twilio.requests.length, 0, 'Twilio received nothing');
    assert.equal((await usage(k)).spent_usd, 0);
  });

  it('a free update is forwarded and costs $0', async () => {
    mocks.twilio.setHandler((rec, res) =>
      reply(res, 200, { sid: rec.path.split('/').pop().replace('.json', ''), status: 'completed' }),
    );
    const k = await key(0.01);
    let r = await post(k, 'Messages/SM0123456789abcdef0123456789abcdef.json', { Body: '' });
    assert.equal(r.status, 200, r.text);
    r = await post(k, 'Calls/CA0123456789abcdef0123456789abcdef.json', { Status: 'completed' });
    assert.equal(r.status, 200, r.text);
    assert.equal(mocks.twilio.requests.length, 2);
    assert.equal(mocks.twilio.requests[0].bodyText, 'Body=');
    assert.equal(mocks.twilio.requests[1].bodyText, 'Status=completed');
    assert.equal((await usage(k)).spent_usd, 0);
  });

  it('twilio-node messages.create still works and is charged', async () => {
    const k = await key(1);
    // twilio-node has no base URL option: a RequestClient that sends its
    // https://api.twilio.com/... requests to the proxy's /twilio prefix.
    class ToProxy extends twilio.RequestClient {
      request(opts) {
        const u = new URL(opts.uri);
        return super.request({ ...opts, uri: `${d.proxyUrl}/twilio${u.pathname}${u.search}` });
      }
    }
    const client = twilio(S.twilioSid, k.token, { httpClient: new ToProxy() });
    const m = await client.messages.create({ to: '+15005550006', from: '+15005550001', body: 'hi' });
    assert.match(m.sid, /^SM/);
    assert.equal((await usage(k)).spent_usd, 0.0083);
    // The SDK's sendAsMms reaches Twilio as SendAsMms=true and costs an MMS.
    await client.messages.create({ to: '+15005550006', from: '+15005550001', body: 'hi', sendAsMms: true });
    assert.equal(mocks.twilio.requests.length, 2);
    assert.equal(new URLSearchParams(mocks.twilio.requests[1].bodyText).get('SendAsMms'), 'true');
    assert.equal(recordContains(mocks.twilio.requests[1], k.token), false);
    assert.equal((await usage(k)).spent_usd, 0.0303);
  });

  it('twilio-node participants.create and incomingPhoneNumbers.create are metered', async () => {
    const conf = 'CF0123456789abcdef0123456789abcdef';
    mocks.twilio.setHandler((rec, res) => {
      const f = Object.fromEntries(new URLSearchParams(rec.bodyText));
      if (rec.path.endsWith('/Participants.json')) {
        return reply(res, 201, {
          account_sid: S.twilioSid,
          call_sid: 'CA0123456789abcdef0123456789abcdef',
          conference_sid: conf,
          status: 'queued',
        });
      }
      if (rec.path.endsWith('/IncomingPhoneNumbers.json')) {
        return reply(res, 201, {
          account_sid: S.twilioSid,
          sid: 'PN0123456789abcdef0123456789abcdef',
          phone_number: f.PhoneNumber,
          type: 'local',
        });
      }
      return false;
    });
    const k = await key(5);
    class ToProxy extends twilio.RequestClient {
      request(opts) {
        const u = new URL(opts.uri);
        return super.request({ ...opts, uri: `${d.proxyUrl}/twilio${u.pathname}${u.search}` });
      }
    }
    const client = twilio(S.twilioSid, k.token, { httpClient: new ToProxy() });
    // timeLimit 120 s: 2 minutes x ($0.0140 + $0.0018).
    await client
      .conferences(conf)
      .participants.create({ from: '+14155550199', to: '+14155550100', timeLimit: 120 });
    assert.equal(new URLSearchParams(mocks.twilio.requests[0].bodyText).get('TimeLimit'), '120');
    assert.equal((await usage(k)).spent_usd, 0.0316);
    // A +1 non-toll-free number through the generic resource: local, $1.15.
    await client.incomingPhoneNumbers.create({ phoneNumber: '+14155550100' });
    assert.equal(mocks.twilio.requests.length, 2);
    assert.equal((await usage(k)).spent_usd, 1.1816);
  });

  it('path and parameter spellings Twilio reads alike are priced alike', async () => {
    mocks.twilio.setHandler((rec, res) =>
      reply(res, 201, { sid: 'SM0123456789abcdef0123456789abcdef', status: 'queued', num_segments: '2' }),
    );
    const k = await key(1);
    // Lower-case resource and parameter names, another extension: still an
    // SMS, reserved and settled at 2 segments x $0.0083 (not refused, and
    // not let through at $0).
    const r = await d.proxy({
      method: 'POST',
      path: `/twilio${acct()}/messages.JSON`,
      headers: {
        authorization: basic(S.twilioSid, k.token),
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: `to=%2B14155550100&body=${'x'.repeat(161)}`,
    });
    assert.equal(r.status, 201, r.text);
    assert.equal(mocks.twilio.requests.length, 1);
    assert.equal(mocks.twilio.requests[0].url, `${acct()}/messages.JSON`);
    assert.equal((await usage(k)).spent_usd, 0.0166);
    // TimeLimit twice in two spellings with two values: which one Twilio
    // reads is unknown, so the call is refused and nothing is sent.
    const body = 'To=%2B14155550100&TimeLimit=60&timelimit=14400';
    const amb = await d.proxy({
      method: 'POST',
      path: `/twilio${acct()}/Calls.json`,
      headers: {
        authorization: basic(S.twilioSid, k.token),
        'content-type': 'application/x-www-form-urlencoded',
      },
      body,
    });
    assertError(amb, 400, 'ambiguous_request');
    assert.equal(mocks.twilio.requests.length, 1);
    assert.equal((await usage(k)).spent_usd, 0.0166);
  });

  // Last: a sanitizer report or a crash on shutdown fails here.
  it('the daemon stops on SIGTERM with exit code 0', async () => {
    await d.stop();
  });
});
