/**
 * Rotation, online (DESIGN "Keys": no downtime, no failed request during rotation).
 *
 * - KEK: a new version becomes active for new wraps at once; `rewrapPending` then rewraps every
 *   data key (and the not-yet-issued recovery private key) in small batches and deletes the old
 *   version once nothing references it (a foreign key makes an early delete impossible).
 * - Data key (`rotateDataKey` in ./data-key-rotation.ts): a new version takes new writes as soon
 *   as the rotation commits (writers hold the
 *   key's advisory lock shared, rotation takes it exclusive, so no write of the old version can
 *   commit afterwards); `reencryptPending` rewrites old-version ciphertexts in the registered
 *   columns, batch by batch, with SKIP LOCKED so it never blocks a request. Old versions stay
 *   readable: data snapshots taken before the rotation still need them.
 */
import { randomBytes } from "node:crypto";
import type { Tx } from "../db/sql.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict } from "../kernel/errors.js";
import { recordKeyEvent, SYSTEM_OPERATOR, type KeyOperator } from "../audit/append.js";
import { encryptedColumns, quoteIdentifier, type EncryptedColumn } from "./columns.js";
import { decryptField, encryptField, readFieldHeader } from "./field-cipher.js";
import { currentWriteKey, lookupFor } from "./keyring.js";
import { aad, kekCheckValue, LOCKS, readSeal, sameCheckValue, unsealCheckValue, unwrapSecret, wrapSecret, type DataKeyRow } from "./keystore.js";
import { zeroize } from "./primitives.js";
import { activeKekVersion, loadKek } from "./seal.js";

/** A new KEK version for new wraps; `rewrapPending` moves existing wraps to it. */
export async function rotateKek(ctx: ApplianceContext, by: KeyOperator = SYSTEM_OPERATOR): Promise<{ from: number; to: number }> {
  ctx.rootKey.assertUnsealed();
  const kek = randomBytes(32);
  try {
    const result = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      await t.exec("SELECT pg_advisory_xact_lock($1)", [LOCKS.kekRotation]);
      const seal = await readSeal(ctx, t, true);
      if (!seal) throw new Conflict("the key store is not initialised");
      const unsealKey = ctx.rootKey.unsealKeyMaterial();
      // A replica unsealed before a rekey would wrap the new KEK under a dead unseal key.
      if (!sameCheckValue(unsealCheckValue(unsealKey), seal.check_value)) {
        throw new Conflict("this replica holds an outdated unseal key (the key store was rekeyed since); rotate on a replica unsealed since, or unseal this one again");
      }
      const from = await activeKekVersion(ctx, t);
      const previous = await loadKek(ctx, t, from);
      const to = from + 1;
      await t.exec("UPDATE keystore.kek_versions SET state = 'retiring', retired_at = now() WHERE version = $1", [from]);
      await t.exec("INSERT INTO keystore.kek_versions (version, wrapped, wrapped_by_previous, check_value, state) VALUES ($1, $2, $3, $4, 'active')", [
        to,
        wrapSecret(unsealKey, kek, aad.kek(to)),
        wrapSecret(previous, kek, aad.kekChain(to)),
        kekCheckValue(kek, to),
      ]);
      await t.exec("INSERT INTO keystore.rotations (target, from_version, to_version, reason) VALUES ('kek', $1, $2, 'operator')", [from, to]);
      await recordKeyEvent(ctx, t, by, { action: "keys.rotate", resourceId: "kek", tenantId: null, outcome: "success", reason: `KEK version ${from} to ${to}` });
      return { from, to };
    });
    ctx.rootKey.rememberKek(result.to, kek);
    ctx.log.info("KEK rotated; rewrapping data keys in the background", result);
    return result;
  } finally {
    zeroize(kek);
  }
}

/**
 * Rewraps up to `maxBatches` batches of keys still wrapped by an older KEK version, then deletes
 * versions nothing references. Safe on several replicas at once (SKIP LOCKED).
 */
