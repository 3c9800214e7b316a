import fs from "node:fs";
import { createPublicKey, verify } from "node:crypto";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishWebhookEventAlone } from "../../daemon/webhooks/index.js";
import { signIn, totpCode, type SignedIn } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot } from "../helpers/browser.js";
import { TestClock } from "../helpers/clock.js";
import { until, WebhookReceiver } from "../helpers/webhook-receiver.js";
import { asSuperuser, assignCareTeam, openClinic, registerPatient, type Clinic } from "../integration/records/helpers.js";

/**
 * The operations screens in a real browser against a real appliance: Retention (rules with their
 * legal basis, the dry run before a change that purges, the confirmation with step-up, holds, the
 * next run and a certificate download), Jobs (runs with outcome, duration and replica, "run now"
 * with step-up for a job that destroys data) and Webhooks (subscriptions, the delivery log, a dead
 * letter replayed, a secret rotated). Each check reads the text the screen shows.
 */
const DAY = 86_400_000;
let app: TestAppliance;
let browser: Browser;
let clinic: Clinic;
let root: SignedIn;
let owner: SignedIn;
let receiver: WebhookReceiver;
const clock = new TestClock();
let noteId = "";
let noteCreatedAt = "";

beforeAll(async () => {
  await ensureAdminUiBuilt();
  app = await startTestAppliance({
    clock,
    env: {
      WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
      WARDKEEP_WEBHOOKS_ALLOW_PLAIN_HTTP: "true",
      WARDKEEP_WEBHOOKS_POLL_INTERVAL_MS: "50",
      WARDKEEP_WEBHOOKS_MAX_ATTEMPTS: "1",
    },
  });
  browser = await launchBrowser();
  receiver = await new WebhookReceiver().listen();
  clinic = await openClinic(app, "Operations General");
  const patient = await registerPatient(clinic);
  await assignCareTeam(clinic, patient.id);
  const note = await clinic.doctor.agent.post(`/api/v1/patients/${patient.id}/notes`).send({ body: "Discharge summary" });
  expect(note.status, JSON.stringify(note.body)).toBe(201);
  noteId = note.body.id;
  noteCreatedAt = note.body.createdAt;
  // Three days on: the note is older than a one-day rule would allow. Everyone signs in again (sessions have an absolute lifetime).
  clock.advance(3 * DAY);
  owner = await signIn(app, { role: "owner", tenantId: clinic.tenant.id });
  root = await signIn(app, { role: "super_admin" });
});
afterAll(async () => {
  await browser?.close();
  await receiver?.close();
  await app?.close();
});

