import { type Tx } from "../db/sql.js";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict, Invalid, NotFound } from "../kernel/errors.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { authorize, type Action } from "../kernel/policy.js";

/**
 * Care teams: practitioners see the patients assigned to them. The records capability asks
 * `authorizePatient` before every read or write of a patient's data, inside its own transaction,
 * and flags the audit event with the `breakGlass` it returns.
 */
export type PatientAccess = { assigned: boolean; breakGlass: boolean };

/** Whether the actor is on the patient's care team, or holds an unexpired break-glass grant. */
export async function patientAccessFor(ctx: ApplianceContext, t: Tx, actor: Actor, patientId: string): Promise<PatientAccess> {
  if (!actor.tenantId) return { assigned: false, breakGlass: false };
  const [row] = await t.rows<{ assigned: boolean; break_glass: boolean }>(
    `SELECT
       EXISTS (SELECT 1 FROM care_team_assignments WHERE tenant_id = $1 AND patient_id = $2 AND user_id = $3) AS assigned,
       EXISTS (SELECT 1 FROM break_glass_grants WHERE tenant_id = $1 AND patient_id = $2 AND user_id = $3 AND ended_at IS NULL AND expires_at > $4) AS break_glass`,
    [actor.tenantId, patientId, actor.userId, ctx.clock.now()],
  );
  return { assigned: row!.assigned, breakGlass: row!.break_glass };
}

/**
 * The check for patient data (`patient:read`, `note:create`…): throws Forbidden unless the policy
 * allows it for this patient. Returns whether the access rides on break-glass, so the caller's
 * audit event carries the flag.
 */
export async function authorizePatient(ctx: ApplianceContext, t: Tx, actor: Actor, action: Action, patientId: string): Promise<{ breakGlass: boolean }> {
  const patient = await patientAccessFor(ctx, t, actor, patientId);
  authorize(actor, action, { tenantId: actor.tenantId, patient });
  return { breakGlass: !patient.assigned && patient.breakGlass };
}

export type CareTeamMember = { userId: string; email: string | null; displayName: string | null; assignedAt: string; assignedBy: string };

export async function listCareTeam(ctx: ApplianceContext, actor: Actor, patientId: string): Promise<CareTeamMember[]> {
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    // Who treats a patient is itself about the patient: practitioners see only teams of patients
    // they may see. An unknown patient is 404 before any 403, as for the records themselves.
    const [patient] = await t.rows("SELECT 1 FROM patients WHERE id = $1 AND tenant_id = $2 AND status = 'active'", [patientId, actor.tenantId]);
    if (!patient) throw new NotFound("no such patient");
    await authorizePatient(ctx, t, actor, "care_team:read", patientId);
    const rows = await t.rows<{ user_id: string; email: string | null; display_name: string | null; assigned_at: Date; assigned_by: string }>(
      `SELECT c.user_id, u.email, u.display_name, c.assigned_at, c.assigned_by
       FROM care_team_assignments c JOIN users u ON u.id = c.user_id WHERE c.tenant_id = $1 AND c.patient_id = $2 ORDER BY c.assigned_at`,
      [actor.tenantId, patientId],
    );
    return rows.map((r) => ({ userId: r.user_id, email: r.email, displayName: r.display_name, assignedAt: r.assigned_at.toISOString(), assignedBy: r.assigned_by }));
  });
}

/** Puts a practitioner on a patient's care team (admins); idempotent. */
export async function assignToCareTeam(ctx: ApplianceContext, actor: Actor, patientId: string, userId: string, meta: RequestMeta): Promise<void> {
  authorize(actor, "care_team:update", { tenantId: actor.tenantId });
  await inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [user] = await t.rows<{ role: string; status: string }>("SELECT role, status FROM users WHERE id = $1 AND tenant_id = $2", [userId, actor.tenantId]);
    if (!user) throw new NotFound("no such user in this tenant");
    const [patient] = await t.rows("SELECT 1 FROM patients WHERE id = $1 AND tenant_id = $2 AND status = 'active'", [patientId, actor.tenantId]);
    if (!patient) throw new NotFound("no such patient");
    if (user.role !== "practitioner") throw new Invalid("only practitioners join a care team");
    if (user.status !== "active") throw new Conflict("the account is deactivated");
    const inserted = await t.rows(
      `INSERT INTO care_team_assignments (tenant_id, patient_id, user_id, assigned_by, assigned_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT DO NOTHING RETURNING user_id`,
      [actor.tenantId, patientId, userId, actor.userId, ctx.clock.now()],
    );
    if (inserted.length) {
      await recordAuthEvent(ctx, t, actor, { action: "care_team.assign", resourceType: "care_team", resourceId: userId, patientId, outcome: "success" }, meta);
    }
  });
}

export async function removeFromCareTeam(ctx: ApplianceContext, actor: Actor, patientId: string, userId: string, meta: RequestMeta): Promise<void> {
  authorize(actor, "care_team:update", { tenantId: actor.tenantId });
  await inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const removed = await t.rows("DELETE FROM care_team_assignments WHERE tenant_id = $1 AND patient_id = $2 AND user_id = $3 RETURNING user_id", [
      actor.tenantId,
      patientId,
      userId,
    ]);
    if (!removed.length) throw new NotFound("that practitioner is not on this patient's care team");
    await recordAuthEvent(ctx, t, actor, { action: "care_team.remove", resourceType: "care_team", resourceId: userId, patientId, outcome: "success" }, meta);
  });
}
