import fs from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";
import { build } from "vite";
import { adminUiDirectory } from "../../daemon/http/admin-ui.js";
import { PROJECT_ROOT } from "./daemon-process.js";

const CHROMIUM = process.env.WARDKEEP_CHROMIUM ?? "/usr/bin/chromium";

/** Builds the admin UI once if this checkout has no build yet (CI starts from a clean clone). */
export async function ensureAdminUiBuilt() {
  if (adminUiDirectory()) return;
  await build({ configFile: `${PROJECT_ROOT}/admin-ui/vite.config.ts`, logLevel: "warn" });
}

/** Debian's Chromium, headless, with the flags this closed network needs (no background traffic). */
export async function launchBrowser(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (CI installs it)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Collects Content-Security-Policy violations and page errors, which the tests assert are none. */
export function watchForViolations(page: Page): string[] {
  const problems: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy|Refused to/i.test(msg.text())) problems.push(msg.text());
  });
  page.on("pageerror", (err) => problems.push(err.message));
  return problems;
}
