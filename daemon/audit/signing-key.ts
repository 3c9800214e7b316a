import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import type { ApplianceContext } from "../context.js";
import { hkdfSha256 } from "../keys/primitives.js";

/**
 * The Ed25519 key that signs audit checkpoints.
 *
 * STOPGAP, swappable in one place (the body of `auditSigningKey`): written before daemon/keys had
 * `getAuditSigningKey(ctx)` (a versioned keyring entry wrapped by the KEK, rotatable). Until the
 * swap, the key is derived from the appliance-internal secret (`rootKey.material()`, itself
 * wrapped by the KEK) with HKDF and a purpose label: never on disk, the same in every replica,
 * stable across KEK rotation, unavailable while sealed (signing then answers 503).
 */
export type AuditSigningKey = {
  /** First 16 hex digits of SHA-256 over the raw public key. */
  keyId: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicKeyRaw: Buffer;
  publicKeyPem: string;
};

// RFC 8410 PKCS#8 prefix for an Ed25519 private key: the 32-byte seed follows.
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export function auditKeyId(publicKeyRaw: Buffer): string {
  return createHash("sha256").update(publicKeyRaw).digest("hex").slice(0, 16);
}

export function publicKeyFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: "der", type: "spki" });
}

export function rawPublicKey(key: KeyObject): Buffer {
  return (key.export({ format: "der", type: "spki" }) as Buffer).subarray(ED25519_SPKI_PREFIX.length);
}

export async function auditSigningKey(ctx: ApplianceContext): Promise<AuditSigningKey> {
  const seed = hkdfSha256(ctx.rootKey.material(), Buffer.alloc(0), Buffer.from("wardkeep/audit/checkpoint-signing/v1"), 32);
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" });
  seed.fill(0);
  const publicKey = createPublicKey(privateKey);
  const publicKeyRaw = rawPublicKey(publicKey);
  return { keyId: auditKeyId(publicKeyRaw), privateKey, publicKey, publicKeyRaw, publicKeyPem: publicKey.export({ format: "pem", type: "spki" }) as string };
}

export function signMessage(key: AuditSigningKey, message: string): Buffer {
  return sign(null, Buffer.from(message, "utf8"), key.privateKey);
}

export function verifyMessage(publicKey: KeyObject, message: string, signature: Buffer): boolean {
  try {
    return verify(null, Buffer.from(message, "utf8"), publicKey, signature);
  } catch {
    return false;
  }
}
