import type { JobSpec } from "../jobs/index.js";
import { deactivateInactiveUsers } from "./users.js";
import { expirePrivilegedAccess } from "./privileged-access.js";
import { closeCampaignsPastDeadline, remindReviewers, startScheduledCampaigns } from "./reviews.js";

/** Quarterly: 06:00 on the first day of January, April, July and October (docs/access-reviews.md). */
export const QUARTERLY_REVIEWS = "0 6 1 1,4,7,10 *";

/**
 * The access capability's recurring jobs. `inactive-users` is the one job that ends access
 * automatically: access review campaigns past their deadline (accounts nobody reviewed) and
 * accounts unused past their tenant's limit, both through `deprovisionAccount`, once shortly
 * after a replica starts and then every `access.inactivityCheckMinutes`. Two runs at once do not
 * deactivate anyone twice: rows are locked and what is deactivated no longer matches.
 */
export const accessJobs: JobSpec[] = [
  {
    name: "inactive-users",
    summary: "Deactivates accounts not reviewed by an access review's deadline and accounts unused past their tenant's limit",
    schedule: (ctx) => ctx.config.jobs.schedules.inactiveUsers || { everyMs: ctx.config.access.inactivityCheckMinutes * 60_000 },
    runAtStartAfterMs: 1_000,
    async run(ctx) {
      const reviews = await closeCampaignsPastDeadline(ctx);
      const { deactivated } = await deactivateInactiveUsers(ctx);
      if (deactivated.length || reviews.deactivated)
        ctx.log.info("deactivated accounts", { unused: deactivated.length, unreviewed: reviews.deactivated, campaignsClosed: reviews.closed });
      return { counts: { deactivated: deactivated.length, campaignsClosed: reviews.closed, unreviewedDeactivated: reviews.deactivated } };
    },
  },
  {
    name: "access-review-campaigns",
    summary: "Starts an access review campaign in every active tenant that has none open",
    schedule: (ctx) => ctx.config.jobs.schedules.accessReviewCampaigns || QUARTERLY_REVIEWS,
    async run(ctx) {
      const { started, alreadyOpen } = await startScheduledCampaigns(ctx);
      return { counts: { started, alreadyOpen } };
    },
  },
  {
    name: "access-review-reminders",
    summary: "Reminds a tenant's reviewers, through its alert channels, of an access review campaign's deadline while accounts are still to be decided",
    schedule: (ctx) => ctx.config.jobs.schedules.accessReviewReminders || { everyMs: 3_600_000 },
    async run(ctx) {
      const { reminded } = await remindReviewers(ctx);
      return { counts: { reminded } };
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
