import { randomBytes } from "node:crypto";
import pg from "pg";
import { embeddedDatabaseUrl, type EmbeddedPostgres } from "../daemon/db/embedded.js";
import { APP_ROLE, ensureLoginRole, OWNER_ROLE } from "../daemon/db/roles.js";

/** The owner and app roles with fresh passwords and a database the owner owns, on a bench's embedded PostgreSQL. */
export async function createBenchDatabase(embedded: EmbeddedPostgres, name: string): Promise<{ ownerUrl: string; appUrl: string }> {
  const ownerPw = randomBytes(12).toString("hex");
  const appPw = randomBytes(12).toString("hex");
  const su = new pg.Client({ connectionString: embedded.superuserUrl });
  await su.connect();
  await ensureLoginRole(su, OWNER_ROLE, ownerPw);
  await ensureLoginRole(su, APP_ROLE, appPw);
  await su.query(`CREATE DATABASE ${name} OWNER ${OWNER_ROLE}`);
  await su.end();
  return {
    ownerUrl: embeddedDatabaseUrl(embedded, name, { user: OWNER_ROLE, password: ownerPw }),
    appUrl: embeddedDatabaseUrl(embedded, name, { user: APP_ROLE, password: appPw }),
  };
}
