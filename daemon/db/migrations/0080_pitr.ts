/**
 * Point-in-time recovery catalogue (docs/backups.md "Point-in-time recovery"), appliance scope only.
 *
 * - `pitr_wal`: one row per archived WAL file and target it was shipped to (the RPO per target
 *   is the age of the newest one there; retention marks rows `pruned`).
 * - `pitr_base_backups`: one row per physical base backup run, with the WAL range it needs.
 * - `pitr_drills`: point-in-time recovery drills (chosen time, achieved recovery point, RTO, checks).
 */
export const sql = /* sql */ `
CREATE TABLE pitr_wal (
  name         text NOT NULL CHECK (name ~ '^([0-9A-F]{24}(\\.partial|\\.[0-9A-F]{8}\\.backup)?|[0-9A-F]{8}\\.history)$'),
  target       text NOT NULL CHECK (length(target) BETWEEN 1 AND 40),
  archived_at  timestamptz NOT NULL,
  shipped_at   timestamptz NOT NULL,
  stored_bytes bigint NOT NULL,
  pruned_at    timestamptz,
  PRIMARY KEY (target, name)
);
CREATE INDEX pitr_wal_newest ON pitr_wal (target, archived_at DESC);
ALTER TABLE pitr_wal ENABLE ROW LEVEL SECURITY;
ALTER TABLE pitr_wal FORCE ROW LEVEL SECURITY;
CREATE POLICY pitr_wal_appliance ON pitr_wal USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON pitr_wal TO {{app_role}};

CREATE TABLE pitr_base_backups (
  id           text PRIMARY KEY CHECK (id ~ '^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$'),
  status       text NOT NULL CHECK (status IN ('running', 'complete', 'partial', 'failed', 'pruned')),
  trigger      text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'cli')),
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz,
  timeline     int,
  start_lsn    text,
  stop_lsn     text,
  start_wal    text,
  stop_wal     text,
  stored_bytes bigint,
  targets      jsonb NOT NULL DEFAULT '[]',
  phases       jsonb,
  error        text CHECK (length(error) <= 1000)
);
ALTER TABLE pitr_base_backups ENABLE ROW LEVEL SECURITY;
ALTER TABLE pitr_base_backups FORCE ROW LEVEL SECURITY;
CREATE POLICY pitr_base_backups_appliance ON pitr_base_backups USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON pitr_base_backups TO {{app_role}};

CREATE TABLE pitr_drills (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  status        text NOT NULL CHECK (status IN ('running', 'passed', 'failed')),
  target        text NOT NULL,
  started_at    timestamptz NOT NULL,
  finished_at   timestamptz,
  base_backup   text,
  target_time   timestamptz,
  achieved_time timestamptz,
  rto_ms        int,
  checks        jsonb NOT NULL DEFAULT '[]',
  error         text CHECK (length(error) <= 1000)
);
ALTER TABLE pitr_drills ENABLE ROW LEVEL SECURITY;
ALTER TABLE pitr_drills FORCE ROW LEVEL SECURITY;
CREATE POLICY pitr_drills_appliance ON pitr_drills USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON pitr_drills TO {{app_role}};
`;
