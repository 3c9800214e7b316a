/**
 * The retention register (docs/retention.md): rules per tenant and record class, holds, the
 * preview of what the next run purges, the batched purge and its signed disposition certificate.
 */
import { sign } from "node:crypto";
import { recordEvent, SYSTEM_ACTOR } from "../audit/append.js";
import { requireRecentMfa } from "../auth/index.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { AppError, Conflict, Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { getAuditSigningKey } from "../keys/index.js";
import { removeAttachmentFile } from "../records/index.js";
import { RECORD_CLASSES, type DispositionCertificateRes, type RecordClass, type RetentionPreviewRes, type RetentionRuleChangeReq, type RetentionRuleRes } from "./schema.js";

/** A rule change that would purge records, sent without confirming the count the preview showed. */
export class PurgeNotConfirmed extends AppError {
  readonly status = 409;
  readonly slug = "retention-purge-unconfirmed";
  readonly title = "This change purges records on the next run: confirm the count";
}

type Trigger = "creation" | "expiry";
type Rule = {
  recordClass: RecordClass;
  trigger: Trigger;
  periodDays: number;
  legalBasis: string | null;
  legalMinimumDays: number | null;
  source: "default" | "tenant";
  updatedAt: string | null;
};

const DEFAULT_KEY: Record<RecordClass, keyof ApplianceContext["config"]["retention"]["defaults"]> = {
  note: "noteDays",
  audio: "audioDays",
  attachment: "attachmentDays",
  appointment: "appointmentDays",
  session: "sessionDays",
  invite: "inviteDays",
};
const TRIGGER: Record<RecordClass, Trigger> = { note: "creation", audio: "creation", attachment: "creation", appointment: "creation", session: "expiry", invite: "expiry" };

/**
 * Per class: the rows past a cutoff that no hold protects. `$1` tenant, `$2` cutoff. Patient
 * holds (legal_holds) and tenant or class holds (retention_holds) are part of the same statement,
 * so a record is only ever selected while no hold stands: a hold fails closed.
 */
const CLASS_HOLD = (cls: RecordClass) =>
  `NOT EXISTS (SELECT 1 FROM retention_holds rh WHERE rh.tenant_id = $1 AND rh.released_at IS NULL AND (rh.record_class IS NULL OR rh.record_class = '${cls}'))`;
const PATIENT_HOLD = (alias: string) =>
  `NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.tenant_id = ${alias}.tenant_id AND h.patient_id = ${alias}.patient_id AND h.released_at IS NULL)`;

const EXPIRED: Record<RecordClass, { table: string; alias: string; past: string; patient: boolean; extra?: string }> = {
  note: { table: "notes", alias: "n", past: "n.created_at < $2", patient: true },
  audio: { table: "attachments", alias: "a", past: "a.created_at < $2", patient: true, extra: "a.kind = 'audio'" },
  attachment: { table: "attachments", alias: "a", past: "a.created_at < $2", patient: true, extra: "a.kind <> 'audio'" },
  appointment: { table: "appointments", alias: "p", past: "p.ends_at < $2", patient: true },
  session: { table: "sessions", alias: "s", past: "s.expires_at < $2", patient: false },
  invite: { table: "invites", alias: "i", past: "i.expires_at < $2", patient: false, extra: "i.accepted_at IS NULL" },
};

function expiredBase(cls: RecordClass): string {
  const e = EXPIRED[cls];
  return [`${e.alias}.tenant_id = $1`, e.past, ...(e.extra ? [e.extra] : [])].join(" AND ");
}

function unheld(cls: RecordClass): string {
  const e = EXPIRED[cls];
  return [CLASS_HOLD(cls), ...(e.patient ? [PATIENT_HOLD(e.alias)] : [])].join(" AND ");
}

// ---- rules ------------------------------------------------------------------------------------

