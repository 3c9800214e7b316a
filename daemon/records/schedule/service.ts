import type { Tx } from "../../db/sql.js";
import type { Actor } from "../../kernel/actor.js";
import { authorize } from "../../kernel/policy.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { Forbidden, Invalid, NotFound } from "../../kernel/errors.js";
import { recordPhiEvent } from "../../audit/append.js";
import { recordUndecryptable } from "../audit.js";
import { openerFor, openRows } from "../columns.js";
import { assertVersion, decodeCursor, pageOf, timeIdPosition, type ListPage } from "../http.js";
import { careTeamFilter, findActivePatient, seesWholeTenant, tenantOf } from "../patients/access.js";
import type { AppointmentCreate, AppointmentUpdate, AppointmentView, ScheduleQuery } from "./schema.js";

type AppointmentRow = {
  id: string;
  tenant_id: string;
  patient_id: string;
  practitioner_id: string;
  starts_at: Date;
  ends_at: Date;
  status: AppointmentView["status"];
  version: number;
  created_at: Date;
  updated_at: Date;
  name_enc: Buffer | null;
  practitioner_name: string | null;
};

const SELECT = `SELECT a.*, p.name_enc, u.display_name AS practitioner_name
  FROM appointments a JOIN patients p ON p.tenant_id = a.tenant_id AND p.id = a.patient_id JOIN users u ON u.id = a.practitioner_id`;

async function views(ctx: ApplianceContext, t: Tx, list: AppointmentRow[]): Promise<AppointmentView[]> {
  return list.map(await viewer(ctx, t, list));
}

/** The view of each row, with the keys of all of them loaded at once (for `openRows`). */
async function viewer(ctx: ApplianceContext, t: Tx, list: AppointmentRow[]): Promise<(r: AppointmentRow) => AppointmentView> {
  const open = await openerFor(
    ctx,
    t,
    list.map((r) => r.name_enc),
  );
  return (r) => ({
    id: r.id,
    patientId: r.patient_id,
    patientName: open.text("patients", "name_enc", r.patient_id, r.tenant_id, r.name_enc) ?? "",
    practitionerId: r.practitioner_id,
    practitionerName: r.practitioner_name,
    startsAt: r.starts_at.toISOString(),
    endsAt: r.ends_at.toISOString(),
    status: r.status,
    version: r.version,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  });
}

async function assertPractitioner(ctx: ApplianceContext, t: Tx, tenantId: string, userId: string): Promise<void> {
  const [u] = await t.rows<{ role: string; status: string }>("SELECT role, status FROM users WHERE id = $1 AND tenant_id = $2", [userId, tenantId]);
  if (!u || u.role !== "practitioner")
    throw new Invalid("practitionerId must name a practitioner of this tenant", {
      errors: [{ path: "practitionerId", message: "not a practitioner of this tenant", code: "custom" }],
    });
  if (u.status !== "active") throw new Invalid("the practitioner's account is deactivated", { errors: [{ path: "practitionerId", message: "deactivated", code: "custom" }] });
}

/**
 * Practitioners see the appointments they run and those of patients on their care team (the
 * schedule shows names, which are PHI); front desk sees the whole tenant's schedule.
 */
async function loadVisible(ctx: ApplianceContext, t: Tx, actor: Actor, tenantId: string, id: string, lock = false): Promise<AppointmentRow> {
  const [row] = await t.rows<AppointmentRow>(`${SELECT} WHERE a.id = $1 AND a.tenant_id = $2${lock ? " FOR UPDATE OF a" : ""}`, [id, tenantId]);
  if (!row) throw new NotFound("no such appointment");
  if (!seesWholeTenant(actor) && row.practitioner_id !== actor.userId) {
    const [visible] = await t.rows<{ ok: boolean }>(`SELECT ${careTeamFilter("$1::uuid", 2, 3)} AS ok`, [row.patient_id, actor.userId, ctx.clock.now()]);
    if (!visible?.ok) throw new Forbidden("this appointment is neither yours nor for a patient on your care team", { action: "schedule:read" });
  }
  return row;
}

export async function createAppointment(ctx: ApplianceContext, actor: Actor, input: AppointmentCreate, meta: RequestMeta): Promise<AppointmentView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "schedule:write", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    await findActivePatient(ctx, t, tenantId, input.patientId);
    await assertPractitioner(ctx, t, tenantId, input.practitionerId);
    const now = ctx.clock.now();
    const [created] = await t.rows<{ id: string }>(
      `INSERT INTO appointments (tenant_id, patient_id, practitioner_id, starts_at, ends_at, status, created_at, created_by, updated_at, updated_by)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, $8) RETURNING id`,
      [tenantId, input.patientId, input.practitionerId, input.startsAt, input.endsAt, input.status, now, actor.userId],
    );
    const [row] = await t.rows<AppointmentRow>(`${SELECT} WHERE a.id = $1`, [created!.id]);
    await recordPhiEvent(ctx, t, actor, { action: "appointment.create", resourceType: "appointment", resourceId: row!.id, patientId: input.patientId, tenantId }, meta);
    return (await views(ctx, t, [row!]))[0]!;
  });
}

