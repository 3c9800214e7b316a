import type { Browser, BrowserContext, Page } from "playwright-core";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, totpCode, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot, watchForViolations } from "../helpers/browser.js";
import { signInAtIdp, startTestIdp, type TestIdp } from "../helpers/oidc-idp.js";

/**
 * Hospital sign-in through OpenID Connect, end to end: one appliance, two tenants, each with its
 * own real OpenID Connect provider (oidc-provider on loopback), and Chromium going through the
 * login page, the IdP's sign-in form and back. Attacks are refused with the one generic message
 * in the browser and the precise reason in the audit trail.
 */
let app: TestAppliance;
let browser: Browser;
let tenantA: TenantRef;
let tenantB: TenantRef;
let adminA: SignedIn;
let adminA2: SignedIn;
let adminB: SignedIn;
let idpA: TestIdp;
let idpB: TestIdp;
let providerA: string;
let providerB: string;
let mgreySecret = "";

const GENERIC = /signing in through your organisation's identity provider did not work/i;

async function addProvider(admin: SignedIn, idp: TestIdp, name: string): Promise<string> {
  const created = await admin.agent
    .post("/api/v1/identity-providers")
    .send({
      kind: "oidc",
      name,
      config: { issuer: idp.issuer, clientId: idp.clientId, scopes: ["openid", "profile", "email", "groups"] },
      secrets: { clientSecret: idp.clientSecret },
    })
    .expect(201);
  expect(created.body.enabled).toBe(false);
  expect(created.body.hasSecrets).toBe(true);
  expect(JSON.stringify(created.body)).not.toContain(idp.clientSecret);
  idp.allowRedirect(created.body.redirectUri as string);
  idp.allowRedirect(`${app.baseUrl}/`);
  return created.body.id as string;
}

async function failedSignIns(admin: SignedIn): Promise<{ reason: string; resourceId: string | null; requestId: string | null }[]> {
  const res = await admin.agent.get("/api/v1/audit?action=auth.login&outcome=failure&limit=50").expect(200);
  return res.body.events as { reason: string; resourceId: string | null; requestId: string | null }[];
}

/** Signs in at the IdP's own form (as the hospital's IdP would show it). */
const atIdp = signInAtIdp;

async function freshPage(): Promise<{ context: BrowserContext; page: Page; violations: string[] }> {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  return { context, page, violations: watchForViolations(page) };
}

