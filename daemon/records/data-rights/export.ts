/**
 * Data-rights exports (HIPAA §164.524 right of access, GDPR art. 15/20 portability): one
 * patient's records, or the whole tenant's, as JSON or CSV, streamed — patients are read
 * `records.exportBatchSize` at a time, each batch in its own transaction that also writes one
 * `patient.export` audit event per patient, so memory stays bounded and every decrypted patient
 * is on the audit trail before its bytes leave. Step-up MFA is required (policy STEP_UP_ACTIONS).
 *
 * Attachment contents are not inlined (they can be gigabytes): the export lists their metadata
 * and digests; each file is downloaded through its own audited route.
 */
import type { Writable } from "node:stream";
import { stringify } from "csv-stringify";
import type { Tx } from "../../db/sql.js";
import { z } from "zod";
import type { Actor } from "../../kernel/actor.js";
import { authorize } from "../../kernel/policy.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { recordPhiEvent } from "../../audit/append.js";
import { recordUndecryptable } from "../audit.js";
import { openerFor, openRows, RecordShredded, UndecryptableValue, type FieldOpener, type SkippedRow } from "../columns.js";
import { findActivePatient, tenantOf, type PatientRow } from "../patients/access.js";
import { patientViewer } from "../patients/service.js";
import type { PatientView } from "../patients/schema.js";
import { CSV_RECORDS, exportQuery } from "./schema.js";

export { CSV_RECORDS, exportQuery };
export type CsvRecords = (typeof CSV_RECORDS)[number];
export type ExportQuery = z.infer<typeof exportQuery>;

type Bundle = {
  patient: PatientView;
  appointments: Array<{ id: string; practitionerId: string; startsAt: string; endsAt: string; status: string; createdAt: string }>;
  notes: Array<{
    id: string;
    kind: string;
    status: string;
    currentVersion: number;
    signedVersion: number | null;
    signedBy: string | null;
    signedAt: string | null;
    sourceAttachmentId: string | null;
    createdAt: string;
    createdBy: string;
    versions: Array<{ version: number; change: string; body: string; reason: string | null; createdAt: string; createdBy: string }>;
  }>;
  consents: Array<{
    id: string;
    type: string;
    textVersion: string;
    scope: string | null;
    method: string;
    evidence: unknown;
    grantedAt: string;
    grantedBy: string;
    expiresAt: string | null;
    revocation: { revokedAt: string; revokedBy: string; method: string; reason: string | null; evidence: unknown } | null;
  }>;
  attachments: Array<{ id: string; kind: string; mediaType: string; filename: string | null; sizeBytes: number; sha256: string; createdAt: string; createdBy: string }>;
};

const iso = (d: Date | null) => d?.toISOString() ?? null;

type AppointmentRow = { id: string; patient_id: string; practitioner_id: string; starts_at: Date; ends_at: Date; status: string; created_at: Date };
type NoteRow = {
  id: string;
  patient_id: string;
  kind: string;
  status: string;
  current_version: number;
  signed_version: number | null;
  signed_by: string | null;
  signed_at: Date | null;
  source_attachment_id: string | null;
  created_at: Date;
  created_by: string;
};
type NoteVersionRow = { id: string; note_id: string; version: number; change: string; body_enc: Buffer; reason_enc: Buffer | null; created_at: Date; created_by: string };
type ConsentRow = {
  id: string;
  patient_id: string;
  consent_type: string;
  text_version: string;
  scope_enc: Buffer | null;
  method: string;
  evidence_enc: Buffer;
  granted_at: Date;
  granted_by: string;
  expires_at: Date | null;
  revoked_at: Date | null;
  revoked_by: string | null;
  r_method: string | null;
  r_evidence_enc: Buffer | null;
  r_reason_enc: Buffer | null;
};
type AttachmentRow = {
  id: string;
  patient_id: string;
  kind: string;
  media_type: string;
  filename_enc: Buffer | null;
  plain_sha256_enc: Buffer;
  size_bytes: string;
  created_at: Date;
  created_by: string;
};

/** The stored rows of a batch of patients, values still encrypted. */
type BatchRows = { appts: AppointmentRow[]; notes: NoteRow[]; versions: NoteVersionRow[]; consents: ConsentRow[]; attachments: AttachmentRow[] };

/**
 * The bundles of a batch of patients. A patient any of whose values does not decrypt (its key
 * crypto-shredded after the snapshot its rows were restored from, or a damaged value) is left
 * out and reported in `skipped`, so one such patient does not end a tenant's export.
 */
