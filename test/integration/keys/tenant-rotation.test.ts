import { spawn } from "node:child_process";
import fs from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOCKS } from "../../../daemon/keys/keystore.js";
import { runKeyMaintenance } from "../../../daemon/keys/maintenance.js";
import { continueTenantRotation, startTenantRotation } from "../../../daemon/keys/tenant-rotation.js";
import { CLI_OPERATOR } from "../../../daemon/audit/append.js";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { startTestAppliance, tempDir, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { PROJECT_ROOT, runCli, wardkeepArgs } from "../../helpers/daemon-process.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";

/**
 * Rotating a tenant's key: patient data lives under one data key per patient, so the tenant's
 * rotation gives every one of them a new version and re-encrypts what it covers, with progress,
 * resumable after a kill, audited. Checked on what an operator sees (the API's progress, the
 * CLI's lines) and on what a clinic gets back (the same patient names), with the stored
 * ciphertext headers read as the database superuser.
 */
const NAMES = ["Orla Tennant", "Piet Brannigan", "Quill Ashdown", "Rosa Ferrow", "Sigrun Hale"];
const MAINTENANCE_OFF = { WARDKEEP_KEYS_MAINTENANCE_INTERVAL_SECONDS: "3600" };

async function superuser<T extends pg.QueryResultRow>(db: TestDatabase, text: string, bind: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: db.superuserUrl });
  await client.connect();
  try {
    return (await client.query<T>(text, bind)).rows;
  } finally {
    await client.end();
  }
}

/** Active version of each patient key of the tenant, and the key versions named by the stored name ciphertexts. */
async function versionsOf(db: TestDatabase, tenantId: string) {
  const keys = await superuser<{ key_id: string; version: number }>(
    db,
    "SELECT key_id, version FROM keystore.data_keys WHERE tenant_id = $1 AND kind = 'patient' AND state = 'active' ORDER BY key_id",
    [tenantId],
  );
  const values = await superuser<{ v: number }>(
    db,
    "SELECT get_byte(name_enc, 1) * 16777216 + get_byte(name_enc, 2) * 65536 + get_byte(name_enc, 3) * 256 + get_byte(name_enc, 4) AS v FROM patients WHERE tenant_id = $1",
    [tenantId],
  );
  return { keys: keys.map((k) => k.version), values: values.map((v) => Number(v.v)) };
}

async function registerPatients(app: TestAppliance, desk: SignedIn): Promise<string[]> {
  const ids: string[] = [];
  for (const name of NAMES) ids.push((await desk.agent.post("/api/v1/patients").send({ name }).expect(201)).body.id as string);
  return ids;
}

async function namesReadBack(desk: SignedIn, ids: string[]): Promise<string[]> {
  const names: string[] = [];
  for (const id of ids) names.push((await desk.agent.get(`/api/v1/patients/${id}`).expect(200)).body.name as string);
  return names;
}

