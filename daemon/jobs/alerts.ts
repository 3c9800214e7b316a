import { raiseAlert, resolveAlert } from "../alerts/index.js";
import type { ApplianceContext } from "../context.js";
import type { Tx } from "../db/sql.js";

/**
 * Alerts of the job runner (docs/alerts.md): `jobs.run_failed` (key: the job) while its newest
 * finished run failed, resolved by its next success; `jobs.overdue` while it has not succeeded for
 * jobs.overdueFactor periods. Ids, counts and the job's name only.
 */
export async function jobFailed(ctx: ApplianceContext, t: Tx, job: string, outcome: "succeeded" | "failed" | "skipped", runId: string): Promise<void> {
  if (outcome === "failed") {
    ctx.log.warn(`job ${job} failed (run ${runId}); see GET /api/v1/jobs`, { job, runId });
    await raiseAlert(ctx, { kind: "jobs.run_failed", severity: "warning", key: job, summary: `job ${job} failed (run ${runId})`, details: { job, runId } }, t);
  } else if (outcome === "succeeded") await resolveAlert(ctx, "jobs.run_failed", job, { tx: t });
}

export async function jobOverdue(ctx: ApplianceContext, t: Tx, job: string, overdue: { sinceMs: number; periodMs: number } | undefined): Promise<void> {
  if (!overdue) {
    await resolveAlert(ctx, "jobs.overdue", job, { tx: t });
    return;
  }
  const hours = Math.round(overdue.sinceMs / 360_000) / 10;
  await raiseAlert(
    ctx,
    {
      kind: "jobs.overdue",
      severity: "warning",
      key: job,
      summary: `job ${job} has not succeeded for ${hours} h (it is scheduled every ${Math.round(overdue.periodMs / 1000)} s)`,
      details: { job, sinceSeconds: Math.round(overdue.sinceMs / 1000), periodSeconds: Math.round(overdue.periodMs / 1000) },
    },
    t,
  );
}
