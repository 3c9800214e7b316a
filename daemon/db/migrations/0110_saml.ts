/**
 * SAML 2.0 sign-in (docs/sso.md "SAML 2.0"): the AuthnRequests in flight (so the replica that
 * receives the response knows the request, and the browser that made it), and the replay cache of
 * assertion ids (an assertion is accepted once per provider until it expires, on every replica).
 * Both are tenant tables: ENABLE + FORCE ROW LEVEL SECURITY on app_tenant_id().
 */
export const sql = /* sql */ `
CREATE TABLE saml_requests (
  request_id   text PRIMARY KEY CHECK (length(request_id) BETWEEN 1 AND 200),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  provider_id  uuid NOT NULL REFERENCES identity_providers (id) ON DELETE CASCADE,
  -- SHA-256 of the random value in the browser's __Host-wardkeep_saml cookie.
  browser_hash bytea NOT NULL CHECK (length(browser_hash) = 32),
  created_at   timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL,
  -- Set when a response named this request: a second response to it is a replay.
  consumed_at  timestamptz
);
CREATE INDEX saml_requests_provider_expiry_idx ON saml_requests (provider_id, expires_at);
ALTER TABLE saml_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE saml_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY saml_requests_isolation ON saml_requests
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON saml_requests TO {{app_role}};

CREATE TABLE saml_assertion_ids (
  provider_id  uuid NOT NULL REFERENCES identity_providers (id) ON DELETE CASCADE,
  assertion_id text NOT NULL CHECK (length(assertion_id) BETWEEN 1 AND 200),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  seen_at      timestamptz NOT NULL,
  -- Kept until the assertion could no longer be accepted anyway (NotOnOrAfter, or its maximum age, plus skew).
  expires_at   timestamptz NOT NULL,
  PRIMARY KEY (provider_id, assertion_id)
);
CREATE INDEX saml_assertion_ids_expiry_idx ON saml_assertion_ids (provider_id, expires_at);
ALTER TABLE saml_assertion_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE saml_assertion_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY saml_assertion_ids_isolation ON saml_assertion_ids
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON saml_assertion_ids TO {{app_role}};
`;
