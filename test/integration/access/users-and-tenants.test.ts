import request from "supertest";
import { inScope } from "../../../daemon/db/sql.js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { deactivateInactiveUsers } from "../../../daemon/access/users.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, rootSuperAdmin, signIn, signInWithPassword } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { auditEvents, expectProblem } from "../auth/identity-helpers.js";

let app: TestAppliance;
const clock = new TestClock();

beforeAll(async () => {
  app = await startTestAppliance({ clock });
});
afterAll(async () => {
  await app?.close();
});

const login = (email: string, password: string) => request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send({ email, password });

describe("tenants", () => {
  it("are created by a super-admin, with unique slugs, and seen by their own staff only", async () => {
    const superAdmin = await signIn(app, { role: "super_admin" });
    const created = await superAdmin.agent.post("/api/v1/tenants").send({ name: "Westfield Cardiology", slug: "westfield-cardio" });
    expect(created.status).toBe(201);
    expectProblem(await superAdmin.agent.post("/api/v1/tenants").send({ name: "Copy", slug: "westfield-cardio" }), 409, "conflict");
    expectProblem(await superAdmin.agent.post("/api/v1/tenants").send({ name: "Bad", slug: "Bad Slug" }), 400, "invalid-request");
    const owner = await signIn(app, { role: "owner", tenantId: created.body.id });
    expectProblem(await owner.agent.post("/api/v1/tenants").send({ name: "Mine", slug: "mine-too" }), 403, "forbidden");
    expect((await owner.agent.get("/api/v1/tenants")).body.map((t: { id: string }) => t.id)).toEqual([created.body.id]);
    expect((await superAdmin.agent.get("/api/v1/tenants")).body.map((t: { id: string }) => t.id)).toContain(created.body.id);
  });

  it("ends every session and refuses sign-in when a tenant is suspended", async () => {
    const superAdmin = await signIn(app, { role: "super_admin" });
    const tenant = await createTenant(app, "Suspended Clinic");
    const staff = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    expect((await superAdmin.agent.patch(`/api/v1/tenants/${tenant.id}`).send({ status: "suspended" })).body.status).toBe("suspended");
    expect((await staff.agent.get("/api/v1/sessions")).status).toBe(401);
    expect((await login(staff.user.email, staff.password)).status).toBe(401);
    await superAdmin.agent.patch(`/api/v1/tenants/${tenant.id}`).send({ status: "active" }).expect(200);
    expect((await login(staff.user.email, staff.password)).status).toBe(200);
  });
});

