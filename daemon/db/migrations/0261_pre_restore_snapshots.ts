/**
 * The safety snapshot an in-place restore takes of the live database before replacing it
 * (docs/backups.md "Restore in place") is recorded with trigger `pre_restore`, so the snapshot
 * list tells it apart from scheduled and manual runs.
 */
export const sql = /* sql */ `
ALTER TABLE backup_snapshots DROP CONSTRAINT IF EXISTS backup_snapshots_trigger_check;
ALTER TABLE backup_snapshots ADD CONSTRAINT backup_snapshots_trigger_check CHECK (trigger IN ('schedule', 'manual', 'cli', 'pre_restore'));
`;
