/**
 * Every field-encrypted column of the records capability, registered with the keys capability so
 * that background re-encryption after a data key rotation (and `keys status`) covers it. Each
 * value is AES-256-GCM under the patient's data key, with tenant, table, column and row id in the
 * associated data (daemon/keys/field-cipher.ts): a ciphertext copied to another row, column or
 * tenant does not decrypt.
 *
 * Patient data uses per-patient keys so that one patient can be crypto-shredded on its own.
 */
import { Transaction } from "sequelize";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/tenant-scope.js";
import { InternalError } from "../kernel/errors.js";
import { cachedDataKeysForRead, dataKeyFor, dataKeysForRead, KeyDestroyed, registerEncryptedColumn, type LockedWriteKey } from "../keys/index.js";
import { decryptField, encryptField, UnknownKeyVersionError } from "../keys/field-cipher.js";
import { DecryptionError, zeroize } from "../keys/primitives.js";

const COLUMNS = {
  patients: { idColumn: "id", patientColumn: "id", columns: ["name_enc", "birth_date_enc", "mrn_enc", "phone_enc", "email_enc", "address_enc"] },
  note_versions: { idColumn: "id", patientColumn: "patient_id", columns: ["body_enc", "reason_enc"] },
  consents: { idColumn: "id", patientColumn: "patient_id", columns: ["scope_enc", "evidence_enc"] },
  consent_revocations: { idColumn: "consent_id", patientColumn: "patient_id", columns: ["evidence_enc", "reason_enc"] },
  attachments: { idColumn: "id", patientColumn: "patient_id", columns: ["filename_enc", "file_key_enc", "plain_sha256_enc"] },
  legal_holds: { idColumn: "id", patientColumn: "patient_id", columns: ["reason_enc"] },
} as const;

export type RecordsTable = keyof typeof COLUMNS;
export type ColumnOf<T extends RecordsTable> = (typeof COLUMNS)[T]["columns"][number];

for (const [table, spec] of Object.entries(COLUMNS)) {
  for (const column of spec.columns) {
    registerEncryptedColumn({ table, column, idColumn: spec.idColumn, tenantColumn: "tenant_id", subject: { kind: "patient", patientColumn: spec.patientColumn } });
  }
}

/**
 * Encrypts the values of one row under the patient's current data key (taken once per row, in the
 * caller's transaction; `locked`: the key as the caller's statement already locked and read it,
 * see `openPatient`'s `writeKey`).
 */
export async function sealRow<T extends RecordsTable>(
  ctx: ApplianceContext,
  t: Transaction,
  where: { tenantId: string; patientId: string; table: T; rowId: string },
  values: Partial<Record<ColumnOf<T>, string | Buffer | null | undefined>>,
  locked?: LockedWriteKey,
): Promise<Partial<Record<ColumnOf<T>, Buffer | null>>> {
  const key = await dataKeyFor(ctx, t, { kind: "patient", tenantId: where.tenantId, patientId: where.patientId }, locked);
  try {
    const out: Partial<Record<ColumnOf<T>, Buffer | null>> = {};
    for (const [column, value] of Object.entries(values) as [ColumnOf<T>, string | Buffer | null | undefined][]) {
      if (value === undefined) continue;
      out[column] = value === null ? null : encryptField(key, { tenantId: where.tenantId, table: where.table, column, rowId: where.rowId }, value, { nonceBudget: key.nonceBudget });
    }
    return out;
  } finally {
    zeroize(key.key);
  }
}

export type FieldOpener = {
  /** The plaintext of a stored value as UTF-8 text, or null for NULL. */
  text<T extends RecordsTable>(table: T, column: ColumnOf<T>, rowId: string, tenantId: string, value: Buffer | null): string | null;
  bytes<T extends RecordsTable>(table: T, column: ColumnOf<T>, rowId: string, tenantId: string, value: Buffer | null): Buffer | null;
};

/**
 * Where `openerFor` reads the data keys its cache does not hold: the transaction that read the
 * values, or, for values whose transaction has already committed (the one-round-trip patient read,
 * daemon/records/patients/access.ts), a transaction of that tenant's own (none when every key is cached).
 */
export type KeySource = Transaction | { committedForTenant: string };

/**
 * Loads every data key the given ciphertexts name (cached keys cost no query) and returns a
 * synchronous decryptor. A value that fails authentication is tamper evidence: the request
 * fails with a 500 and a log line naming the row, never the value.
 */
export async function openerFor(ctx: ApplianceContext, keys: KeySource, ciphertexts: Array<Buffer | null | undefined>): Promise<FieldOpener> {
  const present = ciphertexts.filter((c): c is Buffer => Buffer.isBuffer(c));
  const lookup =
    keys instanceof Transaction
      ? await dataKeysForRead(ctx, keys, present)
      : (cachedDataKeysForRead(ctx, present) ?? (await inScope(ctx.db.app, { kind: "tenant", tenantId: keys.committedForTenant }, (t) => dataKeysForRead(ctx, t, present))));
  const bytes = (table: string, column: string, rowId: string, tenantId: string, value: Buffer | null): Buffer | null => {
    if (value === null) return null;
    try {
      return decryptField(lookup, { tenantId, table, column, rowId }, value);
    } catch (err) {
      if (err instanceof KeyDestroyed) throw err;
      if (err instanceof DecryptionError || err instanceof UnknownKeyVersionError) {
        ctx.log.error("stored field failed to decrypt (tampered, moved or its key is missing)", { table, column, rowId, error: (err as Error).name });
        throw new InternalError("a stored value could not be decrypted; quote the request id to your administrator");
      }
      throw err;
    }
  };
  return {
    bytes,
    text: (table, column, rowId, tenantId, value) => bytes(table, column, rowId, tenantId, value)?.toString("utf8") ?? null,
  };
}
