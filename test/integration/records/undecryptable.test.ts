import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { destroyDueKeys, scheduleShred } from "../../../daemon/keys/index.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { asSuperuser, assignCareTeam, expectProblem, openClinic, registerPatient, type Clinic } from "./helpers.js";

/**
 * Rows that cannot be decrypted — a patient crypto-shredded after the snapshot that brought the
 * rows back, or a damaged value — are left out of lists with a count and an audit event naming
 * their ids; the list itself still answers. Reading such a record alone is a 410 (shredded) or
 * a 500 (damaged). The shredding is the keys capability's own, as the erasure job does it.
 */
let app: TestAppliance;
let clinic: Clinic;
let kept: { id: string };
let shredded: { id: string };
let shreddedMrn: string;
let noteIds: string[];

const DAY = 86_400_000;

async function shred(patientId: string) {
  await scheduleShred(app.ctx, { kind: "patient", tenantId: clinic.tenant.id, patientId }, { graceDays: 0 });
  await destroyDueKeys(app.ctx);
}

/** A patient with a note, a consent, an attachment and an appointment. */
async function withRecords(name: string, mrn: string) {
  const p = await registerPatient(clinic, { name, mrn });
  await assignCareTeam(clinic, p.id);
  const base = `/api/v1/patients/${p.id}`;
  const note = await clinic.doctor.agent.post(`${base}/notes`).send({ body: `Note for ${name}` });
  expect(note.status).toBe(201);
  expect(
    (
      await clinic.frontDesk.agent
        .post(`${base}/consents`)
        .send({ type: "treatment", textVersion: "1", scope: "Outpatient", evidence: { method: "attestation", statement: "Paper form." } })
    ).status,
  ).toBe(201);
  expect((await clinic.doctor.agent.post(`${base}/attachments?kind=document`).set("Content-Type", "application/pdf").send(randomBytes(2_000))).status).toBe(201);
  const startsAt = new Date(Date.now() + DAY);
  const appt = await clinic.frontDesk.agent
    .post("/api/v1/schedule/appointments")
    .send({ patientId: p.id, practitionerId: clinic.doctor.user.id, startsAt: startsAt.toISOString(), endsAt: new Date(startsAt.getTime() + 1_800_000).toISOString() });
  expect(appt.status).toBe(201);
  return { id: p.id, noteId: note.body.id as string };
}

beforeAll(async () => {
  app = await startTestAppliance();
  clinic = await openClinic(app, "Restored Clinic");
  kept = await withRecords("Ada Kept", "MRN-KEPT-1");
  shreddedMrn = "MRN-GONE-1";
  const gone = await withRecords("Bob Shredded", shreddedMrn);
  shredded = gone;
  noteIds = [gone.noteId];
  // The rows stay (as after restoring a snapshot taken before the erasure); only the key goes.
  await shred(shredded.id);
});
afterAll(async () => {
  await app?.close();
});

const undecryptableEvents = async (action: string) => (await auditEvents(app, { action })).filter((e) => e.tenant_id === clinic.tenant.id);

