import type { Sequelize, Transaction } from "sequelize";

/**
 * Who a transaction acts for. Row-level security policies read these settings through
 * `app_tenant_id()` and `app_is_appliance_scope()` (migration 0001).
 * - tenant: a request inside one tenant (hospital, clinic, department) sees only its rows.
 * - appliance: super-admin work across tenants (creating tenants, first-run setup).
 */
export type Scope = { kind: "tenant"; tenantId: string } | { kind: "appliance" };

/**
 * The one helper through which every query that touches tenant data runs: it opens a
 * transaction and sets the scope with `set_config(..., is_local => true)` — the same as
 * `SET LOCAL`, so the setting cannot leak to the next user of the pooled connection.
 */
export async function inScope<T>(db: Sequelize, scope: Scope, work: (t: Transaction) => Promise<T>): Promise<T> {
  return db.transaction(async (transaction) => {
    await db.query("SELECT set_config('wardkeep.tenant_id', $1, true), set_config('wardkeep.scope', $2, true)", {
      bind: [scope.kind === "tenant" ? scope.tenantId : "", scope.kind],
      transaction,
    });
    return work(transaction);
  });
}
