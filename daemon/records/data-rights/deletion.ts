/**
 * Erasure of a patient or a whole tenant (GDPR art. 17 and state equivalents), in three steps:
 *
 * 1. request (owner, step-up): a `deletion_requests` row with `purge_after` = now + grace
 *    (`records.deletionGraceDays`, 30 by default); the data stays readable and exportable;
 * 2. cancel, any time before the purge (owner);
 * 3. purge (the job, after the grace period): deletes every record row of the patient — the
 *    patient row stays as a tombstone with no PHI so audit ids still resolve — removes the
 *    attachment files, and crypto-shreds the patient's (or tenant's) data keys at once, so the
 *    ciphertexts in older data snapshots become undecryptable too.
 *
 * A legal hold blocks the request and the purge; both refusals are audited.
 */
import { publishWebhookEvent } from "../../webhooks/index.js";
import type { Tx } from "../../db/sql.js";
import { z } from "zod";
import { accountIdOf, type Actor } from "../../kernel/actor.js";
import { authorize } from "../../kernel/policy.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { Conflict, NotFound } from "../../kernel/errors.js";
import { destroyDueKeys, scheduleShred } from "../../keys/index.js";
import { recordPhiEvent, SYSTEM_ACTOR } from "../../audit/append.js";
import { isUniqueViolation } from "../../db/sql.js";
import { LegalHoldActive } from "../errors.js";
import { removeFolder } from "../attachments/store.js";
import { findActivePatient, tenantOf } from "../patients/access.js";
import { activeHolds } from "./legal-holds.js";
import { deletionListQuery, deletionRequestView } from "./schema.js";

export { deletionListQuery, deletionRequestView };
export type DeletionRequestView = z.infer<typeof deletionRequestView>;

type RequestRow = {
  id: string;
  tenant_id: string;
  subject: "patient" | "tenant";
  patient_id: string | null;
  status: "pending" | "cancelled" | "purged";
  requested_at: Date;
  requested_by: string | null;
  purge_after: Date;
  cancelled_at: Date | null;
  cancelled_by: string | null;
  purged_at: Date | null;
  blocked_since: Date | null;
};

const view = (r: RequestRow): DeletionRequestView => ({
  id: r.id,
  subject: r.subject,
  patientId: r.patient_id,
  status: r.status,
  requestedAt: r.requested_at.toISOString(),
  requestedBy: r.requested_by,
  purgeAfter: r.purge_after.toISOString(),
  cancelledAt: r.cancelled_at?.toISOString() ?? null,
  cancelledBy: r.cancelled_by,
  purgedAt: r.purged_at?.toISOString() ?? null,
  blockedByLegalHoldSince: r.blocked_since?.toISOString() ?? null,
});

/** A refusal because of a legal hold, audited in its own transaction (the work never starts). */
async function auditHoldRefusal(
  ctx: ApplianceContext,
  actor: Actor,
  tenantId: string,
  action: string,
  patientId: string | null,
  holds: string[],
  meta: RequestMeta,
): Promise<void> {
  await inScope(ctx.db.app, { kind: "tenant", tenantId }, (t) =>
    recordPhiEvent(
      ctx,
      t,
      actor,
      {
        action,
        resourceType: patientId ? "patient" : "tenant",
        resourceId: patientId ?? tenantId,
        patientId,
        tenantId,
        outcome: "denied",
        reason: `legal hold: ${holds.join(",")}`,
      },
      meta,
    ),
  );
}

