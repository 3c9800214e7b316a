import { Gauge } from "prom-client";
import { recordEvent } from "../audit/append.js";
import { requireRecentMfa } from "../auth/index.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import type { Actor } from "../kernel/actor.js";
import { NotFound } from "../kernel/errors.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { jobOverdue } from "./alerts.js";
import { jobSpec, type JobSpec } from "./registry.js";
import { runJobNow } from "./runner.js";
import type { JobListRes, JobRunRes, JobRunsRes, JobRunStartedRes } from "./schema.js";

type RunRow = {
  id: string;
  job: string;
  trigger: JobRunRes["trigger"];
  slot: Date | null;
  started_at: Date;
  finished_at: Date | null;
  outcome: JobRunRes["outcome"];
  counts: Record<string, number>;
  error: string | null;
  replica: string;
  requested_by: string | null;
};

const RUN_COLUMNS = "id::text AS id, job, trigger, slot, started_at, finished_at, outcome, counts, error, replica, requested_by";

function runView(r: RunRow): JobRunRes {
  return {
    id: r.id,
    job: r.job,
    trigger: r.trigger,
    slot: r.slot?.toISOString() ?? null,
    startedAt: r.started_at.toISOString(),
    finishedAt: r.finished_at?.toISOString() ?? null,
    outcome: r.outcome,
    counts: r.counts,
    error: r.error,
    replica: r.replica,
    requestedBy: r.requested_by,
    durationSeconds: r.finished_at ? (r.finished_at.getTime() - r.started_at.getTime()) / 1000 : null,
  };
}

const appliance = { kind: "appliance" } as const;

/** Every job any replica scheduled, with its newest run and last success. */
export async function listJobs(ctx: ApplianceContext): Promise<JobListRes> {
  const rows = await inScope(ctx.db.app, appliance, (t) =>
    t.rows<{ job: string; schedule: string | null; destructive: boolean; summary: string; overdue_since: Date | null; last_success: Date | null; last: RunRow | null }>(
      `SELECT s.job, s.schedule, s.destructive, s.summary, s.overdue_since,
              (SELECT max(finished_at) FROM job_runs r WHERE r.job = s.job AND r.outcome = 'succeeded') AS last_success,
              (SELECT to_jsonb(x) FROM (SELECT ${RUN_COLUMNS} FROM job_runs r WHERE r.job = s.job ORDER BY id DESC LIMIT 1) x) AS last
         FROM job_schedules s ORDER BY s.job`,
    ),
  );
  return {
    jobs: rows.map((r) => ({
      name: r.job,
      summary: r.summary,
      schedule: r.schedule,
      destructive: r.destructive,
      lastSuccessAt: r.last_success?.toISOString() ?? null,
      lastRun: r.last ? runView(revive(r.last)) : null,
      overdueSince: r.overdue_since?.toISOString() ?? null,
      runnable: jobSpec(r.job) !== undefined,
    })),
  };
}

/** A run read back through to_jsonb has its times as strings. */
function revive(r: RunRow): RunRow {
  const d = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string));
  return { ...r, slot: d(r.slot), started_at: d(r.started_at)!, finished_at: d(r.finished_at) };
}

export async function listJobRuns(ctx: ApplianceContext, name: string, limit: number): Promise<JobRunsRes> {
  return inScope(ctx.db.app, appliance, async (t) => {
    const known = await t.one("SELECT 1 FROM job_schedules WHERE job = $1", [name]);
    if (!known && !jobSpec(name)) throw new NotFound(`no job named ${name}`);
    const rows = await t.rows<RunRow>(`SELECT ${RUN_COLUMNS} FROM job_runs WHERE job = $1 ORDER BY id DESC LIMIT $2`, [name, limit]);
    return { runs: rows.map(runView) };
  });
}

export async function readRun(ctx: ApplianceContext, runId: string): Promise<JobRunRes | undefined> {
  const [row] = await inScope(ctx.db.app, appliance, (t) => t.rows<RunRow>(`SELECT ${RUN_COLUMNS} FROM job_runs WHERE id = $1`, [runId]));
  return row ? runView(row) : undefined;
}

/**
 * "Run now" for a person: step-up MFA when the job destroys data, audited (`job.run`), then the
 * same claim as a schedule (409 while it runs anywhere). Answers once the run has its row.
 */
export async function startJobRun(ctx: ApplianceContext, actor: Actor, name: string, meta: RequestMeta): Promise<JobRunStartedRes & { done: Promise<void> }> {
  const spec = jobSpec(name);
  if (!spec) throw new NotFound(`no job named ${name}`);
  if (spec.destructive) requireRecentMfa(actor, ctx);
  const claimed = await runJobNow(ctx, spec, actor.userId);
  await inScope(ctx.db.app, appliance, (t) =>
    recordEvent(ctx, t, actor, { tenantId: null, action: "job.run", resourceType: "job", resourceId: name, outcome: "success", reason: `run ${claimed.runId}` }, meta),
  );
  const run = await readRun(ctx, claimed.runId);
  return { run: run!, done: claimed.done };
}

