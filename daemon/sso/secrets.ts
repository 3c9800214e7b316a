import { randomBytes } from "node:crypto";
import { type RootKey, aesGcmDecrypt, aesGcmEncrypt, GCM_NONCE_BYTES, GCM_TAG_BYTES, hkdfSha256 } from "../keys/index.js";

/**
 * Provider secrets (OIDC client secrets, LDAP bind passwords), the SAML SP's private keys and
 * in-flight sign-in state (PKCE verifier, nonce) are sealed as daemon/auth/secret-box.ts seals TOTP secrets: AES-256-GCM under
 * a key derived with HKDF from the root key's material, bound to what they belong to, so a
 * database dump yields neither, and a sealed value moved to another row fails to open.
 */
const VERSION = 1;

/** What a sealed value is; each has its own derived key, so one never opens as another. `sp-key`: a SAML SP private key. */
type SealPurpose = "idp-secret" | "login-state" | "sp-key";

function ssoKey(rootKey: RootKey, purpose: SealPurpose): Buffer {
  return hkdfSha256(rootKey.material(), Buffer.from("wardkeep/sso"), Buffer.from(`wardkeep/sso/${purpose}/v1`), 32);
}

export function sealSsoValue(rootKey: RootKey, purpose: SealPurpose, value: unknown, boundTo: string): Buffer {
  const key = ssoKey(rootKey, purpose);
  try {
    const nonce = randomBytes(GCM_NONCE_BYTES);
    const { ciphertext, tag } = aesGcmEncrypt(key, nonce, Buffer.from(JSON.stringify(value), "utf8"), Buffer.from(`${purpose}:${boundTo}`));
    return Buffer.concat([Buffer.from([VERSION]), nonce, ciphertext, tag]);
  } finally {
    key.fill(0);
  }
}

export function openSsoValue<T>(rootKey: RootKey, purpose: SealPurpose, sealed: Buffer, boundTo: string): T {
  const key = ssoKey(rootKey, purpose);
  try {
    if (sealed[0] !== VERSION) throw new Error("unknown sealed-value version");
    const nonce = sealed.subarray(1, 1 + GCM_NONCE_BYTES);
    const tag = sealed.subarray(sealed.length - GCM_TAG_BYTES);
    const ciphertext = sealed.subarray(1 + GCM_NONCE_BYTES, sealed.length - GCM_TAG_BYTES);
    return JSON.parse(aesGcmDecrypt(key, nonce, ciphertext, tag, Buffer.from(`${purpose}:${boundTo}`)).toString("utf8")) as T;
  } finally {
    key.fill(0);
  }
}
