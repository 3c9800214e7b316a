import type { ApplianceContext } from "../context.js";
import { pendingMigrations } from "../db/migrate.js";
import { retryUnsealAfterMigration } from "../keys/index.js";

export type Readiness = {
  ready: boolean;
  checks: {
    database: { ok: boolean; detail: string };
    migrations: { ok: boolean; detail: string; pending: string[] };
    keys: { ok: boolean; detail: string };
  };
};

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** What /readyz and `wardkeep doctor` report: ready only when requests could be served in full. */
export async function checkReadiness(ctx: ApplianceContext): Promise<Readiness> {
  const checks: Readiness["checks"] = {
    database: { ok: false, detail: "not checked" },
    migrations: { ok: false, detail: "not checked", pending: [] },
    keys: ctx.rootKey.isSealed
      ? { ok: false, detail: `sealed: ${ctx.rootKey.state.sealed ? ctx.rootKey.state.reason : ""}` }
      : { ok: true, detail: `unsealed (${ctx.rootKey.mode})` },
  };
  try {
    await withTimeout(ctx.db.app.exec("SELECT 1"), 3_000, "PostgreSQL");
    checks.database = { ok: true, detail: "reachable as the app role" };
    const pending = await withTimeout(pendingMigrations(ctx.db.app), 3_000, "PostgreSQL");
    checks.migrations = pending.length ? { ok: false, detail: `${pending.length} pending; run \`wardkeep migrate\``, pending } : { ok: true, detail: "current", pending };
    if (!pending.length && ctx.rootKey.isSealed) {
      // A daemon started before `wardkeep migrate` unseals once the key store exists.
      await retryUnsealAfterMigration(ctx).catch(() => undefined);
      checks.keys = ctx.rootKey.state.sealed ? { ok: false, detail: `sealed: ${ctx.rootKey.state.reason}` } : { ok: true, detail: `unsealed (${ctx.rootKey.mode})` };
    }
  } catch (err) {
    // The driver's message names host and port, never credentials or SQL text.
    checks.database = { ok: false, detail: `unreachable: ${(err as Error).message.split("\n")[0]}` };
    checks.migrations = { ok: false, detail: "unknown while the database is unreachable", pending: [] };
  }
  return { ready: checks.database.ok && checks.migrations.ok && checks.keys.ok, checks };
}
