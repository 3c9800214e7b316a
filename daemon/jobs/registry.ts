import type { ApplianceContext } from "../context.js";

/** Counts a run reports (rows purged, keys destroyed…): numbers only, never PHI. */
export type JobCounts = Record<string, number>;

export type JobSchedule = string | { everyMs: number } | null;

/** The cron expression of a schedule. */
export function cronOf(schedule: JobSchedule): string | null {
  return schedule === null ? null : typeof schedule === "string" ? schedule : everyCron(schedule.everyMs);
}

export type JobTrigger = "schedule" | "start" | "manual";

/** What a run sees of itself: its row id and who asked for it. */
export type RunHandle = { runId: string; trigger: JobTrigger; requestedBy: string | null };

/** What a run reports: counts, or that it had nothing to do for a stated reason (`skipped`). */
export type JobResult = { counts?: JobCounts; skipped?: string } | void;

/**
 * One recurring job. `run` takes the context, not a closure over it, so the same definitions
 * serve every appliance in a process (tests run replicas side by side).
 */
export type JobSpec = {
  /** Stable name (`audit-checkpoint`): the API path, metrics label and job_runs key. */
  name: string;
  /** One line for the Jobs page. */
  summary: string;
  /** Destroys data (purges, shredding): "run now" needs step-up MFA. */
  destructive?: boolean;
  /** Skipped (recorded as `skipped`) while the root key is sealed. */
  needsUnsealed?: boolean;
  /**
   * A cron expression, an interval (`{ everyMs }`, turned into cron by `everyCron`), or null when
   * the job is switched off; re-read every jobs.rescheduleSeconds.
   */
  schedule(ctx: ApplianceContext): JobSchedule | Promise<JobSchedule>;
  /** Also run once this long after the replica starts (not deduplicated across replicas: the job must be idempotent). */
  runAtStartAfterMs?: number;
  run(ctx: ApplianceContext, run: RunHandle): Promise<JobResult>;
};

const known = new Map<string, JobSpec>();

/** Makes the jobs known to this process (routes and "run now" look them up by name). */
export function registerJobs(specs: JobSpec[]): void {
  for (const spec of specs) known.set(spec.name, spec);
}

/** Forgets jobs a test registered, so other test files sharing the process never list them. */
export function unregisterJobs(names: string[]): void {
  for (const name of names) known.delete(name);
}

export function jobSpec(name: string): JobSpec | undefined {
  return known.get(name);
}

export function registeredJobs(): JobSpec[] {
  return [...known.values()];
}

/**
 * A cron expression firing every `ms`: seconds, minutes or hours that divide their unit evenly
 * fire on the same wall-clock boundaries on every replica; other values round to the nearest unit
 * step that cron can express (e.g. 7 minutes fires at :00, :07 … :56 then :00 again).
 */
export function everyCron(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  if (s < 60) return s === 1 ? "* * * * * *" : `*/${s} * * * * *`;
  const m = Math.round(s / 60);
  if (m < 60) return m === 1 ? "0 * * * * *" : `0 */${m} * * * *`;
  const h = Math.round(m / 60);
  if (h < 24) return h === 1 ? "0 0 * * * *" : `0 0 */${h} * * *`;
  const d = Math.min(28, Math.round(h / 24));
  return d === 1 ? "0 0 0 * * *" : `0 0 0 */${d} * *`;
}
