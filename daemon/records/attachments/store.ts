/**
 * The local object store for attachments: one file per attachment under
 * `records.attachmentsDir/<tenant>/<patient>/<attachment>.wka`, written as a segmented AEAD stream
 * (backup/stream-aead.ts, Tink-style AES-256-GCM-HKDF segments) under a random per-file key.
 * Memory stays bounded by one segment whatever the size; a download releases only authenticated
 * segments. File names are ids, never PHI.
 *
 * Writes go to `<id>.part` (O_EXCL, 0600), are fsynced, and become `<id>.wka` only inside the
 * transaction that records the metadata; any failure removes what was written.
 */
import { createHash, type Hash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Transform, type Readable, type TransformCallback, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { SegmentDecryptStream, SegmentEncryptStream } from "../../../backup/stream-aead.js";
import { inDataDir } from "../../config/load.js";
import type { ApplianceContext } from "../../context.js";
import { Invalid, PayloadTooLarge } from "../../kernel/errors.js";

export function attachmentsRoot(ctx: ApplianceContext): string {
  return inDataDir(ctx.config, ctx.config.records.attachmentsDir);
}

/** Binds a file to its row: a file copied under another id, patient or tenant fails to decrypt. */
export function associatedData(tenantId: string, patientId: string, attachmentId: string): string {
  return `wardkeep/attachment/v1/${tenantId}/${patientId}/${attachmentId}`;
}

export function storagePathOf(tenantId: string, patientId: string, attachmentId: string): string {
  return `${tenantId}/${patientId}/${attachmentId}.wka`;
}

export function absolutePath(ctx: ApplianceContext, storagePath: string): string {
  const root = attachmentsRoot(ctx);
  const full = path.resolve(root, storagePath);
  // storage_path is CHECKed in the table; this is the second line against path traversal.
  if (!full.startsWith(root + path.sep)) throw new Error("attachment path escapes the attachments directory");
  return full;
}

/** Counts and hashes plaintext on its way through, and stops at the size limit. */
class LimitAndHash extends Transform {
  bytes = 0;
  constructor(
    private readonly limit: number,
    private readonly hash: Hash,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) return done(new PayloadTooLarge(`the attachment exceeds the limit of ${this.limit} bytes`, { limitBytes: this.limit }));
    this.hash.update(chunk);
    done(null, chunk);
  }
}

class HashTap extends Transform {
  bytes = 0;
  constructor(private readonly hash: Hash) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    done(null, chunk);
  }
}

export type StagedFile = {
  storagePath: string;
  sizeBytes: number;
  storedBytes: number;
  plainSha256: Buffer;
  cipherSha256: Buffer;
  /** Moves the staged file to its final name (call inside the metadata transaction). */
  commit(): Promise<void>;
  /** Removes the staged or committed file (the transaction failed). */
  discard(): Promise<void>;
};

async function fsyncPath(p: string, flags = "r"): Promise<void> {
  const fh = await fs.promises.open(p, flags);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Streams `body` into an encrypted staged file; nothing is buffered beyond one segment. */
export async function stageEncrypted(
  ctx: ApplianceContext,
  w: { tenantId: string; patientId: string; attachmentId: string; fileKey: Buffer; body: Readable },
): Promise<StagedFile> {
  const storagePath = storagePathOf(w.tenantId, w.patientId, w.attachmentId);
  const finalPath = absolutePath(ctx, storagePath);
  const dir = path.dirname(finalPath);
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  const partPath = `${finalPath.slice(0, -".wka".length)}.part`;
  const plainHash = createHash("sha256");
  const cipherHash = createHash("sha256");
  const limiter = new LimitAndHash(ctx.config.records.attachmentMaxBytes, plainHash);
  const tap = new HashTap(cipherHash);
  const out: Writable = fs.createWriteStream(partPath, { flags: "wx", mode: 0o600 });
  const remove = async (p: string) => fs.promises.rm(p, { force: true });
  try {
    await pipeline(
      w.body,
      limiter,
      new SegmentEncryptStream(w.fileKey, associatedData(w.tenantId, w.patientId, w.attachmentId), ctx.config.records.attachmentSegmentKib * 1024),
      tap,
      out,
    );
    await fsyncPath(partPath);
  } catch (err) {
    await remove(partPath);
    if (err instanceof PayloadTooLarge) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ECONNRESET" || (err as Error).message === "aborted") {
      throw new Invalid("the upload was interrupted before the end of the body; nothing was stored");
    }
    throw err;
  }
  if (limiter.bytes === 0) {
    await remove(partPath);
    throw new Invalid("the attachment is empty");
  }
  let committed = false;
  return {
    storagePath,
    sizeBytes: limiter.bytes,
    storedBytes: tap.bytes,
    plainSha256: plainHash.digest(),
    cipherSha256: cipherHash.digest(),
    async commit() {
      await fs.promises.rename(partPath, finalPath);
      committed = true;
      await fsyncPath(dir);
    },
    async discard() {
      await remove(committed ? finalPath : partPath);
    },
  };
}

/** A stream of the attachment's authenticated plaintext; fails (mid-stream) on any tampering. */
export function openDecrypted(ctx: ApplianceContext, a: { tenantId: string; patientId: string; attachmentId: string; storagePath: string; fileKey: Buffer }): Readable {
  const decrypt = new SegmentDecryptStream(a.fileKey, associatedData(a.tenantId, a.patientId, a.attachmentId), true);
  const source = fs.createReadStream(absolutePath(ctx, a.storagePath));
  source.on("error", (err) => decrypt.destroy(err));
  return source.pipe(decrypt);
}

export async function removeStored(ctx: ApplianceContext, storagePath: string): Promise<void> {
  await fs.promises.rm(absolutePath(ctx, storagePath), { force: true });
}

/** Removes a purged patient's (or tenant's) whole folder. */
export async function removeFolder(ctx: ApplianceContext, tenantId: string, patientId?: string): Promise<void> {
  const root = attachmentsRoot(ctx);
  const target = patientId ? path.join(root, tenantId, patientId) : path.join(root, tenantId);
  if (!/^[0-9a-f-]{36}$/.test(tenantId) || (patientId !== undefined && !/^[0-9a-f-]{36}$/.test(patientId))) throw new Error("folder ids must be UUIDs");
  await fs.promises.rm(target, { recursive: true, force: true });
}

/**
 * Removes `.part` files older than `olderThanMs` (an upload cut off by a crash or a restart).
 * They were never referenced by a row, and their file key was never stored: unreadable litter.
 */
export async function sweepStaleUploads(ctx: ApplianceContext, olderThanMs = 86_400_000): Promise<number> {
  const root = attachmentsRoot(ctx);
  const cutoff = ctx.clock.now().getTime() - olderThanMs;
  let removed = 0;
  const walk = async (dir: string, depth: number): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = await fs.promises.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const full = path.join(dir, e.name);
      if (e.isDirectory() && depth < 2) await walk(full, depth + 1);
      else if (e.isFile() && e.name.endsWith(".part") && (await fs.promises.stat(full)).mtimeMs < cutoff) {
        await fs.promises.rm(full, { force: true });
        removed++;
      }
    }
  };
  await walk(root, 0);
  return removed;
}
