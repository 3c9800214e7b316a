/**
 * The registry of field-encrypted columns. The records capability registers each PHI column once
 * (at module load); re-encryption after a data key rotation and `keys status` walk it. The
 * registry is the only place SQL identifiers for those columns come from, and each is checked
 * here, so nothing from a request ever reaches an identifier.
 */
export type EncryptedColumn = {
  /** Table name, optionally schema-qualified ("patients", "records.notes"). Also the `table` in the field's AAD. */
  table: string;
  /** bytea column holding field ciphertext (NULL allowed). Also the `column` in the AAD. */
  column: string;
  /** Primary key column; its value (as text) is the `rowId` in the AAD. */
  idColumn: string;
  /** Column holding the tenant id; its value is the `tenantId` in the AAD. */
  tenantColumn: string;
  /** Which key encrypts this column: the tenant's, or the patient's named by `patientColumn`. */
  subject: { kind: "tenant" } | { kind: "patient"; patientColumn: string };
};

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
const registry = new Map<string, EncryptedColumn>();

function checkIdentifier(what: string, value: string, qualified = false) {
  const parts = qualified ? value.split(".") : [value];
  if (parts.length > 2 || !parts.every((p) => IDENTIFIER.test(p))) throw new TypeError(`${what} "${value}" is not a plain lower-case SQL identifier`);
}

export function quoteIdentifier(value: string): string {
  return value
    .split(".")
    .map((p) => `"${p}"`)
    .join(".");
}

/** Registers a field-encrypted column; registering the same column again replaces it (idempotent). */
export function registerEncryptedColumn(column: EncryptedColumn): EncryptedColumn {
  checkIdentifier("table", column.table, true);
  checkIdentifier("column", column.column);
  checkIdentifier("idColumn", column.idColumn);
  checkIdentifier("tenantColumn", column.tenantColumn);
  if (column.subject.kind === "patient") checkIdentifier("patientColumn", column.subject.patientColumn);
  const frozen = Object.freeze({ ...column, subject: Object.freeze({ ...column.subject }) });
  registry.set(`${column.table}.${column.column}`, frozen);
  return frozen;
}

export function unregisterEncryptedColumn(table: string, column: string): void {
  registry.delete(`${table}.${column}`);
}

export function encryptedColumns(): EncryptedColumn[] {
  return [...registry.values()];
}
