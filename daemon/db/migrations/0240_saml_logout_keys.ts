/**
 * SAML single logout, encrypted assertions and step-up at a SAML IdP (docs/sso.md "SAML 2.0").
 *
 * - `saml_requests.purpose`: what the request the IdP answers was for: a sign-in (`signin`), the
 *   appliance's LogoutRequest (`logout`: its LogoutResponse must name it) or a step-up
 *   (`step_up`: an AuthnRequest with ForceAuthn for the session `session_id`, after which the
 *   browser returns to `return_to`). A response is handled as its request's purpose says, so a
 *   step-up answer can never open a session, nor a sign-in answer refresh one.
 * - `saml_sp_keys`: the service provider's own key pairs per provider, made on first use: one
 *   signs the LogoutRequests and LogoutResponses (and AuthnRequests), the other decrypts encrypted
 *   assertions. The private key is sealed under a key derived from the root key and bound to the
 *   provider and purpose (as provider secrets are); the self-signed certificate is public and goes
 *   into the SP metadata.
 * - Sessions made through a SAML IdP are found by the IdP's NameID when it logs the person out.
 */
export const sql = /* sql */ `
ALTER TABLE saml_requests
  ADD COLUMN purpose text NOT NULL DEFAULT 'signin' CHECK (purpose IN ('signin', 'logout', 'step_up')),
  ADD COLUMN session_id uuid REFERENCES sessions (id) ON DELETE CASCADE,
  ADD COLUMN return_to text CHECK (length(return_to) <= 512),
  ADD CONSTRAINT saml_requests_step_up_session CHECK ((purpose = 'step_up') = (session_id IS NOT NULL));

CREATE TABLE saml_sp_keys (
  provider_id  uuid NOT NULL REFERENCES identity_providers (id) ON DELETE CASCADE,
  purpose      text NOT NULL CHECK (purpose IN ('signing', 'encryption')),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  -- PKCS#8 PEM, AES-256-GCM sealed (daemon/sso/secrets.ts, purpose sp-key).
  sealed_key   bytea NOT NULL,
  certificate  text NOT NULL,
  created_at   timestamptz NOT NULL,
  PRIMARY KEY (provider_id, purpose)
);
ALTER TABLE saml_sp_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE saml_sp_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY saml_sp_keys_isolation ON saml_sp_keys
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT ON saml_sp_keys TO {{app_role}};

CREATE INDEX sessions_idp_name_id_idx ON sessions (idp_provider_id, (idp_session ->> 'nameId')) WHERE revoked_at IS NULL AND idp_provider_id IS NOT NULL;
`;
