import type { Browser, Page } from "playwright-core";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, signInWithPassword, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot, watchForViolations } from "../helpers/browser.js";
import { auditEvents } from "../integration/auth/identity-helpers.js";

/**
 * The tenant administration jobs of the console, each done through the screens and checked on
 * what they show and on what the API answers afterwards. One appliance and one browser for all.
 */
let app: TestAppliance;
let browser: Browser;
let tenant: TenantRef;
let admin: SignedIn;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  [app, browser] = await Promise.all([startTestAppliance(), launchBrowser()]);
  tenant = await createTenant(app, "Session Clinic");
  admin = await signIn(app, { role: "admin", tenantId: tenant.id, email: "admin.ines@session-clinic.example" });
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

/** The visible cells of a table's body rows, one array per row. */
async function tableRows(page: Page, testId: string): Promise<string[][]> {
  const rows = page.getByTestId(testId).locator("tbody tr");
  const out: string[][] = [];
  for (let i = 0; i < (await rows.count()); i++) out.push((await rows.nth(i).locator("td").allInnerTexts()).map((t) => t.trim().replace(/\s+/g, " ")));
  return out;
}

describe("signed-in people", () => {
  it("lists the tenant's live sessions, signs one person out with a reason, then everyone, and the signed-out browser lands on the sign-in page", async () => {
    const nurse = await signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false, email: "nurse.kai@session-clinic.example" });
    // The nurse also signs in from a browser, so the list shows two devices for them.
    const nurseContext = await browser.newContext({ ignoreHTTPSErrors: true });
    const nursePage = await nurseContext.newPage();
    const nurseViolations = watchForViolations(nursePage);
    await nursePage.goto(`${app.baseUrl}/#/login`);
    await nursePage.getByLabel("Work email").fill(nurse.user.email);
    await nursePage.getByLabel("Password").fill(nurse.password);
    await nursePage.getByRole("button", { name: "Sign in" }).click();
    await nursePage.getByRole("heading", { name: "Appliance status" }).waitFor();

    const { context, page, violations } = await openScreen(browser, app.baseUrl, admin.cookie, "/people/sessions");
    await page.getByTestId("tenant-sessions-table").waitFor();
    await expect(page.getByTestId("sessions-summary").textContent()).resolves.toBe("3 sessions of 2 people");
    const rows = await tableRows(page, "tenant-sessions-table");
    const ip = /^(::ffff:)?127\.0\.0\.1$|^::1$/;
    const time = /^[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2} [AP]M$/;
    expect(rows).toEqual(
      expect.arrayContaining([
        ["admin.ines@session-clinic.example You, this browser", "Unknown client", expect.stringMatching(ip), expect.stringMatching(time), expect.stringMatching(time), ""],
        ["nurse.kai@session-clinic.example", "Chrome on Linux", expect.stringMatching(ip), expect.stringMatching(time), expect.stringMatching(time), "Sign out user"],
        ["nurse.kai@session-clinic.example", "Unknown client", expect.stringMatching(ip), expect.stringMatching(time), expect.stringMatching(time), "Sign out user"],
      ]),
    );
    expect(rows).toHaveLength(3);
    await screenshot(page, "tenant-sessions");

    // One person: the console insists on a reason, and the audit trail keeps it.
    await page.locator(`tr[data-user="${nurse.user.id}"]`).first().getByRole("button", { name: "Sign out user" }).click();
    const dialog = page.getByTestId("confirm-dialog");
    await dialog.getByRole("button", { name: "Sign out" }).click();
    await expect(dialog.getByRole("alert").textContent()).resolves.toBe("Give a reason: it is recorded in the audit trail.");
    await dialog.getByLabel("Reason (recorded in the audit trail)").fill("lost badge, ticket INC-4410");
    await dialog.getByRole("button", { name: "Sign out" }).click();
    await expect(page.getByRole("status").first().textContent()).resolves.toBe("2 sessions of nurse.kai@session-clinic.example ended.");
    await expect.poll(() => page.getByTestId("sessions-summary").textContent()).toBe("1 session of 1 person");
    expect((await nurse.agent.get("/api/v1/auth/session")).status).toBe(401);

    // The nurse's browser learns it at its next request and is sent to the sign-in page, saying why.
    await nursePage.getByRole("link", { name: "Sessions" }).click();
    await nursePage.waitForURL(/#\/login$/);
    await expect(nursePage.getByTestId("session-ended").textContent()).resolves.toBe(
      "Your session was ended (signed out elsewhere, or by an administrator). Sign in again to continue.",
    );
    await expect(nursePage.getByRole("heading", { level: 1 }).textContent()).resolves.toBe("Sign in to Wardkeep");

    // Everyone: the nurse and a front-desk colleague are signed in again; one click ends both, not the admin.
    const [nurseAgain, desk] = await Promise.all([
      signInWithPassword(app, { email: nurse.user.email, password: nurse.password }),
      signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false }),
    ]);
    await page.reload();
    await expect.poll(() => page.getByTestId("sessions-summary").textContent()).toBe("3 sessions of 3 people");
    await page.getByRole("button", { name: "Sign out everyone" }).click();
    await dialog.getByLabel("Reason (recorded in the audit trail)").fill("suspected phishing, INC-4411");
    await dialog.getByRole("button", { name: "Sign out everyone" }).click();
    await expect(page.getByRole("status").first().textContent()).resolves.toBe("2 sessions ended: everyone but you is signed out.");
    await expect
      .poll(() => tableRows(page, "tenant-sessions-table"))
      .toEqual([
        ["admin.ines@session-clinic.example You, this browser", "Unknown client", expect.stringMatching(ip), expect.stringMatching(time), expect.stringMatching(time), ""],
      ]);
    expect((await nurseAgain.agent.get("/api/v1/auth/session")).status).toBe(401);
    expect((await desk.agent.get("/api/v1/auth/session")).status).toBe(401);
    expect((await admin.agent.get("/api/v1/auth/session")).status).toBe(200);

    const [one] = await auditEvents(app, { action: "auth.session.revoke_all" });
    expect(one).toMatchObject({ actor_user_id: admin.user.id, resource_id: nurse.user.id, reason: "2 session(s); lost badge, ticket INC-4410" });
    const [all] = await auditEvents(app, { action: "auth.session.revoke_everyone" });
    expect(all).toMatchObject({ actor_user_id: admin.user.id, resource_id: tenant.id, reason: "2 session(s); suspected phishing, INC-4411" });
    expect([...violations, ...nurseViolations]).toEqual([]);
    await Promise.all([context.close(), nurseContext.close()]);
  });

  it("is not offered to a practitioner, whose request for the tenant's sessions is refused", async () => {
    const doctor = await signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false });
    const { context, page } = await openScreen(browser, app.baseUrl, doctor.cookie, "/");
    await page.getByRole("heading", { name: "Appliance status" }).waitFor();
    await page.getByRole("link", { name: "Sessions" }).waitFor();
    await expect(page.getByRole("link", { name: "Signed-in people" }).count()).resolves.toBe(0);
    const refused = await request(app.baseUrl).get("/api/v1/sessions?all=true").ca(app.caPem).set(doctor.headers);
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toBe("your role (practitioner) may not list all session");
    await context.close();
  });
});

