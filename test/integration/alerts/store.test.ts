/**
 * The one alert store through its public interface and the alerts API: dedup while open,
 * history after resolution, tenant isolation, acknowledgement with a note (audited) and its
 * failure paths.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { raiseAlert, resolveAlert } from "../../../daemon/alerts/index.js";
import type { AlertViewRes } from "../../../daemon/alerts/schema.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
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
    expect((await adminA.agent.get(`/api/v1/alerts/${a.id}`)).body.summary).toBe("channel c1 cannot deliver");
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
});
