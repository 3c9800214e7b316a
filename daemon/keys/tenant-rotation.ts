/**
 * Rotating a tenant's keys (docs/keys.md "Rotating a tenant's keys"). Patient data is encrypted
 * under one data key per patient (so one patient can be crypto-shredded alone), so "rotate the
 * tenant's key" means: a new version of every data key of the tenant (its patients' keys, and the
 * tenant key where one exists), then re-encryption of every value they cover.
 *
 * The run is a row in `keystore.tenant_rotations` and reads as three phases, each resumable:
 *   1. rotate keys: batches of keys in key id order, each batch with the cursor update in one
 *      transaction, so a kill loses nothing and rotates no key twice;
 *   2. re-encrypt: the keys' own rotations (linked to the run) are re-encrypted batch by batch
 *      (./rotation.ts `reencryptPending`), which records its progress per key;
 *   3. finish: once no linked rotation is open, the run is complete (audited).
 * A killed CLI run, or a daemon restart, resumes the open run: `wardkeep keys rotate --tenant`
 * again, the Keys page's button, or the background key maintenance on any replica.
 */
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { Conflict, NotFound } from "../kernel/errors.js";
import { recordKeyEvent, SYSTEM_OPERATOR, type KeyOperator } from "../audit/append.js";
import { rotateDataKeyIn, tenantKeyId } from "./data-key-rotation.js";
import { LOCKS } from "./keystore.js";
import { reencryptPending } from "./rotation.js";

export type TenantRotationState = "rotating-keys" | "re-encrypting" | "finished";

/** Progress of one run, as the Keys page, `GET /keys` and the CLI show it (ids and counts only). */
export type TenantRotation = {
  id: string;
  tenantId: string;
  state: TenantRotationState;
  startedAt: string;
  /** Data keys of the tenant when the run started. */
  keysTotal: number;
  /** Keys given their new version so far. */
  keysRotated: number;
  /** Keys whose values are all re-encrypted under the new version. */
  keysReencrypted: number;
  /** Values re-encrypted so far. */
  valuesReencrypted: number;
  keysRotatedAt: string | null;
  completedAt: string | null;
};

type RunRow = {
  id: string;
  tenant_id: string;
  started_at: Date;
  keys_total: number;
  keys_rotated: number;
  cursor: string | null;
  keys_rotated_at: Date | null;
  completed_at: Date | null;
  keys_reencrypted: string;
  values_reencrypted: string;
};

/** Same lock space as the other key locks (./keystore.ts LOCKS), one more number. */
const TENANT_ROTATION_LOCK = LOCKS.reencrypt;

const RUN_COLUMNS = `r.id::text AS id, r.tenant_id, r.started_at, r.keys_total, r.keys_rotated, r.cursor, r.keys_rotated_at, r.completed_at,
  (SELECT count(*) FROM keystore.rotations k WHERE k.tenant_rotation_id = r.id AND k.completed_at IS NOT NULL) AS keys_reencrypted,
  (SELECT coalesce(sum(k.items_done), 0) FROM keystore.rotations k WHERE k.tenant_rotation_id = r.id) AS values_reencrypted`;

function view(row: RunRow): TenantRotation {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    state: row.completed_at ? "finished" : row.keys_rotated_at ? "re-encrypting" : "rotating-keys",
    startedAt: row.started_at.toISOString(),
    keysTotal: row.keys_total,
    keysRotated: row.keys_rotated,
    keysReencrypted: Number(row.keys_reencrypted),
    valuesReencrypted: Number(row.values_reencrypted),
    keysRotatedAt: row.keys_rotated_at ? row.keys_rotated_at.toISOString() : null,
    completedAt: row.completed_at ? row.completed_at.toISOString() : null,
  };
}

/** The keys a run covers: the tenant's field-encryption keys that existed when it started. */
const KEYS_OF_RUN = `FROM keystore.data_keys WHERE tenant_id = $1 AND state = 'active' AND kind IN ('tenant', 'patient') AND created_at <= $2`;

/**
 * Starts a run for the tenant, or returns the open one (`resumed`): a second click, a second
 * replica or a re-run after a kill continues the same run instead of rotating every key again.
 */
