/**
 * Attachments in snapshots (backup/FORMAT.md "Attachments").
 *
 * An attachment file is already ciphertext (a segmented AES-256-GCM stream under a per-file key
 * that the database holds wrapped by the patient's data key), so a snapshot copies the stored
 * bytes as they are: no second encryption, and crypto-shredding the patient still makes the copy
 * unreadable. Objects are content-addressed by the SHA-256 of those bytes, which the database
 * records (`attachments.cipher_sha256`), so:
 * - incremental: an object already on the target with the right size is referenced, not uploaded;
 * - checkable without any key: a restore or drill hashes what it downloads against the manifest;
 * - written once: an object never changes under its name (Object Lock / WORM shares work).
 *
 * The rows are read inside the snapshot's REPEATABLE READ transaction, so the manifest lists
 * exactly the attachments the restored `attachments` table refers to.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Transform, type TransformCallback } from "node:stream";
import type pg from "pg";
import { z } from "zod";
import { SnapshotIntegrityError, TargetError } from "./errors.js";
import { DigestStream, fanOut } from "./streams.js";
import type { PutOptions, SnapshotTarget } from "./targets/target.js";

export const ATTACHMENT_PREFIX = "attachments/";

/** Attachment files copied at once: memory stays at about this many 1 MiB queues per target. */
const ATTACHMENT_CONCURRENCY = 4;

const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
/** The appliance's own layout under `records.attachmentsDir` (daemon/records/attachments/store.ts). */
const STORAGE_PATH = /^[0-9a-f-]{36}\/[0-9a-f-]{36}\/[0-9a-f-]{36}\.wka$/;

export const attachmentEntrySchema = z
  .object({
    id: uuid,
    tenantId: uuid,
    patientId: uuid,
    /** Where the file goes under the attachments directory: `<tenant>/<patient>/<id>.wka`. */
    storagePath: z.string().regex(STORAGE_PATH),
    /** The object on the target: `attachments/<first 2 hex of sha256>/<sha256>.wka`. */
    key: z.string().regex(/^attachments\/[0-9a-f]{2}\/[0-9a-f]{64}\.wka$/),
    storedBytes: z.number().int().min(1),
    /** SHA-256 of the stored (encrypted) bytes, equal to `attachments.cipher_sha256`. */
    sha256: sha256Hex,
  })
  .strict();

/** The manifest's `attachments` section. */
export const attachmentsSectionSchema = z
  .object({
    entries: z.array(attachmentEntrySchema),
    /** Rows whose file could not be copied (gone from disk, or not matching its digest): ids only. */
    missing: z.array(z.object({ id: uuid, reason: z.string().max(200) }).strict()),
  })
  .strict();

export type AttachmentEntry = z.infer<typeof attachmentEntrySchema>;
export type AttachmentsSection = z.infer<typeof attachmentsSectionSchema>;

export function attachmentKey(sha256: string): string {
  return `${ATTACHMENT_PREFIX}${sha256.slice(0, 2)}/${sha256}.wka`;
}

type AttachmentRow = { id: string; tenant_id: string; patient_id: string; storage_path: string; stored_bytes: string; sha256: string };

/**
 * The attachment rows as of the snapshot, read on the snapshot's own connection inside its
 * REPEATABLE READ transaction. A database without the table (older schema) has none.
 */
export async function listAttachmentRows(client: pg.ClientBase): Promise<AttachmentEntry[]> {
  const exists = await client.query<{ t: string | null }>("SELECT to_regclass('public.attachments')::text AS t");
  if (!exists.rows[0]?.t) return [];
  const r = await client.query<AttachmentRow>(
    "SELECT id::text, tenant_id::text, patient_id::text, storage_path, stored_bytes::text, encode(cipher_sha256, 'hex') AS sha256 FROM public.attachments ORDER BY id",
  );
  return r.rows.map((row) => ({
    id: row.id,
    tenantId: row.tenant_id,
    patientId: row.patient_id,
    storagePath: row.storage_path,
    key: attachmentKey(row.sha256),
    storedBytes: Number(row.stored_bytes),
    sha256: row.sha256,
  }));
}

