import { z } from "zod";

/**
 * Every record class of the register, in the order a run purges them: a patient's own records
 * before the patient (whose tombstone and crypto-shredding wait until nothing of theirs is left).
 */
export const RECORD_CLASSES = ["note", "audio", "attachment", "appointment", "consent", "patient", "session", "invite", "support_request", "export_file", "audit_event"] as const;
export type RecordClass = (typeof RECORD_CLASSES)[number];

/**
 * What a rule's period counts from: creation (or, for appointments, their end), expiry (sessions,
 * invites; a consent's or support request's end), the patient's last encounter, discharge or
 * deactivation, or the patient's age of majority (retention.ageOfMajorityYears).
 */
export const TRIGGERS = ["creation", "expiry", "last_encounter", "discharge", "age_of_majority"] as const;
export type Trigger = (typeof TRIGGERS)[number];

export const classParams = z.object({ /** The record class. */ recordClass: z.enum(RECORD_CLASSES) });

/** One class's rule as it applies now: the tenant's own, or the default from config. */
export const retentionRuleView = z.object({
  recordClass: z.enum(RECORD_CLASSES),
  /** What the period counts from (TRIGGERS); each class accepts the triggers listed in `triggers`. */
  trigger: z.enum(TRIGGERS),
  /** The triggers this class accepts. */
  triggers: z.array(z.enum(TRIGGERS)),
  periodDays: z.number(),
  /** The citation the tenant entered (state law, 42 CFR 482.24(b)(1), HIPAA 164.316(b)(2)(i)…). */
  legalBasis: z.string().nullable(),
  /** The legal minimum the tenant entered: a shorter period is refused. */
  legalMinimumDays: z.number().nullable(),
  /** default: from config; tenant: the tenant's own rule. */
  source: z.enum(["default", "tenant"]),
  updatedAt: z.string().nullable(),
});
export type RetentionRuleRes = z.infer<typeof retentionRuleView>;
export const retentionRulesResponse = z.object({ rules: z.array(retentionRuleView) });

export const retentionRuleChange = z
  .object({
    periodDays: z.number().int().min(1).max(36500),
    /** Another trigger the class accepts (kept from the current rule when absent). */
    trigger: z.enum(TRIGGERS).optional(),
    legalBasis: z.string().trim().max(500).nullable().optional(),
    legalMinimumDays: z.number().int().min(1).max(36500).nullable().optional(),
    /** When the new rule would purge records on the next run: the count the preview showed, to confirm it. */
    confirmPurgeCount: z.number().int().min(0).optional(),
  })
  .strict();
export type RetentionRuleChangeReq = z.infer<typeof retentionRuleChange>;

/** What the next run would purge, per class (held records are not counted as purged). */
export const retentionPreview = z.object({
  classes: z.array(
    z.object({
      recordClass: z.enum(RECORD_CLASSES),
      cutoff: z.string(),
      wouldPurge: z.number(),
      heldBack: z.number(),
      /** Why this class's purge destroys nothing whatever its rule (no such records in the product, another job keeps them), else null. */
      never: z.string().nullable(),
    }),
  ),
  total: z.number(),
});
export type RetentionPreviewRes = z.infer<typeof retentionPreview>;

export const ruleChangeResult = z.object({ rule: retentionRuleView, preview: retentionPreview });
export type RetentionRulesRes = z.infer<typeof retentionRulesResponse>;
export type RuleChangeResultRes = z.infer<typeof ruleChangeResult>;

export const retentionHoldView = z.object({
  id: z.string(),
  /** null: every class of the tenant. */
  recordClass: z.enum(RECORD_CLASSES).nullable(),
  reason: z.string(),
  placedAt: z.string(),
  placedBy: z.string().nullable(),
  releasedAt: z.string().nullable(),
  releasedBy: z.string().nullable(),
  releaseReason: z.string().nullable(),
});
export const retentionHoldsResponse = z.object({ holds: z.array(retentionHoldView) });
export type RetentionHoldRes = z.infer<typeof retentionHoldView>;
export type RetentionHoldsRes = z.infer<typeof retentionHoldsResponse>;
export const retentionHoldPlace = z.object({ recordClass: z.enum(RECORD_CLASSES).nullable(), reason: z.string().trim().min(1).max(500) }).strict();
export const retentionHoldRelease = z.object({ reason: z.string().trim().min(1).max(500) }).strict();
export const holdParams = z.object({ id: z.uuid() });

const classCounts = z.object({
  count: z.number(),
  batches: z.number(),
  firstId: z.string().nullable(),
  lastId: z.string().nullable(),
  /** In creation order (notes): the creation times of the first and last row destroyed (UTC, microseconds). */
  firstAt: z.string().optional(),
  lastAt: z.string().optional(),
});
export const retentionRunView = z.object({
  id: z.string(),
  status: z.enum(["running", "finished"]),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  /** Per class: rows destroyed, batches, and the range destroyed (first and last id; in creation order with their creation times). */
  counts: z.record(z.string(), classCounts),
  /** Whether the signed disposition certificate is ready to download. */
  certified: z.boolean(),
});
export const retentionRunsResponse = z.object({ runs: z.array(retentionRunView) });
export type RetentionRunRes = z.infer<typeof retentionRunView>;
export type RetentionRunsRes = z.infer<typeof retentionRunsResponse>;
export const runParams = z.object({ id: z.uuid() });

/** The disposition certificate: the signed text, the Ed25519 signature and the public key to check it with. */
export const dispositionCertificate = z.object({
  /** The certificate as signed (canonical JSON): verify the signature over these exact bytes (UTF-8). */
  certificate: z.string(),
  /** Ed25519 signature, base64. */
  signature: z.string(),
  /** The audit checkpoint signing key's public key, SPKI DER base64 (also in audit evidence packs). */
  publicKeySpki: z.string(),
  keyId: z.string(),
});
export type DispositionCertificateRes = z.infer<typeof dispositionCertificate>;
