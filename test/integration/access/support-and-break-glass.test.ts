import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authorizePatient } from "../../../daemon/access/care-team.js";
import type { Actor } from "../../../daemon/kernel/actor.js";
import { inScope } from "../../../daemon/db/sql.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { createPatient } from "../../helpers/records.js";
import { auditEvents, expectProblem } from "../auth/identity-helpers.js";

let app: TestAppliance;
const clock = new TestClock();
let tenantId: string;

beforeAll(async () => {
  app = await startTestAppliance({ clock });
  tenantId = (await createTenant(app, "Harbour Hospital")).id;
});
afterAll(async () => {
  await app?.close();
});

const actorOf = (s: SignedIn): Actor => ({ userId: s.user.id, role: s.user.role, tenantId: s.user.tenantId, via: "session" });

/** What the records capability will do before showing a note: the policy decision for this patient. */
async function mayReadNotes(s: SignedIn, patientId: string): Promise<{ allowed: boolean; breakGlass?: boolean }> {
  try {
    const r = await inScope(app.ctx.db.app, { kind: "tenant", tenantId }, (t) => authorizePatient(app.ctx, t, actorOf(s), "note:read", patientId));
    return { allowed: true, breakGlass: r.breakGlass };
  } catch {
    return { allowed: false };
  }
}

describe("care team", () => {
  it("lets a practitioner read notes only of patients assigned to them, as admins decide", async () => {
    const admin = await signIn(app, { role: "admin", tenantId });
    const doctor = await signIn(app, { role: "practitioner", tenantId });
    const desk = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    const patientId = await createPatient(app, tenantId);
    expect(await mayReadNotes(doctor, patientId)).toEqual({ allowed: false });
    const team = await admin.agent.post(`/api/v1/patients/${patientId}/care-team`).send({ userId: doctor.user.id });
    expect(team.body.map((m: { userId: string }) => m.userId)).toEqual([doctor.user.id]);
    expect(await mayReadNotes(doctor, patientId)).toEqual({ allowed: true, breakGlass: false });
    expectProblem(await admin.agent.post(`/api/v1/patients/${patientId}/care-team`).send({ userId: desk.user.id }), 400, "invalid-request");
    expect(await mayReadNotes(desk, patientId)).toEqual({ allowed: false }); // front desk never reads notes
    expect((await admin.agent.delete(`/api/v1/patients/${patientId}/care-team/${doctor.user.id}`)).status).toBe(204);
    expect(await mayReadNotes(doctor, patientId)).toEqual({ allowed: false });
    expectProblem(await doctor.agent.post(`/api/v1/patients/${patientId}/care-team`).send({ userId: doctor.user.id }), 403, "forbidden");
  });
  it("shows a practitioner the care team only of a patient they may see", async () => {
    const admin = await signIn(app, { role: "admin", tenantId });
    const doctor = await signIn(app, { role: "practitioner", tenantId });
    const colleague = await signIn(app, { role: "practitioner", tenantId });
    const patientId = await createPatient(app, tenantId);
    await admin.agent.post(`/api/v1/patients/${patientId}/care-team`).send({ userId: colleague.user.id }).expect(200);
    expectProblem(await doctor.agent.get(`/api/v1/patients/${patientId}/care-team`), 403, "forbidden");
    const seen = await colleague.agent.get(`/api/v1/patients/${patientId}/care-team`).expect(200);
    expect(seen.body.map((m: { userId: string }) => m.userId)).toEqual([colleague.user.id]);
    const listed = await admin.agent.get(`/api/v1/patients/${patientId}/care-team`);
    expect(listed.body).toHaveLength(1);
  });
});

