import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { SqlPool } from "../../../daemon/db/sql.js";
import { applyMigrationList } from "../../../backup/schema.js";
import { FsTarget } from "../../../backup/targets/fs.js";
import { chainPendingEvents } from "../../../daemon/audit/chainer.js";
import { systemClock } from "../../../daemon/clock.js";
import type { ApplianceContext } from "../../../daemon/context.js";
import { migrations } from "../../../daemon/db/migrations/index.js";
import { APP_ROLE } from "../../../daemon/db/roles.js";
import { generateRecoveryKeyPair, rawPublicKey } from "../../../daemon/keys/recovery-crypto.js";
import { SNAPSHOT_EXCLUDED_SCHEMAS } from "../../../daemon/keys/keystore.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import type { SnapshotOptions } from "../../../backup/snapshot.js";
import { auditVerifierFor } from "../../../daemon/backups/audit-check.js";
import { loadConfig } from "../../../daemon/config/load.js";
import { RootKey } from "../../../daemon/keys/root-key.js";
import { silentLogger } from "../../../daemon/log/logger.js";
import { Registry } from "prom-client";

export const connectTo = (url: string) => async () => {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
};

export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = await connectTo(url)();
  try {
    await c.query("SELECT set_config('wardkeep.scope', 'appliance', false)");
    return await fn(c);
  } finally {
    await c.end();
  }
}

export type Seeded = { db: TestDatabase; tenants: number; users: number; events: number };

/**
 * A migrated database with tenants, users whose password_hash holds random bytes (so objects
 * span many segments and barely compress, like field-encrypted PHI) and a real audit chain
 * built by the audit capability's own chainer.
 */
export async function seededDatabase(opts: { users?: number; events?: number; payloadBytes?: number; chain?: boolean } = {}): Promise<Seeded> {
  const db = await createTestDatabase();
  await applyMigrationList(db.ownerUrl, APP_ROLE, migrations);
  const users = opts.users ?? 400;
  const events = opts.events ?? 120;
  const payload = opts.payloadBytes ?? 1500;
  await withClient(db.ownerUrl, async (c) => {
    await c.query(`INSERT INTO tenants (name, slug) SELECT 'Clinic ' || i, 'clinic-' || i FROM generate_series(1, 3) i`);
    // md5 of random(): hex text that compresses about 2x and no further, like base64 ciphertext.
    await c.query(
      `INSERT INTO users (tenant_id, email, password_hash, role)
       SELECT (SELECT id FROM tenants ORDER BY slug LIMIT 1 OFFSET (i % 3)), 'user' || i || '@example.org',
              (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, $2::int / 32) g), 'practitioner'
         FROM generate_series(1, $1::int) i`,
      [users, payload],
    );
    await c.query(
      `INSERT INTO audit_intake (event_id, occurred_at, tenant_id, actor_user_id, actor_role, action, resource_type, resource_id, outcome, reason)
       SELECT gen_random_uuid(), now(), NULL, 'u-' || i, 'super_admin', 'backup.test', 'user', 'r-' || i, 'success', E'line\\nbreak \\\\ tab\\t' || i
         FROM generate_series(1, $1::int) i`,
      [events],
    );
  });
  if (opts.chain === false) return { db, tenants: 3, users, events: 0 };
  const owner = new SqlPool({ url: db.ownerUrl, applicationName: "wardkeep-test", max: 2, statementTimeoutMs: 0 });
  try {
    await chainPendingEvents({ db: { owner }, clock: systemClock } as unknown as ApplianceContext);
  } finally {
    await owner.close();
  }
  return { db, tenants: 3, users, events };
}

export function tempDir(prefix = "wardkeep-backup-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function recoveryPair() {
  const pair = generateRecoveryKeyPair();
  return { ...pair, publicRaw: rawPublicKey(pair.publicKey) };
}

export const applianceSecret = () => randomBytes(32);

export function fsTarget(dir: string, name = "nas", quotaBytes?: number) {
  return new FsTarget({ name, path: dir, quotaBytes });
}

export function snapshotOptions(db: TestDatabase, extra: Partial<SnapshotOptions> & Pick<SnapshotOptions, "targets" | "applianceSecret" | "recoveryPublicKey">): SnapshotOptions {
  return {
    connect: connectTo(db.ownerUrl),
    excludedSchemas: SNAPSHOT_EXCLUDED_SCHEMAS,
    appVersion: "test",
    trigger: "manual",
    segmentBytes: 64 * 1024,
    ...extra,
  };
}

export async function tableCounts(url: string): Promise<Record<string, number>> {
  return withClient(url, async (c) => {
    const out: Record<string, number> = {};
    for (const t of ["tenants", "users", "audit_events", "audit_chain_head", "backup_policy"]) {
      out[t] = Number((await c.query(`SELECT count(*) AS n FROM ${t}`)).rows[0].n);
    }
    return out;
  });
}

/** The audit capability's verifier, trusting checkpoint keys found in the database (as a new appliance does). */
export function auditVerifier() {
  const config = loadConfig({ env: { WARDKEEP_DATA_DIR: tempDir("wardkeep-backup-cfg-") } });
  return auditVerifierFor({ config, log: silentLogger(), clock: systemClock, rootKey: new RootKey("keyfile"), metrics: new Registry() }, "database");
}
