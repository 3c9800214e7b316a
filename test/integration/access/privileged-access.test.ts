import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { expirePrivilegedAccess } from "../../../daemon/access/privileged-access.js";
import { SYSTEM_META } from "../../../daemon/kernel/request-meta.js";
import { createProvider, registerProviderKind, unregisterProviderKind, updateProvider } from "../../../daemon/sso/providers.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { TestClock } from "../../helpers/clock.js";

/**
 * Break-glass local accounts and just-in-time privileged access (docs/sso.md), over HTTPS on a
 * real appliance with a controllable clock: local sign-in turned off except for flagged accounts,
 * each use of one raising an alert; a privileged role asked for, approved by a second admin, in
 * force in the session at once and gone at its expiry before any job has run.
 */

let app: TestAppliance;
const clock = new TestClock(new Date("2026-12-07T08:00:00Z"));

beforeAll(async () => {
  // No job runner: the expiry job (every minute, by the wall clock) could mark the grant between the
  // clock's move and the checks of what the role is before any job has run; the test runs it itself.
  app = await startTestAppliance({ clock, env: { WARDKEEP_AUTH_IDLE_TIMEOUT_MINUTES: "60", WARDKEEP_JOBS_ENABLED: "false" } });
  // A provider kind with nothing to configure: enough for a tenant to have an enabled provider.
  registerProviderKind("test-directory", { configSchema: z.object({}).strict() });
}, 60_000);

afterAll(async () => {
  unregisterProviderKind("test-directory");
  await app?.close();
});

const login = (email: string, password: string) => request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send({ email, password });

async function auditOf(who: SignedIn, action: string) {
  let res = await who.agent.get(`/api/v1/audit?action=${action}`);
  for (let i = 0; i < 50 && res.body.events?.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    res = await who.agent.get(`/api/v1/audit?action=${action}`);
  }
  return res.body.events as { actor: { userId: string | null; role: string | null }; resourceId: string; reason: string | null; outcome: string }[];
}

describe("break-glass local accounts", () => {
  it("turns local sign-in off for everyone but the flagged accounts, and alerts on each use", async () => {
    const tenant = await createTenant(app, "Glass General");
    const owner = await signIn(app, { role: "owner", tenantId: tenant.id });
    const keeper = await signIn(app, { role: "admin", tenantId: tenant.id });
    const nurse = await signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false });

    const initial = await owner.agent.get("/api/v1/settings/security");
    expect(initial.body).toMatchObject({ localSignIn: "everyone", breakGlassAccounts: 0 });
    const noProvider = await owner.agent.put("/api/v1/settings/security").send({ localSignIn: "break_glass_only" });
    expect(noProvider.status).toBe(409);
    expect(noProvider.body.detail).toBe("enable an identity provider before turning local sign-in off");

    const ownerActor = { userId: owner.user.id, role: "owner" as const, tenantId: tenant.id, via: "session" as const };
    const provider = await createProvider(app.ctx, ownerActor, { kind: "test-directory", name: "Hospital directory", config: {} }, SYSTEM_META, app.baseUrl);
    await updateProvider(app.ctx, ownerActor, provider.id, { enabled: true }, SYSTEM_META, app.baseUrl);
    const noAccount = await owner.agent.put("/api/v1/settings/security").send({ localSignIn: "break_glass_only" });
    expect(noAccount.status).toBe(409);
    expect(noAccount.body.detail).toBe("flag at least one break-glass account before turning local sign-in off");

    await owner.stepUp();
    const withoutAuthenticator = await owner.agent.patch(`/api/v1/users/${nurse.user.id}`).send({ breakGlassAccount: true });
    expect(withoutAuthenticator.status).toBe(409);
    expect(withoutAuthenticator.body.detail).toBe("a break-glass account needs an authenticator app first (it signs in with password and TOTP)");
    const flagged = await owner.agent.patch(`/api/v1/users/${keeper.user.id}`).send({ breakGlassAccount: true });
    expect(flagged.status).toBe(200);
    expect(flagged.body).toMatchObject({ id: keeper.user.id, breakGlassAccount: true, source: "local" });

    const off = await owner.agent.put("/api/v1/settings/security").send({ localSignIn: "break_glass_only" });
    expect(off.status).toBe(200);
    expect(off.body).toMatchObject({ localSignIn: "break_glass_only", breakGlassAccounts: 1 });

    // Everyone else is sent to the identity provider, the owner too; a wrong password stays the generic answer.
    const refused = await login(nurse.user.email, nurse.password);
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ detail: "local sign-in is turned off for your organisation; sign in through its identity provider", reason: "local_sign_in_off" });
    expect((await login(owner.user.email, owner.password)).status).toBe(403);
    const wrong = await login(nurse.user.email, "not-the-password");
    expect(wrong.status).toBe(401);
    expect(wrong.body.detail).toBe("the email or password is incorrect");

    // The break-glass account keeps password + TOTP, and its use is an alert every time.
    for (let use = 1; use <= 2; use++) {
      const glass = await login(keeper.user.email, keeper.password);
      expect(glass.status).toBe(200);
      expect(glass.body).toMatchObject({ mfaRequired: true });
    }
    const alerts = await owner.agent.get("/api/v1/alerts");
    const alert = alerts.body.alerts.find((a: { kind: string }) => a.kind === "auth.break_glass_account_used");
    expect(alert).toMatchObject({
      tenantId: tenant.id,
      severity: "critical",
      key: keeper.user.id,
      summary: `break-glass account ${keeper.user.id} signed in with its local password`,
      occurrences: 2,
    });
    const uses = (await auditOf(owner, "auth.break_glass_account.use")).filter((e) => e.resourceId === keeper.user.id);
    expect(uses).toHaveLength(2);

    // The last break-glass account of a tenant without local sign-in stays one.
    await owner.stepUp();
    const unflag = await owner.agent.patch(`/api/v1/users/${keeper.user.id}`).send({ breakGlassAccount: false });
    expect(unflag.status).toBe(409);
    expect(unflag.body.detail).toBe("local sign-in is for break-glass accounts only: keep one, or allow local sign-in for everyone first");
    // Back to everyone: the nurse signs in with the password again.
    expect((await owner.agent.put("/api/v1/settings/security").send({ localSignIn: "everyone" })).status).toBe(200);
    expect((await login(nurse.user.email, nurse.password)).status).toBe(200);
  });
});

