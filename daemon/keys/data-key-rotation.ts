/**
 * A new version of one data key (DESIGN "Keys": rotation creates a new version; new writes use
 * it, reads use the version in the ciphertext header). Kept apart from ./rotation.ts, which
 * re-encrypts with the keyring, because the keyring itself starts a rotation when a key's nonce
 * budget runs low: keyring -> data-key-rotation, never back.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { Conflict, NotFound } from "../kernel/errors.js";
import { recordKeyEvent, SYSTEM_OPERATOR, type KeyOperator } from "../audit/append.js";
import { aad, LOCKS, wrapSecret, type DataKeyRow } from "./keystore.js";
import { zeroize } from "./primitives.js";
import { activeKekVersion, loadKek } from "./seal.js";

export type RotationReason = "operator" | "nonce-budget";

const NOT_ROTATABLE: Record<string, string> = {
  index: "blind-index keys are not rotated: every stored index would change with them",
  "appliance-internal": "the appliance-internal key is not rotated: capabilities derive long-lived keys from it",
};

/**
 * Makes a new version of a data key for new writes and records the rotation for re-encryption.
 * With reason "nonce-budget" it does nothing if another replica rotated the key already.
 */
export async function rotateDataKey(
  ctx: ApplianceContext,
  keyId: string,
  reason: RotationReason = "operator",
  by: KeyOperator = SYSTEM_OPERATOR,
): Promise<{ keyId: string; from: number; to: number; rotated: boolean }> {
  ctx.rootKey.assertUnsealed();
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const result = await rotateDataKeyIn(ctx, t, keyId, reason, by);
    if (!result) throw new NotFound(`no data key ${keyId} (nothing has been encrypted for it yet, or it was destroyed)`);
    return result;
  });
}

/**
 * `rotateDataKey` inside the caller's transaction (appliance scope); undefined when the key has
 * no active version. A tenant rotation (./tenant-rotation.ts) rotates its keys in batches this
 * way, links each rotation to itself and audits once for the tenant instead of once per key.
 */
export async function rotateDataKeyIn(
  ctx: ApplianceContext,
  t: Tx,
  keyId: string,
  reason: RotationReason,
  by: KeyOperator,
  options: { tenantRotationId?: string; audit?: boolean } = {},
): Promise<{ keyId: string; from: number; to: number; rotated: boolean } | undefined> {
  // Exclusive: waits until every transaction writing with the current version has ended.
  await t.exec("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCKS.dataKey, keyId]);
  const [row] = await t.rows<DataKeyRow>(
    "SELECT key_id, version, kind, tenant_id, patient_id, kek_version, nonce_count FROM keystore.data_keys WHERE key_id = $1 AND state = 'active' FOR UPDATE",
    [keyId],
  );
  if (!row) return undefined;
  const refusal = NOT_ROTATABLE[row.kind];
  if (refusal) throw new Conflict(refusal);
  if (reason === "nonce-budget") {
    ctx.rootKey.nonces.seed(row.key_id, row.version, Number(row.nonce_count));
    if (!ctx.rootKey.nonces.shouldRotate(row.key_id, row.version)) return { keyId, from: row.version, to: row.version, rotated: false };
  }
  const to = row.version + 1;
  const kekVersion = await activeKekVersion(ctx, t);
  const kek = await loadKek(ctx, t, kekVersion);
  const secret = row.kind === "audit-signing" ? newAuditSigningSecret() : { key: randomBytes(32), publicKey: undefined };
  const wrapped = wrapSecret(kek, secret.key, aad.dataKey(keyId, to, kekVersion));
  zeroize(secret.key);
  await t.exec("UPDATE keystore.data_keys SET state = 'retired', retired_at = now() WHERE key_id = $1 AND version = $2", [keyId, row.version]);
  await t.exec(
    `INSERT INTO keystore.data_keys (key_id, version, kind, tenant_id, patient_id, wrapped, kek_version, public_key, state)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active')`,
    [keyId, to, row.kind, row.tenant_id, row.patient_id, wrapped, kekVersion, secret.publicKey ?? null],
  );
  // Only field-encryption keys have ciphertexts to rewrite; the signing key has none.
  const completed = row.kind === "audit-signing" ? "now()" : "NULL";
  await t.exec(
    `INSERT INTO keystore.rotations (target, key_id, tenant_id, from_version, to_version, reason, tenant_rotation_id, completed_at) VALUES ('data-key', $1, $2, $3, $4, $5, $6, ${completed})`,
    [keyId, row.tenant_id, row.version, to, reason, options.tenantRotationId ?? null],
  );
  if (options.audit !== false) {
    await recordKeyEvent(ctx, t, by, {
      action: "keys.rotate",
      resourceId: keyId,
      tenantId: row.tenant_id,
      outcome: "success",
      reason: `version ${row.version} to ${to} (${reason})`,
    });
    ctx.log.info("data key rotated", { keyId, from: row.version, to, reason });
  }
  return { keyId, from: row.version, to, rotated: true };
}

export function tenantKeyId(tenantId: string): string {
  return `tenant/${tenantId}`;
}

/** A new pair: the wrapped secret is the PKCS#8 DER of the private key, the public half is stored in the clear. */
export function newAuditSigningSecret(): { key: Buffer; publicKey: Buffer } {
  const pair = generateKeyPairSync("ed25519");
  return {
    key: pair.privateKey.export({ format: "der", type: "pkcs8" }),
    publicKey: pair.publicKey.export({ format: "der", type: "spki" }),
  };
}
