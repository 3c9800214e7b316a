/**
 * The key store's layout and the one wrapping format every key in it uses.
 *
 *   unseal key (from the unseal source; never stored)
 *     └─ wraps KEK versions            keystore.kek_versions.wrapped
 *          └─ the active KEK wraps data keys   keystore.data_keys.wrapped
 *
 * Wrapped blob = 0x01 || nonce (12) || AES-256-GCM ciphertext || tag (16), with associated data
 * naming what the blob is (label, key id, versions), so a wrapped key copied into another row or
 * relabelled fails to unwrap instead of being used as the wrong key. AES-GCM rather than RFC 3394
 * key wrap because it binds that context; nonces are random, and the number of wraps under one
 * key stays far below the 2^32 bound.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { type Tx } from "../db/sql.js";
import type { ApplianceContext } from "../context.js";
import { DecryptionError, GCM_NONCE_BYTES, GCM_TAG_BYTES, aesGcmDecrypt, aesGcmEncrypt } from "./primitives.js";

/**
 * Schemas that data snapshots must never contain (DESIGN "Keys": crypto-shredding survives a
 * restore only if destroyed keys cannot come back with the data). The backup engine skips these
 * by name; the key store is backed up on its own with a retention shorter than the shredding
 * grace period.
 */
export const SNAPSHOT_EXCLUDED_SCHEMAS: readonly string[] = Object.freeze(["keystore"]);

const WRAP_FORMAT = 1;

export function wrapSecret(key: Buffer, secret: Buffer, aad: string): Buffer {
  const nonce = randomBytes(GCM_NONCE_BYTES);
  const { ciphertext, tag } = aesGcmEncrypt(key, nonce, secret, Buffer.from(aad, "utf8"));
  return Buffer.concat([Buffer.from([WRAP_FORMAT]), nonce, ciphertext, tag]);
}

/** Throws DecryptionError (fixed text, no key bytes) when the key or the context is wrong. */
export function unwrapSecret(key: Buffer, blob: Buffer, aad: string): Buffer {
  if (!Buffer.isBuffer(blob) || blob.length < 1 + GCM_NONCE_BYTES + GCM_TAG_BYTES || blob[0] !== WRAP_FORMAT) {
    throw new DecryptionError("key unwrap failed: the wrapped key is malformed");
  }
  const nonce = blob.subarray(1, 1 + GCM_NONCE_BYTES);
  const tag = blob.subarray(blob.length - GCM_TAG_BYTES);
  const body = blob.subarray(1 + GCM_NONCE_BYTES, blob.length - GCM_TAG_BYTES);
  return aesGcmDecrypt(key, nonce, body, tag, Buffer.from(aad, "utf8"));
}

/** Associated data of each kind of wrapped blob. */
export const aad = {
  kek: (version: number) => `wardkeep/kek/v1|${version}`,
  kekChain: (version: number) => `wardkeep/kek-chain/v1|${version}`,
  dataKey: (keyId: string, version: number, kekVersion: number) => `wardkeep/data-key/v1|${keyId}|${version}|${kekVersion}`,
  recoveryPrivate: (id: number, kekVersion: number) => `wardkeep/recovery-private/v1|${id}|${kekVersion}`,
};

/**
 * Key check values: HMAC-SHA-256 of a fixed label under the key. HMAC is a PRF, so the value
 * reveals nothing about the key, yet a wrong key (passphrase, share, key file, HSM) is told
 * apart from the right one before anything is unwrapped or written with it.
 */
export function unsealCheckValue(unsealKey: Buffer): Buffer {
  return createHmac("sha256", unsealKey).update("wardkeep/unseal-key-check/v1").digest();
}

export function kekCheckValue(kek: Buffer, version: number): Buffer {
  return createHmac("sha256", kek).update(`wardkeep/kek-check/v1|${version}`).digest();
}

export function sameCheckValue(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

export type SealRow = {
  mode: "keyfile" | "passphrase" | "shamir" | "pkcs11";
  params: Record<string, unknown>;
  check_value: Buffer;
  generation: number;
  created_at: Date;
  updated_at: Date;
};

export type KekRow = {
  version: number;
  wrapped: Buffer;
  wrapped_by_previous: Buffer | null;
  check_value: Buffer;
  state: "active" | "retiring";
  created_at: Date;
  retired_at: Date | null;
};

export type DataKeyKind = "tenant" | "patient" | "index" | "audit-signing" | "appliance-internal";

export type DataKeyRow = {
  key_id: string;
  version: number;
  kind: DataKeyKind;
  tenant_id: string | null;
  patient_id: string | null;
  wrapped: Buffer;
  kek_version: number;
  public_key: Buffer | null;
  state: "active" | "retired";
  nonce_count: string;
  created_at: Date;
  retired_at: Date | null;
};

export async function readSeal(ctx: ApplianceContext, t: Tx, forUpdate = false): Promise<SealRow | undefined> {
  const rows = await t.rows<SealRow>(`SELECT mode, params, check_value, generation, created_at, updated_at FROM keystore.seal${forUpdate ? " FOR UPDATE" : ""}`);
  return rows[0];
}

/** Advisory lock ids (pg_advisory_xact_lock), shared by every replica. */
export const LOCKS = {
  initialise: 7_301_200,
  kekRotation: 7_301_201,
  /** Two-key form: (dataKey, hashtext(key_id)). Writers take it shared, rotation exclusive. */
  dataKey: 7_301_202,
  rewrap: 7_301_203,
  reencrypt: 7_301_204,
  shred: 7_301_205,
  recovery: 7_301_206,
  nonceFlush: 7_301_207,
} as const;

/** The slot of a data key version in caches and counters. */
export function slotOf(keyId: string, version: number): string {
  return `${keyId}#${version}`;
}
