import { QueryTypes, type Transaction } from "sequelize";
import type { ApplianceContext } from "../context.js";
import { withCommit } from "../db/commit-pipeline.js";

/** Rows of a parameterised query in the caller's transaction (values only ever travel as binds). */
export function rows<T extends object>(ctx: ApplianceContext, t: Transaction, sql: string, bind: unknown[] = []): Promise<T[]> {
  return ctx.db.app.query<T>(sql, { bind, type: QueryTypes.SELECT, transaction: t });
}

export async function exec(ctx: ApplianceContext, t: Transaction, sql: string, bind: unknown[] = []): Promise<void> {
  await ctx.db.app.query(sql, { bind, transaction: t });
}

/**
 * A write whose result the request does not need before it commits: sent with the transaction's
 * COMMIT (and its audit event) in one round trip (daemon/db/commit-pipeline.ts). If it fails the
 * transaction rolls back, and its error reaches the caller as any failed statement's would.
 */
export async function execWithCommit(ctx: ApplianceContext, t: Transaction, sql: string, bind: unknown[] = []): Promise<void> {
  await withCommit(ctx.db.app, t, { text: sql, values: bind });
}

/** PostgreSQL unique_violation on the named constraint or index (never its detail: it quotes values). */
export function isUniqueViolation(err: unknown, constraint: string): boolean {
  const e = err as { name?: string; original?: { code?: string; constraint?: string }; parent?: { code?: string; constraint?: string } };
  const pg = e.original ?? e.parent;
  return pg?.code === "23505" && pg.constraint === constraint;
}
