/**
 * Point-in-time recovery objects (backup/FORMAT.md "WAL archive" and "Base backups"): each WAL
 * file PostgreSQL archives becomes one self-contained, signed, encrypted object, and a physical
 * base backup is a tar of the data directory in the same segmented stream with a signed manifest.
 *
 *   wal/<WAL file name>.wkw           one archived WAL file (segment, timeline history, backup history)
 *   basebackups/<id>/base.wkd         tar of the data directory, brotli, segmented AES-256-GCM
 *   basebackups/<id>/manifest.json    written LAST, once: MAC + Ed25519 signature, as a snapshot manifest
 *
 * A WAL object carries its own fresh key, wrapped for the appliance and for the recovery key like a
 * snapshot key, so losing or deleting one object never makes another unreadable, and a WORM lock
 * on one never pins another. The header names the WAL file; the stream's segment keys are bound to
 * that name, so a segment copied under another name fails to decrypt.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { z } from "zod";
import { hmacSha256, zeroize } from "../daemon/keys/index.js";
import { canonicalJson } from "./canonical-json.js";
import { collect } from "./keystore-backup.js";
import { SnapshotIntegrityError, SnapshotNotFound } from "./errors.js";
import {
  ed25519Sign,
  ed25519Verify,
  manifestMacKey,
  manifestSigner,
  newSnapshotKey,
  unwrapSnapshotKey,
  wrapForAppliance,
  wrapForRecoveryKey,
  type SnapshotOpener,
} from "./keys.js";
import { SNAPSHOT_ID, STREAM_ALG, sealedFileSchema, signerEntry, signerEntrySchema } from "./manifest.js";
import { SegmentDecryptStream, SegmentEncryptStream, snapshotKeyId } from "./stream-aead.js";
import type { SnapshotTarget } from "./targets/target.js";

export const WAL_FORMAT = "wardkeep-wal";
export const WAL_MAGIC = Buffer.from("WKWAL001", "ascii");
const WAL_SEGMENT_BYTES = 1 << 20;
/** The largest WAL file accepted (PostgreSQL's --wal-segsize is at most 1 GiB). */
const MAX_WAL_FILE = 1 << 30;

/** Names PostgreSQL gives the files it archives. */
export const WAL_SEGMENT = /^[0-9A-F]{24}$/;
export const WAL_FILE = /^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$/;

export const walLayout = {
  prefix: "wal/",
  object: (name: string) => `wal/${name}.wkw`,
  nameOf: (key: string) => (key.startsWith("wal/") && key.endsWith(".wkw") ? key.slice(4, -4) : undefined),
};

export const baseBackupLayout = {
  prefix: "basebackups/",
  manifest: (id: string) => `basebackups/${id}/manifest.json`,
  object: (id: string) => `basebackups/${id}/base.wkd`,
};

/** The segment's associated data: the key of each object is bound to the WAL file's name. */
export const walAssociatedData = (name: string) => `wal/${name}`;
export const baseBackupAssociatedData = (id: string) => `basebackup/${id}/base.tar`;

/** The WAL integrity error always names the file, so a failed restore says which object to look at. */
export class WalObjectError extends SnapshotIntegrityError {}
export class WalObjectMissing extends SnapshotNotFound {}

