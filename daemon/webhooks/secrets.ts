import { createHmac, randomBytes } from "node:crypto";
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

export type SecretOwner = { kind: "endpoint" | "source"; id: string; version: number };

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