describe("break-glass", () => {
  it("opens a patient outside the care team for one hour with a reason, flagged in the audit trail and raised to admins", async () => {
    const admin = await signIn(app, { role: "admin", tenantId });
    const doctor = await signIn(app, { role: "practitioner", tenantId });
    const patientId = await createPatient(app, tenantId);
    const reason = "unconscious patient in ED, assigned physician unreachable";
    expectProblem(await doctor.agent.post(`/api/v1/patients/${patientId}/break-glass`).send({ reason: "urgent" }), 400, "invalid-request");
    const opened = await doctor.agent.post(`/api/v1/patients/${patientId}/break-glass`).send({ reason });
    expect(opened.status).toBe(201);
    expect(new Date(opened.body.expiresAt).getTime() - clock.now().getTime()).toBe(60 * 60_000);
    expect(await mayReadNotes(doctor, patientId)).toEqual({ allowed: true, breakGlass: true });
    expectProblem(await doctor.agent.post(`/api/v1/patients/${patientId}/break-glass`).send({ reason }), 409, "conflict");

    const event = (await auditEvents(app, { action: "break_glass.open" })).find((e) => e.patient_id === patientId)!;
    expect(event).toMatchObject({ break_glass: true, actor_user_id: doctor.user.id, reason, tenant_id: tenantId });
    const notes = await admin.agent.get("/api/v1/notifications?unacknowledged=true");
    const note = notes.body.find((n: { patientId: string }) => n.patientId === patientId);
    expect(note).toMatchObject({ kind: "break_glass", actorUserId: doctor.user.id, subjectId: opened.body.id });
    expect((await admin.agent.post(`/api/v1/notifications/${note.id}/acknowledge`)).body.acknowledgedBy).toBe(admin.user.id);
    expect((await admin.agent.get("/api/v1/break-glass?active=true")).body.map((g: { id: string }) => g.id)).toContain(opened.body.id);
    // The reason may describe a condition: it never reaches the logs.
    expect(app.logLines.join("\n")).not.toContain("unconscious");
    expect(app.logLines.some((l) => l.includes("break-glass access opened") && l.includes(opened.body.id))).toBe(true);

    clock.advanceMinutes(61);
    expect(await mayReadNotes(doctor, patientId)).toEqual({ allowed: false });
  });

  it("is for practitioners only, and not needed on one's own care team", async () => {
    const admin = await signIn(app, { role: "admin", tenantId });
    const doctor = await signIn(app, { role: "practitioner", tenantId });
    const desk = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    const patientId = await createPatient(app, tenantId);
    expectProblem(await desk.agent.post(`/api/v1/patients/${patientId}/break-glass`).send({ reason: "front desk wants to look" }), 403, "forbidden");
    expectProblem(await admin.agent.post(`/api/v1/patients/${patientId}/break-glass`).send({ reason: "admin wants to look in" }), 403, "forbidden");
    await admin.agent.post(`/api/v1/patients/${patientId}/care-team`).send({ userId: doctor.user.id }).expect(200);
    expectProblem(await doctor.agent.post(`/api/v1/patients/${patientId}/break-glass`).send({ reason: "already on the care team" }), 409, "conflict");
  });
});

