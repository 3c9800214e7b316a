/**
 * Just-in-time privileged access (docs/sso.md, "Just-in-time privileged access"): a person asks
 * for a privileged role for a bounded time with a reason, a second admin approves, and the grant
 * ends by itself. The session lookup reads the grant on every request (expires_at against the
 * request's clock), so expiry takes effect on every replica without waiting for the job that
 * marks and audits it.
 */
export const sql = /* sql */ `
CREATE TABLE privileged_access_grants (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  user_id      uuid NOT NULL REFERENCES users (id),
  role         text NOT NULL CHECK (role IN ('admin', 'auditor')),
  reason       text NOT NULL CHECK (length(reason) BETWEEN 10 AND 500),
  minutes      integer NOT NULL CHECK (minutes BETWEEN 5 AND 1440),
  status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'ended')),
  requested_at timestamptz NOT NULL,
  decided_by   uuid REFERENCES users (id),
  decided_at   timestamptz,
  expires_at   timestamptz,
  ended_at     timestamptz,
  end_reason   text CHECK (end_reason IS NULL OR end_reason IN ('expired', 'ended-early', 'account-deactivated')),
  CHECK (decided_by IS NULL OR decided_by <> user_id),
  CHECK ((status = 'approved') <= (expires_at IS NOT NULL))
);
-- At most one open request or grant per person: the session lookup reads a single row.
CREATE UNIQUE INDEX privileged_access_open_idx ON privileged_access_grants (user_id) WHERE status IN ('pending', 'approved');
CREATE INDEX privileged_access_tenant_idx ON privileged_access_grants (tenant_id, requested_at DESC);
ALTER TABLE privileged_access_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE privileged_access_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY privileged_access_grants_isolation ON privileged_access_grants
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON privileged_access_grants TO {{app_role}};
`;
