import { z } from "zod";
import { fsTargetSchema, s3TargetSchema, sftpTargetSchema, targetDefinitionSchema, targetSecretsSchema } from "../../backup/targets/target.js";

/**
 * Response schemas of the backup and drill routes. Leaf module (zod only): the admin UI imports
 * the inferred types, so it cannot read a field these routes do not send.
 */

/** Milliseconds per named phase of a snapshot or a restore. */
const phases = z.record(z.string(), z.number());

export const snapshotRecord = z.object({
  /** Snapshot id, e.g. 20250101T120000Z-1a2b3c4d. */
  id: z.string(),
  /** schedule, manual, cli, or pre_restore (the safety snapshot an in-place restore takes first). */
  trigger: z.string(),
  /** `partial`: at least one target did not get the snapshot. `pruned`: retention deleted every copy. `vanished`: every copy is gone without retention deleting it. */
  status: z.enum(["running", "complete", "partial", "failed", "interrupted", "pruned", "vanished"]),
  /** When it started. */
  startedAt: z.string(),
  /** When it finished. */
  finishedAt: z.string().nullable(),
  /** Per target: whether it holds the snapshot, and why not. */
  targets: z.array(z.object({ target: z.string(), ok: z.boolean(), bytes: z.number(), error: z.string().optional() })),
  /** Tables copied. */
  tables: z.number().nullable(),
  /** Rows copied. */
  rows: z.number().nullable(),
  /** Bytes before compression and encryption. */
  plainBytes: z.number().nullable(),
  /** Bytes written to each target. */
  storedBytes: z.number().nullable(),
  /** Time taken. */
  durationMs: z.number().nullable(),
  /** Milliseconds per phase (open consistent read, stream tables, publish manifest). */
  phases: phases.nullable(),
  /** Last migration in the snapshot. */
  schemaVersion: z.string().nullable(),
  /** The audit chain head at snapshot time. */
  auditHead: z.object({ seq: z.string(), hash: z.string() }).nullable(),
  /** When it was last verified. */
  verifiedAt: z.string().nullable(),
  /** Why it failed. */
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
  /** What is wrong. */
  kind: z.enum([
    "snapshot_failed",
    "snapshot_stale",
    "drill_failed",
    "drill_stale",
    "worm_not_enforced",
    "not_configured",
    /** One per target (subject = its name): raised when it fails a run or cannot be listed, cleared by its next success. */
    "target_failed",
    /** One per target: snapshots this appliance recorded there are gone without retention deleting them. */
    "snapshot_vanished",
    /** One per target: complete snapshots on it that this appliance did not record there. */
    "snapshot_appeared",
    /** Attachment files the latest snapshot could not copy (gone from disk, or not matching their digest). */
    "attachment_missing",
    /** One per target: WAL files in the spool could not be shipped there (the spool grows until it can). */
    "wal_ship_failed",
    /** The WAL spool reached backup.walSpoolLimitMiB: PostgreSQL keeps its WAL in pg_wal and retries. */
    "wal_spool_full",
    /** One per target: the newest WAL there is older than backup.rpoAlertSeconds while newer WAL waits. */
    "rpo_exceeded",
    /** PostgreSQL's archiver reports a failed archive_command (pg_stat_archiver) newer than its last success. */
    "archiver_failed",
    /** The last base backup failed on some or all targets. */
    "base_backup_failed",
    /** The last point-in-time recovery drill failed. */
    "pitr_drill_failed",
  ]),
  /** What the alert is about: the target's name for `target_failed`, `snapshot_vanished` and `snapshot_appeared`. */
  subject: z.string().nullable(),
  /** Since when. */
  raisedAt: z.string(),
  /** A sentence for people. */
  detail: z.string(),
});

/** `GET /api/v1/backups`: the catalogue and the open backup alerts. */
export const backupListResponse = z.object({
  snapshots: z.array(snapshotRecord),
  alerts: z.array(backupAlert),
  /** The appliance's host name: what an in-place restore must be confirmed with. */
  applianceName: z.string(),
});

/** `POST /api/v1/backups` and `POST /api/v1/drills` answer 202 at once with the run's id. */
export const runStartedResponse = z.object({ id: z.string(), status: z.literal("running") });

