import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { startAppliance, type Appliance } from "../../daemon/appliance.js";
import type { Clock } from "../../daemon/clock.js";
import { loadConfig } from "../../daemon/config/load.js";
import type { Config } from "../../daemon/config/schema.js";
import { undocumentedSuccesses } from "../../daemon/kernel/define-route.js";
import { createLogger } from "../../daemon/log/logger.js";
import { createTestDatabase, type TestDatabase } from "./postgres.js";

/** Environment for an appliance on a test database: ephemeral ports, its own data directory. */
export function testEnv(db: TestDatabase, dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    WARDKEEP_DATA_DIR: dataDir,
    WARDKEEP_DATABASE_URL: db.ownerUrl,
    WARDKEEP_DATABASE_APP_URL: db.appUrl,
    WARDKEEP_PORT: "0",
    WARDKEEP_SERVER_REDIRECT_PORT: "0",
    WARDKEEP_SERVER_HOST: "127.0.0.1",
    WARDKEEP_SERVER_SHUTDOWN_TIMEOUT_MS: "5000",
    ...extra,
  };
}

/**
 * Background loops that run on the application pool (the job runner, key maintenance, webhook and alert polls, the backup
 * watchdog, the WAL shipper, the records purge) pushed far apart, for tests that count what one request
 * sends to PostgreSQL: a loop's statements would otherwise land in the measured window now and then.
 */
export const QUIET_BACKGROUND: Record<string, string> = {
  // Jobs that run once shortly after a start (job_runs rows) as well as on their schedules.
  WARDKEEP_JOBS_ENABLED: "false",
  WARDKEEP_KEYS_MAINTENANCE_INTERVAL_SECONDS: "3600",
  WARDKEEP_WEBHOOKS_POLL_INTERVAL_MS: "60000",
  WARDKEEP_ALERTS_POLL_INTERVAL_MS: "300000",
  WARDKEEP_ALERTS_CHECK_INTERVAL_MS: "86400000",
  WARDKEEP_ALERTS_FIRST_CHECK_DELAY_MS: "86400000",
  WARDKEEP_BACKUP_WATCHDOG_INTERVAL_SECONDS: "3600",
  WARDKEEP_BACKUP_WAL_SHIP_INTERVAL_MS: "60000",
  WARDKEEP_RECORDS_PURGE_INTERVAL_MINUTES: "1440",
  WARDKEEP_AUDIT_CHECKPOINT_INTERVAL_MINUTES: "1440",
};

export function tempDir(prefix = "wardkeep-test-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export type TestAppliance = Appliance & {
  db: TestDatabase;
  config: Config;
  dataDir: string;
  caPem: string;
  /** Every JSON log line the appliance wrote. */
  logLines: string[];
  announcements: string[];
  baseUrl: string;
  close(): Promise<void>;
};

/** An appliance running in this process on a fresh database, served over real TLS. */
export async function startTestAppliance(opts: { env?: Record<string, string>; clock?: Clock; db?: TestDatabase; dataDir?: string } = {}): Promise<TestAppliance> {
  const db = opts.db ?? (await createTestDatabase());
  // A given data directory (keys, TLS) makes this a replica of the appliance that owns it.
  const dataDir = opts.dataDir ?? tempDir();
  const config = loadConfig({ env: testEnv(db, dataDir, opts.env) });
  const logLines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  const announcements: string[] = [];
  const appliance = await startAppliance(config, {
    log: createLogger({ level: "debug", stream }),
    clock: opts.clock,
    announce: (t) => announcements.push(t),
  });
  const caPem = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8");
  return {
    ...appliance,
    db,
    config,
    dataDir,
    caPem,
    logLines,
    announcements,
    baseUrl: `https://localhost:${appliance.server.port}`,
    async close() {
      await appliance.stop();
      // Every success this appliance sent had the status its OpenAPI operation declares.
      const mismatches = undocumentedSuccesses();
      if (mismatches.length > 0) throw new Error(`routes answered with statuses their OpenAPI operations do not declare: ${mismatches.join("; ")}`);
      if (!opts.db) await db.drop();
      if (!opts.dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The setup token from the first-run banner. */
export function setupTokenFrom(text: string): string | undefined {
  return /wks_setup_[A-Za-z0-9_-]+/.exec(text)?.[0];
}