/** `root/<storagePath>`, refusing anything that would leave the directory. */
function fileUnder(root: string, storagePath: string): string {
  if (!STORAGE_PATH.test(storagePath)) throw new SnapshotIntegrityError(`attachment storage path ${JSON.stringify(storagePath)} is not <tenant>/<patient>/<id>.wka`);
  const base = path.resolve(root);
  const full = path.resolve(base, storagePath);
  if (!full.startsWith(base + path.sep)) throw new SnapshotIntegrityError("attachment storage path escapes the attachments directory");
  return full;
}

export type AttachmentCopyStats = { target: string; uploaded: number; referenced: number; uploadedBytes: number };

export type CopyAttachmentsOptions = {
  entries: AttachmentEntry[];
  /** The appliance's attachments directory (`records.attachmentsDir`). */
  root: string;
  /** Targets still holding every object of this snapshot. */
  targets: SnapshotTarget[];
  put?: PutOptions;
  /** A target failed: the caller drops it from the snapshot (the others go on). */
  onTargetFailed: (target: string, error: Error) => void;
  onProgress?: (done: number, total: number) => void;
};

export type CopyAttachmentsResult = { section: AttachmentsSection; stats: AttachmentCopyStats[] };

/**
 * Copies every attachment not yet on a target; references the others. One read of each new file
 * feeds every target that needs it (fanOut, bounded memory). A local file that is missing or does
 * not hash to its recorded digest is left out and listed in `missing` (ids only, never names).
 */
export async function copyAttachments(opts: CopyAttachmentsOptions): Promise<CopyAttachmentsResult> {
  const stats = new Map(opts.targets.map((t) => [t.name, { target: t.name, uploaded: 0, referenced: 0, uploadedBytes: 0 }]));
  const failed = new Set<string>();
  const fail = (name: string, err: Error) => {
    if (failed.has(name)) return;
    failed.add(name);
    opts.onTargetFailed(name, err);
  };
  const live = () => opts.targets.filter((t) => !failed.has(t.name));
  const stored = new Map<string, Map<string, number>>();
  for (const t of opts.targets) {
    try {
      stored.set(t.name, new Map((await t.list(ATTACHMENT_PREFIX)).map((e) => [e.key, e.size])));
    } catch (err) {
      fail(t.name, err as Error);
    }
  }
  // Folders `attachments/<2 hex>/` known to exist per target. An upload that creates one runs alone:
  // SFTP creates folders by checking then making each level, which two uploads at once would race.
  const dirs = new Map(opts.targets.map((t) => [t.name, new Set([...(stored.get(t.name)?.keys() ?? [])].map((k) => k.slice(0, k.lastIndexOf("/"))))]));
  let creating: Promise<unknown> = Promise.resolve();
  const alone = <T>(work: () => Promise<T>): Promise<T> => {
    const run = creating.then(work);
    creating = run.catch(() => {});
    return run;
  };

  type Outcome = { entry: AttachmentEntry } | { missing: AttachmentsSection["missing"][number] };
  const gone = (entry: AttachmentEntry, reason: string): Outcome => ({ missing: { id: entry.id, reason } });

  /** One attachment to every live target that lacks it. Never throws: a problem is a missing file or a failed target. */
  const copyOne = async (entry: AttachmentEntry): Promise<Outcome> => {
    const needing = live().filter((t) => stored.get(t.name)!.get(entry.key) !== entry.storedBytes);
    for (const t of live()) if (!needing.includes(t)) stats.get(t.name)!.referenced += 1;
    if (needing.length === 0) return { entry };
    let source: fs.ReadStream;
    try {
      const file = fileUnder(opts.root, entry.storagePath);
      await fs.promises.access(file, fs.constants.R_OK);
      source = fs.createReadStream(file, { highWaterMark: 1 << 20 });
    } catch {
      return gone(entry, "the file is not in the attachments directory");
    }
    // A short object left by an interrupted run: replace it (write-once refuses an existing name).
    for (const t of needing) {
      if (stored.get(t.name)!.has(entry.key)) await t.delete(entry.key).catch((err: Error) => fail(t.name, err));
    }
    const writers = needing.filter((t) => !failed.has(t.name));
    const digest = new DigestStream(false);
    // A read error ends the copy short instead of failing the targets: the digest check below
    // then removes what they got and leaves the attachment out.
    let unreadable = false;
    source.on("error", () => {
      unreadable = true;
      digest.end();
    });
    const dir = entry.key.slice(0, entry.key.lastIndexOf("/"));
    const upload = () =>
      fanOut(
        source.pipe(digest),
        writers.map((t) => ({ name: t.name, write: (body: Readable) => t.putStream(entry.key, body, opts.put) })),
      );
    let results: Awaited<ReturnType<typeof fanOut>>;
    try {
      results = writers.every((t) => dirs.get(t.name)!.has(dir)) ? await upload() : await alone(upload);
    } catch {
      // The local file failed mid-read (fanOut throws only for its source): the targets are fine,
      // and what they got is unlisted, replaced or swept by a later run.
      for (const t of writers) await t.delete(entry.key).catch(() => {});
      return gone(entry, "the file could not be read");
    }
    if (unreadable || digest.bytes !== entry.storedBytes || digest.sha256 !== entry.sha256) {
      // The local file could not be read whole, or changed or rotted since it was recorded: it must
      // not be published under a digest it does not have.
      for (const r of results)
        if (r.ok)
          await writers
            .find((t) => t.name === r.name)!
            .delete(entry.key)
            .catch(() => {});
      return gone(entry, unreadable ? "the file could not be read" : "the file does not match its recorded digest");
    }
    for (const r of results) {
      if (!r.ok) fail(r.name, r.error);
      else {
        const st = stats.get(r.name)!;
        st.uploaded += 1;
        st.uploadedBytes += r.bytes;
        stored.get(r.name)!.set(entry.key, entry.storedBytes);
        dirs.get(r.name)!.add(dir);
      }
    }
    return { entry };
  };

  // A few files in flight: many small attachments are bound by round trips to the target, not bandwidth.
  const outcomes: (Outcome | undefined)[] = new Array(opts.entries.length);
  let next = 0;
  let finished = 0;
  const worker = async () => {
    for (let i = next++; i < opts.entries.length && live().length > 0; i = next++) {
      outcomes[i] = await copyOne(opts.entries[i]!);
      opts.onProgress?.(++finished, opts.entries.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(ATTACHMENT_CONCURRENCY, opts.entries.length) }, worker));
  const entries: AttachmentEntry[] = [];
  const missing: AttachmentsSection["missing"] = [];
  for (const o of outcomes) {
    if (o && "entry" in o) entries.push(o.entry);
    else if (o) missing.push(o.missing);
  }
  opts.onProgress?.(opts.entries.length, opts.entries.length);
  return { section: { entries, missing }, stats: [...stats.values()].filter((s) => !failed.has(s.target)) };
}

