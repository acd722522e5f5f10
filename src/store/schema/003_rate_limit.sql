-- 003: optional per-key rate limits, as a token bucket kept in the store so
-- that every worker and every node draws from the same bucket.
-- Units: one request costs rate_period_ms units; the bucket holds
-- rate_requests * rate_period_ms units and refills rate_requests units per ms.
ALTER TABLE keys ADD COLUMN rate_requests INTEGER NOT NULL DEFAULT 0; -- 0: no limit
ALTER TABLE keys ADD COLUMN rate_period_ms INTEGER NOT NULL DEFAULT 0;

CREATE TABLE rate_buckets (
    key_seq INTEGER PRIMARY KEY REFERENCES keys (seq),
    units   INTEGER NOT NULL,
    ts_ms   INTEGER NOT NULL
);
