import { randomBytes } from "node:crypto";
import argon2 from "argon2";
import { z } from "zod";
import type { KeysConfig } from "../config.js";
import { UnsealError, type CreateSealInput, type SealCreation, type UnsealInput, type UnsealSource } from "./source.js";

/** Shortest passphrase accepted for a new seal: it guards every key, offline-attackable with the database. */
export const MIN_PASSPHRASE_LENGTH = 12;

const paramsSchema = z
  .object({
    kdf: z.literal("argon2id"),
    version: z.literal(19),
    salt: z.string().regex(/^[A-Za-z0-9_-]{22,}$/),
    memoryKib: z.number().int().min(8),
    iterations: z.number().int().min(1),
    parallelism: z.number().int().min(1),
  })
  .strict();

/**
 * The passphrase as the KDF sees it. NFC (RFC 8265 OpaqueString) so the same passphrase typed on
 * two systems that compose accents differently derives the same key.
 */
function normalise(passphrase: string): string {
  return passphrase.normalize("NFC");
}

/**
 * Unseal key = argon2id(passphrase, salt) (RFC 9106). The salt and costs are public and stored
 * with the seal; the check value tells a wrong passphrase apart. Stored costs, not the current
 * configuration, are used to open, so raising the configured costs only affects new seals.
 */
export class PassphraseUnseal implements UnsealSource {
  readonly mode = "passphrase" as const;
  readonly wrongKeyMessage = "wrong passphrase";

  constructor(private readonly kdf: KeysConfig["passphraseKdf"]) {}

  async create(input: CreateSealInput): Promise<SealCreation> {
    const passphrase = input.passphrase;
    if (typeof passphrase !== "string" || normalise(passphrase).length < MIN_PASSPHRASE_LENGTH) {
      throw new UnsealError(`the passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters`, "malformed");
    }
    const params = {
      kdf: "argon2id" as const,
      version: 19 as const,
      salt: randomBytes(16).toString("base64url"),
      memoryKib: this.kdf.memoryKib,
      iterations: this.kdf.iterations,
      parallelism: this.kdf.parallelism,
    };
    return { unsealKey: await derive(passphrase, params), params };
  }

  async open(stored: Record<string, unknown>, input: UnsealInput): Promise<Buffer> {
    if (typeof input.passphrase !== "string" || input.passphrase.length === 0) throw new UnsealError("a passphrase is required", "malformed");
    const parsed = paramsSchema.safeParse(stored);
    if (!parsed.success) throw new UnsealError("the key store's passphrase parameters are damaged", "unavailable");
    return derive(input.passphrase, parsed.data);
  }
}

async function derive(passphrase: string, params: z.infer<typeof paramsSchema>): Promise<Buffer> {
  return argon2.hash(normalise(passphrase), {
    type: argon2.argon2id,
    version: params.version,
    raw: true,
    salt: Buffer.from(params.salt, "base64url"),
    memoryCost: params.memoryKib,
    timeCost: params.iterations,
    parallelism: params.parallelism,
    hashLength: 32,
  });
}
