import { z } from "zod";
import { fsTargetSchema, s3TargetSchema, sftpTargetSchema } from "../../backup/targets/target.js";

/**
 * Response schemas of the backup and drill routes. Leaf module (zod only): the admin UI imports
 * the inferred types, so it cannot read a field these routes do not send.
 */

/** Milliseconds per named phase of a snapshot or a restore. */
const phases = z.record(z.string(), z.number());

export const snapshotRecord = z.object({
  id: z.string(),
  trigger: z.string(),
  /** `partial`: at least one target did not get the snapshot. `pruned`: retention deleted every copy. `vanished`: every copy is gone without retention deleting it. */
  status: z.enum(["running", "complete", "partial", "failed", "interrupted", "pruned", "vanished"]),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  /** Per target: whether it holds the snapshot, and why not. */
  targets: z.array(z.object({ target: z.string(), ok: z.boolean(), bytes: z.number(), error: z.string().optional() })),
  tables: z.number().nullable(),
  rows: z.number().nullable(),
  plainBytes: z.number().nullable(),
  storedBytes: z.number().nullable(),
  durationMs: z.number().nullable(),
  phases: phases.nullable(),
  schemaVersion: z.string().nullable(),
  auditHead: z.object({ seq: z.string(), hash: z.string() }).nullable(),
  verifiedAt: z.string().nullable(),
  error: z.string().nullable(),
  /** When retention deleted the last copy (status `pruned`). */
  prunedAt: z.string().nullable(),
  /** Per target, where the snapshot is now, as the last run or reconcile found it. */
  copies: z.array(z.object({ target: z.string(), state: z.enum(["present", "pruned", "vanished", "unrecorded"]), changedAt: z.string() })),
  /** Attachment files: how many the snapshot lists, per target uploaded or referenced, and ids of any left out. */
  attachments: z
    .object({
      total: z.number(),
      missing: z.array(z.object({ id: z.string(), reason: z.string() })),
      targets: z.array(z.object({ target: z.string(), uploaded: z.number(), referenced: z.number(), uploadedBytes: z.number() })),
    })
    .nullable(),
});

export const backupAlert = z.object({
  kind: z.enum([
    "snapshot_failed",
    "snapshot_stale",
    "drill_failed",
    "drill_stale",
    "worm_not_enforced",
    "not_configured",
    "target_failed",
    "snapshot_vanished",
    "snapshot_appeared",
    "attachment_missing",
  ]),
  /** What the alert is about: the target's name for `target_failed`, `snapshot_vanished` and `snapshot_appeared`. */
  subject: z.string().nullable(),
  raisedAt: z.string(),
  detail: z.string(),
});

/** `GET /api/v1/backups`: the catalogue and the open backup alerts. */
export const backupListResponse = z.object({ snapshots: z.array(snapshotRecord), alerts: z.array(backupAlert) });

/** `POST /api/v1/backups` and `POST /api/v1/drills` answer 202 at once with the run's id. */
export const runStartedResponse = z.object({ id: z.string(), status: z.literal("running") });

export const drillRecord = z.object({
  id: z.string(),
  trigger: z.string(),
  status: z.enum(["running", "passed", "failed", "interrupted"]),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  passed: z.boolean(),
  snapshotId: z.string().nullable(),
  target: z.string(),
  /** Restore time measured by the drill (recovery time objective). */
  rtoMs: z.number().nullable(),
  /** Age of the snapshot's data when drilled (recovery point). */
  rpoMs: z.number().nullable(),
  phases: phases.nullable(),
  checks: z.array(z.object({ name: z.string(), ok: z.boolean(), detail: z.string() })),
  error: z.string().nullable(),
});

/** Whether the target's secrets are stored; null while sealed (they cannot be opened to tell). Secrets are never returned. */
const hasSecrets = { hasSecrets: z.boolean().nullable() };

/** `GET|PUT /api/v1/backups/policy`: schedules, targets (as entered, without secrets), retention and freshness limits. */
export const backupPolicyView = z.object({
  enabled: z.boolean(),
  snapshotSchedule: z.string(),
  drillSchedule: z.string(),
  /** Grandfather-father-son counts. */
  retention: z.object({ hourly: z.number(), daily: z.number(), weekly: z.number(), monthly: z.number() }),
  targets: z.array(z.discriminatedUnion("kind", [fsTargetSchema.extend(hasSecrets), sftpTargetSchema.extend(hasSecrets), s3TargetSchema.extend(hasSecrets)])),
  snapshotMaxAgeMinutes: z.number(),
  drillMaxAgeDays: z.number(),
  objectLockDays: z.number(),
  createdAt: z.string(),
  updatedAt: z.string(),
});

export type SnapshotRecordRes = z.infer<typeof snapshotRecord>;
export type BackupAlertRes = z.infer<typeof backupAlert>;
export type BackupListRes = z.infer<typeof backupListResponse>;
export type RunStartedRes = z.infer<typeof runStartedResponse>;
export type DrillRecordRes = z.infer<typeof drillRecord>;
export type BackupPolicyRes = z.infer<typeof backupPolicyView>;
