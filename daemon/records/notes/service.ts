import { randomUUID } from "node:crypto";
import type { Tx } from "../../db/sql.js";
import type { Actor } from "../../kernel/actor.js";
import { patientAccessFor } from "../../access/index.js";
import { authorize } from "../../kernel/policy.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope, sql } from "../../db/sql.js";
import { Conflict, Invalid, NotFound } from "../../kernel/errors.js";
import { recordPhiEvent } from "../../audit/append.js";
import { recordUndecryptable } from "../audit.js";
import { openerFor, openRows, sealRow, sealRowWith } from "../columns.js";
import { assertVersion, decodeCursor, pageOf, timeIdPosition, type ListPage } from "../http.js";
import { findActivePatient, openPatient, tenantOf, writePatientInOneTrip } from "../patients/access.js";
import type { NoteCreate, NoteRevise, NoteVersionView, NoteView } from "./schema.js";

/**
 * Notes keep every version: an edit (while a draft) or an amendment (once signed) adds a
 * `note_versions` row and never rewrites an earlier one (a trigger refuses that too). Signing
 * records which version was signed; amending a signed note leaves that version as it was.
 */
type NoteRow = {
  id: string;
  tenant_id: string;
  patient_id: string;
  kind: NoteView["kind"];
  status: NoteView["status"];
  current_version: number;
  signed_version: number | null;
  signed_by: string | null;
  signed_at: Date | null;
  source_attachment_id: string | null;
  version: number;
  created_at: Date;
  created_by: string;
  updated_at: Date;
  // the current version's row
  version_id: string;
  body_enc: Buffer;
  version_author: string;
};

const SELECT = `SELECT n.*, v.id AS version_id, v.body_enc, v.created_by AS version_author
  FROM notes n JOIN note_versions v ON v.note_id = n.id AND v.version = n.current_version`;

async function views(ctx: ApplianceContext, t: Tx, list: NoteRow[]): Promise<NoteView[]> {
  return list.map(await viewer(ctx, t, list));
}

/** The view of each row, with the keys of all of them loaded at once (for `openRows`). */
async function viewer(ctx: ApplianceContext, t: Tx, list: NoteRow[]): Promise<(r: NoteRow) => NoteView> {
  const open = await openerFor(
    ctx,
    t,
    list.map((r) => r.body_enc),
  );
  return (r) => ({
    id: r.id,
    patientId: r.patient_id,
    kind: r.kind,
    status: r.status,
    body: open.text("note_versions", "body_enc", r.version_id, r.tenant_id, r.body_enc) ?? "",
    currentVersion: r.current_version,
    signedVersion: r.signed_version,
    signedBy: r.signed_by,
    signedAt: r.signed_at?.toISOString() ?? null,
    sourceAttachmentId: r.source_attachment_id,
    version: r.version,
    createdAt: r.created_at.toISOString(),
    createdBy: r.created_by,
    updatedAt: r.updated_at.toISOString(),
  });
}

async function loadNote(ctx: ApplianceContext, t: Tx, tenantId: string, patientId: string, noteId: string, lock = false): Promise<NoteRow> {
  const [row] = await t.rows<NoteRow>(`${SELECT} WHERE n.id = $1 AND n.tenant_id = $2 AND n.patient_id = $3${lock ? " FOR UPDATE OF n" : ""}`, [noteId, tenantId, patientId]);
  if (!row) throw new NotFound("no such note for this patient");
  return row;
}

