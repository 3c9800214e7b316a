/**
 * The retention register (docs/retention.md): rules per tenant and record class, holds, the
 * preview of what the next run purges, the batched purge and its signed disposition certificate.
 */
import { sign } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import { recordEvent, SYSTEM_ACTOR } from "../audit/append.js";
import { requireRecentMfa } from "../auth/index.js";
import type { ApplianceContext } from "../context.js";
import { inScope, SqlPool, type Tx } from "../db/sql.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { AppError, Conflict, Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { removeExportPack } from "../audit/index.js";
import { destroyDueKeys, getAuditSigningKey, scheduleShred, shreddedAmong } from "../keys/index.js";
import { patientsBornBefore, reducePatientToTombstone, removeAttachmentFile } from "../records/index.js";
import {
  RECORD_CLASSES,
  type DispositionCertificateRes,
  type RecordClass,
  type RetentionPreviewRes,
  type RetentionRuleChangeReq,
  type RetentionRuleRes,
  type Trigger,
} from "./schema.js";

/** A rule change that would purge records, sent without confirming the count the preview showed. */
export class PurgeNotConfirmed extends AppError {
  readonly status = 409;
  readonly slug = "retention-purge-unconfirmed";
  readonly title = "This change purges records on the next run: confirm the count";
}

type Rule = {
  recordClass: RecordClass;
  trigger: Trigger;
  triggers: Trigger[];
  periodDays: number;
  legalBasis: string | null;
  legalMinimumDays: number | null;
  source: "default" | "tenant";
  updatedAt: string | null;
};

type Defaults = ApplianceContext["config"]["retention"]["defaults"];

/**
 * One record class: its table, the patient a row belongs to (patient holds, last encounter, age
 * of majority), the date its period counts from per trigger, and what else a row must be before
 * it may go. In every SQL fragment `$1` is the tenant and `$2` the cutoff.
 */
type ClassDef = {
  table: string;
  alias: string;
  patientCol: string | null;
  /** The triggers the class accepts; the first is the default. */
  triggers: Trigger[];
  /** The column (or expression) a trigger counts from; a trigger without one purges nothing (`NO_DATE`). */
  anchor: Partial<Record<Trigger, string>>;
  extra?: string;
  /**
   * The column holding the row's creation time, when an index on (tenant_id, that column, id)
   * lets the purge take the class in creation order (retention.victimOrder).
   */
  creationOrder?: string;
  /** The class's default period from config. */
  defaultDays: (ctx: ApplianceContext) => number;
  /** Why this class is never purged by the register whatever its rule. */
  never?: string;
};

const days = (key: keyof Defaults) => (ctx: ApplianceContext) => ctx.config.retention.defaults[key];
const PATIENT_TRIGGERS: Trigger[] = ["creation", "last_encounter", "age_of_majority", "discharge"];
/** The product records no discharge of a patient nor a deactivation of one: a rule on it is stored and purges nothing. */
const NO_DISCHARGE = "no discharge or deactivation date is recorded for patients in this product: a rule on this trigger is kept and purges nothing";
const ENCOUNTER_STATUSES = "('arrived', 'completed')";

/**
 * The patient's last encounter: the end of their latest arrived or completed appointment (one a
 * purge destroyed is remembered in retention_encounters), else their registration.
 */
const lastEncounter = (p: string) =>
  `greatest((SELECT max(le.ends_at) FROM appointments le WHERE le.tenant_id = $1 AND le.patient_id = ${p} AND le.status IN ${ENCOUNTER_STATUSES}),
            (SELECT re.last_encounter_at FROM retention_encounters re WHERE re.tenant_id = $1 AND re.patient_id = ${p}),
            (SELECT lp.created_at FROM patients lp WHERE lp.tenant_id = $1 AND lp.id = ${p}))`;
const patientAnchors = (own: string, p: string): Partial<Record<Trigger, string>> => ({ creation: own, last_encounter: lastEncounter(p) });

