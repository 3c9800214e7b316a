/**
 * Each target has its own alert and metric: a target that fails raises `target_failed` naming it,
 * kept until that target takes a whole snapshot again; a partial snapshot never clears
 * `snapshot_failed` or advances the global last-success time; `/metrics` has last success per target.
 * The failing target is a real OpenSSH server that goes away.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writePolicy, type PolicyInput } from "../../../daemon/backups/policy.js";
import { evaluateFreshness, listSnapshotRecords, openAlerts, runSnapshot } from "../../../daemon/backups/service.js";
import { inScope } from "../../../daemon/db/sql.js";
import { signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { tempDir } from "./helpers.js";
import { startSshd, type Sshd } from "./servers.js";

let app: TestAppliance;
let root: SignedIn;
let sshd: Sshd;
let dir: string;
let now = Date.UTC(2026, 4, 4, 10, 0, 0);
const clock = { now: () => new Date(now) };

const policy = (nasQuotaBytes?: number): PolicyInput => ({
  targets: [
    { kind: "fs", name: "nas", path: path.join(dir, "nas"), ...(nasQuotaBytes ? { quotaBytes: nasQuotaBytes } : {}) },
    { kind: "sftp", name: "offsite", host: "127.0.0.1", port: sshd.port, username: "root", path: sshd.root, hostKeySha256: sshd.hostKeySha256 },
  ],
  targetSecrets: { offsite: { privateKey: sshd.clientKey } },
  snapshotMaxAgeMinutes: 60,
});
const setPolicy = (p: PolicyInput) => inScope(app.ctx.db.app, { kind: "appliance" }, (t) => writePolicy(app.ctx, t, p, null));
const alerts = async () => (await openAlerts(app.ctx)).map((a) => `${a.kind}${a.subject ? `:${a.subject}` : ""}`).sort();
const metric = async (name: string, labels = "") => {
  const m = new RegExp(`^${name}${labels.replace(/[{}]/g, "\\$&")} (\\S+)$`, "m").exec(await app.ctx.metrics.metrics());
  return m ? Number(m[1]) : undefined;
};
const secs = (ms: number) => ms / 1000;

beforeAll(async () => {
  dir = tempDir();
  sshd = await startSshd();
  app = await startTestAppliance({ clock, env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_BACKUP_SEGMENT_KIB: "64" } });
  await setPolicy(policy());
  root = await signIn(app, { role: "super_admin" });
});
afterAll(async () => {
  await app?.close();
  await sshd?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("per-target alerts and metrics", () => {
  let firstAt: number;

  it("reports last success per target once both took a snapshot", async () => {
    now += 60_000;
    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status, run.error ?? "").toBe("complete");
    firstAt = now;
    expect(await metric("wardkeep_backup_last_success_timestamp_seconds")).toBe(secs(firstAt));
    expect(await metric("wardkeep_backup_target_last_success_timestamp_seconds", '{target="nas"}')).toBe(secs(firstAt));
    expect(await metric("wardkeep_backup_target_last_success_timestamp_seconds", '{target="offsite"}')).toBe(secs(firstAt));
    expect(await metric("wardkeep_backup_target_failing", '{target="offsite"}')).toBe(0);
    expect(await alerts()).toEqual([]);
  });

  it("raises snapshot_failed and one target_failed per target when every target fails", async () => {
    await sshd.kill();
    await setPolicy(policy(1)); // the NAS share is full
    now += 60_000;
    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status).toBe("failed");
    expect(await alerts()).toEqual(["snapshot_failed", "target_failed:nas", "target_failed:offsite"]);
    const byTarget = Object.fromEntries((await openAlerts(app.ctx)).filter((a) => a.kind === "target_failed").map((a) => [a.subject, a.detail]));
    expect(byTarget.nas).toMatch(/^target nas did not get snapshot .*ENOSPC/);
    expect(byTarget.offsite).toMatch(/^target offsite did not get snapshot/);
    expect(app.logLines.some((l) => /backup alert raised: target_failed \(offsite\)/.test(l) && /"level":"error"/.test(l))).toBe(true);
  });

  it("keeps snapshot_failed, the failing target's alert and the global last success when a snapshot is only partial", async () => {
    await setPolicy(policy()); // the NAS has room again; the off-site server is still down
    now += 60_000;
    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status).toBe("partial");
    expect(await alerts()).toEqual(["snapshot_failed", "target_failed:offsite"]);
    expect(await metric("wardkeep_backup_last_success_timestamp_seconds")).toBe(secs(firstAt));
    expect(await metric("wardkeep_backup_target_last_success_timestamp_seconds", '{target="nas"}')).toBe(secs(now));
    expect(await metric("wardkeep_backup_target_last_success_timestamp_seconds", '{target="offsite"}')).toBe(secs(firstAt));
    expect(await metric("wardkeep_backup_target_failing", '{target="offsite"}')).toBe(1);
    expect(await metric("wardkeep_backup_target_failing", '{target="nas"}')).toBe(0);
    expect(await metric("wardkeep_backup_alert", '{kind="target_failed"}')).toBe(1);
    // The staleness clock runs from the last snapshot on every target, not from the partial one.
    now += 61 * 60_000;
    await evaluateFreshness(app.ctx);
    expect(await alerts()).toContain("snapshot_stale");
    expect((await openAlerts(app.ctx)).find((a) => a.kind === "snapshot_stale")?.detail).toMatch(
      /the newest snapshot that reached every target finished \d+ minutes ago .*partial ones do not count/,
    );

    root = await signIn(app, { role: "super_admin" }); // the test clock moved past the idle timeout
    const listed = await root.agent.get("/api/v1/backups");
    expect(listed.status).toBe(200);
    expect(listed.body.snapshots[0]).toMatchObject({ id: run.id, status: "partial", targets: expect.arrayContaining([expect.objectContaining({ target: "offsite", ok: false })]) });
    expect(listed.body.alerts).toEqual(
      expect.arrayContaining([expect.objectContaining({ kind: "target_failed", subject: "offsite", detail: expect.stringContaining("target offsite") })]),
    );
    expect((await listSnapshotRecords(app.ctx))[0]!.copies).toEqual([expect.objectContaining({ target: "nas", state: "present" })]);
  });

  it("clears a target's alert only when that target takes a whole snapshot again", async () => {
    await sshd.restart();
    now += 60_000;
    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status, run.error ?? "").toBe("complete");
    expect(await alerts()).toEqual([]);
    expect(await metric("wardkeep_backup_last_success_timestamp_seconds")).toBe(secs(now));
    expect(await metric("wardkeep_backup_target_last_success_timestamp_seconds", '{target="offsite"}')).toBe(secs(now));
    expect(await metric("wardkeep_backup_target_failing", '{target="offsite"}')).toBe(0);
    expect(app.logLines.some((l) => /backup alert cleared: target_failed \(offsite\)/.test(l))).toBe(true);
  });

  it("drops the alerts and metrics of a target removed from the policy", async () => {
    await sshd.kill();
    now += 60_000;
    expect((await runSnapshot(app.ctx, { trigger: "manual" })).status).toBe("partial");
    expect(await alerts()).toContain("target_failed:offsite");
    await setPolicy({ targets: [{ kind: "fs", name: "nas", path: path.join(dir, "nas") }] });
    now += 60_000;
    expect((await runSnapshot(app.ctx, { trigger: "manual" })).status).toBe("complete");
    expect(await alerts()).toEqual([]);
    expect(await metric("wardkeep_backup_target_last_success_timestamp_seconds", '{target="offsite"}')).toBeUndefined();
    await sshd.restart();
  });
});
