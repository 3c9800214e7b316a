import { z } from "zod";

/** Settings of the backup capability (`backup:` in config/default.yaml). Schedules, targets and retention are set in the admin API. */
export const backupSchema = z
  .object({
    schedulerEnabled: z
      .boolean()
      .default(true)
      .describe("Run scheduled snapshots, drills and the freshness watchdog in this replica; a PostgreSQL advisory lock makes one replica run each job."),
    compression: z
      .enum(["brotli", "gzip", "none"])
      .default("brotli")
      .describe(
        "Compression of snapshot objects. Field-encrypted data barely compresses; brotli at quality 1 matched gzip's size at about 4x its speed (bench/backup.ts, backup/FORMAT.md).",
      ),
    compressionLevel: z.number().int().min(1).max(9).default(1).describe("brotli quality or gzip level; 1 is the fastest."),
    segmentKib: z.number().int().min(64).max(16384).default(1024).describe("Plaintext bytes per authenticated segment of a snapshot object."),
    watchdogIntervalSeconds: z
      .number()
      .int()
      .min(5)
      .max(3600)
      .default(60)
      .describe("How often the watchdog checks that a snapshot and a drill succeeded recently enough (alerts also fire when a run never started)."),
    drillAdminUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//, "a postgres:// URL")
      .optional()
      .describe("A role that may CREATE DATABASE, used to make and drop the drill's scratch database; unset with the embedded PostgreSQL uses its superuser."),
    drillAdminPasswordFile: z.string().optional().describe("File holding the password for drillAdminUrl's user."),
  })
  .strict();

export type BackupConfig = z.infer<typeof backupSchema>;
