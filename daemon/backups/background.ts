import cron, { type ScheduledTask } from "node-cron";
import { Gauge } from "prom-client";
import { QueryTypes } from "sequelize";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/tenant-scope.js";
import { Conflict } from "../kernel/errors.js";
import { readPolicyRow } from "./policy.js";
import { evaluateFreshness, startDrill, startSnapshot } from "./service.js";

const registered = new WeakSet<object>();

/**
 * Backup metrics for /metrics, read from the catalog tables at scrape time, so every replica
 * reports the same state whichever one ran the job.
 */
export function registerBackupMetrics(ctx: ApplianceContext): void {
  if (registered.has(ctx.metrics)) return;
  registered.add(ctx.metrics);
  const state = async () => {
    try {
      return await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
        const rows = await ctx.db.app.query<{
          snap: Date | null;
          snap_bytes: string | null;
          drill: Date | null;
          drill_rto: number | null;
          drill_rpo: string | null;
          last_drill_passed: boolean | null;
          alerts: { kind: string }[];
        }>(
          `SELECT (SELECT max(finished_at) FROM backup_snapshots WHERE status IN ('complete', 'partial')) AS snap,
                  (SELECT stored_bytes FROM backup_snapshots WHERE status IN ('complete', 'partial') ORDER BY seq DESC LIMIT 1)::text AS snap_bytes,
                  (SELECT max(finished_at) FROM backup_drills WHERE status = 'passed') AS drill,
                  (SELECT rto_ms FROM backup_drills WHERE status = 'passed' ORDER BY seq DESC LIMIT 1) AS drill_rto,
                  (SELECT rpo_ms FROM backup_drills WHERE status = 'passed' ORDER BY seq DESC LIMIT 1)::text AS drill_rpo,
                  (SELECT status = 'passed' FROM backup_drills WHERE status IN ('passed', 'failed') ORDER BY seq DESC LIMIT 1) AS last_drill_passed,
                  coalesce((SELECT json_agg(json_build_object('kind', kind)) FROM backup_alerts WHERE cleared_at IS NULL), '[]') AS alerts`,
          { type: QueryTypes.SELECT, transaction: t },
        );
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
  const kinds = ["snapshot_failed", "snapshot_stale", "drill_failed", "drill_stale", "worm_not_enforced", "not_configured"];
  new Gauge({
    name: "wardkeep_backup_alert",
    help: "1 while a backup alert of this kind is open",
    labelNames: ["kind"],
    registers: [ctx.metrics],
    async collect() {
      const open = new Set(((await state())?.alerts ?? []).map((a) => a.kind));
      for (const kind of kinds) this.set({ kind }, open.has(kind) ? 1 : 0);
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
  if (!ctx.config.backup.schedulerEnabled) return { stop: async () => {} };
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

  const tick = async () => {
    if (stopped) return;
    try {
      await reschedule();
      await evaluateFreshness(ctx);
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
      await tasks.snapshot?.destroy();
      await tasks.drill?.destroy();
      await Promise.allSettled([...inFlight]);
    },
  };
}
