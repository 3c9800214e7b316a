/**
 * The backup capability's services: what routes, the CLI and the scheduler call. The engine in
 * backup/ knows nothing of the appliance; this module hands it connections, keys and targets,
 * holds the job locks, and records every run in the catalog tables, the audit trail, the log and
 * the alert state (docs/backups.md).
 */
import { publishWebhookEvent } from "../webhooks/index.js";
import { removeIncompleteSnapshots, scanTarget } from "../../backup/catalog.js";
import { runRecoveryDrill, type DrillResult } from "../../backup/drill.js";
import { manifestSigner } from "../../backup/keys.js";
import { restoreSnapshot, verifySnapshot, type RestoreResult, type VerifyResult } from "../../backup/restore.js";
import { applyRetention, planRetention, type PruneOutcome } from "../../backup/retention.js";
import { newSnapshotId, takeSnapshot, type SnapshotProgress, type SnapshotResult } from "../../backup/snapshot.js";
import type { SnapshotTarget } from "../../backup/targets/target.js";
import { runWormSelfTest, type WormCheck } from "../../backup/worm.js";
import { appendAuditEvent, type AuditActorInput } from "../audit/append.js";
import { inDataDir } from "../config/load.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { backupAlert, type BackupAlertRes } from "./schema.js";
import { openAlertsOf, raiseAlert as raiseStoredAlert, resolveAlert, type AlertSeverity } from "../alerts/index.js";
import { Conflict, Invalid, NotFound } from "../kernel/errors.js";
import { SNAPSHOT_EXCLUDED_SCHEMAS, reapplyShredList, currentRecoveryPublicKey, rawPublicKey } from "../keys/index.js";
import { APP_VERSION } from "../version.js";
import { auditVerifierFor } from "./audit-check.js";
import { backUpKeyStore } from "./keystore-backups.js";
import { ownerConnector, scratchDatabaseFactory } from "./connections.js";
import { openPolicyTargets, readPolicyRow, type PolicyRow } from "./policy.js";

/** Advisory lock ids shared by every replica (see also daemon/db/migrate.ts, daemon/keys/keystore.ts). */
export const BACKUP_LOCKS = { snapshot: 7_301_501, drill: 7_301_502 } as const;

export const SYSTEM_ACTOR: AuditActorInput = { userId: null, role: "system" };

export type AuditMeta = { actor: AuditActorInput; sourceIp?: string | null; userAgent?: string | null; requestId?: string | null };

const appliance = { kind: "appliance" } as const;

export function tx<T>(ctx: ApplianceContext, work: (t: Tx) => Promise<T>): Promise<T> {
  return inScope(ctx.db.app, appliance, work);
}

export async function audit(
  ctx: ApplianceContext,
  t: Tx,
  meta: AuditMeta,
  action: string,
  resourceType: string,
  resourceId: string | null,
  outcome: "success" | "failure",
  reason?: string,
) {
  await appendAuditEvent(ctx, t, {
    tenantId: null,
    actor: meta.actor,
    action,
    resourceType,
    resourceId,
    outcome,
    ...(reason ? { reason } : {}),
    sourceIp: meta.sourceIp ?? null,
    userAgent: meta.userAgent ?? null,
    requestId: meta.requestId ?? null,
  });
}

/**
 * A PostgreSQL session advisory lock on its own connection: one snapshot (or drill) at a time
 * across every replica and CLI. If the holder dies, PostgreSQL drops the lock with its
 * connection, which is also why anything a previous holder left unfinished can be swept.
 */
