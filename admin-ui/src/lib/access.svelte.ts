import { api } from "./api";
import type { SessionInfo } from "./session.svelte";

/**
 * Which screens the signed-in person may use, from `GET /api/v1/access/capabilities` (the
 * daemon's policy table, asked once per session): a screen shows when its first read's action is
 * allowed. Nothing is probed, so hidden screens leave no `access.denied` events in the audit trail.
 */
export type Screen = "users" | "sessions" | "security" | "support" | "keys" | "backups" | "audit";

/** The action that guards each screen's first read (the route that loads it). */
const SCREEN_ACTIONS: Record<Screen, string> = {
  users: "user:list",
  sessions: "session:list",
  security: "security_settings:read",
  support: "support_request:list",
  keys: "key:read",
  backups: "backup:read",
  audit: "audit:read",
};

type State = "unknown" | "allowed" | "denied";

function cacheKey(info: SessionInfo): string {
  return `wardkeep.screens.${info.user.id}.${info.user.role}.${info.supportAccess?.requestId ?? "own"}`;
}

class AccessStore {
  screens = $state<Record<Screen, State>>(Object.fromEntries(Object.keys(SCREEN_ACTIONS).map((s) => [s, "unknown"])) as Record<Screen, State>);
  ready = $state(false);
  /** The policy actions this session may take (route level); null until known. */
  actions = $state<ReadonlySet<string> | null>(null);
  #key: string | null = null;

  may(screen: Screen): boolean {
    return this.screens[screen] === "allowed";
  }

  /** Whether the policy lets this session take `action` (a section of a screen asks before loading). */
  can(action: string): boolean {
    return this.actions?.has(action) ?? false;
  }

  #apply(actions: string[]) {
    const allowed = new Set(actions);
    this.actions = allowed;
    this.screens = Object.fromEntries((Object.entries(SCREEN_ACTIONS) as [Screen, string][]).map(([screen, action]) => [screen, allowed.has(action) ? "allowed" : "denied"])) as Record<Screen, State>;
    this.ready = true;
  }

  /** Asks which screens this session may use (once; cached for the browser tab's lifetime of the session). */
  async load(info: SessionInfo): Promise<void> {
    const key = cacheKey(info);
    if (this.#key === key) return;
    this.#key = key;
    this.ready = false;
    const cached = sessionStorage.getItem(key);
    if (cached) {
      this.#apply(JSON.parse(cached) as string[]);
      return;
    }
    let actions: string[];
    try {
      ({ actions } = await api<{ actions: string[] }>("GET", "/api/v1/access/capabilities"));
    } catch {
      // Not answered (sealed, a transient failure): every screen shows and explains the problem
      // itself; nothing is cached, so the next page load asks again.
      if (this.#key !== key) return;
      this.#key = null;
      this.actions = null;
      this.screens = Object.fromEntries(Object.keys(SCREEN_ACTIONS).map((s) => [s, "allowed"])) as Record<Screen, State>;
      this.ready = true;
      return;
    }
    if (this.#key !== key) return;
    sessionStorage.setItem(key, JSON.stringify(actions));
    this.#apply(actions);
  }

  reset() {
    this.#key = null;
    this.ready = false;
    this.actions = null;
    for (const k of Object.keys(sessionStorage)) if (k.startsWith("wardkeep.screens.")) sessionStorage.removeItem(k);
  }
}

export const access = new AccessStore();