export async function getAppointment(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<AppointmentView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "schedule:read", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const row = await loadVisible(ctx, t, actor, tenantId, id);
    await recordPhiEvent(ctx, t, actor, { action: "appointment.read", resourceType: "appointment", resourceId: id, patientId: row.patient_id, tenantId }, meta);
    return (await views(ctx, t, [row]))[0]!;
  });
}

export async function updateAppointment(
  ctx: ApplianceContext,
  actor: Actor,
  id: string,
  expectedVersion: number,
  input: AppointmentUpdate,
  meta: RequestMeta,
): Promise<AppointmentView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "schedule:write", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const row = await loadVisible(ctx, t, actor, tenantId, id, true);
    assertVersion(row.version, expectedVersion);
    const startsAt = input.startsAt ?? row.starts_at;
    const endsAt = input.endsAt ?? row.ends_at;
    if (endsAt <= startsAt) throw new Invalid("endsAt must be after startsAt", { errors: [{ path: "endsAt", message: "must be after startsAt", code: "custom" }] });
    if (endsAt.getTime() - startsAt.getTime() > 86_400_000)
      throw new Invalid("an appointment lasts at most 24 hours", { errors: [{ path: "endsAt", message: "at most 24 hours", code: "custom" }] });
    if (input.practitionerId) await assertPractitioner(ctx, t, tenantId, input.practitionerId);
    await t.rows(
      `UPDATE appointments SET practitioner_id = $2, starts_at = $3, ends_at = $4, status = $5, version = version + 1, updated_at = $6, updated_by = $7
        WHERE id = $1 RETURNING id`,
      [id, input.practitionerId ?? row.practitioner_id, startsAt, endsAt, input.status ?? row.status, ctx.clock.now(), actor.userId],
    );
    const [updated] = await t.rows<AppointmentRow>(`${SELECT} WHERE a.id = $1`, [id]);
    await recordPhiEvent(
      ctx,
      t,
      actor,
      { action: "appointment.update", resourceType: "appointment", resourceId: id, patientId: row.patient_id, tenantId, reason: `fields: ${Object.keys(input).sort().join(",")}` },
      meta,
    );
    return (await views(ctx, t, [updated!]))[0]!;
  });
}

const WINDOW_MAX_MS = 92 * 86_400_000;

/** A window of the schedule, earliest first; every appointment shown is audited (it names a patient). */
export async function listSchedule(ctx: ApplianceContext, actor: Actor, q: ScheduleQuery, meta: RequestMeta): Promise<ListPage<AppointmentView>> {
  const tenantId = tenantOf(actor);
  authorize(actor, "schedule:read", { tenantId });
  const from = q.from ?? new Date(ctx.clock.now().getTime() - 12 * 3_600_000);
  const to = q.to ?? new Date(from.getTime() + 7 * 86_400_000);
  if (to <= from) throw new Invalid("to must be after from", { errors: [{ path: "to", message: "must be after from", code: "custom" }] });
  if (to.getTime() - from.getTime() > WINDOW_MAX_MS)
    throw new Invalid("the window may span at most 92 days", { errors: [{ path: "to", message: "at most 92 days after from", code: "too_big" }] });
  const purpose = `schedule:${tenantId}:${actor.userId}:${from.toISOString()}:${to.toISOString()}:${q.practitionerId ?? ""}`;
  const after = timeIdPosition(decodeCursor(ctx, purpose, q.cursor));
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const list = await t.rows<AppointmentRow>(
      `${SELECT}
        WHERE a.tenant_id = $1 AND a.starts_at >= $2 AND a.starts_at < $3
          AND ($4::uuid IS NULL OR a.practitioner_id = $4::uuid)
          AND ($5::timestamptz IS NULL OR (a.starts_at, a.id) > ($5::timestamptz, $6::uuid))
          AND ($7::boolean OR a.practitioner_id = $8 OR ${careTeamFilter("a.patient_id", 8, 9)})
        ORDER BY a.starts_at, a.id LIMIT $10`,
      [tenantId, from, to, q.practitionerId ?? null, after?.at ?? null, after?.id ?? null, seesWholeTenant(actor), actor.userId, ctx.clock.now(), q.limit + 1],
    );
    const page = pageOf(
      ctx,
      purpose,
      list,
      q.limit,
      (r) => [r.starts_at.toISOString(), r.id],
      (r) => r,
    );
    const { items, skipped } = openRows(page.items, (r) => r.id, await viewer(ctx, t, page.items));
    for (const a of items)
      await recordPhiEvent(ctx, t, actor, { action: "appointment.list", resourceType: "appointment", resourceId: a.id, patientId: a.patientId, tenantId }, meta);
    await recordUndecryptable(ctx, t, actor, skipped, { resourceType: "appointment", tenantId }, meta);
    return { items, nextCursor: page.nextCursor, undecryptable: skipped.length };
  });
}
