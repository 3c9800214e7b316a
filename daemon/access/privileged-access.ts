import { recordAuthEvent, SYSTEM_ACTOR } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope, isUniqueViolation, type Tx } from "../db/sql.js";
import { accountIdOf, scopeOf, type Actor } from "../kernel/actor.js";
import { Conflict, Forbidden, Invalid, NotFound } from "../kernel/errors.js";
import { authorize, can } from "../kernel/policy.js";
import { SYSTEM_META, type RequestMeta } from "../kernel/request-meta.js";
import type { PrivilegedAccessReq, PrivilegedAccessRes } from "./schema.js";

/**
 * Just-in-time privileged access: a person asks for a privileged role (admin, auditor) for a
 * bounded time with a reason; a second admin, never the requester, approves or denies; an
 * approved grant is in force until `expires_at`. The session lookup (auth/sessions.ts) reads the
 * grant on every request against the request's clock, so it ends on every replica at the same
 * instant whether or not the expiry job has run; the job marks it ended and audits the expiry.
 */

type GrantRow = {
  id: string;
  tenant_id: string;
  user_id: string;
  user_email: string | null;
  base_role: string;
  role: PrivilegedAccessRes["role"];
  minutes: number;
  reason: string;
  status: PrivilegedAccessRes["status"];
  requested_at: Date;
  decided_by: string | null;
  decided_at: Date | null;
  expires_at: Date | null;
  ended_at: Date | null;
  end_reason: string | null;
};

const SELECT = `SELECT g.*, u.email AS user_email, u.role AS base_role FROM privileged_access_grants g JOIN users u ON u.id = g.user_id`;

function view(r: GrantRow, now: Date): PrivilegedAccessRes {
  return {
    id: r.id,
    userId: r.user_id,
    userEmail: r.user_email,
    baseRole: r.base_role,
    role: r.role,
    minutes: r.minutes,
    reason: r.reason,
    status: r.status,
    requestedAt: r.requested_at.toISOString(),
    decidedBy: r.decided_by,
    decidedAt: r.decided_at?.toISOString() ?? null,
    expiresAt: r.expires_at?.toISOString() ?? null,
    endedAt: r.ended_at?.toISOString() ?? null,
    endReason: r.end_reason,
    active: r.status === "approved" && r.expires_at !== null && r.expires_at > now,
  };
}

function tenantOf(actor: Actor): string {
  if (!actor.tenantId) throw new Invalid("privileged access is granted inside a tenant");
  return actor.tenantId;
}

async function load(t: Tx, id: string): Promise<GrantRow> {
  const [row] = await t.rows<GrantRow>(`${SELECT} WHERE g.id = $1 FOR UPDATE OF g`, [id]);
  if (!row) throw new NotFound("no such privileged access request");
  return row;
}

/** Asks for a privileged role for `minutes` (at most access.privilegedAccessMaxMinutes). */
export async function requestPrivilegedAccess(ctx: ApplianceContext, actor: Actor, input: PrivilegedAccessReq, meta: RequestMeta): Promise<PrivilegedAccessRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "privileged_access:request", { tenantId });
  const max = ctx.config.access.privilegedAccessMaxMinutes;
  if (input.minutes > max) throw new Invalid(`privileged access lasts at most ${max} minutes here (access.privilegedAccessMaxMinutes)`);
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [me] = await t.rows<{ role: string; kind: string }>("SELECT role, kind FROM users WHERE id = $1", [actor.userId]);
    if (!me || me.kind !== "human") throw new Forbidden("only people may ask for privileged access");
    if (me.role === input.role || me.role === "owner") throw new Conflict(`you already hold the ${me.role} role`);
    const now = ctx.clock.now();
    let id: string;
    try {
      const [row] = await t.rows<{ id: string }>(
        "INSERT INTO privileged_access_grants (tenant_id, user_id, role, reason, minutes, requested_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        [tenantId, actor.userId, input.role, input.reason, input.minutes, now],
      );
      id = row!.id;
    } catch (err) {
      if (isUniqueViolation(err)) throw new Conflict("you already have an open request or grant; end it first");
      throw err;
    }
    await recordAuthEvent(
      ctx,
      t,
      actor,
      {
        action: "privileged_access.request",
        resourceType: "privileged_access",
        resourceId: id,
        outcome: "success",
        reason: `${input.role} for ${input.minutes} min: ${input.reason}`,
      },
      meta,
    );
    return view(await load(t, id), now);
  });
}

