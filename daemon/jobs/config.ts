import cron from "node-cron";
import { z } from "zod";

/** "" keeps the job's default schedule. */
const cronExpression = z
  .string()
  .refine((s) => s === "" || cron.validate(s), "a cron expression (five fields, or six with seconds first), or empty for the default")
  .default("");

/** Settings of the job runner (`jobs:` in config/default.yaml); docs/jobs.md explains them. */
export const jobsSchema = z
  .object({
    enabled: z
      .boolean()
      .default(true)
      .describe("Take part in running scheduled jobs on this replica; a PostgreSQL advisory lock and a per-slot row make one replica run each schedule."),
    overdueFactor: z.number().min(1.5).max(100).default(3).describe("A job is overdue (and alerted) when its last success is older than this many periods of its schedule."),
    historyDays: z.number().int().min(1).max(3650).default(90).describe("Days of job_runs history kept; older finished runs are deleted by the jobs-watchdog job."),
    rescheduleSeconds: z
      .number()
      .int()
      .min(1)
      .max(3600)
      .default(60)
      .describe("How often a replica re-reads schedules kept in the database (the backup policy's snapshot and drill schedules)."),
    schedules: z
      .object({
        auditCheckpoint: cronExpression.describe("Cron for audit-checkpoint; empty: every audit.checkpointIntervalMinutes."),
        auditRetention: cronExpression.describe("Cron for audit-retention (drops audit segments past audit retention); empty: every 6 hours."),
        keyMaintenance: cronExpression.describe("Cron for key-maintenance (shredding, KEK rewrap, re-encryption); empty: every keys.maintenanceIntervalSeconds."),
        erasurePurge: cronExpression.describe("Cron for erasure-purge (deletion requests past their grace period); empty: every records.purgeIntervalMinutes."),
        inactiveUsers: cronExpression.describe(
          "Cron for inactive-users (unused accounts, access review campaigns past their deadline); empty: every access.inactivityCheckMinutes (and once shortly after start).",
        ),
        accessReviewCampaigns: cronExpression.describe(
          "Cron for access-review-campaigns (a campaign in every tenant); empty: quarterly, at 06:00 on 1 January, April, July and October.",
        ),
        accessReviewReminders: cronExpression.describe(
          "Cron for access-review-reminders (reviewers reminded of a campaign's deadline through the alert channels, access.reviewReminderDays before it); empty: hourly.",
        ),
        backupWatchdog: cronExpression.describe("Cron for backup-watchdog (freshness alerts, catalogue reconcile); empty: every backup.watchdogIntervalSeconds."),
        retentionPurge: cronExpression.describe("Cron for retention-purge (the retention register); empty: daily at 02:30."),
        tlsExpiry: cronExpression.describe("Cron for tls-expiry (certificate renewal warning); empty: daily at 06:00."),
        jobsWatchdog: cronExpression.describe("Cron for jobs-watchdog (overdue jobs, history pruning); empty: every minute."),
        ldapReconcile: cronExpression.describe("Cron for ldap-reconcile (accounts gone from or disabled in an LDAP/AD directory are deactivated); empty: every 5 minutes."),
      })
      .strict()
      .prefault({})
      .describe("Cron overrides per job; the backup snapshot and drill schedules live in the backup policy."),
  })
  .strict();

export type JobsConfig = z.infer<typeof jobsSchema>;
