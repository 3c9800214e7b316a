import type { Config } from "../config/schema.js";
import type { DatabaseTargets } from "./roles.js";
import { InvalidationBus } from "./invalidation.js";
import { SqlPool } from "./sql.js";

/**
 * The two connection pools. `owner` runs migrations and appliance maintenance; `app` serves
 * every request and is the only one that touches tenant rows, under row-level security.
 */
export type Database = {
  owner: SqlPool;
  app: SqlPool;
  appRole: string;
  /** Cross-replica cache invalidation (LISTEN/NOTIFY on the app role's connection; daemon/db/invalidation.ts). */
  invalidations: InvalidationBus;
  close(): Promise<void>;
};

function pool(url: string, config: Config, applicationName: string): SqlPool {
  return new SqlPool({ url, applicationName, max: config.database.poolMax, statementTimeoutMs: config.database.statementTimeoutMs, acquireTimeoutMs: 15_000 });
}

export function openDatabase(targets: DatabaseTargets, config: Config): Database {
  const owner = pool(targets.ownerUrl, config, "wardkeep-owner");
  const app = pool(targets.appUrl, config, "wardkeep");
  const invalidations = new InvalidationBus(targets.appUrl);
  return {
    owner,
    app,
    appRole: targets.appRole,
    invalidations,
    async close() {
      await Promise.allSettled([invalidations.close(), app.close(), owner.close()]);
    },
  };
}
