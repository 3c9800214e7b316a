/**
 * Segmented authenticated encryption for snapshot objects, after Tink's AES-GCM-HKDF streaming
 * AEAD (https://developers.google.com/tink/streaming-aead): a stream is cut into fixed-size
 * segments, each sealed with AES-256-GCM under a per-object key, so an object of any size is
 * encrypted and checked with bounded memory, and a restore never acts on unauthenticated bytes
 * beyond one segment.
 *
 *   header  = "WKSTRM01" (8) || segment size, uint32 BE (4) || salt (32) || nonce prefix (7)
 *             || snapshot key id (8)                                              = 59 bytes
 *   key     = HKDF-SHA256(ikm = snapshot key, salt, info = "wardkeep-backup/segment-key/v1" 0x00 AD)
 *   nonce_i = nonce prefix (7) || i, uint32 BE (4) || last-segment flag (1: 0x00 or 0x01)
 *   seg_i   = AES-256-GCM(key, nonce_i, plaintext_i, aad = header) -> ciphertext_i || tag_i (16)
 *
 * Every segment holds exactly `segment size` plaintext bytes except the last, which holds
 * 0..segment size (an empty stream is one empty last segment). What this defends against:
 * - a flipped bit anywhere: the GCM tag of that segment fails (the header is in every AAD);
 * - reordered or duplicated segments: the counter is in the nonce;
 * - truncation, even at a segment boundary: the new final segment was sealed with flag 0x00;
 * - appended data: a sealed last segment followed by more bytes is refused;
 * - a segment or a whole object moved from another object or snapshot: the key is bound to
 *   AD = "<snapshot id>/<object name>" and to a fresh random salt.
 * backup/FORMAT.md documents the same bytes for tools outside Wardkeep.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { SnapshotIntegrityError, SnapshotKeyError } from "./errors.js";

export const STREAM_MAGIC = Buffer.from("WKSTRM01", "ascii");
export const HEADER_BYTES = 8 + 4 + 32 + 7 + 8;
export const TAG_BYTES = 16;
export const DEFAULT_SEGMENT_BYTES = 1 << 20;
const MIN_SEGMENT = 4096;
const MAX_SEGMENT = 16 << 20;
const SEGMENT_INFO = Buffer.from("wardkeep-backup/segment-key/v1\u0000", "utf8");
const KEY_ID_LABEL = "wardkeep-backup/key-id/v1";
/** 2^32 segments: the counter field of the nonce. */
const MAX_SEGMENTS = 0x1_0000_0000;

/** A short public name of a snapshot key: HMAC is a PRF, so it says nothing about the key. */
export function snapshotKeyId(key: Buffer): Buffer {
  return createHmac("sha256", key).update(KEY_ID_LABEL).digest().subarray(0, 8);
}

function segmentKey(key: Buffer, salt: Buffer, associatedData: string): Buffer {
  if (key.length !== 32) throw new RangeError("the snapshot key must be 32 bytes");
  return Buffer.from(hkdfSync("sha256", key, salt, Buffer.concat([SEGMENT_INFO, Buffer.from(associatedData, "utf8")]), 32));
}

function nonceFor(prefix: Buffer, index: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  prefix.copy(nonce, 0);
  nonce.writeUInt32BE(index, 7);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** Takes `n` bytes off the front of a chunk list (concatenating only what it must). */
class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;
  push(chunk: Buffer) {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }
  take(n: number): Buffer {
    if (n > this.length) throw new RangeError("not enough bytes queued");
    let out: Buffer;
    const first = this.chunks[0];
    if (first && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks, this.length);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.length -= n;
    return out;
  }
  takeAll(): Buffer {
    return this.take(this.length);
  }
}

export type StreamStats = { segments: number; plainBytes: number; cipherBytes: number; cryptoMs: number };

/** Encrypts a byte stream. `associatedData` names the object ("<snapshot id>/<object name>"). */
export class SegmentEncryptStream extends Transform {
  readonly stats: StreamStats = { segments: 0, plainBytes: 0, cipherBytes: 0, cryptoMs: 0 };
  private readonly header: Buffer;
  private readonly key: Buffer;
  private readonly prefix: Buffer;
  private readonly queue = new ByteQueue();
  private index = 0;

  constructor(
    snapshotKey: Buffer,
    associatedData: string,
    readonly segmentBytes = DEFAULT_SEGMENT_BYTES,
  ) {
    super();
    if (!Number.isInteger(segmentBytes) || segmentBytes < MIN_SEGMENT || segmentBytes > MAX_SEGMENT) {
      throw new RangeError(`segment size must be ${MIN_SEGMENT}..${MAX_SEGMENT} bytes`);
    }
    const salt = randomBytes(32);
    this.prefix = randomBytes(7);
    const size = Buffer.alloc(4);
    size.writeUInt32BE(segmentBytes);
    this.header = Buffer.concat([STREAM_MAGIC, size, salt, this.prefix, snapshotKeyId(snapshotKey)]);
    this.key = segmentKey(snapshotKey, salt, associatedData);
    this.push(this.header);
    this.stats.cipherBytes += this.header.length;
  }

