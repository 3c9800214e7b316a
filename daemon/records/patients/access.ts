import type { Actor } from "../../kernel/actor.js";
import { authorize, can, type Action } from "../../kernel/policy.js";
import { auditIntakeFrom, auditWriteFailed, phiAuditEvent, type PhiEvent, notifyAuditIntake } from "../../audit/append.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { sql, sqlState, type SqlFragment, type Tx } from "../../db/sql.js";
import { Forbidden, NotFound } from "../../kernel/errors.js";
import { hintedKeyHolds, hintedWriteKey, lockedWriteKeyOf, lockedWriteKeySql, settleHintedWrite, type LockedWriteKey, type WriteKey } from "../../keys/index.js";

/**
 * The first step of every patient-data request: find the (not purged) patient in the actor's
 * tenant, then ask the policy — care team, break-glass — through `authorizePatient`. Unknown and
 * purged patients are 404 before any 403, so a 403 never confirms more than the policy allows.
 */
export function tenantOf(actor: Actor): string {
  // The policy admits only tenant staff to records; appliance staff never reach a patient.
  if (!actor.tenantId) throw new Forbidden("records belong to a tenant; appliance staff cannot open them");
  return actor.tenantId;
}

export type PatientRow = {
  id: string;
  tenant_id: string;
  status: "active" | "purged";
  name_enc: Buffer | null;
  birth_date_enc: Buffer | null;
  mrn_enc: Buffer | null;
  phone_enc: Buffer | null;
  email_enc: Buffer | null;
  address_enc: Buffer | null;
  mrn_bidx: string | null;
  email_bidx: string | null;
  version: number;
  created_at: Date;
  updated_at: Date;
};

export async function findActivePatient(ctx: ApplianceContext, t: Tx, tenantId: string, patientId: string, opts: { lock?: boolean } = {}): Promise<PatientRow> {
  const [row] = await t.rows<PatientRow>(`SELECT * FROM patients WHERE id = $1 AND tenant_id = $2 AND status = 'active'${opts.lock ? " FOR UPDATE" : ""}`, [patientId, tenantId]);
  if (!row) throw new NotFound("no such patient");
  return row;
}

/**
 * A patient row with the policy's facts about the actor: care team (`assigned`) and an open
 * break-glass grant (`break_glass`), the same facts with the same definitions as
 * `patientAccessFor` in daemon/access/care-team.ts. `more`: the patient's data key locked and read
 * for a write (`lockedWriteKeySql`).
 */
function patientWithFacts(
  f: { patientId: string; tenantId: string; actorId: string; now: Date },
  more?: { columns: SqlFragment; join: SqlFragment },
  patientColumns: "p.*" | "p.id" = "p.*",
): SqlFragment {
  return sql`SELECT ${sql.raw(patientColumns)},
       EXISTS (SELECT 1 FROM care_team_assignments c WHERE c.tenant_id = ${f.tenantId} AND c.patient_id = ${f.patientId} AND c.user_id = ${f.actorId}) AS assigned,
       EXISTS (SELECT 1 FROM break_glass_grants g WHERE g.tenant_id = ${f.tenantId} AND g.patient_id = ${f.patientId} AND g.user_id = ${f.actorId} AND g.ended_at IS NULL AND g.expires_at > ${f.now}) AS break_glass${more ? sql`, ${more.columns}` : sql``}
     FROM patients p ${more?.join ?? sql``} WHERE p.id = ${f.patientId} AND p.tenant_id = ${f.tenantId} AND p.status = 'active'`;
}

type Facts = { assigned: boolean; break_glass: boolean };
type PatientWithFacts = PatientRow & Facts;

/** The policy's decision on the facts that came back with the row (404 before any 403): whether it is a break-glass access. */
function decideOnFacts(actor: Actor, action: Action, tenantId: string, facts: Facts | undefined): boolean {
  if (!facts) throw new NotFound("no such patient");
  authorize(actor, action, { tenantId, patient: { assigned: facts.assigned, breakGlass: facts.break_glass } });
  return !facts.assigned && facts.break_glass;
}

function decide(actor: Actor, action: Action, tenantId: string, row: PatientWithFacts | undefined): { patient: PatientRow; breakGlass: boolean } {
  const breakGlass = decideOnFacts(actor, action, tenantId, row);
  const { assigned: _assigned, break_glass: _breakGlass, ...patient } = row!;
  return { patient, breakGlass };
}

