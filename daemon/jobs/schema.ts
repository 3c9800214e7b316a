import { z } from "zod";

/** A job's name in a path: lower-case words joined by hyphens. */
export const jobParams = z.object({ name: z.string().regex(/^[a-z][a-z0-9-]{1,62}$/, "a job name such as audit-checkpoint") });

/** One run of a job, as job_runs keeps it. */
export const jobRunView = z.object({
  /** Run id (increasing). */
  id: z.string(),
  job: z.string(),
  /** schedule (a cron fire), start (once after a replica started) or manual ("run now"). */
  trigger: z.enum(["schedule", "start", "manual"]),
  /** The cron fire time of a scheduled run; null for the others. */
  slot: z.string().nullable(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  /** running, succeeded, failed, skipped (nothing to do, or sealed) or interrupted (its replica stopped). */
  outcome: z.enum(["running", "succeeded", "failed", "skipped", "interrupted"]),
  /** What the run did, as counts (rows purged, keys destroyed…). */
  counts: z.record(z.string(), z.number()),
  /** Why it failed or was skipped; ids and counts only. */
  error: z.string().nullable(),
  /** host:pid of the replica that ran it. */
  replica: z.string(),
  /** Who pressed "run now"; null for scheduled runs. */
  requestedBy: z.string().nullable(),
  /** Seconds from start to finish; null while running. */
  durationSeconds: z.number().nullable(),
});
export type JobRunRes = z.infer<typeof jobRunView>;

/** A job with its schedule and its latest runs. */
export const jobView = z.object({
  name: z.string(),
  summary: z.string(),
  /** Cron expression; null when switched off (e.g. backups without a policy). */
  schedule: z.string().nullable(),
  /** Destroys data: "run now" needs step-up MFA. */
  destructive: z.boolean(),
  /** When the newest run finished with success; null if never. */
  lastSuccessAt: z.string().nullable(),
  /** The newest run, whatever its outcome. */
  lastRun: jobRunView.nullable(),
  /** Set while no success came for jobs.overdueFactor periods (an alert is open). */
  overdueSince: z.string().nullable(),
  /** Whether this replica can start it now ("run now"). */
  runnable: z.boolean(),
});
export type JobRes = z.infer<typeof jobView>;

export const jobListResponse = z.object({ jobs: z.array(jobView) });
export type JobListRes = z.infer<typeof jobListResponse>;

export const jobRunsQuery = z.object({ limit: z.coerce.number().int().min(1).max(500).default(50) });
export const jobRunsResponse = z.object({ runs: z.array(jobRunView) });
export type JobRunsRes = z.infer<typeof jobRunsResponse>;

export const jobRunStarted = z.object({ run: jobRunView });
export type JobRunStartedRes = z.infer<typeof jobRunStarted>;
