import { randomUUID } from "node:crypto";
import type { Tx } from "../../db/sql.js";
import type { Actor } from "../../kernel/actor.js";
import { authorize } from "../../kernel/policy.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { Conflict } from "../../kernel/errors.js";
import { normaliseEmail, blindIndexFor } from "../../keys/index.js";
import { recordPhiEvent } from "../../audit/append.js";
import { recordUndecryptable } from "../audit.js";
import { openerFor, openRows, sealRow, type KeySource } from "../columns.js";
import { isUniqueViolation } from "../../db/sql.js";
import { assertVersion, decodeCursor, pageOf, timeIdPosition, type ListPage } from "../http.js";
import { careTeamFilter, openPatient, readPatient, seesWholeTenant, tenantOf, type PatientRow } from "./access.js";
import type { PatientCreate, PatientSearch, PatientUpdate, PatientView } from "./schema.js";

const FIELDS = {
  name: "name_enc",
  birthDate: "birth_date_enc",
  mrn: "mrn_enc",
  phone: "phone_enc",
  email: "email_enc",
  address: "address_enc",
} as const;

/** Decrypts patient rows (one key lookup for the lot); a row that does not decrypt throws (`openerFor`). */
export async function patientViews(ctx: ApplianceContext, keys: KeySource, list: PatientRow[]): Promise<PatientView[]> {
  const view = await patientViewer(ctx, keys, list);
  return list.map(view);
}

/** The view of each row, with the keys of all of them loaded at once (for `openRows`). */
export async function patientViewer(ctx: ApplianceContext, keys: KeySource, list: PatientRow[]): Promise<(r: PatientRow) => PatientView> {
  const open = await openerFor(
    ctx,
    keys,
    list.flatMap((r) => Object.values(FIELDS).map((c) => r[c])),
  );
  return (r) => {
    const f = (c: (typeof FIELDS)[keyof typeof FIELDS]) => open.text("patients", c, r.id, r.tenant_id, r[c]);
    return {
      id: r.id,
      name: f("name_enc") ?? "",
      birthDate: f("birth_date_enc"),
      mrn: f("mrn_enc"),
      phone: f("phone_enc"),
      email: f("email_enc"),
      address: f("address_enc"),
      version: r.version,
      createdAt: r.created_at.toISOString(),
      updatedAt: r.updated_at.toISOString(),
    };
  };
}

async function indexes(ctx: ApplianceContext, t: Tx, tenantId: string, input: { mrn?: string | null; email?: string | null }) {
  return {
    mrn: input.mrn ? await blindIndexFor(ctx, t, { tenantId, table: "patients", column: "mrn" }, input.mrn) : input.mrn === null ? null : undefined,
    email: input.email
      ? await blindIndexFor(ctx, t, { tenantId, table: "patients", column: "email" }, input.email, { normalise: normaliseEmail })
      : input.email === null
        ? null
        : undefined,
  };
}

async function assertMrnFree(ctx: ApplianceContext, t: Tx, tenantId: string, mrnIndex: string | null | undefined, exceptId?: string) {
  if (!mrnIndex) return;
  const [taken] = await t.rows<{ id: string }>("SELECT id FROM patients WHERE tenant_id = $1 AND mrn_bidx = $2 AND id IS DISTINCT FROM $3::uuid", [
    tenantId,
    mrnIndex,
    exceptId ?? null,
  ]);
  if (taken) throw new Conflict("another patient of this tenant already has this MRN", { patientId: taken.id });
}

const mrnConflict = (err: unknown) => (isUniqueViolation(err, "patients_mrn_key") ? new Conflict("another patient of this tenant already has this MRN") : err);

