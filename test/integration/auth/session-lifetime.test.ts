import pg from "pg";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, signInWithPassword } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { auditEvents, expectProblem, setCookies } from "./identity-helpers.js";

let app: TestAppliance;
const clock = new TestClock();
let tenantId: string;

beforeAll(async () => {
  app = await startTestAppliance({ clock });
  tenantId = (await createTenant(app, "Riverside Clinic")).id;
});
afterAll(async () => {
  await app?.close();
});

const post = (p: string) => request(app.baseUrl).post(p).ca(app.caPem);
const login = (email: string, password: string) => post("/api/v1/auth/login").send({ email, password });

async function superuserQuery<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: app.db.superuserUrl });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

describe("session lifetime", () => {
  it("ends a session after 15 idle minutes and says why; activity keeps it alive", async () => {
    const user = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    clock.advanceMinutes(14);
    expect((await user.agent.get("/api/v1/sessions")).status).toBe(200);
    clock.advanceMinutes(14);
    expect((await user.agent.get("/api/v1/sessions")).status).toBe(200);
    clock.advanceMinutes(15);
    const res = await user.agent.get("/api/v1/sessions");
    expectProblem(res, 401, "unauthorized");
    expect(res.body.reason).toBe("idle_timeout");
    expect(res.body.detail).toContain("15 minutes");
    expect(setCookies(res)[0]).toMatch(/^__Host-wardkeep_session=; .*Max-Age=0/);
    expect((await user.agent.get("/api/v1/sessions")).body.reason).toBe("session_revoked");
  });

  it("does not extend the idle timer when the UI polls GET /auth/session", async () => {
    const user = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    const before = await user.agent.get("/api/v1/auth/session");
    expect(before.body).toMatchObject({ stage: "active", idleTimeoutMinutes: 15, user: { id: user.user.id, role: "front_desk" } });
    clock.advanceMinutes(10);
    const poll = await user.agent.get("/api/v1/auth/session");
    expect(poll.body.idleExpiresAt).toBe(before.body.idleExpiresAt);
    clock.advanceMinutes(6);
    expect((await user.agent.get("/api/v1/auth/session")).status).toBe(401);
  });

  it("applies the tenant's own idle timeout, settable from 5 minutes to 4 hours", async () => {
    const tenant = await createTenant(app, "Short Timeout Ward");
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    expectProblem(await admin.agent.put("/api/v1/settings/security").send({ idleTimeoutMinutes: 4 }), 400, "invalid-request");
    expectProblem(await admin.agent.put("/api/v1/settings/security").send({ idleTimeoutMinutes: 241 }), 400, "invalid-request");
    const set = await admin.agent.put("/api/v1/settings/security").send({ idleTimeoutMinutes: 5 });
    expect(set.body).toMatchObject({ idleTimeoutMinutes: 5, idleTimeoutIsDefault: false });
    const nurse = await signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false });
    clock.advanceMinutes(4);
    expect((await nurse.agent.get("/api/v1/sessions")).status).toBe(200);
    clock.advanceMinutes(5);
    expect((await nurse.agent.get("/api/v1/sessions")).body.reason).toBe("idle_timeout");
  });

  it("ends a session at its 12-hour absolute lifetime even while in use", async () => {
    const tenant = await createTenant(app, "Long Shift Ward");
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    await admin.agent.put("/api/v1/settings/security").send({ idleTimeoutMinutes: 240 }).expect(200);
    const user = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    for (let h = 0; h < 11; h++) {
      clock.advanceMinutes(60);
      expect((await user.agent.get("/api/v1/sessions")).status).toBe(200);
    }
    clock.advanceMinutes(60);
    expect((await user.agent.get("/api/v1/sessions")).body.reason).toBe("session_expired");
  });

  it("ends the session at logout", async () => {
    const user = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    expect((await user.agent.post("/api/v1/auth/logout")).status).toBe(204);
    expect((await user.agent.get("/api/v1/sessions")).status).toBe(401);
  });

  it("ends every session of the account when its password changes", async () => {
    const user = await signIn(app, { role: "practitioner", tenantId, mfa: false });
    const other = await signInWithPassword(app, { email: user.user.email, password: user.password });
    expectProblem(await user.agent.post("/api/v1/auth/password").send({ currentPassword: "not-the-password", newPassword: "fresh-granite-7421" }), 400, "invalid-request");
    expectProblem(await user.agent.post("/api/v1/auth/password").send({ currentPassword: user.password, newPassword: "password1234" }), 400, "invalid-request");
    expect((await user.agent.post("/api/v1/auth/password").send({ currentPassword: user.password, newPassword: "fresh-granite-7421" })).status).toBe(204);
    expect((await user.agent.get("/api/v1/sessions")).status).toBe(401);
    expect((await other.agent.get("/api/v1/sessions")).status).toBe(401);
    expect((await login(user.user.email, user.password)).status).toBe(401);
    expect((await login(user.user.email, "fresh-granite-7421")).status).toBe(200);
  });

  it("lists own sessions and revokes one, or all others", async () => {
    const user = await signIn(app, { role: "auditor", tenantId, mfa: false });
    const second = await signInWithPassword(app, { email: user.user.email, password: user.password });
    const third = await signInWithPassword(app, { email: user.user.email, password: user.password });
    const list = await user.agent.get("/api/v1/sessions");
    expect(list.body).toHaveLength(3);
    expect(list.body.filter((s: { current: boolean }) => s.current)).toHaveLength(1);
    const secondId = (await second.agent.get("/api/v1/sessions")).body.find((s: { current: boolean }) => s.current).id;
    expect((await user.agent.delete(`/api/v1/sessions/${secondId}`)).status).toBe(204);
    expect((await second.agent.get("/api/v1/sessions")).status).toBe(401);
    expect((await user.agent.post("/api/v1/sessions/revoke-all").send({})).body).toEqual({ revoked: 1 });
    expect((await third.agent.get("/api/v1/sessions")).status).toBe(401);
    expect((await user.agent.get("/api/v1/sessions")).status).toBe(200);
  });
});

