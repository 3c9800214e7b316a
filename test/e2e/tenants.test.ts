import type { Browser } from "playwright-core";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SESSION_COOKIE } from "../../daemon/auth/tokens.js";
import { signIn } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot } from "../helpers/browser.js";

/**
 * A super-admin on a fresh appliance: offered to create the first tenant, creates it with its
 * owner's invite, renames, suspends and resumes it, all read off the screen; the owner's link
 * and session are checked against the API.
 */
let app: TestAppliance;
let browser: Browser;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  app = await startTestAppliance();
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

describe("tenants in the console", () => {
  it("offers the first tenant on a fresh appliance, creates it with its owner's invite, renames, suspends and resumes it", async () => {
    const root = await signIn(app, { role: "super_admin" });
    const { context, page, violations } = await open(root.cookie);

    // First run: the status page offers to create the first tenant.
    const offer = page.getByTestId("first-tenant");
    await expect(offer.getByRole("heading").textContent()).resolves.toBe("Next step: create the first tenant");
    await offer.getByRole("link", { name: "Create the first tenant" }).click();
    await page.getByRole("heading", { level: 1, name: "Tenants" }).waitFor();
    await page.getByText("No tenants yet").waitFor();

    const form = page.getByTestId("tenant-form");
    await form.getByLabel("Name").fill("Northgate Maternity");
    await form.getByLabel("First owner's email (optional)").fill("head.midwife@northgate.example");
    await form.getByRole("button", { name: "Create the first tenant" }).click();
    const created = page.getByTestId("tenant-created");
    await expect(created.locator("p").first().textContent()).resolves.toBe("Tenant Northgate Maternity created (slug northgate-maternity).");
    await expect(created.textContent()).resolves.toContain("Send head.midwife@northgate.example this owner invite link");
    const link = await page.getByTestId("owner-invite-link").inputValue();
    expect(link).toMatch(new RegExp(`^${app.baseUrl.replace(/[.]/g, "\\.")}/#/invite/wki_`));

    // The link the page shows is a working owner invite.
    const accepted = await request(app.baseUrl)
      .post("/api/v1/invites/accept")
      .ca(app.caPem)
      .send({ token: link.split("/invite/")[1], password: "ember-harbor-juniper-90" });
    expect(accepted.status).toBe(201);
    expect(accepted.body.role).toBe("owner");
    const ownerCookie = ([] as string[])
      .concat(accepted.headers["set-cookie"] ?? [])
      .find((c) => c.startsWith(`${SESSION_COOKIE}=`))!
      .split(";")[0]!;
    const ownerSession = () => request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Cookie", ownerCookie);
    expect((await ownerSession()).status).toBe(200);

    const row = page.getByTestId("tenants-table").locator("tr[data-slug=northgate-maternity]");
    await expect(row.locator("td").allTextContents()).resolves.toEqual(["Northgate Maternity", "northgate-maternity", "Active", expect.any(String), expect.any(String)]);

    await row.getByRole("button", { name: "Rename" }).click();
    const dialog = page.getByTestId("confirm-dialog");
    await dialog.getByLabel("New name").fill("Northgate Women's Health");
    await dialog.getByRole("button", { name: "Rename" }).click();
    await expect.poll(() => row.locator("td").first().textContent()).toBe("Northgate Women's Health");
    await expect(page.getByRole("status").first().textContent()).resolves.toBe("Northgate Maternity is now called Northgate Women's Health.");

    await row.getByRole("button", { name: "Suspend" }).click();
    await expect(dialog.textContent()).resolves.toContain("Everyone in Northgate Women's Health is signed out and cannot sign in");
    await dialog.getByRole("button", { name: "Suspend" }).click();
    await expect.poll(() => row.locator("td").nth(2).textContent()).toBe("Suspended");
    await screenshot(page, "tenants-suspended");
    // The owner's session ended with the suspension.
    expect((await ownerSession()).status).toBe(401);

    await row.getByRole("button", { name: "Resume" }).click();
    await dialog.getByRole("button", { name: "Resume" }).click();
    await expect.poll(() => row.locator("td").nth(2).textContent()).toBe("Active");
    await expect(page.getByRole("status").first().textContent()).resolves.toBe("Northgate Women's Health is active again.");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("says why a tenant cannot be created, and creates none", async () => {
    const root = await signIn(app, { role: "super_admin" });
    const { context, page, violations } = await open(root.cookie, "/tenants");
    const form = page.getByTestId("tenant-form");
    await form.getByLabel("Name").fill("Duplicate Owner Clinic");
    await form.getByLabel("First owner's email (optional)").fill(root.user.email);
    await form.getByRole("button", { name: "Create tenant" }).click();
    await expect(page.getByRole("alert").textContent()).resolves.toBe("An account with this email address already exists");
    await expect(page.getByTestId("tenants-table").textContent()).resolves.not.toContain("Duplicate Owner Clinic");
    expect(violations).toEqual([]);
    await context.close();
  });
});

function open(cookie: string, path = "/") {
  return openScreen(browser, app.baseUrl, cookie, path);
}
