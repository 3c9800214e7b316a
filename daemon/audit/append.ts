import { randomUUID } from "node:crypto";
import type { Request, Response } from "express";
import type { Tx } from "../db/sql.js";
import type { Actor } from "../kernel/actor.js";
import { requestMeta, type RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope, sql, sqlState, type SqlFragment } from "../db/sql.js";
import { DatabaseUnavailable } from "../db/circuit.js";
import { Unavailable } from "../kernel/errors.js";
import { CANONICAL_FIELDS, stableText, wellFormed } from "./canonical.js";
import { notifyAuditIntake } from "./chainer.js";

/** Callers of `auditIntakeFrom` wake the chainer once their statement commits. */
export { notifyAuditIntake } from "./chainer.js";

/**
 * The one way to record an audit event (DESIGN "Audit trail"). Call it inside the transaction
 * that does the work: the event commits or rolls back with the work, and when it cannot be
 * written the work fails with a 503 (`Unavailable`), never a silent omission.
 *
 * The event is written to `audit_intake` in the caller's transaction; the chainer gives it its
 * sequence number and hash shortly after commit (docs/audit-format.md, "Why chaining happens
 * after commit"), which is why the receipt's `seq`/`hash` read "pending".
 */
export type AuditOutcome = "success" | "denied" | "failure";

export type AuditActorInput = {
  userId: string | null;
  role: string | null;
  /** Support user acting inside a tenant under an approved request. */
  impersonatorId?: string | null;
  /** Access opened by break-glass (put the clinician's stated reason in `reason`). */
  breakGlass?: boolean;
};

export type AuditEventInput = {
  tenantId: string | null;
  actor: AuditActorInput;
  /** Dotted verb, e.g. `auth.login`, `patient.read`, `audit.export`. */
  action: string;
  /** e.g. `user`, `patient`, `note`, `audit_export`. */
  resourceType: string;
  resourceId?: string | null;
  /** The patient whose record was touched (an id, never a name or MRN). */
  patientId?: string | null;
  outcome: AuditOutcome;
  sourceIp?: string | null;
  userAgent?: string | null;
  requestId?: string | null;
  /**
   * Operator free text (break-glass reason, ticket reference). It may carry PHI typed by a
   * person, so it is capped at REASON_MAX_CHARS, stored in the event (auditors need it) and never
   * written to logs, errors or SIEM messages.
   */
  reason?: string | null;
};

export type AuditReceipt = {
  /** "pending" until the chainer seals the event after commit; then a bigint-as-string. */
  seq: bigint | string;
  /** "pending" until chained; then 64 lowercase hex digits. */
  hash: string;
  /** Stable id of the event from the moment it is written (`event_id` in the chain and in exports). */
  eventId: string;
};

export const REASON_MAX_CHARS = 500;
const ID_MAX = 200;
const TEXT_MAX = 512;
const ACTION = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_-]*)*$/;
const OUTCOMES = new Set<AuditOutcome>(["success", "denied", "failure"]);

/**
 * Makes a string safe for the canonical encoding and PostgreSQL text: lone surrogates become
 * U+FFFD (as jq does), controls on which JSON encoders disagree become U+FFFD (canonical.ts),
 * and length is capped so a hostile header cannot bloat the trail.
 */
export function cleanAuditText(value: string | null | undefined, max: number): string | null {
  if (value === null || value === undefined) return null;
  const s = stableText(value);
  return s.length > max ? wellFormed(s.slice(0, max)) : s;
}

