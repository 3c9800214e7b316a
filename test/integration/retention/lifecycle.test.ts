import fs from "node:fs";
import path from "node:path";
import { createPublicKey, verify } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inScope } from "../../../daemon/db/sql.js";
import { decryptFieldValue, KeyDestroyed } from "../../../daemon/keys/index.js";
import { purgeTenant } from "../../../daemon/retention/index.js";
import { signIn, signInWithPassword, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { TestClock } from "../../helpers/clock.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { asSuperuser, assignCareTeam, expectProblem, openClinic, registerPatient, type Clinic } from "../records/helpers.js";

/**
 * The register over years on a moving clock: every trigger (creation, expiry, last encounter,
 * discharge, age of majority) and the classes beyond notes (consent, patient, support request,
 * export file, audit event); a patient with nothing left becomes a tombstone and, after the
 * grace period, the purge crypto-shreds the patient's keys (a copied ciphertext no longer opens);
 * then a purge under concurrent reads and writes.
 */
const DAY = 86_400_000;
const YEAR = 365 * DAY;
const clock = new TestClock();
let app: TestAppliance;
let clinic: Clinic;
let owner: SignedIn;
const T0 = clock.now();
const iso = (ms: number) => new Date(ms).toISOString();
const dateOnly = (d: Date) => d.toISOString().slice(0, 10);
type Who = { id: string; noteId: string };
const p: Record<"adult" | "minor" | "recent", Who> = { adult: { id: "", noteId: "" }, minor: { id: "", noteId: "" }, recent: { id: "", noteId: "" } };
let adultCipher: { name: Buffer; note: Buffer; noteVersionId: string };

async function fresh(role: "owner" | "front_desk" | "auditor"): Promise<SignedIn> {
  return signIn(app, { role, tenantId: clinic.tenant.id });
}
async function freshDoctor(): Promise<SignedIn> {
  clinic.doctor = await signInWithPassword(app, { email: clinic.doctor.user.email, password: clinic.doctor.password, totpSecret: clinic.doctor.totpSecret });
  return clinic.doctor;
}
async function book(desk: SignedIn, patientId: string, endsAt: number): Promise<string> {
  const res = await desk.agent
    .post("/api/v1/schedule/appointments")
    .send({ patientId, practitionerId: clinic.doctor.user.id, startsAt: iso(endsAt - 1_800_000), endsAt: iso(endsAt), status: "completed" });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id;
}
const byClass = <T extends { recordClass: string }>(list: T[]) => Object.fromEntries(list.map((c) => [c.recordClass, c])) as Record<string, T>;
const decryptAdult = (column: "name_enc", value: Buffer, rowId: string, table = "patients") =>
  inScope(app.ctx.db.app, { kind: "tenant", tenantId: clinic.tenant.id }, (t) => decryptFieldValue(app.ctx, t, { tenantId: clinic.tenant.id, table, column, rowId }, value));

beforeAll(async () => {
  app = await startTestAppliance({ clock, env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_RETENTION_BATCH_SIZE: "250" } });
  clinic = await openClinic(app, "Retention Lifecycle");
  owner = clinic.owner;
  const tenYearsAgo = new Date(T0.getTime());
  tenYearsAgo.setUTCFullYear(tenYearsAgo.getUTCFullYear() - 10);
  const births = { adult: "1960-01-01", minor: dateOnly(tenYearsAgo), recent: "1980-05-05" };
  for (const who of ["adult", "minor", "recent"] as const) {
    const reg = await registerPatient(clinic, { name: `Patient ${who}`, birthDate: births[who] });
    p[who].id = reg.id;
    await assignCareTeam(clinic, reg.id);
    const note = await clinic.doctor.agent.post(`/api/v1/patients/${reg.id}/notes`).send({ body: `Visit of the ${who} patient` });
    expect(note.status, JSON.stringify(note.body)).toBe(201);
    p[who].noteId = note.body.id;
    await book(clinic.frontDesk, reg.id, T0.getTime() - 3_600_000);
  }
  const evidence = { method: "attestation", statement: "Signed paper form." };
  const consentOf = async (id: string) => {
    const res = await clinic.frontDesk.agent.post(`/api/v1/patients/${id}/consents`).send({ type: "treatment", textVersion: "7", evidence });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.id as string;
  };
  const revoked = await consentOf(p.adult.id);
  expect((await clinic.frontDesk.agent.post(`/api/v1/patients/${p.adult.id}/consents/${revoked}/revocation`).send({ evidence })).status).toBe(201);
  await consentOf(p.minor.id); // in force: never purged
  const [name] = await asSuperuser<{ name_enc: Buffer }>(app, "SELECT name_enc FROM patients WHERE id = $1", [p.adult.id]);
  const [version] = await asSuperuser<{ id: string; body_enc: Buffer }>(app, "SELECT id::text, body_enc FROM note_versions WHERE note_id = $1", [p.adult.noteId]);
  adultCipher = { name: name!.name_enc, note: version!.body_enc, noteVersionId: version!.id };
});
afterAll(async () => {
  await app?.close();
});

