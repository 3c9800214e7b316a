/**
 * Field-level encryption for PHI columns (DESIGN.md "Field encryption").
 *
 * Ciphertext format, version 1 (all integers big-endian):
 *
 *   offset      size  field
 *   0           1     format version = 1
 *   1           4     key version (uint32)
 *   5           1     key id length L, 1..255
 *   6           L     key id, UTF-8
 *   6+L         12    nonce, fresh from the CSPRNG for every encryption
 *   18+L        n     AES-256-GCM ciphertext (same length as the plaintext)
 *   18+L+n      16    GCM tag
 *
 * The key id is stored in full (length-prefixed) rather than as a digest so the key store can be
 * queried by (id, version) directly, with no reverse index. Key ids are opaque identifiers (for
 * example `tenant:<uuid>` or `patient:<uuid>`) and must never contain PHI, because they are
 * readable without the key.
 *
 * AAD = "wardkeep/field/v1" || header (bytes 0..6+L) || u32 len || tenantId || u32 len || table
 *       || u32 len || column || u32 len || rowId   (each string UTF-8)
 *
 * Binding the header means a key version or key id cannot be swapped without detection; binding the
 * length-prefixed context means a ciphertext copied to another row, column, table or tenant fails
 * to authenticate (and "ab"+"c" cannot collide with "a"+"bc").
 */
import { randomFillSync } from "node:crypto";
import { AES_256_KEY_BYTES, DecryptionError, GCM_NONCE_BYTES, GCM_TAG_BYTES, aesGcmDecrypt, aesGcmEncrypt, hmacSha256 } from "./primitives.js";

export { DecryptionError } from "./primitives.js";

export type FieldContext = {
  tenantId: string;
  table: string;
  column: string;
  rowId: string;
};

/** A data-encryption key: `id` names the DEK (tenant or patient key), `version` its rotation. */
export type DataKey = { id: string; version: number; key: Buffer };

/**
 * Finds the DEK named in a ciphertext header; returns undefined/null when that version is not
 * available (never created, or destroyed by crypto-shredding).
 */
export type DataKeyLookup = (keyId: string, version: number) => DataKey | undefined | null;

export type FieldHeader = {
  formatVersion: number;
  keyId: string;
  keyVersion: number;
};

export const FIELD_FORMAT_VERSION = 1;
const MAX_KEY_VERSION = 0xffff_ffff;
const MAX_KEY_ID_BYTES = 255;
const AAD_LABEL = Buffer.from("wardkeep/field/v1", "utf8");
const BLIND_INDEX_LABEL = Buffer.from("wardkeep/blind-index/v1", "utf8");
/** format version + key version + key id length byte. */
const FIXED_HEADER_BYTES = 6;
const MIN_FIELD_BYTES = FIXED_HEADER_BYTES + 1 + GCM_NONCE_BYTES + GCM_TAG_BYTES;

/**
 * The stored value cannot be parsed (truncated, unknown format). A subclass of DecryptionError so
 * that "anything wrong with stored ciphertext" can be caught in one place.
 */
export class FieldFormatError extends DecryptionError {
  constructor(message: string) {
    super(message);
    this.name = "FieldFormatError";
  }
}

/**
 * The key named by the header is not available. Distinct from DecryptionError: this is not tamper
 * evidence but a missing (possibly crypto-shredded) key, and callers answer it differently.
 */
export class UnknownKeyVersionError extends Error {
  constructor(
    readonly keyId: string,
    readonly keyVersion: number,
    detail = "it was never created, has not been loaded, or has been destroyed (crypto-shredded)",
  ) {
    super(`no data key "${keyId}" version ${keyVersion}: ${detail}`);
    this.name = "UnknownKeyVersionError";
  }
}

// Lone surrogates would be silently turned into U+FFFD by UTF-8 encoding (two different strings,
// one encoding). String.prototype.isWellFormed (ES2024, V8 11.3) finds them without a regex scan.
const isWellFormed = (value: string): boolean => (value as unknown as { isWellFormed(): boolean }).isWellFormed();