async function insertVersion(
  ctx: ApplianceContext,
  t: Tx,
  w: {
    tenantId: string;
    patientId: string;
    noteId: string;
    version: number;
    change: "original" | "edit" | "amendment";
    body: string;
    reason?: string | undefined;
    by: string;
    at: Date;
  },
): Promise<void> {
  const id = randomUUID();
  const enc = await sealRow(ctx, t, { tenantId: w.tenantId, patientId: w.patientId, table: "note_versions", rowId: id }, { body_enc: w.body, reason_enc: w.reason ?? null });
  await t.exec(
    `INSERT INTO note_versions (id, tenant_id, patient_id, note_id, version, change, body_enc, reason_enc, created_at, created_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [id, w.tenantId, w.patientId, w.noteId, w.version, w.change, enc.body_enc, enc.reason_enc, w.at, w.by],
  );
}

/** The note as its writer gets it back: what was written, without reading it again. */
function createdView(actor: Actor, id: string, patientId: string, input: NoteCreate, at: Date): NoteView {
  const iso = at.toISOString();
  return {
    id,
    patientId,
    kind: input.kind,
    status: "draft",
    body: input.body,
    currentVersion: 1,
    signedVersion: null,
    signedBy: null,
    signedAt: null,
    sourceAttachmentId: input.sourceAttachmentId ?? null,
    version: 1,
    createdAt: iso,
    createdBy: actor.userId,
    updatedAt: iso,
  };
}

/**
 * A new note is the benchmarked write path. When this process holds the patient's key, the check,
 * the note, its first version and the audit event are one statement in one round trip
 * (`writePatientInOneTrip`); otherwise (first write here, key rotated, a source attachment to
 * check) two round trips, the key made or read under its lock.
 */
export async function createNote(ctx: ApplianceContext, actor: Actor, patientId: string, input: NoteCreate, meta: RequestMeta): Promise<NoteView> {
  const tenantId = tenantOf(actor);
  const event = { action: "note.create", resourceType: "note" } as const;
  const id = randomUUID();
  const versionId = randomUUID();
  const now = ctx.clock.now();
  if (!input.sourceAttachmentId) {
    const written = await writePatientInOneTrip(ctx, actor, "note:create", patientId, { ...event, resourceId: id }, meta, (key, allowed) => {
      const enc = sealRowWith(key, { tenantId, table: "note_versions", rowId: versionId }, { body_enc: input.body });
      return sql`note AS (
         INSERT INTO notes (id, tenant_id, patient_id, kind, source_attachment_id, created_at, created_by, updated_at)
         SELECT ${id}::uuid, ${tenantId}::uuid, ${patientId}::uuid, ${input.kind}, NULL, ${now}::timestamptz, ${actor.userId}::uuid, ${now}::timestamptz FROM p WHERE ${allowed} RETURNING id),
       written AS (
         INSERT INTO note_versions (id, tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by)
         SELECT ${versionId}::uuid, ${tenantId}::uuid, ${patientId}::uuid, note.id, 1, 'original', ${enc.body_enc}::bytea, ${now}::timestamptz, ${actor.userId}::uuid FROM note RETURNING 1)`;
    });
    if (written) return createdView(actor, id, patientId, input, now);
  }
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass, lockedWriteKey } = await openPatient(ctx, t, actor, "note:create", patientId, { writeKey: true });
    if (input.sourceAttachmentId) {
      const [a] = await t.rows("SELECT 1 FROM attachments WHERE id = $1 AND tenant_id = $2 AND patient_id = $3", [input.sourceAttachmentId, tenantId, patientId]);
      if (!a)
        throw new Invalid("sourceAttachmentId must name an attachment of this patient", {
          errors: [{ path: "sourceAttachmentId", message: "no such attachment for this patient", code: "custom" }],
        });
    }
    const enc = await sealRow(ctx, t, { tenantId, patientId, table: "note_versions", rowId: versionId }, { body_enc: input.body }, lockedWriteKey);
    // The note and its original version in one statement, sent with the audit event and COMMIT
    // in one round trip (this is the benchmarked write path).
    await t.holdForCommit({
      text: `WITH note AS (
         INSERT INTO notes (id, tenant_id, patient_id, kind, source_attachment_id, created_at, created_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $6) RETURNING id)
       INSERT INTO note_versions (id, tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by)
       SELECT $8, $2, $3, note.id, 1, 'original', $9, $6, $7 FROM note`,
      values: [id, tenantId, patientId, input.kind, input.sourceAttachmentId ?? null, now, actor.userId, versionId, enc.body_enc],
    });
    await recordPhiEvent(ctx, t, actor, { ...event, resourceId: id, patientId, tenantId, breakGlass }, meta);
    return createdView(actor, id, patientId, input, now);
  });
}

export async function getNote(ctx: ApplianceContext, actor: Actor, patientId: string, noteId: string, meta: RequestMeta): Promise<NoteView> {
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "note:read", patientId);
    const row = await loadNote(ctx, t, tenantId, patientId, noteId);
    await recordPhiEvent(ctx, t, actor, { action: "note.read", resourceType: "note", resourceId: noteId, patientId, tenantId, breakGlass }, meta);
    return (await views(ctx, t, [row]))[0]!;
  });
}

export async function listNotes(
  ctx: ApplianceContext,
  actor: Actor,
  patientId: string,
  q: { limit: number; cursor?: string | undefined },
  meta: RequestMeta,
): Promise<ListPage<NoteView>> {
  const tenantId = tenantOf(actor);
  const purpose = `notes:${tenantId}:${patientId}`;
  const after = timeIdPosition(decodeCursor(ctx, purpose, q.cursor));
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "note:list", patientId);
    const list = await t.rows<NoteRow>(
      `${SELECT} WHERE n.tenant_id = $1 AND n.patient_id = $2 AND ($3::timestamptz IS NULL OR (n.created_at, n.id) > ($3::timestamptz, $4::uuid))
        ORDER BY n.created_at, n.id LIMIT $5`,
      [tenantId, patientId, after?.at ?? null, after?.id ?? null, q.limit + 1],
    );
    const page = pageOf(
      ctx,
      purpose,
      list,
      q.limit,
      (r) => [r.created_at.toISOString(), r.id],
      (r) => r,
    );
    const { items, skipped } = openRows(page.items, (r) => r.id, await viewer(ctx, t, page.items));
    for (const n of items) await recordPhiEvent(ctx, t, actor, { action: "note.list", resourceType: "note", resourceId: n.id, patientId, tenantId, breakGlass }, meta);
    await recordUndecryptable(ctx, t, actor, skipped, { resourceType: "note", tenantId, patientId, breakGlass }, meta);
    return { items, nextCursor: page.nextCursor, undecryptable: skipped.length };
  });
}

/** An edit of a draft, or an amendment (with a reason) of a signed note: a new version either way. */
export async function reviseNote(
  ctx: ApplianceContext,
  actor: Actor,
  patientId: string,
  noteId: string,
  expectedVersion: number,
  input: NoteRevise,
  meta: RequestMeta,
): Promise<NoteView> {
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "note:update", patientId);
    const note = await loadNote(ctx, t, tenantId, patientId, noteId, true);
    assertVersion(note.version, expectedVersion);
    const amending = note.status !== "draft";
    if (amending && !input.reason) {
      throw new Invalid("the note is signed: an amendment needs a reason", { errors: [{ path: "reason", message: "required to amend a signed note", code: "custom" }] });
    }
    const now = ctx.clock.now();
    const next = note.current_version + 1;
    await insertVersion(ctx, t, {
      tenantId,
      patientId,
      noteId,
      version: next,
      change: amending ? "amendment" : "edit",
      body: input.body,
      reason: input.reason,
      by: actor.userId,
      at: now,
    });
    await t.exec("UPDATE notes SET current_version = $2, status = $3, version = version + 1, updated_at = $4 WHERE id = $1", [noteId, next, amending ? "amended" : "draft", now]);
    await recordPhiEvent(
      ctx,
      t,
      actor,
      { action: amending ? "note.amend" : "note.edit", resourceType: "note", resourceId: noteId, patientId, tenantId, breakGlass, reason: `version ${next}` },
      meta,
    );
    return (await views(ctx, t, [await loadNote(ctx, t, tenantId, patientId, noteId)]))[0]!;
  });
}

/** Sign-off of the current version by its author (the policy's `note:sign` rule). */
export async function signNote(ctx: ApplianceContext, actor: Actor, patientId: string, noteId: string, expectedVersion: number, meta: RequestMeta): Promise<NoteView> {
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    await findActivePatient(ctx, t, tenantId, patientId);
    const note = await loadNote(ctx, t, tenantId, patientId, noteId, true);
    const access = await patientAccessFor(ctx, t, actor, patientId);
    authorize(actor, "note:sign", { tenantId, patient: access, ownerId: note.version_author });
    assertVersion(note.version, expectedVersion);
    if (note.status === "signed") throw new Conflict(`version ${note.current_version} is already signed`);
    const now = ctx.clock.now();
    await t.exec("UPDATE notes SET status = 'signed', signed_version = current_version, signed_by = $2, signed_at = $3, version = version + 1, updated_at = $3 WHERE id = $1", [
      noteId,
      actor.userId,
      now,
    ]);
    await recordPhiEvent(
      ctx,
      t,
      actor,
      {
        action: "note.sign",
        resourceType: "note",
        resourceId: noteId,
        patientId,
        tenantId,
        breakGlass: !access.assigned && access.breakGlass,
        reason: `version ${note.current_version}`,
      },
      meta,
    );
    return (await views(ctx, t, [await loadNote(ctx, t, tenantId, patientId, noteId)]))[0]!;
  });
}

/** Every version of a note, oldest first, with amendment reasons. */
export async function noteHistory(
  ctx: ApplianceContext,
  actor: Actor,
  patientId: string,
  noteId: string,
  meta: RequestMeta,
): Promise<{ noteId: string; versions: NoteVersionView[] }> {
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "note:read", patientId);
    const note = await loadNote(ctx, t, tenantId, patientId, noteId);
    const list = await t.rows<{
      id: string;
      tenant_id: string;
      version: number;
      change: NoteVersionView["change"];
      body_enc: Buffer;
      reason_enc: Buffer | null;
      created_at: Date;
      created_by: string;
    }>("SELECT * FROM note_versions WHERE note_id = $1 AND tenant_id = $2 ORDER BY version", [noteId, tenantId]);
    const open = await openerFor(
      ctx,
      t,
      list.flatMap((v) => [v.body_enc, v.reason_enc]),
    );
    await recordPhiEvent(ctx, t, actor, { action: "note.history", resourceType: "note", resourceId: noteId, patientId, tenantId, breakGlass }, meta);
    return {
      noteId,
      versions: list.map((v) => ({
        version: v.version,
        change: v.change,
        body: open.text("note_versions", "body_enc", v.id, v.tenant_id, v.body_enc) ?? "",
        reason: open.text("note_versions", "reason_enc", v.id, v.tenant_id, v.reason_enc),
        createdAt: v.created_at.toISOString(),
        createdBy: v.created_by,
        signed: note.signed_version === v.version,
      })),
    };
  });
}
