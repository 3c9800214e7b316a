/**
 * The one alert store (docs/alerts.md): detectors raise and resolve, people list and acknowledge.
 * Raising is an upsert on (scope, kind, key) while open, so a detector that runs every minute
 * keeps one alert with a growing `occurrences`, not a row per tick.
 */
import { recordEvent, type EventActor } from "../audit/append.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Scope, type Tx } from "../db/sql.js";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { Invalid, NotFound } from "../kernel/errors.js";
import { authorize } from "../kernel/policy.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { publishWebhookEvent } from "../webhooks/index.js";
import { deliveriesOf, queueDeliveries, wakeAlertSender } from "./deliveries.js";
import type { AlertDetailRes, AlertSeverity, AlertSummaryRes, AlertViewRes } from "./schema.js";

export type AlertDetails = Record<string, string | number | boolean | null>;

export type AlertInput = {
  /** Dotted by capability: `backup.snapshot_failed`, `tls.certificate_expiring`… */
  kind: string;
  severity: AlertSeverity;
  /** What it is about within its kind (a target's name, a tenant-less id); "" for one per kind. */
  key?: string;
  /** Set for a tenant's alert (its admins see it); absent for the appliance. */
  tenantId?: string | null;
  /** A sentence for people: ids and counts, never PHI. */
  summary: string;
  /** Ids and counts. */
  details?: AlertDetails;
  /** Keep the open alert's summary and details as they are (only `last_seen` and the count move). */
  keepSummary?: boolean;
};

/** What `raiseAlert` did: `opened` is true when this raise opened the alert (it was not open before). */
export type RaisedAlert = { id: string; opened: boolean };

const KIND = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/;
const appliance: Scope = { kind: "appliance" };

type Row = {
  id: string;
  tenant_id: string | null;
  kind: string;
  key: string;
  severity: AlertSeverity;
  summary: string;
  details: AlertDetails;
  first_seen: Date;
  last_seen: Date;
  occurrences: number;
  acknowledged_by: string | null;
  acknowledged_at: Date | null;
  ack_note: string | null;
  resolved_at: Date | null;
  sent_to: string[];
};

const COLUMNS = `id::text AS id, tenant_id, kind, key, severity, summary, details, first_seen, last_seen, occurrences, acknowledged_by, acknowledged_at, ack_note, resolved_at,
  coalesce((SELECT array_agg(DISTINCT c.name ORDER BY c.name) FROM alert_deliveries d JOIN alert_channels c ON c.id = d.channel_id
             WHERE d.alert_id = alerts.id AND d.status = 'sent'), '{}') AS sent_to`;

export function alertViewOf(r: Row): AlertViewRes {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    kind: r.kind,
    key: r.key,
    severity: r.severity,
    summary: r.summary,
    details: r.details,
    firstSeen: r.first_seen.toISOString(),
    lastSeen: r.last_seen.toISOString(),
    occurrences: r.occurrences,
    acknowledgedAt: r.acknowledged_at?.toISOString() ?? null,
    acknowledgedBy: r.acknowledged_by,
    acknowledgementNote: r.ack_note,
    resolvedAt: r.resolved_at?.toISOString() ?? null,
    sentTo: r.sent_to,
  };
}

/**
 * When an alert opens or resolves (not when it is seen again), in the same transaction: its
 * messages to the scope's channels are queued, and the `alert.raised` / `alert.resolved` webhook
 * event published, so a rollback sends nothing and a commit loses nothing.
 */
async function announce(ctx: ApplianceContext, t: Tx, alert: AlertViewRes, event: "raised" | "resolved"): Promise<void> {
  const queued = await queueDeliveries(ctx, t, alert, event);
  if (queued > 0) t.afterCommit(() => wakeAlertSender(ctx));
  const data: Record<string, string | number> = { alertId: alert.id, kind: alert.kind, severity: alert.severity, occurrences: alert.occurrences };
  // The key goes along when it is an id-like token (a target's or channel's name); the summary never does.
  if (/^[A-Za-z0-9._:-]{1,128}$/.test(alert.key)) data.key = alert.key;
  await publishWebhookEvent(ctx, t, { tenantId: alert.tenantId, type: event === "raised" ? "alert.raised" : "alert.resolved", data });
}

function checkInput(input: AlertInput): void {
  if (!KIND.test(input.kind) || input.kind.length > 64) throw new Error(`alert kind ${JSON.stringify(input.kind)} is not dotted lower_snake_case`);
  if ((input.key ?? "").length > 200) throw new Error("an alert key has at most 200 characters");
}