describe("rules on every trigger", () => {
  it("accepts the triggers a class counts from, refuses others in one sentence, and says why a class or trigger purges nothing", async () => {
    // Counting appointments from the age of majority would purge the two adults' appointments at once: the count first, and step-up.
    const unconfirmed = await owner.agent.put("/api/v1/retention/rules/appointment").send({ periodDays: 365, trigger: "age_of_majority" });
    expectProblem(unconfirmed, 409, "retention-purge-unconfirmed");
    expect(unconfirmed.body.detail).toBe("this rule purges 2 appointment record(s) on the next run; send confirmPurgeCount: 2 to apply it");
    await owner.stepUp();
    for (const [cls, body] of [
      ["note", { periodDays: 2192, trigger: "last_encounter", legalBasis: "State law: 6 years after the last encounter" }],
      ["appointment", { periodDays: 365, trigger: "age_of_majority", legalBasis: "Minors: until majority plus one year", confirmPurgeCount: 2 }],
      ["audio", { periodDays: 30, trigger: "discharge" }],
    ] as const) {
      const res = await owner.agent.put(`/api/v1/retention/rules/${cls}`).send(body);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.rule).toMatchObject({ recordClass: cls, trigger: body.trigger, periodDays: body.periodDays, source: "tenant" });
    }
    const wrong = await owner.agent.put("/api/v1/retention/rules/session").send({ periodDays: 30, trigger: "last_encounter" });
    expectProblem(wrong, 400, "invalid-request");
    expect(wrong.body.detail).toBe("a session rule counts from expiry; not from last_encounter");

    const rules = byClass((await owner.agent.get("/api/v1/retention/rules")).body.rules as { recordClass: string; trigger: string; triggers: string[]; periodDays: number }[]);
    expect(Object.keys(rules)).toEqual(["note", "audio", "attachment", "appointment", "consent", "patient", "session", "invite", "support_request", "export_file", "audit_event"]);
    expect(rules.patient).toMatchObject({ trigger: "last_encounter", periodDays: 2557, triggers: ["last_encounter", "creation", "age_of_majority", "discharge"] });
    expect(rules.consent).toMatchObject({ trigger: "expiry", periodDays: 2192 });
    expect(rules.audit_event).toMatchObject({ trigger: "creation", periodDays: 2557 });
    const preview = byClass((await owner.agent.get("/api/v1/retention/preview")).body.classes as { recordClass: string; wouldPurge: number; never: string | null }[]);
    expect(preview.audio!.never).toBe("no discharge or deactivation date is recorded for patients in this product: a rule on this trigger is kept and purges nothing");
    expect(preview.audit_event!.never).toMatch(/^audit events are dropped a whole month at a time by the audit-retention job/);
    expect(preview.note!.never).toBeNull();
  });
});

