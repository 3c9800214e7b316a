import fs from "node:fs";
import path from "node:path";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it, inject } from "vitest";
import { signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
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
});
