import { z } from "zod";
import { DEFAULT_NONCE_BUDGET, GCM_RANDOM_NONCE_LIMIT } from "./field-cipher.js";

/**
 * Settings of the keys capability (`keys:` in config/default.yaml). Kept beside the code that
 * reads them; daemon/config/schema.ts includes this section. docs/keys.md explains the choices.
 */
export const pkcs11Schema = z
  .object({
    module: z.string().optional().describe("Path of the HSM vendor's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so; required for unseal=pkcs11."),
    tokenLabel: z.string().min(1).max(32).optional().describe("Label of the HSM token (slot) holding the wrapping key; unset takes the first token present."),
    pinFile: z.string().optional().describe("File holding the token's user PIN (mode 0600); never put the PIN in the config itself."),
    keyLabel: z.string().min(1).max(64).default("wardkeep-unseal").describe("Label (CKA_LABEL) of the AES-256 key inside the HSM that wraps the unseal key."),
  })
  .strict();

export const passphraseKdfSchema = z
  .object({
    // RFC 9106 §4 second recommended option (64 MiB, t=3, p=4); OWASP's floor is 19 MiB, t=2.
    memoryKib: z.number().int().min(19_456).max(4_194_304).default(65_536).describe("argon2id memory per passphrase derivation, in KiB (new seals only)."),
    iterations: z.number().int().min(2).max(20).default(3).describe("argon2id passes (new seals only)."),
    parallelism: z.number().int().min(1).max(16).default(4).describe("argon2id lanes (new seals only)."),
  })
  .strict();

export const keysSchema = z
  .object({
    unseal: z
      .enum(["keyfile", "passphrase", "shamir", "pkcs11"])
      .default("keyfile")
      .describe(
        "How a new key store is sealed at first start (keyfile is for trying it out only). An initialised key store remembers its own mode; change it with `wardkeep keys rekey`.",
      ),
    keyFile: z
      .string()
      .default("keys/root.key")
      .describe("Unseal key file for unseal=keyfile, relative to dataDir; created 0600 on first start. Every replica needs the same file."),
    passphraseFile: z
      .string()
      .optional()
      .describe("File (or /dev/fd/N) holding the unseal passphrase at start, e.g. a container secret; unset prompts on a terminal or waits for `wardkeep unseal`."),
    promptAtStart: z.boolean().default(true).describe("With unseal=passphrase and no passphraseFile, ask for the passphrase when the daemon runs in a terminal."),
    passphraseKdf: passphraseKdfSchema.prefault({}),
    pkcs11: pkcs11Schema.prefault({}),
    dataKeyCacheSize: z.number().int().min(16).max(1_000_000).default(4096).describe("Most unwrapped data keys kept in memory (least recently used are zeroed first)."),
    dataKeyCacheSeconds: z
      .number()
      .int()
      .min(1)
      .max(3600)
      .default(60)
      .describe("How long an unwrapped data key stays in memory before it is re-read; bounds how long a key destroyed on another replica stays usable here."),
    nonceBudget: z
      .number()
      .int()
      .min(1)
      .max(GCM_RANDOM_NONCE_LIMIT)
      .default(DEFAULT_NONCE_BUDGET)
      .describe("Encryptions under one data key version before it is rotated automatically (NIST SP 800-38D caps random-nonce AES-GCM at 2^32)."),
    shredGraceDays: z
      .number()
      .int()
      .min(1)
      .max(365)
      .default(30)
      .describe("Days between deleting a patient or tenant and destroying its data keys (crypto-shredding); the key store's own backups must expire sooner."),
    reencryptBatchSize: z.number().int().min(1).max(10_000).default(200).describe("Rows re-encrypted per transaction after a data key rotation (small batches keep locks short)."),
    maintenanceIntervalSeconds: z
      .number()
      .int()
      .min(1)
      .max(3600)
      .default(30)
      .describe("How often key maintenance runs: persist nonce counts, continue rewrapping and re-encryption, destroy keys whose grace period ended."),
    unsealAttemptsPerMinute: z
      .number()
      .int()
      .min(1)
      .max(1000)
      .default(20)
      .describe("Unseal attempts (passphrases or shares) one client address may make per minute on one replica."),
  })
  .strict();

export type KeysConfig = z.infer<typeof keysSchema>;
