import { type Tx } from "../db/sql.js";
import { z } from "zod";
import cron from "node-cron";
import { openTarget, targetDefinitionSchema, targetSecretsSchema, type SnapshotTarget, type TargetDefinition, type TargetSecrets } from "../../backup/targets/index.js";
import type { ApplianceContext } from "../context.js";
import { hkdfSha256, zeroize, unwrapSecret, wrapSecret } from "../keys/index.js";
import { Invalid } from "../kernel/errors.js";

/**
 * The backup policy (one row, `backup_policy`): schedules, targets, retention, freshness limits.
 * Target secrets (SFTP keys, S3 secret keys) are stored AES-256-GCM-wrapped under a key derived
 * from the appliance-internal secret, bound to the label below, and never returned by the API.
 */
const SECRETS_AAD = "wardkeep/backup/target-secrets/v1";

const cronExpr = z
  .string()
  .max(100)
  .refine((s) => cron.validate(s), "a cron expression such as `0 * * * *` (minute hour day month weekday)");

export const retentionSchema = z
  .object({
    hourly: z.number().int().min(0).max(1000).describe("Newest snapshot of each of the last N hours."),
    daily: z.number().int().min(0).max(1000).describe("Newest snapshot of each of the last N days."),
    weekly: z.number().int().min(0).max(1000).describe("Newest snapshot of each of the last N ISO weeks."),
    monthly: z.number().int().min(0).max(1200).describe("Newest snapshot of each of the last N months."),
  })
  .strict();

export const policyInputSchema = z
  .object({
    /** Snapshots on or off. */
    enabled: z.boolean().optional(),
    /** node-cron expression; hourly by default. */
    snapshotSchedule: cronExpr.optional(),
    /** node-cron expression; weekly (Sunday 03:30) by default. */
    drillSchedule: cronExpr.optional(),
    /** Grandfather-father-son counts. */
    retention: retentionSchema.optional(),
    /** Every target snapshots go to (several at once: NAS plus off-site). Replaces the list. */
    targets: z.array(targetDefinitionSchema).max(8).optional(),
    /** Secrets by target name; omitted names keep their stored secrets. */
    targetSecrets: z.record(z.string(), targetSecretsSchema).optional(),
    /** Alert when the newest successful snapshot is older than this. */
    snapshotMaxAgeMinutes: z.number().int().min(5).max(100000).optional(),
    /** Alert when the newest passed drill is older than this. */
    drillMaxAgeDays: z.number().int().min(1).max(366).optional(),
    /** Object Lock retention requested for every object (0: none). */
    objectLockDays: z.number().int().min(0).max(36500).optional(),
  })
  .strict()
  .refine((p) => !p.targets || new Set(p.targets.map((t) => t.name)).size === p.targets.length, { message: "target names must be unique", path: ["targets"] });

export type PolicyInput = z.infer<typeof policyInputSchema>;

export type BackupPolicy = {
  enabled: boolean;
  snapshotSchedule: string;
  drillSchedule: string;
  retention: z.infer<typeof retentionSchema>;
  /** hasSecrets is null while the appliance is sealed (the secrets cannot be opened to tell). */
  targets: (TargetDefinition & { hasSecrets: boolean | null })[];
  snapshotMaxAgeMinutes: number;
  drillMaxAgeDays: number;
  objectLockDays: number;
  createdAt: string;
  updatedAt: string;
};

export type PolicyRow = {
  enabled: boolean;
  snapshot_schedule: string;
  drill_schedule: string;
  retention: BackupPolicy["retention"];
  targets: TargetDefinition[];
  target_secrets: Buffer | null;
  snapshot_max_age_minutes: number;
  drill_max_age_days: number;
  object_lock_days: number;
  created_at: Date;
  updated_at: Date;
};

function secretsKey(ctx: ApplianceContext): Buffer {
  return hkdfSha256(ctx.rootKey.material(), Buffer.alloc(0), Buffer.from("wardkeep/backup/target-secrets-key/v1"), 32);
}

function openSecrets(ctx: ApplianceContext, blob: Buffer | null): Record<string, TargetSecrets> {
  if (!blob) return {};
  const key = secretsKey(ctx);
  try {
    return JSON.parse(unwrapSecret(key, blob, SECRETS_AAD).toString("utf8")) as Record<string, TargetSecrets>;
  } finally {
    zeroize(key);
  }
}

