import { z } from "zod";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict, NotFound } from "../kernel/errors.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { patientAccessFor } from "./care-team.js";
import { authorize } from "../kernel/policy.js";
import { breakGlassRequest } from "./schema.js";
import { publishWebhookEvent } from "../webhooks/index.js";

/**
 * Break-glass: a practitioner opens a patient outside their care team by stating why. The grant
 * lasts `access.breakGlassMinutes` (1 h by default), is flagged in the audit trail (and every
 * access under it is, through `authorizePatient`), and raises a notification to the tenant's admins.
 */
export { breakGlassRequest };

export type BreakGlassGrant = { id: string; userId: string; patientId: string; reason: string; createdAt: string; expiresAt: string; active: boolean };

type GrantRow = { id: string; user_id: string; patient_id: string; reason: string; created_at: Date; expires_at: Date; ended_at: Date | null };

const view = (r: GrantRow, now: Date): BreakGlassGrant => ({
  id: r.id,
  userId: r.user_id,
  patientId: r.patient_id,
  reason: r.reason,
  createdAt: r.created_at.toISOString(),
  expiresAt: r.expires_at.toISOString(),
  active: !r.ended_at && r.expires_at > now,
});

export async function openBreakGlass(
  ctx: ApplianceContext,
  actor: Actor,
  patientId: string,
  input: z.infer<typeof breakGlassRequest>,
  meta: RequestMeta,
): Promise<BreakGlassGrant> {
  authorize(actor, "break_glass:create", { tenantId: actor.tenantId });
  const now = ctx.clock.now();
  const grant = await inScope(ctx.db.app, scopeOf(actor), async (t) => {
    // Unknown and purged patients (records capability, migration 0006): nothing to open.
    const [patient] = await t.rows("SELECT 1 FROM patients WHERE id = $1 AND tenant_id = $2 AND status = 'active'", [patientId, actor.tenantId]);
    if (!patient) throw new NotFound("no such patient");
    const access = await patientAccessFor(ctx, t, actor, patientId);
    if (access.assigned) throw new Conflict("you are on this patient's care team: no break-glass is needed");
    if (access.breakGlass) throw new Conflict("you already hold break-glass access to this patient");
    const expiresAt = new Date(now.getTime() + ctx.config.access.breakGlassMinutes * 60_000);
    const [row] = await t.rows<GrantRow>(
      "INSERT INTO break_glass_grants (tenant_id, user_id, patient_id, reason, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
      [actor.tenantId, actor.userId, patientId, input.reason, now, expiresAt],
    );
    await t.exec("INSERT INTO admin_notifications (tenant_id, kind, actor_user_id, subject_id, patient_id, created_at) VALUES ($1, 'break_glass', $2, $3, $4, $5)", [
      actor.tenantId,
      actor.userId,
      row!.id,
      patientId,
      now,
    ]);
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "break_glass.open", resourceType: "patient", resourceId: patientId, patientId, outcome: "success", breakGlass: true, reason: input.reason },
      meta,
    );
    // Ids only: the stated reason stays in the audit trail.
    await publishWebhookEvent(ctx, t, {
      tenantId: actor.tenantId,
      type: "break_glass.used",
      data: { grantId: row!.id, patientId, userId: actor.userId, expiresAt: expiresAt.toISOString() },
    });
    return row!;
  });
  // Ids only: the reason may name the patient's condition.
  ctx.log.warn("break-glass access opened", { tenantId: actor.tenantId, userId: actor.userId, grantId: grant.id, expiresAt: grant.expires_at.toISOString() });
  return view(grant, now);
}

export async function listBreakGlass(ctx: ApplianceContext, actor: Actor, opts: { patientId?: string; activeOnly?: boolean } = {}): Promise<BreakGlassGrant[]> {
  authorize(actor, "break_glass:list", { tenantId: actor.tenantId });
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<GrantRow>(
      `SELECT * FROM break_glass_grants WHERE tenant_id = $1 AND ($2::uuid IS NULL OR patient_id = $2::uuid)
         AND (NOT $3::boolean OR (ended_at IS NULL AND expires_at > $4)) ORDER BY created_at DESC LIMIT 500`,
      [actor.tenantId, opts.patientId ?? null, opts.activeOnly === true, now],
    );
    return rows.map((r) => view(r, now));
  });
}
