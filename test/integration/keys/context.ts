import fs from "node:fs";
import { Writable } from "node:stream";
import pg from "pg";
import { Registry } from "prom-client";
import type { Clock } from "../../../daemon/clock.js";
import { systemClock } from "../../../daemon/clock.js";
import { loadConfig } from "../../../daemon/config/load.js";
import type { ApplianceContext } from "../../../daemon/context.js";
import { openDatabase } from "../../../daemon/db/connection.js";
import { applyMigrations } from "../../../daemon/db/migrate.js";
import { prepareDatabase } from "../../../daemon/db/roles.js";
import { RootKey } from "../../../daemon/keys/root-key.js";
import { createLogger } from "../../../daemon/log/logger.js";
import { tempDir, testEnv } from "../../helpers/appliance.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";

export type KeysContext = {
  ctx: ApplianceContext;
  db: TestDatabase;
  dataDir: string;
  logLines: string[];
  /** Inspects the database as its superuser (no row-level security), like an attacker or auditor with a dump. */
  sql<T = Record<string, unknown>>(text: string, bind?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
};

/**
 * One "replica" of the keys capability without HTTP: a real database (migrated), a real barrier,
 * its own data directory. Two contexts on one database behave like two replicas.
 */
export async function keysContext(opts: { db?: TestDatabase; dataDir?: string; env?: Record<string, string>; clock?: Clock } = {}): Promise<KeysContext> {
  const db = opts.db ?? (await createTestDatabase());
  const dataDir = opts.dataDir ?? tempDir("wardkeep-keys-");
  const config = loadConfig({ env: testEnv(db, dataDir, opts.env) });
  const targets = await prepareDatabase(config);
  const database = openDatabase(targets, config);
  await applyMigrations(database.owner, targets.ownerUrl, targets.appRole);
  const logLines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  const rootKey = new RootKey(config.keys.unseal, {
    cacheSize: config.keys.dataKeyCacheSize,
    cacheTtlMs: config.keys.dataKeyCacheSeconds * 1000,
    nonceBudget: config.keys.nonceBudget,
  });
  const ctx: ApplianceContext = { config, log: createLogger({ level: "debug", stream }), db: database, rootKey, metrics: new Registry(), clock: opts.clock ?? systemClock };
  const inspector = new pg.Pool({ connectionString: db.superuserUrl, max: 2 });
  return {
    ctx,
    db,
    dataDir,
    logLines,
    async sql<T>(text: string, bind: unknown[] = []) {
      return (await inspector.query(text, bind)).rows as T[];
    },
    async close() {
      await inspector.end();
      rootKey.seal("test done");
      await database.close();
      if (!opts.db) await db.drop();
      if (!opts.dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Every secret's hex and base64 forms must be absent from these lines. */
export function expectNoSecretIn(lines: string[], secrets: Buffer[]): string | undefined {
  const text = lines.join("\n");
  for (const s of secrets) {
    for (const form of [s.toString("hex"), s.toString("base64"), s.toString("base64url")]) {
      if (text.includes(form)) return form;
    }
  }
  return undefined;
}