async function loadBundles(ctx: ApplianceContext, t: Tx, patients: PatientRow[]): Promise<{ bundles: Bundle[]; skipped: SkippedRow[] }> {
  const tenantId = patients[0]!.tenant_id;
  const rows = await readBatchRows(
    t,
    tenantId,
    patients.map((p) => p.id),
  );
  const open = await openerFor(ctx, t, ciphertextsOf(rows));
  const viewOf = await patientViewer(ctx, t, patients);
  const { items, skipped } = openRows(
    patients,
    (p) => p.id,
    (row) => bundleOf(rows, open, tenantId, viewOf(row)),
  );
  return { bundles: items, skipped };
}

async function readBatchRows(t: Tx, tenantId: string, ids: string[]): Promise<BatchRows> {
  const bind = [tenantId, ids];
  const where = "tenant_id = $1 AND patient_id = ANY($2::uuid[])";
  const appts = await t.rows<AppointmentRow>(
    `SELECT id, patient_id, practitioner_id, starts_at, ends_at, status, created_at FROM appointments WHERE ${where} ORDER BY starts_at, id`,
    bind,
  );
  const notes = await t.rows<NoteRow>(`SELECT * FROM notes WHERE ${where} ORDER BY created_at, id`, bind);
  const versions = await t.rows<NoteVersionRow>(`SELECT * FROM note_versions WHERE ${where} ORDER BY note_id, version`, bind);
  const consents = await t.rows<ConsentRow>(
    `SELECT c.*, r.revoked_at, r.revoked_by, r.method AS r_method, r.evidence_enc AS r_evidence_enc, r.reason_enc AS r_reason_enc
       FROM consents c LEFT JOIN consent_revocations r ON r.consent_id = c.id WHERE c.tenant_id = $1 AND c.patient_id = ANY($2::uuid[]) ORDER BY c.granted_at, c.id`,
    bind,
  );
  const attachments = await t.rows<AttachmentRow>(
    `SELECT id, patient_id, kind, media_type, filename_enc, plain_sha256_enc, size_bytes, created_at, created_by FROM attachments WHERE ${where} ORDER BY created_at, id`,
    bind,
  );
  return { appts, notes, versions, consents, attachments };
}

/** Every encrypted value of the batch, so their data keys are loaded together. */
function ciphertextsOf(rows: BatchRows): Array<Buffer | null> {
  return [
    ...rows.versions.flatMap((v) => [v.body_enc, v.reason_enc]),
    ...rows.consents.flatMap((c) => [c.scope_enc, c.evidence_enc, c.r_evidence_enc, c.r_reason_enc]),
    ...rows.attachments.flatMap((a) => [a.filename_enc, a.plain_sha256_enc]),
  ];
}

const json = (s: string | null) => (s === null ? null : (JSON.parse(s) as unknown));

/** One patient's bundle from the batch's rows; throws if one of its values does not decrypt. */
function bundleOf(rows: BatchRows, open: FieldOpener, tenantId: string, patient: PatientView): Bundle {
  return {
    patient,
    appointments: rows.appts
      .filter((a) => a.patient_id === patient.id)
      .map((a) => ({
        id: a.id,
        practitionerId: a.practitioner_id,
        startsAt: a.starts_at.toISOString(),
        endsAt: a.ends_at.toISOString(),
        status: a.status,
        createdAt: a.created_at.toISOString(),
      })),
    notes: rows.notes
      .filter((n) => n.patient_id === patient.id)
      .map((n) => ({
        id: n.id,
        kind: n.kind,
        status: n.status,
        currentVersion: n.current_version,
        signedVersion: n.signed_version,
        signedBy: n.signed_by,
        signedAt: iso(n.signed_at),
        sourceAttachmentId: n.source_attachment_id,
        createdAt: n.created_at.toISOString(),
        createdBy: n.created_by,
        versions: rows.versions
          .filter((v) => v.note_id === n.id)
          .map((v) => ({
            version: v.version,
            change: v.change,
            body: open.text("note_versions", "body_enc", v.id, tenantId, v.body_enc) ?? "",
            reason: open.text("note_versions", "reason_enc", v.id, tenantId, v.reason_enc),
            createdAt: v.created_at.toISOString(),
            createdBy: v.created_by,
          })),
      })),
    consents: rows.consents
      .filter((c) => c.patient_id === patient.id)
      .map((c) => ({
        id: c.id,
        type: c.consent_type,
        textVersion: c.text_version,
        scope: open.text("consents", "scope_enc", c.id, tenantId, c.scope_enc),
        method: c.method,
        evidence: json(open.text("consents", "evidence_enc", c.id, tenantId, c.evidence_enc)),
        grantedAt: c.granted_at.toISOString(),
        grantedBy: c.granted_by,
        expiresAt: iso(c.expires_at),
        revocation: c.revoked_at
          ? {
              revokedAt: c.revoked_at.toISOString(),
              revokedBy: c.revoked_by!,
              method: c.r_method!,
              reason: open.text("consent_revocations", "reason_enc", c.id, tenantId, c.r_reason_enc),
              evidence: json(open.text("consent_revocations", "evidence_enc", c.id, tenantId, c.r_evidence_enc)),
            }
          : null,
      })),
    attachments: rows.attachments
      .filter((a) => a.patient_id === patient.id)
      .map((a) => ({
        id: a.id,
        kind: a.kind,
        mediaType: a.media_type,
        filename: open.text("attachments", "filename_enc", a.id, tenantId, a.filename_enc),
        sizeBytes: Number(a.size_bytes),
        sha256: open.bytes("attachments", "plain_sha256_enc", a.id, tenantId, a.plain_sha256_enc)!.toString("hex"),
        createdAt: a.created_at.toISOString(),
        createdBy: a.created_by,
      })),
  };
}