const CLASSES: Record<RecordClass, ClassDef> = {
  note: {
    table: "notes",
    alias: "n",
    patientCol: "n.patient_id",
    triggers: PATIENT_TRIGGERS,
    anchor: patientAnchors("n.created_at", "n.patient_id"),
    creationOrder: "created_at", // notes_retention_idx
    defaultDays: days("noteDays"),
  },
  audio: {
    table: "attachments",
    alias: "a",
    patientCol: "a.patient_id",
    triggers: PATIENT_TRIGGERS,
    anchor: patientAnchors("a.created_at", "a.patient_id"),
    extra: "a.kind = 'audio'",
    defaultDays: days("audioDays"),
  },
  attachment: {
    table: "attachments",
    alias: "a",
    patientCol: "a.patient_id",
    triggers: PATIENT_TRIGGERS,
    anchor: patientAnchors("a.created_at", "a.patient_id"),
    extra: "a.kind <> 'audio'",
    defaultDays: days("attachmentDays"),
  },
  // creation: from the appointment's end.
  appointment: {
    table: "appointments",
    alias: "p",
    patientCol: "p.patient_id",
    triggers: PATIENT_TRIGGERS,
    anchor: patientAnchors("p.ends_at", "p.patient_id"),
    defaultDays: days("appointmentDays"),
  },
  // A consent in force is never purged: only one revoked or past its expiry.
  consent: {
    table: "consents",
    alias: "c",
    patientCol: "c.patient_id",
    triggers: ["expiry", ...PATIENT_TRIGGERS],
    anchor: { ...patientAnchors("c.granted_at", "c.patient_id"), expiry: "coalesce((SELECT cr.revoked_at FROM consent_revocations cr WHERE cr.consent_id = c.id), c.expires_at)" },
    extra: "(EXISTS (SELECT 1 FROM consent_revocations cr WHERE cr.consent_id = c.id) OR c.expires_at < $2)",
    defaultDays: days("consentDays"),
  },
  // The patient's own row, once nothing else of theirs is left: it becomes a tombstone and the keys are crypto-shredded.
  patient: {
    table: "patients",
    alias: "pt",
    patientCol: "pt.id",
    triggers: ["last_encounter", "creation", "age_of_majority", "discharge"],
    anchor: patientAnchors("pt.created_at", "pt.id"),
    extra: `pt.status = 'active'
      AND NOT EXISTS (SELECT 1 FROM notes x WHERE x.tenant_id = $1 AND x.patient_id = pt.id)
      AND NOT EXISTS (SELECT 1 FROM attachments x WHERE x.tenant_id = $1 AND x.patient_id = pt.id)
      AND NOT EXISTS (SELECT 1 FROM appointments x WHERE x.tenant_id = $1 AND x.patient_id = pt.id)
      AND NOT EXISTS (SELECT 1 FROM consents x WHERE x.tenant_id = $1 AND x.patient_id = pt.id)
      AND NOT EXISTS (SELECT 1 FROM deletion_requests x WHERE x.tenant_id = $1 AND x.patient_id = pt.id AND x.status = 'pending')`,
    defaultDays: days("patientDays"),
  },
  session: { table: "sessions", alias: "s", patientCol: null, triggers: ["expiry"], anchor: { expiry: "s.expires_at" }, defaultDays: days("sessionDays") },
  invite: {
    table: "invites",
    alias: "i",
    patientCol: null,
    triggers: ["expiry"],
    anchor: { expiry: "i.expires_at" },
    extra: "i.accepted_at IS NULL",
    defaultDays: days("inviteDays"),
  },
  // Ended: denied, ended, or approved and expired; one a session still names waits for that session's purge.
  support_request: {
    table: "support_requests",
    alias: "sr",
    patientCol: null,
    triggers: ["expiry", "creation"],
    anchor: { expiry: "coalesce(sr.ended_at, sr.expires_at, sr.decided_at)", creation: "sr.created_at" },
    extra: "(sr.status IN ('denied', 'ended') OR (sr.status = 'approved' AND sr.expires_at < $2)) AND NOT EXISTS (SELECT 1 FROM sessions ss WHERE ss.support_request_id = sr.id)",
    defaultDays: days("supportRequestDays"),
  },
  // The tenant's audit evidence packs (records exports are streamed to the caller and never stored).
  export_file: {
    table: "audit_exports",
    alias: "x",
    patientCol: null,
    triggers: ["creation"],
    anchor: { creation: "x.created_at" },
    extra: "x.status <> 'running'",
    defaultDays: days("exportFileDays"),
  },
  audit_event: {
    table: "audit_events",
    alias: "e",
    patientCol: null,
    triggers: ["creation"],
    anchor: {},
    defaultDays: (ctx) => Math.round(ctx.config.audit.retentionYears * 365.25),
    never:
      "audit events are dropped a whole month at a time by the audit-retention job after audit.retentionYears (a signed anchor keeps the hash chain verifiable); this register purges none",
  },
};

/** Why a class under a trigger purges nothing, or null. */
function neverOf(cls: RecordClass, trigger: Trigger): string | null {
  const c = CLASSES[cls];
  if (c.never) return c.never;
  if (trigger === "discharge") return NO_DISCHARGE;
  return null;
}

/**
 * Per class: the rows past a cutoff that no hold protects. `$1` tenant, `$2` cutoff, `adults`
 * the parameter holding the patients past their age of majority plus the period (a uuid[]).
 * Patient holds (legal_holds) and tenant or class holds (retention_holds) are part of the same
 * statement, so a record is only ever selected while no hold stands: a hold fails closed.
 */
const CLASS_HOLD = (cls: RecordClass) =>
  `NOT EXISTS (SELECT 1 FROM retention_holds rh WHERE rh.tenant_id = $1 AND rh.released_at IS NULL AND (rh.record_class IS NULL OR rh.record_class = '${cls}'))`;
const PATIENT_HOLD = (patientCol: string) => `NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.tenant_id = $1 AND h.patient_id = ${patientCol} AND h.released_at IS NULL)`;

function expiredBase(cls: RecordClass, trigger: Trigger, adults: string): string {
  const c = CLASSES[cls];
  const past = neverOf(cls, trigger)
    ? "false"
    : trigger === "age_of_majority"
      ? `${c.patientCol} = ANY(${adults}::uuid[]) AND $2::timestamptz IS NOT NULL` // (names $2, so every parameter has a type)
      : `${c.anchor[trigger] ?? c.anchor[c.triggers[0]!]} < $2`;
  return [`${c.alias}.tenant_id = $1`, past, ...(c.extra ? [c.extra] : [])].join(" AND ");
}

function unheld(cls: RecordClass): string {
  const c = CLASSES[cls];
  return [CLASS_HOLD(cls), ...(c.patientCol ? [PATIENT_HOLD(c.patientCol)] : [])].join(" AND ");
}

