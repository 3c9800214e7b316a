import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { NotFound } from "../kernel/errors.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { authorize } from "../kernel/policy.js";

/**
 * What a tenant's admins must see and acknowledge: break-glass use and support-access requests.
 * Ids only (the admin UI links to the audit trail and the request); webhooks may fan these out.
 */
export type AdminNotification = {
  id: string;
  kind: "break_glass" | "support_request";
  actorUserId: string | null;
  subjectId: string | null;
  patientId: string | null;
  createdAt: string;
  acknowledgedAt: string | null;
  acknowledgedBy: string | null;
};

type Row = {
  id: string;
  kind: AdminNotification["kind"];
  actor_user_id: string | null;
  subject_id: string | null;
  patient_id: string | null;
  created_at: Date;
  acknowledged_at: Date | null;
  acknowledged_by: string | null;
};

const view = (r: Row): AdminNotification => ({
  id: r.id,
  kind: r.kind,
  actorUserId: r.actor_user_id,
  subjectId: r.subject_id,
  patientId: r.patient_id,
  createdAt: r.created_at.toISOString(),
  acknowledgedAt: r.acknowledged_at?.toISOString() ?? null,
  acknowledgedBy: r.acknowledged_by,
});

export async function listNotifications(ctx: ApplianceContext, actor: Actor, opts: { unacknowledgedOnly?: boolean } = {}): Promise<AdminNotification[]> {
  authorize(actor, "notification:list", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<Row>("SELECT * FROM admin_notifications WHERE tenant_id = $1 AND (NOT $2::boolean OR acknowledged_at IS NULL) ORDER BY created_at DESC LIMIT 500", [
      actor.tenantId,
      opts.unacknowledgedOnly === true,
    ]);
    return rows.map(view);
  });
}

export async function acknowledgeNotification(ctx: ApplianceContext, actor: Actor, id: string, meta: RequestMeta): Promise<AdminNotification> {
  authorize(actor, "notification:acknowledge", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [row] = await t.rows<Row>(
      "UPDATE admin_notifications SET acknowledged_at = coalesce(acknowledged_at, $2), acknowledged_by = coalesce(acknowledged_by, $3) WHERE id = $1 AND tenant_id = $4 RETURNING *",
      [id, ctx.clock.now(), actor.userId, actor.tenantId],
    );
    if (!row) throw new NotFound("no such notification");
    await recordAuthEvent(ctx, t, actor, { action: "notification.acknowledge", resourceType: "notification", resourceId: id, outcome: "success" }, meta);
    return view(row);
  });
}
