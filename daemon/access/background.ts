import type { JobSpec } from "../jobs/index.js";
import { deactivateInactiveUsers } from "./users.js";
import { expirePrivilegedAccess } from "./privileged-access.js";

/**
 * The access capability's recurring job: the inactivity job (`deactivateInactiveUsers`), once
 * shortly after a replica starts and then every `access.inactivityCheckMinutes`. Two runs at once
 * do not deactivate anyone twice: the job locks the rows it changes and skips those another run
 * already deactivated.
 */
export const accessJobs: JobSpec[] = [
  {
    name: "inactive-users",
    summary: "Deactivates accounts unused for longer than their tenant's inactivity limit",
    schedule: (ctx) => ctx.config.jobs.schedules.inactiveUsers || { everyMs: ctx.config.access.inactivityCheckMinutes * 60_000 },
    runAtStartAfterMs: 1_000,
    async run(ctx) {
      const { deactivated } = await deactivateInactiveUsers(ctx);
      if (deactivated.length) ctx.log.info("deactivated inactive accounts", { accounts: deactivated.length });
      return { counts: { deactivated: deactivated.length } };
    },
  },
  {
    name: "privileged-access-expiry",
    summary: "Marks just-in-time privileged grants past their time as ended and audits each expiry (access already ended at expiry)",
    schedule: () => ({ everyMs: 60_000 }),
    runAtStartAfterMs: 2_000,
    async run(ctx) {
      const { expired } = await expirePrivilegedAccess(ctx);
      return { counts: { expired } };
    },
  },
];
