/**
 * Hospital sign-in (docs/sso.md): identity providers per tenant (OIDC, SAML, LDAP in one table,
 * each kind validating its own `config`), the link from an IdP's subject to an account, the
 * ordered claim/group → role rules, the per-role MFA policy for sign-ins through an IdP, and the
 * short-lived server-side records of sign-ins in flight (OIDC state, nonce, PKCE verifier).
 * Every table is a tenant table: ENABLE + FORCE ROW LEVEL SECURITY on app_tenant_id().
 */
export const sql = /* sql */ `
CREATE TABLE identity_providers (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      uuid NOT NULL REFERENCES tenants (id),
  kind           text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_-]{1,20}$'),
  name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  -- The kind's own settings, validated by its registered zod schema; never a secret.
  config         jsonb NOT NULL DEFAULT '{}',
  -- Client secrets, bind passwords: AES-256-GCM sealed under a key derived from the root KEK
  -- (daemon/sso/secrets.ts), bound to the provider id; a database read alone yields none.
  secrets        bytea,
  enabled        boolean NOT NULL DEFAULT false,
  -- acr values (or SAML AuthnContextClassRef) this IdP sends only after a second factor.
  mfa_acr_values text[] NOT NULL DEFAULT '{}',
  -- Link a first sign-in to an existing account of the tenant with the same verified email.
  link_by_email  boolean NOT NULL DEFAULT false,
  created_by     uuid,
  created_at     timestamptz NOT NULL,
  updated_at     timestamptz NOT NULL,
  UNIQUE (tenant_id, name)
);
CREATE INDEX identity_providers_tenant_idx ON identity_providers (tenant_id);
ALTER TABLE identity_providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity_providers FORCE ROW LEVEL SECURITY;
CREATE POLICY identity_providers_isolation ON identity_providers
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON identity_providers TO {{app_role}};

-- (provider, subject) → account. The subject is the IdP's stable id (OIDC sub, SAML NameID, LDAP
-- entryUUID); the last groups and claims seen feed the rules' dry run (staff directory data, no PHI).
CREATE TABLE sso_links (
  provider_id   uuid NOT NULL REFERENCES identity_providers (id) ON DELETE CASCADE,
  subject       text NOT NULL CHECK (length(subject) BETWEEN 1 AND 512),
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  user_id       uuid NOT NULL REFERENCES users (id),
  username      text NOT NULL CHECK (length(username) <= 256),
  last_groups   text[] NOT NULL DEFAULT '{}',
  last_claims   jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL,
  last_login_at timestamptz,
  PRIMARY KEY (provider_id, subject)
);
CREATE INDEX sso_links_user_idx ON sso_links (user_id);
CREATE INDEX sso_links_tenant_idx ON sso_links (tenant_id);
ALTER TABLE sso_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_links FORCE ROW LEVEL SECURITY;
CREATE POLICY sso_links_isolation ON sso_links
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON sso_links TO {{app_role}};

-- Ordered rules per tenant; first match wins, no match = no access. A rule granting a privileged
-- role waits for a second admin's approval (status 'pending') and is skipped until then.
CREATE TABLE sso_role_rules (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants (id),
  position    integer NOT NULL CHECK (position >= 0),
  provider_id uuid REFERENCES identity_providers (id) ON DELETE CASCADE,
  source      text NOT NULL CHECK (source IN ('group', 'claim')),
  claim       text CHECK (claim IS NULL OR length(claim) BETWEEN 1 AND 100),
  match       text NOT NULL CHECK (match IN ('equals', 'prefix', 'suffix', 'regex')),
  value       text NOT NULL CHECK (length(value) BETWEEN 1 AND 500),
  role        text NOT NULL CHECK (role IN ('owner', 'admin', 'practitioner', 'front_desk', 'auditor')),
  status      text NOT NULL CHECK (status IN ('active', 'pending')),
  created_by  uuid,
  created_at  timestamptz NOT NULL,
  approved_by uuid,
  approved_at timestamptz,
  CHECK ((source = 'claim') = (claim IS NOT NULL)),
  UNIQUE (tenant_id, position)
);
ALTER TABLE sso_role_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_role_rules FORCE ROW LEVEL SECURITY;
CREATE POLICY sso_role_rules_isolation ON sso_role_rules
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON sso_role_rules TO {{app_role}};

-- Per tenant and role: 'idp' accepts the IdP's amr/acr as the second factor (local TOTP only when
-- the IdP did not assert one); 'local' always asks for local TOTP as well. No row: 'idp'.
CREATE TABLE sso_mfa_policy (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  role      text NOT NULL CHECK (role IN ('owner', 'admin', 'practitioner', 'front_desk', 'auditor')),
  mode      text NOT NULL CHECK (mode IN ('idp', 'local')),
  PRIMARY KEY (tenant_id, role)
);
ALTER TABLE sso_mfa_policy ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_mfa_policy FORCE ROW LEVEL SECURITY;
CREATE POLICY sso_mfa_policy_isolation ON sso_mfa_policy
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON sso_mfa_policy TO {{app_role}};

-- Sign-ins in flight: found by the SHA-256 of the state, used once, ten minutes at most. The
-- browser that started the sign-in holds a cookie whose hash is 'browser_hash' (login CSRF).
-- A 'test' sign-in keeps the claims received for the admin who started it, and makes no session.
CREATE TABLE sso_login_states (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  state_hash    bytea NOT NULL UNIQUE CHECK (length(state_hash) = 32),
  browser_hash  bytea NOT NULL CHECK (length(browser_hash) = 32),
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  provider_id   uuid NOT NULL REFERENCES identity_providers (id) ON DELETE CASCADE,
  purpose       text NOT NULL CHECK (purpose IN ('signin', 'test')),
  sealed        bytea NOT NULL,
  started_by    uuid,
  created_at    timestamptz NOT NULL,
  expires_at    timestamptz NOT NULL,
  consumed_at   timestamptz,
  test_result   jsonb
);
CREATE INDEX sso_login_states_expiry_idx ON sso_login_states (expires_at);
ALTER TABLE sso_login_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_login_states FORCE ROW LEVEL SECURITY;
CREATE POLICY sso_login_states_isolation ON sso_login_states
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON sso_login_states TO {{app_role}};

-- Sessions made through an IdP remember it, for RP-initiated logout (the ID token is the hint).
ALTER TABLE sessions
  ADD COLUMN idp_provider_id uuid REFERENCES identity_providers (id) ON DELETE SET NULL,
  ADD COLUMN idp_session jsonb;
`;
