/**
 * SCIM 2.0 provisioning (RFC 7643/7644, docs/scim.md): per-tenant bearer tokens for the identity
 * provider's provisioning client, SCIM attributes on accounts, and SCIM groups.
 *
 * Accounts are never deleted (the audit trail and foreign keys name them): a SCIM DELETE
 * deactivates the account and sets `scim_deleted_at`, after which SCIM answers 404 for it. The
 * deactivation itself fires migration 0070's invalidation, so every replica drops cached API-token
 * answers; sessions are looked up on every request and fail at once.
 */
export const sql = /* sql */ `
-- Only the SHA-256 of a SCIM token is stored (as for API tokens): a database read yields no credential.
CREATE TABLE scim_tokens (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  token_prefix text NOT NULL,
  token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  -- The role new accounts get until group rules assign one; never an administrative role.
  default_role text NOT NULL DEFAULT 'practitioner' CHECK (default_role IN ('practitioner', 'front_desk', 'auditor')),
  created_by   uuid REFERENCES users (id),
  created_at   timestamptz NOT NULL,
  last_used_at timestamptz,
  revoked_at   timestamptz
);
CREATE INDEX scim_tokens_tenant_idx ON scim_tokens (tenant_id);
ALTER TABLE scim_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE scim_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY scim_tokens_isolation ON scim_tokens
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON scim_tokens TO {{app_role}};

-- Where an account comes from: created locally (invite, setup), by SCIM, or by an identity provider's sign-in.
ALTER TABLE users
  ADD COLUMN source text NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'scim', 'idp')),
  ADD COLUMN scim_user_name text CHECK (scim_user_name IS NULL OR length(scim_user_name) BETWEEN 1 AND 254),
  ADD COLUMN scim_external_id text CHECK (scim_external_id IS NULL OR length(scim_external_id) BETWEEN 1 AND 200),
  -- name.givenName / familyName / formatted as the IdP sent them (staff names, not patient data).
  ADD COLUMN scim_name jsonb CHECK (scim_name IS NULL OR (jsonb_typeof(scim_name) = 'object' AND length(scim_name::text) <= 1000)),
  ADD COLUMN scim_deleted_at timestamptz;
CREATE UNIQUE INDEX users_scim_user_name_key ON users (tenant_id, lower(scim_user_name)) WHERE scim_user_name IS NOT NULL AND scim_deleted_at IS NULL;
CREATE INDEX users_scim_external_id_idx ON users (tenant_id, scim_external_id) WHERE scim_external_id IS NOT NULL;

CREATE TABLE scim_groups (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 256),
  external_id  text CHECK (external_id IS NULL OR length(external_id) BETWEEN 1 AND 200),
  created_at   timestamptz NOT NULL,
  updated_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX scim_groups_name_key ON scim_groups (tenant_id, lower(display_name));
ALTER TABLE scim_groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE scim_groups FORCE ROW LEVEL SECURITY;
CREATE POLICY scim_groups_isolation ON scim_groups
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON scim_groups TO {{app_role}};

CREATE TABLE scim_group_members (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  group_id  uuid NOT NULL REFERENCES scim_groups (id) ON DELETE CASCADE,
  user_id   uuid NOT NULL REFERENCES users (id),
  added_at  timestamptz NOT NULL,
  PRIMARY KEY (group_id, user_id)
);
CREATE INDEX scim_group_members_user_idx ON scim_group_members (tenant_id, user_id);
ALTER TABLE scim_group_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE scim_group_members FORCE ROW LEVEL SECURITY;
CREATE POLICY scim_group_members_isolation ON scim_group_members
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, DELETE ON scim_group_members TO {{app_role}};
`;
