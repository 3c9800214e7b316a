/**
 * Cryptographic primitives for key management and field encryption.
 *
 * Everything here is a thin, validated wrapper over `node:crypto` (OpenSSL). DESIGN.md "Runtime and
 * dependencies": data is never encrypted with node-forge's JavaScript ciphers.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";

export const AES_256_KEY_BYTES = 32;
/** NIST SP 800-38D §5.2.1.1: 96-bit IVs are the recommended length (no GHASH of the IV). */
export const GCM_NONCE_BYTES = 12;
/** Full 128-bit tags only: SP 800-38D Appendix C shows shorter tags weaken forgery bounds. */
export const GCM_TAG_BYTES = 16;

/**
 * Any failure to authenticate or unwrap. The message is fixed text: it never includes key,
 * nonce, ciphertext or plaintext bytes, so it is safe to log and to return in problem+json, and it
 * does not say *which* part failed (an oracle that distinguishes tag from padding failures helps
 * an attacker).
 */
export class DecryptionError extends Error {
  constructor(message = "decryption failed: data is corrupt, tampered with, or bound to another context or key") {
    super(message);
    this.name = "DecryptionError";
  }
}

function requireLength(name: string, buf: Buffer, expected: number): void {
  if (!Buffer.isBuffer(buf)) throw new TypeError(`${name} must be a Buffer`);
  if (buf.length !== expected) {
    throw new RangeError(`${name} must be ${expected} bytes, got ${buf.length}`);
  }
}

export function aesGcmEncrypt(key: Buffer, nonce: Buffer, plaintext: Buffer, aad: Buffer): { ciphertext: Buffer; tag: Buffer } {
  requireLength("key", key, AES_256_KEY_BYTES);
  requireLength("nonce", nonce, GCM_NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce, {
    authTagLength: GCM_TAG_BYTES,
  });
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  // GCM is a stream mode: final() emits nothing, so skip the copy a concat would make.
  const rest = cipher.final();
  const ciphertext = rest.length === 0 ? body : Buffer.concat([body, rest]);
  return { ciphertext, tag: cipher.getAuthTag() };
}

export function aesGcmDecrypt(key: Buffer, nonce: Buffer, ciphertext: Buffer, tag: Buffer, aad: Buffer): Buffer {
  requireLength("key", key, AES_256_KEY_BYTES);
  requireLength("nonce", nonce, GCM_NONCE_BYTES);
  // The tag comes from stored (attacker-reachable) data, so a wrong length is a tamper, not a
  // programming error. Checking it here also stops OpenSSL accepting a truncated tag.
  if (!Buffer.isBuffer(tag) || tag.length !== GCM_TAG_BYTES) throw new DecryptionError();
  let plaintext: Buffer | undefined;
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, nonce, {
      authTagLength: GCM_TAG_BYTES,
    });
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    plaintext = decipher.update(ciphertext);
    decipher.final();
    return plaintext;
  } catch {
    // GCM releases unauthenticated plaintext from update() before final() checks the tag; wipe
    // it so it cannot leak through a reused buffer.
    if (plaintext) zeroize(plaintext);
    throw new DecryptionError();
  }
}

/** RFC 5869 HKDF with SHA-256. */
export function hkdfSha256(ikm: Buffer, salt: Buffer, info: Buffer, length: number): Buffer {
  // RFC 5869 §2.3: L <= 255 * HashLen.
  if (!Number.isInteger(length) || length < 1 || length > 255 * 32) {
    throw new RangeError(`HKDF-SHA256 output length must be 1..8160 bytes, got ${length}`);
  }
  return Buffer.from(hkdfSync("sha256", ikm, salt, info, length));
}

/** RFC 3394 §2.2.3.1 default initial value; unwrap checks it, giving integrity over the wrapped key. */
const RFC3394_DEFAULT_IV = Buffer.from("A6A6A6A6A6A6A6A6", "hex");

/**
 * AES-256 key wrap (RFC 3394). Deterministic, so it is only for wrapping uniformly random keys
 * (DEKs under the KEK), never for data.
 */
export function wrapKey(kek: Buffer, key: Buffer): Buffer {
  requireLength("kek", kek, AES_256_KEY_BYTES);
  // RFC 3394 §2: plaintext is n >= 2 64-bit blocks.
  if (!Buffer.isBuffer(key) || key.length < 16 || key.length % 8 !== 0) {
    throw new RangeError(`key to wrap must be a multiple of 8 bytes and at least 16, got ${key.length}`);
  }
  const cipher = createCipheriv("id-aes256-wrap", kek, RFC3394_DEFAULT_IV);
  return Buffer.concat([cipher.update(key), cipher.final()]);
}

export function unwrapKey(kek: Buffer, wrapped: Buffer): Buffer {
  requireLength("kek", kek, AES_256_KEY_BYTES);
  if (!Buffer.isBuffer(wrapped) || wrapped.length < 24 || wrapped.length % 8 !== 0) {
    throw new DecryptionError("key unwrap failed: wrapped key has an invalid length");
  }
  let out: Buffer | undefined;
  try {
    const decipher = createDecipheriv("id-aes256-wrap", kek, RFC3394_DEFAULT_IV);
    // OpenSSL checks the integrity value inside update(), so the error can surface from either call.
    out = decipher.update(wrapped);
    const rest = decipher.final();
    if (rest.length === 0) return out;
    const key = Buffer.concat([out, rest]);
    zeroize(out);
    return key;
  } catch {
    if (out) zeroize(out);
    throw new DecryptionError("key unwrap failed: wrong key-encryption key or corrupt wrapped key");
  }
}

export function hmacSha256(key: Buffer, data: Buffer): Buffer {
  return createHmac("sha256", key).update(data).digest();
}

/** A fresh 256-bit key from the OS CSPRNG. */
export function randomKey(): Buffer {
  return randomBytes(AES_256_KEY_BYTES);
}

/**
 * Overwrite key material once it is no longer needed, shortening the window in which a heap dump
 * or core file would expose it. Best effort: V8 may already have copied the bytes.
 */
export function zeroize(buf: Buffer): void {
  buf.fill(0);
}
