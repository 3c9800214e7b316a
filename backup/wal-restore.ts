/**
 * The restore side of the WAL archive: PostgreSQL's `restore_command` asks for one WAL file at a
 * time; this process fetches it from the target, authenticates and decrypts it (the recovery key
 * never leaves this process, and nothing unauthenticated reaches pg_wal), and hands it over
 * through a staging directory:
 *
 *   restore_command = '<staging>/restore-wal.sh' %f %p
 *   the script drops   req/<name>    and waits for ready/<name> (moved to %p, exit 0),
 *                      none/<name>   (exit 1: "not in the archive", the normal end of replay),
 *                      or abort      (exit 1 after this process stopped the server: a bad or missing segment).
 *
 * The next two segments are fetched ahead while PostgreSQL replays the current one.
 */
import fs from "node:fs";
import path from "node:path";
import type { SnapshotOpener } from "./keys.js";
import type { SnapshotTarget } from "./targets/target.js";
import { fetchWalFile, parseSegment, segmentName, WAL_FILE, WAL_SEGMENT, WalObjectError, type WalHeader } from "./wal.js";

const SCRIPT = `#!/bin/sh
# Wardkeep point-in-time recovery: asks the recovering wardkeep process for one WAL file.
d="$(dirname "$0")"; f="$1"; p="$2"
[ -f "$d/abort" ] && exit 1
: > "$d/req/.$f" && mv "$d/req/.$f" "$d/req/$f" || exit 1
while :; do
  if [ -f "$d/ready/$f" ]; then mv "$d/ready/$f" "$p" && exit 0; exit 1; fi
  if [ -f "$d/none/$f" ]; then rm -f "$d/none/$f"; exit 1; fi
  if [ -f "$d/abort" ]; then exit 1; fi
  sleep 0.02
done
`;

export type FetchStats = {
  files: number;
  bytes: number;
  storedBytes: number;
  fetchMs: number;
  lastArchivedAt?: string;
  lastSegment?: string;
  /** The first segment PostgreSQL asked for that the archive does not hold (and no later one does): replay has used every archived segment. */
  endOfArchive?: string;
};

export class WalFetcher {
  readonly stats: FetchStats = { files: 0, bytes: 0, storedBytes: 0, fetchMs: 0 };
  readonly restoreCommand: string;
  /** Why the recovery must stop (a missing or tampered WAL file), once known. */
  failure: WalObjectError | undefined;
  private readonly cache = new Map<string, Promise<{ header: WalHeader; bytes: Buffer }>>();
  private timer: NodeJS.Timeout | undefined;
  private busy = new Set<string>();
  private disposed = false;
  private readonly controller = new AbortController();