function checkString(name: string, value: string): void {
  if (typeof value !== "string") throw new TypeError(`${name} must be a string`);
  if (!isWellFormed(value)) throw new RangeError(`${name} is not well-formed Unicode`);
}

function utf8(name: string, value: string): Buffer {
  checkString(name, value);
  return Buffer.from(value, "utf8");
}

/**
 * Writes `prefix` then each part as u32 length || UTF-8 bytes into one buffer (no intermediate
 * copies: this runs twice per field value).
 */
function lengthPrefixed(parts: Array<[string, string]>, prefix?: Buffer, header?: Buffer): Buffer {
  let total = (prefix?.length ?? 0) + (header?.length ?? 0);
  const lengths: number[] = [];
  for (const [name, value] of parts) {
    checkString(name, value);
    const n = Buffer.byteLength(value, "utf8");
    // An empty component is almost always a caller bug (unset row id), and would bind the
    // ciphertext to nothing in particular.
    if (n === 0) throw new RangeError(`${name} must not be empty`);
    lengths.push(n);
    total += 4 + n;
  }
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  if (prefix) at += prefix.copy(out, at);
  if (header) at += header.copy(out, at);
  for (let i = 0; i < parts.length; i++) {
    at = out.writeUInt32BE(lengths[i]!, at);
    at += out.write(parts[i]![1], at, "utf8");
  }
  return out;
}

/**
 * AAD = label || header || length-prefixed tenant, table, column || length-prefixed row id. The
 * part before the row id repeats for every value of a column under one key version, so it is
 * encoded once per cached header (bounded) and only the row id is encoded per value.
 */
const aadPrefixes = new WeakMap<Buffer, Map<string, Buffer>>();
const AAD_PREFIXES_PER_HEADER = 1024;

function fieldAad(header: Buffer, context: FieldContext, headerIsCached: boolean): Buffer {
  const { tenantId, table, column, rowId } = context;
  let prefixes = headerIsCached ? aadPrefixes.get(header) : undefined;
  const slot = `${tenantId}\u0000${table}\u0000${column}`;
  let prefix = prefixes?.get(slot);
  if (!prefix) {
    prefix = lengthPrefixed(
      [
        ["tenantId", tenantId],
        ["table", table],
        ["column", column],
      ],
      AAD_LABEL,
      header,
    );
    if (headerIsCached) {
      if (!prefixes) aadPrefixes.set(header, (prefixes = new Map()));
      if (prefixes.size >= AAD_PREFIXES_PER_HEADER) prefixes.clear();
      prefixes.set(slot, prefix);
    }
  }
  return lengthPrefixed([["rowId", rowId]], prefix);
}

function checkDataKey(dek: DataKey): Buffer {
  const id = utf8("data key id", dek.id);
  return checkDataKeyParts(dek, id);
}

function checkDataKeyParts(dek: DataKey, id: Buffer): Buffer {
  if (id.length < 1 || id.length > MAX_KEY_ID_BYTES) {
    throw new RangeError(`data key id must be 1..${MAX_KEY_ID_BYTES} UTF-8 bytes, got ${id.length}`);
  }
  if (!Number.isInteger(dek.version) || dek.version < 0 || dek.version > MAX_KEY_VERSION) {
    throw new RangeError(`data key version must be an integer 0..${MAX_KEY_VERSION}, got ${dek.version}`);
  }
  if (!Buffer.isBuffer(dek.key) || dek.key.length !== AES_256_KEY_BYTES) {
    throw new RangeError(`data key must be ${AES_256_KEY_BYTES} bytes`);
  }
  return id;
}

/**
 * Encoded headers by key id and version: the same few keys encrypt most values, and the header
 * (with its checked UTF-8 key id) is immutable. Bounded; cleared when full.
 */
const headerCache = new Map<string, Buffer>();
const HEADER_CACHE_MAX = 4096;

