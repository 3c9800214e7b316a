import { PassThrough, pipeline, type Readable } from "node:stream";
import type { ObjectLockMode, S3Client } from "@aws-sdk/client-s3";
import { TargetError } from "../errors.js";
import { checkKey, errCode, type PutOptions, type SnapshotTarget, type TargetEntry } from "./target.js";

export type S3TargetOptions = {
  name: string;
  bucket: string;
  prefix?: string;
  region?: string;
  endpoint?: string;
  forcePathStyle?: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
  objectLock?: { mode: "GOVERNANCE" | "COMPLIANCE"; days: number };
  partSizeMiB?: number;
};

/**
 * The SDK loads on a target's first request, not with the module: it is most of what an unrelated
 * CLI command would otherwise spend starting up.
 */
let sdk: Promise<typeof import("@aws-sdk/client-s3") & typeof import("@aws-sdk/lib-storage")> | undefined;
const loadSdk = () => (sdk ??= Promise.all([import("@aws-sdk/client-s3"), import("@aws-sdk/lib-storage")]).then(([s3, storage]) => ({ ...s3, ...storage })));

/**
 * S3-compatible object storage through the AWS SDK v3. Large objects stream through a multipart
 * upload (lib-storage) holding about two parts in memory; catalog files are single PUTs with
 * `If-None-Match: *`, so a second writer cannot replace one. With Object Lock configured, every
 * object carries its retention (mode and retain-until date) from the moment it is written, as
 * SEC 17a-4-style WORM buckets require.
 */
export class S3Target implements SnapshotTarget {
  readonly kind = "s3" as const;
  readonly name: string;
  private client: S3Client | undefined;
  private readonly prefix: string;

