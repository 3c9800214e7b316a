import { createHash, randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { once } from "node:events";
import { stringify } from "csv-stringify";
import type pg from "pg";
import type { ApplianceContext } from "../context.js";
import { Invalid } from "../kernel/errors.js";
import { appendAuditEvent, type AuditRequestContext } from "./append.js";
import { parseCanonical, type ChainedEvent } from "./canonical.js";
import { chainPendingEvents, readChainHead } from "./chainer.js";
import { checkpointMessage, signCheckpoint, type Checkpoint } from "./checkpoints.js";
import { AUDITOR_README, VERIFY_SCRIPT } from "./evidence-script.js";
import { applianceCheckpointKeys, checkpointSigningKey, keyLabel, signMessage, type CheckpointKey, type CheckpointSigningKey, type KeyLabel } from "./signing-key.js";
import { beginAuditSnapshot, withRawConnection } from "./verify.js";
import { inScope } from "../db/sql.js";

/**
 * Evidence packs (docs/audit-format.md, "Evidence pack"): the events of a time range as JSON
 * Lines (the verifiable form, always written), CSV and a FHIR R4 AuditEvent Bundle, the signed
 * checkpoints, every public key their signatures need, SHA256SUMS, and a manifest of file digests
 * signed with Ed25519.
 * Written only to a local path (CLI `--out`, or the configured exportDir for API exports, then
 * downloaded by the browser): nothing is ever sent anywhere else.
 *
 * Streams through a cursor, a page of rows at a time, waiting for each file's drain: memory
 * stays bounded however large the range.
 */
export type ExportFormat = "csv" | "jsonl" | "fhir";
export const EXPORT_FORMATS: ExportFormat[] = ["jsonl", "csv", "fhir"];

export type ExportRequest = {
  from: Date;
  to: Date;
  formats: ExportFormat[];
  /** null: the whole appliance (super-admin); otherwise one tenant's events, others redacted. */
  tenantId: string | null;
};

export type ExportManifest = {
  format: "wardkeep-audit-evidence/2";
  packId: string;
  createdAt: string;
  range: { from: string; to: string };
  tenantId: string | null;
  chainStart: { seq: string; hash: string };
  chainEnd: { seq: string; hash: string };
  events: { total: number; included: number; redacted: number };
  /** The key that signed manifest.sig (the keyring's current audit signing key). */
  publicKey: { keyId: string; file: string };
  /**
   * Every public key the pack's signatures need: each checkpoint's key (a rotated-out keyring
   * version, or the legacy key) and the manifest's. keyringVersion is null for the legacy key.
   */
  keys: PackKey[];
  files: { name: string; sha256: string; bytes: number }[];
};

export type PackKey = KeyLabel & { file: string };

export type ExportProgress = { done: number; total: number };

const PAGE = 1_000;

/** A file written in stream order with its SHA-256 computed on the way. */
class DigestedFile {
  readonly hash = createHash("sha256");
  bytes = 0;
  private readonly out: fs.WriteStream;
  constructor(
    readonly dir: string,
    readonly name: string,
  ) {
    this.out = fs.createWriteStream(path.join(dir, name), { mode: 0o600, flags: "wx" });
  }
  async write(text: string | Buffer): Promise<void> {
    const buf = typeof text === "string" ? Buffer.from(text, "utf8") : text;
    this.hash.update(buf);
    this.bytes += buf.length;
    if (!this.out.write(buf)) await once(this.out, "drain");
  }
  async close(): Promise<{ name: string; sha256: string; bytes: number }> {
    this.out.end();
    await once(this.out, "finish");
    // Evidence must survive a crash right after the export reports success.
    const fd = fs.openSync(path.join(this.dir, this.name), "r");
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    return { name: this.name, sha256: this.hash.digest("hex"), bytes: this.bytes };
  }
}

async function writeSmallFile(dir: string, name: string, content: string | Buffer) {
  const f = new DigestedFile(dir, name);
  await f.write(content);
  return f.close();
}

const iso = (ms: number) => new Date(ms).toISOString();

/** CSV opened in a spreadsheet must not execute: OWASP CSV injection (leading = + - @ tab CR). */
function csvSafe(v: string | null): string | null {
  return v !== null && /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
}

const FHIR_ACTION: Record<string, string> = { create: "C", read: "R", list: "R", search: "R", update: "U", delete: "D" };
const FHIR_OUTCOME: Record<string, string> = { success: "0", denied: "4", failure: "8" };

/** One event as a FHIR R4 AuditEvent (https://hl7.org/fhir/R4/auditevent.html). */
export function fhirAuditEvent(e: ChainedEvent, hash: string): Record<string, unknown> {
  const verb = e.action.split(".").at(-1) ?? "";
  const agent: Record<string, unknown>[] = [
    {
      who: e.actor_user_id ? { identifier: { system: "urn:wardkeep:user", value: e.actor_user_id } } : { display: "anonymous" },
      ...(e.actor_role ? { role: [{ coding: [{ system: "urn:wardkeep:role", code: e.actor_role }] }] } : {}),
      requestor: true,
      ...(e.source_ip ? { network: { address: e.source_ip, type: "2" } } : {}),
      ...(e.break_glass || e.reason
        ? {
            purposeOfUse: [
              {
                ...(e.break_glass ? { coding: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ActReason", code: "BTG", display: "break the glass" }] } : {}),
                ...(e.reason ? { text: e.reason } : {}),
              },
            ],
          }
        : {}),
    },
  ];
  if (e.impersonator_id) {
    agent.push({
      who: { identifier: { system: "urn:wardkeep:user", value: e.impersonator_id } },
      role: [{ coding: [{ system: "urn:wardkeep:role", code: "support" }] }],
      requestor: false,
    });
  }
  const entity: Record<string, unknown>[] = [
    {
      what: { identifier: { system: `urn:wardkeep:${e.resource_type}`, value: e.resource_id ?? "" } },
      type: { system: "http://terminology.hl7.org/CodeSystem/audit-entity-type", code: "2", display: "System Object" },
    },
  ];
  if (e.patient_id) {
    entity.push({
      what: { reference: `Patient/${e.patient_id}` },
      type: { system: "http://terminology.hl7.org/CodeSystem/audit-entity-type", code: "1", display: "Person" },
      role: { system: "http://terminology.hl7.org/CodeSystem/object-role", code: "1", display: "Patient" },
    });
  }
  return {
    resourceType: "AuditEvent",
    id: e.event_id,
    extension: [
      { url: "urn:wardkeep:audit:seq", valueString: e.seq },
      { url: "urn:wardkeep:audit:hash", valueString: hash },
      ...(e.tenant_id ? [{ url: "urn:wardkeep:audit:tenant", valueString: e.tenant_id }] : []),
      ...(e.request_id ? [{ url: "urn:wardkeep:audit:request-id", valueString: e.request_id }] : []),
      ...(e.user_agent ? [{ url: "urn:wardkeep:audit:user-agent", valueString: e.user_agent }] : []),
    ],
    type: { system: "http://terminology.hl7.org/CodeSystem/audit-event-type", code: "rest", display: "RESTful Operation" },
    subtype: [{ system: "urn:wardkeep:audit-action", code: e.action }],
    action: FHIR_ACTION[verb] ?? "E",
    period: { start: iso(e.occurred_at), end: iso(e.occurred_at) },
    recorded: iso(e.recorded_at),
    outcome: FHIR_OUTCOME[e.outcome] ?? "8",
    agent,
    source: {
      site: "wardkeep",
      observer: { display: "Wardkeep appliance" },
      type: [{ system: "http://terminology.hl7.org/CodeSystem/security-source-type", code: "4", display: "Application Server" }],
    },
    entity,
  };
}

const CSV_COLUMNS = [
  "seq",
  "recorded_at",
  "occurred_at",
  "tenant_id",
  "actor_user_id",
  "actor_role",
  "impersonator_id",
  "break_glass",
  "action",
  "resource_type",
  "resource_id",
  "patient_id",
  "outcome",
  "source_ip",
  "user_agent",
  "request_id",
  "reason",
  "prev_hash",
  "hash",
];

type Row = { seq: string; tenant_id: string | null; canonical: string; prev_hash: string; hash: string };

type PackFile = { name: string; sha256: string; bytes: number };
type ChainPoint = { seq: string; hash: string };

/** What the events phase read and wrote. */
type EventsWritten = {
  files: PackFile[];
  total: number;
  included: number;
  redacted: number;
  chainStart: ChainPoint;
  chainEnd: ChainPoint;
  /** Whether the range holds any event (a checkpoint is signed at the last one). */
  nonEmpty: boolean;
};

/**
 * Writes an evidence pack into `dir` (created; must not exist or be empty). Signs a checkpoint
 * at the last exported event and one at the chain head (DESIGN: "and at each export").
 */
export async function writeEvidencePack(ctx: ApplianceContext, req: ExportRequest, dir: string, onProgress: (p: ExportProgress) => void = () => {}): Promise<ExportManifest> {
  const { key, formats } = await preparePack(ctx, req, dir);
  const packId = path.basename(dir);
  const events = await writeEventFiles(ctx, req, { dir, packId, formats, onProgress });
  const checkpoints = await writeCheckpoints(ctx, dir, events);
  const verification = await writeVerificationFiles(ctx, dir, key, checkpoints.rows, [...events.files, checkpoints.file]);
  return writeSignedManifest(ctx, dir, key, { packId, req, events, ...verification });
}

/** Every refusal comes before the first file: an empty range, a sealed appliance (503), a used directory. */
async function preparePack(ctx: ApplianceContext, req: ExportRequest, dir: string): Promise<{ key: CheckpointSigningKey; formats: Set<ExportFormat> }> {
  if (!(req.from < req.to)) throw new Invalid("the export range is empty: `from` must be before `to`");
  const formats = new Set<ExportFormat>(["jsonl", ...req.formats]);
  const key = await checkpointSigningKey(ctx); // Sealed (503) before anything is written
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (fs.readdirSync(dir).length > 0) throw new Invalid(`the export directory ${dir} is not empty`);
  // Events committed before the export started are in the chain, so in the range.
  await chainPendingEvents(ctx, { wait: true });
  return { key, formats };
}

type EventsOut = { dir: string; packId: string; formats: Set<ExportFormat>; onProgress: (p: ExportProgress) => void };

/** The range's events, read in one read-only snapshot, written as JSON Lines and the other formats asked for. */
async function writeEventFiles(ctx: ApplianceContext, req: ExportRequest, out: EventsOut): Promise<EventsWritten> {
  return withRawConnection(ctx.db.app, async (client) => {
    await beginAuditSnapshot(client, { tenantId: null });
    try {
      const range = (
        await client.query<{ first: string | null; last: string | null; total: string }>(
          "SELECT min(seq)::text AS first, max(seq)::text AS last, count(*)::text AS total FROM audit_events WHERE recorded_at >= $1 AND recorded_at < $2",
          [req.from, req.to],
        )
      ).rows[0]!;
      const chainStart = { seq: range.first ? (BigInt(range.first) - 1n).toString() : "0", hash: "0".repeat(64) };
      if (range.first) {
        const p = await client.query<{ h: string }>("SELECT encode(prev_hash, 'hex') AS h FROM audit_events WHERE seq = $1 LIMIT 1", [range.first]);
        chainStart.hash = p.rows[0]!.h;
      }
      const streamed = await streamEvents(ctx, client, req, out, range, chainStart.hash);
      return {
        files: streamed.files,
        total: Number(range.total),
        included: streamed.included,
        redacted: streamed.redacted,
        chainStart,
        chainEnd: range.last ? { seq: range.last, hash: streamed.lastHash } : chainStart,
        nonEmpty: range.last !== null,
      };
    } finally {
      await client.query("ROLLBACK").catch(() => undefined);
    }
  });
}

/** Streams the events `first..last` through a cursor into the pack's event files, a page at a time. */
async function streamEvents(
  ctx: ApplianceContext,
  client: pg.Client,
  req: ExportRequest,
  { dir, packId, formats, onProgress }: EventsOut,
  { first, last, total: totalText }: { first: string | null; last: string | null; total: string },
  startHash: string,
): Promise<{ files: PackFile[]; included: number; redacted: number; lastHash: string }> {
  const total = Number(totalText);
  const files: PackFile[] = [];
  let included = 0;
  let redacted = 0;
  let lastHash = startHash;
  const jsonl = new DigestedFile(dir, "events.jsonl");
  const csvFile = formats.has("csv") ? new DigestedFile(dir, "events.csv") : undefined;
  const fhir = formats.has("fhir") ? new DigestedFile(dir, "events.fhir.json") : undefined;
  const csv = csvFile ? stringify({ header: true, columns: CSV_COLUMNS }) : undefined;
  const csvDone = csv && csvFile ? pumpCsv(csv, csvFile) : undefined;
  await fhir?.write(`{"resourceType":"Bundle","id":${JSON.stringify(packId)},"type":"collection","timestamp":${JSON.stringify(ctx.clock.now().toISOString())},"entry":[`);
  let done = 0;
  let firstEntry = true;
  if (first && last) {
    await client.query(
      `DECLARE audit_export NO SCROLL CURSOR FOR SELECT seq::text AS seq, tenant_id::text AS tenant_id, canonical,
         encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash FROM audit_events WHERE seq BETWEEN $1 AND $2 ORDER BY audit_events.seq`,
      [first, last],
    );
    for (;;) {
      const rows = (await client.query<Row>(`FETCH ${PAGE} FROM audit_export`)).rows;
      for (const r of rows) {
        const own = req.tenantId === null || r.tenant_id === req.tenantId;
        if (!own) {
          // Another tenant's event: only its place in the chain, never its content.
          await jsonl.write(`{"seq":${r.seq},"redacted":true,"prev_hash":"${r.prev_hash}","hash":"${r.hash}"}\n`);
          redacted += 1;
        } else {
          await jsonl.write(`${r.canonical.slice(0, -1)},"prev_hash":"${r.prev_hash}","hash":"${r.hash}"}\n`);
          const e = parseCanonical(r.canonical);
          if (csv) {
            const ok = csv.write([
              e.seq,
              iso(e.recorded_at),
              iso(e.occurred_at),
              e.tenant_id,
              csvSafe(e.actor_user_id),
              csvSafe(e.actor_role),
              csvSafe(e.impersonator_id),
              e.break_glass ? "true" : "false",
              e.action,
              e.resource_type,
              csvSafe(e.resource_id),
              csvSafe(e.patient_id),
              e.outcome,
              csvSafe(e.source_ip),
              csvSafe(e.user_agent),
              csvSafe(e.request_id),
              csvSafe(e.reason),
              r.prev_hash,
              r.hash,
            ]);
            if (!ok) await once(csv, "drain");
          }
          if (fhir) {
            await fhir.write((firstEntry ? "" : ",") + JSON.stringify({ fullUrl: `urn:uuid:${e.event_id}`, resource: fhirAuditEvent(e, r.hash) }));
            firstEntry = false;
          }
          included += 1;
        }
        lastHash = r.hash;
        done += 1;
      }
      onProgress({ done, total });
      if (rows.length < PAGE) break;
    }
    await client.query("CLOSE audit_export");
  } else {
    onProgress({ done: 0, total: 0 });
  }
  await fhir?.write("]}\n");
  files.push(await jsonl.close());
  if (csv && csvFile && csvDone) {
    csv.end();
    await csvDone;
    files.push(await csvFile.close());
  }
  if (fhir) files.push(await fhir.close());
  return { files, included, redacted, lastHash };
}

/** Signs the last exported link and the head, and ships every checkpoint from the range on. */
async function writeCheckpoints(ctx: ApplianceContext, dir: string, events: EventsWritten): Promise<{ file: PackFile; rows: Checkpoint[] }> {
  if (events.nonEmpty) await signCheckpoint(ctx, { seq: events.chainEnd.seq, hash: events.chainEnd.hash }, "export");
  const head = await readChainHead(ctx);
  if (head.seq !== "0") await signCheckpoint(ctx, { seq: head.seq, hash: head.hash }, "export");
  const cps = await ctx.db.app.rows<Checkpoint>(
    `SELECT id::text AS id, seq::text AS seq, encode(head_hash, 'hex') AS "headHash",
       to_char(signed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "signedAt", key_id AS "keyId",
       encode(public_key, 'base64') AS "publicKey", replace(encode(signature, 'base64'), E'\n', '') AS signature, purpose
     FROM audit_checkpoints WHERE seq >= $1 ORDER BY audit_checkpoints.seq, audit_checkpoints.id`,
    [events.chainStart.seq],
  );
  const cpLines = cps
    .map((c) =>
      JSON.stringify({ id: c.id, seq: c.seq, hash: c.headHash, signedAt: c.signedAt, keyId: c.keyId, purpose: c.purpose, message: checkpointMessage(c), signature: c.signature }),
    )
    .join("\n");
  return { file: await writeSmallFile(dir, "checkpoints.jsonl", cpLines ? cpLines + "\n" : ""), rows: cps };
}

/** What an auditor needs offline beside the data: the public keys, verify.sh, and SHA256SUMS of every file so far. */
async function writeVerificationFiles(
  ctx: ApplianceContext,
  dir: string,
  key: CheckpointSigningKey,
  cps: Checkpoint[],
  written: PackFile[],
): Promise<{ keys: PackKey[]; files: PackFile[] }> {
  const files = [...written];
  const keys = await packKeys(ctx, key, cps);
  for (const k of keys) files.push(await writeSmallFile(dir, k.file, k.pem));
  files.push(await writeSmallFile(dir, "verify.sh", VERIFY_SCRIPT));
  files.push(await writeSmallFile(dir, "README.md", AUDITOR_README));
  files.push(await writeSmallFile(dir, "SHA256SUMS", files.map((f) => `${f.sha256}  ${f.name}\n`).join("")));
  return { keys: keys.map(({ pem: _pem, ...k }) => k), files };
}

/** The manifest lists every file's digest and is signed last: a pack without manifest.sig is incomplete. */
async function writeSignedManifest(
  ctx: ApplianceContext,
  dir: string,
  key: CheckpointSigningKey,
  p: { packId: string; req: ExportRequest; events: EventsWritten; keys: PackKey[]; files: PackFile[] },
): Promise<ExportManifest> {
  const manifest: ExportManifest = {
    format: "wardkeep-audit-evidence/2",
    packId: p.packId,
    createdAt: ctx.clock.now().toISOString(),
    range: { from: p.req.from.toISOString(), to: p.req.to.toISOString() },
    tenantId: p.req.tenantId,
    chainStart: p.events.chainStart,
    chainEnd: p.events.chainEnd,
    events: { total: p.events.total, included: p.events.included, redacted: p.events.redacted },
    publicKey: { keyId: key.keyId, file: keyFileName(key.keyId) },
    keys: p.keys,
    files: p.files,
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2) + "\n", "utf8");
  await writeSmallFile(dir, "manifest.json", manifestBytes);
  await writeSmallFile(dir, "manifest.sig", signMessage(key, manifestBytes));
  return manifest;
}

const keyFileName = (keyId: string) => `audit-signing-${keyId}.pem`;

/**
 * The public keys an auditor needs offline: the manifest signer's and every trusted key a shipped
 * checkpoint names. A checkpoint signed by a key the appliance does not trust gets no key file,
 * so verify.sh reports it as signed by an unknown key, as `wardkeep audit verify` does.
 */
async function packKeys(ctx: ApplianceContext, signer: CheckpointKey, cps: Checkpoint[]): Promise<Array<PackKey & { pem: string }>> {
  const trusted = new Map((await applianceCheckpointKeys(ctx)).map((k) => [k.keyId, k]));
  trusted.set(signer.keyId, signer);
  const needed = new Set([...cps.map((c) => c.keyId), signer.keyId]);
  return [...trusted.values()].filter((k) => needed.has(k.keyId)).map((k) => ({ ...keyLabel(k), file: keyFileName(k.keyId), pem: k.publicKeyPem }));
}

async function pumpCsv(csv: ReturnType<typeof stringify>, file: DigestedFile): Promise<void> {
  for await (const chunk of csv) await file.write(chunk as Buffer);
}

/**
 * Exporting is itself audited, before any byte is written: if the event cannot be recorded,
 * no export happens (503). A failed export records a second event with outcome "failure".
 */
export async function exportAuditEvidence(
  ctx: ApplianceContext,
  who: AuditRequestContext,
  req: ExportRequest,
  dir: string,
  onProgress?: (p: ExportProgress) => void,
): Promise<ExportManifest> {
  const packId = path.basename(dir);
  const record = (outcome: "success" | "failure") =>
    inScope(ctx.db.app, req.tenantId ? { kind: "tenant", tenantId: req.tenantId } : { kind: "appliance" }, (transaction) =>
      appendAuditEvent(ctx, transaction, { ...who, tenantId: req.tenantId, action: "audit.export", resourceType: "audit_export", resourceId: packId, outcome }),
    );
  await record("success");
  try {
    return await writeEvidencePack(ctx, req, dir, onProgress);
  } catch (err) {
    await record("failure").catch(() => undefined);
    throw err;
  }
}

export function newPackId(now: Date): string {
  return `audit-${now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z")}-${randomUUID().slice(0, 8)}`;
}
