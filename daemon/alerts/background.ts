import fs from "node:fs";
import { Gauge } from "prom-client";
import os from "node:os";
import path from "node:path";
import { inDataDir } from "../config/load.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import type { JobSpec } from "../jobs/index.js";
import { describeCertificate } from "../tls/index.js";
import { CHANNEL_FAILED, startAlertSender, type AlertRaiser } from "./deliveries.js";
import { oneLineError } from "./transports.js";
import { alertViewsByIds, raiseAlert, resolveAlert } from "./store.js";

/** The channel-failure alert through the store (deliveries.ts cannot import the store: it queues for it). */
const raiser: AlertRaiser = {
  async raise(ctx, channel, error) {
    await raiseAlert(ctx, {
      kind: CHANNEL_FAILED,
      severity: "warning",
      key: channel.id,
      tenantId: channel.tenant_id,
      summary: `alert channel ${channel.name} (${channel.type}) cannot deliver: ${error}`,
      details: { channelId: channel.id, channelType: channel.type },
    });
  },
  async resolve(ctx, channel) {
    await resolveAlert(ctx, CHANNEL_FAILED, channel.id, { tenantId: channel.tenant_id });
  },
  views: alertViewsByIds,
};

export const CERTIFICATE_EXPIRING = "tls.certificate_expiring";
export const DISK_LOW = "system.disk_low";

/** The server certificate the appliance serves: the configured one, or the internal CA's. */
function serverCertificatePath(ctx: ApplianceContext): string {
  return ctx.config.tls.certFile || path.join(inDataDir(ctx.config, "tls"), "server.crt");
}

/**
 * Raises `tls.certificate_expiring` inside the warning window (critical in the last days),
 * resolves it otherwise. Resolves to the days left, or undefined when there is no certificate to read.
 */
export async function checkCertificate(ctx: ApplianceContext): Promise<number | undefined> {
  const cfg = ctx.config.alerts;
  let notAfter: Date;
  try {
    notAfter = describeCertificate(fs.readFileSync(serverCertificatePath(ctx), "utf8")).notAfter;
  } catch {
    return undefined; // no certificate file to read (yet): the TLS capability reports that at start
  }
  const days = Math.floor((notAfter.getTime() - ctx.clock.now().getTime()) / 86_400_000);
  if (days >= cfg.certificateWarnDays) {
    await resolveAlert(ctx, CERTIFICATE_EXPIRING, "");
    return days;
  }
  await raiseAlert(ctx, {
    kind: CERTIFICATE_EXPIRING,
    severity: days <= cfg.certificateCriticalDays ? "critical" : "warning",
    summary:
      days < 0
        ? `the server's TLS certificate expired on ${notAfter.toISOString().slice(0, 10)}: run wardkeep tls renew or import a new one`
        : `the server's TLS certificate expires in ${days} day(s), on ${notAfter.toISOString().slice(0, 10)}: run wardkeep tls renew or import a new one`,
    details: { daysLeft: days, notAfter: notAfter.toISOString() },
  });
  return days;
}

/**
 * Raises `system.disk_low` when the data directory's file system is fuller than the thresholds.
 * Each replica has its own data directory, so the key is this host's name and every replica checks
 * its own (in the background loop, not as a job, which runs on one replica).
 */
export async function checkDisk(ctx: ApplianceContext, usedPercent?: number): Promise<void> {
  const host = os.hostname().slice(0, 200);
  const cfg = ctx.config.alerts;
  let used = usedPercent;
  if (used === undefined) {
    const s = await fs.promises.statfs(inDataDir(ctx.config, "."));
    used = s.blocks > 0 ? Math.round((1 - s.bavail / s.blocks) * 1000) / 10 : 0;
  }
  if (used < cfg.diskWarnPercent) {
    await resolveAlert(ctx, DISK_LOW, host);
    return;
  }
  await raiseAlert(ctx, {
    kind: DISK_LOW,
    key: host,
    severity: used >= cfg.diskCriticalPercent ? "critical" : "warning",
    summary: `the data directory's file system on ${host} is ${used}% full (warning at ${cfg.diskWarnPercent}%, critical at ${cfg.diskCriticalPercent}%)`,
    details: { usedPercent: used },
  });
}

