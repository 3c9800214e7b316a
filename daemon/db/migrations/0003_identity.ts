/**
 * Identity and access: account state (MFA, deactivation, service accounts), per-tenant security
 * settings, sessions, API tokens, invites, sign-in throttling, recovery codes, support access,
 * break-glass, care teams and admin notifications. Every tenant table: ENABLE + FORCE ROW LEVEL
 * SECURITY with a policy on app_tenant_id() / app_is_appliance_scope() (migration 0001).
 */
export const sql = /* sql */ `
-- Accounts ------------------------------------------------------------------------------------
-- Service accounts (clinical applications) have no email and no usable password; they act only
-- through API tokens and never hold an administrative role (least privilege).
ALTER TABLE users ALTER COLUMN email DROP NOT NULL;
ALTER TABLE users
  ADD COLUMN kind text NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'service')),
  ADD COLUMN display_name text CHECK (display_name IS NULL OR length(display_name) BETWEEN 1 AND 200),
  -- TOTP secrets are AES-256-GCM sealed under a key derived from the root KEK (daemon/auth/secret-box.ts):
  -- a database read alone does not yield a second factor.
  ADD COLUMN mfa_secret bytea,
  ADD COLUMN mfa_pending_secret bytea,
  ADD COLUMN mfa_enrolled_at timestamptz,
  -- RFC 6238 section 5.2: a code is accepted once; later codes must come from a later time step.
  ADD COLUMN mfa_last_step bigint,
  ADD COLUMN password_changed_at timestamptz,
  ADD COLUMN deactivated_at timestamptz,
  ADD COLUMN deactivated_reason text CHECK (deactivated_reason IS NULL OR length(deactivated_reason) <= 200),
  ADD CONSTRAINT users_email_unless_service CHECK (kind = 'service' OR email IS NOT NULL),
  ADD CONSTRAINT users_service_accounts_least_privilege
    CHECK (kind = 'human' OR (tenant_id IS NOT NULL AND role IN ('practitioner', 'front_desk', 'auditor')));

-- Per-tenant security settings; NULL means the appliance default from config.
ALTER TABLE tenants
  ADD COLUMN mfa_required boolean NOT NULL DEFAULT false,
  -- 45 CFR 164.312(a)(2)(iii) automatic logoff: 5 minutes to 4 hours.
  ADD COLUMN idle_timeout_minutes integer CHECK (idle_timeout_minutes IS NULL OR idle_timeout_minutes BETWEEN 5 AND 240),
  ADD COLUMN inactive_user_days integer CHECK (inactive_user_days IS NULL OR inactive_user_days BETWEEN 7 AND 3650),
  ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Tenant admins change their own tenant's security settings, so UPDATE is no longer appliance-only;
-- creating tenants still is.
DROP POLICY tenants_isolation ON tenants;
CREATE POLICY tenants_read ON tenants FOR SELECT
  USING (app_is_appliance_scope() OR id = app_tenant_id());
CREATE POLICY tenants_create ON tenants FOR INSERT
  WITH CHECK (app_is_appliance_scope());
CREATE POLICY tenants_update ON tenants FOR UPDATE
  USING (app_is_appliance_scope() OR id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR id = app_tenant_id());

-- Sessions ------------------------------------------------------------------------------------
-- Only the SHA-256 of the cookie's random token is stored: a database read cannot hijack a session.
CREATE TABLE sessions (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  token_hash         bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  user_id            uuid NOT NULL REFERENCES users (id),
  tenant_id          uuid REFERENCES tenants (id),
  stage              text NOT NULL CHECK (stage IN ('mfa_required', 'mfa_enrollment_required', 'active')),
  created_at         timestamptz NOT NULL,
  last_seen_at       timestamptz NOT NULL,
  expires_at         timestamptz NOT NULL,
  mfa_verified_at    timestamptz,
  revoked_at         timestamptz,
  revoked_reason     text,
  support_request_id uuid,
  source_ip          text,
  user_agent         text CHECK (user_agent IS NULL OR length(user_agent) <= 512)
);
CREATE INDEX sessions_user_idx ON sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX sessions_tenant_idx ON sessions (tenant_id);
ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY sessions_isolation ON sessions
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON sessions TO {{app_role}};

-- API tokens of service accounts -------------------------------------------------------------
CREATE TABLE api_tokens (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  user_id      uuid NOT NULL REFERENCES users (id),
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  token_prefix text NOT NULL,
  token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  scopes       text[] NOT NULL,
  created_by   uuid NOT NULL REFERENCES users (id),
  created_at   timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL,
  revoked_at   timestamptz,
  last_used_at timestamptz
);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id);
ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY api_tokens_isolation ON api_tokens
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON api_tokens TO {{app_role}};

-- Invites ---------------------------------------------------------------------------------------
CREATE TABLE invites (
  id               uuid PRIMARY KEY,
  tenant_id        uuid REFERENCES tenants (id),
  email            text NOT NULL CHECK (email = lower(email) AND length(email) <= 254),
  role             text NOT NULL CHECK (role IN ('super_admin', 'owner', 'admin', 'practitioner', 'front_desk', 'auditor', 'support')),
  token_hash       bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  created_by       uuid NOT NULL REFERENCES users (id),
  created_at       timestamptz NOT NULL,
  expires_at       timestamptz NOT NULL,
  accepted_at      timestamptz,
  accepted_user_id uuid REFERENCES users (id),
  revoked_at       timestamptz,
  CHECK ((role IN ('super_admin', 'support')) = (tenant_id IS NULL))
);
CREATE INDEX invites_tenant_idx ON invites (tenant_id);
ALTER TABLE invites ENABLE ROW LEVEL SECURITY;
ALTER TABLE invites FORCE ROW LEVEL SECURITY;
CREATE POLICY invites_isolation ON invites
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON invites TO {{app_role}};

-- Sign-in throttling ------------------------------------------------------------------------------
-- Shared by every replica. Buckets name an account by the SHA-256 of its email, whether or not the
-- account exists, so the table neither stores addresses nor reveals which ones are real.
CREATE TABLE auth_throttle (
  bucket            text PRIMARY KEY CHECK (length(bucket) <= 200),
  window_started_at timestamptz NOT NULL,
  failures          integer NOT NULL DEFAULT 0,
  locked_until      timestamptz
);
GRANT SELECT, INSERT, UPDATE, DELETE ON auth_throttle TO {{app_role}};

-- MFA recovery codes: SHA-256 of 80-bit random codes, single use.
CREATE TABLE mfa_recovery_codes (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id    uuid NOT NULL REFERENCES users (id),
  tenant_id  uuid REFERENCES tenants (id),
  code_hash  bytea NOT NULL CHECK (length(code_hash) = 32),
  created_at timestamptz NOT NULL,
  used_at    timestamptz
);
CREATE INDEX mfa_recovery_codes_user_idx ON mfa_recovery_codes (user_id);
ALTER TABLE mfa_recovery_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE mfa_recovery_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY mfa_recovery_codes_isolation ON mfa_recovery_codes
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON mfa_recovery_codes TO {{app_role}};

-- Support access: appliance support staff act inside a tenant only under an approved request.
CREATE TABLE support_requests (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  requested_by  uuid NOT NULL REFERENCES users (id),
  ticket_ref    text NOT NULL CHECK (ticket_ref ~ '^[A-Za-z0-9._:#/-]{1,64}$'),
  reason        text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'ended')),
  created_at    timestamptz NOT NULL,
  decided_by    uuid REFERENCES users (id),
  decided_at    timestamptz,
  expires_at    timestamptz,
  ended_at      timestamptz
);
CREATE INDEX support_requests_tenant_idx ON support_requests (tenant_id, created_at DESC);
ALTER TABLE support_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE support_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY support_requests_isolation ON support_requests
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON support_requests TO {{app_role}};
ALTER TABLE sessions ADD CONSTRAINT sessions_support_request_fk FOREIGN KEY (support_request_id) REFERENCES support_requests (id);

-- Care teams: which practitioners are assigned to which patient. patient_id references the
-- records capability's patients table (its migration adds the foreign key).
CREATE TABLE care_team_assignments (
  tenant_id   uuid NOT NULL REFERENCES tenants (id),
  patient_id  uuid NOT NULL,
  user_id     uuid NOT NULL REFERENCES users (id),
  assigned_by uuid NOT NULL REFERENCES users (id),
  assigned_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, patient_id, user_id)
);
CREATE INDEX care_team_user_idx ON care_team_assignments (tenant_id, user_id);
ALTER TABLE care_team_assignments ENABLE ROW LEVEL SECURITY;
ALTER TABLE care_team_assignments FORCE ROW LEVEL SECURITY;
CREATE POLICY care_team_assignments_isolation ON care_team_assignments
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, DELETE ON care_team_assignments TO {{app_role}};

-- Break-glass: time-limited access outside the care team, with a reason.
CREATE TABLE break_glass_grants (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id  uuid NOT NULL REFERENCES tenants (id),
  user_id    uuid NOT NULL REFERENCES users (id),
  patient_id uuid NOT NULL,
  reason     text NOT NULL CHECK (length(reason) BETWEEN 10 AND 1000),
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  ended_at   timestamptz
);
CREATE INDEX break_glass_lookup_idx ON break_glass_grants (tenant_id, user_id, patient_id, expires_at);
ALTER TABLE break_glass_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE break_glass_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY break_glass_grants_isolation ON break_glass_grants
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON break_glass_grants TO {{app_role}};

-- What a tenant's admins must see: break-glass use, support requests. Ids only, never PHI.
CREATE TABLE admin_notifications (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id       uuid NOT NULL REFERENCES tenants (id),
  kind            text NOT NULL CHECK (kind IN ('break_glass', 'support_request')),
  actor_user_id   uuid REFERENCES users (id),
  subject_id      uuid,
  patient_id      uuid,
  created_at      timestamptz NOT NULL,
  acknowledged_at timestamptz,
  acknowledged_by uuid REFERENCES users (id)
);
CREATE INDEX admin_notifications_tenant_idx ON admin_notifications (tenant_id, created_at DESC);
ALTER TABLE admin_notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE admin_notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY admin_notifications_isolation ON admin_notifications
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON admin_notifications TO {{app_role}};
`;