const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n}}$`));
const keyWrap = z.object({ type: z.enum(["appliance", "recovery"]), alg: z.string(), keyId: z.string(), wrapped: z.string() }).strict();

export const walHeaderSchema = z
  .object({
    format: z.literal(WAL_FORMAT),
    formatVersion: z.literal(1),
    /** The WAL file's own name (e.g. 000000010000000000000003). */
    name: z.string().regex(WAL_FILE),
    /** When the archive_command handed it over (the file's time in the spool). */
    archivedAt: z.string(),
    plainBytes: z.number().int(),
    plainSha256: hex(64),
    compression: z.object({ alg: z.enum(["brotli", "none"]), level: z.number().int() }).strict(),
    encryption: z.object({ alg: z.literal(STREAM_ALG), segmentBytes: z.number().int(), keyId: hex(16) }).strict(),
    keyWraps: z.array(keyWrap).min(1),
    signer: signerEntrySchema,
  })
  .strict();
export type WalHeader = z.infer<typeof walHeaderSchema>;

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const brotli = promisify(zlib.brotliCompress);
const unbrotli = promisify(zlib.brotliDecompress);

export type WalSealInput = { name: string; bytes: Buffer; archivedAt: Date; applianceSecret: Buffer; recoveryPublicKey: Buffer; compressionLevel?: number };

/**
 * One archived WAL file as its stored object: `WKWAL001 || header length (uint32 BE) || header
 * (canonical JSON) || Ed25519 signature (64) || segmented stream of the brotli-compressed file`.
 */
export async function sealWalFile(input: WalSealInput): Promise<{ object: Buffer; header: WalHeader }> {
  if (!WAL_FILE.test(input.name)) throw new RangeError(`not a WAL file name: ${input.name}`);
  const key = newSnapshotKey();
  const signer = manifestSigner(input.applianceSecret);
  try {
    const level = input.compressionLevel ?? 1;
    const compressed = await brotli(input.bytes, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: input.bytes.length } });
    const stream = await collect(Readable.from([compressed]).pipe(new SegmentEncryptStream(key, walAssociatedData(input.name), WAL_SEGMENT_BYTES)));
    const header: WalHeader = {
      format: WAL_FORMAT,
      formatVersion: 1,
      name: input.name,
      archivedAt: input.archivedAt.toISOString(),
      plainBytes: input.bytes.length,
      plainSha256: sha256(input.bytes),
      compression: { alg: "brotli", level },
      encryption: { alg: STREAM_ALG, segmentBytes: WAL_SEGMENT_BYTES, keyId: snapshotKeyId(key).toString("hex") },
      keyWraps: [wrapForAppliance(input.applianceSecret, key), wrapForRecoveryKey(input.recoveryPublicKey, key)],
      signer: signerEntry(signer),
    };
    const headerBytes = Buffer.from(canonicalJson(header), "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32BE(headerBytes.length);
    const signed = Buffer.concat([WAL_MAGIC, len, headerBytes]);
    return { object: Buffer.concat([signed, ed25519Sign(signer, signed), stream]), header };
  } finally {
    zeroize(key);
  }
}

/** Reads the header of a stored WAL object (not yet authenticated: `openWalObject` does that). */
function splitWalObject(name: string, object: Buffer): { signed: Buffer; signature: Buffer; header: WalHeader; stream: Buffer } {
  if (object.length < 12 || !object.subarray(0, 8).equals(WAL_MAGIC)) throw new WalObjectError(`WAL file ${name}: not a Wardkeep WAL object (bad magic)`);
  const len = object.readUInt32BE(8);
  if (len > 64 * 1024 || object.length < 12 + len + 64) throw new WalObjectError(`WAL file ${name}: the object is truncated`);
  const signed = object.subarray(0, 12 + len);
  let json: unknown;
  try {
    json = JSON.parse(object.subarray(12, 12 + len).toString("utf8"));
  } catch {
    throw new WalObjectError(`WAL file ${name}: the header is not valid JSON`);
  }
  const parsed = walHeaderSchema.safeParse(json);
  if (!parsed.success) throw new WalObjectError(`WAL file ${name}: the header is malformed (${parsed.error.issues[0]!.path.join(".")})`);
  return { signed, signature: object.subarray(12 + len, 12 + len + 64), header: parsed.data, stream: object.subarray(12 + len + 64) };
}

/**
 * Authenticates and opens one WAL object: the signature by a trusted signer (always required:
 * a recovery public key alone could fabricate the rest), the name it claims, every GCM tag, the
 * decompressed bytes' length and SHA-256. Every failure names the WAL file.
 */
export async function openWalObject(name: string, object: Buffer, opener: SnapshotOpener, trustedSigners: Buffer[]): Promise<{ header: WalHeader; bytes: Buffer }> {
  const { signed, signature, header, stream } = splitWalObject(name, object);
  if (header.name !== name) throw new WalObjectError(`WAL file ${name}: the object stored under this name holds ${header.name}`);
  const signerKey = Buffer.from(header.signer.publicKey, "base64");
  if (!ed25519Verify(signerKey, signed, signature)) throw new WalObjectError(`WAL file ${name}: the header's signature does not verify (tampered)`);
  if (!trustedSigners.some((k) => k.equals(signerKey))) throw new WalObjectError(`WAL file ${name}: signed by ${header.signer.keyId}, which is not this appliance's signer`);
  const key = unwrapSnapshotKey(header.keyWraps, opener);
  try {
    let compressed: Buffer;
    try {
      compressed = await collect(Readable.from([stream]).pipe(new SegmentDecryptStream(key, walAssociatedData(name), true)));
    } catch (err) {
      throw new WalObjectError(`WAL file ${name}: the encrypted data does not authenticate (tampered or damaged: ${(err as Error).message})`);
    }
    const bytes = header.compression.alg === "brotli" ? await unbrotli(compressed) : compressed;
    if (bytes.length !== header.plainBytes || sha256(bytes) !== header.plainSha256)
      throw new WalObjectError(`WAL file ${name}: the decrypted bytes do not match the header's digest`);
    return { header, bytes };
  } finally {
    zeroize(key);
  }
}