type Scope = { kind: "patient"; patientId: string } | { kind: "tenant" };

/** Batches of bundles, each batch read and audited in one transaction. */
async function* bundlesOf(
  ctx: ApplianceContext,
  actor: Actor,
  tenantId: string,
  scope: Scope,
  q: ExportQuery,
  meta: RequestMeta,
  skippedOut: SkippedRow[],
): AsyncGenerator<Bundle> {
  const size = ctx.config.records.exportBatchSize;
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const batch = await inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
      const patients =
        scope.kind === "patient"
          ? [await findActivePatient(ctx, t, tenantId, scope.patientId)]
          : await t.rows<PatientRow>("SELECT * FROM patients WHERE tenant_id = $1 AND status = 'active' AND id > $2 ORDER BY id LIMIT $3", [tenantId, after, size]);
      if (patients.length === 0) return { bundles: [], read: 0 };
      const { bundles, skipped } = await loadBundles(ctx, t, patients);
      // One patient asked for: its export fails as a read of it would (410 when shredded).
      if (scope.kind === "patient" && skipped[0])
        throw skipped[0].cause === "shredded"
          ? new RecordShredded("this patient's data key was destroyed (crypto-shredded); the records cannot be exported")
          : new UndecryptableValue("tampered");
      await recordUndecryptable(ctx, t, actor, skipped, { resourceType: "patient", tenantId }, meta);
      skippedOut.push(...skipped);
      for (const b of bundles) {
        await recordPhiEvent(
          ctx,
          t,
          actor,
          {
            action: "patient.export",
            resourceType: "patient",
            resourceId: b.patient.id,
            patientId: b.patient.id,
            tenantId,
            reason: `${q.format}${q.format === "csv" ? ` ${q.records}` : ""}`,
          },
          meta,
        );
      }
      return { bundles, read: patients.length, last: patients[patients.length - 1]!.id };
    });
    for (const b of batch.bundles) yield b;
    if (scope.kind === "patient" || batch.read < size || !batch.last) return;
    after = batch.last;
  }
}

function write(out: Writable, chunk: string): Promise<void> {
  if (out.destroyed) return Promise.reject(new Error("the client went away"));
  if (out.write(chunk)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      out.off("close", onClose);
      resolve();
    };
    const onClose = () => {
      out.off("drain", onDrain);
      reject(new Error("the client went away"));
    };
    out.once("drain", onDrain);
    out.once("close", onClose);
  });
}

// OWASP "CSV injection": a cell a spreadsheet would run as a formula gets a leading apostrophe.
const FORMULA_START = /^[=+\-@\t\r]/;
const cell = (v: unknown): string => {
  if (v === null || v === undefined) return "";
  const s = typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : String(v);
  return FORMULA_START.test(s) ? `'${s}` : s;
};

const CSV_COLUMNS: Record<CsvRecords, string[]> = {
  patients: ["id", "name", "birth_date", "mrn", "phone", "email", "address", "created_at", "updated_at"],
  appointments: ["id", "patient_id", "practitioner_id", "starts_at", "ends_at", "status", "created_at"],
  notes: ["note_id", "patient_id", "kind", "status", "version", "change", "body", "reason", "created_at", "created_by", "signed"],
  consents: [
    "id",
    "patient_id",
    "type",
    "text_version",
    "scope",
    "method",
    "evidence",
    "granted_at",
    "granted_by",
    "expires_at",
    "revoked_at",
    "revoked_by",
    "revocation_method",
    "revocation_reason",
    "revocation_evidence",
  ],
  attachments: ["id", "patient_id", "kind", "media_type", "filename", "size_bytes", "sha256", "created_at", "created_by"],
};

