import { z } from "zod";

/**
 * Response schemas of the audit routes. Leaf module (zod only): the admin UI imports the
 * inferred types, so it cannot read a field these routes do not send. Events carry ids, never PHI.
 */

export const auditActor = z.object({
  /** The acting user (for support access: the approving admin). */
  userId: z.string().nullable(),
  /** The actor's role. */
  role: z.string().nullable(),
  /** The support user acting under an approved request, when there is one. */
  impersonatorId: z.string().nullable(),
  /** The access was made under a break-glass grant. */
  breakGlass: z.boolean(),
});

/** One chained event as search shows it. */
export const auditEventView = z.object({
  /** Chain sequence number (a decimal string: bigint). */
  seq: z.string(),
  /** When the event was chained. */
  recordedAt: z.string(),
  /** When it happened (inside the work's transaction). */
  occurredAt: z.string(),
  /** The tenant; null for appliance events. */
  tenantId: z.string().nullable(),
  /** The event's own id. */
  eventId: z.string(),
  /** Who acted. */
  actor: auditActor,
  /** What was done, e.g. patient.read. */
  action: z.string(),
  /** Kind of resource acted on. */
  resourceType: z.string(),
  /** The resource's id (never a PHI value). */
  resourceId: z.string().nullable(),
  /** The patient concerned, when there is one. */
  patientId: z.string().nullable(),
  /** success, denied or failure. */
  outcome: z.string(),
  /** Client address. */
  sourceIp: z.string().nullable(),
  /** Client software. */
  userAgent: z.string().nullable(),
  /** The request's X-Request-Id. */
  requestId: z.string().nullable(),
  /** Why (break-glass reason, denial reason); never PHI. */
  reason: z.string().nullable(),
  /** SHA-256 of the event in the chain, hex. */
  hash: z.string(),
});

/** `GET /api/v1/audit`: newest first; `nextCursor` continues below the last seq. */
export const auditSearchResponse = z.object({
  /** Events, newest first. */
  events: z.array(auditEventView),
  /** Pass as `cursor` for the next page; null at the end. */
  nextCursor: z.string().nullable(),
});

/** One line of a patient's access timeline. */
export const timelineEntry = z.object({
  /** Chain sequence number (decimal string). */
  seq: z.string(),
  /** When the access happened. */
  at: z.string(),
  /** Who accessed the record. */
  actor: auditActor,
  /** What was done. */
  action: z.string(),
  /** Kind of resource. */
  resourceType: z.string(),
  /** The resource's id. */
  resourceId: z.string().nullable(),
  /** success, denied or failure. */
  outcome: z.string(),
  /** Why (break-glass reason, denial reason). */
  reason: z.string().nullable(),
  /** Client address. */
  sourceIp: z.string().nullable(),
});

/** `GET /api/v1/audit/patients/{patientId}/timeline`: oldest first. */
export const timelineResponse = z.object({
  /** The patient. */
  patientId: z.string(),
  /** Accesses, oldest first. */
  entries: z.array(timelineEntry),
  /** Pass as `cursor` for the next page; null at the end. */
  nextCursor: z.string().nullable(),
});

/** `GET /api/v1/audit/verify`. */
export const verifyReport = z.object({
  /** Every event and checkpoint checked out. */
  intact: z.boolean(),
  /** Events checked and found intact (decimal string). */
  verified: z.string(),
  /** First sequence checked. */
  firstSeq: z.string().nullable(),
  /** Intact up to this seq (the head when intact). */
  lastGoodSeq: z.string(),
  /** The chain head's sequence number. */
  head: z.string(),
  /** Where verification began: the genesis, or a retention anchor. */
  startedFrom: z.discriminatedUnion("kind", [z.object({ kind: z.literal("genesis") }), z.object({ kind: z.literal("anchor"), segment: z.string(), seq: z.string() })]),
  /** Signed checkpoints found and verified, and the last signed sequence. */
  checkpoints: z.object({ total: z.number(), verified: z.number(), lastSignedSeq: z.string().nullable() }),
  /** Which keys signatures were checked against; "database" means the rows' own keys (weak). */
  keyTrust: z.enum(["keyring", "pinned", "given", "database"]),
  /** Ids of the keys checkpoint signatures were checked against. */
  keyIds: z.array(z.string()),
  /** The first broken sequence number and why (absent when intact). */
  break: z
    .object({ seq: z.string(), reason: z.enum(["changed", "missing", "reordered", "duplicate", "bad-checkpoint-signature", "checkpoint-mismatch"]), detail: z.string() })
    .optional(),
  /** One sentence for people. */
  summary: z.string(),
});

