import { randomBytes } from "node:crypto";
import { z } from "zod";
import { combineShares, describeShare, ShamirError, splitSecret } from "../shamir.js";
import { zeroize } from "../primitives.js";
import { UnsealError, type CreateSealInput, type SealCreation, type UnsealInput, type UnsealSource } from "./source.js";

const paramsSchema = z
  .object({
    threshold: z.number().int().min(2).max(255),
    shares: z.number().int().min(2).max(255),
    splitId: z.string().regex(/^[A-Z2-7]{4}$/),
  })
  .strict();

function storedParams(stored: Record<string, unknown>) {
  const parsed = paramsSchema.safeParse(stored);
  if (!parsed.success) throw new UnsealError("the key store's Shamir parameters are damaged", "unavailable");
  return parsed.data;
}

/** Share errors name the share by its public header only ("wks1-3-2-K7QD"), never its bytes. */
function shareError(err: unknown): UnsealError {
  if (err instanceof ShamirError) return new UnsealError(err.message.replace(/^share #1 \((.+?)…\)/, "share $1").replace(/^share #1 /, "the share "), "malformed");
  return new UnsealError("the share could not be read", "malformed");
}

/**
 * k-of-n custodian shares of a random unseal key (Shamir over GF(2^8), daemon/keys/shamir.ts).
 * No single custodian can unseal; any k can. The split id is stored so shares of an older split
 * (before a rekey) are refused by name rather than combining into a wrong key.
 */
export class ShamirUnseal implements UnsealSource {
  readonly mode = "shamir" as const;
  readonly wrongKeyMessage = "the shares do not reconstruct this key store's unseal key: at least one share was altered or belongs to another install";

  async create(input: CreateSealInput): Promise<SealCreation> {
    const shareCount = input.shareCount ?? 5;
    const threshold = input.threshold ?? 3;
    const unsealKey = randomBytes(32);
    let shares: string[];
    try {
      shares = await splitSecret(unsealKey, shareCount, threshold);
    } catch (err) {
      zeroize(unsealKey);
      throw new UnsealError(err instanceof ShamirError ? err.message : "cannot split the unseal key", "malformed");
    }
    const splitId = describeShare(shares[0]!).splitId;
    return { unsealKey, params: { threshold, shares: shareCount, splitId }, shares };
  }

  async open(stored: Record<string, unknown>, input: UnsealInput): Promise<Buffer> {
    const params = storedParams(stored);
    const shares = input.shares ?? [];
    for (const share of shares) checkShareBelongs(share, params);
    if (shares.length < params.threshold) throw new UnsealError(`need ${params.threshold} shares, got ${shares.length}`, "malformed");
    try {
      return await combineShares(shares);
    } catch (err) {
      throw shareError(err);
    }
  }
}

function checkShareBelongs(share: string, params: z.infer<typeof paramsSchema>) {
  let info: ReturnType<typeof describeShare>;
  try {
    info = describeShare(share);
  } catch (err) {
    throw shareError(err);
  }
  if (info.splitId !== params.splitId) {
    throw new UnsealError(
      `share ${info.label} belongs to split ${info.splitId}, but this key store was split as ${params.splitId} (an older or another install's share)`,
      "wrong-secret",
    );
  }
  if (info.threshold !== params.threshold) throw new UnsealError(`share ${info.label} does not match this key store's threshold of ${params.threshold}`, "wrong-secret");
  return info;
}

export type ShamirProgressState = { provided: number; threshold: number; splitId: string };

/**
 * Vault-style unseal progress on one replica: custodians submit one share each, possibly from
 * different terminals; the key is combined once `threshold` distinct shares are in. Shares wait
 * here in memory only (never logged or stored) and are wiped on completion, reset or seal.
 */
export class ShamirProgress {
  private shares: string[] = [];
  private indexes = new Set<number>();

  add(stored: Record<string, unknown>, share: string): ShamirProgressState & { complete: boolean } {
    const params = storedParams(stored);
    const info = checkShareBelongs(share, params);
    if (this.indexes.has(info.index)) {
      throw new UnsealError(`share ${info.label} was already entered; the next custodian must enter a different share`, "malformed");
    }
    this.indexes.add(info.index);
    this.shares.push(share);
    return { provided: this.shares.length, threshold: params.threshold, splitId: params.splitId, complete: this.shares.length >= params.threshold };
  }

  /** Takes the collected shares and resets, so a wrong result starts the ceremony over. */
  take(): string[] {
    const shares = this.shares;
    this.reset();
    return shares;
  }

  get provided(): number {
    return this.shares.length;
  }

  reset() {
    this.shares = [];
    this.indexes = new Set();
  }
}
