import request from "supertest";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { checkOverdueJobs, claimAndRun, type JobSpec } from "../../../daemon/jobs/index.js";
import { registerJobs, unregisterJobs } from "../../../daemon/jobs/registry.js";
import { signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { TestClock } from "../../helpers/clock.js";
import { expectProblem } from "../records/helpers.js";

let app: TestAppliance;
let admin: SignedIn;
const clock = new TestClock();

beforeAll(async () => {
  app = await startTestAppliance({ clock, env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false" } });
  admin = await signIn(app, { role: "super_admin" });
});
afterAll(async () => {
  unregisterJobs(["test-slow", "test-failing"]);
  await app?.close();
});

async function jobs(
  as: SignedIn = admin,
): Promise<{ name: string; schedule: string | null; destructive: boolean; lastSuccessAt: string | null; overdueSince: string | null; lastRun: { outcome: string } | null }[]> {
  const res = await as.agent.get("/api/v1/jobs");
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.jobs;
}

async function openAlerts(kind: string): Promise<{ key: string; summary: string; details: Record<string, unknown> }[]> {
  const res = await admin.agent.get("/api/v1/alerts?state=open");
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.alerts.filter((a: { kind: string }) => a.kind === kind);
}

async function metric(name: string, job: string): Promise<number | undefined> {
  const res = await request(app.baseUrl).get("/metrics").ca(app.caPem);
  const line = res.text.split("\n").find((l) => l.startsWith(`${name}{job="${job}"}`));
  return line === undefined ? undefined : Number(line.split(" ").pop());
}

describe("GET /api/v1/jobs", () => {
  it("lists every recurring job the appliance schedules, and only appliance operators see it", async () => {
    await vi.waitFor(async () => expect((await jobs()).length).toBeGreaterThanOrEqual(7), { timeout: 10_000 });
    const list = await jobs();
    expect(list.map((j) => j.name)).toEqual(
      expect.arrayContaining(["audit-checkpoint", "audit-retention", "key-maintenance", "erasure-purge", "inactive-users", "backup-watchdog", "jobs-watchdog"]),
    );
    expect(list.find((j) => j.name === "audit-retention")).toMatchObject({ schedule: "0 15 */6 * * *", destructive: true });
    // backup.schedulerEnabled false: the backup jobs are not scheduled on this replica.
    expect(list.find((j) => j.name === "backup-watchdog")?.schedule).toBeNull();
    const owner = await signIn(app, { role: "owner" });
    expectProblem(await owner.agent.get("/api/v1/jobs"), 403, "forbidden");
  });
});

describe("run now", () => {
  it("runs a job at once, records it and answers 409 while it still runs", async () => {
    const res = await admin.agent.post("/api/v1/jobs/inactive-users/run");
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    expect(res.body.run).toMatchObject({ job: "inactive-users", trigger: "manual", requestedBy: admin.user.id });
    await vi.waitFor(
      async () => {
        const runs = await admin.agent.get("/api/v1/jobs/inactive-users/runs");
        expect(runs.body.runs.find((r: { id: string }) => r.id === res.body.run.id)).toMatchObject({ outcome: "succeeded", counts: { deactivated: 0 } });
      },
      { timeout: 10_000 },
    );
    expect(await metric("wardkeep_job_last_run_failed", "inactive-users")).toBe(0);
    expect(await metric("wardkeep_job_last_success_timestamp_seconds", "inactive-users")).toBeGreaterThan(0);

    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    registerJobs([{ name: "test-slow", summary: "waits for the test", schedule: () => null, run: async () => (await gate, { counts: { waited: 1 } }) }]);
    const first = await admin.agent.post("/api/v1/jobs/test-slow/run");
    expect(first.status).toBe(202);
    expectProblem(await admin.agent.post("/api/v1/jobs/test-slow/run"), 409, "conflict");
    release();
    expectProblem(await admin.agent.post("/api/v1/jobs/no-such-job/run"), 404);
  });

  it("needs a fresh second factor for a job that destroys data", async () => {
    const stale = await signIn(app, { role: "super_admin" });
    clock.advanceMinutes(app.config.auth.stepUpMaxAgeMinutes + 1);
    try {
      expectProblem(await stale.agent.post("/api/v1/jobs/erasure-purge/run"), 403, "step-up-required");
      await stale.stepUp();
      expect((await stale.agent.post("/api/v1/jobs/erasure-purge/run")).status).toBe(202);
    } finally {
      clock.advanceMinutes(0);
    }
  });

  it("records a failed run with the error it threw", async () => {
    const failing: JobSpec = {
      name: "test-failing",
      summary: "always fails",
      schedule: () => null,
      run: async () => {
        throw new RangeError("batch 3 of 7 could not be written");
      },
    };
    const claimed = await claimAndRun(app.ctx, failing, { trigger: "manual" });
    await claimed!.done;
    registerJobs([failing]);
    const runs = await admin.agent.get("/api/v1/jobs/test-failing/runs");
    expect(runs.body.runs[0]).toMatchObject({ outcome: "failed", error: "RangeError: batch 3 of 7 could not be written" });
    expect(await openAlerts("jobs.run_failed")).toEqual([expect.objectContaining({ key: "test-failing", details: { job: "test-failing", runId: claimed!.runId } })]);
    // The next success resolves it.
    const fixed: JobSpec = { ...failing, run: async () => ({ counts: { written: 7 } }) };
    await (await claimAndRun(app.ctx, fixed, { trigger: "manual" }))!.done;
    expect(await openAlerts("jobs.run_failed")).toEqual([]);
  });
});

describe("overdue detection", () => {
  it("marks a job overdue after jobs.overdueFactor periods without a success, and clears it after one", async () => {
    await vi.waitFor(async () => expect((await jobs()).find((j) => j.name === "audit-retention")).toBeDefined(), { timeout: 10_000 });
    expect((await jobs()).find((j) => j.name === "audit-retention")?.overdueSince).toBeNull();
    // audit-retention fires every 6 hours: three periods and a minute later it is overdue.
    clock.advanceMinutes(3 * 6 * 60 + 1);
    admin = await signIn(app, { role: "super_admin" }); // the earlier session reached its lifetime
    const checked = await checkOverdueJobs(app.ctx);
    expect(checked.overdue).toBeGreaterThanOrEqual(1);
    const late = (await jobs()).find((j) => j.name === "audit-retention")!;
    expect(late.overdueSince).toBe(clock.now().toISOString());
    expect(await metric("wardkeep_job_overdue", "audit-retention")).toBe(1);
    expect((await openAlerts("jobs.overdue")).map((a) => a.key)).toContain("audit-retention");

    const run = await admin.agent.post("/api/v1/jobs/audit-retention/run");
    expect(run.status, JSON.stringify(run.body)).toBe(202);
    await vi.waitFor(async () => expect((await jobs()).find((j) => j.name === "audit-retention")?.lastRun?.outcome).toBe("succeeded"), { timeout: 10_000 });
    await checkOverdueJobs(app.ctx);
    expect((await jobs()).find((j) => j.name === "audit-retention")?.overdueSince).toBeNull();
    expect(await metric("wardkeep_job_overdue", "audit-retention")).toBe(0);
    expect((await openAlerts("jobs.overdue")).map((a) => a.key)).not.toContain("audit-retention");
  });
});