  constructor(private readonly opts: S3TargetOptions) {
    this.name = opts.name;
    this.prefix = opts.prefix ?? "";
    // The SDK's notice about its future Node.js floor goes to stderr on every CLI run and would
    // break the CLI's one-line error contract; supported Node versions are ours to document.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  }

  /** The SDK and this target's client, both made on first use. */
  private async s3() {
    const api = await loadSdk();
    const opts = this.opts;
    this.client ??= new api.S3Client({
      region: opts.region ?? "us-east-1",
      endpoint: opts.endpoint,
      forcePathStyle: opts.forcePathStyle ?? false,
      credentials: opts.accessKeyId && opts.secretAccessKey ? { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } : undefined,
      // Many on-premises S3 servers do not speak the SDK's newer default (trailing CRC32 checksums
      // in aws-chunked bodies); object integrity is ours anyway (SHA-256 in the manifest, GCM tags).
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      maxAttempts: 3,
    });
    return { api, client: this.client };
  }

  describe(): string {
    return `s3://${this.opts.bucket}/${this.prefix}${this.opts.endpoint ? ` at ${this.opts.endpoint}` : ""}`;
  }

  private key(key: string): string {
    return this.prefix + checkKey(key);
  }

  private lock(opts?: PutOptions): { ObjectLockMode?: ObjectLockMode; ObjectLockRetainUntilDate?: Date } {
    if (!this.opts.objectLock) return {};
    const until = opts?.retainUntil ?? new Date(Date.now() + this.opts.objectLock.days * 86_400_000);
    return { ObjectLockMode: this.opts.objectLock.mode, ObjectLockRetainUntilDate: until };
  }

  private fail(op: string, key: string, err: unknown): Error {
    if (err instanceof TargetError) return err;
    const e = err as { $metadata?: unknown; syscall?: string; name?: string };
    if (e.$metadata === undefined && e.syscall === undefined && !/Timeout|Network|Abort/i.test(e.name ?? "")) return err as Error;
    return new TargetError(`target ${this.name}: ${op} ${key} failed: ${errCode(err)}`, { target: this.name, code: errCode(err) });
  }

  async putStream(key: string, body: Readable, opts?: PutOptions): Promise<number> {
    let bytes = 0;
    const counted = new PassThrough({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    const { api, client } = await this.s3();
    pipeline(body, counted, () => {});
    const upload = new api.Upload({
      client,
      params: { Bucket: this.opts.bucket, Key: this.key(key), Body: counted, ContentType: "application/octet-stream", ...this.lock(opts) },
      partSize: (this.opts.partSizeMiB ?? 8) * 1024 * 1024,
      queueSize: 2,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
      return bytes;
    } catch (err) {
      body.destroy();
      await upload.abort().catch(() => {});
      throw this.fail("write", key, err);
    }
  }

  async putOnce(key: string, data: Buffer, opts?: PutOptions): Promise<void> {
    try {
      const { api, client } = await this.s3();
      // If-None-Match makes the PUT itself conditional where the server supports it (AWS since
      // 2024, MinIO); the HEAD first also covers servers that ignore the header.
      const exists = await client.send(new api.HeadObjectCommand({ Bucket: this.opts.bucket, Key: this.key(key) })).then(
        () => true,
        (err: { $metadata?: { httpStatusCode?: number } }) => {
          if (err.$metadata?.httpStatusCode === 404) return false;
          throw err;
        },
      );
      if (exists) throw new TargetError(`target ${this.name}: ${key} already exists; catalog files are written once`, { target: this.name, code: "EEXIST" });
      await client.send(
        new api.PutObjectCommand({
          Bucket: this.opts.bucket,
          Key: this.key(key),
          Body: data,
          ContentType: key.endsWith(".json") ? "application/json" : "application/octet-stream",
          IfNoneMatch: "*",
          ...this.lock(opts),
        }),
      );
    } catch (err) {
      throw this.fail("write", key, err);
    }
  }

  async get(key: string): Promise<Readable> {
    try {
      const { api, client } = await this.s3();
      const out = await client.send(new api.GetObjectCommand({ Bucket: this.opts.bucket, Key: this.key(key) }));
      return out.Body as Readable;
    } catch (err) {
      throw this.fail("read", key, err);
    }
  }

  async list(prefix: string): Promise<TargetEntry[]> {
    const out: TargetEntry[] = [];
    let token: string | undefined;
    try {
      const { api, client } = await this.s3();
      do {
        const page = await client.send(new api.ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: this.prefix + prefix, ContinuationToken: token }));
        for (const o of page.Contents ?? []) {
          if (o.Key) out.push({ key: o.Key.slice(this.prefix.length), size: o.Size ?? 0 });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw this.fail("list", prefix || "/", err);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  }

  async delete(key: string): Promise<void> {
    try {
      const { api, client } = await this.s3();
      await client.send(new api.DeleteObjectCommand({ Bucket: this.opts.bucket, Key: this.key(key) }));
    } catch (err) {
      throw this.fail("delete", key, err);
    }
  }

  async probeDeleteRefusal(key: string, retainUntil: Date): Promise<{ refused: boolean; detail: string }> {
    let versionId: string | undefined;
    const { api, client } = await this.s3();
    try {
      const put = await client.send(
        new api.PutObjectCommand({ Bucket: this.opts.bucket, Key: this.key(key), Body: Buffer.from("wardkeep WORM self-test\n"), ...this.lock({ retainUntil }) }),
      );
      versionId = put.VersionId;
    } catch (err) {
      throw this.fail("write", key, err);
    }
    try {
      // A plain DELETE on a versioned bucket only adds a delete marker and "succeeds": the test
      // must try to destroy the exact version, which Object Lock refuses.
      await client.send(new api.DeleteObjectCommand({ Bucket: this.opts.bucket, Key: this.key(key), VersionId: versionId }));
      return {
        refused: false,
        detail: versionId
          ? "the locked object version was deleted: Object Lock is not in force"
          : "the bucket is not versioned, so it cannot be write-once (Object Lock needs versioning)",
      };
    } catch (err) {
      return { refused: true, detail: `delete refused (${errCode(err)})` };
    }
  }

  async close(): Promise<void> {
    this.client?.destroy();
  }
}
