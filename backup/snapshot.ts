/**
 * takeSnapshot: one consistent, compressed, encrypted copy of the database on every target.
 *
 * - Consistent: one `REPEATABLE READ, READ ONLY` transaction; every table is read from the same
 *   MVCC snapshot with `COPY ... TO STDOUT` (no pg_dump binary, so embedded and external
 *   PostgreSQL of any version behave the same).
 * - Streamed: COPY → digest → gzip (level 1: field-encrypted columns barely compress, see
 *   FORMAT.md) → segmented AES-256-GCM → digest → every target at once, with bounded memory.
 * - Visible only when whole: objects first, the signed manifest last, written once. A run that
 *   dies leaves a directory without a manifest, which restore and list ignore and the next run
 *   sweeps (a "resume" is impossible by design: the REPEATABLE READ snapshot died with the run).
 * - The key store's schemas are never read (crypto-shredding must survive a restore).
 * - Attachment files (already ciphertext) are copied as they are, after the tables and before the
 *   manifest; one already on a target is referenced, not uploaded again (backup/attachments.ts).
 */
import { randomBytes } from "node:crypto";
import { pipeline } from "node:stream";
import { constants as zlibConstants, createBrotliCompress, createGzip } from "node:zlib";
import type pg from "pg";
import { to as copyTo } from "pg-copy-streams";
import { zeroize } from "../daemon/keys/index.js";
import { copyAttachments, listAttachmentRows, type AttachmentCopyStats, type AttachmentEntry, type AttachmentsSection } from "./attachments.js";
import { TargetError } from "./errors.js";
import { manifestSigner, newSnapshotKey, wrapForAppliance, wrapForRecoveryKey } from "./keys.js";
import {
  layout,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  objectAssociatedData,
  sealManifest,
  STREAM_ALG,
  type ManifestBody,
  type SnapshotObject,
} from "./manifest.js";
import { quoteIdent, readDatabaseLayout, type DatabaseLayout } from "./pg-layout.js";
import { DEFAULT_SEGMENT_BYTES, SegmentEncryptStream, snapshotKeyId } from "./stream-aead.js";
import { DigestStream, fanOut } from "./streams.js";
import type { SnapshotTarget } from "./targets/target.js";

export type SnapshotProgress = { table: string; tablesDone: number; tablesTotal: number; plainBytes: number; estimatedBytes: number };

export type SnapshotOptions = {
  /** A fresh connection as the database owner (the engine ends it). */
  connect: () => Promise<pg.Client>;
  targets: SnapshotTarget[];
  /** `ctx.rootKey.material()`: wraps the snapshot key and derives the manifest signing key. */
  applianceSecret: Buffer;
  /** Raw X25519 recovery public key (32 bytes). */
  recoveryPublicKey: Buffer;
  excludedSchemas: readonly string[];
  appVersion: string;
  trigger: string;
  /** brotli quality 1 by default: as small as gzip on ciphertext-like data and about 4x faster (FORMAT.md). */
  compression?: "brotli" | "gzip" | "none";
  compressionLevel?: number;
  segmentBytes?: number;
  /** Object Lock / WORM retention to request for every object. */
  retainUntil?: Date;
  snapshotId?: string;
  /** The appliance's attachments directory: its files go into the snapshot (omitted: none, e.g. a bare database). */
  attachments?: { root: string };
  now?: () => Date;
  onProgress?: (p: SnapshotProgress) => void;
  log?: { info(msg: string, meta?: object): void; warn(msg: string, meta?: object): void };
};

export type TargetOutcome = { target: string; ok: boolean; bytes: number; error?: string };

export type SnapshotResult = {
  snapshotId: string;
  /** True when at least one target holds the complete snapshot. */
  ok: boolean;
  targets: TargetOutcome[];
  manifest: ManifestBody | undefined;
  tables: number;
  rows: number;
  plainBytes: number;
  storedBytes: number;
  durationMs: number;
  /** Where the time went (ms): reading, compressing and encrypting overlap in one stream. */
  phases: { prepareMs: number; streamMs: number; encryptCpuMs: number; digestCpuMs: number; attachmentsMs: number; manifestMs: number };
  /** Attachment files: how many the snapshot lists, per target how many were uploaded or referenced, and any left out. */
  attachments: { total: number; missing: AttachmentsSection["missing"]; targets: AttachmentCopyStats[] } | null;
};

/**
 * `YYYYMMDDTHHMMSSZ-<8 hex>`: the suffix starts with the milliseconds in 3 hex digits (000-3e7) and
 * ends with 5 random ones, so two snapshots started within the same second still sort by start time.
 */
export function newSnapshotId(at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}Z$/, "Z");
  const ms = at.getUTCMilliseconds().toString(16).padStart(3, "0");
  return `${stamp}-${ms}${randomBytes(3).toString("hex").slice(0, 5)}`;
}