describe("a crypto-shredded patient whose rows came back", () => {
  it("leaves the patient out of the patient list with a count, audits the id once, and shows everyone else", async () => {
    const res = await clinic.frontDesk.agent.get("/api/v1/patients");
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.items.map((p: { id: string; name: string }) => [p.id, p.name])).toEqual([[kept.id, "Ada Kept"]]);
    expect(res.body.undecryptable).toBe(1);
    expect(res.body.nextCursor).toBeNull();

    const events = await undecryptableEvents("patient.undecryptable");
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ outcome: "failure", resource_type: "patient", resource_id: shredded.id, patient_id: shredded.id, actor_user_id: clinic.frontDesk.user.id });
    expect(events[0]!.reason).toBe(`1 undecryptable row(s) left out of the list: ${shredded.id} shredded`);
    // The row left out is not recorded as read.
    expect((await auditEvents(app, { action: "patient.list" })).filter((e) => e.resource_id === shredded.id)).toEqual([]);
  });

  it("pages past the left-out row: the cursor still moves on, and a page holding only it is empty with a count", async () => {
    const first = await clinic.frontDesk.agent.get("/api/v1/patients?limit=1");
    expect(first.body).toMatchObject({ items: [{ id: kept.id }], undecryptable: 0 });
    const second = await clinic.frontDesk.agent.get(`/api/v1/patients?limit=1&cursor=${encodeURIComponent(first.body.nextCursor)}`);
    expect(second.status).toBe(200);
    expect(second.body).toEqual({ items: [], nextCursor: null, undecryptable: 1 });
  });

  it("answers a read of the patient alone with 410 record-shredded, naming no value", async () => {
    const res = await clinic.frontDesk.agent.get(`/api/v1/patients/${shredded.id}`);
    expectProblem(res, 410, "record-shredded");
    expect(res.body.detail).toMatch(/crypto-shredded/);
    expect(JSON.stringify(res.body)).not.toContain("Bob");
    expect((await clinic.frontDesk.agent.get(`/api/v1/patients/${kept.id}`)).body.name).toBe("Ada Kept");
  });

  it("leaves its appointments out of the schedule with a count and one audit event", async () => {
    const res = await clinic.frontDesk.agent.get("/api/v1/schedule");
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.items.map((a: { patientId: string; patientName: string }) => [a.patientId, a.patientName])).toEqual([[kept.id, "Ada Kept"]]);
    expect(res.body.undecryptable).toBe(1);
    const [event] = await undecryptableEvents("appointment.undecryptable");
    expect(event).toMatchObject({ outcome: "failure", resource_type: "appointment" });
    expect(event!.reason).toMatch(/^1 undecryptable row\(s\) left out of the list: [0-9a-f-]{36} shredded$/);
  });

  it("answers its notes, consents and attachments lists with empty pages and counts, each audited with the patient id", async () => {
    const base = `/api/v1/patients/${shredded.id}`;
    const notes = await clinic.doctor.agent.get(`${base}/notes`);
    expect(notes.status, JSON.stringify(notes.body)).toBe(200);
    expect(notes.body).toEqual({ items: [], nextCursor: null, undecryptable: 1 });
    const consents = await clinic.frontDesk.agent.get(`${base}/consents`);
    expect(consents.status, JSON.stringify(consents.body)).toBe(200);
    expect(consents.body).toEqual({ items: [], nextCursor: null, undecryptable: 1 });
    const files = await clinic.doctor.agent.get(`${base}/attachments`);
    expect(files.status, JSON.stringify(files.body)).toBe(200);
    expect(files.body).toEqual({ items: [], nextCursor: null, undecryptable: 1 });

    for (const action of ["note.undecryptable", "consent.undecryptable", "attachment.undecryptable"]) {
      const events = await undecryptableEvents(action);
      expect(events, action).toHaveLength(1);
      expect(events[0], action).toMatchObject({ outcome: "failure", patient_id: shredded.id });
    }
    expect((await undecryptableEvents("note.undecryptable"))[0]!.reason).toContain(`${noteIds[0]} shredded`);
    // A single note of that patient: 410 as well.
    expectProblem(await clinic.doctor.agent.get(`${base}/notes/${noteIds[0]}`), 410, "record-shredded");
    // The other patient's lists are untouched.
    const keptNotes = await clinic.doctor.agent.get(`/api/v1/patients/${kept.id}/notes`);
    expect(keptNotes.body).toMatchObject({ items: [{ body: "Note for Ada Kept" }], undecryptable: 0 });
  });

  it("leaves it out of an MRN search with a count instead of failing", async () => {
    const res = await clinic.frontDesk.agent.post("/api/v1/patients/search").send({ mrn: shreddedMrn });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toEqual({ items: [], undecryptable: 1 });
    const found = await clinic.frontDesk.agent.post("/api/v1/patients/search").send({ mrn: "MRN-KEPT-1" });
    expect(found.body).toMatchObject({ items: [{ id: kept.id, name: "Ada Kept", accessible: true }], undecryptable: 0 });
  });
});

