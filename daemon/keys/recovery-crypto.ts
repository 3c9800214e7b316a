/**
 * Recovery key pair cryptography: X25519 keys and an ECIES-style wrap (RFC 7748 X25519, RFC 5869
 * HKDF-SHA-256, AES-256-GCM), so snapshot keys can be wrapped with the public half alone and
 * unwrapped on a brand-new appliance with the private half from the recovery kit.
 *
 * Blob = 0x01 || ephemeral public key (32) || nonce (12) || ciphertext || tag (16)
 * key  = HKDF(salt = ephemeral public || recipient public, ikm = X25519(eph, recipient),
 *             info = "wardkeep/recovery-wrap/v1", 32 bytes)
 * AAD  = "wardkeep/recovery-wrap/v1" || 0x01 || ephemeral public || recipient public
 *
 * Both public keys go into the KDF and the AAD so a blob cannot be re-targeted, and a fresh
 * ephemeral key per wrap means the derived key (and so the GCM nonce) is never reused.
 */
import { createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import { DecryptionError, GCM_NONCE_BYTES, GCM_TAG_BYTES, aesGcmDecrypt, aesGcmEncrypt, hkdfSha256, zeroize } from "./primitives.js";

const FORMAT = 1;
const LABEL = "wardkeep/recovery-wrap/v1";
const X25519_BYTES = 32;
const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

export function generateRecoveryKeyPair(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync("x25519");
}

export function rawPublicKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: "jwk" });
  if (jwk.crv !== "X25519" || !jwk.x) throw new TypeError("not an X25519 key");
  return Buffer.from(jwk.x, "base64url");
}

export function rawPrivateKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: "jwk" });
  if (jwk.crv !== "X25519" || !jwk.d) throw new TypeError("not an X25519 private key");
  return Buffer.from(jwk.d, "base64url");
}

export function recoveryPublicKeyFromRaw(raw: Buffer): KeyObject {
  if (raw.length !== X25519_BYTES) throw new RangeError("an X25519 public key is 32 bytes");
  return createPublicKey({ key: { kty: "OKP", crv: "X25519", x: raw.toString("base64url") }, format: "jwk" });
}

export function recoveryPrivateKeyFromRaw(raw: Buffer): KeyObject {
  if (raw.length !== X25519_BYTES) throw new RangeError("an X25519 private key is 32 bytes");
  // RFC 8410 PKCS#8 wrapping of a raw X25519 private key (OID 1.3.101.110).
  return createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
}

/** A short, comparable name for a recovery public key (SHA-256 prefix, colon-separated). */
export function recoveryFingerprint(publicKey: KeyObject | Buffer): string {
  const raw = Buffer.isBuffer(publicKey) ? publicKey : rawPublicKey(publicKey);
  return createHash("sha256").update(raw).digest("hex").slice(0, 32).match(/.{4}/g)!.join(":");
}

function toPublicKey(key: KeyObject | Buffer): KeyObject {
  return Buffer.isBuffer(key) ? recoveryPublicKeyFromRaw(key) : key;
}

function wrapKey(ephemeralPublic: Buffer, recipientPublic: Buffer, shared: Buffer): { key: Buffer; aad: Buffer } {
  const context = Buffer.concat([ephemeralPublic, recipientPublic]);
  const key = hkdfSha256(shared, context, Buffer.from(LABEL, "utf8"), 32);
  const aad = Buffer.concat([Buffer.from(LABEL, "utf8"), Buffer.from([FORMAT]), context]);
  return { key, aad };
}

/** Wraps `key` (any secret, typically a 32-byte snapshot key) for the holder of the recovery private key. */
export function wrapForRecovery(publicKey: KeyObject | Buffer, key: Buffer): Buffer {
  const recipient = toPublicKey(publicKey);
  if (recipient.asymmetricKeyType !== "x25519") throw new TypeError("the recovery public key must be X25519");
  const recipientRaw = rawPublicKey(recipient);
  const ephemeral = generateKeyPairSync("x25519");
  const ephemeralRaw = rawPublicKey(ephemeral.publicKey);
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient });
  const { key: wrapping, aad } = wrapKey(ephemeralRaw, recipientRaw, shared);
  zeroize(shared);
  const nonce = randomBytes(GCM_NONCE_BYTES);
  const { ciphertext, tag } = aesGcmEncrypt(wrapping, nonce, key, aad);
  zeroize(wrapping);
  return Buffer.concat([Buffer.from([FORMAT]), ephemeralRaw, nonce, ciphertext, tag]);
}

/** Reverses `wrapForRecovery`; throws DecryptionError for a wrong private key or a damaged blob. */
export function unwrapWithRecovery(privateKey: KeyObject | Buffer, blob: Buffer): Buffer {
  const recipient = Buffer.isBuffer(privateKey) ? recoveryPrivateKeyFromRaw(privateKey) : privateKey;
  if (recipient.asymmetricKeyType !== "x25519") throw new TypeError("the recovery private key must be X25519");
  if (!Buffer.isBuffer(blob) || blob.length < 1 + X25519_BYTES + GCM_NONCE_BYTES + GCM_TAG_BYTES || blob[0] !== FORMAT) {
    throw new DecryptionError("recovery unwrap failed: the wrapped key is malformed");
  }
  const ephemeralRaw = blob.subarray(1, 1 + X25519_BYTES);
  const nonce = blob.subarray(1 + X25519_BYTES, 1 + X25519_BYTES + GCM_NONCE_BYTES);
  const body = blob.subarray(1 + X25519_BYTES + GCM_NONCE_BYTES, blob.length - GCM_TAG_BYTES);
  const tag = blob.subarray(blob.length - GCM_TAG_BYTES);
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: recipient, publicKey: recoveryPublicKeyFromRaw(Buffer.from(ephemeralRaw)) });
  } catch {
    throw new DecryptionError("recovery unwrap failed: the wrapped key is malformed");
  }
  const { key: wrapping, aad } = wrapKey(ephemeralRaw, rawPublicKey(createPublicKey(recipient)), shared);
  zeroize(shared);
  try {
    return aesGcmDecrypt(wrapping, nonce, body, tag, aad);
  } catch {
    throw new DecryptionError("recovery unwrap failed: wrong recovery key, or the wrapped key is damaged");
  } finally {
    zeroize(wrapping);
  }
}
