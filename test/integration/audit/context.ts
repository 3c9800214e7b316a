import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import fs from "node:fs";
import { Writable } from "node:stream";
import { Registry } from "prom-client";
import type { Clock } from "../../../daemon/clock.js";
import { loadConfig } from "../../../daemon/config/load.js";
import type { ApplianceContext } from "../../../daemon/context.js";
import { openDatabase } from "../../../daemon/db/connection.js";
import { applyMigrations } from "../../../daemon/db/migrate.js";
import { APP_ROLE } from "../../../daemon/db/roles.js";
import { unsealAtStart } from "../../../daemon/keys/index.js";
import { hkdfSha256 } from "../../../daemon/keys/primitives.js";
import { RootKey } from "../../../daemon/keys/root-key.js";
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
 * A real context (both pools, migrations applied, a key store initialised and unsealed from a
 * key file, so checkpoints are signed with the keyring's audit key) without HTTP, for testing the
 * audit services directly.
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
  const ctx: ApplianceContext = {
    config,
    log: createLogger({ level: "debug", stream }),
    db: database,
    rootKey,
    metrics: new Registry(),
    clock: opts.clock ?? { now: () => new Date() },
  };
  await unsealAtStart(ctx);
  // Initialising the key store audited itself (keys.initialise, still in the intake: nothing has
  // chained yet). These tests count seqs from an empty trail, so that event is set aside.
  await database.owner.transaction(async (transaction) => {
    await transaction.exec("SELECT set_config('wardkeep.scope', 'appliance', true)");
    await transaction.exec("DELETE FROM audit_intake");
  });
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

/**
 * The key appliances signed checkpoints with before the keyring had an audit signing key
 * (docs/audit-format.md, "Signing keys"), rebuilt here from its documented derivation to make
 * checkpoints as such an appliance left them.
 */
export function legacyAuditSigningKey(ctx: ApplianceContext): { privateKey: KeyObject; publicKey: KeyObject } {
  const seed = hkdfSha256(ctx.rootKey.material(), Buffer.alloc(0), Buffer.from("wardkeep/audit/checkpoint-signing/v1"), 32);
  // RFC 8410 PKCS#8 prefix for an Ed25519 private key: the 32-byte seed follows.
  const privateKey = createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]), format: "der", type: "pkcs8" });
  return { privateKey, publicKey: createPublicKey(privateKey) };
}