describe("rotating a tenant's keys through the API", () => {
  let app: TestAppliance;
  let root: SignedIn;
  let tenant: TenantRef;
  let other: TenantRef;
  let desk: SignedIn;
  let ids: string[];

  beforeAll(async () => {
    app = await startTestAppliance({ env: MAINTENANCE_OFF });
    root = await signIn(app, { role: "super_admin" });
    tenant = await createTenant(app, "Rotating Hospital");
    other = await createTenant(app, "Bystander Clinic");
    desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    ids = await registerPatients(app, desk);
    const otherDesk = await signIn(app, { role: "front_desk", tenantId: other.id, mfa: false });
    await otherDesk.agent.post("/api/v1/patients").send({ name: "Untouched Person" }).expect(201);
  });
  afterAll(async () => {
    await app?.close();
  });

  it("gives every patient key of the tenant a new version, re-encrypts every value, and the clinic reads the same names", async () => {
    const started = await root.agent.post("/api/v1/keys/rotate").send({ target: "tenant", tenantId: tenant.id }).expect(202);
    expect(started.body).toMatchObject({ keyId: `tenant/${tenant.id}`, resumed: false, tenantRotation: { tenantId: tenant.id, keysTotal: 5 } });

    const progress = async () => (await root.agent.get("/api/v1/keys").expect(200)).body.tenantRotations.find((r: { tenantId: string }) => r.tenantId === tenant.id);
    await expect.poll(async () => (await progress())?.state, { timeout: 20_000 }).toBe("finished");
    expect(await progress()).toMatchObject({ keysTotal: 5, keysRotated: 5, keysReencrypted: 5, completedAt: expect.any(String) });
    expect((await progress()).valuesReencrypted).toBeGreaterThanOrEqual(5);

    expect(await versionsOf(app.db, tenant.id)).toEqual({ keys: [2, 2, 2, 2, 2], values: [2, 2, 2, 2, 2] });
    expect(await versionsOf(app.db, other.id)).toEqual({ keys: [1], values: [1] });
    expect(await namesReadBack(desk, ids)).toEqual(NAMES);
  });

  it("records the start and the end of the rotation in the audit trail, ids and counts only", async () => {
    const rows = await superuser<{ reason: string }>(
      app.db,
      `SELECT reason FROM audit_intake WHERE action = 'keys.rotate' AND resource_id = $1
       UNION ALL SELECT canonical::jsonb ->> 'reason' FROM audit_events WHERE canonical::jsonb ->> 'action' = 'keys.rotate' AND canonical::jsonb ->> 'resource_id' = $1`,
      [`tenant/${tenant.id}`],
    );
    const reasons = rows.map((r) => r.reason).sort();
    expect(reasons).toEqual([
      expect.stringMatching(/^tenant rotation \d+ finished: 5 data key\(s\) at a new version, \d+ value\(s\) re-encrypted$/),
      expect.stringMatching(/^tenant rotation \d+ started: 5 data key\(s\) get a new version/),
    ]);
    expect(JSON.stringify(rows)).not.toMatch(/Orla|Tennant/);
  });

  it("shows a tenant owner their own rotation only, and refuses another tenant's", async () => {
    const owner = await signIn(app, { role: "owner", tenantId: other.id });
    const status = await owner.agent.get("/api/v1/keys").expect(200);
    expect(status.body.tenantRotations).toEqual([]);
    expect((await owner.agent.post("/api/v1/keys/rotate").send({ target: "tenant", tenantId: tenant.id })).status).toBe(403);
  });

  it("resumes a run stopped between batches: from the persisted cursor, no key rotated twice", async () => {
    // Five more patients (created after the first run); a new run covers all ten.
    ids = [...ids, ...(await registerPatients(app, desk))];
    const { rotation, resumed } = await startTenantRotation(app.ctx, tenant.id, CLI_OPERATOR);
    expect(resumed).toBe(false);
    expect(rotation).toMatchObject({ state: "rotating-keys", keysTotal: 10, keysRotated: 0 });
    // One batch of 3 keys, then the process "dies".
    const partial = await continueTenantRotation(app.ctx, rotation.id, { batchSize: 3, maxBatches: 1 });
    expect(partial).toMatchObject({ state: "rotating-keys", keysTotal: 10, keysRotated: 3 });
    const [persisted] = await superuser<{ keys_rotated: number; cursor: string }>(app.db, "SELECT keys_rotated, cursor FROM keystore.tenant_rotations WHERE id = $1", [
      rotation.id,
    ]);
    expect(persisted!.keys_rotated).toBe(3);
    expect(persisted!.cursor).toMatch(/^patient\//);
    // Starting again (a second click, a re-run of the CLI) continues the same run.
    const again = await startTenantRotation(app.ctx, tenant.id, CLI_OPERATOR);
    expect(again).toMatchObject({ resumed: true, rotation: { id: rotation.id, keysRotated: 3 } });
    // The background key maintenance finishes it.
    for (let i = 0; i < 5 && (await superuser(app.db, "SELECT 1 FROM keystore.tenant_rotations WHERE id = $1 AND completed_at IS NULL", [rotation.id])).length; i++) {
      await runKeyMaintenance(app.ctx);
    }
    const versions = await versionsOf(app.db, tenant.id);
    // The first five patients were at v2 and the five new ones at v1: each moved exactly one version.
    expect([...versions.keys].sort()).toEqual([2, 2, 2, 2, 2, 3, 3, 3, 3, 3]);
    expect([...versions.values].sort()).toEqual([2, 2, 2, 2, 2, 3, 3, 3, 3, 3]);
    expect(await namesReadBack(desk, ids)).toEqual([...NAMES, ...NAMES]);
  });

  it("answers 404 for a tenant that does not exist", async () => {
    const res = await root.agent.post("/api/v1/keys/rotate").send({ target: "tenant", tenantId: "00000000-0000-4000-8000-00000000abcd" });
    expect(res.status).toBe(404);
    expect(res.body.detail).toBe("no tenant 00000000-0000-4000-8000-00000000abcd");
  });
});

describe("wardkeep keys rotate --tenant", () => {
  let db: TestDatabase;
  let dataDir: string;
  let tenant: TenantRef;
  let ids: string[];
  let env: Record<string, string>;

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = tempDir("wardkeep-rotate-cli-");
    const app = await startTestAppliance({ db, dataDir, env: MAINTENANCE_OFF });
    tenant = await createTenant(app, "CLI Hospital");
    const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    ids = await registerPatients(app, desk);
    await app.close();
    env = testEnv(db, dataDir, { WARDKEEP_KEYS_REENCRYPT_BATCH_SIZE: "2" });
  });
  afterAll(async () => {
    await db?.drop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("prints progress, survives a kill -9 mid-run, and a second run resumes and finishes", async () => {
    // Hold the third key's write lock (as a long request would): the CLI commits the first batch
    // of two keys, prints its progress, then waits on the second batch; it is killed there.
    const keys = await superuser<{ key_id: string }>(db, "SELECT key_id FROM keystore.data_keys WHERE tenant_id = $1 AND kind = 'patient' ORDER BY key_id", [tenant.id]);
    const holder = new pg.Client({ connectionString: db.superuserUrl });
    await holder.connect();
    await holder.query("BEGIN");
    await holder.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCKS.dataKey, keys[2]!.key_id]);

    const child = spawn(process.execPath, wardkeepArgs(["keys", "rotate", "--tenant", tenant.id]), {
      cwd: PROJECT_ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: "C.UTF-8", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no progress line: ${stderr}`)), 60_000);
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes("rotating keys: 2 of 5 at a new version")) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    await holder.query("ROLLBACK");
    await holder.end();

    const [run] = await superuser<{ keys_rotated: number; completed_at: Date | null }>(
      db,
      "SELECT keys_rotated, completed_at FROM keystore.tenant_rotations WHERE tenant_id = $1",
      [tenant.id],
    );
    expect(run).toEqual({ keys_rotated: 2, completed_at: null });

    const resumed = await runCli(["keys", "rotate", "--tenant", tenant.id], env);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/^resumed the tenant key rotation started \S+\n/);
    expect(resumed.stdout).toMatch(new RegExp(`tenant ${tenant.id}: 5 data key\\(s\\) at a new version, 5 value\\(s\\) re-encrypted; finished\\n$`));
    // The last key batch ends the first phase: its line is the first of the re-encryption.
    expect(resumed.stderr).toContain("rotating keys: 4 of 5 at a new version\nre-encrypting: 0 of 5 key(s) done, 0 value(s) re-encrypted\n");
    expect(resumed.stderr).toContain("re-encrypting: 5 of 5 key(s) done, 5 value(s) re-encrypted; finished");
    expect(await versionsOf(db, tenant.id)).toEqual({ keys: [2, 2, 2, 2, 2], values: [2, 2, 2, 2, 2] });
    expect(ids).toHaveLength(5);

    const [finished] = await superuser<{ keys_rotated: number; done: boolean }>(
      db,
      "SELECT keys_rotated, completed_at IS NOT NULL AS done FROM keystore.tenant_rotations WHERE tenant_id = $1",
      [tenant.id],
    );
    expect(finished).toEqual({ keys_rotated: 5, done: true });
  });
});