async function readRules(ctx: ApplianceContext, t: Tx, tenantId: string): Promise<Rule[]> {
  const rows = await t.rows<{ record_class: RecordClass; trigger: Trigger; period_days: number; legal_basis: string | null; legal_minimum_days: number | null; updated_at: Date }>(
    "SELECT record_class, trigger, period_days, legal_basis, legal_minimum_days, updated_at FROM retention_rules WHERE tenant_id = $1",
    [tenantId],
  );
  const own = new Map(rows.map((r) => [r.record_class, r]));
  return RECORD_CLASSES.map((cls) => {
    const r = own.get(cls);
    return r
      ? {
          recordClass: cls,
          trigger: r.trigger,
          periodDays: r.period_days,
          legalBasis: r.legal_basis,
          legalMinimumDays: r.legal_minimum_days,
          source: "tenant",
          updatedAt: r.updated_at.toISOString(),
        }
      : {
          recordClass: cls,
          trigger: TRIGGER[cls],
          periodDays: ctx.config.retention.defaults[DEFAULT_KEY[cls]],
          legalBasis: null,
          legalMinimumDays: null,
          source: "default",
          updatedAt: null,
        };
  });
}

function tenantOf(actor: Actor): string {
  const scope = scopeOf(actor);
  if (scope.kind !== "tenant") throw new Invalid("the retention register belongs to a tenant: sign in as its owner, admin or auditor");
  return scope.tenantId;
}

export async function listRules(ctx: ApplianceContext, actor: Actor): Promise<{ rules: RetentionRuleRes[] }> {
  const tenantId = tenantOf(actor);
  authorize(actor, "retention:read", { tenantId });
  return { rules: await inScope(ctx.db.app, { kind: "tenant", tenantId }, (t) => readRules(ctx, t, tenantId)) };
}

const cutoffOf = (now: Date, rule: Rule) => new Date(now.getTime() - rule.periodDays * 86_400_000);

async function previewIn(ctx: ApplianceContext, t: Tx, tenantId: string, rules: Rule[]): Promise<RetentionPreviewRes> {
  const now = ctx.clock.now();
  const classes = [];
  for (const rule of rules) {
    const cutoff = cutoffOf(now, rule);
    const e = EXPIRED[rule.recordClass];
    const [r] = await t.rows<{ purge: number; held: number }>(
      `SELECT count(*) FILTER (WHERE ${unheld(rule.recordClass)})::int AS purge, count(*) FILTER (WHERE NOT (${unheld(rule.recordClass)}))::int AS held
         FROM ${e.table} ${e.alias} WHERE ${expiredBase(rule.recordClass)}`,
      [tenantId, cutoff],
    );
    classes.push({ recordClass: rule.recordClass, cutoff: cutoff.toISOString(), wouldPurge: r?.purge ?? 0, heldBack: r?.held ?? 0 });
  }
  return { classes, total: classes.reduce((s, c) => s + c.wouldPurge, 0) };
}

/** What the next run would purge under the tenant's rules (and with `proposed`, under that change). */
export async function previewPurge(ctx: ApplianceContext, actor: Actor, proposed?: { recordClass: RecordClass; periodDays: number }): Promise<RetentionPreviewRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "retention:read", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const rules = (await readRules(ctx, t, tenantId)).map((r) => (proposed && r.recordClass === proposed.recordClass ? { ...r, periodDays: proposed.periodDays } : r));
    return previewIn(ctx, t, tenantId, rules);
  });
}

/**
 * Changes one class's rule. Refused (400) below the legal minimum the tenant entered (kept from
 * the current rule unless the change sets it). When the new rule would purge anything on the next
 * run, it needs step-up MFA and `confirmPurgeCount` equal to that count (409 with the per-class
 * preview otherwise). Audited with before and after.
 */