  constructor(
    private readonly opts: {
      target: SnapshotTarget;
      /** Every WAL file on the target (listWal). */
      available: Map<string, number>;
      opener: SnapshotOpener;
      trustedSigners: Buffer[];
      stagingDir: string;
      owner?: { uid: number; gid: number };
      segmentBytes: number;
      onServed?: (name: string, stats: FetchStats) => void;
    },
  ) {
    const d = opts.stagingDir;
    fs.rmSync(d, { recursive: true, force: true });
    for (const sub of ["", "req", "ready", "none"]) {
      fs.mkdirSync(path.join(d, sub), { recursive: true, mode: 0o700 });
      if (opts.owner) fs.chownSync(path.join(d, sub), opts.owner.uid, opts.owner.gid);
    }
    const script = path.join(d, "restore-wal.sh");
    fs.writeFileSync(script, SCRIPT, { mode: 0o700 });
    if (opts.owner) fs.chownSync(script, opts.owner.uid, opts.owner.gid);
    if (/['"\\$`\s]/.test(script)) throw new Error(`the staging path may not contain quotes, spaces or shell characters: ${script}`);
    this.restoreCommand = `${script} %f %p`;
  }

  /** Aborted when a WAL file is missing or does not authenticate: the caller stops the server. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  start(): void {
    this.timer = setInterval(() => void this.poll(), 20);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  dispose(): void {
    // A fetch still in flight finds its staging directory gone: it must answer nobody.
    this.disposed = true;
    this.stop();
    this.cache.clear();
    fs.rmSync(this.opts.stagingDir, { recursive: true, force: true });
  }

  private fail(err: WalObjectError) {
    if (this.failure || this.disposed) return;
    this.failure = err;
    fs.writeFileSync(path.join(this.opts.stagingDir, "abort"), err.message + "\n");
    this.controller.abort();
  }

  private fetch(name: string) {
    let p = this.cache.get(name);
    if (!p) {
      const started = performance.now();
      p = fetchWalFile(this.opts.target, name, this.opts.opener, this.opts.trustedSigners).then((r) => {
        this.stats.fetchMs += performance.now() - started;
        return r;
      });
      p.catch(() => {}); // observed when served
      this.cache.set(name, p);
    }
    return p;
  }

  /** A segment the archive should hold: a later one on the same timeline is there. */
  private isGap(name: string): boolean {
    if (!WAL_SEGMENT.test(name)) return false;
    const { timeline, segno } = parseSegment(name, this.opts.segmentBytes);
    for (const other of this.opts.available.keys()) {
      if (!WAL_SEGMENT.test(other)) continue;
      const o = parseSegment(other, this.opts.segmentBytes);
      if (o.timeline === timeline && o.segno > segno) return true;
    }
    return false;
  }

  private async poll() {
    let requests: string[];
    try {
      requests = fs.readdirSync(path.join(this.opts.stagingDir, "req")).filter((n) => !n.startsWith(".") && !this.busy.has(n));
    } catch {
      return;
    }
    for (const name of requests) {
      this.busy.add(name);
      void this.serve(name).finally(() => this.busy.delete(name));
    }
  }

  private async serve(name: string) {
    const d = this.opts.stagingDir;
    const answer = (dir: "ready" | "none", bytes?: Buffer) => {
      if (this.disposed) return;
      const tmp = path.join(d, dir, `.${name}`);
      fs.writeFileSync(tmp, bytes ?? "", { mode: 0o600 });
      if (this.opts.owner) fs.chownSync(tmp, this.opts.owner.uid, this.opts.owner.gid);
      fs.renameSync(tmp, path.join(d, dir, name));
      fs.rmSync(path.join(d, "req", name), { force: true });
    };
    if (!WAL_FILE.test(name) || !this.opts.available.has(name)) {
      if (WAL_FILE.test(name) && this.isGap(name)) {
        this.fail(
          new WalObjectError(
            `WAL segment ${name} is missing from target ${this.opts.target.name}: later segments exist, so the archive has a gap and replay cannot continue past it`,
          ),
        );
        return;
      }
      if (WAL_SEGMENT.test(name)) this.stats.endOfArchive ??= name;
      answer("none");
      return;
    }
    try {
      const { header, bytes } = await this.fetch(name);
      this.cache.delete(name);
      answer("ready", bytes);
      this.stats.files += 1;
      this.stats.bytes += bytes.length;
      this.stats.storedBytes += this.opts.available.get(name) ?? 0;
      if (WAL_SEGMENT.test(name)) {
        this.stats.lastSegment = name;
        this.stats.lastArchivedAt = header.archivedAt;
        // Read ahead: the next two segments of this timeline, while PostgreSQL replays this one.
        const { timeline, segno } = parseSegment(name, this.opts.segmentBytes);
        for (let i = 1n; i <= 2n; i++) {
          const next = segmentName(timeline, segno + i, this.opts.segmentBytes);
          if (this.opts.available.has(next)) void this.fetch(next);
        }
      }
      this.opts.onServed?.(name, this.stats);
    } catch (err) {
      this.cache.delete(name);
      this.fail(err instanceof WalObjectError ? err : new WalObjectError(`WAL file ${name} could not be read from target ${this.opts.target.name}: ${(err as Error).message}`));
    }
  }
}
