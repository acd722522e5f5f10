-- 009: tenants (docs/tenants.md). A tenant owns keys, budgets, admin
-- tokens, audit records and vendor secrets; NULL tenant_id is root's own.
-- A deleted tenant keeps its row (deleted_at) so that what referred to it
-- still names it; its name is free again.
CREATE TABLE tenants (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT, -- creation order
    id         TEXT    NOT NULL UNIQUE,           -- public id, tn_...
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER                            -- NULL while live
);
CREATE UNIQUE INDEX tenants_live_name ON tenants (name) WHERE deleted_at IS NULL;

-- admin tokens: a public id (at_...), the tenant they are scoped to (NULL:
-- root) and their revocation. Tokens made before 009 get an id here.
ALTER TABLE admin_tokens ADD COLUMN public_id TEXT;
ALTER TABLE admin_tokens ADD COLUMN tenant_id TEXT;
ALTER TABLE admin_tokens ADD COLUMN revoked_at INTEGER;
UPDATE admin_tokens SET public_id = 'at_' || lower(hex(randomblob(12))) WHERE public_id IS NULL;
CREATE UNIQUE INDEX admin_tokens_public ON admin_tokens (public_id);

ALTER TABLE keys ADD COLUMN tenant_id TEXT;
CREATE INDEX keys_tenant ON keys (tenant_id, seq) WHERE tenant_id IS NOT NULL;

ALTER TABLE audit ADD COLUMN tenant_id TEXT;
CREATE INDEX audit_tenant ON audit (tenant_id, seq) WHERE tenant_id IS NOT NULL;

-- a tenant's own vendor credentials, sealed with AES-256-GCM under the
-- master key named by key_id (nonce || ciphertext || tag)
CREATE TABLE tenant_secrets (
    tenant_id  TEXT    NOT NULL,
    vendor     TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    sealed     BLOB    NOT NULL,
    account    TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, vendor)
) WITHOUT ROWID;
