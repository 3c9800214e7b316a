import type { JobSpec } from "../jobs/index.js";
import { purgeAllTenants } from "./service.js";

/** The retention register's job: every tenant's purge, with a signed certificate per tenant and run. */
export const retentionPurgeJob: JobSpec = {
  name: "retention-purge",
  summary: "Destroys records past their tenant's retention rule (never under a hold), in batches, and signs a disposition certificate per tenant",
  destructive: true,
  needsUnsealed: true,
  schedule: (ctx) => ctx.config.jobs.schedules.retentionPurge || "0 30 2 * * *",
  async run(ctx, run) {
    return { counts: await purgeAllTenants(ctx, run.runId) };
  },
};

export const retentionJobs: JobSpec[] = [retentionPurgeJob];
