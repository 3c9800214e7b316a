import { QueryTypes, type Transaction } from "sequelize";
import type { Actor } from "../../kernel/actor.js";
import { authorize, can, type Action } from "../../access/policy.js";
import { auditIntakeFrom, auditWriteFailed, phiAuditEvent, type PhiEvent } from "../../audit/append.js";
import { notifyAuditIntake } from "../../audit/chainer.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { singleStatementInScope } from "../../db/tenant-scope.js";
import { Forbidden, NotFound } from "../../kernel/errors.js";
import { keyIdOf, lockedWriteKeyOf, lockedWriteKeySql, type LockedWriteKey } from "../../keys/index.js";

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

export async function findActivePatient(ctx: ApplianceContext, t: Transaction, tenantId: string, patientId: string, opts: { lock?: boolean } = {}): Promise<PatientRow> {
  const [row] = await ctx.db.app.query<PatientRow>(`SELECT * FROM patients WHERE id = $1 AND tenant_id = $2 AND status = 'active'${opts.lock ? " FOR UPDATE" : ""}`, {
    bind: [patientId, tenantId],
    type: QueryTypes.SELECT,
    transaction: t,
  });
  if (!row) throw new NotFound("no such patient");
  return row;
}

/**
 * A patient row with the policy's facts about the actor: care team (`assigned`) and an open
 * break-glass grant (`break_glass`), the same facts with the same definitions as
 * `patientAccessFor` in daemon/access/care-team.ts. Binds patient $1, tenant $2, actor $3, now $4.
 */
const patientWithFacts = (more: { columns: string; join: string } = { columns: "", join: "" }) => `SELECT p.*,
       EXISTS (SELECT 1 FROM care_team_assignments c WHERE c.tenant_id = $2 AND c.patient_id = $1 AND c.user_id = $3) AS assigned,
       EXISTS (SELECT 1 FROM break_glass_grants g WHERE g.tenant_id = $2 AND g.patient_id = $1 AND g.user_id = $3 AND g.ended_at IS NULL AND g.expires_at > $4) AS break_glass${more.columns ? `, ${more.columns}` : ""}
     FROM patients p ${more.join} WHERE p.id = $1 AND p.tenant_id = $2 AND p.status = 'active'`;
const PATIENT_WITH_FACTS = patientWithFacts();
/** The same, with the patient's data key locked and read for a write (`lockedWriteKeySql`, key id at $5). */
const PATIENT_WITH_FACTS_AND_KEY = patientWithFacts(lockedWriteKeySql(5));

type PatientWithFacts = PatientRow & { assigned: boolean; break_glass: boolean };

/** The policy's decision on the facts that came back with the row (404 before any 403). */
function decide(actor: Actor, action: Action, tenantId: string, row: PatientWithFacts | undefined): { patient: PatientRow; breakGlass: boolean } {
  if (!row) throw new NotFound("no such patient");
  const { assigned, break_glass, ...patient } = row;
  authorize(actor, action, { tenantId, patient: { assigned, breakGlass: break_glass } });
  return { patient, breakGlass: !assigned && break_glass };
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
  t: Transaction,
  actor: Actor,
  action: Action,
  patientId: string,
  opts: { lock?: boolean; writeKey?: boolean } = {},
): Promise<{ patient: PatientRow; breakGlass: boolean; lockedWriteKey?: LockedWriteKey }> {
  const tenantId = tenantOf(actor);
  const subject = { kind: "patient", tenantId, patientId } as const;
  const [row] = await ctx.db.app.query<PatientWithFacts & Record<string, unknown>>(`${opts.writeKey ? PATIENT_WITH_FACTS_AND_KEY : PATIENT_WITH_FACTS}${opts.lock ? " FOR UPDATE OF p" : ""}`, {
    bind: [patientId, tenantId, actor.userId, ctx.clock.now(), ...(opts.writeKey ? [keyIdOf(subject)] : [])],
    type: QueryTypes.SELECT,
    transaction: t,
  });
  if (!opts.writeKey || !row) return decide(actor, action, tenantId, row);
  const { key, rest } = lockedWriteKeyOf(subject, row);
  return { ...decide(actor, action, tenantId, rest), lockedWriteKey: key };
}

/**
 * A read of one patient whose whole database work is one round trip: the row, the policy's facts
 * and the read's audit event in one statement, in a transaction of its own that commits in the
 * same round trip (`singleStatementInScope`). `openPatient` + `recordPhiEvent` in a transaction
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
export async function readPatient(
  ctx: ApplianceContext,
  actor: Actor,
  action: Action,
  patientId: string,
  event: Omit<PhiEvent, "tenantId" | "patientId" | "breakGlass">,
  meta: RequestMeta,
): Promise<{ patient: PatientRow; breakGlass: boolean }> {
  const tenantId = tenantOf(actor);
  // Indexed by 2 * assigned + break_glass, the order of the array below.
  const decisions = [false, true].flatMap((assigned) => [false, true].map((breakGlass) => can(actor, action, { tenantId, patient: { assigned, breakGlass } })));
  const audit = auditIntakeFrom(ctx, phiAuditEvent(actor, { ...event, tenantId, patientId }, meta), {
    from: "p",
    where: "($5::boolean[])[1 + 2 * p.assigned::int + p.break_glass::int]",
    firstParam: 6,
    expressions: { break_glass: "NOT p.assigned AND p.break_glass" },
  });
  let row: PatientWithFacts | undefined;
  try {
    [row] = await singleStatementInScope<PatientWithFacts>(ctx.db.app, { kind: "tenant", tenantId }, {
      text: `WITH p AS (${PATIENT_WITH_FACTS}), audited AS (${audit.sql}) SELECT * FROM p`,
      values: [patientId, tenantId, actor.userId, ctx.clock.now(), `{${decisions.join(",")}}`, ...audit.values],
    });
  } catch (err) {
    throw auditWriteFailed(ctx, event.action)(err as Error);
  }
  const decided = decide(actor, action, tenantId, row);
  notifyAuditIntake(ctx);
  return decided;
}

/** The patient exists (and is not purged) in the actor's tenant; no policy question asked. */
export async function assertPatientExists(ctx: ApplianceContext, t: Transaction, tenantId: string, patientId: string): Promise<void> {
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
