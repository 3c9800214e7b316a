import { z } from "zod";

/**
 * Response schemas of the key routes: seal state and key status (versions, dates, counts; never
 * key bytes or values). Leaf module (zod only): the admin UI imports the inferred types, so it
 * cannot read a field these routes do not send.
 */

/** `GET /api/v1/keys/seal-status`, and the `seal` member of `GET /api/v1/keys`. */
export const sealProgressView = z.object({
  sealed: z.boolean(),
  /** The key store's unseal mode (or the configured one before initialisation). */
  mode: z.enum(["keyfile", "passphrase", "shamir", "pkcs11"]),
  initialised: z.boolean(),
  reason: z.string().optional(),
  unsealedAt: z.string().optional(),
  /** Shamir: shares entered on this replica so far. */
  progress: z.object({ provided: z.number(), threshold: z.number(), shares: z.number() }).optional(),
});

const keyVersion = z.object({
  version: z.number(),
  state: z.enum(["active", "retired"]),
  createdAt: z.string(),
  retiredAt: z.string().nullable(),
  /** Encryptions made under this version (nonce counter). */
  encryptions: z.number(),
  /** Stored values under this version; null when not counted. */
  values: z.number().nullable(),
});

/**
 * `GET /api/v1/keys`. Tenant owners get seal, KEK, their own tenant and its rotations; appliance
 * operators also get the members marked optional here.
 */
export const keyStatusResponse = z.object({
  seal: sealProgressView,
  kek: z.object({
    versions: z.array(z.object({ version: z.number(), state: z.enum(["active", "retiring"]), createdAt: z.string(), retiredAt: z.string().nullable(), wraps: z.number() })),
    rotation: z.object({ inProgress: z.boolean(), remaining: z.number() }),
  }),
  tenants: z.array(
    z.object({
      tenantId: z.string(),
      keyId: z.string(),
      versions: z.array(keyVersion),
      patientKeys: z.number(),
      patientValues: z.number().nullable(),
      blindIndexKey: z.boolean(),
      shredScheduledFor: z.string().nullable(),
    }),
  ),
  rotations: z.array(
    z.object({
      target: z.enum(["kek", "data-key"]),
      keyId: z.string().nullable(),
      from: z.number(),
      to: z.number(),
      reason: z.string(),
      startedAt: z.string(),
      completedAt: z.string().nullable(),
      itemsDone: z.number(),
    }),
  ),
  applianceKeys: z.array(z.object({ keyId: z.string(), kind: z.string(), versions: z.array(keyVersion) })).optional(),
  shredding: z.object({ scheduled: z.number(), nextDestroyAfter: z.string().nullable(), destroyed: z.number() }).optional(),
  recovery: z
    .object({ fingerprint: z.string(), createdAt: z.string(), issuedAt: z.string().nullable(), shares: z.number().nullable(), threshold: z.number().nullable() })
    .nullable()
    .optional(),
  cache: z.object({ entries: z.number(), capacity: z.number() }).optional(),
  encryptedColumns: z.array(z.object({ table: z.string(), column: z.string(), subject: z.enum(["tenant", "patient"]) })).optional(),
});

export type SealProgressRes = z.infer<typeof sealProgressView>;
export type KeyStatusRes = z.infer<typeof keyStatusResponse>;
