import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { SnapshotIntegrityError, SnapshotKeyError } from "../../../backup/errors.js";
import { HEADER_BYTES, SegmentDecryptStream, SegmentEncryptStream, TAG_BYTES } from "../../../backup/stream-aead.js";

const SEG = 4096;
const key = randomBytes(32);
const AD = "20250101T000000Z-00000000/0001-public.users";

async function seal(plain: Buffer, k = key, ad = AD): Promise<Buffer> {
  const enc = new SegmentEncryptStream(k, ad, SEG);
  const [out] = await Promise.all([buffer(enc), pipeline(Readable.from([plain.subarray(0, 1000), plain.subarray(1000)]), enc)]);
  return out;
}

async function open(sealed: Buffer, k = key, ad = AD, authentic = false): Promise<Buffer> {
  const dec = new SegmentDecryptStream(k, ad, authentic);
  // Odd chunk sizes: segment boundaries must not depend on how the bytes arrive.
  const chunks: Buffer[] = [];
  for (let i = 0; i < sealed.length; i += 777) chunks.push(sealed.subarray(i, i + 777));
  const [out] = await Promise.all([buffer(dec), pipeline(Readable.from(chunks), dec)]);
  return out;
}

const segmentAt = (sealed: Buffer, i: number) => HEADER_BYTES + i * (SEG + TAG_BYTES);

describe("segmented AES-256-GCM stream", () => {
  it("round-trips empty, short, exact-multiple and multi-segment streams", async () => {
    for (const n of [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 5 * SEG + 17]) {
      const plain = randomBytes(n);
      const sealed = await seal(plain);
      const segments = Math.max(1, Math.ceil(n / SEG));
      expect(sealed.length).toBe(HEADER_BYTES + n + segments * TAG_BYTES);
      expect((await open(sealed)).equals(plain)).toBe(true);
    }
  });

  it("detects a flipped bit in any segment, the header and the tag", async () => {
    const sealed = await seal(randomBytes(3 * SEG + 100));
    for (const at of [10, 50, segmentAt(sealed, 0) + 5, segmentAt(sealed, 1) + SEG + 3, sealed.length - 1]) {
      const bad = Buffer.from(sealed);
      bad[at]! ^= 0x01;
      await expect(open(bad), `offset ${at}`).rejects.toThrow(at < 8 ? /bad header/ : /failed authentication|another snapshot key|impossible segment/);
    }
  });

  it("detects truncation at a segment boundary, inside a segment and of the header", async () => {
    const sealed = await seal(randomBytes(3 * SEG + 100));
    await expect(open(sealed.subarray(0, segmentAt(sealed, 2)))).rejects.toThrow(/segment 1 failed authentication .*truncated/);
    await expect(open(sealed.subarray(0, segmentAt(sealed, 2) + 100))).rejects.toBeInstanceOf(SnapshotIntegrityError);
    await expect(open(sealed.subarray(0, 30))).rejects.toThrow(/header/);
  });

  it("detects reordered and duplicated segments", async () => {
    const sealed = await seal(randomBytes(4 * SEG));
    const seg = (i: number) => sealed.subarray(segmentAt(sealed, i), segmentAt(sealed, i + 1));
    const header = sealed.subarray(0, HEADER_BYTES);
    const last = sealed.subarray(segmentAt(sealed, 3));
    await expect(open(Buffer.concat([header, seg(1), seg(0), seg(2), last]))).rejects.toThrow(/segment 0 failed authentication/);
    await expect(open(Buffer.concat([header, seg(0), seg(0), seg(1), seg(2), last]))).rejects.toThrow(/segment 1 failed authentication/);
  });

  it("refuses bytes appended after the last segment", async () => {
    const sealed = await seal(randomBytes(2 * SEG + 10));
    await expect(open(Buffer.concat([sealed, randomBytes(SEG + TAG_BYTES + 5)]))).rejects.toBeInstanceOf(SnapshotIntegrityError);
  });

  it("binds an object to its snapshot and name: moved objects fail", async () => {
    const sealed = await seal(randomBytes(SEG + 5));
    await expect(open(sealed, key, "20250101T000000Z-00000000/0002-public.tenants")).rejects.toThrow(/segment 0 failed authentication/);
  });

  it("says clearly when the key is not the one the object was sealed under", async () => {
    const sealed = await seal(randomBytes(100));
    const err = await open(sealed, randomBytes(32)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SnapshotKeyError);
    expect((err as Error).message).toMatch(/was sealed under snapshot key [0-9a-f]{16}, not the key supplied/);
    // With a key that already authenticated the manifest, a foreign object is tampering.
    await expect(open(sealed, randomBytes(32), AD, true)).rejects.toThrow(/belongs to another snapshot/);
  });

  it("uses a fresh salt and nonce prefix for every stream", async () => {
    const plain = randomBytes(100);
    const [a, b] = [await seal(plain), await seal(plain)];
    expect(a.subarray(12, 51).equals(b.subarray(12, 51))).toBe(false);
    expect(a.subarray(HEADER_BYTES).equals(b.subarray(HEADER_BYTES))).toBe(false);
  });
});
