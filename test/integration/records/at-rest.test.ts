import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reencryptPending, rotateDataKey } from "../../../daemon/keys/index.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { asSuperuser, assignCareTeam, binary, expectProblem, openClinic, registerPatient, type Clinic, tag } from "./helpers.js";

/**
 * Data at rest: canary PHI goes in through every records route, then everything the appliance
 * keeps is read directly — every table of every schema as the PostgreSQL superuser, every
 * attachment file on disk, every log line — and no canary may appear in clear (as text, or as
 * the hex of its UTF-8 bytes inside a bytea column).
 */
const CANARY = {
  name: "Zebulon Quarrington-Vex",
  mrn: "QX-93817264",
  email: "zq.vex.canary@example.net",
  phone: "+44 7700 900813",
  address: "77 Canarywharf Lane, Lower Slaughter",
  birthDate: "1959-12-24",
  note: "canary-note idiopathic thrombocytopenic purpura",
  amendment: "canary-amendment platelet count corrected",
  reason: "canary-reason transcription error",
  scope: "canary-scope whole-genome sequencing",
  attestation: "canary-attestation witnessed by nurse Okonkwo",
  revocation: "canary-revocation patient changed mind",
  file: "canary-attachment-bytes: MRI report, lesion in left temporal lobe",
  filename: "canary-scan-quarrington.pdf",
  hold: "canary-hold matter Quarrington v. Trust",
};

let app: TestAppliance;
let clinic: Clinic;
let patientId: string;

beforeAll(async () => {
  app = await startTestAppliance();
  clinic = await openClinic(app, "Canary Hospital");
  const p = await registerPatient(clinic, { name: CANARY.name, mrn: CANARY.mrn, email: CANARY.email, phone: CANARY.phone, address: CANARY.address, birthDate: CANARY.birthDate });
  patientId = p.id;
  await assignCareTeam(clinic, patientId);
  const d = clinic.doctor.agent;
  const base = `/api/v1/patients/${patientId}`;
  const note = await d.post(`${base}/notes`).send({ body: CANARY.note });
  const signed = await d.post(`${base}/notes/${note.body.id}/sign`).set("If-Match", tag(note)).send({});
  expect((await d.put(`${base}/notes/${note.body.id}`).set("If-Match", tag(signed)).send({ body: CANARY.amendment, reason: CANARY.reason })).status).toBe(200);
  const consent = await clinic.frontDesk.agent
    .post(`${base}/consents`)
    .send({ type: "research", textVersion: "1", scope: CANARY.scope, evidence: { method: "attestation", statement: CANARY.attestation } });
  expect(
    (
      await clinic.frontDesk.agent
        .post(`${base}/consents/${consent.body.id}/revocation`)
        .send({ evidence: { method: "attestation", statement: CANARY.attestation }, reason: CANARY.revocation })
    ).status,
  ).toBe(201);
  const file = await d
    .post(`${base}/attachments?kind=document`)
    .set("Content-Type", "application/pdf")
    .set("Content-Disposition", `attachment; filename="${CANARY.filename}"`)
    .send(Buffer.from(CANARY.file.repeat(2000)));
  expect(file.status).toBe(201);
  expect((await clinic.admin.agent.post(`${base}/legal-holds`).send({ reason: CANARY.hold })).status).toBe(201);
  await clinic.frontDesk.agent
    .post("/api/v1/schedule/appointments")
    .send({ patientId, practitionerId: clinic.doctor.user.id, startsAt: "2031-02-03T09:00:00Z", endsAt: "2031-02-03T09:30:00Z" });

  // Reads, lookups, exports and refusals too: each leaves log lines and audit events behind.
  expect((await clinic.frontDesk.agent.get(base)).body.name).toBe(CANARY.name);
  expect((await clinic.frontDesk.agent.post("/api/v1/patients/search").send({ mrn: CANARY.mrn })).body.items).toHaveLength(1);
  expect((await clinic.frontDesk.agent.post("/api/v1/patients/search").send({ email: CANARY.email.toUpperCase() })).body.items).toHaveLength(1);
  expect((await d.get(`${base}/notes/${note.body.id}/versions`)).status).toBe(200);
  expect((await d.get(`${base}/attachments/${file.body.id}/content`).buffer(true).parse(binary)).status).toBe(200);
  expect((await clinic.owner.agent.get(`/api/v1/exports/patients/${patientId}`)).text).toContain(CANARY.note);
  expectProblem(await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: CANARY.name, nickname: CANARY.mrn }), 400, "invalid-request");
  expectProblem(await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: "Dup", mrn: CANARY.mrn }), 409, "conflict");
  expectProblem(await clinic.otherDoctor.agent.get(`${base}/notes`), 403, "forbidden");
});
afterAll(async () => {
  await app?.close();
});

function needles(): Array<{ what: string; text: string; hex: string }> {
  return Object.entries(CANARY).map(([what, text]) => ({ what, text, hex: Buffer.from(text, "utf8").toString("hex") }));
}

