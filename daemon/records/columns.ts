/**
 * Every field-encrypted column of the records capability, registered with the keys capability so
 * that background re-encryption after a data key rotation (and `keys status`) covers it. Each
 * value is AES-256-GCM under the patient's data key, with tenant, table, column and row id in the
 * associated data (daemon/keys/field-cipher.ts): a ciphertext copied to another row, column or
 * tenant does not decrypt.
 *
 * Patient data uses per-patient keys so that one patient can be crypto-shredded on its own.
 */
import { type Tx } from "../db/sql.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { AppError, InternalError } from "../kernel/errors.js";
import {
  decryptField,
  encryptField,
  readFieldHeader,
  UnknownKeyVersionError,
  type DataKeyLookup,
  DecryptionError,
  zeroize,
  cachedDataKeysForRead,
  dataKeyFor,
  dataKeysForRead,
  KeyDestroyed,
  registerEncryptedColumn,
  type LockedWriteKey,
  type WriteKey,
} from "../keys/index.js";

const COLUMNS = {
  patients: { idColumn: "id", patientColumn: "id", columns: ["name_enc", "birth_date_enc", "mrn_enc", "phone_enc", "email_enc", "address_enc"] },
  note_versions: { idColumn: "id", patientColumn: "patient_id", columns: ["body_enc", "reason_enc"] },
  consents: { idColumn: "id", patientColumn: "patient_id", columns: ["scope_enc", "evidence_enc"] },
  consent_revocations: { idColumn: "consent_id", patientColumn: "patient_id", columns: ["evidence_enc", "reason_enc"] },
  attachments: { idColumn: "id", patientColumn: "patient_id", columns: ["filename_enc", "file_key_enc", "plain_sha256_enc"] },
  legal_holds: { idColumn: "id", patientColumn: "patient_id", columns: ["reason_enc", "release_reason_enc"] },
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
  t: Tx,
  where: { tenantId: string; patientId: string; table: T; rowId: string },
  values: Partial<Record<ColumnOf<T>, string | Buffer | null | undefined>>,
  locked?: LockedWriteKey,
): Promise<Partial<Record<ColumnOf<T>, Buffer | null>>> {
  const key = await dataKeyFor(ctx, t, { kind: "patient", tenantId: where.tenantId, patientId: where.patientId }, locked);
  return sealRowWith(key, where, values);
}