export async function startTenantRotation(ctx: ApplianceContext, tenantId: string, by: KeyOperator): Promise<{ rotation: TenantRotation; resumed: boolean }> {
  ctx.rootKey.assertUnsealed();
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    await t.exec("SELECT pg_advisory_xact_lock($1, hashtext($2))", [TENANT_ROTATION_LOCK, tenantId]);
    const [open] = await t.rows<RunRow>(`SELECT ${RUN_COLUMNS} FROM keystore.tenant_rotations r WHERE r.tenant_id = $1 AND r.completed_at IS NULL`, [tenantId]);
    if (open) return { rotation: view(open), resumed: true };
    const [known] = await t.rows<{ n: string }>("SELECT (SELECT count(*) FROM tenants WHERE id = $1) + (SELECT count(*) FROM keystore.data_keys WHERE tenant_id = $1) AS n", [
      tenantId,
    ]);
    if (Number(known?.n ?? 0) === 0) throw new NotFound(`no tenant ${tenantId}`);
    const [shredding] = await t.rows("SELECT 1 FROM keystore.shred_schedule WHERE kind = 'tenant' AND tenant_id = $1", [tenantId]);
    if (shredding) throw new Conflict("the tenant's keys are scheduled for crypto-shredding; cancel that first or let it happen");
    const [clock] = await t.rows<{ now: Date }>("SELECT now() AS now");
    const now = clock!.now;
    const [count] = await t.rows<{ n: string }>(`SELECT count(*) AS n ${KEYS_OF_RUN}`, [tenantId, now]);
    const keysTotal = Number(count?.n ?? 0);
    const [row] = await t.rows<{ id: string }>("INSERT INTO keystore.tenant_rotations (tenant_id, started_at, keys_total) VALUES ($1, $2, $3) RETURNING id::text AS id", [
      tenantId,
      now,
      keysTotal,
    ]);
    await recordKeyEvent(ctx, t, by, {
      action: "keys.rotate",
      resourceId: tenantKeyId(tenantId),
      tenantId,
      outcome: "success",
      reason: `tenant rotation ${row!.id} started: ${keysTotal} data key(s) get a new version, their values are re-encrypted`,
    });
    ctx.log.info("tenant key rotation started", { tenantId, rotationId: row!.id, keys: keysTotal });
    const [started] = await t.rows<RunRow>(`SELECT ${RUN_COLUMNS} FROM keystore.tenant_rotations r WHERE r.id = $1`, [row!.id]);
    return { rotation: view(started!), resumed: false };
  });
}

export type RunOptions = {
  /** Values per transaction in phase 2 (default keys.reencryptBatchSize); keys per transaction in phase 1, at most 100. */
  batchSize?: number;
  /** Stop after this many batches (the background maintenance bounds each pass); the run stays open. */
  maxBatches?: number;
  /** Called after each batch with the progress persisted so far. */
  onProgress?: (progress: TenantRotation) => void;
  by?: KeyOperator;
};

/** Continues a run through its phases as far as `maxBatches` allows; returns where it stands. */
export async function continueTenantRotation(ctx: ApplianceContext, id: string, options: RunOptions = {}): Promise<TenantRotation> {
  ctx.rootKey.assertUnsealed();
  const batchSize = options.batchSize ?? ctx.config.keys.reencryptBatchSize;
  const budget = { left: options.maxBatches ?? Number.POSITIVE_INFINITY };
  const by = options.by ?? SYSTEM_OPERATOR;
  // A key batch holds each key's write lock until it commits: kept small so writers barely wait.
  let progress = await rotateKeysPhase(ctx, id, Math.min(batchSize, 100), budget, by, options.onProgress);
  if (progress.state === "re-encrypting") progress = await reencryptPhase(ctx, id, batchSize, budget, options.onProgress);
  if (progress.state === "re-encrypting") {
    progress = await finishPhase(ctx, id, by);
    if (progress.state === "finished") options.onProgress?.(progress);
  }
  return progress;
}

async function readRun(t: Tx, id: string, lock = false): Promise<RunRow> {
  const [row] = await t.rows<RunRow>(`SELECT ${RUN_COLUMNS} FROM keystore.tenant_rotations r WHERE r.id = $1${lock ? " FOR UPDATE OF r" : ""}`, [id]);
  if (!row) throw new NotFound(`no tenant key rotation ${id}`);
  return row;
}

