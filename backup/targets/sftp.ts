import { createHash, randomBytes } from "node:crypto";
import path from "node:path/posix";
import type { Readable } from "node:stream";
import type SftpClient from "ssh2-sftp-client";
import type { SFTPWrapper } from "ssh2";
import { TargetError } from "../errors.js";
import { checkKey, errCode, type PutOptions, type SnapshotTarget, type TargetEntry } from "./target.js";

export type SftpTargetOptions = {
  name: string;
  host: string;
  port: number;
  username: string;
  path: string;
  /** `SHA256:<base64>` as `ssh-keygen -lf` prints it. */
  hostKeySha256: string;
  privateKey?: string | Buffer;
  passphrase?: string;
  password?: string;
  /** How long to wait for the server before giving up on a connection or a silent one. */
  timeoutMs?: number;
};

/** OpenSSH's fingerprint of a host key blob: "SHA256:" + unpadded base64 of its SHA-256. */
export function sshFingerprint(hostKeyBlob: Buffer): string {
  return "SHA256:" + createHash("sha256").update(hostKeyBlob).digest("base64").replace(/=+$/, "");
}

const WRITE_CHUNK = 1 << 20;

/**
 * SFTP (OpenSSH or any SFTPv3 server) through the `ssh2` library. The server's host key is pinned
 * (no trust on first use: a man in the middle would otherwise receive every snapshot), writes go
 * through the raw handle API so each object ends with the `fsync@openssh.com` extension when the
 * server offers it, and catalog files appear by rename, which SFTPv3 refuses over an existing
 * name — the write-once rule.
 */
export class SftpTarget implements SnapshotTarget {
  readonly kind = "sftp" as const;
  readonly name: string;
  private client: SftpClient | undefined;
  private sftp: SFTPWrapper | undefined;
  private connecting: Promise<SFTPWrapper> | undefined;
  /** Rejects when the connection drops: ssh2 never calls back requests in flight at that moment. */
  private lost: Promise<never> = new Promise<never>(() => {});

  constructor(private readonly opts: SftpTargetOptions) {
    this.name = opts.name;
  }

  describe(): string {
    return `sftp://${this.opts.username}@${this.opts.host}:${this.opts.port}${this.opts.path}`;
  }

  private fail(op: string, key: string, err: unknown): Error {
    if (err instanceof TargetError) return err;
    const e = err as { code?: unknown; level?: string; syscall?: string; message?: string };
    // Errors of the source stream (database, encryptor) are not the target's: pass them on.
    const fromSsh =
      e.syscall !== undefined || e.level !== undefined || typeof e.code === "number" || /sftp|ssh|connect|socket|handshake|No response|closed|ECONN/i.test(e.message ?? "");
    if (!fromSsh) return err as Error;
    this.reset();
    return new TargetError(`target ${this.name}: ${op} ${key} failed: ${errCode(err)}${/host key/i.test(e.message ?? "") ? " (host key mismatch)" : ""}`, {
      target: this.name,
      code: errCode(err),
    });
  }

  private reset() {
    const c = this.client;
    this.client = undefined;
    this.sftp = undefined;
    this.connecting = undefined;
    void c?.end().catch(() => {});
  }

  private async conn(): Promise<SFTPWrapper> {
    if (this.sftp) return this.sftp;
    this.connecting ??= (async () => {
      let dropped: (err: Error) => void = () => {};
      const lost = new Promise<never>((_resolve, reject) => {
        dropped = reject;
      });
      lost.catch(() => {});
      const gone = () => {
        const err = Object.assign(new Error(`SFTP connection to ${this.opts.host} closed`), { code: "ECONNRESET" });
        if (this.client === client) {
          this.client = undefined;
          this.sftp = undefined;
          this.connecting = undefined;
        }
        dropped(err);
      };
      // Callbacks given, so the library does not print its own "global listener" lines to stdout.
      // ssh2 loads with the first connection, not with the module (CLI commands without a target start faster).
      const { default: Client } = await import("ssh2-sftp-client");
      const client = new Client(`wardkeep-${this.name}`, { error: gone, end: gone, close: gone });
      let offered = "";
      try {
        const sftp = await client.connect({
          host: this.opts.host,
          port: this.opts.port,
          username: this.opts.username,
          privateKey: this.opts.privateKey,
          passphrase: this.opts.passphrase,
          password: this.opts.password,
          readyTimeout: this.opts.timeoutMs ?? 20_000,
          keepaliveInterval: 5_000,
          keepaliveCountMax: 3,
          retries: 0,
          hostVerifier: (key: Buffer) => {
            offered = sshFingerprint(key);
            return offered === this.opts.hostKeySha256;
          },
        } as SftpClient.ConnectOptions);
        this.client = client;
        this.sftp = sftp;
        this.lost = lost;
        return sftp;
      } catch (err) {
        this.connecting = undefined;
        await client.end().catch(() => {});
        if (offered && offered !== this.opts.hostKeySha256) {
          throw new TargetError(`target ${this.name}: the server presented host key ${offered}, not the pinned ${this.opts.hostKeySha256}; refusing to connect`, {
            target: this.name,
          });
        }
        // A refused login carries no code, only ssh2's message (its level is lost in the client's wrapping).
        const why = /authentication methods failed/i.test((err as Error).message ?? "") ? "authentication failed: the server accepted none of the given credentials" : errCode(err);
        throw new TargetError(`target ${this.name}: cannot connect to ${this.opts.host}:${this.opts.port} (${why})`, { target: this.name });
      }
    })();
    return this.connecting;
  }

