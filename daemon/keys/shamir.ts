/**
 * Shamir k-of-n splitting of a secret (the KEK for custodian unseal, or the recovery private key)
 * into shares that people can print, read aloud and type back.
 *
 * The arithmetic is the audited `shamir-secret-sharing` library (GF(2^8), one random polynomial
 * per byte; each share is the y values followed by its x coordinate). This module only adds the
 * human encoding and the checks that make mistakes fail clearly:
 *
 *   wks1-<threshold>-<index>-<split id>-<base32 share bytes in groups of 4>-<checksum>
 *   e.g. wks1-3-2-K7QD-MFRG-GZDF-...-QA-9F3A
 *
 * - threshold: k, so combining can say "need 3 shares, got 2" before doing any maths.
 * - index: 1..n, the label custodians see ("share 2"); the x coordinate stays inside the bytes.
 * - split id: 4 random base32 characters shared by every share of one split, so shares of two
 *   different splits (an old and a new ceremony) are refused instead of silently combining into
 *   garbage.
 * - share bytes: RFC 4648 base32 without padding, upper case; input is case-insensitive and
 *   whitespace is ignored, as shares are often typed from paper.
 * - checksum: first 4 hex digits of SHA-256 over "wks1-<t>-<i>-<split id>-" and the share bytes,
 *   so a typo anywhere (including the header) is caught per share, naming that share.
 *
 * What this cannot catch: k well-formed shares of the same split where one was altered *and* its
 * checksum recomputed (or a 1-in-65536 typo that passes the checksum) interpolate to a wrong secret
 * without any error — Shamir's scheme has no integrity of its own. The caller must verify the
 * result, e.g. the KEK's stored check value, before using it.
 */
import { createHash, randomBytes } from "node:crypto";
import { combine, split } from "shamir-secret-sharing";
import { zeroize } from "./primitives.js";

export class ShamirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ShamirError";
  }
}

const PREFIX = "wks1";
const MAX_SHARES = 255; // x coordinates are the non-zero elements of GF(2^8)
const SPLIT_ID_CHARS = 4;
const CHECKSUM_HEX = 4;
const GROUP = 4;

