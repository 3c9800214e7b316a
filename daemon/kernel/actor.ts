import type { Response } from "express";
import { Unauthorized } from "./errors.js";

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
  /** How the actor authenticated; "host": an operator at the appliance host's command line (`wardkeep ...`). */
  via: "session" | "api-token" | "host";
  /** Session id (for step-up, revocation) when via = session. */
  sessionId?: string;
  /** Scopes of an API token; undefined for sessions. */
  scopes?: string[];
  /** When the actor last proved a second factor (step-up for sensitive actions). */
  mfaVerifiedAt?: Date;
  /**
   * Set while support staff act inside a tenant under an approved request. Then `userId` is the
   * tenant admin who approved it (on whose authority the work is done), `impersonatorId` the
   * support user (who does it), and `role` stays "support" so the policy keeps them to support's
   * permissions. Every response of such a request carries the Wardkeep-Support-Access header.
   */
  supportAccess?: { requestId: string; supportUserId: string; approvedBy: string; approvedByName: string; expiresAt: Date };
};

/**
 * The operator at the appliance host's command line (`wardkeep tenant ...`, `wardkeep user ...`).
 * Whoever can run the CLI already holds the database owner's credentials and the key store, so
 * the policy treats them as appliance staff (super-admin) without a second factor; the audit
 * trail records them as `host_operator` with no account id, as the other CLI commands do.
 */
export const HOST_OPERATOR_ID = "00000000-0000-0000-0000-000000000000";
export const HOST_OPERATOR: Actor = { userId: HOST_OPERATOR_ID, role: "super_admin", tenantId: null, via: "host" };

/**
 * The host operator acting inside one tenant (`wardkeep token create --tenant`, `wardkeep user
 * deactivate`): with the tenant owner's permissions, the highest a tenant has, since some tenant
 * work (API tokens) is not the appliance staff's to do from the console.
 */
export function hostOperatorIn(tenantId: string): Actor {
  return { userId: HOST_OPERATOR_ID, role: "owner", tenantId, via: "host" };
}

/** The account a row records as having acted: none (NULL) for the host operator, who has no account. */
export function accountIdOf(actor: Actor): string | null {
  return actor.via === "host" ? null : actor.userId;
}

/** Why a request carries no actor, so a 401 can tell the UI what happened. */
export type AuthenticationGap = { reason: "mfa_required" | "mfa_enrollment_required" } | { reason: "idle_timeout" | "session_expired" | "session_revoked"; idleMinutes?: number };

export function currentActor(res: Response): Actor {
  const actor = res.locals.actor as Actor | undefined;
  if (!actor) throw unauthenticated(res.locals.authGap as AuthenticationGap | undefined);
  return actor;
}

function unauthenticated(gap: AuthenticationGap | undefined): Unauthorized {
  switch (gap?.reason) {
    case "mfa_required":
      return new Unauthorized("enter the code from your authenticator app to finish signing in", { reason: gap.reason });
    case "mfa_enrollment_required":
      return new Unauthorized("set up an authenticator app to finish signing in", { reason: gap.reason });
    case "idle_timeout":
      return new Unauthorized(`your session ended after ${gap.idleMinutes ?? "some"} minutes without activity; sign in again`, { reason: gap.reason });
    case "session_expired":
      return new Unauthorized("your session reached its maximum lifetime; sign in again", { reason: gap.reason });
    case "session_revoked":
      return new Unauthorized("your session was ended; sign in again", { reason: gap.reason });
    default:
      return new Unauthorized("sign in first");
  }
}

/** The scope a request's transaction runs in: its tenant, or the appliance for appliance staff. */
export function scopeOf(actor: Actor): { kind: "tenant"; tenantId: string } | { kind: "appliance" } {
  return actor.tenantId ? { kind: "tenant", tenantId: actor.tenantId } : { kind: "appliance" };
}
