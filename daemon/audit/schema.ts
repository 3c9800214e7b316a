import { z } from "zod";

/**
 * Response schemas of the audit routes. Leaf module (zod only): the admin UI imports the
 * inferred types, so it cannot read a field these routes do not send. Events carry ids, never PHI.
 */

export const auditActor = z.object({
  userId: z.string().nullable(),
  role: z.string().nullable(),
  /** The support user acting under an approved request, when there is one. */
  impersonatorId: z.string().nullable(),
  breakGlass: z.boolean(),
});

/** One chained event as search shows it. */
export const auditEventView = z.object({
  /** Chain sequence number (a decimal string: bigint). */
  seq: z.string(),
  recordedAt: z.string(),
  occurredAt: z.string(),
  tenantId: z.string().nullable(),
  eventId: z.string(),
  actor: auditActor,
  action: z.string(),
  resourceType: z.string(),
  resourceId: z.string().nullable(),
  patientId: z.string().nullable(),
  outcome: z.string(),
  sourceIp: z.string().nullable(),
  userAgent: z.string().nullable(),
  requestId: z.string().nullable(),
  reason: z.string().nullable(),
  /** SHA-256 of the event in the chain, hex. */
  hash: z.string(),
});

/** `GET /api/v1/audit`: newest first; `nextCursor` continues below the last seq. */
export const auditSearchResponse = z.object({
  events: z.array(auditEventView),
  nextCursor: z.string().nullable(),
});

/** One line of a patient's access timeline. */
export const timelineEntry = z.object({
  seq: z.string(),
  /** When the access happened. */
  at: z.string(),
  actor: auditActor,
  action: z.string(),
  resourceType: z.string(),
  resourceId: z.string().nullable(),
  outcome: z.string(),
  reason: z.string().nullable(),
  sourceIp: z.string().nullable(),
});

/** `GET /api/v1/audit/patients/{patientId}/timeline`: oldest first. */
export const timelineResponse = z.object({
  patientId: z.string(),
  entries: z.array(timelineEntry),
  nextCursor: z.string().nullable(),
});

/** `GET /api/v1/audit/verify`. */
export const verifyReport = z.object({
  intact: z.boolean(),
  /** Events checked and found intact (decimal string). */
  verified: z.string(),
  firstSeq: z.string().nullable(),
  /** Intact up to this seq (the head when intact). */
  lastGoodSeq: z.string(),
  head: z.string(),
  startedFrom: z.discriminatedUnion("kind", [z.object({ kind: z.literal("genesis") }), z.object({ kind: z.literal("anchor"), segment: z.string(), seq: z.string() })]),
  checkpoints: z.object({ total: z.number(), verified: z.number(), lastSignedSeq: z.string().nullable() }),
  /** Which keys signatures were checked against; "database" means the rows' own keys (weak). */
  keyTrust: z.enum(["keyring", "pinned", "given", "database"]),
  keyIds: z.array(z.string()),
  break: z.object({ seq: z.string(), reason: z.enum(["changed", "missing", "reordered", "duplicate", "bad-checkpoint-signature", "checkpoint-mismatch"]), detail: z.string() }).optional(),
  summary: z.string(),
});

const shownKey = z.object({
  /** Fingerprint-based key id. */
  keyId: z.string(),
  keyringVersion: z.number().nullable(),
  legacy: z.boolean(),
  publicKeyPem: z.string(),
  /** Raw 32-byte Ed25519 public key, base64. */
  publicKeyRaw: z.string(),
});

/** `GET /api/v1/audit/public-key`: the key that signs now, and every key that still verifies. */
export const publicKeyResponse = shownKey.extend({
  algorithm: z.literal("Ed25519"),
  verificationKeys: z.array(shownKey.extend({ retiredAt: z.string().nullable() })),
});

/** An evidence-pack export requested over the API. */
export const exportJob = z.object({
  id: z.string(),
  status: z.enum(["running", "done", "failed"]),
  tenantId: z.string().nullable(),
  from: z.string(),
  to: z.string(),
  formats: z.array(z.enum(["csv", "jsonl", "fhir"])),
  progress: z.object({ done: z.number(), total: z.number().nullable() }),
  manifest: z.unknown(),
  error: z.string().nullable(),
  createdAt: z.string(),
  finishedAt: z.string().nullable(),
});

/** `GET /api/v1/audit/exports`. */
export const exportListResponse = z.object({ exports: z.array(exportJob) });

export type AuditEventView = z.infer<typeof auditEventView>;
export type AuditSearchRes = z.infer<typeof auditSearchResponse>;
export type TimelineEntry = z.infer<typeof timelineEntry>;
export type TimelineRes = z.infer<typeof timelineResponse>;
export type VerifyReportRes = z.infer<typeof verifyReport>;
export type PublicKeyRes = z.infer<typeof publicKeyResponse>;
export type ExportJobRes = z.infer<typeof exportJob>;
export type ExportListRes = z.infer<typeof exportListResponse>;
