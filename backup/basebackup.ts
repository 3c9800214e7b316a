/**
 * Physical base backups for point-in-time recovery (backup/FORMAT.md "Base backups"), with the
 * non-exclusive backup API (the embedded binaries ship no pg_basebackup): `pg_backup_start` on a
 * session held open, a tar of the data directory streamed through brotli and the segmented
 * AES-256-GCM stream to every target at once (pgBackRest-style, one read of each file), then
 * `pg_backup_stop`, whose backup_label goes into the tar last, and the signed manifest last of all.
 * Files that change while they are read are fine: replay from the start LSN repairs them (full
 * page writes), which is why a base backup is useless without the WAL up to its stop LSN.
 */
import fs from "node:fs";
import path from "node:path";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import type pg from "pg";
import { extract as tarExtract, pack as tarPack, type Pack } from "tar-stream";
import { zeroize } from "../daemon/keys/index.js";
import { SnapshotIntegrityError } from "./errors.js";
import { manifestSigner, newSnapshotKey, type SnapshotOpener } from "./keys.js";
import { signerEntry, STREAM_ALG } from "./manifest.js";
import { newSnapshotId } from "./snapshot.js";
import { SegmentDecryptStream, SegmentEncryptStream, snapshotKeyId } from "./stream-aead.js";
import { DigestStream, fanOut } from "./streams.js";
import type { SnapshotTarget } from "./targets/target.js";
import {
  BASEBACKUP_FORMAT,
  baseBackupAssociatedData,
  baseBackupKeyWraps,
  baseBackupLayout,
  openBaseBackupManifest,
  sealBaseBackupManifest,
  segmentOfLsn,
  type BaseBackupBody,
} from "./wal.js";

const SEGMENT_BYTES = 1 << 20;
const COMPRESSION_LEVEL = 1;

/** What pg_basebackup leaves out too: run-time state, WAL (replay fetches it from the archive), and recovery triggers. */
const SKIP_CONTENTS = new Set(["pg_wal", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"]);
const SKIP_FILES = new Set([
  "postmaster.pid",
  "postmaster.opts",
  "backup_label",
  "backup_label.old",
  "tablespace_map",
  "backup_manifest",
  "current_logfiles",
  "recovery.signal",
  "standby.signal",
  "postgresql.auto.conf.tmp",
]);

export type BaseBackupTargetOutcome = { target: string; ok: boolean; bytes: number; error?: string };

export type BaseBackupResult = {
  id: string;
  body: BaseBackupBody;
  outcomes: BaseBackupTargetOutcome[];
  phases: { startMs: number; copyMs: number; stopMs: number; manifestMs: number };
};

export type TakeBaseBackupOptions = {
  /** A superuser (or pg_backup_start/stop grantee) session on the cluster whose data directory is `dataDir`. */
  connect: () => Promise<pg.Client>;
  dataDir: string;
  targets: SnapshotTarget[];
  applianceSecret: Buffer;
  recoveryPublicKey: Buffer;
  appVersion: string;
  now: () => Date;
  id?: string;
  /**
   * The daemon's database and the role owning its tables, recorded in the manifest for recovery
   * (backup/FORMAT.md "Base backups"). Unset: the session's own (the compose owner's session is).
   */
  app?: { database: string; owner: string };
};

/** Every file and directory under the data directory that goes into the tar, parents first. */
function* walk(root: string, rel = ""): Generator<{ rel: string; dir: boolean }> {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(path.join(root, rel), { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return; // dropped while we walked (a temp directory)
    throw err;
  }
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.name.startsWith("pgsql_tmp")) continue;
    if (e.isDirectory()) {
      yield { rel: r, dir: true };
      if (!(rel === "" && SKIP_CONTENTS.has(e.name))) yield* walk(root, r);
    } else if (e.isFile() && !(rel === "" && SKIP_FILES.has(e.name))) {
      yield { rel: r, dir: false };
    }
  }
}

function addEntry(pack: Pack, header: Parameters<Pack["entry"]>[0], body?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null) => (err ? reject(err) : resolve());
    if (body) pack.entry(header, body, cb);
    else pack.entry(header, cb);
  });
}

