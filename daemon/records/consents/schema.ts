import { z } from "zod";
import { instant, pageQuery, text, undecryptableCount } from "../http.js";

/**
 * Consent records of a consent platform. A grant never changes; a revocation is a new event
 * with its own time, actor and evidence. `type` and `textVersion` are codes (not PHI) so they
 * may appear in queries; scope and evidence are encrypted.
 */
const code = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "a code: lowercase letters, digits, . _ -, up to 64");
const textVersion = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/, "a version label: letters, digits, . _ -, up to 32");

const base64 = z
  .string()
  .max(700_000)
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, "base64");

export const consentEvidence = z.discriminatedUnion("method", [
  z
    .object({
      method: z.literal("signature"),
      /** The captured signature image or signed document. */
      mediaType: z.enum(["image/png", "image/jpeg", "image/svg+xml", "application/pdf"]),
      /** Base64 of the captured signature (up to about 500 KiB). */
      data: base64,
      /** Who signed when not the patient (guardian, proxy). */
      signedBy: text(1, 200).optional(),
    })
    .strict(),
  z
    .object({
      method: z.literal("attestation"),
      /** What the staff member attests (e.g. verbal consent given in their presence). */
      statement: text(1, 2000),
      witness: text(1, 200).optional(),
    })
    .strict(),
]);

export const consentGrant = z
  .object({
    /** Consent type code, e.g. `treatment`, `research`, `data-sharing`. */
    type: code,
    /** Version of the consent text the patient agreed to. */
    textVersion,
    /** What the consent covers, in the consent platform's words. */
    scope: text(1, 2000).optional(),
    evidence: consentEvidence,
    /** When the consent lapses by itself; must be in the future. */
    expiresAt: instant.optional(),
  })
  .strict();

export const consentRevoke = z
  .object({
    evidence: consentEvidence,
    reason: text(1, 500).optional(),
  })
  .strict();

export const consentListQuery = z.object({ type: code.optional(), ...pageQuery }).strict();

export const inForceQuery = z
  .object({
    type: code,
    /** Only a grant of this text version counts. */
    textVersion: textVersion.optional(),
    /** The moment asked about; default now. */
    at: instant.optional(),
  })
  .strict();

const revocationView = z.object({ revokedAt: z.string(), revokedBy: z.uuid(), method: z.enum(["signature", "attestation"]), reason: z.string().nullable() });

export const consentSummary = z.object({
  /** Consent id. */
  id: z.uuid(),
  /** The patient. */
  patientId: z.uuid(),
  /** Consent type code. */
  type: z.string(),
  /** Version of the consent text agreed to. */
  textVersion: z.string(),
  /** What the consent covers. */
  scope: z.string().nullable(),
  /** Captured signature, or staff attestation. */
  method: z.enum(["signature", "attestation"]),
  /** When it was granted. */
  grantedAt: z.string(),
  /** Who recorded it. */
  grantedBy: z.uuid(),
  /** When it lapses by itself. */
  expiresAt: z.string().nullable(),
  /** The revocation, if revoked. */
  revocation: revocationView.nullable(),
  state: z.enum(["in_force", "revoked", "expired"]).describe("As of now"),
});
export const consentView = consentSummary.extend({
  evidence: z.record(z.string(), z.unknown()).describe("The captured signature or attestation, as granted"),
  revocationEvidence: z.record(z.string(), z.unknown()).nullable(),
});
export const consentPage = z.object({ items: z.array(consentSummary), nextCursor: z.string().nullable(), undecryptable: undecryptableCount });
export const inForceAnswer = z.object({
  /** The patient. */
  patientId: z.uuid(),
  /** The consent type asked about. */
  type: z.string(),
  /** The moment asked about. */
  at: z.string(),
  /** Whether such a consent is in force then. */
  inForce: z.boolean(),
  /** The grant that makes it in force (the latest one), or null. */
  consent: consentSummary.nullable(),
});

export type ConsentGrant = z.infer<typeof consentGrant>;
export type ConsentRevoke = z.infer<typeof consentRevoke>;
export type ConsentSummary = z.infer<typeof consentSummary>;
export type ConsentView = z.infer<typeof consentView>;
export type InForceQuery = z.infer<typeof inForceQuery>;
