import { Sequelize, type Transaction, type TransactionOptions } from "sequelize";
import type { Config } from "../config/schema.js";
import type { DatabaseTargets } from "./roles.js";
import type pg from "pg";
import { commitPipelines } from "./commit-pipeline.js";
import { carryOpenings } from "./opening-pipeline.js";
import { nameRepeatedStatements } from "./prepared-statements.js";
import { scopedTransactions } from "./tenant-scope.js";

/**
 * The two connection pools. `owner` runs migrations and appliance maintenance; `app` serves
 * every request and is the only one that touches tenant rows, under row-level security.
 */
export type Database = {
  owner: Sequelize;
  app: Sequelize;
  appRole: string;
  close(): Promise<void>;
};

/**
 * How long a pooled connection may sit idle before it is closed. A new connection costs a
 * password exchange (SCRAM), a fresh PostgreSQL backend with cold caches, and the statements it had
 * prepared (daemon/db/prepared-statements.ts). With 10 seconds, a steady 200 requests/s used a few
 * connections, the rest timed out, and every burst opened them again: the event loop stalled 40–50
 * ms and the patient read's p99 at 200 req/s swung between 16 and 79 ms (docs/records.md,
 * Performance). Five minutes keeps them through such swings; an idle appliance still holds none.
 */
const POOL_IDLE_MS = 300_000;

function pool(url: string, config: Config, applicationName: string): Sequelize {
  const db = new Sequelize(url, {
    dialect: "postgres",
    logging: false,
    pool: { max: config.database.poolMax, min: 0, idle: POOL_IDLE_MS, acquire: 15_000 },
    dialectOptions: {
      application_name: applicationName,
      statement_timeout: config.database.statementTimeoutMs,
      // Fail fast when PostgreSQL is down so /readyz answers instead of hanging.
      connectionTimeoutMillis: 5_000,
    },
  });
  // Each new connection: openings ride on the first statement (daemon/db/opening-pipeline.ts), and
  // repeated statements are prepared (daemon/db/prepared-statements.ts). Order matters: naming is
  // the outer layer, so a first statement that carries an opening is named too.
  db.addHook("afterConnect", (connection) => {
    carryOpenings(connection as pg.Client);
    nameRepeatedStatements(connection as pg.Client);
  });
  // Order matters: the commit-hook guard wraps the pipelined COMMIT, so a failed one drops the hooks.
  return scopedTransactions(afterCommitOnlyOnCommit(commitPipelines(db)));
}

/**
 * Sequelize runs a transaction's `afterCommit` hooks even when its COMMIT fails (transaction.js,
 * `commit()`: the hooks are in a `finally`). Ours must not: the keyring caches a data key made in
 * the transaction (a rolled-back key, cached, would shadow the real one made later under the same
 * id and version), the audit chainer hands the batch to SIEM forwarding, and backup alerts log.
 * So when a COMMIT fails, the hooks are dropped before Sequelize gets to them.
 */
export function afterCommitOnlyOnCommit(db: Sequelize): Sequelize {
  const qi = db.getQueryInterface();
  const commit = qi.commitTransaction.bind(qi);
  qi.commitTransaction = async (transaction: Transaction, options?: TransactionOptions) => {
    try {
      return await commit(transaction, options);
    } catch (err) {
      (transaction as unknown as { _afterCommitHooks: unknown[] })._afterCommitHooks = [];
      throw err;
    }
  };
  return db;
}

export function openDatabase(targets: DatabaseTargets, config: Config): Database {
  const owner = pool(targets.ownerUrl, config, "wardkeep-owner");
  const app = pool(targets.appUrl, config, "wardkeep");
  return {
    owner,
    app,
    appRole: targets.appRole,
    async close() {
      await Promise.allSettled([app.close(), owner.close()]);
    },
  };
}
