import path from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, signInWithPassword, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot } from "../helpers/browser.js";
import { PROJECT_ROOT } from "../helpers/daemon-process.js";
import { signInAtIdp, startTestIdp, type TestIdp } from "../helpers/oidc-idp.js";

/**
 * The console's hospital sign-in screens in Chromium, against one appliance and one in-process
 * OpenID Connect provider: what an admin sees when adding a provider (and the API's own error
 * for a bad issuer), testing and enabling it, editing the rule table with its dry run, a
 * privileged rule pending until a second admin approves it, a SCIM token shown once, a
 * break-glass account and the alert its use raises, and a just-in-time request going from the
 * requester to the approver's queue to an active grant with its expiry. axe-core checks both pages.
 */
let app: TestAppliance;
let browser: Browser;
let tenant: TenantRef;
let admin: SignedIn;
let admin2: SignedIn;
let nurse: SignedIn;
let idp: TestIdp;
const PROVIDER = "St. Mary's Entra ID";
const AXE = path.join(PROJECT_ROOT, "node_modules", "axe-core", "axe.min.js");

beforeAll(async () => {
  await ensureAdminUiBuilt();
  app = await startTestAppliance();
  browser = await launchBrowser();
  tenant = await createTenant(app, "St. Mary's");
  [admin, admin2, nurse] = await Promise.all([
    signIn(app, { role: "admin", tenantId: tenant.id, displayName: "Amara Admin" }),
    signIn(app, { role: "admin", tenantId: tenant.id, displayName: "Bo Second" }),
    signIn(app, { role: "practitioner", tenantId: tenant.id, displayName: "Nia Nurse" }),
  ]);
  idp = await startTestIdp({
    accounts: [
      { sub: "u-grey", preferred_username: "mgrey", email: "meredith.grey@stmarys.example", name: "Meredith Grey", groups: ["wardkeep-practitioners"] },
      { sub: "u-visitor", preferred_username: "visitor", email: "visitor@stmarys.example", name: "Vera Visitor", groups: ["cafeteria"] },
    ],
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await idp?.close();
  await app?.close();
});

const providersPage = (who: SignedIn) => openScreen(browser, app.baseUrl, who.cookie, "/sign-in-providers");
const providerRow = (page: Page) => page.getByTestId("providers-table").locator(`tr[data-provider]`, { hasText: PROVIDER });

async function axeFindings(who: SignedIn, route: string): Promise<string[]> {
  // axe is injected as a script, which the strict CSP forbids: this context bypasses CSP for it.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true });
  const eq = who.cookie.indexOf("=");
  await context.addCookies([{ name: who.cookie.slice(0, eq), value: who.cookie.slice(eq + 1), url: `${app.baseUrl}/`, secure: true, httpOnly: true, sameSite: "Strict" }]);
  const page = await context.newPage();
  await page.goto(`${app.baseUrl}/#${route}`);
  await page.getByRole("heading", { level: 1 }).first().waitFor();
  await page
    .getByText("Loading…")
    .first()
    .waitFor({ state: "detached" })
    .catch(() => undefined);
  await page.addScriptTag({ path: AXE });
  const found = await page.evaluate(async () => {
    const result = await (
      window as unknown as { axe: { run(ctx: Document, opts: object): Promise<{ violations: Array<{ id: string; impact: string; nodes: Array<{ target: string[] }> }> }> } }
    ).axe.run(document, { resultTypes: ["violations"] });
    return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  await context.close();
  return found.map((f) => `${route}: ${f}`);
}

describe("Sign-in providers page", () => {
  let context: BrowserContext;
  let page: Page;
  let violations: string[];

  beforeAll(async () => {
    ({ context, page, violations } = await providersPage(admin));
  });
  afterAll(async () => {
    expect(violations).toEqual([]);
    await context?.close();
  });

  it("shows the API's own error for an issuer that is not https, then lists the provider it adds, disabled", async () => {
    await page.getByRole("button", { name: "Add provider" }).click();
    const form = page.getByTestId("provider-form");
    await form.getByLabel("Name on the sign-in button").fill(PROVIDER);
    await form.getByLabel("Issuer URL").fill("http://login.hospital.example/v2.0");
    await form.getByLabel("Client ID").fill(idp.clientId);
    await form.getByLabel("Client secret").fill(idp.clientSecret);
    await form.getByRole("button", { name: "Add provider" }).click();
    await expect
      .poll(() => page.getByRole("alert").allTextContents())
      .toContain("The provider's settings are not valid — settings.issuer: the issuer must be an https:// URL (http:// only on loopback, for a test IdP on this host)");
    await expect(page.getByTestId("providers-table").count()).resolves.toBe(0);

    await form.getByLabel("Issuer URL").fill(idp.issuer);
    await form.getByRole("button", { name: "Add provider" }).click();
    await expect.poll(() => providerRow(page).locator("td").allTextContents()).toEqual([PROVIDER, "OpenID Connect", "Disabled", "0", "—", expect.any(String)]);
    const listed = (await admin.agent.get("/api/v1/identity-providers").expect(200)).body.providers as { id: string; redirectUri: string; name: string }[];
    expect(listed.map((p) => p.name)).toEqual([PROVIDER]);
    idp.allowRedirect(listed[0]!.redirectUri);
    idp.allowRedirect(`${app.baseUrl}/`);
    // The address to register at the IdP is on the screen.
    await page.getByTestId("providers-table").getByText(listed[0]!.redirectUri).waitFor();
  });

  it("shows what a test sign-in received, then enables the provider and the login page shows its button", async () => {
    await providerRow(page).getByRole("button", { name: "Test sign-in" }).click();
    await signInAtIdp(page, "visitor");
    await page.waitForURL(/#\/sign-in-providers\?test=/);
    const result = page.getByTestId("test-result");
    await expect.poll(() => result.textContent(), { timeout: 10_000 }).toContain("Received Vera Visitor (visitor@stmarys.example).");
    await expect(result.textContent()).resolves.toContain("No rule matches: this person could not sign in.");
    await expect(page.getByTestId("test-groups").textContent()).resolves.toBe("cafeteria");
    await expect(page.getByTestId("test-claims").locator("tr", { hasText: "preferred_username" }).textContent()).resolves.toContain("visitor");

    await providerRow(page).getByRole("button", { name: "Enable" }).click();
    await expect.poll(() => providerRow(page).locator("td").nth(2).textContent()).toBe("Enabled");
    const anonymous = await browser.newContext({ ignoreHTTPSErrors: true });
    const login = await anonymous.newPage();
    await login.goto(`${app.baseUrl}/#/login?tenant=${tenant.slug}`);
    await expect.poll(() => login.getByTestId("sso-button").allTextContents(), { timeout: 10_000 }).toEqual([`Sign in with ${PROVIDER}`]);
    await anonymous.close();
  });

  it("previews a rule edit with the people whose role would change, and saves only what was previewed", async () => {
    const rules = page.getByTestId("rules-table");
    await page.getByRole("button", { name: "Add rule" }).click();
    await rules.getByLabel("Rule 1: value").fill("wardkeep-practitioners");
    await expect(page.getByRole("button", { name: "Save rules" }).isDisabled()).resolves.toBe(true);
    await page.getByRole("button", { name: "Preview changes" }).click();
    await expect.poll(() => page.getByTestId("dry-run").textContent()).toContain("No account has signed in through a provider yet");
    await page.getByRole("button", { name: "Save rules" }).click();
    await expect.poll(() => rules.getByTestId("rule-row").first().locator("td").nth(7).textContent()).toBe("Active");

    // Meredith signs in through the IdP: now a linked account the dry run can judge.
    const staff = await browser.newContext({ ignoreHTTPSErrors: true });
    const signInPage = await staff.newPage();
    await signInPage.goto(`${app.baseUrl}/#/login?tenant=${tenant.slug}`);
    await signInPage.getByRole("link", { name: `Sign in with ${PROVIDER}` }).click();
    await signInAtIdp(signInPage, "mgrey");
    await signInPage.waitForURL(/#\/$/);
    await staff.close();
    await page.reload();
    await expect.poll(() => providerRow(page).locator("td").nth(3).textContent()).toBe("1");
    await expect(providerRow(page).locator("td").nth(4).textContent()).resolves.not.toBe("—");

    await rules.getByLabel("Rule 1: role").selectOption("front_desk");
    await page.getByRole("button", { name: "Preview changes" }).click();
    const row = page.getByTestId("dry-run-row");
    await expect.poll(() => row.first().locator("td").allTextContents()).toEqual(["meredith.grey@stmarys.example", PROVIDER, "Practitioner", "Front desk", "Role changes"]);
    await expect(page.getByTestId("dry-run").textContent()).resolves.toContain("1 of 1 linked accounts change.");
    // Changing the table again asks for a new preview before saving.
    await rules.getByLabel("Rule 1: role").selectOption("practitioner");
    await expect(page.getByTestId("dry-run").count()).resolves.toBe(0);
    await expect(page.getByRole("button", { name: "Save rules" }).isDisabled()).resolves.toBe(true);
  });

  it("keeps a rule granting admin pending until a second admin approves it", async () => {
    const rules = page.getByTestId("rules-table");
    await page.getByRole("button", { name: "Add rule" }).click();
    await rules.getByLabel("Rule 2: value").fill("wardkeep-admins");
    await rules.getByLabel("Rule 2: role").selectOption("admin");
    await expect(rules.getByTestId("rule-row").nth(1).locator("td").nth(7).textContent()).resolves.toBe("New: needs approval");
    await page.getByRole("button", { name: "Add rule" }).click();
    await rules.getByLabel("Rule 3: value").fill("wardkeep-auditors");
    await rules.getByLabel("Rule 3: role").selectOption("auditor");
    await page.getByRole("button", { name: "Preview changes" }).click();
    await page.getByTestId("dry-run").waitFor();
    await page.getByRole("button", { name: "Save rules" }).click();
    await expect.poll(() => rules.getByTestId("rule-row").nth(1).locator("td").nth(7).textContent()).toBe("Pending approval");
    await expect(page.getByRole("status").allTextContents()).resolves.toContain(
      "Rules saved; they apply at each person's next sign-in. 2 waiting for a second administrator's approval.",
    );
    // The one who saved it cannot approve it.
    const pendingBox = page.getByTestId("pending-rules");
    await expect(pendingBox.textContent()).resolves.toContain("You saved this rule: another administrator approves it.");
    await expect(pendingBox.getByRole("button", { name: "Approve" }).count()).resolves.toBe(0);

    const second = await providersPage(admin2);
    const theirs = second.page.getByTestId("pending-rules");
    // The second admin turns the auditor rule down: it leaves the table.
    await theirs.locator("li", { hasText: "wardkeep-auditors" }).getByRole("button", { name: "Reject" }).click();
    await expect.poll(() => second.page.getByRole("status").allTextContents()).toContain("The rule granting Auditor to wardkeep-auditors was rejected and removed.");
    // The notice comes before the table is read again: wait for the table.
    await expect.poll(() => second.page.getByTestId("rules-table").getByTestId("rule-row").count()).toBe(2);
    await expect.poll(() => theirs.textContent()).toContain("Group equals wardkeep-admins → Admin");
    await theirs.getByRole("button", { name: "Approve" }).click();
    await expect.poll(() => second.page.getByRole("status").allTextContents()).toContain("The rule granting Admin to wardkeep-admins is active.");
    await expect(second.page.getByTestId("rules-table").getByTestId("rule-row").nth(1).locator("td").nth(7).textContent()).resolves.toBe("Active");
    await expect(second.page.getByTestId("pending-rules").count()).resolves.toBe(0);
    expect(second.violations).toEqual([]);
    await second.context.close();
    const stored = (await admin.agent.get("/api/v1/identity-providers/rules").expect(200)).body.rules as { id: string; role: string; status: string; approvedBy: string }[];
    expect(stored.map((r) => [r.role, r.status])).toEqual([
      ["practitioner", "active"],
      ["admin", "active"],
    ]);
    expect(stored.find((r) => r.role === "admin")).toMatchObject({ status: "active", approvedBy: admin2.user.id });
    // Only a pending rule can be rejected; the API says so, and the rejection is audited.
    const active = stored.find((r) => r.role === "admin")!;
    const notPending = await admin2.agent.post(`/api/v1/identity-providers/rules/${active.id}/reject`).expect(409);
    expect(notPending.body.detail).toBe("this rule is not waiting for approval");
    await admin2.agent.post("/api/v1/identity-providers/rules/00000000-0000-4000-8000-000000000000/reject").expect(404);
    const rejected = (await admin.agent.get("/api/v1/audit?action=sso.rule.reject").expect(200)).body.events as { actor: { userId: string }; reason: string }[];
    expect(rejected.map((e) => [e.actor.userId, e.reason])).toEqual([[admin2.user.id, "would have granted auditor"]]);
  });

  it("shows a new SCIM token once, with the base URL; it provisions until revoked", async () => {
    const form = page.getByTestId("scim-token-form");
    await form.getByLabel("Provisioning client").fill("Entra ID provisioning");
    await form.getByRole("button", { name: "Create SCIM token" }).click();
    const value = await page.getByTestId("scim-token-value").inputValue({ timeout: 10_000 });
    expect(value).toMatch(/^wkscim_/);
    await expect(page.getByTestId("scim-base-url").textContent()).resolves.toMatch(/\/scim\/v2$/);
    const scim = () => request(app.baseUrl).get("/scim/v2/Users").ca(app.caPem).set("Authorization", `Bearer ${value}`);
    expect((await scim()).status).toBe(200);

    // Shown once: after a reload the page holds the prefix only.
    await page.reload();
    const row = page.getByTestId("scim-tokens-table").locator("tr", { hasText: "Entra ID provisioning" });
    await expect.poll(() => row.locator("td").nth(3).textContent()).toBe("Active");
    expect(await page.content()).not.toContain(value);
    await row.getByRole("button", { name: "Revoke" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Revoke" }).click();
    await expect.poll(() => row.locator("td").nth(3).textContent()).toBe("Revoked");
    expect((await scim()).status).toBe(401);
  });

  it("flags a break-glass account, and shows the alert its next password sign-in raises", async () => {
    const form = page.getByTestId("break-glass-form");
    await form.getByLabel("Flag as break-glass account").selectOption({ label: "Bo Second (Admin)" });
    await form.getByRole("button", { name: "Flag" }).click();
    await expect.poll(() => page.getByTestId("break-glass-table").locator("td").first().textContent()).toBe("Bo Second");

    await signInWithPassword(app, { email: admin2.user.email, password: admin2.password, totpSecret: admin2.totpSecret });
    await page.reload();
    await expect
      .poll(() => page.getByTestId("break-glass-used").textContent(), { timeout: 10_000 })
      .toMatch(/Critical\s*Break-glass account Bo Second signed in with its local password/);
  });
});

describe("Privileged access page", () => {
  it("takes a practitioner's request to the approver's queue, and shows the active grant with its expiry", async () => {
    const asker = await openScreen(browser, app.baseUrl, nurse.cookie, "/privileged-access");
    const form = asker.page.getByTestId("privileged-access-form");
    await form.getByLabel("Role").selectOption("admin");
    await form.getByLabel("For how many minutes").fill("30");
    await form.getByLabel("Reason").fill("INC-4411 fix the night rota");
    await form.getByRole("button", { name: "Ask for access" }).click();
    await expect.poll(() => asker.page.getByTestId("my-open-request").textContent()).toMatch(/You\s+asked for\s+Admin\s+for 30 minutes;\s+another administrator decides/);

    const approver = await openScreen(browser, app.baseUrl, admin.cookie, "/privileged-access");
    const queued = approver.page.getByTestId("jit-queue").locator("tr", { hasText: nurse.user.email });
    await expect
      .poll(async () => (await queued.locator("td").allTextContents()).slice(0, 5))
      .toEqual([nurse.user.email, "Practitioner", "Admin", "30 min", "INC-4411 fix the night rota"]);
    const before = Date.now();
    await queued.getByRole("button", { name: "Approve" }).click();
    const active = approver.page.getByTestId("jit-active").locator("tr", { hasText: nurse.user.email });
    await expect.poll(() => active.locator("td").nth(1).textContent()).toBe("Admin");
    const expiry = await active.getByTestId("jit-expiry").locator("time").getAttribute("datetime");
    expect(Date.parse(expiry!)).toBeGreaterThanOrEqual(before + 30 * 60_000 - 5_000);
    expect(Date.parse(expiry!)).toBeLessThanOrEqual(Date.now() + 30 * 60_000 + 5_000);
    await expect(active.getByTestId("jit-expiry").textContent()).resolves.not.toBe("—");
    await expect(approver.page.getByTestId("jit-queue").count()).resolves.toBe(0);

    // The requester sees the grant in force, and holds the role.
    await asker.page.reload();
    await expect.poll(() => asker.page.getByTestId("my-open-request").textContent()).toMatch(/You\s+hold\s+Admin\s+until \S/);
    expect((await nurse.agent.get("/api/v1/auth/session").expect(200)).body.user.role).toBe("admin");
    expect([...asker.violations, ...approver.violations]).toEqual([]);
    await screenshot(approver.page, "privileged-access");
    await asker.context.close();
    await approver.context.close();
  });

  it("has no serious or critical axe-core violation on either page", async () => {
    expect([...(await axeFindings(admin, "/sign-in-providers")), ...(await axeFindings(admin, "/privileged-access"))]).toEqual([]);
  });
});
