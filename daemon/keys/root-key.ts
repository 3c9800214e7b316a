import { LRUCache } from "lru-cache";
import { Sealed } from "../kernel/errors.js";
import { NonceBudget } from "./field-cipher.js";
import { zeroize } from "./primitives.js";

export type UnsealMode = "keyfile" | "passphrase" | "shamir" | "pkcs11";

export type SealStatus = { sealed: true; mode: UnsealMode; reason: string } | { sealed: false; mode: UnsealMode; unsealedAt: Date };

/** What a successful unseal hands to the barrier (daemon/keys/seal.ts builds it). */
export type OpenedKeys = {
  mode: UnsealMode;
  unsealKey: Buffer;
  /** keystore.seal.generation the unseal key belongs to (a rekey increments it). */
  generation: number;
  keks: Map<number, Buffer>;
  internalKey: Buffer;
};

export type RootKeyOptions = {
  /** Most unwrapped data keys kept (LRU). */
  cacheSize?: number;
  /** How long an unwrapped data key is kept before it is re-read from the key store. */
  cacheTtlMs?: number;
  /** Encryptions per data key version before automatic rotation. */
  nonceBudget?: number;
};

type PendingCount = { keyId: string; version: number; count: number };

/**
 * Per-process count of encryptions per data key version (NIST SP 800-38D §8.3 bound). It holds
 * the total this process believes (persisted count last read + its own encryptions since) and
 * the part not yet added to keystore.data_keys.nonce_count, which maintenance flushes.
 */
export class NonceLedger extends NonceBudget {
  // keyId -> version -> encryptions not yet added to the key store.
  private pending = new Map<string, Map<number, number>>();

  override record(keyId: string, version: number, count = 1) {
    const result = super.record(keyId, version, count);
    let versions = this.pending.get(keyId);
    if (!versions) {
      versions = new Map();
      this.pending.set(keyId, versions);
    }
    versions.set(version, (versions.get(version) ?? 0) + count);
    return result;
  }

  /** Raises the total to `persisted` (read from the key store) plus what is not flushed yet. */
  seed(keyId: string, version: number, persisted: number) {
    const unflushed = this.pending.get(keyId)?.get(version) ?? 0;
    const target = persisted + unflushed;
    const have = this.used(keyId, version);
    if (target > have) super.record(keyId, version, target - have);
  }

  /** Hands over the unflushed counts (and forgets them); `restore` puts them back if the write failed. */
  takePending(): PendingCount[] {
    const out: PendingCount[] = [];
    for (const [keyId, versions] of this.pending) for (const [version, count] of versions) if (count > 0) out.push({ keyId, version, count });
    this.pending = new Map();
    return out;
  }

  restore(items: PendingCount[]) {
    for (const item of items) {
      let versions = this.pending.get(item.keyId);
      if (!versions) {
        versions = new Map();
        this.pending.set(item.keyId, versions);
      }
      versions.set(item.version, (versions.get(item.version) ?? 0) + item.count);
    }
  }
}

/**
 * The barrier every key operation passes through (after Vault's): while sealed there is no key
 * material in memory, so no data key can be unwrapped and PHI routes answer 503.
 *
 * While unsealed it holds the unseal key (to load KEK versions made by a rotation on another
 * replica), the KEK versions, the appliance-internal key behind `material()`, and a bounded LRU
 * of unwrapped data keys. `seal()` zeroes all of it (best effort: V8 may have copied bytes).
 * Only daemon/keys reads the KEK and unseal key; nothing else in the daemon ever sees them.
 */
export class RootKey {
  private status: SealStatus;
  private unsealKey: Buffer | undefined;
  private generation = 0;
  private readonly keks = new Map<number, Buffer>();
  private internalKey: Buffer | undefined;
  private readonly dataKeys: LRUCache<string, Buffer>;
  private readonly sealListeners = new Set<() => void>();
  readonly nonces: NonceLedger;
  readonly cacheSize: number;

  constructor(
    public mode: UnsealMode,
    options: RootKeyOptions = {},
  ) {
    this.status = { sealed: true, mode, reason: "not unsealed yet" };
    this.cacheSize = options.cacheSize ?? 4096;
    this.dataKeys = new LRUCache<string, Buffer>({
      max: this.cacheSize,
      ttl: options.cacheTtlMs ?? 60_000,
      ttlAutopurge: true,
      updateAgeOnGet: false,
      // Evicted, expired, replaced or cleared: the bytes are overwritten, not left for the GC.
      dispose: (value) => zeroize(value),
    });
    this.nonces = new NonceLedger({ limit: options.nonceBudget });
  }