export async function tryJobLock(ctx: ApplianceContext, id: number, waitMs = 0): Promise<{ release(): Promise<void> } | undefined> {
  const client = await ownerConnector(ctx)();
  client.on("error", () => {});
  const deadline = Date.now() + waitMs;
  for (;;) {
    const r = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1) AS ok", [id]);
    if (r.rows[0]!.ok) break;
    if (Date.now() >= deadline) {
      await client.end().catch(() => {});
      return undefined;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return {
    async release() {
      await client.query("SELECT pg_advisory_unlock($1)", [id]).catch(() => {});
      await client.end().catch(() => {});
    },
  };
}

/** The recovery public key from the key store (daemon/keys/recovery.ts); works sealed. */
export async function recoveryPublicKey(ctx: ApplianceContext): Promise<Buffer> {
  const current = await currentRecoveryPublicKey(ctx);
  return rawPublicKey(current.publicKey);
}

// ---- alerts --------------------------------------------------------------------------------

/** The kinds of backup alert; the list and what each means live with the API's schema (./schema.ts, `backupAlert`). */
export type AlertKind = BackupAlertRes["kind"];

export const ALERT_KINDS: readonly AlertKind[] = backupAlert.shape.kind.options;

/** Backup alerts live in the one alert store (daemon/alerts) as `backup.<kind>`, keyed by subject. */
const storeKind = (kind: AlertKind) => `backup.${kind}`;

/** Problems a person must act on now; the rest say something is late or odd. */
const SEVERITY: Record<AlertKind, AlertSeverity> = {
  snapshot_failed: "critical",
  drill_failed: "critical",
  target_failed: "critical",
  snapshot_vanished: "critical",
  worm_not_enforced: "critical",
  snapshot_stale: "warning",
  drill_stale: "warning",
  not_configured: "warning",
  snapshot_appeared: "warning",
  attachment_missing: "warning",
  wal_ship_failed: "critical",
  wal_spool_full: "critical",
  rpo_exceeded: "critical",
  archiver_failed: "critical",
  base_backup_failed: "critical",
  pitr_drill_failed: "critical",
};

/**
 * Raises the open alert of this kind and subject ("" when the kind has none), or refreshes its
 * detail; `keepDetail` leaves an open one's detail as it is (a reconcile must not hide why a run failed).
 */
export async function raiseAlert(ctx: ApplianceContext, t: Tx, kind: AlertKind, detail: string, subject = "", keepDetail = false): Promise<void> {
  const r = await raiseStoredAlert(ctx, { kind: storeKind(kind), severity: SEVERITY[kind], key: subject, summary: detail, keepSummary: keepDetail }, t);
  // Logged once when raised (not on every watchdog tick); the metric and the row stay until cleared.
  if (r.opened) t.afterCommit(() => void ctx.log.error(`backup alert raised: ${kind}${subject ? ` (${subject})` : ""}: ${detail}`, { alert: kind, subject }));
}

/** Clears the open alert of this kind: of one subject when given, else of every subject (or those `subject` accepts). */
export async function clearAlert(ctx: ApplianceContext, t: Tx, kind: AlertKind, subject?: string | ((subject: string) => boolean)): Promise<void> {
  const r = await resolveAlert(ctx, storeKind(kind), subject ?? null, { tx: t });
  for (const row of r) t.afterCommit(() => void ctx.log.info(`backup alert cleared: ${kind}${row.key ? ` (${row.key})` : ""}`, { alert: kind, subject: row.key }));
}

/**
 * Clears at once what a saved policy settles, rather than at the watchdog's next tick (the page
 * would go on saying "not configured" right under the target just saved): `not_configured` once
 * the policy has a target or is off, and `target_failed` of targets the policy no longer has.
 */
export async function settleAlertsForPolicy(ctx: ApplianceContext, t: Tx, policy: { enabled: boolean; targets: ReadonlyArray<{ name: string }> }): Promise<void> {
  if (!policy.enabled || policy.targets.length > 0) await clearAlert(ctx, t, "not_configured");
  const kept = new Set(policy.targets.map((x) => x.name));
  await clearAlert(ctx, t, "target_failed", (subject) => !kept.has(subject));
}

/** `subject` names what the alert is about (the target of `target_failed`), null when the kind has none. */
export type OpenAlert = { kind: AlertKind; subject: string | null; raisedAt: string; detail: string };

export async function openAlerts(ctx: ApplianceContext): Promise<OpenAlert[]> {
  const open = await openAlertsOf(ctx, ALERT_KINDS.map(storeKind));
  return open
    .filter((a) => a.tenantId === null)
    .map((a) => ({ kind: a.kind.slice("backup.".length) as AlertKind, subject: a.key || null, raisedAt: a.firstSeen, detail: a.summary }));
}

/**
 * A run that reached every target it had: `complete` (or since pruned or vanished, which says
 * nothing against the run). A `partial` run never counts as a success: an off-site copy that
 * stopped must not hide behind a NAS that works.
 */
export const COMPLETE_EVERYWHERE = `status IN ('complete', 'pruned', 'vanished') AND NOT targets @> '[{"ok": false}]'::jsonb`;

/**
 * The watchdog: alerts also when nothing ran at all (a dead scheduler, a lost lock, a replica
 * that never started), measured from the last success — or from when the policy was created.
 */
export async function evaluateFreshness(ctx: ApplianceContext): Promise<OpenAlert[]> {
  await tx(ctx, async (t) => {
    const policy = await readPolicyRow(ctx, t);
    const now = ctx.clock.now().getTime();
    if (!policy.enabled) {
      for (const k of ["snapshot_stale", "drill_stale", "not_configured"] as const) await clearAlert(ctx, t, k);
      return;
    }
    if (policy.targets.length === 0) await raiseAlert(ctx, t, "not_configured", "snapshots are enabled but no backup target is configured");
    else await clearAlert(ctx, t, "not_configured");
    const [last] = await t.rows<{ snap: Date | null; drill: Date | null }>(`SELECT (SELECT max(finished_at) FROM backup_snapshots WHERE ${COMPLETE_EVERYWHERE}) AS snap,
              (SELECT max(finished_at) FROM backup_drills WHERE status = 'passed') AS drill`);
    const since = policy.created_at.getTime();
    const snapAge = now - (last?.snap?.getTime() ?? since);
    if (snapAge > policy.snapshot_max_age_minutes * 60_000) {
      await raiseAlert(
        ctx,
        t,
        "snapshot_stale",
        last?.snap
          ? `the newest snapshot that reached every target finished ${Math.round(snapAge / 60_000)} minutes ago (limit ${policy.snapshot_max_age_minutes}; partial ones do not count)`
          : `no snapshot has succeeded since backups were configured ${Math.round(snapAge / 60_000)} minutes ago (limit ${policy.snapshot_max_age_minutes})`,
      );
    } else await clearAlert(ctx, t, "snapshot_stale");
    const drillAge = now - (last?.drill?.getTime() ?? since);
    if (drillAge > policy.drill_max_age_days * 86_400_000) {
      await raiseAlert(
        ctx,
        t,
        "drill_stale",
        last?.drill
          ? `the newest passed recovery drill is ${Math.floor(drillAge / 86_400_000)} days old (limit ${policy.drill_max_age_days})`
          : `no recovery drill has passed in ${Math.floor(drillAge / 86_400_000)} days (limit ${policy.drill_max_age_days})`,
      );
    } else await clearAlert(ctx, t, "drill_stale");
  });
  return openAlerts(ctx);
}

// ---- snapshots -----------------------------------------------------------------------------

export type SnapshotRecord = {
  id: string;
  trigger: string;
  /** `pruned`: retention deleted every copy; `vanished`: every copy is gone from its target without retention deleting it. */
  status: "running" | "complete" | "partial" | "failed" | "interrupted" | "pruned" | "vanished";
  startedAt: string;
  finishedAt: string | null;
  targets: { target: string; ok: boolean; bytes: number; error?: string }[];
  tables: number | null;
  rows: number | null;
  plainBytes: number | null;
  storedBytes: number | null;
  durationMs: number | null;
  phases: SnapshotResult["phases"] | null;
  schemaVersion: string | null;
  auditHead: { seq: string; hash: string } | null;
  verifiedAt: string | null;
  error: string | null;
  prunedAt: string | null;
  /** Where the snapshot is now, per target, as the last run or reconcile found it. */
  copies: SnapshotCopy[];
  /** Attachment files: how many the snapshot lists, per target uploaded or referenced, and any left out (ids). */
  attachments: SnapshotResult["attachments"];
};

export type SnapshotCopy = { target: string; state: "present" | "pruned" | "vanished" | "unrecorded"; changedAt: string };

type SnapshotRow = {
  id: string;
  trigger: string;
  status: SnapshotRecord["status"];
  started_at: Date;
  finished_at: Date | null;
  targets: SnapshotRecord["targets"];
  tables: number | null;
  rows: string | null;
  plain_bytes: string | null;
  stored_bytes: string | null;
  duration_ms: number | null;
  phases: SnapshotRecord["phases"];
  schema_version: string | null;
  audit_head_seq: string | null;
  audit_head_hash: Buffer | null;
  verified_at: Date | null;
  error: string | null;
  pruned_at: Date | null;
  attachments: SnapshotResult["attachments"];
  copies: SnapshotCopy[];
};

/** Every column plus the snapshot's copies, oldest target name first. */
const SNAPSHOT_SELECT = `SELECT s.*, coalesce((SELECT json_agg(json_build_object('target', c.target, 'state', c.state, 'changedAt', c.changed_at) ORDER BY c.target)
                                   FROM backup_snapshot_copies c WHERE c.snapshot_id = s.id), '[]') AS copies
                      FROM backup_snapshots s`;

const num = (v: string | number | null) => (v === null ? null : Number(v));

function present(r: SnapshotRow): SnapshotRecord {
  return {
    id: r.id,
    trigger: r.trigger,
    status: r.status,
    startedAt: r.started_at.toISOString(),
    finishedAt: r.finished_at?.toISOString() ?? null,
    targets: r.targets,
    tables: r.tables,
    rows: num(r.rows),
    plainBytes: num(r.plain_bytes),
    storedBytes: num(r.stored_bytes),
    durationMs: r.duration_ms,
    phases: r.phases,
    schemaVersion: r.schema_version,
    auditHead: r.audit_head_seq !== null && r.audit_head_hash ? { seq: String(r.audit_head_seq), hash: r.audit_head_hash.toString("hex") } : null,
    verifiedAt: r.verified_at?.toISOString() ?? null,
    error: r.error,
    prunedAt: r.pruned_at?.toISOString() ?? null,
    copies: r.copies.map((c) => ({ ...c, changedAt: new Date(c.changedAt).toISOString() })),
    attachments: r.attachments ?? null,
  };
}

export async function listSnapshotRecords(ctx: ApplianceContext, limit = 100): Promise<SnapshotRecord[]> {
  const rows = await tx(ctx, (t) => t.rows<SnapshotRow>(`${SNAPSHOT_SELECT} ORDER BY s.seq DESC LIMIT $1`, [limit]));
  return rows.map(present);
}

export async function getSnapshotRecord(ctx: ApplianceContext, id: string): Promise<SnapshotRecord> {
  const rows = await tx(ctx, (t) => t.rows<SnapshotRow>(`${SNAPSHOT_SELECT} WHERE s.id = $1`, [id]));
  if (!rows[0]) throw new NotFound(`no snapshot ${id} is recorded by this appliance`);
  return present(rows[0]);
}

export type SnapshotRun = SnapshotRecord & { retention: PruneOutcome[]; swept: { target: string; removed: string[] }[] };

export type StartOptions = { trigger: "schedule" | "manual" | "cli" | "pre_restore"; meta?: AuditMeta; onProgress?: (p: SnapshotProgress) => void };

export async function closeAll(targets: SnapshotTarget[]) {
  await Promise.allSettled(targets.map((t) => t.close()));
}

type RunLock = NonNullable<Awaited<ReturnType<typeof tryJobLock>>>;
type RunContext = { id: string; policy: PolicyRow; secret: Buffer; recoveryKey: Buffer; meta: AuditMeta; opts: StartOptions };

/**
 * Takes the lock and records the run, then returns at once with the id and a promise of the
 * outcome (routes answer 202 with the id; the CLI awaits `done`). Conflict when a run holds the lock.
 * The run: sweep interrupted runs → take the snapshot → back up the key store → retention →
 * record the outcome → reconcile.
 */
export async function startSnapshot(ctx: ApplianceContext, opts: StartOptions): Promise<{ id: string; done: Promise<SnapshotRun> }> {
  const secret = ctx.rootKey.material(); // Sealed (503) before anything starts
  const meta = opts.meta ?? { actor: SYSTEM_ACTOR };
  const policy = await tx(ctx, (t) => readPolicyRow(ctx, t));
  if (policy.targets.length === 0) throw new Conflict("no backup target is configured; add one with PUT /api/v1/backups/policy");
  const recoveryKey = await recoveryPublicKey(ctx);
  const { id, lock } = await claimRun(ctx, opts.trigger);
  const done = runSnapshotJob(ctx, { id, policy, secret, recoveryKey, meta, opts }, lock);
  return { id, done };
}

/** The lock, and the run's row ('running'); a row still 'running' from a run that died is marked interrupted. */
async function claimRun(ctx: ApplianceContext, trigger: StartOptions["trigger"]): Promise<{ id: string; lock: RunLock }> {
  // A scheduled run waits out a reconcile holding the lock (seconds) rather than skip its hour; a snapshot
  // in progress holds it for longer, and the scheduled run is then skipped as before.
  const lock = await tryJobLock(ctx, BACKUP_LOCKS.snapshot, trigger === "schedule" ? 30_000 : 0);
  if (!lock) throw new Conflict("a snapshot is already running (on this or another replica, or from the CLI)");
  const id = newSnapshotId(ctx.clock.now());
  try {
    await tx(ctx, async (t) => {
      // We hold the lock, so a row still 'running' belongs to a run that died.
      await t.rows(
        "UPDATE backup_snapshots SET status = 'interrupted', finished_at = $1, error = 'the run ended without finishing (process killed or crashed)' WHERE status = 'running' RETURNING id",
        [ctx.clock.now()],
      );
      await t.rows("INSERT INTO backup_snapshots (id, trigger, status, started_at) VALUES ($1, $2, 'running', $3) RETURNING id", [id, trigger, ctx.clock.now()]);
    });
  } catch (err) {
    await lock.release();
    throw err;
  }
  return { id, lock };
}

async function runSnapshotJob(ctx: ApplianceContext, run: RunContext, lock: RunLock): Promise<SnapshotRun> {
  const { id, policy } = run;
  const targets = openPolicyTargets(ctx, policy);
  const swept: SnapshotRun["swept"] = [];
  const retention: PruneOutcome[] = [];
  let result: SnapshotResult | undefined;
  let failure: Error | undefined;
  try {
    swept.push(...(await sweepInterrupted(ctx, targets)));
    result = await takeSnapshotOn(ctx, run, targets);
    // The key store goes beside the data on every target that took it (DESIGN "Key-store backups").
    if (result.ok) await backUpKeyStore(ctx, { id, targets, result, recoveryPublicKey: run.recoveryKey });
    // An in-place restore's safety snapshot prunes nothing: the snapshot about to be restored may be one retention would thin out.
    if (result.ok && run.opts.trigger !== "pre_restore") retention.push(...(await applyRetentionOn(ctx, policy, targets, result)));
  } catch (err) {
    failure = err as Error;
  } finally {
    await closeAll(targets);
  }
  const status: SnapshotRecord["status"] = failure || !result?.ok ? "failed" : result.targets.every((t) => t.ok) ? "complete" : "partial";
  const error =
    failure?.message ??
    (result?.targets
      .filter((t) => !t.ok)
      .map((t) => t.error)
      .join("; ") ||
      null);
  try {
    await recordOutcome(ctx, run, { status, error, result, retention });
    // Retention and this run changed the targets: check the catalogue against them while the lock is held.
    await reconcileUnderLock(ctx, policy, run.meta).catch((err: Error) => ctx.log.warn(`backup: reconcile after snapshot ${id} failed: ${err.message}`));
  } finally {
    await lock.release();
  }
  if (status !== "failed") ctx.log.info(`backup: snapshot ${id} ${status} (${result!.tables} tables, ${result!.storedBytes} bytes, ${result!.durationMs} ms)`);
  return { ...(await getSnapshotRecord(ctx, id)), retention, swept };
}

/** Interrupted runs' objects (no manifest) removed from every target; a target that cannot be swept is only logged. */
async function sweepInterrupted(ctx: ApplianceContext, targets: SnapshotTarget[]): Promise<SnapshotRun["swept"]> {
  const swept: SnapshotRun["swept"] = [];
  for (const target of targets) {
    try {
      const r = await removeIncompleteSnapshots(target);
      if (r.removed.length) ctx.log.info(`backup: removed ${r.removed.length} interrupted snapshot(s) from ${target.name}`, { target: target.name, bytes: r.bytes });
      swept.push({ target: target.name, removed: r.removed });
    } catch (err) {
      ctx.log.warn(`backup: could not sweep target ${target.name}: ${(err as Error).message}`);
    }
  }
  return swept;
}

function takeSnapshotOn(ctx: ApplianceContext, run: RunContext, targets: SnapshotTarget[]): Promise<SnapshotResult> {
  const { policy } = run;
  return takeSnapshot({
    connect: ownerConnector(ctx),
    targets,
    applianceSecret: run.secret,
    recoveryPublicKey: run.recoveryKey,
    excludedSchemas: SNAPSHOT_EXCLUDED_SCHEMAS,
    appVersion: APP_VERSION,
    trigger: run.opts.trigger,
    compression: ctx.config.backup.compression,
    compressionLevel: ctx.config.backup.compressionLevel,
    segmentBytes: ctx.config.backup.segmentKib * 1024,
    retainUntil: policy.object_lock_days ? new Date(ctx.clock.now().getTime() + policy.object_lock_days * 86_400_000) : undefined,
    snapshotId: run.id,
    attachments: { root: inDataDir(ctx.config, ctx.config.records.attachmentsDir) },
    now: () => ctx.clock.now(),
    onProgress: run.opts.onProgress,
    log: ctx.log,
  });
}

/** The policy's retention on every target that holds the new snapshot; a failing target is only logged. */
async function applyRetentionOn(ctx: ApplianceContext, policy: PolicyRow, targets: SnapshotTarget[], result: SnapshotResult): Promise<PruneOutcome[]> {
  const retention: PruneOutcome[] = [];
  for (const target of targets.filter((t) => result.targets.find((o) => o.target === t.name)?.ok)) {
    try {
      retention.push(await applyRetention(target, (await scanTarget(target)).complete, policy.retention));
    } catch (err) {
      ctx.log.warn(`backup: retention on ${target.name} failed: ${(err as Error).message}`);
    }
  }
  return retention;
}

/** One transaction: the run's row, its copies, target outcomes, alerts, the audit event and what retention pruned. */
async function recordOutcome(
  ctx: ApplianceContext,
  run: RunContext,
  o: { status: SnapshotRecord["status"]; error: string | null; result: SnapshotResult | undefined; retention: PruneOutcome[] },
): Promise<void> {
  const { id, meta } = run;
  const { status, error, result, retention } = o;
  await tx(ctx, async (t) => {
    await t.exec(
      `UPDATE backup_snapshots SET status = $2, finished_at = $3, targets = $4::jsonb, tables = $5, rows = $6, plain_bytes = $7, stored_bytes = $8,
         duration_ms = $9, phases = $10::jsonb, schema_version = $11, audit_head_seq = $12, audit_head_hash = decode($13, 'hex'), error = $14, attachments = $15::jsonb
       WHERE id = $1`,
      [
        id,
        status,
        ctx.clock.now(),
        JSON.stringify(result?.targets ?? []),
        result?.tables ?? null,
        result?.rows ?? null,
        result?.plainBytes ?? null,
        result?.storedBytes ?? null,
        result?.durationMs ?? null,
        JSON.stringify(result?.phases ?? null),
        result?.manifest?.database.schemaVersion ?? null,
        result?.manifest?.auditHead?.seq ?? null,
        result?.manifest?.auditHead?.hash ?? null,
        error?.slice(0, 1000) ?? null,
        JSON.stringify(result?.attachments ?? null),
      ],
    );
    if (status !== "failed") {
      for (const ok of result!.targets.filter((x) => x.ok)) await setCopyState(ctx, t, id, ok.target, "present");
    }
    // The appliance's own webhook endpoints hear of every finished run (ids and counts only).
    await publishWebhookEvent(ctx, t, {
      tenantId: null,
      type: status === "failed" ? "snapshot.failed" : "snapshot.finished",
      data: { snapshotId: id, status, targetsOk: result?.targets.filter((x) => x.ok).length ?? 0, targetsFailed: result?.targets.filter((x) => !x.ok).length ?? 0 },
    });
    await recordTargetOutcomes(ctx, t, id, result?.targets ?? []);
    // Only a snapshot on every target clears the run alerts: a partial one leaves snapshot_failed
    // (and the staleness clock) as they were, and its failing targets have their own alerts.
    if (status === "failed") await raiseAlert(ctx, t, "snapshot_failed", `snapshot ${id} failed: ${error ?? "unknown error"}`);
    else if (status === "complete") {
      await clearAlert(ctx, t, "snapshot_failed");
      await clearAlert(ctx, t, "snapshot_stale");
    } else ctx.log.warn(`backup: snapshot ${id} is missing on some targets: ${error}`);
    if (result?.attachments) {
      const missing = result.attachments.missing;
      if (missing.length)
        await raiseAlert(
          ctx,
          t,
          "attachment_missing",
          `snapshot ${id} could not copy ${missing.length} attachment file(s): ${missing
            .slice(0, 5)
            .map((m) => `${m.id} (${m.reason})`)
            .join(", ")}${missing.length > 5 ? ", ..." : ""}`,
        );
      else if (status !== "failed") await clearAlert(ctx, t, "attachment_missing");
    }
    await audit(ctx, t, meta, "backup.snapshot", "backup_snapshot", id, status === "failed" ? "failure" : "success");
    await recordPruned(ctx, t, meta, retention);
  });
}

export async function runSnapshot(ctx: ApplianceContext, opts: StartOptions): Promise<SnapshotRun> {
  return (await startSnapshot(ctx, opts)).done;
}

// ---- catalogue: copies per target, pruning, reconcile ----------------------------------------

async function setCopyState(ctx: ApplianceContext, t: Tx, snapshotId: string, target: string, state: SnapshotCopy["state"]): Promise<void> {
  await t.exec(
    `INSERT INTO backup_snapshot_copies (snapshot_id, target, state, changed_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (snapshot_id, target) DO UPDATE SET state = EXCLUDED.state, changed_at = EXCLUDED.changed_at WHERE backup_snapshot_copies.state <> EXCLUDED.state`,
    [snapshotId, target, state, ctx.clock.now()],
  );
}

/** Each target's own alert: raised when it failed this run, cleared when it took the whole snapshot. */
async function recordTargetOutcomes(ctx: ApplianceContext, t: Tx, id: string, outcomes: SnapshotResult["targets"]): Promise<void> {
  for (const o of outcomes) {
    if (o.ok) await clearAlert(ctx, t, "target_failed", o.target);
    else await raiseAlert(ctx, t, "target_failed", `target ${o.target} did not get snapshot ${id}: ${(o.error ?? "unknown error").replace(`target ${o.target}: `, "")}`, o.target);
  }
}

/**
 * A snapshot's status follows its copies: one still present keeps (or gives back) its run
 * outcome; none left is `pruned` when retention deleted one, else `vanished`.
 */
async function recomputeStatus(ctx: ApplianceContext, t: Tx, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await t.exec(
    `WITH c AS (
       SELECT s.id,
              bool_or(c.state = 'present') AS present, bool_or(c.state = 'pruned') AS pruned, bool_or(c.state = 'vanished') AS vanished
         FROM backup_snapshots s JOIN backup_snapshot_copies c ON c.snapshot_id = s.id
        WHERE s.id = ANY($1::text[]) AND s.status IN ('complete', 'partial', 'pruned', 'vanished')
        GROUP BY s.id)
     UPDATE backup_snapshots s
        SET status = CASE WHEN c.present THEN (CASE WHEN s.status IN ('pruned', 'vanished') THEN (CASE WHEN s.targets @> '[{"ok": false}]'::jsonb THEN 'partial' ELSE 'complete' END) ELSE s.status END)
                          WHEN c.pruned THEN 'pruned' ELSE 'vanished' END,
            pruned_at = CASE WHEN NOT c.present AND c.pruned THEN coalesce(s.pruned_at, $2) ELSE NULL END
       FROM c WHERE c.id = s.id`,
    [ids, ctx.clock.now()],
  );
}

/** What retention deleted: marked per target, audited per snapshot, statuses follow. */
async function recordPruned(ctx: ApplianceContext, t: Tx, meta: AuditMeta, retention: PruneOutcome[]): Promise<void> {
  const ids = new Set<string>();
  for (const r of retention) {
    for (const id of r.pruned) {
      await setCopyState(ctx, t, id, r.target, "pruned");
      await audit(ctx, t, meta, "backup.prune", "backup_snapshot", id, "success");
      ids.add(id);
    }
    if (r.pruned.length) t.afterCommit(() => void ctx.log.info(`backup: retention pruned ${r.pruned.length} snapshot(s) from ${r.target}`, { target: r.target }));
  }
  await recomputeStatus(ctx, t, [...ids]);
}

/** `adopted`: snapshots whose run died after writing the manifest (or that a recovered appliance restored with its row still running): now recorded. */
export type TargetReconcile = { target: string; listed: number; vanished: string[]; appeared: string[]; returned: string[]; adopted: string[]; error?: string };
export type ReconcileResult = { skipped?: string; targets: TargetReconcile[] };

/**
 * Compares the catalogue with what each target really holds (under the snapshot lock, so no run
 * is writing): a recorded copy missing from its target is marked `vanished`; a complete snapshot
 * on a target with no copy recorded there is marked `unrecorded`; both are audited and alerted
 * per target. A vanished copy that retention would have deleted by now stops counting (`pruned`),
 * so the alert ends when the gap would have closed on its own. A target that cannot be listed
 * raises its `target_failed` alert and is left as it was.
 */
async function reconcileUnderLock(ctx: ApplianceContext, policy: PolicyRow, meta: AuditMeta): Promise<ReconcileResult> {
  const targets = openPolicyTargets(ctx, policy);
  const out: TargetReconcile[] = [];
  try {
    for (const target of targets) {
      const r: TargetReconcile = { target: target.name, listed: 0, vanished: [], appeared: [], returned: [], adopted: [] };
      out.push(r);
      let onTarget: string[];
      try {
        onTarget = (await scanTarget(target)).complete;
      } catch (err) {
        r.error = (err as Error).message;
        await tx(ctx, (t) => raiseAlert(ctx, t, "target_failed", `target ${target.name} could not be listed: ${r.error}`, target.name, true));
        continue;
      }
      r.listed = onTarget.length;
      const there = new Set(onTarget);
      await tx(ctx, async (t) => {
        const copies = await t.rows<{ snapshot_id: string; state: SnapshotCopy["state"]; recorded: boolean }>(
          `SELECT c.snapshot_id, c.state, (s.id IS NOT NULL) AS recorded
             FROM backup_snapshot_copies c LEFT JOIN backup_snapshots s ON s.id = c.snapshot_id WHERE c.target = $1`,
          [target.name],
        );
        const known = new Map(copies.map((c) => [c.snapshot_id, c]));
        const touched: string[] = [];
        for (const c of copies) {
          const id = c.snapshot_id;
          if (there.has(id)) {
            if (c.state === "vanished" || c.state === "pruned") {
              await setCopyState(ctx, t, id, target.name, c.recorded ? "present" : "unrecorded");
              r.returned.push(id);
              touched.push(id);
            }
          } else if (c.state === "present") {
            await setCopyState(ctx, t, id, target.name, "vanished");
            await audit(ctx, t, meta, "backup.snapshot.vanished", "backup_snapshot", id, "failure");
            r.vanished.push(id);
            touched.push(id);
          } else if (c.state === "unrecorded" || (c.state === "vanished" && planRetention([...onTarget, id], policy.retention).prune.includes(id))) {
            // Gone from the target, and nothing is lost by that any more: no longer reported.
            await setCopyState(ctx, t, id, target.name, "pruned");
            touched.push(id);
          }
        }
        // Under the lock no run is live: a row still running or interrupted belongs to a run that died.
        const unfinished = new Set((await t.rows<{ id: string }>("SELECT id FROM backup_snapshots WHERE status IN ('running', 'interrupted')")).map((row) => row.id));
        for (const id of onTarget) {
          if (known.has(id)) continue;
          if (unfinished.has(id)) {
            await setCopyState(ctx, t, id, target.name, "present");
            await audit(ctx, t, meta, "backup.snapshot.adopted", "backup_snapshot", id, "success");
            r.adopted.push(id);
            continue;
          }
          await setCopyState(ctx, t, id, target.name, "unrecorded");
          await audit(ctx, t, meta, "backup.snapshot.appeared", "backup_snapshot", id, "success");
          r.appeared.push(id);
        }
        await recomputeStatus(ctx, t, touched);
        const [counts] = await t.rows<{ vanished: string[]; unrecorded: string[] }>(
          `SELECT coalesce(array_agg(snapshot_id ORDER BY snapshot_id) FILTER (WHERE state = 'vanished'), '{}') AS vanished,
                  coalesce(array_agg(snapshot_id ORDER BY snapshot_id) FILTER (WHERE state = 'unrecorded'), '{}') AS unrecorded
             FROM backup_snapshot_copies WHERE target = $1`,
          [target.name],
        );
        const list = (ids: string[]) => `${ids.slice(0, 5).join(", ")}${ids.length > 5 ? `, ... (${ids.length} in all)` : ""}`;
        if (counts!.vanished.length)
          await raiseAlert(
            ctx,
            t,
            "snapshot_vanished",
            `${counts!.vanished.length} snapshot(s) recorded on target ${target.name} are no longer there: ${list(counts!.vanished)}`,
            target.name,
          );
        else await clearAlert(ctx, t, "snapshot_vanished", target.name);
        if (counts!.unrecorded.length)
          await raiseAlert(
            ctx,
            t,
            "snapshot_appeared",
            `${counts!.unrecorded.length} snapshot(s) on target ${target.name} were not written there by this appliance: ${list(counts!.unrecorded)}`,
            target.name,
          );
        else await clearAlert(ctx, t, "snapshot_appeared", target.name);
      });
      if (r.vanished.length || r.appeared.length)
        ctx.log.warn(`backup: target ${target.name} differs from the catalogue: ${r.vanished.length} vanished, ${r.appeared.length} unrecorded`, { target: target.name });
    }
    // A run that died after its manifest was written is a snapshot after all: complete when every target holds it.
    const adopted = [...new Set(out.flatMap((r) => r.adopted))];
    if (adopted.length) {
      await tx(ctx, (t) =>
        t.exec(
          `UPDATE backup_snapshots s
              SET status = CASE WHEN p.targets >= $2 THEN 'complete' ELSE 'partial' END,
                  finished_at = coalesce(s.finished_at, $3),
                  error = CASE WHEN p.targets >= $2 THEN NULL ELSE 'its run ended before recording it; reconcile found it only on ' || p.names END
             FROM (SELECT snapshot_id, count(*) AS targets, string_agg(target, ', ' ORDER BY target) AS names
                     FROM backup_snapshot_copies WHERE state = 'present' AND snapshot_id = ANY($1::text[]) GROUP BY snapshot_id) p
            WHERE p.snapshot_id = s.id AND s.status IN ('running', 'interrupted')`,
          [adopted, policy.targets.length, ctx.clock.now()],
        ),
      );
      ctx.log.info(`backup: reconcile recorded ${adopted.length} snapshot(s) whose run ended before recording them`);
    }
    // A target removed from the policy keeps no alerts open.
    const names = policy.targets.map((d) => d.name);
    const gone = (subject: string) => !names.includes(subject);
    await tx(ctx, async (t) => {
      for (const kind of ["target_failed", "snapshot_vanished", "snapshot_appeared"] as const) await clearAlert(ctx, t, kind, gone);
    });
  } finally {
    await closeAll(targets);
  }
  return { targets: out };
}

/** The periodic reconcile (and `POST`-able from tools): skipped while a snapshot holds the lock. */
export async function reconcileCatalogue(ctx: ApplianceContext, meta: AuditMeta = { actor: SYSTEM_ACTOR }): Promise<ReconcileResult> {
  ctx.rootKey.material(); // target secrets need the unsealed appliance
  const policy = await tx(ctx, (t) => readPolicyRow(ctx, t));
  const lock = await tryJobLock(ctx, BACKUP_LOCKS.snapshot);
  if (!lock) return { skipped: "a snapshot is running", targets: [] };
  try {
    return await reconcileUnderLock(ctx, policy, meta);
  } finally {
    await lock.release();
  }
}

/** Verify and restore name a snapshot retention deleted, or that vanished, for what it is. */
export async function assertStillStored(ctx: ApplianceContext, id: string): Promise<void> {
  const row = await tx(ctx, (t) =>
    t.one<{ status: string; pruned_at: Date | null; gone: string[] }>(
      `SELECT s.status, s.pruned_at, coalesce((SELECT array_agg(c.target ORDER BY c.target) FROM backup_snapshot_copies c WHERE c.snapshot_id = s.id AND c.state = 'vanished'), '{}') AS gone
       FROM backup_snapshots s WHERE s.id = $1`,
      [id],
    ),
  );
  if (row?.status === "pruned")
    throw new NotFound(`snapshot ${id} was pruned by the retention policy on ${row.pruned_at?.toISOString() ?? "an earlier run"}; no target holds it any more`);
  if (row?.status === "vanished")
    throw new NotFound(
      `snapshot ${id} has vanished from ${row.gone.length ? `target ${row.gone.join(", ")}` : "every target"} without being pruned; see the snapshot_vanished alert`,
    );
}

// ---- verify, restore -------------------------------------------------------------------------

export async function targetsHolding(ctx: ApplianceContext, id: string, name?: string): Promise<{ target: SnapshotTarget; others: SnapshotTarget[] }> {
  const policy = await tx(ctx, (t) => readPolicyRow(ctx, t));
  const all = openPolicyTargets(ctx, policy);
  const pick = name ? all.find((t) => t.name === name) : undefined;
  if (name && !pick) {
    await closeAll(all);
    throw new NotFound(`no backup target named ${name}`);
  }
  for (const t of pick ? [pick] : all) {
    try {
      if ((await scanTarget(t)).complete.includes(id)) return { target: t, others: all.filter((x) => x !== t) };
    } catch (err) {
      ctx.log.warn(`backup: target ${t.name} could not be listed: ${(err as Error).message}`);
    }
  }
  await closeAll(all);
  throw new NotFound(`snapshot ${id} is not complete on ${name ? `target ${name}` : "any configured target"}`);
}

export async function verifySnapshotById(ctx: ApplianceContext, id: string, opts: { target?: string; meta?: AuditMeta } = {}): Promise<VerifyResult & { target: string }> {
  const secret = ctx.rootKey.material();
  const meta = opts.meta ?? { actor: SYSTEM_ACTOR };
  try {
    await assertStillStored(ctx, id);
  } catch (err) {
    await tx(ctx, (t) => audit(ctx, t, meta, "backup.verify", "backup_snapshot", id, "failure")).catch(() => {});
    throw err;
  }
  const { target, others } = await targetsHolding(ctx, id, opts.target);
  try {
    const r = await verifySnapshot({ target, snapshotId: id, opener: { applianceSecret: secret }, trustedSigners: [manifestSigner(secret).publicKeyRaw] });
    await tx(ctx, async (t) => {
      await t.rows("UPDATE backup_snapshots SET verified_at = $2 WHERE id = $1 RETURNING id", [id, ctx.clock.now()]);
      await audit(ctx, t, meta, "backup.verify", "backup_snapshot", id, "success");
    });
    return { ...r, target: target.name };
  } catch (err) {
    await tx(ctx, (t) => audit(ctx, t, meta, "backup.verify", "backup_snapshot", id, "failure")).catch(() => {});
    throw err;
  } finally {
    await closeAll([target, ...others]);
  }
}

export type RestoreOutcome = RestoreResult & { target: string; shredList: "reapplied"; scratchDatabase: string | null };

/**
 * Restores one of this appliance's snapshots into an empty database given by URL (never its
 * own live database: that is not empty), or into a new scratch database (`scratch`) created as
 * drills create theirs and kept for inspection (dropped again if the restore fails). Audited on
 * the live appliance. The crypto-shredding list of this appliance's key store is re-applied
 * afterwards, so a key destroyed since the snapshot was taken cannot come back with it.
 */
export async function restoreSnapshotById(
  ctx: ApplianceContext,
  id: string,
  opts: { intoUrl?: string; scratch?: boolean; target?: string; meta?: AuditMeta },
): Promise<RestoreOutcome> {
  const secret = ctx.rootKey.material();
  const { target, others } = await targetsHolding(ctx, id, opts.target);
  const meta = opts.meta ?? { actor: SYSTEM_ACTOR };
  let scratch: Awaited<ReturnType<ReturnType<typeof scratchDatabaseFactory>>> | undefined;
  try {
    if (opts.scratch) scratch = await scratchDatabaseFactory(ctx, "wardkeep_restore")();
    const intoUrl = scratch?.ownerUrl ?? opts.intoUrl;
    if (!intoUrl) throw new Invalid("give the database to restore into (intoUrl), or ask for a scratch database", { field: "intoUrl" });
    const r = await restoreSnapshot({
      target,
      snapshotId: id,
      intoUrl,
      appRole: ctx.db.appRole,
      opener: { applianceSecret: secret },
      trustedSigners: [manifestSigner(secret).publicKeyRaw],
      verifyAuditChain: auditVerifierFor(ctx, "appliance"),
    });
    await tx(ctx, (t) => audit(ctx, t, meta, "backup.restore", "backup_snapshot", id, "success"));
    await reapplyShredList(ctx);
    return { ...r, target: target.name, shredList: "reapplied", scratchDatabase: scratch ? new URL(scratch.ownerUrl).pathname.slice(1) : null };
  } catch (err) {
    await tx(ctx, (t) => audit(ctx, t, meta, "backup.restore", "backup_snapshot", id, "failure")).catch(() => {});
    await scratch?.drop().catch((e: unknown) => ctx.log.warn(`backup: could not drop scratch database after a failed restore: ${(e as Error).message}`));
    throw err;
  } finally {
    await closeAll([target, ...others]);
  }
}

// ---- drills ----------------------------------------------------------------------------------

export type DrillRecord = DrillResult & { id: string; trigger: string; status: "running" | "passed" | "failed" | "interrupted"; startedAt: string; finishedAt: string | null };

type DrillRow = {
  id: string;
  trigger: string;
  status: DrillRecord["status"];
  started_at: Date;
  finished_at: Date | null;
  snapshot_id: string | null;
  target: string | null;
  rto_ms: number | null;
  rpo_ms: string | null;
  phases: DrillResult["phases"];
  checks: DrillResult["checks"];
  error: string | null;
};

function presentDrill(r: DrillRow): DrillRecord {
  return {
    id: r.id,
    trigger: r.trigger,
    status: r.status,
    startedAt: r.started_at.toISOString(),
    finishedAt: r.finished_at?.toISOString() ?? null,
    passed: r.status === "passed",
    snapshotId: r.snapshot_id,
    target: r.target ?? "",
    rtoMs: r.rto_ms,
    rpoMs: num(r.rpo_ms),
    phases: r.phases,
    checks: r.checks,
    error: r.error,
  };
}

export async function listDrills(ctx: ApplianceContext, limit = 50): Promise<DrillRecord[]> {
  return (await tx(ctx, (t) => t.rows<DrillRow>("SELECT * FROM backup_drills ORDER BY seq DESC LIMIT $1", [limit]))).map(presentDrill);
}

export async function getDrill(ctx: ApplianceContext, id: string): Promise<DrillRecord> {
  const rows = await tx(ctx, (t) => t.rows<DrillRow>("SELECT * FROM backup_drills WHERE id = $1::uuid", [id]));
  if (!rows[0]) throw new NotFound(`no drill ${id}`);
  return presentDrill(rows[0]);
}

export async function startDrill(
  ctx: ApplianceContext,
  opts: { trigger: "schedule" | "manual" | "cli"; snapshotId?: string; target?: string; meta?: AuditMeta },
): Promise<{ id: string; done: Promise<DrillRecord> }> {
  const secret = ctx.rootKey.material();
  const meta = opts.meta ?? { actor: SYSTEM_ACTOR };
  const policy: PolicyRow = await tx(ctx, (t) => readPolicyRow(ctx, t));
  if (policy.targets.length === 0) throw new Conflict("no backup target is configured, so there is nothing to drill");
  const lock = await tryJobLock(ctx, BACKUP_LOCKS.drill);
  if (!lock) throw new Conflict("a recovery drill is already running");
  let id: string;
  try {
    id = await tx(ctx, async (t) => {
      await t.rows("UPDATE backup_drills SET status = 'interrupted', finished_at = $1 WHERE status = 'running' RETURNING id", [ctx.clock.now()]);
      const [row] = await t.rows<{ id: string }>("INSERT INTO backup_drills (trigger, status, started_at) VALUES ($1, 'running', $2) RETURNING id", [
        opts.trigger,
        ctx.clock.now(),
      ]);
      return row!.id;
    });
  } catch (err) {
    await lock.release();
    throw err;
  }
  const done = (async (): Promise<DrillRecord> => {
    const targets = openPolicyTargets(ctx, policy);
    let result: DrillResult;
    try {
      const target = (opts.target ? targets.find((t) => t.name === opts.target) : targets[0]) ?? targets[0]!;
      result = await runRecoveryDrill({
        target,
        snapshotId: opts.snapshotId,
        createScratch: scratchDatabaseFactory(ctx),
        appRole: ctx.db.appRole,
        opener: { applianceSecret: secret },
        trustedSigners: [manifestSigner(secret).publicKeyRaw],
        verifyAuditChain: auditVerifierFor(ctx, "appliance"),
        recordedHead: async (snapshotId) => {
          const rows = await tx(ctx, (t) =>
            t.rows<{ seq: string | null; hash: string | null }>("SELECT audit_head_seq::text AS seq, encode(audit_head_hash, 'hex') AS hash FROM backup_snapshots WHERE id = $1", [
              snapshotId,
            ]),
          );
          if (!rows[0]) return undefined;
          return rows[0].seq === null ? null : { seq: rows[0].seq, hash: rows[0].hash! };
        },
        now: () => ctx.clock.now(),
      });
    } catch (err) {
      result = { passed: false, snapshotId: null, target: "", rtoMs: null, rpoMs: null, phases: null, checks: [], error: (err as Error).message };
    } finally {
      await closeAll(targets);
    }
    try {
      await tx(ctx, async (t) => {
        await t.rows(
          `UPDATE backup_drills SET status = $2, finished_at = $3, snapshot_id = $4, target = $5, rto_ms = $6, rpo_ms = $7, phases = $8::jsonb, checks = $9::jsonb, error = $10
            WHERE id = $1::uuid RETURNING id`,
          [
            id,
            result.passed ? "passed" : "failed",
            ctx.clock.now(),
            result.snapshotId,
            result.target || null,
            result.rtoMs,
            result.rpoMs,
            JSON.stringify(result.phases),
            JSON.stringify(result.checks),
            result.error?.slice(0, 1000) ?? null,
          ],
        );
        if (result.passed) {
          await clearAlert(ctx, t, "drill_failed");
          await clearAlert(ctx, t, "drill_stale");
        } else await raiseAlert(ctx, t, "drill_failed", `recovery drill ${id} failed: ${result.error ?? "a check failed"}`);
        await audit(ctx, t, meta, "backup.drill", "backup_drill", id, result.passed ? "success" : "failure");
        await publishWebhookEvent(ctx, t, {
          tenantId: null,
          type: "drill.completed",
          data: { drillId: id, passed: result.passed, snapshotId: result.snapshotId, rtoMs: result.rtoMs, rpoMs: result.rpoMs },
        });
      });
    } finally {
      await lock.release();
    }
    if (result.passed) ctx.log.info(`backup: recovery drill passed (snapshot ${result.snapshotId}, RTO ${result.rtoMs} ms, RPO ${result.rpoMs} ms)`);
    return getDrill(ctx, id);
  })();
  return { id, done };
}

export async function runDrill(ctx: ApplianceContext, opts: Parameters<typeof startDrill>[1]): Promise<DrillRecord> {
  return (await startDrill(ctx, opts)).done;
}

// ---- WORM ------------------------------------------------------------------------------------

export async function wormSelfTest(ctx: ApplianceContext, targetName: string, meta: AuditMeta = { actor: SYSTEM_ACTOR }): Promise<WormCheck> {
  const policy = await tx(ctx, (t) => readPolicyRow(ctx, t));
  const targets = openPolicyTargets(ctx, policy);
  try {
    const target = targets.find((t) => t.name === targetName);
    if (!target) throw new NotFound(`no backup target named ${targetName}`);
    const check = await runWormSelfTest(target, ctx.clock.now());
    await tx(ctx, async (t) => {
      if (check.enforced) await clearAlert(ctx, t, "worm_not_enforced");
      else await raiseAlert(ctx, t, "worm_not_enforced", `target ${targetName} accepted the delete of a retained object: ${check.detail}`);
      await audit(ctx, t, meta, "backup.worm_test", "backup_target", targetName, check.enforced ? "success" : "failure");
    });
    return check;
  } finally {
    await closeAll(targets);
  }
}
