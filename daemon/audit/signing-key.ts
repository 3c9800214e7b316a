import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { inDataDir } from "../config/load.js";
import type { ApplianceContext } from "../context.js";
import { hkdfSha256, getAuditSigningKey, listAuditVerificationKeys } from "../keys/index.js";

/**
 * The keys that sign audit checkpoints and evidence-pack manifests, and the one place that
 * decides which public keys a verification trusts (API and CLI verify, evidence packs, restore
 * checks, the pinned file). docs/audit-format.md, "Signing keys".
 *
 * Signing uses the keyring's current audit signing key (daemon/keys/audit-signing.ts: Ed25519,
 * wrapped by the KEK, versioned, `wardkeep keys rotate --audit-signing`). Verification trusts
 * every version the keyring lists, each proven by unwrapping its private half, plus the legacy
 * key that signed checkpoints before the keyring had one. A checkpoint names its key by
 * fingerprint (`auditKeyId`), never by keyring version, so the public key alone checks it.
 */
export type CheckpointKey = {
  /** First 16 hex digits of SHA-256 over the raw 32-byte public key. */
  keyId: string;
  publicKey: KeyObject;
  publicKeyRaw: Buffer;
  publicKeyPem: string;
  /**
   * keyring: a version of the keyring's audit signing key. legacy: the HKDF-derived key of
   * appliances installed before the keyring had one (verifies, never signs). file: a PEM from
   * outside the database (pinned, or given to `wardkeep audit verify --public-key`).
   */
  origin: { kind: "keyring"; version: number; retiredAt: Date | null } | { kind: "legacy" } | { kind: "file" };
};

export type CheckpointSigningKey = CheckpointKey & { privateKey: KeyObject };

/** Which keys signatures were checked against; "database" means the rows' own keys (weak). */
export type KeyTrust = "keyring" | "pinned" | "given" | "database";

export type TrustedCheckpointKeys = { trust: KeyTrust; keys: Map<string, CheckpointKey> };

const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
// RFC 8410 PKCS#8 prefix for an Ed25519 private key: the 32-byte seed follows.
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

export function auditKeyId(publicKeyRaw: Buffer): string {
  return createHash("sha256").update(publicKeyRaw).digest("hex").slice(0, 16);
}

/** What an auditor compares: SHA-256 over the raw 32-byte public key, 64 hex digits (keyId is its first 16). */
export function auditKeyFingerprint(publicKeyRaw: Buffer): string {
  return createHash("sha256").update(publicKeyRaw).digest("hex");
}

export function publicKeyFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: "der", type: "spki" });
}

export function rawPublicKey(key: KeyObject): Buffer {
  return (key.export({ format: "der", type: "spki" }) as Buffer).subarray(ED25519_SPKI_PREFIX.length);
}

function checkpointKey(publicKey: KeyObject, origin: CheckpointKey["origin"]): CheckpointKey {
  if (publicKey.asymmetricKeyType !== "ed25519") throw new TypeError(`an audit checkpoint key must be Ed25519, not ${publicKey.asymmetricKeyType}`);
  const publicKeyRaw = rawPublicKey(publicKey);
  return { keyId: auditKeyId(publicKeyRaw), publicKey, publicKeyRaw, publicKeyPem: publicKey.export({ format: "pem", type: "spki" }) as string, origin };
}

/** The key new checkpoints and manifests are signed with: the keyring's current version. Throws `Sealed` (503) while sealed. */
export async function checkpointSigningKey(ctx: ApplianceContext): Promise<CheckpointSigningKey> {
  const key = await getAuditSigningKey(ctx);
  return { ...checkpointKey(key.publicKey, { kind: "keyring", version: key.version, retiredAt: null }), privateKey: key.privateKey };
}

// LEGACY (docs/audit-format.md, "Signing keys"): until the keyring had an audit signing key,
// checkpoints were signed with a key derived from the appliance-internal secret with this label.
// Nothing signs with it any more; its public half stays trusted so those checkpoints still verify.
const LEGACY_LABEL = "wardkeep/audit/checkpoint-signing/v1";