// RFC 4648 §6 alphabet.
const BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32Encode(bytes: Uint8Array): string {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = ((buffer << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32_ALPHABET[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32_ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

/** Returns null for anything that is not canonical unpadded base32 (bad length or stray bits). */
function base32Decode(text: string): Buffer | null {
  // RFC 4648 §6: unpadded lengths mod 8 of 1, 3 and 6 cannot come from whole bytes.
  if ([1, 3, 6].includes(text.length % 8)) return null;
  const out: number[] = [];
  let buffer = 0;
  let bits = 0;
  for (const ch of text) {
    const v = BASE32_ALPHABET.indexOf(ch);
    if (v < 0) return null;
    buffer = ((buffer << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((buffer >> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  // Leftover bits must be zero, otherwise two spellings would decode to the same bytes.
  if (bits > 0 && (buffer & ((1 << bits) - 1)) !== 0) return null;
  return Buffer.from(out);
}

function group(text: string): string {
  return text.match(new RegExp(`.{1,${GROUP}}`, "g"))?.join("-") ?? "";
}

function checksum(threshold: number, index: number, splitId: string, shareBytes: Uint8Array): string {
  return createHash("sha256").update(`${PREFIX}-${threshold}-${index}-${splitId}-`).update(shareBytes).digest("hex").slice(0, CHECKSUM_HEX).toUpperCase();
}

function checkParameters(shares: number, threshold: number): void {
  if (!Number.isInteger(shares) || !Number.isInteger(threshold)) {
    throw new ShamirError("shares and threshold must be integers");
  }
  // A threshold of 1 would make every share the secret itself.
  if (threshold < 2) throw new ShamirError(`threshold must be at least 2, got ${threshold}`);
  if (shares < threshold) {
    throw new ShamirError(`shares (${shares}) must be at least the threshold (${threshold})`);
  }
  if (shares > MAX_SHARES) throw new ShamirError(`at most ${MAX_SHARES} shares, got ${shares}`);
}

/** Splits `secret` into `shares` printable shares, any `threshold` of which recover it. */
export async function splitSecret(secret: Buffer, shares: number, threshold: number): Promise<string[]> {
  checkParameters(shares, threshold);
  if (!Buffer.isBuffer(secret) || secret.length === 0) {
    throw new ShamirError("secret must be a non-empty Buffer");
  }
  const splitId = base32Encode(randomBytes(3)).slice(0, SPLIT_ID_CHARS);
  // The library insists on a plain Uint8Array (it checks the constructor), so pass a copy and
  // wipe it afterwards.
  const copy = new Uint8Array(secret);
  let raw: Uint8Array[];
  try {
    raw = await split(copy, shares, threshold);
  } finally {
    copy.fill(0);
  }
  return raw.map((bytes, i) => {
    const index = i + 1;
    const text = `${PREFIX}-${threshold}-${index}-${splitId}-${group(base32Encode(bytes))}-${checksum(threshold, index, splitId, bytes)}`;
    bytes.fill(0);
    return text;
  });
}

type ParsedShare = {
  position: number; // 1-based position in the caller's list, for messages
  label: string; // "wks1-3-2-K7QD": identifies the share without revealing share bytes
  threshold: number;
  index: number;
  splitId: string;
  bytes: Buffer;
};

function describe(position: number, label: string | undefined): string {
  return label ? `share #${position} (${label}…)` : `share #${position}`;
}

/**
 * Error messages name a share by its position and public header only: the share bytes are secret
 * material and must not end up in logs.
 */
function parseShare(input: string, position: number): ParsedShare {
  if (typeof input !== "string") throw new ShamirError(`${describe(position, undefined)} is not text`);
  const text = input.replace(/\s+/g, "").toUpperCase();
  const parts = text.split("-").filter((p) => p.length > 0);
  const [prefix, t, i, splitId] = parts;
  if (prefix !== PREFIX.toUpperCase() || parts.length < 6) {
    throw new ShamirError(`${describe(position, undefined)} is malformed: expected "${PREFIX}-<threshold>-<index>-<split id>-…-<checksum>"`);
  }
  const label = `${PREFIX}-${t}-${i}-${splitId}`;
  const where = describe(position, label);
  if (!/^\d{1,3}$/.test(t!) || !/^\d{1,3}$/.test(i!)) {
    throw new ShamirError(`${where} is malformed: threshold and index must be numbers`);
  }
  const threshold = Number(t);
  const index = Number(i);
  if (threshold < 2 || threshold > MAX_SHARES || index < 1 || index > MAX_SHARES) {
    throw new ShamirError(`${where} is malformed: threshold or index out of range`);
  }
  if (!new RegExp(`^[${BASE32_ALPHABET}]{${SPLIT_ID_CHARS}}$`).test(splitId!)) {
    throw new ShamirError(`${where} is malformed: split id must be ${SPLIT_ID_CHARS} base32 characters`);
  }
  const check = parts[parts.length - 1]!;
  const body = parts.slice(4, -1).join("");
  const bytes = base32Decode(body);
  if (!bytes) {
    const hint = /[0189]/.test(body) ? " (0, 1, 8 and 9 are not base32: did you mean O, I or B?)" : "";
    throw new ShamirError(`${where} is malformed: its body is not valid base32${hint}; check it was typed correctly`);
  }
  // Library shares are the secret bytes plus a 1-byte x coordinate.
  if (bytes.length < 2) throw new ShamirError(`${where} is malformed: too short`);
  if (check !== checksum(threshold, index, splitId!, bytes)) {
    zeroize(bytes);
    throw new ShamirError(`${where} has a wrong checksum: it was mistyped or damaged; check it was typed correctly`);
  }
  return { position, label, threshold, index, splitId: splitId!, bytes };
}

/**
 * Recovers the secret from at least `threshold` shares of one split. Verify the result against a
 * stored check value: k altered-but-well-formed shares of the same split yield a wrong secret.
 */
export async function combineShares(shares: string[]): Promise<Buffer> {
  if (!Array.isArray(shares)) throw new ShamirError("shares must be a list");
  const parsed: ParsedShare[] = [];
  const copies: Uint8Array[] = [];
  try {
    shares.forEach((s, i) => parsed.push(parseShare(s, i + 1)));
    const first = parsed[0];
    if (!first) throw new ShamirError("need at least 2 shares, got 0");

    const splitIds = [...new Set(parsed.map((p) => p.splitId))];
    if (splitIds.length > 1) {
      throw new ShamirError(`shares come from different splits (${splitIds.join(", ")}): combine shares of one split only`);
    }
    const mismatch = parsed.find((p) => p.threshold !== first.threshold || p.bytes.length !== first.bytes.length);
    if (mismatch) {
      throw new ShamirError(`${describe(mismatch.position, mismatch.label)} does not match ${describe(first.position, first.label)}`);
    }

    const seenIndex = new Map<number, ParsedShare>();
    const seenX = new Map<number, ParsedShare>();
    for (const p of parsed) {
      const x = p.bytes[p.bytes.length - 1]!;
      const dup = seenIndex.get(p.index) ?? seenX.get(x);
      if (dup) {
        throw new ShamirError(`${describe(p.position, p.label)} duplicates ${describe(dup.position, dup.label)}: each share can be used once`);
      }
      seenIndex.set(p.index, p);
      seenX.set(x, p);
    }

    if (parsed.length < first.threshold) {
      throw new ShamirError(`need ${first.threshold} shares, got ${parsed.length}`);
    }

    // Plain Uint8Array copies: the library rejects Buffer (it checks the constructor).
    for (const p of parsed) copies.push(new Uint8Array(p.bytes));
    const secret = await combine(copies);
    const out = Buffer.from(secret);
    secret.fill(0);
    return out;
  } finally {
    for (const p of parsed) zeroize(p.bytes);
    for (const c of copies) c.fill(0);
  }
}

/**
 * Checks one share on its own (format and checksum) and returns its public header, so shares can
 * be collected one at a time from different custodians (unseal progress) and a mistyped share is
 * refused when it is entered, not after the last custodian has typed theirs.
 */
export function describeShare(share: string): { label: string; threshold: number; index: number; splitId: string } {
  const parsed = parseShare(share, 1);
  zeroize(parsed.bytes);
  return { label: parsed.label, threshold: parsed.threshold, index: parsed.index, splitId: parsed.splitId };
}
