import fs from "node:fs";
import path from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { raiseAlert, resolveAlert } from "../../daemon/alerts/index.js";
import { ensureTlsMaterial } from "../../daemon/tls/internal-ca.js";
import { signIn, type SignedIn } from "../helpers/actors.js";
import { startTestAppliance, tempDir, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen, screenshot } from "../helpers/browser.js";
import { freePort } from "../helpers/postgres.js";
import { syslogCollector, waitUntil, type SyslogCollector } from "../helpers/syslog-collector.js";

/**
 * The alerts centre in a real browser: the top bar's count, open alerts with what they say and
 * where they went, acknowledging with a note that stays in the history once the alert clears, and
 * a channel's test button.
 */
let app: TestAppliance;
let browser: Browser;
let root: SignedIn;
let collector: SyslogCollector;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  const dir = tempDir("wardkeep-e2e-alerts-");
  const certs = await ensureTlsMaterial({ dir, hostnames: ["localhost"], validityDays: 30 });
  const port = await freePort();
  collector = syslogCollector(certs.certPem, certs.keyPem);
  await collector.listen(port);
  app = await startTestAppliance({ env: { WARDKEEP_ALERTS_POLL_INTERVAL_MS: "100", WARDKEEP_ALERTS_CHECK_INTERVAL_MS: "3600000" } });
  browser = await launchBrowser();
  root = await signIn(app, { role: "super_admin" });
  const created = await root.agent
    .post("/api/v1/alert-channels")
    .send({ type: "syslog", name: "Hospital SIEM", minSeverity: "warning", settings: { host: "localhost", port, caPem: fs.readFileSync(path.join(dir, "ca.crt"), "utf8") } });
  expect(created.status).toBe(201);
  // The test appliance has backups switched on and no target: its own backup.not_configured alert is open too.
  await resolveAlert(app.ctx, "backup.not_configured", "");
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
  await collector?.close();
});

describe("alerts centre", () => {
  it("shows the open count in the top bar, the alerts and where they went, and keeps an acknowledgement note in the history", async () => {
    const failed = await raiseAlert(app.ctx, { kind: "backup.snapshot_failed", severity: "critical", summary: "snapshot 20261207-0400 failed: target nas is not writable" });
    await raiseAlert(app.ctx, { kind: "system.disk_low", severity: "warning", summary: "the data directory's file system is 88% full (warning at 85%, critical at 95%)" });
    await waitUntil(() => collector.frames.filter((f) => f.includes("alert.raised")).length >= 2, 20_000, "both alerts at the SIEM");

    const { context, page, violations } = await openScreen(browser, app.baseUrl, root.cookie, "/");
    const badge = page.getByTestId("alert-badge");
    await expect.poll(() => badge.textContent(), { timeout: 15_000 }).toMatch(/Alerts\s*2/);
    await expect(badge.getAttribute("aria-label")).resolves.toBe("Alerts 2 open, 1 critical");
    await badge.click();
    await page.getByRole("heading", { level: 1, name: "Alerts" }).waitFor();

    const row = page.locator(`[data-testid=open-alerts] tr[data-alert-id="${failed.id}"]`);
    await expect.poll(() => row.textContent(), { timeout: 10_000 }).toContain("snapshot 20261207-0400 failed: target nas is not writable");
    await expect(row.textContent()).resolves.toContain("critical");
    await expect(row.textContent()).resolves.toContain("Hospital SIEM");
    await row.getByRole("button", { name: "Messages" }).click();
    const deliveries = page.getByTestId("alert-deliveries");
    await expect.poll(() => deliveries.textContent()).toMatch(/Hospital SIEM \(syslog\)raisedsent1/);

    await row.getByRole("button", { name: "Acknowledge" }).click();
    const dialog = page.getByTestId("ack-dialog");
    await dialog.getByRole("button", { name: "Acknowledge" }).click(); // an empty note is refused by the form
    await expect(dialog.isVisible()).resolves.toBe(true);
    await dialog.getByLabel("Note (what is being done about it)").fill("NAS remounted read-write; rerunning at 05:00");
    await dialog.getByRole("button", { name: "Acknowledge" }).click();
    await expect.poll(() => row.getByTestId("ack-note").textContent()).toBe("“NAS remounted read-write; rerunning at 05:00”");
    await expect(page.getByRole("status").first().textContent()).resolves.toBe(`Alert ${failed.id} acknowledged.`);
    await screenshot(page, "alerts-open");

    // The problem clears: the alert leaves the open list and the badge, the note stays in the history.
    await resolveAlert(app.ctx, "backup.snapshot_failed", "");
    await page.reload();
    await expect.poll(() => badge.textContent(), { timeout: 15_000 }).toMatch(/Alerts\s*1/);
    const past = page.locator(`[data-testid=alert-history] tr[data-alert-id="${failed.id}"]`);
    await expect.poll(() => past.textContent(), { timeout: 10_000 }).toContain("“NAS remounted read-write; rerunning at 05:00”");
    await expect(page.locator(`[data-testid=open-alerts] tr[data-alert-id="${failed.id}"]`).count()).resolves.toBe(0);

    // The channel's test button says what happened.
    const channel = page.locator('[data-testid=channels-table] tr[data-channel="Hospital SIEM"]');
    await channel.getByRole("button", { name: "Test" }).click();
    await expect.poll(() => page.getByTestId("channel-test-result").textContent()).toContain("Test message delivered to Hospital SIEM.");
    expect(collector.frames.some((f) => f.includes('kind="alerts.test"'))).toBe(true);
    expect(violations).toEqual([]);
    await context.close();
    await resolveAlert(app.ctx, "system.disk_low", "");
  });
});
