import type { Browser, Page } from "playwright-core";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, totpCode, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { contextWithSession, ensureAdminUiBuilt, launchBrowser, screenshot, watchForViolations } from "../helpers/browser.js";
import { TestClock } from "../helpers/clock.js";

/**
 * Signing in and staying (or not staying) signed in, in a real browser against a real appliance.
 * The appliance runs on a TestClock; the page's clock is Playwright's fake clock, moved by the
 * same amounts, so the UI's countdown (which follows the deadline the server reports) and the
 * server's automatic logoff can be tested without waiting 15 minutes.
 */
let app: TestAppliance;
let browser: Browser;
let clock: TestClock;
let tenant: TenantRef;
let admin: SignedIn;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  clock = new TestClock();
  app = await startTestAppliance({ clock });
  browser = await launchBrowser();
  tenant = await createTenant(app, "St. Mary's Cardiology");
  admin = await signIn(app, { role: "admin", tenantId: tenant.id, displayName: "Ada Admin" });
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

/** Moves the appliance's clock and the page's clock together. */
async function advance(page: Page, ms: number) {
  clock.advance(ms);
  await page.clock.fastForward(ms);
}

describe("admin UI sign-in and automatic logoff", () => {
  it("signs in with password and TOTP, warns two minutes before idle logoff, and ends the session when the server does", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const violations = watchForViolations(page);
    await page.clock.install({ time: clock.now() });
    await page.goto(`${app.baseUrl}/`);
    await page.waitForURL(/#\/login$/);
    // The hash changes before the page re-renders: wait for the heading, not just the URL.
    await expect.poll(() => page.locator("h1").textContent(), { timeout: 10_000 }).toBe("Sign in to Wardkeep");

    await page.getByLabel("Work email").fill(admin.user.email);
    await page.getByLabel("Password").fill("not-the-password-at-all");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page.getByRole("alert").textContent()).resolves.toMatch(/email or password is incorrect/i);

    await page.getByLabel("Password").fill(admin.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Two-step verification" }).waitFor();
    await screenshot(page, "login-totp");
    // The code of the 30 s step enrolment used is spent (RFC 6238 §5.2): the authenticator moves on.
    await advance(page, 30_000);
    await page.getByLabel("Authentication code").fill("000000");
    await page.getByRole("button", { name: "Verify" }).click();
    await expect(page.getByRole("alert").textContent()).resolves.toMatch(/code is not correct/i);
    await page.getByLabel("Authentication code").fill(totpCode(admin.totpSecret!, clock.now()));
    await page.getByRole("button", { name: "Verify" }).click();
    await page.getByRole("heading", { name: "Appliance status" }).waitFor();
    await expect(page.getByTestId("signed-in-as").textContent()).resolves.toBe(admin.user.email);
    await page.getByRole("link", { name: "Users & invites" }).waitFor();

    // 13 of the 15 idle minutes pass: the warning opens, with the countdown the server's deadline gives.
    await advance(page, 13.5 * 60_000);
    const warning = page.getByTestId("idle-warning");
    await warning.getByRole("heading", { name: "Are you still there?" }).waitFor();
    await expect(page.getByTestId("idle-countdown").textContent()).resolves.toMatch(/^1:[0-9]{2}$/);
    await screenshot(page, "idle-warning");

    // "Stay signed in" is activity: the server moves the deadline and the warning closes.
    await warning.getByRole("button", { name: "Stay signed in" }).click();
    await warning.waitFor({ state: "hidden" });
    // (the browser's own session: its cookie, read with the poll that does not extend it)
    const after = await context.request.get(`${app.baseUrl}/api/v1/auth/session`);
    expect(Date.parse(((await after.json()) as { idleExpiresAt: string }).idleExpiresAt)).toBe(clock.now().getTime() + 15 * 60_000);
    const [browserCookie] = await context.cookies();

    // Then nobody touches the page for 16 minutes: the server ends the session and the UI says so.
    await advance(page, 16 * 60_000);
    await page.waitForURL(/#\/login$/);
    await expect(page.getByTestId("session-ended").textContent()).resolves.toMatch(/signed out automatically after 15 minutes without activity/);
    const ended = await request(app.baseUrl).get("/api/v1/users").ca(app.caPem).set("Cookie", `${browserCookie!.name}=${browserCookie!.value}`);
    expect(ended.status).toBe(401);
    await screenshot(page, "session-ended");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("warns on the appliance's time, not on a workstation clock that runs ten minutes slow", async () => {
    const person = await signIn(app, { role: "admin", tenantId: tenant.id });
    const context = await contextWithSession(browser, app.baseUrl, person.cookie);
    const page = await context.newPage();
    const violations = watchForViolations(page);
    // The workstation believes it is ten minutes earlier than the appliance does.
    await page.clock.install({ time: new Date(clock.now().getTime() - 10 * 60_000) });
    await page.goto(`${app.baseUrl}/`);
    await page.getByRole("heading", { name: "Appliance status" }).waitFor();
    // 13.5 idle minutes on both clocks: by the appliance's deadline, 1.5 minutes are left. Read
    // with the workstation's own clock the deadline would still be 11.5 minutes away (no warning).
    await advance(page, 13.5 * 60_000);
    const warning = page.getByTestId("idle-warning");
    await warning.getByRole("heading", { name: "Are you still there?" }).waitFor();
    await expect(page.getByTestId("idle-countdown").textContent()).resolves.toMatch(/^1:[0-9]{2}$/);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("signs in with a recovery code instead of a TOTP code, and says how many are left", async () => {
    const person = await signIn(app, { role: "auditor", tenantId: tenant.id });
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const violations = watchForViolations(page);
    await page.goto(`${app.baseUrl}/#/login`);
    await page.getByLabel("Work email").fill(person.user.email);
    await page.getByLabel("Password").fill(person.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("button", { name: "Use a recovery code instead" }).click();
    await page.getByLabel("Recovery code").fill(person.recoveryCodes[0]!);
    await page.getByRole("button", { name: "Verify" }).click();
    await expect(page.getByRole("status").filter({ hasText: "recovery code" }).textContent()).resolves.toMatch(/9 left/);
    // An auditor manages no users: the navigation leaves that screen out.
    await page.getByRole("link", { name: "Sessions" }).waitFor();
    await expect(page.getByRole("link", { name: "Users & invites" }).count()).resolves.toBe(0);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("shows a banner naming the support user and the expiry for as long as support access lasts", async () => {
    const support = await signIn(app, { role: "support" });
    const ask = await support.agent.post("/api/v1/support/requests").send({ tenantId: tenant.id, ticketRef: "INC-20931", reason: "login trouble for a ward clerk" }).expect(201);
    const requestId = ask.body.id as string;
    const approver = await signIn(app, { role: "admin", tenantId: tenant.id, displayName: "Olu Owner-Admin" });
    const approved = await approver.agent.post(`/api/v1/support/requests/${requestId}/approve`).expect(200);
    await support.agent.post(`/api/v1/support/requests/${requestId}/enter`).expect(200);

    const context = await contextWithSession(browser, app.baseUrl, support.cookie);
    const page = await context.newPage();
    const violations = watchForViolations(page);
    await page.clock.install({ time: clock.now() });
    await page.goto(`${app.baseUrl}/`);
    const banner = page.getByTestId("support-banner");
    await banner.waitFor();
    await expect(page.getByTestId("support-user").textContent()).resolves.toBe(support.user.email);
    await expect(page.getByTestId("support-expiry").getAttribute("datetime")).resolves.toBe(approved.body.expiresAt);
    await expect(banner.textContent()).resolves.toContain("Olu Owner-Admin");
    await expect(banner.textContent()).resolves.toContain("30 min left");
    // The banner stays on every screen support can open.
    await page.getByRole("link", { name: "Users & invites" }).click();
    await page.getByTestId("users-table").waitFor();
    await expect(banner.isVisible()).resolves.toBe(true);
    await screenshot(page, "support-banner");

    // Ending the access removes the banner.
    await banner.getByRole("button", { name: "End support access" }).click();
    await banner.waitFor({ state: "hidden" });
    expect(violations).toEqual([]);
    await context.close();
  });
});