async function raiseIn(ctx: ApplianceContext, t: Tx, input: AlertInput): Promise<RaisedAlert> {
  checkInput(input);
  const now = ctx.clock.now();
  const keep = input.keepSummary === true;
  const [row] = await t.rows<Row & { opened: boolean }>(
    `INSERT INTO alerts (tenant_id, kind, key, severity, summary, details, first_seen, last_seen)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
     ON CONFLICT (scope_key, kind, key) WHERE resolved_at IS NULL DO UPDATE SET
       last_seen = greatest(alerts.last_seen, EXCLUDED.last_seen),
       occurrences = alerts.occurrences + 1,
       severity = EXCLUDED.severity,
       summary = CASE WHEN $8 THEN alerts.summary ELSE EXCLUDED.summary END,
       details = CASE WHEN $8 THEN alerts.details ELSE EXCLUDED.details END
     RETURNING ${COLUMNS}, (xmax = 0) AS opened`,
    [input.tenantId ?? null, input.kind, input.key ?? "", input.severity, input.summary.slice(0, 1000) || input.kind, JSON.stringify(input.details ?? {}), now, keep],
  );
  const { opened, ...alert } = row!;
  if (opened) await announce(ctx, t, alertViewOf(alert), "raised");
  return { id: alert.id, opened };
}

/**
 * Raises (or refreshes) the open alert of this kind and key. With `t`, it is part of the caller's
 * transaction (a failed run and its alert commit together); without, it runs on its own.
 */
export function raiseAlert(ctx: ApplianceContext, input: AlertInput, t?: Tx): Promise<RaisedAlert> {
  if (t) return raiseIn(ctx, t, input);
  return inScope(ctx.db.app, appliance, (own) => raiseIn(ctx, own, input));
}

export type ResolveOptions = {
  /** The tenant whose alert it is; absent or null: the appliance's. */
  tenantId?: string | null;
  /** Run in the caller's transaction. */
  tx?: Tx;
};

async function resolveIn(ctx: ApplianceContext, t: Tx, kind: string, key: string | null | ((key: string) => boolean), opts: ResolveOptions): Promise<AlertViewRes[]> {
  let ids: string[] | null = null;
  if (typeof key === "function") {
    // The detector's own rule (say "targets no longer configured") stays in the detector.
    const open = await t.rows<{ id: string; key: string }>(
      "SELECT id::text AS id, key FROM alerts WHERE resolved_at IS NULL AND kind = $1 AND scope_key = coalesce($2::text, '') FOR UPDATE",
      [kind, opts.tenantId ?? null],
    );
    ids = open.filter((r) => key(r.key)).map((r) => r.id);
    if (ids.length === 0) return [];
  }
  const rows = await t.rows<Row>(
    `UPDATE alerts SET resolved_at = $4
      WHERE resolved_at IS NULL AND kind = $1 AND scope_key = coalesce($2::text, '') AND ($3::text IS NULL OR key = $3) AND ($5::bigint[] IS NULL OR id = ANY($5::bigint[]))
      RETURNING ${COLUMNS}`,
    [kind, opts.tenantId ?? null, typeof key === "string" ? key : null, ctx.clock.now(), ids],
  );
  const views = rows.map(alertViewOf);
  for (const v of views) await announce(ctx, t, v, "resolved");
  return views;
}

/**
 * Resolves the open alert of this kind and key: `null` resolves every key of the kind, a function
 * those keys it accepts. Resolves to the alerts it closed (none when nothing was open).
 */
export function resolveAlert(ctx: ApplianceContext, kind: string, key: string | null | ((key: string) => boolean), opts: ResolveOptions = {}): Promise<AlertViewRes[]> {
  if (opts.tx) return resolveIn(ctx, opts.tx, kind, key, opts);
  return inScope(ctx.db.app, appliance, (own) => resolveIn(ctx, own, kind, key, opts));
}

/** Open alerts of some kinds (all when none given), oldest first: for detectors and capability views. */
export async function openAlertsOf(ctx: ApplianceContext, kinds?: string[], t?: Tx): Promise<AlertViewRes[]> {
  const read = (q: Tx) =>
    q.rows<Row>(`SELECT ${COLUMNS} FROM alerts WHERE resolved_at IS NULL AND ($1::text[] IS NULL OR kind = ANY($1::text[])) ORDER BY first_seen, id`, [kinds ?? null]);
  const rows = t ? await read(t) : await inScope(ctx.db.app, appliance, read);
  return rows.map(alertViewOf);
}

// ---- what people see -----------------------------------------------------------------------

export type AlertState = "open" | "resolved" | "all";

/** The alerts the actor may see: a tenant's staff their tenant's, appliance staff every one. */
export async function listAlerts(ctx: ApplianceContext, actor: Actor, opts: { state: AlertState; limit: number }): Promise<{ alerts: AlertViewRes[]; openCount: number }> {
  authorize(actor, "alert:list", { tenantId: actor.tenantId });
  return listIn(ctx, scopeOf(actor), opts);
}