export async function rewrapPending(
  ctx: ApplianceContext,
  options: { batchSize?: number; maxBatches?: number } = {},
): Promise<{ rewrapped: number; remaining: boolean; retired: number[] }> {
  ctx.rootKey.assertUnsealed();
  const batchSize = options.batchSize ?? 500;
  const maxBatches = options.maxBatches ?? Number.POSITIVE_INFINITY;
  let rewrapped = 0;
  for (let batch = 0; batch < maxBatches; batch++) {
    const n = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      const active = await activeKekVersion(ctx, t);
      const kek = await loadKek(ctx, t, active);
      const rows = await t.rows<DataKeyRow>(
        "SELECT key_id, version, wrapped, kek_version FROM keystore.data_keys WHERE kek_version <> $1 ORDER BY key_id, version LIMIT $2 FOR UPDATE SKIP LOCKED",
        [active, batchSize],
      );
      for (const row of rows) {
        const old = await loadKek(ctx, t, row.kek_version);
        const key = unwrapSecret(old, row.wrapped, aad.dataKey(row.key_id, row.version, row.kek_version));
        await t.exec("UPDATE keystore.data_keys SET wrapped = $1, kek_version = $2 WHERE key_id = $3 AND version = $4", [
          wrapSecret(kek, key, aad.dataKey(row.key_id, row.version, active)),
          active,
          row.key_id,
          row.version,
        ]);
        zeroize(key);
      }
      const recovery = await t.rows<{ id: number; wrapped_private: Buffer; kek_version: number }>(
        "SELECT id, wrapped_private, kek_version FROM keystore.recovery_keys WHERE wrapped_private IS NOT NULL AND kek_version <> $1 FOR UPDATE SKIP LOCKED",
        [active],
      );
      for (const r of recovery) {
        const old = await loadKek(ctx, t, r.kek_version);
        const secret = unwrapSecret(old, r.wrapped_private, aad.recoveryPrivate(r.id, r.kek_version));
        await t.exec("UPDATE keystore.recovery_keys SET wrapped_private = $1, kek_version = $2 WHERE id = $3", [
          wrapSecret(kek, secret, aad.recoveryPrivate(r.id, active)),
          active,
          r.id,
        ]);
        zeroize(secret);
      }
      const done = rows.length + recovery.length;
      if (done > 0) await t.exec("UPDATE keystore.rotations SET items_done = items_done + $1 WHERE target = 'kek' AND completed_at IS NULL AND to_version = $2", [done, active]);
      return done;
    });
    rewrapped += n;
    if (n < batchSize) break;
  }
  const { remaining, retired } = await retireUnusedKeks(ctx);
  return { rewrapped, remaining, retired };
}

async function retireUnusedKeks(ctx: ApplianceContext): Promise<{ remaining: boolean; retired: number[] }> {
  const outcome = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    await t.exec("SELECT pg_advisory_xact_lock($1)", [LOCKS.rewrap]);
    const retired = await t.rows<{ version: number }>(`DELETE FROM keystore.kek_versions k
        WHERE k.state = 'retiring'
          AND NOT EXISTS (SELECT 1 FROM keystore.data_keys d WHERE d.kek_version = k.version)
          AND NOT EXISTS (SELECT 1 FROM keystore.recovery_keys r WHERE r.kek_version = k.version)
        RETURNING k.version`);
    // A chain link is useless once the version it was wrapped under is gone.
    await t.exec(
      "UPDATE keystore.kek_versions k SET wrapped_by_previous = NULL WHERE wrapped_by_previous IS NOT NULL AND NOT EXISTS (SELECT 1 FROM keystore.kek_versions p WHERE p.version = k.version - 1)",
    );
    const [left] = await t.rows<{ n: string }>("SELECT count(*) AS n FROM keystore.kek_versions WHERE state = 'retiring'");
    const remaining = Number(left?.n ?? 0) > 0;
    if (!remaining) await t.exec("UPDATE keystore.rotations SET completed_at = now() WHERE target = 'kek' AND completed_at IS NULL");
    return { remaining, retired: retired.map((r) => r.version) };
  });
  for (const version of outcome.retired) ctx.rootKey.forgetKek(version);
  return outcome;
}

// ---------------------------------------------------------------------------------------------
// Re-encryption of field ciphertexts
// ---------------------------------------------------------------------------------------------

