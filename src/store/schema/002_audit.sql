-- 002: the audit log (see src/audit/audit.h and docs/audit.md).
-- Append-only: rows are inserted by the writer thread and never updated.
-- seq numbers the chain 1, 2, 3, ... without gaps; hash is
-- SHA-256(previous record's hash || canonical bytes of this record).
CREATE TABLE audit (
    seq             INTEGER PRIMARY KEY, -- chain position; contiguous from 1
    ref_seq         INTEGER,             -- completion records: the record they complete
    kind            INTEGER NOT NULL,    -- 0 proxied request, 1 admin action
    ts_ms           INTEGER NOT NULL,    -- wall clock, ms since the epoch
    request_id      TEXT    NOT NULL,
    action          TEXT,
    key_id          TEXT,
    label           TEXT,
    vendor          TEXT,
    method          TEXT,
    path            TEXT,                -- never a query string
    decision        TEXT,                -- allowed | refused | ok
    code            TEXT,                -- error code, NULL when none
    status          INTEGER NOT NULL,    -- upstream HTTP status, 0 when none
    reserved_micros INTEGER NOT NULL,
    settled_micros  INTEGER NOT NULL,    -- -1 while a completion is pending
    latency_us      INTEGER NOT NULL,
    bytes_in        INTEGER NOT NULL,
    bytes_out       INTEGER NOT NULL,
    detail          TEXT,                -- admin: small JSON text
    hash            BLOB    NOT NULL     -- 32 bytes, the chain hash
);
CREATE INDEX audit_ref ON audit (ref_seq) WHERE ref_seq IS NOT NULL;
CREATE INDEX audit_key ON audit (key_id, seq);
CREATE INDEX audit_label ON audit (label, seq);
CREATE INDEX audit_ts ON audit (ts_ms);

-- Signed checkpoints: each seals the chain hash of record seq with
-- HMAC-SHA256 under the server key, links to the checkpoint before it and
-- promises the next one at most `every` records later.
CREATE TABLE audit_checkpoints (
    seq      INTEGER PRIMARY KEY, -- the record it seals
    prev_seq INTEGER NOT NULL,    -- the previous checkpoint, 0 for the first
    every    INTEGER NOT NULL,    -- the next checkpoint comes at most this many records later
    ts_ms    INTEGER NOT NULL,
    hash     BLOB    NOT NULL,    -- chain hash of record seq (32 bytes)
    mac      BLOB    NOT NULL     -- HMAC-SHA256(server key, see docs/audit.md)
);
