import { obtainPassphrase, type CreateSealInput, type UnsealMode } from "../keys/index.js";
import { CliError } from "./output.js";

/** The unseal sources a command can set up (`keys init`, `keys rekey`, `recover`). */
export const UNSEAL_MODES: UnsealMode[] = ["keyfile", "passphrase", "shamir", "pkcs11"];

/** The options every command that sets up an unseal source takes. */
export type SealSourceOptions = { passphraseFile?: string; shares?: string; threshold?: string; createHsmKey?: boolean };

export function parseUnsealMode(value: string): UnsealMode {
  if (!UNSEAL_MODES.includes(value as UnsealMode)) throw new CliError(`--unseal must be one of ${UNSEAL_MODES.join(", ")}`);
  return value as UnsealMode;
}

export function integerOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new CliError(`--${name} must be a whole number`);
  return Number(value);
}

/** What the new unseal source needs from the operator: a new passphrase (asked twice), the Shamir split, or the HSM key. */
export async function sealInput(mode: UnsealMode, opts: SealSourceOptions): Promise<CreateSealInput> {
  switch (mode) {
    case "passphrase":
      return { passphrase: await obtainPassphrase(opts.passphraseFile, { confirm: true, what: "new unseal passphrase" }) };
    case "shamir":
      return { shareCount: integerOption("shares", opts.shares, 5), threshold: integerOption("threshold", opts.threshold, 3) };
    case "pkcs11":
      return { createHsmKey: opts.createHsmKey === true };
    default:
      return {};
  }
}