/** Phase 1: a new version of each key, a batch per transaction together with the cursor. */
async function rotateKeysPhase(
  ctx: ApplianceContext,
  id: string,
  batchSize: number,
  budget: { left: number },
  by: KeyOperator,
  onProgress?: (p: TenantRotation) => void,
): Promise<TenantRotation> {
  for (;;) {
    const { row, done } = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
      // The row lock makes concurrent runners (two replicas, the CLI and the daemon) take turns.
      const run = await readRun(t, id, true);
      if (run.keys_rotated_at || budget.left <= 0) return { row: run, done: true };
      const keys = await t.rows<{ key_id: string }>(`SELECT key_id ${KEYS_OF_RUN} AND ($3::text IS NULL OR key_id > $3) ORDER BY key_id LIMIT $4`, [
        run.tenant_id,
        run.started_at,
        run.cursor,
        batchSize,
      ]);
      let rotated = 0;
      for (const { key_id } of keys) {
        // A key shredded meanwhile has no active version: nothing to rotate.
        if (await rotateDataKeyIn(ctx, t, key_id, "operator", by, { tenantRotationId: id, audit: false })) rotated++;
      }
      const last = keys.length < batchSize;
      await t.exec(`UPDATE keystore.tenant_rotations SET keys_rotated = keys_rotated + $2, cursor = coalesce($3, cursor)${last ? ", keys_rotated_at = now()" : ""} WHERE id = $1`, [
        id,
        rotated,
        keys.at(-1)?.key_id ?? null,
      ]);
      budget.left--;
      return { row: await readRun(t, id), done: last };
    });
    onProgress?.(view(row));
    if (done) return view(row);
  }
}

/** Phase 2: re-encryption of the run's keys, batch by batch (progress is kept per key). */
async function reencryptPhase(ctx: ApplianceContext, id: string, batchSize: number, budget: { left: number }, onProgress?: (p: TenantRotation) => void): Promise<TenantRotation> {
  for (;;) {
    if (budget.left <= 0) break;
    const outcome = await reencryptPending(ctx, { batchSize, maxBatches: Math.min(budget.left, 10), tenantRotationId: id });
    budget.left -= Math.max(1, Math.ceil(outcome.rewritten / batchSize));
    const progress = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => view(await readRun(t, id)));
    onProgress?.(progress);
    // Nothing moved: what is left is locked by requests or does not decrypt; the next pass retries.
    if (outcome.open === 0 || (outcome.rewritten === 0 && outcome.completed.length === 0)) return progress;
  }
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => view(await readRun(t, id)));
}

/** Phase 3: complete once every key's re-encryption is; audited once for the tenant. */
async function finishPhase(ctx: ApplianceContext, id: string, by: KeyOperator): Promise<TenantRotation> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const run = await readRun(t, id, true);
    if (run.completed_at) return view(run);
    const [open] = await t.rows("SELECT 1 FROM keystore.rotations WHERE tenant_rotation_id = $1 AND completed_at IS NULL LIMIT 1", [id]);
    if (open) return view(run);
    await t.exec("UPDATE keystore.tenant_rotations SET completed_at = now() WHERE id = $1", [id]);
    await recordKeyEvent(ctx, t, by, {
      action: "keys.rotate",
      resourceId: tenantKeyId(run.tenant_id),
      tenantId: run.tenant_id,
      outcome: "success",
      reason: `tenant rotation ${id} finished: ${run.keys_rotated} data key(s) at a new version, ${run.values_reencrypted} value(s) re-encrypted`,
    });
    ctx.log.info("tenant key rotation finished", { tenantId: run.tenant_id, rotationId: id, keys: run.keys_rotated, values: Number(run.values_reencrypted) });
    return view(await readRun(t, id));
  });
}

/** Starts (or resumes) and runs to the end: what the CLI does, printing progress as it goes. */
export async function rotateTenantKeys(
  ctx: ApplianceContext,
  tenantId: string,
  by: KeyOperator,
  options: Omit<RunOptions, "by" | "maxBatches"> = {},
): Promise<{ rotation: TenantRotation; resumed: boolean }> {
  const { rotation, resumed } = await startTenantRotation(ctx, tenantId, by);
  const finished = await continueTenantRotation(ctx, rotation.id, { ...options, by });
  return { rotation: finished, resumed };
}

/** Continues every open run a little (the background key maintenance, after a restart or a kill). */
export async function continueOpenTenantRotations(ctx: ApplianceContext, options: { maxBatches?: number } = {}): Promise<TenantRotation[]> {
  const open = await inScope(ctx.db.app, { kind: "appliance" }, (t) =>
    t.rows<{ id: string }>("SELECT id::text AS id FROM keystore.tenant_rotations WHERE completed_at IS NULL ORDER BY id"),
  );
  const out: TenantRotation[] = [];
  for (const { id } of open) out.push(await continueTenantRotation(ctx, id, { maxBatches: options.maxBatches ?? 20 }));
  return out;
}

/** The latest run of each tenant (open ones, and the last finished one), for status screens. */
export async function listTenantRotations(ctx: ApplianceContext, t: Tx): Promise<TenantRotation[]> {
  const rows = await t.rows<RunRow>(
    `SELECT ${RUN_COLUMNS} FROM (SELECT DISTINCT ON (tenant_id) * FROM keystore.tenant_rotations ORDER BY tenant_id, started_at DESC, id DESC) r ORDER BY r.started_at DESC`,
  );
  return rows.map(view);
}
