/**
 * The catalog is the target itself: a snapshot exists when `snapshots/<id>/manifest.json` does.
 * There is no index file to rewrite (pgBackRest's `backup.info` is rewritten on every run, which
 * Object Lock forbids); listing a prefix is the catalog.
 */
import { layout, parseManifest, SNAPSHOT_ID, type ManifestFile } from "./manifest.js";
import { SnapshotNotFound, TargetError } from "./errors.js";
import type { SnapshotTarget } from "./targets/target.js";

export type TargetScan = {
  complete: string[];
  /** Directories without a manifest: interrupted runs (or one in progress elsewhere). */
  incomplete: { id: string; keys: string[]; bytes: number }[];
};

const MANIFEST_MAX_BYTES = 64 * 1024 * 1024;

export async function scanTarget(target: SnapshotTarget): Promise<TargetScan> {
  const entries = await target.list("snapshots/");
  const byId = new Map<string, { keys: string[]; bytes: number; manifest: boolean }>();
  for (const e of entries) {
    const [top, id, ...rest] = e.key.split("/");
    if (top !== "snapshots" || !id || !SNAPSHOT_ID.test(id)) continue;
    const slot = byId.get(id) ?? { keys: [], bytes: 0, manifest: false };
    slot.keys.push(e.key);
    slot.bytes += e.size;
    if (rest.join("/") === "manifest.json") slot.manifest = true;
    byId.set(id, slot);
  }
  const ids = [...byId.keys()].sort();
  return {
    complete: ids.filter((id) => byId.get(id)!.manifest),
    incomplete: ids.filter((id) => !byId.get(id)!.manifest).map((id) => ({ id, keys: byId.get(id)!.keys, bytes: byId.get(id)!.bytes })),
  };
}

export async function readAll(stream: NodeJS.ReadableStream, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) throw new TargetError(`${what} is larger than ${max} bytes; refusing to read it`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, n);
}

/** Reads and parses (not yet authenticates) a snapshot's manifest. */
export async function readManifest(target: SnapshotTarget, id: string): Promise<ManifestFile> {
  if (!SNAPSHOT_ID.test(id)) throw new SnapshotNotFound(`"${id}" is not a snapshot id (expected e.g. 20250101T120000Z-1a2b3c4d)`);
  let raw: Buffer;
  try {
    raw = await readAll(await target.get(layout.manifest(id)), MANIFEST_MAX_BYTES, `the manifest of ${id}`);
  } catch (err) {
    if (err instanceof TargetError && /ENOENT|NoSuchKey|NotFound|\b2\b/.test(String(err.extras.code))) {
      throw new SnapshotNotFound(`snapshot ${id} is not on target ${target.name} (no manifest: never completed, or deleted)`);
    }
    throw err;
  }
  return parseManifest(raw, id);
}

/** The newest complete snapshot on a target, or undefined. */
export async function latestSnapshot(target: SnapshotTarget): Promise<string | undefined> {
  return (await scanTarget(target)).complete.at(-1);
}

/**
 * Removes a snapshot: the manifest first, so a delete cut short leaves an incomplete directory
 * (swept by the next run) and never a manifest pointing at missing objects.
 */
export async function deleteSnapshot(target: SnapshotTarget, id: string): Promise<void> {
  const keys = (await target.list(`${layout.dir(id)}/`)).map((e) => e.key);
  const manifest = layout.manifest(id);
  if (keys.includes(manifest)) await target.delete(manifest);
  for (const key of keys) if (key !== manifest) await target.delete(key);
}

/**
 * Sweeps what interrupted runs left (killed process, full disk, dropped connection). Only run
 * under the backup lock, so nothing listed here is still being written; `keep` protects ids
 * another caller knows to be live.
 */
export async function removeIncompleteSnapshots(target: SnapshotTarget, keep: Set<string> = new Set()): Promise<{ removed: string[]; bytes: number }> {
  const scan = await scanTarget(target);
  const removed: string[] = [];
  let bytes = 0;
  for (const dir of scan.incomplete) {
    if (keep.has(dir.id)) continue;
    for (const key of dir.keys) await target.delete(key);
    removed.push(dir.id);
    bytes += dir.bytes;
  }
  return { removed, bytes };
}
