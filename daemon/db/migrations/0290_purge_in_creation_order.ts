/**
 * The retention purge's cost per note (docs/retention.md, "Session 7"):
 * - The foreign key from a note's versions to the note becomes ON DELETE RESTRICT (it was the
 *   default NO ACTION). Both refuse to delete a note while a version of it is left, and neither may
 *   be deferred here (the constraint is not DEFERRABLE), so what the database accepts is the same;
 *   NO ACTION also looks, for every deleted note, for another note now holding the same key before
 *   it looks for versions: one query per deleted note that the primary key makes pointless. The versions are still deleted by the purge's own statement
 *   (never by a cascade), so the history guard on note_versions sees every delete.
 * - `splits`: a run that purges a class with several workers in creation order records the
 *   boundaries between the workers' ranges the first time it reaches the class, so a resumed run
 *   gives each worker the same range and no batch's range overlaps another's.
 */
export const sql = /* sql */ `
ALTER TABLE note_versions DROP CONSTRAINT note_versions_tenant_id_note_id_fkey,
  ADD CONSTRAINT note_versions_tenant_id_note_id_fkey FOREIGN KEY (tenant_id, note_id) REFERENCES notes (tenant_id, id) ON DELETE RESTRICT;
-- class -> [{at, id}, ...]: the first key of each worker's range after the first, in (created_at, id) order.
ALTER TABLE retention_runs ADD COLUMN splits jsonb NOT NULL DEFAULT '{}'::jsonb;
`;
