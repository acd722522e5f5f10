// Compiled (not run) by types.test.js: index.d.ts describes the kit as the
// README uses it, and refuses what the API would refuse.
import {
  Keybrake,
  KeybrakeInterceptor,
  SpendExhaustedError,
  isRetryable,
  isSpendExhausted,
  keybrakeError,
  keybrakeRun,
  retryAfter,
  type IssuedKey,
} from '@keybrake/client';

const kb = new Keybrake({ adminUrl: 'https://kb.internal:8421', adminToken: 't', proxyUrl: 'https://kb.internal:8420' });

async function run(): Promise<number> {
  const key: IssuedKey = await kb.createKey({
    label: 'user-42/run-7',
    vendor: 'openai',
    allowedEndpoints: ['POST /v1/chat/completions'],
    dailyUsdCap: 2,
    expiresIn: '15m',
    budgets: ['team-a', { name: 'user-42', usdCap: 10, window: 'day' }],
    rateLimit: { requests: 5, per: 'second' },
  });
  const token: string = key.token;
  const spent: number = (await kb.getKey(key.id)).usage.spentUsd;
  const page = await kb.listKeys({ labelPrefix: 'user-42/', status: 'active', limit: 10 });
  const next: string | null = page.nextCursor;
  for await (const k of kb.iterateKeys({ vendor: 'openai' })) k.id.toUpperCase();
  const n: number = await kb.revokePrefix('user-42/');
  await kb.revokeKey(key.id);
  const url: string = kb.vendorBaseUrl('openai');
  const s = kb.stripeOptions();
  const r = await kb.withKey({ label: 'x', vendor: 'stripe', allowedEndpoints: ['/v1/*'], dailyUsdCap: 1 }, async (k) => k.token.length);
  try {
    await kb.createKey({ label: 'x', vendor: 'openai', allowedEndpoints: [], dailyUsdCap: 1 });
  } catch (e) {
    if (e instanceof SpendExhaustedError) return e.status;
    if (isSpendExhausted(e) || isRetryable(e)) return retryAfter(e) ?? 0;
    const k = keybrakeError(e);
    if (k) return k.code.length + (k.field ?? '').length;
  }
  // @ts-expect-error snake_case is not an option
  await kb.createKey({ label: 'x', vendor: 'openai', allowedEndpoints: [], daily_usd_cap: 1 });
  // @ts-expect-error dailyUsdCap is required
  await kb.createKey({ label: 'x', vendor: 'openai', allowedEndpoints: [] });
  return token.length + spent + n + url.length + s.port + r + (next ? 1 : 0);
}

interface Req {
  headers: Record<string, string | undefined>;
  user: { id: string };
}
const mw = keybrakeRun<Req>(kb, {
  vendor: 'openai',
  allowedEndpoints: ['POST /v1/chat/completions'],
  dailyUsdCap: 2,
  label: (req) => `user-${req.user.id}/run`,
  metadata: (req) => ({ user: req.user.id }),
});
// @ts-expect-error label must be a function of the request
keybrakeRun(kb, { vendor: 'openai', allowedEndpoints: [], dailyUsdCap: 1, label: 'fixed' });
const ic = new KeybrakeInterceptor(kb, { vendor: 'openai', allowedEndpoints: [], dailyUsdCap: 1, label: () => 'l' });
export { run, mw, ic };