/**
 * `findActivePatient` + the policy for `action` on that patient, in one round trip: the row and
 * the care-team / break-glass facts come back together, and the decision is the policy table's
 * (`authorize`). This is the hot path of every record write. `writeKey`: the same statement takes
 * the patient's data key lock and reads its active version (`lockedWriteKey`, for `sealRow`), so
 * an encrypted write does not spend a round trip on it (daemon/keys/keyring.ts, `lockedWriteKeySql`).
 */
export async function openPatient(
  ctx: ApplianceContext,
  t: Tx,
  actor: Actor,
  action: Action,
  patientId: string,
  opts: { lock?: boolean; writeKey?: boolean } = {},
): Promise<{ patient: PatientRow; breakGlass: boolean; lockedWriteKey?: LockedWriteKey }> {
  const tenantId = tenantOf(actor);
  const subject = { kind: "patient", tenantId, patientId } as const;
  const facts = patientWithFacts({ patientId, tenantId, actorId: actor.userId, now: ctx.clock.now() }, opts.writeKey ? lockedWriteKeySql(subject) : undefined);
  const [row] = await t.rows<PatientWithFacts & Record<string, unknown>>(opts.lock ? sql`${facts} FOR UPDATE OF p` : facts);
  if (!opts.writeKey || !row) return decide(actor, action, tenantId, row);
  const { key, rest } = lockedWriteKeyOf(subject, row);
  return { ...decide(actor, action, tenantId, rest), lockedWriteKey: key };
}

/**
 * A read of one patient whose whole database work is one round trip: the row, the policy's facts
 * and the read's audit event in one statement, in a transaction of its own that commits in the
 * same round trip (`groupedStatementInScope`: under load, concurrent requests' statements share
 * one transaction, each answered only after that COMMIT). `openPatient` + `recordPhiEvent` in a transaction
 * cost two (the event needs the decision, the decision needs the row).
 *
 * The decision still comes from the policy table alone: before sending, the policy is asked about
 * this actor and action under each of the four combinations of the facts, and the statement
 * writes the event only under the combination that the row's facts select (with the break-glass
 * flag they imply). After the row comes back, `authorize` decides on the same facts, so the
 * answer is the same: PHI goes out only with its event committed (DESIGN "Audit trail"), and a
 * read the policy refuses writes no read event (it gets the denial event every 403 gets). An
 * unknown patient writes nothing and is a 404, as in `openPatient`.
 */
/**
 * The policy's answers for `action` under each of the four combinations of the facts, as SQL over
 * the FROM item `p` of `patientWithFacts`: true where the row's facts select an allowed
 * combination. Only the policy table decides: this asks it four times, it holds no rule itself.
 */
function allowedByPolicy(actor: Actor, action: Action, tenantId: string): SqlFragment {
  // Indexed by 2 * assigned + break_glass, the order of the array below.
  const decisions = [false, true].flatMap((assigned) => [false, true].map((breakGlass) => can(actor, action, { tenantId, patient: { assigned, breakGlass } })));
  return sql`(${`{${decisions.join(",")}}`}::boolean[])[1 + 2 * p.assigned::int + p.break_glass::int]`;
}

/** The break-glass flag of an event written by a statement over `p`: the facts say it. */
const BREAK_GLASS_OF_ROW = { break_glass: "NOT p.assigned AND p.break_glass" };

/**
 * A patient-data write whose whole database work is one round trip, when this process holds the
 * patient's write key (`hintedWriteKey`): the values are encrypted first, then `BEGIN`, the scope,
 * one statement and `COMMIT` go out together (`groupedStatementInScope`). The statement finds the
 * patient with the policy's facts, takes the key's lock and reads its active version, and writes
 * (`write`: data-modifying WITH queries over `p`, the last one named `written`, whose rows `event`'s
 * audit INSERT joins) only
 * where the policy allows the facts' combination (`allowedByPolicy`) and the hinted key is still
 * the active version. `openPatient` + the write + its event cost two round trips.
 *
 * Resolves to undefined, having written nothing, when the key was not cached here or changed in
 * between (a rotation, a shred), or when PostgreSQL refused the statement: the caller then takes
 * its two-round-trip path, which makes or reads the key under the lock and reports a failure
 * precisely. The caller reuses its row ids there, so a write can never land twice. Unknown patients are 404 and refusals 403, from `decide`, as in
 * `openPatient`; in both cases nothing was written.
 */
