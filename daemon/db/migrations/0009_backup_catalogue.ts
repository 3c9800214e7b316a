/**
 * The backup catalogue matches the targets (docs/backups.md "Catalogue"), and each target has its
 * own alert.
 *
 * - `backup_snapshot_copies`: one row per snapshot and target, in the state the last run or
 *   reconcile found it: `present`, `pruned` (deleted by retention), `vanished` (gone from the
 *   target without this appliance deleting it) or `unrecorded` (a complete snapshot on the target
 *   that this appliance did not record there). No foreign key: an unrecorded snapshot has no
 *   `backup_snapshots` row.
 * - `backup_snapshots.status` gains `pruned` and `vanished` (no copy left, and why), and
 *   `attachments` records what the run did with attachment files.
 * - `backup_alerts.subject` names what an alert is about (a target for `target_failed`): one open
 *   alert per kind AND subject, so a failing NAS and a failing S3 bucket are two alerts, each
 *   cleared only by its own target's next success.
 */
export const sql = /* sql */ `
ALTER TABLE backup_snapshots DROP CONSTRAINT backup_snapshots_status_check;
ALTER TABLE backup_snapshots ADD CONSTRAINT backup_snapshots_status_check
  CHECK (status IN ('running', 'complete', 'partial', 'failed', 'interrupted', 'pruned', 'vanished'));
ALTER TABLE backup_snapshots ADD COLUMN attachments jsonb;

CREATE TABLE backup_snapshot_copies (
  snapshot_id text NOT NULL CHECK (snapshot_id ~ '^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$'),
  target      text NOT NULL CHECK (length(target) BETWEEN 1 AND 40),
  state       text NOT NULL CHECK (state IN ('present', 'pruned', 'vanished', 'unrecorded')),
  changed_at  timestamptz NOT NULL,
  PRIMARY KEY (snapshot_id, target)
);
CREATE INDEX backup_snapshot_copies_target_idx ON backup_snapshot_copies (target, state);
ALTER TABLE backup_snapshot_copies ENABLE ROW LEVEL SECURITY;
ALTER TABLE backup_snapshot_copies FORCE ROW LEVEL SECURITY;
CREATE POLICY backup_snapshot_copies_appliance ON backup_snapshot_copies USING (app_is_appliance_scope()) WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, UPDATE ON backup_snapshot_copies TO {{app_role}};

-- Copies of the snapshots recorded so far: every target a finished run reported as holding it.
SELECT set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true);
INSERT INTO backup_snapshot_copies (snapshot_id, target, state, changed_at)
SELECT s.id, t ->> 'target', CASE WHEN s.pruned_at IS NULL THEN 'present' ELSE 'pruned' END, coalesce(s.pruned_at, s.finished_at, s.started_at)
  FROM backup_snapshots s, jsonb_array_elements(s.targets) t
 WHERE s.status IN ('complete', 'partial') AND (t ->> 'ok')::boolean
ON CONFLICT DO NOTHING;

ALTER TABLE backup_alerts ADD COLUMN subject text NOT NULL DEFAULT '' CHECK (length(subject) <= 100);
ALTER TABLE backup_alerts DROP CONSTRAINT backup_alerts_kind_check;
ALTER TABLE backup_alerts ADD CONSTRAINT backup_alerts_kind_check CHECK (kind IN (
  'snapshot_failed', 'snapshot_stale', 'drill_failed', 'drill_stale', 'worm_not_enforced', 'not_configured',
  'target_failed', 'snapshot_vanished', 'snapshot_appeared', 'attachment_missing'));
DROP INDEX backup_alerts_open_kind;
CREATE UNIQUE INDEX backup_alerts_open_kind_subject ON backup_alerts (kind, subject) WHERE cleared_at IS NULL;
`;