describe("operations screens", () => {
  it("Retention: shows the rules, dry-runs a shorter period, and applies it only after the count is confirmed with a fresh code", async () => {
    const { context, page, violations } = await openScreen(browser, app.baseUrl, owner.cookie, "/retention");
    const rules = page.getByTestId("retention-rules");
    const noteRule = rules.locator('tr[data-class="note"]');
    await expect.poll(() => noteRule.textContent(), { timeout: 15_000 }).toContain("2192 days after creation");
    await expect(noteRule.textContent()).resolves.toContain("default");
    await expect(rules.locator('tr[data-class="session"]').textContent()).resolves.toContain("30 days after expiry");
    await expect(page.getByTestId("retention-preview").locator("tfoot").textContent()).resolves.toMatch(/Total\s*0/);

    // Eleven minutes later the owner's second factor is too old for a change that destroys records.
    clock.advanceMinutes(11);
    await noteRule.getByRole("button", { name: "Change" }).click();
    const dialog = page.getByTestId("rule-dialog");
    await dialog.getByLabel("Keep for (days)").fill("1");
    await dialog.getByLabel("Legal basis").fill("Hospital policy HP-12 (test tenant)");
    await dialog.getByRole("button", { name: "Dry run" }).click();
    await expect.poll(() => dialog.getByTestId("rule-dry-run").locator('tr[data-class="note"] td').allTextContents()).toEqual(["Clinical notes", expect.any(String), "1", "0"]);
    await dialog.getByRole("button", { name: "Save" }).click();
    const stepUp = page.getByTestId("step-up");
    await stepUp.getByLabel("Authentication code").fill(totpCode(owner.totpSecret!, clock.now()));
    await stepUp.getByRole("button", { name: "Confirm and continue" }).click();
    // The daemon answers with the count to confirm; nothing changed yet.
    await expect.poll(() => dialog.getByTestId("confirm-purge").textContent()).toContain("This change destroys 1 clinical notes on the next run.");
    expect((await owner.agent.get("/api/v1/retention/rules")).body.rules.find((r: { recordClass: string }) => r.recordClass === "note").periodDays).toBe(2192);
    await screenshot(page, "retention-confirm");
    await dialog.getByRole("button", { name: "Destroy 1 and save" }).click();
    await expect.poll(() => page.getByRole("status").first().textContent()).toBe("Clinical notes: kept 1 days after creation.");
    await expect.poll(() => noteRule.textContent()).toContain("Hospital policy HP-12 (test tenant)");
    await expect(noteRule.textContent()).resolves.toContain("this tenant");
    await expect.poll(() => page.getByTestId("retention-preview").locator('tr[data-class="note"] td').nth(2).textContent()).toBe("1");

    // A hold on audio recordings, placed from the form, shows as in force.
    const form = page.getByTestId("place-hold");
    await form.getByLabel("Hold").selectOption("audio");
    await form.getByLabel("Reason (matter or case reference)").fill("Matter 2026-114");
    await form.getByRole("button", { name: "Place hold" }).click();
    const hold = page.getByTestId("legal-holds").locator("tr", { hasText: "Matter 2026-114" });
    await expect.poll(() => hold.textContent()).toMatch(/Audio recordings.*Matter 2026-114.*in force/);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("Jobs: shows a run's outcome, duration and replica, and runs the purge now after a fresh code", async () => {
    const started = await root.agent.post("/api/v1/jobs/inactive-users/run");
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    const runId = started.body.run.id as string;
    const replica = started.body.run.replica as string;
    await until(
      async () => (await root.agent.get("/api/v1/jobs/inactive-users/runs")).body.runs.find((r: { id: string }) => r.id === runId)?.outcome,
      (o) => o === "succeeded",
    );

    clock.advanceMinutes(11);
    const { context, page, violations } = await openScreen(browser, app.baseUrl, root.cookie, "/jobs");
    const row = page.locator('[data-testid=jobs-table] tr[data-job="inactive-users"]');
    await expect.poll(() => row.textContent(), { timeout: 15_000 }).toContain("succeeded");
    await expect(row.textContent()).resolves.toContain(replica);
    await expect(row.locator("td").nth(3).textContent()).resolves.toMatch(/^\d+\.\d s$/);
    await row.getByRole("button", { name: "Runs" }).click();
    const run = page.locator(`[data-testid=job-runs] tr[data-run="${runId}"]`);
    await expect.poll(() => run.textContent()).toMatch(new RegExp(`^${runId}run now.*succeeded`));

    const purge = page.locator('[data-testid=jobs-table] tr[data-job="retention-purge"]');
    await expect(purge.textContent()).resolves.toContain("destroys data");
    await purge.getByRole("button", { name: "Run now" }).click();
    await page.getByTestId("confirm-dialog").getByRole("button", { name: "Run now" }).click();
    const stepUp = page.getByTestId("step-up");
    await stepUp.getByLabel("Authentication code").fill(totpCode(root.totpSecret!, clock.now()));
    await stepUp.getByRole("button", { name: "Confirm and continue" }).click();
    await expect.poll(() => page.getByRole("status").first().textContent()).toMatch(/^retention-purge started \(run \d+ on .+\)\.$/);
    await until(
      async () => (await root.agent.get("/api/v1/jobs/retention-purge/runs")).body.runs[0]?.outcome,
      (o) => o === "succeeded",
    );
    await page.reload();
    await expect.poll(() => purge.textContent(), { timeout: 15_000 }).toContain("succeeded");
    await screenshot(page, "jobs");
    expect(violations).toEqual([]);
    await context.close();
  });

  it("Retention: lists the purge run and downloads its certificate, which verifies and names the note destroyed", async () => {
    expect(await asSuperuser(app, "SELECT id FROM notes WHERE id = $1", [noteId])).toEqual([]);
    const auditor = await signIn(app, { role: "auditor", tenantId: clinic.tenant.id });
    const again = await openScreen(browser, app.baseUrl, auditor.cookie, "/retention");
    const runRow = again.page.getByTestId("retention-runs").locator("tbody tr").first();
    await expect.poll(() => runRow.locator("td").allTextContents(), { timeout: 15_000 }).toEqual([expect.any(String), expect.any(String), "1", "note 1", "Download certificate"]);
    // Auditors read the register but change nothing: no Change button, no hold form.
    await expect(again.page.getByRole("button", { name: "Change" }).count()).resolves.toBe(0);
    await expect(again.page.getByTestId("place-hold").count()).resolves.toBe(0);
    const [download] = await Promise.all([again.page.waitForEvent("download"), runRow.getByRole("button", { name: "Download certificate" }).click()]);
    expect(download.suggestedFilename()).toMatch(/^disposition-certificate-[0-9a-f-]{36}\.json$/);
    const cert = JSON.parse(fs.readFileSync((await download.path())!, "utf8")) as { certificate: string; signature: string; publicKeySpki: string };
    const key = createPublicKey({ key: Buffer.from(cert.publicKeySpki, "base64"), format: "der", type: "spki" });
    expect(verify(null, Buffer.from(cert.certificate, "utf8"), key, Buffer.from(cert.signature, "base64"))).toBe(true);
    const body = JSON.parse(cert.certificate);
    // Notes go in creation order: the range names the first and last note destroyed with their creation times (microseconds).
    const at = noteCreatedAt.replace(/Z$/, "000Z");
    expect(body.destroyed.note).toEqual({ count: 1, batches: 1, firstId: noteId, lastId: noteId, firstAt: at, lastAt: at });
    expect(body.rules.note.order).toBe("creation");
    expect(body.rules.note).toMatchObject({ periodDays: 1, legalBasis: "Hospital policy HP-12 (test tenant)" });
    expect(again.violations).toEqual([]);
    await again.context.close();
  });

  it("Webhooks: shows the subscription, the dead letter with why, replays it, shows a rotated secret once, and the public key after a switch to Ed25519", async () => {
    clinic.admin = await signIn(app, { role: "admin", tenantId: clinic.tenant.id });
    const allowed = await root.agent.post("/api/v1/webhooks/allowed-hosts").send({ host: "127.0.0.1", port: receiver.port, allowPrivate: true, note: "test receiver" });
    expect(allowed.status, JSON.stringify(allowed.body)).toBe(201);
    const created = await clinic.admin.agent
      .post("/api/v1/webhooks")
      .send({ url: `http://127.0.0.1:${receiver.port}/hooks/consents`, eventTypes: ["consent.revoked"], description: "Consent registry" });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    receiver.secrets = [created.body.secret];
    receiver.answer = () => ({ status: 503 });
    const published = await publishWebhookEventAlone(app.ctx, {
      tenantId: clinic.tenant.id,
      type: "consent.revoked",
      data: { patientId: "3f0c1d9e-8a51-4a52-9a0f-0b8f3b2b7c11", consentId: "c-9" },
    });
    const messageId = published.messageId!;
    await until(
      async () => (await clinic.admin.agent.get("/api/v1/webhooks/deliveries?status=dead")).body.deliveries.length,
      (n) => n === 1,
    );

    // The dead letter raised an alert for the tenant's admins, with ids and counts only.
    const endpointId = created.body.endpoint.id as string;
    const deadAlert = async () =>
      ((await clinic.admin.agent.get("/api/v1/alerts?state=all")).body.alerts as { kind: string; key: string; summary: string; resolvedAt: string | null }[]).find(
        (a) => a.kind === "webhook.dead_letter" && a.key === endpointId,
      );
    expect((await until(deadAlert, (a) => a !== undefined))!).toMatchObject({
      summary: `1 webhook message(s) to endpoint ${endpointId} are in the dead-letter list (last: HTTP 503); replay them from the Webhooks page once the receiver is back`,
      resolvedAt: null,
    });
    const { context, page, violations } = await openScreen(browser, app.baseUrl, clinic.admin.cookie, "/webhooks");
    const endpoint = page.getByTestId("webhook-endpoints").locator("tbody tr").first();
    await expect.poll(() => endpoint.textContent(), { timeout: 15_000 }).toContain(`http://127.0.0.1:${receiver.port}/hooks/consents`);
    await expect(endpoint.textContent()).resolves.toMatch(/Consent registry.*consent\.revoked.*enabled.*version 1/);
    const dead = page.getByTestId("webhook-dead-letters").locator("tbody tr").first();
    await expect(dead.textContent()).resolves.toMatch(new RegExp(`^${messageId}consent\\.revoked.*retries exhausted`));
    await dead.getByRole("button", { name: "Attempts" }).click();
    await expect.poll(() => page.getByTestId("delivery-attempts").locator("tbody tr").first().textContent()).toMatch(/^1.*503failed/);

    // The receiver is back: the replay goes out with the same webhook-id. (Signatures are checked in
    // test/integration/webhooks; here the appliance's clock runs days ahead of the receiver's tolerance.)
    receiver.answer = () => ({ status: 204 });
    await dead.getByRole("button", { name: "Replay" }).click();
    await expect.poll(() => page.getByRole("status").first().textContent()).toBe(`Message ${messageId} queued again to http://127.0.0.1:${receiver.port}/hooks/consents.`);
    await until(
      () => receiver.received.filter((r) => r.id === messageId).length,
      (n) => n === 2,
    );
    // Delivered again with no dead letter left: the alert resolves.
    await until(deadAlert, (a) => a?.resolvedAt !== null);
    await page.reload();
    await page.getByTestId("webhook-deliveries").waitFor();
    // The log keeps both: the dead one, marked replayed, and the replay, delivered (after the time and event: receiver, status, attempts, answer).
    const url = `http://127.0.0.1:${receiver.port}/hooks/consents`;
    const logRows = page.getByTestId("webhook-deliveries").locator("tbody tr");
    await expect
      .poll(async () => (await logRows.allTextContents()).map((t) => t.slice(t.indexOf("consent.revoked") + "consent.revoked".length)).sort())
      .toEqual([`${url}delivered1204Attempts`, `${url}replayed1503Attempts`]);
    await expect(page.getByTestId("webhook-dead-letters").count()).resolves.toBe(0);
    await expect(page.getByText("No dead letters").count()).resolves.toBe(1);

    await endpoint.getByRole("button", { name: "Rotate secret" }).click();
    const confirm = page.getByTestId("confirm-dialog");
    await confirm.getByLabel("Hours the old secret also signs (0–168)").fill("12");
    await confirm.getByRole("button", { name: "Rotate" }).click();
    const shown = (await page.getByTestId("new-secret").textContent())!;
    expect(shown).toMatch(/^whsec_/);
    expect(shown).not.toBe(created.body.secret);
    await page.getByTestId("secret-dialog").getByRole("button", { name: "Done" }).click();
    await expect.poll(() => endpoint.textContent()).toMatch(/HMAC-SHA-256 \(v1\), version 2\s*previous secret also signs until/);

    // Switching the endpoint to Ed25519: the dialog shows the public key the receiver needs, and the row keeps showing it.
    await endpoint.getByRole("button", { name: "Rotate secret" }).click();
    await confirm.getByLabel("Signature").selectOption("v1a");
    await confirm.getByLabel("Hours the old secret also signs (0–168)").fill("1");
    await confirm.getByRole("button", { name: "Rotate" }).click();
    await expect(page.getByTestId("secret-dialog").getByRole("heading").textContent()).resolves.toBe("New public key");
    const publicKey = (await page.getByTestId("new-secret").textContent())!;
    expect(publicKey).toMatch(/^whpk_[A-Za-z0-9+/]{43}=$/);
    const listed = ((await clinic.admin.agent.get("/api/v1/webhooks")).body.endpoints as { id: string; publicKey: string | null }[]).find((e) => e.id === endpointId);
    expect(listed?.publicKey).toBe(publicKey);
    await page.getByTestId("secret-dialog").getByRole("button", { name: "Done" }).click();
    await expect.poll(() => endpoint.textContent()).toMatch(/Ed25519 \(v1a\), version 3\s*whpk_.*previous secret also signs until/);
    await expect(endpoint.getByTestId("public-key").textContent()).resolves.toBe(publicKey);
    await screenshot(page, "webhooks");
    expect(violations).toEqual([]);
    await context.close();
  });
});
