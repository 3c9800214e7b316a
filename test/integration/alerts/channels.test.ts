/**
 * Alerts reach a person: e-mail through a real SMTP relay (STARTTLS + AUTH, smtp-server) and
 * RFC 5424 over TLS to a real syslog collector, when raised, again while open, and when resolved;
 * failed messages are retried, shown, and raise the channel's own alert; the test button says
 * whether a channel works. Nothing but ids, counts and the detector's summary leaves.
 */
import path from "node:path";
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { raiseAlert, resolveAlert } from "../../../daemon/alerts/index.js";
import type { AlertChannelViewRes, AlertDetailRes, AlertViewRes } from "../../../daemon/alerts/schema.js";
import { ensureTlsMaterial } from "../../../daemon/tls/internal-ca.js";
import { startTestAppliance, tempDir, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { freePort } from "../../helpers/postgres.js";
import { startSmtpRelay, type SmtpRelay } from "../../helpers/smtp-relay.js";
import { syslogCollector, waitUntil, type SyslogCollector } from "../../helpers/syslog-collector.js";
import { auditEvents, expectProblem } from "../auth/identity-helpers.js";
import { Webhook } from "standardwebhooks";
import { WebhookReceiver } from "../../helpers/webhook-receiver.js";

let app: TestAppliance;
const clock = new TestClock();
let root: SignedIn;
let relay: SmtpRelay;
let collector: SyslogCollector;
let collectorPort: number;
let caPem: string;
let certs: { certPem: string; keyPem: string };

beforeAll(async () => {
  const dir = tempDir("wardkeep-alert-channels-");
  certs = await ensureTlsMaterial({ dir, hostnames: ["localhost", "127.0.0.1"], validityDays: 30 });
  caPem = fs.readFileSync(path.join(dir, "ca.crt"), "utf8");
  relay = await startSmtpRelay({ ...certs, user: "wardkeep", password: "relay-secret-1", port: await freePort() });
  collectorPort = await freePort();
  collector = syslogCollector(certs.certPem, certs.keyPem);
  await collector.listen(collectorPort);
  app = await startTestAppliance({
    clock,
    env: {
      WARDKEEP_WEBHOOKS_ALLOW_PLAIN_HTTP: "true",
      WARDKEEP_WEBHOOKS_POLL_INTERVAL_MS: "100",
      WARDKEEP_ALERTS_POLL_INTERVAL_MS: "100",
      WARDKEEP_ALERTS_RETRY_DELAYS_SECONDS: "5",
      WARDKEEP_ALERTS_SEND_TIMEOUT_MS: "3000",
      WARDKEEP_ALERTS_CHECK_INTERVAL_MS: "3600000",
    },
  });
  root = await signIn(app, { role: "super_admin" });
});
afterAll(async () => {
  await app?.close();
  await relay?.close();
  await collector?.close();
});

const emailChannel = (name: string, password: string, extra: Record<string, unknown> = {}) => ({
  type: "email",
  name,
  minSeverity: "warning",
  resendMinutes: 0,
  password,
  settings: { host: "localhost", port: relay.port, security: "starttls", username: "wardkeep", from: "wardkeep@hospital.example", to: ["it-oncall@hospital.example"], caPem },
  ...extra,
});
const syslogChannel = (name: string, port: number, extra: Record<string, unknown> = {}) => ({
  type: "syslog",
  name,
  minSeverity: "warning",
  resendMinutes: 0,
  settings: { host: "localhost", port, caPem },
  ...extra,
});

async function create(who: SignedIn, body: object): Promise<AlertChannelViewRes> {
  const res = await who.agent.post("/api/v1/alert-channels").send(body);
  expect(res.status).toBe(201);
  return res.body as AlertChannelViewRes;
}
const detail = async (id: string): Promise<AlertDetailRes> => (await root.agent.get(`/api/v1/alerts/${id}`)).body as AlertDetailRes;
const mailsAbout = (kind: string) => relay.mails.filter((m) => m.subject.includes(kind));
const framesAbout = (kind: string) => collector.frames.filter((f) => f.includes(`kind="${kind}"`));

describe("alert channels", () => {
  const channels: AlertChannelViewRes[] = [];
  afterAll(async () => {
    for (const c of channels) await root.agent.delete(`/api/v1/alert-channels/${c.id}`);
  });

  it("tests a channel: a relay that takes the mail over STARTTLS with the password, and a wrong password it refuses", async () => {
    const good = await create(root, emailChannel("IT on-call", "relay-secret-1"));
    channels.push(good);
    expect(good).toMatchObject({ name: "IT on-call", type: "email", hasPassword: true, lastSuccessAt: null });
    expect(JSON.stringify(good)).not.toContain("relay-secret-1");
    const ok = await root.agent.post(`/api/v1/alert-channels/${good.id}/test`);
    expect(ok.body).toEqual({ delivered: true, error: null });
    const mail = relay.mails.at(-1)!;
    expect(mail).toMatchObject({ secure: true, user: "wardkeep", to: ["it-oncall@hospital.example"] });
    expect(mail.subject).toBe("[Wardkeep] INFO raised: alerts.test (IT on-call)");

    const bad = await create(root, emailChannel("Wrong password", "not-the-password", { enabled: false }));
    channels.push(bad);
    const refused = await root.agent.post(`/api/v1/alert-channels/${bad.id}/test`);
    expect(refused.body.delivered).toBe(false);
    expect(refused.body.error).toMatch(/Invalid login|Invalid username or password|535/);
    const listed = (await root.agent.get("/api/v1/alert-channels")).body.channels as AlertChannelViewRes[];
    expect(listed.find((c) => c.id === bad.id)).toMatchObject({ lastError: refused.body.error, lastSuccessAt: null });
    expect(listed.find((c) => c.id === good.id)!.lastSuccessAt).not.toBeNull();
    const tests = (await auditEvents(app, { action: "alert.channel.test" })).map((e) => [e.resource_id, e.outcome]);
    expect(tests).toEqual(
      expect.arrayContaining([
        [good.id, "success"],
        [bad.id, "failure"],
      ]),
    );

    expectProblem(await root.agent.post("/api/v1/alert-channels").send(emailChannel("IT on-call", "x")), 409, "conflict");
    expectProblem(
      await root.agent.post("/api/v1/alert-channels").send({ ...emailChannel("No recipients", "x"), settings: { host: "localhost", from: "a@b.example", to: [] } }),
      400,
      "invalid-request",
    );
  });

  it("sends an alert when raised, to e-mail and syslog, and a resolved message when it clears", async () => {
    const sys = await create(root, syslogChannel("SIEM", collectorPort));
    channels.push(sys);
    const { id } = await raiseAlert(app.ctx, {
      kind: "test.snapshot_failed",
      severity: "critical",
      key: "nas",
      summary: "snapshot 7 failed on target nas",
      details: { snapshotCount: 7 },
    });
    await waitUntil(() => mailsAbout("test.snapshot_failed").length === 1 && framesAbout("test.snapshot_failed").length === 1, 20_000, "the raised messages");
    const mail = mailsAbout("test.snapshot_failed")[0]!;
    expect(mail.subject).toBe("[Wardkeep] CRITICAL raised: test.snapshot_failed (nas)");
    expect(mail.text).toContain(`Alert ${id} raised`);
    expect(mail.text).toContain("Summary:     snapshot 7 failed on target nas");
    expect(mail.text).toContain("snapshotCount: 7");
    const frame = framesAbout("test.snapshot_failed")[0]!;
    expect(frame).toMatch(/^<130>1 \S+ \S+ wardkeep \d+ alert\.raised \[wardkeepAlert@32473 id="\d+" event="raised" kind="test\.snapshot_failed" key="nas" severity="critical"/);
    expect(frame).toMatch(/CRITICAL raised: test\.snapshot_failed \(nas\): snapshot 7 failed on target nas$/);

    await waitUntil(async () => (await detail(id)).alert.sentTo.length === 2, 10_000, "sentTo");
    const d = await detail(id);
    expect(d.alert.sentTo).toEqual(["IT on-call", "SIEM"]);
    expect(d.deliveries.map((x) => [x.channelName, x.event, x.status])).toEqual(
      expect.arrayContaining([
        ["IT on-call", "raised", "sent"],
        ["SIEM", "raised", "sent"],
      ]),
    );

    // Seen again while open: no new message.
    await raiseAlert(app.ctx, { kind: "test.snapshot_failed", severity: "critical", key: "nas", summary: "snapshot 8 failed on target nas" });
    await resolveAlert(app.ctx, "test.snapshot_failed", "nas");
    await waitUntil(() => mailsAbout("test.snapshot_failed").length === 2 && framesAbout("test.snapshot_failed").length === 2, 20_000, "the resolved messages");
    expect(mailsAbout("test.snapshot_failed")[1]!.subject).toBe("[Wardkeep] RESOLVED: test.snapshot_failed (nas)");
    expect(framesAbout("test.snapshot_failed")[1]).toMatch(/^<133>1 .* alert\.resolved \[wardkeepAlert@32473 id="\d+" event="resolved"/);

    // Below a channel's minimum severity: nothing sent.
    await raiseAlert(app.ctx, { kind: "test.info_only", severity: "info", summary: "an informational alert" });
    await new Promise((r) => setTimeout(r, 500));
    expect(mailsAbout("test.info_only")).toEqual([]);
    await resolveAlert(app.ctx, "test.info_only", "");
  });

  // Before the tests that move the clock: webhook receivers check the timestamp against real time.
  it("sends a tenant's alerts to that tenant's channels only, and as signed alert.raised / alert.resolved webhooks with ids only", async () => {
    const tenantId = (await createTenant(app, "Channel Hospital")).id;
    const admin = await signIn(app, { role: "admin", tenantId });
    const own = await create(admin, { ...emailChannel("Ward IT", "relay-secret-1"), settings: { ...emailChannel("x", "y").settings, to: ["ward-it@hospital.example"] } });
    expect(own.tenantId).toBe(tenantId);
    expect(((await admin.agent.get("/api/v1/alert-channels")).body.channels as AlertChannelViewRes[]).map((c) => c.name)).toEqual(["Ward IT"]);
    expectProblem(await admin.agent.post(`/api/v1/alert-channels/${channels[0]!.id}/test`), 404, "not-found");

    const hooks = await new WebhookReceiver().listen();
    try {
      expect((await root.agent.post("/api/v1/webhooks/allowed-hosts").send({ host: "127.0.0.1", port: hooks.port, allowPrivate: true, note: "ward pager" })).status).toBe(201);
      const sub = await admin.agent.post("/api/v1/webhooks").send({ url: `http://127.0.0.1:${hooks.port}/alerts`, eventTypes: ["alert.raised", "alert.resolved"] });
      expect(sub.status, JSON.stringify(sub.body)).toBe(201);
      hooks.secrets = [sub.body.secret as string];

      const { id } = await raiseAlert(app.ctx, { kind: "test.tenant_thing", severity: "critical", key: "ward-3", tenantId, summary: "tenant alert about ward 3" });
      await waitUntil(() => mailsAbout("test.tenant_thing").length === 1, 20_000, "the tenant's mail");
      await new Promise((r) => setTimeout(r, 300));
      expect(mailsAbout("test.tenant_thing").map((m) => m.to)).toEqual([["ward-it@hospital.example"]]);
      await resolveAlert(app.ctx, "test.tenant_thing", "ward-3", { tenantId });
      await waitUntil(() => hooks.received.length === 2, 20_000, "both webhooks");
      const bodies = hooks.received.map((r) => {
        expect(r.verifiedBy).toEqual([0]);
        return new Webhook(sub.body.secret as string).verify(r.body, { "webhook-id": r.id, "webhook-timestamp": r.timestamp, "webhook-signature": r.signature });
      });
      const data = { alertId: id, kind: "test.tenant_thing", severity: "critical", occurrences: 1, key: "ward-3" };
      expect(bodies).toEqual([
        { type: "alert.raised", timestamp: expect.any(String), data },
        { type: "alert.resolved", timestamp: expect.any(String), data },
      ]);
      expect(JSON.stringify(bodies)).not.toContain("tenant alert about ward 3"); // the summary stays home
    } finally {
      await hooks.close();
    }
  });

  it("sends an open alert again after the channel's interval", async () => {
    const put = await root.agent.put(`/api/v1/alert-channels/${channels[0]!.id}`).send({ ...emailChannel("IT on-call", "ignored"), password: undefined, resendMinutes: 30 });
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({ resendMinutes: 30, hasPassword: true });
    await raiseAlert(app.ctx, { kind: "test.disk_low", severity: "warning", summary: "data volume 91% full" });
    await waitUntil(() => mailsAbout("test.disk_low").length === 1, 20_000, "the raised mail");
    clock.advanceMinutes(20);
    await new Promise((r) => setTimeout(r, 500));
    expect(mailsAbout("test.disk_low")).toHaveLength(1); // not yet
    clock.advanceMinutes(11);
    await waitUntil(() => mailsAbout("test.disk_low").length === 2, 20_000, "the reminder");
    expect(mailsAbout("test.disk_low")[1]!.subject).toBe("[Wardkeep] WARNING still open: test.disk_low");
    await resolveAlert(app.ctx, "test.disk_low", "");
    root = await signIn(app, { role: "super_admin" }); // the clock moved past the idle timeout
  });

  it("retries a channel that cannot deliver, shows why, raises its own alert, and resolves it once it delivers again", async () => {
    const downPort = await freePort();
    const broken = await create(root, syslogChannel("Collector B", downPort));
    channels.push(broken);
    const { id } = await raiseAlert(app.ctx, { kind: "test.drill_failed", severity: "critical", summary: "drill 3 failed" });
    const deliveryTo = async () => (await detail(id)).deliveries.find((x) => x.channelId === broken.id);
    await waitUntil(async () => (await deliveryTo())?.attempts === 1, 20_000, "the first attempt");
    expect(await deliveryTo()).toMatchObject({ status: "pending", lastError: expect.stringMatching(/ECONNREFUSED/) });
    expect((await root.agent.get("/api/v1/alerts")).body.alerts.map((a: AlertViewRes) => a.kind)).not.toContain("alerts.channel_failed");

    clock.advance(6_000); // past the retry delay: the second (last) attempt fails too
    await waitUntil(async () => (await deliveryTo())?.status === "failed", 20_000, "the retry");
    const failed = ((await root.agent.get("/api/v1/alerts")).body.alerts as AlertViewRes[]).find((a) => a.kind === "alerts.channel_failed" && a.key === broken.id)!;
    expect(failed.summary).toMatch(/^alert channel Collector B \(syslog\) cannot deliver: .*ECONNREFUSED/);
    // The other channels hear about it; the broken one is not asked to carry its own failure.
    await waitUntil(() => mailsAbout("alerts.channel_failed").length === 1, 20_000, "the channel failure mail");
    expect((await detail(failed.id)).deliveries.map((x) => x.channelId)).not.toContain(broken.id);
    const shown = ((await root.agent.get("/api/v1/alert-channels")).body.channels as AlertChannelViewRes[]).find((c) => c.id === broken.id)!;
    expect(shown.lastError).toMatch(/ECONNREFUSED/);
    expect(await app.ctx.metrics.metrics()).toMatch(/^wardkeep_alert_channels_failing 1$/m);
    expect(await app.ctx.metrics.metrics()).toMatch(/^wardkeep_alerts_open\{severity="critical"\} [1-9]/m);

    // The collector comes up: the next message gets through and the channel's alert resolves.
    const late = syslogCollector(certs.certPem, certs.keyPem);
    await late.listen(downPort);
    try {
      await raiseAlert(app.ctx, { kind: "test.target_failed", severity: "critical", key: "s3", summary: "target s3 failed" });
      await waitUntil(() => late.frames.some((f) => f.includes('kind="test.target_failed"')), 20_000, "delivery after recovery");
      await waitUntil(async () => (await detail(failed.id)).alert.resolvedAt !== null, 20_000, "the channel alert to resolve");
      expect(await app.ctx.metrics.metrics()).toMatch(/^wardkeep_alert_channels_failing 0$/m);
    } finally {
      await late.close();
    }
    await resolveAlert(app.ctx, "test.drill_failed", "");
    await resolveAlert(app.ctx, "test.target_failed", "s3");
  });
});
