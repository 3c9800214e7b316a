import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { inject } from "vitest";
import { startEmbeddedPostgres } from "../../daemon/db/embedded.js";
import { APP_ROLE, ensureLoginRole, OWNER_ROLE } from "../../daemon/db/roles.js";

/** What the global setup shares with every test file. */
export type TestCluster = { superuserUrl: string; ownerPassword: string; appPassword: string; port: number; dir: string };

declare module "vitest" {
  export interface ProvidedContext {
    pgCluster: TestCluster;
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** One real PostgreSQL per test run (global setup), with the appliance's two roles. */
export async function startTestCluster() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-test-pg-"));
  fs.chmodSync(dir, 0o711);
  const port = await freePort();
  const embedded = await startEmbeddedPostgres({ dataDir: path.join(dir, "data"), port, passwordFile: path.join(dir, "superuser-password") });
  const ownerPassword = randomBytes(12).toString("hex");
  const appPassword = randomBytes(12).toString("hex");
  const client = new pg.Client({ connectionString: embedded.superuserUrl });
  await client.connect();
  await ensureLoginRole(client, OWNER_ROLE, ownerPassword);
  await ensureLoginRole(client, APP_ROLE, appPassword);
  await client.end();
  const cluster: TestCluster = { superuserUrl: embedded.superuserUrl, ownerPassword, appPassword, port, dir };
  return {
    cluster,
    async stop() {
      await embedded.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type TestDatabase = { name: string; ownerUrl: string; appUrl: string; superuserUrl: string; drop(): Promise<void> };

/** A fresh, empty database owned by the owner role (one per test file, CONVENTIONS 10). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const cluster = inject("pgCluster");
  const name = `wk_test_${randomBytes(5).toString("hex")}`;
  const su = new pg.Client({ connectionString: cluster.superuserUrl });
  await su.connect();
  await su.query(`CREATE DATABASE ${name} OWNER ${OWNER_ROLE}`);
  await su.query(`REVOKE ALL ON DATABASE ${name} FROM PUBLIC`);
  await su.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${name} TO ${APP_ROLE}`);
  await su.end();
  const url = (user: string, password: string) => `postgres://${user}:${password}@127.0.0.1:${cluster.port}/${name}`;
  return {
    name,
    ownerUrl: url(OWNER_ROLE, cluster.ownerPassword),
    appUrl: url(APP_ROLE, cluster.appPassword),
    superuserUrl: cluster.superuserUrl.replace(/\/postgres$/, `/${name}`),
    async drop() {
      const c = new pg.Client({ connectionString: cluster.superuserUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
