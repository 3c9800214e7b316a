import { randomUUID } from "node:crypto";
import { publishWebhookEvent } from "../../webhooks/index.js";
import type { Tx } from "../../db/sql.js";
import type { Actor } from "../../kernel/actor.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { Conflict, Invalid, NotFound } from "../../kernel/errors.js";
import { recordPhiEvent } from "../../audit/append.js";
import { recordUndecryptable } from "../audit.js";
import { openerFor, openRows, sealRow, type FieldOpener } from "../columns.js";
import { isUniqueViolation } from "../../db/sql.js";
import { decodeCursor, pageOf, timeIdPosition, type ListPage } from "../http.js";
import { openPatient, tenantOf } from "../patients/access.js";
import type { ConsentGrant, ConsentRevoke, ConsentSummary, ConsentView, InForceQuery } from "./schema.js";

type ConsentRow = {
  id: string;
  tenant_id: string;
  patient_id: string;
  consent_type: string;
  text_version: string;
  scope_enc: Buffer | null;
  method: "signature" | "attestation";
  evidence_enc: Buffer;
  granted_at: Date;
  granted_by: string;
  expires_at: Date | null;
  revoked_at: Date | null;
  revoked_by: string | null;
  revocation_method: "signature" | "attestation" | null;
  revocation_evidence_enc: Buffer | null;
  revocation_reason_enc: Buffer | null;
};

const SELECT = `SELECT c.*, r.revoked_at, r.revoked_by, r.method AS revocation_method, r.evidence_enc AS revocation_evidence_enc, r.reason_enc AS revocation_reason_enc
  FROM consents c LEFT JOIN consent_revocations r ON r.consent_id = c.id`;

/** The state of a grant at `at`: revocations and expiry count from their own time on. */
function stateAt(r: ConsentRow, at: Date): ConsentSummary["state"] | "not_yet" {
  if (r.granted_at > at) return "not_yet";
  if (r.revoked_at && r.revoked_at <= at) return "revoked";
  if (r.expires_at && r.expires_at <= at) return "expired";
  return "in_force";
}

function summary(open: FieldOpener, r: ConsentRow, now: Date): ConsentSummary {
  const state = stateAt(r, now);
  return {
    id: r.id,
    patientId: r.patient_id,
    type: r.consent_type,
    textVersion: r.text_version,
    scope: open.text("consents", "scope_enc", r.id, r.tenant_id, r.scope_enc),
    method: r.method,
    grantedAt: r.granted_at.toISOString(),
    grantedBy: r.granted_by,
    expiresAt: r.expires_at?.toISOString() ?? null,
    revocation: r.revoked_at
      ? {
          revokedAt: r.revoked_at.toISOString(),
          revokedBy: r.revoked_by!,
          method: r.revocation_method!,
          reason: open.text("consent_revocations", "reason_enc", r.id, r.tenant_id, r.revocation_reason_enc),
        }
      : null,
    state: state === "not_yet" ? "in_force" : state,
  };
}

function fullView(open: FieldOpener, r: ConsentRow, now: Date): ConsentView {
  const revocationEvidence = open.text("consent_revocations", "evidence_enc", r.id, r.tenant_id, r.revocation_evidence_enc);
  return {
    ...summary(open, r, now),
    evidence: JSON.parse(open.text("consents", "evidence_enc", r.id, r.tenant_id, r.evidence_enc)!) as Record<string, unknown>,
    revocationEvidence: revocationEvidence ? (JSON.parse(revocationEvidence) as Record<string, unknown>) : null,
  };
}

const summaryCiphertexts = (list: ConsentRow[]) => list.flatMap((r) => [r.scope_enc, r.revocation_reason_enc]);

async function loadConsent(ctx: ApplianceContext, t: Tx, tenantId: string, patientId: string, id: string): Promise<ConsentRow> {
  const [row] = await t.rows<ConsentRow>(`${SELECT} WHERE c.id = $1 AND c.tenant_id = $2 AND c.patient_id = $3`, [id, tenantId, patientId]);
  if (!row) throw new NotFound("no such consent for this patient");
  return row;
}

