import type { Request, Response } from "express";
import type { Transaction } from "sequelize";
import type { Actor } from "../access/actor.js";
import { appendAuditEvent, type AuditOutcome } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/tenant-scope.js";

/**
 * Who asked for a key operation, for the audit trail: a signed-in actor over HTTP, an operator at
 * the CLI (`wardkeep keys ...` on the appliance host), or the appliance itself (jobs).
 */
export type KeyOperator = {
  userId: string | null;
  role: string | null;
  tenantId: string | null;
  impersonatorId?: string | null;
  sourceIp: string | null;
  userAgent: string | null;
  requestId: string | null;
};

export const CLI_OPERATOR: KeyOperator = { userId: null, role: "host_operator", tenantId: null, sourceIp: null, userAgent: "wardkeep-cli", requestId: null };
export const SYSTEM_OPERATOR: KeyOperator = { userId: null, role: "system", tenantId: null, sourceIp: null, userAgent: null, requestId: null };

export function operatorOf(req: Request, res: Response, actor?: Actor): KeyOperator {
  return {
    userId: actor?.userId ?? null,
    role: actor?.role ?? null,
    tenantId: actor?.tenantId ?? null,
    impersonatorId: actor?.impersonatorId ?? null,
    sourceIp: req.ip ?? req.socket.remoteAddress ?? null,
    userAgent: req.get("user-agent")?.slice(0, 512) ?? null,
    requestId: (res.locals.requestId as string | undefined) ?? null,
  };
}

export type KeyEvent = {
  /** `keys.unseal`, `keys.seal`, `keys.rotate`, `keys.rekey`, `keys.recovery_kit`, `keys.shred.*` */
  action: string;
  /** Key id or subject ("tenant/<uuid>", "kek"): ids only. */
  resourceId: string | null;
  tenantId?: string | null;
  patientId?: string | null;
  outcome: AuditOutcome;
  reason?: string | null;
};

/** Writes a key event in the transaction of the work it records (a failed write fails the work). */
export async function recordKeyEvent(ctx: ApplianceContext, t: Transaction, by: KeyOperator, event: KeyEvent): Promise<void> {
  await appendAuditEvent(ctx, t, {
    tenantId: event.tenantId !== undefined ? event.tenantId : by.tenantId,
    actor: { userId: by.userId, role: by.role, impersonatorId: by.impersonatorId ?? null },
    action: event.action,
    resourceType: "key",
    resourceId: event.resourceId,
    patientId: event.patientId ?? null,
    outcome: event.outcome,
    sourceIp: by.sourceIp,
    userAgent: by.userAgent,
    requestId: by.requestId,
    reason: event.reason ?? null,
  });
}

/** For operations with no transaction of their own (unseal, seal): the event in its own. */
export async function recordKeyEventAlone(ctx: ApplianceContext, by: KeyOperator, event: KeyEvent): Promise<void> {
  await inScope(ctx.db.app, { kind: "appliance" }, (t) => recordKeyEvent(ctx, t, by, event));
}
