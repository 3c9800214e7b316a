import type { UmzugStorage } from "umzug";
import pg from "pg";
import { migrations, type Migration } from "./migrations/index.js";
import { quoteIdent, sqlState, type SqlPool } from "./sql.js";

/**
 * Forward-only migrations (CONVENTIONS 8): numbered SQL, applied in order by umzug as the
 * owner role, each in its own transaction, recorded in `schema_migrations`.
 * `{{app_role}}` in a migration stands for the role requests run as.
 */
function renderSql(m: Migration, appRole: string): string {
  return m.sql.replaceAll("{{app_role}}", quoteIdent(appRole));
}

/** umzug's record of applied migrations: one row per name in `schema_migrations`. */
function migrationTable(owner: SqlPool): UmzugStorage {
  const ensure = () => owner.exec("CREATE TABLE IF NOT EXISTS schema_migrations (name varchar(255) PRIMARY KEY)");
  return {
    async logMigration({ name }) {
      await ensure();
      await owner.exec("INSERT INTO schema_migrations (name) VALUES ($1)", [name]);
    },
    async unlogMigration({ name }) {
      await owner.exec("DELETE FROM schema_migrations WHERE name = $1", [name]);
    },
    async executed() {
      await ensure();
      return (await owner.rows<{ name: string }>("SELECT name FROM schema_migrations ORDER BY name")).map((r) => r.name);
    },
  };
}

/** umzug and its dependencies load only when migrations run: every other CLI command starts faster without them. */
async function umzugFor(owner: SqlPool, appRole: string, list: Migration[]) {
  const { Umzug } = await import("umzug");
  return new Umzug({
    migrations: list.map((m) => ({
      name: m.name,
      up: async () => {
        await owner.transaction((tx) => tx.exec(renderSql(m, appRole)));
      },
    })),
    storage: migrationTable(owner),
    logger: undefined,
  });
}

const MIGRATION_LOCK = 7_301_001; // advisory lock id shared by every replica

/**
 * Applies the pending migrations of `list` (this build's, unless a restore applies them in two
 * steps: backup/schema.ts) and lets the app role read the record. No lock: see applyMigrations.
 */
export async function runMigrationList(owner: SqlPool, appRole: string, list: Migration[] = migrations): Promise<string[]> {
  const applied = await (await umzugFor(owner, appRole, list)).up();
  // The app role reads the migration list for /readyz.
  await owner.exec(`GRANT SELECT ON schema_migrations TO ${quoteIdent(appRole)}`);
  return applied.map((m) => m.name);
}

export async function applyMigrations(owner: SqlPool, ownerUrl: string, appRole: string): Promise<string[]> {
  // A session lock needs one connection for lock and unlock, so it gets its own client; if this
  // process dies, PostgreSQL drops the lock with the connection. Several replicas may start at
  // once: one applies, the others wait and then find nothing pending.
  const lock = new pg.Client({ connectionString: ownerUrl });
  await lock.connect();
  await lock.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
  try {
    return await runMigrationList(owner, appRole);
  } finally {
    await lock.end().catch(() => {});
  }
}

export function knownMigrations(): string[] {
  return migrations.map((m) => m.name);
}

/** Names of migrations this build knows that the database has not applied; any pool may ask. */
export async function pendingMigrations(db: SqlPool): Promise<string[]> {
  let applied: string[] = [];
  try {
    applied = (await db.rows<{ name: string }>("SELECT name FROM schema_migrations")).map((r) => r.name);
  } catch (err) {
    // 42P01 undefined_table: a database no migration has touched yet.
    if (sqlState(err) !== "42P01") throw err;
  }
  const done = new Set(applied);
  return knownMigrations().filter((n) => !done.has(n));
}
