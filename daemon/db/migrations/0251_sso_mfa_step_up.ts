/**
 * The per-role MFA policy of sign-ins through an IdP gets its step-up half (docs/sso.md "MFA from
 * the IdP"): `step_up` 'idp' lets a person confirm a sensitive action by signing in again at the
 * IdP; 'local' asks for the local authenticator code. Until now the sign-in mode decided both, so
 * existing rows keep that: 'local' sign-in steps up locally. A role whose sign-in asks for the
 * local code cannot step up at the IdP (its word does not count as a second factor there).
 */
export const sql = /* sql */ `
ALTER TABLE sso_mfa_policy ADD COLUMN step_up text NOT NULL DEFAULT 'idp' CHECK (step_up IN ('idp', 'local'));
UPDATE sso_mfa_policy SET step_up = 'local' WHERE mode = 'local';
ALTER TABLE sso_mfa_policy ADD CONSTRAINT sso_mfa_policy_local_steps_up_locally CHECK (NOT (mode = 'local' AND step_up = 'idp'));
`;
