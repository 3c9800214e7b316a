import { createPublicKey, verify } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inScope } from "../../../daemon/db/sql.js";
import { purgeTenant } from "../../../daemon/retention/index.js";
import { lowerBackendPriority, withPurgePool } from "../../../daemon/retention/service.js";
import { signIn, signInWithPassword, type SignedIn } from "../../helpers/actors.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { TestClock } from "../../helpers/clock.js";
import { asSuperuser, assignCareTeam, expectProblem, openClinic, registerPatient, type Clinic } from "../records/helpers.js";

const YEAR = 365 * 86_400_000;
let app: TestAppliance;
let clinic: Clinic;
let owner: SignedIn;
const clock = new TestClock();
const patients: { kept: string; held: string } = { kept: "", held: "" };
const noteIds: { kept: string[]; held: string[] } = { kept: [], held: [] };

beforeAll(async () => {
  // No job runner: the clock moves by years here, and a scheduled job that fires after a jump acts on it as it should
  // (inactive-users would deactivate every account unused for 8 years), and a full run saw the sign-ins after the
  // jump refused as invalid credentials, the answer an inactive account gets.
  // The purge is driven by the tests themselves (purgeTenant).
  app = await startTestAppliance({ clock, env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_RETENTION_BATCH_SIZE: "2", WARDKEEP_JOBS_ENABLED: "false" } });
  clinic = await openClinic(app, "Retention General");
  owner = clinic.owner;
  for (const which of ["kept", "held"] as const) {
    const p = await registerPatient(clinic);
    patients[which] = p.id;
    await assignCareTeam(clinic, p.id);
    for (let i = 0; i < (which === "kept" ? 3 : 2); i++) {
      const res = await clinic.doctor.agent.post(`/api/v1/patients/${p.id}/notes`).send({ body: `Follow-up visit ${i}` });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      noteIds[which].push(res.body.id);
    }
  }
  // The patients themselves stay (their tombstoning and crypto-shredding is tested in lifecycle.test.ts).
  const keep = await owner.agent.put("/api/v1/retention/rules/patient").send({ periodDays: 36500 });
  expect(keep.status, JSON.stringify(keep.body)).toBe(200);
  const hold = await clinic.admin.agent.post(`/api/v1/patients/${patients.held}/legal-holds`).send({ reason: "Litigation hold, matter 12-7" });
  expect(hold.status, JSON.stringify(hold.body)).toBe(201);
});
afterAll(async () => {
  await app?.close();
});

/** Everyone signs in again after the clock jumps (sessions have an absolute lifetime). */
async function freshOwner(): Promise<SignedIn> {
  owner = await signIn(app, { role: "owner", tenantId: clinic.tenant.id });
  for (const who of ["doctor", "auditor", "admin"] as const)
    clinic[who] = await signInWithPassword(app, { email: clinic[who].user.email, password: clinic[who].password, totpSecret: clinic[who].totpSecret });
  return owner;
}

async function notesLeft(): Promise<string[]> {
  const rows = await asSuperuser<{ id: string }>(app, "SELECT id::text FROM notes WHERE tenant_id = $1 ORDER BY id", [clinic.tenant.id]);
  return rows.map((r) => r.id);
}

describe("retention rules", () => {
  it("start from the configured defaults: notes 6 years, audio 1 year, sessions and invites 30 days", async () => {
    const res = await owner.agent.get("/api/v1/retention/rules");
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const byClass = Object.fromEntries(res.body.rules.map((r: { recordClass: string }) => [r.recordClass, r]));
    expect(byClass.note).toMatchObject({ periodDays: 2192, trigger: "creation", source: "default" });
    expect(byClass.audio).toMatchObject({ periodDays: 365, source: "default" });
    expect(byClass.session).toMatchObject({ periodDays: 30, trigger: "expiry" });
    expect(byClass.invite).toMatchObject({ periodDays: 30, trigger: "expiry" });
    expect((await owner.agent.get("/api/v1/retention/preview")).body.total).toBe(0);
  });

  it("refuses a period shorter than the legal minimum the tenant entered, and keeps that minimum", async () => {
    const ok = await owner.agent.put("/api/v1/retention/rules/note").send({ periodDays: 2600, legalMinimumDays: 2557, legalBasis: "State law: 7 years after the last encounter" });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.rule).toMatchObject({ periodDays: 2600, legalMinimumDays: 2557, source: "tenant" });
    const short = await owner.agent.put("/api/v1/retention/rules/note").send({ periodDays: 2192 });
    expectProblem(short, 400, "invalid-request");
    expect(short.body.detail).toBe("a note rule of 2192 days is shorter than the legal minimum of 2557 days entered for this tenant");
    expect((await owner.agent.get("/api/v1/retention/rules")).body.rules.find((r: { recordClass: string }) => r.recordClass === "note").periodDays).toBe(2600);
    // Auditors read the register but do not change it.
    expectProblem(await clinic.auditor.agent.put("/api/v1/retention/rules/note").send({ periodDays: 3000 }), 403, "forbidden");
  });
});