export const drillRecord = z.object({
  /** Drill id. */
  id: z.string(),
  /** schedule, manual or cli. */
  trigger: z.string(),
  /** running, passed, failed or interrupted. */
  status: z.enum(["running", "passed", "failed", "interrupted"]),
  /** When it started. */
  startedAt: z.string(),
  /** When it finished. */
  finishedAt: z.string().nullable(),
  /** Every check passed. */
  passed: z.boolean(),
  /** The snapshot drilled. */
  snapshotId: z.string().nullable(),
  /** The target it was read from. */
  target: z.string(),
  /** Restore time measured by the drill (recovery time objective). */
  rtoMs: z.number().nullable(),
  /** Age of the snapshot's data when drilled (recovery point). */
  rpoMs: z.number().nullable(),
  /** Milliseconds per phase (download, decrypt, load, verify). */
  phases: phases.nullable(),
  /** Each check: digests, row counts, audit chain, decryption samples. */
  checks: z.array(z.object({ name: z.string(), ok: z.boolean(), detail: z.string() })),
  /** Why it failed. */
  error: z.string().nullable(),
});

/** Whether the target's secrets are stored; null while sealed (they cannot be opened to tell). Secrets are never returned. */
const hasSecrets = { hasSecrets: z.boolean().nullable() };

/** `GET|PUT /api/v1/backups/policy`: schedules, targets (as entered, without secrets), retention and freshness limits. */
export const backupPolicyView = z.object({
  /** Scheduled snapshots and drills run. */
  enabled: z.boolean(),
  /** Cron expression for snapshots. */
  snapshotSchedule: z.string(),
  /** Cron expression for recovery drills. */
  drillSchedule: z.string(),
  /** Grandfather-father-son counts. */
  retention: z.object({ hourly: z.number(), daily: z.number(), weekly: z.number(), monthly: z.number() }),
  /** Where snapshots go (fs, sftp, s3), as entered, without secrets. */
  targets: z.array(z.discriminatedUnion("kind", [fsTargetSchema.extend(hasSecrets), sftpTargetSchema.extend(hasSecrets), s3TargetSchema.extend(hasSecrets)])),
  /** Alert when the newest complete snapshot is older. */
  snapshotMaxAgeMinutes: z.number(),
  /** Alert when the last passed drill is older. */
  drillMaxAgeDays: z.number(),
  /** S3 Object Lock retention for new objects. */
  objectLockDays: z.number(),
  /** When the policy was first saved. */
  createdAt: z.string(),
  /** When it last changed. */
  updatedAt: z.string(),
});

/** `GET /api/v1/backups/pitr`: the recovery point of each target, the WAL spool and PostgreSQL's archiver. */
export const pitrStatusView = z.object({
  /** backup.walArchiving: continuous WAL archiving is on. */
  archiving: z.boolean(),
  /** PostgreSQL's archive_timeout (seconds): the longest a quiet segment waits before it is archived. */
  archiveTimeoutSeconds: z.number(),
  /** backup.rpoObjectiveSeconds: the shipper closes a segment early enough for each write to be on every target within this. */
  rpoObjectiveSeconds: z.number(),
  /** WAL files waiting in the spool for a target, and the spool's limit. */
  spool: z.object({ files: z.number(), bytes: z.number(), limitBytes: z.number() }),
  /** pg_stat_archiver: archived and failed counts; `failing` when the last failure is newer than the last success. */
  archiver: z.object({
    archivedCount: z.number(),
    failedCount: z.number(),
    lastArchivedAt: z.string().nullable(),
    lastFailedAt: z.string().nullable(),
    lastFailedWal: z.string().nullable(),
    failing: z.boolean(),
  }),
  /** Per configured target: its newest WAL file, when it was archived, its age now, and the recovery point (seconds of work at risk). */
  targets: z.array(
    z.object({
      target: z.string(),
      newestWal: z.string().nullable(),
      newestArchivedAt: z.string().nullable(),
      newestAgeSeconds: z.number().nullable(),
      rpoSeconds: z.number().nullable(),
    }),
  ),
  /** The newest base backup. */
  lastBaseBackup: z.object({ id: z.string(), status: z.string(), finishedAt: z.string().nullable() }).nullable(),
});

export type PitrStatusRes = z.infer<typeof pitrStatusView>;