/** The name an object has in the manifest and in its AEAD binding. */
function objectName(index: number, schema: string, table: string): string {
  const label = `${schema}.${table}`.replace(/[^A-Za-z0-9_.$-]/g, "_").slice(0, 140);
  return `${String(index).padStart(4, "0")}-${label}`;
}

export async function takeSnapshot(opts: SnapshotOptions): Promise<SnapshotResult> {
  const now = opts.now ?? (() => new Date());
  const started = performance.now();
  const snapshotId = opts.snapshotId ?? newSnapshotId(now());
  const compression = opts.compression ?? "brotli";
  const level = opts.compressionLevel ?? 1;
  const segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
  const snapshotKey = newSnapshotKey();
  const signer = manifestSigner(opts.applianceSecret);
  const outcomes = new Map<string, TargetOutcome>(opts.targets.map((t) => [t.name, { target: t.name, ok: true, bytes: 0 }]));
  const live = () => opts.targets.filter((t) => outcomes.get(t.name)!.ok);
  const markFailed = (name: string, error: Error) => {
    const o = outcomes.get(name)!;
    if (!o.ok) return;
    o.ok = false;
    o.error = error.message;
    opts.log?.warn(`snapshot ${snapshotId}: target ${name} failed; the other targets go on`, { target: name });
  };
  if (opts.targets.length === 0) throw new TargetError("no backup target is configured");

  const objects: SnapshotObject[] = [];
  let encryptCpuMs = 0;
  let digestCpuMs = 0;
  let prepareMs = 0;
  let streamMs = 0;
  let attachmentsMs = 0;
  let attachmentRows: AttachmentEntry[] = [];
  let attachments: { section: AttachmentsSection; stats: AttachmentCopyStats[] } | undefined;
  let db: DatabaseLayout;
  const client = await opts.connect();
  // Failures surface through the query that hits them; a bare 'error' event would crash the process.
  client.on("error", () => {});
  let copyAbandoned = false;
  try {
    // One MVCC snapshot for every table. READ ONLY: this transaction can never change data.
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    await client.query(
      "SELECT set_config('statement_timeout', '0', true), set_config('idle_in_transaction_session_timeout', '0', true), set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true)",
    );
    const createdAt = now();
    db = await readDatabaseLayout(client, opts.excludedSchemas);
    // The same MVCC snapshot as the attachments table's COPY: the manifest lists exactly its rows.
    if (opts.attachments) attachmentRows = await listAttachmentRows(client);
    prepareMs = performance.now() - started;
    let done = 0;
    let plainSoFar = 0;
    const estimated = db.tables.reduce((n, t) => n + t.estimatedBytes, 0);

    for (const [i, table] of db.tables.entries()) {
      if (live().length === 0) break;
      const index = i + 1;
      const name = objectName(index, table.schema, table.table);
      const path = layout.objectPath(index);
      const key = layout.object(snapshotId, path);
      const cols = table.columns.map(quoteIdent).join(", ");
      const tStream = performance.now();
      const copy = client.query(copyTo(`COPY ${quoteIdent(table.schema)}.${quoteIdent(table.table)} (${cols}) TO STDOUT`));
      let reported = plainSoFar;
      const plain = new DigestStream(true, (n) => {
        plainSoFar += n;
        // Byte-level progress every MiB, for progress bars (and fault tests that cut a run mid-object).
        if (plainSoFar - reported >= 1 << 20) {
          reported = plainSoFar;
          opts.onProgress?.({ table: `${table.schema}.${table.table}`, tablesDone: done, tablesTotal: db.tables.length, plainBytes: plainSoFar, estimatedBytes: estimated });
        }
      });
      const encrypt = new SegmentEncryptStream(snapshotKey, objectAssociatedData(snapshotId, name), segmentBytes);
      const stored = new DigestStream(false);
      const stages: NodeJS.ReadWriteStream[] = [plain];
      if (compression === "gzip") stages.push(createGzip({ level, chunkSize: 256 * 1024 }));
      if (compression === "brotli") stages.push(createBrotliCompress({ chunkSize: 256 * 1024, params: { [zlibConstants.BROTLI_PARAM_QUALITY]: level, [zlibConstants.BROTLI_PARAM_LGWIN]: 22 } }));
      stages.push(encrypt, stored);
      const source = (pipeline as unknown as (...s: unknown[]) => NodeJS.ReadableStream)(copy, ...stages, () => {});
      const results = await fanOut(source as AsyncIterable<Buffer>, live().map((t) => ({ name: t.name, write: (body) => t.putStream(key, body, { retainUntil: opts.retainUntil }) })));
      for (const r of results) if (!r.ok) markFailed(r.name, r.error);
      if (live().length === 0) {
        // Every target gave up mid-object: the COPY was abandoned, so this connection is unusable.
        copyAbandoned = true;
        break;
      }
      for (const r of results) if (r.ok) outcomes.get(r.name)!.bytes += r.bytes;
      // Every live target took the whole stream; the digests are final.
      objects.push({
        name,
        path,
        schema: table.schema,
        table: table.table,
        columns: table.columns,
        types: table.types,
        rows: plain.rows,
        plainBytes: plain.bytes,
        plainSha256: plain.sha256,
        storedBytes: stored.bytes,
        sha256: stored.sha256,
      });
      encryptCpuMs += encrypt.stats.cryptoMs;
      digestCpuMs += plain.cpuMs + stored.cpuMs;
      streamMs += performance.now() - tStream;
      done += 1;
      opts.onProgress?.({ table: `${table.schema}.${table.table}`, tablesDone: done, tablesTotal: db.tables.length, plainBytes: plainSoFar, estimatedBytes: estimated });
    }
    if (!copyAbandoned) await client.query("COMMIT");

    if (opts.attachments && live().length > 0) {
      const tAttachments = performance.now();
      attachments = await copyAttachments({
        entries: attachmentRows,
        root: opts.attachments.root,
        targets: live(),
        put: { retainUntil: opts.retainUntil },
        onTargetFailed: markFailed,
        onProgress: (i, n) => opts.onProgress?.({ table: `attachments ${i}/${n}`, tablesDone: done, tablesTotal: db.tables.length, plainBytes: plainSoFar, estimatedBytes: estimated }),
      });
      attachmentsMs = performance.now() - tAttachments;
      for (const st of attachments.stats) outcomes.get(st.target)!.bytes += st.uploadedBytes;
    }

    if (live().length === 0) {
      zeroize(snapshotKey);
      return result(false, undefined);
    }
    const tManifest = performance.now();
    const body: ManifestBody = {
      format: MANIFEST_FORMAT,
      formatVersion: MANIFEST_VERSION,
      snapshotId,
      createdAt: createdAt.toISOString(),
      completedAt: now().toISOString(),
      producer: { appVersion: opts.appVersion, trigger: opts.trigger },
      database: db.database,
      auditHead: db.auditHead,
      excludedSchemas: [...opts.excludedSchemas],
      encryption: { alg: STREAM_ALG, segmentBytes, keyId: snapshotKeyId(snapshotKey).toString("hex") },
      compression: { alg: compression, level: compression === "none" ? 0 : level },
      keyWraps: [wrapForAppliance(opts.applianceSecret, snapshotKey), wrapForRecoveryKey(opts.recoveryPublicKey, snapshotKey)],
      objects,
      partitions: db.partitions,
      sequences: db.sequences,
      signer: { alg: "Ed25519", keyId: signer.keyId, publicKey: signer.publicKeyRaw.toString("base64") },
      ...(attachments ? { attachments: attachments.section } : {}),
    };
    const manifest = sealManifest(body, snapshotKey, signer);
    zeroize(snapshotKey);
    // The manifest goes last, and only to targets that hold every object.
    await Promise.all(
      live().map(async (t) => {
        try {
          await t.putOnce(layout.manifest(snapshotId), manifest, { retainUntil: opts.retainUntil });
          outcomes.get(t.name)!.bytes += manifest.length;
        } catch (err) {
          markFailed(t.name, err as Error);
        }
      }),
    );
    const manifestMs = performance.now() - tManifest;
    return result(live().length > 0, body, manifestMs);
  } catch (err) {
    zeroize(snapshotKey);
    copyAbandoned = true;
    throw err;
  } finally {
    // A read-only transaction has nothing to roll back; closing the connection ends it, also
    // when a COPY was cut off mid-stream (the server stops at the broken connection).
    if (copyAbandoned) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    await client.end().catch(() => {});
  }

  function result(ok: boolean, manifest: ManifestBody | undefined, manifestMs = 0): SnapshotResult {
    return {
      snapshotId,
      ok,
      targets: [...outcomes.values()],
      manifest,
      tables: objects.length,
      rows: objects.reduce((n, o) => n + o.rows, 0),
      plainBytes: objects.reduce((n, o) => n + o.plainBytes, 0),
      storedBytes: objects.reduce((n, o) => n + o.storedBytes, 0),
      durationMs: Math.round(performance.now() - started),
      phases: {
        prepareMs: Math.round(prepareMs),
        streamMs: Math.round(streamMs),
        encryptCpuMs: Math.round(encryptCpuMs),
        digestCpuMs: Math.round(digestCpuMs),
        attachmentsMs: Math.round(attachmentsMs),
        manifestMs: Math.round(manifestMs),
      },
      attachments: attachments
        ? { total: attachments.section.entries.length, missing: attachments.section.missing, targets: attachments.stats.filter((s) => outcomes.get(s.target)?.ok) }
        : null,
    };
  }
}