/** The statement's parameters: the adults list is the last one, and only when the rule counts from the age of majority. */
const withAdults = (params: unknown[], trigger: Trigger, adults: string[]): unknown[] => (trigger === "age_of_majority" ? [...params, adults] : params);

/**
 * The patients past their age of majority plus the period (born before cutoff minus
 * retention.ageOfMajorityYears), when the rule counts from it; their birth dates are decrypted
 * by the records capability and only ids come back.
 */
async function adultsFor(ctx: ApplianceContext, t: Tx, tenantId: string, trigger: Trigger, cutoff: Date): Promise<string[]> {
  if (trigger !== "age_of_majority") return [];
  const bornBefore = new Date(cutoff);
  bornBefore.setUTCFullYear(bornBefore.getUTCFullYear() - ctx.config.retention.ageOfMajorityYears);
  return patientsBornBefore(ctx, t, tenantId, bornBefore.toISOString().slice(0, 10));
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
          triggers: CLASSES[cls].triggers,
          periodDays: r.period_days,
          legalBasis: r.legal_basis,
          legalMinimumDays: r.legal_minimum_days,
          source: "tenant",
          updatedAt: r.updated_at.toISOString(),
        }
      : {
          recordClass: cls,
          trigger: CLASSES[cls].triggers[0]!,
          triggers: CLASSES[cls].triggers,
          periodDays: CLASSES[cls].defaultDays(ctx),
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
    const never = neverOf(rule.recordClass, rule.trigger);
    const c = CLASSES[rule.recordClass];
    const [r] = never
      ? [{ purge: 0, held: 0 }]
      : await t.rows<{ purge: number; held: number }>(
          `SELECT count(*) FILTER (WHERE ${unheld(rule.recordClass)})::int AS purge, count(*) FILTER (WHERE NOT (${unheld(rule.recordClass)}))::int AS held
             FROM ${c.table} ${c.alias} WHERE ${expiredBase(rule.recordClass, rule.trigger, "$3")}`,
          withAdults([tenantId, cutoff], rule.trigger, await adultsFor(ctx, t, tenantId, rule.trigger, cutoff)),
        );
    classes.push({ recordClass: rule.recordClass, cutoff: cutoff.toISOString(), wouldPurge: r?.purge ?? 0, heldBack: r?.held ?? 0, never });
  }
  return { classes, total: classes.reduce((s, c) => s + c.wouldPurge, 0) };
}

