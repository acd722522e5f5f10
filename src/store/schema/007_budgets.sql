-- 007: budgets above the key (docs/budgets.md). A budget caps what every
-- key naming it, directly or through a child budget, spends together in a
-- window: win 0 = total (one period, 0), 1 = UTC day (period: day number),
-- 2 = UTC month (period: months since 1970-01). parent_seq makes a chain
-- (no cycles, at most 8 long: the store refuses both).
CREATE TABLE budgets (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: a settlement names it
    name       TEXT    NOT NULL UNIQUE,
    cap_micros INTEGER NOT NULL CHECK (cap_micros >= 0),
    win        INTEGER NOT NULL CHECK (win IN (0, 1, 2)),
    parent_seq INTEGER REFERENCES budgets (seq),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX budgets_parent ON budgets (parent_seq);

-- the budgets a key spends from, named at issuance
CREATE TABLE key_budgets (
    key_seq    INTEGER NOT NULL REFERENCES keys (seq),
    budget_seq INTEGER NOT NULL REFERENCES budgets (seq),
    PRIMARY KEY (key_seq, budget_seq)
) WITHOUT ROWID;
CREATE INDEX key_budgets_budget ON key_budgets (budget_seq);

-- spend per budget and window period, as spend is per key and day
CREATE TABLE budget_spend (
    budget_seq      INTEGER NOT NULL,
    period          INTEGER NOT NULL,
    spent_micros    INTEGER NOT NULL DEFAULT 0,
    reserved_micros INTEGER NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    requests        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_seq, period)
) WITHOUT ROWID;
