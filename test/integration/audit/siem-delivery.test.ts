import path from "node:path";
import pg from "pg";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAuditEvent } from "../../../daemon/audit/append.js";
import { chainPendingEvents } from "../../../daemon/audit/chainer.js";
import { dropExpiredAuditSegments } from "../../../daemon/audit/retention.js";
import { readSiemLag, startSiemForwarder, type SiemForwarder } from "../../../daemon/audit/siem.js";
import type { ApplianceContext } from "../../../daemon/context.js";
import { inScope } from "../../../daemon/db/sql.js";
import { ensureTlsMaterial } from "../../../daemon/tls/internal-ca.js";
import { tempDir } from "../../helpers/appliance.js";
import { freePort } from "../../helpers/postgres.js";
import { syslogCollector, waitUntil, type SyslogCollector } from "../../helpers/syslog-collector.js";
import { auditTestContext, ManualClock, type AuditTestContext } from "./context.js";

let tlsMaterial: { certPem: string; keyPem: string };
let caFile = "";
const open: { close(): Promise<void> }[] = [];
/** Started forwarders stop before their database goes away. */
function started(f: SiemForwarder | undefined): SiemForwarder {
  expect(f).toBeDefined();
  open.push({ close: () => f!.stop() });
  return f!;
}

beforeAll(async () => {
  const dir = tempDir("wardkeep-siem-delivery-");
  tlsMaterial = await ensureTlsMaterial({ dir, hostnames: ["localhost", "127.0.0.1"], validityDays: 30 });
  caFile = path.join(dir, "ca.crt");
});
afterAll(async () => {
  for (const o of open.reverse()) await o.close().catch(() => undefined);
});

async function setUp(extra: Record<string, string> = {}, clock?: ManualClock): Promise<{ t: AuditTestContext; collector: SyslogCollector; port: number }> {
  const port = await freePort();
  const t = await auditTestContext({
    clock,
    env: {
      WARDKEEP_AUDIT_SIEM_ENABLED: "true",
      WARDKEEP_AUDIT_SIEM_HOST: "localhost",
      WARDKEEP_AUDIT_SIEM_PORT: String(port),
      WARDKEEP_AUDIT_SIEM_CA_FILE: caFile,
      WARDKEEP_AUDIT_SIEM_RECONNECT_MS: "200",
      WARDKEEP_AUDIT_CHAIN_INTERVAL_MS: "100",
      ...extra,
    },
  });
  open.push(t);
  const collector = syslogCollector(tlsMaterial.certPem, tlsMaterial.keyPem);
  open.push(collector);
  return { t, collector, port };
}