/** What the next run would purge under the tenant's rules (and with `proposed`, under that change). */
export async function previewPurge(
  ctx: ApplianceContext,
  actor: Actor,
  proposed?: { recordClass: RecordClass; periodDays: number; trigger?: Trigger },
): Promise<RetentionPreviewRes> {
  const tenantId = tenantOf(actor);
  authorize(actor, "retention:read", { tenantId });
  if (proposed?.trigger && !CLASSES[proposed.recordClass].triggers.includes(proposed.trigger)) {
    throw new Invalid(`a ${proposed.recordClass} rule counts from ${CLASSES[proposed.recordClass].triggers.join(", ")}; not from ${proposed.trigger}`);
  }
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const rules = (await readRules(ctx, t, tenantId)).map((r) =>
      proposed && r.recordClass === proposed.recordClass ? { ...r, periodDays: proposed.periodDays, trigger: proposed.trigger ?? r.trigger } : r,
    );
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
    const trigger = change.trigger ?? before.trigger;
    if (!CLASSES[cls].triggers.includes(trigger)) {
      throw new Invalid(`a ${cls} rule counts from ${CLASSES[cls].triggers.join(", ")}; not from ${trigger}`, { triggers: CLASSES[cls].triggers });
    }
    const after: Rule = {
      ...before,
      trigger,
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
       ON CONFLICT (tenant_id, record_class) DO UPDATE SET trigger = EXCLUDED.trigger, period_days = EXCLUDED.period_days, legal_basis = EXCLUDED.legal_basis,
         legal_minimum_days = EXCLUDED.legal_minimum_days, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by`,
      [tenantId, cls, after.trigger, after.periodDays, after.legalBasis, after.legalMinimumDays, ctx.clock.now(), actor.userId],
    );
    const summary = (r: Rule) => ({ trigger: r.trigger, periodDays: r.periodDays, legalMinimumDays: r.legalMinimumDays, source: r.source, legalBasisSet: r.legalBasis !== null });
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

/**
 * A class's counts in a run (and one batch's, in its audit event): rows destroyed, batches, and
 * the range they came from — in id order the least and greatest id; in creation order (the run's
 * `rules.<class>.order` is "creation") the first and the last row in (creation time, id) order,
 * `firstAt`/`lastAt` being their creation times.
 */
type ClassCounts = { count: number; batches: number; firstId: string | null; lastId: string | null; firstAt?: string; lastAt?: string };
/**
 * A row's place in creation order: its creation time as text (UTC, microseconds, fixed width, so
 * the text sorts as the time does and reads back exactly) and its id.
 */
type Key = { at: string; id: string };
const atText = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
/** A worker's share of a class: ids in [lo, hi) (id order), or keys in [lo, hi) (creation order); null: unbounded. */
type Span = { lo: string | null; hi: string | null } | { lo: Key | null; hi: Key | null };
/** A class's counts, or `shredded`: the patients whose data keys the run saw destroyed. */
type CountKey = RecordClass | "shredded";
/** `order`: "creation" when the run takes the class in creation order; absent: id order. */
type RunRule = { periodDays: number; trigger: Trigger; cutoff: string; legalBasis: string | null; source: string; never?: string | null; order?: "creation" | "id" };
type RunRow = {
  id: string;
  tenant_id: string;
  status: "running" | "finished";
  started_at: Date;
  finished_at: Date | null;
  /** A run opened before a class existed has no rule for it: that class waits for the next run. */
  rules: Partial<Record<RecordClass, RunRule>>;
  counts: Partial<Record<CountKey, ClassCounts>>;
  /** Per class purged by several workers in creation order: the first key of each range after the first (migration 0290). */
  splits: Partial<Record<RecordClass, Key[]>>;
  certificate: string | null;
};
const NONE: ClassCounts = { count: 0, batches: 0, firstId: null, lastId: null };

/**
 * One tenant's purge: resumes the tenant's unfinished run (the rules and cutoffs it recorded, the
 * counts its committed batches left) or starts one, purges class by class in batches of
 * retention.batchSize, crypto-shreds the keys of the patients it reduced to a tombstone once
 * their grace period (keys.shredGraceDays) has passed, then signs the disposition certificate.
 * Its transactions run on the purge's own connections (retention.purgeConnections; `withPurgePool`).
 */
export async function purgeTenant(
  ctx: ApplianceContext,
  tenantId: string,
  opts: { jobRunId?: string | null; maxBatches?: number; db?: SqlPool } = {},
): Promise<{ runId: string; destroyed: number; finished: boolean }> {
  if (!opts.db) return withPurgePool(ctx, (db) => purgeTenant(ctx, tenantId, { ...opts, db }));
  const db = opts.db;
  const run = await openRun(ctx, db, tenantId, opts.jobRunId ?? null);
  let begun = 0;
  let stopped = false;
  for (const cls of RECORD_CLASSES) {
    const rule = run.rules[cls];
    if (!rule || rule.never) continue;
    const adults = await inScope(db, { kind: "tenant", tenantId }, (t) => adultsFor(ctx, t, tenantId, rule.trigger, new Date(rule.cutoff)));
    // Several workers on one class each take ranges of their own (of ids, or of creation order); a patient batch runs alone.
    const parallel = PARALLEL_CLASSES.has(cls) ? Math.max(1, ctx.config.retention.purgeConnections) : 1;
    const spans: (Span | undefined)[] =
      parallel === 1
        ? [undefined]
        : rule.order === "creation"
          ? await creationSpans(db, run, cls, rule, adults, parallel)
          : Array.from({ length: parallel }, (_, k) => idRange(k, parallel));
    let nextSpan = 0;
    const worker = async () => {
      for (let k = nextSpan++; k < spans.length; k = nextSpan++) {
        // In creation order each batch starts after the last key of the one before (the index walk
        // does not cross the entries the earlier batches deleted); when that reaches the end, one
        // more pass from the span's start takes the rows SKIP LOCKED passed over, until a pass
        // from the start finds nothing.
        let after: Key | null = null;
        for (;;) {
          if (stopped) return;
          if (opts.maxBatches !== undefined && begun >= opts.maxBatches) return void (stopped = true);
          begun++;
          const started = performance.now();
          const r: { n: number; last: Key | null } =
            cls === "patient" ? { n: await purgePatientBatch(ctx, db, run, rule, adults), last: null } : await purgeBatch(ctx, db, run, cls, rule, adults, spans[k], after);
          if (r.n === 0) {
            begun--;
            if (!after) break;
            after = null;
            continue;
          }
          after = r.last;
          await pace(ctx, performance.now() - started);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, spans.length) }, worker));
    if (stopped) return { runId: run.id, destroyed: 0, finished: false };
  }
  await shredDue(ctx, db, run);
  const finished = await certify(ctx, db, run.id, tenantId);
  return { runId: run.id, destroyed: RECORD_CLASSES.reduce((s, cls) => s + (finished.counts[cls]?.count ?? 0), 0), finished: true };
}

/** The classes whose ids are random UUIDs, so N workers can split them into N ranges of about equal size. */
const PARALLEL_CLASSES = new Set<RecordClass>(["note", "audio", "attachment", "appointment", "consent"]);

/**
 * Worker k of n's share of the UUID space, [lo, hi): disjoint ranges, so the batches of
 * different workers never interleave and every batch's id range is apart from every other's.
 */
function idRange(k: number, n: number): { lo: string | null; hi: string | null } {
  const at = (i: number) =>
    i <= 0 || i >= n
      ? null
      : `${Math.floor((i * 2 ** 32) / n)
          .toString(16)
          .padStart(8, "0")}-0000-0000-0000-000000000000`;
  return { lo: at(k), hi: at(k + 1) };
}

/**
 * Worker ranges of a class in creation order: the expired, unheld rows split into `n` ranges of
 * about equal count by (creation time, id). Recorded in the run the first time it reaches the
 * class and reused when it resumes, so a resumed run's batches never overlap those before the kill.
 */
async function creationSpans(db: SqlPool, run: RunRow, cls: RecordClass, rule: RunRule, adults: string[], n: number): Promise<Span[]> {
  const c = CLASSES[cls];
  const bounds =
    run.splits[cls] ??
    (await inScope(db, { kind: "tenant", tenantId: run.tenant_id }, async (t) => {
      const params = withAdults([run.tenant_id, new Date(rule.cutoff), n], rule.trigger, adults);
      const rows = await t.rows<Key>(
        `SELECT ${atText("s.at")} AS at, s.id::text AS id
           FROM (SELECT ${c.alias}.${c.creationOrder} AS at, ${c.alias}.id, row_number() OVER (ORDER BY ${c.alias}.${c.creationOrder}, ${c.alias}.id) AS rn, count(*) OVER () AS total
                   FROM ${c.table} ${c.alias} WHERE ${expiredBase(cls, rule.trigger, "$4")} AND ${unheld(cls)}) s
          WHERE s.rn > 1 AND (s.rn - 1) % greatest(1, ceil(s.total::numeric / $3))::bigint = 0 ORDER BY s.rn`,
        params,
      );
      const [saved] = await t.rows<{ b: Key[] }>(
        "UPDATE retention_runs SET splits = jsonb_set(splits, ARRAY[$2::text], coalesce(splits -> $2, $3::jsonb)) WHERE id = $1 RETURNING splits -> $2 AS b",
        [run.id, cls, JSON.stringify(rows)],
      );
      return saved!.b;
    }));
  run.splits[cls] = bounds;
  const edges: (Key | null)[] = [null, ...bounds, null];
  return Array.from({ length: bounds.length + 1 }, (_, i) => ({ lo: edges[i]!, hi: edges[i + 1]! }));
}

/**
 * Runs `work` on the purge's connections: with retention.purgeConnections 0, the request pool
 * (the purge borrows a connection between requests); with N, a pool of N connections of its own,
 * opened for the run and closed after it, so the purge never waits for a request's connection and
 * never holds one a request waits for (docs/retention.md, "The purge's connections").
 */
export async function withPurgePool<T>(ctx: ApplianceContext, work: (db: SqlPool) => Promise<T>): Promise<T> {
  const n = ctx.config.retention.purgeConnections;
  if (n === 0) return work(ctx.db.app);
  const own = new SqlPool({ ...ctx.db.app.options, applicationName: "wardkeep-purge", max: n, groupCommit: undefined });
  const nice = ctx.config.retention.purgeNice;
  if (nice > 0) {
    let told = false;
    // Each new connection asks for its backend first (the query goes out before the purge's own).
    own.pool.on("connect", (client) => {
      client
        .query<{ pid: number; started: Date }>("SELECT pid, backend_start AS started FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        .then(({ rows: [b] }) => {
          const r = b ? lowerBackendPriority(b.pid, b.started, nice) : { ok: false as const, why: "PostgreSQL did not name the backend" };
          if (!r.ok && !told) {
            told = true;
            ctx.log.info(`retention purge: its database backend keeps its priority (retention.purgeNice ${nice} not applied): ${r.why}`, { purgeNice: nice });
          }
        })
        .catch(() => undefined); // a connection that fails is the purge's own error to report
    });
  }
  try {
    return await work(own);
  } finally {
    await own.close();
  }
}

/**
 * Sets the OS scheduling priority of a PostgreSQL backend of this host to `nice`
 * (retention.purgeNice): the purge costs the reads CPU on a small machine (docs/retention.md,
 * "Session 6: why reads slow down"), so at a lower priority the requests' backends and the
 * daemon preempt it while it still uses the CPU they leave idle. Only a process that is that
 * backend is touched: one of this host named `postgres` that started when PostgreSQL says the
 * backend did (in a container beside its database, as in the compose deployment, the pid names
 * another process or none). Linux only (/proc); elsewhere, or when the system refuses, it says why.
 */
export function lowerBackendPriority(pid: number, backendStart: Date, nice: number): { ok: true } | { ok: false; why: string } {
  let stat: string;
  let boot: number;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    boot = Number(/^btime (\d+)$/m.exec(fs.readFileSync("/proc/stat", "utf8"))?.[1]);
  } catch {
    return { ok: false, why: `no process ${pid} on this host: PostgreSQL runs on another host or in another container` };
  }
  const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
  // Field 22 of /proc/<pid>/stat: the start time in clock ticks after boot (USER_HZ, 100 on Linux).
  const startTicks = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
  const started = (boot + startTicks / 100) * 1000;
  if (comm !== "postgres" || !(Math.abs(started - backendStart.getTime()) < 2000)) {
    return { ok: false, why: `process ${pid} on this host is not the purge's backend: PostgreSQL runs on another host or in another container` };
  }
  try {
    os.setPriority(pid, nice);
  } catch (err) {
    return { ok: false, why: `the system refused to change the priority of process ${pid} (${(err as NodeJS.ErrnoException).code ?? "error"})` };
  }
  return { ok: true };
}

