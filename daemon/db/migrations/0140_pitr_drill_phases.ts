/**
 * Point-in-time recovery drills (daemon/backups/pitr-drill.ts, docs/backups.md "PITR drills"):
 * who started each one and its RTO split by phase, beside the columns 0080 made for them.
 */
export const sql = /* sql */ `
ALTER TABLE pitr_drills
  ADD COLUMN trigger text NOT NULL DEFAULT 'schedule' CHECK (trigger IN ('schedule', 'manual', 'cli')),
  ADD COLUMN phases jsonb NOT NULL DEFAULT '{}';
CREATE INDEX pitr_drills_target ON pitr_drills (target, started_at DESC);
`;