  private remote(key: string): string {
    return path.join(this.opts.path, checkKey(key));
  }

  private call<T>(fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> {
    return Promise.race([new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T)))), this.lost]);
  }

  private async mkdirs(dir: string) {
    if (!this.client) await this.conn();
    await Promise.race([this.client!.mkdir(dir, true), this.lost]);
  }

  private async writeAll(sftp: SFTPWrapper, remote: string, source: AsyncIterable<Buffer> | Buffer[]): Promise<number> {
    const handle = await this.call<Buffer>((cb) => sftp.open(remote, "wx", { mode: 0o600 }, cb));
    let position = 0;
    try {
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const flush = async () => {
        if (!pendingBytes) return;
        const buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
        await this.call<void>((cb) => sftp.write(handle, buf, 0, buf.length, position, (err) => cb(err)));
        position += buf.length;
      };
      for await (const chunk of source) {
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= WRITE_CHUNK) await flush();
      }
      await flush();
      await this.call<void>((cb) =>
        // fsync@openssh.com: the object is on the server's disk, not in its page cache, before we go on.
        (sftp as unknown as { ext_openssh_fsync?: SFTPWrapper["ext_openssh_fsync"] }).ext_openssh_fsync ? sftp.ext_openssh_fsync(handle, (err) => cb(err)) : cb(undefined),
      );
    } finally {
      await this.call<void>((cb) => sftp.close(handle, (err) => cb(err))).catch(() => {});
    }
    return position;
  }

  async putStream(key: string, body: Readable, _opts?: PutOptions): Promise<number> {
    const remote = this.remote(key);
    try {
      const sftp = await this.conn();
      await this.mkdirs(path.dirname(remote));
      return await this.writeAll(sftp, remote, body as AsyncIterable<Buffer>);
    } catch (err) {
      body.destroy();
      throw this.fail("write", key, err);
    }
  }

  async putOnce(key: string, data: Buffer, _opts?: PutOptions): Promise<void> {
    const remote = this.remote(key);
    const tmp = `${remote}.tmp-${randomBytes(6).toString("hex")}`;
    try {
      const sftp = await this.conn();
      await this.mkdirs(path.dirname(remote));
      await this.writeAll(sftp, tmp, [data]);
      // SSH_FXP_RENAME (not posix-rename) fails when the destination exists: write-once.
      await this.call<void>((cb) => sftp.rename(tmp, remote, (err) => cb(err)));
    } catch (err) {
      if (this.sftp) await this.call<void>((cb) => this.sftp!.unlink(tmp, (e) => cb(e))).catch(() => {});
      throw this.fail("write", key, err);
    }
  }

  async get(key: string): Promise<Readable> {
    const remote = this.remote(key);
    try {
      const sftp = await this.conn();
      await this.call((cb) => sftp.stat(remote, cb));
      return sftp.createReadStream(remote, { highWaterMark: 256 * 1024 }) as unknown as Readable;
    } catch (err) {
      throw this.fail("read", key, err);
    }
  }

  async list(prefix: string): Promise<TargetEntry[]> {
    const out: TargetEntry[] = [];
    const base = this.opts.path;
    try {
      await this.conn();
      const walk = async (dir: string) => {
        let entries: SftpClient.FileInfo[];
        try {
          entries = await Promise.race([this.client!.list(dir), this.lost]);
        } catch (err) {
          if (/No such file|ENOENT/i.test((err as Error).message) || (err as { code?: number | string }).code === 2) return;
          throw err;
        }
        for (const e of entries) {
          const p = path.join(dir, e.name);
          if (e.type === "d") await walk(p);
          else if (e.type === "-") out.push({ key: path.relative(base, p), size: e.size });
        }
      };
      await walk(prefix ? path.join(base, checkKey(prefix.replace(/\/$/, ""))) : base);
    } catch (err) {
      throw this.fail("list", prefix || "/", err);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  }

  async delete(key: string): Promise<void> {
    const remote = this.remote(key);
    try {
      const sftp = await this.conn();
      await this.call<void>((cb) => sftp.unlink(remote, (err) => cb(err))).catch((err: { code?: number }) => {
        if (err.code !== 2) throw err; // SSH_FX_NO_SUCH_FILE
      });
      let dir = path.dirname(remote);
      while (dir.startsWith(this.opts.path + "/")) {
        const ok = await this.call<void>((cb) => sftp.rmdir(dir, (err) => cb(err))).then(
          () => true,
          () => false,
        );
        if (!ok) break;
        dir = path.dirname(dir);
      }
    } catch (err) {
      throw this.fail("delete", key, err);
    }
  }

  async probeDeleteRefusal(key: string, retainUntil: Date): Promise<{ refused: boolean; detail: string }> {
    await this.putOnce(key, Buffer.from(`wardkeep WORM self-test, retain until ${retainUntil.toISOString()}\n`), { retainUntil });
    const sftp = await this.conn();
    try {
      await this.call<void>((cb) => sftp.unlink(this.remote(key), (err) => cb(err)));
      return { refused: false, detail: "the file was deleted: this SFTP directory is not write-once" };
    } catch (err) {
      return { refused: true, detail: `delete refused (${errCode(err)})` };
    }
  }

  async close(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    this.sftp = undefined;
    this.connecting = undefined;
    await c?.end().catch(() => {});
  }
}