function legacyCheckpointKey(ctx: ApplianceContext): CheckpointKey {
  const seed = hkdfSha256(ctx.rootKey.material(), Buffer.alloc(0), Buffer.from(LEGACY_LABEL), 32);
  const pkcs8 = Buffer.concat([ED25519_PKCS8_PREFIX, seed]);
  try {
    return checkpointKey(createPublicKey(createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" })), { kind: "legacy" });
  } finally {
    seed.fill(0);
    pkcs8.fill(0);
  }
}

/**
 * Every key this appliance trusts for its checkpoints (needs it unsealed): each keyring version
 * whose public half is proven by its KEK-wrapped private half, then the legacy key. A keyring row
 * that does not prove itself (added or edited in the database) is left out and logged, so what it
 * signed is reported as signed by an unknown key.
 */
export async function applianceCheckpointKeys(ctx: ApplianceContext): Promise<CheckpointKey[]> {
  const legacy = legacyCheckpointKey(ctx); // Sealed (503) before anything is read
  const listed = await listAuditVerificationKeys(ctx);
  const keys: CheckpointKey[] = [];
  for (const v of listed) {
    if (!v.authenticated) {
      ctx.log.warn("audit signing key version does not unwrap under the KEK; its signatures are not trusted", { version: v.version });
      continue;
    }
    keys.push(checkpointKey(v.publicKey, { kind: "keyring", version: v.version, retiredAt: v.retiredAt }));
  }
  keys.push(legacy);
  return keys;
}

/**
 * The keys a verification checks checkpoint signatures against — never the key a checkpoint row
 * claims: keys given by the caller; else the appliance's own (unsealed); else the keys pinned
 * outside the database (sealed); else none, and the report says "database" (self-consistency).
 */
export async function trustedCheckpointKeys(ctx: ApplianceContext, given?: KeyObject[]): Promise<TrustedCheckpointKeys> {
  const byId = (list: CheckpointKey[]) => new Map(list.map((k) => [k.keyId, k]));
  if (given?.length) return { trust: "given", keys: byId(given.map((k) => checkpointKey(k, { kind: "file" }))) };
  if (!ctx.rootKey.isSealed) return { trust: "keyring", keys: byId(await applianceCheckpointKeys(ctx)) };
  const pinned = readPinnedKeys(ctx);
  return pinned.length ? { trust: "pinned", keys: byId(pinned) } : { trust: "database", keys: new Map() };
}

/** Every public key in a PEM text (one or more Ed25519 SPKI blocks, as pinned or as shipped in packs). */
export function publicKeysFromPem(text: string): KeyObject[] {
  const blocks = text.match(/-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g) ?? [];
  if (blocks.length === 0) throw new TypeError("no PEM public key (-----BEGIN PUBLIC KEY-----) found");
  return blocks.map((b) => {
    const key = createPublicKey(b);
    if (key.asymmetricKeyType !== "ed25519") throw new TypeError(`a ${key.asymmetricKeyType} key is not an audit checkpoint key (Ed25519)`);
    return key;
  });
}

/** The checkpoint public keys written outside the database (trust on first use), one PEM block per key. */
export function pinnedKeyPath(ctx: Pick<ApplianceContext, "config">): string {
  return inDataDir(ctx.config, "audit/checkpoint-signing.pub.pem");
}

function readPinnedKeys(ctx: ApplianceContext): CheckpointKey[] {
  let text: string;
  try {
    text = fs.readFileSync(pinnedKeyPath(ctx), "utf8");
  } catch {
    return [];
  }
  try {
    return publicKeysFromPem(text).map((k) => checkpointKey(k, { kind: "file" }));
  } catch (err) {
    ctx.log.warn(`the pinned audit public keys at ${pinnedKeyPath(ctx)} cannot be read: ${(err as Error).message}`);
    return [];
  }
}

/**
 * Adds keys to the pinned file (never removes one: the file is the record of every key the
 * appliance has signed with, so a sealed appliance or `wardkeep audit verify` without unsealing
 * checks signatures against keys an attacker with only database access cannot replace).
 */
function pinKeys(ctx: ApplianceContext, keys: CheckpointKey[]): void {
  const file = pinnedKeyPath(ctx);
  const pinned = new Set(readPinnedKeys(ctx).map((k) => k.keyId));
  const missing = keys.filter((k) => !pinned.has(k.keyId));
  if (missing.length === 0) return;
  const existing = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, existing + (existing && !existing.endsWith("\n") ? "\n" : "") + missing.map((k) => k.publicKeyPem).join(""), { mode: 0o644 });
  fs.renameSync(tmp, file);
  ctx.log.info("audit checkpoint keys pinned", { file, keyIds: missing.map((k) => k.keyId) });
}

/** Pins every key the appliance trusts (at start and before each periodic checkpoint). */
export async function pinAuditPublicKey(ctx: ApplianceContext): Promise<void> {
  if (ctx.rootKey.isSealed) return;
  pinKeys(ctx, await applianceCheckpointKeys(ctx));
}

/** Pins the signing key before its first signature is stored (a rotation since the last pin); best effort. */
export function pinSigningKey(ctx: ApplianceContext, key: CheckpointSigningKey): void {
  try {
    pinKeys(ctx, [key]);
  } catch (err) {
    ctx.log.warn(`audit signing key not pinned: ${(err as Error).message}`);
  }
}

/** How a key is named to people and in evidence packs: its fingerprint and where it comes from. */
export type KeyLabel = { keyId: string; keyringVersion: number | null; legacy: boolean };

export function keyLabel(k: CheckpointKey): KeyLabel {
  return { keyId: k.keyId, keyringVersion: k.origin.kind === "keyring" ? k.origin.version : null, legacy: k.origin.kind === "legacy" };
}

type ShownKey = KeyLabel & { fingerprint: string; publicKeyPem: string; publicKeyRaw: string };

function showKey(k: CheckpointKey): ShownKey {
  return { ...keyLabel(k), fingerprint: auditKeyFingerprint(k.publicKeyRaw), publicKeyPem: k.publicKeyPem, publicKeyRaw: k.publicKeyRaw.toString("base64") };
}

/** `GET /api/v1/audit/public-key`: the key that signs now, and every key that verifies (rotated-out and legacy included). */
export async function describeCheckpointKeys(
  ctx: ApplianceContext,
): Promise<ShownKey & { algorithm: "Ed25519"; verificationKeys: Array<ShownKey & { retiredAt: string | null }> }> {
  const signer = await checkpointSigningKey(ctx);
  const keys = await applianceCheckpointKeys(ctx);
  return {
    algorithm: "Ed25519",
    ...showKey(signer),
    verificationKeys: keys.map((k) => ({ ...showKey(k), retiredAt: k.origin.kind === "keyring" ? (k.origin.retiredAt?.toISOString() ?? null) : null })),
  };
}

export function signMessage(key: CheckpointSigningKey, message: string | Buffer): Buffer {
  return sign(null, typeof message === "string" ? Buffer.from(message, "utf8") : message, key.privateKey);
}

export function verifyMessage(publicKey: KeyObject, message: string, signature: Buffer): boolean {
  try {
    return verify(null, Buffer.from(message, "utf8"), publicKey, signature);
  } catch {
    return false;
  }
}
