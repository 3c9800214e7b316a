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
      // It asks for the patient's id and the policy's facts, not the patient's encrypted fields.
      expect(wire.columns).toContain("assigned");
      expect(wire.columns.filter((c) => c.endsWith("_enc") || c.endsWith("_bidx"))).toEqual([]);
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

describe("group commit: concurrent reads and note writes share one transaction, each answered after its own commit", () => {
  /** Events of one request, wherever the chainer has got to (one statement: one snapshot of both tables). */
  const eventsOf = async (requestId: string) =>
    (
      await asSuperuser<{ n: number }>(
        app,
        "SELECT count(*)::int AS n FROM (SELECT canonical::jsonb->>'request_id' AS r FROM audit_events UNION ALL SELECT request_id FROM audit_intake) e WHERE r = $1",
        [requestId],
      )
    )[0]!.n;
  const notesWith = async (ids: string[]) => (await asSuperuser<{ n: number }>(app, "SELECT count(*)::int AS n FROM notes WHERE id = ANY($1::uuid[])", [ids]))[0]!.n;
  let other: { doctor: Actor; patientId: string };

  beforeAll(async () => {
    // A second tenant: a group holds both tenants' statements, each under its own scope.
    const second = await openClinic(app, "Second Group Clinic");
    const id = (await registerPatient(second, { name: "Dorothy Levitt" })).id;
    await assignCareTeam(second, id);
    other = { doctor: { userId: second.doctor.user.id, role: "practitioner", tenantId: second.tenant.id, via: "session", mfaVerifiedAt: new Date() }, patientId: id };
    // Both doctors' keys in this process's cache: their note writes take the one-statement path.
    await createNote(app.ctx, doctor, patientId, { kind: "note", body: "warm" }, meta);
    await createNote(app.ctx, other.doctor, other.patientId, { kind: "note", body: "warm" }, meta);
  });

  /**
   * One transaction in flight at a time, the first request held inside it by a lock on the audit
   * intake: the requests fired meanwhile wait and go out together as one group when it commits.
   */
  async function behindOneHeldRequest<T>(fire: () => Promise<T>[]): Promise<{ first: unknown; settled: PromiseSettledResult<T>[] }> {
    const pool = app.ctx.db.app;
    const configured = pool.options.groupCommit;
    pool.setGroupCommit({ maxMembers: 16, maxInFlight: 1, stallMs: 60_000 });
    const holder = new pg.Client({ connectionString: app.db.superuserUrl });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      await holder.query("LOCK TABLE audit_intake IN SHARE MODE");
      const first = getPatient(app.ctx, doctor, patientId, { ...meta, requestId: "group-first" });
      await new Promise((r) => setTimeout(r, 150));
      const fired = fire();
      await new Promise((r) => setTimeout(r, 150));
      await holder.query("COMMIT");
      return { first: await first, settled: await Promise.allSettled(fired) };
    } finally {
      pool.setGroupCommit(configured);
      await holder.end();
    }
  }

  it("sends the waiting requests of two tenants in one transaction, each getting its own rows and its own audit event", async () => {
    const before = app.ctx.db.app.groupCommitStats();
    const { first, settled } = await behindOneHeldRequest(() => [
      getPatient(app.ctx, doctor, patientId, { ...meta, requestId: "group-read-a" }).then((p) => p.name),
      createNote(app.ctx, doctor, patientId, { kind: "note", body: "grouped note" }, { ...meta, requestId: "group-write-a" }).then((n) => n.id),
      getPatient(app.ctx, other.doctor, other.patientId, { ...meta, requestId: "group-read-b" }).then((p) => p.name),
      // Tenant B's doctor asking for tenant A's patient, inside the same transaction: not found.
      getPatient(app.ctx, other.doctor, patientId, { ...meta, requestId: "group-read-cross" }).then((p) => p.name),
    ]);
    expect((first as { name: string }).name).toBe("Bessie Stringfield");
    expect(settled.map((s) => s.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "rejected"]);
    expect((settled[0] as PromiseFulfilledResult<string>).value).toBe("Bessie Stringfield");
    expect((settled[2] as PromiseFulfilledResult<string>).value).toBe("Dorothy Levitt");
    expect((settled[3] as PromiseRejectedResult).reason).toMatchObject({ status: 404 });
    const noteId = (settled[1] as PromiseFulfilledResult<string>).value;
    expect((await getNote(app.ctx, doctor, patientId, noteId, meta)).body).toBe("grouped note");
    // Two transactions for five requests: the held one alone, the four that waited together.
    const after = app.ctx.db.app.groupCommitStats();
    expect({ transactions: after.transactions - before.transactions, members: after.members - before.members, retried: after.retried - before.retried }).toEqual({
      transactions: 2,
      members: 5,
      retried: 0,
    });
    for (const requestId of ["group-first", "group-read-a", "group-write-a", "group-read-b"]) expect(await eventsOf(requestId), requestId).toBe(1);
    expect(await eventsOf("group-read-cross")).toBe(0);
  });

  it("runs a group in which one member fails again member by member: the neighbours are answered and written once, the failing one alone gets its 503", async () => {
    // A constraint added for the test refuses one request's audit event, as a revoked grant would.
    await asSuperuser(app, "ALTER TABLE audit_intake ADD CONSTRAINT group_test_refuses CHECK (request_id IS DISTINCT FROM 'group-refused') NOT VALID");
    try {
      const before = app.ctx.db.app.groupCommitStats();
      const { settled } = await behindOneHeldRequest(() => [
        getPatient(app.ctx, doctor, patientId, { ...meta, requestId: "retry-read-a" }).then((p) => p.name),
        createNote(app.ctx, doctor, patientId, { kind: "note", body: "neighbour of a failure" }, { ...meta, requestId: "retry-write-a" }).then((n) => n.id),
        getPatient(app.ctx, doctor, patientId, { ...meta, requestId: "group-refused" }).then((p) => p.name),
        createNote(app.ctx, other.doctor, other.patientId, { kind: "note", body: "other tenant's neighbour" }, { ...meta, requestId: "retry-write-b" }).then((n) => n.id),
      ]);
      expect(settled.map((s) => s.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
      expect((settled[0] as PromiseFulfilledResult<string>).value).toBe("Bessie Stringfield");
      expect((settled[2] as PromiseRejectedResult).reason).toMatchObject({ status: 503 });
      const noteIds = [(settled[1] as PromiseFulfilledResult<string>).value, (settled[3] as PromiseFulfilledResult<string>).value];
      expect((await getNote(app.ctx, doctor, patientId, noteIds[0]!, meta)).body).toBe("neighbour of a failure");
      expect((await getNote(app.ctx, other.doctor, other.patientId, noteIds[1]!, meta)).body).toBe("other tenant's neighbour");
      expect(await notesWith(noteIds)).toBe(2);
      // The group was rolled back whole and each of its four members ran once more, alone.
      const after = app.ctx.db.app.groupCommitStats();
      expect(after.retried - before.retried).toBe(4);
      expect(after.transactions - before.transactions).toBe(2);
      for (const requestId of ["retry-read-a", "retry-write-a", "retry-write-b"]) expect(await eventsOf(requestId), requestId).toBe(1);
      expect(await eventsOf("group-refused")).toBe(0);
    } finally {
      await asSuperuser(app, "ALTER TABLE audit_intake DROP CONSTRAINT group_test_refuses");
    }
  });

  it("answers every member of a group whose connection is lost with the 503 that admits an unknown outcome, and runs none of them again", async () => {
    const notesBefore = await asSuperuser<{ n: number }>(app, "SELECT count(*)::int AS n FROM notes WHERE patient_id = $1", [patientId]);
    // The group's first statement waits on the patient's key lock, held here, while its backend is ended.
    const keyHolder = new pg.Client({ connectionString: app.db.superuserUrl });
    await keyHolder.connect();
    try {
      await keyHolder.query("BEGIN");
      await keyHolder.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCKS.dataKey, `patient/${patientId}`]);
      const before = app.ctx.db.app.groupCommitStats();
      const held = behindOneHeldRequest(() =>
        ["lost-write-1", "lost-write-2", "lost-write-3"].map((requestId) => createNote(app.ctx, doctor, patientId, { kind: "note", body: requestId }, { ...meta, requestId })),
      );
      let ended = false;
      for (let i = 0; i < 100 && !ended; i++) {
        const [waiting] = await asSuperuser<{ pid: number }>(app, "SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory' AND usename = 'wardkeep_app'");
        if (waiting) ended = (await asSuperuser(app, "SELECT pg_terminate_backend($1)", [waiting.pid])).length === 1;
        else await new Promise((r) => setTimeout(r, 50));
      }
      expect(ended).toBe(true);
      const { settled } = await held;
      for (const s of settled) expect((s as PromiseRejectedResult).reason).toMatchObject({ status: 503, detail: expect.stringContaining("read it back") });
      const after = app.ctx.db.app.groupCommitStats();
      expect({ members: after.members - before.members, retried: after.retried - before.retried }).toEqual({ members: 4, retried: 0 });
    } finally {
      await keyHolder.query("COMMIT").catch(() => undefined);
      await keyHolder.end();
    }
    expect(await asSuperuser<{ n: number }>(app, "SELECT count(*)::int AS n FROM notes WHERE patient_id = $1", [patientId])).toEqual(notesBefore);
    for (const requestId of ["lost-write-1", "lost-write-2", "lost-write-3"]) expect(await eventsOf(requestId)).toBe(0);
  });
});

