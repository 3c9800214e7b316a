import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, totpCode, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot, watchForViolations } from "../helpers/browser.js";
import { TestClock } from "../helpers/clock.js";

/**
 * The admin screens in a real browser against a real appliance, each under the strict CSP:
 * what each role is shown, inviting and managing people (with step-up), MFA enrollment, and
 * the operations screens (keys, audit, backups).
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
  tenant = await createTenant(app, "Riverside Clinic");
  admin = await signIn(app, { role: "admin", tenantId: tenant.id, displayName: "Ada Admin" });
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

const open = (actor: SignedIn, path = "/") => openScreen(browser, app.baseUrl, actor.cookie, path);

/** Follows a navigation link and waits for the screen's heading. */
async function visit(page: Page, link: string, heading: string) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: link }).click();
  await page.getByRole("heading", { level: 1, name: heading }).waitFor();
}

describe("admin UI screens", () => {
  it("lets an admin invite a colleague who joins through the link, then asks for a fresh code before changing their role", async () => {
    const { context, page, violations } = await open(admin, "/users");
    await page.getByTestId("users-table").waitFor();
    const form = page.getByTestId("invite-form");
    await form.getByLabel("Work email").fill("Nurse.Joy@riverside.example");
    await form.getByLabel("Role").selectOption("front_desk");
    await form.getByRole("button", { name: "Invite" }).click();
    const link = await page.getByTestId("invite-link").inputValue();
    expect(link).toMatch(new RegExp(`^${app.baseUrl}/#/invite/wki_`));
    await page.getByTestId("invites-table").getByText("nurse.joy@riverside.example").waitFor();
    await screenshot(page, "users");

    // The colleague opens the link in their own browser and sets a password.
    const theirs = await browser.newContext({ ignoreHTTPSErrors: true });
    const joining = await theirs.newPage();
    const joiningViolations = watchForViolations(joining);
    await joining.goto(link);
    await joining.getByLabel("Your name").fill("Joy Nurse");
    await joining.getByLabel("Password", { exact: true }).fill("amber-fjord-cobalt-lantern");
    await joining.getByLabel("Repeat the password").fill("amber-fjord-cobalt-lantern");
    await joining.getByRole("button", { name: "Create account" }).click();
    await joining.getByRole("heading", { name: "Appliance status" }).waitFor();
    expect(new URL(joining.url()).hash).toBe("#/");
    await expect(joining.getByTestId("signed-in-as").textContent()).resolves.toBe("nurse.joy@riverside.example");
    expect(joiningViolations).toEqual([]);
    await theirs.close();

    // Eleven minutes later the admin's second factor is too old for a role change (step-up).
    clock.advanceMinutes(11);
    await page.reload();
    const row = page.locator("tr", { hasText: "Joy Nurse" });
    await row.getByRole("button", { name: "Change role" }).click();
    const confirm = page.getByTestId("confirm-dialog");
    await confirm.getByLabel("New role").selectOption("auditor");
    await confirm.getByRole("button", { name: "Change role" }).click();
    const stepUp = page.getByTestId("step-up");
    await stepUp.getByLabel("Authentication code").fill(totpCode(admin.totpSecret!, clock.now()));
    await screenshot(page, "step-up");
    await stepUp.getByRole("button", { name: "Confirm and continue" }).click();
    await expect(page.getByRole("status").filter({ hasText: "is now" }).textContent()).resolves.toContain("Joy Nurse is now Auditor");
    await row.locator("td").nth(1).getByText("Auditor", { exact: true }).waitFor();
    const users = (await admin.agent.get("/api/v1/users").expect(200)).body as { email: string; role: string }[];
    expect(users.find((u) => u.email === "nurse.joy@riverside.example")?.role).toBe("auditor");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("enrols an authenticator from the QR page and shows the recovery codes once", async () => {
    const person = await signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false });
    const { context, page, violations } = await open(person, "/mfa");
    await page.getByRole("button", { name: "Set up authenticator app" }).click();
    const qr = page.getByTestId("mfa-qr");
    await qr.waitFor();
    expect(await qr.getAttribute("src")).toMatch(/^data:image\/png;base64,/);
    expect(await qr.evaluate((img: HTMLImageElement) => img.naturalWidth)).toBeGreaterThan(0);
    const secret = ((await page.getByTestId("mfa-secret").textContent()) ?? "").replace(/\s+/g, "");
    await screenshot(page, "mfa-enroll");
    await page.getByLabel("Authentication code").fill(totpCode(secret, clock.now()));
    await page.getByRole("button", { name: "Activate" }).click();
    const codes = page.getByTestId("recovery-codes").locator("li");
    await codes.first().waitFor();
    await expect(codes.count()).resolves.toBe(10);
    await screenshot(page, "mfa-codes");
    await expect(page.getByRole("button", { name: "Continue" }).isDisabled()).resolves.toBe(true);
    await page.getByLabel("I have saved these recovery codes somewhere safe.").check();
    await page.getByRole("button", { name: "Continue" }).click();
    await page.getByText("Two-step verification is on").waitFor();
    // A practitioner sees only their own account's screens, and where to ask for a privileged role for a while.
    const nav = page.getByRole("navigation", { name: "Main" });
    await nav.getByRole("link", { name: "Sessions" }).waitFor();
    await expect(nav.getByRole("link").allTextContents()).resolves.toEqual(["Appliance status", "Privileged access", "Sessions", "Authenticator"]);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("lets an admin set the idle timeout and see their sessions and support requests", async () => {
    const fresh = await signIn(app, { role: "admin", tenantId: tenant.id });
    const { context, page, violations } = await open(fresh);
    await visit(page, "Security settings", "Security settings");
    const settings = page.getByTestId("security-settings");
    await settings.getByLabel("Use the appliance default").first().waitFor();
    await settings.locator("input[name=idleDefault]").uncheck();
    await settings.getByLabel("Sign out after this many idle minutes (5 to 240)").fill("3");
    await settings.getByRole("button", { name: "Save settings" }).click();
    // The browser's own range check stops 3 minutes before the server sees it.
    await expect(settings.getByLabel("Sign out after this many idle minutes (5 to 240)").evaluate((i: HTMLInputElement) => i.validity.rangeUnderflow)).resolves.toBe(true);
    await settings.getByLabel("Sign out after this many idle minutes (5 to 240)").fill("30");
    await settings.getByRole("button", { name: "Save settings" }).click();
    await settings.getByRole("status").filter({ hasText: "Saved" }).waitFor();
    await expect(fresh.agent.get("/api/v1/auth/session").then((r) => r.body.idleTimeoutMinutes as number)).resolves.toBe(30);
    await screenshot(page, "security-settings");

    await visit(page, "Sessions", "Sessions");
    await expect(page.getByTestId("sessions-table").textContent()).resolves.toContain("This browser");
    await screenshot(page, "sessions");

    await visit(page, "Support access", "Support access");
    await page.getByTestId("empty").waitFor();
    await expect(page.getByRole("link", { name: "Encryption keys" }).count()).resolves.toBe(0);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("shows a super-admin the key, audit and backup screens, and verifies the audit chain", async () => {
    const root = await signIn(app, { role: "super_admin" });
    const { context, page, violations } = await open(root);
    await page.getByRole("heading", { name: "Appliance status" }).waitFor();
    await screenshot(page, "home");

    await visit(page, "Encryption keys", "Encryption keys");
    await expect(page.getByTestId("seal-state").textContent()).resolves.toContain("Unsealed");
    await screenshot(page, "keys");

    await visit(page, "Audit trail", "Audit trail");
    await page.getByTestId("audit-events").waitFor();
    await expect(page.getByTestId("audit-events").textContent()).resolves.toContain("invite.accept");
    await page.getByRole("button", { name: "Verify the chain" }).click();
    await expect(page.getByTestId("verify-result").textContent()).resolves.toMatch(/Intact up to seq \d+/);
    await expect(page.getByTestId("audit-public-key").textContent()).resolves.toContain("BEGIN PUBLIC KEY");
    // The fingerprint an auditor passes to an evidence pack's verify.sh: the API's, shown in full.
    const shownKey = (await root.agent.get("/api/v1/audit/public-key").expect(200)).body as { fingerprint: string };
    await expect(page.getByTestId("audit-key-fingerprint").textContent()).resolves.toBe(shownKey.fingerprint);
    await screenshot(page, "audit");

    await visit(page, "Backups & drills", "Backups & drills");
    await page.getByTestId("backup-policy").waitFor();
    await page.getByText("No snapshots yet").waitFor();
    // With no target configured the API refuses, and the page says why (problem+json detail).
    await page.getByRole("button", { name: "Run snapshot now" }).click();
    await expect(page.getByRole("alert").first().textContent()).resolves.toMatch(/target/i);
    await screenshot(page, "backups");
    await visit(page, "Users & invites", "Users & invites");
    await page.getByTestId("users-table").waitFor();
    expect(violations).toEqual([]);
    await context.close();
  });
});
