import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Actor } from "../../../daemon/kernel/actor.js";
import { LOCKS } from "../../../daemon/keys/keystore.js";
import { readFieldHeader } from "../../../daemon/keys/field-cipher.js";
import { rotateDataKey } from "../../../daemon/keys/index.js";
import { createNote, getNote } from "../../../daemon/records/notes/service.js";
import { getPatient } from "../../../daemon/records/patients/service.js";
import { QUIET_BACKGROUND, startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { recordPoolWire } from "../../helpers/wire.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { asSuperuser, assignCareTeam, openClinic, registerPatient, type Clinic } from "./helpers.js";

/**
 * What the hot paths cost in PostgreSQL round trips (docs/records.md, Performance), counted from
 * the protocol on an appliance whose pools hold one connection each, and the write's key lock
 * taken inside the patient check.
 */
let app: TestAppliance;
let clinic: Clinic;
let patientId: string;
let doctor: Actor;
const meta = { sourceIp: "127.0.0.1", userAgent: "round-trips test", requestId: null };

beforeAll(async () => {
  app = await startTestAppliance({
    env: { WARDKEEP_DATABASE_POOL_MAX: "1", ...QUIET_BACKGROUND },
  });
  clinic = await openClinic(app, "Round Trip Clinic");
  patientId = (await registerPatient(clinic, { name: "Bessie Stringfield" })).id;
  await assignCareTeam(clinic, patientId);
  doctor = { userId: clinic.doctor.user.id, role: "practitioner", tenantId: clinic.tenant.id, via: "session", mfaVerifiedAt: new Date() };
});
afterAll(async () => {
  await app?.close();
});

describe("round trips of the records hot paths", () => {
  it("reads a patient in one round trip and writes a note in one once the patient's key is cached (two before)", async () => {
    const { wire, close } = await recordPoolWire(app.ctx.db, "app");
    try {
      // Warm: data keys cached, statements prepared on the connection.
      for (let i = 0; i < 3; i++) {
        await getPatient(app.ctx, doctor, patientId, meta);
        await createNote(app.ctx, doctor, patientId, { kind: "note", body: `warm-up ${i}` }, meta);
      }
      wire.reset();
      expect((await getPatient(app.ctx, doctor, patientId, meta)).name).toBe("Bessie Stringfield");
      expect(wire.roundTrips, wire.statements.join(" | ")).toBe(1);
      // Prepared on the connection: the read sent no Parse, only Bind/Execute.
      expect(wire.statements).toEqual([]);
      wire.reset();
      const note = await createNote(app.ctx, doctor, patientId, { kind: "note", body: "One round trip" }, meta);
      // The check, the key's lock and version, the note, its audit event: one statement, with BEGIN and COMMIT.
      expect(wire.roundTrips, wire.statements.join(" | ")).toBe(1);
      expect((await getNote(app.ctx, doctor, patientId, note.id, meta)).body).toBe("One round trip");

      // A patient whose key is not in this process's cache: two, the key read under its lock.
      const fresh = (await registerPatient(clinic, { name: "Hellé Nice" })).id;
      await assignCareTeam(clinic, fresh);
      app.ctx.rootKey.evictDataKeys(() => true);
      wire.reset();
      const first = await createNote(app.ctx, doctor, fresh, { kind: "note", body: "first under a new key" }, meta);
      expect(wire.roundTrips, wire.statements.join(" | ")).toBe(2);
      wire.reset();
      await createNote(app.ctx, doctor, fresh, { kind: "note", body: "second" }, meta);
      expect(wire.roundTrips, wire.statements.join(" | ")).toBe(1);
      expect((await getNote(app.ctx, doctor, fresh, first.id, meta)).body).toBe("first under a new key");
    } finally {
      await close();
    }
  });
});

describe("the one-round-trip note write refuses as the two-round-trip one does", () => {
  const notesOf = async (id: string) => (await asSuperuser<{ n: number }>(app, "SELECT count(*)::int AS n FROM notes WHERE patient_id = $1", [id]))[0]!.n;
  const createEventsOf = async (id: string) => (await auditEvents(app, { action: "note.create" })).filter((e) => e.patient_id === id).length;

  it("writes nothing for a practitioner off the care team (403), an unknown patient (404) or when the audit event cannot be written (503)", async () => {
    // The doctor's writes put the patient's key in this process's cache: the next writes take the one-trip path.
    await createNote(app.ctx, doctor, patientId, { kind: "note", body: "cached" }, meta);
    const notes = await notesOf(patientId);
    const events = await createEventsOf(patientId);

    const stranger: Actor = { userId: clinic.otherDoctor.user.id, role: "practitioner", tenantId: clinic.tenant.id, via: "session", mfaVerifiedAt: new Date() };
    await expect(createNote(app.ctx, stranger, patientId, { kind: "note", body: "not my patient" }, meta)).rejects.toMatchObject({ status: 403 });
    const unknown = "00000000-0000-4000-8000-00000000beef";
    await expect(createNote(app.ctx, doctor, unknown, { kind: "note", body: "nobody" }, meta)).rejects.toMatchObject({ status: 404 });

    await asSuperuser(app, "REVOKE INSERT ON audit_intake FROM wardkeep_app");
    try {
      await expect(createNote(app.ctx, doctor, patientId, { kind: "note", body: "unaudited" }, meta)).rejects.toMatchObject({ status: 503 });
    } finally {
      await asSuperuser(app, "GRANT INSERT ON audit_intake TO wardkeep_app");
    }
    expect(await notesOf(patientId)).toBe(notes);
    expect(await createEventsOf(patientId)).toBe(events);
    // And the path still writes, with its event, once the grant is back.
    const note = await createNote(app.ctx, doctor, patientId, { kind: "note", body: "audited again" }, meta);
    expect((await getNote(app.ctx, doctor, patientId, note.id, meta)).body).toBe("audited again");
    expect(await notesOf(patientId)).toBe(notes + 1);
    expect(await createEventsOf(patientId)).toBe(events + 1);
  });
});

describe("a note write's data key, locked and read with the patient check", () => {
  // Pools of the usual size: the rotation and the write must not wait for one connection.
  let big: TestAppliance;
  let bigClinic: Clinic;
  beforeAll(async () => {
    big = await startTestAppliance();
    bigClinic = await openClinic(big, "Rotation Clinic");
  });
  afterAll(async () => {
    await big?.close();
  });

  it("writes a note that waited behind a rotation of the patient's key under the version the rotation made", async () => {
    const app = big;
    const patientId = (await registerPatient(bigClinic, { name: "Adeline Van Buren" })).id;
    await assignCareTeam(bigClinic, patientId);
    const doctor: Actor = { userId: bigClinic.doctor.user.id, role: "practitioner", tenantId: bigClinic.tenant.id, via: "session", mfaVerifiedAt: new Date() };
    const keyId = `patient/${patientId}`;
    const versionOf = async (noteId: string) => {
      const [row] = await asSuperuser<{ body_enc: Buffer }>(app, "SELECT body_enc FROM note_versions WHERE note_id = $1", [noteId]);
      return readFieldHeader(row!.body_enc).keyVersion;
    };
    const before = await versionOf((await createNote(app.ctx, doctor, patientId, { kind: "note", body: "before the rotation" }, meta)).id);
    // Hold the key's lock exclusively, queue a rotation behind it, then the note write behind that.
    const holder = new pg.Client({ connectionString: app.db.superuserUrl });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      await holder.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCKS.dataKey, keyId]);
      const rotation = rotateDataKey(app.ctx, keyId);
      await new Promise((r) => setTimeout(r, 200));
      const writer = createNote(app.ctx, doctor, patientId, { kind: "note", body: "after the rotation" }, meta);
      await new Promise((r) => setTimeout(r, 200));
      await holder.query("COMMIT");
      expect(await rotation).toMatchObject({ from: before, to: before + 1, rotated: true });
      const note = await writer;
      // Its statement began before the rotation committed; the key it locked and read is still the new one.
      expect(await versionOf(note.id)).toBe(before + 1);
      expect((await getNote(app.ctx, doctor, patientId, note.id, meta)).body).toBe("after the rotation");
    } finally {
      await holder.end();
    }
  });
});
