import { z } from "zod";

/**
 * Response schemas of the access routes (capabilities, tenants, security settings, users,
 * support requests). Leaf module (zod only): the admin UI imports the inferred types, so it
 * cannot read a field these routes do not send.
 */

/** `GET /api/v1/access/capabilities`: policy actions allowed at route level, and which ask for step-up. */
export const capabilitiesResponse = z.object({ actions: z.array(z.string()), stepUp: z.array(z.string()) });

export const tenantView = z.object({ id: z.string(), name: z.string(), slug: z.string(), status: z.string(), createdAt: z.string() });

/** `GET|PUT /api/v1/settings/security`: effective values, and whether each is the appliance default. */
export const securitySettingsView = z.object({
  mfaRequired: z.boolean(),
  idleTimeoutMinutes: z.number(),
  idleTimeoutIsDefault: z.boolean(),
  inactiveUserDays: z.number(),
  inactiveUserDaysIsDefault: z.boolean(),
  absoluteLifetimeHours: z.number(),
});

export const userView = z.object({
  id: z.string(),
  tenantId: z.string().nullable(),
  email: z.string().nullable(),
  displayName: z.string().nullable(),
  role: z.string(),
  kind: z.enum(["human", "service"]),
  status: z.enum(["active", "deactivated"]),
  mfaEnabled: z.boolean(),
  lastLoginAt: z.string().nullable(),
  createdAt: z.string(),
  deactivatedAt: z.string().nullable(),
});

export const supportRequestView = z.object({
  id: z.string(),
  tenantId: z.string(),
  requestedBy: z.string(),
  ticketRef: z.string(),
  reason: z.string(),
  status: z.enum(["pending", "approved", "denied", "ended", "expired"]),
  createdAt: z.string(),
  decidedBy: z.string().nullable(),
  decidedAt: z.string().nullable(),
  expiresAt: z.string().nullable(),
});

export type CapabilitiesRes = z.infer<typeof capabilitiesResponse>;
export type TenantRes = z.infer<typeof tenantView>;
export type SecuritySettingsRes = z.infer<typeof securitySettingsView>;
export type UserRes = z.infer<typeof userView>;
export type SupportRequestRes = z.infer<typeof supportRequestView>;
