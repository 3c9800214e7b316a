import type { Component } from "svelte";
import PageAcceptInvite from "../pages/PageAcceptInvite.svelte";
import PageAccessReviews from "../pages/PageAccessReviews.svelte";
import PageAlerts from "../pages/PageAlerts.svelte";
import PageApiTokens from "../pages/PageApiTokens.svelte";
import PageAudit from "../pages/PageAudit.svelte";
import PageBackups from "../pages/PageBackups.svelte";
import PageDataRights from "../pages/PageDataRights.svelte";
import PageHome from "../pages/PageHome.svelte";
import PageJobs from "../pages/PageJobs.svelte";
import PageKeys from "../pages/PageKeys.svelte";
import PageLogin from "../pages/PageLogin.svelte";
import PageMfa from "../pages/PageMfa.svelte";
import PagePrivilegedAccess from "../pages/PagePrivilegedAccess.svelte";
import PageRetention from "../pages/PageRetention.svelte";
import PageSecuritySettings from "../pages/PageSecuritySettings.svelte";
import PageSessions from "../pages/PageSessions.svelte";
import PageSetup from "../pages/PageSetup.svelte";
import PageSignInProviders from "../pages/PageSignInProviders.svelte";
import PageSupportRequests from "../pages/PageSupportRequests.svelte";
import PageTenants from "../pages/PageTenants.svelte";
import PageTenantSessions from "../pages/PageTenantSessions.svelte";
import PageUsers from "../pages/PageUsers.svelte";
import PageWebhooks from "../pages/PageWebhooks.svelte";

/**
 * The one table of screens (PocketBase's ui/src/routes.js, plus label, section and policy
 * action): the router in App.svelte, the side navigation and screen visibility all read it, so
 * a screen is added, renamed or guarded in one line.
 */
export const SECTIONS = ["Overview", "People", "Operations", "My account"] as const;
export type Section = (typeof SECTIONS)[number];

export type ScreenRoute = {
  /** Hash path; a `:name` segment is handed to the page as a prop of that name. */
  path: string;
  // Pages take different props (only the invite page takes one); the table cannot name them all.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  page: Component<any>;
  /** The link text in the side navigation; screens without one are not listed there. */
  label?: string;
  /** The document title of a screen with no navigation label (sign-in, setup, an invite). */
  title?: string;
  section?: Section;
  /**
   * The policy action that guards the screen's first read (the daemon's `can()` decides it, via
   * `GET /api/v1/access/capabilities`). Absent: every signed-in person may open the screen.
   */
  action?: string;
  /** Reachable without a session, and drawn without the navigation frame. */
  public?: boolean;
};

export const ROUTES = [
  { path: "/", page: PageHome, label: "Appliance status", section: "Overview" },
  { path: "/tenants", page: PageTenants, label: "Tenants", section: "People", action: "tenant:create" },
  { path: "/users", page: PageUsers, label: "Users & invites", section: "People", action: "user:list" },
  { path: "/support", page: PageSupportRequests, label: "Support access", section: "People", action: "support_request:list" },
  { path: "/people/sessions", page: PageTenantSessions, label: "Signed-in people", section: "People", action: "session:list_all" },
  { path: "/api-tokens", page: PageApiTokens, label: "API tokens", section: "People", action: "api_token:list" },
  { path: "/sign-in-providers", page: PageSignInProviders, label: "Sign-in providers", section: "People", action: "identity_provider:list" },
  { path: "/privileged-access", page: PagePrivilegedAccess, label: "Privileged access", section: "People", action: "privileged_access:list" },
  // Campaigns belong to a tenant (super-admins have none): guarded by the evidence export, which only a tenant's owners, admins and auditors have.
  { path: "/access-reviews", page: PageAccessReviews, label: "Access reviews", section: "People", action: "access_review:export" },
  { path: "/settings/security", page: PageSecuritySettings, label: "Security settings", section: "People", action: "security_settings:read" },
  { path: "/keys", page: PageKeys, label: "Encryption keys", section: "Operations", action: "key:read" },
  { path: "/audit", page: PageAudit, label: "Audit trail", section: "Operations", action: "audit:read" },
  { path: "/backups", page: PageBackups, label: "Backups & drills", section: "Operations", action: "backup:read" },
  { path: "/alerts", page: PageAlerts, label: "Alerts", section: "Operations", action: "alert:list" },
  { path: "/jobs", page: PageJobs, label: "Jobs", section: "Operations", action: "job:read" },
  // The register belongs to a tenant (super-admins have none): guarded by the holds list, which only a tenant's staff may read.
  { path: "/retention", page: PageRetention, label: "Retention", section: "Operations", action: "legal_hold:list" },
  { path: "/data-rights", page: PageDataRights, label: "Data rights", section: "Operations", action: "deletion:list" },
  { path: "/webhooks", page: PageWebhooks, label: "Webhooks", section: "Operations", action: "webhook:list" },
  { path: "/sessions", page: PageSessions, label: "Sessions", section: "My account", action: "session:list" },
  { path: "/mfa", page: PageMfa, label: "Authenticator", section: "My account" },
  { path: "/login", page: PageLogin, public: true, title: "Sign in" },
  { path: "/setup", page: PageSetup, public: true, title: "First-run setup" },
  { path: "/invite/:token", page: PageAcceptInvite, public: true, title: "Accept your invitation" },
] as const satisfies readonly ScreenRoute[];

type Table = (typeof ROUTES)[number];
/** A path `navigate()` accepts: a screen of the table (parameterised ones with their value filled in). */
export type ScreenPath = Exclude<Table["path"], `${string}:${string}`> | `/invite/${string}`;

export type Match = { route: ScreenRoute; params: Record<string, string> };

const HOME: ScreenRoute = ROUTES[0];

/** The screen a hash path shows (a `?query` after it is the page's to read); unknown paths show the status page. */
export function matchRoute(path: string): Match {
  const parts = (path.split("?")[0] ?? "").split("/");
  for (const route of ROUTES as readonly ScreenRoute[]) {
    const pattern = route.path.split("/");
    if (pattern.length !== parts.length) continue;
    const params: Record<string, string> = {};
    if (pattern.every((p, i) => (p.startsWith(":") ? parts[i] !== "" && ((params[p.slice(1)] = parts[i]!), true) : p === parts[i]))) return { route, params };
  }
  return { route: HOME, params: {} };
}

/** The navigation: sections in order, each with the screens that have a label. */
export function navigation(visible: (route: ScreenRoute) => boolean): { title: Section; items: ScreenRoute[] }[] {
  return SECTIONS.map((title) => ({ title, items: (ROUTES as readonly ScreenRoute[]).filter((r) => r.label && r.section === title && visible(r)) })).filter(
    (s) => s.items.length > 0,
  );
}