describe("a note write's data key, locked and read with the patient check", () => {
  // Pools of the usual size: the rotation (or a read) and the write must not wait for one connection.
  let big: TestAppliance;
  let bigClinic: Clinic;
  beforeAll(async () => {
    big = await startTestAppliance();
    bigClinic = await openClinic(big, "Rotation Clinic");
  });
  afterAll(async () => {
    await big?.close();
  });

  it("does not hold later requests behind a grouped write that waits on its patient's key lock (past the stall bound)", async () => {
    const [locked, free] = [(await registerPatient(bigClinic, { name: "Camille du Gast" })).id, (await registerPatient(bigClinic, { name: "Joan Newton Cuneo" })).id];
    await Promise.all([assignCareTeam(bigClinic, locked), assignCareTeam(bigClinic, free)]);
    const doctor: Actor = { userId: bigClinic.doctor.user.id, role: "practitioner", tenantId: bigClinic.tenant.id, via: "session", mfaVerifiedAt: new Date() };
    await createNote(big.ctx, doctor, locked, { kind: "note", body: "key cached" }, meta);
    const pool = big.ctx.db.app;
    const configured = pool.options.groupCommit;
    pool.setGroupCommit({ maxMembers: 16, maxInFlight: 1, stallMs: 50 });
    const keyHolder = new pg.Client({ connectionString: big.db.superuserUrl });
    await keyHolder.connect();
    try {
      await keyHolder.query("BEGIN");
      await keyHolder.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCKS.dataKey, `patient/${locked}`]);
      let released = false;
      const write = createNote(big.ctx, doctor, locked, { kind: "note", body: "behind a key lock" }, meta);
      await new Promise((r) => setTimeout(r, 100));
      // Sent while the only grouped transaction allowed in flight waits on the lock.
      const read = await getPatient(big.ctx, doctor, free, meta).then((p) => ({ name: p.name, beforeRelease: !released }));
      expect(read).toEqual({ name: "Joan Newton Cuneo", beforeRelease: true });
      released = true;
      await keyHolder.query("COMMIT");
      expect((await getNote(big.ctx, doctor, locked, (await write).id, meta)).body).toBe("behind a key lock");
    } finally {
      pool.setGroupCommit(configured);
      await keyHolder.query("COMMIT").catch(() => undefined);
      await keyHolder.end();
    }
  });

  it("sends a request that finds a grouped transaction out at once while the daemon has CPU to spare, and makes it wait for a group while the event loop is busy", async () => {
    const [locked, free] = [(await registerPatient(bigClinic, { name: "Dorothy Levitt" })).id, (await registerPatient(bigClinic, { name: "Violette Cordery" })).id];
    await Promise.all([assignCareTeam(bigClinic, locked), assignCareTeam(bigClinic, free)]);
    const doctor: Actor = { userId: bigClinic.doctor.user.id, role: "practitioner", tenantId: bigClinic.tenant.id, via: "session", mfaVerifiedAt: new Date() };
    await createNote(big.ctx, doctor, locked, { kind: "note", body: "key cached" }, meta);
    const pool = big.ctx.db.app;
    const configured = pool.options.groupCommit;
    // No stall bound to speak of: only the busy rule can let the read past the held write.
    pool.setGroupCommit({ maxMembers: 16, maxInFlight: 1, stallMs: 60_000, busyThreshold: 0.5 });
    const keyHolder = new pg.Client({ connectionString: big.db.superuserUrl });
    await keyHolder.connect();
    const outcome = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<"still waiting">((r) => setTimeout(() => r("still waiting"), ms))]);
    try {
      await keyHolder.query("BEGIN");
      await keyHolder.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCKS.dataKey, `patient/${locked}`]);
      const before = pool.groupCommitStats();
      const write = createNote(big.ctx, doctor, locked, { kind: "note", body: "held by a key lock" }, meta);
      await new Promise((r) => setTimeout(r, 100));
      // An idle event loop: the read goes out alone, past the grouped transaction that is out.
      expect(
        await outcome(
          getPatient(big.ctx, doctor, free, meta).then((p) => p.name),
          2_000,
        ),
      ).toBe("Violette Cordery");
      // A busy one (half a second of work on it): the next read waits for the write's transaction to end.
      const until = performance.now() + 500;
      while (performance.now() < until);
      const waiting = getPatient(big.ctx, doctor, free, meta).then((p) => p.name);
      expect(await outcome(waiting, 300)).toBe("still waiting");
      await keyHolder.query("COMMIT");
      expect(await waiting).toBe("Violette Cordery");
      expect((await getNote(big.ctx, doctor, locked, (await write).id, meta)).body).toBe("held by a key lock");
      const after = pool.groupCommitStats();
      // Three requests, three transactions: none was grouped, and none ran twice.
      expect({ transactions: after.transactions - before.transactions, members: after.members - before.members, retried: after.retried - before.retried }).toEqual({
        transactions: 3,
        members: 3,
        retried: 0,
      });
    } finally {
      pool.setGroupCommit(configured);
      await keyHolder.query("COMMIT").catch(() => undefined);
      await keyHolder.end();
    }
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
