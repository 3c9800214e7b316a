import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inScope } from "../../../daemon/db/sql.js";
import { decryptFieldValue, KeyDestroyed } from "../../../daemon/keys/index.js";
import { purgeDueDeletions } from "../../../daemon/records/data-rights/deletion.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { signIn, signInWithPassword } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { asSuperuser, assignCareTeam, expectProblem, openClinic, registerPatient, type Clinic, tag } from "./helpers.js";

/** Data rights: exports (step-up, streamed, audited), erasure with a grace period, legal hold, crypto-shredding. */
const DAY = 86_400_000;
const clock = new TestClock();
let app: TestAppliance;

beforeAll(async () => {
  app = await startTestAppliance({ clock, env: { WARDKEEP_RECORDS_EXPORT_BATCH_SIZE: "2" } });
});
afterAll(async () => {
  await app?.close();
});

/** A patient with something in every record type. */
async function fullRecord(clinic: Clinic, name: string) {
  const p = await registerPatient(clinic, { name, mrn: `MRN-${randomBytes(3).toString("hex")}`, email: "full.record@example.org", birthDate: "1961-07-30" });
  await assignCareTeam(clinic, p.id);
  const note = await clinic.doctor.agent.post(`/api/v1/patients/${p.id}/notes`).send({ body: "Initial assessment: stable." });
  await clinic.doctor.agent.put(`/api/v1/patients/${p.id}/notes/${note.body.id}`).set("If-Match", tag(note)).send({ body: "Initial assessment: stable, afebrile." });
  await clinic.frontDesk.agent
    .post(`/api/v1/patients/${p.id}/consents`)
    .send({ type: "treatment", textVersion: "7", scope: "Outpatient care", evidence: { method: "attestation", statement: "Signed paper form." } });
  await clinic.frontDesk.agent.post("/api/v1/schedule/appointments").send({
    patientId: p.id,
    practitionerId: clinic.doctor.user.id,
    startsAt: new Date(clock.now().getTime() + DAY).toISOString(),
    endsAt: new Date(clock.now().getTime() + DAY + 1_800_000).toISOString(),
  });
  const file = await clinic.doctor.agent
    .post(`/api/v1/patients/${p.id}/attachments?kind=document`)
    .set("Content-Type", "application/pdf")
    .set("Content-Disposition", 'attachment; filename="referral.pdf"')
    .send(randomBytes(20_000));
  expect(file.status).toBe(201);
  return { id: p.id, noteId: note.body.id as string, attachmentId: file.body.id as string };
}