async function writeEvents(ctx: ApplianceContext, n: number, tag: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    await inScope(ctx.db.app, { kind: "appliance" }, (tx) =>
      appendAuditEvent(ctx, tx, {
        tenantId: null,
        actor: { userId: `u-${tag}-${i}`, role: "practitioner" },
        action: "patient.read",
        resourceType: "patient",
        resourceId: `p-${i}`,
        patientId: `p-${i}`,
        outcome: "success",
      }),
    );
  }
  await chainPendingEvents(ctx);
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("SIEM forwarding never skips an event", () => {
  it("resends, in order and once each, what was chained while the collector was down and the forwarder restarted", async () => {
    const { t, collector, port } = await setUp();
    let forwarder = started(startSiemForwarder(t.ctx));
    await waitUntil(() => forwarder.isLeader(), 10_000, "leadership");
    await writeEvents(t.ctx, 30, "a");
    await waitUntil(async () => (await readSiemLag(t.ctx)).events === 30, 10_000, "lag of 30 events");
    // The appliance goes away with the collector still down: the queue it had is gone with it.
    await forwarder.stop();
    await writeEvents(t.ctx, 12, "b");

    forwarder = started(startSiemForwarder({ ...t.ctx, metrics: new Registry() }));
    await new Promise((r) => setTimeout(r, 500));
    expect(collector.frames).toHaveLength(0);
    await collector.listen(port);
    await waitUntil(() => collector.frames.length >= 42, 20_000, "42 frames");
    await writeEvents(t.ctx, 3, "c");
    await waitUntil(() => collector.frames.length >= 45, 20_000, "45 frames");
    await new Promise((r) => setTimeout(r, 300));
    expect(collector.seqs()).toEqual(range(1, 45));
    expect(await readSiemLag(t.ctx)).toMatchObject({ cursor: "45", head: "45", events: 0, seconds: 0 });
  });

  it("sends each event exactly once, in sequence order, with two replicas, and the standby takes over when the leader goes", async () => {
    const { t, collector, port } = await setUp();
    await collector.listen(port);
    // A second replica: same database, its own metrics and no local chain notifications (it polls).
    const replicas = [started(startSiemForwarder(t.ctx)), started(startSiemForwarder({ ...t.ctx, metrics: new Registry() }))];
    await waitUntil(() => replicas.some((r) => r.isLeader()), 10_000, "a leader");
    await new Promise((r) => setTimeout(r, 400));
    expect(replicas.filter((r) => r.isLeader())).toHaveLength(1);
    for (let round = 0; round < 5; round++) await writeEvents(t.ctx, 8, `r${round}`);
    await waitUntil(() => collector.frames.length >= 40, 20_000, "40 frames");

    const leader = replicas.find((r) => r.isLeader())!;
    const standby = replicas.find((r) => r !== leader)!;
    await leader.stop();
    await writeEvents(t.ctx, 10, "after");
    await waitUntil(() => standby.isLeader(), 10_000, "the standby to lead");
    await waitUntil(() => collector.frames.length >= 50, 20_000, "50 frames");
    await new Promise((r) => setTimeout(r, 300));
    expect(collector.seqs()).toEqual(range(1, 50));
  });

  it("raises the lag alert when the oldest unsent event is older than the threshold, and clears it once caught up", async () => {
    const clock = new ManualClock();
    const { t, collector, port } = await setUp({ WARDKEEP_AUDIT_SIEM_LAG_ALERT_SECONDS: "60" }, clock);
    const forwarder = started(startSiemForwarder(t.ctx));
    await waitUntil(() => forwarder.isLeader(), 10_000, "leadership");
    await writeEvents(t.ctx, 5, "lag");
    clock.advance(45_000);
    await new Promise((r) => setTimeout(r, 400));
    expect(t.logLines.some((l) => l.includes("lag alert raised"))).toBe(false);

    clock.advance(30_000);
    await waitUntil(() => t.logLines.some((l) => l.includes("SIEM forwarding lag alert raised")), 10_000, "the alert");
    const raised = JSON.parse(t.logLines.find((l) => l.includes("lag alert raised"))!) as Record<string, unknown>;
    expect(raised).toMatchObject({ level: "error", alert: "siem_lag", lagEvents: 5, thresholdSeconds: 60 });
    expect(raised.lagSeconds).toBeGreaterThanOrEqual(75);
    const lag = await readSiemLag(t.ctx);
    expect(lag).toMatchObject({ events: 5, alertRaised: true });
    const metrics = await t.ctx.metrics.metrics();
    expect(metrics).toMatch(/^wardkeep_audit_siem_lag_events 5$/m);
    expect(metrics).toMatch(/^wardkeep_audit_siem_lag_alert 1$/m);
    expect(Number(/^wardkeep_audit_siem_lag_seconds (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(75);
    expect(metrics).toMatch(/^wardkeep_audit_siem_leader 1$/m);
    expect(metrics).toMatch(/^wardkeep_audit_siem_connected 0$/m);

    await collector.listen(port);
    await waitUntil(() => t.logLines.some((l) => l.includes("SIEM forwarding lag alert cleared")), 15_000, "the alert to clear");
    expect(collector.seqs()).toEqual(range(1, 5));
    const after = await t.ctx.metrics.metrics();
    expect(after).toMatch(/^wardkeep_audit_siem_lag_events 0$/m);
    expect(after).toMatch(/^wardkeep_audit_siem_lag_seconds 0$/m);
    expect(after).toMatch(/^wardkeep_audit_siem_lag_alert 0$/m);
    expect(after).toMatch(/^wardkeep_audit_siem_forwarded_events_total 5$/m);
    // Ids and counts only: no event content in the alert.
    expect(t.logLines.filter((l) => l.includes("lag alert")).join("\n")).not.toMatch(/p-\d|u-lag/);
  });

  it("starts at the chain head the first time by default, or at the oldest retained event with startFrom genesis", async () => {
    for (const [startFrom, first] of [
      ["head", 4],
      ["genesis", 1],
    ] as const) {
      const { t, collector, port } = await setUp({ WARDKEEP_AUDIT_SIEM_START_FROM: startFrom });
      await writeEvents(t.ctx, 3, "before");
      await collector.listen(port);
      const forwarder = started(startSiemForwarder(t.ctx));
      await waitUntil(() => forwarder.isLeader(), 10_000, "leadership");
      await writeEvents(t.ctx, 2, "after");
      await waitUntil(() => collector.frames.length >= 6 - first, 10_000, "frames");
      await new Promise((r) => setTimeout(r, 300));
      expect(collector.seqs()).toEqual(range(first, 5));
    }
  });

  it("picks up where it stopped when the collector restarts, over a new connection", async () => {
    const { t, collector, port } = await setUp();
    await collector.listen(port);
    const forwarder = started(startSiemForwarder(t.ctx));
    await waitUntil(() => forwarder.isLeader(), 10_000, "leadership");
    await writeEvents(t.ctx, 4, "x");
    await waitUntil(() => collector.frames.length >= 4, 10_000, "4 frames");
    // The collector restarts: connections cut, nothing listening, then back.
    await collector.close();
    await writeEvents(t.ctx, 6, "y");
    await new Promise((r) => setTimeout(r, 500));
    await collector.listen(port);
    await waitUntil(() => collector.frames.length >= 10, 15_000, "10 frames");
    await new Promise((r) => setTimeout(r, 300));

    expect(collector.seqs()).toEqual(range(1, 10));
    expect(collector.connections()).toBeGreaterThanOrEqual(2);
  });
  it("gives up leadership when its database connection is cut, takes it again, and neither skips nor repeats", async () => {
    const { t, collector, port } = await setUp();
    await collector.listen(port);
    const forwarder = started(startSiemForwarder(t.ctx));
    await waitUntil(() => forwarder.isLeader(), 10_000, "leadership");
    await writeEvents(t.ctx, 5, "before");
    await waitUntil(() => collector.frames.length >= 5, 10_000, "5 frames");
    const su = new pg.Client({ connectionString: t.db.superuserUrl });
    await su.connect();
    try {
      const cut = await su.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'wardkeep-siem' AND datname = $1", [t.db.name]);
      expect(cut.rowCount).toBe(1);
    } finally {
      await su.end();
    }
    // Noticed as a connection error while idle, or as a failed query mid-round: either way it resigns.
    await waitUntil(() => t.logLines.some((l) => /SIEM forwarder lost its database connection|SIEM forwarding round failed/.test(l)), 10_000, "the lost-connection warning");
    await writeEvents(t.ctx, 5, "after");
    await waitUntil(() => collector.frames.length >= 10, 15_000, "10 frames");
    await new Promise((r) => setTimeout(r, 300));
    expect(collector.seqs()).toEqual(range(1, 10));
    expect(forwarder.isLeader()).toBe(true);
  });

  it("says which sequence numbers retention dropped before they could be sent, and sends the rest", async () => {
    const clock = new ManualClock();
    const { t, collector, port } = await setUp({}, clock);
    const at = async (iso: string, n: number) => {
      clock.set(new Date(iso));
      await writeEvents(t.ctx, n, iso.slice(0, 7));
    };
    await at("2015-03-10T10:00:00Z", 4);
    await at("2015-04-02T10:00:00Z", 3);
    await at(new Date().toISOString(), 5);
    // The collector got seq 1 and 2 back then, and was away for the rest of the decade.
    await t.ctx.db.owner.transaction(async (tx) => {
      await tx.exec("SELECT set_config('wardkeep.scope', 'appliance', true)");
      await tx.exec("UPDATE audit_siem_cursor SET seq = 2");
    });
    expect(await dropExpiredAuditSegments(t.ctx)).toEqual(["audit_events_2015_03", "audit_events_2015_04"]);
    await collector.listen(port);
    started(startSiemForwarder(t.ctx));
    await waitUntil(() => collector.frames.length >= 5, 10_000, "5 frames");
    await new Promise((r) => setTimeout(r, 300));
    expect(collector.seqs()).toEqual(range(8, 12));
    const warning = t.logLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.message).includes("retention already dropped"));
    expect(warning).toMatchObject({ level: "warn", fromSeq: "3", toSeq: "7" });
  });
});
