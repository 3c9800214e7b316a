import type { Actor } from "../../kernel/actor.js";
import { can } from "../../kernel/policy.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { recordPhiEvent } from "../../audit/append.js";
import { openerFor, openRows } from "../columns.js";

/**
 * Patients' names for a page of the audit trail (docs/audit.md): one statement and one key lookup
 * for the whole page. Only for roles the policy lets read a name beside an id (`patient:read_name`);
 * for anyone else the answer is null and the console keeps the ids. A name shown is a PHI read like
 * any other, so each one is audited (`patient.name_read`, in the patient's own access timeline).
 * Erased (shredded) or undecryptable patients keep their id.
 */
export async function readPatientNames(ctx: ApplianceContext, actor: Actor, ids: string[], meta: RequestMeta): Promise<{ id: string; name: string }[] | null> {
  const tenantId = actor.tenantId;
  if (tenantId === null || !can(actor, "patient:read_name", { tenantId })) return null;
  if (ids.length === 0) return [];
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const rows = await t.rows<{ id: string; tenant_id: string; name_enc: Buffer | null }>(
      "SELECT id, tenant_id, name_enc FROM patients WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND name_enc IS NOT NULL",
      [tenantId, [...new Set(ids)]],
    );
    const open = await openerFor(
      ctx,
      t,
      rows.map((r) => r.name_enc),
    );
    const { items } = openRows(
      rows,
      (r) => r.id,
      (r) => ({ id: r.id, name: open.text("patients", "name_enc", r.id, r.tenant_id, r.name_enc) ?? "" }),
    );
    for (const p of items)
      await recordPhiEvent(
        ctx,
        t,
        actor,
        { action: "patient.name_read", resourceType: "patient", resourceId: p.id, patientId: p.id, tenantId, reason: "shown in the audit trail" },
        meta,
      );
    return items.filter((p) => p.name !== "");
  });
}