describe("CSRF", () => {
  it("refuses cookie-authenticated writes without the session's CSRF token and allows reads", async () => {
    const user = await signIn(app, { role: "auditor", tenantId, mfa: false });
    const other = await signIn(app, { role: "auditor", tenantId, mfa: false });
    const cookieOnly = { Cookie: user.cookie };
    expect((await request(app.baseUrl).get("/api/v1/sessions").ca(app.caPem).set(cookieOnly)).status).toBe(200);
    expectProblem(await post("/api/v1/sessions/revoke-all").set(cookieOnly).send({}), 403, "csrf-rejected");
    expectProblem(await post("/api/v1/auth/logout").set({ ...cookieOnly, "X-CSRF-Token": other.csrfToken }), 403, "csrf-rejected");
    expect((await user.agent.get("/api/v1/sessions")).status).toBe(200); // still signed in
    const session = await user.agent.get("/api/v1/auth/session");
    expect(session.body.csrfToken).toBe(user.csrfToken);
  });
});

describe("step-up and password hashing", () => {
  it("asks for a fresh TOTP code before a role change", async () => {
    const owner = await signIn(app, { role: "owner", tenantId });
    const staff = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    clock.advanceMinutes(11);
    const refused = await owner.agent.patch(`/api/v1/users/${staff.user.id}`).send({ role: "practitioner" });
    expectProblem(refused, 403, "step-up-required");
    await owner.stepUp();
    const changed = await owner.agent.patch(`/api/v1/users/${staff.user.id}`).send({ role: "practitioner" });
    expect(changed.status).toBe(200);
    expect(changed.body.role).toBe("practitioner");
    // The old role's session ended with the change.
    expect((await staff.agent.get("/api/v1/sessions")).status).toBe(401);
    const events = await auditEvents(app, { action: "user.role.change" });
    expect(events.at(-1)).toMatchObject({ actor_user_id: owner.user.id, resource_id: staff.user.id, reason: "front_desk -> practitioner", outcome: "success" });
  });

  it("rehashes a password at sign-in when the argon2 parameters are raised", async () => {
    const user = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    const stronger = await startTestAppliance({ db: app.db, clock, env: { WARDKEEP_AUTH_ARGON2_TIME_COST: "3" } });
    try {
      const hashOf = async () => (await superuserQuery<{ password_hash: string }>("SELECT password_hash FROM users WHERE id = $1", [user.user.id]))[0]!.password_hash;
      expect(await hashOf()).toContain("t=2");
      const res = await request(stronger.baseUrl).post("/api/v1/auth/login").ca(stronger.caPem).send({ email: user.user.email, password: user.password });
      expect(res.status).toBe(200);
      expect(await hashOf()).toMatch(/^\$argon2id\$.*t=3/);
    } finally {
      await stronger.close();
    }
  });
});