describe("exports", () => {
  it("exports one patient's records as JSON and CSV to an owner or admin with a fresh second factor, audited", async () => {
    const clinic = await openClinic(app, "Export Clinic");
    const p = await fullRecord(clinic, '=HYPERLINK("http://evil")');
    const json = await clinic.admin.agent.get(`/api/v1/exports/patients/${p.id}`);
    expect(json.status).toBe(200);
    expect(json.headers["content-disposition"]).toBe(`attachment; filename="patient-${p.id}.json"`);
    const doc = JSON.parse(json.text);
    expect(doc).toMatchObject({ format: "wardkeep-records-export/v1", scope: "patient", tenantId: clinic.tenant.id });
    expect(doc.patients).toHaveLength(1);
    const bundle = doc.patients[0];
    expect(bundle.patient).toMatchObject({ id: p.id, email: "full.record@example.org", birthDate: "1961-07-30" });
    expect(bundle.notes[0].versions.map((v: { body: string }) => v.body)).toEqual(["Initial assessment: stable.", "Initial assessment: stable, afebrile."]);
    expect(bundle.consents[0]).toMatchObject({ type: "treatment", scope: "Outpatient care", evidence: { statement: "Signed paper form." } });
    expect(bundle.appointments).toHaveLength(1);
    expect(bundle.attachments[0]).toMatchObject({ id: p.attachmentId, filename: "referral.pdf", sizeBytes: 20_000, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });

    const csv = await clinic.owner.agent.get(`/api/v1/exports/patients/${p.id}?format=csv&records=patients`);
    expect(csv.headers["content-type"]).toMatch(/^text\/csv/);
    const lines = csv.text.trim().split("\n");
    expect(lines[0]).toBe("id,name,birth_date,mrn,phone,email,address,created_at,updated_at");
    // OWASP CSV injection: a formula-looking value is defused for spreadsheets.
    expect(lines[1]).toContain(`"'=HYPERLINK(""http://evil"")"`);
    const notesCsv = await clinic.owner.agent.get(`/api/v1/exports/patients/${p.id}?format=csv&records=notes`);
    expect(notesCsv.text.trim().split("\n")).toHaveLength(3);

    const exported = (await auditEvents(app, { action: "patient.export" })).filter((e) => e.patient_id === p.id);
    expect(exported.map((e) => e.actor_user_id)).toEqual([clinic.admin.user.id, clinic.owner.user.id, clinic.owner.user.id]);
    expect(exported.map((e) => e.reason)).toEqual(["json", "csv patients", "csv notes"]);

    for (const who of [clinic.frontDesk, clinic.doctor, clinic.auditor]) expectProblem(await who.agent.get(`/api/v1/exports/patients/${p.id}`), 403, "forbidden");
    const noFactor = await signIn(app, { role: "owner", tenantId: clinic.tenant.id, mfa: false });
    expectProblem(await noFactor.agent.get(`/api/v1/exports/patients/${p.id}`), 403, "step-up-required");
    expectProblem(await clinic.owner.agent.get(`/api/v1/exports/patients/${p.id}?format=xml`), 400, "invalid-request");
    expectProblem(await clinic.owner.agent.get(`/api/v1/exports/patients/00000000-0000-4000-8000-000000000000`), 404, "not-found");
  });

  it("streams the whole tenant in batches, auditing the export and every patient in it", async () => {
    const clinic = await openClinic(app, "Tenant Export Clinic");
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await registerPatient(clinic, { name: `Batch Patient ${i}` })).id);
    const res = await clinic.owner.agent.get("/api/v1/exports/tenant?format=json");
    expect(res.status).toBe(200);
    const doc = JSON.parse(res.text);
    expect(doc.scope).toBe("tenant");
    expect(doc.patients.map((b: { patient: { id: string } }) => b.patient.id).sort()).toEqual([...ids].sort());
    const events = (await auditEvents(app)).filter((e) => e.tenant_id === clinic.tenant.id && (e.action === "tenant.export" || e.action === "patient.export"));
    expect(events.filter((e) => e.action === "tenant.export")).toHaveLength(1);
    expect(
      events
        .filter((e) => e.action === "patient.export")
        .map((e) => e.patient_id)
        .sort(),
    ).toEqual([...ids].sort());
    const csv = await clinic.owner.agent.get("/api/v1/exports/tenant?format=csv&records=patients");
    expect(csv.text.trim().split("\n")).toHaveLength(6);
  });
});

