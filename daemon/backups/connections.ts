import fs from "node:fs";
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { SqlPool } from "../db/sql.js";
import type { ScratchDatabase } from "../../backup/drill.js";
import { inDataDir } from "../config/load.js";
import type { ApplianceContext } from "../context.js";
import { Unavailable } from "../kernel/errors.js";

/** The URL a pool connects with (the engine opens its own connections: COPY streams need one each). */
export function urlOf(db: SqlPool, database?: string): string {
  return db.url(database);
}

export function ownerConnector(ctx: ApplianceContext): () => Promise<pg.Client> {
  const url = urlOf(ctx.db.owner);
  return async () => {
    const client = new pg.Client({ connectionString: url, application_name: "wardkeep-backup" } as pg.ClientConfig);
    await client.connect();
    return client;
  };
}

/** A role that may create, rename and drop databases: `backup.drillAdminUrl`, or the embedded PostgreSQL's superuser. */
export function databaseAdminUrl(ctx: ApplianceContext): string {
  const b = ctx.config.backup;
  if (b.drillAdminUrl) {
    const u = new URL(b.drillAdminUrl);
    if (b.drillAdminPasswordFile) u.password = encodeURIComponent(fs.readFileSync(b.drillAdminPasswordFile, "utf8").trim());
    return u.toString();
  }
  if (!ctx.config.database.url) {
    // The embedded PostgreSQL's superuser (its password file lives with the other generated secrets).
    const password = fs.readFileSync(inDataDir(ctx.config, "secrets/pg-superuser-password"), "utf8").trim();
    return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${ctx.config.database.embeddedPort}/postgres`;
  }
  throw new Unavailable("recovery drills need a role that may create a scratch database: set backup.drillAdminUrl (and drillAdminPasswordFile)");
}

/**
 * A fresh, empty database for one drill, owned by the appliance's owner role and reachable by the
 * app role (as the real one is), dropped afterwards even when the drill failed.
 */
export function scratchDatabaseFactory(ctx: ApplianceContext, prefix = "wardkeep_drill"): () => Promise<ScratchDatabase> {
  return async () => {
    const admin = new pg.Client({ connectionString: databaseAdminUrl(ctx) });
    await admin.connect();
    const name = `${prefix}_${randomBytes(5).toString("hex")}`;
    const owner = ctx.db.owner.info.user;
    const app = ctx.db.app.info.user;
    try {
      await admin.query(`CREATE DATABASE ${name} OWNER ${admin.escapeIdentifier(owner)}`);
      await admin.query(`REVOKE ALL ON DATABASE ${name} FROM PUBLIC`);
      await admin.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${name} TO ${admin.escapeIdentifier(app)}`);
    } finally {
      await admin.end();
    }
    return {
      ownerUrl: urlOf(ctx.db.owner, name),
      appUrl: urlOf(ctx.db.app, name),
      async drop() {
        const c = new pg.Client({ connectionString: databaseAdminUrl(ctx) });
        await c.connect();
        try {
          await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        } finally {
          await c.end();
        }
      },
    };
  };
}
