/**
 * Crypto-shredding (DESIGN "Keys"): deleting a patient or a tenant schedules its data keys for
 * destruction after a grace period (cancellable until then); `destroyDueKeys` deletes every
 * version of those keys and records the subject — ids only — in the permanent shredded list.
 * Ciphertexts left anywhere (tables, data snapshots, replicas) are then undecryptable for good.
 *
 * Why a restore cannot undo it: data snapshots exclude the key store; the key store's own
 * backups are kept for less than the grace period, so any key store backup that could be
 * restored already holds the schedule row, and `reapplyShredList` (run by the backup capability
 * after every restore) destroys again whatever the restored key store still has.
 */
import type { Tx } from "../db/sql.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict, NotFound } from "../kernel/errors.js";
import { keyIdOf, type KeySubject } from "./keyring.js";
import { recordKeyEvent, SYSTEM_OPERATOR, type KeyOperator } from "../audit/append.js";
import { LOCKS } from "./keystore.js";

export type ShredSchedule = { subject: string; kind: "tenant" | "patient"; tenantId: string; patientId: string | null; scheduledAt: Date; destroyAfter: Date };

type ScheduleRow = { subject: string; kind: "tenant" | "patient"; tenant_id: string; patient_id: string | null; scheduled_at: Date; destroy_after: Date };

function fromRow(r: ScheduleRow): ShredSchedule {
  return { subject: r.subject, kind: r.kind, tenantId: r.tenant_id, patientId: r.patient_id, scheduledAt: r.scheduled_at, destroyAfter: r.destroy_after };
}

/**
 * Schedules the subject's keys for destruction `graceDays` (config keys.shredGraceDays) from now.
 * Pass the transaction that deletes the patient or tenant, so both commit or neither does.
 * Scheduling again keeps the earlier date.
 */
export async function scheduleShred(ctx: ApplianceContext, subject: KeySubject, options: { transaction?: Tx; graceDays?: number; by?: KeyOperator } = {}): Promise<ShredSchedule> {
  const work = async (t: Tx) => {
    const now = ctx.clock.now();
    const graceDays = options.graceDays ?? ctx.config.keys.shredGraceDays;
    const destroyAfter = new Date(now.getTime() + graceDays * 86_400_000);
    const key = keyIdOf(subject);
    const [already] = await t.rows<{ destroyed_at: Date }>("SELECT destroyed_at FROM keystore.shredded WHERE subject = $1", [key]);
    if (already) throw new Conflict(`${key} was already crypto-shredded on ${already.destroyed_at.toISOString().slice(0, 10)}`);
    await t.exec(
      `INSERT INTO keystore.shred_schedule (subject, kind, tenant_id, patient_id, scheduled_at, destroy_after)
       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (subject) DO NOTHING`,
      [key, subject.kind, subject.tenantId, subject.kind === "patient" ? subject.patientId : null, now, destroyAfter],
    );
    const [row] = await t.rows<ScheduleRow>("SELECT * FROM keystore.shred_schedule WHERE subject = $1", [key]);
    await recordKeyEvent(ctx, t, options.by ?? SYSTEM_OPERATOR, {
      action: "keys.shred.schedule",
      resourceId: key,
      tenantId: subject.tenantId,
      patientId: subject.kind === "patient" ? subject.patientId : null,
      outcome: "success",
      reason: `destroy after ${row!.destroy_after.toISOString()}`,
    });
    ctx.log.info("crypto-shredding scheduled", { subject: key, destroyAfter: row!.destroy_after.toISOString() });
    return fromRow(row!);
  };
  if (options.transaction) return work(options.transaction);
  return inScope(ctx.db.app, { kind: "tenant", tenantId: subject.tenantId }, work);
}

