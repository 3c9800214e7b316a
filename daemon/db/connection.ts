import type { Config } from "../config/schema.js";
import type { DatabaseTargets } from "./roles.js";
import { DatabaseCircuit } from "./circuit.js";
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
  /** Shared by both pools: fails requests fast while PostgreSQL is unreachable (./circuit.ts). */
  circuit: DatabaseCircuit;
  /** Cross-replica cache invalidation (LISTEN/NOTIFY on the app role's connection; daemon/db/invalidation.ts). */
  invalidations: InvalidationBus;
  close(): Promise<void>;
};

function pool(url: string, config: Config, applicationName: string, circuit: DatabaseCircuit, opts: { grouped?: boolean } = {}): SqlPool {
  const d = config.database;
  return new SqlPool({
    url,
    applicationName,
    max: d.poolMax,
    statementTimeoutMs: d.statementTimeoutMs,
    acquireTimeoutMs: d.acquireTimeoutMs,
    commitTimeoutMs: d.commitTimeoutMs,
    circuit,
    groupCommit: opts.grouped ? { maxMembers: d.groupCommitMembers, maxInFlight: d.groupCommitInFlight, busyThreshold: d.groupCommitBusyThreshold } : undefined,
  });
}

export function openDatabase(targets: DatabaseTargets, config: Config): Database {
  const d = config.database;
  const circuit = new DatabaseCircuit({ url: targets.appUrl, heartbeatMs: d.heartbeatMs, probeTimeoutMs: d.probeTimeoutMs, retryAfterSeconds: d.retryAfterSeconds });
  const owner = pool(targets.ownerUrl, config, "wardkeep-owner", circuit);
  // Only requests' hot paths ask for group commit (records' patient reads and note writes).
  const app = pool(targets.appUrl, config, "wardkeep", circuit, { grouped: true });
  const invalidations = new InvalidationBus(targets.appUrl);
  circuit.start();
  return {
    owner,
    app,
    appRole: targets.appRole,
    circuit,
    invalidations,
    async close() {
      await circuit.stop();
      await Promise.allSettled([invalidations.close(), app.close(), owner.close()]);
    },
  };
}