/** SQL matching ciphertexts of `keyId` whose header names a version other than `active`. */
function oldVersionPredicate(column: EncryptedColumn, firstParam: number): string {
  const col = quoteIdentifier(column.column);
  // Header: format (1) | version (4) | key id length (1) | key id. substring() is 1-based.
  return `${col} IS NOT NULL AND get_byte(${col}, 0) = 1 AND substring(${col} from 6 for $${firstParam}::int) = $${firstParam + 1}::bytea AND substring(${col} from 2 for 4) <> $${firstParam + 2}::bytea`;
}

function headerParams(keyId: string, active: number): [number, Buffer, Buffer] {
  const id = Buffer.from(keyId, "utf8");
  const version = Buffer.alloc(4);
  version.writeUInt32BE(active);
  return [id.length + 1, Buffer.concat([Buffer.from([id.length]), id]), version];
}

type ColumnBatch = { rewritten: number; failed: number; lastId?: string; exhausted: boolean };

async function reencryptColumnBatch(
  ctx: ApplianceContext,
  t: Tx,
  column: EncryptedColumn,
  keyId: string,
  tenantId: string,
  active: number,
  after: string | undefined,
  batchSize: number,
  patientId: string | null,
): Promise<ColumnBatch> {
  const table = quoteIdentifier(column.table);
  const id = quoteIdentifier(column.idColumn);
  const col = quoteIdentifier(column.column);
  const tenant = quoteIdentifier(column.tenantColumn);
  const bind: unknown[] = [tenantId, ...headerParams(keyId, active), batchSize];
  const afterClause = after === undefined ? "" : ` AND ${id} > $${bind.push(after)}`;
  const patientClause = subjectClause(column, patientId, bind);
  const rows = await t.rows<{ id: string; value: Buffer }>(
    `SELECT ${id}::text AS id, ${col} AS value FROM ${table}
      WHERE ${tenant} = $1 AND ${oldVersionPredicate(column, 2)}${afterClause}${patientClause}
      ORDER BY ${id} LIMIT $5 FOR UPDATE SKIP LOCKED`,
    bind,
  );
  if (rows.length === 0) return { rewritten: 0, failed: 0, exhausted: true };
  const lookup = await lookupFor(
    ctx,
    t,
    rows.map((r) => ({ keyId, version: readFieldHeader(r.value).keyVersion })),
  );
  const writeKey = await currentWriteKey(ctx, t, keyId);
  let rewritten = 0;
  let failed = 0;
  try {
    for (const row of rows) {
      const field = { tenantId, table: column.table, column: column.column, rowId: row.id };
      let plaintext: Buffer;
      try {
        plaintext = decryptField(lookup, field, row.value);
      } catch (err) {
        // Tampered or misplaced ciphertext: leave it for an operator (ids only in the log).
        failed++;
        ctx.log.warn("re-encryption skipped a value that does not decrypt", { table: column.table, column: column.column, rowId: row.id, error: (err as Error).name });
        continue;
      }
      const next = encryptField(writeKey, field, plaintext, { nonceBudget: writeKey.nonceBudget });
      zeroize(plaintext);
      await t.exec(`UPDATE ${table} SET ${col} = $1 WHERE ${id} = $2 AND ${col} = $3`, [next, row.id, row.value]);
      rewritten++;
    }
  } finally {
    zeroize(writeKey.key);
  }
  return { rewritten, failed, lastId: rows[rows.length - 1]!.id, exhausted: rows.length < batchSize };
}

/**
 * Only the columns a key can have encrypted: a patient's key covers the patient-subject columns
 * (and only that patient's rows, found through the (tenant_id, patient_id) indexes, so rotating
 * every key of a tenant reads each row about once instead of once per patient); a tenant's key
 * covers the tenant-subject columns.
 */
function columnsOf(patientId: string | null): EncryptedColumn[] {
  return encryptedColumns().filter((c) => (c.subject.kind === "patient") === (patientId !== null));
}

function subjectClause(column: EncryptedColumn, patientId: string | null, bind: unknown[]): string {
  if (column.subject.kind !== "patient" || patientId === null) return "";
  return ` AND ${quoteIdentifier(column.subject.patientColumn)} = $${bind.push(patientId)}::uuid`;
}