/** Validates the shape before anything touches the database; a programming error, not a 503. */
function normalise(event: AuditEventInput) {
  if (!ACTION.test(event.action) || event.action.length > 100) throw new TypeError(`audit: invalid action name`);
  if (!/^[a-z][a-z0-9_]{0,62}$/.test(event.resourceType)) throw new TypeError(`audit: invalid resource type`);
  if (!OUTCOMES.has(event.outcome)) throw new TypeError(`audit: invalid outcome`);
  return {
    tenantId: event.tenantId ?? null,
    actorUserId: cleanAuditText(event.actor.userId, ID_MAX),
    actorRole: cleanAuditText(event.actor.role, 40),
    impersonatorId: cleanAuditText(event.actor.impersonatorId, ID_MAX),
    breakGlass: event.actor.breakGlass === true,
    action: event.action,
    resourceType: event.resourceType,
    resourceId: cleanAuditText(event.resourceId, ID_MAX),
    patientId: cleanAuditText(event.patientId, ID_MAX),
    outcome: event.outcome,
    sourceIp: cleanAuditText(event.sourceIp, 64),
    userAgent: cleanAuditText(event.userAgent, TEXT_MAX),
    requestId: cleanAuditText(event.requestId, 128),
    reason: cleanAuditText(event.reason, REASON_MAX_CHARS),
  };
}

/**
 * The intake's columns: the event's canonical fields (docs/audit-format.md) except those the
 * chainer assigns when it seals the event.
 */
const CHAINER_FIELDS = ["v", "seq", "recorded_at"] as const;
type IntakeColumn = Exclude<(typeof CANONICAL_FIELDS)[number], (typeof CHAINER_FIELDS)[number]>;
const INTAKE_COLUMNS = CANONICAL_FIELDS.filter((f): f is IntakeColumn => !(CHAINER_FIELDS as readonly string[]).includes(f));

/** Types of the columns that are not text (an INSERT ... SELECT takes untyped parameters as text). */
const INTAKE_TYPES: Partial<Record<IntakeColumn, string>> = { event_id: "uuid", occurred_at: "timestamptz", tenant_id: "uuid", break_glass: "boolean" };

function intakeRow(ctx: ApplianceContext, event: AuditEventInput): { eventId: string; values: Record<IntakeColumn, unknown> } {
  const e = normalise(event);
  const eventId = randomUUID();
  return {
    eventId,
    values: {
      event_id: eventId,
      occurred_at: ctx.clock.now(),
      tenant_id: e.tenantId,
      actor_user_id: e.actorUserId,
      actor_role: e.actorRole,
      impersonator_id: e.impersonatorId,
      break_glass: e.breakGlass,
      action: e.action,
      resource_type: e.resourceType,
      resource_id: e.resourceId,
      patient_id: e.patientId,
      outcome: e.outcome,
      source_ip: e.sourceIp,
      user_agent: e.userAgent,
      request_id: e.requestId,
      reason: e.reason,
    },
  };
}

const INSERT_INTAKE = `INSERT INTO audit_intake (${INTAKE_COLUMNS.join(", ")}) VALUES (${INTAKE_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")})`;

/**
 * What a failed intake write becomes: a log line with the SQLSTATE only (the event's fields stay
 * out of it) and a 503. A database that went away is the circuit's 503, logged once by it.
 */
export function auditWriteFailed(ctx: ApplianceContext, action: string): (err: Error) => Error {
  return (err) => {
    const outage = ctx.db.circuit.translate(err);
    if (outage instanceof DatabaseUnavailable) return outage;
    const code = sqlState(err) ?? "unknown";
    ctx.log.error("audit event could not be written; the request's work is rolled back", { action, sqlstate: code });
    return new Unavailable("the audit trail cannot be written right now, so the request was not carried out; try again shortly");
  };
}

export async function appendAuditEvent(ctx: ApplianceContext, transaction: Tx, event: AuditEventInput): Promise<AuditReceipt> {
  const { eventId, values } = intakeRow(ctx, event);
  // Sent with the transaction's COMMIT (one round trip for both, daemon/db/sql.ts):
  // if it cannot be written, the COMMIT does not happen and the work is rolled back.
  transaction.holdForCommit({
    text: INSERT_INTAKE,
    values: INTAKE_COLUMNS.map((c) => values[c]),
    onError: auditWriteFailed(ctx, event.action),
  });
  transaction.afterCommit(() => notifyAuditIntake(ctx));
  return { seq: "pending", hash: "pending", eventId };
}

