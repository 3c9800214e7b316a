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
import { layout, MANIFEST_FORMAT, MANIFEST_VERSION, objectAssociatedData, sealManifest, signerEntry, STREAM_ALG, type ManifestBody, type SnapshotObject } from "./manifest.js";
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
  const stamp = at
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}Z$/, "Z");
  const ms = at.getUTCMilliseconds().toString(16).padStart(3, "0");
  return `${stamp}-${ms}${randomBytes(3).toString("hex").slice(0, 5)}`;
}

/** The name an object has in the manifest and in its AEAD binding. */
function objectName(index: number, schema: string, table: string): string {
  const label = `${schema}.${table}`.replace(/[^A-Za-z0-9_.$-]/g, "_").slice(0, 140);
  return `${String(index).padStart(4, "0")}-${label}`;
}

type Progress = { done: number; plainSoFar: number; estimated: number; tablesTotal: number };

/** The state every phase of one run shares: its targets, which of them are still live, and the timings. */
class SnapshotRun {
  readonly now: () => Date;
  readonly started = performance.now();
  readonly snapshotId: string;
  readonly compression: "brotli" | "gzip" | "none";
  readonly level: number;
  readonly segmentBytes: number;
  readonly snapshotKey = newSnapshotKey();
  readonly signer: ReturnType<typeof manifestSigner>;
  readonly outcomes: Map<string, TargetOutcome>;
  readonly objects: SnapshotObject[] = [];
  readonly timing = { prepareMs: 0, streamMs: 0, encryptCpuMs: 0, digestCpuMs: 0, attachmentsMs: 0, manifestMs: 0 };
  readonly progress: Progress = { done: 0, plainSoFar: 0, estimated: 0, tablesTotal: 0 };
  attachments: { section: AttachmentsSection; stats: AttachmentCopyStats[] } | undefined;

  constructor(readonly opts: SnapshotOptions) {
    this.now = opts.now ?? (() => new Date());
    this.snapshotId = opts.snapshotId ?? newSnapshotId(this.now());
    this.compression = opts.compression ?? "brotli";
    this.level = opts.compressionLevel ?? 1;
    this.segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    this.signer = manifestSigner(opts.applianceSecret);
    this.outcomes = new Map(opts.targets.map((t) => [t.name, { target: t.name, ok: true, bytes: 0 }]));
  }

  live(): SnapshotTarget[] {
    return this.opts.targets.filter((t) => this.outcomes.get(t.name)!.ok);
  }

  markFailed = (name: string, error: Error): void => {
    const o = this.outcomes.get(name)!;
    if (!o.ok) return;
    o.ok = false;
    o.error = error.message;
    this.opts.log?.warn(`snapshot ${this.snapshotId}: target ${name} failed; the other targets go on`, { target: name });
  };

  report(table: string): void {
    const p = this.progress;
    this.opts.onProgress?.({ table, tablesDone: p.done, tablesTotal: p.tablesTotal, plainBytes: p.plainSoFar, estimatedBytes: p.estimated });
  }

  result(ok: boolean, manifest: ManifestBody | undefined): SnapshotResult {
    const { objects, outcomes, attachments, timing } = this;
    return {
      snapshotId: this.snapshotId,
      ok,
      targets: [...outcomes.values()],
      manifest,
      tables: objects.length,
      rows: objects.reduce((n, o) => n + o.rows, 0),
      plainBytes: objects.reduce((n, o) => n + o.plainBytes, 0),
      storedBytes: objects.reduce((n, o) => n + o.storedBytes, 0),
      durationMs: Math.round(performance.now() - this.started),
      phases: {
        prepareMs: Math.round(timing.prepareMs),
        streamMs: Math.round(timing.streamMs),
        encryptCpuMs: Math.round(timing.encryptCpuMs),
        digestCpuMs: Math.round(timing.digestCpuMs),
        attachmentsMs: Math.round(timing.attachmentsMs),
        manifestMs: Math.round(timing.manifestMs),
      },
      attachments: attachments
        ? { total: attachments.section.entries.length, missing: attachments.section.missing, targets: attachments.stats.filter((s) => outcomes.get(s.target)?.ok) }
        : null,
    };
  }
}