describe("the purge, years later", () => {
  it("destroys nothing while a tenant-wide hold stands, and the release is audited with its reason", async () => {
    clock.advance(8 * YEAR);
    await freshOwner();
    const hold = await owner.agent.post("/api/v1/retention/holds").send({ recordClass: null, reason: "Regulator inquiry 2031-4" });
    expect(hold.status, JSON.stringify(hold.body)).toBe(201);
    expect((await owner.agent.get("/api/v1/retention/preview")).body.classes.find((c: { recordClass: string }) => c.recordClass === "note")).toMatchObject({
      wouldPurge: 0,
      heldBack: 5,
    });
    const run = await purgeTenant(app.ctx, clinic.tenant.id);
    expect(run).toMatchObject({ destroyed: 0, finished: true });
    expect(await notesLeft()).toHaveLength(5);
    await owner.stepUp();
    const released = await owner.agent.post(`/api/v1/retention/holds/${hold.body.id}/release`).send({ reason: "Inquiry closed" });
    expect(released.status, JSON.stringify(released.body)).toBe(200);
    expect(released.body).toMatchObject({ releaseReason: "Inquiry closed", releasedBy: owner.user.id });
    expectProblem(await owner.agent.post(`/api/v1/retention/holds/${hold.body.id}/release`).send({ reason: "again" }), 409, "conflict");
    const events = await auditEvents(app, { action: "retention.hold.release" });
    expect(events.map((e) => [e.resource_id, e.reason, e.actor_user_id])).toContainEqual([hold.body.id, "Inquiry closed", owner.user.id]);
  });

  it("purges expired notes in batches, skips a patient under legal hold, resumes a stopped run without counting twice, and signs a certificate auditors can verify", async () => {
    const preview = await owner.agent.get("/api/v1/retention/preview");
    expect(preview.body.classes.find((c: { recordClass: string }) => c.recordClass === "note")).toMatchObject({ wouldPurge: 3, heldBack: 2 });

    // Stopped after one batch of two: the committed batch stays counted.
    const partial = await purgeTenant(app.ctx, clinic.tenant.id, { maxBatches: 1 });
    expect(partial.finished).toBe(false);
    expect(await notesLeft()).toHaveLength(3);
    const resumed = await purgeTenant(app.ctx, clinic.tenant.id);
    expect(resumed.runId).toBe(partial.runId);
    expect(resumed.finished).toBe(true);
    expect(await notesLeft()).toEqual([...noteIds.held].sort());

    const runs = await clinic.auditor.agent.get("/api/v1/retention/runs");
    expect(runs.status, JSON.stringify(runs.body)).toBe(200);
    const run = runs.body.runs.find((r: { id: string }) => r.id === partial.runId);
    expect(run).toMatchObject({ status: "finished", certified: true, counts: { note: { count: 3, batches: 2 } } });

    // The auditor verifies the certificate with nothing but node:crypto and the audit trail.
    const cert = await clinic.auditor.agent.get(`/api/v1/retention/runs/${partial.runId}/certificate`);
    expect(cert.status, JSON.stringify(cert.body)).toBe(200);
    const key = createPublicKey({ key: Buffer.from(cert.body.publicKeySpki, "base64"), format: "der", type: "spki" });
    expect(verify(null, Buffer.from(cert.body.certificate, "utf8"), key, Buffer.from(cert.body.signature, "base64"))).toBe(true);
    const tampered = cert.body.certificate.replace('"count":3', '"count":2');
    expect(verify(null, Buffer.from(tampered, "utf8"), key, Buffer.from(cert.body.signature, "base64"))).toBe(false);
    const body = JSON.parse(cert.body.certificate);
    expect(body).toMatchObject({ format: "wardkeep-disposition-certificate/2", runId: partial.runId, tenantId: clinic.tenant.id, destroyed: { note: { count: 3, batches: 2 } } });
    const batches = (await auditEvents(app, { action: "retention.purge.batch" })).filter((e) => e.resource_id === partial.runId) as { reason: string }[];
    const perClass: Record<string, number> = {};
    for (const b of batches.map((e) => JSON.parse(e.reason) as { class: string; count: number })) perClass[b.class] = (perClass[b.class] ?? 0) + b.count;
    for (const [cls, c] of Object.entries(body.destroyed as Record<string, { count: number }>)) expect(perClass[cls] ?? 0).toBe(c.count);
    // The kept patient's notes are gone for the clinician too; the held patient's remain readable.
    const keptNotes = await clinic.doctor.agent.get(`/api/v1/patients/${patients.kept}/notes`);
    expect(keptNotes.status).toBe(200);
    expect(keptNotes.body.items).toEqual([]);
    const heldNotes = await clinic.doctor.agent.get(`/api/v1/patients/${patients.held}/notes`);
    expect(heldNotes.body.items.map((n: { id: string }) => n.id).sort()).toEqual([...noteIds.held].sort());
  });

  it("asks for the count first, and step-up, when a rule change would purge on the next run; the change is audited with before and after", async () => {
    const res = await clinic.doctor.agent.post(`/api/v1/patients/${patients.kept}/notes`).send({ body: "New visit" });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    clock.advance(3 * 86_400_000);
    await freshOwner();
    const unconfirmed = await owner.agent.put("/api/v1/retention/rules/note").send({ periodDays: 1, legalMinimumDays: null });
    expectProblem(unconfirmed, 409, "retention-purge-unconfirmed");
    expect(unconfirmed.body.preview.classes.find((c: { recordClass: string }) => c.recordClass === "note")).toMatchObject({ wouldPurge: 1, heldBack: 2 });
    const confirmed = await owner.agent.put("/api/v1/retention/rules/note").send({ periodDays: 1, legalMinimumDays: null, confirmPurgeCount: 1 });
    expect(confirmed.status, JSON.stringify(confirmed.body)).toBe(200);
    const change = await auditEvents(app, { action: "retention.rule.change" });
    expect(change.map((c) => JSON.parse(c.reason!))).toContainEqual({
      before: { trigger: "creation", periodDays: 2600, legalMinimumDays: 2557, source: "tenant", legalBasisSet: true },
      after: { trigger: "creation", periodDays: 1, legalMinimumDays: null, source: "tenant", legalBasisSet: true },
      wouldPurge: 1,
    });
  });
});