describe("creating a tenant with its first owner", () => {
  it("makes the slug from the name, and answers with the owner's invite, which the owner accepts", async () => {
    const superAdmin = await signIn(app, { role: "super_admin" });
    const first = await superAdmin.agent.post("/api/v1/tenants").send({ name: "St. Mary's Cardiology", ownerEmail: "Owner.StMarys@Hospital.example" }).expect(201);
    expect(first.body).toMatchObject({
      name: "St. Mary's Cardiology",
      slug: "st-marys-cardiology",
      status: "active",
      ownerInvite: { email: "owner.stmarys@hospital.example", token: expect.stringMatching(/^wki_/), expiresAt: expect.any(String) },
    });
    // The same name again gets the next free slug rather than a conflict.
    const second = await superAdmin.agent.post("/api/v1/tenants").send({ name: "St. Mary's Cardiology" }).expect(201);
    expect(second.body).toMatchObject({ slug: "st-marys-cardiology-2", ownerInvite: null });

    const accepted = await request(app.baseUrl).post("/api/v1/invites/accept").ca(app.caPem).send({ token: first.body.ownerInvite.token, password: "juniper-cobalt-harbor-77" });
    expect(accepted.status).toBe(201);
    expect(accepted.body).toMatchObject({ role: "owner", tenantId: first.body.id });
    const events = await auditEvents(app, { action: "invite.create" });
    expect(events.find((e) => e.resource_id === first.body.ownerInvite.id)).toMatchObject({ tenant_id: first.body.id, actor_user_id: superAdmin.user.id, reason: "role owner" });
  });

  it("leaves no tenant behind when the owner email already has an account", async () => {
    const superAdmin = await signIn(app, { role: "super_admin" });
    const taken = await superAdmin.agent.post("/api/v1/tenants").send({ name: "Taken Owner Clinic", ownerEmail: superAdmin.user.email });
    expectProblem(taken, 409, "conflict");
    expect(taken.body.detail).toBe("an account with this email address already exists");
    const names = (await superAdmin.agent.get("/api/v1/tenants").expect(200)).body.map((t: { name: string }) => t.name);
    expect(names).not.toContain("Taken Owner Clinic");
    expectProblem(await superAdmin.agent.post("/api/v1/tenants").send({ name: "No Owner", ownerEmail: "not-an-email" }), 400, "invalid-request");
  });

  it("refuses a suspended tenant's API tokens, and takes them again once resumed", async () => {
    const superAdmin = await signIn(app, { role: "super_admin" });
    const tenant = await createTenant(app, "Token Suspension Clinic");
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const created = await admin.agent
      .post("/api/v1/api-tokens")
      .send({ name: "EHR interface", role: "front_desk", scopes: ["patient:read"] })
      .expect(201);
    const bearer = () => request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Authorization", `Bearer ${created.body.token}`);
    expect((await bearer()).status).toBe(200);
    await superAdmin.agent.patch(`/api/v1/tenants/${tenant.id}`).send({ status: "suspended" }).expect(200);
    expectProblem(await bearer(), 401, "unauthorized");
    await superAdmin.agent.patch(`/api/v1/tenants/${tenant.id}`).send({ status: "active" }).expect(200);
    expect((await bearer()).body).toMatchObject({ via: "api-token", user: { role: "front_desk", tenantId: tenant.id } });
  });
});

describe("tenant-wide sessions", () => {
  it("lists every live session of the tenant for admins, and signs out everyone but the admin, with a reason, in that tenant only", async () => {
    const tenant = await createTenant(app, "Sign-out Ward");
    const other = await createTenant(app, "Untouched Ward");
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    const nurse = await signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false });
    const elsewhere = await signIn(app, { role: "front_desk", tenantId: other.id, mfa: false });

    const listed = (await admin.agent.get("/api/v1/sessions?all=true").expect(200)).body as { userEmail: string; current: boolean; sourceIp: string }[];
    expect(listed.map((x) => x.userEmail).sort()).toEqual([admin.user.email, desk.user.email, nurse.user.email].sort());
    expect(listed.find((x) => x.userEmail === admin.user.email)?.current).toBe(true);
    expectProblem(await desk.agent.get("/api/v1/sessions?all=true"), 403, "forbidden");
    expectProblem(await desk.agent.post("/api/v1/sessions/revoke-all").send({ everyone: true, reason: "test" }), 403, "forbidden");
    expectProblem(await admin.agent.post("/api/v1/sessions/revoke-all").send({ everyone: true }), 400, "invalid-request");

    const done = await admin.agent.post("/api/v1/sessions/revoke-all").send({ everyone: true, reason: "suspected phishing, INC-2231" }).expect(200);
    expect(done.body).toEqual({ revoked: 2 });
    expect((await desk.agent.get("/api/v1/sessions")).status).toBe(401);
    expect((await nurse.agent.get("/api/v1/sessions")).status).toBe(401);
    expect((await admin.agent.get("/api/v1/sessions")).status).toBe(200);
    expect((await elsewhere.agent.get("/api/v1/sessions")).status).toBe(200);
    const events = await auditEvents(app, { action: "auth.session.revoke_everyone" });
    expect(events.find((e) => e.tenant_id === tenant.id)).toMatchObject({ actor_user_id: admin.user.id, reason: "2 session(s); suspected phishing, INC-2231" });
  });
});

