import { Umzug, SequelizeStorage } from "umzug";
import type { Sequelize } from "sequelize";
import pg from "pg";
import { migrations, type Migration } from "./migrations/index.js";

/**
 * Forward-only migrations (CONVENTIONS 8): numbered SQL, applied in order by umzug as the
 * owner role, each in its own transaction, recorded in `schema_migrations`.
 * `{{app_role}}` in a migration stands for the role requests run as.
 */
function renderSql(m: Migration, appRole: string, quote: (s: string) => string): string {
  return m.sql.replaceAll("{{app_role}}", quote(appRole));
}

function umzugFor(owner: Sequelize, appRole: string) {
  const quote = (s: string) => `"${s.replaceAll('"', '""')}"`;
  return new Umzug({
    migrations: migrations.map((m) => ({
      name: m.name,
      up: async () => {
        await owner.transaction(async (transaction) => {
          // Several replicas may start at once: one applies, the others wait and find nothing pending.
          await owner.query(renderSql(m, appRole, quote), { transaction });
        });
      },
    })),
    storage: new SequelizeStorage({ sequelize: owner, tableName: "schema_migrations" }),
    logger: undefined,
  });
}

const MIGRATION_LOCK = 7_301_001; // advisory lock id shared by every replica

export async function applyMigrations(owner: Sequelize, ownerUrl: string, appRole: string): Promise<string[]> {
  const umzug = umzugFor(owner, appRole);
  // A session lock needs one connection for lock and unlock, so it gets its own client; if this
  // process dies, PostgreSQL drops the lock with the connection.
  const lock = new pg.Client({ connectionString: ownerUrl });
  await lock.connect();
  await lock.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
  try {
    const applied = await umzug.up();
    // The app role reads the migration list for /readyz.
    await owner.query(`GRANT SELECT ON schema_migrations TO "${appRole.replaceAll('"', '""')}"`);
    return applied.map((m) => m.name);
  } finally {
    await lock.end().catch(() => {});
  }
}

export function knownMigrations(): string[] {
  return migrations.map((m) => m.name);
}

/** Names of migrations this build knows that the database has not applied; any pool may ask. */
export async function pendingMigrations(db: Sequelize): Promise<string[]> {
  let applied: string[] = [];
  try {
    const [rows] = await db.query('SELECT name FROM schema_migrations');
    applied = (rows as { name: string }[]).map((r) => r.name);
  } catch (err) {
    // 42P01 undefined_table: a database no migration has touched yet.
    if ((err as { original?: { code?: string } }).original?.code !== "42P01") throw err;
  }
  const done = new Set(applied);
  return knownMigrations().filter((n) => !done.has(n));
}
