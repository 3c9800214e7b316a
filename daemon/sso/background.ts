import type { JobSpec } from "../jobs/index.js";
import { reconcileLdapProviders } from "./ldap/reconcile.js";

/**
 * The sso capability's recurring jobs. `ldap-reconcile` deactivates accounts whose directory entry
 * is gone or disabled (./ldap/reconcile.ts), every 5 minutes unless `jobs.schedules.ldapReconcile`
 * says otherwise; it is idempotent (an account already deactivated is skipped).
 */
export const ssoJobs: JobSpec[] = [
  {
    name: "ldap-reconcile",
    summary: "Deactivates accounts gone from or disabled in their LDAP / Active Directory directory",
    schedule: (ctx) => ctx.config.jobs.schedules.ldapReconcile || { everyMs: 5 * 60_000 },
    async run(ctx) {
      const counts = await reconcileLdapProviders(ctx);
      if (counts.failedProviders > 0)
        throw new Error(`${counts.failedProviders} of ${counts.providers} LDAP directories could not be asked; their accounts were left as they were`);
      return { counts };
    },
  },
];
