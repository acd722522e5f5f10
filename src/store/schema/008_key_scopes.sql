-- 008: narrower scopes of a key (issue 16, item 4). allowed_models: the
-- exact model ids an LLM key may name, a JSON array of strings; NULL: any
-- model. max_amount_micros: the largest payment one request may make (a
-- Stripe key), micro-dollars; NULL: no ceiling.
ALTER TABLE keys ADD COLUMN allowed_models TEXT;
ALTER TABLE keys ADD COLUMN max_amount_micros INTEGER CHECK (max_amount_micros > 0);