export async function changeRule(
  ctx: ApplianceContext,
  actor: Actor,
  cls: RecordClass,
  change: RetentionRuleChangeReq,
  meta: RequestMeta,
): Promise<{ rule: RetentionRuleRes; preview: RetentionPreviewRes }> {
  const tenantId = tenantOf(actor);
  authorize(actor, "retention:update", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    await t.exec("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", [tenantId]); // one rule change per tenant at a time
    const rules = await readRules(ctx, t, tenantId);
    const before = rules.find((r) => r.recordClass === cls)!;
    const minimum = change.legalMinimumDays !== undefined ? change.legalMinimumDays : before.legalMinimumDays;
    if (minimum !== null && change.periodDays < minimum) {
      throw new Invalid(`a ${cls} rule of ${change.periodDays} days is shorter than the legal minimum of ${minimum} days entered for this tenant`, {
        legalMinimumDays: minimum,
      });
    }
    const after: Rule = {
      ...before,
      periodDays: change.periodDays,
      legalBasis: change.legalBasis !== undefined ? change.legalBasis || null : before.legalBasis,
      legalMinimumDays: minimum,
      source: "tenant",
      updatedAt: ctx.clock.now().toISOString(),
    };
    const preview = await previewIn(
      ctx,
      t,
      tenantId,
      rules.map((r) => (r.recordClass === cls ? after : r)),
    );
    const current = await previewIn(ctx, t, tenantId, rules);
    const added = preview.classes.find((c) => c.recordClass === cls)!.wouldPurge - current.classes.find((c) => c.recordClass === cls)!.wouldPurge;
    const wouldPurge = preview.classes.find((c) => c.recordClass === cls)!.wouldPurge;
    if (added > 0 || (wouldPurge > 0 && change.periodDays < before.periodDays)) {
      requireRecentMfa(actor, ctx);
      if (change.confirmPurgeCount !== wouldPurge) {
        throw new PurgeNotConfirmed(`this rule purges ${wouldPurge} ${cls} record(s) on the next run; send confirmPurgeCount: ${wouldPurge} to apply it`, { preview });
      }
    }
    await t.exec(
      `INSERT INTO retention_rules (tenant_id, record_class, trigger, period_days, legal_basis, legal_minimum_days, updated_at, updated_by)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (tenant_id, record_class) DO UPDATE SET period_days = EXCLUDED.period_days, legal_basis = EXCLUDED.legal_basis,
         legal_minimum_days = EXCLUDED.legal_minimum_days, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by`,
      [tenantId, cls, after.trigger, after.periodDays, after.legalBasis, after.legalMinimumDays, ctx.clock.now(), actor.userId],
    );
    const summary = (r: Rule) => ({ periodDays: r.periodDays, legalMinimumDays: r.legalMinimumDays, source: r.source, legalBasisSet: r.legalBasis !== null });
    await recordEvent(
      ctx,
      t,
      actor,
      {
        tenantId,
        action: "retention.rule.change",
        resourceType: "retention_rule",
        resourceId: cls,
        outcome: "success",
        reason: JSON.stringify({ before: summary(before), after: summary(after), wouldPurge }),
      },
      meta,
    );
    return { rule: after, preview };
  });
}

// ---- holds ------------------------------------------------------------------------------------

type HoldRow = {
  id: string;
  record_class: RecordClass | null;
  reason: string;
  placed_at: Date;
  placed_by: string | null;
  released_at: Date | null;
  released_by: string | null;
  release_reason: string | null;
};
const holdView = (h: HoldRow) => ({
  id: h.id,
  recordClass: h.record_class,
  reason: h.reason,
  placedAt: h.placed_at.toISOString(),
  placedBy: h.placed_by,
  releasedAt: h.released_at?.toISOString() ?? null,
  releasedBy: h.released_by,
  releaseReason: h.release_reason,
});

export async function listHolds(ctx: ApplianceContext, actor: Actor) {
  const tenantId = tenantOf(actor);
  authorize(actor, "legal_hold:list", { tenantId });
  const rows = await inScope(ctx.db.app, { kind: "tenant", tenantId }, (t) =>
    t.rows<HoldRow>("SELECT * FROM retention_holds WHERE tenant_id = $1 ORDER BY placed_at DESC LIMIT 500", [tenantId]),
  );
  return { holds: rows.map(holdView) };
}