describe("years later", () => {
  it("purges by last encounter, age of majority and a consent's end; a patient with nothing left becomes a tombstone whose keys wait out the grace period", async () => {
    clock.advance(7 * YEAR);
    const desk = await fresh("front_desk");
    await book(desk, p.recent.id, clock.now().getTime() - 3_600_000); // the recent patient came back
    clock.advance(YEAR + DAY);
    owner = await fresh("owner");
    // A support request denied two years ago, one still pending, and an evidence pack made a year ago.
    await asSuperuser(
      app,
      `INSERT INTO support_requests (tenant_id, requested_by, ticket_ref, reason, status, created_at, decided_by, decided_at)
       VALUES ($1, $2, 'INC-1', 'Printer mapping', 'denied', $3, $2, $3), ($1, $2, 'INC-2', 'Slow search', 'pending', $3, NULL, NULL)`,
      [clinic.tenant.id, owner.user.id, new Date(clock.now().getTime() - 2 * YEAR)],
    );
    const packId = "audit-20270101T000000Z-0a1b2c3d";
    await asSuperuser(
      app,
      "INSERT INTO audit_exports (id, tenant_id, requested_by, range_from, range_to, formats, status, created_at, finished_at) VALUES ($1, $2, 'owner', $3, $3, '{jsonl}', 'done', $3, $3)",
      [packId, clinic.tenant.id, new Date(clock.now().getTime() - YEAR)],
    );
    const packDir = path.join(app.dataDir, "exports", "audit", packId);
    fs.mkdirSync(packDir, { recursive: true });
    fs.writeFileSync(path.join(packDir, "manifest.json"), "{}");

    const preview = byClass((await owner.agent.get("/api/v1/retention/preview")).body.classes as { recordClass: string; wouldPurge: number; heldBack: number }[]);
    // Notes of the adult and the minor (last encounter 8 years ago); the recent patient's came back a year ago.
    expect(preview.note!.wouldPurge).toBe(2);
    // Appointments: the adult's and the recent patient's two (majority long past); the minor turns 18 only now.
    expect(preview.appointment!.wouldPurge).toBe(3);
    expect(preview.consent!.wouldPurge).toBe(1);
    expect(preview.support_request!.wouldPurge).toBe(1);
    expect(preview.export_file!.wouldPurge).toBe(1);

    const [sessions] = await asSuperuser<{ n: number }>(app, "SELECT count(*)::int AS n FROM sessions WHERE tenant_id = $1 AND expires_at < $2", [
      clinic.tenant.id,
      new Date(clock.now().getTime() - 30 * DAY),
    ]);
    expect(sessions!.n).toBeGreaterThan(0);
    const run = await purgeTenant(app.ctx, clinic.tenant.id);
    expect(run.finished).toBe(true);
    const cert = (await (await fresh("auditor")).agent.get(`/api/v1/retention/runs/${run.runId}/certificate`)).body;
    const body = JSON.parse(cert.certificate);
    const counts = Object.fromEntries(Object.entries(body.destroyed as Record<string, { count: number }>).map(([k, v]) => [k, v.count]));
    expect(counts).toEqual({
      note: 2,
      audio: 0,
      attachment: 0,
      appointment: 3,
      consent: 1,
      patient: 1,
      session: sessions!.n,
      invite: 0,
      support_request: 1,
      export_file: 1,
      audit_event: 0,
    });
    expect(body.destroyed.patient).toMatchObject({ firstId: p.adult.id, lastId: p.adult.id });
    expect(body.shredded.count).toBe(0);
    expect(body.rules.audio.never).toMatch(/^no discharge/);
    expect(body.rules.appointment).toMatchObject({ trigger: "age_of_majority", periodDays: 365 });

    const patients = await asSuperuser<{ id: string; status: string; name_enc: Buffer | null }>(app, "SELECT id::text, status, name_enc FROM patients WHERE tenant_id = $1", [
      clinic.tenant.id,
    ]);
    expect(byId(patients)[p.adult.id]).toMatchObject({ status: "purged", name_enc: null });
    expect(byId(patients)[p.minor.id]!.status).toBe("active");
    expect(byId(patients)[p.recent.id]!.status).toBe("active");
    expect((await asSuperuser(app, "SELECT ticket_ref FROM support_requests WHERE tenant_id = $1", [clinic.tenant.id])).map((r) => r.ticket_ref)).toEqual(["INC-2"]);
    expect(fs.existsSync(packDir)).toBe(false);
    // Within the grace period the keys still exist: a copy of the ciphertext still opens.
    expect((await decryptAdult("name_enc", adultCipher.name, p.adult.id))?.toString()).toBe("Patient adult");
    expect(await asSuperuser(app, "SELECT subject FROM keystore.shred_schedule WHERE subject = $1", [`patient/${p.adult.id}`])).toHaveLength(1);
  });

  it("after the grace period crypto-shreds the tombstoned patient's keys, audited and counted in the certificate; an old ciphertext no longer opens", async () => {
    clock.advance(31 * DAY);
    const run = await purgeTenant(app.ctx, clinic.tenant.id);
    const cert = (await (await fresh("auditor")).agent.get(`/api/v1/retention/runs/${run.runId}/certificate`)).body;
    const key = createPublicKey({ key: Buffer.from(cert.publicKeySpki, "base64"), format: "der", type: "spki" });
    expect(verify(null, Buffer.from(cert.certificate, "utf8"), key, Buffer.from(cert.signature, "base64"))).toBe(true);
    const body = JSON.parse(cert.certificate);
    expect(body.shredded).toEqual({ count: 1, batches: 1, firstId: p.adult.id, lastId: p.adult.id });
    // The recent patient's note stays: its last encounter is remembered although the appointment was purged.
    expect(body.destroyed.note.count).toBe(0);
    const shredEvents = (await auditEvents(app, { action: "retention.purge.shred" })).filter((e) => e.resource_id === run.runId);
    expect(shredEvents.map((e) => JSON.parse(e.reason!))).toEqual([{ class: "shredded", count: 1, firstId: p.adult.id, lastId: p.adult.id }]);
    expect((await auditEvents(app, { action: "keys.shred.destroy" })).map((e) => e.resource_id)).toContain(`patient/${p.adult.id}`);

    // A copy of the patient's ciphertext (an older snapshot, a row read raw) cannot be decrypted any more.
    await expect(decryptAdult("name_enc", adultCipher.name, p.adult.id)).rejects.toBeInstanceOf(KeyDestroyed);
    await expect(
      inScope(app.ctx.db.app, { kind: "tenant", tenantId: clinic.tenant.id }, (t) =>
        decryptFieldValue(app.ctx, t, { tenantId: clinic.tenant.id, table: "note_versions", column: "body_enc", rowId: adultCipher.noteVersionId }, adultCipher.note),
      ),
    ).rejects.toBeInstanceOf(KeyDestroyed);
    const desk = await fresh("front_desk");
    expectProblem(await desk.agent.get(`/api/v1/patients/${p.adult.id}`), 404, "not-found");
    const doctor = await freshDoctor();
    const recentNotes = await doctor.agent.get(`/api/v1/patients/${p.recent.id}/notes`);
    expect(recentNotes.body.items.map((n: { id: string }) => n.id)).toEqual([p.recent.noteId]);
    // A third run shreds nothing again.
    const again = await purgeTenant(app.ctx, clinic.tenant.id);
    const third = JSON.parse((await (await fresh("auditor")).agent.get(`/api/v1/retention/runs/${again.runId}/certificate`)).body.certificate);
    expect(third.shredded.count).toBe(0);
  });
});

