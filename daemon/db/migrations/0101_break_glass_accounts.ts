/**
 * Break-glass local accounts (docs/sso.md, "Local sign-in and break-glass accounts"): once a
 * tenant signs in through its identity provider, it may turn local password sign-in off for
 * everyone but a few flagged accounts, which keep password + TOTP for the day every IdP is down.
 */
export const sql = /* sql */ `
ALTER TABLE tenants
  ADD COLUMN local_sign_in text NOT NULL DEFAULT 'everyone' CHECK (local_sign_in IN ('everyone', 'break_glass_only'));
-- Only people with an authenticator can be break-glass accounts (checked by the service; the flag
-- on a service account would mean nothing).
ALTER TABLE users
  ADD COLUMN break_glass_account boolean NOT NULL DEFAULT false,
  ADD CONSTRAINT users_break_glass_humans CHECK (NOT break_glass_account OR (kind = 'human' AND tenant_id IS NOT NULL));
`;
