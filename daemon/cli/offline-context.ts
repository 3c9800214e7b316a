import { Registry } from "prom-client";
import { loadConfig } from "../config/load.js";
import { AppError } from "../kernel/errors.js";
import { unsealForOperator, RootKey } from "../keys/index.js";
import { CliError } from "./output.js";
import { systemClock } from "../clock.js";
import type { Config } from "../config/schema.js";
import type { ApplianceContext } from "../context.js";
import { openDatabase } from "../db/connection.js";
import { prepareDatabase, type DatabaseTargets } from "../db/roles.js";
import { silentLogger, type Logger } from "../log/logger.js";

/**
 * A context for CLI commands that work on the database without serving HTTP (migrate, admin,
 * doctor). With the embedded PostgreSQL it attaches to a running daemon's server, or starts
 * the server for the duration of the command.
 */
export async function withOfflineContext<T>(config: Config, work: (ctx: ApplianceContext, targets: DatabaseTargets) => Promise<T>, log: Logger = silentLogger()): Promise<T> {
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

/** How an operator command proves it may open the key store (passphrase file, custodian share files). */
export type UnsealOpts = { passphraseFile?: string; shareFile?: string[] };

/**
 * An offline context with the key store unsealed for the duration of the command, sealed again
 * after. `unseal: "optional"` carries on sealed (audit verification checks signatures against a
 * pinned public key and needs no secret). Key and service errors become one-line CLI errors.
 */
export async function withUnsealedContext<T>(opts: UnsealOpts, work: (ctx: ApplianceContext) => Promise<T>, unseal: "required" | "optional" = "required"): Promise<T> {
  try {
    return await withOfflineContext(loadConfig(), async (ctx) => {
      try {
        await unsealForOperator(ctx, { passphraseFile: opts.passphraseFile, shareFiles: opts.shareFile });
      } catch (err) {
        if (unseal === "required") throw err;
      }
      try {
        return await work(ctx);
      } finally {
        ctx.rootKey.seal("command finished");
      }
    });
  } catch (err) {
    if (err instanceof AppError) throw new CliError(err.message);
    throw err;
  }
}
