import { z } from "zod";

/**
 * Response schemas of the key routes: seal state and key status (versions, dates, counts; never
 * key bytes or values). Leaf module (zod only): the admin UI imports the inferred types, so it
 * cannot read a field these routes do not send.
 */

/** `GET /api/v1/keys/seal-status`, and the `seal` member of `GET /api/v1/keys`. */
export const sealProgressView = z.object({
  /** Whether this replica's keys are sealed (PHI routes answer 503). */
  sealed: z.boolean(),
  /** The key store's unseal mode (or the configured one before initialisation). */
  mode: z.enum(["keyfile", "passphrase", "shamir", "pkcs11"]),
  /** Whether the key store exists (first unseal done). */
  initialised: z.boolean(),
  /** Why it is sealed (no PHI). */
  reason: z.string().optional(),
  /** When this replica was last unsealed. */
  unsealedAt: z.string().optional(),
  /** Shamir: shares entered on this replica so far. */
  progress: z.object({ provided: z.number(), threshold: z.number(), shares: z.number() }).optional(),
});

const keyVersion = z.object({
  /** Key version number. */
  version: z.number(),
  /** active encrypts new data; retired only decrypts. */
  state: z.enum(["active", "retired"]),
  /** When the version was made. */
  createdAt: z.string(),
  /** When a newer version replaced it. */
  retiredAt: z.string().nullable(),
  /** Encryptions made under this version (nonce counter). */
  encryptions: z.number(),
  /** Stored values under this version; null when not counted. */
  values: z.number().nullable(),
});

/** One tenant key rotation: every data key of the tenant gets a new version, then the values they cover are re-encrypted. */
export const tenantRotationView = z.object({
  /** The run. */
  id: z.string(),
  /** The tenant. */
  tenantId: z.string(),
  /** Where the run stands. */
  state: z.enum(["rotating-keys", "re-encrypting", "finished"]),
  /** When it started. */
  startedAt: z.string(),
  /** Data keys of the tenant when it started (one per patient, and the tenant's own where it has one). */
  keysTotal: z.number(),
  /** Keys given their new version so far. */
  keysRotated: z.number(),
  /** Keys whose values are all re-encrypted under their new version. */
  keysReencrypted: z.number(),
  /** Values re-encrypted so far. */
  valuesReencrypted: z.number(),
  /** When the last key got its new version. */
  keysRotatedAt: z.string().nullable(),
  /** When the last value was re-encrypted. */
  completedAt: z.string().nullable(),
});

/**
 * `GET /api/v1/keys`. Tenant owners get seal, KEK, their own tenant and its rotations; appliance
 * operators also get the members marked optional here.
 */
export const keyStatusResponse = z.object({
  /** This replica's seal state. */
  seal: sealProgressView,
  /** Root key-encryption key versions (wraps: data keys wrapped by each) and rewrap progress. */
  kek: z.object({
    versions: z.array(z.object({ version: z.number(), state: z.enum(["active", "retiring"]), createdAt: z.string(), retiredAt: z.string().nullable(), wraps: z.number() })),
    rotation: z.object({ inProgress: z.boolean(), remaining: z.number() }),
  }),
  /** Per tenant: data key versions, patient keys, blind-index key, scheduled shredding. */
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
  /** Rotations, newest first, with re-encryption progress. */
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
  /** The latest tenant key rotation of each tenant (every data key of the tenant gets a new version, then its values are re-encrypted), newest first. */
  tenantRotations: z.array(tenantRotationView),
  /** Appliance-level keys (audit signing, internal); appliance operators only. */
  applianceKeys: z.array(z.object({ keyId: z.string(), kind: z.string(), versions: z.array(keyVersion) })).optional(),
  /** Crypto-shredding schedule summary; appliance operators only. */
  shredding: z.object({ scheduled: z.number(), nextDestroyAfter: z.string().nullable(), destroyed: z.number() }).optional(),
  /** The recovery key pair's fingerprint and kit; appliance operators only. */
  recovery: z
    .object({ fingerprint: z.string(), createdAt: z.string(), issuedAt: z.string().nullable(), shares: z.number().nullable(), threshold: z.number().nullable() })
    .nullable()
    .optional(),
  /** Unwrapped data keys held in memory on this replica; appliance operators only. */
  cache: z.object({ entries: z.number(), capacity: z.number() }).optional(),
  /** Which columns are field-encrypted, and under which subject's key; appliance operators only. */
  encryptedColumns: z.array(z.object({ table: z.string(), column: z.string(), subject: z.enum(["tenant", "patient"]) })).optional(),
});

