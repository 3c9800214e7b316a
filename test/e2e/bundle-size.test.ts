import fs from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { adminUiDirectory } from "../../daemon/http/admin-ui.js";
import { ensureAdminUiBuilt } from "../helpers/browser.js";

/**
 * The admin UI's JavaScript stays under 150 KB gzipped (issue 15): it loads on ward PCs over the
 * hospital network, and a dependency that pulls in a framework shows up here first.
 */
const LIMIT_BYTES = 150 * 1024;

describe("the admin UI bundle", () => {
  it("ships less than 150 KB of gzipped JavaScript", async () => {
    await ensureAdminUiBuilt();
    const assets = path.join(adminUiDirectory()!, "assets");
    const scripts = fs.readdirSync(assets).filter((f) => f.endsWith(".js"));
    expect(scripts.length).toBeGreaterThan(0);
    const gzipped = scripts.reduce((n, f) => n + gzipSync(fs.readFileSync(path.join(assets, f)), { level: 9 }).length, 0);
    console.info(`admin UI JavaScript: ${(gzipped / 1024).toFixed(1)} KB gzipped in ${scripts.length} file(s)`);
    expect(gzipped).toBeLessThan(LIMIT_BYTES);
  });

  it("is the production build: none of the Svelte compiler's development-only code is in it", async () => {
    await ensureAdminUiBuilt();
    const assets = path.join(adminUiDirectory()!, "assets");
    const code = fs
      .readdirSync(assets)
      .filter((f) => f.endsWith(".js"))
      .map((f) => fs.readFileSync(path.join(assets, f), "utf8"))
      .join("\n");
    // Each of these is in a development build of the same sources (element locations, dev-only warnings).
    for (const devOnly of ["__svelte_meta", "binding_property_non_reactive", "state_snapshot_uncloneable"]) expect(code, devOnly).not.toContain(devOnly);
  });
});
