import { api } from "./api";
import type { ScreenRoute } from "./routes";
import type { SessionInfo } from "./session.svelte";

function cacheKey(info: SessionInfo): string {
  return `wardkeep.screens.${info.user.id}.${info.user.role}.${info.supportAccess?.requestId ?? "own"}`;
}

/**
 * Which screens the signed-in person may use, from `GET /api/v1/access/capabilities` (the
 * daemon's policy table, asked once per session): a screen shows when the action its routes-table
 * entry names (./routes.ts) is allowed. Nothing is probed, so hidden screens leave no
 * `access.denied` events in the audit trail.
 */
class AccessStore {
  ready = $state(false);
  /**
   * The policy actions this session may take (route level). null once ready means the daemon
   * could not answer (sealed, a transient failure): every screen then shows and explains the
   * problem itself, and nothing is cached, so the next page load asks again.
   */
  actions = $state<ReadonlySet<string> | null>(null);
  #key: string | null = null;

  /** Whether the screen shows: it needs no action, or its action is allowed (or unknown: see `actions`). */
  may(route: Pick<ScreenRoute, "action">): boolean {
    return route.action === undefined || (this.ready && (this.actions === null || this.actions.has(route.action)));
  }

  /** Whether the policy lets this session take `action` (a section of a screen asks before loading). */
  can(action: string): boolean {
    return this.actions?.has(action) ?? false;
  }

  /** Asks what this session may do (once; cached for the browser tab's lifetime of the session). */
  async load(info: SessionInfo): Promise<void> {
    const key = cacheKey(info);
    if (this.#key === key) return;
    this.#key = key;
    this.ready = false;
    const cached = sessionStorage.getItem(key);
    let actions: string[] | null = cached ? (JSON.parse(cached) as string[]) : null;
    if (!actions) {
      actions = await api.access.capabilities().then(
        (r) => r.actions,
        () => null,
      );
      if (this.#key !== key) return; // another session, or a sign-out, came in the meantime
      if (actions) sessionStorage.setItem(key, JSON.stringify(actions));
      else this.#key = null; // not answered: the next page load asks again
    }
    this.actions = actions ? new Set(actions) : null;
    this.ready = true;
  }

  reset() {
    this.#key = null;
    this.ready = false;
    this.actions = null;
    for (const k of Object.keys(sessionStorage)) if (k.startsWith("wardkeep.screens.")) sessionStorage.removeItem(k);
  }
}

export const access = new AccessStore();
