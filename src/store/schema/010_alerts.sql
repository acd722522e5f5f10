-- 010: budget threshold alerts (docs/budgets.md, "Usage and alerts").
-- alert_thresholds: percents of the cap, ascending, comma-separated
-- ("50,80,100"); NULL: no alerts. budget_spend.alert_level: the highest
-- threshold already alerted in that period (a settlement alerts only
-- above it, so the check costs no statement of its own).
ALTER TABLE budgets ADD COLUMN alert_thresholds TEXT;
ALTER TABLE budget_spend ADD COLUMN alert_level INTEGER NOT NULL DEFAULT 0;

-- One row per (budget, period, threshold) crossed, written in the
-- transaction of the settlement that crossed it; the delivery thread
-- claims due rows (next_at, epoch ms, also its lease) and records each
-- attempt in `log` (one JSON object per line).
CREATE TABLE alert_deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    budget_seq   INTEGER NOT NULL,
    budget_name  TEXT    NOT NULL, -- as it was (a budget may be deleted later)
    win          INTEGER NOT NULL,
    period       INTEGER NOT NULL,
    threshold    INTEGER NOT NULL,
    spent_micros INTEGER NOT NULL,
    cap_micros   INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_status  INTEGER NOT NULL DEFAULT 0, -- HTTP status of the last attempt; 0: no answer
    next_at      INTEGER NOT NULL,
    done_ms      INTEGER NOT NULL DEFAULT 0,
    log          TEXT    NOT NULL DEFAULT '',
    UNIQUE (budget_seq, period, threshold)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_at);
