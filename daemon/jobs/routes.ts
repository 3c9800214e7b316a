import { defineRoute } from "../kernel/define-route.js";
import { jobListResponse, jobParams, jobRunStarted, jobRunsQuery, jobRunsResponse } from "./schema.js";
import { listJobRuns, listJobs, startJobRun } from "./service.js";

const tag = "jobs";

/** The job runner's history and "run now" (appliance operators). */
export const jobsRoutes = [
  defineRoute(
    { method: "get", path: "/jobs", action: "job:read", tag, summary: "Every recurring job: schedule, newest run, last success, overdue", response: jobListResponse },
    async ({ ctx }) => listJobs(ctx),
  ),
  defineRoute(
    { method: "get", path: "/jobs/:name/runs", action: "job:read", tag, summary: "A job's runs, newest first", params: jobParams, query: jobRunsQuery, response: jobRunsResponse },
    async ({ ctx, params, query }) => listJobRuns(ctx, params.name, query.limit),
  ),
  defineRoute(
    {
      method: "post",
      path: "/jobs/:name/run",
      action: "job:run",
      tag,
      summary: "Run a job now (step-up MFA when it destroys data); answers at once with the run (poll GET /jobs/{name}/runs)",
      params: jobParams,
      response: jobRunStarted,
      status: 202,
      problems: { 409: "The job is running now (on this or another replica)" },
    },
    async ({ ctx, actor, params, meta }) => {
      const { run, done } = await startJobRun(ctx, actor, params.name, meta);
      // The run's row records its outcome; the log says it failed without detail.
      done.catch(() => undefined);
      return { run };
    },
  ),
];
