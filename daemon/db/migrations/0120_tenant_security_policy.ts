/**
 * A tenant's security policy beyond MFA-for-everyone and the idle timeout (docs/identity-and-access.md
 * "Security policy"): MFA enforced per role, a longer minimum password length, its own lockout
 * thresholds and TOTP drift window. NULL means the appliance default from config; the CHECKs hold
 * the same bounds as the API so no path stores a weaker policy than the API would accept.
 */
export const sql = /* sql */ `
ALTER TABLE tenants
  ADD COLUMN mfa_roles text[] NOT NULL DEFAULT '{}'
    CHECK (mfa_roles <@ ARRAY['owner', 'admin', 'practitioner', 'front_desk', 'auditor']::text[]),
  ADD COLUMN password_min_length integer CHECK (password_min_length BETWEEN 12 AND 128),
  ADD COLUMN lockout_max_failures integer CHECK (lockout_max_failures BETWEEN 3 AND 50),
  ADD COLUMN lockout_minutes integer CHECK (lockout_minutes BETWEEN 1 AND 1440),
  ADD COLUMN totp_window_steps integer CHECK (totp_window_steps BETWEEN 0 AND 2);
`;
