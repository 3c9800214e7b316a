import type { Browser } from "playwright-core";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, totpCode } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot } from "../helpers/browser.js";
import { TestClock } from "../helpers/clock.js";

/**
 * A tenant admin creates a clinical application's API token (after a fresh code), copies it once,
 * sees it listed, and revokes it; the token is tried against the API before and after.
 */
const clock = new TestClock();
let app: TestAppliance;
let browser: Browser;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  app = await startTestAppliance({ clock });
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

describe("API tokens in the console", () => {
  it("creates a scoped token after step-up, shows it once, lists it, refuses a bad scope, and revokes it", async () => {
    const tenant = await createTenant(app, "Token Clinic");
    const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const { context, page, violations } = await openScreen(browser, app.baseUrl, admin.cookie, "/api-tokens");
    await page.getByText("No API tokens yet").waitFor();

    const form = page.getByTestId("token-form");
    // A scope the policy table does not know is refused with the API's reason.
    await form.getByLabel("Application").fill("Lab results feed");
    await form.getByLabel("Role").selectOption("front_desk");
    await form.getByLabel("Scopes").fill("everything:read");
    await form.getByRole("button", { name: "Create token" }).click();
    await expect(page.getByRole("alert").textContent()).resolves.toContain("a scope is `*` or `<resource>:read|write`");

    clock.advanceMinutes(app.config.auth.stepUpMaxAgeMinutes + 1);
    await form.getByLabel("Scopes").fill("patient:read schedule:read");
    await form.getByLabel("Expires in (days)").fill("30");
    await form.getByRole("button", { name: "Create token" }).click();
    const stepUp = page.getByTestId("step-up");
    await stepUp.getByLabel("Authentication code").fill(totpCode(admin.totpSecret!, clock.now()));
    await stepUp.getByRole("button", { name: "Confirm and continue" }).click();

    const created = page.getByTestId("token-created");
    await expect(created.locator("p").textContent()).resolves.toMatch(/^Token for Lab results feed \(Front desk; patient:read schedule:read\) created\. Copy it now/);
    const token = await page.getByTestId("token-value").inputValue();
    const bearer = () => request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Authorization", `Bearer ${token}`);
    expect((await bearer()).body).toMatchObject({ via: "api-token", scopes: ["patient:read", "schedule:read"], user: { role: "front_desk", tenantId: tenant.id } });

    const row = page.getByTestId("tokens-table").locator("tbody tr");
    await expect(row.locator("td").allTextContents()).resolves.toEqual([
      "Lab results feed",
      "Front desk",
      "patient:read schedule:read",
      `${token.slice(0, 10)}…`,
      "Active",
      expect.any(String),
      expect.any(String),
      "Revoke",
    ]);
    await screenshot(page, "api-tokens");

    await row.getByRole("button", { name: "Revoke" }).click();
    await page.getByTestId("confirm-dialog").getByRole("button", { name: "Revoke" }).click();
    await expect.poll(() => row.locator("td").nth(4).textContent()).toBe("Revoked");
    await expect(page.getByRole("status").first().textContent()).resolves.toBe("The token for Lab results feed is revoked; its service account can no longer call the API.");
    expect((await bearer()).status).toBe(401);
    expect(violations).toEqual([]);
    await context.close();
  });
});
