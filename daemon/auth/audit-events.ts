import type { Request, Response } from "express";
import type { Transaction } from "sequelize";
import type { Actor } from "../access/actor.js";
import { appendAuditEvent, type AuditOutcome } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";

/** Where a request came from, passed from routes into services for the audit trail. */
export type RequestMeta = { sourceIp: string | null; userAgent: string | null; requestId: string | null };

export function requestMeta(req: Request, res: Response): RequestMeta {
  return {
    // req.ip honours server.trustProxy, so behind the hospital's proxy this is the client.
    sourceIp: req.ip ?? req.socket.remoteAddress ?? null,
    userAgent: req.get("user-agent")?.slice(0, 512) ?? null,
    requestId: (res.locals.requestId as string | undefined) ?? null,
  };
}

/** Services called outside HTTP (jobs, CLI, test factories). */
export const SYSTEM_META: RequestMeta = { sourceIp: null, userAgent: null, requestId: null };

/** Who did it: a signed-in actor, a known account before its session exists, or nobody (unknown account). */
export type AuthEventActor = Actor | { userId: string | null; role: string | null; tenantId?: string | null } | null;

export type AuthEvent = {
  /** Dotted verb: `auth.login`, `auth.mfa.verify`, `user.role.change`, `access.denied`… */
  action: string;
  resourceType: string;
  resourceId?: string | null;
  patientId?: string | null;
  /** Defaults to the actor's tenant. */
  tenantId?: string | null;
  outcome: AuditOutcome;
  /** Free text for auditors (break-glass reason, ticket reference, failure cause): never a password or token. */
  reason?: string | null;
  breakGlass?: boolean;
};

/**
 * The one place the identity and access capability writes the audit trail. Always called with
 * the transaction of the work it records, so the event and the change commit together (and a
 * failed audit write fails the work: daemon/audit/append.ts).
 */
export async function recordAuthEvent(
  ctx: ApplianceContext,
  transaction: Transaction,
  actor: AuthEventActor,
  event: AuthEvent,
  meta: RequestMeta,
): Promise<void> {
  const impersonatorId = actor && "impersonatorId" in actor ? (actor.impersonatorId ?? null) : null;
  await appendAuditEvent(ctx, transaction, {
    tenantId: event.tenantId !== undefined ? event.tenantId : (actor?.tenantId ?? null),
    actor: { userId: actor?.userId ?? null, role: actor?.role ?? null, impersonatorId, breakGlass: event.breakGlass === true },
    action: event.action,
    resourceType: event.resourceType,
    resourceId: event.resourceId ?? null,
    patientId: event.patientId ?? null,
    outcome: event.outcome,
    sourceIp: meta.sourceIp,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
    reason: event.reason ?? null,
  });
}
