/**
 * The keyring: data keys (DEKs) for writes and reads, unwrapped on demand under the KEK and kept
 * in the barrier's bounded LRU. This is what the record models use:
 *
 *   const ct = await encryptFieldValue(ctx, t, { kind: "patient", tenantId, patientId }, field, "Ada");
 *   const pt = await decryptFieldValue(ctx, t, field, ct);
 *
 * Contract for callers: get a write key (`dataKeyFor`) in the same transaction that stores the
 * ciphertext. Writers hold a shared advisory lock on the key id for the rest of that transaction
 * and rotation takes it exclusively, so once a rotation commits no transaction can still be
 * writing the old version: the background re-encryption then finds every old ciphertext.
 */
import { randomBytes } from "node:crypto";
import type { ApplianceContext } from "../context.js";
import { inScope, sql, type SqlFragment, type Tx } from "../db/sql.js";
import { NotFound, Unavailable } from "../kernel/errors.js";
import {
  GCM_RANDOM_NONCE_LIMIT,
  blindIndex,
  decryptField,
  encryptField,
  readFieldHeader,
  UnknownKeyVersionError,
  type BlindIndexOptions,
  type DataKey,
  type DataKeyLookup,
  type FieldContext,
} from "./field-cipher.js";
import { aad, LOCKS, slotOf, unwrapSecret, wrapSecret, type DataKeyKind, type DataKeyRow } from "./keystore.js";
import { zeroize } from "./primitives.js";
import type { NonceLedger } from "./root-key.js";
import { activeKekVersion, loadKek } from "./seal.js";
import { rotateDataKey } from "./data-key-rotation.js";

/** Whose data a key protects. Ids only: key ids are readable in every ciphertext header. */
export type KeySubject = { kind: "tenant"; tenantId: string } | { kind: "patient"; tenantId: string; patientId: string };

type KeyTarget = { keyId: string; kind: DataKeyKind; tenantId: string | null; patientId: string | null };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function uuid(name: string, value: string): string {
  // Key ids go into ciphertext headers and the key store: only canonical UUIDs, never free text.
  if (typeof value !== "string" || !UUID.test(value)) throw new TypeError(`${name} must be a lower-case UUID`);
  return value;
}

export function keyIdOf(subject: KeySubject): string {
  return subject.kind === "tenant" ? `tenant/${uuid("tenantId", subject.tenantId)}` : `patient/${uuid("patientId", subject.patientId)}`;
}

function targetOf(subject: KeySubject | { kind: "index"; tenantId: string }): KeyTarget {
  switch (subject.kind) {
    case "tenant":
      return { keyId: keyIdOf(subject), kind: "tenant", tenantId: uuid("tenantId", subject.tenantId), patientId: null };
    case "patient":
      return { keyId: keyIdOf(subject), kind: "patient", tenantId: uuid("tenantId", subject.tenantId), patientId: uuid("patientId", subject.patientId) };
    case "index":
      return { keyId: `index/${uuid("tenantId", subject.tenantId)}`, kind: "index", tenantId: subject.tenantId, patientId: null };
  }
}

/** A data key crypto-shredded: its ciphertexts are gone for good (404, not a server fault). */
export class KeyDestroyed extends NotFound {
  constructor(
    readonly keyId: string,
    destroyedAt: Date,
  ) {
    super(`the data key ${keyId} was destroyed (crypto-shredded) on ${destroyedAt.toISOString().slice(0, 10)}; data encrypted with it can no longer be decrypted by anyone`, {
      keyDestroyed: true,
    });
  }
}

/** A write key: the DEK plus the counter that `encryptField` must be given (nonce budget). */
export type WriteKey = DataKey & { nonceBudget: NonceLedger };

const createdIn = new WeakMap<Tx, Set<string>>();
const rotationsInFlight = new Set<string>();

