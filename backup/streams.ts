import { createHash, type Hash } from "node:crypto";
import { once } from "node:events";
import { PassThrough, Transform, type Readable, type TransformCallback } from "node:stream";

/**
 * Digest in stream (pgBackRest computes checksums as it copies, never in a second pass): SHA-256
 * and byte count of what passes, and optionally the number of COPY text rows (every row of
 * PostgreSQL's COPY text format ends with exactly one newline; newlines inside values are
 * escaped as \n).
 */
export class DigestStream extends Transform {
  private readonly hash: Hash = createHash("sha256");
  bytes = 0;
  rows = 0;
  cpuMs = 0;
  private digestHex: string | undefined;

  constructor(
    private readonly countRows = false,
    private readonly onBytes?: (n: number) => void,
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
    const started = performance.now();
    this.hash.update(chunk);
    this.bytes += chunk.length;
    if (this.countRows) {
      let i = chunk.indexOf(10);
      while (i !== -1) {
        this.rows += 1;
        i = chunk.indexOf(10, i + 1);
      }
    }
    this.cpuMs += performance.now() - started;
    this.onBytes?.(chunk.length);
    done(null, chunk);
  }

  override _flush(done: TransformCallback) {
    this.digestHex = this.hash.digest("hex");
    done();
  }

  get sha256(): string {
    if (!this.digestHex) throw new Error("digest read before the stream ended");
    return this.digestHex;
  }
}

export type SinkResult = { name: string; ok: true; bytes: number } | { name: string; ok: false; error: Error };

/**
 * Writes one stream to several targets at once (NAS and off-site in one pass over the database),
 * at the pace of the slowest: each chunk waits until every live sink has taken it, so memory stays
 * bounded. A sink that fails is dropped and the others go on; the source failing fails them all.
 */
export async function fanOut(source: AsyncIterable<Buffer>, sinks: { name: string; write: (body: Readable) => Promise<number> }[]): Promise<SinkResult[]> {
  const outs = sinks.map((s) => {
    const body = new PassThrough({ highWaterMark: 1 << 20 });
    // A failing source destroys every body with its error, maybe before a sink has started reading
    // (an SFTP sink still connecting): the sink sees it through `settled`; unheard, it would crash the process.
    body.on("error", () => {});
    const state = { name: s.name, body, failed: undefined as Error | undefined, done: false };
    const settled = s.write(body).then(
      (bytes) => {
        state.done = true;
        return { name: s.name, ok: true as const, bytes };
      },
      (error: Error) => {
        state.failed = error;
        body.destroy();
        return { name: s.name, ok: false as const, error };
      },
    );
    return { ...state, state, settled };
  });
  const alive = () => outs.filter((o) => !o.state.failed);
  try {
    for await (const chunk of source) {
      if (alive().length === 0) break;
      await Promise.all(
        alive().map(async (o) => {
          if (o.body.write(chunk)) return;
          // Drain, or the sink gave up (it will never drain then).
          await Promise.race([once(o.body, "drain").catch(() => {}), o.settled]);
        }),
      );
    }
  } catch (err) {
    for (const o of outs) o.body.destroy(err as Error);
    await Promise.allSettled(outs.map((o) => o.settled));
    throw err;
  }
  for (const o of alive()) o.body.end();
  return Promise.all(outs.map((o) => o.settled));
}
