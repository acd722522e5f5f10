-- 005: the accounts a key may act for through an account selector header
-- (Stripe-Account, OpenAI-Organization, ...): a JSON array of strings, NULL
-- when the key acts for the configured account only.
ALTER TABLE keys ADD COLUMN allowed_accounts TEXT;
