import fs from "node:fs";
import { Writable } from "node:stream";
import { Registry } from "prom-client";
import type { Clock } from "../../../daemon/clock.js";
import { loadConfig } from "../../../daemon/config/load.js";
import type { ApplianceContext } from "../../../daemon/context.js";
import { openDatabase } from "../../../daemon/db/connection.js";
import { applyMigrations } from "../../../daemon/db/migrate.js";
import { APP_ROLE } from "../../../daemon/db/roles.js";
import { RootKey } from "../../../daemon/keys/root-key.js";
import { randomKey } from "../../../daemon/keys/primitives.js";
import { createLogger } from "../../../daemon/log/logger.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { tempDir, testEnv } from "../../helpers/appliance.js";

/** A clock tests move by hand (retention, checkpoint schedules). */
export class ManualClock implements Clock {
  constructor(private t = Date.now()) {}
  now(): Date {
    return new Date(this.t);
  }
  set(d: Date): void {
    this.t = d.getTime();
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

export type AuditTestContext = { ctx: ApplianceContext; db: TestDatabase; logLines: string[]; dataDir: string; close(): Promise<void> };

/**
 * A real context (both pools, migrations applied, an unsealed root key) without HTTP, for
 * testing the audit services directly.
 */
export async function auditTestContext(opts: { clock?: Clock; env?: Record<string, string>; poolMax?: number } = {}): Promise<AuditTestContext> {
  const db = await createTestDatabase();
  const dataDir = tempDir("wardkeep-audit-");
  const config = loadConfig({ env: testEnv(db, dataDir, { WARDKEEP_DATABASE_POOL_MAX: String(opts.poolMax ?? 10), ...opts.env }) });
  const logLines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  const database = openDatabase({ ownerUrl: db.ownerUrl, appUrl: db.appUrl, appRole: APP_ROLE, created: [] }, config);
  await applyMigrations(database.owner, db.ownerUrl, APP_ROLE);
  const rootKey = new RootKey(config.keys.unseal);
  rootKey.open({ mode: "keyfile", unsealKey: randomKey(), generation: 1, keks: new Map(), internalKey: randomKey() });
  const ctx: ApplianceContext = {
    config,
    log: createLogger({ level: "debug", stream }),
    db: database,
    rootKey,
    metrics: new Registry(),
    clock: opts.clock ?? { now: () => new Date() },
  };
  return {
    ctx,
    db,
    logLines,
    dataDir,
    async close() {
      await database.close();
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
