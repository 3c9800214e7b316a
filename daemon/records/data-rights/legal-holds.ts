import type { Tx } from "../../db/sql.js";
import { z } from "zod";
import { accountIdOf, type Actor } from "../../kernel/actor.js";
import { authorize } from "../../kernel/policy.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { Conflict, NotFound } from "../../kernel/errors.js";
import { recordPhiEvent } from "../../audit/append.js";
import { openerFor, sealRow } from "../columns.js";
import { LegalHoldActive } from "../errors.js";
import { findActivePatient, tenantOf } from "../patients/access.js";
import { legalHoldPlace, legalHoldQuery, legalHoldRelease, legalHoldView } from "./schema.js";

/**
 * Legal hold (litigation, investigation): while one stands on a patient, the patient cannot be
 * deleted, a due purge waits, and attachments cannot be deleted. Placing and releasing are
 * audited, and so is every deletion or purge a hold blocks.
 */
export { legalHoldPlace, legalHoldQuery, legalHoldRelease, legalHoldView };
export type LegalHoldView = z.infer<typeof legalHoldView>;

type HoldRow = {
  id: string;
  tenant_id: string;
  patient_id: string;
  reason_enc: Buffer;
  placed_at: Date;
  placed_by: string | null;
  released_at: Date | null;
  released_by: string | null;
  release_reason_enc: Buffer | null;
};

async function views(ctx: ApplianceContext, t: Tx, list: HoldRow[]): Promise<LegalHoldView[]> {
  const open = await openerFor(
    ctx,
    t,
    list.flatMap((h) => [h.reason_enc, h.release_reason_enc]),
  );
  return list.map((h) => ({
    id: h.id,
    patientId: h.patient_id,
    reason: open.text("legal_holds", "reason_enc", h.id, h.tenant_id, h.reason_enc) ?? "",
    placedAt: h.placed_at.toISOString(),
    placedBy: h.placed_by,
    releasedAt: h.released_at?.toISOString() ?? null,
    releasedBy: h.released_by,
    releaseReason: open.text("legal_holds", "release_reason_enc", h.id, h.tenant_id, h.release_reason_enc),
    active: h.released_at === null,
  }));
}

/** Ids of the active holds on a patient (or on any patient of the tenant). */
export async function activeHolds(ctx: ApplianceContext, t: Tx, tenantId: string, patientId?: string): Promise<string[]> {
  const found = await t.rows<{ id: string }>("SELECT id FROM legal_holds WHERE tenant_id = $1 AND ($2::uuid IS NULL OR patient_id = $2::uuid) AND released_at IS NULL", [
    tenantId,
    patientId ?? null,
  ]);
  return found.map((h) => h.id);
}

/** Throws 409 `legal-hold` when a hold stands (the caller audits the refusal). */
export async function assertNoLegalHold(ctx: ApplianceContext, t: Tx, tenantId: string, patientId: string | undefined, what: string): Promise<void> {
  const holds = await activeHolds(ctx, t, tenantId, patientId);
  if (holds.length) throw new LegalHoldActive(`${what} is blocked by ${holds.length} active legal hold(s); release them first`, { legalHoldIds: holds });
}

export async function placeLegalHold(ctx: ApplianceContext, actor: Actor, patientId: string, input: z.infer<typeof legalHoldPlace>, meta: RequestMeta): Promise<LegalHoldView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "legal_hold:place", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    await findActivePatient(ctx, t, tenantId, patientId, { lock: true });
    const [{ id }] = (await t.rows<{ id: string }>("SELECT gen_random_uuid() AS id")) as [{ id: string }];
    const enc = await sealRow(ctx, t, { tenantId, patientId, table: "legal_holds", rowId: id }, { reason_enc: input.reason });
    const [row] = await t.rows<HoldRow>("INSERT INTO legal_holds (id, tenant_id, patient_id, reason_enc, placed_at, placed_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *", [
      id,
      tenantId,
      patientId,
      enc.reason_enc,
      ctx.clock.now(),
      accountIdOf(actor),
    ]);
    await recordPhiEvent(ctx, t, actor, { action: "legal_hold.place", resourceType: "legal_hold", resourceId: id, patientId, tenantId }, meta);
    return (await views(ctx, t, [row!]))[0]!;
  });
}

export async function releaseLegalHold(
  ctx: ApplianceContext,
  actor: Actor,
  patientId: string,
  holdId: string,
  input: z.infer<typeof legalHoldRelease>,
  meta: RequestMeta,
): Promise<LegalHoldView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "legal_hold:release", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [hold] = await t.rows<HoldRow>("SELECT * FROM legal_holds WHERE id = $1 AND tenant_id = $2 AND patient_id = $3 FOR UPDATE", [holdId, tenantId, patientId]);
    if (!hold) throw new NotFound("no such legal hold on this patient");
    if (hold.released_at) throw new Conflict(`this legal hold was already released on ${hold.released_at.toISOString()}`);
    const enc = input.reason ? await sealRow(ctx, t, { tenantId, patientId, table: "legal_holds", rowId: holdId }, { release_reason_enc: input.reason }) : {};
    const [row] = await t.rows<HoldRow>("UPDATE legal_holds SET released_at = $2, released_by = $3, release_reason_enc = $4 WHERE id = $1 RETURNING *", [
      holdId,
      ctx.clock.now(),
      accountIdOf(actor),
      enc.release_reason_enc ?? null,
    ]);
    // A purge this hold blocked is audited again if another hold blocks it later.
    await t.exec("UPDATE deletion_requests SET blocked_since = NULL WHERE tenant_id = $1 AND status = 'pending' AND (patient_id = $2 OR subject = 'tenant')", [
      tenantId,
      patientId,
    ]);
    // The reason is the patient's (encrypted); the event says only whether one was given.
    await recordPhiEvent(
      ctx,
      t,
      actor,
      { action: "legal_hold.release", resourceType: "legal_hold", resourceId: holdId, patientId, tenantId, reason: input.reason ? "with a reason" : "no reason given" },
      meta,
    );
    return (await views(ctx, t, [row!]))[0]!;
  });
}

export async function listLegalHolds(ctx: ApplianceContext, actor: Actor, q: z.infer<typeof legalHoldQuery>, meta: RequestMeta): Promise<{ items: LegalHoldView[] }> {
  const tenantId = tenantOf(actor);
  authorize(actor, "legal_hold:list", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const list = await t.rows<HoldRow>(
      `SELECT * FROM legal_holds WHERE tenant_id = $1 AND ($2::uuid IS NULL OR patient_id = $2::uuid) AND (NOT $3::boolean OR released_at IS NULL)
        ORDER BY placed_at DESC LIMIT 500`,
      [tenantId, q.patientId ?? null, q.active === "true"],
    );
    await recordPhiEvent(ctx, t, actor, { action: "legal_hold.list", resourceType: "legal_hold", patientId: q.patientId ?? null, tenantId, reason: `${list.length} shown` }, meta);
    return { items: await views(ctx, t, list) };
  });
}
