/** One way of obtaining the root key at start (CONVENTIONS 5: one file per implementation). */
export interface UnsealSource {
  readonly mode: "keyfile" | "passphrase" | "shamir" | "pkcs11";
  /** Returns the 32-byte root key, or throws UnsealError with one readable line. */
  unseal(): Promise<{ kek: Buffer; created: boolean }>;
}

export class UnsealError extends Error {
  override name = "UnsealError";
}