describe("erasure", () => {
  it("holds a deletion for the grace period, lets the owner cancel it, then purges the records and crypto-shreds the patient's key", async () => {
    const clinic = await openClinic(app, "Erasure Clinic");
    const p = await fullRecord(clinic, "Florence Nightingale");
    const [before] = await asSuperuser<{ name_enc: Buffer }>(app, "SELECT name_enc FROM patients WHERE id = $1", [p.id]);
    const dir = path.join(app.dataDir, "attachments", clinic.tenant.id, p.id);
    expect(fs.existsSync(dir)).toBe(true);

    for (const who of [clinic.admin, clinic.frontDesk, clinic.doctor]) expectProblem(await who.agent.delete(`/api/v1/patients/${p.id}`), 403, "forbidden");
    const requested = await clinic.owner.agent.delete(`/api/v1/patients/${p.id}`);
    expect(requested.status).toBe(202);
    expect(Date.parse(requested.body.purgeAfter) - clock.now().getTime()).toBe(30 * DAY);
    expectProblem(await clinic.owner.agent.delete(`/api/v1/patients/${p.id}`), 409, "conflict");
    // Still there during the grace period (and exportable).
    expect((await clinic.frontDesk.agent.get(`/api/v1/patients/${p.id}`)).status).toBe(200);
    const cancelled = await clinic.owner.agent.post(`/api/v1/deletion-requests/${requested.body.id}/cancel`).send({});
    expect(cancelled.body.status).toBe("cancelled");
    expectProblem(await clinic.owner.agent.post(`/api/v1/deletion-requests/${requested.body.id}/cancel`).send({}), 409, "conflict");
    const again = await clinic.owner.agent.delete(`/api/v1/patients/${p.id}`);
    expect(again.status).toBe(202);
    expect((await clinic.auditor.agent.get("/api/v1/deletion-requests?status=pending")).body.items.map((r: { id: string }) => r.id)).toContain(again.body.id);

    clock.advance(29 * DAY);
    expect((await purgeDueDeletions(app.ctx)).filter((o) => o.patientId === p.id)).toEqual([]);
    clock.advance(2 * DAY);
    const outcomes = await purgeDueDeletions(app.ctx);
    expect(outcomes).toContainEqual(expect.objectContaining({ requestId: again.body.id, result: "purged", patientId: p.id }));

    for (const table of ["notes", "note_versions", "consents", "appointments", "attachments", "care_team_assignments"]) {
      expect(Number((await asSuperuser<{ n: string }>(app, `SELECT count(*) AS n FROM ${table} WHERE patient_id = $1`, [p.id]))[0]!.n), table).toBe(0);
    }
    const [tomb] = await asSuperuser<Record<string, unknown>>(app, "SELECT * FROM patients WHERE id = $1", [p.id]);
    expect(tomb).toMatchObject({ status: "purged", name_enc: null, mrn_enc: null, email_enc: null, mrn_bidx: null, email_bidx: null });
    expect(fs.existsSync(dir)).toBe(false);
    expect(await asSuperuser(app, "SELECT key_id FROM keystore.data_keys WHERE key_id = $1", [`patient/${p.id}`])).toEqual([]);
    expect(await asSuperuser(app, "SELECT subject FROM keystore.shredded WHERE subject = $1", [`patient/${p.id}`])).toHaveLength(1);
    // A copy of the ciphertext (an old data snapshot) no longer opens for anyone.
    await expect(
      inScope(app.ctx.db.app, { kind: "tenant", tenantId: clinic.tenant.id }, (t) =>
        decryptFieldValue(app.ctx, t, { tenantId: clinic.tenant.id, table: "patients", column: "name_enc", rowId: p.id }, before!.name_enc),
      ),
    ).rejects.toBeInstanceOf(KeyDestroyed);

    const desk = await signIn(app, { role: "front_desk", tenantId: clinic.tenant.id, mfa: false });
    expectProblem(await desk.agent.get(`/api/v1/patients/${p.id}`), 404, "not-found");
    const actions = (await auditEvents(app)).filter((e) => e.patient_id === p.id).map((e) => e.action);
    expect(actions).toEqual(expect.arrayContaining(["patient.deletion.request", "patient.deletion.cancel", "patient.purge", "keys.shred.schedule", "keys.shred.destroy"]));
  });

  it("blocks deletion and purge while a legal hold stands, audits both refusals, and purges once it is released", async () => {
    const clinic = await openClinic(app, "Hold Clinic");
    const p = await registerPatient(clinic, { name: "Clara Barton" });
    const hold = await clinic.admin.agent.post(`/api/v1/patients/${p.id}/legal-holds`).send({ reason: "Litigation hold, matter 88-2" });
    expect(hold.status).toBe(201);
    const refused = await clinic.owner.agent.delete(`/api/v1/patients/${p.id}`);
    expectProblem(refused, 409, "legal-hold");
    expect(refused.body.legalHoldIds).toEqual([hold.body.id]);
    const deniedRequest = (await auditEvents(app, { action: "patient.deletion.request" })).filter((e) => e.patient_id === p.id);
    expect(deniedRequest).toEqual([expect.objectContaining({ outcome: "denied", reason: `legal hold: ${hold.body.id}` })]);
    expectProblem(await clinic.owner.agent.post("/api/v1/tenant/deletion").send({}), 409, "legal-hold");

    // Released, deleted, then held again during the grace period: the purge waits.
    await clinic.admin.stepUp();
    expect((await clinic.admin.agent.post(`/api/v1/patients/${p.id}/legal-holds/${hold.body.id}/release`).send({})).body.active).toBe(false);
    const requested = await clinic.owner.agent.delete(`/api/v1/patients/${p.id}`);
    expect(requested.status).toBe(202);
    const second = await clinic.admin.agent.post(`/api/v1/patients/${p.id}/legal-holds`).send({ reason: "Regulator inquiry 2031-4" });
    expect((await clinic.auditor.agent.get(`/api/v1/legal-holds?patientId=${p.id}&active=true`)).body.items.map((h: { id: string }) => h.id)).toEqual([second.body.id]);
    clock.advance(31 * DAY);
    expect((await purgeDueDeletions(app.ctx)).find((o) => o.requestId === requested.body.id)?.result).toBe("blocked");
    expect((await purgeDueDeletions(app.ctx)).find((o) => o.requestId === requested.body.id)?.result).toBe("blocked");
    const blocked = (await auditEvents(app, { action: "patient.purge" })).filter((e) => e.patient_id === p.id);
    expect(blocked).toEqual([expect.objectContaining({ outcome: "denied", actor_role: "system" })]);
    expect(Number((await asSuperuser<{ n: string }>(app, "SELECT count(*) AS n FROM patients WHERE id = $1 AND status = 'active'", [p.id]))[0]!.n)).toBe(1);

    const admin = await signIn(app, { role: "admin", tenantId: clinic.tenant.id });
    expectProblem(await admin.agent.post(`/api/v1/patients/${p.id}/legal-holds/${second.body.id}/release`).send({ extra: 1 }), 400, "invalid-request");
    expect((await admin.agent.post(`/api/v1/patients/${p.id}/legal-holds/${second.body.id}/release`).send({})).status).toBe(200);
    expect((await purgeDueDeletions(app.ctx)).find((o) => o.requestId === requested.body.id)?.result).toBe("purged");
    expect((await auditEvents(app, { action: "legal_hold.release" })).filter((e) => e.patient_id === p.id)).toHaveLength(2);
  });

  it("erases a whole tenant after its grace period: every patient purged, every key destroyed, nobody signs in", async () => {
    const clinic = await openClinic(app, "Closing Clinic");
    const a = await fullRecord(clinic, "Mary Breckinridge");
    const b = await registerPatient(clinic, { name: "Lillian Wald", mrn: "LW-1" });
    expectProblem(await clinic.admin.agent.post("/api/v1/tenant/deletion").send({}), 403, "forbidden");
    const requested = await clinic.owner.agent.post("/api/v1/tenant/deletion").send({});
    expect(requested.status).toBe(202);
    expect(requested.body).toMatchObject({ subject: "tenant", patientId: null, status: "pending" });
    clock.advance(31 * DAY);
    expect((await purgeDueDeletions(app.ctx)).find((o) => o.requestId === requested.body.id)?.result).toBe("purged");
    const statuses = await asSuperuser<{ status: string }>(app, "SELECT status FROM patients WHERE id = ANY($1)", [[a.id, b.id]]);
    expect(statuses.map((s) => s.status)).toEqual(["purged", "purged"]);
    expect(await asSuperuser(app, "SELECT key_id FROM keystore.data_keys WHERE tenant_id = $1", [clinic.tenant.id])).toEqual([]);
    expect((await asSuperuser<{ status: string }>(app, "SELECT status FROM tenants WHERE id = $1", [clinic.tenant.id]))[0]!.status).toBe("deleting");
    expect(fs.existsSync(path.join(app.dataDir, "attachments", clinic.tenant.id))).toBe(false);
    expect((await auditEvents(app, { action: "tenant.purge" })).filter((e) => e.tenant_id === clinic.tenant.id)).toHaveLength(1);
    await expect(signInWithPassword(app, { email: clinic.owner.user.email, password: clinic.owner.password, totpSecret: clinic.owner.totpSecret })).rejects.toThrow(
      /sign-in failed: 401/,
    );
  });
});