/** The generic refusal on the login page, and its reference (the request id in the audit trail). */
async function refusedOnLoginPage(page: Page): Promise<string> {
  await page.waitForURL(/#\/login\?sso_error=/);
  await expect.poll(() => page.getByRole("alert").first().textContent(), { timeout: 10_000 }).toMatch(GENERIC);
  return new URL(page.url().replace("#/login", "")).searchParams.get("sso_error") ?? "";
}

beforeAll(async () => {
  await ensureAdminUiBuilt();
  app = await startTestAppliance();
  browser = await launchBrowser();
  tenantA = await createTenant(app, "St. Mary's");
  tenantB = await createTenant(app, "Riverside Clinic");
  adminA = await signIn(app, { role: "admin", tenantId: tenantA.id });
  adminA2 = await signIn(app, { role: "admin", tenantId: tenantA.id });
  adminB = await signIn(app, { role: "admin", tenantId: tenantB.id });
  idpA = await startTestIdp({
    accounts: [
      { sub: "u-grey", preferred_username: "mgrey", email: "meredith.grey@stmarys.example", name: "Meredith Grey", groups: ["wardkeep-practitioners"] },
      { sub: "u-bailey", preferred_username: "mbailey", email: "miranda.bailey@stmarys.example", name: "Miranda Bailey", groups: ["wardkeep-admins"] },
      { sub: "u-nobody", preferred_username: "visitor", email: "visitor@stmarys.example", name: "Vera Visitor", groups: ["cafeteria"] },
    ],
    applianceCa: app.caPem,
  });
  idpB = await startTestIdp({ accounts: [{ sub: "u-b1", preferred_username: "bwell", email: "b.well@riverside.example", name: "Bo Well", groups: ["staff"] }] });
  providerA = await addProvider(adminA, idpA, "St. Mary's Entra ID");
  providerB = await addProvider(adminB, idpB, "Riverside Keycloak");
  await adminA.agent
    .put("/api/v1/identity-providers/rules")
    .send({
      rules: [
        { source: "group", match: "equals", value: "wardkeep-practitioners", role: "practitioner" },
        { source: "group", match: "equals", value: "wardkeep-admins", role: "admin" },
      ],
    })
    .expect(200);
  await adminB.agent
    .put("/api/v1/identity-providers/rules")
    .send({ rules: [{ source: "group", match: "equals", value: "staff", role: "front_desk" }] })
    .expect(200);
  await adminA.agent.patch(`/api/v1/identity-providers/${providerA}`).send({ enabled: true }).expect(200);
  await adminB.agent.patch(`/api/v1/identity-providers/${providerB}`).send({ enabled: true }).expect(200);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await idpA?.close();
  await idpB?.close();
  await app?.close();
});

describe("OpenID Connect sign-in", () => {
  it("signs in through the IdP and lands in the console with the role the rules give, showing the person's name", async () => {
    const { context, page, violations } = await freshPage();
    await page.goto(`${app.baseUrl}/#/login?tenant=${tenantA.slug}`);
    // Only the tenant's own enabled providers have a button.
    await expect.poll(() => page.getByTestId("sso-button").allTextContents(), { timeout: 10_000 }).toEqual(["Sign in with St. Mary's Entra ID"]);
    await page.getByRole("link", { name: "Sign in with St. Mary's Entra ID" }).click();
    await atIdp(page, "mgrey");
    await page.waitForURL(/#\/$/);
    await expect.poll(() => page.getByTestId("signed-in-name").textContent(), { timeout: 10_000 }).toBe("Meredith Grey");
    const who = await page.evaluate(async () => (await fetch("/api/v1/auth/session")).json());
    expect(who.user).toMatchObject({ email: "meredith.grey@stmarys.example", role: "practitioner", tenantId: tenantA.id });
    await screenshot(page, "sso-signed-in");
    expect(violations).toEqual([]);

    // Signing out ends the appliance session and sends the browser to the IdP's end-session endpoint.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL((u) => u.href.startsWith(`${idpA.issuer}/session/end`));
    const after = await context.request.get(`${app.baseUrl}/api/v1/auth/session`);
    expect(after.status()).toBe(401);
    await context.close();
  });

  it("asks for local TOTP as well where the role's MFA policy says so", async () => {
    await adminA.agent
      .put("/api/v1/identity-providers/mfa-policy")
      .send({ roles: { practitioner: "local" } })
      .expect(200);
    const { context, page } = await freshPage();
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
    await atIdp(page, "mgrey", { mfa: true });
    // No authenticator yet: enrolment first, as for a password sign-in under enforced MFA.
    await page.waitForURL(/#\/mfa$/);
    expect((await (await context.request.get(`${app.baseUrl}/api/v1/auth/session`)).json()).stage).toBe("mfa_enrollment_required");
    await context.close();

    await adminA.agent
      .put("/api/v1/identity-providers/mfa-policy")
      .send({ roles: { practitioner: "idp" } })
      .expect(200);
  });

  it("keeps a rule granting admin pending until a second admin approves it; the dry run shows what a change would do", async () => {
    // Bailey's group maps to admin, saved by adminA: pending, so no rule admits her yet.
    const { context, page } = await freshPage();
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
    await atIdp(page, "mbailey");
    const ref = await refusedOnLoginPage(page);
    expect((await failedSignIns(adminA)).find((e) => e.requestId === ref)?.reason).toBe("sso: no rule matched (1 groups received)");

    const rules = (await adminA.agent.get("/api/v1/identity-providers/rules").expect(200)).body.rules as { id: string; role: string; status: string }[];
    const adminRule = rules.find((r) => r.role === "admin")!;
    expect(adminRule.status).toBe("pending");
    const own = await adminA.agent.post(`/api/v1/identity-providers/rules/${adminRule.id}/approve`).expect(403);
    expect(own.body.detail).toMatch(/second administrator/);
    const approved = await adminA2.agent.post(`/api/v1/identity-providers/rules/${adminRule.id}/approve`).expect(200);
    expect(approved.body).toMatchObject({ status: "active", approvedBy: adminA2.user.id });

    // The IdP remembers her sign-in: it sends the browser straight back.
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
    await page.waitForURL(/#\/$/);
    expect((await (await context.request.get(`${app.baseUrl}/api/v1/auth/session`)).json()).user.role).toBe("admin");
    await context.close();

    // Proposed: practitioners become front desk; the admin rule unchanged keeps its approval.
    const dry = await adminA.agent
      .post("/api/v1/identity-providers/rules/dry-run")
      .send({
        rules: [
          { source: "group", match: "equals", value: "wardkeep-practitioners", role: "front_desk" },
          { source: "group", match: "equals", value: "wardkeep-admins", role: "admin" },
        ],
      })
      .expect(200);
    const byEmail = Object.fromEntries((dry.body.users as { email: string; change: string; proposedRole: string }[]).map((u) => [u.email, u]));
    expect(byEmail["meredith.grey@stmarys.example"]).toMatchObject({ change: "role_change", proposedRole: "front_desk" });
    expect(byEmail["miranda.bailey@stmarys.example"]).toMatchObject({ change: "unchanged", proposedRole: "admin" });
    // Nothing was saved.
    expect((await adminA.agent.get("/api/v1/identity-providers/rules").expect(200)).body.rules[0].role).toBe("practitioner");
  });

  it("shows an admin what a test sign-in received, before anyone can sign in with it", async () => {
    const { context, page } = await openScreen(browser, app.baseUrl, adminA.cookie);
    const started = await page.evaluate(
      async ([id, csrf]) => (await fetch(`/api/v1/identity-providers/${id}/test`, { method: "POST", headers: { "X-CSRF-Token": csrf! } })).json(),
      [providerA, adminA.csrfToken] as const,
    );
    await page.goto(started.url as string);
    await atIdp(page, "visitor");
    await page.waitForURL(/#\/sign-in-providers\?test=/);
    const result = await adminA.agent.get(`/api/v1/identity-providers/${providerA}/tests/${started.testId}`).expect(200);
    expect(result.body).toMatchObject({ status: "received", error: null });
    expect(result.body.identity).toMatchObject({ subject: "u-nobody", email: "visitor@stmarys.example", groups: ["cafeteria"], role: null });
    // Another tenant's admin cannot read it.
    await adminB.agent.get(`/api/v1/identity-providers/${providerA}/tests/${started.testId}`).expect(404);
    await context.close();
  });

  it("refuses an authorization response of another tenant's IdP (issuer mix-up)", async () => {
    const { context, page } = await freshPage();
    // The IdP's redirects are watched, not stopped: B's callback is answered (Bo signs in to
    // tenant B), and A's authorization request is left at A's form, its state noted.
    let fromB = "";
    let toA = "";
    page.on("request", (r) => {
      if (r.url().includes(`/api/v1/sso/oidc/${providerB}/callback`)) fromB = r.url();
      if (r.url().startsWith(`${idpA.issuer}/auth?`)) toA = r.url();
    });
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerB}/start`);
    await atIdp(page, "bwell");
    await expect.poll(() => fromB).not.toBe("");
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
    await expect.poll(() => toA).not.toBe("");
    const b = new URL(fromB).searchParams;
    const stateA = new URL(toA).searchParams.get("state")!;
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/callback?${new URLSearchParams({ code: b.get("code")!, state: stateA, iss: b.get("iss")! })}`);
    const ref = await refusedOnLoginPage(page);
    const event = (await failedSignIns(adminA)).find((e) => e.requestId === ref);
    expect(event?.reason).toMatch(/"iss"/);
    // Tenant B's trail does not hold tenant A's refusal.
    expect((await failedSignIns(adminB)).find((e) => e.requestId === ref)).toBeUndefined();
    await context.close();
  });

  it("refuses a wrong state with the generic message, and audits the precise reason", async () => {
    const { context, page } = await freshPage();
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/callback?code=abc&state=not-a-state-we-sent`);
    const ref = await refusedOnLoginPage(page);
    const events = await failedSignIns(adminA);
    expect(events.find((e) => e.requestId === ref)?.reason).toBe("sso: wrong state: no sign-in was started with it");
    await context.close();
  });

  for (const [tamper, reason] of [
    ["wrong-nonce", /nonce/],
    ["expired", /"exp"/],
    ["alg-none", /alg/],
    ["wrong-audience", /"aud"/],
  ] as const) {
    it(`refuses an ID token with ${tamper} and audits why`, async () => {
      const { context, page } = await freshPage();
      await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
      idpA.tamper = tamper;
      await atIdp(page, "mgrey");
      const ref = await refusedOnLoginPage(page);
      const event = (await failedSignIns(adminA)).find((e) => e.requestId === ref);
      expect(event?.resourceId).toBe(providerA);
      expect(event?.reason).toMatch(reason);
      await context.close();
    });
  }
});

describe("MFA asserted by the IdP", () => {
  /** Where a sign-in through the IdP lands, and the session's stage as the API reports it. */
  async function signInAtIdp(username: string, opts: { mfa?: boolean; acr?: string } = {}) {
    const { context, page } = await freshPage();
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
    await page.getByRole("heading", { name: "Hospital IdP sign-in" }).waitFor({ timeout: 10_000 });
    if (opts.acr) await page.getByLabel("Assurance level").fill(opts.acr);
    await atIdp(page, username, opts);
    await page.waitForURL(/#\/(mfa|login)?$/);
    const session = await (await context.request.get(`${app.baseUrl}/api/v1/auth/session`)).json();
    return { context, page, stage: session.stage as string, landed: new URL(page.url()).hash };
  }

  beforeAll(async () => {
    // Practitioners of tenant A must use a second factor; the role's IdP policy is `idp` (the default).
    await adminA.stepUp();
    await adminA.agent
      .put("/api/v1/settings/security")
      .send({ mfaRequiredRoles: ["practitioner"] })
      .expect(200);
    await adminA.agent
      .put("/api/v1/identity-providers/mfa-policy")
      .send({ roles: { practitioner: "idp" } })
      .expect(200);
  });

  it("signs in without local TOTP when the IdP says a second factor was used (amr mfa)", async () => {
    const { context, page, stage, landed } = await signInAtIdp("mgrey", { mfa: true });
    expect(landed).toBe("#/");
    expect(stage).toBe("active");
    await expect.poll(() => page.getByTestId("signed-in-name").textContent(), { timeout: 10_000 }).toBe("Meredith Grey");
    const events = (await adminA.agent.get("/api/v1/audit?action=auth.login&outcome=success&limit=5").expect(200)).body.events as { reason: string }[];
    expect(events[0]?.reason).toBe(`via oidc provider ${providerA}, MFA at the IdP`);
    // The account the IdP's sign-in made just in time is marked as the IdP's, a local one as local.
    const users = (await adminA.agent.get("/api/v1/users").expect(200)).body as { email: string; source: string }[];
    expect(users.find((u) => u.email === "meredith.grey@stmarys.example")?.source).toBe("idp");
    expect(users.find((u) => u.email === adminA.user.email)?.source).toBe("local");
    await context.close();
  });

  it("asks for the local second factor when the IdP asserts none: enrolment first, then the code", async () => {
    const first = await signInAtIdp("mgrey");
    expect(first.landed).toBe("#/mfa");
    expect(first.stage).toBe("mfa_enrollment_required");
    // She sets up an authenticator, as the console's enrolment page has her do.
    const secret = await first.page.evaluate(async () => {
      const s = await (await fetch("/api/v1/auth/session")).json();
      const res = await fetch("/api/v1/auth/mfa/enroll", { method: "POST", headers: { "X-CSRF-Token": s.csrfToken } });
      return (await res.json()).secret as string;
    });
    const activated = await first.page.evaluate(
      async ([code]) => {
        const s = await (await fetch("/api/v1/auth/session")).json();
        return (
          await fetch("/api/v1/auth/mfa/activate", { method: "POST", headers: { "X-CSRF-Token": s.csrfToken, "content-type": "application/json" }, body: JSON.stringify({ code }) })
        ).status;
      },
      [totpCode(secret, app.ctx.clock.now())] as const,
    );
    expect(activated).toBe(200);
    await first.context.close();

    const second = await signInAtIdp("mgrey");
    expect(second.landed).toBe("#/login");
    expect(second.stage).toBe("mfa_required");
    await expect.poll(() => second.page.getByRole("heading", { name: "Two-step verification" }).isVisible(), { timeout: 10_000 }).toBe(true);
    await second.context.close();

    // An acr the provider lists as MFA counts as well as amr.
    await adminA.agent
      .patch(`/api/v1/identity-providers/${providerA}`)
      .send({ mfaAcrValues: ["urn:stmarys:loa:mfa"] })
      .expect(200);
    const byAcr = await signInAtIdp("mgrey", { acr: "urn:stmarys:loa:mfa" });
    expect(byAcr).toMatchObject({ landed: "#/", stage: "active" });
    await byAcr.context.close();
    const otherAcr = await signInAtIdp("mgrey", { acr: "urn:stmarys:loa:password" });
    expect(otherAcr).toMatchObject({ landed: "#/login", stage: "mfa_required" });
    await otherAcr.context.close();
    mgreySecret = secret;
  });

  it("asks for local TOTP even when the IdP asserts MFA, where the role's policy is local TOTP", async () => {
    await adminA.agent
      .put("/api/v1/identity-providers/mfa-policy")
      .send({ roles: { practitioner: "local" } })
      .expect(200);
    const { context, page, stage, landed } = await signInAtIdp("mgrey", { mfa: true });
    expect(landed).toBe("#/login");
    expect(stage).toBe("mfa_required");
    // The code from her authenticator finishes the sign-in in the browser.
    await page.getByRole("heading", { name: "Two-step verification" }).waitFor({ timeout: 10_000 });
    await page.getByLabel("Authentication code").fill(totpCode(mgreySecret, new Date(app.ctx.clock.now().getTime() + 30_000)));
    await page.getByRole("button", { name: "Verify" }).click();
    await expect.poll(() => page.getByTestId("signed-in-name").textContent(), { timeout: 10_000 }).toBe("Meredith Grey");
    expect((await (await context.request.get(`${app.baseUrl}/api/v1/auth/session`)).json()).stage).toBe("active");
    await context.close();
    await adminA.agent
      .put("/api/v1/identity-providers/mfa-policy")
      .send({ roles: { practitioner: "idp" } })
      .expect(200);
  });
});

describe("step-up at the IdP", () => {
  type Call = { status: number; body: Record<string, unknown> };
  /** A call from the browser's own session (cookie and CSRF token), as the console makes it. */
  async function call(page: Page, method: string, path: string, body?: unknown): Promise<Call> {
    return page.evaluate(
      async ([m, p, b]) => {
        const s = await (await fetch("/api/v1/auth/session")).json();
        const res = await fetch(p as string, {
          method: m as string,
          headers: { "X-CSRF-Token": s.csrfToken, "content-type": "application/json" },
          ...(b === undefined ? {} : { body: JSON.stringify(b) }),
        });
        return { status: res.status, body: await res.json().catch(() => ({})) };
      },
      [method, path, body] as const,
    );
  }
  const changePolicy = (page: Page) => call(page, "PUT", "/api/v1/identity-providers/mfa-policy", { roles: { front_desk: "idp" } });
  const stepUpEvents = async () =>
    (await adminA.agent.get("/api/v1/audit?action=auth.mfa.step_up&limit=20").expect(200)).body.events as {
      outcome: string;
      reason: string;
      requestId: string;
      actor: { userId: string | null };
    }[];

  let bailey: { context: BrowserContext; page: Page };

  beforeAll(async () => {
    // Miranda Bailey is an admin through the IdP (the rule approved above); she signs in with a password only, so no second factor is fresh.
    const { context, page } = await freshPage();
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
    await atIdp(page, "mbailey");
    await page.waitForURL(/#\/$/);
    bailey = { context, page };
  });
  afterAll(async () => {
    await bailey?.context.close();
  });

  /** Starts a step-up from Bailey's session and returns the IdP URL the console sends the browser to. */
  async function startStepUp(): Promise<string> {
    const started = await call(bailey.page, "POST", "/api/v1/sso/step-up", { returnTo: "/sign-in-providers" });
    expect(started.status).toBe(201);
    return started.body.url as string;
  }

  it("re-authenticates at the IdP with prompt=login and max_age=0, after which the sensitive action succeeds", async () => {
    const refused = await changePolicy(bailey.page);
    expect(refused.status).toBe(403);
    expect(refused.body.type).toMatch(/step-up-required$/);

    const url = new URL(await startStepUp());
    expect(url.origin).toBe(idpA.issuer);
    expect(url.searchParams.get("prompt")).toBe("login");
    expect(url.searchParams.get("max_age")).toBe("0");
    await bailey.page.goto(url.href);
    // The IdP has her session, yet asks her to sign in again.
    await atIdp(bailey.page, "mbailey", { mfa: true });
    await bailey.page.waitForURL(/#\/sign-in-providers$/);
    expect((await changePolicy(bailey.page)).status).toBe(200);
    const event = (await stepUpEvents()).find((e) => e.outcome === "success");
    expect(event).toMatchObject({ reason: `at the IdP: oidc provider ${providerA}` });
  });

  for (const [what, act, reason] of [
    ["the IdP asserts no second factor", async (page: Page) => atIdp(page, "mbailey"), /^sso: step-up: the IdP did not assert a second factor/],
    [
      "the IdP answers with an old sign-in (auth_time)",
      async (page: Page) => {
        idpA.tamper = "stale-auth-time";
        await atIdp(page, "mbailey", { mfa: true });
      },
      /auth_time|End-User authentication/,
    ],
  ] as const) {
    it(`refuses the step-up when ${what}, with the generic message, and the action stays refused`, async () => {
      // A fresh session of hers, so the step-up above does not count.
      await bailey.context.close();
      const { context, page } = await freshPage();
      await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
      await atIdp(page, "mbailey");
      await page.waitForURL(/#\/$/);
      bailey = { context, page };
      await page.goto(await startStepUp());
      await act(page);
      // She stays signed in; the console's home page shows the generic message and the reference.
      await page.waitForURL(/#\/\?sso_error=/);
      await expect.poll(() => page.getByTestId("sso-refused").textContent(), { timeout: 10_000 }).toMatch(/Confirming at your organisation's identity provider did not work/);
      const ref = new URL(page.url().replace("#/", "")).searchParams.get("sso_error");
      expect((await stepUpEvents()).find((e) => e.requestId === ref)).toMatchObject({ outcome: "failure", reason: expect.stringMatching(reason) });
      expect((await changePolicy(page)).status).toBe(403);
    });
  }

  it("refuses the step-up when another person signs in at the IdP; her IdP session, and so her appliance session, end too", async () => {
    await bailey.context.close();
    const { context, page } = await freshPage();
    await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
    await atIdp(page, "mbailey");
    await page.waitForURL(/#\/$/);
    bailey = { context, page };
    const before = (await stepUpEvents()).length;
    await page.goto(await startStepUp());
    await atIdp(page, "mgrey", { mfa: true });
    // The IdP ends Bailey's session when another account signs in there, and tells the appliance
    // (back-channel logout) before the browser comes back; either check refuses the step-up.
    await expect
      .poll(async () => (await stepUpEvents()).slice(0, (await stepUpEvents()).length - before).find((e) => e.outcome === "failure")?.reason, { timeout: 10_000 })
      .toMatch(/^sso: step-up: (another person signed in at the IdP|the session it was for has ended)/);
    expect((await changePolicy(page)).status).not.toBe(200);
    // Her next sign-in makes a new session for the tests below.
    await context.close();
    const next = await freshPage();
    await next.page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
    await atIdp(next.page, "mbailey");
    await next.page.waitForURL(/#\/$/);
    bailey = next;
  });

  it("refuses to step up at the IdP a local session, and a role whose policy asks for the authenticator code", async () => {
    const local = await adminA.agent.post("/api/v1/sso/step-up").send({}).expect(409);
    expect(local.body.detail).toBe("this session was not made through an identity provider: confirm with your authenticator code");
    await adminA.stepUp();
    // The step-up half of the policy alone: sign-in still accepts the IdP's MFA.
    const set = await adminA.agent
      .put("/api/v1/identity-providers/mfa-policy")
      .send({ stepUp: { admin: "local" } })
      .expect(200);
    expect([set.body.roles.admin, set.body.stepUp.admin]).toEqual(["idp", "local"]);
    const byPolicy = await call(bailey.page, "POST", "/api/v1/sso/step-up", {});
    expect(byPolicy).toMatchObject({ status: 409, body: { detail: "your role's policy asks for your authenticator code, not the identity provider's" } });
    await adminA.agent
      .put("/api/v1/identity-providers/mfa-policy")
      .send({ stepUp: { admin: "idp" } })
      .expect(200);
  });
});

describe("back-channel logout", () => {
  const logoutPath = () => `/api/v1/sso/oidc/${providerA}/backchannel-logout`;
  const postToken = (base: string, token: string) => request(base).post(logoutPath()).ca(app.caPem).type("form").send({ logout_token: token });
  const logoutEvents = async () =>
    (await adminA.agent.get("/api/v1/audit?action=auth.logout&limit=30").expect(200)).body.events as { outcome: string; reason: string; requestId: string }[];

  it("ends the person's appliance sessions on every replica when they sign out at the IdP", async () => {
    const replica = await startTestAppliance({ db: app.db, dataDir: app.dataDir });
    try {
      const { context, page } = await freshPage();
      await page.goto(`${app.baseUrl}/api/v1/sso/oidc/${providerA}/start`);
      await atIdp(page, "mgrey", { mfa: true });
      await page.waitForURL(/#\/$/);
      const cookie = (await context.cookies()).filter((c) => c.name.startsWith("__Host-wardkeep_session")).map((c) => `${c.name}=${c.value}`)[0]!;
      const sessionOn = (base: string) => request(base).get("/api/v1/auth/session").ca(app.caPem).set("Cookie", cookie);
      expect((await sessionOn(replica.baseUrl)).body.user.email).toBe("meredith.grey@stmarys.example");

      // She signs out at the hospital's IdP (from another application, say): the IdP tells the appliance.
      await page.goto(`${idpA.issuer}/session/end`);
      await page.getByRole("button", { name: /yes/i }).click();
      await expect.poll(async () => (await sessionOn(app.baseUrl)).status, { timeout: 10_000 }).toBe(401);
      expect((await sessionOn(replica.baseUrl)).status).toBe(401);
      expect((await logoutEvents()).find((e) => e.outcome === "success" && e.reason.startsWith("back-channel logout"))?.reason).toBe(
        `back-channel logout from oidc provider ${providerA}: 1 session(s) ended (sid+sub)`,
      );
      await context.close();
    } finally {
      await replica.close();
    }
  });

  for (const [what, token, reason] of [
    ["signed by another key", () => idpA.logoutToken({}, { otherKey: true }), /signature verification failed/],
    ["from another issuer", () => idpA.logoutToken({ iss: idpB.issuer }), /"iss"/],
    ["for another client", () => idpA.logoutToken({ aud: "some-other-client" }), /"aud"/],
    ["issued long ago", () => idpA.logoutToken({ iat: Math.floor(Date.now() / 1000) - 3600, exp: undefined }), /"iat"/],
    ["without the logout event", () => idpA.logoutToken({ events: { "http://schemas.openid.net/event/other": {} } }), /no back-channel logout event/],
    ["with a nonce (an ID token)", () => idpA.logoutToken({ nonce: "n-1" }), /must not carry a nonce/],
    ["naming neither sub nor sid", () => idpA.logoutToken({ sub: undefined }), /neither sub nor sid/],
    ["typed as something else", () => idpA.logoutToken({}, { typ: "JWT" }), /unexpected typ/],
    ["unsigned", () => `${idpA.logoutToken().split(".").slice(0, 2).join(".")}.`, /signature|JWS/],
  ] as const) {
    it(`refuses a logout token ${what} with 400, and audits why`, async () => {
      const res = await postToken(app.baseUrl, token());
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ detail: "the logout token was not accepted", reason: "logout_token_refused" });
      const event = (await logoutEvents()).find((e) => e.requestId === res.body.reference);
      expect(event).toMatchObject({ outcome: "failure", reason: expect.stringMatching(reason) });
    });
  }

  it("accepts a logout token once: the same jti again is refused as a replay", async () => {
    const token = idpA.logoutToken({ sub: "u-nobody" });
    const first = await postToken(app.baseUrl, token);
    expect(first.status).toBe(200);
    expect(first.headers["cache-control"]).toBe("no-store");
    const again = await postToken(app.baseUrl, token);
    expect(again.status).toBe(400);
    expect((await logoutEvents()).find((e) => e.requestId === again.body.reference)?.reason).toBe("sso: back-channel logout: replayed logout token (jti already used)");
  });
});
