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
    walArchiving: z
      .boolean()
      .default(true)
      .describe(
        "Continuous WAL archiving for point-in-time recovery (embedded PostgreSQL; the compose file sets its PostgreSQL up the same way): each completed segment goes into walSpoolDir, is encrypted and shipped to every target, then removed (docs/backups.md).",
      ),
    archiveTimeoutSeconds: z
      .number()
      .int()
      .min(1)
      .max(3600)
      .default(60)
      .describe(
        "PostgreSQL archive_timeout, the server's own backstop: a segment with any write in it is closed after at most this long even when the daemon does not close it (rpoObjectiveSeconds does that first).",
      ),
    rpoObjectiveSeconds: z
      .number()
      .int()
      .min(5)
      .max(3600)
      .default(60)
      .describe(
        "Recovery point objective: the WAL shipper closes the segment holding the oldest write not yet on every target (pg_switch_wal) early enough for it to be there within this many seconds, counting its measured shipping time; no switch when nothing was written (docs/backups.md).",
      ),
    walSpoolDir: z
      .string()
      .min(1)
      .default("wal-spool")
      .describe("Where archive_command puts completed WAL segments until the daemon has shipped them (relative paths are under dataDir)."),
    walSpoolLimitMiB: z
      .number()
      .int()
      .min(64)
      .default(4096)
      .describe(
        "Largest size of the spool: past it archive_command fails, PostgreSQL keeps the segments in pg_wal instead and retries (nothing is dropped), and the wal_spool_full alert fires. Budget this much disk (plus pg_wal) for a target outage.",
      ),
    walShipIntervalMs: z.number().int().min(100).max(60_000).default(1000).describe("How often the daemon looks for new segments in the spool."),
    baseBackupCron: z
      .string()
      .default("30 1 * * *")
      .describe("node-cron schedule of physical base backups (point-in-time recovery replays WAL from the newest one before the chosen time)."),
    baseBackupsKept: z
      .number()
      .int()
      .min(1)
      .max(100)
      .default(2)
      .describe("Base backups kept on each target; WAL older than the oldest kept one's start is deleted (restores reach back to that base backup's end)."),
    pitrDrillCron: z
      .string()
      .default("0 3 * * 0")
      .describe(
        "node-cron schedule of point-in-time recovery drills (Sundays 03:00 by default; empty turns them off): restore to a random time in one target's retained window into a scratch cluster and check the audit chain, the signed checkpoint before that time and decryption (docs/backups.md).",
      ),
    replayBinDir: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Directory of PostgreSQL 18 server binaries (postgres) that PITR drills replay with, instead of the embedded package's; the daemon image sets /opt/wardkeep/postgresql/bin, where it keeps them (docs/backups.md).",
      ),
    rpoAlertSeconds: z.number().int().min(10).default(300).describe("Alert (rpo_exceeded) when the newest WAL on a target is older than this while there is unshipped WAL."),
  })
  .strict();

export type BackupConfig = z.infer<typeof backupSchema>;
