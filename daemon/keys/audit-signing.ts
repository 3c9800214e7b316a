/**
 * The Ed25519 key pair that signs audit checkpoints (DESIGN "Audit trail"). The private half is
 * a data key like any other: wrapped by the KEK in the key store, versioned, rotatable
 * (`wardkeep keys rotate --audit-signing`); older public halves stay listed so checkpoints signed
 * before a rotation still verify.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/tenant-scope.js";
import { applianceKeyFor } from "./keyring.js";
import { select } from "./keystore.js";
import { zeroize } from "./primitives.js";

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

/** A new pair: the wrapped secret is the PKCS#8 DER of the private key, the public half is stored in the clear. */
export function newAuditSigningSecret(): { key: Buffer; publicKey: Buffer } {
  const pair = generateKeyPairSync("ed25519");
  return {
    key: pair.privateKey.export({ format: "der", type: "pkcs8" }),
    publicKey: pair.publicKey.export({ format: "der", type: "spki" }),
  };
}

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

/** Every signing key version's public half (works sealed: no secret is involved). */
export async function listAuditVerificationKeys(ctx: ApplianceContext): Promise<Array<{ version: number; publicKey: KeyObject; publicKeyDer: string; createdAt: Date; retiredAt: Date | null }>> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const rows = await select<{ version: number; public_key: Buffer; created_at: Date; retired_at: Date | null }>(
      ctx,
      t,
      "SELECT version, public_key, created_at, retired_at FROM keystore.data_keys WHERE key_id = $1 ORDER BY version",
      [AUDIT_SIGNING_KEY_ID],
    );
    return rows.map((r) => ({
      version: r.version,
      publicKey: createPublicKey({ key: r.public_key, format: "der", type: "spki" }),
      publicKeyDer: r.public_key.toString("base64"),
      createdAt: r.created_at,
      retiredAt: r.retired_at,
    }));
  });
}
