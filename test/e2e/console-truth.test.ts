import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { evaluateFreshness } from "../../daemon/backups/service.js";
import { createTenant, signIn, totpCode, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, tempDir, type TestAppliance } from "../helpers/appliance.js";
import { consoleScreens, ensureAdminUiBuilt, launchBrowser, openScreen } from "../helpers/browser.js";
import { TestClock } from "../helpers/clock.js";
import { PROJECT_ROOT } from "../helpers/daemon-process.js";

/**
 * What the console shows is true, and it fits: each check reads the text or measures the boxes
 * Chromium drew at 1280x800 (the width of a ward PC's browser), against a real appliance.
 * Every screen of the routes table also gets a screenshot under test-artifacts/screens and an
 * axe-core check.
 */
const VIEWPORT = { width: 1280, height: 800 };
const ARTIFACTS = path.join(PROJECT_ROOT, "test-artifacts", "screens");
const AXE = path.join(PROJECT_ROOT, "node_modules", "axe-core", "axe.min.js");

let app: TestAppliance;
let browser: Browser;
let clock: TestClock;
let root: SignedIn;
let tenant: TenantRef;
let owner: SignedIn;

async function superuser(text: string, bind: unknown[] = []) {
  const client = new pg.Client({ connectionString: app.db.superuserUrl });
  await client.connect();
  try {
    return (await client.query(text, bind)).rows;
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  await ensureAdminUiBuilt();
  clock = new TestClock();
  app = await startTestAppliance({ clock, env: { WARDKEEP_KEYS_MAINTENANCE_INTERVAL_SECONDS: "3600" } });
  browser = await launchBrowser();
  root = await signIn(app, { role: "super_admin", displayName: "Rhea Root" });
  tenant = await createTenant(app, "Harbourside Hospital");
  owner = await signIn(app, { role: "owner", tenantId: tenant.id, displayName: "Otto Owner" });
  const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
  for (const name of ["Ada Quell", "Bram Oduya", "Cleo Marsh"]) await desk.agent.post("/api/v1/patients").send({ name }).expect(201);
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

async function screen(actor: SignedIn, route: string) {
  const { context, page, violations } = await openScreen(browser, app.baseUrl, actor.cookie, route);
  await page.setViewportSize(VIEWPORT);
  return { context, page, violations };
}

/** How far an element's box runs past its container's box (px; 0 when it fits). */
async function overflowPx(page: Page, selector: string, container: string): Promise<number> {
  return page.evaluate(
    ([sel, box]) => {
      const el = document.querySelector(sel)!;
      const outer = el.closest(box)!;
      return Math.max(0, Math.round(el.getBoundingClientRect().right - outer.getBoundingClientRect().right), el.scrollWidth - el.clientWidth);
    },
    [selector, container] as const,
  );
}

describe("the Keys page", () => {
  it("rotates a tenant's keys from the button: the confirm gives way to the step-up dialog, then progress runs to 'Finished'", async () => {
    const { context, page, violations } = await screen(root, "/keys");
    const row = page.getByTestId("tenant-keys").locator("tr", { hasText: "Harbourside Hospital" });
    await row.waitFor();
    // Make the second factor stale so the rotation asks for a fresh code.
    clock.advanceMinutes(app.config.auth.stepUpMaxAgeMinutes + 1);
    await row.getByRole("button", { name: "Rotate" }).click();
    const confirm = page.getByTestId("confirm-dialog").filter({ hasText: "Rotate key" });
    const explanation = (await confirm.getByTestId("rotation-explanation").textContent())!.replace(/\s+/g, " ");
    expect(explanation).toContain("The data keys of Harbourside Hospital get a new version each (one key per patient).");
    await confirm.getByRole("button", { name: "Rotate" }).click();

    const stepUp = page.getByTestId("step-up");
    await stepUp.getByLabel("Authentication code").waitFor();
    // One modal at a time: the confirm dialog is not left open underneath.
    expect(await confirm.isVisible()).toBe(false);
    await stepUp.getByLabel("Authentication code").fill(totpCode(root.totpSecret!, clock.now()));
    await stepUp.getByRole("button", { name: "Confirm and continue" }).click();

    const progress = row.getByTestId("tenant-rotation");
    await progress.and(page.locator("[data-state=finished]")).waitFor({ timeout: 30_000 });
    await expect(progress.textContent()).resolves.toMatch(/done\s*Finished .+: 3 keys at a new version, 3 values re-encrypted/);
    await expect(page.getByRole("status").first().textContent()).resolves.toContain("The data keys of Harbourside Hospital are rotating.");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("says the root key rotation rewraps keys, not that it re-encrypts data", async () => {
    const { context, page } = await screen(root, "/keys");
    await page.getByRole("button", { name: "Rotate root key" }).click();
    const text = (await page.getByTestId("confirm-dialog").filter({ hasText: "Rotate key" }).getByTestId("rotation-explanation").textContent())!.replace(/\s+/g, " ");
    expect(text).toMatch(/Every data key is rewrapped \(re-encrypted\) under it in the background; the patient data itself is not re-encrypted/);
    expect(text).not.toMatch(/existing data is re-encrypted/);
    await page.getByTestId("confirm-dialog").filter({ hasText: "Rotate key" }).getByRole("button", { name: "Cancel" }).click();
    await context.close();
  });

  it("keeps the recovery key fingerprint inside its box at 1280 px", async () => {
    const { context, page } = await screen(root, "/keys");
    await page.getByTestId("recovery-fingerprint").waitFor();
    expect(await overflowPx(page, "[data-testid=recovery-fingerprint]", "p")).toBe(0);
    expect(await overflowPx(page, "[data-testid=recovery-fingerprint]", "main")).toBe(0);
    await context.close();
  });
});

describe("the Backups page", () => {
  it("drops the 'Not configured' banner as soon as a target is saved", async () => {
    await evaluateFreshness(app.ctx);
    const { context, page } = await screen(root, "/backups");
    const banner = page.getByText(/^Not configured: snapshots are enabled but no backup target is configured/);
    await banner.waitFor();
    await page.getByRole("button", { name: "Add target" }).click();
    await page.getByLabel("Name").last().fill("nas");
    await page.getByLabel("Directory").last().fill(tempDir("wardkeep-e2e-target-"));
    await page.getByRole("button", { name: "Save policy" }).click();
    await page.getByRole("button", { name: "Save policy" }).and(page.locator(":not([disabled])")).waitFor();
    await banner.waitFor({ state: "detached" });
    await context.close();
  });

  it("shows a sub-second run in milliseconds and wraps a long error inside the snapshot table", async () => {
    const longError = `target nas: could not write /mnt/${"very-long-directory-name/".repeat(12)}snapshot.tar: EACCES`;
    await superuser(
      `INSERT INTO backup_snapshots (id, trigger, status, started_at, finished_at, duration_ms, error, targets)
       VALUES ('20261207T040000Z-0a1b2c3d', 'manual', 'failed', now(), now(), 140, $1, '[{"target":"nas","ok":false}]')`,
      [longError],
    );
    const { context, page } = await screen(root, "/backups");
    const row = page.getByTestId("snapshots").locator("tr", { hasText: "20261207T040000Z-0a1b2c3d" });
    await row.waitFor();
    await expect(row.locator("td").nth(3).textContent()).resolves.toBe("140 ms");
    await expect(row.textContent()).resolves.toContain("EACCES");
    expect(await overflowPx(page, "[data-testid=snapshots]", ".table-wrap")).toBe(0);
    await context.close();
  });
});

describe("the Users page", () => {
  it("fits the accounts table in 1280 px without wrapping a row", async () => {
    for (const role of ["admin", "practitioner", "auditor"] as const) await signIn(app, { role, tenantId: tenant.id, displayName: `Dr. Philippa ${role} Montgomery-Ashworth` });
    const { context, page } = await screen(owner, "/users");
    await page.getByTestId("users-table").waitFor();
    expect(await overflowPx(page, "[data-testid=users-table]", ".table-wrap")).toBe(0);
    // Each cell's text stays on one line: a row is as tall as its tallest cell's own content.
    const wrapped = await page.evaluate(() =>
      [...document.querySelectorAll("[data-testid=users-table] tbody td")]
        .flatMap((td) => [...td.querySelectorAll(":scope > .name, :scope > .badge, :scope > span, :scope > time, :scope > button")])
        .filter((el) => el.getClientRects().length > 1)
        .map((el) => el.textContent),
    );
    expect(wrapped).toEqual([]);
    await context.close();
  });
});

describe("every screen", () => {
  it("has its own title, a skip link, and puts focus on the heading after a navigation", async () => {
    const { context, page } = await screen(owner, "/");
    await page.getByRole("heading", { level: 1 }).waitFor();
    await expect(page.title()).resolves.toBe("Appliance status — Wardkeep");
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Users & invites" }).click();
    await page.getByRole("heading", { level: 1, name: "Users & invites" }).waitFor();
    await expect(page.title()).resolves.toBe("Users & invites — Wardkeep");
    await expect.poll(() => page.evaluate(() => document.activeElement?.tagName + ":" + document.activeElement?.textContent)).toBe("H1:Users & invites");

    await page.keyboard.press("Tab");
    await page.keyboard.press("Shift+Tab");
    await page.reload();
    await page.getByRole("heading", { level: 1 }).waitFor();
    await page.keyboard.press("Tab");
    await expect(page.evaluate(() => document.activeElement?.textContent)).resolves.toBe("Skip to main content");
    await page.keyboard.press("Enter");
    await expect(page.evaluate(() => document.activeElement?.textContent)).resolves.toBe("Users & invites");
    await expect(page.evaluate(() => location.hash)).resolves.toBe("#/users");
    await context.close();

    const anonymous = await browser.newContext({ ignoreHTTPSErrors: true });
    const signInPage = await anonymous.newPage();
    await signInPage.goto(`${app.baseUrl}/#/login`);
    await signInPage.getByRole("heading", { level: 1, name: "Sign in to Wardkeep" }).waitFor();
    await expect(signInPage.title()).resolves.toBe("Sign in — Wardkeep");
    await anonymous.close();
  });

  it("is screenshotted at 1280x800 and has no serious or critical axe-core violation, for every screen of the routes table", async () => {
    // Emptied first, so every picture left there is of this run.
    fs.rmSync(ARTIFACTS, { recursive: true, force: true });
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    // The routes table itself, so a screen added to it is covered the day it is added. Each screen is
    // opened by the first of these people whose capabilities include its action: a tenant's owner,
    // then the super-admin; a screen neither may open fails the test rather than going unchecked.
    const people: Array<{ actor: SignedIn; who: string; actions: Set<string> }> = [];
    for (const [actor, who] of [
      [owner, "owner"],
      [root, "super-admin"],
    ] as const) {
      people.push({ actor, who, actions: new Set((await actor.agent.get("/api/v1/access/capabilities").expect(200)).body.actions as string[]) });
    }
    const table = await consoleScreens();
    const screens: Array<{ actor: SignedIn | null; route: string; name: string }> = [];
    const unopened: string[] = [];
    for (const r of table) {
      const route = r.path.replace(/:(\w+)/g, "not-a-real-$1");
      const slug = r.path.replaceAll(/[/:]+/g, "-").replace(/^-|-$/g, "") || "home";
      if (r.public) {
        screens.push({ actor: null, route, name: `public-${slug}` });
        continue;
      }
      const person = people.find((p) => r.action === undefined || p.actions.has(r.action));
      if (person) screens.push({ actor: person.actor, route, name: `${person.who}-${slug}` });
      else unopened.push(r.path);
    }
    expect(unopened, "screens no test person may open").toEqual([]);
    const findings: string[] = [];
    const titles = new Set<string>();
    for (const s of screens) {
      // axe is injected as a script, which the strict CSP forbids: this context bypasses CSP for it.
      const bypass = await browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true, viewport: VIEWPORT });
      if (s.actor) {
        const eq = s.actor.cookie.indexOf("=");
        await bypass.addCookies([
          { name: s.actor.cookie.slice(0, eq), value: s.actor.cookie.slice(eq + 1), url: `${app.baseUrl}/`, secure: true, httpOnly: true, sameSite: "Strict" },
        ]);
      }
      const page = await bypass.newPage();
      await page.goto(`${app.baseUrl}/#${s.route}`);
      await page.getByRole("heading", { level: 1 }).first().waitFor();
      // The screen's data has arrived when no "Loading…" is left.
      await page
        .getByText("Loading…")
        .first()
        .waitFor({ state: "detached", timeout: 10_000 })
        .catch(() => undefined);
      titles.add(await page.title());
      await page.screenshot({ path: path.join(ARTIFACTS, `${s.name}.png`), fullPage: true });
      await page.addScriptTag({ path: AXE });
      const violations = await page.evaluate(async () => {
        const result = await (
          window as unknown as { axe: { run(ctx: Document, opts: object): Promise<{ violations: Array<{ id: string; impact: string; nodes: Array<{ target: string[] }> }> }> } }
        ).axe.run(document, { resultTypes: ["violations"] });
        return result.violations
          .filter((v) => v.impact === "serious" || v.impact === "critical")
          .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
      });
      findings.push(...violations.map((v) => `${s.name}: ${v}`));
      await bypass.close();
    }
    expect(findings).toEqual([]);
    // Each screen names itself (the same title twice would mean a screen without its own).
    expect(titles.size).toBe(new Set(screens.map((s) => s.route)).size);
    expect(fs.readdirSync(ARTIFACTS).sort()).toEqual(screens.map((s) => `${s.name}.png`).sort());
  }, 240_000);
});
