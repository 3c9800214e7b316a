import type { ScreenPath } from "./routes";

/**
 * Hash routing: #/setup, #/login, #/users — no server round trip, no history API needed. Which
 * page a path shows is in the routes table (./routes.ts); `navigate` only takes its paths.
 */
function current(): string {
  return location.hash.replace(/^#/, "") || "/";
}

export const route = $state({ path: current() });

window.addEventListener("hashchange", () => {
  route.path = current();
});

export function navigate(path: ScreenPath, opts: { replace?: boolean } = {}) {
  if (opts.replace) {
    // Leaves no history entry (used after an invite link: its token should not linger in history).
    history.replaceState(null, "", `#${path}`);
    route.path = path;
    return;
  }
  location.hash = path;
  // The hashchange event comes a task later; until then effects that read the route would see
  // the old path and could send the user elsewhere (a fresh appliance landing on sign-in instead
  // of setup, when the session check answered after the setup check).
  route.path = path;
}
