import cron, { type ScheduledTask } from "node-cron";
import { Gauge } from "prom-client";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict } from "../kernel/errors.js";
import { evaluatePitrAlerts, registerPitrMetrics, startBaseBackupSchedule, startWalShipper } from "./pitr.js";
import { readPolicyRow } from "./policy.js";
import { ALERT_KINDS, COMPLETE_EVERYWHERE, evaluateFreshness, reconcileCatalogue, startDrill, startSnapshot } from "./service.js";

/** How often the watchdog compares the catalogue with the targets (each snapshot run also does). */
export const RECONCILE_EVERY_MS = 15 * 60_000;

const registered = new WeakSet<object>();

/**
 * Backup metrics for /metrics, read from the catalog tables at scrape time, so every replica
 * reports the same state whichever one ran the job.
 */
export function registerBackupMetrics(ctx: ApplianceContext): void {
  if (registered.has(ctx.metrics)) return;
  registered.add(ctx.metrics);
  // One query per scrape, not one per gauge: a scrape collects every gauge at once, and they share the query in flight.
  let inFlight: ReturnType<typeof read> | undefined;
  const state = () => {
    if (!inFlight) inFlight = read().finally(() => (inFlight = undefined));
    return inFlight;
  };
  const read = async () => {
    try {
      return await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
        const rows = await t.rows<{
          snap: Date | null;
          snap_bytes: string | null;
          drill: Date | null;
          drill_rto: number | null;
          drill_rpo: string | null;
          last_drill_passed: boolean | null;
          alerts: { kind: string; subject: string }[];
          per_target: { target: string; last: string | null }[];
        }>(`SELECT (SELECT max(finished_at) FROM backup_snapshots WHERE ${COMPLETE_EVERYWHERE}) AS snap,
                  (SELECT stored_bytes FROM backup_snapshots WHERE ${COMPLETE_EVERYWHERE} ORDER BY seq DESC LIMIT 1)::text AS snap_bytes,
                  (SELECT max(finished_at) FROM backup_drills WHERE status = 'passed') AS drill,
                  (SELECT rto_ms FROM backup_drills WHERE status = 'passed' ORDER BY seq DESC LIMIT 1) AS drill_rto,
                  (SELECT rpo_ms FROM backup_drills WHERE status = 'passed' ORDER BY seq DESC LIMIT 1)::text AS drill_rpo,
                  (SELECT status = 'passed' FROM backup_drills WHERE status IN ('passed', 'failed') ORDER BY seq DESC LIMIT 1) AS last_drill_passed,
                  coalesce((SELECT json_agg(json_build_object('kind', substr(kind, 8), 'subject', key)) FROM alerts WHERE resolved_at IS NULL AND tenant_id IS NULL AND kind LIKE 'backup.%'), '[]') AS alerts,
                  coalesce((SELECT json_agg(json_build_object('target', p.name, 'last',
                             (SELECT max(s.finished_at) FROM backup_snapshots s, jsonb_array_elements(s.targets) o
                               WHERE s.status NOT IN ('running', 'failed', 'interrupted') AND o ->> 'target' = p.name AND (o ->> 'ok')::boolean)))
                              FROM (SELECT d ->> 'name' AS name FROM backup_policy, jsonb_array_elements(backup_policy.targets) d) p), '[]') AS per_target`);
        return rows[0];
      });
    } catch {
      return undefined; // database down: the gauges say nothing rather than something wrong
    }
  };
  const secs = (d: Date | null | undefined) => (d ? d.getTime() / 1000 : 0);
  new Gauge({
    name: "wardkeep_backup_last_success_timestamp_seconds",
    help: "When the newest successful snapshot finished (0: never)",
    registers: [ctx.metrics],
    async collect() {
      this.set(secs((await state())?.snap));
    },
  });
  new Gauge({
    name: "wardkeep_backup_last_snapshot_bytes",
    help: "Stored (compressed, encrypted) size of the newest successful snapshot",
    registers: [ctx.metrics],
    async collect() {
      this.set(Number((await state())?.snap_bytes ?? 0));
    },
  });
  new Gauge({
    name: "wardkeep_backup_drill_last_success_timestamp_seconds",
    help: "When the newest passed recovery drill finished (0: never)",
    registers: [ctx.metrics],
    async collect() {
      this.set(secs((await state())?.drill));
    },
  });
  new Gauge({
    name: "wardkeep_backup_drill_last_passed",
    help: "1 when the newest finished recovery drill passed, 0 when it failed or none ran",
    registers: [ctx.metrics],
    async collect() {
      this.set((await state())?.last_drill_passed ? 1 : 0);
    },
  });
  new Gauge({
    name: "wardkeep_backup_drill_rto_seconds",
    help: "Restore time (RTO) measured by the newest passed drill",
    registers: [ctx.metrics],
    async collect() {
      this.set(((await state())?.drill_rto ?? 0) / 1000);
    },
  });
  new Gauge({
    name: "wardkeep_backup_drill_rpo_seconds",
    help: "Age of the snapshot (RPO) restored by the newest passed drill",
    registers: [ctx.metrics],
    async collect() {
      this.set(Number((await state())?.drill_rpo ?? 0) / 1000);
    },
  });
  new Gauge({
    name: "wardkeep_backup_alert",
    help: "1 while a backup alert of this kind is open (for any subject: see wardkeep_backup_target_failing for targets)",
    labelNames: ["kind"],
    registers: [ctx.metrics],
    async collect() {
      const open = new Set(((await state())?.alerts ?? []).map((a) => a.kind));
      for (const kind of ALERT_KINDS) this.set({ kind }, open.has(kind) ? 1 : 0);
    },
  });
  new Gauge({
    name: "wardkeep_backup_target_last_success_timestamp_seconds",
    help: "Per configured target: when the newest snapshot it took whole finished (0: never). A partial run advances only the targets that got it.",
    labelNames: ["target"],
    registers: [ctx.metrics],
    async collect() {
      const st = await state();
      if (!st) return;
      this.reset(); // a target removed from the policy stops being reported
      for (const p of st.per_target) this.set({ target: p.target }, p.last ? new Date(p.last).getTime() / 1000 : 0);
    },
  });
  new Gauge({
    name: "wardkeep_backup_target_failing",
    help: "Per configured target: 1 while its target_failed alert is open (it failed a run or could not be listed), 0 once it succeeds again",
    labelNames: ["target"],
    registers: [ctx.metrics],
    async collect() {
      const st = await state();
      if (!st) return;
      this.reset();
      const failing = new Set(st.alerts.filter((a) => a.kind === "target_failed").map((a) => a.subject));
      for (const p of st.per_target) this.set({ target: p.target }, failing.has(p.target) ? 1 : 0);
    },
  });
}

