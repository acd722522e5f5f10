-- 006: the per-key object ledger (meter.h, meter_ledger_*): what each vault
-- key was already charged, in micro-dollars, for one vendor object (a
-- Stripe PaymentIntent, Charge, invoice or quote, or "idem:<mac>" for an
-- Idempotency-Key), so that confirming, capturing or replaying it through
-- the same key charges only what exceeds it. updated_at (epoch seconds)
-- lets entries that the vendor forgets (idempotency keys, 24 h) expire.
CREATE TABLE object_charges (
    key_seq    INTEGER NOT NULL REFERENCES keys (seq),
    object_id  TEXT    NOT NULL,
    micros     INTEGER NOT NULL CHECK (micros >= 0),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (key_seq, object_id)
) WITHOUT ROWID;
