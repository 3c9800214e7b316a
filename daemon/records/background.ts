import type { ApplianceContext } from "../context.js";
import { repeatInBackground } from "../repeat.js";
import { sweepStaleUploads } from "./attachments/store.js";
import { purgeDueDeletions } from "./data-rights/deletion.js";

/**
 * The records capability's scheduled work on every replica: purge deletion requests whose grace
 * period has ended (row locks with SKIP LOCKED keep two replicas off the same request), and sweep
 * attachment uploads a crash left unfinished. Purging needs no key (it deletes rows and schedules
 * key destruction), so it also runs while sealed.
 */
export function startRecordsServices(ctx: ApplianceContext): { stop(): Promise<void> } {
  return repeatInBackground(
    {
      everyMs: ctx.config.records.purgeIntervalMinutes * 60_000,
      onError: (err) => ctx.log.warn(`records purge run failed; retried at the next interval: ${err.name}`),
    },
    async () => {
      await purgeDueDeletions(ctx);
      const swept = await sweepStaleUploads(ctx);
      if (swept) ctx.log.info("removed unfinished attachment uploads", { files: swept });
    },
  );
}