function sealSecrets(ctx: ApplianceContext, secrets: Record<string, TargetSecrets>): Buffer | null {
  if (Object.keys(secrets).length === 0) return null;
  const key = secretsKey(ctx);
  try {
    return wrapSecret(key, Buffer.from(JSON.stringify(secrets), "utf8"), SECRETS_AAD);
  } finally {
    zeroize(key);
  }
}

export async function readPolicyRow(ctx: ApplianceContext, t: Tx, forUpdate = false): Promise<PolicyRow> {
  const rows = await t.rows<PolicyRow>(`SELECT * FROM backup_policy${forUpdate ? " FOR UPDATE" : ""}`);
  if (!rows[0]) throw new Error("backup_policy has no row (migration 0005 not applied?)");
  return rows[0];
}

export function presentPolicy(row: PolicyRow, secrets: Record<string, TargetSecrets> | undefined): BackupPolicy {
  const has = (name: string) => (secrets === undefined ? null : Object.keys(secrets[name] ?? {}).length > 0);
  return {
    enabled: row.enabled,
    snapshotSchedule: row.snapshot_schedule,
    drillSchedule: row.drill_schedule,
    retention: row.retention,
    targets: row.targets.map((t) => ({ ...t, hasSecrets: has(t.name) })),
    snapshotMaxAgeMinutes: row.snapshot_max_age_minutes,
    drillMaxAgeDays: row.drill_max_age_days,
    objectLockDays: row.object_lock_days,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/** Applies a policy change inside the caller's transaction; returns the new policy. */
export async function writePolicy(ctx: ApplianceContext, t: Tx, input: PolicyInput, updatedBy: string | null): Promise<BackupPolicy> {
  const row = await readPolicyRow(ctx, t, true);
  const targets = input.targets ?? row.targets;
  let secrets = row.target_secrets || input.targetSecrets ? openSecrets(ctx, row.target_secrets) : {};
  const names = new Set(targets.map((x) => x.name));
  for (const name of Object.keys(input.targetSecrets ?? {})) {
    if (!names.has(name)) throw new Invalid(`targetSecrets names ${name}, which is not a target`, { field: "targetSecrets" });
  }
  secrets = Object.fromEntries(Object.entries({ ...secrets, ...(input.targetSecrets ?? {}) }).filter(([n]) => names.has(n)));
  await t.exec(
    `UPDATE backup_policy SET enabled = $1, snapshot_schedule = $2, drill_schedule = $3, retention = $4::jsonb, targets = $5::jsonb,
       target_secrets = $6, snapshot_max_age_minutes = $7, drill_max_age_days = $8, object_lock_days = $9, updated_at = now(), updated_by = $10`,
    [
      input.enabled ?? row.enabled,
      input.snapshotSchedule ?? row.snapshot_schedule,
      input.drillSchedule ?? row.drill_schedule,
      JSON.stringify(input.retention ?? row.retention),
      JSON.stringify(targets),
      sealSecrets(ctx, secrets),
      input.snapshotMaxAgeMinutes ?? row.snapshot_max_age_minutes,
      input.drillMaxAgeDays ?? row.drill_max_age_days,
      input.objectLockDays ?? row.object_lock_days,
      updatedBy,
    ],
  );
  return presentPolicy(await readPolicyRow(ctx, t), secrets);
}

/** The stored target secrets by target name (needs the appliance unsealed when there are any). */
export function openPolicySecrets(ctx: ApplianceContext, row: PolicyRow): Record<string, TargetSecrets> {
  return openSecrets(ctx, row.target_secrets);
}

/** The policy as the API shows it: secrets opened only to say which targets have them. */
export function policyView(ctx: ApplianceContext, row: PolicyRow): BackupPolicy {
  let secrets: Record<string, TargetSecrets> | undefined;
  if (!row.target_secrets) secrets = {};
  else if (!ctx.rootKey.isSealed) secrets = openSecrets(ctx, row.target_secrets);
  return presentPolicy(row, secrets);
}

/** Opens every configured target with its secrets (needs the appliance unsealed when secrets exist). */
export function openPolicyTargets(ctx: ApplianceContext, row: PolicyRow): SnapshotTarget[] {
  const secrets = openSecrets(ctx, row.target_secrets);
  return row.targets.map((def) => openTarget(targetDefinitionSchema.parse(def), secrets[def.name]));
}
