import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initialiseKeyStore } from "../../daemon/keys/seal.js";
import { signIn, totpCode } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot, watchForViolations } from "../helpers/browser.js";
import { TestClock } from "../helpers/clock.js";

/**
 * Sealing from the console (with step-up) and unsealing from the browser: three custodians each
 * enter a Shamir share from their own browser and every page shows the progress; a passphrase
 * appliance refuses a wrong passphrase and unseals with the right one. While sealed the console
 * asks the API for nothing but the seal state.
 */
let browser: Browser;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
});

/** The console's API calls while the page is open, by path. */
function apiCalls(page: Page): string[] {
  const calls: string[] = [];
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.pathname.startsWith("/api/")) calls.push(`${r.method()} ${url.pathname}`);
  });
  return calls;
}

async function custodian(app: TestAppliance) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const violations = watchForViolations(page);
  const calls = apiCalls(page);
  await page.goto(`${app.baseUrl}/`);
  await page.getByRole("heading", { level: 1, name: "The appliance is sealed" }).waitFor();
  return { context, page, violations, calls, progress: () => page.getByTestId("unseal-progress").textContent() };
}

describe("shamir: seal from the console, unseal by three custodians", () => {
  const clock = new TestClock();
  let app: TestAppliance;
  let shares: string[];

  beforeAll(async () => {
    app = await startTestAppliance({ clock, env: { WARDKEEP_KEYS_UNSEAL: "shamir" } });
    shares = (await initialiseKeyStore(app.ctx, "shamir", { shareCount: 5, threshold: 3 })).shares!;
  });
  afterAll(async () => {
    await app?.close();
  });

  it("seals after a fresh code, then shows each custodian's browser the progress until the third share unseals it", async () => {
    const root = await signIn(app, { role: "super_admin" });
    const { context, page, violations } = await openScreen(browser, app.baseUrl, root.cookie, "/keys");
    await expect.poll(() => page.getByTestId("seal-state").textContent(), { timeout: 10_000 }).toContain("Unsealed");

    clock.advanceMinutes(app.config.auth.stepUpMaxAgeMinutes + 1);
    await page.getByRole("button", { name: "Seal now" }).click();
    const confirm = page.getByTestId("confirm-dialog");
    await confirm.getByLabel(/^Reason/).fill("planned maintenance");
    await confirm.getByRole("button", { name: "Seal now" }).click();
    const stepUp = page.getByTestId("step-up");
    await stepUp.getByLabel("Authentication code").fill(totpCode(root.totpSecret!, clock.now()));
    await stepUp.getByRole("button", { name: "Confirm and continue" }).click();

    // The operator's own console turns into the unseal page.
    await page.getByRole("heading", { level: 1, name: "The appliance is sealed" }).waitFor();
    await expect(page.getByTestId("seal-reason").textContent()).resolves.toContain("(sealed by an operator: planned maintenance)");
    await expect(page.getByTestId("unseal-progress").textContent()).resolves.toBe("0 of 3 custodian shares entered (5 exist).");
    await expect(page.getByRole("navigation", { name: "Main" }).count()).resolves.toBe(0);
    expect((await root.agent.get("/api/v1/keys/seal-status").expect(200)).body).toMatchObject({ sealed: true, reason: "sealed by an operator: planned maintenance" });

    const [a, b, c] = [await custodian(app), await custodian(app), await custodian(app)];
    await a.page.getByLabel("Your custodian share").fill(shares[0]!);
    await a.page.getByRole("button", { name: "Enter share" }).click();
    await expect.poll(a.progress, { timeout: 10_000 }).toBe("1 of 3 custodian shares entered (5 exist).");
    await expect(a.page.getByRole("status").textContent()).resolves.toContain("Your share was accepted");
    // Another custodian's page catches up by itself.
    await expect.poll(b.progress, { timeout: 10_000 }).toBe("1 of 3 custodian shares entered (5 exist).");

    await b.page.getByLabel("Your custodian share").fill(shares[3]!);
    await b.page.getByRole("button", { name: "Enter share" }).click();
    await expect.poll(b.progress, { timeout: 10_000 }).toBe("2 of 3 custodian shares entered (5 exist).");
    await expect.poll(a.progress, { timeout: 10_000 }).toBe("2 of 3 custodian shares entered (5 exist).");
    await screenshot(b.page, "unseal-2-of-3");

    // A share that is not one (a typo) is refused with the reason, and counts nothing.
    await c.page.getByLabel("Your custodian share").fill("wks1-not-a-share");
    await c.page.getByRole("button", { name: "Enter share" }).click();
    await expect(c.page.getByRole("alert").textContent()).resolves.toMatch(/share/i);
    await expect.poll(c.progress, { timeout: 10_000 }).toBe("2 of 3 custodian shares entered (5 exist).");

    await c.page.getByLabel("Your custodian share").fill(shares[4]!);
    await c.page.getByRole("button", { name: "Enter share" }).click();
    // Unsealed: the custodian (no session) is at sign-in; the operator is back in the console.
    await c.page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByRole("navigation", { name: "Main" }).waitFor({ timeout: 10_000 });
    expect((await root.agent.get("/api/v1/keys/seal-status").expect(200)).body.sealed).toBe(false);

    // While sealed, the custodians' pages asked for nothing but the seal state and the unseal.
    for (const x of [a, b]) {
      expect(new Set(x.calls.filter((call) => !call.startsWith("GET /api/v1/setup") && call !== "GET /api/v1/auth/session"))).toEqual(
        new Set(["GET /api/v1/keys/seal-status", "POST /api/v1/keys/unseal"]),
      );
    }
    for (const x of [a, b, c]) {
      expect(x.violations).toEqual([]);
      await x.context.close();
    }
    expect(violations).toEqual([]);
    await context.close();
  });
});

describe("passphrase: unseal from the browser", () => {
  let app: TestAppliance;
  const passphrase = "correct horse battery staple, ward seven";

  beforeAll(async () => {
    app = await startTestAppliance({ env: { WARDKEEP_KEYS_UNSEAL: "passphrase" } });
    await initialiseKeyStore(app.ctx, "passphrase", { passphrase });
  });
  afterAll(async () => {
    await app?.close();
  });

  it("refuses a wrong passphrase with the reason, and unseals with the right one", async () => {
    const root = await signIn(app, { role: "super_admin" });
    await root.agent.post("/api/v1/keys/seal").send({}).expect(200);
    const x = await custodian(app);
    await x.page.getByLabel("Unseal passphrase").fill("not the passphrase");
    await x.page.getByRole("button", { name: "Unseal" }).click();
    await expect(x.page.getByRole("alert").textContent()).resolves.toMatch(/passphrase/i);
    expect((await root.agent.get("/api/v1/keys/seal-status").expect(200)).body.sealed).toBe(true);

    await x.page.getByLabel("Unseal passphrase").fill(passphrase);
    await x.page.getByRole("button", { name: "Unseal" }).click();
    await x.page.getByRole("heading", { name: "Sign in" }).waitFor();
    expect((await root.agent.get("/api/v1/keys/seal-status").expect(200)).body.sealed).toBe(false);
    expect(x.violations).toEqual([]);
    await x.context.close();
  });
});
