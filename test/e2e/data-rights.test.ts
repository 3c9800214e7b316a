import fs from "node:fs";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, totpCode, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot } from "../helpers/browser.js";
import { TestClock } from "../helpers/clock.js";

/**
 * The Data rights page and the names on the Audit page, in Chromium against a real appliance:
 * a hold placed on one patient shows with its reason and is released with one (step-up); an
 * erasure request counts down its grace period and is cancelled; one patient's export downloads a
 * file that holds the patient; the audit trail shows the actor by name, the patient by name to an
 * owner (an audited read) and by id to an auditor, who reads no PHI.
 */
let app: TestAppliance;
let browser: Browser;
const clock = new TestClock();
let tenant: TenantRef;
let owner: SignedIn;
let desk: SignedIn;
let auditor: SignedIn;
let ada: string;
let bram: string;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  app = await startTestAppliance({ clock, env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false" } });
  browser = await launchBrowser();
  tenant = await createTenant(app, "Data Rights General");
  [owner, desk] = await Promise.all([
    signIn(app, { role: "owner", tenantId: tenant.id, displayName: "Olga Owner" }),
    signIn(app, { role: "front_desk", tenantId: tenant.id, displayName: "Dina Desk" }),
  ]);
  ada = (await desk.agent.post("/api/v1/patients").send({ name: "Ada Quell" }).expect(201)).body.id;
  bram = (await desk.agent.post("/api/v1/patients").send({ name: "Bram Oduya" }).expect(201)).body.id;
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
});

/** Makes the owner's second factor stale, then answers the step-up dialog with a fresh code. */
async function stepUp(page: Page, who: SignedIn) {
  const dialog = page.getByTestId("step-up");
  await dialog.getByLabel("Authentication code").fill(totpCode(who.totpSecret!, clock.now()));
  await dialog.getByRole("button", { name: "Confirm and continue" }).click();
  await dialog.waitFor({ state: "hidden" });
}
const staleSecondFactor = () => clock.advanceMinutes(app.config.auth.stepUpMaxAgeMinutes + 1);

/** The countdown the page shows for a deadline, as formatTimeLeft writes it (hours are its unit past a day). */
function timeLeft(ms: number): string {
  const minutes = Math.floor(ms / 60_000);
  const days = Math.floor(minutes / 1440);
  return `${days} days ${Math.floor((minutes % 1440) / 60)} h left`;
}

