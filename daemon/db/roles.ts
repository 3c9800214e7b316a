import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { Config } from "../config/schema.js";
import { inDataDir } from "../config/load.js";
import { embeddedDatabaseUrl, runAs, startEmbeddedPostgres, type EmbeddedPostgres } from "./embedded.js";
import { archiveSettings, prepareSpool } from "./wal-archive.js";

/**
 * Two roles, as DESIGN.md requires: the owner runs migrations and owns the tables; the app role
 * serves requests and has neither BYPASSRLS nor the ownership that would skip row-level
 * security, so a forgotten WHERE clause cannot return another tenant's rows.
 */
export const OWNER_ROLE = "wardkeep_owner";
export const APP_ROLE = "wardkeep_app";
export const EMBEDDED_DATABASE = "wardkeep";

export type DatabaseTargets = {
  ownerUrl: string;
  appUrl: string;
  /** The role name requests run as (grants in migrations are written to it). */
  appRole: string;
  embedded?: EmbeddedPostgres;
  /** Human-readable lines about what this start created. */
  created: string[];
};

export class DatabaseSetupError extends Error {
  override name = "DatabaseSetupError";
}

function readSecretFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new DatabaseSetupError(`database: cannot read ${what} file ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
}

function readOrCreateSecret(file: string): { value: string; created: boolean } {
  if (fs.existsSync(file)) return { value: fs.readFileSync(file, "utf8").trim(), created: false };
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const value = randomBytes(24).toString("base64url");
  fs.writeFileSync(file, value + "\n", { mode: 0o600, flag: "wx" });
  return { value, created: true };
}

function withCredentials(url: string, user: string | undefined, password: string | undefined): string {
  const u = new URL(url);
  if (user !== undefined) u.username = encodeURIComponent(user);
  if (password !== undefined) u.password = encodeURIComponent(password);
  return u.toString();
}

/** The URL with any password masked, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable URL)";
  }
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
  } catch (err) {
    throw new DatabaseSetupError(`database: cannot connect to ${redactUrl(url)} (${(err as Error).message})`);
  }
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Creates the role, or resets its password so it matches the secret file; never grants BYPASSRLS. Also the benches' and tests' way to make the two roles. */
export async function ensureLoginRole(client: pg.Client, role: string, password: string): Promise<boolean> {
  const exists = await client.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [role]);
  const ident = client.escapeIdentifier(role);
  const literal = client.escapeLiteral(password);
  if (exists.rowCount === 0) {
    await client.query(`CREATE ROLE ${ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD ${literal}`);
    return true;
  }
  await client.query(`ALTER ROLE ${ident} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD ${literal}`);
  return false;
}

/**
 * Works out the owner and app connections, starting the embedded PostgreSQL when no external
 * one is configured, and creates the roles and database a first start needs.
 */
export async function prepareDatabase(config: Config, onLog?: (line: string) => void): Promise<DatabaseTargets> {
  const created: string[] = [];
  if (!config.database.url) {
    const secrets = inDataDir(config, "secrets");
    let settings: Record<string, string> | undefined;
    if (config.backup.walArchiving) {
      const spool = inDataDir(config, config.backup.walSpoolDir);
      prepareSpool(spool, runAs());
      settings = archiveSettings(spool, config.backup.walSpoolLimitMiB, config.backup.archiveTimeoutSeconds);
    }
    const embedded = await startEmbeddedPostgres({
      dataDir: inDataDir(config, "pg"),
      port: config.database.embeddedPort,
      passwordFile: path.join(secrets, "pg-superuser-password"),
      settings,
      onLog,
    });
    if (embedded.initialised) created.push(`embedded PostgreSQL initialised in ${inDataDir(config, "pg")}`);
    try {
      const owner = readOrCreateSecret(path.join(secrets, "db-owner-password"));
      const app = readOrCreateSecret(path.join(secrets, "db-app-password"));
      await withClient(embedded.superuserUrl, async (c) => {
        const madeOwner = await ensureLoginRole(c, OWNER_ROLE, owner.value);
        const madeApp = await ensureLoginRole(c, APP_ROLE, app.value);
        const db = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [EMBEDDED_DATABASE]);
        if (db.rowCount === 0) {
          await c.query(`CREATE DATABASE ${EMBEDDED_DATABASE} OWNER ${OWNER_ROLE} ENCODING 'UTF8'`);
          await c.query(`REVOKE ALL ON DATABASE ${EMBEDDED_DATABASE} FROM PUBLIC`);
          await c.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${EMBEDDED_DATABASE} TO ${APP_ROLE}`);
          created.push(`database ${EMBEDDED_DATABASE} created`);
        }
        if (madeOwner || madeApp) created.push(`roles ${OWNER_ROLE} (migrations) and ${APP_ROLE} (requests, no BYPASSRLS) created`);
      });
      return {
        ownerUrl: embeddedDatabaseUrl(embedded, EMBEDDED_DATABASE, { user: OWNER_ROLE, password: owner.value }),
        appUrl: embeddedDatabaseUrl(embedded, EMBEDDED_DATABASE, { user: APP_ROLE, password: app.value }),
        appRole: APP_ROLE,
        embedded,
        created,
      };
    } catch (err) {
      await embedded.stop();
      throw err;
    }
  }

  const ownerPassword = config.database.passwordFile ? readSecretFile(config.database.passwordFile, "database password") : undefined;
  const ownerUrl = withCredentials(config.database.url, undefined, ownerPassword);
  if (config.database.appUrl) {
    const appRole = decodeURIComponent(new URL(config.database.appUrl).username);
    return { ownerUrl, appUrl: config.database.appUrl, appRole, created };
  }
  const appPassword = config.database.appPasswordFile
    ? { value: readSecretFile(config.database.appPasswordFile, "app role password"), created: false }
    : readOrCreateSecret(inDataDir(config, "secrets/db-app-password"));
  await withClient(ownerUrl, async (c) => {
    try {
      if (await ensureLoginRole(c, APP_ROLE, appPassword.value)) created.push(`role ${APP_ROLE} (requests, no BYPASSRLS) created`);
      const dbName = (await c.query("SELECT current_database() AS d")).rows[0].d as string;
      await c.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${c.escapeIdentifier(dbName)} TO ${APP_ROLE}`);
    } catch (err) {
      throw new DatabaseSetupError(
        `database: the owner role cannot create or update role ${APP_ROLE} (${(err as Error).message}); create it (LOGIN NOBYPASSRLS) and set database.appUrl`,
      );
    }
  });
  return { ownerUrl, appUrl: withCredentials(ownerUrl, APP_ROLE, appPassword.value), appRole: APP_ROLE, created };
}

/** Refuses an app role that would defeat row-level security. */
export async function assertAppRoleIsRestricted(appUrl: string): Promise<void> {
  await withClient(appUrl, async (c) => {
    const r = await c.query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user");
    const row = r.rows[0] as { rolsuper: boolean; rolbypassrls: boolean };
    if (row.rolsuper || row.rolbypassrls) {
      throw new DatabaseSetupError(
        `database: the app role ${redactUrl(appUrl)} is ${row.rolsuper ? "a superuser" : "BYPASSRLS"}; row-level security would not apply — use a restricted role`,
      );
    }
  });
}