/** Open consistent read → stream tables → copy attachments → publish manifest. */
export async function takeSnapshot(opts: SnapshotOptions): Promise<SnapshotResult> {
  const run = new SnapshotRun(opts);
  if (opts.targets.length === 0) throw new TargetError("no backup target is configured");

  const client = await opts.connect();
  // Failures surface through the query that hits them; a bare 'error' event would crash the process.
  client.on("error", () => {});
  let copyAbandoned = false;
  try {
    const read = await openConsistentRead(run, client);
    copyAbandoned = await streamTables(run, client, read.db);
    if (!copyAbandoned) await client.query("COMMIT");
    if (opts.attachments && run.live().length > 0) await copyAttachmentFiles(run, opts.attachments.root, read.attachmentRows);
    if (run.live().length === 0) {
      zeroize(run.snapshotKey);
      return run.result(false, undefined);
    }
    const body = await publishManifest(run, read);
    return run.result(run.live().length > 0, body);
  } catch (err) {
    zeroize(run.snapshotKey);
    copyAbandoned = true;
    throw err;
  } finally {
    // A read-only transaction has nothing to roll back; closing the connection ends it, also
    // when a COPY was cut off mid-stream (the server stops at the broken connection).
    if (copyAbandoned) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    await client.end().catch(() => {});
  }
}

type ConsistentRead = { createdAt: Date; db: DatabaseLayout; attachmentRows: AttachmentEntry[] };

/** Phase 1: one MVCC snapshot for every table. READ ONLY: this transaction can never change data. */
async function openConsistentRead(run: SnapshotRun, client: pg.Client): Promise<ConsistentRead> {
  await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
  await client.query(
    "SELECT set_config('statement_timeout', '0', true), set_config('idle_in_transaction_session_timeout', '0', true), set_config('wardkeep.scope', 'appliance', true), set_config('wardkeep.tenant_id', '', true)",
  );
  const createdAt = run.now();
  const db = await readDatabaseLayout(client, run.opts.excludedSchemas);
  // The same MVCC snapshot as the attachments table's COPY: the manifest lists exactly its rows.
  const attachmentRows = run.opts.attachments ? await listAttachmentRows(client) : [];
  run.timing.prepareMs = performance.now() - run.started;
  run.progress.estimated = db.tables.reduce((n, t) => n + t.estimatedBytes, 0);
  run.progress.tablesTotal = db.tables.length;
  return { createdAt, db, attachmentRows };
}

