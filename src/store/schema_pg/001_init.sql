-- PostgreSQL 001: everything SQLite's migrations 001-008 build, in one
-- step, plus what several nodes sharing one store need (nodes, their open
-- reservations, key changes for the other nodes, per-node audit chains).
-- Units as in SQLite: money in integer micro-dollars, times in epoch
-- seconds (ms where the column says so), days as UTC day numbers.
CREATE TABLE keys (
    seq               bigserial PRIMARY KEY,
    id                text   NOT NULL UNIQUE,
    token_hash        bytea  NOT NULL UNIQUE,
    label             text   NOT NULL,
    vendor            text   NOT NULL,
    allowed_endpoints text   NOT NULL,
    daily_cap_micros  bigint NOT NULL CHECK (daily_cap_micros >= 0),
    metadata          text   NOT NULL DEFAULT '{}',
    created_at        bigint NOT NULL,
    expires_at        bigint NOT NULL,
    revoked_at        bigint,
    rate_requests     bigint NOT NULL DEFAULT 0,
    rate_period_ms    bigint NOT NULL DEFAULT 0,
    allowed_accounts  text,
    allowed_models    text,
    max_amount_micros bigint CHECK (max_amount_micros > 0)
);
CREATE INDEX keys_label ON keys (label text_pattern_ops);

CREATE TABLE spend (
    key_seq         bigint NOT NULL REFERENCES keys (seq),
    day             bigint NOT NULL,
    spent_micros    bigint NOT NULL DEFAULT 0,
    reserved_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    requests        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (key_seq, day)
);

CREATE TABLE admin_tokens (
    id         bigserial PRIMARY KEY,
    token_hash bytea  NOT NULL UNIQUE,
    label      text   NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE rate_buckets (
    key_seq bigint PRIMARY KEY REFERENCES keys (seq),
    units   bigint NOT NULL,
    ts_ms   bigint NOT NULL
);

CREATE TABLE object_charges (
    key_seq    bigint NOT NULL REFERENCES keys (seq),
    object_id  text   NOT NULL,
    micros     bigint NOT NULL CHECK (micros >= 0),
    updated_at bigint NOT NULL,
    PRIMARY KEY (key_seq, object_id)
);

CREATE TABLE budgets (
    seq        bigserial PRIMARY KEY,
    name       text    NOT NULL UNIQUE,
    cap_micros bigint  NOT NULL CHECK (cap_micros >= 0),
    win        integer NOT NULL CHECK (win IN (0, 1, 2)),
    parent_seq bigint REFERENCES budgets (seq),
    created_at bigint  NOT NULL,
    updated_at bigint  NOT NULL
);
CREATE INDEX budgets_parent ON budgets (parent_seq);

CREATE TABLE key_budgets (
    key_seq    bigint NOT NULL REFERENCES keys (seq),
    budget_seq bigint NOT NULL REFERENCES budgets (seq),
    PRIMARY KEY (key_seq, budget_seq)
);
CREATE INDEX key_budgets_budget ON key_budgets (budget_seq);

CREATE TABLE budget_spend (
    budget_seq      bigint NOT NULL,
    period          bigint NOT NULL,
    spent_micros    bigint NOT NULL DEFAULT 0,
    reserved_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    requests        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_seq, period)
);

-- ---- several nodes ----

-- One row per running node (process). boot_id is new at every start; a
-- node's heartbeat_at is PostgreSQL's clock (no node clock is trusted).
CREATE TABLE nodes (
    node_id      text        PRIMARY KEY,
    boot_id      text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Starts that another node found dead and whose reservations it settled
-- (node_reap). A start listed here may not write again: its writer's
-- transactions check this first (a node whose session was gone long
-- enough to be reaped, but whose process lives on, stops instead of
-- settling reservations that were settled already).
CREATE TABLE reaped_boots (
    node_id text        NOT NULL,
    boot_id text        NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, boot_id)
);

-- Which node (and which start of it) holds what part of spend.reserved
-- and budget_spend.reserved: changed in the same transaction as those, so
-- that the reservations of a node that died are settled exactly (at their
-- worst case) by whoever finds it dead, and a restarted node settles only
-- its own earlier starts'.
CREATE TABLE node_reservations (
    node_id text   NOT NULL,
    boot_id text   NOT NULL,
    key_seq bigint NOT NULL,
    day     bigint NOT NULL,
    micros  bigint NOT NULL CHECK (micros >= 0),
    PRIMARY KEY (node_id, boot_id, key_seq, day)
);
CREATE TABLE node_budget_reservations (
    node_id    text   NOT NULL,
    boot_id    text   NOT NULL,
    budget_seq bigint NOT NULL,
    period     bigint NOT NULL,
    micros     bigint NOT NULL CHECK (micros >= 0),
    PRIMARY KEY (node_id, boot_id, budget_seq, period)
);

-- Keys revoked or changed, in commit order, for the other nodes' caches
-- and stream watches: written in the transaction that revokes or changes,
-- announced with NOTIFY keybrake_keys, read by id > the last one seen.
CREATE TABLE key_changes (
    id         bigserial   PRIMARY KEY,
    key_seq    bigint      NOT NULL,
    token_hash bytea       NOT NULL,
    revoked    boolean     NOT NULL, -- false: changed (PATCH), still active
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX key_changes_at ON key_changes (at);

-- What the nodes must agree on: HMAC-SHA256(server key, "keybrake cluster"),
-- so that a node started with another server key refuses to start (its
-- token hashes and checkpoint MACs would not match the others').
CREATE TABLE cluster (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    key_check bytea   NOT NULL
);

-- ---- the audit log: one hash chain per node ----
-- seq numbers node_id's chain 1, 2, 3, ... without gaps; gid orders all
-- nodes' records by insertion, for GET /v1/audit across the cluster.
CREATE TABLE audit (
    node_id         text    NOT NULL,
    seq             bigint  NOT NULL,
    gid             bigserial UNIQUE,
    ref_seq         bigint,
    kind            integer NOT NULL,
    ts_ms           bigint  NOT NULL,
    request_id      text    NOT NULL,
    action          text,
    key_id          text,
    label           text,
    vendor          text,
    method          text,
    path            text,
    decision        text,
    code            text,
    status          integer NOT NULL,
    reserved_micros bigint  NOT NULL,
    settled_micros  bigint  NOT NULL,
    latency_us      bigint  NOT NULL,
    bytes_in        bigint  NOT NULL,
    bytes_out       bigint  NOT NULL,
    detail          text,
    hash            bytea   NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE INDEX audit_ref ON audit (node_id, ref_seq) WHERE ref_seq IS NOT NULL;
CREATE INDEX audit_key ON audit (key_id, gid) WHERE ref_seq IS NULL;
CREATE INDEX audit_label ON audit (label text_pattern_ops, gid) WHERE ref_seq IS NULL;
CREATE INDEX audit_ts ON audit (ts_ms) WHERE ref_seq IS NULL;

CREATE TABLE audit_checkpoints (
    node_id  text   NOT NULL,
    seq      bigint NOT NULL,
    prev_seq bigint NOT NULL,
    every    bigint NOT NULL,
    ts_ms    bigint NOT NULL,
    hash     bytea  NOT NULL,
    mac      bytea  NOT NULL,
    PRIMARY KEY (node_id, seq)
);
