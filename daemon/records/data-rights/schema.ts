import { z } from "zod";
import { pageQuery, text, uuid } from "../http.js";

/** Data rights: erasure requests with a grace period, legal holds, and record exports. */

// ---- deletion requests -------------------------------------------------------------------------

export const deletionListQuery = z
  .object({
    /** Only requests in this state. */
    status: z.enum(["pending", "cancelled", "purged"]).optional(),
    /** Requests per answer, 1 to 100. */
    limit: pageQuery.limit,
  })
  .strict();

export const deletionRequestView = z.object({
  /** Request id. */
  id: z.uuid(),
  /** A patient or the whole tenant. */
  subject: z.enum(["patient", "tenant"]),
  /** The patient, for a patient's erasure. */
  patientId: z.uuid().nullable(),
  /** pending until purged after the grace period, unless cancelled. */
  status: z.enum(["pending", "cancelled", "purged"]),
  /** When it was requested. */
  requestedAt: z.string(),
  /** The owner who requested it; null: the host operator (`wardkeep data-rights erasures request`). */
  requestedBy: z.uuid().nullable(),
  /** When the purge and crypto-shredding may run. */
  purgeAfter: z.string(),
  /** When it was cancelled. */
  cancelledAt: z.string().nullable(),
  /** Who cancelled it (null also when the host operator did). */
  cancelledBy: z.uuid().nullable(),
  /** When the data was purged and its keys scheduled for destruction. */
  purgedAt: z.string().nullable(),
  /** A due purge waits while a legal hold stands: since when. */
  blockedByLegalHoldSince: z.string().nullable(),
});
export const deletionRequestList = z.object({ /** Deletion requests, newest first. */ items: z.array(deletionRequestView) });

/** Requesting a tenant's erasure or cancelling one takes no input. */
export const emptyBody = z.object({}).strict();

// ---- legal holds --------------------------------------------------------------------------------

export const legalHoldPlace = z
  .object({
    /** The matter and why (for owners, admins and auditors; keep clinical detail out of it). */
    reason: text(3, 500),
  })
  .strict();

export const legalHoldRelease = z
  .object({
    /** Why the hold ends (matter closed, court order…): kept with the hold, encrypted like its reason. Optional for clients written before it existed; the console always asks. */
    reason: text(3, 500).optional(),
  })
  .strict();

export const legalHoldQuery = z
  .object({
    /** Only holds on this patient. */
    patientId: uuid.optional(),
    /** "true": only holds that still stand. */
    active: z.enum(["true", "false"]).optional(),
  })
  .strict();

export const legalHoldView = z.object({
  /** Hold id. */
  id: z.uuid(),
  /** The patient held. */
  patientId: z.uuid(),
  /** The matter and why. */
  reason: z.string(),
  /** When it was placed. */
  placedAt: z.string(),
  /** Who placed it; null: the host operator (`wardkeep data-rights holds place`). */
  placedBy: z.uuid().nullable(),
  /** When it was released. */
  releasedAt: z.string().nullable(),
  /** Who released it (null also when the host operator did). */
  releasedBy: z.uuid().nullable(),
  /** Why it was released (null while it stands, or when released without a reason). */
  releaseReason: z.string().nullable(),
  /** Still standing. */
  active: z.boolean(),
});
export const legalHoldList = z.object({ /** Legal holds, newest first. */ items: z.array(legalHoldView) });

// ---- exports --------------------------------------------------------------------------------------

export const CSV_RECORDS = ["patients", "appointments", "notes", "consents", "attachments"] as const;

export const exportQuery = z
  .object({
    /** JSON (everything) or CSV (one record type per download). */
    format: z.enum(["json", "csv"]).default("json"),
    /** For CSV (one table per download): which records. JSON always carries all of them. */
    records: z.enum(CSV_RECORDS).default("patients"),
  })
  .strict();

export type DeletionListReq = z.infer<typeof deletionListQuery>;
export type DeletionRequestRes = z.infer<typeof deletionRequestView>;
export type DeletionRequestListRes = z.infer<typeof deletionRequestList>;
export type LegalHoldPlaceReq = z.infer<typeof legalHoldPlace>;
export type LegalHoldReleaseReq = z.infer<typeof legalHoldRelease>;
export type LegalHoldQueryReq = z.infer<typeof legalHoldQuery>;
export type LegalHoldRes = z.infer<typeof legalHoldView>;
export type LegalHoldListRes = z.infer<typeof legalHoldList>;
export type ExportQueryReq = z.infer<typeof exportQuery>;
