/**
 * The catalogue matches the targets: retention marks what it prunes (and audits it), a reconcile
 * flags snapshots that vanished from or appeared on a target, and `backup list --target-file`
 * shows what a target really holds.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writePolicy } from "../../../daemon/backups/policy.js";
import {
  BACKUP_LOCKS,
  getSnapshotRecord,
  listSnapshotRecords,
  openAlerts,
  reconcileCatalogue,
  runSnapshot,
  startSnapshot,
  verifySnapshotById,
} from "../../../daemon/backups/service.js";
import { inScope } from "../../../daemon/db/sql.js";
import { signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { asSuperuser, assignCareTeam, openClinic, registerPatient, type Clinic } from "../records/helpers.js";
import { tempDir } from "./helpers.js";

let app: TestAppliance;
let root: SignedIn;
let clinic: Clinic;
let patientId: string;
let dir: string;
let now = Date.UTC(2026, 2, 2, 8, 0, 0);
const clock = { now: () => new Date(now) };
const runs: string[] = [];

const nasDir = () => path.join(dir, "nas");
/** Complete snapshots on the NAS: directories with a manifest. */
const onNas = () => {
  const base = path.join(nasDir(), "snapshots");
  return fs.existsSync(base)
    ? fs
        .readdirSync(base)
        .filter((id) => fs.existsSync(path.join(base, id, "manifest.json")))
        .sort()
    : [];
};
const attachmentObjects = () => {
  const base = path.join(nasDir(), "attachments");
  return fs.existsSync(base)
    ? fs
        .readdirSync(base)
        .flatMap((d) => fs.readdirSync(path.join(base, d)))
        .sort()
    : [];
};
const alertOf = async (kind: string, subject = "nas") => (await openAlerts(app.ctx)).find((a) => a.kind === kind && a.subject === subject);
const auditOf = async (action: string) =>
  asSuperuser<{ action: string; resource_id: string; outcome: string }>(
    app,
    "SELECT action, resource_id, outcome FROM audit_intake WHERE action = $1 UNION ALL SELECT canonical::jsonb ->> 'action', canonical::jsonb ->> 'resource_id', canonical::jsonb ->> 'outcome' FROM audit_events WHERE canonical::jsonb ->> 'action' = $1",
    [action],
  );

