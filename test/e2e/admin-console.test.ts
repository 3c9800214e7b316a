import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot } from "../helpers/browser.js";
import { createPatient } from "../helpers/records.js";

/**
 * What the console shows, read off the screen: the status page's readiness (it said "Not ready"
 * on a ready appliance while it read a field the API never sent), a patient's access timeline
 * (stuck on "Loading…" for the same reason), and the navigation each role is given by the routes
 * table and the daemon's policy.
 */
let app: TestAppliance;
let browser: Browser;
let tenant: TenantRef;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  app = await startTestAppliance();
  browser = await launchBrowser();
  tenant = await createTenant(app, "Lakeside Oncology");
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

const open = (actor: SignedIn, path = "/") => openScreen(browser, app.baseUrl, actor.cookie, path);

const navLinks = (page: Page) => page.getByRole("navigation", { name: "Main" }).getByRole("link");

describe("admin console shows what the API says", () => {
  it("shows Ready, with every check OK, on a ready appliance", async () => {
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const { context, page, violations } = await open(admin);
    await page.getByRole("heading", { level: 1, name: "Appliance status" }).waitFor();
    await expect.poll(() => page.getByTestId("readiness").textContent(), { timeout: 10_000 }).toBe("Ready");
    const checks = page.getByTestId("checks").locator("li");
    await expect(checks.allTextContents()).resolves.toEqual([
      expect.stringMatching(/^OK\s*database — reachable as the app role$/),
      expect.stringMatching(/^OK\s*migrations — current$/),
      expect.stringMatching(/^OK\s*keys — unsealed \(keyfile\)$/),
    ]);
    await screenshot(page, "status-ready");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("lists a patient's real access events on the timeline, oldest first, with who and how", async () => {
    const patientId = await createPatient(app, tenant.id, { name: "Timeline Patient" });
    const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
    await desk.agent.get(`/api/v1/patients/${patientId}`).expect(200);
    const auditor = await signIn(app, { role: "auditor", tenantId: tenant.id });

    const { context, page, violations } = await open(auditor, "/audit");
    const search = page.getByTestId("audit-search");
    await search.getByLabel("Patient id").fill(patientId);
    await search.getByRole("button", { name: "Search" }).click();
    const events = page.getByTestId("audit-events");
    await events.getByText("patient.read").waitFor();
    await events.getByTitle("Show this patient's access timeline").first().click();

    const timeline = page.getByTestId("patient-timeline");
    await timeline.waitFor({ timeout: 10_000 });
    const rows = timeline.locator("tbody tr");
    const texts = await rows.allTextContents();
    // The registration, then the front desk's read: both named, both successful, in chain order.
    const actions = await rows.locator("td:nth-child(4)").allTextContents();
    expect(actions).toEqual(expect.arrayContaining(["patient.create", "patient.read"]));
    expect(actions.indexOf("patient.create")).toBeLessThan(actions.indexOf("patient.read"));
    const read = texts[actions.indexOf("patient.read")]!;
    // Named (the account has no display name: its e-mail), with the id on hover.
    expect(read).toContain(desk.user.email);
    expect(read).toContain("Front desk");
    expect(read).toContain("success");
    const seqs = (await rows.locator("td:nth-child(1)").allTextContents()).map(Number);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    await expect(page.getByText("Loading…").count()).resolves.toBe(0);
    await screenshot(page, "patient-timeline");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("shows an admin the people and audit screens, and not keys or backups", async () => {
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const { context, page, violations } = await open(admin);
    await navLinks(page).filter({ hasText: "Users & invites" }).waitFor();
    await expect(navLinks(page).allTextContents()).resolves.toEqual([
      "Appliance status",
      "Users & invites",
      "Support access",
      "Signed-in people",
      "API tokens",
      "Sign-in providers",
      "Privileged access",
      "Access reviews",
      "Security settings",
      "Audit trail",
      "Alerts",
      "Retention",
      "Data rights",
      "Webhooks",
      "Sessions",
      "Authenticator",
    ]);
    await expect(page.getByRole("navigation", { name: "Main" }).locator("h2").allTextContents()).resolves.toEqual(["Overview", "People", "Operations", "My account"]);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("shows an auditor the audit trail but no user management, and says so when a hidden screen is opened by its address", async () => {
    const auditor = await signIn(app, { role: "auditor", tenantId: tenant.id });
    const { context, page, violations } = await open(auditor);
    await navLinks(page).filter({ hasText: "Audit trail" }).waitFor();
    await expect(navLinks(page).allTextContents()).resolves.toEqual([
      "Appliance status",
      "Privileged access",
      "Access reviews",
      "Security settings",
      "Audit trail",
      "Alerts",
      "Retention",
      "Data rights",
      "Sessions",
      "Authenticator",
    ]);

    // Typed into the address bar: the screen is not drawn and nothing is asked of the API.
    await page.goto(`${app.baseUrl}/#/users`);
    await page.getByText("Not available to your role").waitFor();
    await expect(page.getByTestId("users-table").count()).resolves.toBe(0);
    const denied = await auditor.agent.get(`/api/v1/audit?actor=${auditor.user.id}&action=access.denied`).expect(200);
    expect(denied.body.events).toEqual([]);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("shows only the unseal page, with the reason, once the appliance is sealed", async () => {
    const root = await signIn(app, { role: "super_admin" });
    await root.agent.post("/api/v1/keys/seal").send({ reason: "console test" }).expect(200);
    const { context, page, violations } = await open(root);
    // /readyz names the failing check; the console, which cannot serve anything sealed, says why and how to unseal.
    const ready = await root.agent.get("/readyz").expect(503);
    expect(ready.body.checks.keys).toMatchObject({ ok: false, detail: "sealed: sealed by an operator: console test" });
    await page.getByRole("heading", { level: 1, name: "The appliance is sealed" }).waitFor({ timeout: 10_000 });
    await expect(page.getByTestId("seal-reason").textContent()).resolves.toContain("(sealed by an operator: console test)");
    await expect(page.getByRole("button", { name: "Try again" }).count()).resolves.toBe(1); // key file mode
    await expect(page.getByRole("navigation", { name: "Main" }).count()).resolves.toBe(0);
    await screenshot(page, "status-sealed");
    expect(violations).toEqual([]);
    await context.close();
  });
});
