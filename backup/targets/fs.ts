import { randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { TargetError } from "../errors.js";
import { checkKey, errCode, type PutOptions, type SnapshotTarget, type TargetEntry } from "./target.js";

export type FsTargetOptions = { name: string; path: string; quotaBytes?: number };

class QuotaExceeded extends Error {
  readonly code = "ENOSPC";
  constructor() {
    super("no space left on the target (quota)");
  }
}

/**
 * A local or mounted directory (NFS, SMB, a USB disk). Every write is fsynced, and so is the
 * directory that gains a name, so a snapshot reported done survives a power cut (pgBackRest does
 * the same). The optional quota makes "the NAS share is full" reproducible and bounds what
 * snapshots may take of a shared volume: past it, writes fail with ENOSPC like a full disk.
 */
export class FsTarget implements SnapshotTarget {
  readonly kind = "fs" as const;
  readonly name: string;
  private readonly root: string;
  private readonly quota: number;
  private used: number | undefined;

  constructor(opts: FsTargetOptions) {
    this.name = opts.name;
    this.root = path.resolve(opts.path);
    this.quota = opts.quotaBytes ?? 0;
  }

  describe(): string {
    return `fs:${this.root}`;
  }

  private full(key: string): string {
    return path.join(this.root, ...checkKey(key).split("/"));
  }

  private fail(op: string, key: string, err: unknown): Error {
    if (err instanceof TargetError) return err;
    // Errors of the source stream (the database, the encryptor) are not the target's: pass them on.
    if (!(err instanceof QuotaExceeded) && !(err as { syscall?: string }).syscall) return err as Error;
    const code = errCode(err);
    const hint = code === "ENOSPC" ? " (the target is full)" : code === "EACCES" || code === "EPERM" ? " (permission denied)" : "";
    return new TargetError(`target ${this.name}: ${op} ${key} failed: ${code}${hint}`, { target: this.name, code });
  }

  private async usage(): Promise<number> {
    if (this.used === undefined) this.used = (await this.list("")).reduce((n, e) => n + e.size, 0);
    return this.used;
  }

  private async reserve(bytes: number) {
    if (!this.quota) return;
    const used = await this.usage();
    if (used + bytes > this.quota) throw new QuotaExceeded();
    this.used = used + bytes;
  }

  private async syncDir(dir: string) {
    const handle = await fsp.open(dir, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  async putStream(key: string, body: Readable, _opts?: PutOptions): Promise<number> {
    const file = this.full(key);
    let written = 0;
    let handle: fsp.FileHandle | undefined;
    try {
      await fsp.mkdir(path.dirname(file), { recursive: true });
      handle = await fsp.open(file, "wx", 0o600);
      for await (const chunk of body as AsyncIterable<Buffer>) {
        await this.reserve(chunk.length);
        // One chunk at a time: the source is paused while the write is pending (bounded memory).
        let off = 0;
        while (off < chunk.length) off += (await handle.write(chunk, off, chunk.length - off)).bytesWritten;
        written += chunk.length;
      }
      await handle.sync();
      await handle.close();
      handle = undefined;
      await this.syncDir(path.dirname(file));
      return written;
    } catch (err) {
      body.destroy();
      await handle?.close().catch(() => {});
      throw this.fail("write", key, err);
    }
  }

  async putOnce(key: string, data: Buffer, _opts?: PutOptions): Promise<void> {
    const file = this.full(key);
    const tmp = `${file}.tmp-${randomBytes(6).toString("hex")}`;
    try {
      await fsp.mkdir(path.dirname(file), { recursive: true });
      await this.reserve(data.length);
      const handle = await fsp.open(tmp, "wx", 0o600);
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      // link() fails with EEXIST instead of replacing: the name appears once, whole, and is never rewritten.
      await fsp.link(tmp, file);
      // On a write-once share the temporary name cannot be removed either; it is harmless there.
      await fsp.unlink(tmp).catch((err: unknown) => {
        if (!["EPERM", "EACCES"].includes(errCode(err))) throw err;
      });
      await this.syncDir(path.dirname(file));
    } catch (err) {
      await fsp.unlink(tmp).catch(() => {});
      throw this.fail("write", key, err);
    }
  }

  async get(key: string): Promise<Readable> {
    const file = this.full(key);
    try {
      await fsp.access(file, fs.constants.R_OK);
    } catch (err) {
      throw this.fail("read", key, err);
    }
    return fs.createReadStream(file, { highWaterMark: 1 << 20 });
  }

  async list(prefix: string): Promise<TargetEntry[]> {
    const out: TargetEntry[] = [];
    const start = prefix ? this.full(prefix.replace(/\/$/, "")) : this.root;
    const walk = async (dir: string) => {
      let entries: fs.Dirent[];
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (errCode(err) === "ENOENT") return;
        throw this.fail("list", prefix || "/", err);
      }
      for (const e of entries) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) out.push({ key: path.relative(this.root, p).split(path.sep).join("/"), size: (await fsp.stat(p)).size });
      }
    };
    await walk(start);
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  }

  async delete(key: string): Promise<void> {
    const file = this.full(key);
    try {
      const size = (await fsp.stat(file)).size;
      await fsp.unlink(file);
      if (this.used !== undefined) this.used -= size;
    } catch (err) {
      if (errCode(err) === "ENOENT") return;
      throw this.fail("delete", key, err);
    }
    // Leave no empty snapshot directories behind (a failed rmdir just means it is not empty).
    let dir = path.dirname(file);
    while (dir.startsWith(this.root + path.sep)) {
      try {
        await fsp.rmdir(dir);
      } catch {
        break;
      }
      dir = path.dirname(dir);
    }
  }

  async probeDeleteRefusal(key: string, retainUntil: Date): Promise<{ refused: boolean; detail: string }> {
    await this.putOnce(key, Buffer.from(`wardkeep WORM self-test, retain until ${retainUntil.toISOString()}\n`), { retainUntil });
    try {
      await fsp.unlink(this.full(key));
      return { refused: false, detail: "the file was deleted: this directory is not write-once" };
    } catch (err) {
      return { refused: true, detail: `delete refused (${errCode(err)})` };
    }
  }

  async close(): Promise<void> {}
}
