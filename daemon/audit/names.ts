import type { z } from "zod";
import type { Actor } from "../kernel/actor.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { readPatientNames } from "../records/index.js";
import type { auditNamesRequest, auditNamesResponse } from "./schema.js";

/**
 * Names for the ids on one page of the audit trail (docs/audit.md), in one call: the events keep
 * ids only (never a name in their details); the console asks for the names of what it shows.
 * - accounts: of the viewer's tenant, and the appliance's staff (support acting in the tenant);
 *   super-admins get every account. Staff names are not PHI: every audit reader sees them.
 * - tenants: the viewer's own (every one for super-admins).
 * - patients: only for roles that may read a patient's name (`patient:read_name`), each name an
 *   audited PHI read (records' `readPatientNames`); ids for everyone else.
 */
export async function resolveAuditNames(
  ctx: ApplianceContext,
  actor: Actor,
  q: z.output<typeof auditNamesRequest>,
  meta: RequestMeta,
): Promise<z.infer<typeof auditNamesResponse>> {
  // Appliance scope so appliance staff (no tenant) resolve for a tenant's auditor; the WHERE keeps other tenants out.
  const { users, tenants } = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const everyone = actor.tenantId === null;
    const users = q.userIds.length
      ? await t.rows<{ id: string; name: string }>(
          `SELECT id, coalesce(display_name, email, id::text) AS name FROM users
            WHERE id = ANY($1::uuid[]) AND ($2::boolean OR tenant_id IS NULL OR tenant_id = $3::uuid)`,
          [[...new Set(q.userIds)], everyone, actor.tenantId],
        )
      : [];
    const tenants = q.tenantIds.length
      ? await t.rows<{ id: string; name: string }>("SELECT id, name FROM tenants WHERE id = ANY($1::uuid[]) AND ($2::boolean OR id = $3::uuid)", [
          [...new Set(q.tenantIds)],
          everyone,
          actor.tenantId,
        ])
      : [];
    return { users, tenants };
  });
  const patients = await readPatientNames(ctx, actor, q.patientIds, meta);
  return { users, tenants, patients: patients ?? [], patientNamesShown: patients !== null };
}