/** Hashes what passes and fails at the end when size or digest differ from the entry. */
class ExpectDigest extends Transform {
  private readonly hash = createHash("sha256");
  bytes = 0;
  constructor(private readonly entry: AttachmentEntry) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
    this.bytes += chunk.length;
    if (this.bytes > this.entry.storedBytes) return done(new SnapshotIntegrityError(`attachment ${this.entry.id} is larger on the target than the manifest says`));
    this.hash.update(chunk);
    done(null, chunk);
  }
  override _flush(done: TransformCallback) {
    if (this.bytes !== this.entry.storedBytes)
      return done(new SnapshotIntegrityError(`attachment ${this.entry.id} is truncated on the target (${this.bytes} of ${this.entry.storedBytes} bytes)`));
    if (this.hash.digest("hex") !== this.entry.sha256) return done(new SnapshotIntegrityError(`attachment ${this.entry.id} does not match its SHA-256 in the manifest`));
    done();
  }
}

export type AttachmentCheck = { id: string; ok: boolean; bytes: number; detail: string };

/**
 * A drill's check of one attachment: downloads its object and compares size and SHA-256 with the
 * manifest (no key needed; decrypting it is the records capability's business).
 */
export async function attachmentDigestCheck(target: SnapshotTarget, entry: AttachmentEntry): Promise<AttachmentCheck> {
  const check = new ExpectDigest(entry);
  try {
    await pipeline(await target.get(entry.key), check, async (source: AsyncIterable<Buffer>) => {
      for await (const _ of source);
    });
    return { id: entry.id, ok: true, bytes: check.bytes, detail: `${check.bytes} bytes, SHA-256 as in the manifest` };
  } catch (err) {
    const detail = err instanceof TargetError ? `not readable on target ${target.name} (${String(err.extras.code ?? "error")})` : (err as Error).message;
    return { id: entry.id, ok: false, bytes: check.bytes, detail };
  }
}

