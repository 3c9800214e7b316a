import os from "node:os";
import cron, { type ScheduledTask } from "node-cron";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict } from "../kernel/errors.js";
import { maintenanceOf } from "../kernel/maintenance.js";
import { jobFailed } from "./alerts.js";
import { cronOf, registerJobs, type JobCounts, type JobSpec, type JobTrigger } from "./registry.js";

/** First key of the two-key advisory lock every job takes (the second is hashtext(job name)). */
const JOB_LOCK_CLASS = 7_305_050;

/** Which process ran a job: the host name and process id, shown in job_runs and the Jobs page. */
export const REPLICA = `${os.hostname()}:${process.pid}`;

export type ClaimedRun = { runId: string; done: Promise<void> };

type Claim = { trigger: JobTrigger; slot?: Date; requestedBy?: string | null };

/**
 * Runs one job if this replica may: takes the job's advisory lock (a session lock on a
 * connection of its own, so PostgreSQL drops it if the process dies), marks runs a dead replica
 * left `running` as interrupted, then inserts the run's row. A scheduled run's row is keyed by
 * its slot, so when every replica fires at the same cron time exactly one inserts it and runs.
 * Resolves once the run is claimed (undefined: another replica has it); `done` settles when the
 * run has finished and its row says how.
 */
export async function claimAndRun(ctx: ApplianceContext, spec: JobSpec, claim: Claim): Promise<ClaimedRun | undefined> {
  // While an in-place restore replaces the database (kernel/maintenance.ts), nothing starts here: what it wrote would be lost.
  if (maintenanceOf(ctx)) return undefined;
  const client = await ctx.db.owner.dedicatedClient(`wardkeep-job-${spec.name}`);
  client.on("error", () => {});
  const release = async () => {
    await client.query("SELECT pg_advisory_unlock($1, hashtext($2))", [JOB_LOCK_CLASS, spec.name]).catch(() => {});
    await client.end().catch(() => {});
  };
  let runId: string | undefined;
  try {
    const lock = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok", [JOB_LOCK_CLASS, spec.name]);
    if (!lock.rows[0]!.ok) {
      await client.end().catch(() => {});
      return undefined;
    }
    runId = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      const now = ctx.clock.now();
      await t.exec(
        "UPDATE job_runs SET outcome = 'interrupted', finished_at = $2, error = 'the replica running it stopped before it finished' WHERE job = $1 AND outcome = 'running'",
        [spec.name, now],
      );
      const [row] = await t.rows<{ id: string }>(
        `INSERT INTO job_runs (job, trigger, slot, started_at, replica, requested_by) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (job, slot) WHERE slot IS NOT NULL DO NOTHING RETURNING id::text`,
        [spec.name, claim.trigger, claim.slot ?? null, now, REPLICA, claim.requestedBy ?? null],
      );
      return row?.id;
    });
  } catch (err) {
    await release();
    throw err;
  }
  if (!runId) {
    await release();
    return undefined;
  }
  const id = runId;
  const done = perform(ctx, spec, { runId: id, trigger: claim.trigger, requestedBy: claim.requestedBy ?? null }).finally(release);
  return { runId: id, done };
}

async function perform(ctx: ApplianceContext, spec: JobSpec, handle: { runId: string; trigger: JobTrigger; requestedBy: string | null }): Promise<void> {
  let outcome: "succeeded" | "failed" | "skipped" = "succeeded";
  let counts: JobCounts = {};
  let error: string | null = null;
  try {
    if (spec.needsUnsealed && ctx.rootKey.isSealed) {
      outcome = "skipped";
      error = "the appliance is sealed";
    } else {
      const result = await spec.run(ctx, handle);
      counts = result?.counts ?? {};
      if (result?.skipped) {
        outcome = "skipped";
        error = result.skipped;
      }
    }
  } catch (err) {
    outcome = "failed";
    // Our errors carry ids and counts, never PHI (docs/jobs.md); capped to the column's size.
    error = `${(err as Error).name}: ${(err as Error).message}`.slice(0, 500);
    ctx.log.warn(`job ${spec.name} failed`, { job: spec.name, runId: handle.runId, error: (err as Error).name });
  }
  ctx.log.debug(`job ${spec.name} ${outcome}`, { job: spec.name, runId: handle.runId, outcome, replica: REPLICA });
  await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    await t.exec("UPDATE job_runs SET outcome = $2, finished_at = $3, counts = $4, error = $5 WHERE id = $1", [
      handle.runId,
      outcome,
      ctx.clock.now(),
      JSON.stringify(counts),
      error,
    ]);
    await jobFailed(ctx, t, spec.name, outcome, handle.runId);
  });
}