/** The shredded-list subject a key id belongs to (a tenant's index key goes with the tenant). */
function shredSubjectOf(keyId: string): string {
  return keyId.replace(/^index\//, "tenant/");
}

/**
 * When the key's subject (or its tenant) was crypto-shredded, or undefined. Checked before a
 * new key is created, so a destroyed subject never silently gets a fresh key, and when a key is
 * missing, so the error says "destroyed" rather than "unknown".
 */
async function destroyedAt(ctx: ApplianceContext, t: Tx, keyId: string, tenantId: string | null): Promise<Date | undefined> {
  const subjects = [shredSubjectOf(keyId)];
  if (tenantId) subjects.push(`tenant/${tenantId}`);
  const rows = await t.rows<{ destroyed_at: Date }>("SELECT destroyed_at FROM keystore.shredded WHERE subject = ANY($1) ORDER BY destroyed_at LIMIT 1", [subjects]);
  return rows[0]?.destroyed_at;
}

async function unwrapRow(ctx: ApplianceContext, t: Tx, row: DataKeyRow): Promise<Buffer> {
  const kek = await loadKek(ctx, t, row.kek_version);
  return unwrapSecret(kek, row.wrapped, aad.dataKey(row.key_id, row.version, row.kek_version));
}

/**
 * The unwrapped key of a row, from the cache or by unwrapping. Keys created by this (uncommitted)
 * transaction are cached only after it commits: a rolled-back key must never be cached, or a
 * key made later under the same id and version would be shadowed by it.
 */
async function keyOfRow(ctx: ApplianceContext, t: Tx, row: DataKeyRow): Promise<Buffer> {
  const slot = slotOf(row.key_id, row.version);
  const cached = ctx.rootKey.cachedDataKey(slot);
  if (cached) return Buffer.from(cached);
  const key = await unwrapRow(ctx, t, row);
  if (createdIn.get(t)?.has(slot)) {
    const copy = Buffer.from(key);
    t.afterCommit(() => {
      ctx.rootKey.cacheDataKey(slot, copy);
      zeroize(copy);
    });
  } else {
    ctx.rootKey.cacheDataKey(slot, key);
  }
  return key;
}

/** Every column of a keystore.data_keys row (`DataKeyRow`), for the selects that read whole rows. */
export const DATA_KEY_COLUMNS = "key_id, version, kind, tenant_id, patient_id, wrapped, kek_version, public_key, state, nonce_count, created_at, retired_at";
const DATA_KEY_COLUMN_NAMES = DATA_KEY_COLUMNS.split(", ");

async function activeRow(ctx: ApplianceContext, t: Tx, keyId: string): Promise<DataKeyRow | undefined> {
  const rows = await t.rows<DataKeyRow>(`SELECT ${DATA_KEY_COLUMNS} FROM keystore.data_keys WHERE key_id = $1 AND state = 'active'`, [keyId]);
  return rows[0];
}

/**
 * The key's advisory lock, shared (a rotation takes it exclusively), then its active version, in
 * one round trip: see migration 0007 for why the read still follows the lock.
 */
async function lockedActiveRow(ctx: ApplianceContext, t: Tx, keyId: string): Promise<DataKeyRow | undefined> {
  const rows = await t.rows<DataKeyRow>(`SELECT ${DATA_KEY_COLUMNS} FROM keystore.lock_and_read_active_key($1, $2)`, [LOCKS.dataKey, keyId]);
  return rows[0];
}

/**
 * What `lockedActiveRow` does, as part of a caller's statement, so a write learns its key in the
 * round trip that reads its record (the note write's patient check, daemon/records/patients/access.ts):
 * `join` takes the subject's key lock (shared) and reads its active version for each row of the
 * caller's FROM (so only once that row is known to exist), with the subject's key id as a parameter;
 * `columns` lists the key's columns as `wk_<column>`. `lockedWriteKeyOf` reads them back, and
 * `dataKeyFor` takes the result instead of asking again.
 */
export function lockedWriteKeySql(subject: KeySubject): { join: SqlFragment; columns: SqlFragment } {
  return {
    join: sql`LEFT JOIN LATERAL keystore.lock_and_read_active_key(${sql.raw(String(LOCKS.dataKey))}, ${keyIdOf(subject)}) wk ON true`,
    columns: sql.raw(DATA_KEY_COLUMN_NAMES.map((c) => `wk.${c} AS wk_${c}`).join(", ")),
  };
}

/** The key a write for `subject` asked for with `lockedWriteKeySql` (its lock is held): `row` is undefined when the subject has no key yet. */
export type LockedWriteKey = { keyId: string; row: DataKeyRow | undefined };

/**
 * Splits a row of a statement built with `lockedWriteKeySql` into the subject's key and the
 * caller's own columns (the `wk_` ones removed).
 */
export function lockedWriteKeyOf<T extends Record<string, unknown>>(subject: KeySubject, result: T): { key: LockedWriteKey; rest: T } {
  const rest = { ...result };
  for (const c of DATA_KEY_COLUMN_NAMES) delete rest[`wk_${c}`];
  const row =
    result.wk_key_id === null || result.wk_key_id === undefined ? undefined : (Object.fromEntries(DATA_KEY_COLUMN_NAMES.map((c) => [c, result[`wk_${c}`]])) as DataKeyRow);
  return { key: { keyId: keyIdOf(subject), row }, rest };
}

/** Makes version 1 of a key (first write for a tenant or patient) in the caller's transaction. */
async function createFirstVersion(ctx: ApplianceContext, t: Tx, target: KeyTarget, secret?: { key: Buffer; publicKey?: Buffer }): Promise<DataKeyRow> {
  const at = await destroyedAt(ctx, t, target.keyId, target.tenantId);
  if (at) throw new KeyDestroyed(target.keyId, at);
  const kekVersion = await activeKekVersion(ctx, t);
  const kek = await loadKek(ctx, t, kekVersion);
  const key = secret?.key ?? randomBytes(32);
  const wrapped = wrapSecret(kek, key, aad.dataKey(target.keyId, 1, kekVersion));
  zeroize(key);
  // Two first writes racing: the loser's insert waits for the winner's commit, does nothing, and
  // the re-read below (a new statement, so a new READ COMMITTED snapshot) sees the winner's key.
  const inserted = await t.rows<DataKeyRow>(
    `INSERT INTO keystore.data_keys (key_id, version, kind, tenant_id, patient_id, wrapped, kek_version, public_key)
     VALUES ($1, 1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING ${DATA_KEY_COLUMNS}`,
    [target.keyId, target.kind, target.tenantId, target.patientId, wrapped, kekVersion, secret?.publicKey ?? null],
  );
  if (inserted[0]) {
    const set = createdIn.get(t) ?? new Set<string>();
    set.add(slotOf(target.keyId, 1));
    createdIn.set(t, set);
    return inserted[0];
  }
  const row = await activeRow(ctx, t, target.keyId);
  if (!row) throw new Unavailable(`the data key ${target.keyId} is being changed; retry the request`);
  return row;
}

async function writeRow(ctx: ApplianceContext, t: Tx, target: KeyTarget): Promise<DataKeyRow> {
  ctx.rootKey.assertUnsealed();
  return (await lockedActiveRow(ctx, t, target.keyId)) ?? (await createFirstVersion(ctx, t, target));
}

/**
 * The key new writes for `subject` use: the newest version, created on first use. Counts the
 * encryptions the caller makes with it when given to `encryptField` as `nonceBudget`, and rotates
 * the key (after this transaction commits) once the budget is spent.
 */
export async function dataKeyFor(ctx: ApplianceContext, t: Tx, subject: KeySubject, locked?: LockedWriteKey): Promise<WriteKey> {
  const target = targetOf(subject);
  if (!locked) return writeKeyOfRow(ctx, t, await writeRow(ctx, t, target));
  // The caller's statement took the lock and read the active version (`lockedWriteKeySql`).
  if (locked.keyId !== target.keyId) throw new TypeError("the locked key is not the subject's");
  ctx.rootKey.assertUnsealed();
  return writeKeyOfRow(ctx, t, locked.row ?? (await createFirstVersion(ctx, t, target)));
}

/** Internal: the current write key of an existing key id (re-encryption). */
export async function currentWriteKey(ctx: ApplianceContext, t: Tx, keyId: string): Promise<WriteKey> {
  ctx.rootKey.assertUnsealed();
  const row = await lockedActiveRow(ctx, t, keyId);
  if (!row) throw new NotFound(`no data key ${keyId}`);
  return writeKeyOfRow(ctx, t, row);
}

async function writeKeyOfRow(ctx: ApplianceContext, t: Tx, row: DataKeyRow): Promise<WriteKey> {
  const key = await keyOfRow(ctx, t, row);
  hintsOf(ctx).set(row.key_id, row.version);
  const ledger = ctx.rootKey.nonces;
  ledger.seed(row.key_id, row.version, Number(row.nonce_count));
  // SP 800-38D §8.3: never past 2^32 under one key, whatever the configured budget says.
  if (ledger.used(row.key_id, row.version) >= GCM_RANDOM_NONCE_LIMIT - 1) {
    zeroize(key);
    throw new Unavailable(`the data key ${row.key_id} reached its encryption limit and is being rotated; retry shortly`);
  }
  if (ledger.shouldRotate(row.key_id, row.version)) scheduleBudgetRotation(ctx, t, row.key_id);
  return { id: row.key_id, version: row.version, key, nonceBudget: ledger };
}

function scheduleBudgetRotation(ctx: ApplianceContext, t: Tx, keyId: string) {
  if (rotationsInFlight.has(keyId)) return;
  // After commit: rotation waits for the exclusive key lock, which this transaction holds shared.
  t.afterCommit(() => startBudgetRotation(ctx, keyId));
}

function startBudgetRotation(ctx: ApplianceContext, keyId: string) {
  if (rotationsInFlight.has(keyId)) return;
  rotationsInFlight.add(keyId);
  void rotateDataKey(ctx, keyId, "nonce-budget")
    .catch((err: unknown) => ctx.log.warn("automatic data key rotation failed; it is retried on the next write", { keyId, error: (err as Error).message }))
    .finally(() => rotationsInFlight.delete(keyId));
}

// ---- the hinted write key: a write in one round trip -------------------------------------------

/**
 * The active version each key id had when this process last wrote under it, per root key: a hint,
 * never trusted on its own. Bounded; a forgotten hint costs one write its second round trip.
 */
const activeVersionHints = new WeakMap<object, Map<string, number>>();
const MAX_HINTS = 100_000;

function hintsOf(ctx: ApplianceContext): Map<string, number> {
  let hints = activeVersionHints.get(ctx.rootKey);
  if (!hints) {
    hints = new Map();
    activeVersionHints.set(ctx.rootKey, hints);
  }
  if (hints.size >= MAX_HINTS) hints.clear();
  return hints;
}

/**
 * A write key taken from this process's cache without asking the key store, so that a write can
 * encrypt before its transaction and send everything in one round trip: the version the subject's
 * key had at this process's last write under it, if that key is still cached and its nonce budget
 * is not running out. Undefined otherwise (the caller takes `dataKeyFor`'s path).
 *
 * The caller's statement must take the key's lock and read its active version
 * (`lockedWriteKeySql`), write only where `hintedKeyHolds` (the version is still the active one:
 * no rotation or shredding came in between), and hand the key it read to `settleHintedWrite`.
 */
export function hintedWriteKey(ctx: ApplianceContext, subject: KeySubject): WriteKey | undefined {
  const keyId = keyIdOf(subject);
  const version = hintsOf(ctx).get(keyId);
  if (version === undefined) return undefined;
  const cached = ctx.rootKey.cachedDataKey(slotOf(keyId, version));
  if (!cached) return undefined;
  const ledger = ctx.rootKey.nonces;
  if (ledger.used(keyId, version) >= GCM_RANDOM_NONCE_LIMIT - 1 || ledger.shouldRotate(keyId, version)) return undefined;
  return { id: keyId, version, key: Buffer.from(cached), nonceBudget: ledger };
}

/** SQL: the key read by `lockedWriteKeySql` (in the FROM item `from`) is the hinted key's version, still active. */
export function hintedKeyHolds(from: string, key: WriteKey): SqlFragment {
  return sql`${sql.raw(from)}.wk_key_id = ${key.id} AND ${sql.raw(from)}.wk_version = ${key.version}::integer`;
}

/**
 * After a statement with a hinted key committed: what `dataKeyFor` does once it holds the lock,
 * from the key row that statement read. The nonce count is raised to the key store's (other
 * replicas' encryptions) and a rotation starts when the budget runs low.
 */
export function settleHintedWrite(ctx: ApplianceContext, locked: LockedWriteKey): void {
  const row = locked.row;
  if (!row) return;
  const ledger = ctx.rootKey.nonces;
  ledger.seed(row.key_id, row.version, Number(row.nonce_count));
  if (ledger.shouldRotate(row.key_id, row.version)) startBudgetRotation(ctx, row.key_id);
}

type WantedKey = { keyId: string; version: number };

/** The key versions that stored ciphertexts name, from their headers. */
function wantedBy(ciphertexts: Buffer[]): WantedKey[] {
  return ciphertexts
    .filter((c) => c != null)
    .map((c) => {
      const header = readFieldHeader(c);
      return { keyId: header.keyId, version: header.keyVersion };
    });
}

/** The wanted keys the cache holds (by slot), and those it does not. */
function fromCache(ctx: ApplianceContext, wanted: WantedKey[]): { found: Map<string, DataKey>; missing: WantedKey[] } {
  ctx.rootKey.assertUnsealed();
  const found = new Map<string, DataKey>();
  const missing: WantedKey[] = [];
  for (const { keyId, version } of wanted) {
    const slot = slotOf(keyId, version);
    if (found.has(slot)) continue;
    const cached = ctx.rootKey.cachedDataKey(slot);
    if (cached) found.set(slot, { id: keyId, version, key: Buffer.from(cached) });
    else missing.push({ keyId, version });
  }
  return { found, missing };
}

function lookupOf(keys: Map<string, DataKey>): DataKeyLookup {
  return (keyId, version) => keys.get(slotOf(keyId, version));
}

/** Loads the exact key versions named by stored ciphertext headers. */
async function readKeys(ctx: ApplianceContext, t: Tx, wanted: WantedKey[]): Promise<Map<string, DataKey>> {
  const { found: out, missing } = fromCache(ctx, wanted);
  for (const { keyId, version } of missing) {
    const slot = slotOf(keyId, version);
    if (out.has(slot)) continue;
    const rows = await t.rows<DataKeyRow>(`SELECT ${DATA_KEY_COLUMNS} FROM keystore.data_keys WHERE key_id = $1 AND version = $2`, [keyId, version]);
    if (!rows[0]) {
      const at = await destroyedAt(ctx, t, keyId, null);
      if (at) throw new KeyDestroyed(keyId, at);
      throw new UnknownKeyVersionError(keyId, version);
    }
    out.set(slot, { id: keyId, version, key: await keyOfRow(ctx, t, rows[0]) });
  }
  return out;
}

/**
 * `dataKeysForRead` without a transaction, when the cache holds every key the ciphertexts name
 * (the usual case); null when one is missing, and then `dataKeysForRead` reads it.
 */
export function cachedDataKeysForRead(ctx: ApplianceContext, ciphertexts: Buffer[]): DataKeyLookup | null {
  const { found, missing } = fromCache(ctx, wantedBy(ciphertexts));
  return missing.length === 0 ? lookupOf(found) : null;
}

/**
 * A synchronous lookup for `decryptField` over every key the given ciphertexts name (one query
 * per key not cached), e.g. for a page of records. Keys of another tenant are invisible under
 * row-level security, so they fail as unknown keys even before the AAD check.
 */
export async function dataKeysForRead(ctx: ApplianceContext, t: Tx, ciphertexts: Buffer[]): Promise<DataKeyLookup> {
  return lookupOf(await readKeys(ctx, t, wantedBy(ciphertexts)));
}

/** Encrypts one field value under the subject's current key (see the module comment). */
export async function encryptFieldValue(ctx: ApplianceContext, t: Tx, subject: KeySubject, field: FieldContext, plaintext: Buffer | string): Promise<Buffer> {
  if (field.tenantId !== subject.tenantId) throw new TypeError("the field's tenant differs from the key subject's tenant");
  const key = await dataKeyFor(ctx, t, subject);
  try {
    return encryptField(key, field, plaintext, { nonceBudget: key.nonceBudget });
  } finally {
    zeroize(key.key);
  }
}

export async function decryptFieldValue(ctx: ApplianceContext, t: Tx, field: FieldContext, ciphertext: Buffer): Promise<Buffer> {
  const lookup = await dataKeysForRead(ctx, t, [ciphertext]);
  return decryptField(lookup, field, ciphertext);
}

/**
 * Blind index of an identifier (MRN, email) for exact lookups: HMAC-SHA-256 under the tenant's
 * index key. The index key is never rotated (every stored index would change with it); it is
 * destroyed with the tenant.
 */
export async function blindIndexFor(
  ctx: ApplianceContext,
  t: Tx,
  field: { tenantId: string; table: string; column: string },
  value: string,
  options: BlindIndexOptions = {},
): Promise<string> {
  const target = targetOf({ kind: "index", tenantId: field.tenantId });
  const row = await writeRow(ctx, t, target);
  const key = await keyOfRow(ctx, t, row);
  try {
    return blindIndex(key, field, value, options);
  } finally {
    zeroize(key);
  }
}

/** Internal: the appliance-scope key (audit signing) by id, created with `create` on first use. */
export async function applianceKeyFor(
  ctx: ApplianceContext,
  t: Tx,
  keyId: string,
  kind: DataKeyKind,
  create: () => { key: Buffer; publicKey?: Buffer },
): Promise<{ row: DataKeyRow; key: Buffer }> {
  ctx.rootKey.assertUnsealed();
  const row = (await lockedActiveRow(ctx, t, keyId)) ?? (await createFirstVersion(ctx, t, { keyId, kind, tenantId: null, patientId: null }, create()));
  return { row, key: await keyOfRow(ctx, t, row) };
}

/** Internal: unwraps any row (rotation, re-encryption, status) through the cache. */
export async function keyOfDataKeyRow(ctx: ApplianceContext, t: Tx, row: DataKeyRow): Promise<Buffer> {
  return keyOfRow(ctx, t, row);
}

/** Internal: loads specific versions (re-encryption reads old ciphertexts through this). */
export async function lookupFor(ctx: ApplianceContext, t: Tx, wanted: WantedKey[]): Promise<DataKeyLookup> {
  return lookupOf(await readKeys(ctx, t, wanted));
}

/**
 * Adds this process's encryption counts to keystore.data_keys.nonce_count (maintenance calls it
 * every interval and at shutdown). On failure the counts go back into the ledger.
 */
export async function flushNonceCounts(ctx: ApplianceContext): Promise<number> {
  const pending = ctx.rootKey.nonces.takePending();
  if (pending.length === 0) return 0;
  try {
    await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      for (const p of pending) {
        await t.exec("UPDATE keystore.data_keys SET nonce_count = nonce_count + $1 WHERE key_id = $2 AND version = $3", [p.count, p.keyId, p.version]);
      }
    });
  } catch (err) {
    ctx.rootKey.nonces.restore(pending);
    throw err;
  }
  return pending.reduce((n, p) => n + p.count, 0);
}
