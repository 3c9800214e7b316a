import type pg from "pg";
import type { Sequelize, Transaction, TransactionOptions } from "sequelize";
import { connectionOf, isCommitPipelined, parentOf, runPipeline } from "./commit-pipeline.js";
import { holdOpening, takeOpening } from "./opening-pipeline.js";

/**
 * Who a transaction acts for. Row-level security policies read these settings through
 * `app_tenant_id()` and `app_is_appliance_scope()` (migration 0001).
 * - tenant: a request inside one tenant (hospital, clinic, department) sees only its rows.
 * - appliance: super-admin work across tenants (creating tenants, first-run setup).
 */
export type Scope = { kind: "tenant"; tenantId: string } | { kind: "appliance" };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** The transaction option that carries the scope statement from `inScope` to `startTransaction`. */
const SCOPE_OPTION = "wardkeepScopeStatement";

/** Pools whose transactions set the scope in their opening round trip (`scopedTransactions`). */
const scoped = new WeakSet<Sequelize>();

/**
 * The statement that sets a scope for the rest of the transaction: `set_config(..., is_local =>
 * true)`, the same as `SET LOCAL`, so the setting cannot leak to the next user of the pooled
 * connection. The values are literals (it is held with `START TRANSACTION` and may be prefixed to
 * the text of a simple-protocol query, which takes no bind parameters), so the tenant id must be a
 * UUID and nothing else.
 */
export function scopeStatement(scope: Scope): string {
  if (scope.kind === "appliance") return "SELECT set_config('wardkeep.tenant_id', '', true), set_config('wardkeep.scope', 'appliance', true)";
  return `SELECT set_config('wardkeep.tenant_id', '${checkedTenantId(scope)}', true), set_config('wardkeep.scope', 'tenant', true)`;
}

function checkedTenantId(scope: { tenantId: string }): string {
  if (!UUID.test(scope.tenantId)) throw new TypeError("a tenant scope needs a tenant UUID");
  return scope.tenantId.toLowerCase();
}

/**
 * Makes `inScope` transactions on this pool open lazily: `START TRANSACTION; <scope>` is held and
 * sent with the transaction's first statement, in the same round trip (daemon/db/opening-pipeline.ts;
 * every request pays for each round trip, see docs/records.md, Performance). It replaces
 * Sequelize's `QueryInterface.startTransaction` for top-level transactions that carry a scope, and
 * leaves every other transaction to Sequelize. A transaction that sends nothing is never opened on
 * the server, so its ROLLBACK sends nothing either; its COMMIT is `commitPipelines`' to decide
 * (the pool must have them: a COMMIT may carry the opening too).
 */
export function scopedTransactions(db: Sequelize): Sequelize {
  if (!isCommitPipelined(db)) throw new Error("scopedTransactions needs a pool set up with commitPipelines");
  const qi = db.getQueryInterface();
  const start = qi.startTransaction.bind(qi);
  const rollback = qi.rollbackTransaction.bind(qi);
  qi.startTransaction = async (transaction: Transaction, options?: TransactionOptions) => {
    const statement = (options as Record<string, unknown> | undefined)?.[SCOPE_OPTION] as string | undefined;
    if (!statement || parentOf(transaction)) return start(transaction, options);
    holdOpening(connectionOf(transaction), ["START TRANSACTION", statement]);
  };
  qi.rollbackTransaction = async (transaction: Transaction, options?: TransactionOptions) => {
    if (!parentOf(transaction) && takeOpening(connectionOf(transaction))) return;
    return rollback(transaction, options);
  };
  scoped.add(db);
  return db;
}

/**
 * The one helper through which every query that touches tenant data runs: it opens a
 * transaction whose first statement sets the scope (see `scopeStatement`), then runs `work` in it.
 */
export async function inScope<T>(db: Sequelize, scope: Scope, work: (t: Transaction) => Promise<T>): Promise<T> {
  const statement = scopeStatement(scope);
  if (scoped.has(db)) return db.transaction({ [SCOPE_OPTION]: statement } as TransactionOptions, work);
  return db.transaction(async (transaction) => {
    await db.query(statement, { transaction });
    return work(transaction);
  });
}

/** `scopeStatement` with the tenant as a bind parameter, so it can be prepared once per connection. */
function scopeStep(scope: Scope): { text: string; values: unknown[]; prepared: true } {
  if (scope.kind === "appliance") return { text: scopeStatement(scope), values: [], prepared: true };
  return { text: "SELECT set_config('wardkeep.tenant_id', $1, true), set_config('wardkeep.scope', 'tenant', true)", values: [checkedTenantId(scope)], prepared: true };
}

type PooledClient = pg.Client & { _invalid?: boolean };

/**
 * One statement in a scoped transaction of its own, committed in the same round trip: `START
 * TRANSACTION`, the scope, the statement and `COMMIT` go out together with one Sync (see
 * daemon/db/commit-pipeline.ts), and its rows come back. For a request whose whole database work
 * is one statement, a patient read with its audit event (daemon/records/patients/access.ts): one
 * round trip, where `inScope` needs one for the work and one for COMMIT. The scope and the
 * statement are prepared on the connection at their first use.
 *
 * If anything fails, PostgreSQL runs nothing after it (the COMMIT included), the transaction is
 * rolled back here and the error is the statement's (`step` says which one failed: 2 is the
 * statement). A connection that cannot roll back is not returned to the pool.
 */
export async function singleStatementInScope<T>(db: Sequelize, scope: Scope, statement: { text: string; values: unknown[] }): Promise<T[]> {
  const steps = [{ text: "START TRANSACTION", values: [] }, scopeStep(scope), { ...statement, prepared: true, rows: true }, { text: "COMMIT", values: [] }];
  const manager = db.connectionManager as unknown as { getConnection(o: object): Promise<PooledClient>; releaseConnection(c: PooledClient): Promise<void> };
  const client = await manager.getConnection({ type: "write" });
  try {
    return await runPipeline<T>(client, steps);
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {
      client._invalid = true;
    });
    throw err;
  } finally {
    await manager.releaseConnection(client);
  }
}