/** A hold on the whole tenant (recordClass null) or one class: nothing under it is purged until released. */
export async function placeHold(ctx: ApplianceContext, actor: Actor, input: { recordClass: RecordClass | null; reason: string }, meta: RequestMeta) {
  const tenantId = tenantOf(actor);
  authorize(actor, "legal_hold:place", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [row] = await t.rows<HoldRow>("INSERT INTO retention_holds (tenant_id, record_class, reason, placed_at, placed_by) VALUES ($1, $2, $3, $4, $5) RETURNING *", [
      tenantId,
      input.recordClass,
      input.reason,
      ctx.clock.now(),
      actor.userId,
    ]);
    await recordEvent(
      ctx,
      t,
      actor,
      { tenantId, action: "retention.hold.place", resourceType: "retention_hold", resourceId: row!.id, outcome: "success", reason: `class=${input.recordClass ?? "all"}` },
      meta,
    );
    return holdView(row!);
  });
}

/** Releases a hold with a reason (step-up: legal_hold:release), audited with the reason. */
export async function releaseHold(ctx: ApplianceContext, actor: Actor, id: string, reason: string, meta: RequestMeta) {
  const tenantId = tenantOf(actor);
  authorize(actor, "legal_hold:release", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [hold] = await t.rows<HoldRow>("SELECT * FROM retention_holds WHERE id = $1 AND tenant_id = $2 FOR UPDATE", [id, tenantId]);
    if (!hold) throw new NotFound("no such retention hold in this tenant");
    if (hold.released_at) throw new Conflict(`this hold was already released on ${hold.released_at.toISOString()}`);
    const [row] = await t.rows<HoldRow>("UPDATE retention_holds SET released_at = $2, released_by = $3, release_reason = $4 WHERE id = $1 RETURNING *", [
      id,
      ctx.clock.now(),
      actor.userId,
      reason,
    ]);
    await recordEvent(ctx, t, actor, { tenantId, action: "retention.hold.release", resourceType: "retention_hold", resourceId: id, outcome: "success", reason }, meta);
    return holdView(row!);
  });
}

// ---- the purge --------------------------------------------------------------------------------

type ClassCounts = { count: number; batches: number; firstId: string | null; lastId: string | null };
type RunRow = {
  id: string;
  tenant_id: string;
  status: "running" | "finished";
  started_at: Date;
  finished_at: Date | null;
  rules: Record<RecordClass, { periodDays: number; trigger: Trigger; cutoff: string; legalBasis: string | null; source: string }>;
  counts: Partial<Record<RecordClass, ClassCounts>>;
  certificate: string | null;
};

/**
 * One tenant's purge: resumes the tenant's unfinished run (the rules and cutoffs it recorded, the
 * counts its committed batches left) or starts one, purges class by class in batches of
 * retention.batchSize, then signs the disposition certificate.
 */
export async function purgeTenant(
  ctx: ApplianceContext,
  tenantId: string,
  opts: { jobRunId?: string | null; maxBatches?: number } = {},
): Promise<{ runId: string; destroyed: number; finished: boolean }> {
  const run = await openRun(ctx, tenantId, opts.jobRunId ?? null);
  let batches = 0;
  for (const cls of RECORD_CLASSES) {
    for (;;) {
      if (opts.maxBatches !== undefined && batches >= opts.maxBatches) return { runId: run.id, destroyed: 0, finished: false };
      const n = await purgeBatch(ctx, run, cls);
      if (n === 0) break;
      batches++;
    }
  }
  const finished = await certify(ctx, run.id, tenantId);
  return { runId: run.id, destroyed: Object.values(finished.counts).reduce((s, c) => s + (c?.count ?? 0), 0), finished: true };
}

async function openRun(ctx: ApplianceContext, tenantId: string, jobRunId: string | null): Promise<RunRow> {
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [open] = await t.rows<RunRow>("SELECT * FROM retention_runs WHERE tenant_id = $1 AND status = 'running' ORDER BY started_at LIMIT 1 FOR UPDATE", [tenantId]);
    if (open) return open;
    const now = ctx.clock.now();
    const rules = Object.fromEntries(
      (await readRules(ctx, t, tenantId)).map((r) => [
        r.recordClass,
        { periodDays: r.periodDays, trigger: r.trigger, cutoff: cutoffOf(now, r).toISOString(), legalBasis: r.legalBasis, source: r.source },
      ]),
    );
    const [row] = await t.rows<RunRow>("INSERT INTO retention_runs (tenant_id, job_run_id, started_at, rules) VALUES ($1, $2, $3, $4) RETURNING *", [
      tenantId,
      jobRunId,
      now,
      JSON.stringify(rules),
    ]);
    return row!;
  });
}

