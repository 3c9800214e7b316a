/**
 * Webhooks following Standard Webhooks 1.0 (docs/webhooks.md).
 *
 * Outbound:
 * - `webhook_allowed_hosts`: the destinations the appliance's operators approved (host and port,
 *   and whether private or loopback addresses may be reached), appliance-wide so that no tenant
 *   admin can point a webhook at the hospital network to probe it. Everyone reads it; only
 *   appliance scope writes it.
 * - `webhook_endpoints`: a tenant's subscriptions (tenant_id NULL: the appliance's own, for
 *   snapshot and drill events). Secrets are AES-256-GCM sealed under a key derived from the root
 *   key (daemon/webhooks/secrets.ts); during a rotation the previous secret stays until
 *   `previous_secret_expires_at` and both signatures are sent.
 * - `webhook_messages`: one row per published event that at least one endpoint subscribes to; the
 *   id is the `webhook-id` header, the same on every retry and replay. `body` is the exact JSON
 *   that is signed and sent (text, not jsonb, so every retry sends the same bytes); ids only.
 * - `webhook_deliveries`: one row per message and endpoint; the worker claims due rows with
 *   FOR UPDATE SKIP LOCKED, so replicas share the work without sending anything twice.
 * - `webhook_attempts`: the delivery log, one row per HTTP attempt.
 *
 * Inbound:
 * - `webhook_sources`: a tenant's senders (consent form service, EHR event source) with their
 *   sealed secret and rate limit; `webhook_inbound_messages` is the replay store and received log;
 *   `webhook_inbound_rate` the per-source counter (in PostgreSQL so it holds across replicas).
 */
export const sql = /* sql */ `
CREATE TABLE webhook_allowed_hosts (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  host          text NOT NULL CHECK (host = lower(host) AND host ~ '^[a-z0-9.:\\[\\]-]{1,253}$'),
  port          integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
  allow_private boolean NOT NULL DEFAULT false,
  note          text CHECK (length(note) <= 200),
  approved_by   uuid,
  approved_at   timestamptz NOT NULL,
  UNIQUE (host, port)
);
ALTER TABLE webhook_allowed_hosts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_allowed_hosts FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_allowed_hosts_read ON webhook_allowed_hosts FOR SELECT USING (true);
CREATE POLICY webhook_allowed_hosts_write ON webhook_allowed_hosts USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_allowed_hosts TO {{app_role}};

CREATE TABLE webhook_endpoints (
  id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id                  uuid REFERENCES tenants (id),
  url                        text NOT NULL CHECK (length(url) <= 2000),
  description                text CHECK (length(description) <= 200),
  event_types                text[] NOT NULL CHECK (cardinality(event_types) >= 1),
  status                     text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
  disabled_reason            text CHECK (disabled_reason IN ('gone', 'admin')),
  disabled_at                timestamptz,
  secret_version             integer NOT NULL DEFAULT 1,
  secret                     bytea NOT NULL,
  previous_secret            bytea,
  previous_secret_version    integer,
  previous_secret_expires_at timestamptz,
  created_by                 uuid,
  created_at                 timestamptz NOT NULL,
  updated_at                 timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id);
ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_endpoints_isolation ON webhook_endpoints
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints TO {{app_role}};

CREATE TABLE webhook_messages (
  id         text PRIMARY KEY CHECK (id ~ '^msg_[0-9A-Za-z]{16,40}$'),
  tenant_id  uuid REFERENCES tenants (id),
  event_type text NOT NULL CHECK (event_type ~ '^[a-z_]+\\.[a-z_]+$'),
  body       text NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE INDEX webhook_messages_tenant_idx ON webhook_messages (tenant_id, created_at);
ALTER TABLE webhook_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_messages_isolation ON webhook_messages
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, DELETE ON webhook_messages TO {{app_role}};

CREATE TABLE webhook_deliveries (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  message_id       text NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
  endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
  tenant_id        uuid REFERENCES tenants (id),
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead', 'replayed')),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz,
  claimed_until    timestamptz,
  last_status_code integer,
  last_error       text CHECK (length(last_error) <= 300),
  dead_reason      text CHECK (dead_reason IN ('exhausted', 'gone', 'destination_refused')),
  replay_of        uuid REFERENCES webhook_deliveries (id) ON DELETE SET NULL,
  created_at       timestamptz NOT NULL,
  finished_at      timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_dead_idx ON webhook_deliveries (tenant_id, finished_at DESC) WHERE status = 'dead';
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_deliveries_isolation ON webhook_deliveries
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_deliveries TO {{app_role}};

CREATE TABLE webhook_attempts (
  delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
  attempt     integer NOT NULL,
  tenant_id   uuid REFERENCES tenants (id),
  started_at  timestamptz NOT NULL,
  duration_ms integer NOT NULL,
  status_code integer,
  outcome     text NOT NULL CHECK (outcome IN ('delivered', 'failed', 'gone', 'refused')),
  error       text CHECK (length(error) <= 300),
  next_attempt_at timestamptz,
  PRIMARY KEY (delivery_id, attempt)
);
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_attempts_isolation ON webhook_attempts
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, DELETE ON webhook_attempts TO {{app_role}};

CREATE TABLE webhook_sources (
  id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id                  uuid NOT NULL REFERENCES tenants (id),
  name                       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  kind                       text NOT NULL CHECK (kind IN ('consent_forms', 'ehr_events', 'other')),
  status                     text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
  rate_limit_per_minute      integer NOT NULL CHECK (rate_limit_per_minute BETWEEN 1 AND 100000),
  secret_version             integer NOT NULL DEFAULT 1,
  secret                     bytea NOT NULL,
  previous_secret            bytea,
  previous_secret_version    integer,
  previous_secret_expires_at timestamptz,
  created_by                 uuid,
  created_at                 timestamptz NOT NULL,
  updated_at                 timestamptz NOT NULL
);
CREATE INDEX webhook_sources_tenant_idx ON webhook_sources (tenant_id);
ALTER TABLE webhook_sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_sources FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_sources_isolation ON webhook_sources
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_sources TO {{app_role}};

CREATE TABLE webhook_inbound_messages (
  source_id   uuid NOT NULL REFERENCES webhook_sources (id) ON DELETE CASCADE,
  message_id  text NOT NULL CHECK (length(message_id) BETWEEN 1 AND 200),
  tenant_id   uuid NOT NULL REFERENCES tenants (id),
  event_type  text CHECK (length(event_type) <= 100),
  body_bytes  integer NOT NULL,
  signed_at   timestamptz NOT NULL,
  received_at timestamptz NOT NULL,
  PRIMARY KEY (source_id, message_id)
);
CREATE INDEX webhook_inbound_messages_received_idx ON webhook_inbound_messages (tenant_id, received_at DESC);
ALTER TABLE webhook_inbound_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_inbound_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_inbound_messages_isolation ON webhook_inbound_messages
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, DELETE ON webhook_inbound_messages TO {{app_role}};

CREATE TABLE webhook_inbound_rate (
  source_id    uuid PRIMARY KEY REFERENCES webhook_sources (id) ON DELETE CASCADE,
  window_start timestamptz NOT NULL,
  count        integer NOT NULL
);
ALTER TABLE webhook_inbound_rate ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_inbound_rate FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_inbound_rate_appliance ON webhook_inbound_rate USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_inbound_rate TO {{app_role}};
`;
