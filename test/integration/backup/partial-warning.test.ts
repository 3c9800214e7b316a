/**
 * The admin UI never shows a partial snapshot green: the newest run, when partial, is a warning
 * naming the target that did not get it, and that target's own alert is listed by name. A pruned
 * snapshot reads as pruned. In a real browser under the strict CSP.
 */
import fs from "node:fs";
import path from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writePolicy } from "../../../daemon/backups/policy.js";
import { runSnapshot } from "../../../daemon/backups/service.js";
import { inScope } from "../../../daemon/db/sql.js";
import { signIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { contextWithSession, ensureAdminUiBuilt, launchBrowser, screenshot, watchForViolations } from "../../helpers/browser.js";
import { tempDir } from "./helpers.js";

let app: TestAppliance;
let browser: Browser;
let dir: string;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  dir = tempDir();
  app = await startTestAppliance({ env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_BACKUP_SEGMENT_KIB: "64" } });
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("backups screen", () => {
  it("shows a partial snapshot as a warning that names the target which did not get it", async () => {
    await inScope(app.ctx.db.app, { kind: "appliance" }, (t) =>
      writePolicy(
        app.ctx,
        t,
        {
          targets: [
            { kind: "fs", name: "nas", path: path.join(dir, "nas") },
            // A full off-site share: every write fails with ENOSPC.
            { kind: "fs", name: "offsite", path: path.join(dir, "offsite"), quotaBytes: 1 },
          ],
        },
        null,
      ),
    );
    const run = await runSnapshot(app.ctx, { trigger: "manual" });
    expect(run.status).toBe("partial");

    const root = await signIn(app, { role: "super_admin" });
    const context = await contextWithSession(browser, app.baseUrl, root.cookie);
    const page = await context.newPage();
    const violations = watchForViolations(page);
    await page.goto(`${app.baseUrl}/#/backups`);
    const warning = page.getByTestId("partial-warning");
    await warning.waitFor();
    const text = (await warning.textContent()) ?? "";
    expect(text).toContain(`The latest snapshot ${run.id} is partial`);
    expect(text).toMatch(/target offsite did not get it \(.*ENOSPC/);
    expect(text).not.toMatch(/target nas did not/);
    const row = page.getByTestId("snapshots").locator("tr", { hasText: run.id });
    await expect(row.textContent()).resolves.toMatch(/partial.*missing on offsite/);
    await expect(row.textContent()).resolves.toContain("offsite (failed)");
    await page.getByText(/Target failed \(offsite\): target offsite did not get snapshot/).waitFor();
    await screenshot(page, "backups-partial");

    // Once every target gets a snapshot, the warning goes; retention keeping only the newest prunes the partial one.
    await inScope(app.ctx.db.app, { kind: "appliance" }, (t) =>
      writePolicy(
        app.ctx,
        t,
        {
          targets: [
            { kind: "fs", name: "nas", path: path.join(dir, "nas") },
            { kind: "fs", name: "offsite", path: path.join(dir, "offsite") },
          ],
          retention: { hourly: 1, daily: 0, weekly: 0, monthly: 0 },
        },
        null,
      ),
    );
    expect((await runSnapshot(app.ctx, { trigger: "manual" })).status).toBe("complete");
    await page.reload();
    await page.getByTestId("snapshots").waitFor();
    expect(await page.getByTestId("partial-warning").count()).toBe(0);
    expect(await page.getByText(/Target failed/).count()).toBe(0);
    const pruned = page.getByTestId("snapshots").locator("tr", { hasText: run.id });
    await expect(pruned.textContent()).resolves.toMatch(/pruned\s*by retention/);
    await expect(pruned.textContent()).resolves.toContain("nas (pruned)");
    expect(violations).toEqual([]);
    await context.close();
  });
});
