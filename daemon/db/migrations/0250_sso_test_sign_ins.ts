/**
 * Test sign-ins through SAML and LDAP providers (docs/sso.md "Test sign-in"), kept where the OIDC
 * ones are: a `sso_login_states` row of purpose 'test' holds what the IdP sent for the admin who
 * started it. Only an OIDC sign-in has a state, a browser binding and a sealed nonce/verifier; a
 * SAML test's request lives in `saml_requests` (which now names its test), and an LDAP test is
 * one call with no browser round trip, so those columns may be empty for a test.
 */
export const sql = /* sql */ `
ALTER TABLE sso_login_states
  ALTER COLUMN state_hash DROP NOT NULL,
  ALTER COLUMN browser_hash DROP NOT NULL,
  ALTER COLUMN sealed DROP NOT NULL;
ALTER TABLE sso_login_states ADD CONSTRAINT sso_login_states_flow_state
  CHECK (purpose = 'test' OR (state_hash IS NOT NULL AND browser_hash IS NOT NULL AND sealed IS NOT NULL));

-- A SAML AuthnRequest made for a test sign-in: its response fills the test, never makes a session.
ALTER TABLE saml_requests ADD COLUMN test_id uuid REFERENCES sso_login_states (id) ON DELETE CASCADE;
`;