/** "Run now": the same claim as a schedule, or 409 while the job runs (on any replica). */
export async function runJobNow(ctx: ApplianceContext, spec: JobSpec, requestedBy: string | null): Promise<ClaimedRun> {
  const claimed = await claimAndRun(ctx, spec, { trigger: "manual", requestedBy });
  if (!claimed) throw new Conflict(`job ${spec.name} is running now; wait for it to finish`);
  return claimed;
}

/** The shortest gap between the next few fire times of a cron expression. */
export function periodOf(expression: string): number | null {
  const task = cron.createTask(expression, () => undefined);
  try {
    const next = task.getNextRuns(4).map((d) => d.getTime());
    const gaps = next.slice(1).map((t, i) => t - next[i]!);
    return gaps.length ? Math.min(...gaps) : null;
  } finally {
    void task.destroy();
  }
}

/**
 * The one scheduler: every replica schedules every job with node-cron, and `claimAndRun` lets
 * one of them run each fire. Schedules are re-read every jobs.rescheduleSeconds (the backup
 * policy's live in the database and change at run time) and published in job_schedules.
 */
export function startJobRunner(ctx: ApplianceContext, specs: JobSpec[]): { stop(): Promise<void> } {
  registerJobs(specs);
  if (!ctx.config.jobs.enabled) return { stop: async () => {} };
  const tasks = new Map<string, { expression: string; task: ScheduledTask }>();
  const inFlight = new Set<Promise<unknown>>();
  const timers: NodeJS.Timeout[] = [];
  let stopped = false;

  const fire = (spec: JobSpec, claim: Claim) => {
    if (stopped) return;
    const work = claimAndRun(ctx, spec, claim)
      .then((claimed) => claimed?.done)
      .catch((err: unknown) => ctx.log.warn(`job ${spec.name} could not start: ${(err as Error).message}`, { job: spec.name }));
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  };

  const reschedule = async () => {
    for (const spec of specs) {
      if (stopped) return;
      let expression: string | null;
      try {
        expression = cronOf(await spec.schedule(ctx));
      } catch (err) {
        ctx.log.warn(`job ${spec.name}: schedule not readable: ${(err as Error).message}`, { job: spec.name });
        continue;
      }
      const current = tasks.get(spec.name);
      if (current?.expression === (expression ?? "")) continue;
      await current?.task.destroy();
      tasks.delete(spec.name);
      if (expression) {
        // context.date is the fire time, the same on every replica whose clock is in step: the slot.
        const task = cron.schedule(expression, (c) => fire(spec, { trigger: "schedule", slot: truncateToSecond(c.date) }), { name: `wardkeep-${spec.name}`, unref: true });
        tasks.set(spec.name, { expression, task });
      } else tasks.set(spec.name, { expression: "", task: cron.createTask("0 0 1 1 *", () => undefined) });
      await publishSchedule(ctx, spec, expression);
    }
  };

  const rescheduling = () => void reschedule().catch((err: unknown) => ctx.log.warn(`job scheduler: ${(err as Error).message}`));
  rescheduling();
  const every = setInterval(rescheduling, ctx.config.jobs.rescheduleSeconds * 1000);
  every.unref();
  timers.push(every);
  for (const spec of specs) {
    if (spec.runAtStartAfterMs === undefined) continue;
    // Only when the job is switched on here (e.g. not with backup.schedulerEnabled false).
    const first = setTimeout(() => {
      void Promise.resolve(spec.schedule(ctx)).then(
        (schedule) => cronOf(schedule) && fire(spec, { trigger: "start" }),
        () => undefined,
      );
    }, spec.runAtStartAfterMs);
    first.unref();
    timers.push(first);
  }
  return {
    async stop() {
      stopped = true;
      for (const t of timers) clearInterval(t);
      for (const { task } of tasks.values()) await task.destroy();
      await Promise.allSettled([...inFlight]);
    },
  };
}

function truncateToSecond(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}

async function publishSchedule(ctx: ApplianceContext, spec: JobSpec, expression: string | null): Promise<void> {
  const now = ctx.clock.now();
  await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.exec(
      `INSERT INTO job_schedules (job, schedule, period_ms, destructive, summary, since, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (job) DO UPDATE SET
           since = CASE WHEN job_schedules.schedule IS NOT DISTINCT FROM EXCLUDED.schedule THEN job_schedules.since ELSE EXCLUDED.since END,
           schedule = EXCLUDED.schedule, period_ms = EXCLUDED.period_ms, destructive = EXCLUDED.destructive, summary = EXCLUDED.summary, updated_at = EXCLUDED.updated_at`,
      [spec.name, expression, expression ? periodOf(expression) : null, spec.destructive === true, spec.summary, now],
    ),
  );
}
