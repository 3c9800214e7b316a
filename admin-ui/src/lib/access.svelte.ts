import { api, ApiError } from "./api";
import type { SessionInfo } from "./session.svelte";

/**
 * Which screens the signed-in person may use. The daemon has no capability list yet, so each
 * screen is probed once per session with the cheapest read it needs: a 403 (or a 404 for an
 * API this appliance lacks) hides it. The policy table is not copied here, so the navigation can
 * never disagree with what the server allows. The cost: each hidden screen costs one
 * `access.denied` audit event per sign-in; a `GET /api/v1/auth/capabilities` answering from the
 * policy module would remove both the probes and that noise.
 */
export type Screen = "users" | "sessions" | "security" | "support" | "keys" | "backups" | "audit";

const PROBES: Record<Screen, string> = {
  users: "/api/v1/users",
  sessions: "/api/v1/sessions",
  security: "/api/v1/settings/security",
  support: "/api/v1/support/requests",
  // The shred schedule needs the same permission as GET /keys (key:read) without its column scans.
  keys: "/api/v1/keys/shred-schedule",
  backups: "/api/v1/backups/policy",
  audit: "/api/v1/audit/public-key",
};

type State = "unknown" | "allowed" | "denied";

function cacheKey(info: SessionInfo): string {
  return `wardkeep.screens.${info.user.id}.${info.user.role}.${info.supportAccess?.requestId ?? "own"}`;
}

class AccessStore {
  screens = $state<Record<Screen, State>>(Object.fromEntries(Object.keys(PROBES).map((s) => [s, "unknown"])) as Record<Screen, State>);
  ready = $state(false);
  #key: string | null = null;

  may(screen: Screen): boolean {
    return this.screens[screen] === "allowed";
  }

  /** Probes every screen for this session (once; cached for the browser tab's lifetime of the session). */
  async load(info: SessionInfo): Promise<void> {
    const key = cacheKey(info);
    if (this.#key === key) return;
    this.#key = key;
    this.ready = false;
    const cached = sessionStorage.getItem(key);
    if (cached) {
      this.screens = JSON.parse(cached) as Record<Screen, State>;
      this.ready = true;
      return;
    }
    const entries = await Promise.all(
      (Object.entries(PROBES) as [Screen, string][]).map(async ([screen, path]): Promise<[Screen, State]> => {
        try {
          await api("GET", path);
          return [screen, "allowed"];
        } catch (err) {
          // Not allowed, or not part of this appliance's API: hidden. Anything else (sealed,
          // a transient failure) shows the screen, which then explains the problem itself.
          if (err instanceof ApiError && [401, 403, 404].includes(err.status)) return [screen, "denied"];
          return [screen, "allowed"];
        }
      }),
    );
    if (this.#key !== key) return;
    this.screens = Object.fromEntries(entries) as Record<Screen, State>;
    sessionStorage.setItem(key, JSON.stringify(this.screens));
    this.ready = true;
  }

  reset() {
    this.#key = null;
    this.ready = false;
    for (const k of Object.keys(sessionStorage)) if (k.startsWith("wardkeep.screens.")) sessionStorage.removeItem(k);
  }
}

export const access = new AccessStore();