beforeAll(async () => {
  dir = tempDir();
  app = await startTestAppliance({ clock, env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_BACKUP_SEGMENT_KIB: "64" } });
  await inScope(app.ctx.db.app, { kind: "appliance" }, (t) =>
    writePolicy(app.ctx, t, { targets: [{ kind: "fs", name: "nas", path: nasDir() }], retention: { hourly: 2, daily: 0, weekly: 0, monthly: 0 } }, null),
  );
  clinic = await openClinic(app, "Catalogue Clinic");
  patientId = (await registerPatient(clinic, { name: "Grace Hopper" })).id;
  await assignCareTeam(clinic, patientId);
});
afterAll(async () => {
  await app?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function upload(): Promise<string> {
  const res = await clinic.doctor.agent.post(`/api/v1/patients/${patientId}/attachments?kind=document`).set("Content-Type", "application/pdf").send(randomBytes(50_000));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id as string;
}

async function snapshotAnHourLater(): Promise<string> {
  now += 3_600_000;
  const run = await runSnapshot(app.ctx, { trigger: "manual" });
  expect(run.status, run.error ?? "").toBe("complete");
  runs.push(run.id);
  return run.id;
}

describe("pruning", () => {
  it("marks a snapshot retention deleted as pruned, audits it, and says so on verify, in the API and in the list", async () => {
    const dropped = await upload();
    const kept = await upload();
    const first = await snapshotAnHourLater();
    expect(attachmentObjects()).toHaveLength(2);
    // The first attachment is deleted: only the first snapshot still references its object.
    await asSuperuser(app, "DELETE FROM attachments WHERE id = $1", [dropped]);
    await snapshotAnHourLater();
    expect(onNas()).toEqual(runs.slice(0, 2)); // hourly: 2 keeps both
    expect((await getSnapshotRecord(app.ctx, first)).status).toBe("complete");

    await snapshotAnHourLater(); // two newer hours now: the first snapshot goes
    expect(onNas()).not.toContain(first);
    const record = await getSnapshotRecord(app.ctx, first);
    expect(record).toMatchObject({ status: "pruned", prunedAt: new Date(now).toISOString(), copies: [{ target: "nas", state: "pruned", changedAt: expect.any(String) }] });
    expect((await auditOf("backup.prune")).map((e) => e.resource_id)).toContain(first);
    // Its attachment object went with it; the one later snapshots list stays.
    expect(attachmentObjects()).toHaveLength(1);
    const [row] = await asSuperuser<{ sha: string }>(app, "SELECT encode(cipher_sha256, 'hex') AS sha FROM attachments WHERE id = $1", [kept]);
    expect(attachmentObjects()).toEqual([`${row!.sha}.wka`]);

    await expect(verifySnapshotById(app.ctx, first)).rejects.toThrow(/was pruned by the retention policy on 2026-03-02T/);
    root = await signIn(app, { role: "super_admin" }); // the test clock moved past the idle timeout
    const listed = await root.agent.get("/api/v1/backups");
    expect(listed.status).toBe(200);
    expect(listed.body.snapshots.find((s: { id: string }) => s.id === first)).toMatchObject({
      status: "pruned",
      copies: [expect.objectContaining({ target: "nas", state: "pruned" })],
    });
    expect(listed.body.snapshots.find((s: { id: string }) => s.id === runs.at(-1))).toMatchObject({ status: "complete", copies: [expect.objectContaining({ state: "present" })] });
    const one = await root.agent.get(`/api/v1/backups/${first}`);
    expect(one.body).toMatchObject({ status: "pruned", prunedAt: expect.any(String) });
    const verify = await root.agent.post(`/api/v1/backups/${first}/verify`).send({});
    expect(verify.status).toBe(404);
    expect(verify.body.detail).toMatch(/was pruned by the retention policy/);

    // The CLI, as an operator runs it on the appliance.
    const env = testEnv(app.db, app.dataDir);
    const listed2 = await runCli(["backup", "list"], env);
    expect(listed2.code, listed2.stderr).toBe(0);
    expect(listed2.stdout).toMatch(new RegExp(`^${first}  pruned\\s+\\d+ MiB  nas\\(pruned\\)  pruned 2026-03-02T`, "m"));
    expect(listed2.stdout).toMatch(new RegExp(`^${runs.at(-1)}  complete\\s+\\d+ MiB  nas$`, "m"));
    const verified = await runCli(["backup", "verify", first], env);
    expect(verified.code).toBe(1);
    expect(verified.stderr.trim().split("\n")).toHaveLength(1);
    expect(verified.stderr).toMatch(/snapshot .* was pruned by the retention policy on 2026-03-02T/);
  });
});

describe("reconcile", () => {
  it("marks a snapshot deleted behind the appliance's back as vanished, alerts per target, and takes it back when it returns", async () => {
    const victim = runs.at(-2)!;
    const victimDir = path.join(nasDir(), "snapshots", victim);
    const hidden = path.join(dir, "hidden-copy");
    fs.cpSync(victimDir, hidden, { recursive: true });
    fs.rmSync(victimDir, { recursive: true });

    const r = await reconcileCatalogue(app.ctx);
    expect(r.targets).toEqual([expect.objectContaining({ target: "nas", vanished: [victim], appeared: [] })]);
    expect(await getSnapshotRecord(app.ctx, victim)).toMatchObject({ status: "vanished", copies: [expect.objectContaining({ state: "vanished" })] });
    expect((await alertOf("snapshot_vanished"))?.detail).toMatch(new RegExp(`recorded on target nas are no longer there: ${victim}`));
    expect((await auditOf("backup.snapshot.vanished")).map((e) => e.resource_id)).toContain(victim);
    expect(app.logLines.some((l) => /backup alert raised: snapshot_vanished \(nas\)/.test(l))).toBe(true);
    expect(await app.ctx.metrics.metrics()).toMatch(/wardkeep_backup_alert\{kind="snapshot_vanished"\} 1/);
    await expect(verifySnapshotById(app.ctx, victim)).rejects.toThrow(/has vanished from target nas/);
    // A second reconcile changes nothing and keeps the alert.
    expect((await reconcileCatalogue(app.ctx)).targets[0]!.vanished).toEqual([]);
    expect(await alertOf("snapshot_vanished")).toBeDefined();

    fs.cpSync(hidden, victimDir, { recursive: true });
    const back = await reconcileCatalogue(app.ctx);
    expect(back.targets[0]).toMatchObject({ returned: [victim], vanished: [] });
    expect((await getSnapshotRecord(app.ctx, victim)).status).toBe("complete");
    expect(await alertOf("snapshot_vanished")).toBeUndefined();
  });

  it("flags a snapshot on the target that this appliance never wrote there", async () => {
    const foreign = "20260101T000000Z-000abcde";
    fs.mkdirSync(path.join(nasDir(), "snapshots", foreign, "objects"), { recursive: true });
    fs.writeFileSync(path.join(nasDir(), "snapshots", foreign, "manifest.json"), "{}");
    const r = await reconcileCatalogue(app.ctx);
    expect(r.targets[0]).toMatchObject({ appeared: [foreign], vanished: [] });
    expect((await alertOf("snapshot_appeared"))?.detail).toMatch(new RegExp(`not written there by this appliance: ${foreign}`));
    expect((await auditOf("backup.snapshot.appeared")).map((e) => e.resource_id)).toContain(foreign);
    expect((await listSnapshotRecords(app.ctx)).map((s) => s.id)).not.toContain(foreign);
  });

  it("records a snapshot whose run died after writing its manifest (or that a recovery restored mid-run) instead of calling it foreign", async () => {
    const id = runs.at(-1)!;
    await asSuperuser(app, "UPDATE backup_snapshots SET status = 'interrupted', error = 'the run ended without finishing (process killed or crashed)' WHERE id = $1", [id]);
    await asSuperuser(app, "DELETE FROM backup_snapshot_copies WHERE snapshot_id = $1", [id]);
    const r = await reconcileCatalogue(app.ctx);
    expect(r.targets[0]).toMatchObject({ adopted: [id], appeared: [] });
    expect(await getSnapshotRecord(app.ctx, id)).toMatchObject({ status: "complete", error: null, copies: [expect.objectContaining({ target: "nas", state: "present" })] });
    expect((await alertOf("snapshot_appeared"))?.detail ?? "").not.toContain(id);
    expect((await auditOf("backup.snapshot.adopted")).map((e) => e.resource_id)).toContain(id);
  });

  it("stops reporting a vanished snapshot once retention would have deleted it anyway, and prunes the foreign one", async () => {
    const victim = runs.at(-2)!;
    fs.rmSync(path.join(nasDir(), "snapshots", victim), { recursive: true });
    await reconcileCatalogue(app.ctx);
    expect(await alertOf("snapshot_vanished")).toBeDefined();
    await snapshotAnHourLater();
    await snapshotAnHourLater();
    // Retention (hourly: 2) would have dropped it by now; the foreign snapshot was pruned for real.
    expect((await getSnapshotRecord(app.ctx, victim)).status).toBe("pruned");
    expect(await alertOf("snapshot_vanished")).toBeUndefined();
    expect(await alertOf("snapshot_appeared")).toBeUndefined();
    expect(onNas()).toEqual(runs.slice(-2));
  });

  it("raises target_failed when a target cannot be listed, and leaves its copies as they were", async () => {
    const saved = path.join(dir, "nas-away");
    fs.renameSync(nasDir(), saved);
    fs.writeFileSync(nasDir(), "not a directory");
    try {
      const r = await reconcileCatalogue(app.ctx);
      expect(r.targets[0]).toMatchObject({ target: "nas", error: expect.stringMatching(/ENOTDIR/), vanished: [] });
      expect((await alertOf("target_failed"))?.detail).toMatch(/target nas could not be listed/);
      expect((await getSnapshotRecord(app.ctx, runs.at(-1)!)).status).toBe("complete");
    } finally {
      fs.rmSync(nasDir());
      fs.renameSync(saved, nasDir());
    }
    await snapshotAnHourLater();
    expect(await alertOf("target_failed")).toBeUndefined();
  });
});

describe("the snapshot lock", () => {
  it("makes a scheduled snapshot wait out a short holder (a reconcile) instead of skipping its hour; a manual one is refused at once", async () => {
    const holder = new pg.Client({ connectionString: app.db.ownerUrl });
    await holder.connect();
    try {
      await holder.query("SELECT pg_advisory_lock($1)", [BACKUP_LOCKS.snapshot]);
      expect(await reconcileCatalogue(app.ctx)).toMatchObject({ skipped: "a snapshot is running", targets: [] });
      await expect(startSnapshot(app.ctx, { trigger: "manual" })).rejects.toThrow(/a snapshot is already running/);
      now += 3_600_000;
      const started = Date.now();
      const scheduled = startSnapshot(app.ctx, { trigger: "schedule" });
      await new Promise((r) => setTimeout(r, 1500));
      await holder.query("SELECT pg_advisory_unlock($1)", [BACKUP_LOCKS.snapshot]);
      const run = await (await scheduled).done;
      expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
      expect(run).toMatchObject({ trigger: "schedule", status: "complete" });
      runs.push(run.id);
    } finally {
      await holder.end();
    }
  });
});

describe("backup list --target-file", () => {
  it("lists what is really on the target, with each manifest's summary, and names interrupted runs", async () => {
    fs.mkdirSync(path.join(nasDir(), "snapshots", "20260101T000001Z-000fffff", "objects"), { recursive: true });
    fs.writeFileSync(path.join(nasDir(), "snapshots", "20260101T000001Z-000fffff", "objects", "0001.wkd"), "partial");
    const targetFile = path.join(dir, "target.json");
    fs.writeFileSync(targetFile, JSON.stringify({ kind: "fs", name: "nas", path: nasDir() }));
    const out = await runCli(["backup", "list", "--target-file", targetFile, "--json"]);
    expect(out.code, out.stderr).toBe(0);
    const listing = JSON.parse(out.stdout.trim().split("\n").at(-1)!);
    expect(listing.complete).toEqual(onNas());
    expect(listing.snapshots.at(-1)).toMatchObject({
      id: runs.at(-1),
      trigger: "schedule", // the run the lock test started
      tables: expect.any(Number),
      rows: expect.any(Number),
      attachments: 1,
      attachmentsMissing: 0,
    });
    expect(listing.incomplete).toEqual(["20260101T000001Z-000fffff"]);

    fs.writeFileSync(targetFile, JSON.stringify({ kind: "fs", name: "nas" }));
    const bad = await runCli(["backup", "list", "--target-file", targetFile]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect(bad.stderr).toMatch(/--target-file .*path/);
  });
});