describe("the purge's scheduling priority (retention.purgeNice)", () => {
  /** A process's nice value as the kernel reports it: field 19 of /proc/<pid>/stat. */
  const niceOf = (pid: number) => Number(fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[16]);
  const backendOf = (t: { rows: <T>(q: string) => Promise<T[]> }) =>
    t.rows<{ pid: number; started: Date }>("SELECT pid, backend_start AS started FROM pg_stat_activity WHERE pid = pg_backend_pid()").then((r) => r[0]!);

  it("runs the purge's own backends at that priority, and leaves the requests' backends alone", async () => {
    const ctx = { ...app.ctx, config: { ...app.ctx.config, retention: { ...app.ctx.config.retention, purgeNice: 7, purgeConnections: 2 } } };
    const scope = { kind: "tenant" as const, tenantId: clinic.tenant.id };
    // Two transactions at once on the purge's pool of two: each on its own connection, each backend read while it lives.
    const purge = await withPurgePool(ctx, (db) =>
      Promise.all(
        [0, 1].map(() =>
          inScope(db, scope, async (t) => {
            const [b] = await Promise.all([backendOf(t), t.rows("SELECT pg_sleep(0.1)")]);
            return { pid: b.pid, nice: os.getPriority(b.pid), stat: niceOf(b.pid) };
          }),
        ),
      ),
    );
    const request = await inScope(app.ctx.db.app, scope, backendOf);
    expect(new Set(purge.map((b) => b.pid)).size).toBe(2);
    expect(purge.map(({ nice, stat }) => ({ nice, stat }))).toEqual([
      { nice: 7, stat: 7 },
      { nice: 7, stat: 7 },
    ]);
    expect([os.getPriority(request.pid), niceOf(request.pid)]).toEqual([0, 0]);
  });

  it("touches no process that is not the backend: another program, or a postgres process that started at another time", async () => {
    const backend = await inScope(app.ctx.db.app, { kind: "tenant", tenantId: clinic.tenant.id }, backendOf);
    expect(lowerBackendPriority(process.pid, backend.started, 19)).toEqual({
      ok: false,
      why: `process ${process.pid} on this host is not the purge's backend: PostgreSQL runs on another host or in another container`,
    });
    expect(lowerBackendPriority(backend.pid, new Date(backend.started.getTime() - 60_000), 19)).toMatchObject({
      ok: false,
      why: expect.stringMatching(/is not the purge's backend/),
    });
    expect(lowerBackendPriority(2 ** 22 + 1, backend.started, 19)).toMatchObject({ ok: false, why: expect.stringMatching(/^no process \d+ on this host/) });
    expect([os.getPriority(process.pid), os.getPriority(backend.pid)]).toEqual([0, 0]);
  });
});
