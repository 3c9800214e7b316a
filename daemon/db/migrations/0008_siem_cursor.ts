/**
 * SIEM forwarding's durable cursor (daemon/audit/siem.ts, docs/audit-format.md, SIEM forwarding).
 *
 * One row: the last sequence number the forwarder saw accepted by the collector's TLS socket. After
 * a collector outage, a restart or a replica failover the forwarder resends from the chain itself,
 * from `seq + 1`, in order, so no event is skipped however long the collector was away. Only the
 * replica holding the forwarder's advisory lock writes it (owner role); every replica reads it for
 * the lag metrics (app role). `seq` NULL: forwarding never ran, and the first forwarder starts at
 * `audit.siem.startFrom` (the chain head, or the oldest retained event).
 * `lag_alert_raised_at` keeps the lag alert raised once across replicas and restarts.
 */
export const sql = `
CREATE TABLE audit_siem_cursor (
  id                  boolean PRIMARY KEY DEFAULT true CHECK (id),
  seq                 bigint CHECK (seq >= 0),
  acked_at            timestamptz,
  lag_alert_raised_at timestamptz
);
INSERT INTO audit_siem_cursor (seq) VALUES (NULL);
ALTER TABLE audit_siem_cursor ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_siem_cursor FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_siem_cursor_appliance ON audit_siem_cursor
  USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT ON audit_siem_cursor TO {{app_role}};
`;
