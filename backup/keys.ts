/**
 * How a snapshot key is protected and how a manifest is authenticated (backup/FORMAT.md, "Keys").
 *
 * - Each snapshot has a fresh random 256-bit snapshot key; every object key is derived from it.
 * - It is wrapped twice: by the appliance (AES-256 key wrap, RFC 3394, under a key derived with
 *   HKDF from the appliance-internal secret `ctx.rootKey.material()`, which is itself wrapped by
 *   the KEK), and by the recovery public key (X25519 + HKDF + AES-256-GCM, daemon/keys/
 *   recovery-crypto.ts) so a brand-new appliance restores with the recovery kit alone. Because the
 *   internal secret survives KEK rotation and rekeying, old snapshots stay openable after the KEK
 *   rotates without rewriting anything on the target (which Object Lock would forbid).
 * - The manifest body is MACed with HMAC-SHA256 under a key derived from the snapshot key
 *   (whoever can decrypt can check it, including the standalone script), and signed with an
 *   Ed25519 key derived from the appliance-internal secret, so a snapshot fabricated by someone
 *   who only knows the (public) recovery key is told apart when the signer is pinned.
 */
import { createHmac, createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from "node:crypto";
import { hkdfSha256, unwrapKey, wrapKey, zeroize, recoveryFingerprint, unwrapWithRecovery, wrapForRecovery } from "../daemon/keys/index.js";
import { SnapshotKeyError } from "./errors.js";

const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export const APPLIANCE_WRAP_ALG = "A256KW";
export const RECOVERY_WRAP_ALG = "X25519-HKDF-SHA256-A256GCM/v1";

export type KeyWrap = { type: "appliance" | "recovery"; alg: string; keyId: string; wrapped: string };

export function newSnapshotKey(): Buffer {
  return randomBytes(32);
}

function applianceWrappingKey(applianceSecret: Buffer): Buffer {
  return hkdfSha256(applianceSecret, Buffer.alloc(0), Buffer.from("wardkeep-backup/snapshot-key-wrap/v1"), 32);
}

/** Public name of the appliance wrapping key, so a restore says which appliance a snapshot belongs to. */
export function applianceKeyId(applianceSecret: Buffer): string {
  return createHmac("sha256", applianceSecret).update("wardkeep-backup/appliance-key-id/v1").digest("hex").slice(0, 16);
}

export function wrapForAppliance(applianceSecret: Buffer, snapshotKey: Buffer): KeyWrap {
  const k = applianceWrappingKey(applianceSecret);
  try {
    return { type: "appliance", alg: APPLIANCE_WRAP_ALG, keyId: applianceKeyId(applianceSecret), wrapped: wrapKey(k, snapshotKey).toString("base64") };
  } finally {
    zeroize(k);
  }
}

export function wrapForRecoveryKey(recoveryPublicKey: Buffer, snapshotKey: Buffer): KeyWrap {
  return { type: "recovery", alg: RECOVERY_WRAP_ALG, keyId: recoveryFingerprint(recoveryPublicKey), wrapped: wrapForRecovery(recoveryPublicKey, snapshotKey).toString("base64") };
}

/** What can open a snapshot: this appliance's internal secret, or the recovery private key. */
export type SnapshotOpener = { applianceSecret: Buffer } | { recoveryPrivateKey: KeyObject | Buffer };

export function unwrapSnapshotKey(wraps: KeyWrap[], opener: SnapshotOpener): Buffer {
  if ("applianceSecret" in opener) {
    const id = applianceKeyId(opener.applianceSecret);
    const wrap = wraps.find((w) => w.type === "appliance" && w.keyId === id);
    if (!wrap) {
      const other = wraps.find((w) => w.type === "appliance")?.keyId ?? "none";
      throw new SnapshotKeyError(`this snapshot was made by another appliance (key ${other}, this appliance is ${id}); restore it with the recovery key (--recovery-key)`);
    }
    const k = applianceWrappingKey(opener.applianceSecret);
    try {
      return unwrapKey(k, Buffer.from(wrap.wrapped, "base64"));
    } catch {
      throw new SnapshotKeyError("the appliance key could not unwrap this snapshot's key (the wrapped key is damaged)");
    } finally {
      zeroize(k);
    }
  }
  const wrap = wraps.find((w) => w.type === "recovery" && w.alg === RECOVERY_WRAP_ALG);
  if (!wrap) throw new SnapshotKeyError("this snapshot has no recovery-key wrapping");
  try {
    return unwrapWithRecovery(opener.recoveryPrivateKey, Buffer.from(wrap.wrapped, "base64"));
  } catch {
    let given = "?";
    try {
      const priv = Buffer.isBuffer(opener.recoveryPrivateKey) ? undefined : opener.recoveryPrivateKey;
      if (priv) given = recoveryFingerprint(Buffer.from(createPublicKey(priv).export({ format: "jwk" }).x!, "base64url"));
    } catch {
      /* fingerprint is only a hint */
    }
    throw new SnapshotKeyError(`wrong recovery key: this snapshot is wrapped for recovery key ${wrap.keyId}${given !== "?" ? `, the key given is ${given}` : ""}`);
  }
}

export function manifestMacKey(snapshotKey: Buffer): Buffer {
  return hkdfSha256(snapshotKey, Buffer.alloc(0), Buffer.from("wardkeep-backup/manifest-mac/v1"), 32);
}

export type ManifestSigner = { privateKey: KeyObject; publicKeyRaw: Buffer; keyId: string };

export function signerKeyId(publicKeyRaw: Buffer): string {
  return createHmac("sha256", "wardkeep-backup/signer-id/v1").update(publicKeyRaw).digest("hex").slice(0, 16);
}

/** Ed25519 key derived from the appliance-internal secret: same on every replica, never on disk. */
export function manifestSigner(applianceSecret: Buffer): ManifestSigner {
  const seed = hkdfSha256(applianceSecret, Buffer.alloc(0), Buffer.from("wardkeep-backup/manifest-signing/v1"), 32);
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" });
  zeroize(seed);
  const publicKeyRaw = (createPublicKey(privateKey).export({ format: "der", type: "spki" }) as Buffer).subarray(ED25519_SPKI_PREFIX.length);
  return { privateKey, publicKeyRaw, keyId: signerKeyId(publicKeyRaw) };
}

export function ed25519Sign(signer: ManifestSigner, message: Buffer): Buffer {
  return sign(null, message, signer.privateKey);
}

export function ed25519Verify(publicKeyRaw: Buffer, message: Buffer, signature: Buffer): boolean {
  try {
    const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKeyRaw]), format: "der", type: "spki" });
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}