describe("managing accounts", () => {
  it("ends a deactivated account's sessions at once and lets it back in only when reactivated", async () => {
    const tenant = await createTenant(app, "Deactivation Ward");
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const nurse = await signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false });
    const res = await admin.agent.patch(`/api/v1/users/${nurse.user.id}`).send({ status: "deactivated" });
    expect(res.body).toMatchObject({ status: "deactivated", deactivatedAt: expect.any(String) });
    expect((await nurse.agent.get("/api/v1/sessions")).status).toBe(401);
    expect((await login(nurse.user.email, nurse.password)).status).toBe(401);
    await admin.agent.patch(`/api/v1/users/${nurse.user.id}`).send({ status: "active" }).expect(200);
    expect((await login(nurse.user.email, nurse.password)).status).toBe(200);
    const events = await auditEvents(app, { action: "user.deactivate" });
    expect(events.some((e) => e.resource_id === nurse.user.id && e.actor_user_id === admin.user.id)).toBe(true);
  });

  it("keeps owners in charge of owners, and every tenant with an active owner", async () => {
    const tenant = await createTenant(app, "Owners Ward");
    const owner = await signIn(app, { role: "owner", tenantId: tenant.id });
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    expectProblem(await admin.agent.patch(`/api/v1/users/${owner.user.id}`).send({ status: "deactivated" }), 403, "forbidden");
    const staff = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    expectProblem(await admin.agent.patch(`/api/v1/users/${staff.user.id}`).send({ role: "owner" }), 403, "forbidden");
    expectProblem(await owner.agent.patch(`/api/v1/users/${owner.user.id}`).send({ role: "admin" }), 409, "conflict");
    const second = await signIn(app, { role: "owner", tenantId: tenant.id });
    expect((await second.agent.patch(`/api/v1/users/${owner.user.id}`).send({ role: "admin" })).body.role).toBe("admin");
    expectProblem(await owner.agent.patch(`/api/v1/users/${second.user.id}`).send({ role: "admin" }), 401, "unauthorized"); // demoted: session ended
    const promoted = await signInWithPassword(app, { email: owner.user.email, password: owner.password, totpSecret: owner.totpSecret });
    expect(promoted.user.role).toBe("admin");
    expectProblem(await promoted.agent.patch(`/api/v1/users/${second.user.id}`).send({ status: "deactivated" }), 403, "forbidden");
  });

  it("lets an admin reset a lost authenticator, ending the account's sessions", async () => {
    const tenant = await createTenant(app, "Lost Phone Ward");
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const nurse = await signIn(app, { role: "practitioner", tenantId: tenant.id });
    const reset = await admin.agent.post(`/api/v1/users/${nurse.user.id}/mfa/reset`);
    expect(reset.body.mfaEnabled).toBe(false);
    expect((await nurse.agent.get("/api/v1/sessions")).status).toBe(401);
    const again = await login(nurse.user.email, nurse.password);
    expect(again.body).toMatchObject({ mfaRequired: false, mfaEnrollmentRequired: false });
    expectProblem(await admin.agent.post(`/api/v1/users/${admin.user.id}/mfa/reset`), 409, "conflict");
  });

  it("shows each account's role, last sign-in, MFA state and open sessions in the access review", async () => {
    const tenant = await createTenant(app, "Review Ward");
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const auditor = await signIn(app, { role: "auditor", tenantId: tenant.id });
    const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    await signInWithPassword(app, { email: desk.user.email, password: desk.password });
    const review = await auditor.agent.get("/api/v1/access-reviews");
    expect(review.status).toBe(200);
    const row = review.body.find((r: { id: string }) => r.id === desk.user.id);
    expect(row).toMatchObject({ role: "front_desk", mfaEnabled: false, activeSessions: 2, status: "active", daysSinceLastLogin: 0, lastLoginAt: expect.any(String) });
    expect(review.body.find((r: { id: string }) => r.id === admin.user.id)).toMatchObject({ role: "admin", mfaEnabled: true });
    expectProblem(await desk.agent.get("/api/v1/access-reviews"), 403, "forbidden");
  });
});