describe("data at rest", () => {
  it("keeps no seeded PHI value in clear in any table of any schema, read as the superuser", async () => {
    const tables = await asSuperuser<{ schemaname: string; tablename: string }>(
      app,
      "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    );
    expect(tables.map((t) => t.tablename)).toEqual(
      expect.arrayContaining(["patients", "note_versions", "consents", "attachments", "legal_holds", "audit_events", "audit_intake", "data_keys"]),
    );
    const found: string[] = [];
    let scanned = 0;
    let control = 0; // a value stored in clear on purpose (the consent type code): proves the scan sees values
    for (const t of tables) {
      const rows = await asSuperuser<{ row: string }>(app, `SELECT t::text AS row FROM "${t.schemaname}"."${t.tablename}" t`);
      for (const { row } of rows) {
        scanned++;
        if (t.tablename === "consents" && row.includes(",research,")) control++;
        const lower = row.toLowerCase();
        for (const n of needles()) {
          if (row.includes(n.text) || lower.includes(n.text.toLowerCase()) || lower.includes(n.hex)) found.push(`${t.schemaname}.${t.tablename}: ${n.what}`);
        }
      }
    }
    expect(scanned).toBeGreaterThan(50);
    expect(control).toBe(1);
    expect(found).toEqual([]);
    // The search really has something to find: the patient's ciphertext is there.
    const [row] = await asSuperuser<{ name_enc: Buffer; mrn_bidx: string }>(app, "SELECT name_enc, mrn_bidx FROM patients WHERE id = $1", [patientId]);
    expect(row!.name_enc.length).toBeGreaterThan(CANARY.name.length);
    expect(row!.mrn_bidx).toMatch(/^[0-9a-f]{64}$/);
  });

  it("keeps no seeded PHI value in clear in the attachment files on disk", () => {
    const root = path.join(app.dataDir, "attachments");
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) e.isDirectory() ? walk(path.join(dir, e.name)) : files.push(path.join(dir, e.name));
    };
    walk(root);
    expect(files.length).toBe(1);
    expect(path.basename(files[0]!)).toMatch(/^[0-9a-f-]{36}\.wka$/);
    for (const f of files) {
      const bytes = fs.readFileSync(f);
      expect(bytes.length).toBeGreaterThan(CANARY.file.length * 2000);
      for (const n of needles()) expect(bytes.includes(Buffer.from(n.text)), `${f}: ${n.what}`).toBe(false);
      expect(bytes.includes(Buffer.from("canary"))).toBe(false);
    }
  });

  it("writes no seeded PHI value to any log line", () => {
    expect(app.logLines.length).toBeGreaterThan(20);
    const all = app.logLines.join("\n");
    for (const n of needles()) expect(all.includes(n.text), n.what).toBe(false);
    expect(all.toLowerCase()).not.toContain("canary-");
    expect(all).not.toContain("Quarrington");
  });

  it("re-encrypts every records column after the patient's key is rotated, history tables included, and still reads the same", async () => {
    const before = await clinic.owner.agent.get(`/api/v1/exports/patients/${patientId}`);
    const rotated = await rotateDataKey(app.ctx, `patient/${patientId}`);
    expect(rotated.rotated).toBe(true);
    const outcome = await reencryptPending(app.ctx);
    expect(outcome.failed).toBe(0);
    expect(outcome.rewritten).toBeGreaterThanOrEqual(15);
    const headers = await asSuperuser<{ v: number }>(
      app,
      `SELECT get_byte(c, 1) * 16777216 + get_byte(c, 2) * 65536 + get_byte(c, 3) * 256 + get_byte(c, 4) AS v FROM (
         SELECT name_enc AS c FROM patients WHERE id = $1 UNION ALL SELECT body_enc FROM note_versions WHERE patient_id = $1
         UNION ALL SELECT evidence_enc FROM consents WHERE patient_id = $1 UNION ALL SELECT evidence_enc FROM consent_revocations WHERE patient_id = $1
         UNION ALL SELECT file_key_enc FROM attachments WHERE patient_id = $1 UNION ALL SELECT reason_enc FROM legal_holds WHERE patient_id = $1) x`,
      [patientId],
    );
    expect(headers.length).toBeGreaterThanOrEqual(7);
    expect(headers.every((h) => Number(h.v) === rotated.to)).toBe(true);
    const after = await clinic.owner.agent.get(`/api/v1/exports/patients/${patientId}`);
    const strip = (text: string) => JSON.parse(text).patients;
    expect(strip(after.text)).toEqual(strip(before.text));
    const file = await clinic.doctor.agent.get(`/api/v1/patients/${patientId}/attachments`);
    const content = await clinic.doctor.agent.get(`/api/v1/patients/${patientId}/attachments/${file.body.items[0].id}/content`).buffer(true).parse(binary);
    expect((content.body as Buffer).toString()).toBe(CANARY.file.repeat(2000));
  });

  it("binds each ciphertext to its row: a value moved to another patient does not decrypt, and the failure logs no value", async () => {
    const other = await registerPatient(clinic, { name: "Decoy Patient" });
    await asSuperuser(app, "UPDATE patients SET name_enc = (SELECT name_enc FROM patients WHERE id = $1) WHERE id = $2", [patientId, other.id]);
    const res = await clinic.frontDesk.agent.get(`/api/v1/patients/${other.id}`);
    expectProblem(res, 500, "internal-error");
    expect(JSON.stringify(res.body)).not.toContain("Quarrington");
    expect(app.logLines.some((l) => l.includes("stored field failed to decrypt") && l.includes(other.id))).toBe(true);
    expect(app.logLines.join("\n")).not.toContain("Quarrington");
  });
});
