import type { AuditEventView, TimelineEntry } from "../../../daemon/audit/schema.js";
import { api, errorMessage } from "./api";

/**
 * Names for the ids the Audit page shows (docs/audit.md): one `POST /api/v1/audit/names` per page
 * of events, for the ids not already known. Accounts and tenants come back for every audit reader;
 * patients only for roles that may read their names, each name an audited read. Whatever is not
 * named stays an id; the events themselves never carry a name.
 */
export class AuditNames {
  users = $state<Record<string, string>>({});
  tenants = $state<Record<string, string>>({});
  patients = $state<Record<string, string>>({});
  /** null until the first answer; false: this role sees patients by id only. */
  patientNamesShown = $state<boolean | null>(null);
  error = $state<string>();

  /** Resolves the names on one page of events or timeline entries (one call, only unknown ids). */
  async resolve(rows: Array<AuditEventView | TimelineEntry>): Promise<void> {
    const users = new Set<string>();
    const tenants = new Set<string>();
    const patients = new Set<string>();
    const want = (set: Set<string>, known: Record<string, string>, id: string | null | undefined) => {
      if (id && !(id in known)) set.add(id);
    };
    for (const e of rows) {
      want(users, this.users, e.actor.userId);
      want(users, this.users, e.actor.impersonatorId);
      if (e.resourceType === "user") want(users, this.users, e.resourceId);
      if (e.resourceType === "tenant") want(tenants, this.tenants, e.resourceId);
      if ("tenantId" in e) want(tenants, this.tenants, e.tenantId);
      if ("patientId" in e && this.patientNamesShown !== false) want(patients, this.patients, e.patientId);
    }
    if (users.size + tenants.size + patients.size === 0) return;
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    const ids = (set: Set<string>) => [...set].filter((id) => uuid.test(id)).slice(0, 500);
    try {
      const r = await api.audit.names({ userIds: ids(users), tenantIds: ids(tenants), patientIds: ids(patients) });
      this.users = { ...this.users, ...Object.fromEntries(r.users.map((u) => [u.id, u.name])) };
      this.tenants = { ...this.tenants, ...Object.fromEntries(r.tenants.map((t) => [t.id, t.name])) };
      this.patients = { ...this.patients, ...Object.fromEntries(r.patients.map((p) => [p.id, p.name])) };
      this.patientNamesShown = r.patientNamesShown;
      this.error = undefined;
    } catch (err) {
      this.error = errorMessage(err);
    }
  }

  user(id: string | null | undefined): string | undefined {
    return id ? this.users[id] : undefined;
  }
  patient(id: string | null | undefined): string | undefined {
    return id ? this.patients[id] : undefined;
  }
  /** The name of a resource the policy lets this viewer see by name (an account or a tenant). */
  resource(type: string, id: string | null | undefined): string | undefined {
    if (!id) return undefined;
    return type === "user" ? this.users[id] : type === "tenant" ? this.tenants[id] : undefined;
  }
}