/**
 * The overdue check (jobs-watchdog): a scheduled job whose newest success (or, if none, the time
 * its schedule began) is older than jobs.overdueFactor periods is overdue; so is one whose last
 * run is `running` for that long. Also prunes history older than jobs.historyDays.
 */
export async function checkOverdueJobs(ctx: ApplianceContext): Promise<{ overdue: number; pruned: number }> {
  const now = ctx.clock.now();
  return inScope(ctx.db.app, appliance, async (t) => {
    const rows = await t.rows<{ job: string; period_ms: string; since: Date; overdue_since: Date | null; last_success: Date | null }>(
      `SELECT s.job, s.period_ms::text, s.since, s.overdue_since,
              (SELECT max(finished_at) FROM job_runs r WHERE r.job = s.job AND r.outcome = 'succeeded') AS last_success
         FROM job_schedules s WHERE s.schedule IS NOT NULL AND s.period_ms IS NOT NULL FOR UPDATE OF s`,
    );
    let overdue = 0;
    for (const r of rows) {
      const period = Number(r.period_ms);
      const reference = r.last_success && r.last_success > r.since ? r.last_success : r.since;
      const late = now.getTime() - reference.getTime() > ctx.config.jobs.overdueFactor * period;
      if (late) overdue++;
      await setOverdue(ctx, t, r.job, late ? (r.overdue_since ?? now) : null, late ? { sinceMs: now.getTime() - reference.getTime(), periodMs: period } : undefined);
    }
    const pruned = await t.exec("DELETE FROM job_runs WHERE outcome <> 'running' AND finished_at < $1", [new Date(now.getTime() - ctx.config.jobs.historyDays * 86_400_000)]);
    return { overdue, pruned };
  });
}

async function setOverdue(ctx: ApplianceContext, t: Tx, job: string, since: Date | null, overdue: { sinceMs: number; periodMs: number } | undefined) {
  await t.exec("UPDATE job_schedules SET overdue_since = $2 WHERE job = $1", [job, since]);
  await jobOverdue(ctx, t, job, overdue);
}

/** The runner's own job: overdue detection and history pruning. */
export const jobsWatchdog: JobSpec = {
  name: "jobs-watchdog",
  summary: "Finds jobs that have not succeeded for jobs.overdueFactor periods (alert) and prunes old run history",
  schedule: (ctx) => ctx.config.jobs.schedules.jobsWatchdog || "30 * * * * *",
  async run(ctx) {
    return { counts: await checkOverdueJobs(ctx) };
  },
};

const registered = new WeakSet<object>();

/** Per job, read from job_runs at scrape time so every replica reports the same. */
export function registerJobMetrics(ctx: ApplianceContext): void {
  if (registered.has(ctx.metrics)) return;
  registered.add(ctx.metrics);
  let inFlight: Promise<Map<string, { success: number; duration: number; failed: number; overdue: number }> | undefined> | undefined;
  const state = () => (inFlight ??= read().finally(() => (inFlight = undefined)));
  const read = async () => {
    try {
      const rows = await inScope(ctx.db.app, appliance, (t) =>
        t.rows<{ job: string; success: Date | null; duration: number | null; failed: boolean | null; overdue: boolean }>(
          `SELECT s.job, s.overdue_since IS NOT NULL AS overdue,
                  ok.finished_at AS success, extract(epoch FROM ok.finished_at - ok.started_at)::float8 AS duration,
                  (SELECT outcome = 'failed' FROM job_runs r WHERE r.job = s.job AND r.outcome IN ('succeeded', 'failed') ORDER BY id DESC LIMIT 1) AS failed
             FROM job_schedules s
             LEFT JOIN LATERAL (SELECT started_at, finished_at FROM job_runs r WHERE r.job = s.job AND r.outcome = 'succeeded' ORDER BY finished_at DESC LIMIT 1) ok ON true`,
        ),
      );
      return new Map(
        rows.map((r) => [r.job, { success: r.success ? r.success.getTime() / 1000 : 0, duration: r.duration ?? 0, failed: r.failed ? 1 : 0, overdue: r.overdue ? 1 : 0 }]),
      );
    } catch {
      return undefined;
    }
  };
  const gauge = (name: string, help: string, pick: (v: { success: number; duration: number; failed: number; overdue: number }) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ["job"],
      registers: [ctx.metrics],
      async collect() {
        const st = await state();
        if (!st) return;
        this.reset();
        for (const [job, v] of st) this.set({ job }, pick(v));
      },
    });
  gauge("wardkeep_job_last_success_timestamp_seconds", "Per job: when its newest successful run finished (0: never)", (v) => v.success);
  gauge("wardkeep_job_last_success_duration_seconds", "Per job: how long its newest successful run took", (v) => v.duration);
  gauge("wardkeep_job_last_run_failed", "Per job: 1 when its newest finished run failed, 0 when it succeeded", (v) => v.failed);
  gauge("wardkeep_job_overdue", "Per job: 1 while it has not succeeded for jobs.overdueFactor periods of its schedule", (v) => v.overdue);
}
