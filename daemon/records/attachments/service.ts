import { randomBytes, randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import type { Tx } from "../../db/sql.js";
import type { Actor } from "../../kernel/actor.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { NotFound } from "../../kernel/errors.js";
import { recordPhiEvent } from "../../audit/append.js";
import { recordUndecryptable } from "../audit.js";
import { openerFor, openRows, sealRow, type FieldOpener } from "../columns.js";
import { decodeCursor, pageOf, timeIdPosition, type ListPage } from "../http.js";
import { assertNoLegalHold } from "../data-rights/legal-holds.js";
import { openPatient, tenantOf } from "../patients/access.js";
import type { AttachmentView } from "./schema.js";
import { openDecrypted, removeStored, stageEncrypted } from "./store.js";

type AttachmentRow = {
  id: string;
  tenant_id: string;
  patient_id: string;
  kind: AttachmentView["kind"];
  media_type: string;
  filename_enc: Buffer | null;
  file_key_enc: Buffer;
  plain_sha256_enc: Buffer;
  size_bytes: string;
  stored_bytes: string;
  cipher_sha256: Buffer;
  storage_path: string;
  created_at: Date;
  created_by: string;
};

function view(open: FieldOpener, r: AttachmentRow): AttachmentView {
  return {
    id: r.id,
    patientId: r.patient_id,
    kind: r.kind,
    mediaType: r.media_type,
    filename: open.text("attachments", "filename_enc", r.id, r.tenant_id, r.filename_enc),
    sizeBytes: Number(r.size_bytes),
    sha256: open.bytes("attachments", "plain_sha256_enc", r.id, r.tenant_id, r.plain_sha256_enc)!.toString("hex"),
    createdAt: r.created_at.toISOString(),
    createdBy: r.created_by,
  };
}

async function load(ctx: ApplianceContext, t: Tx, tenantId: string, patientId: string, id: string, lock = false): Promise<AttachmentRow> {
  const [row] = await t.rows<AttachmentRow>(`SELECT * FROM attachments WHERE id = $1 AND tenant_id = $2 AND patient_id = $3${lock ? " FOR UPDATE" : ""}`, [
    id,
    tenantId,
    patientId,
  ]);
  if (!row) throw new NotFound("no such attachment for this patient");
  return row;
}

export type UploadMeta = { kind: AttachmentView["kind"]; mediaType: string; filename: string | null };

/**
 * Streams an upload into the store: the policy is checked before a byte is read, the body is
 * encrypted as it arrives under a fresh per-file key, and the metadata (with the file key
 * wrapped as field ciphertext under the patient's data key) commits with its audit event. The
 * data key is taken in that second transaction, as the keyring's contract asks.
 */
export async function uploadAttachment(ctx: ApplianceContext, actor: Actor, patientId: string, meta: UploadMeta, body: Readable, req: RequestMeta): Promise<AttachmentView> {
  const tenantId = tenantOf(actor);
  await inScope(ctx.db.app, { kind: "tenant", tenantId }, (t) => openPatient(ctx, t, actor, "attachment:create", patientId));
  const id = randomUUID();
  const fileKey = randomBytes(32);
  try {
    const staged = await stageEncrypted(ctx, { tenantId, patientId, attachmentId: id, fileKey, body });
    try {
      return await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
        // Again: the patient may have been purged or the care team changed during a long upload.
        const { breakGlass } = await openPatient(ctx, t, actor, "attachment:create", patientId, { lock: true });
        const enc = await sealRow(
          ctx,
          t,
          { tenantId, patientId, table: "attachments", rowId: id },
          { filename_enc: meta.filename, file_key_enc: fileKey, plain_sha256_enc: staged.plainSha256 },
        );
        const now = ctx.clock.now();
        await t.exec(
          `INSERT INTO attachments (id, tenant_id, patient_id, kind, media_type, filename_enc, file_key_enc, plain_sha256_enc, size_bytes, stored_bytes, cipher_sha256, storage_path, created_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
          [
            id,
            tenantId,
            patientId,
            meta.kind,
            meta.mediaType,
            enc.filename_enc,
            enc.file_key_enc,
            enc.plain_sha256_enc,
            staged.sizeBytes,
            staged.storedBytes,
            staged.cipherSha256,
            staged.storagePath,
            now,
            actor.userId,
          ],
        );
        await recordPhiEvent(
          ctx,
          t,
          actor,
          { action: "attachment.create", resourceType: "attachment", resourceId: id, patientId, tenantId, breakGlass, reason: `${meta.kind}, ${staged.sizeBytes} bytes` },
          req,
        );
        await staged.commit();
        const row = await load(ctx, t, tenantId, patientId, id);
        return view(await openerFor(ctx, t, [row.filename_enc, row.plain_sha256_enc]), row);
      });
    } catch (err) {
      await staged.discard();
      throw err;
    }
  } finally {
    fileKey.fill(0);
  }
}

export async function getAttachment(ctx: ApplianceContext, actor: Actor, patientId: string, id: string, req: RequestMeta): Promise<AttachmentView> {
  const tenantId = tenantOf(actor);
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "attachment:read", patientId);
    const row = await load(ctx, t, tenantId, patientId, id);
    await recordPhiEvent(ctx, t, actor, { action: "attachment.read", resourceType: "attachment", resourceId: id, patientId, tenantId, breakGlass }, req);
    return view(await openerFor(ctx, t, [row.filename_enc, row.plain_sha256_enc]), row);
  });
}

export async function listAttachments(
  ctx: ApplianceContext,
  actor: Actor,
  patientId: string,
  q: { limit: number; cursor?: string | undefined },
  req: RequestMeta,
): Promise<ListPage<AttachmentView>> {
  const tenantId = tenantOf(actor);
  const purpose = `attachments:${tenantId}:${patientId}`;
  const after = timeIdPosition(decodeCursor(ctx, purpose, q.cursor));
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "attachment:list", patientId);
    const list = await t.rows<AttachmentRow>(
      `SELECT * FROM attachments WHERE tenant_id = $1 AND patient_id = $2 AND ($3::timestamptz IS NULL OR (created_at, id) > ($3::timestamptz, $4::uuid))
        ORDER BY created_at, id LIMIT $5`,
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
    const open = await openerFor(
      ctx,
      t,
      page.items.flatMap((r) => [r.filename_enc, r.plain_sha256_enc]),
    );
    const { items, skipped } = openRows(
      page.items,
      (r) => r.id,
      (r) => view(open, r),
    );
    await recordPhiEvent(ctx, t, actor, { action: "attachment.list", resourceType: "attachment", patientId, tenantId, breakGlass, reason: `${items.length} shown` }, req);
    await recordUndecryptable(ctx, t, actor, skipped, { resourceType: "attachment", tenantId, patientId, breakGlass }, req);
    return { items, nextCursor: page.nextCursor, undecryptable: skipped.length };
  });
}

export type Download = { attachment: AttachmentView; storedBytes: number; content: () => Readable };

/**
 * Authorises and audits a download (committed before the first byte is sent: no audit, no
 * content), then hands back a stream factory that decrypts segment by segment.
 */
export async function openDownload(ctx: ApplianceContext, actor: Actor, patientId: string, id: string, req: RequestMeta): Promise<Download> {
  const tenantId = tenantOf(actor);
  const { row, fileKey, attachment } = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "attachment:read", patientId);
    const row = await load(ctx, t, tenantId, patientId, id);
    const open = await openerFor(ctx, t, [row.filename_enc, row.plain_sha256_enc, row.file_key_enc]);
    const fileKey = open.bytes("attachments", "file_key_enc", row.id, row.tenant_id, row.file_key_enc)!;
    await recordPhiEvent(ctx, t, actor, { action: "attachment.download", resourceType: "attachment", resourceId: id, patientId, tenantId, breakGlass }, req);
    return { row, fileKey, attachment: view(open, row) };
  });
  return {
    attachment,
    storedBytes: Number(row.stored_bytes),
    content: () => {
      const stream = openDecrypted(ctx, { tenantId, patientId, attachmentId: id, storagePath: row.storage_path, fileKey });
      const wipe = () => fileKey.fill(0);
      stream.once("close", wipe);
      stream.once("error", wipe);
      return stream;
    },
  };
}

export async function deleteAttachment(ctx: ApplianceContext, actor: Actor, patientId: string, id: string, req: RequestMeta): Promise<void> {
  const tenantId = tenantOf(actor);
  const storagePath = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const { breakGlass } = await openPatient(ctx, t, actor, "attachment:delete", patientId);
    const row = await load(ctx, t, tenantId, patientId, id, true);
    await assertNoLegalHold(ctx, t, tenantId, patientId, "deleting an attachment of this patient");
    await t.exec("DELETE FROM attachments WHERE id = $1", [id]);
    await recordPhiEvent(ctx, t, actor, { action: "attachment.delete", resourceType: "attachment", resourceId: id, patientId, tenantId, breakGlass }, req);
    return row.storage_path;
  });
  // After commit: a rolled-back delete must not lose the file. The ciphertext left by a crash
  // here is unreadable without the file key, which went with the row.
  await removeStored(ctx, storagePath);
}
