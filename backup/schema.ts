/**
 * Restore recreates the schema by running this build's own migrations on the empty database
 * (the simplest route that is always right: no DDL is stored in a snapshot), in two steps: the
 * migrations the snapshot was taken at, before the data is loaded, and any newer ones after,
 * so an old snapshot restored by a newer Wardkeep has its data migrated like a live database.
 */
import { runMigrationList } from "../daemon/db/migrate.js";
import { SqlPool } from "../daemon/db/sql.js";
import { migrations as buildMigrations, type Migration } from "../daemon/db/migrations/index.js";
import { RestoreRefused } from "./errors.js";

export function buildMigrationNames(): string[] {
  return buildMigrations.map((m) => m.name);
}

/** Splits this build's migrations into those the snapshot has and those to run after the load. */
export function planSchema(snapshotMigrations: string[], available: Migration[] = buildMigrations): { before: Migration[]; after: Migration[] } {
  const names = available.map((m) => m.name);
  const unknown = snapshotMigrations.filter((n) => !names.includes(n));
  if (unknown.length) {
    throw new RestoreRefused(
      `the snapshot's schema is at ${snapshotMigrations.at(-1)}, newer than this Wardkeep (${names.at(-1)}); unknown migration(s): ${unknown.join(", ")}. Restore it with a Wardkeep release that has them`,
      { snapshotSchema: snapshotMigrations.at(-1), buildSchema: names.at(-1) },
    );
  }
  const prefix = names.slice(0, snapshotMigrations.length);
  if (prefix.join("\n") !== snapshotMigrations.join("\n")) {
    throw new RestoreRefused(`the snapshot's migrations (${snapshotMigrations.join(", ")}) are not a prefix of this Wardkeep's (${names.join(", ")}); the schemas diverge`);
  }
  return { before: available.slice(0, snapshotMigrations.length), after: available.slice(snapshotMigrations.length) };
}

/** Runs migrations as migrate.ts does (one transaction each, recorded in schema_migrations). */
export async function applyMigrationList(url: string, appRole: string, list: Migration[]): Promise<string[]> {
  if (list.length === 0) return [];
  const owner = new SqlPool({ url, applicationName: "wardkeep-restore", max: 1, statementTimeoutMs: 0 });
  try {
    return await runMigrationList(owner, appRole, list);
  } finally {
    await owner.close();
  }
}
