-- 003: budget threshold alerts (docs/budgets.md, "Usage and alerts"), as
-- SQLite's 010_alerts.sql. On a shared store the unique key makes a
-- crossing recorded once however many nodes settle at once, and the
-- delivery threads of all nodes claim due rows with SKIP LOCKED and a
-- lease (next_at), so one attempt runs at a time.
ALTER TABLE budgets ADD COLUMN alert_thresholds text;
ALTER TABLE budget_spend ADD COLUMN alert_level integer NOT NULL DEFAULT 0;

CREATE TABLE alert_deliveries (
    id           bigserial PRIMARY KEY,
    budget_seq   bigint  NOT NULL,
    budget_name  text    NOT NULL,
    win          integer NOT NULL,
    period       bigint  NOT NULL,
    threshold    integer NOT NULL,
    spent_micros bigint  NOT NULL,
    cap_micros   bigint  NOT NULL,
    created_ms   bigint  NOT NULL,
    status       text    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_status  integer NOT NULL DEFAULT 0,
    next_at      bigint  NOT NULL,
    done_ms      bigint  NOT NULL DEFAULT 0,
    log          text    NOT NULL DEFAULT '',
    UNIQUE (budget_seq, period, threshold)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_at);
