import { z } from "zod";

/** Settings of the backup capability (`backup:` in config/default.yaml). Schedules, targets and retention are set in the admin API. */
export const backupSchema = z
  .object({
    schedulerEnabled: z
      .boolean()
      .default(true)
      .describe("Run scheduled snapshots, drills and the freshness watchdog in this replica; a PostgreSQL advisory lock makes one replica run each job."),
    compressionLevel: z
      .number()
      .int()
      .min(0)
      .max(9)
      .default(1)
      .describe("gzip level for snapshot objects; 0 stores them uncompressed. Field-encrypted data barely compresses, so 1 (fastest) is the default."),
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