const shownKey = z.object({
  /** Fingerprint-based key id. */
  keyId: z.string(),
  /** Version in the appliance keyring; null for a legacy key. */
  keyringVersion: z.number().nullable(),
  /** A key from before the keyring (still verifies old checkpoints). */
  legacy: z.boolean(),
  /** SHA-256 of the raw public key, 64 hex digits: what an auditor passes to an evidence pack's `verify.sh --fingerprint`. */
  fingerprint: z.string(),
  /** The public key, PEM (SPKI). */
  publicKeyPem: z.string(),
  /** Raw 32-byte Ed25519 public key, base64. */
  publicKeyRaw: z.string(),
});

/** `GET /api/v1/audit/public-key`: the key that signs now, and every key that still verifies. */
export const publicKeyResponse = shownKey.extend({
  /** Always Ed25519. */
  algorithm: z.literal("Ed25519"),
  /** Every key that still verifies older checkpoints, with when it was retired. */
  verificationKeys: z.array(shownKey.extend({ retiredAt: z.string().nullable() })),
});

/** An evidence-pack export requested over the API. */
export const exportJob = z.object({
  /** Export id. */
  id: z.string(),
  /** running, done (download it) or failed. */
  status: z.enum(["running", "done", "failed"]),
  /** The tenant exported; null for appliance-wide. */
  tenantId: z.string().nullable(),
  /** Start of the range, inclusive. */
  from: z.string(),
  /** End of the range, exclusive. */
  to: z.string(),
  /** Event formats written besides JSON Lines. */
  formats: z.array(z.enum(["csv", "jsonl", "fhir"])),
  /** Events written so far, and the total when known. */
  progress: z.object({ done: z.number(), total: z.number().nullable() }),
  /** The pack's manifest once done (digests of every file). */
  manifest: z.unknown(),
  /** Why it failed. */
  error: z.string().nullable(),
  /** When it was requested. */
  createdAt: z.string(),
  /** When it finished. */
  finishedAt: z.string().nullable(),
});

/** `GET /api/v1/audit/exports`. */
export const exportListResponse = z.object({ exports: z.array(exportJob) });

const namedId = z.object({
  /** The id as the events carry it. */
  id: z.string(),
  /** Its name: an account's display name (or e-mail), a tenant's name, a patient's name. */
  name: z.string(),
});

/** `POST /api/v1/audit/names`: names for the ids of one page of events (docs/audit.md). */
export const auditNamesResponse = z.object({
  /** Accounts (actors, support staff, accounts acted on) of the viewer's tenant and the appliance's staff. */
  users: z.array(namedId),
  /** Tenants the viewer may see (their own; every one for super-admins). */
  tenants: z.array(namedId),
  /** Patients' names (an audited PHI read each); empty when `patientNamesShown` is false. */
  patients: z.array(namedId),
  /** false: the viewer's role reads no PHI, so patients stay ids. */
  patientNamesShown: z.boolean(),
});

export type AuditEventView = z.infer<typeof auditEventView>;
export type AuditSearchRes = z.infer<typeof auditSearchResponse>;
export type TimelineEntry = z.infer<typeof timelineEntry>;
export type TimelineRes = z.infer<typeof timelineResponse>;
export type VerifyReportRes = z.infer<typeof verifyReport>;
export type PublicKeyRes = z.infer<typeof publicKeyResponse>;
export type ExportJobRes = z.infer<typeof exportJob>;
export type ExportListRes = z.infer<typeof exportListResponse>;
export type AuditNamesRes = z.infer<typeof auditNamesResponse>;

