-- PostgreSQL 002: tenants, as SQLite's 009 (docs/tenants.md).
CREATE TABLE tenants (
    seq        bigserial PRIMARY KEY,
    id         text   NOT NULL UNIQUE,
    name       text   NOT NULL,
    created_at bigint NOT NULL,
    deleted_at bigint
);
CREATE UNIQUE INDEX tenants_live_name ON tenants (name) WHERE deleted_at IS NULL;

ALTER TABLE admin_tokens ADD COLUMN public_id text;
ALTER TABLE admin_tokens ADD COLUMN tenant_id text;
ALTER TABLE admin_tokens ADD COLUMN revoked_at bigint;
UPDATE admin_tokens SET public_id = 'at_' || substr(md5(random()::text || id::text), 1, 24)
    WHERE public_id IS NULL;
CREATE UNIQUE INDEX admin_tokens_public ON admin_tokens (public_id);

ALTER TABLE keys ADD COLUMN tenant_id text;
CREATE INDEX keys_tenant ON keys (tenant_id, seq) WHERE tenant_id IS NOT NULL;

ALTER TABLE audit ADD COLUMN tenant_id text;
CREATE INDEX audit_tenant ON audit (tenant_id, gid) WHERE tenant_id IS NOT NULL AND ref_seq IS NULL;

CREATE TABLE tenant_secrets (
    tenant_id  text   NOT NULL,
    vendor     text   NOT NULL,
    key_id     text   NOT NULL,
    sealed     bytea  NOT NULL,
    account    text,
    updated_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, vendor)
);