export type RestoreAttachmentsOptions = {
  target: SnapshotTarget;
  /** `manifest.body.attachments?.entries` of the snapshot being restored. */
  entries: AttachmentEntry[];
  /** The new appliance's attachments directory (`records.attachmentsDir` under its data directory). */
  root: string;
  /** Restore only these ids (e.g. leave out crypto-shredded patients); default all. */
  only?: (entry: AttachmentEntry) => boolean;
  onProgress?: (p: { done: number; total: number; bytes: number }) => void;
};

export type RestoreAttachmentsResult = { restored: number; alreadyPresent: number; bytes: number; failures: { id: string; detail: string }[] };

async function fileDigest(file: string): Promise<{ bytes: number; sha256: string } | undefined> {
  const digest = new DigestStream(false);
  try {
    await pipeline(fs.createReadStream(file), digest, async (source: AsyncIterable<Buffer>) => {
      for await (const _ of source);
    });
  } catch {
    return undefined;
  }
  return { bytes: digest.bytes, sha256: digest.sha256 };
}

/**
 * Puts a snapshot's attachment files back into an appliance's attachments directory, each one
 * verified against its size and SHA-256 before it gets its final name (`<id>.part`, fsync,
 * rename, as the records store writes them; 0600 files in 0700 folders). A file already there
 * with the right digest is kept; one with another digest is never overwritten. Every attachment
 * is tried; if any failed, a SnapshotIntegrityError naming the count and the first ids is thrown
 * at the end (`extras.failures` lists them all).
 */
export async function restoreAttachments(opts: RestoreAttachmentsOptions): Promise<RestoreAttachmentsResult> {
  const todo = opts.only ? opts.entries.filter(opts.only) : opts.entries;
  const out: RestoreAttachmentsResult = { restored: 0, alreadyPresent: 0, bytes: 0, failures: [] };
  for (const [i, entry] of todo.entries()) {
    opts.onProgress?.({ done: i, total: todo.length, bytes: out.bytes });
    let final: string;
    try {
      final = fileUnder(opts.root, entry.storagePath);
    } catch (err) {
      out.failures.push({ id: entry.id, detail: (err as Error).message });
      continue;
    }
    if (fs.existsSync(final)) {
      const have = await fileDigest(final);
      if (have && have.bytes === entry.storedBytes && have.sha256 === entry.sha256) out.alreadyPresent += 1;
      else out.failures.push({ id: entry.id, detail: "a different file already has its name; it was left as it is" });
      continue;
    }
    const dir = path.dirname(final);
    const part = `${final.slice(0, -".wka".length)}.part`;
    try {
      await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
      const check = new ExpectDigest(entry);
      await pipeline(await opts.target.get(entry.key), check, fs.createWriteStream(part, { flags: "w", mode: 0o600 }));
      const fh = await fs.promises.open(part, "r");
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.promises.rename(part, final);
      const dh = await fs.promises.open(dir, "r");
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
      out.restored += 1;
      out.bytes += check.bytes;
    } catch (err) {
      await fs.promises.rm(part, { force: true });
      const detail = err instanceof TargetError ? `not readable on target ${opts.target.name} (${String(err.extras.code ?? "error")})` : (err as Error).message;
      out.failures.push({ id: entry.id, detail });
    }
  }
  opts.onProgress?.({ done: todo.length, total: todo.length, bytes: out.bytes });
  if (out.failures.length) {
    const first = out.failures
      .slice(0, 3)
      .map((f) => `${f.id}: ${f.detail}`)
      .join("; ");
    throw new SnapshotIntegrityError(`${out.failures.length} of ${todo.length} attachment(s) could not be restored (${first}${out.failures.length > 3 ? "; ..." : ""})`, {
      failures: out.failures,
      restored: out.restored,
    });
  }
  return out;
}

/**
 * Objects under `attachments/` that no remaining manifest references: what pruning leaves behind.
 * `referenced` must come from EVERY complete snapshot on the target (the caller gives up when a
 * manifest cannot be read, rather than delete something it still needs).
 */
export async function removeUnreferencedAttachments(target: SnapshotTarget, referenced: Set<string>): Promise<{ removed: number; refused: number }> {
  let removed = 0;
  let refused = 0;
  for (const e of await target.list(ATTACHMENT_PREFIX)) {
    if (referenced.has(e.key)) continue;
    try {
      await target.delete(e.key);
      removed += 1;
    } catch {
      refused += 1; // WORM: still retained; tried again next run
    }
  }
  return { removed, refused };
}
