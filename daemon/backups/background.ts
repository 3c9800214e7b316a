import { Gauge } from "prom-client";
import type { ApplianceContext } from "../context.js";
import { hasReplayBinaries } from "../db/embedded.js";
import { inScope } from "../db/sql.js";
import type { JobSpec } from "../jobs/index.js";
import { Conflict } from "../kernel/errors.js";
import { evaluatePitrAlerts, registerPitrMetrics, runBaseBackup, startWalShipper } from "./pitr.js";
import { runPitrDrill } from "./pitr-drill.js";
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
  registerPitrMetrics(ctx);
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
 * Scheduled snapshots and drills (schedules from the policy row, which the job runner re-reads
 * every jobs.rescheduleSeconds, so a change made on another replica applies here too) and the
 * watchdog: freshness alerts, and a catalogue reconcile every RECONCILE_EVERY_MS even when no
 * snapshot runs. `backup.schedulerEnabled: false` leaves all three off on this replica.
 */
export const backupJobs: JobSpec[] = [
  {
    name: "backup-snapshot",
    summary: "Takes an encrypted snapshot to every target, then applies GFS retention and reconciles the catalogue",
    needsUnsealed: true,
    schedule: (ctx) => policySchedule(ctx, "snapshot"),
    async run(ctx) {
      const started = await startSnapshot(ctx, { trigger: "schedule" }).catch(conflictAsSkip);
      if (!started) return { skipped: "a snapshot is already running" };
      const run = await started.done;
      if (run.status === "failed") throw new Error(`snapshot ${run.id} failed`);
      return { counts: { storedBytes: run.storedBytes ?? 0, pruned: run.retention.length, targets: run.targets.length } };
    },
  },
  {
    name: "backup-drill",
    summary: "Restores the newest snapshot into a scratch database and verifies digests, row counts, the audit chain and decryption",
    needsUnsealed: true,
    schedule: (ctx) => policySchedule(ctx, "drill"),
    async run(ctx) {
      const started = await startDrill(ctx, { trigger: "schedule" }).catch(conflictAsSkip);
      if (!started) return { skipped: "a drill or snapshot is already running" };
      const drill = await started.done;
      if (drill.status !== "passed") throw new Error(`drill ${drill.id} ${drill.status}`);
      return { counts: { rtoMs: drill.rtoMs ?? 0 } };
    },
  },
  {
    name: "pitr-base-backup",
    summary: "Takes a physical base backup of PostgreSQL (embedded, or the compose file's) to every target, then prunes base backups and the WAL only they needed",
    needsUnsealed: true,
    // Base backups read the data directory: the embedded server's, or an external one's once
    // database.serverDataDir says where it is mounted.
    schedule: (ctx) =>
      ctx.config.backup.schedulerEnabled && ctx.config.backup.walArchiving && (!ctx.config.database.url || ctx.config.database.serverDataDir)
        ? ctx.config.backup.baseBackupCron
        : null,
    async run(ctx) {
      const run = await runBaseBackup(ctx, "schedule");
      if (run.status === "failed") throw new Error(`base backup ${run.id} failed`);
      return { counts: { storedBytes: run.body.object.storedBytes, targets: run.outcomes.filter((o) => o.ok).length } };
    },
  },
  {
    name: "pitr-drill",
    summary:
      "Restores one target's archive to a random time in its retained window into a scratch cluster and checks the audit chain, the signed checkpoint before it and decryption",
    needsUnsealed: true,
    // With the compose PostgreSQL too, where this install has binaries to replay with: the embedded
    // package's, or backup.replayBinDir (the daemon image's copy).
    schedule: (ctx) =>
      ctx.config.backup.schedulerEnabled && ctx.config.backup.walArchiving && hasReplayBinaries(ctx.config.backup.replayBinDir) ? ctx.config.backup.pitrDrillCron || null : null,
    async run(ctx, run) {
      const drill = await runPitrDrill(ctx, { trigger: run.trigger === "manual" ? "manual" : "schedule" }).catch(conflictAsSkip);
      if (!drill) return { skipped: "a PITR drill is already running, or no target is configured" };
      if (drill.status !== "passed") throw new Error(`PITR drill ${drill.id} on ${drill.target} failed: ${drill.error ?? "a check failed"}`);
      return {
        counts: { rtoMs: drill.rtoMs ?? 0, recoveryPointLagMs: drill.targetTime && drill.achievedTime ? Date.parse(drill.targetTime) - Date.parse(drill.achievedTime) : 0 },
      };
    },
  },
  {
    name: "backup-watchdog",
    summary: "Raises backup alerts when no snapshot or drill succeeded recently enough, and reconciles the catalogue with the targets",
    schedule: (ctx) => (ctx.config.backup.schedulerEnabled ? ctx.config.jobs.schedules.backupWatchdog || { everyMs: ctx.config.backup.watchdogIntervalSeconds * 1000 } : null),
    runAtStartAfterMs: 500,
    async run(ctx) {
      const open = await evaluateFreshness(ctx);
      if (ctx.config.backup.walArchiving) await evaluatePitrAlerts(ctx);
      let reconciled = 0;
      // Vanished and unrecorded snapshots are found even when no snapshot runs.
      const last = lastReconcile.get(ctx) ?? 0;
      if (!ctx.rootKey.isSealed && ctx.clock.now().getTime() - last >= RECONCILE_EVERY_MS) {
        lastReconcile.set(ctx, ctx.clock.now().getTime());
        const r = await reconcileCatalogue(ctx);
        for (const t of r.targets) if (t.error) ctx.log.warn(`backup reconcile: target ${t.target} could not be listed`, { target: t.target });
        reconciled = 1;
      }
      return { counts: { openAlerts: open.length, reconciled } };
    },
  },
];

/**
 * The WAL shipper is not a recurring job (a job_runs row a second would drown the history): it
 * follows the spool continuously, in the replica that has it, under its own advisory lock.
 */
export { startWalShipper };

const lastReconcile = new WeakMap<ApplianceContext, number>();

async function policySchedule(ctx: ApplianceContext, what: "snapshot" | "drill"): Promise<string | null> {
  if (!ctx.config.backup.schedulerEnabled) return null;
  const policy = await inScope(ctx.db.app, { kind: "appliance" }, (t) => readPolicyRow(ctx, t));
  if (!policy.enabled) return null;
  return (what === "snapshot" ? policy.snapshot_schedule : policy.drill_schedule) || null;
}

function conflictAsSkip(err: unknown): undefined {
  if (err instanceof Conflict) return undefined;
  throw err;
}