/** One PITR drill (`GET /api/v1/backups/pitr/drills`, newest first; docs/backups.md "PITR drills"). */
export const pitrDrillRecord = z.object({
  id: z.string(),
  status: z.enum(["running", "passed", "failed"]),
  trigger: z.enum(["schedule", "manual", "cli"]),
  /** The backup target whose base backup and WAL were restored. */
  target: z.string(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  baseBackup: z.string().nullable(),
  /** The randomly chosen time the drill recovered to. */
  targetTime: z.string().nullable(),
  /** The last transaction the replay applied: the recovery point achieved for that time. */
  achievedTime: z.string().nullable(),
  /** Total restore time (the RTO), and by phase. */
  rtoMs: z.number().nullable(),
  phases: z.object({ locateMs: z.number(), baseMs: z.number(), replayMs: z.number(), verifyMs: z.number() }).partial(),
  /** The audit chain, the signed checkpoint before the time, and a sample of encrypted fields. */
  checks: z.array(z.object({ name: z.string(), ok: z.boolean(), detail: z.string() })),
  /** Why it failed (a segment missing from the target is named here). */
  error: z.string().nullable(),
});

export type PitrDrillRes = z.infer<typeof pitrDrillRecord>;
export type SnapshotRecordRes = z.infer<typeof snapshotRecord>;
export type BackupAlertRes = z.infer<typeof backupAlert>;
export type BackupListRes = z.infer<typeof backupListResponse>;
export type RunStartedRes = z.infer<typeof runStartedResponse>;
export type DrillRecordRes = z.infer<typeof drillRecord>;
export type BackupPolicyRes = z.infer<typeof backupPolicyView>;

// ---- requests, and the responses the admin UI does not read yet --------------------------------

const snapshotId = z.string().regex(/^\d{8}T\d{6}Z-[0-9a-f]{8}$/, "a snapshot id such as 20250101T120000Z-1a2b3c4d");
export const snapshotParams = z.object({ /** The snapshot, e.g. 20250101T120000Z-1a2b3c4d. */ id: snapshotId }).strict();
export const drillParams = z.object({ /** The drill. */ id: z.uuid() }).strict();
export const targetParams = z.object({ /** The target's name in the backup policy. */ name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,39}$/) }).strict();

export const verifyRequest = z
  .object({
    /** Target to read from; omitted: the first configured target that holds the snapshot. */
    target: z.string().max(40).optional(),
  })
  .strict();
export const restoreRequest = z
  .object({
    /** Owner connection (postgres://) to an EMPTY database; a non-empty one is refused. Give this or `scratch`. */
    intoUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//, "a postgres:// URL")
      .max(2000)
      .optional(),
    /** Restore into a new scratch database the appliance creates (as drills do) and keeps for inspection. */
    scratch: z.literal(true).optional(),
    /** Replace the live database with the snapshot (a safety snapshot is taken first; the API answers 503 meanwhile and every session ends). Needs `confirm`. */
    inPlace: z.literal(true).optional(),
    /** For `inPlace`: the appliance's name (`applianceName` of GET /backups), typed by the person restoring. */
    confirm: z.string().max(253).optional(),
    /** Target to read from; omitted: the first that holds the snapshot. */
    target: z.string().max(40).optional(),
  })
  .strict()
  .refine((b) => [b.intoUrl, b.scratch, b.inPlace].filter((x) => x !== undefined).length === 1, {
    message: "give one of intoUrl, scratch: true or inPlace: true",
    path: ["intoUrl"],
  })
  .refine((b) => !b.inPlace || b.confirm !== undefined, { message: "an in-place restore needs the appliance's name typed as confirm", path: ["confirm"] });
export const drillRequest = z
  .object({
    /** Snapshot to drill; omitted: the latest complete one. */
    snapshotId: snapshotId.optional(),
    /** Target to read from; omitted: the first configured target. */
    target: z.string().max(40).optional(),
  })
  .strict();

const manifestTrust = z.object({
  /** Key id of the Ed25519 key that signed the manifest. */
  signerKeyId: z.string(),
  /** Whether it is a signer this appliance trusts; null when no signer was pinned. */
  signerMatches: z.boolean().nullable(),
});

export const verifyResult = z.object({
  /** The snapshot verified. */
  snapshotId: z.string(),
  /** Every digest, tag and row count matched (a failure is a 422 problem instead). */
  ok: z.literal(true),
  /** Objects checked. */
  objects: z.number().int(),
  /** Rows counted. */
  rows: z.number().int(),
  /** Bytes downloaded. */
  storedBytes: z.number().int(),
  /** Time taken. */
  durationMs: z.number(),
  /** Who signed the manifest. */
  signer: manifestTrust,
  /** The target read from. */
  target: z.string(),
});

const headRef = z.object({ seq: z.string(), hash: z.string() });

