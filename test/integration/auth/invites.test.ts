import { execFileSync } from "node:child_process";
import path from "node:path";
import request from "supertest";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { auditEvents, expectProblem, setCookies } from "./identity-helpers.js";

let app: TestAppliance;
const clock = new TestClock();
let tenantId: string;
let admin: SignedIn;

beforeAll(async () => {
  app = await startTestAppliance({ clock });
  tenantId = (await createTenant(app, "Northgate Hospital")).id;
});
// Tests move the clock by days: each starts with a freshly signed-in admin.
beforeEach(async () => {
  admin = await signIn(app, { role: "admin", tenantId });
});
afterAll(async () => {
  await app?.close();
});

const accept = (body: object) => request(app.baseUrl).post("/api/v1/invites/accept").ca(app.caPem).send(body);
let n = 0;
const email = () => `invitee.${++n}.${Date.now()}@hospital.example`;

async function invite(role = "practitioner", by: SignedIn = admin): Promise<{ token: string; id: string; email: string }> {
  const address = email();
  const res = await by.agent.post("/api/v1/invites").send({ email: address, role });
  expect(res.status).toBe(201);
  expect(res.body.token).toMatch(/^wki_/);
  return { token: res.body.token, id: res.body.invite.id, email: address };
}

describe("invites", () => {
  it("creates the account with the invited role and starts its first session", async () => {
    const { token, id, email: address } = await invite("front_desk");
    const res = await accept({ token, password: "quiet-lantern-5821", displayName: "Sam Reyes" });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ role: "front_desk", tenantId, mfaEnrollmentRequired: false });
    const cookie = setCookies(res)
      .find((c) => c.startsWith("__Host-wardkeep_session=w"))!
      .split(";")[0]!;
    const session = await request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Cookie", cookie);
    expect(session.body.user).toMatchObject({ email: address, role: "front_desk", tenantId });
    const listed = (await admin.agent.get("/api/v1/invites")).body.find((i: { id: string }) => i.id === id);
    expect(listed.status).toBe("accepted");
    expect(JSON.stringify(listed)).not.toContain(token);
  });

  it("refuses a second use of the same invite", async () => {
    const { token } = await invite();
    expect((await accept({ token, password: "quiet-lantern-5821" })).status).toBe(201);
    expectProblem(await accept({ token, password: "other-lantern-5821" }), 409, "invite-used");
  });

  it("refuses an invite after 72 hours", async () => {
    const { token } = await invite();
    clock.advanceMinutes(72 * 60 + 1);
    expectProblem(await accept({ token, password: "quiet-lantern-5821" }), 410, "invite-expired");
  });

  it("refuses a token altered in any part, before looking it up", async () => {
    const { token } = await invite();
    const [payload, signature] = token.slice(4).split(".") as [string, string];
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
    for (const bad of [`wki_${flip(payload, 3)}.${signature}`, `wki_${payload}.${flip(signature, 5)}`, `wki_${flip(payload, 30)}.${signature}`, "wki_short.token", token + "x"]) {
      expectProblem(await accept({ token: bad, password: "quiet-lantern-5821" }), 400, "invite-invalid");
    }
    expect((await accept({ token, password: "quiet-lantern-5821" })).status).toBe(201); // the genuine one still works
    const failures = await auditEvents(app, { action: "invite.accept" });
    expect(failures.filter((e) => e.outcome === "failure" && e.reason === "malformed or tampered token").length).toBeGreaterThanOrEqual(5);
  });

  it("refuses a withdrawn invite, and one replaced by a newer invite to the same address", async () => {
    const first = await invite();
    expect((await admin.agent.delete(`/api/v1/invites/${first.id}`)).body.status).toBe("revoked");
    expectProblem(await accept({ token: first.token, password: "quiet-lantern-5821" }), 410, "invite-revoked");

    const address = email();
    const old = (await admin.agent.post("/api/v1/invites").send({ email: address, role: "auditor" })).body.token;
    const fresh = (await admin.agent.post("/api/v1/invites").send({ email: address, role: "auditor" })).body.token;
    expectProblem(await accept({ token: old, password: "quiet-lantern-5821" }), 410, "invite-revoked");
    expect((await accept({ token: fresh, password: "quiet-lantern-5821" })).status).toBe(201);
  });

  it("keeps the invite usable when the chosen password is refused", async () => {
    const { token } = await invite();
    expectProblem(await accept({ token, password: "password123" }), 400, "invalid-request");
    expectProblem(await accept({ token, password: "short" }), 400, "invalid-request");
    expect((await accept({ token, password: "quiet-lantern-5821" })).status).toBe(201);
  });

  it("enrols an authenticator before the first session where the tenant enforces MFA", async () => {
    const tenant = await createTenant(app, "Enforcing Clinic");
    const owner = await signIn(app, { role: "owner", tenantId: tenant.id });
    expect((await owner.agent.put("/api/v1/settings/security").send({ mfaRequired: true })).body.mfaRequired).toBe(true);
    const { token } = await invite("practitioner", owner);
    const res = await accept({ token, password: "quiet-lantern-5821" });
    expect(res.body.mfaEnrollmentRequired).toBe(true);
    const headers = {
      Cookie: setCookies(res)
        .find((c) => c.startsWith("__Host-wardkeep_session=w"))!
        .split(";")[0]!,
      "X-CSRF-Token": res.body.csrfToken,
    };
    const post = (p: string) => request(app.baseUrl).post(p).ca(app.caPem).set(headers);
    const blocked = await request(app.baseUrl).get("/api/v1/sessions").ca(app.caPem).set(headers);
    expect(blocked.status).toBe(401);
    expect(blocked.body.reason).toBe("mfa_enrollment_required");

    const enroll = await post("/api/v1/auth/mfa/enroll");
    expect(enroll.body.otpauthUrl).toMatch(/^otpauth:\/\/totp\/Wardkeep:.+\?secret=[A-Z2-7]+.*issuer=Wardkeep/);
    expect(enroll.body.qrCodeDataUrl).toMatch(/^data:image\/png;base64,/);
    const when = clock
      .now()
      .toISOString()
      .replace("T", " ")
      .replace(/\.\d+Z$/, " UTC");
    const code = execFileSync("/usr/bin/oathtool", ["--totp", "-b", enroll.body.secret, "--now", when], { encoding: "utf8" }).trim();
    expectProblem(await post("/api/v1/auth/mfa/activate").send({ code: code === "000000" ? "111111" : "000000" }), 401, "unauthorized");
    const activated = await post("/api/v1/auth/mfa/activate").send({ code });
    expect(activated.status).toBe(200);
    expect(activated.body.recoveryCodes).toHaveLength(10);
    expect((await request(app.baseUrl).get("/api/v1/sessions").ca(app.caPem).set(headers)).status).toBe(200);
  });

  it("lets admins invite staff but not owners, and front desk nobody", async () => {
    expectProblem(await admin.agent.post("/api/v1/invites").send({ email: email(), role: "owner" }), 403, "forbidden");
    expectProblem(await admin.agent.post("/api/v1/invites").send({ email: email(), role: "super_admin" }), 403, "forbidden");
    const desk = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    expectProblem(await desk.agent.post("/api/v1/invites").send({ email: email(), role: "front_desk" }), 403, "forbidden");
    const denied = await auditEvents(app, { action: "access.denied" });
    expect(denied.some((e) => e.actor_user_id === desk.user.id && e.reason === "invite:create")).toBe(true);
    // Refused by the service (the role asked for), not the route: audited all the same.
    expect(denied.filter((e) => e.actor_user_id === admin.user.id && e.reason === "invite:create")).toHaveLength(2);
  });

  it("refuses to invite an address that already has an account", async () => {
    expectProblem(await admin.agent.post("/api/v1/invites").send({ email: admin.user.email, role: "auditor" }), 409, "conflict");
  });
});

