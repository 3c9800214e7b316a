import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setupTokenFrom, startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, watchForViolations } from "../helpers/browser.js";

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

describe("admin UI first-run setup in a real browser", () => {
  it("sends a fresh appliance to setup and creates the first super-admin under the strict CSP", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const violations = watchForViolations(page);
    await page.goto(`${app.baseUrl}/`);
    await page.waitForURL(/#\/setup$/);
    // The hash changes before the page re-renders: wait for the heading, not just the URL.
    await expect.poll(() => page.locator("h1").textContent(), { timeout: 10_000 }).toBe("First-run setup");

    await page.fill("input[name=token]", "wks_setup_not-the-right-one");
    await page.fill("input[name=email]", "it@hospital.example");
    await page.fill("input[name=password]", "correct horse battery");
    await page.click("button[type=submit]");
    await expect(page.locator("[role=alert]").textContent()).resolves.toMatch(/setup token is invalid/);

    await page.fill("input[name=token]", setupTokenFrom(app.announcements.join("\n"))!);
    await page.click("button[type=submit]");
    await expect(page.locator("[data-testid=setup-done]").textContent()).resolves.toContain("it@hospital.example");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("serves hashed assets as immutable and the page itself uncached", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const response = await page.goto(`${app.baseUrl}/`);
    expect(response?.headers()["cache-control"]).toBe("no-cache");
    expect(response?.headers()["content-security-policy"]).toContain("script-src 'self'");
    const script = await page.locator("script[type=module]").getAttribute("src");
    const asset = await context.request.get(`${app.baseUrl}${script}`);
    expect(asset.headers()["cache-control"]).toMatch(/immutable/);
    await context.close();
  });
});