/**
 * The pause after a batch that took `ms`, so the purge works `retention.dutyCycle` of the time and
 * leaves the rest to the requests (docs/retention.md, Benchmark). Wall-clock time, not the
 * appliance's clock: it paces work, it dates nothing.
 */
async function pace(ctx: ApplianceContext, ms: number): Promise<void> {
  const duty = ctx.config.retention.dutyCycle;
  if (duty >= 1) return;
  await new Promise((resolve) => setTimeout(resolve, (ms * (1 - duty)) / duty));
}

async function openRun(ctx: ApplianceContext, db: SqlPool, tenantId: string, jobRunId: string | null): Promise<RunRow> {
  return inScope(db, { kind: "tenant", tenantId }, async (t) => {
    const [open] = await t.rows<RunRow>("SELECT * FROM retention_runs WHERE tenant_id = $1 AND status = 'running' ORDER BY started_at LIMIT 1 FOR UPDATE", [tenantId]);
    if (open) return open;
    const now = ctx.clock.now();
    const rules = Object.fromEntries(
      (await readRules(ctx, t, tenantId)).map((r) => [
        r.recordClass,
        {
          periodDays: r.periodDays,
          trigger: r.trigger,
          cutoff: cutoffOf(now, r).toISOString(),
          legalBasis: r.legalBasis,
          source: r.source,
          never: neverOf(r.recordClass, r.trigger),
          ...(CLASSES[r.recordClass].creationOrder ? { order: ctx.config.retention.victimOrder } : {}),
        } satisfies RunRule,
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

type BatchRange = { n: number; first: string | null; last: string | null; firstAt?: string | null; lastAt?: string | null };

/** The batch's range as its audit event and the run's counts name it (creation times only in creation order). */
function rangeOf(r: BatchRange): Omit<ClassCounts, "count" | "batches"> {
  return { firstId: r.first, lastId: r.last, ...(r.firstAt && r.lastAt ? { firstAt: r.firstAt, lastAt: r.lastAt } : {}) };
}

/** A range's end as text that sorts in the class's order: the creation time (fixed width) before the id. */
const sortKey = (at: string | undefined, id: string | null) => `${at ?? ""} ${id ?? ""}`;

/**
 * Adds one committed batch to the run's counts and writes its audit event, in the batch's
 * transaction. The class's range is the first and last end of its batches' ranges in the class's
 * order (parallel workers commit in any order; the run's row lock orders their updates).
 */
async function countBatch(ctx: ApplianceContext, t: Tx, run: RunRow, key: CountKey, r: BatchRange): Promise<void> {
  const [row] = await t.rows<{ c: ClassCounts | null }>("SELECT counts -> $2 AS c FROM retention_runs WHERE id = $1 FOR UPDATE", [run.id, key]);
  const was = row?.c ?? null;
  const batch = rangeOf(r);
  const firstOf = !was || sortKey(batch.firstAt, batch.firstId) < sortKey(was.firstAt, was.firstId) ? batch : was;
  const lastOf = !was || sortKey(batch.lastAt, batch.lastId) > sortKey(was.lastAt, was.lastId) ? batch : was;
  const merged: ClassCounts = {
    count: (was?.count ?? 0) + r.n,
    batches: (was?.batches ?? 0) + 1,
    firstId: firstOf.firstId,
    lastId: lastOf.lastId,
    ...(firstOf.firstAt && lastOf.lastAt ? { firstAt: firstOf.firstAt, lastAt: lastOf.lastAt } : {}),
  };
  await t.exec("UPDATE retention_runs SET counts = jsonb_set(counts, ARRAY[$2::text], $3::jsonb) WHERE id = $1", [run.id, key, JSON.stringify(merged)]);
  await recordEvent(
    ctx,
    t,
    SYSTEM_ACTOR,
    {
      tenantId: run.tenant_id,
      action: key === "shredded" ? "retention.purge.shred" : "retention.purge.batch",
      resourceType: "retention_run",
      resourceId: run.id,
      outcome: "success",
      reason: JSON.stringify({ class: key, count: r.n, ...batch }),
    },
    null,
  );
}

/**
 * The statement that deletes the selected rows of a class (with what hangs off them) and sums them
 * up: the count and the range (in creation order, its first and last row by (creation time, id)).
 */
function deleteStatement(cls: RecordClass, victims: string, byCreation: boolean): string {
  const summary = "count(*)::int AS n, min(id::text) AS first, max(id::text) AS last";
  switch (cls) {
    case "note":
      // The versions go first: the foreign key from them to the note is ON DELETE RESTRICT (migration 0290).
      return `WITH victims AS (${victims}),
              versions AS (DELETE FROM note_versions WHERE note_id = ANY (ARRAY(SELECT id FROM victims)) RETURNING 1),
              gone AS (DELETE FROM notes WHERE id = ANY (ARRAY(SELECT id FROM victims)) RETURNING id, created_at)
           SELECT ${
             byCreation
               ? `count(*)::int AS n, (array_agg(id::text ORDER BY created_at, id))[1] AS first, (array_agg(id::text ORDER BY created_at DESC, id DESC))[1] AS last,
                  ${atText("min(created_at)")} AS first_at, ${atText("max(created_at)")} AS last_at`
               : summary
           }, '{}'::text[] AS files, (SELECT count(*) FROM versions)::int AS versions FROM gone`;
    case "consent":
      return `WITH victims AS (${victims}),
              revocations AS (DELETE FROM consent_revocations WHERE consent_id = ANY (ARRAY(SELECT id FROM victims)) RETURNING 1),
              gone AS (DELETE FROM consents WHERE id = ANY (ARRAY(SELECT id FROM victims)) RETURNING id)
           SELECT ${summary}, '{}'::text[] AS files, (SELECT count(*) FROM revocations)::int AS revocations FROM gone`;
    case "appointment":
      // The trigger "last encounter" keeps counting from a destroyed appointment.
      return `WITH victims AS (${victims}),
              gone AS (DELETE FROM appointments WHERE id = ANY (ARRAY(SELECT id FROM victims)) RETURNING id, tenant_id, patient_id, ends_at, status),
              encounters AS (INSERT INTO retention_encounters (tenant_id, patient_id, last_encounter_at)
                SELECT tenant_id, patient_id, max(ends_at) FROM gone WHERE status IN ${ENCOUNTER_STATUSES} GROUP BY tenant_id, patient_id
                ON CONFLICT (tenant_id, patient_id) DO UPDATE SET last_encounter_at = greatest(retention_encounters.last_encounter_at, EXCLUDED.last_encounter_at)
                RETURNING 1)
           SELECT ${summary}, '{}'::text[] AS files, (SELECT count(*) FROM encounters)::int AS encounters FROM gone`;
    case "audio":
    case "attachment":
      return `WITH victims AS (${victims}), gone AS (DELETE FROM attachments WHERE id = ANY (ARRAY(SELECT id FROM victims)) RETURNING id, storage_path)
           SELECT ${summary}, coalesce(array_agg(storage_path), '{}') AS files FROM gone`;
    case "export_file":
      return `WITH victims AS (${victims}), gone AS (DELETE FROM audit_exports WHERE id = ANY (ARRAY(SELECT id FROM victims)) RETURNING id)
           SELECT ${summary}, coalesce(array_agg(id), '{}') AS files FROM gone`;
    default:
      return `WITH victims AS (${victims}), gone AS (DELETE FROM ${CLASSES[cls].table} WHERE id = ANY (ARRAY(SELECT id FROM victims)) RETURNING id)
           SELECT ${summary}, '{}'::text[] AS files FROM gone`;
  }
}

/**
 * One short transaction: delete up to batchSize expired, unheld rows of a class (`FOR UPDATE SKIP
 * LOCKED`: rows a request holds are left for the next batch), add the count and id range to the
 * run's row, and write one audit event with them. Committed together or not at all, so a killed
 * purge loses nothing and counts nothing twice.
 */
async function purgeBatch(
  ctx: ApplianceContext,
  db: SqlPool,
  run: RunRow,
  cls: RecordClass,
  rule: RunRule,
  adults: string[],
  span: Span | undefined,
  after: Key | null,
): Promise<{ n: number; last: Key | null }> {
  const c = CLASSES[cls];
  const byCreation = rule.order === "creation" && c.creationOrder !== undefined;
  const { n, files, last } = await inScope(db, { kind: "tenant", tenantId: run.tenant_id }, async (t) => {
    // The records history guard lets a purge transaction that names its tenant delete note versions and consents.
    await t.exec("SELECT set_config('wardkeep.purge_tenant', $1, true)", [run.tenant_id]);
    const params = withAdults([run.tenant_id, new Date(rule.cutoff), ctx.config.retention.batchSize], rule.trigger, adults);
    const within: string[] = [];
    let order = `${c.alias}.id`;
    if (byCreation) {
      // (creation time, id) against a key, answered by the creation-order index as a range.
      const row = `(${c.alias}.${c.creationOrder}, ${c.alias}.id)`;
      const key = (k: Key) => (params.push(k.at, k.id), `($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
      const s = span as { lo: Key | null; hi: Key | null } | undefined;
      if (s?.lo) within.push(`${row} >= ${key(s.lo)}`);
      if (s?.hi) within.push(`${row} < ${key(s.hi)}`);
      if (after) within.push(`${row} > ${key(after)}`);
      order = `${c.alias}.${c.creationOrder}, ${c.alias}.id`;
    } else {
      // A worker's id range is a constant of the text (hex digits made by idRange), so each worker's statement is prepared once.
      const s = span as { lo: string | null; hi: string | null } | undefined;
      if (s?.lo) within.push(`${c.alias}.id >= '${s.lo}'::uuid`);
      if (s?.hi) within.push(`${c.alias}.id < '${s.hi}'::uuid`);
    }
    const victims = `SELECT ${c.alias}.id FROM ${c.table} ${c.alias} WHERE ${[expiredBase(cls, rule.trigger, "$4"), unheld(cls), ...within].join(" AND ")} ORDER BY ${order} LIMIT $3 FOR UPDATE OF ${c.alias} SKIP LOCKED`;
    const [r] = await t.rows<BatchRange & { n: number; files: string[]; first_at?: string | null; last_at?: string | null }>(deleteStatement(cls, victims, byCreation), params);
    if (!r || r.n === 0) return { n: 0, files: [], last: null };
    const batch: BatchRange = { n: r.n, first: r.first, last: r.last, firstAt: r.first_at, lastAt: r.last_at };
    await countBatch(ctx, t, run, cls, batch);
    return { n: r.n, files: r.files, last: byCreation ? { at: r.last_at!, id: r.last! } : null };
  });
  // The file's key was in the deleted row: the file is unreadable already; removing it frees the space.
  for (const f of files) await (cls === "export_file" ? removeExportPack(ctx, f) : removeAttachmentFile(ctx, f)).catch(() => undefined);
  return { n, last };
}

/**
 * Patients past their rule with nothing else of theirs left: each becomes the erasure purge's
 * tombstone (no PHI, the id kept for the audit trail) and its data keys are scheduled for
 * crypto-shredding after keys.shredGraceDays, in one transaction with the count and audit event.
 */
async function purgePatientBatch(ctx: ApplianceContext, db: SqlPool, run: RunRow, rule: RunRule, adults: string[]): Promise<number> {
  return inScope(db, { kind: "tenant", tenantId: run.tenant_id }, async (t) => {
    const victims = await t.rows<{ id: string }>(
      `SELECT pt.id FROM patients pt WHERE ${expiredBase("patient", rule.trigger, "$4")} AND ${unheld("patient")} ORDER BY pt.id LIMIT $3 FOR UPDATE OF pt SKIP LOCKED`,
      withAdults([run.tenant_id, new Date(rule.cutoff), Math.min(ctx.config.retention.batchSize, 200)], rule.trigger, adults),
    );
    if (!victims.length) return 0;
    for (const { id } of victims) {
      await reducePatientToTombstone(ctx, t, run.tenant_id, id);
      const s = await scheduleShred(ctx, { kind: "patient", tenantId: run.tenant_id, patientId: id }, { transaction: t, graceDays: ctx.config.keys.shredGraceDays });
      await t.exec("INSERT INTO retention_shreds (tenant_id, patient_id, run_id, scheduled_at, destroy_after) VALUES ($1, $2, $3, $4, $5)", [
        run.tenant_id,
        id,
        run.id,
        s.scheduledAt,
        s.destroyAfter,
      ]);
    }
    await countBatch(ctx, t, run, "patient", { n: victims.length, first: victims[0]!.id, last: victims[victims.length - 1]!.id });
    return victims.length;
  });
}

/**
 * The crypto-shredding of patients the purge reduced to a tombstone, once their grace period has
 * passed: the keys capability destroys every due key (`destroyDueKeys`, audited there per
 * subject), then the patients whose keys are on its shredded list are counted in this run with
 * one `retention.purge.shred` audit event, in one transaction (a killed run counts each once).
 */
async function shredDue(ctx: ApplianceContext, db: SqlPool, run: RunRow): Promise<void> {
  const scope = { kind: "tenant" as const, tenantId: run.tenant_id };
  const dueSql = "SELECT patient_id FROM retention_shreds WHERE tenant_id = $1 AND shredded_run_id IS NULL AND destroy_after <= $2 ORDER BY patient_id";
  const due = await inScope(db, scope, (t) => t.rows<{ patient_id: string }>(dueSql + " LIMIT 1", [run.tenant_id, ctx.clock.now()]));
  if (!due.length) return;
  await destroyDueKeys(ctx);
  await inScope(db, scope, async (t) => {
    const rows = await t.rows<{ patient_id: string }>(dueSql + " FOR UPDATE SKIP LOCKED", [run.tenant_id, ctx.clock.now()]);
    const destroyed = await shreddedAmong(
      t,
      rows.map((r) => ({ kind: "patient" as const, tenantId: run.tenant_id, patientId: r.patient_id })),
    );
    const ids = rows.map((r) => r.patient_id).filter((id) => destroyed.has(`patient/${id}`));
    if (!ids.length) return;
    await t.exec("UPDATE retention_shreds SET shredded_run_id = $3, shredded_at = $4 WHERE tenant_id = $1 AND patient_id = ANY($2::uuid[])", [
      run.tenant_id,
      ids,
      run.id,
      ctx.clock.now(),
    ]);
    await countBatch(ctx, t, run, "shredded", { n: ids.length, first: ids[0]!, last: ids[ids.length - 1]! });
  });
}

/** The certificate's canonical text: fixed key order, so anyone can re-serialise and compare. */
function certificateText(run: RunRow, finishedAt: string, signedBy: string): string {
  const destroyed = Object.fromEntries(RECORD_CLASSES.map((cls) => [cls, run.counts[cls] ?? NONE]));
  return JSON.stringify({
    format: "wardkeep-disposition-certificate/2",
    runId: run.id,
    tenantId: run.tenant_id,
    startedAt: run.started_at.toISOString(),
    finishedAt,
    rules: Object.fromEntries(RECORD_CLASSES.map((cls) => [cls, run.rules[cls]])),
    destroyed,
    // Patients whose data keys were destroyed (crypto-shredded) during this run: count and id range.
    shredded: run.counts.shredded ?? NONE,
    auditAction: "retention.purge.batch",
    shredAuditAction: "retention.purge.shred",
    signedBy,
  });
}

async function certify(ctx: ApplianceContext, db: SqlPool, runId: string, tenantId: string): Promise<RunRow> {
  const key = await getAuditSigningKey(ctx);
  return inScope(db, { kind: "tenant", tenantId }, async (t) => {
    const [run] = await t.rows<RunRow>("SELECT * FROM retention_runs WHERE id = $1 FOR UPDATE", [runId]);
    const finishedAt = ctx.clock.now();
    const text = certificateText(run!, finishedAt.toISOString(), key.keyId);
    const signature = sign(null, Buffer.from(text, "utf8"), key.privateKey);
    const [done] = await t.rows<RunRow>(
      "UPDATE retention_runs SET status = 'finished', finished_at = $2, certificate = $3, signature = $4, key_id = $5, public_key = $6 WHERE id = $1 RETURNING *",
      [runId, finishedAt, text, signature, key.keyId, Buffer.from(key.publicKeyDer, "base64")],
    );
    const total = RECORD_CLASSES.reduce((s, cls) => s + (run!.counts[cls]?.count ?? 0), 0);
    await recordEvent(
      ctx,
      t,
      SYSTEM_ACTOR,
      {
        tenantId,
        action: "retention.purge.certify",
        resourceType: "retention_run",
        resourceId: runId,
        outcome: "success",
        reason: `destroyed=${total} shredded=${run!.counts.shredded?.count ?? 0}`,
      },
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
  return withPurgePool(ctx, async (db) => {
    let destroyed = 0;
    for (const { id } of tenants) {
      const r = await purgeTenant(ctx, id, { jobRunId, db });
      onTenant?.(id, r);
      destroyed += r.destroyed;
    }
    return { tenants: tenants.length, destroyed };
  });
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
