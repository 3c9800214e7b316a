/**
 * An in-place restore (docs/backups.md "Restore in place") loads a snapshot into a new database
 * and then puts it where the live one was. Snapshots never hold the key store
 * (`SNAPSHOT_EXCLUDED_SCHEMAS`), so the new database gets the live key store, row for row:
 *
 * - it opens with the unseal key the appliance runs under now (nothing is rewrapped, no replica
 *   has to unseal again);
 * - data key versions are never deleted except by crypto-shredding (retired versions stay for old
 *   snapshots), so it holds every key the snapshot's values were written under;
 * - a subject shredded since the snapshot stays shredded: its keys are not in the live store, and
 *   its `keystore.shredded` entry comes along, so the restore purges its rows.
 */
import type pg from "pg";
import type { ApplianceContext } from "../context.js";
import { carryRows } from "../db/carry-rows.js";
import { inScope } from "../db/sql.js";
import type { ShreddedSubject } from "./recovery-backup.js";

/** In the order foreign keys need (kek_versions before data_keys and recovery_keys, tenant_rotations before rotations). */
const KEY_STORE_TABLES = ["seal", "kek_versions", "data_keys", "tenant_rotations", "rotations", "shred_schedule", "shredded", "recovery_keys"].map((t) => `keystore.${t}`);

export type CarriedKeyStore = { rows: Record<string, number>; shredded: ShreddedSubject[] };

/**
 * Copies the live key store into the `keystore` schema of `into` (a freshly restored database,
 * its key store empty; the caller's transaction, appliance scope set) and returns the subjects
 * whose keys are destroyed, whose rows the caller purges. Refuses a key store that is not empty
 * rather than merge two.
 */
export async function carryKeyStoreInto(ctx: ApplianceContext, into: pg.ClientBase): Promise<CarriedKeyStore> {
  const existing = await into.query<{ n: string }>(
    "SELECT ((SELECT count(*) FROM keystore.seal) + (SELECT count(*) FROM keystore.kek_versions) + (SELECT count(*) FROM keystore.data_keys))::text AS n",
  );
  if (existing.rows[0]!.n !== "0") throw new Error("the key store of the database being restored is not empty");
  const rows = await inScope(ctx.db.app, { kind: "appliance" }, (tx) => carryRows(tx, into, KEY_STORE_TABLES, { replace: false }));
  const shredded = await into.query<{ subject: string; kind: "tenant" | "patient"; tenant_id: string; patient_id: string | null }>(
    "SELECT subject, kind, tenant_id::text, patient_id::text FROM keystore.shredded ORDER BY subject",
  );
  return { rows, shredded: shredded.rows.map((s) => ({ subject: s.subject, kind: s.kind, tenantId: s.tenant_id, patientId: s.patient_id })) };
}