  get state(): SealStatus {
    return this.status;
  }

  get isSealed(): boolean {
    return this.status.sealed;
  }

  /** Opens the barrier with keys recovered by an unseal (daemon/keys only). Copies what it keeps. */
  open(keys: OpenedKeys, at = new Date()) {
    if (keys.unsealKey.length !== 32 || keys.internalKey.length !== 32) throw new Error("unseal produced a key of the wrong length");
    this.wipe();
    this.mode = keys.mode;
    this.unsealKey = Buffer.from(keys.unsealKey);
    this.generation = keys.generation;
    for (const [version, kek] of keys.keks) this.keks.set(version, Buffer.from(kek));
    this.internalKey = Buffer.from(keys.internalKey);
    this.status = { sealed: false, mode: this.mode, unsealedAt: at };
  }

  markSealed(reason: string) {
    this.seal(reason);
  }

  /** Zeroes every key in memory (on seal and on shutdown). */
  seal(reason = "sealed by operator") {
    const wasOpen = !this.status.sealed;
    this.wipe();
    this.status = { sealed: true, mode: this.mode, reason };
    if (wasOpen) for (const listener of this.sealListeners) listener();
  }

  private wipe() {
    if (this.unsealKey) zeroize(this.unsealKey);
    this.unsealKey = undefined;
    for (const kek of this.keks.values()) zeroize(kek);
    this.keks.clear();
    if (this.internalKey) zeroize(this.internalKey);
    this.internalKey = undefined;
    this.dataKeys.clear();
  }

  private sealedError(): Sealed {
    const reason = this.status.sealed ? this.status.reason : "";
    return new Sealed(`the appliance is sealed (${reason}); unseal it with \`wardkeep unseal\``, { sealState: "sealed", unsealMode: this.mode });
  }

  /**
   * The appliance-internal secret other capabilities derive their own keys from (HKDF with a
   * purpose label). It is a data key wrapped by the KEK, not the KEK itself, so it stays the
   * same across KEK rotation and rekeying. Throws `Sealed` (503) while sealed.
   */
  material(): Buffer {
    if (!this.internalKey) throw this.sealedError();
    return this.internalKey;
  }

  // ---- daemon/keys only --------------------------------------------------------------------

  /** Throws `Sealed` while sealed. */
  assertUnsealed() {
    if (this.status.sealed) throw this.sealedError();
  }

  get unsealGeneration(): number {
    return this.generation;
  }

  unsealKeyMaterial(): Buffer {
    if (!this.unsealKey) throw this.sealedError();
    return this.unsealKey;
  }

  /** After a rekey on this replica: the new unseal key replaces the old one. */
  replaceUnsealKey(mode: UnsealMode, unsealKey: Buffer, generation: number) {
    this.assertUnsealed();
    zeroize(this.unsealKey!);
    this.unsealKey = Buffer.from(unsealKey);
    this.generation = generation;
    this.mode = mode;
    this.status = { sealed: false, mode, unsealedAt: (this.status as { unsealedAt: Date }).unsealedAt };
  }

  kek(version: number): Buffer | undefined {
    this.assertUnsealed();
    return this.keks.get(version);
  }

  kekVersions(): number[] {
    return [...this.keks.keys()].sort((a, b) => a - b);
  }

  rememberKek(version: number, kek: Buffer) {
    this.assertUnsealed();
    const old = this.keks.get(version);
    if (old) zeroize(old);
    this.keks.set(version, Buffer.from(kek));
  }

  forgetKek(version: number) {
    const old = this.keks.get(version);
    if (old) zeroize(old);
    this.keks.delete(version);
  }

  /** The cached unwrapped data key, or undefined. Use it synchronously: eviction zeroes it. */
  cachedDataKey(slot: string): Buffer | undefined {
    if (this.status.sealed) return undefined;
    return this.dataKeys.get(slot);
  }

  cacheDataKey(slot: string, key: Buffer) {
    if (this.status.sealed) return;
    this.dataKeys.set(slot, Buffer.from(key));
  }

  /** Drops (and zeroes) cached data keys whose slot matches, e.g. after crypto-shredding. */
  evictDataKeys(matches: (slot: string) => boolean) {
    for (const slot of [...this.dataKeys.keys()]) if (matches(slot)) this.dataKeys.delete(slot);
  }

  get cachedDataKeyCount(): number {
    return this.dataKeys.size;
  }

  /** Runs when the barrier closes (e.g. to reset Shamir progress or stop background work). */
  onSeal(listener: () => void): () => void {
    this.sealListeners.add(listener);
    return () => this.sealListeners.delete(listener);
  }
}
