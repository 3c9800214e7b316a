import { wardkeepArgs } from "../../helpers/daemon-process.js";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inject } from "vitest";
import { evaluateFreshness, listSnapshotRecords, openAlerts, runDrill, runSnapshot, verifySnapshotById } from "../../../daemon/backups/service.js";
import { writePolicy } from "../../../daemon/backups/policy.js";
import { inScope } from "../../../daemon/db/sql.js";
import { issueRecoveryKit } from "../../../daemon/keys/recovery.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTestDatabase } from "../../helpers/postgres.js";
import { tableCounts, tempDir, withClient } from "./helpers.js";

const execFileAsync = promisify(execFile);
let app: TestAppliance;
let dir: string;
let now = Date.now();
const clock = { now: () => new Date(now) };

beforeAll(async () => {
  dir = tempDir();
  app = await startTestAppliance({
    clock,
    env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_BACKUP_DRILL_ADMIN_URL: inject("pgCluster").superuserUrl, WARDKEEP_BACKUP_SEGMENT_KIB: "64" },
  });
  await inScope(app.ctx.db.app, { kind: "appliance" }, (t) =>
    writePolicy(app.ctx, t, { targets: [{ kind: "fs", name: "nas", path: path.join(dir, "nas") }], snapshotMaxAgeMinutes: 60, drillMaxAgeDays: 7 }, null),
  );
});
afterAll(async () => {
  await app?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const alertKinds = async () => (await openAlerts(app.ctx)).map((a) => a.kind).sort();
const metrics = async () => app.ctx.metrics.metrics();
/** Events still in the intake and those already chained (the owner reads both; the app role may not). */
const auditActions = async () =>
  inScope(app.ctx.db.owner, { kind: "appliance" }, (t) =>
    t.rows<{ action: string; outcome: string }>(
      "SELECT action, outcome FROM audit_intake UNION ALL SELECT canonical::jsonb ->> 'action', canonical::jsonb ->> 'outcome' FROM audit_events",
    ),
  );

describe("backups on a running appliance", () => {
  it("alerts when no snapshot ever ran, and clears once one succeeds", async () => {
    now += 2 * 3_600_000;
    await evaluateFreshness(app.ctx);
    expect(await alertKinds()).toContain("snapshot_stale");
    expect((await openAlerts(app.ctx)).find((a) => a.kind === "snapshot_stale")!.detail).toMatch(/no snapshot has succeeded since backups were configured/);
    expect(app.logLines.some((l) => /backup alert raised: snapshot_stale/.test(l) && /"level":"error"/.test(l))).toBe(true);
    expect(await metrics()).toMatch(/wardkeep_backup_alert\{kind="snapshot_stale"\} 1/);

    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status).toBe("complete");
    expect(run.targets).toEqual([expect.objectContaining({ target: "nas", ok: true })]);
    expect(await alertKinds()).not.toContain("snapshot_stale");
    expect(await metrics()).toMatch(/wardkeep_backup_alert\{kind="snapshot_stale"\} 0/);
    expect((await listSnapshotRecords(app.ctx))[0]).toMatchObject({ id: run.id, status: "complete", schemaVersion: expect.stringMatching(/^0\d{3}_/) });
    expect((await verifySnapshotById(app.ctx, run.id)).objects).toBeGreaterThan(5);
    expect(await auditActions()).toEqual(expect.arrayContaining([expect.objectContaining({ action: "backup.snapshot", outcome: "success" })]));
  });

  it("runs a recovery drill that restores into a scratch database, measures RTO and RPO, and reports on /metrics", async () => {
    const drill = await runDrill(app.ctx, { trigger: "manual" });
    expect(drill.error).toBeNull();
    expect(drill.status).toBe("passed");
    expect(drill.rtoMs).toBeGreaterThan(0);
    expect(drill.rpoMs).toBeGreaterThanOrEqual(0);
    expect(drill.checks.map((c) => c.name)).toEqual([
      "manifest authenticated",
      "digests, tags and row counts",
      "audit chain",
      "audit head recorded outside the snapshot",
      "key-store backup",
      "encrypted columns decrypt",
      "attachment bytes",
      "smoke query as the app role",
    ]);
    expect(drill.phases).toMatchObject({ loadMs: expect.any(Number), verifyMs: expect.any(Number) });
    const text = await metrics();
    expect(text).toMatch(/wardkeep_backup_drill_last_passed 1/);
    expect(text).toMatch(/wardkeep_backup_drill_rto_seconds \d/);
    // The scratch database is gone. Other test files share the cluster and may be drilling at this
    // moment, so their scratch databases come and go: a leaked one of this drill never goes.
    const su = inject("pgCluster").superuserUrl;
    const drillDatabases = async () =>
      (await withClient(su, (c) => c.query("SELECT count(*)::int AS n FROM pg_database WHERE datname LIKE 'wardkeep_drill_%'"))).rows[0].n as number;
    await expect.poll(drillDatabases, { timeout: 60_000, interval: 500 }).toBe(0);
  });

  it("raises an alert and records the failure when a drill finds a damaged snapshot", async () => {
    const [latest] = await listSnapshotRecords(app.ctx);
    const objects = path.join(dir, "nas", "snapshots", latest!.id, "objects");
    const biggest = fs
      .readdirSync(objects)
      .map((f) => path.join(objects, f))
      .sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0]!;
    const bytes = fs.readFileSync(biggest);
    bytes[bytes.length - 20]! ^= 1;
    fs.writeFileSync(biggest, bytes);
    const drill = await runDrill(app.ctx, { trigger: "manual" });
    expect(drill.status).toBe("failed");
    expect(drill.error).toMatch(/failed authentication/);
    expect(await alertKinds()).toContain("drill_failed");
    expect(await metrics()).toMatch(/wardkeep_backup_drill_last_passed 0/);
    expect(app.logLines.some((l) => /backup alert raised: drill_failed/.test(l))).toBe(true);
    bytes[bytes.length - 20]! ^= 1;
    fs.writeFileSync(biggest, bytes);
  });

  it("alerts when the newest passed drill is too old", async () => {
    now += 8 * 86_400_000;
    await evaluateFreshness(app.ctx);
    expect(await alertKinds()).toEqual(expect.arrayContaining(["drill_stale", "snapshot_stale"]));
  });

  it("restores on a brand-new appliance with `wardkeep restore --target-file --recovery-key` alone", async () => {
    const kit = path.join(dir, "recovery-kit.pem");
    await issueRecoveryKit(app.ctx, { out: kit });
    const [latest] = await listSnapshotRecords(app.ctx);
    const targetFile = path.join(dir, "target.json");
    fs.writeFileSync(targetFile, JSON.stringify({ kind: "fs", name: "nas", path: path.join(dir, "nas") }));
    const into = await createTestDatabase();
    const emptyDataDir = tempDir();
    try {
      const { stdout } = await execFileAsync(
        process.execPath,
        wardkeepArgs(["--json", "restore", latest!.id, "--into", into.ownerUrl, "--target-file", targetFile, "--recovery-key", kit]),
        { cwd: process.cwd(), env: { ...process.env, WARDKEEP_DATA_DIR: emptyDataDir }, timeout: 50_000 },
      );
      const out = JSON.parse(stdout.trim().split("\n").at(-1)!);
      expect(out.ok).toBe(true);
      expect(out.restore.snapshotId).toBe(latest!.id);
      const restored = await tableCounts(into.ownerUrl);
      expect(restored.backup_policy).toBe(1);
      expect(restored.tenants).toBe((await tableCounts(app.db.ownerUrl)).tenants);
      // Refused the second time: the database is no longer empty.
      const again = await execFileAsync(process.execPath, wardkeepArgs(["restore", latest!.id, "--into", into.ownerUrl, "--target-file", targetFile, "--recovery-key", kit]), {
        cwd: process.cwd(),
        env: { ...process.env, WARDKEEP_DATA_DIR: emptyDataDir },
        timeout: 50_000,
      }).catch((e: { code: number; stderr: string }) => e);
      expect((again as { code: number }).code).toBe(1);
      expect((again as { stderr: string }).stderr).toMatch(/^wardkeep: the database .* is not empty .*restore writes only into an empty database/m);
    } finally {
      await into.drop();
      fs.rmSync(emptyDataDir, { recursive: true, force: true });
    }
  });
});
