-- 001: vault keys, their daily spend counters, admin tokens.
-- Money is integer micro-dollars; times are seconds since the epoch (UTC);
-- days are UTC day numbers (days since 1970-01-01).
CREATE TABLE keys (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT, -- creation order, cursor for paging
    id                TEXT    NOT NULL UNIQUE,           -- public id, vk_...
    token_hash        BLOB    NOT NULL UNIQUE,           -- HMAC-SHA256(server key, token)
    label             TEXT    NOT NULL,
    vendor            TEXT    NOT NULL,
    allowed_endpoints TEXT    NOT NULL,                  -- JSON array of patterns
    daily_cap_micros  INTEGER NOT NULL CHECK (daily_cap_micros >= 0),
    metadata          TEXT    NOT NULL DEFAULT '{}',     -- JSON object
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    revoked_at        INTEGER                            -- NULL while not revoked
);
CREATE INDEX keys_label ON keys (label);

CREATE TABLE spend (
    key_seq         INTEGER NOT NULL REFERENCES keys (seq),
    day             INTEGER NOT NULL,
    spent_micros    INTEGER NOT NULL DEFAULT 0,
    reserved_micros INTEGER NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    requests        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_seq, day)
) WITHOUT ROWID;

CREATE TABLE admin_tokens (
    id         INTEGER PRIMARY KEY,
    token_hash BLOB    NOT NULL UNIQUE,
    label      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
