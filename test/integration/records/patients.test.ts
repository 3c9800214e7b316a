import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sealAppliance, unsealAtStart } from "../../../daemon/keys/index.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn } from "../../helpers/actors.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { asSuperuser, assignCareTeam, expectProblem, openClinic, registerPatient, type Clinic } from "./helpers.js";

/** Patients (demographics, blind-index lookups, ETags, pagination, visibility) and the schedule. */
let app: TestAppliance;
let clinic: Clinic;

beforeAll(async () => {
  app = await startTestAppliance();
  clinic = await openClinic(app, "Northgate Clinic");
});
afterAll(async () => {
  await app?.close();
});

const patientCount = async () => Number((await asSuperuser<{ n: string }>(app, "SELECT count(*) AS n FROM patients"))[0]!.n);

describe("patients", () => {
  it("registers a patient, reads it back with an ETag, and audits both by id only", async () => {
    const body = {
      name: "Harriet Quimby",
      birthDate: "1975-04-11",
      mrn: "NG-100200",
      phone: "+1 617 555 0199",
      email: "harriet.q@example.org",
      address: "12 Aviation Row\nBoston MA",
    };
    const created = await clinic.frontDesk.agent.post("/api/v1/patients").send(body);
    expect(created.status).toBe(201);
    expect(created.headers.etag).toBe('"1"');
    expect(created.headers.location).toBe(`/api/v1/patients/${created.body.id}`);
    expect(created.body).toMatchObject({ ...body, version: 1 });

    const read = await clinic.frontDesk.agent.get(`/api/v1/patients/${created.body.id}`);
    expect(read.status).toBe(200);
    expect(read.headers.etag).toBe('"1"');
    expect(read.headers["cache-control"]).toBe("no-store");
    expect(read.body).toMatchObject(body);

    const events = (await auditEvents(app)).filter((e) => e.patient_id === created.body.id);
    expect(events.map((e) => e.action)).toEqual(["patient.create", "patient.read"]);
    expect(events.every((e) => e.actor_user_id === clinic.frontDesk.user.id && e.resource_id === created.body.id && e.outcome === "success")).toBe(true);
    expect(JSON.stringify(events)).not.toMatch(/Quimby|NG-100200|555 0199|harriet|Aviation|1975-04-11/);
  });

  it("refuses lost updates: 428 without If-Match, 412 with a stale ETag, and the record stays as it was", async () => {
    const p = await registerPatient(clinic, { name: "Bessie Coleman", phone: "+1 312 555 0101" });
    const url = `/api/v1/patients/${p.id}`;
    expectProblem(await clinic.frontDesk.agent.patch(url).send({ phone: "+1 312 555 0102" }), 428, "precondition-required");
    expectProblem(await clinic.frontDesk.agent.patch(url).set("If-Match", "*").send({ phone: "+1 312 555 0102" }), 412, "precondition-failed");
    const first = await clinic.frontDesk.agent.patch(url).set("If-Match", '"1"').send({ phone: "+1 312 555 0102", address: null });
    expect(first.status).toBe(200);
    expect(first.headers.etag).toBe('"2"');
    expect(first.body).toMatchObject({ phone: "+1 312 555 0102", address: null, version: 2 });
    // A second writer who read version 1 does not overwrite the first one's change.
    const stale = await clinic.frontDesk.agent.patch(url).set("If-Match", '"1"').send({ phone: "+1 312 555 0999" });
    expectProblem(stale, 412, "precondition-failed");
    expect(stale.body.currentETag).toBe('"2"');
    expect((await clinic.frontDesk.agent.get(url)).body).toMatchObject({ phone: "+1 312 555 0102", version: 2 });
    expectProblem(await clinic.frontDesk.agent.patch(url).set("If-Match", '"2"').send({}), 400, "invalid-request");
  });

  it("finds patients by MRN or email through blind indexes (email case-insensitive) and keeps an MRN unique per tenant", async () => {
    const p = await registerPatient(clinic, { name: "Amelia Earhart", mrn: "NG-777001", email: "Amelia.E@Example.org" });
    const byMrn = await clinic.frontDesk.agent.post("/api/v1/patients/search").send({ mrn: " NG-777001 " });
    expect(byMrn.status).toBe(200);
    expect(byMrn.body.items).toEqual([expect.objectContaining({ id: p.id, name: "Amelia Earhart", accessible: true })]);
    const byEmail = await clinic.frontDesk.agent.post("/api/v1/patients/search").send({ email: "amelia.e@EXAMPLE.org" });
    expect(byEmail.body.items.map((i: { id: string }) => i.id)).toEqual([p.id]);
    expect((await clinic.frontDesk.agent.post("/api/v1/patients/search").send({ mrn: "NG-000000" })).body.items).toEqual([]);
    expectProblem(await clinic.frontDesk.agent.post("/api/v1/patients/search").send({ mrn: "NG-777001", email: "a@b.org" }), 400, "invalid-request");

    const dup = await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: "Someone Else", mrn: "NG-777001" });
    expectProblem(dup, 409, "conflict");
    const other = await registerPatient(clinic, { name: "Jacqueline Cochran", mrn: "NG-777002" });
    expectProblem(await clinic.frontDesk.agent.patch(`/api/v1/patients/${other.id}`).set("If-Match", '"1"').send({ mrn: "NG-777001" }), 409, "conflict");

    // The index is a keyed digest: the same MRN in another tenant gives an unrelated value.
    const elsewhere = await openClinic(app, "Southgate Clinic");
    const twin = await registerPatient(elsewhere, { name: "Amelia Twin", mrn: "NG-777001" });
    const digests = await asSuperuser<{ id: string; mrn_bidx: string }>(app, "SELECT id, mrn_bidx FROM patients WHERE id = ANY($1)", [[p.id, twin.id]]);
    expect(digests).toHaveLength(2);
    for (const d of digests) expect(d.mrn_bidx).toMatch(/^[0-9a-f]{64}$/);
    expect(digests[0]!.mrn_bidx).not.toBe(digests[1]!.mrn_bidx);
    expectProblem(await elsewhere.frontDesk.agent.get(`/api/v1/patients/${p.id}`), 404, "not-found");
  });

  it("lets front desk see every patient, practitioners only their care team, and break-glass open one with a flag in the trail", async () => {
    const p = await registerPatient(clinic, { name: "Raymonde de Laroche", mrn: "NG-555001" });
    const url = `/api/v1/patients/${p.id}`;
    expect((await clinic.frontDesk.agent.get(url)).status).toBe(200);
    expectProblem(await clinic.otherDoctor.agent.get(url), 403, "forbidden");
    for (const who of [clinic.admin, clinic.owner, clinic.auditor]) expectProblem(await who.agent.get(url), 403, "forbidden");
    const denied = (await auditEvents(app, { action: "access.denied" })).filter((e) => e.actor_user_id === clinic.otherDoctor.user.id);
    expect(denied.length).toBeGreaterThan(0);
    // The read and its event are one statement (readPatient): a refused read writes no read event.
    const readers = async () => (await auditEvents(app, { action: "patient.read" })).filter((e) => e.patient_id === p.id).map((e) => e.actor_user_id);
    expect(await readers()).toEqual([clinic.frontDesk.user.id]);

    // A practitioner finds the patient by MRN but only sees the id: enough to decide on break-glass.
    const found = await clinic.otherDoctor.agent.post("/api/v1/patients/search").send({ mrn: "NG-555001" });
    expect(found.body.items).toEqual([{ id: p.id, accessible: false }]);
    expect((await clinic.otherDoctor.agent.get("/api/v1/patients?limit=100")).body.items.map((x: { id: string }) => x.id)).not.toContain(p.id);

    expectProblem(
      await clinic.otherDoctor.agent.post(`/api/v1/patients/00000000-0000-4000-8000-000000000000/break-glass`).send({ reason: "no such patient at all" }),
      404,
      "not-found",
    );
    const grant = await clinic.otherDoctor.agent.post(`${url}/break-glass`).send({ reason: "cardiac arrest in the waiting room" });
    expect(grant.status).toBe(201);
    expect((await clinic.otherDoctor.agent.get(url)).status).toBe(200);
    const flagged = (await auditEvents(app, { action: "patient.read" })).filter((e) => e.patient_id === p.id && e.actor_user_id === clinic.otherDoctor.user.id);
    expect(flagged).toEqual([expect.objectContaining({ break_glass: true })]);

    // Assigned to the care team, the doctor sees the patient in the list and reads without the flag.
    await assignCareTeam(clinic, p.id);
    expect((await clinic.doctor.agent.get("/api/v1/patients?limit=100")).body.items.map((x: { id: string }) => x.id)).toContain(p.id);
    expect((await clinic.doctor.agent.get(url)).status).toBe(200);
    const own = (await auditEvents(app, { action: "patient.read" })).filter((e) => e.patient_id === p.id && e.actor_user_id === clinic.doctor.user.id);
    expect(own).toEqual([expect.objectContaining({ break_glass: false, outcome: "success" })]);
    expect(await readers()).toEqual([clinic.frontDesk.user.id, clinic.otherDoctor.user.id, clinic.doctor.user.id]);
    // A practitioner who registers a patient joins its care team at once.
    const walkIn = await clinic.doctor.agent.post("/api/v1/patients").send({ name: "Walk-in Patient" });
    expect(walkIn.status).toBe(201);
    expect((await clinic.doctor.agent.get(`/api/v1/patients/${walkIn.body.id}`)).status).toBe(200);
  });

  it("pages with signed cursors and refuses altered cursors and huge page sizes", async () => {
    const t = await openClinic(app, "Paging Clinic");
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await registerPatient(t, { name: `Pager ${i}` })).id);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res: request.Response = await t.frontDesk.agent.get(`/api/v1/patients?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      expect(res.status).toBe(200);
      expect(res.body.items.length).toBeLessThanOrEqual(2);
      seen.push(...res.body.items.map((x: { id: string }) => x.id));
      cursor = res.body.nextCursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual(ids);

    const first = await t.frontDesk.agent.get("/api/v1/patients?limit=2");
    const c = first.body.nextCursor as string;
    const tampered = `${c.slice(0, 5)}${c[5] === "A" ? "B" : "A"}${c.slice(6)}`;
    expectProblem(await t.frontDesk.agent.get(`/api/v1/patients?limit=2&cursor=${encodeURIComponent(tampered)}`), 400, "invalid-request");
    // A cursor of another tenant's (or another person's) listing is not valid here.
    expectProblem(await clinic.frontDesk.agent.get(`/api/v1/patients?limit=2&cursor=${encodeURIComponent(c)}`), 400, "invalid-request");
    for (const limit of ["1000", "1e9", "0", "-5", "ten", "99999999999999999999"])
      expectProblem(await t.frontDesk.agent.get(`/api/v1/patients?limit=${limit}`), 400, "invalid-request");
    expectProblem(await t.frontDesk.agent.get("/api/v1/patients?offset=10"), 400, "invalid-request");
  });

  it("answers bad input with a 4xx problem and changes nothing", async () => {
    const before = await patientCount();
    const post = () => clinic.frontDesk.agent.post("/api/v1/patients");
    const unknown = await post().send({ name: "Eve", ssn: "078-05-1120" });
    expectProblem(unknown, 400, "invalid-request");
    expect(JSON.stringify(unknown.body)).not.toContain("078-05-1120");
    expectProblem(await post().send({ name: 42 }), 400, "invalid-request");
    expectProblem(await post().send({ name: "Eve", birthDate: "1990-02-30" }), 400, "invalid-request");
    expectProblem(await post().send({ name: "Eve", email: "not-an-email" }), 400, "invalid-request");
    expectProblem(await post().send({ name: "x".repeat(201) }), 400, "invalid-request");
    expectProblem(await post().send([{ name: "Eve" }]), 400, "invalid-request");
    expectProblem(await post().set("Content-Type", "application/json").send('{"name":"Eve \\ud800"}'), 400, "invalid-request");
    const invalidUtf8 = Buffer.concat([Buffer.from('{"name":"Eve '), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    expectProblem(await post().set("Content-Type", "application/json").send(invalidUtf8), 400, "invalid-request");
    expectProblem(await post().set("Content-Type", "application/json").send('{"name": "Eve"'), 400, "invalid-request");
    expectProblem(
      await post()
        .set("Content-Type", "application/json")
        .send(JSON.stringify({ name: "Eve", address: "x".repeat(1_100_000) })),
      413,
      "payload-too-large",
    );
    expectProblem(await post().set("Content-Type", "application/x-www-form-urlencoded").send("name=Eve"), 415, "unsupported-media-type");
    expectProblem(await clinic.frontDesk.agent.get("/api/v1/patients/not-a-uuid"), 400, "invalid-request");
    expect(await patientCount()).toBe(before);
  });

  it("never shows a patient whose read event cannot be written, and writes no read event for an unknown patient", async () => {
    const p = await registerPatient(clinic, { name: "Amelia Earhart", mrn: "NG-937001" });
    const url = `/api/v1/patients/${p.id}`;
    expect((await clinic.frontDesk.agent.get(url)).status).toBe(200);
    const readsOf = async (id: string) => (await auditEvents(app, { action: "patient.read" })).filter((e) => e.patient_id === id).length;
    await asSuperuser(app, "REVOKE INSERT ON audit_intake FROM wardkeep_app");
    try {
      const refused = await clinic.frontDesk.agent.get(url);
      expectProblem(refused, 503, "unavailable");
      expect(JSON.stringify(refused.body)).not.toMatch(/Earhart|NG-937001/);
    } finally {
      await asSuperuser(app, "GRANT INSERT ON audit_intake TO wardkeep_app");
    }
    expect(app.logLines.some((l) => l.includes("audit event could not be written") && l.includes('"sqlstate":"42501"'))).toBe(true);
    expect(await readsOf(p.id)).toBe(1);
    // The connection that failed went back to the pool usable: every later read succeeds.
    for (let i = 0; i < 12; i++) expect((await clinic.frontDesk.agent.get(url)).status).toBe(200);
    expect(await readsOf(p.id)).toBe(13);

    const unknown = "00000000-0000-4000-8000-00000000beef";
    expectProblem(await clinic.frontDesk.agent.get(`/api/v1/patients/${unknown}`), 404, "not-found");
    expect(await readsOf(unknown)).toBe(0);
  });

  it("keeps row-level security forced on every records table", async () => {
    const tables = ["patients", "appointments", "notes", "note_versions", "consents", "consent_revocations", "attachments", "legal_holds", "deletion_requests"];
    const rows = await asSuperuser<{ relname: string; relrowsecurity: boolean; relforcerowsecurity: boolean }>(
      app,
      "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = ANY($1) AND relkind = 'r'",
      [tables],
    );
    expect(rows.map((r) => r.relname).sort()).toEqual([...tables].sort());
    for (const r of rows) expect(r, r.relname).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true });
  });
});

describe("schedule", () => {
  const at = (h: number) => new Date(Date.UTC(2031, 0, 6, h)).toISOString();

  it("shows front desk the appointments with patient names and nothing clinical; practitioners see their own and their care team's", async () => {
    const t = await openClinic(app, "Schedule Clinic");
    const mine = await registerPatient(t, { name: "Ida Lewis" });
    const theirs = await registerPatient(t, { name: "Grace Darling" });
    const book = (patientId: string, practitionerId: string, h: number) =>
      t.frontDesk.agent.post("/api/v1/schedule/appointments").send({ patientId, practitionerId, startsAt: at(h), endsAt: at(h + 1) });
    const a1 = await book(mine.id, t.doctor.user.id, 9);
    expect(a1.status).toBe(201);
    expect(a1.body).toEqual({
      id: expect.any(String),
      patientId: mine.id,
      patientName: "Ida Lewis",
      practitionerId: t.doctor.user.id,
      practitionerName: "Dr Grey",
      startsAt: at(9),
      endsAt: at(10),
      status: "booked",
      version: 1,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    });
    const a2 = await book(theirs.id, t.otherDoctor.user.id, 11);
    expect(a2.status).toBe(201);

    const window = `from=${encodeURIComponent(at(0))}&to=${encodeURIComponent(at(23))}`;
    const desk = await t.frontDesk.agent.get(`/api/v1/schedule?${window}`);
    expect(desk.body.items.map((a: { id: string }) => a.id)).toEqual([a1.body.id, a2.body.id]);
    const doc = await t.doctor.agent.get(`/api/v1/schedule?${window}`);
    expect(doc.body.items.map((a: { id: string }) => a.id)).toEqual([a1.body.id]);
    expectProblem(await t.doctor.agent.get(`/api/v1/schedule/appointments/${a2.body.id}`), 403, "forbidden");
    await assignCareTeam(t, theirs.id);
    expect((await t.doctor.agent.get(`/api/v1/schedule?${window}`)).body.items).toHaveLength(2);
    for (const who of [t.admin, t.auditor, t.owner]) expectProblem(await who.agent.get(`/api/v1/schedule?${window}`), 403, "forbidden");
    expectProblem(
      await t.doctor.agent.post("/api/v1/schedule/appointments").send({ patientId: mine.id, practitionerId: t.doctor.user.id, startsAt: at(13), endsAt: at(14) }),
      403,
      "forbidden",
    );

    const listed = (await auditEvents(app, { action: "appointment.list" })).filter((e) => e.tenant_id === t.tenant.id);
    expect(listed.length).toBeGreaterThanOrEqual(5);
    expect(listed.every((e) => e.resource_type === "appointment" && e.patient_id !== null)).toBe(true);

    // Moving an appointment needs the ETag; a bad move is refused and nothing changes.
    const url = `/api/v1/schedule/appointments/${a1.body.id}`;
    expectProblem(await t.frontDesk.agent.patch(url).send({ status: "arrived" }), 428, "precondition-required");
    expectProblem(
      await t.frontDesk.agent
        .patch(url)
        .set("If-Match", '"1"')
        .send({ endsAt: at(8) }),
      400,
      "invalid-request",
    );
    const moved = await t.frontDesk.agent
      .patch(url)
      .set("If-Match", '"1"')
      .send({ startsAt: at(10), endsAt: at(11), status: "arrived" });
    expect(moved.status).toBe(200);
    expect(moved.body).toMatchObject({ startsAt: at(10), status: "arrived", version: 2 });
    expectProblem(await t.frontDesk.agent.patch(url).set("If-Match", '"1"').send({ status: "completed" }), 412, "precondition-failed");
  });

  it("refuses impossible appointments, practitioners who are not, and windows over 92 days", async () => {
    const p = await registerPatient(clinic);
    const post = (body: object) => clinic.frontDesk.agent.post("/api/v1/schedule/appointments").send(body);
    expectProblem(await post({ patientId: p.id, practitionerId: clinic.doctor.user.id, startsAt: at(10), endsAt: at(9) }), 400, "invalid-request");
    expectProblem(await post({ patientId: p.id, practitionerId: clinic.doctor.user.id, startsAt: at(1), endsAt: "2031-01-08T01:00:00Z" }), 400, "invalid-request");
    expectProblem(await post({ patientId: p.id, practitionerId: clinic.frontDesk.user.id, startsAt: at(9), endsAt: at(10) }), 400, "invalid-request");
    expectProblem(await post({ patientId: p.id, practitionerId: clinic.doctor.user.id, startsAt: "tomorrow", endsAt: at(10) }), 400, "invalid-request");
    expectProblem(await post({ patientId: "00000000-0000-4000-8000-000000000000", practitionerId: clinic.doctor.user.id, startsAt: at(9), endsAt: at(10) }), 404, "not-found");
    expectProblem(await post({ patientId: p.id, practitionerId: clinic.doctor.user.id, startsAt: at(9), endsAt: at(10), room: "4" }), 400, "invalid-request");
    expectProblem(await clinic.frontDesk.agent.get(`/api/v1/schedule?from=2031-01-01T00:00:00Z&to=2031-06-01T00:00:00Z`), 400, "invalid-request");
    expect(Number((await asSuperuser<{ n: string }>(app, "SELECT count(*) AS n FROM appointments WHERE patient_id = $1", [p.id]))[0]!.n)).toBe(0);
  });
});

describe("sealed appliance", () => {
  it("answers 503 on records routes while sealed, and serves again once unsealed", async () => {
    const p = await registerPatient(clinic);
    const other = await signIn(app, { role: "front_desk", tenantId: (await createTenant(app, "Sealed Clinic")).id });
    const before = (await clinic.frontDesk.agent.get(`/api/v1/patients/${p.id}`)).body;
    sealAppliance(app.ctx, "test");
    try {
      for (const res of [
        await clinic.frontDesk.agent.get(`/api/v1/patients/${p.id}`),
        await clinic.frontDesk.agent.get("/api/v1/schedule"),
        await request(app.baseUrl).get("/api/v1/patients").ca(app.caPem),
        await clinic.doctor.agent.post(`/api/v1/patients/${p.id}/attachments`).set("Content-Type", "application/pdf").send(Buffer.from("%PDF")),
      ]) {
        expectProblem(res, 503, "sealed");
        expect(res.headers["retry-after"]).toBe("30");
      }
    } finally {
      await unsealAtStart(app.ctx);
    }
    // Sealing emptied the data-key cache: this read finds its key in a transaction of its own.
    expect(app.ctx.rootKey.cachedDataKeyCount).toBe(0);
    const after = await clinic.frontDesk.agent.get(`/api/v1/patients/${p.id}`);
    expect(after.status).toBe(200);
    expect(after.body).toEqual(before);
    expect((await other.agent.get("/api/v1/patients")).body.items).toEqual([]);
  });
});