describe("the Data rights page", () => {
  it("places a hold on one patient with its reason, refuses a bad patient id with the API's message, and releases the hold with a reason after a fresh code", async () => {
    const { context, page, violations } = await openScreen(browser, app.baseUrl, owner.cookie, "/data-rights");
    await page.getByRole("heading", { level: 1, name: "Data rights" }).waitFor();
    const form = page.getByTestId("place-hold");
    await form.getByLabel("Hold").selectOption("one-patient");
    await form.getByLabel("Patient id").fill("not-a-patient");
    await form.getByLabel("Reason (matter or case reference)").fill("Matter 2026-201, preservation notice");
    await form.getByRole("button", { name: "Place hold" }).click();
    await expect.poll(() => page.getByRole("alert").allTextContents()).toEqual(expect.arrayContaining([expect.stringMatching(/^1 field failed validation — id: /)]));

    await form.getByLabel("Patient id").fill(ada);
    await form.getByRole("button", { name: "Place hold" }).click();
    const row = page.getByTestId("legal-holds").locator("tr", { hasText: "Matter 2026-201" });
    await expect
      .poll(async () => (await row.locator("td").allTextContents()).map((t) => t.trim()))
      .toEqual([`Patient ${ada.slice(0, 8)}`, "Matter 2026-201, preservation notice", expect.any(String), "in force", "Release"]);
    await expect(page.getByRole("status").first().textContent()).resolves.toBe(`Hold placed on patient ${ada.slice(0, 8)}.`);
    await screenshot(page, "data-rights-hold");

    // Erasure of a held patient is refused, with the reason the daemon gives.
    staleSecondFactor();
    await page.getByLabel("Patient id to erase").fill(ada);
    await page.getByRole("button", { name: "Request erasure" }).click();
    await page.getByTestId("confirm-dialog").getByRole("button", { name: "Request erasure" }).click();
    await stepUp(page, owner);
    await expect.poll(() => page.getByTestId("confirm-dialog").getByRole("alert").textContent()).toBe("Deleting this patient is blocked by 1 active legal hold(s)");
    await page.getByTestId("confirm-dialog").getByRole("button", { name: "Cancel" }).click();

    staleSecondFactor();
    await row.getByRole("button", { name: "Release" }).click();
    const dialog = page.getByTestId("confirm-dialog").filter({ hasText: "Release hold" });
    await dialog.getByLabel("Reason for release").fill("Matter closed by the court");
    await dialog.getByRole("button", { name: "Release" }).click();
    await stepUp(page, owner);
    await expect.poll(() => row.locator("td").nth(3).textContent()).toMatch(/“Matter closed by the court”$/);
    await expect(row.getByRole("button", { name: "Release" }).count()).resolves.toBe(0);

    const holds = (await owner.agent.get(`/api/v1/legal-holds?patientId=${ada}`).expect(200)).body.items;
    expect(holds).toEqual([expect.objectContaining({ active: false, reason: "Matter 2026-201, preservation notice", releaseReason: "Matter closed by the court" })]);
    // The release reason is the patient's, encrypted at rest: the audit event only says one was given.
    const events = (await owner.agent.get("/api/v1/audit?action=legal_hold.release").expect(200)).body.events;
    expect(events).toEqual([
      expect.objectContaining({ patientId: ada, resourceId: holds[0].id, reason: "with a reason", actor: expect.objectContaining({ userId: owner.user.id }) }),
    ]);
    expect(JSON.stringify(events)).not.toContain("Matter closed");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("requests a patient's erasure after a fresh code, counts down the grace period until crypto-shredding, and cancels it", async () => {
    const { context, page, violations } = await openScreen(browser, app.baseUrl, owner.cookie, "/data-rights");
    staleSecondFactor();
    await page.getByLabel("Patient id to erase").fill(bram);
    await page.getByRole("button", { name: "Request erasure" }).click();
    await page.getByTestId("confirm-dialog").getByRole("button", { name: "Request erasure" }).click();
    await stepUp(page, owner);
    await expect
      .poll(() => page.getByRole("status").first().textContent())
      .toBe(`Erasure of patient ${bram.slice(0, 8)} requested: purged and crypto-shredded after ${app.config.records.deletionGraceDays} days unless cancelled.`);

    const request = (await owner.agent.get("/api/v1/deletion-requests?status=pending").expect(200)).body.items[0];
    expect(request).toMatchObject({ subject: "patient", patientId: bram, status: "pending" });
    const row = page.getByTestId("erasure-requests").locator(`tr[data-request="${request.id}"]`);
    const left = Date.parse(request.purgeAfter) - Date.now();
    await expect.poll(async () => (await row.getByTestId("countdown").textContent())?.trim()).toMatch(new RegExp(`^(${timeLeft(left)}|${timeLeft(left - 120_000)})$`));
    await expect(row.locator("td").nth(2).textContent()).resolves.toMatch(new RegExp(`^${app.config.records.deletionGraceDays} days, until `));
    await expect(
      row
        .locator("td")
        .nth(4)
        .textContent()
        .then((t) => t?.trim()),
    ).resolves.toBe("pending");
    await screenshot(page, "data-rights-erasure");

    await row.getByRole("button", { name: "Cancel erasure" }).click();
    await page.getByTestId("confirm-dialog").filter({ hasText: "stays; nothing is deleted" }).getByRole("button", { name: "Cancel erasure" }).click();
    await expect.poll(async () => (await row.locator("td").nth(4).textContent())?.trim()).toBe("cancelled");
    await expect(
      row
        .getByTestId("countdown")
        .textContent()
        .then((t) => t?.trim()),
    ).resolves.toBe("—");
    await expect(page.getByRole("status").first().textContent()).resolves.toBe(`Erasure of patient ${bram.slice(0, 8)} cancelled; nothing was deleted.`);
    expect((await owner.agent.get(`/api/v1/deletion-requests`).expect(200)).body.items.find((r: { id: string }) => r.id === request.id).status).toBe("cancelled");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("downloads one patient's export, a file holding that patient, after a fresh code; an unknown patient shows why nothing came", async () => {
    const { context, page, violations } = await openScreen(browser, app.baseUrl, owner.cookie, "/data-rights");
    const form = page.getByTestId("patient-export");
    await form.getByLabel("Patient id to export").fill("00000000-0000-4000-8000-000000000000");
    await form.getByRole("button", { name: "Download export" }).click();
    await expect.poll(() => form.locator("xpath=..").getByRole("alert").textContent()).toMatch(/not found|no such patient/i);

    staleSecondFactor();
    await form.getByLabel("Patient id to export").fill(ada);
    const downloading = page.waitForEvent("download");
    await form.getByRole("button", { name: "Download export" }).click();
    await stepUp(page, owner);
    const download = await downloading;
    const body = JSON.parse(fs.readFileSync((await download.path())!, "utf8"));
    expect(JSON.stringify(body)).toContain(ada);
    expect(JSON.stringify(body)).toContain("Ada Quell");
    await expect.poll(() => page.getByRole("status").first().textContent()).toBe(`Export of patient ${ada.slice(0, 8)} downloaded (${download.suggestedFilename()}).`);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("shows an auditor the erasures and holds but no form to change them", async () => {
    // Signed in now: the owner's step-ups above moved the clock past an idle timeout.
    auditor = await signIn(app, { role: "auditor", tenantId: tenant.id, displayName: "Aldo Auditor" });
    const { context, page, violations } = await openScreen(browser, app.baseUrl, auditor.cookie, "/data-rights");
    await expect.poll(() => page.getByTestId("erasure-requests").locator("tbody tr").count()).toBe(1);
    await expect.poll(() => page.getByTestId("legal-holds").locator("tbody tr").count()).toBe(1);
    for (const form of ["place-hold", "request-erasure", "patient-export"]) await expect(page.getByTestId(form).count()).resolves.toBe(0);
    await expect(page.getByRole("button", { name: /Release|Cancel erasure/ }).count()).resolves.toBe(0);
    expect(violations).toEqual([]);
    await context.close();
  });
});

describe("the Audit page", () => {
  it("names the actor and, for an owner, the patient — a read that is itself audited", async () => {
    const { context, page, violations } = await openScreen(browser, app.baseUrl, owner.cookie, "/audit");
    const search = page.getByTestId("audit-search");
    await search.getByLabel("Patient id").fill(ada);
    await search.getByLabel("Action").fill("patient.create");
    await search.getByRole("button", { name: "Search" }).click();
    const row = page.getByTestId("audit-events").locator("tbody tr", { hasText: "patient.create" });
    await expect.poll(() => row.locator("td").nth(2).textContent()).toMatch(/^\s*Dina Desk\s*Front desk\s*$/);
    await expect.poll(async () => (await row.locator("td").nth(5).textContent())?.trim()).toBe("Ada Quell");
    await expect(page.getByTestId("audit-names-note").textContent()).resolves.toContain("Each patient name shown is recorded as a read in that patient's access timeline.");
    await screenshot(page, "audit-names-owner");

    const reads = (await owner.agent.get(`/api/v1/audit?action=patient.name_read&patient=${ada}`).expect(200)).body.events;
    expect(reads.length).toBeGreaterThanOrEqual(1);
    expect(reads[0]).toMatchObject({ patientId: ada, resourceId: ada, outcome: "success", actor: expect.objectContaining({ userId: owner.user.id }) });
    // The name is shown, never written into the trail.
    expect(JSON.stringify((await owner.agent.get(`/api/v1/audit?patient=${ada}&limit=500`).expect(200)).body)).not.toContain("Ada Quell");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("names the actor for an auditor but shows the patient by id, and reads no patient name", async () => {
    const before = (await owner.agent.get(`/api/v1/audit?action=patient.name_read`).expect(200)).body.events.length;
    const { context, page, violations } = await openScreen(browser, app.baseUrl, auditor.cookie, "/audit");
    const search = page.getByTestId("audit-search");
    await search.getByLabel("Patient id").fill(ada);
    await search.getByLabel("Action").fill("patient.create");
    await search.getByRole("button", { name: "Search" }).click();
    const row = page.getByTestId("audit-events").locator("tbody tr", { hasText: "patient.create" });
    await expect.poll(() => row.locator("td").nth(2).textContent()).toMatch(/^\s*Dina Desk\s*Front desk\s*$/);
    // Polled: until the search's answer replaces the unfiltered list, the first patient.create row may be another patient's.
    await expect
      .poll(() =>
        row
          .locator("td")
          .nth(5)
          .textContent()
          .then((t) => t?.trim()),
      )
      .toBe(ada.slice(0, 8));
    await expect(page.getByTestId("audit-names-note").textContent()).resolves.toContain("Patients are shown by id: your role does not read patient names.");
    await expect(page.getByText("Ada Quell").count()).resolves.toBe(0);
    expect((await owner.agent.get(`/api/v1/audit?action=patient.name_read`).expect(200)).body.events.length).toBe(before);
    await screenshot(page, "audit-names-auditor");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("answers the names call with no other tenant's people and no patient names for roles that read none", async () => {
    const other = await createTenant(app, "Elsewhere Clinic");
    const stranger = await signIn(app, { role: "admin", tenantId: other.id, displayName: "Stan Stranger", mfa: false });
    const res = await auditor.agent
      .post("/api/v1/audit/names")
      .send({ userIds: [desk.user.id, stranger.user.id], tenantIds: [tenant.id, other.id], patientIds: [ada] })
      .expect(200);
    expect(res.body).toEqual({
      users: [{ id: desk.user.id, name: "Dina Desk" }],
      tenants: [{ id: tenant.id, name: "Data Rights General" }],
      patients: [],
      patientNamesShown: false,
    });
    const bad = await auditor.agent.post("/api/v1/audit/names").send({ patientIds: ["not-an-id"] });
    expect(bad.status).toBe(400);
    expect(bad.headers["content-type"]).toMatch(/application\/problem\+json/);
    expect(JSON.stringify(bad.body)).not.toContain("not-an-id");
  });
});