describe("exports after such a restore", () => {
  it("exports the tenant without the shredded patient, names its id in the document and the audit trail, and refuses its own export with 410", async () => {
    const before = (await undecryptableEvents("patient.undecryptable")).length;
    const json = await clinic.admin.agent.get("/api/v1/exports/tenant");
    expect(json.status).toBe(200);
    const doc = JSON.parse(json.text);
    expect(doc.patients.map((b: { patient: { id: string } }) => b.patient.id)).toEqual([kept.id]);
    expect(doc.undecryptablePatientIds).toEqual([shredded.id]);
    expect(json.text).not.toContain("Bob Shredded");
    const csv = await clinic.owner.agent.get("/api/v1/exports/tenant?format=csv&records=notes");
    expect(csv.status).toBe(200);
    expect(csv.text).toContain("Note for Ada Kept");
    expect(csv.text.trim().split("\n")).toHaveLength(2);
    const events = await undecryptableEvents("patient.undecryptable");
    expect(events.length).toBe(before + 2);
    expect(events.at(-1)!.reason).toBe(`1 undecryptable row(s) left out of the list: ${shredded.id} shredded`);
    expect((await auditEvents(app, { action: "patient.export" })).filter((e) => e.patient_id === shredded.id)).toEqual([]);

    expectProblem(await clinic.admin.agent.get(`/api/v1/exports/patients/${shredded.id}`), 410, "record-shredded");
    expect((await clinic.admin.agent.get(`/api/v1/exports/patients/${kept.id}`)).status).toBe(200);
  });
});

describe("a damaged value", () => {
  it("leaves the damaged patient out of the list as unreadable, logs its id without a value, and keeps the 500 for a read of it alone", async () => {
    const other = await openClinic(app, "Damaged Clinic");
    const a = await registerPatient(other, { name: "Carol Intact" });
    const b = await registerPatient(other, { name: "Dmitri Damaged" });
    // A ciphertext moved to another row does not authenticate there (tamper evidence).
    await asSuperuser(app, "UPDATE patients SET name_enc = (SELECT name_enc FROM patients WHERE id = $1) WHERE id = $2", [a.id, b.id]);
    const res = await other.frontDesk.agent.get("/api/v1/patients");
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.items.map((p: { name: string }) => p.name)).toEqual(["Carol Intact"]);
    expect(res.body.undecryptable).toBe(1);
    const [event] = (await auditEvents(app, { action: "patient.undecryptable" })).filter((e) => e.tenant_id === other.tenant.id);
    expect(event!.reason).toBe(`1 undecryptable row(s) left out of the list: ${b.id} unreadable`);
    expect(app.logLines.some((l) => l.includes("stored field failed to decrypt") && l.includes(b.id))).toBe(true);
    expect(app.logLines.join("\n")).not.toContain("Carol Intact");
    expectProblem(await other.frontDesk.agent.get(`/api/v1/patients/${b.id}`), 500, "internal-error");
  });

  it("keeps every id of a large page in the audit trail: ids past one event's reason go on in further events", async () => {
    const big = await openClinic(app, "Many Damaged Clinic");
    const ids: string[] = [];
    for (let i = 0; i < 15; i++) ids.push((await registerPatient(big, { name: `Patient ${i}` })).id);
    // Damage every row: each gets the first row's name ciphertext, which authenticates only there.
    await asSuperuser(app, "UPDATE patients SET name_enc = (SELECT name_enc FROM patients WHERE id = $1) WHERE tenant_id = $2 AND id <> $1", [ids[0], big.tenant.id]);
    const res = await big.frontDesk.agent.get("/api/v1/patients?limit=100");
    expect(res.status).toBe(200);
    expect(res.body.items.map((p: { id: string }) => p.id)).toEqual([ids[0]]);
    expect(res.body.undecryptable).toBe(14);
    const events = (await auditEvents(app, { action: "patient.undecryptable" })).filter((e) => e.tenant_id === big.tenant.id);
    expect(events.length).toBeGreaterThan(1);
    expect(events.every((e) => (e.reason ?? "").length <= 500)).toBe(true);
    expect(events[0]!.reason).toMatch(/^14 undecryptable row\(s\) left out of the list:/);
    expect(events.slice(1).every((e) => e.reason!.startsWith("continued:"))).toBe(true);
    const named = events.flatMap((e) => [...e.reason!.matchAll(/([0-9a-f-]{36}) unreadable/g)].map((m) => m[1]));
    expect(named.sort()).toEqual(ids.slice(1).sort());
  });
});
