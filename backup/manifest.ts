/**
 * The manifest: the one file that makes a snapshot exist. It is written last, once, and never
 * rewritten (backup/FORMAT.md "Manifest"). A directory of objects without it is an interrupted
 * snapshot that restore and list ignore and the next run removes.
 */
import { timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { hmacSha256, zeroize } from "../daemon/keys/index.js";
import { attachmentsSectionSchema } from "./attachments.js";
import { canonicalJson } from "./canonical-json.js";
import { SnapshotIntegrityError } from "./errors.js";
import { ed25519Sign, ed25519Verify, manifestMacKey, type ManifestSigner } from "./keys.js";

export const MANIFEST_FORMAT = "wardkeep-snapshot";
export const MANIFEST_VERSION = 1;
export const STREAM_ALG = "AES-256-GCM-HKDF-SHA256-STREAM/v1";

/** Snapshot ids sort by time: 20250101T120000Z-1a2b3c4d. */
export const SNAPSHOT_ID = /^\d{8}T\d{6}Z-[0-9a-f]{8}$/;
const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n}}$`));

/** Who signed a manifest, as its body records it. */
export const signerEntrySchema = z.object({ alg: z.literal("Ed25519"), keyId: hex(16), publicKey: z.string() }).strict();
export const signerEntry = (signer: ManifestSigner): z.infer<typeof signerEntrySchema> => ({
  alg: "Ed25519",
  keyId: signer.keyId,
  publicKey: signer.publicKeyRaw.toString("base64"),
});
const ident = z.string().min(1).max(63);

export const snapshotObjectSchema = z
  .object({
    name: z.string().regex(/^[0-9]{4}-[A-Za-z0-9_.$-]{1,140}$/),
    path: z.string().regex(/^objects\/[0-9]{4}\.wkd$/),
    schema: ident,
    table: ident,
    columns: z.array(ident).min(1),
    /** format_type() of each column: lets tools outside Wardkeep create a table to load into. */
    types: z.array(z.string().max(200)),
    rows: z.number().int().min(0),
    plainBytes: z.number().int().min(0),
    plainSha256: hex(64),
    storedBytes: z.number().int().min(0),
    sha256: hex(64),
  })
  .strict();

export const manifestBodySchema = z
  .object({
    format: z.literal(MANIFEST_FORMAT),
    formatVersion: z.literal(MANIFEST_VERSION),
    snapshotId: z.string().regex(SNAPSHOT_ID),
    createdAt: z.string(),
    completedAt: z.string(),
    producer: z.object({ appVersion: z.string(), trigger: z.string() }).strict(),
    database: z
      .object({
        serverVersion: z.string(),
        encoding: z.string(),
        migrations: z.array(z.string()).min(1),
        schemaVersion: z.string(),
      })
      .strict(),
    auditHead: z
      .object({ seq: z.string().regex(/^\d+$/), hash: hex(64), recordedAt: z.string() })
      .strict()
      .nullable(),
    excludedSchemas: z.array(ident),
    encryption: z.object({ alg: z.literal(STREAM_ALG), segmentBytes: z.number().int(), keyId: hex(16) }).strict(),
    compression: z.object({ alg: z.enum(["brotli", "gzip", "none"]), level: z.number().int() }).strict(),
    keyWraps: z.array(z.object({ type: z.enum(["appliance", "recovery"]), alg: z.string(), keyId: z.string(), wrapped: z.string() }).strict()).min(1),
    objects: z.array(snapshotObjectSchema),
    partitions: z.array(
      z
        .object({
          schema: ident,
          table: ident,
          parentSchema: ident,
          parent: ident,
          bound: z.string(),
          rowSecurity: z.boolean(),
          forceRowSecurity: z.boolean(),
          triggers: z.array(z.object({ name: ident, definition: z.string() }).strict()),
        })
        .strict(),
    ),
    sequences: z.array(z.object({ schema: ident, name: ident, lastValue: z.string().regex(/^-?\d+$/), isCalled: z.boolean() }).strict()),
    signer: signerEntrySchema,
    /** Attachment files copied or referenced by this snapshot (backup/attachments.ts); absent in older snapshots. */
    attachments: attachmentsSectionSchema.optional(),
  })
  .strict();

export type ManifestBody = z.infer<typeof manifestBodySchema>;
export type SnapshotObject = z.infer<typeof snapshotObjectSchema>;

/** A manifest file of any object type: its body, the body's MAC under the object's key, and the appliance's signature. */
export const sealedFileSchema = <B extends z.ZodType>(body: B) =>
  z
    .object({
      body,
      mac: z.object({ alg: z.literal("HMAC-SHA256"), value: z.string() }).strict(),
      signature: z.object({ alg: z.literal("Ed25519"), value: z.string() }).strict(),
    })
    .strict();

export const manifestFileSchema = sealedFileSchema(manifestBodySchema);

export type ManifestFile = z.infer<typeof manifestFileSchema>;

export const layout = {
  dir: (id: string) => `snapshots/${id}`,
  manifest: (id: string) => `snapshots/${id}/manifest.json`,
  object: (id: string, path: string) => `snapshots/${id}/${path}`,
  objectPath: (index: number) => `objects/${String(index).padStart(4, "0")}.wkd`,
};

/** What the segment keys of an object are bound to (stream-aead.ts associated data). */
export function objectAssociatedData(snapshotId: string, objectName: string): string {
  return `${snapshotId}/${objectName}`;
}

export function sealManifest(body: ManifestBody, snapshotKey: Buffer, signer: ManifestSigner): Buffer {
  const bytes = Buffer.from(canonicalJson(manifestBodySchema.parse(body)), "utf8");
  const macKey = manifestMacKey(snapshotKey);
  const mac = hmacSha256(macKey, bytes);
  zeroize(macKey);
  const file: ManifestFile = {
    body,
    mac: { alg: "HMAC-SHA256", value: mac.toString("base64") },
    signature: { alg: "Ed25519", value: ed25519Sign(signer, bytes).toString("base64") },
  };
  return Buffer.from(JSON.stringify(file, null, 2) + "\n", "utf8");
}

/** Parses a manifest without trusting it yet (the wrapped keys are needed before the MAC can be checked). */
export function parseManifest(raw: Buffer, expectedId: string): ManifestFile {
  let json: unknown;
  try {
    json = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new SnapshotIntegrityError(`the manifest of ${expectedId} is not valid JSON`);
  }
  const parsed = manifestFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new SnapshotIntegrityError(`the manifest of ${expectedId} is malformed (${issue.path.join(".")}: ${issue.message})`);
  }
  // A manifest copied from another snapshot's directory: its own id says where it belongs.
  if (parsed.data.body.snapshotId !== expectedId) {
    throw new SnapshotIntegrityError(`the manifest stored as ${expectedId} belongs to snapshot ${parsed.data.body.snapshotId}`);
  }
  return parsed.data;
}

export type ManifestTrust = { signerKeyId: string; signerMatches: boolean | null };

/**
 * Checks the MAC with the unwrapped snapshot key and the Ed25519 signature against the key in the
 * body. `trustedSigners` (raw public keys) pins who may have made it: this appliance's own signer
 * on a normal restore, or one given by an operator (--expect-signer) with the recovery key.
 */
export function verifyManifest(file: ManifestFile, snapshotKey: Buffer, trustedSigners: Buffer[] = []): ManifestTrust {
  const bytes = Buffer.from(canonicalJson(file.body), "utf8");
  const macKey = manifestMacKey(snapshotKey);
  const expected = hmacSha256(macKey, bytes);
  zeroize(macKey);
  const given = Buffer.from(file.mac.value, "base64");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new SnapshotIntegrityError(`the manifest of ${file.body.snapshotId} failed its MAC check (tampered, or swapped from another snapshot)`);
  }
  const publicKey = Buffer.from(file.body.signer.publicKey, "base64");
  if (!ed25519Verify(publicKey, bytes, Buffer.from(file.signature.value, "base64"))) {
    throw new SnapshotIntegrityError(`the manifest of ${file.body.snapshotId} has an invalid signature`);
  }
  if (trustedSigners.length === 0) return { signerKeyId: file.body.signer.keyId, signerMatches: null };
  const matches = trustedSigners.some((k) => k.equals(publicKey));
  if (!matches) {
    throw new SnapshotIntegrityError(`the manifest of ${file.body.snapshotId} was signed by ${file.body.signer.keyId}, which is not a trusted signer`);
  }
  return { signerKeyId: file.body.signer.keyId, signerMatches: true };
}
