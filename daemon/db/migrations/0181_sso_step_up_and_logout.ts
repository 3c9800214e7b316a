/**
 * Step-up at the identity provider and OIDC back-channel logout (docs/sso.md).
 *
 * - `sso_login_states` also records step-ups: a person already signed in through an IdP signs in
 *   there again (`prompt=login`, `max_age=0`) to prove a fresh second factor for a sensitive
 *   action. `session_id` names the session whose step-up time the answer refreshes.
 * - `sso_logout_tokens`: the `jti` of every back-channel logout token accepted, per provider, until
 *   the token would have expired anyway, so a replayed token is refused on every replica.
 */
export const sql = /* sql */ `
ALTER TABLE sso_login_states DROP CONSTRAINT sso_login_states_purpose_check;
ALTER TABLE sso_login_states ADD CONSTRAINT sso_login_states_purpose_check CHECK (purpose IN ('signin', 'test', 'step_up'));
ALTER TABLE sso_login_states ADD COLUMN session_id uuid REFERENCES sessions (id) ON DELETE CASCADE;
ALTER TABLE sso_login_states ADD CONSTRAINT sso_login_states_step_up_session CHECK ((purpose = 'step_up') = (session_id IS NOT NULL));

CREATE TABLE sso_logout_tokens (
  provider_id uuid NOT NULL REFERENCES identity_providers (id) ON DELETE CASCADE,
  jti         text NOT NULL CHECK (length(jti) BETWEEN 1 AND 200),
  tenant_id   uuid NOT NULL REFERENCES tenants (id),
  seen_at     timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL,
  PRIMARY KEY (provider_id, jti)
);
CREATE INDEX sso_logout_tokens_expiry_idx ON sso_logout_tokens (provider_id, expires_at);
ALTER TABLE sso_logout_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_logout_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY sso_logout_tokens_isolation ON sso_logout_tokens
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, DELETE ON sso_logout_tokens TO {{app_role}};

-- Back-channel logout finds the sessions of an IdP session by its sid.
CREATE INDEX sessions_idp_sid_idx ON sessions (idp_provider_id, (idp_session ->> 'sid')) WHERE revoked_at IS NULL AND idp_provider_id IS NOT NULL;
`;