/**
 * One short transaction: delete up to batchSize expired, unheld rows of a class (`FOR UPDATE SKIP
 * LOCKED`: rows a request holds are left for the next batch), add the count and id range to the
 * run's row, and write one audit event with them. Committed together or not at all, so a killed
 * purge loses nothing and counts nothing twice.
 */
async function purgeBatch(ctx: ApplianceContext, run: RunRow, cls: RecordClass): Promise<number> {
  const e = EXPIRED[cls];
  const cutoff = new Date(run.rules[cls].cutoff);
  const { n, files } = await inScope(ctx.db.app, { kind: "tenant", tenantId: run.tenant_id }, async (t) => {
    // The records history guard lets a purge transaction that names its tenant delete note versions.
    await t.exec("SELECT set_config('wardkeep.purge_tenant', $1, true)", [run.tenant_id]);
    const victims = `SELECT ${e.alias}.id FROM ${e.table} ${e.alias} WHERE ${expiredBase(cls)} AND ${unheld(cls)} ORDER BY ${e.alias}.id LIMIT $3 FOR UPDATE OF ${e.alias} SKIP LOCKED`;
    const statement =
      cls === "note"
        ? `WITH victims AS (${victims}),
              versions AS (DELETE FROM note_versions WHERE note_id IN (SELECT id FROM victims) RETURNING 1),
              gone AS (DELETE FROM notes WHERE id IN (SELECT id FROM victims) RETURNING id)
           SELECT count(*)::int AS n, min(id::text) AS first, max(id::text) AS last, '{}'::text[] AS files, (SELECT count(*) FROM versions)::int AS versions FROM gone`
        : `WITH victims AS (${victims}),
              gone AS (DELETE FROM ${e.table} WHERE id IN (SELECT id FROM victims) RETURNING id${e.table === "attachments" ? ", storage_path" : ", NULL::text AS storage_path"})
           SELECT count(*)::int AS n, min(id::text) AS first, max(id::text) AS last, coalesce(array_agg(storage_path) FILTER (WHERE storage_path IS NOT NULL), '{}') AS files FROM gone`;
    const [r] = await t.rows<{ n: number; first: string | null; last: string | null; files: string[] }>(statement, [run.tenant_id, cutoff, ctx.config.retention.batchSize]);
    if (!r || r.n === 0) return { n: 0, first: null, last: null, files: [] };
    await t.exec(
      `UPDATE retention_runs SET counts = jsonb_set(counts, ARRAY[$2::text], jsonb_build_object(
          'count', coalesce((counts -> $2 ->> 'count')::int, 0) + $3,
          'batches', coalesce((counts -> $2 ->> 'batches')::int, 0) + 1,
          'firstId', coalesce(counts -> $2 ->> 'firstId', $4),
          'lastId', $5::text)) WHERE id = $1`,
      [run.id, cls, r.n, r.first, r.last],
    );
    await recordEvent(
      ctx,
      t,
      SYSTEM_ACTOR,
      {
        tenantId: run.tenant_id,
        action: "retention.purge.batch",
        resourceType: "retention_run",
        resourceId: run.id,
        outcome: "success",
        reason: JSON.stringify({ class: cls, count: r.n, firstId: r.first, lastId: r.last }),
      },
      null,
    );
    return r;
  });
  // The file's key was in the deleted row: the file is unreadable already; removing it frees the space.
  for (const f of files) await removeAttachmentFile(ctx, f).catch(() => undefined);
  return n;
}

/** The certificate's canonical text: fixed key order, so anyone can re-serialise and compare. */
function certificateText(run: RunRow, finishedAt: string, signedBy: string): string {
  const destroyed = Object.fromEntries(RECORD_CLASSES.map((cls) => [cls, run.counts[cls] ?? { count: 0, batches: 0, firstId: null, lastId: null }]));
  return JSON.stringify({
    format: "wardkeep-disposition-certificate/1",
    runId: run.id,
    tenantId: run.tenant_id,
    startedAt: run.started_at.toISOString(),
    finishedAt,
    rules: Object.fromEntries(RECORD_CLASSES.map((cls) => [cls, run.rules[cls]])),
    destroyed,
    auditAction: "retention.purge.batch",
    signedBy,
  });
}