/** Admins see the tenant's requests and grants; everyone else sees their own. */
export async function listPrivilegedAccess(ctx: ApplianceContext, actor: Actor): Promise<PrivilegedAccessRes[]> {
  const tenantId = tenantOf(actor);
  authorize(actor, "privileged_access:list", { tenantId });
  const all = can(actor, "privileged_access:approve", { tenantId });
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<GrantRow>(`${SELECT} WHERE g.tenant_id = $1 AND ($2::boolean OR g.user_id = $3) ORDER BY g.requested_at DESC LIMIT 500`, [
      tenantId,
      all,
      actor.userId,
    ]);
    return rows.map((r) => view(r, now));
  });
}

/**
 * A second admin's decision. The approver is never the requester (also a CHECK in the table),
 * and approving starts the clock: the grant lasts the minutes asked for from now.
 */
export async function decidePrivilegedAccess(ctx: ApplianceContext, actor: Actor, id: string, decision: "approve" | "deny", meta: RequestMeta): Promise<PrivilegedAccessRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, decision === "approve" ? "privileged_access:approve" : "privileged_access:deny", { tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const row = await load(t, id);
    if (row.user_id === actor.userId || row.user_id === actor.impersonatorId) throw new Forbidden("a second administrator must decide on your own request");
    if (row.status !== "pending") throw new Conflict(`this request is already ${row.status}`);
    const now = ctx.clock.now();
    const expiresAt = decision === "approve" ? new Date(now.getTime() + row.minutes * 60_000) : null;
    await t.exec("UPDATE privileged_access_grants SET status = $2, decided_by = $3, decided_at = $4, expires_at = $5 WHERE id = $1", [
      id,
      decision === "approve" ? "approved" : "denied",
      // The host's command line (wardkeep access approve) is no account: null, and the audit trail says host_operator.
      accountIdOf(actor),
      now,
      expiresAt,
    ]);
    if (decision === "approve") {
      // The role takes effect on the requester's next request, in the session they already have.
      await recordAuthEvent(
        ctx,
        t,
        actor,
        {
          action: "privileged_access.grant",
          resourceType: "privileged_access",
          resourceId: id,
          outcome: "success",
          reason: `${row.role} for user ${row.user_id} until ${expiresAt!.toISOString()}`,
        },
        meta,
      );
    } else {
      await recordAuthEvent(
        ctx,
        t,
        actor,
        { action: "privileged_access.deny", resourceType: "privileged_access", resourceId: id, outcome: "success", reason: `user ${row.user_id}` },
        meta,
      );
    }
    return view(await load(t, id), now);
  });
}

/** Ends a grant (or withdraws a request) early: the requester, or an admin. */
export async function endPrivilegedAccess(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<PrivilegedAccessRes> {
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const row = await load(t, id);
    authorize(actor, "privileged_access:end", { tenantId, ownerId: row.user_id });
    if (row.status !== "pending" && row.status !== "approved") throw new Conflict(`this request is already ${row.status}`);
    const now = ctx.clock.now();
    await t.exec("UPDATE privileged_access_grants SET status = 'ended', ended_at = $2, end_reason = 'ended-early' WHERE id = $1", [id, now]);
    // Sessions that held the role keep working with the base role from the next request on.
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "privileged_access.end", resourceType: "privileged_access", resourceId: id, outcome: "success", reason: `user ${row.user_id}` },
      meta,
    );
    return view(await load(t, id), now);
  });
}

/**
 * The expiry job: marks grants past their time as ended and audits each expiry. Access itself
 * already ended at `expires_at` (the session lookup checks it); this records that it did.
 */
export async function expirePrivilegedAccess(ctx: ApplianceContext): Promise<{ expired: number }> {
  const now = ctx.clock.now();
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const rows = await t.rows<{ id: string; tenant_id: string; user_id: string; role: string; expires_at: Date }>(
      `UPDATE privileged_access_grants SET status = 'ended', ended_at = expires_at, end_reason = 'expired'
        WHERE status = 'approved' AND expires_at <= $1 RETURNING id, tenant_id, user_id, role, expires_at`,
      [now],
    );
    for (const r of rows) {
      await recordAuthEvent(
        ctx,
        t,
        SYSTEM_ACTOR,
        {
          action: "privileged_access.expire",
          resourceType: "privileged_access",
          resourceId: r.id,
          tenantId: r.tenant_id,
          outcome: "success",
          reason: `${r.role} for user ${r.user_id} ended at ${r.expires_at.toISOString()}`,
        },
        SYSTEM_META,
      );
    }
    return { expired: rows.length };
  });
}
