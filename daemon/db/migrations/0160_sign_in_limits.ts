/**
 * Sign-in limits behind a proxy or NAT (docs/hardening.md "Sign-in limits").
 *
 * - `auth_throttle.strikes`: how many times a bucket has been locked without a quiet window in
 *   between; an address that keeps spraying is refused for longer each time (adaptive limit).
 * - `auth_known_devices`: browsers that proved an account's password, named by the SHA-256 of a
 *   random device cookie. A recognised browser is exempt from the per-address limit and from a
 *   lockout that someone else's guesses caused, so a ward behind one address keeps signing in
 *   while an attacker at the same address is refused. Ids and hashes only.
 */
export const sql = /* sql */ `
ALTER TABLE auth_throttle ADD COLUMN strikes integer NOT NULL DEFAULT 0;

CREATE TABLE auth_known_devices (
  device_hash     bytea NOT NULL CHECK (length(device_hash) = 32),
  user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  tenant_id       uuid REFERENCES tenants (id) ON DELETE CASCADE,
  last_success_at timestamptz NOT NULL,
  PRIMARY KEY (device_hash, user_id)
);
CREATE INDEX auth_known_devices_user ON auth_known_devices (user_id, last_success_at);
ALTER TABLE auth_known_devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_known_devices FORCE ROW LEVEL SECURITY;
CREATE POLICY auth_known_devices_isolation ON auth_known_devices
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON auth_known_devices TO {{app_role}};
`;
