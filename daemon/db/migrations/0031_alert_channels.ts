/**
 * Where alerts go (daemon/alerts/channels.ts, docs/alerts.md "Channels").
 *
 * - `alert_channels`: an e-mail relay (SMTP) or a syslog collector (RFC 5424 over TLS), of the
 *   appliance (`tenant_id` NULL: appliance alerts) or of one tenant (that tenant's alerts), with
 *   the lowest severity it takes and how often an open alert is sent again. The SMTP password is
 *   sealed under a key derived from the root key (`secret`); the API never returns it.
 * - `alert_deliveries`: one message of one alert to one channel (`raised`, `reminder`,
 *   `resolved`), queued in the transaction that raised or resolved the alert, retried on a
 *   schedule, and kept as the alert's history of where it went.
 */
export const sql = `
CREATE TABLE alert_channels (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid REFERENCES tenants (id),
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  type          text NOT NULL CHECK (type IN ('email', 'syslog')),
  settings      jsonb NOT NULL CHECK (jsonb_typeof(settings) = 'object'),
  secret        bytea,
  min_severity  text NOT NULL DEFAULT 'warning' CHECK (min_severity IN ('info', 'warning', 'critical')),
  resend_minutes integer NOT NULL DEFAULT 240 CHECK (resend_minutes BETWEEN 0 AND 10080),
  enabled       boolean NOT NULL DEFAULT true,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL,
  last_success_at timestamptz,
  last_failure_at timestamptz,
  last_error    text CHECK (length(last_error) <= 500)
);
CREATE UNIQUE INDEX alert_channels_name ON alert_channels ((coalesce(tenant_id::text, '')), lower(name));
ALTER TABLE alert_channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_channels FORCE ROW LEVEL SECURITY;
CREATE POLICY alert_channels_isolation ON alert_channels
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_channels TO {{app_role}};

CREATE TABLE alert_deliveries (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  alert_id        bigint NOT NULL REFERENCES alerts (id),
  channel_id      uuid NOT NULL REFERENCES alert_channels (id) ON DELETE CASCADE,
  tenant_id       uuid REFERENCES tenants (id),
  event           text NOT NULL CHECK (event IN ('raised', 'reminder', 'resolved')),
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL,
  created_at      timestamptz NOT NULL,
  sent_at         timestamptz,
  last_error      text CHECK (length(last_error) <= 500)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id, id);
CREATE INDEX alert_deliveries_channel ON alert_deliveries (channel_id, alert_id, created_at DESC);
ALTER TABLE alert_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY alert_deliveries_isolation ON alert_deliveries
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON alert_deliveries TO {{app_role}};
`;