describe("security policy", () => {
  it("shows the tenant's policy and saves MFA per role, password length, lockout and the TOTP window, which the API then reports", async () => {
    const { context, page, violations } = await openScreen(browser, app.baseUrl, admin.cookie, "/settings/security");
    const form = page.getByTestId("security-settings");
    const roles = form.getByTestId("mfa-roles");
    await roles.getByLabel("Practitioner").waitFor();
    const checked = async () => {
      const out: string[] = [];
      for (const label of ["Owner", "Admin", "Practitioner", "Front desk", "Auditor"]) if (await roles.getByLabel(label).isChecked()) out.push(label);
      return out;
    };
    await expect(checked()).resolves.toEqual([]);
    await expect(form.getByLabel("Minimum length (12 to 128 characters)").inputValue()).resolves.toBe("12");
    await expect(form.getByLabel("Lock an account after this many failed sign-ins or codes (3 to 50)").inputValue()).resolves.toBe(String(app.config.auth.lockoutMaxFailures));
    await expect(form.getByLabel("Accept codes from neighbouring 30-second steps").inputValue()).resolves.toBe("1");
    await expect(form.getByTestId("common-passwords").textContent()).resolves.toMatch(/10,000 most common or breached passwords/);

    await roles.getByLabel("Practitioner").check();
    await roles.getByLabel("Admin").check();
    await form.getByLabel("Minimum length (12 to 128 characters)").fill("16");
    await form.getByLabel("Lock an account after this many failed sign-ins or codes (3 to 50)").fill("4");
    await form.getByLabel("Keep it locked for this many minutes (1 to 1440)").fill("30");
    await form.getByLabel("Accept codes from neighbouring 30-second steps").selectOption("0");
    await form.getByRole("button", { name: "Save settings" }).click();
    await form.getByRole("status").filter({ hasText: "Saved" }).waitFor();
    await screenshot(page, "security-policy");

    // What the API reports, and what the screen shows when opened again.
    const stored = (await admin.agent.get("/api/v1/settings/security").expect(200)).body;
    expect(stored).toMatchObject({ mfaRequiredRoles: ["admin", "practitioner"], passwordMinLength: 16, lockoutMaxFailures: 4, lockoutMinutes: 30, totpWindowSteps: 0 });
    await page.reload();
    await roles.getByLabel("Practitioner").waitFor();
    await expect(checked()).resolves.toEqual(["Admin", "Practitioner"]);
    await expect(form.getByLabel("Minimum length (12 to 128 characters)").inputValue()).resolves.toBe("16");
    await expect(form.getByLabel("Accept codes from neighbouring 30-second steps").inputValue()).resolves.toBe("0");

    // A value the API refuses comes back as its reason, and nothing is saved.
    await form.getByLabel("Minimum length (12 to 128 characters)").evaluate((i: HTMLInputElement) => i.removeAttribute("max"));
    await form.getByLabel("Minimum length (12 to 128 characters)").fill("500");
    await form.getByRole("button", { name: "Save settings" }).click();
    await expect(form.getByRole("alert").textContent()).resolves.toMatch(/passwordMinLength: Too big/);
    expect((await admin.agent.get("/api/v1/settings/security").expect(200)).body.passwordMinLength).toBe(16);

    // Restore what other tests of this file expect (no MFA for their accounts, the default lockout).
    await admin.agent
      .put("/api/v1/settings/security")
      .send({ mfaRequiredRoles: [], passwordMinLength: null, lockoutMaxFailures: null, lockoutMinutes: null, totpWindowSteps: null })
      .expect(200);
    expect(violations).toEqual([]);
    await context.close();
  });
});
