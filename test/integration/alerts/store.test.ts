/**
 * The one alert store through its public interface and the alerts API: dedup while open,
 * history after resolution, tenant isolation, acknowledgement with a note (audited) and its
 * failure paths.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkCertificate, checkDisk } from "../../../daemon/alerts/background.js";
import { acknowledgeAlertAsOperator, openAlertsOf, raiseAlert, resolveAlert } from "../../../daemon/alerts/index.js";
import { describeCertificate } from "../../../daemon/tls/index.js";
import type { AlertViewRes } from "../../../daemon/alerts/schema.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { auditEvents, expectProblem } from "../auth/identity-helpers.js";

let app: TestAppliance;
const clock = new TestClock();
let root: SignedIn;
let tenantA: string;
let tenantB: string;
let adminA: SignedIn;
let adminB: SignedIn;
let auditorA: SignedIn;

beforeAll(async () => {
  app = await startTestAppliance({ clock });
  tenantA = (await createTenant(app, "Alert Hospital A")).id;
  tenantB = (await createTenant(app, "Alert Hospital B")).id;
  [root, adminA, adminB, auditorA] = await Promise.all([
    signIn(app, { role: "super_admin" }),
    signIn(app, { role: "admin", tenantId: tenantA }),
    signIn(app, { role: "admin", tenantId: tenantB }),
    signIn(app, { role: "auditor", tenantId: tenantA }),
  ]);
});
afterAll(async () => {
  await app?.close();
});

const list = async (who: SignedIn, state = "open"): Promise<AlertViewRes[]> => {
  const res = await who.agent.get(`/api/v1/alerts?state=${state}`);
  expect(res.status).toBe(200);
  return res.body.alerts as AlertViewRes[];
};

describe("alert store", () => {
  it("keeps one open alert per kind and key, counting how often it was seen, and starts a new one after it resolves", async () => {
    const first = await raiseAlert(app.ctx, { kind: "test.disk_low", severity: "warning", key: "/var", summary: "data volume 91% full", details: { usedPercent: 91 } });
    expect(first.opened).toBe(true);
    clock.advance(60_000);
    const again = await raiseAlert(app.ctx, { kind: "test.disk_low", severity: "critical", key: "/var", summary: "data volume 97% full", details: { usedPercent: 97 } });
    expect(again).toEqual({ id: first.id, opened: false });

    const shown = (await list(root)).find((a) => a.id === first.id)!;
    expect(shown).toMatchObject({
      kind: "test.disk_low",
      key: "/var",
      severity: "critical",
      summary: "data volume 97% full",
      details: { usedPercent: 97 },
      occurrences: 2,
      resolvedAt: null,
    });
    expect(Date.parse(shown.lastSeen) - Date.parse(shown.firstSeen)).toBe(60_000);

    const closed = await resolveAlert(app.ctx, "test.disk_low", "/var");
    expect(closed.map((a) => a.id)).toEqual([first.id]);
    expect(await resolveAlert(app.ctx, "test.disk_low", "/var")).toEqual([]); // nothing open any more
    expect((await list(root)).map((a) => a.id)).not.toContain(first.id);
    const history = (await list(root, "resolved")).find((a) => a.id === first.id)!;
    expect(history.resolvedAt).toBe(clock.now().toISOString());

    const reopened = await raiseAlert(app.ctx, { kind: "test.disk_low", severity: "warning", key: "/var", summary: "data volume 92% full" });
    expect(reopened.opened).toBe(true);
    expect(reopened.id).not.toBe(first.id);
    await resolveAlert(app.ctx, "test.disk_low", null);
  });

  it("shows a tenant's alerts to that tenant's staff and to appliance operators only", async () => {
    const a = await raiseAlert(app.ctx, { kind: "test.channel_failed", severity: "warning", key: "c1", tenantId: tenantA, summary: "channel c1 cannot deliver" });
    const b = await raiseAlert(app.ctx, { kind: "test.channel_failed", severity: "warning", key: "c1", tenantId: tenantB, summary: "channel c1 cannot deliver" });
    const appliance = await raiseAlert(app.ctx, { kind: "test.certificate_expiring", severity: "warning", summary: "the server certificate expires in 9 days" });
    expect(new Set([a.id, b.id]).size).toBe(2); // same kind and key, different scopes: two alerts

    const idsOf = async (who: SignedIn) => (await list(who)).map((x) => x.id);
    expect(await idsOf(adminA)).toEqual([a.id]);
    expect(await idsOf(adminB)).toEqual([b.id]);
    expect(await idsOf(root)).toEqual(expect.arrayContaining([a.id, b.id, appliance.id]));
    expectProblem(await adminB.agent.get(`/api/v1/alerts/${a.id}`), 404, "not-found");
    expect((await adminA.agent.get(`/api/v1/alerts/${a.id}`)).body).toMatchObject({ alert: { summary: "channel c1 cannot deliver" }, deliveries: [] });
    expect((await adminA.agent.get("/api/v1/alerts/summary")).body).toEqual({ open: 1, unacknowledged: 1, critical: 0 });

    // Resolving one tenant's alert leaves the other's open.
    await resolveAlert(app.ctx, "test.channel_failed", "c1", { tenantId: tenantA });
    expect(await idsOf(adminA)).toEqual([]);
    expect(await idsOf(adminB)).toEqual([b.id]);
    await resolveAlert(app.ctx, "test.channel_failed", "c1", { tenantId: tenantB });
    await resolveAlert(app.ctx, "test.certificate_expiring", "");
  });

  it("acknowledges with a note, audited, and keeps the alert open until it clears", async () => {
    const { id } = await raiseAlert(app.ctx, { kind: "test.snapshot_failed", severity: "critical", tenantId: tenantA, summary: "snapshot 42 failed" });
    expectProblem(await adminA.agent.post(`/api/v1/alerts/${id}/acknowledge`).send({ note: "   " }), 400, "invalid-request");
    expectProblem(await auditorA.agent.post(`/api/v1/alerts/${id}/acknowledge`).send({ note: "looking" }), 403, "forbidden");
    expectProblem(await adminB.agent.post(`/api/v1/alerts/${id}/acknowledge`).send({ note: "looking" }), 404, "not-found");
    expectProblem(await adminA.agent.post(`/api/v1/alerts/999999999/acknowledge`).send({ note: "looking" }), 404, "not-found");

    const acked = await adminA.agent.post(`/api/v1/alerts/${id}/acknowledge`).send({ note: "NAS swapped, rerunning tonight" });
    expect(acked.status).toBe(200);
    expect(acked.body).toMatchObject({ id, acknowledgedBy: adminA.user.id, acknowledgementNote: "NAS swapped, rerunning tonight", resolvedAt: null });
    expect((await adminA.agent.get("/api/v1/alerts/summary")).body).toEqual({ open: 1, unacknowledged: 0, critical: 1 });
    const events = (await auditEvents(app, { action: "alert.acknowledge" })).filter((e) => e.resource_id === id);
    expect(events).toEqual([
      expect.objectContaining({ outcome: "success", tenant_id: tenantA, actor_user_id: adminA.user.id, resource_type: "alert", reason: "NAS swapped, rerunning tonight" }),
    ]);

    await resolveAlert(app.ctx, "test.snapshot_failed", "", { tenantId: tenantA });
    expectProblem(await adminA.agent.post(`/api/v1/alerts/${id}/acknowledge`).send({ note: "late" }), 400, "invalid-request");
    const history = (await list(adminA, "all")).find((a) => a.id === id)!;
    expect(history.acknowledgementNote).toBe("NAS swapped, rerunning tonight");
    expect(history.resolvedAt).not.toBeNull();
  });

  it("refuses a kind that is not dotted lower_snake_case", async () => {
    await expect(raiseAlert(app.ctx, { kind: "Bad Kind", severity: "info", summary: "x" })).rejects.toThrow(/dotted lower_snake_case/);
  });

  it("raises disk low as warning then critical on one alert, and resolves it when space comes back", async () => {
    await checkDisk(app.ctx, 50);
    expect(await openAlertsOf(app.ctx, ["system.disk_low"])).toEqual([]);
    await checkDisk(app.ctx, 90);
    const [warn] = await openAlertsOf(app.ctx, ["system.disk_low"]);
    expect(warn).toMatchObject({
      key: os.hostname(),
      severity: "warning",
      summary: `the data directory's file system on ${os.hostname()} is 90% full (warning at 85%, critical at 95%)`,
      details: { usedPercent: 90 },
    });
    await checkDisk(app.ctx, 96.5);
    expect(await openAlertsOf(app.ctx, ["system.disk_low"])).toEqual([expect.objectContaining({ id: warn!.id, severity: "critical", occurrences: 2 })]);
    await checkDisk(app.ctx, 40);
    expect(await openAlertsOf(app.ctx, ["system.disk_low"])).toEqual([]);
    await checkDisk(app.ctx); // the real file system: whatever it says, the check runs without error
  });

  it("lists and acknowledges from the CLI, with --json, one-line failures and exit codes", async () => {
    const env = testEnv(app.db, app.dataDir);
    const { id } = await raiseAlert(app.ctx, { kind: "test.cli_visible", severity: "critical", key: "nas", tenantId: tenantB, summary: "snapshot 9 failed on target nas" });
    const listed = await runCli(["alerts", "list", "--json"], env);
    expect(listed.code).toBe(0);
    const body = JSON.parse(listed.stdout) as { ok: boolean; alerts: AlertViewRes[]; openCount: number };
    expect(body.ok).toBe(true);
    expect(body.alerts.find((a) => a.id === id)).toMatchObject({ kind: "test.cli_visible", key: "nas", tenantId: tenantB, severity: "critical" });

    const acked = await runCli(["alerts", "ack", id, "--note", "swapping the NAS disk"], env);
    expect(acked.code).toBe(0);
    expect(acked.stdout).toMatch(
      new RegExp(
        `^acknowledged: +${id}  critical acknowledged test\\.cli_visible \\(nas\\) \\[tenant ${tenantB}\\]: snapshot 9 failed on target nas .* ack: swapping the NAS disk`,
      ),
    );
    const shown = (await adminB.agent.get(`/api/v1/alerts/${id}`)).body.alert as AlertViewRes;
    expect(shown).toMatchObject({ acknowledgementNote: "swapping the NAS disk", acknowledgedBy: null, resolvedAt: null });
    expect(shown.acknowledgedAt).not.toBeNull();
    const [event] = (await auditEvents(app, { action: "alert.acknowledge" })).filter((e) => e.resource_id === id);
    expect(event).toMatchObject({ actor_role: "host_operator", actor_user_id: expect.stringMatching(/^os:/), tenant_id: tenantB, reason: "swapping the NAS disk" });

    const missing = await runCli(["alerts", "ack", "999999999", "--note", "x", "--json"], env);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout)).toEqual({ ok: false, error: "no such alert" });
    const usage = await runCli(["alerts", "ack", "abc", "--note", "x"], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr.trim()).toBe("wardkeep: abc: an alert id is a number (see wardkeep alerts list)");
    // The operator's note is checked like the API's (in-process: each CLI run costs seconds).
    const op = { userId: "os:test", userAgent: "wardkeep-cli" };
    await expect(acknowledgeAlertAsOperator(app.ctx, id, "  ", op)).rejects.toThrow("say what is being done about it (--note)");
    await expect(acknowledgeAlertAsOperator(app.ctx, id, "x".repeat(1001), op)).rejects.toThrow("the note has at most 1000 characters");
    await resolveAlert(app.ctx, "test.cli_visible", "nas", { tenantId: tenantB });
  }, 180_000);

  // Last: it moves the clock close to the certificate's expiry.
  it("raises certificate expiry inside the warning window, critical in the last week", async () => {
    const notAfter = describeCertificate(fs.readFileSync(path.join(app.ctx.config.dataDir, "tls", "server.crt"), "utf8")).notAfter;
    expect(await checkCertificate(app.ctx)).toBeGreaterThan(30);
    expect(await openAlertsOf(app.ctx, ["tls.certificate_expiring"])).toEqual([]);
    // It runs as the tls-expiry job (one replica, recorded in job_runs); "run now" shows its count.
    const started = await root.agent.post("/api/v1/jobs/tls-expiry/run");
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    await vi.waitFor(
      async () => {
        const runs = (await root.agent.get("/api/v1/jobs/tls-expiry/runs")).body.runs as { id: string; outcome: string; counts: Record<string, number> }[];
        const run = runs.find((r) => r.id === started.body.run.id);
        expect(run).toMatchObject({ outcome: "succeeded" });
        expect(run!.counts.daysLeft).toBeGreaterThan(30);
      },
      { timeout: 15_000 },
    );
    clock.advance(notAfter.getTime() - clock.now().getTime() - 20.5 * 86_400_000);
    await checkCertificate(app.ctx);
    const [soon] = await openAlertsOf(app.ctx, ["tls.certificate_expiring"]);
    expect(soon).toMatchObject({ severity: "warning", details: { daysLeft: 20 } });
    expect(soon!.summary).toBe(`the server's TLS certificate expires in 20 day(s), on ${notAfter.toISOString().slice(0, 10)}: run wardkeep tls renew or import a new one`);
    clock.advance(15 * 86_400_000);
    await checkCertificate(app.ctx);
    expect(await openAlertsOf(app.ctx, ["tls.certificate_expiring"])).toEqual([
      expect.objectContaining({ id: soon!.id, severity: "critical", details: expect.objectContaining({ daysLeft: 5 }) }),
    ]);
  });
});