async function certify(ctx: ApplianceContext, runId: string, tenantId: string): Promise<RunRow> {
  const key = await getAuditSigningKey(ctx);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [run] = await t.rows<RunRow>("SELECT * FROM retention_runs WHERE id = $1 FOR UPDATE", [runId]);
    const finishedAt = ctx.clock.now();
    const text = certificateText(run!, finishedAt.toISOString(), key.keyId);
    const signature = sign(null, Buffer.from(text, "utf8"), key.privateKey);
    const [done] = await t.rows<RunRow>(
      "UPDATE retention_runs SET status = 'finished', finished_at = $2, certificate = $3, signature = $4, key_id = $5, public_key = $6 WHERE id = $1 RETURNING *",
      [runId, finishedAt, text, signature, key.keyId, Buffer.from(key.publicKeyDer, "base64")],
    );
    const total = Object.values(run!.counts).reduce((s, c) => s + (c?.count ?? 0), 0);
    await recordEvent(
      ctx,
      t,
      SYSTEM_ACTOR,
      { tenantId, action: "retention.purge.certify", resourceType: "retention_run", resourceId: runId, outcome: "success", reason: `destroyed=${total}` },
      null,
    );
    return done!;
  });
}

/** Every tenant's purge (the `retention-purge` job). */
export async function purgeAllTenants(
  ctx: ApplianceContext,
  jobRunId: string | null,
  onTenant?: (tenantId: string, result: { runId: string; destroyed: number }) => void,
): Promise<{ tenants: number; destroyed: number }> {
  const tenants = await inScope(ctx.db.app, { kind: "appliance" }, (t) => t.rows<{ id: string }>("SELECT id FROM tenants ORDER BY id"));
  let destroyed = 0;
  for (const { id } of tenants) {
    const r = await purgeTenant(ctx, id, { jobRunId });
    onTenant?.(id, r);
    destroyed += r.destroyed;
  }
  return { tenants: tenants.length, destroyed };
}

export async function listRuns(ctx: ApplianceContext, actor: Actor) {
  const tenantId = tenantOf(actor);
  authorize(actor, "retention:read", { tenantId });
  const rows = await inScope(ctx.db.app, { kind: "tenant", tenantId }, (t) =>
    t.rows<RunRow>("SELECT * FROM retention_runs WHERE tenant_id = $1 ORDER BY started_at DESC LIMIT 200", [tenantId]),
  );
  return {
    runs: rows.map((r) => ({
      id: r.id,
      status: r.status,
      startedAt: r.started_at.toISOString(),
      finishedAt: r.finished_at?.toISOString() ?? null,
      counts: r.counts as Record<string, ClassCounts>,
      certified: r.certificate !== null,
    })),
  };
}

/** The signed disposition certificate of a finished run, for auditors (audited as a read). */
export async function readCertificate(ctx: ApplianceContext, actor: Actor, runId: string, meta: RequestMeta): Promise<DispositionCertificateRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "retention:read", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [r] = await t.rows<{ certificate: string | null; signature: Buffer | null; key_id: string | null; public_key: Buffer | null }>(
      "SELECT certificate, signature, key_id, public_key FROM retention_runs WHERE id = $1 AND tenant_id = $2",
      [runId, tenantId],
    );
    if (!r) throw new NotFound("no such retention run in this tenant");
    if (!r.certificate) throw new Conflict("this run has not finished: its certificate is signed when it does");
    await recordEvent(ctx, t, actor, { tenantId, action: "retention.certificate.read", resourceType: "retention_run", resourceId: runId, outcome: "success" }, meta);
    return { certificate: r.certificate, signature: r.signature!.toString("base64"), publicKeySpki: r.public_key!.toString("base64"), keyId: r.key_id! };
  });
}
