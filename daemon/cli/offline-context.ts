import { Registry } from "prom-client";
import { systemClock } from "../clock.js";
import type { Config } from "../config/schema.js";
import type { ApplianceContext } from "../context.js";
import { openDatabase } from "../db/connection.js";
import { prepareDatabase, type DatabaseTargets } from "../db/roles.js";
import { RootKey } from "../keys/root-key.js";
import { silentLogger, type Logger } from "../log/logger.js";

/**
 * A context for CLI commands that work on the database without serving HTTP (migrate, admin,
 * doctor). With the embedded PostgreSQL it attaches to a running daemon's server, or starts
 * the server for the duration of the command.
 */
export async function withOfflineContext<T>(
  config: Config,
  work: (ctx: ApplianceContext, targets: DatabaseTargets) => Promise<T>,
  log: Logger = silentLogger(),
): Promise<T> {
  const targets = await prepareDatabase(config);
  const db = openDatabase(targets, config);
  const ctx: ApplianceContext = { config, log, db, rootKey: new RootKey(config.keys.unseal), metrics: new Registry(), clock: systemClock };
  try {
    return await work(ctx, targets);
  } finally {
    await db.close();
    await targets.embedded?.stop();
  }
}
