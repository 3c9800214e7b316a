import { randomBytes } from "node:crypto";
import { type RootKey, aesGcmDecrypt, aesGcmEncrypt, GCM_NONCE_BYTES, GCM_TAG_BYTES, hkdfSha256 } from "../keys/index.js";

/**
 * Keys of the identity capability, derived with HKDF (RFC 5869) under a purpose label from the
 * appliance-internal secret behind `RootKey.material()` (a data key wrapped by the KEK, stable
 * across KEK rotation). They exist only while the appliance is unsealed and never sit in the
 * database: a stolen database dump holds neither usable TOTP secrets nor an invite-signing key.
 */
export type AuthKeyPurpose = "mfa-secret" | "invite-signing";

export function deriveAuthKey(rootKey: RootKey, purpose: AuthKeyPurpose): Buffer {
  return hkdfSha256(rootKey.material(), Buffer.from("wardkeep/auth"), Buffer.from(`wardkeep/auth/${purpose}/v1`), 32);
}

const VERSION = 1;

/** AES-256-GCM with the owner's id as associated data: a sealed secret moved to another account fails to open. */
export function sealSecret(rootKey: RootKey, plaintext: string, boundTo: string): Buffer {
  const key = deriveAuthKey(rootKey, "mfa-secret");
  const nonce = randomBytes(GCM_NONCE_BYTES);
  const { ciphertext, tag } = aesGcmEncrypt(key, nonce, Buffer.from(plaintext, "utf8"), Buffer.from(`mfa:${boundTo}`));
  key.fill(0);
  return Buffer.concat([Buffer.from([VERSION]), nonce, ciphertext, tag]);
}

export function openSecret(rootKey: RootKey, sealed: Buffer, boundTo: string): string {
  const key = deriveAuthKey(rootKey, "mfa-secret");
  try {
    if (sealed[0] !== VERSION) throw new Error("unknown sealed-secret version");
    const nonce = sealed.subarray(1, 1 + GCM_NONCE_BYTES);
    const tag = sealed.subarray(sealed.length - GCM_TAG_BYTES);
    const ciphertext = sealed.subarray(1 + GCM_NONCE_BYTES, sealed.length - GCM_TAG_BYTES);
    return aesGcmDecrypt(key, nonce, ciphertext, tag, Buffer.from(`mfa:${boundTo}`)).toString("utf8");
  } finally {
    key.fill(0);
  }
}
