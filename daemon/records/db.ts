import { QueryTypes, type Transaction } from "sequelize";
import type { ApplianceContext } from "../context.js";

/** Rows of a parameterised query in the caller's transaction (values only ever travel as binds). */
export function rows<T extends object>(ctx: ApplianceContext, t: Transaction, sql: string, bind: unknown[] = []): Promise<T[]> {
  return ctx.db.app.query<T>(sql, { bind, type: QueryTypes.SELECT, transaction: t });
}

export async function exec(ctx: ApplianceContext, t: Transaction, sql: string, bind: unknown[] = []): Promise<void> {
  await ctx.db.app.query(sql, { bind, transaction: t });
}

/** PostgreSQL unique_violation on the named constraint or index (never its detail: it quotes values). */
export function isUniqueViolation(err: unknown, constraint: string): boolean {
  const e = err as { name?: string; original?: { code?: string; constraint?: string }; parent?: { code?: string; constraint?: string } };
  const pg = e.original ?? e.parent;
  return pg?.code === "23505" && pg.constraint === constraint;
}