export async function grantConsent(ctx: ApplianceContext, actor: Actor, patientId: string, input: ConsentGrant, meta: RequestMeta): Promise<ConsentView> {
  const tenantId = tenantOf(actor);
  const now = ctx.clock.now();
  if (input.expiresAt && input.expiresAt <= now)
    throw new Invalid("expiresAt must be in the future", { errors: [{ path: "expiresAt", message: "must be in the future", code: "custom" }] });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "consent:create", patientId);
    const id = randomUUID();
    const enc = await sealRow(ctx, t, { tenantId, patientId, table: "consents", rowId: id }, { scope_enc: input.scope ?? null, evidence_enc: JSON.stringify(input.evidence) });
    await t.exec(
      `INSERT INTO consents (id, tenant_id, patient_id, consent_type, text_version, scope_enc, method, evidence_enc, granted_at, granted_by, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
      [id, tenantId, patientId, input.type, input.textVersion, enc.scope_enc, input.evidence.method, enc.evidence_enc, now, actor.userId, input.expiresAt ?? null],
    );
    await recordPhiEvent(
      ctx,
      t,
      actor,
      { action: "consent.grant", resourceType: "consent", resourceId: id, patientId, tenantId, breakGlass, reason: `type ${input.type} v${input.textVersion}` },
      meta,
    );
    const row = await loadConsent(ctx, t, tenantId, patientId, id);
    const open = await openerFor(ctx, t, [row.scope_enc, row.evidence_enc]);
    return fullView(open, row, now);
  });
}

export async function revokeConsent(ctx: ApplianceContext, actor: Actor, patientId: string, consentId: string, input: ConsentRevoke, meta: RequestMeta): Promise<ConsentView> {
  const tenantId = tenantOf(actor);
  const now = ctx.clock.now();
  try {
    return await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
      const { breakGlass } = await openPatient(ctx, t, actor, "consent:update", patientId);
      const existing = await loadConsent(ctx, t, tenantId, patientId, consentId);
      if (existing.revoked_at) throw new Conflict(`this consent was already revoked on ${existing.revoked_at.toISOString()}`);
      const enc = await sealRow(
        ctx,
        t,
        { tenantId, patientId, table: "consent_revocations", rowId: consentId },
        { evidence_enc: JSON.stringify(input.evidence), reason_enc: input.reason ?? null },
      );
      await t.exec(
        `INSERT INTO consent_revocations (consent_id, tenant_id, patient_id, revoked_at, revoked_by, method, evidence_enc, reason_enc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [consentId, tenantId, patientId, now, actor.userId, input.evidence.method, enc.evidence_enc, enc.reason_enc],
      );
      await recordPhiEvent(
        ctx,
        t,
        actor,
        { action: "consent.revoke", resourceType: "consent", resourceId: consentId, patientId, tenantId, breakGlass, reason: `type ${existing.consent_type}` },
        meta,
      );
      await publishWebhookEvent(ctx, t, { tenantId, type: "consent.revoked", data: { patientId, consentId, consentType: existing.consent_type, method: input.evidence.method } });
      const row = await loadConsent(ctx, t, tenantId, patientId, consentId);
      const open = await openerFor(ctx, t, [row.scope_enc, row.evidence_enc, row.revocation_evidence_enc, row.revocation_reason_enc]);
      return fullView(open, row, now);
    });
  } catch (err) {
    // Two revocations racing: the primary key lets one through.
    if (isUniqueViolation(err, "consent_revocations_pkey")) throw new Conflict("this consent was already revoked");
    throw err;
  }
}

