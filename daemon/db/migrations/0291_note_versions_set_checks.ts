/**
 * A note's versions refer to their note: kept by statement-level triggers in place of the foreign
 * key (docs/retention.md, "Session 8"). PostgreSQL checks a foreign key row by row; a purge batch of
 * 2,000 notes spent about half its time on 2,000 such checks, each finding the versions already
 * gone. These triggers check a whole statement's rows with one join. What the database refuses is
 * the same as with the key (tests: test/integration/records/note-version-references.test.ts):
 * - a version whose note does not exist (insert), the note locked FOR KEY SHARE as a foreign key
 *   locks it, so a concurrent delete of that note waits and then sees the version;
 * - deleting a note that still has versions, checked with a fresh snapshot per statement, which
 *   is why such a delete is refused outside READ COMMITTED (a REPEATABLE READ snapshot could miss a
 *   version committed after it, which the foreign key's crosscheck snapshot would have caught);
 * - changing a note's id or tenant (the key a version refers to), and TRUNCATE of notes while
 *   versions remain;
 * - a restore re-checks the reference after its load (`reference_violations()`, backup/restore.ts),
 *   as it re-adds and so re-validates foreign keys.
 * The history guard's DELETE trigger now asks whether the row is a purge's in its WHEN clause, so a
 * purged row no longer calls the PL/pgSQL function at all (about a tenth of a batch).
 */
export const sql = /* sql */ `
ALTER TABLE note_versions DROP CONSTRAINT note_versions_tenant_id_note_id_fkey;

CREATE FUNCTION note_versions_have_notes() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM (SELECT DISTINCT tenant_id, note_id FROM added) a
              WHERE NOT EXISTS (SELECT 1 FROM notes n WHERE n.tenant_id = a.tenant_id AND n.id = a.note_id FOR KEY SHARE OF n)) THEN
    RAISE EXCEPTION 'insert on note_versions refers to a note that does not exist' USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER note_versions_have_notes AFTER INSERT ON note_versions
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION note_versions_have_notes();

CREATE FUNCTION notes_keep_versions() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'notes are deleted under READ COMMITTED only (their versions are checked with a fresh snapshot)' USING ERRCODE = 'feature_not_supported';
  END IF;
  IF EXISTS (SELECT 1 FROM gone g JOIN note_versions v ON v.note_id = g.id AND v.tenant_id = g.tenant_id) THEN
    RAISE EXCEPTION 'delete on notes would leave note versions without their note' USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER notes_keep_versions AFTER DELETE ON notes
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION notes_keep_versions();

CREATE FUNCTION notes_key_fixed() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'a note''s id and tenant never change (its versions refer to them)' USING ERRCODE = 'foreign_key_violation';
END $$;
CREATE TRIGGER notes_key_fixed BEFORE UPDATE OF id, tenant_id ON notes FOR EACH ROW
  WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id) EXECUTE FUNCTION notes_key_fixed();

-- TRUNCATE runs as the owner, whom FORCE'd row-level security shows no rows without a scope: the
-- check looks in the appliance scope and puts the caller's scope back.
CREATE FUNCTION notes_truncate_keeps_versions() RETURNS trigger
  LANGUAGE plpgsql AS $$
DECLARE
  prev_scope text := current_setting('wardkeep.scope', true);
  found boolean;
BEGIN
  PERFORM set_config('wardkeep.scope', 'appliance', true);
  found := EXISTS (SELECT 1 FROM note_versions);
  PERFORM set_config('wardkeep.scope', coalesce(prev_scope, ''), true);
  IF found THEN
    RAISE EXCEPTION 'TRUNCATE on notes would leave note versions without their note' USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER notes_truncate_keeps_versions BEFORE TRUNCATE ON notes
  FOR EACH STATEMENT EXECUTE FUNCTION notes_truncate_keeps_versions();

-- References the schema keeps without a foreign key, as rows that break them (none when intact).
CREATE FUNCTION reference_violations() RETURNS TABLE (reference text, rows bigint)
  LANGUAGE sql STABLE AS $$
  SELECT 'note_versions -> notes', count(*) FROM note_versions v
   WHERE NOT EXISTS (SELECT 1 FROM notes n WHERE n.tenant_id = v.tenant_id AND n.id = v.note_id)
  HAVING count(*) > 0
$$;
REVOKE ALL ON FUNCTION reference_violations() FROM PUBLIC;

DROP TRIGGER note_versions_history ON note_versions;
CREATE TRIGGER note_versions_history BEFORE UPDATE ON note_versions
  FOR EACH ROW EXECUTE FUNCTION records_history_guard();
CREATE TRIGGER note_versions_history_delete BEFORE DELETE ON note_versions FOR EACH ROW
  WHEN (coalesce(current_setting('wardkeep.purge_patient', true), '') <> OLD.patient_id::text
        AND coalesce(current_setting('wardkeep.purge_tenant', true), '') <> OLD.tenant_id::text)
  EXECUTE FUNCTION records_history_guard();
`;