describe("support access", () => {
  it("lets support act inside a tenant only after approval, for 30 minutes, marked on every response and audited with both identities", async () => {
    const owner = await signIn(app, { role: "owner", tenantId });
    const support = await signIn(app, { role: "support" });
    expectProblem(await support.agent.get("/api/v1/users"), 403, "forbidden"); // no tenant yet
    expectProblem(await support.agent.post("/api/v1/support/requests").send({ tenantId, ticketRef: "bad ticket!", reason: "x" }), 400, "invalid-request");
    const filed = await support.agent.post("/api/v1/support/requests").send({ tenantId, ticketRef: "INC-20931", reason: "user cannot enrol MFA" });
    expect(filed.body).toMatchObject({ status: "pending", ticketRef: "INC-20931" });
    const id = filed.body.id as string;
    expectProblem(await support.agent.post(`/api/v1/support/requests/${id}/enter`), 409, "conflict");
    expectProblem(await support.agent.post(`/api/v1/support/requests/${id}/approve`), 403, "forbidden");
    const noticed = await owner.agent.get("/api/v1/notifications");
    expect(noticed.body.some((n: { kind: string; subjectId: string }) => n.kind === "support_request" && n.subjectId === id)).toBe(true);

    const approved = await owner.agent.post(`/api/v1/support/requests/${id}/approve`);
    expect(approved.body).toMatchObject({ status: "approved", decidedBy: owner.user.id });
    expect(new Date(approved.body.expiresAt).getTime() - clock.now().getTime()).toBe(30 * 60_000);
    await support.agent.post(`/api/v1/support/requests/${id}/enter`).expect(200);

    const users = await support.agent.get("/api/v1/users");
    expect(users.status).toBe(200);
    expect(users.headers["wardkeep-support-access"]).toBe(`request=${id}; expires=${approved.body.expiresAt}`);
    const info = await support.agent.get("/api/v1/auth/session");
    expect(info.body.supportAccess).toMatchObject({ requestId: id, supportUserId: support.user.id, approvedBy: owner.user.id, approvedByName: owner.user.email });
    // Read-only: a change is refused and the refusal names both identities.
    expectProblem(await support.agent.put("/api/v1/settings/security").send({ mfaRequired: true }), 403, "forbidden");
    const denial = (await auditEvents(app, { action: "access.denied" })).at(-1)!;
    expect(denial).toMatchObject({ actor_user_id: owner.user.id, impersonator_id: support.user.id, actor_role: "support", tenant_id: tenantId });
    const entered = (await auditEvents(app, { action: "support.enter" })).at(-1)!;
    expect(entered).toMatchObject({ actor_user_id: owner.user.id, impersonator_id: support.user.id, resource_id: id });

    clock.advanceMinutes(14);
    expect((await support.agent.get("/api/v1/users")).status).toBe(200);
    await owner.agent.get("/api/v1/notifications").expect(200); // the owner stays active too
    clock.advanceMinutes(14);
    expect((await support.agent.get("/api/v1/users")).status).toBe(200);
    expect((await owner.agent.get("/api/v1/support/requests")).body.find((r: { id: string }) => r.id === id).status).toBe("approved");
    clock.advanceMinutes(3); // 31 minutes after approval; the support user's own session is still alive
    const after = await support.agent.get("/api/v1/users");
    expectProblem(after, 403, "forbidden");
    expect(after.headers["wardkeep-support-access"]).toBeUndefined();
    expect((await owner.agent.get("/api/v1/support/requests")).body.find((r: { id: string }) => r.id === id).status).toBe("expired");
  });

  it("ends at once when a tenant admin withdraws it, and cannot be decided by another tenant", async () => {
    const owner = await signIn(app, { role: "owner", tenantId });
    const otherAdmin = await signIn(app, { role: "admin" });
    const support = await signIn(app, { role: "support" });
    const id = (await support.agent.post("/api/v1/support/requests").send({ tenantId, ticketRef: "INC-7", reason: "slow exports" })).body.id;
    expectProblem(await otherAdmin.agent.post(`/api/v1/support/requests/${id}/approve`), 404, "not-found");
    await owner.agent.post(`/api/v1/support/requests/${id}/approve`).expect(200);
    await support.agent.post(`/api/v1/support/requests/${id}/enter`).expect(200);
    expect((await support.agent.get("/api/v1/users")).status).toBe(200);
    expect((await owner.agent.post(`/api/v1/support/requests/${id}/end`)).body.status).toBe("ended");
    expectProblem(await support.agent.get("/api/v1/users"), 403, "forbidden");
    expectProblem(await support.agent.post(`/api/v1/support/requests/${id}/enter`), 409, "conflict");
  });

  it("can be denied", async () => {
    const admin = await signIn(app, { role: "admin", tenantId });
    const support = await signIn(app, { role: "support" });
    const id = (await support.agent.post("/api/v1/support/requests").send({ tenantId, ticketRef: "INC-8", reason: "curious" })).body.id;
    expect((await admin.agent.post(`/api/v1/support/requests/${id}/deny`)).body.status).toBe("denied");
    expectProblem(await admin.agent.post(`/api/v1/support/requests/${id}/approve`), 409, "conflict");
    expectProblem(await support.agent.post(`/api/v1/support/requests/${id}/enter`), 409, "conflict");
  });
});