async function insertRequest(ctx: ApplianceContext, t: Tx, actor: Actor, tenantId: string, patientId: string | null): Promise<RequestRow> {
  const now = ctx.clock.now();
  const purgeAfter = new Date(now.getTime() + ctx.config.records.deletionGraceDays * 86_400_000);
  try {
    const [row] = await t.rows<RequestRow>(
      `INSERT INTO deletion_requests (tenant_id, subject, patient_id, requested_at, requested_by, purge_after) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
      [tenantId, patientId ? "patient" : "tenant", patientId, now, accountIdOf(actor), purgeAfter],
    );
    return row!;
  } catch (err) {
    if (isUniqueViolation(err, "deletion_requests_pending_patient") || isUniqueViolation(err, "deletion_requests_pending_tenant")) {
      throw new Conflict("a deletion is already pending; cancel it or wait for the purge");
    }
    throw err;
  }
}

export async function requestPatientDeletion(ctx: ApplianceContext, actor: Actor, patientId: string, meta: RequestMeta): Promise<DeletionRequestView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "patient:delete", { tenantId });
  try {
    return await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
      await findActivePatient(ctx, t, tenantId, patientId, { lock: true });
      const holds = await activeHolds(ctx, t, tenantId, patientId);
      if (holds.length) throw new LegalHoldActive(`deleting this patient is blocked by ${holds.length} active legal hold(s)`, { legalHoldIds: holds });
      const row = await insertRequest(ctx, t, actor, tenantId, patientId);
      await recordPhiEvent(
        ctx,
        t,
        actor,
        { action: "patient.deletion.request", resourceType: "deletion_request", resourceId: row.id, patientId, tenantId, reason: `purge after ${row.purge_after.toISOString()}` },
        meta,
      );
      return view(row);
    });
  } catch (err) {
    if (err instanceof LegalHoldActive) await auditHoldRefusal(ctx, actor, tenantId, "patient.deletion.request", patientId, (err.extras.legalHoldIds as string[]) ?? [], meta);
    throw err;
  }
}

export async function requestTenantDeletion(ctx: ApplianceContext, actor: Actor, meta: RequestMeta): Promise<DeletionRequestView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "deletion:request_tenant", { tenantId });
  try {
    return await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
      const holds = await activeHolds(ctx, t, tenantId);
      if (holds.length) throw new LegalHoldActive(`deleting this tenant is blocked by ${holds.length} active legal hold(s)`, { legalHoldIds: holds });
      const row = await insertRequest(ctx, t, actor, tenantId, null);
      await recordPhiEvent(
        ctx,
        t,
        actor,
        { action: "tenant.deletion.request", resourceType: "deletion_request", resourceId: row.id, tenantId, reason: `purge after ${row.purge_after.toISOString()}` },
        meta,
      );
      ctx.log.warn("tenant deletion requested", { tenantId, requestId: row.id, purgeAfter: row.purge_after.toISOString() });
      return view(row);
    });
  } catch (err) {
    if (err instanceof LegalHoldActive) await auditHoldRefusal(ctx, actor, tenantId, "tenant.deletion.request", null, (err.extras.legalHoldIds as string[]) ?? [], meta);
    throw err;
  }
}

export async function cancelDeletion(ctx: ApplianceContext, actor: Actor, requestId: string, meta: RequestMeta): Promise<DeletionRequestView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "deletion:cancel", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [existing] = await t.rows<RequestRow>("SELECT * FROM deletion_requests WHERE id = $1 AND tenant_id = $2 FOR UPDATE", [requestId, tenantId]);
    if (!existing) throw new NotFound("no such deletion request");
    if (existing.status !== "pending") throw new Conflict(`the deletion request is ${existing.status}; only a pending one can be cancelled`);
    const [row] = await t.rows<RequestRow>("UPDATE deletion_requests SET status = 'cancelled', cancelled_at = $2, cancelled_by = $3 WHERE id = $1 RETURNING *", [
      requestId,
      ctx.clock.now(),
      accountIdOf(actor),
    ]);
    await recordPhiEvent(
      ctx,
      t,
      actor,
      { action: `${existing.subject}.deletion.cancel`, resourceType: "deletion_request", resourceId: requestId, patientId: existing.patient_id, tenantId },
      meta,
    );
    return view(row!);
  });
}

export async function listDeletionRequests(ctx: ApplianceContext, actor: Actor, q: z.infer<typeof deletionListQuery>): Promise<{ items: DeletionRequestView[] }> {
  const tenantId = tenantOf(actor);
  authorize(actor, "deletion:list", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const list = await t.rows<RequestRow>("SELECT * FROM deletion_requests WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY requested_at DESC LIMIT $3", [
      tenantId,
      q.status ?? null,
      q.limit,
    ]);
    return { items: list.map(view) };
  });
}

// ---- the purge ---------------------------------------------------------------------------------

/**
 * Deletes every record of one patient inside the caller's transaction and leaves the tombstone.
 * Returns nothing to log: ids only ever. The history tables' trigger lets these deletes through
 * because the transaction names the patient in wardkeep.purge_patient.
 */
export async function purgePatientRows(ctx: ApplianceContext, t: Tx, tenantId: string, patientId: string): Promise<void> {
  const now = ctx.clock.now();
  await t.exec("SELECT set_config('wardkeep.purge_patient', $1, true)", [patientId]);
  const scoped = "WHERE tenant_id = $1 AND patient_id = $2";
  for (const table of ["note_versions", "notes", "consent_revocations", "consents", "attachments", "appointments", "legal_holds", "care_team_assignments"]) {
    await t.exec(`DELETE FROM ${table} ${scoped}`, [tenantId, patientId]);
  }
  // Break-glass reasons are free text typed about this patient: they go too (the audit trail keeps its copy).
  await t.exec(`UPDATE break_glass_grants SET reason = '(removed when the patient was purged)', ended_at = coalesce(ended_at, $3) ${scoped}`, [tenantId, patientId, now]);
  await t.exec(
    `UPDATE patients SET status = 'purged', name_enc = NULL, birth_date_enc = NULL, mrn_enc = NULL, phone_enc = NULL, email_enc = NULL, address_enc = NULL,
       mrn_bidx = NULL, email_bidx = NULL, purged_at = $3, updated_at = $3, updated_by = NULL, version = version + 1
     WHERE tenant_id = $1 AND id = $2`,
    [tenantId, patientId, now],
  );
}

export type PurgeOutcome = { requestId: string; subject: "patient" | "tenant"; tenantId: string; patientId: string | null; result: "purged" | "blocked" | "skipped" };

async function markBlocked(ctx: ApplianceContext, t: Tx, r: RequestRow, holds: string[]): Promise<PurgeOutcome> {
  if (!r.blocked_since) {
    await t.exec("UPDATE deletion_requests SET blocked_since = $2 WHERE id = $1", [r.id, ctx.clock.now()]);
    await recordPhiEvent(
      ctx,
      t,
      SYSTEM_ACTOR,
      {
        action: `${r.subject}.purge`,
        resourceType: r.subject,
        resourceId: r.patient_id ?? r.tenant_id,
        patientId: r.patient_id,
        tenantId: r.tenant_id,
        outcome: "denied",
        reason: `legal hold: ${holds.join(",")}`,
      },
      null,
    );
    ctx.log.warn("purge postponed by a legal hold", { requestId: r.id, tenantId: r.tenant_id, legalHolds: holds.length });
  }
  return { requestId: r.id, subject: r.subject, tenantId: r.tenant_id, patientId: r.patient_id, result: "blocked" };
}

/** Locks a due request; replicas racing for it skip it (SKIP LOCKED). */
async function lockDue(ctx: ApplianceContext, t: Tx, id: string): Promise<RequestRow | undefined> {
  const [r] = await t.rows<RequestRow>("SELECT * FROM deletion_requests WHERE id = $1 AND status = 'pending' AND purge_after <= $2 FOR UPDATE SKIP LOCKED", [id, ctx.clock.now()]);
  return r;
}

async function purgePatientRequest(ctx: ApplianceContext, id: string, tenantId: string): Promise<PurgeOutcome | undefined> {
  const outcome = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const r = await lockDue(ctx, t, id);
    if (!r) return undefined;
    const holds = await activeHolds(ctx, t, tenantId, r.patient_id!);
    if (holds.length) return markBlocked(ctx, t, r, holds);
    await purgePatientRows(ctx, t, tenantId, r.patient_id!);
    // Grace 0: the grace period was the request's; the keys go now, with the rows.
    await scheduleShred(ctx, { kind: "patient", tenantId, patientId: r.patient_id! }, { transaction: t, graceDays: 0 });
    await t.exec("UPDATE deletion_requests SET status = 'purged', purged_at = $2 WHERE id = $1", [id, ctx.clock.now()]);
    await recordPhiEvent(
      ctx,
      t,
      SYSTEM_ACTOR,
      { action: "patient.purge", resourceType: "patient", resourceId: r.patient_id, patientId: r.patient_id, tenantId, reason: `deletion request ${id}` },
      null,
    );
    await publishWebhookEvent(ctx, t, { tenantId, type: "erasure.completed", data: { deletionRequestId: id, subject: "patient", patientId: r.patient_id } });
    return { requestId: id, subject: "patient" as const, tenantId, patientId: r.patient_id, result: "purged" as const };
  });
  if (outcome?.result === "purged") await removeFolder(ctx, tenantId, outcome.patientId!);
  return outcome;
}

/**
 * A tenant purge runs in batches of patients (each its own transaction, the request row locked
 * in each), then shreds every key of the tenant and closes it (status 'deleting': nobody signs
 * in again). Interrupted, it resumes where it stopped on the next run.
 */
async function purgeTenantRequest(ctx: ApplianceContext, id: string, tenantId: string): Promise<PurgeOutcome | undefined> {
  for (;;) {
    const step = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
      const r = await lockDue(ctx, t, id);
      if (!r) return { done: true as const, outcome: undefined };
      const holds = await activeHolds(ctx, t, tenantId);
      if (holds.length) return { done: true as const, outcome: await markBlocked(ctx, t, r, holds) };
      const batch = await t.rows<{ id: string }>("SELECT id FROM patients WHERE tenant_id = $1 AND status = 'active' ORDER BY id LIMIT 100", [tenantId]);
      if (batch.length) {
        for (const p of batch) await purgePatientRows(ctx, t, tenantId, p.id);
        return { done: false as const, outcome: undefined };
      }
      await scheduleShred(ctx, { kind: "tenant", tenantId }, { transaction: t, graceDays: 0 });
      await t.exec("UPDATE tenants SET status = 'deleting', updated_at = $2 WHERE id = $1", [tenantId, ctx.clock.now()]);
      await t.exec("UPDATE deletion_requests SET status = 'purged', purged_at = $2 WHERE id = $1", [id, ctx.clock.now()]);
      await recordPhiEvent(ctx, t, SYSTEM_ACTOR, { action: "tenant.purge", resourceType: "tenant", resourceId: tenantId, tenantId, reason: `deletion request ${id}` }, null);
      await publishWebhookEvent(ctx, t, { tenantId, type: "erasure.completed", data: { deletionRequestId: id, subject: "tenant", patientId: null } });
      return { done: true as const, outcome: { requestId: id, subject: "tenant" as const, tenantId, patientId: null, result: "purged" as const } };
    });
    if (step.done) {
      if (step.outcome?.result === "purged") await removeFolder(ctx, tenantId);
      return step.outcome;
    }
  }
}

/**
 * The purge job: every pending request whose grace period has ended, one by one, then the key
 * destruction they scheduled. Safe on several replicas at once (row locks, SKIP LOCKED).
 */
export async function purgeDueDeletions(ctx: ApplianceContext): Promise<PurgeOutcome[]> {
  const due = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<{ id: string; tenant_id: string; subject: "patient" | "tenant" }>(
      "SELECT id, tenant_id, subject FROM deletion_requests WHERE status = 'pending' AND purge_after <= $1 ORDER BY purge_after LIMIT 1000",
      [ctx.clock.now()],
    ),
  );
  const outcomes: PurgeOutcome[] = [];
  for (const d of due) {
    try {
      const o = d.subject === "patient" ? await purgePatientRequest(ctx, d.id, d.tenant_id) : await purgeTenantRequest(ctx, d.id, d.tenant_id);
      if (o) outcomes.push(o);
    } catch (err) {
      ctx.log.error("purge failed; retried on the next run", { requestId: d.id, tenantId: d.tenant_id, error: (err as Error).name });
      outcomes.push({ requestId: d.id, subject: d.subject, tenantId: d.tenant_id, patientId: null, result: "skipped" });
    }
  }
  if (outcomes.some((o) => o.result === "purged")) {
    await destroyDueKeys(ctx);
    for (const o of outcomes.filter((x) => x.result === "purged"))
      ctx.log.info("records purged and data keys destroyed", { requestId: o.requestId, subject: o.subject, tenantId: o.tenantId, patientId: o.patientId });
  }
  return outcomes;
}