/** Every alert, for the host operator (`wardkeep alerts list`: whoever runs the CLI on the host has the database). */
export function listAlertsAsOperator(ctx: ApplianceContext, opts: { state: AlertState; limit: number }): Promise<{ alerts: AlertViewRes[]; openCount: number }> {
  return listIn(ctx, appliance, opts);
}

function listIn(ctx: ApplianceContext, scope: Scope, opts: { state: AlertState; limit: number }): Promise<{ alerts: AlertViewRes[]; openCount: number }> {
  return inScope(ctx.db.app, scope, async (t) => {
    const rows = await t.rows<Row>(
      `SELECT ${COLUMNS} FROM alerts
        WHERE ($1 = 'all' OR ($1 = 'open') = (resolved_at IS NULL))
        ORDER BY (resolved_at IS NULL) DESC, CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, last_seen DESC, id DESC
        LIMIT $2`,
      [opts.state, opts.limit],
    );
    const counted = await t.one<{ n: number }>("SELECT count(*)::int AS n FROM alerts WHERE resolved_at IS NULL");
    return { alerts: rows.map(alertViewOf), openCount: counted!.n };
  });
}

export async function alertSummary(ctx: ApplianceContext, actor: Actor): Promise<AlertSummaryRes> {
  authorize(actor, "alert:list", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const r = await t.one<AlertSummaryRes>(
      `SELECT count(*)::int AS open, (count(*) FILTER (WHERE acknowledged_at IS NULL))::int AS unacknowledged,
              (count(*) FILTER (WHERE severity = 'critical'))::int AS critical
         FROM alerts WHERE resolved_at IS NULL`,
    );
    return r!;
  });
}

/**
 * Acknowledges an open alert with a note (audited, the note as the stated reason): someone is on
 * it. The alert stays open until its detector sees the problem gone.
 */
export async function acknowledgeAlert(ctx: ApplianceContext, actor: Actor, id: string, note: string, meta: RequestMeta | null): Promise<AlertViewRes> {
  authorize(actor, "alert:acknowledge", { tenantId: actor.tenantId });
  return acknowledgeIn(ctx, scopeOf(actor), id, note, { userId: actor.userId, auditActor: actor, meta });
}

/** The same from the host's CLI (`os:<user>`, as the audit CLI names it): acknowledgedBy stays null, the OS user is in the audit trail. */
export async function acknowledgeAlertAsOperator(ctx: ApplianceContext, id: string, note: string, operator: { userId: string; userAgent: string }): Promise<AlertViewRes> {
  const clean = note.trim();
  if (!clean) throw new Invalid("say what is being done about it (--note)");
  if (clean.length > 1000) throw new Invalid("the note has at most 1000 characters");
  return acknowledgeIn(ctx, appliance, id, clean, {
    userId: null,
    auditActor: { userId: operator.userId, role: "host_operator", tenantId: null },
    meta: { sourceIp: null, userAgent: operator.userAgent, requestId: null },
  });
}

type Acknowledger = { userId: string | null; auditActor: EventActor; meta: RequestMeta | null };

function acknowledgeIn(ctx: ApplianceContext, scope: Scope, id: string, note: string, by: Acknowledger): Promise<AlertViewRes> {
  return inScope(ctx.db.app, scope, async (t) => {
    const current = await t.one<Row>(`SELECT ${COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE`, [id]);
    if (!current) throw new NotFound("no such alert");
    if (current.resolved_at) throw new Invalid(`alert ${id} is already resolved`);
    const [row] = await t.rows<Row>(`UPDATE alerts SET acknowledged_by = $2, acknowledged_at = $3, ack_note = $4 WHERE id = $1 RETURNING ${COLUMNS}`, [
      id,
      by.userId,
      ctx.clock.now(),
      note,
    ]);
    await recordEvent(
      ctx,
      t,
      by.auditActor,
      { action: "alert.acknowledge", resourceType: "alert", resourceId: id, tenantId: current.tenant_id, outcome: "success", reason: note },
      by.meta,
    );
    return alertViewOf(row!);
  });
}

/** Alerts by id, in appliance scope (the sender's view of what it sends). */
export async function alertViewsByIds(ctx: ApplianceContext, ids: string[]): Promise<Map<string, AlertViewRes>> {
  const rows = await inScope(ctx.db.app, appliance, (t) => t.rows<Row>(`SELECT ${COLUMNS} FROM alerts WHERE id = ANY($1::bigint[])`, [ids]));
  return new Map(rows.map((r) => [r.id, alertViewOf(r)]));
}

/** One alert with where it went. */
export async function getAlertDetail(ctx: ApplianceContext, actor: Actor, id: string): Promise<AlertDetailRes> {
  authorize(actor, "alert:list", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const row = await t.one<Row>(`SELECT ${COLUMNS} FROM alerts WHERE id = $1`, [id]);
    if (!row) throw new NotFound("no such alert");
    return { alert: alertViewOf(row), deliveries: await deliveriesOf(t, id) };
  });
}