function csvRows(records: CsvRecords, b: Bundle): unknown[][] {
  const p = b.patient;
  switch (records) {
    case "patients":
      return [[p.id, p.name, p.birthDate, p.mrn, p.phone, p.email, p.address, p.createdAt, p.updatedAt]];
    case "appointments":
      return b.appointments.map((a) => [a.id, p.id, a.practitionerId, a.startsAt, a.endsAt, a.status, a.createdAt]);
    case "notes":
      return b.notes.flatMap((n) =>
        n.versions.map((v) => [n.id, p.id, n.kind, n.status, v.version, v.change, v.body, v.reason, v.createdAt, v.createdBy, n.signedVersion === v.version]),
      );
    case "consents":
      return b.consents.map((c) => [
        c.id,
        p.id,
        c.type,
        c.textVersion,
        c.scope,
        c.method,
        c.evidence,
        c.grantedAt,
        c.grantedBy,
        c.expiresAt,
        c.revocation?.revokedAt,
        c.revocation?.revokedBy,
        c.revocation?.method,
        c.revocation?.reason,
        c.revocation?.evidence,
      ]);
    case "attachments":
      return b.attachments.map((a) => [a.id, p.id, a.kind, a.mediaType, a.filename, a.sizeBytes, a.sha256, a.createdAt, a.createdBy]);
  }
}

export type ExportTarget = {
  /** Called once, before the first byte: set status and headers. */
  begin(contentType: string, filename: string): void;
  out: Writable;
};

/**
 * Streams an export into `target.out`. Authorisation and the first batch (with its audit events)
 * happen before `begin`, so a refusal is still a clean problem answer; a failure later can only
 * cut the stream short, which the caller turns into an aborted response.
 */
export async function streamExport(
  ctx: ApplianceContext,
  actor: Actor,
  scope: Scope,
  q: ExportQuery,
  target: ExportTarget,
  meta: RequestMeta,
): Promise<{ patients: number; undecryptable: number }> {
  const tenantId = tenantOf(actor);
  authorize(actor, scope.kind === "patient" ? "data_export:patient" : "data_export:tenant", { tenantId });
  const exportedAt = ctx.clock.now().toISOString();
  if (scope.kind === "tenant") {
    await inScope(ctx.db.app, { kind: "tenant", tenantId }, (t) =>
      recordPhiEvent(
        ctx,
        t,
        actor,
        { action: "tenant.export", resourceType: "tenant", resourceId: tenantId, tenantId, reason: `${q.format}${q.format === "csv" ? ` ${q.records}` : ""}` },
        meta,
      ),
    );
  }
  const skipped: SkippedRow[] = [];
  const source = bundlesOf(ctx, actor, tenantId, scope, q, meta, skipped);
  const first = await source.next();
  const name = scope.kind === "patient" ? `patient-${scope.patientId}` : `tenant-${tenantId}`;
  let count = 0;
  if (q.format === "json") {
    target.begin("application/json; charset=utf-8", `${name}.json`);
    await write(
      target.out,
      `{"format":"wardkeep-records-export/v1","scope":${JSON.stringify(scope.kind)},"tenantId":${JSON.stringify(tenantId)},"exportedAt":${JSON.stringify(exportedAt)},"patients":[`,
    );
    for (let it = first; !it.done; it = await source.next()) {
      await write(target.out, (count++ ? "," : "") + JSON.stringify(it.value));
    }
    // Ids only: which patients are missing from this document, and that they are missing on purpose.
    await write(target.out, `],"undecryptablePatientIds":${JSON.stringify(skipped.map((s) => s.id))}}\n`);
    target.out.end();
    return { patients: count, undecryptable: skipped.length };
  }
  target.begin("text/csv; charset=utf-8", `${name}-${q.records}.csv`);
  const csv = stringify({ header: true, columns: CSV_COLUMNS[q.records], cast: { boolean: (b) => (b ? "true" : "false") } });
  csv.pipe(target.out);
  for (let it = first; !it.done; it = await source.next()) {
    count++;
    for (const row of csvRows(q.records, it.value)) {
      if (!csv.write(row.map(cell))) await new Promise((resolve) => csv.once("drain", resolve));
      if (target.out.destroyed) throw new Error("the client went away");
    }
  }
  csv.end();
  await new Promise<void>((resolve, reject) => {
    target.out.once("finish", resolve);
    target.out.once("error", reject);
    target.out.once("close", resolve);
  });
  return { patients: count, undecryptable: skipped.length };
}