  private seal(plain: Buffer, last: boolean) {
    if (this.index >= MAX_SEGMENTS) throw new RangeError("object too large for one stream (2^32 segments)");
    const started = performance.now();
    const cipher = createCipheriv("aes-256-gcm", this.key, nonceFor(this.prefix, this.index, last), { authTagLength: TAG_BYTES });
    cipher.setAAD(this.header);
    const body = cipher.update(plain);
    cipher.final();
    const out = Buffer.concat([body, cipher.getAuthTag()]);
    this.stats.cryptoMs += performance.now() - started;
    this.index += 1;
    this.stats.segments += 1;
    this.stats.plainBytes += plain.length;
    this.stats.cipherBytes += out.length;
    this.push(out);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
    try {
      this.queue.push(chunk);
      // Strictly greater: the bytes of the last segment are only sealed once the end is known.
      while (this.queue.length > this.segmentBytes) this.seal(this.queue.take(this.segmentBytes), false);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback) {
    try {
      this.seal(this.queue.takeAll(), true);
      this.key.fill(0);
      done();
    } catch (err) {
      done(err as Error);
    }
  }
}

export type ParsedHeader = { segmentBytes: number; salt: Buffer; noncePrefix: Buffer; keyId: Buffer };

export function parseStreamHeader(header: Buffer): ParsedHeader {
  if (header.length < HEADER_BYTES || !header.subarray(0, 8).equals(STREAM_MAGIC)) {
    throw new SnapshotIntegrityError("not a Wardkeep snapshot object (bad header)");
  }
  const segmentBytes = header.readUInt32BE(8);
  if (segmentBytes < MIN_SEGMENT || segmentBytes > MAX_SEGMENT) throw new SnapshotIntegrityError("snapshot object header names an impossible segment size");
  return { segmentBytes, salt: header.subarray(12, 44), noncePrefix: header.subarray(44, 51), keyId: header.subarray(51, 59) };
}

/**
 * Decrypts and authenticates a stream made by SegmentEncryptStream. Emits only authenticated
 * plaintext, segment by segment; fails with SnapshotIntegrityError naming the object and the
 * segment, or SnapshotKeyError when the object was sealed under another snapshot key.
 */
export class SegmentDecryptStream extends Transform {
  readonly stats: StreamStats = { segments: 0, plainBytes: 0, cipherBytes: 0, cryptoMs: 0 };
  private readonly queue = new ByteQueue();
  private header: Buffer | undefined;
  private parsed: ParsedHeader | undefined;
  private key: Buffer | undefined;
  private index = 0;

  /**
   * `keyIsAuthentic`: the key already opened this snapshot's manifest, so an object sealed under
   * another key was moved in from elsewhere — tampering, not a wrong key.
   */
  constructor(
    private readonly snapshotKey: Buffer,
    private readonly associatedData: string,
    private readonly keyIsAuthentic = false,
  ) {
    super();
  }

  private fail(what: string): SnapshotIntegrityError {
    return new SnapshotIntegrityError(`${this.associatedData}: ${what}`, { object: this.associatedData, segment: this.index });
  }

  private open(segment: Buffer, last: boolean): Buffer {
    const p = this.parsed!;
    if (this.index >= MAX_SEGMENTS) throw this.fail("too many segments");
    const started = performance.now();
    const body = segment.subarray(0, segment.length - TAG_BYTES);
    const tag = segment.subarray(segment.length - TAG_BYTES);
    let plain: Buffer;
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.key!, nonceFor(p.noncePrefix, this.index, last), { authTagLength: TAG_BYTES });
      decipher.setAAD(this.header!);
      decipher.setAuthTag(tag);
      plain = decipher.update(body);
      decipher.final();
    } catch {
      throw this.fail(
        last
          ? `segment ${this.index} failed authentication (tampered, reordered, or the object was truncated)`
          : `segment ${this.index} failed authentication (tampered or reordered)`,
      );
    }
    this.stats.cryptoMs += performance.now() - started;
    this.index += 1;
    this.stats.segments += 1;
    this.stats.plainBytes += plain.length;
    return plain;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
    try {
      this.stats.cipherBytes += chunk.length;
      this.queue.push(chunk);
      if (!this.header) {
        if (this.queue.length < HEADER_BYTES) return done();
        this.header = Buffer.from(this.queue.take(HEADER_BYTES));
        this.parsed = parseStreamHeader(this.header);
        const expected = snapshotKeyId(this.snapshotKey);
        if (!expected.equals(this.parsed.keyId)) {
          if (this.keyIsAuthentic) throw this.fail("belongs to another snapshot (sealed under another snapshot key)");
          throw new SnapshotKeyError(
            `${this.associatedData} was sealed under snapshot key ${this.parsed.keyId.toString("hex")}, not the key supplied (${expected.toString("hex")})`,
          );
        }
        this.key = segmentKey(this.snapshotKey, this.parsed.salt, this.associatedData);
      }
      const full = this.parsed!.segmentBytes + TAG_BYTES;
      // Strictly greater: a segment is known not to be the last only when more bytes follow it.
      while (this.queue.length > full) this.push(this.open(this.queue.take(full), false));
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback) {
    try {
      if (!this.header) throw this.fail("truncated before the end of its header");
      if (this.queue.length < TAG_BYTES) throw this.fail(`truncated: segment ${this.index} is incomplete`);
      this.push(this.open(this.queue.takeAll(), true));
      this.key?.fill(0);
      done();
    } catch (err) {
      done(err as Error);
    }
  }
}