describe("inactive accounts", () => {
  it("are deactivated by the job after the tenant's inactivity period, with their sessions", async () => {
    const lenient = await createTenant(app, "Default Period Ward");
    const strict = await createTenant(app, "Thirty Day Ward");
    const strictAdmin = await signIn(app, { role: "admin", tenantId: strict.id });
    await strictAdmin.agent.put("/api/v1/settings/security").send({ inactiveUserDays: 30 }).expect(200);
    const idleLenient = await signIn(app, { role: "practitioner", tenantId: lenient.id, mfa: false });
    const idleStrict = await signIn(app, { role: "practitioner", tenantId: strict.id, mfa: false });

    clock.advanceMinutes(31 * 24 * 60);
    const first = await deactivateInactiveUsers(app.ctx);
    const firstIds = first.deactivated.map((d) => d.userId);
    expect(firstIds).toContain(idleStrict.user.id);
    expect(firstIds).not.toContain(idleLenient.user.id);
    expect((await login(idleStrict.user.email, idleStrict.password)).status).toBe(401);

    // Someone who signs in stays active; the rest of the default tenant goes at 90 days.
    const active = await signInWithPassword(app, { email: idleLenient.user.email, password: idleLenient.password });
    expect(active.user.id).toBe(idleLenient.user.id);
    clock.advanceMinutes(60 * 24 * 60); // day 91 for accounts untouched since the start
    const second = await deactivateInactiveUsers(app.ctx);
    const secondIds = second.deactivated.map((d) => d.userId);
    expect(secondIds).not.toContain(idleLenient.user.id);
    expect(secondIds).not.toContain(idleStrict.user.id); // already deactivated: nothing twice
    expect((await deactivateInactiveUsers(app.ctx)).deactivated).toEqual([]);
    const events = await auditEvents(app, { action: "user.deactivate" });
    expect(events.find((e) => e.resource_id === idleStrict.user.id)).toMatchObject({ reason: "inactive; sessions 1; api tokens 0", actor_role: "system", tenant_id: strict.id });
    // The appliance never deactivates its last super-admin, however long it sat unused.
    const root = await rootSuperAdmin(app);
    const admins = await inScope(app.ctx.db.app, { kind: "appliance" }, (t) => t.rows<{ status: string }>("SELECT status FROM users WHERE role = 'super_admin'"));
    expect(admins.filter((a) => a.status === "active")).toHaveLength(1);
    expect(root.id).toBeDefined();
  });
});

describe("the inactivity schedule", () => {
  it("runs on every replica without anyone calling the job: at start, then every access.inactivityCheckMinutes", async () => {
    const ward = await createTenant(app, "Scheduler Ward");
    const idle = await signIn(app, { role: "practitioner", tenantId: ward.id, mfa: false });
    const status = async () =>
      (
        await inScope(app.ctx.db.app, { kind: "appliance" }, (t) =>
          t.rows<{ status: string; deactivated_reason: string | null }>("SELECT status, deactivated_reason FROM users WHERE id = $1", [idle.user.id]),
        )
      )[0];
    expect(await status()).toEqual({ status: "active", deactivated_reason: null });
    clock.advanceMinutes(91 * 24 * 60);
    // A replica starting now runs the job once, shortly after start.
    const replica = await startTestAppliance({ db: app.db, clock, dataDir: app.dataDir });
    try {
      await vi.waitFor(async () => expect(await status()).toEqual({ status: "deactivated", deactivated_reason: "inactive" }), { timeout: 15_000, interval: 200 });
    } finally {
      await replica.close();
    }
  });
});