/** The header of a stored WAL object, checked against the trusted signer (listing and RPO without decrypting). */
export function walObjectHeader(name: string, object: Buffer, trustedSigners: Buffer[]): WalHeader {
  const { signed, signature, header } = splitWalObject(name, object);
  const signerKey = Buffer.from(header.signer.publicKey, "base64");
  if (header.name !== name || !ed25519Verify(signerKey, signed, signature) || !trustedSigners.some((k) => k.equals(signerKey))) {
    throw new WalObjectError(`WAL file ${name}: the header does not authenticate`);
  }
  return header;
}

/** Every WAL file on a target, by name, with its stored size. */
export async function listWal(target: SnapshotTarget): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const e of await target.list(walLayout.prefix)) {
    const name = walLayout.nameOf(e.key);
    if (name && WAL_FILE.test(name)) out.set(name, e.size);
  }
  return out;
}

export async function readObject(target: SnapshotTarget, key: string, max: number, what: string): Promise<Buffer> {
  let stream: Readable;
  try {
    stream = await target.get(key);
  } catch (err) {
    throw new WalObjectMissing(`${what} is not on target ${target.name} (${(err as Error).message})`);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += (chunk as Buffer).length;
    if (n > max) throw new WalObjectError(`${what} on target ${target.name} is larger than ${max} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Fetches, authenticates and decrypts one WAL file from a target. */
export async function fetchWalFile(target: SnapshotTarget, name: string, opener: SnapshotOpener, trustedSigners: Buffer[]): Promise<{ header: WalHeader; bytes: Buffer }> {
  const object = await readObject(target, walLayout.object(name), MAX_WAL_FILE + (1 << 20), `WAL file ${name}`);
  return openWalObject(name, object, opener, trustedSigners);
}

// ---- WAL file arithmetic ---------------------------------------------------------------------------

/** Timeline, and segment number within it, of a segment name (16 MiB segments unless `segmentBytes` says otherwise). */
export function parseSegment(name: string, segmentBytes = 16 << 20): { timeline: number; segno: bigint } {
  if (!WAL_SEGMENT.test(name)) throw new RangeError(`not a WAL segment name: ${name}`);
  const perId = 0x1_0000_0000n / BigInt(segmentBytes);
  return { timeline: parseInt(name.slice(0, 8), 16), segno: BigInt(`0x${name.slice(8, 16)}`) * perId + BigInt(`0x${name.slice(16, 24)}`) };
}

export function segmentName(timeline: number, segno: bigint, segmentBytes = 16 << 20): string {
  const perId = 0x1_0000_0000n / BigInt(segmentBytes);
  const h = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, "0");
  return h(timeline) + h(segno / perId) + h(segno % perId);
}

/** The segment an LSN ("16/B374D848") falls in. */
export function segmentOfLsn(timeline: number, lsn: string, segmentBytes = 16 << 20): string {
  const [hi, lo] = lsn.split("/");
  const pos = (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
  return segmentName(timeline, pos / BigInt(segmentBytes), segmentBytes);
}

// ---- base backups ------------------------------------------------------------------------------------

export const BASEBACKUP_FORMAT = "wardkeep-basebackup";

export const baseBackupBodySchema = z
  .object({
    format: z.literal(BASEBACKUP_FORMAT),
    formatVersion: z.literal(1),
    backupId: z.string().regex(SNAPSHOT_ID),
    /** pg_backup_start returned: replay must start at this LSN. */
    startLsn: z.string(),
    /** pg_backup_stop returned: the backup is consistent once replay has passed this LSN. */
    stopLsn: z.string(),
    timeline: z.number().int().min(1),
    /** First and last WAL segment the backup needs (inclusive): retention keeps them and every later one. */
    startWal: z.string().regex(WAL_SEGMENT),
    stopWal: z.string().regex(WAL_SEGMENT),
    walSegmentBytes: z.number().int(),
    startedAt: z.string(),
    /** When pg_backup_stop returned: the earliest time a point-in-time recovery from this backup can reach. */
    completedAt: z.string(),
    server: z
      .object({
        version: z.string(),
        versionNum: z.number().int(),
        systemIdentifier: z.string(),
        /**
         * Whose cluster it is, for the recovery that makes it an embedded one (daemon/db/adopt.ts):
         * the bootstrap superuser, the daemon's database and the role owning its tables. Absent in
         * backups of the embedded PostgreSQL taken before they were recorded: postgres, wardkeep, wardkeep_owner.
         */
        superuser: z.string().optional(),
        database: z.string().optional(),
        owner: z.string().optional(),
      })
      .strict(),
    producer: z.object({ appVersion: z.string() }).strict(),
    /** The backup_label pg_backup_stop returned (also inside the tar), for tools outside Wardkeep. */
    backupLabel: z.string(),
    encryption: z.object({ alg: z.literal(STREAM_ALG), segmentBytes: z.number().int(), keyId: hex(16) }).strict(),
    compression: z.object({ alg: z.literal("brotli"), level: z.number().int() }).strict(),
    keyWraps: z.array(keyWrap).min(1),
    object: z.object({ path: z.literal("base.wkd"), files: z.number().int(), plainBytes: z.number().int(), storedBytes: z.number().int(), sha256: hex(64) }).strict(),
    signer: signerEntrySchema,
  })
  .strict();
export type BaseBackupBody = z.infer<typeof baseBackupBodySchema>;

const manifestFileSchema = sealedFileSchema(baseBackupBodySchema);

/** The manifest file's bytes: the body MACed under the backup key and signed by the appliance. */
export function sealBaseBackupManifest(body: BaseBackupBody, key: Buffer, applianceSecret: Buffer): Buffer {
  const bytes = Buffer.from(canonicalJson(baseBackupBodySchema.parse(body)), "utf8");
  const macKey = manifestMacKey(key);
  const mac = hmacSha256(macKey, bytes);
  zeroize(macKey);
  const signer = manifestSigner(applianceSecret);
  return Buffer.from(
    JSON.stringify(
      { body, mac: { alg: "HMAC-SHA256", value: mac.toString("base64") }, signature: { alg: "Ed25519", value: ed25519Sign(signer, bytes).toString("base64") } },
      null,
      2,
    ) + "\n",
    "utf8",
  );
}

export function baseBackupKeyWraps(key: Buffer, applianceSecret: Buffer, recoveryPublicKey: Buffer) {
  return [wrapForAppliance(applianceSecret, key), wrapForRecoveryKey(recoveryPublicKey, key)];
}

/** Complete base backups on a target (a manifest exists), oldest first. */
export async function listBaseBackups(target: SnapshotTarget): Promise<{ complete: string[]; incomplete: { id: string; keys: string[] }[] }> {
  const byId = new Map<string, { keys: string[]; manifest: boolean }>();
  for (const e of await target.list(baseBackupLayout.prefix)) {
    const [top, id, ...rest] = e.key.split("/");
    if (top !== "basebackups" || !id || !SNAPSHOT_ID.test(id)) continue;
    const slot = byId.get(id) ?? { keys: [], manifest: false };
    slot.keys.push(e.key);
    if (rest.join("/") === "manifest.json") slot.manifest = true;
    byId.set(id, slot);
  }
  const ids = [...byId.keys()].sort();
  return { complete: ids.filter((id) => byId.get(id)!.manifest), incomplete: ids.filter((id) => !byId.get(id)!.manifest).map((id) => ({ id, keys: byId.get(id)!.keys })) };
}

/** Reads and authenticates a base backup's manifest (MAC under the unwrapped key, signature by a trusted signer); returns the key too. */
export async function openBaseBackupManifest(target: SnapshotTarget, id: string, opener: SnapshotOpener, trustedSigners: Buffer[]): Promise<{ body: BaseBackupBody; key: Buffer }> {
  const raw = await readObject(target, baseBackupLayout.manifest(id), 1 << 20, `the manifest of base backup ${id}`);
  let json: unknown;
  try {
    json = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new SnapshotIntegrityError(`the manifest of base backup ${id} is not valid JSON`);
  }
  const parsed = manifestFileSchema.safeParse(json);
  if (!parsed.success) throw new SnapshotIntegrityError(`the manifest of base backup ${id} is malformed (${parsed.error.issues[0]!.path.join(".")})`);
  const file = parsed.data;
  if (file.body.backupId !== id) throw new SnapshotIntegrityError(`the base backup manifest stored as ${id} belongs to ${file.body.backupId}`);
  const key = unwrapSnapshotKey(file.body.keyWraps, opener);
  const bytes = Buffer.from(canonicalJson(file.body), "utf8");
  const macKey = manifestMacKey(key);
  const expected = hmacSha256(macKey, bytes);
  zeroize(macKey);
  const given = Buffer.from(file.mac.value, "base64");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    zeroize(key);
    throw new SnapshotIntegrityError(`the manifest of base backup ${id} failed its MAC check`);
  }
  const signerKey = Buffer.from(file.body.signer.publicKey, "base64");
  if (!ed25519Verify(signerKey, bytes, Buffer.from(file.signature.value, "base64")) || !trustedSigners.some((k) => k.equals(signerKey))) {
    zeroize(key);
    throw new SnapshotIntegrityError(`the manifest of base backup ${id} is not signed by this appliance's signer`);
  }
  return { body: file.body, key };
}
