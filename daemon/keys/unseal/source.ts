import type { UnsealMode } from "../root-key.js";

/** What an operator (or the configuration) supplies to unseal or to create a seal. */
export type UnsealInput = {
  passphrase?: string;
  shares?: string[];
};

export type CreateSealInput = UnsealInput & {
  /** Shamir: how many shares to make, and how many recover the key. */
  shareCount?: number;
  threshold?: number;
  /** PKCS#11: generate the wrapping key inside the HSM when the token has none with the label. */
  createHsmKey?: boolean;
};

export type SealCreation = {
  unsealKey: Buffer;
  /** Public parameters stored in keystore.seal.params (salts, costs, labels, HSM-wrapped blob). */
  params: Record<string, unknown>;
  /** Shamir: the custodians' shares, shown once. */
  shares?: string[];
  /** Keyfile: the file written, when this call created it. */
  createdFile?: string;
};

/**
 * One way of obtaining the 32-byte unseal key (CONVENTIONS 5: one file per implementation).
 * `open` only recovers a candidate key; daemon/keys/seal.ts compares it with the stored check
 * value, so a wrong passphrase, share, key file or HSM key is always detected there.
 */
export interface UnsealSource {
  readonly mode: UnsealMode;
  /** One readable line for a candidate key that fails the check value. */
  readonly wrongKeyMessage: string;
  create(input: CreateSealInput): Promise<SealCreation>;
  open(params: Record<string, unknown>, input: UnsealInput): Promise<Buffer>;
}

/**
 * An unseal that did not succeed, as one line that never contains key, share or passphrase
 * material. `kind` lets the HTTP layer answer 403 for a wrong secret, 400 for malformed input
 * and 503 when a device or file is missing.
 */
export class UnsealError extends Error {
  override name = "UnsealError";
  constructor(
    message: string,
    readonly kind: "wrong-secret" | "malformed" | "unavailable" | "not-initialised" = "unavailable",
  ) {
    super(message);
  }
}
