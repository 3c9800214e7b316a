import { z } from "zod";

/**
 * SCIM provisioning tokens: the request and response schemas of the routes a tenant admin uses
 * to give the identity provider's provisioning client its bearer token. The SCIM protocol
 * itself (/scim/v2) speaks application/scim+json, described in docs/scim.md. Leaf module (zod
 * only): the admin UI imports the inferred types.
 */

const isoTime = z.string().describe("ISO 8601 instant");
export const idParams = z.object({ /** The resource's id. */ id: z.uuid() }).strict();

/** Roles a provisioned account may get by default: never an administrative one. */
export const SCIM_DEFAULT_ROLES = ["practitioner", "front_desk", "auditor"] as const;

export const createScimTokenRequest = z
  .object({
    /** Which provisioning client holds it, e.g. "Entra ID provisioning". */
    name: z.string().trim().min(1).max(100),
    /** The role accounts created through this token get until a group rule assigns another. */
    defaultRole: z.enum(SCIM_DEFAULT_ROLES).default("practitioner"),
  })
  .strict();

export const scimTokenView = z.object({
  /** Token id (the SCIM client's id in the audit trail). */
  id: z.uuid(),
  /** Which provisioning client holds it. */
  name: z.string(),
  /** The role accounts created through it get. */
  defaultRole: z.enum(SCIM_DEFAULT_ROLES),
  /** The token's first characters, to recognise it. */
  prefix: z.string(),
  /** Who created it (null: the host's command line). */
  createdBy: z.uuid().nullable(),
  /** When it was created. */
  createdAt: isoTime,
  /** When the client last used it (to the minute). */
  lastUsedAt: isoTime.nullable(),
  /** When it was revoked; null while it works. */
  revokedAt: isoTime.nullable(),
});

export const scimTokenList = z.object({
  /** The SCIM base URL to give the identity provider (tenant URL / SCIM connector base URL). */
  baseUrl: z.string(),
  /** The tenant's SCIM tokens, newest first. */
  tokens: z.array(scimTokenView),
});

export const createdScimToken = z.object({
  /** The bearer secret, shown once (only its SHA-256 is kept). */
  token: z.string(),
  /** The SCIM base URL to give the identity provider. */
  baseUrl: z.string(),
  /** The token's record. */
  scimToken: scimTokenView,
});

export type CreateScimTokenReq = z.input<typeof createScimTokenRequest>;
export type ScimTokenRes = z.infer<typeof scimTokenView>;
export type ScimTokenListRes = z.infer<typeof scimTokenList>;
export type CreatedScimTokenRes = z.infer<typeof createdScimToken>;