export async function createPatient(ctx: ApplianceContext, actor: Actor, input: PatientCreate, meta: RequestMeta): Promise<PatientView> {
  const tenantId = tenantOf(actor);
  authorize(actor, "patient:create", { tenantId });
  const id = randomUUID();
  const now = ctx.clock.now();
  try {
    return await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
      const idx = await indexes(ctx, t, tenantId, input);
      await assertMrnFree(ctx, t, tenantId, idx.mrn);
      const enc = await sealRow(
        ctx,
        t,
        { tenantId, patientId: id, table: "patients", rowId: id },
        {
          name_enc: input.name,
          birth_date_enc: input.birthDate ?? null,
          mrn_enc: input.mrn ?? null,
          phone_enc: input.phone ?? null,
          email_enc: input.email ?? null,
          address_enc: input.address ?? null,
        },
      );
      const [row] = await t.rows<PatientRow>(
        `INSERT INTO patients (id, tenant_id, name_enc, birth_date_enc, mrn_enc, phone_enc, email_enc, address_enc, mrn_bidx, email_bidx, created_at, created_by, updated_at, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11, $12) RETURNING *`,
        [id, tenantId, enc.name_enc, enc.birth_date_enc, enc.mrn_enc, enc.phone_enc, enc.email_enc, enc.address_enc, idx.mrn ?? null, idx.email ?? null, now, actor.userId],
      );
      // A practitioner who registers a patient looks after them: put them on the care team, or
      // they could not read back what they just wrote.
      if (!seesWholeTenant(actor)) {
        await t.exec("INSERT INTO care_team_assignments (tenant_id, patient_id, user_id, assigned_by, assigned_at) VALUES ($1, $2, $3, $3, $4) ON CONFLICT DO NOTHING", [
          tenantId,
          id,
          actor.userId,
          now,
        ]);
      }
      await recordPhiEvent(ctx, t, actor, { action: "patient.create", resourceType: "patient", resourceId: id, patientId: id, tenantId }, meta);
      return (await patientViews(ctx, t, [row!]))[0]!;
    });
  } catch (err) {
    throw mrnConflict(err);
  }
}

export async function getPatient(ctx: ApplianceContext, actor: Actor, patientId: string, meta: RequestMeta): Promise<PatientView> {
  // One round trip: the row and its audit event, committed together (readPatient). The values are
  // decrypted after that commit (a data key not in the cache is read in a transaction of its own).
  const { patient } = await readPatient(ctx, actor, "patient:read", patientId, { action: "patient.read", resourceType: "patient", resourceId: patientId }, meta);
  const [view] = await patientViews(ctx, { committedForTenant: patient.tenant_id }, [patient]);
  return view!;
}

export async function updatePatient(
  ctx: ApplianceContext,
  actor: Actor,
  patientId: string,
  expectedVersion: number,
  input: PatientUpdate,
  meta: RequestMeta,
): Promise<PatientView> {
  const tenantId = tenantOf(actor);
  try {
    return await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
      const { patient, breakGlass } = await openPatient(ctx, t, actor, "patient:update", patientId, { lock: true });
      assertVersion(patient.version, expectedVersion);
      const idx = await indexes(ctx, t, tenantId, input);
      await assertMrnFree(ctx, t, tenantId, idx.mrn, patientId);
      const enc = await sealRow(
        ctx,
        t,
        { tenantId, patientId, table: "patients", rowId: patientId },
        {
          name_enc: input.name,
          birth_date_enc: input.birthDate,
          mrn_enc: input.mrn,
          phone_enc: input.phone,
          email_enc: input.email,
          address_enc: input.address,
        },
      );
      // Column names come from the fixed FIELDS map, values travel as binds.
      const sets: string[] = [];
      const bind: unknown[] = [patientId, ctx.clock.now(), actor.userId];
      const set = (column: string, value: unknown) => {
        bind.push(value);
        sets.push(`${column} = $${bind.length}`);
      };
      for (const [column, value] of Object.entries(enc)) set(column, value);
      if (idx.mrn !== undefined) set("mrn_bidx", idx.mrn);
      if (idx.email !== undefined) set("email_bidx", idx.email);
      const [row] = await t.rows<PatientRow>(`UPDATE patients SET ${sets.join(", ")}, version = version + 1, updated_at = $2, updated_by = $3 WHERE id = $1 RETURNING *`, bind);
      await recordPhiEvent(
        ctx,
        t,
        actor,
        { action: "patient.update", resourceType: "patient", resourceId: patientId, patientId, tenantId, breakGlass, reason: `fields: ${Object.keys(input).sort().join(",")}` },
        meta,
      );
      return (await patientViews(ctx, t, [row!]))[0]!;
    });
  } catch (err) {
    throw mrnConflict(err);
  }
}

/**
 * A page of the tenant's patients (front desk: all; practitioners: their care team and any
 * break-glass grant), oldest registration first. Each patient shown is audited as a read.
 */