/** Cancels a scheduled destruction (e.g. a patient deleted by mistake) while the grace period runs. */
export async function cancelShred(ctx: ApplianceContext, subject: KeySubject, by: KeyOperator = SYSTEM_OPERATOR): Promise<{ subject: string; cancelled: true }> {
  const key = keyIdOf(subject);
  return inScope(ctx.db.app, { kind: "tenant", tenantId: subject.tenantId }, async (t) => {
    const [done] = await t.rows<{ destroyed_at: Date }>("SELECT destroyed_at FROM keystore.shredded WHERE subject = $1", [key]);
    if (done) throw new Conflict(`too late: ${key} was crypto-shredded on ${done.destroyed_at.toISOString().slice(0, 10)} and cannot be restored`);
    const deleted = await t.rows<{ subject: string }>("DELETE FROM keystore.shred_schedule WHERE subject = $1 AND destroy_after > $2 RETURNING subject", [key, ctx.clock.now()]);
    if (!deleted[0]) {
      const [due] = await t.rows("SELECT 1 FROM keystore.shred_schedule WHERE subject = $1", [key]);
      if (due) throw new Conflict(`too late: the grace period of ${key} has ended and its keys are being destroyed`);
      throw new NotFound(`no crypto-shredding is scheduled for ${key}`);
    }
    await recordKeyEvent(ctx, t, by, {
      action: "keys.shred.cancel",
      resourceId: key,
      tenantId: subject.tenantId,
      patientId: subject.kind === "patient" ? subject.patientId : null,
      outcome: "success",
    });
    ctx.log.info("crypto-shredding cancelled", { subject: key });
    return { subject: key, cancelled: true as const };
  });
}

/** Which of these subjects' keys are destroyed (on the permanent shredded list), read in the caller's transaction. */
export async function shreddedAmong(t: Tx, subjects: KeySubject[]): Promise<Set<string>> {
  if (!subjects.length) return new Set();
  const rows = await t.rows<{ subject: string }>("SELECT subject FROM keystore.shredded WHERE subject = ANY($1::text[])", [subjects.map(keyIdOf)]);
  return new Set(rows.map((r) => r.subject));
}

export async function listShredSchedule(ctx: ApplianceContext): Promise<ShredSchedule[]> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => (await t.rows<ScheduleRow>("SELECT * FROM keystore.shred_schedule ORDER BY destroy_after")).map(fromRow));
}

/** Deletes the key rows of one subject (all versions; a tenant's take its patients' keys with them). */
async function destroyKeysOf(ctx: ApplianceContext, t: Tx, s: ScheduleRow): Promise<string[]> {
  if (s.kind === "patient") {
    return (await t.rows<{ key_id: string }>("DELETE FROM keystore.data_keys WHERE key_id = $1 RETURNING key_id", [s.subject])).map((r) => r.key_id);
  }
  const destroyed = await t.rows<{ key_id: string; kind: string; patient_id: string | null }>(
    "DELETE FROM keystore.data_keys WHERE tenant_id = $1 RETURNING key_id, kind, patient_id",
    [s.tenant_id],
  );
  // Each patient key goes on the list too, so a lookup by its id says "destroyed", not "unknown".
  for (const p of new Map(destroyed.filter((d) => d.kind === "patient").map((d) => [d.key_id, d])).values()) {
    await t.exec(
      `INSERT INTO keystore.shredded (subject, kind, tenant_id, patient_id, scheduled_at, destroyed_at, key_versions)
       VALUES ($1, 'patient', $2, $3, $4, $5, 0) ON CONFLICT (subject) DO NOTHING`,
      [p.key_id, s.tenant_id, p.patient_id, s.scheduled_at, ctx.clock.now()],
    );
  }
  return destroyed.map((r) => r.key_id);
}

function evictLocally(ctx: ApplianceContext, keyIds: string[]) {
  const ids = new Set(keyIds);
  ctx.rootKey.evictDataKeys((slot) => ids.has(slot.slice(0, slot.lastIndexOf("#"))));
}

/**
 * Drops this daemon's cached copies of keys destroyed anywhere (another replica's job, the CLI, a
 * restore re-applying the shredded list) as soon as PostgreSQL's notification arrives (migration
 * 0070); an empty list (the listener was away) drops every cached key. Returns the unsubscribe.
 */
export function followDestroyedKeys(ctx: ApplianceContext): () => void {
  return ctx.db.invalidations.subscribe("data-keys", (keyIds) => (keyIds.length ? evictLocally(ctx, keyIds) : ctx.rootKey.evictDataKeys(() => true)));
}