export async function getConsent(ctx: ApplianceContext, actor: Actor, patientId: string, consentId: string, meta: RequestMeta): Promise<ConsentView> {
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "consent:read", patientId);
    const row = await loadConsent(ctx, t, tenantId, patientId, consentId);
    const open = await openerFor(ctx, t, [row.scope_enc, row.evidence_enc, row.revocation_evidence_enc, row.revocation_reason_enc]);
    await recordPhiEvent(ctx, t, actor, { action: "consent.read", resourceType: "consent", resourceId: consentId, patientId, tenantId, breakGlass }, meta);
    return fullView(open, row, ctx.clock.now());
  });
}

/** The patient's consent history (grants with their revocations), oldest grant first. */
export async function listConsents(
  ctx: ApplianceContext,
  actor: Actor,
  patientId: string,
  q: { type?: string | undefined; limit: number; cursor?: string | undefined },
  meta: RequestMeta,
): Promise<ListPage<ConsentSummary>> {
  const tenantId = tenantOf(actor);
  const purpose = `consents:${tenantId}:${patientId}:${q.type ?? ""}`;
  const after = timeIdPosition(decodeCursor(ctx, purpose, q.cursor));
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "consent:list", patientId);
    const list = await t.rows<ConsentRow>(
      `${SELECT} WHERE c.tenant_id = $1 AND c.patient_id = $2 AND ($3::text IS NULL OR c.consent_type = $3)
         AND ($4::timestamptz IS NULL OR (c.granted_at, c.id) > ($4::timestamptz, $5::uuid))
       ORDER BY c.granted_at, c.id LIMIT $6`,
      [tenantId, patientId, q.type ?? null, after?.at ?? null, after?.id ?? null, q.limit + 1],
    );
    const page = pageOf(
      ctx,
      purpose,
      list,
      q.limit,
      (r) => [r.granted_at.toISOString(), r.id],
      (r) => r,
    );
    const open = await openerFor(ctx, t, summaryCiphertexts(page.items));
    const now = ctx.clock.now();
    const { items, skipped } = openRows(
      page.items,
      (r) => r.id,
      (r) => summary(open, r, now),
    );
    await recordPhiEvent(ctx, t, actor, { action: "consent.list", resourceType: "consent", patientId, tenantId, breakGlass, reason: `${items.length} shown` }, meta);
    await recordUndecryptable(ctx, t, actor, skipped, { resourceType: "consent", tenantId, patientId, breakGlass }, meta);
    return { items, nextCursor: page.nextCursor, undecryptable: skipped.length };
  });
}

/**
 * "Is consent `type` in force for this patient at `at` (default now)?" — answered from the grant
 * and revocation events alone: a grant made by then, not revoked by then, not expired by then.
 */
export async function consentInForce(ctx: ApplianceContext, actor: Actor, patientId: string, q: InForceQuery, meta: RequestMeta) {
  const tenantId = tenantOf(actor);
  const at = q.at ?? ctx.clock.now();
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "consent:read", patientId);
    const [row] = await t.rows<ConsentRow>(
      `${SELECT} WHERE c.tenant_id = $1 AND c.patient_id = $2 AND c.consent_type = $3 AND ($4::text IS NULL OR c.text_version = $4)
         AND c.granted_at <= $5 AND (c.expires_at IS NULL OR c.expires_at > $5) AND (r.revoked_at IS NULL OR r.revoked_at > $5)
       ORDER BY c.granted_at DESC, c.id DESC LIMIT 1`,
      [tenantId, patientId, q.type, q.textVersion ?? null, at],
    );
    await recordPhiEvent(
      ctx,
      t,
      actor,
      {
        action: "consent.check",
        resourceType: "consent",
        resourceId: row?.id ?? null,
        patientId,
        tenantId,
        breakGlass,
        reason: `type ${q.type}: ${row ? "in force" : "not in force"}`,
      },
      meta,
    );
    const open = await openerFor(ctx, t, row ? summaryCiphertexts([row]) : []);
    return { patientId, type: q.type, at: at.toISOString(), inForce: Boolean(row), consent: row ? summary(open, row, ctx.clock.now()) : null };
  });
}
