import { Sealed } from "../http/errors.js";

export type UnsealMode = "keyfile" | "passphrase" | "shamir" | "pkcs11";

export type SealStatus =
  | { sealed: true; mode: UnsealMode; reason: string }
  | { sealed: false; mode: UnsealMode; unsealedAt: Date };

/**
 * The barrier every key operation passes through (after Vault's): while sealed there is no
 * root key-encryption key (KEK) in memory, so no data key can be unwrapped and PHI routes answer
 * 503. The KEK never leaves this object except to the key functions that wrap and unwrap.
 */
export class RootKey {
  private kek: Buffer | undefined;
  private status: SealStatus;

  constructor(readonly mode: UnsealMode) {
    this.status = { sealed: true, mode, reason: "not unsealed yet" };
  }

  get state(): SealStatus {
    return this.status;
  }

  get isSealed(): boolean {
    return this.status.sealed;
  }

  unseal(kek: Buffer, at = new Date()) {
    if (kek.length !== 32) throw new Error("the root key must be 32 bytes");
    this.kek = Buffer.from(kek);
    this.status = { sealed: false, mode: this.mode, unsealedAt: at };
  }

  markSealed(reason: string) {
    this.seal(reason);
  }

  /** Zeroes the key in memory (on seal and on shutdown). */
  seal(reason = "sealed by operator") {
    this.kek?.fill(0);
    this.kek = undefined;
    this.status = { sealed: true, mode: this.mode, reason };
  }

  /** For key-wrapping code only. Throws `Sealed` (503) while sealed. */
  material(): Buffer {
    if (!this.kek) throw new Sealed(`the root key is sealed (${this.status.sealed ? this.status.reason : ""}); unseal it with \`wardkeep unseal\``, { sealState: "sealed" });
    return this.kek;
  }
}