async function oldCiphertextsRemain(ctx: ApplianceContext, t: Tx, keyId: string, tenantId: string, active: number, patientId: string | null): Promise<boolean> {
  for (const column of columnsOf(patientId)) {
    const bind: unknown[] = [tenantId, ...headerParams(keyId, active)];
    const patientClause = subjectClause(column, patientId, bind);
    const rows = await t.rows(
      `SELECT 1 FROM ${quoteIdentifier(column.table)} WHERE ${quoteIdentifier(column.tenantColumn)} = $1 AND ${oldVersionPredicate(column, 2)}${patientClause} LIMIT 1`,
      bind,
    );
    if (rows.length > 0) return true;
  }
  return false;
}

export type ReencryptOutcome = { rewritten: number; failed: number; completed: string[]; open: number };

/**
 * Continues every open data key rotation: rewrites old-version ciphertexts in the registered
 * columns, `batchSize` rows per transaction in the key's tenant scope, and marks a rotation
 * complete once no old-version ciphertext is left. `maxBatches` bounds one call's work.
 */
export async function reencryptPending(ctx: ApplianceContext, options: { batchSize?: number; maxBatches?: number; tenantRotationId?: string } = {}): Promise<ReencryptOutcome> {
  ctx.rootKey.assertUnsealed();
  const batchSize = options.batchSize ?? ctx.config.keys.reencryptBatchSize;
  let budget = options.maxBatches ?? Number.POSITIVE_INFINITY;
  const open = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<{
      key_id: string;
      tenant_id: string | null;
      active: number | null;
      patient_id: string | null;
    }>(
      `SELECT o.key_id, o.tenant_id, d.version AS active, d.patient_id
         FROM (SELECT DISTINCT r.key_id, r.tenant_id FROM keystore.rotations r
                WHERE r.target = 'data-key' AND r.completed_at IS NULL AND ($1::bigint IS NULL OR r.tenant_rotation_id = $1::bigint)) o
         LEFT JOIN keystore.data_keys d ON d.key_id = o.key_id AND d.state = 'active'
        ORDER BY o.key_id`,
      [options.tenantRotationId ?? null],
    ),
  );
  const outcome: ReencryptOutcome = { rewritten: 0, failed: 0, completed: [], open: open.length };
  for (const rotation of open) {
    if (budget <= 0) break;
    const { key_id: keyId, tenant_id: tenantId, active, patient_id: patientId } = rotation;
    if (!tenantId || active == null) {
      // No ciphertexts of its own (or the key was shredded meanwhile): nothing to rewrite.
      await inScope(ctx.db.app, { kind: "appliance" }, (t) => t.exec("UPDATE keystore.rotations SET completed_at = now() WHERE key_id = $1 AND completed_at IS NULL", [keyId]));
      outcome.completed.push(keyId);
      outcome.open--;
      continue;
    }
    let failed = 0;
    let interrupted = false;
    for (const column of columnsOf(patientId)) {
      let after: string | undefined;
      for (;;) {
        // Only batches that found rows count against the budget: a column with nothing to
        // rewrite must not starve the columns after it.
        if (budget <= 0) {
          interrupted = true;
          break;
        }
        const batch = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
          const result = await reencryptColumnBatch(ctx, t, column, keyId, tenantId, active, after, batchSize, patientId);
          if (result.rewritten > 0) {
            await t.exec("UPDATE keystore.rotations SET items_done = items_done + $1 WHERE key_id = $2 AND completed_at IS NULL AND to_version = $3", [
              result.rewritten,
              keyId,
              active,
            ]);
          }
          return result;
        });
        outcome.rewritten += batch.rewritten;
        failed += batch.failed;
        after = batch.lastId;
        if (batch.rewritten + batch.failed > 0) budget--;
        if (batch.exhausted) break;
      }
    }
    outcome.failed += failed;
    if (interrupted || failed > 0) continue;
    // Rows skipped because a request held them locked are caught by this check and the next run.
    const done = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
      if (await oldCiphertextsRemain(ctx, t, keyId, tenantId, active, patientId)) return false;
      await t.exec("UPDATE keystore.rotations SET completed_at = now() WHERE key_id = $1 AND completed_at IS NULL AND to_version <= $2", [keyId, active]);
      return true;
    });
    if (done) {
      outcome.completed.push(keyId);
      outcome.open--;
    }
  }
  return outcome;
}