export type SealProgressRes = z.infer<typeof sealProgressView>;
export type KeyStatusRes = z.infer<typeof keyStatusResponse>;

// ---- requests, and the responses the admin UI does not read yet --------------------------------

export const unsealRequest = z
  .object({
    /** The unseal passphrase (passphrase mode). */
    passphrase: z.string().min(1).max(1024).optional(),
    /** One custodian's share (shamir mode), e.g. `wks1-3-2-K7QD-…-9F3A`. */
    share: z.string().min(1).max(1024).optional(),
    /** Discard the shares entered so far on this replica. */
    reset: z.literal(true).optional(),
  })
  .strict()
  .refine((b) => [b.passphrase, b.share, b.reset].filter((v) => v !== undefined).length <= 1, { message: "send one of passphrase, share or reset" });

export const sealRequest = z.object({ /** Why (shown in /readyz and 503 answers; no PHI). */ reason: z.string().min(1).max(200).optional() }).strict();

export const rotateRequest = z.discriminatedUnion("target", [
  z.object({ /** Rotate the root key-encryption key (rewraps every data key in the background). */ target: z.literal("kek") }).strict(),
  z
    .object({ /** Rotate one tenant's data key (old ciphertexts are re-encrypted in the background). */ target: z.literal("tenant"), /** The tenant. */ tenantId: z.uuid() })
    .strict(),
  z.object({ /** Rotate the audit checkpoint signing key pair. */ target: z.literal("audit-signing") }).strict(),
]);

export const rotationStarted = z.object({
  /** The data key rotated (tenant and audit-signing rotations; `tenant/<id>` for a tenant). */
  keyId: z.string().optional(),
  /** The version that was active (KEK and audit-signing rotations). */
  from: z.number().int().optional(),
  /** The new active version (KEK and audit-signing rotations). */
  to: z.number().int().optional(),
  /** False when the key was already rotated by a concurrent request. */
  rotated: z.boolean().optional(),
  /** A tenant rotation: its progress (it continues in the background; `GET /keys` follows it). */
  tenantRotation: tenantRotationView.optional(),
  /** True when the tenant already had a rotation running: this continues it rather than starting another. */
  resumed: z.boolean().optional(),
});

export const shredSubject = z.discriminatedUnion("kind", [
  z.object({ /** A whole tenant. */ kind: z.literal("tenant"), /** The tenant. */ tenantId: z.uuid() }).strict(),
  z.object({ /** One patient. */ kind: z.literal("patient"), /** The patient's tenant. */ tenantId: z.uuid(), /** The patient. */ patientId: z.uuid() }).strict(),
]);

export const shredScheduleEntry = z.object({
  /** The subject's key id. */
  subject: z.string(),
  /** A tenant or a patient. */
  kind: z.enum(["tenant", "patient"]),
  /** The tenant. */
  tenantId: z.string(),
  /** The patient, for a patient. */
  patientId: z.string().nullable(),
  /** When deletion scheduled it. */
  scheduledAt: z.string(),
  /** When its keys are destroyed unless cancelled. */
  destroyAfter: z.string(),
});
export const shredScheduleResponse = z.object({ /** Subjects waiting for crypto-shredding. */ schedule: z.array(shredScheduleEntry) });

export const shredCancelled = z.object({ /** The subject's key id. */ subject: z.string(), /** Always true. */ cancelled: z.literal(true) });

export type UnsealReq = z.infer<typeof unsealRequest>;
export type SealReq = z.infer<typeof sealRequest>;
export type RotateReq = z.infer<typeof rotateRequest>;
export type RotationStartedRes = z.infer<typeof rotationStarted>;
export type TenantRotationRes = z.infer<typeof tenantRotationView>;
export type ShredSubjectReq = z.infer<typeof shredSubject>;
export type ShredScheduleRes = z.infer<typeof shredScheduleResponse>;
export type ShredCancelledRes = z.infer<typeof shredCancelled>;