const byId = <T extends { id: string }>(rows: T[]) => Object.fromEntries(rows.map((r) => [r.id, r])) as Record<string, T>;

describe("purge under concurrent traffic", () => {
  it("answers every read and write while thousands of rows are purged, and purges nothing under a hold", async () => {
    const doctor = await freshDoctor();
    const desk = await fresh("front_desk");
    const admin = await fresh("owner");
    const ids = { gone: "", held: "", busy: "" };
    for (const which of ["gone", "held", "busy"] as const) {
      ids[which] = (await registerPatient({ ...clinic, frontDesk: desk }, { name: `Traffic ${which}`, birthDate: "1970-02-02" })).id;
      const care = await admin.agent.post(`/api/v1/patients/${ids[which]}/care-team`).send({ userId: doctor.user.id });
      expect(care.status, JSON.stringify(care.body)).toBe(200);
    }
    const hold = await admin.agent.post(`/api/v1/patients/${ids.held}/legal-holds`).send({ reason: "Litigation hold, matter 2035-9" });
    expect(hold.status, JSON.stringify(hold.body)).toBe(201);
    // Ten years old: registered, and 3000 + 500 notes written then (ciphertext copied from a real one).
    const seed = await doctor.agent.post(`/api/v1/patients/${ids.gone}/notes`).send({ body: "Seed note" });
    expect(seed.status).toBe(201);
    const old = new Date(clock.now().getTime() - 10 * YEAR);
    await asSuperuser(app, "UPDATE patients SET created_at = $2 WHERE id = ANY($1::uuid[])", [[ids.gone, ids.held], old]);
    for (const [patient, n] of [
      [ids.gone, 3000],
      [ids.held, 500],
    ] as const) {
      await asSuperuser(
        app,
        `WITH made AS (INSERT INTO notes (tenant_id, patient_id, kind, created_at, created_by, updated_at)
                       SELECT $1, $2, 'note', $4, $5, $4 FROM generate_series(1, $3) RETURNING id)
         INSERT INTO note_versions (tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by)
         SELECT $1, $2, id, 1, 'original', (SELECT body_enc FROM note_versions WHERE note_id = $6), $4, $5 FROM made`,
        [clinic.tenant.id, patient, n, old, doctor.user.id, seed.body.id],
      );
    }
    await asSuperuser(app, "UPDATE notes SET created_at = $2 WHERE id = $1", [seed.body.id, old]);

    const statuses: number[] = [];
    const written: string[] = [];
    let purging = true;
    const traffic = async () => {
      for (let i = 0; purging; i++) {
        const [w, r, l] = await Promise.all([
          doctor.agent.post(`/api/v1/patients/${ids.busy}/notes`).send({ body: `Ward round ${i}` }),
          doctor.agent.get(`/api/v1/patients/${ids.held}/notes?limit=20`),
          desk.agent.get("/api/v1/patients?limit=20"),
        ]);
        statuses.push(w.status, r.status, l.status);
        if (w.status === 201) written.push(w.body.id);
      }
    };
    const running = traffic();
    const run = await purgeTenant(app.ctx, clinic.tenant.id);
    purging = false;
    await running;

    expect(statuses.length).toBeGreaterThanOrEqual(6);
    expect(statuses.filter((s) => s >= 300)).toEqual([]);
    const left = async (patient: string) => (await asSuperuser<{ n: number }>(app, "SELECT count(*)::int AS n FROM notes WHERE patient_id = $1", [patient]))[0]!.n;
    expect(await left(ids.gone)).toBe(0);
    expect(await left(ids.held)).toBe(500);
    const busyNotes: string[] = [];
    for (let cursor: string | null = null; ;) {
      const page = await doctor.agent.get(`/api/v1/patients/${ids.busy}/notes?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      expect(page.status, JSON.stringify(page.body)).toBe(200);
      busyNotes.push(...page.body.items.map((n: { id: string }) => n.id));
      cursor = page.body.nextCursor;
      if (!cursor) break;
    }
    expect(busyNotes.sort()).toEqual([...written].sort());
    expect((await doctor.agent.get(`/api/v1/patients/${ids.held}`)).status).toBe(200);

    const body = JSON.parse((await (await fresh("auditor")).agent.get(`/api/v1/retention/runs/${run.runId}/certificate`)).body.certificate);
    expect(body.destroyed.note.count).toBe(3001);
    expect(body.destroyed.note.batches).toBe(13);
    const audited = (await auditEvents(app, { action: "retention.purge.batch" }))
      .filter((e) => e.resource_id === run.runId)
      .map((e) => JSON.parse(e.reason!) as { class: string; count: number });
    expect(audited.filter((e) => e.class === "note").reduce((s, e) => s + e.count, 0)).toBe(3001);
  });
});
