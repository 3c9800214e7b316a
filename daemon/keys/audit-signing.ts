/**
 * The Ed25519 key pair that signs audit checkpoints (DESIGN "Audit trail"). The private half is
 * a data key like any other: wrapped by the KEK in the key store, versioned, rotatable
 * (`wardkeep keys rotate --audit-signing`); older public halves stay listed so checkpoints signed
 * before a rotation still verify. daemon/audit/signing-key.ts signs and verifies with them.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import type { Tx } from "../db/sql.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { newAuditSigningSecret } from "./data-key-rotation.js";
import { applianceKeyFor, DATA_KEY_COLUMNS, keyOfDataKeyRow } from "./keyring.js";
import { type DataKeyRow } from "./keystore.js";
import { DecryptionError, zeroize } from "./primitives.js";

export const AUDIT_SIGNING_KEY_ID = "audit-signing";

export type AuditSigningKey = {
  keyId: string;
  version: number;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** SPKI DER of the public key, base64: what exports carry for offline verification. */
  publicKeyDer: string;
  createdAt: Date;
};

/** The current signing key, made on first use. Throws `Sealed` (503) while sealed. */
export async function getAuditSigningKey(ctx: ApplianceContext): Promise<AuditSigningKey> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const { row, key } = await applianceKeyFor(ctx, t, AUDIT_SIGNING_KEY_ID, "audit-signing", newAuditSigningSecret);
    try {
      const privateKey = createPrivateKey({ key, format: "der", type: "pkcs8" });
      const publicKey = createPublicKey(privateKey);
      return {
        keyId: AUDIT_SIGNING_KEY_ID,
        version: row.version,
        privateKey,
        publicKey,
        publicKeyDer: publicKey.export({ format: "der", type: "spki" }).toString("base64"),
        createdAt: row.created_at,
      };
    } finally {
      zeroize(key);
    }
  });
}

export type AuditVerificationKey = {
  version: number;
  publicKey: KeyObject;
  publicKeyDer: string;
  createdAt: Date;
  retiredAt: Date | null;
  /**
   * True when the public half was derived from the version's private half, unwrapped under the
   * KEK (unsealed only). The clear `public_key` column alone proves nothing: the app role can
   * write keystore.data_keys, so anyone with database access could add or swap a public key
   * there and then sign forged checkpoints that "verify".
   */
  authenticated: boolean;
};

/**
 * Every signing key version's public half. Works sealed (no secret is involved; nothing is then
 * `authenticated`); unsealed, each public half is derived from its unwrapped private half, and a
 * version whose wrapped secret does not unwrap (forged or edited row) is listed unauthenticated.
 */
export async function listAuditVerificationKeys(ctx: ApplianceContext): Promise<AuditVerificationKey[]> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const rows = await t.rows<DataKeyRow & { public_key: Buffer }>(`SELECT ${DATA_KEY_COLUMNS} FROM keystore.data_keys WHERE key_id = $1 ORDER BY version`, [AUDIT_SIGNING_KEY_ID]);
    const unsealed = !ctx.rootKey.isSealed;
    const listed: AuditVerificationKey[] = [];
    for (const r of rows) {
      let publicKey = createPublicKey({ key: r.public_key, format: "der", type: "spki" });
      let authenticated = false;
      if (unsealed) {
        const proven = await provenPublicKey(ctx, t, r);
        if (proven) {
          publicKey = proven;
          authenticated = true;
        }
      }
      listed.push({
        version: r.version,
        publicKey,
        publicKeyDer: publicKey.export({ format: "der", type: "spki" }).toString("base64"),
        createdAt: r.created_at,
        retiredAt: r.retired_at,
        authenticated,
      });
    }
    return listed;
  });
}

/** The public half of a version's unwrapped private half, or undefined if it does not unwrap. */
async function provenPublicKey(ctx: ApplianceContext, t: Tx, row: DataKeyRow): Promise<KeyObject | undefined> {
  let key: Buffer;
  try {
    key = await keyOfDataKeyRow(ctx, t, row);
  } catch (err) {
    if (err instanceof DecryptionError) return undefined;
    throw err;
  }
  try {
    return createPublicKey(createPrivateKey({ key, format: "der", type: "pkcs8" }));
  } catch {
    return undefined;
  } finally {
    zeroize(key);
  }
}