// Per key object too (no string built), re-checked against id and version in case the object was changed.
const headerOfKey = new WeakMap<DataKey, { id: string; version: number; header: Buffer }>();

function headerFor(dek: DataKey): Buffer {
  const keyOk = Buffer.isBuffer(dek.key) && dek.key.length === AES_256_KEY_BYTES;
  const known = keyOk ? headerOfKey.get(dek) : undefined;
  if (known && known.id === dek.id && known.version === dek.version) return known.header;
  const slot = `${dek.version}\u0000${dek.id}`;
  let header = keyOk ? headerCache.get(slot) : undefined;
  if (!header) {
    header = encodeHeader(checkDataKey(dek), dek.version);
    if (headerCache.size >= HEADER_CACHE_MAX) headerCache.clear();
    headerCache.set(slot, header);
  }
  headerOfKey.set(dek, { id: dek.id, version: dek.version, header });
  return header;
}

function encodeHeader(keyId: Buffer, keyVersion: number): Buffer {
  const header = Buffer.alloc(FIXED_HEADER_BYTES + keyId.length);
  header.writeUInt8(FIELD_FORMAT_VERSION, 0);
  header.writeUInt32BE(keyVersion, 1);
  header.writeUInt8(keyId.length, 5);
  keyId.copy(header, FIXED_HEADER_BYTES);
  return header;
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * SP 800-38D §8.2.2 RBG-based IVs, drawn from the OS CSPRNG in blocks: one randomFillSync per
 * 512 nonces instead of one call per value. Each 12-byte slice is handed out once; the block is
 * refilled before any byte could be reused.
 */
const NONCE_BLOCK = Buffer.allocUnsafe(GCM_NONCE_BYTES * 512);
let nonceAt = NONCE_BLOCK.length;

function fillNonce(target: Buffer): void {
  if (nonceAt + GCM_NONCE_BYTES > NONCE_BLOCK.length) {
    randomFillSync(NONCE_BLOCK);
    nonceAt = 0;
  }
  NONCE_BLOCK.copy(target, 0, nonceAt, nonceAt + GCM_NONCE_BYTES);
  nonceAt += GCM_NONCE_BYTES;
}

type ParsedField = FieldHeader & {
  header: Buffer;
  nonce: Buffer;
  body: Buffer;
  tag: Buffer;
};

function parseField(ciphertext: Buffer): ParsedField {
  if (!Buffer.isBuffer(ciphertext)) throw new TypeError("field ciphertext must be a Buffer");
  if (ciphertext.length < 1) throw new FieldFormatError("field ciphertext is empty");
  const formatVersion = ciphertext.readUInt8(0);
  // Reject rather than guess: a future format may lay out or bind fields differently.
  if (formatVersion !== FIELD_FORMAT_VERSION) {
    throw new FieldFormatError(`unsupported field ciphertext format version ${formatVersion} (this build reads version ${FIELD_FORMAT_VERSION})`);
  }
  if (ciphertext.length < MIN_FIELD_BYTES) {
    throw new FieldFormatError(`field ciphertext is truncated: ${ciphertext.length} bytes, a version ${FIELD_FORMAT_VERSION} value is at least ${MIN_FIELD_BYTES}`);
  }
  const keyVersion = ciphertext.readUInt32BE(1);
  const keyIdLength = ciphertext.readUInt8(5);
  const headerLength = FIXED_HEADER_BYTES + keyIdLength;
  if (keyIdLength === 0 || ciphertext.length < headerLength + GCM_NONCE_BYTES + GCM_TAG_BYTES) {
    throw new FieldFormatError(`field ciphertext is truncated or its key id length (${keyIdLength}) is invalid for ${ciphertext.length} bytes`);
  }
  let keyId: string;
  let ascii = true;
  for (let i = FIXED_HEADER_BYTES; i < headerLength; i++) if (ciphertext[i]! > 0x7f) ascii = false;
  try {
    // Key ids are ASCII in practice ("tenant/<uuid>"): decode those without a decoder call.
    keyId = ascii ? ciphertext.toString("latin1", FIXED_HEADER_BYTES, headerLength) : STRICT_UTF8.decode(ciphertext.subarray(FIXED_HEADER_BYTES, headerLength));
  } catch {
    throw new FieldFormatError("field ciphertext key id is not valid UTF-8");
  }
  const nonceEnd = headerLength + GCM_NONCE_BYTES;
  const tagStart = ciphertext.length - GCM_TAG_BYTES;
  return {
    formatVersion,
    keyId,
    keyVersion,
    header: ciphertext.subarray(0, headerLength),
    nonce: ciphertext.subarray(headerLength, nonceEnd),
    body: ciphertext.subarray(nonceEnd, tagStart),
    tag: ciphertext.subarray(tagStart),
  };
}

/**
 * Reads which DEK (id and version) a stored value needs, so the caller can fetch it: during
 * rotation reads follow the header, not the current version. The result is unauthenticated until
 * `decryptField` succeeds; use it only to pick a key.
 */
export function readFieldHeader(ciphertext: Buffer): FieldHeader {
  const { formatVersion, keyId, keyVersion } = parseField(ciphertext);
  return { formatVersion, keyId, keyVersion };
}

export type EncryptFieldOptions = {
  /** Counts this encryption against the DEK version's random-nonce budget. */
  nonceBudget?: NonceBudget;
};

export function encryptField(dek: DataKey, context: FieldContext, plaintext: Buffer | string, options: EncryptFieldOptions = {}): Buffer {
  const header = headerFor(dek);
  const aad = fieldAad(header, context, true);
  const data = typeof plaintext === "string" ? utf8("plaintext", plaintext) : plaintext;
  if (!Buffer.isBuffer(data)) throw new TypeError("plaintext must be a Buffer or a string");
  // One output buffer, written in place: header, nonce, ciphertext, tag (this is the hot path of
  // every PHI write; see bench/field-crypto.ts).
  const out = Buffer.allocUnsafe(header.length + GCM_NONCE_BYTES + data.length + GCM_TAG_BYTES);
  header.copy(out, 0);
  // SP 800-38D §8.2.2 RBG-based construction: a fresh random 96-bit IV per invocation.
  const nonce = out.subarray(header.length, header.length + GCM_NONCE_BYTES);
  fillNonce(nonce);
  const { ciphertext, tag } = aesGcmEncrypt(dek.key, nonce, data, aad);
  ciphertext.copy(out, header.length + GCM_NONCE_BYTES);
  tag.copy(out, out.length - GCM_TAG_BYTES);
  options.nonceBudget?.record(dek.id, dek.version);
  return out;
}

export function decryptField(lookup: DataKeyLookup, context: FieldContext, ciphertext: Buffer): Buffer {
  const field = parseField(ciphertext);
  const dek = lookup(field.keyId, field.keyVersion);
  if (!dek) throw new UnknownKeyVersionError(field.keyId, field.keyVersion);
  if (dek.id !== field.keyId || dek.version !== field.keyVersion) {
    // A key store returning the wrong version would otherwise surface as "tampered data".
    throw new UnknownKeyVersionError(field.keyId, field.keyVersion, `lookup returned "${dek.id}" version ${dek.version} instead`);
  }
  if (!Buffer.isBuffer(dek.key) || dek.key.length !== AES_256_KEY_BYTES) checkDataKey(dek);
  // The header names this key id and version, so the cached encoding is byte-identical; the
  // comparison keeps it honest if a lookup ever returned a key object with other fields.
  const cached = headerFor(dek);
  const aad = cached.equals(field.header) ? fieldAad(cached, context, true) : fieldAad(field.header, context, false);
  return aesGcmDecrypt(dek.key, field.nonce, field.body, field.tag, aad);
}

// ---------------------------------------------------------------------------------------------
// Blind index
// ---------------------------------------------------------------------------------------------

/**
 * Default normalisation for identifiers: NFKC folds compatibility forms (full-width digits,
 * ligatures) that a user would consider the same text; trim drops copy-paste whitespace.
 */
export function normaliseIdentifier(value: string): string {
  return value.normalize("NFKC").trim();
}

/** Email addresses are matched case-insensitively in practice, so the index is too. */
export function normaliseEmail(value: string): string {
  return normaliseIdentifier(value).toLowerCase();
}

export type BlindIndexOptions = {
  /** Replaces the default `normaliseIdentifier`; pass `normaliseEmail` for email columns. */
  normalise?: (value: string) => string;
};

/**
 * Deterministic keyed digest for exact-match lookups on an encrypted identifier (MRN, email).
 * HMAC keeps it unguessable without the per-tenant index key (a plain hash of an MRN could be
 * brute-forced from the small MRN space); tenant, table and column are inside the MAC so equal
 * values in two tenants or two columns do not produce linkable digests. Returns 64 hex chars.
 */
export function blindIndex(indexKey: Buffer, context: { tenantId: string; table: string; column: string }, value: string, options: BlindIndexOptions = {}): string {
  // A short key would make the index brute-forceable regardless of HMAC.
  if (!Buffer.isBuffer(indexKey) || indexKey.length < 32) {
    throw new RangeError("blind index key must be at least 32 bytes");
  }
  const normalise = options.normalise ?? normaliseIdentifier;
  const message = Buffer.concat([
    BLIND_INDEX_LABEL,
    lengthPrefixed([
      ["tenantId", context.tenantId],
      ["table", context.table],
      ["column", context.column],
    ]),
    utf8("value", normalise(value)),
  ]);
  return hmacSha256(indexKey, message).toString("hex");
}

// ---------------------------------------------------------------------------------------------
// Nonce budget
// ---------------------------------------------------------------------------------------------

/**
 * NIST SP 800-38D §8.3: with random 96-bit IVs, a key must not be used for more than 2^32
 * encryptions, keeping the probability of an IV collision (which would reveal the GHASH key and
 * XOR of plaintexts) below 2^-32.
 */
export const GCM_RANDOM_NONCE_LIMIT = 2 ** 32;
/**
 * Rotate well before the bound: this counter is per process, so encryptions by other replicas
 * and by earlier runs reach the shared count only when the key service flushes it; the margin
 * (2^28, about 6 %) absorbs what has not been flushed yet.
 */
export const DEFAULT_NONCE_BUDGET = GCM_RANDOM_NONCE_LIMIT - 2 ** 28;

/**
 * Counts encryptions per DEK version and says when to rotate. The key service seeds it with the
 * persisted count (`record(id, version, persisted)`) and persists what it adds.
 */
export class NonceBudget {
  readonly limit: number;
  // keyId -> version -> count: two lookups on existing values, no key string built per encryption.
  private readonly counts = new Map<string, Map<number, number>>();

  constructor(options: { limit?: number } = {}) {
    const limit = options.limit ?? DEFAULT_NONCE_BUDGET;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > GCM_RANDOM_NONCE_LIMIT) {
      throw new RangeError(`nonce budget limit must be 1..2^32, got ${limit}`);
    }
    this.limit = limit;
  }

  /** Adds `count` encryptions; returns the new total and whether the version should rotate. */
  record(keyId: string, version: number, count = 1): { used: number; shouldRotate: boolean } {
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new RangeError(`count must be a non-negative integer, got ${count}`);
    }
    let versions = this.counts.get(keyId);
    if (!versions) {
      versions = new Map();
      this.counts.set(keyId, versions);
    }
    const used = (versions.get(version) ?? 0) + count;
    versions.set(version, used);
    return { used, shouldRotate: used >= this.limit };
  }

  used(keyId: string, version: number): number {
    return this.counts.get(keyId)?.get(version) ?? 0;
  }

  remaining(keyId: string, version: number): number {
    return Math.max(0, this.limit - this.used(keyId, version));
  }

  shouldRotate(keyId: string, version: number): boolean {
    return this.used(keyId, version) >= this.limit;
  }
}
