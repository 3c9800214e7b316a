/**
 * Backups and recovery drills (DESIGN "Backups and recovery drills", docs/backups.md).
 *
 * Appliance-level state, no tenant column: only the appliance scope (super-admin work and the
 * scheduler) sees or changes it. The snapshots themselves live on the targets; these tables
 * record what ran, the audit chain head each snapshot captured (a head recorded OUTSIDE the
 * snapshot, which drills verify restored chains against), drill outcomes and open alerts.
 */
export const sql = /* sql */ `
CREATE TABLE backup_policy (
  id                       boolean PRIMARY KEY DEFAULT true CHECK (id),
  enabled                  boolean NOT NULL DEFAULT true,
  snapshot_schedule        text NOT NULL DEFAULT '0 * * * *' CHECK (length(snapshot_schedule) <= 100),
  drill_schedule           text NOT NULL DEFAULT '30 3 * * 0' CHECK (length(drill_schedule) <= 100),
  retention                jsonb NOT NULL DEFAULT '{"hourly": 24, "daily": 14, "weekly": 8, "monthly": 12}',
  -- Target definitions without secrets; secrets are AES-256-GCM under a key derived from the
  -- appliance-internal secret (daemon/backups/policy.ts), so a database dump does not hand out
  -- the off-site storage credentials.
  targets                  jsonb NOT NULL DEFAULT '[]',
  target_secrets           bytea,
  snapshot_max_age_minutes integer NOT NULL DEFAULT 180 CHECK (snapshot_max_age_minutes BETWEEN 5 AND 100000),
  drill_max_age_days       integer NOT NULL DEFAULT 8 CHECK (drill_max_age_days BETWEEN 1 AND 366),
  object_lock_days         integer NOT NULL DEFAULT 0 CHECK (object_lock_days BETWEEN 0 AND 36500),
  created_at               timestamptz NOT NULL DEFAULT now(),
  updated_at               timestamptz NOT NULL DEFAULT now(),
  updated_by               uuid
);
INSERT INTO backup_policy DEFAULT VALUES;
ALTER TABLE backup_policy ENABLE ROW LEVEL SECURITY;
ALTER TABLE backup_policy FORCE ROW LEVEL SECURITY;
CREATE POLICY backup_policy_appliance ON backup_policy USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, UPDATE ON backup_policy TO {{app_role}};

CREATE TABLE backup_snapshots (
  -- Order of creation: timestamps tie under a test clock and may step back on a replica.
  seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  id              text PRIMARY KEY CHECK (id ~ '^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$'),
  trigger         text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'cli')),
  status          text NOT NULL CHECK (status IN ('running', 'complete', 'partial', 'failed', 'interrupted')),
  started_at      timestamptz NOT NULL,
  finished_at     timestamptz,
  targets         jsonb NOT NULL DEFAULT '[]',
  tables          integer,
  rows            bigint,
  plain_bytes     bigint,
  stored_bytes    bigint,
  duration_ms     integer,
  phases          jsonb,
  schema_version  text,
  audit_head_seq  bigint,
  audit_head_hash bytea CHECK (audit_head_hash IS NULL OR length(audit_head_hash) = 32),
  verified_at     timestamptz,
  pruned_at       timestamptz,
  error           text CHECK (length(error) <= 1000)
);
ALTER TABLE backup_snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE backup_snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY backup_snapshots_appliance ON backup_snapshots USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON backup_snapshots TO {{app_role}};

CREATE TABLE backup_drills (
  seq          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  trigger      text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'cli')),
  status       text NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'interrupted')),
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz,
  snapshot_id  text,
  target       text,
  rto_ms       integer,
  rpo_ms       bigint,
  phases       jsonb,
  checks       jsonb NOT NULL DEFAULT '[]',
  error        text CHECK (length(error) <= 1000)
);
ALTER TABLE backup_drills ENABLE ROW LEVEL SECURITY;
ALTER TABLE backup_drills FORCE ROW LEVEL SECURITY;
CREATE POLICY backup_drills_appliance ON backup_drills USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON backup_drills TO {{app_role}};

-- One open row per kind: raised by the watchdog or a failed run, cleared by the next success.
CREATE TABLE backup_alerts (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind       text NOT NULL CHECK (kind IN ('snapshot_failed', 'snapshot_stale', 'drill_failed', 'drill_stale', 'worm_not_enforced', 'not_configured')),
  raised_at  timestamptz NOT NULL,
  cleared_at timestamptz,
  detail     text NOT NULL CHECK (length(detail) <= 1000)
);
CREATE UNIQUE INDEX backup_alerts_open_kind ON backup_alerts (kind) WHERE cleared_at IS NULL;
ALTER TABLE backup_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE backup_alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY backup_alerts_appliance ON backup_alerts USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON backup_alerts TO {{app_role}};
`;