/** One file as it is now: exactly its size at stat time (a file that shrank is padded with zeros, as pg_basebackup does). */
async function addFile(pack: Pack, root: string, rel: string): Promise<number> {
  const file = path.join(root, rel);
  let fd: fs.promises.FileHandle;
  try {
    fd = await fs.promises.open(file, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return 0; // removed since the walk: replay recreates what matters
    throw err;
  }
  try {
    const { size, mtime } = await fd.stat();
    let settle: (err?: Error | null) => void = () => {};
    const done = new Promise<void>((resolve, reject) => (settle = (err) => (err ? reject(err) : resolve())));
    const entry = pack.entry({ name: rel, size, mode: 0o600, mtime, type: "file" }, (err) => settle(err));
    const chunk = 1 << 20;
    let at = 0;
    while (at < size) {
      const buf = Buffer.alloc(Math.min(chunk, size - at));
      const { bytesRead } = await fd.read(buf, 0, buf.length, at);
      at += buf.length;
      if (!entry.write(bytesRead === buf.length ? buf : buf.fill(0, bytesRead))) await new Promise<void>((r) => entry.once("drain", () => r()));
    }
    entry.end(Buffer.alloc(0));
    await done;
    return size;
  } finally {
    await fd.close();
  }
}

/**
 * Takes one base backup: start (fast checkpoint) → copy the data directory to every target in one
 * pass → stop (waits until the last WAL segment it needs is archived) → backup_label into the tar
 * → manifest on each target that took the data. A target that fails is reported; the others complete.
 */
export async function takeBaseBackup(opts: TakeBaseBackupOptions): Promise<BaseBackupResult> {
  const t0 = performance.now();
  const id = opts.id ?? newSnapshotId(opts.now());
  const client = await opts.connect();
  const key = newSnapshotKey();
  let stopped = false;
  try {
    await client.query("SET statement_timeout = 0");
    const started = opts.now();
    const info = (
      await client.query<{ lsn: string; tli: number; seg: string; ver: string; vnum: number; sysid: string; superuser: string; db: string; owner: string }>(
        `SELECT pg_backup_start($1, true)::text AS lsn, (SELECT timeline_id FROM pg_control_checkpoint()) AS tli,
                current_setting('wal_segment_size') AS seg, current_setting('server_version') AS ver,
                current_setting('server_version_num')::int AS vnum, (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
                (SELECT rolname FROM pg_roles WHERE oid = 10) AS superuser, current_database() AS db, current_user AS owner`,
        [`wardkeep ${id}`],
      )
    ).rows[0]!;
    const segBytes = Number((await client.query<{ b: string }>("SELECT setting AS b FROM pg_settings WHERE name = 'wal_segment_size'")).rows[0]!.b);
    const startMs = performance.now() - t0;

    const t1 = performance.now();
    const pack = tarPack();
    const encrypt = new SegmentEncryptStream(key, baseBackupAssociatedData(id), SEGMENT_BYTES);
    const stored = new DigestStream();
    pack
      .pipe(zlib.createBrotliCompress({ params: { [zlib.constants.BROTLI_PARAM_QUALITY]: COMPRESSION_LEVEL } }))
      .pipe(encrypt)
      .pipe(stored);
    const uploads = fanOut(
      stored,
      opts.targets.map((t) => ({ name: t.name, write: (body: Readable) => t.putStream(baseBackupLayout.object(id), body) })),
    );
    let files = 0;
    let plainBytes = 0;
    let stop: { lsn: string; labelfile: string; spcmapfile: string | null } | undefined;
    let stopMs = 0;
    const producing = (async () => {
      for (const e of walk(opts.dataDir)) {
        if (e.dir) await addEntry(pack, { name: e.rel, type: "directory", mode: 0o700 });
        else {
          plainBytes += await addFile(pack, opts.dataDir, e.rel);
          files += 1;
        }
      }
      const t2 = performance.now();
      stop = (await client.query<{ lsn: string; labelfile: string; spcmapfile: string | null }>("SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(true)")).rows[0]!;
      stopped = true;
      stopMs = performance.now() - t2;
      await addEntry(pack, { name: "backup_label", mode: 0o600 }, Buffer.from(stop.labelfile, "utf8"));
      if (stop.spcmapfile) await addEntry(pack, { name: "tablespace_map", mode: 0o600 }, Buffer.from(stop.spcmapfile, "utf8"));
      pack.finalize();
    })();
    const [outcomes] = await Promise.all([uploads, producing.catch((err: Error) => (pack.destroy(err), Promise.reject(err)))]);
    const copyMs = performance.now() - t1 - stopMs;

    const t3 = performance.now();
    const completed = opts.now();
    const signer = manifestSigner(opts.applianceSecret);
    const body: BaseBackupBody = {
      format: BASEBACKUP_FORMAT,
      formatVersion: 1,
      backupId: id,
      startLsn: info.lsn,
      stopLsn: stop!.lsn,
      timeline: info.tli,
      startWal: segmentOfLsn(info.tli, info.lsn, segBytes),
      stopWal: segmentOfLsn(info.tli, stop!.lsn, segBytes),
      walSegmentBytes: segBytes,
      startedAt: started.toISOString(),
      completedAt: completed.toISOString(),
      server: {
        version: info.ver,
        versionNum: info.vnum,
        systemIdentifier: info.sysid,
        superuser: info.superuser,
        database: opts.app?.database ?? info.db,
        owner: opts.app?.owner ?? info.owner,
      },
      producer: { appVersion: opts.appVersion },
      backupLabel: stop!.labelfile,
      encryption: { alg: STREAM_ALG, segmentBytes: SEGMENT_BYTES, keyId: snapshotKeyId(key).toString("hex") },
      compression: { alg: "brotli", level: COMPRESSION_LEVEL },
      keyWraps: baseBackupKeyWraps(key, opts.applianceSecret, opts.recoveryPublicKey),
      object: { path: "base.wkd", files, plainBytes, storedBytes: stored.bytes, sha256: stored.sha256 },
      signer: signerEntry(signer),
    };
    const manifest = sealBaseBackupManifest(body, key, opts.applianceSecret);
    const results: BaseBackupTargetOutcome[] = [];
    for (const o of outcomes) {
      const target = opts.targets.find((t) => t.name === o.name)!;
      if (!o.ok) {
        results.push({ target: o.name, ok: false, bytes: 0, error: o.error.message });
        continue;
      }
      try {
        await target.putOnce(baseBackupLayout.manifest(id), manifest);
        results.push({ target: o.name, ok: true, bytes: o.bytes + manifest.length });
      } catch (err) {
        results.push({ target: o.name, ok: false, bytes: 0, error: (err as Error).message });
      }
    }
    const manifestMs = performance.now() - t3;
    const r = (n: number) => Math.round(n);
    return { id, body, outcomes: results, phases: { startMs: r(startMs), copyMs: r(copyMs), stopMs: r(stopMs), manifestMs: r(manifestMs) } };
  } finally {
    zeroize(key);
    // A backup that failed half-way must not leave the server in backup mode (the session ending also aborts it).
    if (!stopped) await client.query("SELECT pg_backup_stop(false)").catch(() => {});
    await client.end().catch(() => {});
  }
}

/** Counts bytes without holding them. */
class Counter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _e: BufferEncoding, done: TransformCallback) {
    this.bytes += chunk.length;
    done(null, chunk);
  }
}

