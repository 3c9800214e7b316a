import type { ApplianceContext } from "../context.js";
import { repeatInBackground } from "../repeat.js";
import { deactivateInactiveUsers } from "./users.js";

/**
 * The access capability's scheduled work on every replica: the inactivity job
 * (`deactivateInactiveUsers`), once shortly after start and then every
 * `access.inactivityCheckMinutes`. Two replicas running it at once do not deactivate anyone twice:
 * the job locks the rows it changes and skips those another run already deactivated.
 */
export function startAccessServices(ctx: ApplianceContext): { stop(): Promise<void> } {
  return repeatInBackground(
    {
      everyMs: ctx.config.access.inactivityCheckMinutes * 60_000,
      firstAfterMs: 1_000,
      onError: (err) => ctx.log.warn(`inactivity job failed; retried at the next interval: ${err.name}`),
    },
    async () => {
      const { deactivated } = await deactivateInactiveUsers(ctx);
      if (deactivated.length) ctx.log.info("deactivated inactive accounts", { accounts: deactivated.length });
    },
  );
}