export async function writePatientInOneTrip(
  ctx: ApplianceContext,
  actor: Actor,
  action: Action,
  patientId: string,
  event: Omit<PhiEvent, "tenantId" | "patientId" | "breakGlass">,
  meta: RequestMeta,
  write: (key: WriteKey, allowed: SqlFragment) => SqlFragment,
): Promise<{ breakGlass: boolean } | undefined> {
  const tenantId = tenantOf(actor);
  const subject = { kind: "patient", tenantId, patientId } as const;
  const key = hintedWriteKey(ctx, subject);
  if (!key) return undefined;
  const allowed = sql`${allowedByPolicy(actor, action, tenantId)} AND ${hintedKeyHolds("p", key)}`;
  const statement = write(key, allowed); // encrypts; zeroes the key
  const audit = auditIntakeFrom(ctx, phiAuditEvent(actor, { ...event, tenantId, patientId }, meta), { from: "p, written", where: sql`true`, expressions: BREAK_GLASS_OF_ROW });
  // The patient's id and the facts, not its encrypted fields: a write does not need them, so they
  // neither leave the database nor cost a decoding here.
  const facts = patientWithFacts({ patientId, tenantId, actorId: actor.userId, now: ctx.clock.now() }, lockedWriteKeySql(subject), "p.id");
  let row: ({ id: string; written: boolean } & Facts & Record<string, unknown>) | undefined;
  try {
    [row] = await ctx.db.app.groupedStatementInScope<{ id: string; written: boolean } & Facts>(
      { kind: "tenant", tenantId },
      sql`WITH p AS (${facts}), ${statement}, audited AS (${audit}) SELECT p.*, EXISTS (SELECT 1 FROM written) AS written FROM p`,
    );
  } catch (err) {
    // PostgreSQL refused the statement and rolled it back: nothing was written. The general path
    // runs the same work as separate statements and says which one failed (the audit trail's 503,
    // or the record's own error). Without an SQLSTATE the connection itself failed, and whether
    // the COMMIT took effect is unknown: no second attempt then.
    if (sqlState(err)) return undefined;
    throw err;
  }
  if (!row) return { breakGlass: decideOnFacts(actor, action, tenantId, undefined) };
  const { key: locked, rest } = lockedWriteKeyOf(subject, row);
  const breakGlass = decideOnFacts(actor, action, tenantId, rest);
  const { written } = rest;
  if (!written) return undefined;
  settleHintedWrite(ctx, locked);
  notifyAuditIntake(ctx);
  return { breakGlass };
}

export async function readPatient(
  ctx: ApplianceContext,
  actor: Actor,
  action: Action,
  patientId: string,
  event: Omit<PhiEvent, "tenantId" | "patientId" | "breakGlass">,
  meta: RequestMeta,
): Promise<{ patient: PatientRow; breakGlass: boolean }> {
  const tenantId = tenantOf(actor);
  const audit = auditIntakeFrom(ctx, phiAuditEvent(actor, { ...event, tenantId, patientId }, meta), {
    from: "p",
    where: allowedByPolicy(actor, action, tenantId),
    expressions: BREAK_GLASS_OF_ROW,
  });
  let row: PatientWithFacts | undefined;
  try {
    const facts = patientWithFacts({ patientId, tenantId, actorId: actor.userId, now: ctx.clock.now() });
    [row] = await ctx.db.app.groupedStatementInScope<PatientWithFacts>({ kind: "tenant", tenantId }, sql`WITH p AS (${facts}), audited AS (${audit}) SELECT * FROM p`);
  } catch (err) {
    throw auditWriteFailed(ctx, event.action)(err as Error);
  }
  const decided = decide(actor, action, tenantId, row);
  notifyAuditIntake(ctx);
  return decided;
}

/** The patient exists (and is not purged) in the actor's tenant; no policy question asked. */
export async function assertPatientExists(ctx: ApplianceContext, t: Tx, tenantId: string, patientId: string): Promise<void> {
  await findActivePatient(ctx, t, tenantId, patientId);
}

/**
 * Whether the actor may read any patient of the tenant (front desk) or only those on their care
 * team or under break-glass (practitioners): asked of the policy with an unassigned patient.
 */
export function seesWholeTenant(actor: Actor, action: Action = "patient:read"): boolean {
  return can(actor, action, { tenantId: actor.tenantId, patient: { assigned: false, breakGlass: false } });
}

/** SQL for "patient `col` is on the actor's care team or opened by break-glass"; binds actor id at $u and now at $n. */
export function careTeamFilter(col: string, u: number, n: number): string {
  return `(EXISTS (SELECT 1 FROM care_team_assignments c WHERE c.tenant_id = app_tenant_id() AND c.patient_id = ${col} AND c.user_id = $${u})
       OR EXISTS (SELECT 1 FROM break_glass_grants g WHERE g.tenant_id = app_tenant_id() AND g.patient_id = ${col} AND g.user_id = $${u} AND g.ended_at IS NULL AND g.expires_at > $${n}))`;
}
