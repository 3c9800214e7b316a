import type { Response } from "express";
import { Unauthorized } from "../http/errors.js";

export const ROLES = ["super_admin", "owner", "admin", "practitioner", "front_desk", "auditor", "support"] as const;
export type Role = (typeof ROLES)[number];

/**
 * Who is making a request, as established by the auth capability (session cookie or API token)
 * and stored in `res.locals.actor`. Every policy decision and audit event starts from this.
 */
export type Actor = {
  userId: string;
  role: Role;
  /** The tenant the request acts in; null for appliance-level staff outside a tenant. */
  tenantId: string | null;
  /** Support staff acting inside a tenant under an approved request: the support user's id. */
  impersonatorId?: string;
  /** How the actor authenticated. */
  via: "session" | "api-token";
  /** Session id (for step-up, revocation) when via = session. */
  sessionId?: string;
  /** Scopes of an API token; undefined for sessions. */
  scopes?: string[];
  /** When the actor last proved a second factor (step-up for sensitive actions). */
  mfaVerifiedAt?: Date;
};

export function currentActor(res: Response): Actor {
  const actor = res.locals.actor as Actor | undefined;
  if (!actor) throw new Unauthorized("sign in first");
  return actor;
}
