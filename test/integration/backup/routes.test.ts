import fs from "node:fs";
import path from "node:path";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it, inject } from "vitest";
import pg from "pg";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { claimAndRun } from "../../../daemon/jobs/index.js";
import { enterMaintenance, leaveMaintenance } from "../../../daemon/kernel/maintenance.js";
import { tempDir } from "./helpers.js";

let app: TestAppliance;
let root: SignedIn;
let dir: string;

beforeAll(async () => {
  dir = tempDir();
  app = await startTestAppliance({ env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_BACKUP_DRILL_ADMIN_URL: inject("pgCluster").superuserUrl } });
  root = await signIn(app, { role: "super_admin" });
});
afterAll(async () => {
  await app?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("/api/v1/backups and /api/v1/drills", () => {
  it("refuses anonymous callers and tenant staff", async () => {
    expect((await request(app.baseUrl).get("/api/v1/backups").ca(app.caPem)).status).toBe(401);
    const admin = await signIn(app, { role: "admin" });
    const res = await admin.agent.get("/api/v1/backups");
    expect(res.status).toBe(403);
    expect(res.body.type).toBe("urn:wardkeep:problem:forbidden");
  });

  it("validates the policy and never returns target secrets", async () => {
    const bad = await root.agent.put("/api/v1/backups/policy").send({ snapshotSchedule: "every hour" });
    expect(bad.status).toBe(400);
    const ok = await root.agent.put("/api/v1/backups/policy").send({
      snapshotSchedule: "15 * * * *",
      retention: { hourly: 24, daily: 14, weekly: 8, monthly: 12 },
      targets: [
        { kind: "fs", name: "nas", path: path.join(dir, "nas") },
        { kind: "s3", name: "offsite", bucket: "hospital-backups", accessKeyId: "AKIAEXAMPLE", endpoint: "http://127.0.0.1:9" },
      ],
      targetSecrets: { offsite: { secretAccessKey: "s3cr3t-never-returned" } },
    });
    expect(ok.status).toBe(200);
    expect(ok.body.targets.map((t: { name: string; hasSecrets: boolean }) => [t.name, t.hasSecrets])).toEqual([
      ["nas", false],
      ["offsite", true],
    ]);
    expect(JSON.stringify((await root.agent.get("/api/v1/backups/policy")).body)).not.toContain("s3cr3t");
    // Back to the reachable target only.
    expect((await root.agent.put("/api/v1/backups/policy").send({ targets: [{ kind: "fs", name: "nas", path: path.join(dir, "nas") }] })).status).toBe(200);
  });

  it("takes a snapshot in the background, verifies it, and drills it", async () => {
    const started = await root.agent.post("/api/v1/backups").send({});
    expect(started.status).toBe(202);
    const done = await until(
      () => root.agent.get(`/api/v1/backups/${started.body.id}`),
      (r) => r.body.status !== "running",
    );
    expect(done.body).toMatchObject({ id: started.body.id, status: "complete" });
    expect((await root.agent.get("/api/v1/backups")).body.snapshots[0].id).toBe(started.body.id);
    const verified = await root.agent.post(`/api/v1/backups/${started.body.id}/verify`).send({});
    expect(verified.status).toBe(200);
    expect(verified.body).toMatchObject({ ok: true, target: "nas" });

    const drill = await root.agent.post("/api/v1/drills").send({});
    expect(drill.status).toBe(202);
    const finished = await until(
      () => root.agent.get(`/api/v1/drills/${drill.body.id}`),
      (r) => r.body.status !== "running",
    );
    expect(finished.body).toMatchObject({ status: "passed", snapshotId: started.body.id });
    expect((await root.agent.get("/api/v1/backups/20990101T000000Z-00000000")).status).toBe(404);
  });

  it("refuses a restore into a database that is not empty", async () => {
    const [latest] = (await root.agent.get("/api/v1/backups")).body.snapshots;
    await root.stepUp();
    const res = await root.agent.post(`/api/v1/backups/${latest.id}/restore`).send({ intoUrl: app.db.ownerUrl });
    expect(res.status).toBe(409);
    expect(res.body.type).toBe("urn:wardkeep:problem:restore-refused");
    expect(res.body.detail).not.toContain(new URL(app.db.ownerUrl).password);
  });

  it("in maintenance, answers the API and SCIM with 503 and Retry-After and starts no job, and serves again after", async () => {
    let ran = false;
    const spec = { name: "maintenance-probe", summary: "test", schedule: () => null, run: async () => ((ran = true), {}) };
    enterMaintenance(app.ctx, "a test", 7);
    try {
      const [api, scim] = await Promise.all([request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem), request(app.baseUrl).get("/scim/v2/Users").ca(app.caPem)]);
      for (const r of [api, scim]) {
        expect([r.status, r.headers["retry-after"], r.body.type]).toEqual([503, "7", "urn:wardkeep:problem:maintenance"]);
      }
      expect(api.body.detail).toBe("the appliance is in maintenance: a test; sessions end with it, sign in again afterwards");
      expect(await claimAndRun(app.ctx, spec, { trigger: "manual" })).toBeUndefined();
    } finally {
      leaveMaintenance(app.ctx);
    }
    expect((await request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem)).status).toBe(401);
    const claimed = await claimAndRun(app.ctx, spec, { trigger: "manual" });
    await claimed?.done;
    expect(ran).toBe(true);
  });

  it("restores in place: refuses a wrong name, a snapshot that fails verification, and a load that fails midway with the old database still serving; then replaces it, behind a safety snapshot", async () => {
    const tenant = await createTenant(app, "In-place Clinic");
    let desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    const before = (await desk.agent.post("/api/v1/patients").send({ name: "Ada Before" }).expect(201)).body.id as string;
    const started = await root.agent.post("/api/v1/backups").send({});
    const snap = (
      await until(
        () => root.agent.get(`/api/v1/backups/${started.body.id}`),
        (r) => r.body.status !== "running",
      )
    ).body;
    expect(snap.status).toBe("complete");
    const after = (await desk.agent.post("/api/v1/patients").send({ name: "Bo After" }).expect(201)).body.id as string;
    const listed = (await root.agent.get("/api/v1/backups")).body;
    const name = listed.applianceName as string;
    expect(name).toBe(new URL(app.baseUrl).hostname);
    const restore = (body: Record<string, unknown>) => root.agent.post(`/api/v1/backups/${snap.id}/restore`).send(body);
    await root.stepUp();

    // A wrong name: 400 naming the field, nothing else happens. The CLI refuses while a daemon serves the database.
    const [wrong, cli] = await Promise.all([
      restore({ inPlace: true, confirm: "not-this-one" }),
      runCli(["restore", snap.id, "--in-place", "--confirm", name], testEnv(app.db, app.dataDir)),
    ]);
    expect([cli.code, cli.stderr]).toEqual([
      1,
      "wardkeep: a running Wardkeep daemon is connected to this database (1 replica(s)): stop it before restoring in place from the command line, or restore from the console (Backups), which holds the API in maintenance meanwhile\n",
    ]);
    expect([wrong.status, wrong.body.type, wrong.body.detail]).toEqual([
      400,
      "urn:wardkeep:problem:invalid-request",
      `type the appliance's name, ${name}, to confirm that the live database is to be replaced`,
    ]);
    expect((await restore({ inPlace: true })).status).toBe(400);

    // A manifest that fails its signature: refused before maintenance, no safety snapshot.
    const snapDir = path.join(dir, "nas", "snapshots", snap.id);
    const manifestFile = path.join(snapDir, "manifest.json");
    const manifest = fs.readFileSync(manifestFile);
    fs.writeFileSync(manifestFile, manifest.toString("utf8").replace('"trigger": "manual"', '"trigger": "cli"'));
    const forged = await restore({ inPlace: true, confirm: name });
    fs.writeFileSync(manifestFile, manifest);
    expect(forged.status).toBe(422);
    expect((await root.agent.get("/api/v1/backups")).body.snapshots.length).toBe(listed.snapshots.length);

    // A table object damaged in its middle: the load fails after earlier tables went in; the new
    // database is dropped and the live one serves on (its sessions ended with the maintenance).
    const objects = fs.readdirSync(path.join(snapDir, "objects")).sort();
    const damaged = path.join(snapDir, "objects", objects[Math.floor(objects.length / 2)]!);
    const original = fs.readFileSync(damaged);
    const flipped = Buffer.from(original);
    flipped.writeUInt8(flipped.readUInt8(flipped.length - 20) ^ 0xff, flipped.length - 20);
    fs.writeFileSync(damaged, flipped);
    const midway = await restore({ inPlace: true, confirm: name });
    fs.writeFileSync(damaged, original);
    expect(midway.status).toBe(422);
    expect(midway.body.type).toBe("urn:wardkeep:problem:snapshot-integrity");
    expect((await desk.agent.get(`/api/v1/patients/${after}`)).status).toBe(401);
    desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    expect((await desk.agent.get(`/api/v1/patients/${after}`).expect(200)).body.name).toBe("Bo After");
    const su = new pg.Client({ connectionString: inject("pgCluster").superuserUrl });
    await su.connect();
    try {
      expect((await su.query("SELECT datname FROM pg_database WHERE datname LIKE 'wardkeep_inplace_%'")).rows).toEqual([]);
    } finally {
      await su.end();
    }

    // The restore: the API answers 503 maintenance meanwhile; afterwards the patient written after
    // the snapshot is gone, the one from before reads back decrypted, and the safety snapshot is listed.
    root = await signIn(app, { role: "super_admin" });
    const pending = restore({ inPlace: true, confirm: name }).then((r) => r);
    let gated: request.Response | undefined;
    let done = false;
    void pending.finally(() => (done = true));
    while (!done && !gated) {
      const r = await request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem);
      if (r.status === 503) gated = r;
      else await new Promise((res) => setTimeout(res, 50));
    }
    const res = await pending;
    expect(res.status).toBe(200);
    expect(gated?.body).toMatchObject({ type: "urn:wardkeep:problem:maintenance", status: 503 });
    expect(gated?.headers["retry-after"]).toBe("30");
    expect(res.body).toMatchObject({ snapshotId: snap.id, scratchDatabase: null, auditChain: { checked: true, intact: true } });
    const safetyId = res.body.inPlace.safetySnapshotId as string;
    expect(res.body.inPlace.readable.sampled).toBeGreaterThan(0);
    expect(res.body.inPlace.keyStore["keystore.data_keys"]).toBeGreaterThan(0);

    expect((await desk.agent.get(`/api/v1/patients/${before}`)).status).toBe(401);
    desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    expect((await desk.agent.get(`/api/v1/patients/${before}`).expect(200)).body.name).toBe("Ada Before");
    expect((await desk.agent.get(`/api/v1/patients/${after}`)).status).toBe(404);
    root = await signIn(app, { role: "super_admin" });
    const now = (await root.agent.get("/api/v1/backups").expect(200)).body.snapshots as Array<{ id: string; trigger: string; status: string }>;
    expect(now.find((s) => s.id === safetyId)).toMatchObject({ trigger: "pre_restore", status: "complete" });
    expect(now.map((s) => s.id)).toContain(snap.id);
    // The audit trail goes on after the snapshot's head: the restore and the safety snapshot's id.
    const restored = (await root.agent.get("/api/v1/audit?action=backup.restore").expect(200)).body.events as Array<{ outcome: string; reason: string | null }>;
    expect(restored.map((e) => [e.outcome, e.reason?.split(";")[0]])).toContainEqual(["success", "in place"]);
    const safety = (await root.agent.get("/api/v1/audit?action=backup.restore.safety_snapshot").expect(200)).body.events;
    expect(safety).toEqual([expect.objectContaining({ resourceId: safetyId, outcome: "success" })]);
  });
});