describe("just-in-time privileged access", () => {
  it("gives a role for the approved time only, decided by a second admin, and audits grant and expiry", async () => {
    const tenant = await createTenant(app, "JIT Memorial");
    const owner = await signIn(app, { role: "owner", tenantId: tenant.id });
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const nurse = await signIn(app, { role: "practitioner", tenantId: tenant.id });
    expect((await nurse.agent.get("/api/v1/users")).status).toBe(403);

    const tooLong = await nurse.agent.post("/api/v1/privileged-access").send({ role: "admin", minutes: 180, reason: "INC-4411 fix the rota" });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.detail).toBe("privileged access lasts at most 120 minutes here (access.privilegedAccessMaxMinutes)");
    const asked = await nurse.agent.post("/api/v1/privileged-access").send({ role: "admin", minutes: 30, reason: "INC-4411 fix the rota" });
    expect(asked.status).toBe(201);
    expect(asked.body).toMatchObject({ userId: nurse.user.id, baseRole: "practitioner", role: "admin", status: "pending", active: false, expiresAt: null });
    const again = await nurse.agent.post("/api/v1/privileged-access").send({ role: "auditor", minutes: 10, reason: "another request" });
    expect(again.status).toBe(409);
    // Still a practitioner while it waits.
    expect((await nurse.agent.get("/api/v1/users")).status).toBe(403);

    // Nobody approves their own request.
    const own = await admin.agent.post("/api/v1/privileged-access").send({ role: "auditor", minutes: 15, reason: "quarterly audit sampling" });
    expect(own.status).toBe(201);
    const self = await admin.agent.post(`/api/v1/privileged-access/${own.body.id}/approve`);
    expect(self.status).toBe(403);
    expect(self.body.detail).toBe("a second administrator must decide on your own request");
    expect((await admin.agent.post(`/api/v1/privileged-access/${own.body.id}/end`)).body).toMatchObject({ status: "ended", endReason: "ended-early" });

    const approvedAt = clock.now();
    const approved = await owner.agent.post(`/api/v1/privileged-access/${asked.body.id}/approve`);
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ status: "approved", decidedBy: owner.user.id, active: true, expiresAt: new Date(approvedAt.getTime() + 30 * 60_000).toISOString() });
    // In force in the session the nurse already has, from the next request.
    const session = await nurse.agent.get("/api/v1/auth/session");
    expect(session.body.user.role).toBe("admin");
    expect((await nurse.agent.get("/api/v1/users")).status).toBe(200);

    // Past its time the role is gone at once, though no job has marked it yet.
    clock.advance(30 * 60_000 + 1_000);
    expect((await nurse.agent.get("/api/v1/users")).status).toBe(403);
    expect((await nurse.agent.get("/api/v1/auth/session")).body.user.role).toBe("practitioner");
    const mine = await nurse.agent.get("/api/v1/privileged-access");
    expect(mine.body).toEqual([expect.objectContaining({ id: asked.body.id, status: "approved", active: false })]);

    expect(await expirePrivilegedAccess(app.ctx)).toEqual({ expired: 1 });
    expect(await expirePrivilegedAccess(app.ctx)).toEqual({ expired: 0 });
    const listed = await owner.agent.get("/api/v1/privileged-access");
    expect(listed.body.find((g: { id: string }) => g.id === asked.body.id)).toMatchObject({ status: "ended", endReason: "expired" });
    expect(listed.body).toHaveLength(2);

    const granted = (await auditOf(owner, "privileged_access.grant")).find((e) => e.resourceId === asked.body.id);
    expect(granted).toMatchObject({ actor: { userId: owner.user.id, role: "owner" }, outcome: "success" });
    const expired = (await auditOf(owner, "privileged_access.expire")).find((e) => e.resourceId === asked.body.id);
    expect(expired).toMatchObject({ actor: { userId: null, role: "system" }, reason: `admin for user ${nurse.user.id} ended at ${approved.body.expiresAt}` });
  });
});