/**
 * An event that a statement of the caller writes itself, as one of its WITH queries, when whether
 * it is written depends on what that statement reads (the one-round-trip patient read,
 * daemon/records/patients/access.ts): `INSERT INTO audit_intake (...) SELECT <the event> FROM
 * <from> WHERE <where>`. Its bind parameters are numbered from `firstParam`; `expressions` gives
 * a column an SQL expression over `from` instead of the event's value (the break-glass flag, which
 * depends on the row). The caller maps the statement's failure with `auditWriteFailed` and calls
 * `notifyAuditIntake` once it commits.
 */
export function auditIntakeFrom(
  ctx: ApplianceContext,
  event: AuditEventInput,
  opts: { from: string; where: SqlFragment; expressions?: Partial<Record<IntakeColumn, string>> },
): SqlFragment {
  const { values } = intakeRow(ctx, event);
  const select = INTAKE_COLUMNS.map((c) => {
    const expression = opts.expressions?.[c];
    return expression ? sql.raw(expression) : sql`${values[c]}::${sql.raw(INTAKE_TYPES[c] ?? "text")}`;
  });
  return sql`INSERT INTO audit_intake (${sql.raw(INTAKE_COLUMNS.join(", "))}) SELECT ${sql.join(select)} FROM ${sql.raw(opts.from)} WHERE ${opts.where}`;
}

/** Who/where fields of an event, taken from an Express request; spread it into the event. */
export type AuditRequestContext = Pick<AuditEventInput, "tenantId" | "actor" | "sourceIp" | "userAgent" | "requestId">;

export function auditContextFrom(req: Request, res: Response): AuditRequestContext {
  const actor = res.locals.actor as Actor | undefined;
  return {
    tenantId: actor?.tenantId ?? null,
    actor: {
      userId: actor?.userId ?? null,
      role: actor?.role ?? null,
      impersonatorId: actor?.impersonatorId ?? null,
      breakGlass: false,
    },
    // req.ip honours server.trustedProxies (X-Forwarded-For) and the PROXY header, so behind the hospital's proxy this is the client.
    sourceIp: req.ip ?? req.socket.remoteAddress ?? null,
    userAgent: req.get("user-agent") ?? null,
    requestId: (res.locals.requestId as string | undefined) ?? null,
  };
}

/**
 * Who an event is recorded for: a signed-in actor, a known account before its session exists
 * (login, invite acceptance), the appliance itself (jobs) or nobody (an unknown account).
 */
export type EventActor = Actor | { userId: string | null; role: string | null; tenantId?: string | null; impersonatorId?: string | null } | null;

/** The purge job, key maintenance and other work nobody in particular asked for at that moment. */
export const SYSTEM_ACTOR = { userId: null, role: "system", tenantId: null } as const;

/** What a capability says about its event; the actor and the request's metadata say the rest. */
export type CapabilityEvent = {
  /** Dotted verb: `auth.login`, `user.role.change`, `patient.read`, `keys.rotate`… */
  action: string;
  resourceType: string;
  resourceId?: string | null;
  /** The patient whose record was touched (an id, never a name or MRN). */
  patientId?: string | null;
  /** Defaults to the actor's tenant. */
  tenantId?: string | null;
  outcome: AuditOutcome;
  /** Access rides on a break-glass grant. */
  breakGlass?: boolean;
  /** Ids, counts, rule names, a stated reason: never a password, token or PHI value. */
  reason?: string | null;
};

/** The one mapping from (actor, event, request) to the audit trail's fields, for every capability. */
export function auditEventOf(actor: EventActor, event: CapabilityEvent, meta: RequestMeta | null): AuditEventInput {
  // The host's command line has no account: recorded as the other CLI commands record it.
  const host = actor !== null && "via" in actor && actor.via === "host";
  return {
    tenantId: event.tenantId !== undefined ? event.tenantId : (actor?.tenantId ?? null),
    actor: {
      userId: host ? null : (actor?.userId ?? null),
      role: host ? CLI_OPERATOR.role : (actor?.role ?? null),
      impersonatorId: actor && "impersonatorId" in actor ? (actor.impersonatorId ?? null) : null,
      breakGlass: event.breakGlass === true,
    },
    action: event.action,
    resourceType: event.resourceType,
    resourceId: event.resourceId ?? null,
    patientId: event.patientId ?? null,
    outcome: event.outcome,
    sourceIp: meta?.sourceIp ?? null,
    userAgent: meta?.userAgent ?? (host ? CLI_OPERATOR.userAgent : null),
    requestId: meta?.requestId ?? null,
    reason: event.reason ?? null,
  };
}