describe("limits shared across replicas", () => {
  it("counts failed sign-ins made on two replicas towards one lockout", async () => {
    const user = await signIn(app, { role: "auditor", tenantId, mfa: false });
    const replica = await startTestAppliance({ db: app.db, clock });
    try {
      const on = (a: TestAppliance, password: string) => request(a.baseUrl).post("/api/v1/auth/login").ca(a.caPem).send({ email: user.user.email, password });
      for (let i = 0; i < 2; i++) expect((await on(app, `wrong-${i}-password`)).status).toBe(401);
      for (let i = 0; i < 2; i++) expect((await on(replica, `wrong-${i}-password`)).status).toBe(401);
      expect((await on(app, "wrong-5-password")).status).toBe(429);
      expect((await on(replica, user.password)).status).toBe(429);
    } finally {
      await replica.close();
    }
  });

  it("stops accepting invite guesses from a source after too many failures", async () => {
    // A second replica: same database, same root key file, a stricter per-source limit.
    const strict = await startTestAppliance({
      db: app.db,
      clock,
      env: { WARDKEEP_AUTH_IP_MAX_ATTEMPTS: "5", WARDKEEP_KEYS_KEY_FILE: path.join(app.dataDir, app.config.keys.keyFile) },
    });
    try {
      const { token } = await invite();
      clock.advanceMinutes(16); // a fresh counting window: earlier tests' failures came from this address too
      const guess = () => request(strict.baseUrl).post("/api/v1/invites/accept").ca(strict.caPem).send({ token: "wki_guess.guess", password: "quiet-lantern-5821" });
      for (let i = 0; i < 4; i++) expect((await guess()).status).toBe(400);
      expect((await guess()).status).toBe(400); // the fifth failure locks the source
      const limited = await request(strict.baseUrl).post("/api/v1/invites/accept").ca(strict.caPem).send({ token, password: "quiet-lantern-5821" });
      expectProblem(limited, 429, "too-many-requests");
      clock.advanceMinutes(16);
      expect((await request(strict.baseUrl).post("/api/v1/invites/accept").ca(strict.caPem).send({ token, password: "quiet-lantern-5821" })).status).toBe(201);
    } finally {
      await strict.close();
    }
  });
});
