/**
 * Foundation: the row-level security scope functions, tenants, staff accounts and the
 * first-run setup token. `{{app_role}}` is replaced by the role requests run as.
 */
export const sql = /* sql */ `
-- Row-level security reads who the transaction acts for from two settings that
-- daemon/db/tenant-scope.ts sets with set_config(..., true) (SET LOCAL semantics).
CREATE FUNCTION app_tenant_id() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT NULLIF(current_setting('wardkeep.tenant_id', true), '')::uuid $$;

CREATE FUNCTION app_is_appliance_scope() RETURNS boolean
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT coalesce(current_setting('wardkeep.scope', true), '') = 'appliance' $$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {{app_role}};

CREATE TABLE tenants (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
  status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleting')),
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenants_isolation ON tenants
  USING (app_is_appliance_scope() OR id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON tenants TO {{app_role}};

-- Staff accounts. Appliance staff (super_admin, support) belong to no tenant.
CREATE TABLE users (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid REFERENCES tenants (id),
  email         text NOT NULL CHECK (email = lower(email) AND length(email) <= 254),
  password_hash text NOT NULL,
  role          text NOT NULL CHECK (role IN ('super_admin', 'owner', 'admin', 'practitioner', 'front_desk', 'auditor', 'support')),
  status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  last_login_at timestamptz,
  CHECK ((role IN ('super_admin', 'support')) = (tenant_id IS NULL))
);
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_tenant_idx ON users (tenant_id);
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_isolation ON users
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON users TO {{app_role}};

-- First-run setup: only the SHA-256 of the token is stored; the token is printed once.
CREATE TABLE setup_tokens (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  token_hash bytea NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at    timestamptz,
  used_by    uuid REFERENCES users (id)
);
GRANT SELECT, INSERT, UPDATE ON setup_tokens TO {{app_role}};
`;