// ---- requests, and the responses the admin UI does not read yet --------------------------------

const instant = z.iso.datetime({ offset: true });

export const searchQuery = z
  .object({
    /** Events chained at or after this instant (ISO 8601). */
    from: instant.optional(),
    /** Events chained before this instant (ISO 8601). */
    to: instant.optional(),
    /** Acting user's id. */
    actor: z.string().min(1).max(200).optional(),
    /** Patient id. */
    patient: z.string().min(1).max(200).optional(),
    /** Exact action (`patient.read`), or a prefix ending in `.*` (`auth.*`). */
    action: z
      .string()
      .regex(/^[a-z][a-z0-9_.-]*(\.\*)?$/)
      .max(100)
      .optional(),
    /** Only events with this outcome. */
    outcome: z.enum(["success", "denied", "failure"]).optional(),
    /** Super-admins only: one tenant's events. */
    tenant: z.uuid().optional(),
    /** Opaque cursor from the previous page's `nextCursor`. */
    cursor: z
      .string()
      .regex(/^[0-9]{1,19}$/)
      .optional(),
    /** Events per page, 1 to 500. */
    limit: z.coerce.number().int().min(1).max(500).default(100),
  })
  .strict();

export const timelineQuery = z
  .object({
    /** Accesses at or after this instant (ISO 8601). */
    from: instant.optional(),
    /** Accesses before this instant (ISO 8601). */
    to: instant.optional(),
    /** Opaque cursor from the previous page's `nextCursor`. */
    cursor: z
      .string()
      .regex(/^[0-9]{1,19}$/)
      .optional(),
    /** Entries per page, 1 to 500. */
    limit: z.coerce.number().int().min(1).max(500).default(200),
  })
  .strict();

const idList = z.array(z.uuid()).max(500).default([]);
export const auditNamesRequest = z
  .object({
    /** Account ids to name (actors, impersonators, accounts acted on), at most 500. */
    userIds: idList,
    /** Tenant ids to name, at most 500. */
    tenantIds: idList,
    /** Patient ids to name, at most 500 (only for roles that may read a patient's name). */
    patientIds: idList,
  })
  .strict();
export type AuditNamesReq = z.input<typeof auditNamesRequest>;

export const timelineParams = z.object({ /** The patient whose record's access history is asked for. */ patientId: z.string().min(1).max(200) }).strict();

export const exportRequest = z
  .object({
    /** Start of the range (ISO 8601), inclusive. */
    from: instant,
    /** End of the range (ISO 8601), exclusive. */
    to: instant,
    /** Event formats besides JSON Lines (always written: it is the verifiable form). */
    formats: z
      .array(z.enum(["csv", "jsonl", "fhir"]))
      .max(3)
      .default(["csv", "jsonl", "fhir"]),
  })
  .strict();

export const exportParams = z.object({ /** The export, e.g. audit-20250101T120000Z-1a2b3c4d. */ id: z.string().regex(/^audit-[0-9TZ]+-[0-9a-f]{8}$/) }).strict();

export const checkpointView = z.object({
  /** Checkpoint id. */
  id: z.string(),
  /** The chain sequence number it covers (decimal string). */
  seq: z.string(),
  /** The chain head hash at that sequence, hex. */
  headHash: z.string(),
  /** When it was signed. */
  signedAt: z.string(),
  /** Fingerprint of the signing key. */
  keyId: z.string(),
  /** Raw Ed25519 public key, base64. */
  publicKey: z.string(),
  /** Ed25519 signature, base64. */
  signature: z.string(),
  /** Why it was written. */
  purpose: z.enum(["periodic", "export", "retention", "manual"]),
});
export const checkpointListResponse = z.object({ /** The newest 500 checkpoints, oldest first. */ checkpoints: z.array(checkpointView) });

export type SearchQueryReq = z.infer<typeof searchQuery>;
export type TimelineQueryReq = z.infer<typeof timelineQuery>;
export type ExportReq = z.input<typeof exportRequest>;
export type CheckpointRes = z.infer<typeof checkpointView>;
export type CheckpointListRes = z.infer<typeof checkpointListResponse>;