export type RestoredBaseBackup = { body: BaseBackupBody; files: number; bytes: number };

/**
 * Writes a base backup into an empty data directory: manifest authenticated first, then the tar
 * streamed through digest, decryption and decompression; the stored bytes' SHA-256 is checked at
 * the end (every GCM tag on the way). Files are 0600, directories 0700, owned by `owner` when given.
 */
export async function restoreBaseBackup(opts: {
  target: SnapshotTarget;
  id: string;
  opener: SnapshotOpener;
  trustedSigners: Buffer[];
  intoDir: string;
  owner?: { uid: number; gid: number };
  onProgress?: (bytes: number, total: number) => void;
}): Promise<RestoredBaseBackup> {
  const { body, key } = await openBaseBackupManifest(opts.target, opts.id, opts.opener, opts.trustedSigners);
  try {
    fs.mkdirSync(opts.intoDir, { recursive: true, mode: 0o700 });
    if (fs.readdirSync(opts.intoDir).length) throw new SnapshotIntegrityError(`the data directory ${opts.intoDir} is not empty`);
    const own = (p: string) => opts.owner && fs.chownSync(p, opts.owner.uid, opts.owner.gid);
    own(opts.intoDir);
    const digest = new DigestStream(false, (n) => opts.onProgress?.(digest.bytes + n, body.object.storedBytes));
    const extract = tarExtract();
    let files = 0;
    const plain = new Counter();
    const root = path.resolve(opts.intoDir);
    extract.on("entry", (header, stream, next) => {
      const dest = path.resolve(root, header.name);
      if (dest !== root && !dest.startsWith(root + path.sep)) {
        stream.resume();
        next(new SnapshotIntegrityError(`base backup ${opts.id}: entry ${header.name} points outside the data directory`));
        return;
      }
      if (header.type === "directory") {
        fs.mkdirSync(dest, { recursive: true, mode: 0o700 });
        own(dest);
        stream.resume();
        stream.on("end", () => next());
        return;
      }
      const out = fs.createWriteStream(dest, { mode: 0o600, flags: "wx" });
      pipeline(stream, out).then(
        () => {
          own(dest);
          files += 1;
          next();
        },
        (err: Error) => next(err),
      );
    });
    const source = await opts.target.get(baseBackupLayout.object(opts.id));
    const unpacked = new Promise<void>((resolve, reject) => {
      extract.on("finish", () => resolve());
      extract.on("error", (err: Error) => reject(err));
    });
    try {
      const decoding = pipeline(source, digest, new SegmentDecryptStream(key, baseBackupAssociatedData(opts.id), true), zlib.createBrotliDecompress(), plain);
      plain.pipe(extract);
      await Promise.all([decoding, unpacked]);
    } catch (err) {
      if (err instanceof SnapshotIntegrityError) throw new SnapshotIntegrityError(`base backup ${opts.id}: ${err.message}`);
      throw err;
    }
    if (digest.bytes !== body.object.storedBytes || digest.sha256 !== body.object.sha256) {
      throw new SnapshotIntegrityError(`base backup ${opts.id}: the stored bytes do not match the manifest digest`);
    }
    // Directories the tar left empty on purpose must exist for the server to start.
    for (const d of ["pg_wal", "pg_wal/archive_status", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"]) {
      const p = path.join(root, d);
      if (!fs.existsSync(p)) {
        fs.mkdirSync(p, { mode: 0o700 });
        own(p);
      }
    }
    return { body, files, bytes: plain.bytes };
  } finally {
    zeroize(key);
  }
}
