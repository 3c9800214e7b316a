import type { ApplianceContext } from "../context.js";
import type { Tx } from "../db/sql.js";

/**
 * Alerts of the job runner: `job.failed` (key: the job) while its last finished run failed,
 * `job.overdue` while it has not succeeded for jobs.overdueFactor periods. Ids and counts only.
 */
export async function jobFailed(ctx: ApplianceContext, _t: Tx, job: string, failure: { runId: string; error: string } | undefined): Promise<void> {
  if (failure) ctx.log.warn(`job ${job} failed (run ${failure.runId}); see GET /api/v1/jobs`, { job, runId: failure.runId });
}

export async function jobOverdue(ctx: ApplianceContext, _t: Tx, job: string, overdue: { sinceMs: number; periodMs: number } | undefined): Promise<void> {
  if (overdue) ctx.log.warn(`job ${job} is overdue: no success for ${Math.round(overdue.sinceMs / 1000)} s (period ${Math.round(overdue.periodMs / 1000)} s)`, { job });
}
