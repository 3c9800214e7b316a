import type { ApplianceContext } from "../context.js";
import { deactivateInactiveUsers } from "./users.js";

/**
 * The access capability's scheduled work on every replica: the inactivity job
 * (`deactivateInactiveUsers`), once shortly after start and then every
 * `access.inactivityCheckMinutes`. Two replicas running it at once do not deactivate anyone twice:
 * the job locks the rows it changes and skips those another run already deactivated.
 */
export function startAccessServices(ctx: ApplianceContext): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  let stopped = false;
  const run = () => {
    if (stopped) return;
    running = running
      .then(async () => {
        if (stopped) return;
        const { deactivated } = await deactivateInactiveUsers(ctx);
        if (deactivated.length) ctx.log.info("deactivated inactive accounts", { accounts: deactivated.length });
      })
      .catch((err: unknown) => ctx.log.warn(`inactivity job failed; retried at the next interval: ${(err as Error).name}`));
  };
  const first = setTimeout(run, 1_000);
  first.unref();
  const timer = setInterval(run, ctx.config.access.inactivityCheckMinutes * 60_000);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearTimeout(first);
      clearInterval(timer);
      await running;
    },
  };
}