/**
 * Records a capability's event in the transaction of the work it records, so the event and the
 * change commit together (and a failed audit write fails the work).
 */
export async function recordEvent(ctx: ApplianceContext, t: Tx, actor: EventActor, event: CapabilityEvent, meta: RequestMeta | null): Promise<void> {
  await appendAuditEvent(ctx, t, auditEventOf(actor, event, meta));
}

/** Identity and access events (`auth.login`, `user.invite`, `access.denied`…). */
export type AuthEvent = CapabilityEvent;
export type AuthEventActor = EventActor;
export const recordAuthEvent = recordEvent;

/** A PHI read or write: always inside a tenant, a success unless said otherwise; ids only, never values. */
export type PhiEvent = Omit<CapabilityEvent, "outcome" | "resourceType" | "tenantId"> & {
  resourceType: "patient" | "appointment" | "note" | "consent" | "attachment" | "legal_hold" | "deletion_request" | "tenant";
  tenantId: string;
  outcome?: AuditOutcome;
};
export type RecordsActor = Actor | typeof SYSTEM_ACTOR;

/** The audit event of a PHI read or write (for `recordPhiEvent`, or a statement that writes it itself). */
export function phiAuditEvent(actor: RecordsActor, event: PhiEvent, meta: RequestMeta | null): AuditEventInput {
  return auditEventOf(actor, { ...event, outcome: event.outcome ?? "success" }, meta);
}

/** Every PHI read and write of the records capability (DESIGN "Audit trail"). */
export async function recordPhiEvent(ctx: ApplianceContext, t: Tx, actor: RecordsActor, event: PhiEvent, meta: RequestMeta | null): Promise<void> {
  await appendAuditEvent(ctx, t, phiAuditEvent(actor, event, meta));
}

/**
 * Who asked for a key operation, with where from: a signed-in actor over HTTP, an operator at the
 * CLI (`wardkeep keys ...` on the appliance host), or the appliance itself (jobs).
 */
export type KeyOperator = {
  userId: string | null;
  role: string | null;
  tenantId: string | null;
  impersonatorId?: string | null;
} & RequestMeta;

export const CLI_OPERATOR: KeyOperator = { userId: null, role: "host_operator", tenantId: null, sourceIp: null, userAgent: "wardkeep-cli", requestId: null };
export const SYSTEM_OPERATOR: KeyOperator = { ...SYSTEM_ACTOR, sourceIp: null, userAgent: null, requestId: null };

export function operatorOf(req: Request, res: Response, actor?: Actor): KeyOperator {
  return {
    userId: actor?.userId ?? null,
    role: actor?.role ?? null,
    tenantId: actor?.tenantId ?? null,
    impersonatorId: actor?.impersonatorId ?? null,
    ...requestMeta(req, res),
  };
}

export type KeyEvent = Omit<CapabilityEvent, "resourceType" | "breakGlass" | "resourceId"> & {
  /** Key id or subject ("tenant/<uuid>", "kek"): ids only. */
  resourceId: string | null;
};

/** A key event (`keys.unseal`, `keys.rotate`, `keys.shred.*`…) in the transaction of the work it records. */
export async function recordKeyEvent(ctx: ApplianceContext, t: Tx, by: KeyOperator, event: KeyEvent): Promise<void> {
  await recordEvent(ctx, t, by, { ...event, resourceType: "key" }, by);
}

/** For operations with no transaction of their own (unseal, seal): the event in its own. */
export async function recordKeyEventAlone(ctx: ApplianceContext, by: KeyOperator, event: KeyEvent): Promise<void> {
  await inScope(ctx.db.app, { kind: "appliance" }, (t) => recordKeyEvent(ctx, t, by, event));
}
