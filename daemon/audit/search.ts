import { z } from "zod";
import type { Actor } from "../kernel/actor.js";
import { scopeOf } from "../kernel/actor.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Invalid } from "../kernel/errors.js";
import { appendAuditEvent, type AuditRequestContext } from "./append.js";
import { parseCanonical } from "./canonical.js";
import { chainPendingEvents } from "./chainer.js";
import { searchQuery, timelineQuery } from "./schema.js";

/**
 * Auditor search and the per-patient access timeline. Row-level security keeps a tenant's
 * auditor inside their tenant; super-admins search the whole appliance (optionally one tenant).
 * Auditors' own searches are audited too (`audit.search`, `audit.timeline`): who looked at whose
 * access history is itself accountable. The patient goes in resource_id (`patient:<id>`), not
 * patient_id, so a patient's timeline lists access to their record, not reviews of it.
 */
export { searchQuery };
export type SearchQuery = z.infer<typeof searchQuery>;

export type AuditEventView = {
  seq: string;
  recordedAt: string;
  occurredAt: string;
  tenantId: string | null;
  eventId: string;
  actor: { userId: string | null; role: string | null; impersonatorId: string | null; breakGlass: boolean };
  action: string;
  resourceType: string;
  resourceId: string | null;
  patientId: string | null;
  outcome: string;
  sourceIp: string | null;
  userAgent: string | null;
  requestId: string | null;
  reason: string | null;
  hash: string;
};

function view(canonical: string, hash: string): AuditEventView {
  const e = parseCanonical(canonical);
  return {
    seq: e.seq,
    recordedAt: new Date(e.recorded_at).toISOString(),
    occurredAt: new Date(e.occurred_at).toISOString(),
    tenantId: e.tenant_id,
    eventId: e.event_id,
    actor: { userId: e.actor_user_id, role: e.actor_role, impersonatorId: e.impersonator_id, breakGlass: e.break_glass },
    action: e.action,
    resourceType: e.resource_type,
    resourceId: e.resource_id,
    patientId: e.patient_id,
    outcome: e.outcome,
    sourceIp: e.source_ip,
    userAgent: e.user_agent,
    requestId: e.request_id,
    reason: e.reason,
    hash,
  };
}

const J = "(e.canonical::jsonb)";

/** Newest first, `limit` per page; `nextCursor` continues below the last seq returned. */
export async function searchAuditEvents(ctx: ApplianceContext, actor: Actor, q: SearchQuery, who: AuditRequestContext) {
  if (q.tenant && actor.tenantId !== null) throw new Invalid("`tenant` is for appliance-wide auditors; your search is already limited to your tenant");
  // Waits for a batch another chainer has in flight, so every event committed before the search is in it.
  await chainPendingEvents(ctx, { wait: true });
  const where: string[] = [];
  const bind: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    bind.push(v);
    where.push(sql.replace("?", `$${bind.length}`));
  };
  if (q.from) add("e.recorded_at >= ?", new Date(q.from));
  if (q.to) add("e.recorded_at < ?", new Date(q.to));
  if (q.actor) add("e.actor_user_id = ?", q.actor);
  if (q.patient) add("e.patient_id = ?", q.patient);
  if (q.action?.endsWith(".*")) add(`${J} ->> 'action' LIKE ?`, q.action.slice(0, -1) + "%");
  else if (q.action) add(`${J} ->> 'action' = ?`, q.action);
  if (q.outcome) add(`${J} ->> 'outcome' = ?`, q.outcome);
  if (q.tenant) add("e.tenant_id = ?", q.tenant);
  if (q.cursor) add("e.seq < ?", q.cursor);
  bind.push(q.limit + 1);
  return inScope(ctx.db.app, scopeOf(actor), async (transaction) => {
    const rows = await transaction.rows<{ canonical: string; hash: string }>(
      `SELECT e.canonical, encode(e.hash, 'hex') AS hash FROM audit_events e
        ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY e.seq DESC LIMIT $${bind.length}`,
      bind,
    );
    const page = rows.slice(0, q.limit).map((r) => view(r.canonical, r.hash));
    await appendAuditEvent(ctx, transaction, {
      ...who,
      tenantId: actor.tenantId,
      action: "audit.search",
      resourceType: "audit_trail",
      resourceId: q.patient ? `patient:${q.patient}` : null,
      outcome: "success",
    });
    return { events: page, nextCursor: rows.length > q.limit ? page.at(-1)!.seq : null };
  });
}

export { timelineQuery };

/**
 * "Who saw what, and when" for one patient: every event naming the patient, oldest first,
 * including denied attempts, break-glass openings and support access.
 */
export async function patientAccessTimeline(ctx: ApplianceContext, actor: Actor, patientId: string, q: z.infer<typeof timelineQuery>, who: AuditRequestContext) {
  // Waits for a batch another chainer has in flight, so every event committed before the search is in it.
  await chainPendingEvents(ctx, { wait: true });
  const bind: unknown[] = [patientId];
  const where = ["e.patient_id = $1"];
  if (q.from) where.push(`e.recorded_at >= $${bind.push(new Date(q.from))}`);
  if (q.to) where.push(`e.recorded_at < $${bind.push(new Date(q.to))}`);
  if (q.cursor) where.push(`e.seq > $${bind.push(q.cursor)}`);
  bind.push(q.limit + 1);
  return inScope(ctx.db.app, scopeOf(actor), async (transaction) => {
    const rows = await transaction.rows<{ canonical: string; hash: string }>(
      `SELECT e.canonical, encode(e.hash, 'hex') AS hash FROM audit_events e WHERE ${where.join(" AND ")} ORDER BY e.seq LIMIT $${bind.length}`,
      bind,
    );
    const page = rows.slice(0, q.limit).map((r) => {
      const v = view(r.canonical, r.hash);
      return {
        seq: v.seq,
        at: v.occurredAt,
        actor: v.actor,
        action: v.action,
        resourceType: v.resourceType,
        resourceId: v.resourceId,
        outcome: v.outcome,
        reason: v.reason,
        sourceIp: v.sourceIp,
      };
    });
    await appendAuditEvent(ctx, transaction, {
      ...who,
      tenantId: actor.tenantId,
      action: "audit.timeline",
      resourceType: "audit_trail",
      resourceId: `patient:${patientId}`,
      outcome: "success",
    });
    return { patientId, entries: page, nextCursor: rows.length > q.limit ? page.at(-1)!.seq : null };
  });
}
