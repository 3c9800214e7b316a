import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import pg from "pg";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
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

/** The code an authenticator app shows at the appliance's (test) time, computed by OATH Toolkit. */
function oathtool(secret: string): string {
  const when = clock
    .now()
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, " UTC");
  return execFileSync("/usr/bin/oathtool", ["--totp", "-b", secret, "--now", when], { encoding: "utf8" }).trim();
}

function cookieOf(res: request.Response): string {
  const line = setCookies(res).find((c) => c.startsWith("__Host-wardkeep_session=w"));
  if (!line) throw new Error("no session cookie");
  return line.split(";")[0]!;
}

async function superuserQuery<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: app.db.superuserUrl });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

describe("signing in", () => {
  it("sets a __Host- session cookie that is HttpOnly, Secure, SameSite=Strict, Path=/ and stores only its hash", async () => {
    const user = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    const res = await login(user.user.email, user.password);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ mfaRequired: false, mfaEnrollmentRequired: false, csrfToken: expect.any(String) });
    const line = setCookies(res).find((c) => c.startsWith("__Host-wardkeep_session="))!;
    const attributes = line.split(";").map((a) => a.trim());
    expect(attributes).toEqual(expect.arrayContaining(["Path=/", "Secure", "HttpOnly", "SameSite=Strict"]));
    expect(line).not.toMatch(/Domain=/i);
    const token = attributes[0]!.split("=")[1]!;
    expect(token.length).toBeGreaterThanOrEqual(40);
    const rows = await superuserQuery<{ token_hash: Buffer; row: string }>("SELECT token_hash, row_to_json(s)::text AS row FROM sessions s WHERE user_id = $1", [user.user.id]);
    expect(rows.some((r) => r.token_hash.equals(createHash("sha256").update(token).digest()))).toBe(true);
    for (const r of rows) expect(r.row).not.toContain(token);
  });

  it("answers an unknown email, a wrong password and a deactivated account the same way, after similar work", async () => {
    const user = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    const gone = await signIn(app, { role: "front_desk", tenantId, mfa: false });
    const admin = await signIn(app, { role: "admin", tenantId });
    expect((await admin.agent.patch(`/api/v1/users/${gone.user.id}`).send({ status: "deactivated" })).status).toBe(200);

    const timed = async (email: string, password: string) => {
      const started = performance.now();
      const res = await login(email, password);
      return { res, ms: performance.now() - started };
    };
    const unknown = await timed("nobody.here@hospital.example", "some-password-123");
    const wrong = await timed(user.user.email, "some-password-123");
    const deactivated = await timed(gone.user.email, gone.password);
    for (const { res } of [unknown, wrong, deactivated]) {
      expectProblem(res, 401, "unauthorized");
      expect(res.body.detail).toBe("the email or password is incorrect");
      expect(res.headers["set-cookie"]).toBeUndefined();
    }
    const strip = (b: Record<string, unknown>) => ({ ...b, requestId: undefined, instance: undefined });
    expect(strip(unknown.res.body)).toEqual(strip(wrong.res.body));
    expect(strip(deactivated.res.body)).toEqual(strip(wrong.res.body));
    // Both paths run one argon2id verification (tens of ms): an unknown address is not answered fast.
    expect(unknown.ms).toBeGreaterThan(wrong.ms * 0.4);
  });

  it("locks an account after 5 failed sign-ins, unknown addresses alike, and unlocks after 15 minutes", async () => {
    const user = await signIn(app, { role: "practitioner", tenantId, mfa: false });
    for (let i = 0; i < 4; i++) expect((await login(user.user.email, `wrong-password-${i}`)).status).toBe(401);
    const fifth = await login(user.user.email, "wrong-password-5");
    expectProblem(fifth, 429, "too-many-requests");
    expect(Number(fifth.headers["retry-after"])).toBe(900);
    expectProblem(await login(user.user.email, user.password), 429, "too-many-requests"); // even the right password

    const ghost = "ghost.account@hospital.example";
    for (let i = 0; i < 4; i++) await login(ghost, `wrong-password-${i}`);
    expectProblem(await login(ghost, "wrong-password-5"), 429, "too-many-requests");

    clock.advanceMinutes(15);
    expect((await login(user.user.email, user.password)).status).toBe(200);
    const events = await auditEvents(app, { action: "auth.lockout" });
    expect(events.some((e) => e.resource_id === user.user.id)).toBe(true);
  });

  it("asks for the TOTP code after the password and accepts the code oathtool computes", async () => {
    const enrolled = await signIn(app, { role: "practitioner", tenantId });
    clock.advance(31_000); // a new 30 s step: the enrollment code cannot be replayed
    const res = await login(enrolled.user.email, enrolled.password);
    expect(res.body).toMatchObject({ mfaRequired: true, mfaEnrollmentRequired: false });
    const headers = { Cookie: cookieOf(res), "X-CSRF-Token": res.body.csrfToken };
    const blocked = await request(app.baseUrl).get("/api/v1/sessions").ca(app.caPem).set(headers);
    expectProblem(blocked, 401, "unauthorized");
    expect(blocked.body.reason).toBe("mfa_required");

    const code = oathtool(enrolled.totpSecret!);
    expect((await post("/api/v1/auth/mfa").set(headers).send({ code })).status).toBe(200);
    expect((await request(app.baseUrl).get("/api/v1/sessions").ca(app.caPem).set(headers)).status).toBe(200);
    // RFC 6238 §5.2: the same code is not accepted twice, not even for step-up.
    const replay = await post("/api/v1/auth/mfa").set(headers).send({ code });
    expectProblem(replay, 401, "unauthorized");
    expect(replay.body.reason).toBe("invalid_code");
  });

  it("accepts each recovery code once", async () => {
    const user = await signIn(app, { role: "auditor", tenantId });
    expect(user.recoveryCodes).toHaveLength(10);
    const first = await login(user.user.email, user.password);
    const headers = { Cookie: cookieOf(first), "X-CSRF-Token": first.body.csrfToken };
    const ok = await post("/api/v1/auth/mfa").set(headers).send({ recoveryCode: user.recoveryCodes[0]!.toUpperCase() });
    expect(ok.status).toBe(200);
    expect(ok.body.recoveryCodesLeft).toBe(9);
    const second = await login(user.user.email, user.password);
    const again = await post("/api/v1/auth/mfa")
      .set({ Cookie: cookieOf(second), "X-CSRF-Token": second.body.csrfToken })
      .send({ recoveryCode: user.recoveryCodes[0] });
    expectProblem(again, 401, "unauthorized");
  });

  it("answers concurrent code submissions one by one: one succeeds, the rest are refused, none fails", async () => {
    const statuses: number[] = [];
    for (let round = 0; round < 4; round++) {
      const user = await signIn(app, { role: "practitioner", tenantId });
      clock.advance(31_000);
      const res = await login(user.user.email, user.password);
      const headers = { Cookie: cookieOf(res), "X-CSRF-Token": res.body.csrfToken };
      const wrong = user.totp() === "000000" ? "111111" : "000000";
      const bodies = [...Array(4)].flatMap(() => [{ code: user.totp() }, { code: wrong }, { recoveryCode: user.recoveryCodes[0]! }]);
      // Staggered, so some arrive while the first success commits (the interleaving that deadlocked).
      const answers = await Promise.all(bodies.map((b, i) => new Promise((r) => setTimeout(r, i * 4)).then(() => post("/api/v1/auth/mfa").set(headers).send(b))));
      statuses.push(...answers.map((a) => a.status));
    }
    expect(statuses.filter((s) => s >= 500)).toEqual([]);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(4);
  });

  it("locks the second factor after 5 wrong codes", async () => {
    const user = await signIn(app, { role: "practitioner", tenantId });
    const res = await login(user.user.email, user.password);
    const headers = { Cookie: cookieOf(res), "X-CSRF-Token": res.body.csrfToken };
    const wrong = user.totp() === "000000" ? "111111" : "000000";
    for (let i = 0; i < 4; i++) expect((await post("/api/v1/auth/mfa").set(headers).send({ code: wrong })).status).toBe(401);
    expectProblem(await post("/api/v1/auth/mfa").set(headers).send({ code: wrong }), 429, "too-many-requests");
    clock.advance(31_000);
    expectProblem(await post("/api/v1/auth/mfa").set(headers).send({ code: user.totp() }), 429, "too-many-requests");
    const failures = await auditEvents(app, { action: "auth.mfa.verify" });
    expect(failures.filter((e) => e.actor_user_id === user.user.id && e.outcome === "failure")).toHaveLength(5);
  });
});

describe("audit trail", () => {
  it("records sign-ins, failures, MFA and sign-outs with the actor", async () => {
    const user: SignedIn = await signIn(app, { role: "practitioner", tenantId });
    await login(user.user.email, "definitely-wrong-1");
    await user.agent.post("/api/v1/auth/logout");
    const events = (await auditEvents(app)).filter((e) => e.actor_user_id === user.user.id);
    const actions = events.map((e) => `${e.action}:${e.outcome}`);
    expect(actions).toEqual(expect.arrayContaining(["invite.accept:success", "auth.mfa.enroll.activate:success", "auth.login:failure", "auth.logout:success"]));
    expect(events.every((e) => e.tenant_id === tenantId && e.actor_role === "practitioner")).toBe(true);
    expect(JSON.stringify(events)).not.toContain(user.password);
  });
});