/** The certificate check runs through the job runner (one replica, with a job_runs history). */
export const alertsJobs: JobSpec[] = [
  {
    name: "tls-expiry",
    summary: "Raises tls.certificate_expiring when the server certificate is within alerts.certificateWarnDays of expiry",
    schedule: (ctx) => ctx.config.jobs.schedules.tlsExpiry || "0 0 6 * * *",
    runAtStartAfterMs: 5_000,
    async run(ctx) {
      const daysLeft = await checkCertificate(ctx);
      return daysLeft === undefined ? { skipped: "no server certificate file to read" } : { counts: { daysLeft } };
    },
  },
];

/** Open alerts by severity and messages waiting for a channel, for the hospital's own monitoring. */
function registerAlertMetrics(ctx: ApplianceContext): void {
  type Counts = { severity: string; n: number }[];
  let pending: Promise<{ open: Counts; waiting: number; failed: number } | undefined> | undefined;
  // One read per scrape serves the gauges (collect runs for each; the first fills it).
  const read = () =>
    (pending ??= inScope(ctx.db.app, { kind: "appliance" }, async (t) => ({
      open: await t.rows<{ severity: string; n: number }>("SELECT severity, count(*)::int AS n FROM alerts WHERE resolved_at IS NULL GROUP BY severity"),
      waiting: (await t.one<{ n: number }>("SELECT count(*)::int AS n FROM alert_deliveries WHERE status = 'pending'"))!.n,
      failed: (await t.one<{ n: number }>(
        "SELECT count(*)::int AS n FROM alert_channels c WHERE c.enabled AND EXISTS (SELECT 1 FROM alerts a WHERE a.kind = $1 AND a.key = c.id::text AND a.resolved_at IS NULL)",
        [CHANNEL_FAILED],
      ))!.n,
    }))
      .catch(() => undefined)
      .finally(() => setTimeout(() => (pending = undefined), 0)));
  new Gauge({
    name: "wardkeep_alerts_open",
    help: "Open alerts of the appliance and every tenant, by severity",
    labelNames: ["severity"],
    registers: [ctx.metrics],
    async collect() {
      const r = await read();
      if (!r) return;
      for (const severity of ["info", "warning", "critical"]) this.set({ severity }, r.open.find((o) => o.severity === severity)?.n ?? 0);
    },
  });
  new Gauge({
    name: "wardkeep_alert_messages_pending",
    help: "Alert messages waiting to be sent or retried to a channel",
    registers: [ctx.metrics],
    async collect() {
      const r = await read();
      if (r) this.set(r.waiting);
    },
  });
  new Gauge({
    name: "wardkeep_alert_channels_failing",
    help: "Enabled alert channels whose alerts.channel_failed alert is open (they cannot deliver)",
    registers: [ctx.metrics],
    async collect() {
      const r = await read();
      if (r) this.set(r.failed);
    },
  });
}

/** The alerts capability's background work on every replica: the channel sender, this replica's disk check, the metrics. */
export function startAlertServices(ctx: ApplianceContext): { stop(): Promise<void> } {
  registerAlertMetrics(ctx);
  const sender = startAlertSender(ctx, raiser);
  let stopped = false;
  const check = async () => {
    if (stopped) return;
    await checkDisk(ctx).catch((err: unknown) => ctx.log.warn("alerts: the disk check failed", { error: oneLineError(err) }));
  };
  const timer = setInterval(() => void check(), ctx.config.alerts.checkIntervalMs);
  timer.unref();
  const first = setTimeout(() => void check(), ctx.config.alerts.firstCheckDelayMs);
  first.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(first);
      await sender?.stop();
    },
  };
}
