import type { Transaction } from "sequelize";
import type { Actor } from "../access/actor.js";
import { appendAuditEvent, type AuditEventInput, type AuditOutcome } from "../audit/append.js";
import type { RequestMeta } from "../auth/audit-events.js";
import type { ApplianceContext } from "../context.js";

/** The purge job and other work nobody in particular asked for at that moment. */
export const SYSTEM_ACTOR = { userId: null, role: "system", tenantId: null } as const;

export type RecordsActor = Actor | typeof SYSTEM_ACTOR;

export type PhiEvent = {
  /** `patient.read`, `note.amend`, `attachment.download`, `patient.purge`… */
  action: string;
  resourceType: "patient" | "appointment" | "note" | "consent" | "attachment" | "legal_hold" | "deletion_request" | "tenant";
  resourceId?: string | null;
  patientId?: string | null;
  tenantId: string;
  outcome?: AuditOutcome;
  /** Access rides on a break-glass grant (from `authorizePatient`). */
  breakGlass?: boolean;
  /** Ids, counts and rule names only: never a PHI value. */
  reason?: string | null;
};

/**
 * Every PHI read and write of the records capability goes through here, in the transaction of the
 * work (DESIGN "Audit trail"): ids only, never values. A failed audit write fails the request.
 */
export async function recordPhiEvent(ctx: ApplianceContext, t: Transaction, actor: RecordsActor, event: PhiEvent, meta: RequestMeta | null): Promise<void> {
  await appendAuditEvent(ctx, t, phiAuditEvent(actor, event, meta));
}

/** The audit event of a PHI read or write (for `recordPhiEvent`, or a statement that writes it itself). */
export function phiAuditEvent(actor: RecordsActor, event: PhiEvent, meta: RequestMeta | null): AuditEventInput {
  return {
    tenantId: event.tenantId,
    actor: {
      userId: actor.userId,
      role: actor.role,
      impersonatorId: "impersonatorId" in actor ? (actor.impersonatorId ?? null) : null,
      breakGlass: event.breakGlass === true,
    },
    action: event.action,
    resourceType: event.resourceType,
    resourceId: event.resourceId ?? null,
    patientId: event.patientId ?? null,
    outcome: event.outcome ?? "success",
    sourceIp: meta?.sourceIp ?? null,
    userAgent: meta?.userAgent ?? null,
    requestId: meta?.requestId ?? null,
    reason: event.reason ?? null,
  };
}