export async function listPatients(ctx: ApplianceContext, actor: Actor, q: { limit: number; cursor?: string | undefined }, meta: RequestMeta): Promise<ListPage<PatientView>> {
  const tenantId = tenantOf(actor);
  authorize(actor, "patient:list", { tenantId });
  const purpose = `patients:${tenantId}:${actor.userId}`;
  const after = timeIdPosition(decodeCursor(ctx, purpose, q.cursor));
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const all = seesWholeTenant(actor);
    const list = await t.rows<PatientRow>(
      `SELECT p.* FROM patients p
        WHERE p.tenant_id = $1 AND p.status = 'active'
          AND ($2::timestamptz IS NULL OR (p.created_at, p.id) > ($2::timestamptz, $3::uuid))
          AND ($4::boolean OR ${careTeamFilter("p.id", 5, 6)})
        ORDER BY p.created_at, p.id LIMIT $7`,
      [tenantId, after?.at ?? null, after?.id ?? null, all, actor.userId, ctx.clock.now(), q.limit + 1],
    );
    const page = pageOf(
      ctx,
      purpose,
      list,
      q.limit,
      (r) => [r.created_at.toISOString(), r.id],
      (r) => r,
    );
    const { items, skipped } = openRows(page.items, (r) => r.id, await patientViewer(ctx, t, page.items));
    for (const v of items) await recordPhiEvent(ctx, t, actor, { action: "patient.list", resourceType: "patient", resourceId: v.id, patientId: v.id, tenantId }, meta);
    await recordUndecryptable(ctx, t, actor, skipped, { resourceType: "patient", tenantId }, meta);
    return { items, nextCursor: page.nextCursor, undecryptable: skipped.length };
  });
}

export type SearchHit = (PatientView & { accessible: true }) | { id: string; accessible: false };

/**
 * Exact lookup by MRN or email through the blind index. Matches the caller may not open come
 * back as bare ids (so a practitioner can decide on break-glass), audited as such.
 */
export async function searchPatients(ctx: ApplianceContext, actor: Actor, input: PatientSearch, meta: RequestMeta): Promise<{ items: SearchHit[]; undecryptable: number }> {
  const tenantId = tenantOf(actor);
  authorize(actor, "patient:list", { tenantId });
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const by = "mrn" in input ? "mrn" : "email";
    const idx = await indexes(ctx, t, tenantId, input);
    const value = by === "mrn" ? idx.mrn : idx.email;
    const found = await t.rows<PatientRow & { visible: boolean }>(
      `SELECT p.*, ($3::boolean OR ${careTeamFilter("p.id", 4, 5)}) AS visible FROM patients p
        WHERE p.tenant_id = $1 AND p.status = 'active' AND p.${by === "mrn" ? "mrn_bidx" : "email_bidx"} = $2
        ORDER BY p.created_at, p.id LIMIT 20`,
      [tenantId, value, seesWholeTenant(actor), actor.userId, ctx.clock.now()],
    );
    const visibleRows = found.filter((r) => r.visible);
    const { items: visible, skipped } = openRows(visibleRows, (r) => r.id, await patientViewer(ctx, t, visibleRows));
    const byId = new Map(visible.map((v) => [v.id, v]));
    const left = new Set(skipped.map((s) => s.id));
    const items: SearchHit[] = found
      .filter((r) => !left.has(r.id))
      .map((r) => {
        const v = byId.get(r.id);
        return v ? { ...v, accessible: true as const } : { id: r.id, accessible: false as const };
      });
    for (const hit of items) {
      await recordPhiEvent(
        ctx,
        t,
        actor,
        {
          action: "patient.search",
          resourceType: "patient",
          resourceId: hit.id,
          patientId: hit.id,
          tenantId,
          reason: `by ${by}${hit.accessible ? "" : "; not opened (outside care team)"}`,
        },
        meta,
      );
    }
    if (items.length === 0 && skipped.length === 0)
      await recordPhiEvent(ctx, t, actor, { action: "patient.search", resourceType: "patient", tenantId, reason: `by ${by}; no match` }, meta);
    await recordUndecryptable(ctx, t, actor, skipped, { resourceType: "patient", tenantId }, meta);
    return { items, undecryptable: skipped.length };
  });
}

/**
 * The active patients of a tenant born before `bornBefore` (YYYY-MM-DD), for the retention
 * register's trigger "age of majority": decrypted here, in pages, and only the ids leave. A
 * patient without a birth date, or whose birth date does not decrypt, is not listed (kept).
 */
export async function patientsBornBefore(ctx: ApplianceContext, t: Tx, tenantId: string, bornBefore: string): Promise<string[]> {
  const out: string[] = [];
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const page = await t.rows<{ id: string; tenant_id: string; birth_date_enc: Buffer }>(
      "SELECT id, tenant_id, birth_date_enc FROM patients WHERE tenant_id = $1 AND status = 'active' AND birth_date_enc IS NOT NULL AND id > $2 ORDER BY id LIMIT 1000",
      [tenantId, after],
    );
    if (!page.length) return out;
    const open = await openerFor(
      ctx,
      t,
      page.map((r) => r.birth_date_enc),
    );
    for (const r of page) {
      let born: string | null = null;
      try {
        born = open.text("patients", "birth_date_enc", r.id, r.tenant_id, r.birth_date_enc);
      } catch {
        continue; // unreadable: not provably of age, so kept
      }
      if (born !== null && born < bornBefore) out.push(r.id);
    }
    after = page[page.length - 1]!.id;
  }
}
