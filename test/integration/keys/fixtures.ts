import { randomUUID } from "node:crypto";
import type { Tx } from "../../../daemon/db/sql.js";
import type { ApplianceContext } from "../../../daemon/context.js";
import { inScope } from "../../../daemon/db/sql.js";
import { registerEncryptedColumn, type EncryptedColumn } from "../../../daemon/keys/columns.js";
import { decryptFieldValue, encryptFieldValue, type KeySubject } from "../../../daemon/keys/keyring.js";
import type { KeysContext } from "./context.js";

/**
 * A stand-in for a records table: one field-encrypted column, tenant row-level security like
 * every tenant table, created in the test database and registered through the column registry.
 */
export async function createEncryptedTable(k: KeysContext, table: string, subject: "tenant" | "patient" = "tenant"): Promise<EncryptedColumn> {
  await k.ctx.db.owner.exec(`
    CREATE TABLE ${table} (
      id         uuid PRIMARY KEY,
      tenant_id  uuid NOT NULL,
      patient_id uuid,
      secret     bytea
    );
    ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY;
    ALTER TABLE ${table} FORCE ROW LEVEL SECURITY;
    CREATE POLICY ${table}_isolation ON ${table}
      USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
      WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
    GRANT SELECT, INSERT, UPDATE ON ${table} TO ${k.ctx.db.appRole};
  `);
  return registerEncryptedColumn({
    table,
    column: "secret",
    idColumn: "id",
    tenantColumn: "tenant_id",
    subject: subject === "tenant" ? { kind: "tenant" } : { kind: "patient", patientColumn: "patient_id" },
  });
}

export function fieldOf(column: EncryptedColumn, tenantId: string, rowId: string) {
  return { tenantId, table: column.table, column: column.column, rowId };
}

export async function insertRow(ctx: ApplianceContext, t: Tx, column: EncryptedColumn, subject: KeySubject, plaintext: string, id: string = randomUUID()): Promise<string> {
  const ct = await encryptFieldValue(ctx, t, subject, fieldOf(column, subject.tenantId, id), plaintext);
  await t.exec(`INSERT INTO ${column.table} (id, tenant_id, patient_id, secret) VALUES ($1, $2, $3, $4)`, [
    id,
    subject.tenantId,
    subject.kind === "patient" ? subject.patientId : null,
    ct,
  ]);
  return id;
}

export async function updateRow(ctx: ApplianceContext, t: Tx, column: EncryptedColumn, subject: KeySubject, id: string, plaintext: string): Promise<void> {
  const ct = await encryptFieldValue(ctx, t, subject, fieldOf(column, subject.tenantId, id), plaintext);
  await t.exec(`UPDATE ${column.table} SET secret = $1 WHERE id = $2`, [ct, id]);
}

export async function readRow(ctx: ApplianceContext, t: Tx, column: EncryptedColumn, tenantId: string, id: string): Promise<string> {
  const [row] = await t.rows<{ secret: Buffer }>(`SELECT secret FROM ${column.table} WHERE id = $1`, [id]);
  if (!row) throw new Error(`row ${id} not found`);
  return (await decryptFieldValue(ctx, t, fieldOf(column, tenantId, id), row.secret)).toString();
}

export function inTenant<T>(ctx: ApplianceContext, tenantId: string, work: (t: Tx) => Promise<T>): Promise<T> {
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, work);
}

/** Key versions of every stored ciphertext, from the headers (superuser connection, no RLS). */
export async function storedVersions(k: KeysContext, table: string): Promise<Map<number, number>> {
  const rows = await k.sql<{ v: number | string; n: string }>(
    `SELECT get_byte(secret, 1) * 16777216 + get_byte(secret, 2) * 65536 + get_byte(secret, 3) * 256 + get_byte(secret, 4) AS v, count(*) AS n FROM ${table} WHERE secret IS NOT NULL GROUP BY 1`,
  );
  return new Map(rows.map((r) => [Number(r.v), Number(r.n)]));
}
