import fs from "node:fs";
import path from "node:path";
import { build as esbuild } from "esbuild";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { build } from "vite";
import { adminUiDirectory } from "../../daemon/http/admin-ui.js";
import { PROJECT_ROOT } from "./daemon-process.js";

const CHROMIUM = process.env.WARDKEEP_CHROMIUM ?? "/usr/bin/chromium";

const UI_ROOT = path.join(PROJECT_ROOT, "admin-ui");
const BUILD_LOCK = path.join(UI_ROOT, ".build-lock");

/** Newest modification time under the UI's sources (src/, index.html, vite config). */
function newestSource(): number {
  let newest = 0;
  const walk = (p: string) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const entry of fs.readdirSync(p)) walk(path.join(p, entry));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const p of ["src", "index.html", "vite.config.ts"]) walk(path.join(UI_ROOT, p));
  return newest;
}

/**
 * Written into the build by `ensureAdminUiBuilt` once it has built for production: a build without
 * it (an older test build, made in development mode) is built again.
 */
const PRODUCTION_STAMP = ".production-build";

function buildIsCurrent(): boolean {
  const dir = adminUiDirectory();
  return dir !== undefined && fs.existsSync(path.join(dir, PRODUCTION_STAMP)) && fs.statSync(path.join(dir, "index.html")).mtimeMs >= newestSource();
}

/**
 * The build that ships: vitest sets NODE_ENV=test, and Vite and the Svelte compiler build in
 * development mode (dev warnings, element locations, ownership checks) unless it says production.
 * The variable is set for the build alone; the test files of one worker run one after another.
 */
async function buildForProduction() {
  const before = process.env.NODE_ENV;
  process.env.NODE_ENV = "production";
  try {
    await build({ configFile: `${UI_ROOT}/vite.config.ts`, mode: "production", logLevel: "warn" });
  } finally {
    if (before === undefined) delete process.env.NODE_ENV;
    else process.env.NODE_ENV = before;
  }
  fs.writeFileSync(path.join(adminUiDirectory()!, PRODUCTION_STAMP), "built by test/helpers/browser.ts for production\n");
}

/**
 * Builds the admin UI for production when this checkout has no such build (CI starts from a clean
 * clone) or the sources changed since the last one, so a browser test never exercises stale
 * assets, nor assets other than those that ship. Test files
 * run in parallel workers: a lock directory (mkdir is atomic) lets one build while others wait.
 */
export async function ensureAdminUiBuilt() {
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (buildIsCurrent()) return;
    try {
      fs.mkdirSync(BUILD_LOCK);
    } catch {
      // Another worker is building; a lock older than two minutes is left over from a crash.
      const age = Date.now() - (fs.statSync(BUILD_LOCK, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > 120_000) fs.rmSync(BUILD_LOCK, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error("timed out waiting for another admin UI build");
      await new Promise((r) => setTimeout(r, 250));
      continue;
    }
    try {
      if (!buildIsCurrent()) await buildForProduction();
      return;
    } finally {
      fs.rmSync(BUILD_LOCK, { recursive: true, force: true });
    }
  }
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

/**
 * A browser context that already carries a session cookie (e.g. from `signIn` in actors.ts), for
 * tests about what a signed-in person sees rather than about signing in. `cookie` is
 * `name=value` as SignedIn.cookie gives it.
 */
export async function contextWithSession(browser: Browser, baseUrl: string, cookie: string): Promise<BrowserContext> {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const eq = cookie.indexOf("=");
  await context.addCookies([{ name: cookie.slice(0, eq), value: cookie.slice(eq + 1), url: `${baseUrl}/`, secure: true, httpOnly: true, sameSite: "Strict" }]);
  return context;
}

/** A new browser context signed in with `cookie`, on `path` of the admin UI, collecting CSP violations. */
export async function openScreen(browser: Browser, baseUrl: string, cookie: string, path = "/"): Promise<{ context: BrowserContext; page: Page; violations: string[] }> {
  const context = await contextWithSession(browser, baseUrl, cookie);
  const page = await context.newPage();
  const violations = watchForViolations(page);
  await page.goto(`${baseUrl}/#${path}`);
  return { context, page, violations };
}

/** With WARDKEEP_SCREENSHOTS=1, saves a full-page screenshot as /tmp/wardkeep-<name>.png to look at. */
export async function screenshot(page: Page, name: string): Promise<void> {
  if (!process.env.WARDKEEP_SCREENSHOTS) return;
  await page.screenshot({ path: `/tmp/wardkeep-${name}.png`, fullPage: true });
}

/** A screen of the console's routes table (admin-ui/src/lib/routes.ts), without its page component. */
export type ConsoleScreen = { path: string; label?: string; title?: string; action?: string; public?: boolean };

/**
 * The console's one routes table as data, read from admin-ui/src/lib/routes.ts itself (bundled
 * with every `.svelte` page stubbed out), so a test that walks every screen covers a screen the
 * day it is added to the table.
 */
export async function consoleScreens(): Promise<ConsoleScreen[]> {
  const result = await esbuild({
    entryPoints: [path.join(UI_ROOT, "src/lib/routes.ts")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "neutral",
    logLevel: "warning",
    plugins: [
      {
        name: "svelte-page-stub",
        setup(b) {
          b.onResolve({ filter: /\.svelte(\.ts)?$/ }, (args) => ({ path: args.path, namespace: "stub" }));
          b.onLoad({ filter: /.*/, namespace: "stub" }, () => ({ contents: "export default {};", loader: "js" }));
        },
      },
    ],
  });
  const code = result.outputFiles[0]!.text;
  const mod = (await import(`data:text/javascript;base64,${Buffer.from(code).toString("base64")}`)) as { ROUTES: ConsoleScreen[] };
  return mod.ROUTES.map(({ path: p, label, title, action, public: isPublic }) => ({ path: p, label, title, action, public: isPublic }));
}