/**
 * The job: destroys the keys of every subject whose grace period has ended. Other replicas drop
 * their cached copies when the deletion's notification arrives (`followDestroyedKeys`), within
 * keys.dataKeyCacheSeconds at the latest. Works while sealed (deleting needs no key).
 */
export async function destroyDueKeys(ctx: ApplianceContext): Promise<{ destroyed: Array<{ subject: string; keyVersions: number }> }> {
  const result = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    await t.exec("SELECT pg_advisory_xact_lock($1)", [LOCKS.shred]);
    const due = await t.rows<ScheduleRow>("SELECT * FROM keystore.shred_schedule WHERE destroy_after <= $1 ORDER BY destroy_after", [ctx.clock.now()]);
    const destroyed: Array<{ subject: string; keyVersions: number; keyIds: string[] }> = [];
    for (const s of due) {
      const keyIds = await destroyKeysOf(ctx, t, s);
      await t.exec(
        `INSERT INTO keystore.shredded (subject, kind, tenant_id, patient_id, scheduled_at, destroyed_at, key_versions)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (subject) DO NOTHING`,
        [s.subject, s.kind, s.tenant_id, s.patient_id, s.scheduled_at, ctx.clock.now(), keyIds.length],
      );
      await t.exec("DELETE FROM keystore.shred_schedule WHERE subject = $1", [s.subject]);
      await recordKeyEvent(ctx, t, SYSTEM_OPERATOR, {
        action: "keys.shred.destroy",
        resourceId: s.subject,
        tenantId: s.tenant_id,
        patientId: s.patient_id,
        outcome: "success",
        reason: `${keyIds.length} key version(s) destroyed`,
      });
      destroyed.push({ subject: s.subject, keyVersions: keyIds.length, keyIds });
    }
    return destroyed;
  });
  evictLocally(
    ctx,
    result.flatMap((d) => d.keyIds),
  );
  for (const d of result) ctx.log.info("data keys destroyed (crypto-shredded)", { subject: d.subject, keyVersions: d.keyVersions });
  return { destroyed: result.map(({ subject, keyVersions }) => ({ subject, keyVersions })) };
}

/**
 * After any restore (the backup capability calls this): destroys again every key of a subject on
 * the shredded list that the restored key store still holds, then runs the due destructions.
 * Returns the shredded subjects (ids only), so the caller can also drop restored rows of them.
 */
export async function reapplyShredList(
  ctx: ApplianceContext,
): Promise<{ reapplied: number; subjects: Array<{ subject: string; kind: "tenant" | "patient"; tenantId: string; patientId: string | null }> }> {
  const outcome = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    await t.exec("SELECT pg_advisory_xact_lock($1)", [LOCKS.shred]);
    const deleted = await t.rows<{ key_id: string }>(`DELETE FROM keystore.data_keys d
        USING keystore.shredded s
        WHERE (s.kind = 'tenant' AND d.tenant_id = s.tenant_id) OR (s.kind = 'patient' AND d.key_id = s.subject)
        RETURNING d.key_id`);
    await t.exec("DELETE FROM keystore.shred_schedule q USING keystore.shredded s WHERE q.subject = s.subject");
    const subjects = await t.rows<{ subject: string; kind: "tenant" | "patient"; tenant_id: string; patient_id: string | null }>(
      "SELECT subject, kind, tenant_id, patient_id FROM keystore.shredded ORDER BY subject",
    );
    return { deleted: deleted.map((d) => d.key_id), subjects };
  });
  evictLocally(ctx, outcome.deleted);
  if (outcome.deleted.length) ctx.log.warn("restore brought back crypto-shredded keys; destroyed them again", { keyVersions: outcome.deleted.length });
  await destroyDueKeys(ctx);
  return {
    reapplied: outcome.deleted.length,
    subjects: outcome.subjects.map((s) => ({ subject: s.subject, kind: s.kind, tenantId: s.tenant_id, patientId: s.patient_id })),
  };
}
