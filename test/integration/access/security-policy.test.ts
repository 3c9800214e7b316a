import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, signInWithPassword, totpCode, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { TestClock } from "../../helpers/clock.js";
import { auditEvents, expectProblem } from "../auth/identity-helpers.js";

/**
 * A tenant's security policy is enforced by the daemon, not only shown: MFA per role, minimum
 * password length, lockout thresholds and the TOTP drift window, each proven through the API.
 */
let app: TestAppliance;
const clock = new TestClock();
let owner: SignedIn;

beforeAll(async () => {
  app = await startTestAppliance({ clock });
  const tenant = await createTenant(app, "Policy Ward");
  owner = await signIn(app, { role: "owner", tenantId: tenant.id });
});
afterAll(async () => {
  await app?.close();
});

const login = (email: string, password: string) => request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send({ email, password });
const accept = (token: string, password: string) => request(app.baseUrl).post("/api/v1/invites/accept").ca(app.caPem).send({ token, password });
async function invite(email: string, role: string): Promise<string> {
  const res = await owner.agent.post("/api/v1/invites").send({ email, role });
  expect(res.status).toBe(201);
  return res.body.token as string;
}

describe("a tenant's security policy", () => {
  it("turns MFA on for every role of a tenant created through the API, unless the creator turns it off", async () => {
    const root = await signIn(app, { role: "super_admin" });
    const [on, off] = await Promise.all([
      root.agent.post("/api/v1/tenants").send({ name: "Default MFA Clinic", ownerEmail: "owner@default-mfa.example" }).expect(201),
      root.agent.post("/api/v1/tenants").send({ name: "No MFA Clinic", ownerEmail: "owner@no-mfa.example", mfaRequired: false }).expect(201),
    ]);
    const [a, b] = await Promise.all([accept(on.body.ownerInvite.token, "juniper-cobalt-harbor-31"), accept(off.body.ownerInvite.token, "juniper-cobalt-harbor-32")]);
    expect(a.body).toMatchObject({ role: "owner", mfaEnrollmentRequired: true });
    expect(b.body).toMatchObject({ role: "owner", mfaEnrollmentRequired: false });
  });

  it("reports the effective policy, refuses values out of bounds, and audits the change", async () => {
    const before = await owner.agent.get("/api/v1/settings/security").expect(200);
    expect(before.body).toMatchObject({
      mfaRequired: false,
      mfaRequiredRoles: [],
      passwordMinLength: 12,
      commonPasswordsRefused: true,
      lockoutMaxFailures: app.config.auth.lockoutMaxFailures,
      lockoutMinutes: app.config.auth.lockoutMinutes,
      lockoutWindowMinutes: app.config.auth.lockoutWindowMinutes,
      totpWindowSteps: 1,
    });
    for (const bad of [
      { passwordMinLength: 8 },
      { lockoutMaxFailures: 1 },
      { totpWindowSteps: 3 },
      { mfaRequiredRoles: ["super_admin"] },
      { mfaRequired: true, mfaRequiredRoles: [] },
    ]) {
      expectProblem(await owner.agent.put("/api/v1/settings/security").send(bad), 400, "invalid-request");
    }
    const saved = await owner.agent
      .put("/api/v1/settings/security")
      .send({ mfaRequiredRoles: ["practitioner", "owner"], passwordMinLength: 16, lockoutMaxFailures: 3, lockoutMinutes: 60, totpWindowSteps: 0 })
      .expect(200);
    expect(saved.body).toMatchObject({
      mfaRequired: false,
      mfaRequiredRoles: ["owner", "practitioner"],
      passwordMinLength: 16,
      lockoutMaxFailures: 3,
      lockoutMinutes: 60,
      totpWindowSteps: 0,
    });
    const event = (await auditEvents(app, { action: "settings.security.update" })).at(-1);
    expect(event?.reason).toBe("mfaRequiredRoles=practitioner,owner passwordMinLength=16 lockoutMaxFailures=3 lockoutMinutes=60 totpWindowSteps=0");
  });

  it("refuses a password shorter than the tenant's minimum and makes only the named roles enrol an authenticator", async () => {
    const deskToken = await invite("desk.policy@policy-ward.example", "front_desk");
    const short = await accept(deskToken, "amber-dune-4812"); // 15 characters: fine for the appliance, short for this tenant
    expectProblem(short, 400, "invalid-request");
    expect(short.body.detail).toBe("the password must be at least 16 characters long");
    const desk = await accept(deskToken, "amber-dune-fjord-4812");
    expect(desk.body).toMatchObject({ role: "front_desk", mfaEnrollmentRequired: false });

    const nurse = await accept(await invite("nurse.policy@policy-ward.example", "practitioner"), "basalt-ember-indigo-77");
    expect(nurse.body).toMatchObject({ role: "practitioner", mfaEnrollmentRequired: true });
    // Signing in again, the practitioner is still sent to enrol; the front desk is not.
    expect((await login("nurse.policy@policy-ward.example", "basalt-ember-indigo-77")).body).toMatchObject({ mfaEnrollmentRequired: true });
    expect((await login("desk.policy@policy-ward.example", "amber-dune-fjord-4812")).body).toMatchObject({ mfaRequired: false, mfaEnrollmentRequired: false });
  });

  it("locks an account after the tenant's number of failures, for the tenant's time", async () => {
    const email = "desk.policy@policy-ward.example";
    expect((await login(email, "wrong-password-number-1")).status).toBe(401);
    expect((await login(email, "wrong-password-number-2")).status).toBe(401);
    expect((await login(email, "wrong-password-number-3")).status).toBe(429); // the third failure locks (the appliance default would allow five)
    expect((await login(email, "amber-dune-fjord-4812")).status).toBe(429);
    clock.advanceMinutes(59);
    expect((await login(email, "amber-dune-fjord-4812")).status).toBe(429); // the appliance default would have unlocked after 15
    clock.advanceMinutes(2);
    expect((await login(email, "amber-dune-fjord-4812")).status).toBe(200);
  });

  it("accepts TOTP codes only within the tenant's drift window", async () => {
    // The owner's session idled out while the lockout ran; signing in again spends the current step.
    const again = await signInWithPassword(app, { email: owner.user.email, password: owner.password, totpSecret: owner.totpSecret });
    clock.advance(90_000);
    const stepUp = (offsetMs: number) => again.agent.post("/api/v1/auth/mfa").send({ code: totpCode(owner.totpSecret!, new Date(clock.now().getTime() + offsetMs)) });
    // Window 0: the code of the previous 30-second step is refused (the default window of one step accepts it).
    expect((await stepUp(-30_000)).status).toBe(401);
    expect((await stepUp(0)).status).toBe(200);

    // Window 2: a code from a minute ahead (a phone whose clock runs fast) is accepted; the default would refuse it.
    await again.agent.put("/api/v1/settings/security").send({ totpWindowSteps: 2 }).expect(200);
    clock.advance(30_000);
    expect((await stepUp(60_000)).status).toBe(200);
  });
});