/**
 * Scheduled snapshots and drills (node-cron, schedules from the policy row, re-read every
 * watchdog tick so a change made on another replica applies here too) and the freshness
 * watchdog. Every replica schedules; the advisory lock in the service lets one of them run.
 */
export function startBackupServices(ctx: ApplianceContext): { stop(): Promise<void> } {
  registerBackupMetrics(ctx);
  registerPitrMetrics(ctx);
  // Shipping WAL is not a schedule: it runs whenever the spool has files, in the replica that has the spool.
  const shipper = startWalShipper(ctx);
  if (!ctx.config.backup.schedulerEnabled) return { stop: () => shipper.stop() };
  const baseBackups = startBaseBackupSchedule(ctx);
  const inFlight = new Set<Promise<unknown>>();
  const tasks: { snapshot?: ScheduledTask; drill?: ScheduledTask } = {};
  const current = { snapshot: "", drill: "" };
  let stopped = false;

  const launch = (what: "snapshot" | "drill") => {
    if (stopped) return;
    if (ctx.rootKey.isSealed) {
      ctx.log.warn(`backup: scheduled ${what} skipped: the appliance is sealed`);
      return;
    }
    const run = (async () => {
      const started = what === "snapshot" ? await startSnapshot(ctx, { trigger: "schedule" }) : await startDrill(ctx, { trigger: "schedule" });
      await started.done;
    })().catch((err: unknown) => {
      if (err instanceof Conflict) ctx.log.debug(`backup: scheduled ${what} skipped: ${err.message}`);
      else ctx.log.error(`backup: scheduled ${what} could not run: ${(err as Error).message}`);
    });
    inFlight.add(run);
    void run.finally(() => inFlight.delete(run));
  };

  const reschedule = async () => {
    const policy = await inScope(ctx.db.app, { kind: "appliance" }, (t) => readPolicyRow(ctx, t));
    const want = { snapshot: policy.enabled ? policy.snapshot_schedule : "", drill: policy.enabled ? policy.drill_schedule : "" };
    for (const what of ["snapshot", "drill"] as const) {
      if (want[what] === current[what]) continue;
      await tasks[what]?.destroy();
      tasks[what] = want[what] ? cron.schedule(want[what], () => launch(what), { name: `wardkeep-backup-${what}`, noOverlap: true }) : undefined;
      current[what] = want[what];
    }
  };

  let lastReconcile = 0;
  const tick = async () => {
    if (stopped) return;
    try {
      await reschedule();
      await evaluateFreshness(ctx);
      if (ctx.config.backup.walArchiving) await evaluatePitrAlerts(ctx);
      // Vanished and unrecorded snapshots are found even when no snapshot runs (the lock makes one replica do it).
      if (!ctx.rootKey.isSealed && ctx.clock.now().getTime() - lastReconcile >= RECONCILE_EVERY_MS) {
        lastReconcile = ctx.clock.now().getTime();
        const r = await reconcileCatalogue(ctx);
        for (const t of r.targets) if (t.error) ctx.log.warn(`backup reconcile: target ${t.target} could not be listed`, { target: t.target });
      }
    } catch (err) {
      ctx.log.warn(`backup watchdog: ${(err as Error).message}`);
    }
  };
  const timer = setInterval(() => void tick(), ctx.config.backup.watchdogIntervalSeconds * 1000);
  timer.unref();
  void tick();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await shipper.stop();
      await baseBackups.stop();
      await tasks.snapshot?.destroy();
      await tasks.drill?.destroy();
      await Promise.allSettled([...inFlight]);
    },
  };
}