/** `sealRow` with a write key the caller already holds (`hintedWriteKey`); zeroes it when done. */
export function sealRowWith<T extends RecordsTable>(
  key: WriteKey,
  where: { tenantId: string; table: T; rowId: string },
  values: Partial<Record<ColumnOf<T>, string | Buffer | null | undefined>>,
): Partial<Record<ColumnOf<T>, Buffer | null>> {
  try {
    const out: Partial<Record<ColumnOf<T>, Buffer | null>> = {};
    for (const [column, value] of Object.entries(values) as [ColumnOf<T>, string | Buffer | null | undefined][]) {
      if (value === undefined) continue;
      out[column] =
        value === null ? null : encryptField(key, { tenantId: where.tenantId, table: where.table, column, rowId: where.rowId }, value, { nonceBudget: key.nonceBudget });
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
export type KeySource = Tx | { committedForTenant: string };

/**
 * A stored value whose data key was crypto-shredded (restored from a snapshot taken before the
 * patient was erased): gone for good, so 410 rather than the keys capability's 404, which would
 * read as "no such patient" (and, raised inside a list, answered the whole list with it).
 */
export class RecordShredded extends AppError {
  readonly status = 410;
  readonly slug = "record-shredded";
  readonly title = "The record was crypto-shredded and can no longer be read";
}

/**
 * A stored value that fails to decrypt for another reason: it fails authentication (tampered, or
 * copied from another row) or its key version is missing from the key store. Tamper evidence:
 * a single read is a 500 with a log line naming the row, never the value.
 */
export class UndecryptableValue extends InternalError {
  constructor(readonly why: "tampered" | "key-missing") {
    super("a stored value could not be decrypted; quote the request id to your administrator");
  }
}

/** Why a key a ciphertext names could not be loaded, by `keyId#version`. */
type UnavailableKeys = Map<string, "destroyed" | "missing">;
const slotOf = (keyId: string, version: number) => `${keyId}#${version}`;

function isKeyOrFormatFailure(err: unknown): boolean {
  return err instanceof KeyDestroyed || err instanceof UnknownKeyVersionError || err instanceof DecryptionError;
}

/**
 * The keys the ciphertexts name, each loaded on its own so that one destroyed or missing key
 * does not stop the others (the fallback of `openerFor` once loading them together failed).
 * Values whose header does not parse are left to fail in `decryptField` as tampered.
 */
async function loadEachKey(ctx: ApplianceContext, t: Tx, present: Buffer[]): Promise<{ lookup: DataKeyLookup; unavailable: UnavailableKeys }> {
  const byKey = new Map<string, Buffer>();
  for (const c of present) {
    try {
      const h = readFieldHeader(c);
      const slot = slotOf(h.keyId, h.keyVersion);
      if (!byKey.has(slot)) byKey.set(slot, c);
    } catch (err) {
      if (!(err instanceof DecryptionError)) throw err;
    }
  }
  const lookups: DataKeyLookup[] = [];
  const unavailable: UnavailableKeys = new Map();
  for (const [slot, sample] of byKey) {
    try {
      lookups.push(await dataKeysForRead(ctx, t, [sample]));
    } catch (err) {
      if (err instanceof KeyDestroyed) unavailable.set(slot, "destroyed");
      else if (err instanceof UnknownKeyVersionError) unavailable.set(slot, "missing");
      else throw err;
    }
  }
  return { lookup: (keyId, version) => lookups.map((l) => l(keyId, version)).find((k) => k) ?? undefined, unavailable };
}

/**
 * Loads every data key the given ciphertexts name (cached keys cost no query) and returns a
 * synchronous decryptor. A value that cannot be decrypted throws from the decryptor, not here,
 * so a list can leave that row out (`openRows`) and still show the others:
 * `RecordShredded` (410) when its key was crypto-shredded, `UndecryptableValue` (500, logged
 * with the row's ids, never the value) when it fails authentication or its key is missing.
 */
export async function openerFor(ctx: ApplianceContext, keys: KeySource, ciphertexts: Array<Buffer | null | undefined>): Promise<FieldOpener> {
  const present = ciphertexts.filter((c): c is Buffer => Buffer.isBuffer(c));
  let lookup: DataKeyLookup;
  let unavailable: UnavailableKeys = new Map();
  try {
    lookup = !("committedForTenant" in keys)
      ? await dataKeysForRead(ctx, keys, present)
      : (cachedDataKeysForRead(ctx, present) ?? (await inScope(ctx.db.app, { kind: "tenant", tenantId: keys.committedForTenant }, (t) => dataKeysForRead(ctx, t, present))));
  } catch (err) {
    if (!isKeyOrFormatFailure(err)) throw err;
    ({ lookup, unavailable } = !("committedForTenant" in keys)
      ? await loadEachKey(ctx, keys, present)
      : await inScope(ctx.db.app, { kind: "tenant", tenantId: keys.committedForTenant }, (t) => loadEachKey(ctx, t, present)));
  }
  const bytes = (table: string, column: string, rowId: string, tenantId: string, value: Buffer | null): Buffer | null => {
    if (value === null) return null;
    try {
      return decryptField(lookup, { tenantId, table, column, rowId }, value);
    } catch (err) {
      if (err instanceof UnknownKeyVersionError && unavailable.get(slotOf(err.keyId, err.keyVersion)) === "destroyed") {
        throw new RecordShredded("this record's data key was destroyed when the patient was erased (crypto-shredded); the value cannot be recovered", { rowId });
      }
      if (err instanceof DecryptionError || err instanceof UnknownKeyVersionError) {
        ctx.log.error("stored field failed to decrypt (tampered, moved or its key is missing)", { table, column, rowId, error: (err as Error).name });
        throw new UndecryptableValue(err instanceof UnknownKeyVersionError ? "key-missing" : "tampered");
      }
      throw err;
    }
  };
  return {
    bytes,
    text: (table, column, rowId, tenantId, value) => bytes(table, column, rowId, tenantId, value)?.toString("utf8") ?? null,
  };
}

/** A row a list left out because its values do not decrypt, and why. */
export type SkippedRow = { id: string; cause: "shredded" | "unreadable" };

/**
 * Builds each row's view with the opener; a row whose values do not decrypt is left out and
 * reported instead of failing the whole list (a restored snapshot can hold rows of a patient
 * crypto-shredded since; one tampered value must not hide every other record either).
 */
export function openRows<R, V>(rows: R[], idOf: (r: R) => string, view: (r: R) => V): { items: V[]; skipped: SkippedRow[] } {
  const items: V[] = [];
  const skipped: SkippedRow[] = [];
  for (const r of rows) {
    try {
      items.push(view(r));
    } catch (err) {
      if (err instanceof RecordShredded) skipped.push({ id: idOf(r), cause: "shredded" });
      else if (err instanceof UndecryptableValue) skipped.push({ id: idOf(r), cause: "unreadable" });
      else throw err;
    }
  }
  return { items, skipped };
}
