import type { JobSpec } from "../jobs/index.js";
import { sweepStaleUploads } from "./attachments/store.js";
import { purgeDueDeletions } from "./data-rights/deletion.js";

/**
 * The records capability's recurring job: purge deletion requests whose grace period has ended
 * (row locks with SKIP LOCKED also keep two runs off the same request), and sweep attachment
 * uploads a crash left unfinished. Purging needs no key (it deletes rows and schedules key
 * destruction), so it also runs while sealed.
 */
export const recordsJobs: JobSpec[] = [
  {
    name: "erasure-purge",
    summary: "Purges patients and tenants whose deletion grace period has ended (unless a legal hold stands) and sweeps unfinished uploads",
    destructive: true,
    schedule: (ctx) => ctx.config.jobs.schedules.erasurePurge || { everyMs: ctx.config.records.purgeIntervalMinutes * 60_000 },
    async run(ctx) {
      const purged = await purgeDueDeletions(ctx);
      const swept = await sweepStaleUploads(ctx);
      const count = (result: string) => purged.filter((p) => p.result === result).length;
      return { counts: { purged: count("purged"), blocked: count("blocked"), uploadsSwept: swept } };
    },
  },
];
