import { z } from "zod";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict, Invalid, NotFound } from "../kernel/errors.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { authorize } from "../kernel/policy.js";
import { supportRequestInput } from "./schema.js";

/**
 * Support access: appliance support staff ask to enter a tenant with a ticket reference; one of
 * the tenant's owners or admins approves; from approval the access lasts
 * `access.supportAccessMinutes` (30 by default). The support user then "enters" it from their
 * session: every request of that session acts inside the tenant with support's (read-only)
 * permissions, records both identities, and its responses carry the Wardkeep-Support-Access header.
 */
export { supportRequestInput };

export type SupportRequestView = {
  id: string;
  tenantId: string;
  requestedBy: string;
  ticketRef: string;
  reason: string;
  status: "pending" | "approved" | "denied" | "ended" | "expired";
  createdAt: string;
  decidedBy: string | null;
  decidedAt: string | null;
  expiresAt: string | null;
};

type Row = {
  id: string;
  tenant_id: string;
  requested_by: string;
  ticket_ref: string;
  reason: string;
  status: "pending" | "approved" | "denied" | "ended";
  created_at: Date;
  decided_by: string | null;
  decided_at: Date | null;
  expires_at: Date | null;
};

function view(r: Row, now: Date): SupportRequestView {
  const status = r.status === "approved" && r.expires_at && r.expires_at <= now ? "expired" : r.status;
  return {
    id: r.id,
    tenantId: r.tenant_id,
    requestedBy: r.requested_by,
    ticketRef: r.ticket_ref,
    reason: r.reason,
    status,
    createdAt: r.created_at.toISOString(),
    decidedBy: r.decided_by,
    decidedAt: r.decided_at?.toISOString() ?? null,
    expiresAt: r.expires_at?.toISOString() ?? null,
  };
}

export async function requestSupportAccess(ctx: ApplianceContext, actor: Actor, input: z.infer<typeof supportRequestInput>, meta: RequestMeta): Promise<SupportRequestView> {
  authorize(actor, "support_request:create");
  const now = ctx.clock.now();
  return inScope(ctx.db.app, { kind: "tenant", tenantId: input.tenantId }, async (t) => {
    const tenant = await t.rows("SELECT 1 FROM tenants WHERE id = $1 AND status = 'active'", [input.tenantId]);
    if (!tenant.length) throw new NotFound("no such active tenant");
    const [row] = await t.rows<Row>("INSERT INTO support_requests (tenant_id, requested_by, ticket_ref, reason, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING *", [
      input.tenantId,
      actor.userId,
      input.ticketRef,
      input.reason,
      now,
    ]);
    await t.exec("INSERT INTO admin_notifications (tenant_id, kind, actor_user_id, subject_id, created_at) VALUES ($1, 'support_request', $2, $3, $4)", [
      input.tenantId,
      actor.userId,
      row!.id,
      now,
    ]);
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "support.request", resourceType: "support_request", resourceId: row!.id, tenantId: input.tenantId, outcome: "success", reason: `ticket ${input.ticketRef}` },
      meta,
    );
    return view(row!, now);
  });
}

/** Support staff see their own requests; super-admins all; tenant admins their tenant's. */
export async function listSupportRequests(ctx: ApplianceContext, actor: Actor): Promise<SupportRequestView[]> {
  authorize(actor, "support_request:list", { tenantId: actor.tenantId });
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [where, bind] = actor.tenantId ? ["tenant_id = $1", [actor.tenantId]] : actor.role === "support" ? ["requested_by = $1", [actor.userId]] : ["true", []];
    const rows = await t.rows<Row>(`SELECT * FROM support_requests WHERE ${where} ORDER BY created_at DESC LIMIT 500`, bind);
    return rows.map((r) => view(r, now));
  });
}

async function lockRequest(ctx: ApplianceContext, t: Parameters<typeof recordAuthEvent>[1], id: string): Promise<Row> {
  const [row] = await t.rows<Row>("SELECT * FROM support_requests WHERE id = $1 FOR UPDATE", [id]);
  if (!row) throw new NotFound("no such support request");
  return row;
}

/** A tenant owner or admin approves (access starts now and expires) or denies. */
export async function decideSupportRequest(ctx: ApplianceContext, actor: Actor, id: string, decision: "approve" | "deny", meta: RequestMeta): Promise<SupportRequestView> {
  authorize(actor, "support_request:decide", { tenantId: actor.tenantId });
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const row = await lockRequest(ctx, t, id);
    authorize(actor, "support_request:decide", { tenantId: row.tenant_id });
    if (row.status !== "pending") throw new Conflict(`the request is already ${row.status}`);
    const expiresAt = decision === "approve" ? new Date(now.getTime() + ctx.config.access.supportAccessMinutes * 60_000) : null;
    const [updated] = await t.rows<Row>("UPDATE support_requests SET status = $2, decided_by = $3, decided_at = $4, expires_at = $5 WHERE id = $1 RETURNING *", [
      id,
      decision === "approve" ? "approved" : "denied",
      actor.userId,
      now,
      expiresAt,
    ]);
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: `support.${decision}`, resourceType: "support_request", resourceId: id, outcome: "success", reason: `ticket ${row.ticket_ref}` },
      meta,
    );
    return view(updated!, now);
  });
}

/** The support user binds their session to an approved, unexpired request of theirs. */
export async function enterSupportAccess(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<SupportRequestView> {
  if (actor.via !== "session" || !actor.sessionId) throw new Invalid("support access is entered from a signed-in session");
  authorize(actor, "support_request:enter");
  const now = ctx.clock.now();
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const row = await lockRequest(ctx, t, id);
    authorize(actor, "support_request:enter", { ownerId: row.requested_by });
    if (row.status !== "approved") throw new Conflict(row.status === "pending" ? "the request has not been approved yet" : `the request is ${row.status}`);
    if (!row.expires_at || row.expires_at <= now) throw new Conflict("the approved access has expired; file a new request");
    await t.exec("UPDATE sessions SET support_request_id = $2 WHERE id = $1", [actor.sessionId, id]);
    await recordAuthEvent(
      ctx,
      t,
      { userId: row.decided_by, role: "support", impersonatorId: actor.impersonatorId ?? actor.userId, tenantId: row.tenant_id, via: "session" },
      { action: "support.enter", resourceType: "support_request", resourceId: id, tenantId: row.tenant_id, outcome: "success", reason: `ticket ${row.ticket_ref}` },
      meta,
    );
    return view(row, now);
  });
}

/** Ends support access early: the support user leaving, or a tenant admin withdrawing it. */
export async function endSupportAccess(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<SupportRequestView> {
  authorize(actor, "support_request:end");
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const row = await lockRequest(ctx, t, id);
    authorize(actor, "support_request:end", { tenantId: actor.tenantId ? row.tenant_id : undefined, ownerId: row.requested_by });
    if (row.status === "denied" || row.status === "ended") throw new Conflict(`the request is already ${row.status}`);
    const [updated] = await t.rows<Row>("UPDATE support_requests SET status = 'ended', ended_at = $2 WHERE id = $1 RETURNING *", [id, now]);
    // Sessions bound to it drop out of the tenant at their next request: authentication only
    // honours an approved, unexpired request (daemon/auth/sessions.ts).
    await recordAuthEvent(ctx, t, actor, { action: "support.end", resourceType: "support_request", resourceId: id, tenantId: row.tenant_id, outcome: "success" }, meta);
    return view(updated!, now);
  });
}