export const restoreOutcome = z.object({
  /** The snapshot restored. */
  snapshotId: z.string(),
  /** Tables loaded. */
  tables: z.number().int(),
  /** Rows loaded. */
  rows: z.number().int(),
  /** Rows per restored table, as the manifest records and the load confirmed. */
  tableRows: z.array(z.object({ schema: z.string(), table: z.string(), rows: z.number().int() })),
  /** Bytes downloaded. */
  storedBytes: z.number().int(),
  /** Bytes after decryption and decompression. */
  plainBytes: z.number().int(),
  /** Schema version of the snapshot, the restored database, and migrations run after loading. */
  schema: z.object({ snapshot: z.string(), restoredTo: z.string(), migratedAfterLoad: z.array(z.string()) }),
  /** The restored audit chain compared with the head recorded in the signed manifest. */
  auditChain: z.union([
    z.object({ checked: z.literal(false), reason: z.string() }),
    z.object({ checked: z.literal(true), intact: z.boolean(), head: headRef.nullable(), expected: headRef.nullable(), detail: z.string().optional() }),
  ]),
  /** Who signed the manifest. */
  signer: manifestTrust,
  /** Milliseconds per phase (open, schema, load, decrypt CPU, constraints, verify, total). */
  phases: z.record(z.string(), z.number()),
  /** What the key-store step reported (installed, shredded subjects purged), or null. */
  beforeCommit: z.record(z.string(), z.unknown()).nullable(),
  /** The target read from. */
  target: z.string(),
  /** The appliance's crypto-shredding list was applied to the restored data. */
  shredList: z.literal("reapplied"),
  /** The scratch database restored into (`scratch: true`), kept until an operator drops it; null for `intoUrl` and `inPlace`. */
  scratchDatabase: z.string().nullable(),
  /** For `inPlace`: what replaced the live database, and how to undo it. */
  inPlace: z
    .object({
      /** The snapshot of the live database taken first: restore it in place to undo this restore. */
      safetySnapshotId: z.string(),
      /** Sessions ended (every one: sign in again). */
      sessionsEnded: z.number().int(),
      /** Key-store rows carried from the live appliance, per table (snapshots never hold keys). */
      keyStore: z.record(z.string(), z.number()),
      /** Patients and tenants crypto-shredded since the snapshot, purged from the restored data. */
      purged: z.object({ patients: z.number().int(), tenants: z.number().int(), rowsDeleted: z.number().int() }),
      /** Encrypted values checked against the key store, and the sample decrypted. */
      readable: z.object({ values: z.number().int(), sampled: z.number().int(), columns: z.number().int(), tenants: z.number().int() }),
      /** How long the API answered 503 (milliseconds). */
      maintenanceMs: z.number().int(),
    })
    .optional(),
});

export const targetTestRequest = z
  .object({
    /** The target as it would be saved in the policy (need not be saved yet). */
    target: targetDefinitionSchema,
    /** Its secrets; omitted: the ones stored for a saved target of the same name and kind. */
    secrets: targetSecretsSchema.optional(),
  })
  .strict();

export const targetTestResult = z.object({
  /** The target's name. */
  target: z.string(),
  /** Where it points (never a secret). */
  where: z.string(),
  /** Listed, wrote and read back a probe object. */
  ok: z.boolean(),
  /** One line for people: what worked, or the first step that failed and why. */
  detail: z.string(),
  /** Each step (list, write, read, delete) with its time and outcome. */
  steps: z.array(z.object({ name: z.enum(["list", "write", "read", "delete"]), ok: z.boolean(), ms: z.number(), detail: z.string() })),
  /** When it was tested. */
  checkedAt: z.string(),
});

export const wormCheck = z.object({
  /** The target tested. */
  target: z.string(),
  /** The target refused to delete a retained object (the only passing answer). */
  enforced: z.boolean(),
  /** What happened. */
  detail: z.string(),
  /** When it was tested. */
  checkedAt: z.string(),
});

export type VerifyReq = z.infer<typeof verifyRequest>;
export type RestoreReq = z.infer<typeof restoreRequest>;
export type DrillReq = z.infer<typeof drillRequest>;
export type VerifyResultRes = z.infer<typeof verifyResult>;
export type RestoreOutcomeRes = z.infer<typeof restoreOutcome>;
export type WormCheckRes = z.infer<typeof wormCheck>;
export type TargetTestReq = z.infer<typeof targetTestRequest>;
export type TargetTestRes = z.infer<typeof targetTestResult>;
