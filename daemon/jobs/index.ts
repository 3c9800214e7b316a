/**
 * The job runner's public interface (docs/jobs.md): every recurring job in the appliance is a
 * `JobSpec` handed to `startJobRunner`, which schedules it with node-cron on every replica and
 * lets exactly one replica run each fire (advisory lock + a job_runs row per slot).
 */
export { cronOf, everyCron, type JobCounts, type JobSchedule, type JobResult, type JobSpec, type RunHandle } from "./registry.js";
export { startJobRunner, claimAndRun, periodOf, REPLICA } from "./runner.js";
export { checkOverdueJobs, jobsWatchdog, registerJobMetrics } from "./service.js";
