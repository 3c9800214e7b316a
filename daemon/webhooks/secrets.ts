import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from "node:crypto";
import type { ApplianceContext } from "../context.js";
import { hkdfSha256, unwrapSecret, wrapSecret, zeroize } from "../keys/index.js";

/**
 * Webhook secrets (Standard Webhooks 1.0, "Signature scheme"): 24 random bytes shown as
 * `whsec_` + base64. At rest they are AES-256-GCM sealed under a key derived from the root key
 * (so a database dump holds no usable secret, and a sealed appliance signs nothing), with the
 * owner's id and the secret's version as associated data: a sealed secret copied onto another
 * endpoint or version fails to open.
 */
export const SECRET_PREFIX = "whsec_";
const SECRET_BYTES = 24;

/** `endpoint_ed25519`: an endpoint's `v1a` private key (its own kind, so a sealed HMAC secret never opens as a key or the reverse). */
export type SecretOwner = { kind: "endpoint" | "endpoint_ed25519" | "source"; id: string; version: number };

export function newSecret(): Buffer {
  return randomBytes(SECRET_BYTES);
}

export function formatSecret(raw: Buffer): string {
  return SECRET_PREFIX + raw.toString("base64");
}

function sealingKey(ctx: ApplianceContext): Buffer {
  return hkdfSha256(ctx.rootKey.material(), Buffer.alloc(0), Buffer.from("wardkeep/webhooks/secret-sealing-key/v1"), 32);
}

const aadOf = (owner: SecretOwner) => `wardkeep/webhooks/secret/v1|${owner.kind}|${owner.id}|${owner.version}`;

export function sealWebhookSecret(ctx: ApplianceContext, raw: Buffer, owner: SecretOwner): Buffer {
  const key = sealingKey(ctx);
  try {
    return wrapSecret(key, raw, aadOf(owner));
  } finally {
    zeroize(key);
  }
}

export function openWebhookSecret(ctx: ApplianceContext, sealed: Buffer, owner: SecretOwner): Buffer {
  const key = sealingKey(ctx);
  try {
    return unwrapSecret(key, sealed, aadOf(owner));
  } finally {
    zeroize(key);
  }
}

/**
 * `v1,` + base64(HMAC-SHA-256(secret, "{id}.{timestamp}.{body}")). Computed with node:crypto
 * (OpenSSL) rather than the `standardwebhooks` package's pure-JavaScript HMAC, which is several
 * times slower on the fan-out path; the tests verify every delivery with the package's reference
 * `Webhook.verify`, so the two cannot drift apart.
 */
export function signV1(secret: Buffer, messageId: string, timestampSeconds: number, body: Buffer | string): string {
  return "v1," + createHmac("sha256", secret).update(`${messageId}.${timestampSeconds}.`).update(body).digest("base64");
}

/**
 * `v1a` (Standard Webhooks 1.0, asymmetric): an Ed25519 key pair per endpoint. The private key
 * never leaves the appliance (sealed like a secret, as PKCS#8); the public key is shown as
 * `whpk_` + base64 of its 32 raw bytes, and receivers verify with it alone.
 */
export const PUBLIC_KEY_PREFIX = "whpk_";

export type Ed25519Pair = { privateKeyDer: Buffer; publicKey: Buffer };

export function newEd25519Pair(): Ed25519Pair {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const spki = publicKey.export({ format: "der", type: "spki" });
  // An Ed25519 SPKI is a fixed 12-byte header and the 32-byte key (RFC 8410).
  return { privateKeyDer: privateKey.export({ format: "der", type: "pkcs8" }), publicKey: spki.subarray(spki.length - 32) };
}

export function formatPublicKey(raw: Buffer): string {
  return PUBLIC_KEY_PREFIX + raw.toString("base64");
}

export function ed25519PrivateKey(der: Buffer): KeyObject {
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

/** `v1a,` + base64(Ed25519 signature of "{id}.{timestamp}.{body}"). */
export function signV1a(key: KeyObject, messageId: string, timestampSeconds: number, body: Buffer | string): string {
  const content = Buffer.concat([Buffer.from(`${messageId}.${timestampSeconds}.`), typeof body === "string" ? Buffer.from(body) : body]);
  return "v1a," + sign(null, content, key).toString("base64");
}

/** The raw 32 bytes of a `whpk_` public key (the request schema has checked its form). */
export function parsePublicKey(whpk: string): Buffer {
  return Buffer.from(whpk.slice(PUBLIC_KEY_PREFIX.length), "base64");
}

/** An Ed25519 public key from its 32 raw bytes (RFC 8037's JWK form, so no DER header is spelled out here). */
export function ed25519PublicKey(raw: Buffer): KeyObject {
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
}

/**
 * True when `signature` (the base64 after `v1a,`) is an Ed25519 signature of
 * "{id}.{timestamp}.{body}" by `key`. Anything that is not 64 bytes of signature is false.
 */
export function verifyV1a(key: KeyObject, messageId: string, timestampSeconds: number, body: Buffer, signature: string): boolean {
  const sig = Buffer.from(signature, "base64");
  if (sig.length !== 64) return false;
  return verify(null, Buffer.concat([Buffer.from(`${messageId}.${timestampSeconds}.`), body]), key, sig);
}
