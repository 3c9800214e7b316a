/**
 * The one alert store (daemon/alerts/, docs/alerts.md).
 *
 * - `alerts`: one row per occurrence of a problem, appliance-wide (`tenant_id` NULL) or of one
 *   tenant. While it is open (`resolved_at` NULL) there is one row per (scope, kind, key): raising
 *   it again bumps `last_seen` and `occurrences`, it does not add a row. Once resolved, the row is
 *   history and the next raise opens a new one. `summary` is a sentence for people and `details`
 *   ids and counts, never PHI. An acknowledgement (who, when, a note) keeps the alert open: only
 *   the detector that raised it resolves it.
 * - The backup alerts (`backup_alerts`, migration 0005/0009) and the SIEM lag flag
 *   (`audit_siem_cursor.lag_alert_raised_at`, 0008) move here, history included, so there is one store.
 */
export const sql = `
CREATE TABLE alerts (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id       uuid REFERENCES tenants (id),
  scope_key       text GENERATED ALWAYS AS (coalesce(tenant_id::text, '')) STORED,
  kind            text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)*$' AND length(kind) <= 64),
  key             text NOT NULL DEFAULT '' CHECK (length(key) <= 200),
  severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  summary         text NOT NULL CHECK (length(summary) BETWEEN 1 AND 1000),
  details         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object'),
  first_seen      timestamptz NOT NULL,
  last_seen       timestamptz NOT NULL,
  occurrences     integer NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
  acknowledged_by uuid,
  acknowledged_at timestamptz,
  ack_note        text CHECK (length(ack_note) <= 1000),
  resolved_at     timestamptz
);
CREATE UNIQUE INDEX alerts_open ON alerts (scope_key, kind, key) WHERE resolved_at IS NULL;
CREATE INDEX alerts_history ON alerts (last_seen DESC, id DESC);
CREATE INDEX alerts_tenant ON alerts (tenant_id, last_seen DESC) WHERE tenant_id IS NOT NULL;
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY alerts_isolation ON alerts
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON alerts TO {{app_role}};

SELECT set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true);
INSERT INTO alerts (kind, key, severity, summary, first_seen, last_seen, resolved_at)
SELECT 'backup.' || kind, subject,
       CASE WHEN kind IN ('snapshot_stale', 'drill_stale', 'not_configured', 'snapshot_appeared', 'attachment_missing') THEN 'warning' ELSE 'critical' END,
       detail, raised_at, coalesce(cleared_at, raised_at), cleared_at
  FROM backup_alerts ORDER BY id;
DROP TABLE backup_alerts;

INSERT INTO alerts (kind, severity, summary, first_seen, last_seen)
SELECT 'audit.siem_lag', 'warning', 'audit events are not reaching the SIEM collector', lag_alert_raised_at, lag_alert_raised_at
  FROM audit_siem_cursor WHERE lag_alert_raised_at IS NOT NULL;
ALTER TABLE audit_siem_cursor DROP COLUMN lag_alert_raised_at;
`;