/** Phase 2: every table, COPY → digest → compress → encrypt → digest → every live target. Returns true when the COPY was abandoned. */
async function streamTables(run: SnapshotRun, client: pg.Client, db: DatabaseLayout): Promise<boolean> {
  const { opts, snapshotId, progress } = run;
  for (const [i, table] of db.tables.entries()) {
    if (run.live().length === 0) break;
    const index = i + 1;
    const name = objectName(index, table.schema, table.table);
    const path = layout.objectPath(index);
    const key = layout.object(snapshotId, path);
    const cols = table.columns.map(quoteIdent).join(", ");
    const label = `${table.schema}.${table.table}`;
    const tStream = performance.now();
    const copy = client.query(copyTo(`COPY ${quoteIdent(table.schema)}.${quoteIdent(table.table)} (${cols}) TO STDOUT`));
    let reported = progress.plainSoFar;
    const plain = new DigestStream(true, (n) => {
      progress.plainSoFar += n;
      // Byte-level progress every MiB, for progress bars (and fault tests that cut a run mid-object).
      if (progress.plainSoFar - reported >= 1 << 20) {
        reported = progress.plainSoFar;
        run.report(label);
      }
    });
    const encrypt = new SegmentEncryptStream(run.snapshotKey, objectAssociatedData(snapshotId, name), run.segmentBytes);
    const stored = new DigestStream(false);
    const stages: NodeJS.ReadWriteStream[] = [plain];
    if (run.compression === "gzip") stages.push(createGzip({ level: run.level, chunkSize: 256 * 1024 }));
    if (run.compression === "brotli")
      stages.push(createBrotliCompress({ chunkSize: 256 * 1024, params: { [zlibConstants.BROTLI_PARAM_QUALITY]: run.level, [zlibConstants.BROTLI_PARAM_LGWIN]: 22 } }));
    stages.push(encrypt, stored);
    const source = (pipeline as unknown as (...s: unknown[]) => NodeJS.ReadableStream)(copy, ...stages, () => {});
    const results = await fanOut(
      source as AsyncIterable<Buffer>,
      run.live().map((t) => ({ name: t.name, write: (body) => t.putStream(key, body, { retainUntil: opts.retainUntil }) })),
    );
    for (const r of results) if (!r.ok) run.markFailed(r.name, r.error);
    // Every target gave up mid-object: the COPY was abandoned, so this connection is unusable.
    if (run.live().length === 0) return true;
    for (const r of results) if (r.ok) run.outcomes.get(r.name)!.bytes += r.bytes;
    // Every live target took the whole stream; the digests are final.
    run.objects.push({
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
    run.timing.encryptCpuMs += encrypt.stats.cryptoMs;
    run.timing.digestCpuMs += plain.cpuMs + stored.cpuMs;
    run.timing.streamMs += performance.now() - tStream;
    progress.done += 1;
    run.report(label);
  }
  return false;
}

/** Phase 3: attachment files (already ciphertext) go to every live target as they are. */
async function copyAttachmentFiles(run: SnapshotRun, root: string, entries: AttachmentEntry[]): Promise<void> {
  const tAttachments = performance.now();
  run.attachments = await copyAttachments({
    entries,
    root,
    targets: run.live(),
    put: { retainUntil: run.opts.retainUntil },
    onTargetFailed: run.markFailed,
    onProgress: (i, n) => run.report(`attachments ${i}/${n}`),
  });
  run.timing.attachmentsMs = performance.now() - tAttachments;
  for (const st of run.attachments.stats) run.outcomes.get(st.target)!.bytes += st.uploadedBytes;
}

/** Phase 4: seal and sign the manifest, then write it, last, only to targets that hold every object. */
async function publishManifest(run: SnapshotRun, read: ConsistentRead): Promise<ManifestBody> {
  const { opts, snapshotId, snapshotKey, signer, compression, level } = run;
  const tManifest = performance.now();
  const body: ManifestBody = {
    format: MANIFEST_FORMAT,
    formatVersion: MANIFEST_VERSION,
    snapshotId,
    createdAt: read.createdAt.toISOString(),
    completedAt: run.now().toISOString(),
    producer: { appVersion: opts.appVersion, trigger: opts.trigger },
    database: read.db.database,
    auditHead: read.db.auditHead,
    excludedSchemas: [...opts.excludedSchemas],
    encryption: { alg: STREAM_ALG, segmentBytes: run.segmentBytes, keyId: snapshotKeyId(snapshotKey).toString("hex") },
    compression: { alg: compression, level: compression === "none" ? 0 : level },
    keyWraps: [wrapForAppliance(opts.applianceSecret, snapshotKey), wrapForRecoveryKey(opts.recoveryPublicKey, snapshotKey)],
    objects: run.objects,
    partitions: read.db.partitions,
    sequences: read.db.sequences,
    signer: signerEntry(signer),
    ...(run.attachments ? { attachments: run.attachments.section } : {}),
  };
  const manifest = sealManifest(body, snapshotKey, signer);
  zeroize(snapshotKey);
  await Promise.all(
    run.live().map(async (t) => {
      try {
        await t.putOnce(layout.manifest(snapshotId), manifest, { retainUntil: opts.retainUntil });
        run.outcomes.get(t.name)!.bytes += manifest.length;
      } catch (err) {
        run.markFailed(t.name, err as Error);
      }
    }),
  );
  run.timing.manifestMs = performance.now() - tManifest;
  return body;
}
