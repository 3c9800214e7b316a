import { Forbidden } from "./errors.js";
import type { Actor, Role } from "./actor.js";

/**
 * The one policy module (CONVENTIONS 3): every permission in Wardkeep is decided here, by
 * `can(actor, "resource:verb", attributes?)`, and nowhere else. Routes call `authorize` (through
 * `guard` in ./guard.ts) before any work; services call it again with the resource's attributes
 * (its tenant, its owner, the patient's care team) where the answer depends on them.
 *
 * Least privilege, as DESIGN.md asks:
 * - front desk sees schedules and demographics, never clinical notes;
 * - practitioners see patients assigned to them (care team), or one opened by break-glass;
 * - auditors see the audit trail, never PHI values;
 * - admins manage users but do not read notes (a person who is both has a practitioner account);
 * - support acts inside a tenant only under an approved, time-limited request, read-only;
 * - super-admins run the appliance (tenants, keys, backups) but read no tenant's PHI.
 * API tokens are further limited to their scopes (`resource:read`, `resource:write` or `*`).
 */

/** What a rule may know about the thing acted on. Absent attributes mean "any such thing" (route-level check). */
export type ResourceAttrs = {
  /** The tenant the resource belongs to; null for appliance-level things. */
  tenantId?: string | null;
  /** The user the resource belongs to (a session, a support request, an account). */
  ownerId?: string;
  /** The role of the account being managed, or the role being granted. */
  targetRole?: Role;
  /**
   * For patient data: whether the actor is on the patient's care team or holds an open
   * break-glass grant. Services fill it with `patientAccessFor` (./care-team.ts). Given attributes
   * without `patient` count as "not assigned".
   */
  patient?: { assigned: boolean; breakGlass: boolean };
};

type Rule = (actor: Actor, r: ResourceAttrs | undefined) => boolean;

// ---- building blocks ------------------------------------------------------------------------

/** Tenant staff in one of these roles, acting inside their own tenant. */
const staff =
  (...roles: Role[]): Rule =>
  (a, r) =>
    a.tenantId !== null && roles.includes(a.role) && (r?.tenantId === undefined || r.tenantId === a.tenantId);

/** Appliance staff (no tenant) in one of these roles. */
const appliance =
  (...roles: Role[]): Rule =>
  (a) =>
    a.tenantId === null && roles.includes(a.role);

/**
 * Any signed-in person acting as themselves (own account, own sessions). Support acting for an
 * admin is not that admin: it cannot touch the admin's password, MFA or sessions.
 */
const ownAccount: Rule = (a) => !a.impersonatorId;

/** The actor's own thing (same caveat). */
const self: Rule = (a, r) => !a.impersonatorId && (r?.ownerId === undefined || r.ownerId === a.userId);

/** Support staff's own request, whether acting at appliance level or inside the tenant. */
const supportSelf: Rule = (a, r) => a.role === "support" && (r?.ownerId === undefined || r.ownerId === (a.impersonatorId ?? a.userId));

/** On the patient's care team, or under an open break-glass grant. */
const careTeam: Rule = (_a, r) => r === undefined || r.patient?.assigned === true || r.patient?.breakGlass === true;

/**
 * Who may grant or manage a role: only owners make or manage owners; nobody inside a tenant makes
 * appliance staff; service accounts never get administrative roles (also a CHECK in the table).
 */
const managesRole: Rule = (a, r) => {
  const target = r?.targetRole;
  if (target === undefined) return true;
  if (a.role === "super_admin") return true;
  if (target === "super_admin" || target === "support") return false;
  return target !== "owner" || a.role === "owner";
};

const or =
  (...rules: Rule[]): Rule =>
  (a, r) =>
    rules.some((rule) => rule(a, r));
const and =
  (...rules: Rule[]): Rule =>
  (a, r) =>
    rules.every((rule) => rule(a, r));

const TENANT_STAFF: Role[] = ["owner", "admin", "practitioner", "front_desk", "auditor"];

// ---- the table ------------------------------------------------------------------------------

export const policy = {
  // identity and access (this capability)
  account: { manage: ownAccount }, // own password, MFA, session info
  tenant: {
    list: or(appliance("super_admin"), staff(...TENANT_STAFF, "support")),
    read: or(appliance("super_admin"), staff(...TENANT_STAFF, "support")),
    create: appliance("super_admin"),
    update: appliance("super_admin"),
  },
  security_settings: {
    read: staff("owner", "admin", "auditor", "support"),
    update: staff("owner", "admin"),
  },
  user: {
    list: or(appliance("super_admin"), staff("owner", "admin", "support")),
    read: or(appliance("super_admin"), staff("owner", "admin", "support")),
    update: or(appliance("super_admin"), and(staff("owner", "admin"), managesRole)),
    reset_mfa: or(appliance("super_admin"), and(staff("owner", "admin"), managesRole)),
  },
  invite: {
    list: or(appliance("super_admin"), staff("owner", "admin")),
    create: or(appliance("super_admin"), and(staff("owner", "admin"), managesRole)),
    revoke: or(appliance("super_admin"), staff("owner", "admin")),
  },
  session: {
    list: ownAccount, // own sessions; other people's need session:list_all
    list_all: or(appliance("super_admin"), staff("owner", "admin")),
    revoke: or(self, appliance("super_admin"), staff("owner", "admin")),
  },
  api_token: {
    list: staff("owner", "admin"),
    create: staff("owner", "admin"),
    revoke: staff("owner", "admin"),
  },
  // SCIM provisioning tokens: the IdP's client manages accounts with them, so only admins hand them out.
  scim_token: {
    list: staff("owner", "admin"),
    create: staff("owner", "admin"),
    revoke: staff("owner", "admin"),
  },
  // Sign-in providers of a tenant (daemon/sso): its owners and admins configure them; a rule that
  // grants a privileged role takes a second admin's approval (checked in the service: not the one who saved it).
  identity_provider: {
    list: staff("owner", "admin"),
    create: staff("owner", "admin"),
    update: staff("owner", "admin"),
    delete: staff("owner", "admin"),
    test: staff("owner", "admin"),
    approve_rule: staff("owner", "admin"),
  },
  // Just-in-time privileged access: anyone asks for themselves; a second admin decides (the
  // service refuses the requester's own decision); the requester or an admin ends it early.
  privileged_access: {
    request: staff(...TENANT_STAFF),
    list: staff(...TENANT_STAFF),
    approve: staff("owner", "admin"),
    deny: staff("owner", "admin"),
    end: or(and(staff(...TENANT_STAFF), self), staff("owner", "admin")),
  },
  // Access reviews (docs/access-reviews.md). The reviewers are the tenant's owners and admins: a
  // removal deactivates the account, which is theirs to do (and only owners remove owners; nobody
  // decides on their own account, checked in the service). Auditors read every campaign and take
  // its signed evidence, but decide nothing: the one who certifies the review is not the one who did it.
  access_review: {
    read: or(appliance("super_admin"), staff("owner", "admin", "auditor")),
    start: staff("owner", "admin"),
    decide: and(staff("owner", "admin"), managesRole),
    export: staff("owner", "admin", "auditor"),
  },
  support_request: {
    create: appliance("support"),
    list: or(appliance("super_admin", "support"), staff("owner", "admin")),
    decide: staff("owner", "admin"),
    enter: supportSelf,
    end: or(supportSelf, staff("owner", "admin")),
  },
  break_glass: {
    create: staff("practitioner"),
    list: staff("owner", "admin", "auditor"),
  },
  care_team: {
    // A practitioner sees the team of a patient they may see (on its team, or under break-glass), not every team.
    read: or(staff("owner", "admin"), and(staff("practitioner"), careTeam)),
    update: staff("owner", "admin"),
  },
  notification: {
    list: staff("owner", "admin"),
    acknowledge: staff("owner", "admin"),
  },

  // PHI (records capability): decided here so the least-privilege rules sit in one table
  patient: {
    list: staff("practitioner", "front_desk"),
    read: or(staff("front_desk"), and(staff("practitioner"), careTeam)), // demographics
    create: staff("front_desk", "practitioner"),
    update: or(staff("front_desk"), and(staff("practitioner"), careTeam)),
    delete: staff("owner"), // erasure (crypto-shredding), no read needed
    // A patient's name beside its id on the Audit page (docs/audit.md): owners and admins, who may
    // already export a patient's whole record; auditors and super-admins see ids (they read no PHI).
    // Each name shown is an audited PHI read.
    read_name: staff("owner", "admin"),
  },
  schedule: {
    read: staff("front_desk", "practitioner"),
    write: staff("front_desk"),
  },
  note: {
    list: and(staff("practitioner"), careTeam),
    read: and(staff("practitioner"), careTeam),
    create: and(staff("practitioner"), careTeam),
    update: and(staff("practitioner"), careTeam),
    // Sign-off is the author's attestation (ownerId = the note's author).
    sign: and(staff("practitioner"), careTeam, self),
  },
  consent: {
    list: or(staff("front_desk"), and(staff("practitioner"), careTeam)),
    read: or(staff("front_desk"), and(staff("practitioner"), careTeam)),
    create: or(staff("front_desk"), and(staff("practitioner"), careTeam)),
    update: or(staff("front_desk"), and(staff("practitioner"), careTeam)),
  },
  attachment: {
    list: and(staff("practitioner"), careTeam),
    read: and(staff("practitioner"), careTeam),
    create: and(staff("practitioner"), careTeam),
    delete: and(staff("practitioner"), careTeam),
  },
  // Data rights (records capability): erasure with a grace period, legal holds, exports. Exports
  // decrypt everything, so they are step-up actions and each patient read is audited.
  deletion: {
    list: staff("owner", "admin", "auditor"),
    request_tenant: staff("owner"),
    cancel: staff("owner"),
  },
  legal_hold: {
    list: staff("owner", "admin", "auditor"),
    place: staff("owner", "admin"),
    release: staff("owner", "admin"),
  },
  data_export: {
    patient: staff("owner", "admin"),
    tenant: staff("owner", "admin"),
  },

  // audit trail: events carry ids, never PHI values
  audit: {
    read: or(appliance("super_admin"), staff("owner", "admin", "auditor")),
    verify: or(appliance("super_admin"), staff("owner", "admin", "auditor")),
    export: or(appliance("super_admin"), staff("owner", "auditor")),
  },

  // appliance operations
  key: {
    read: or(appliance("super_admin"), staff("owner")),
    rotate: or(appliance("super_admin"), staff("owner")),
    // Sealing stops PHI service on the replica for everyone: appliance operators only.
    seal: appliance("super_admin"),
    // Undoing a scheduled crypto-shred restores access to a deleted patient's or tenant's data.
    cancel_shred: or(appliance("super_admin"), staff("owner")),
  },
  backup: {
    read: appliance("super_admin"),
    run: appliance("super_admin"),
    restore: appliance("super_admin"),
    configure: appliance("super_admin"),
  },
  drill: { read: appliance("super_admin"), run: appliance("super_admin") },
  retention: {
    read: or(appliance("super_admin"), staff("owner", "admin", "auditor")),
    update: or(appliance("super_admin"), staff("owner", "admin")),
  },
  job: { read: appliance("super_admin"), run: appliance("super_admin") },
  // Alerts carry ids and counts, never PHI: a tenant's admins and auditors see their tenant's,
  // appliance operators every one. Channels (where alerts are sent) are configured per scope.
  alert: {
    list: or(appliance("super_admin"), staff("owner", "admin", "auditor")),
    acknowledge: or(appliance("super_admin"), staff("owner", "admin")),
  },
  alert_channel: {
    list: or(appliance("super_admin"), staff("owner", "admin")),
    configure: or(appliance("super_admin"), staff("owner", "admin")),
    test: or(appliance("super_admin"), staff("owner", "admin")),
  },
  // Webhooks: a tenant's owners and admins manage its endpoints and inbound sources; super-admins
  // the appliance's own (snapshot and drill events). Destinations must be on the allow-list, which
  // only appliance operators change, so no tenant role can aim a webhook at the hospital network.
  webhook: {
    list: or(appliance("super_admin"), staff("owner", "admin")),
    create: or(appliance("super_admin"), staff("owner", "admin")),
    update: or(appliance("super_admin"), staff("owner", "admin")),
    delete: or(appliance("super_admin"), staff("owner", "admin")),
    replay: or(appliance("super_admin"), staff("owner", "admin")),
    rotate_secret: or(appliance("super_admin"), staff("owner", "admin")),
  },
  webhook_host: {
    list: or(appliance("super_admin"), staff("owner", "admin")),
    approve: appliance("super_admin"),
    revoke: appliance("super_admin"),
  },
} satisfies Record<string, Record<string, Rule>>;

export type ResourceType = keyof typeof policy;
export type Action = { [T in ResourceType]: `${T}:${keyof (typeof policy)[T] & string}` }[ResourceType];

/** Every action the table knows, for the permission-matrix test and the docs. */
export const ACTIONS: Action[] = Object.entries(policy).flatMap(([type, verbs]) => Object.keys(verbs).map((v) => `${type}:${v}` as Action));

/**
 * Sensitive actions that also need a fresh second factor (step-up): `guard` enforces it with
 * `requireRecentMfa`. API tokens cannot step up, so they can never do these.
 */
export const STEP_UP_ACTIONS: ReadonlySet<Action> = new Set<Action>([
  "key:rotate",
  // Sealing stops PHI service for everyone on the replica: a stolen session alone must not do it.
  "key:seal",
  "audit:export",
  "backup:restore",
  "user:update",
  "user:reset_mfa",
  // A removal deactivates the account: as sensitive as user:update.
  "access_review:decide",
  "api_token:create",
  "scim_token:create",
  "privileged_access:approve",
  "patient:delete",
  "deletion:request_tenant",
  "legal_hold:release",
  "data_export:patient",
  "data_export:tenant",
  // Identity providers and their rules decide who becomes what in the tenant: as sensitive as user:update.
  "identity_provider:create",
  "identity_provider:update",
  "identity_provider:delete",
  "identity_provider:approve_rule",
]);

const READ_VERBS = new Set(["read", "list", "list_all", "verify"]);

/** API-token scopes: `patient:read` covers read/list, `patient:write` everything else, `*` all. */
export function scopeAllows(scopes: string[] | undefined, action: Action): boolean {
  if (scopes === undefined) return true;
  const [type, verb] = action.split(":") as [string, string];
  const needed = `${type}:${READ_VERBS.has(verb) ? "read" : "write"}`;
  return scopes.includes("*") || scopes.includes(needed);
}

/** Decides one permission. Without attributes: "may this actor do this to some such resource?" */
export function can(actor: Actor, action: Action, resource?: ResourceAttrs): boolean {
  const [type, verb] = action.split(":") as [ResourceType, string];
  const rule = (policy[type] as Record<string, Rule> | undefined)?.[verb];
  if (!rule) return false; // deny by default: an action missing from the table is nobody's
  if (actor.via === "api-token" && !scopeAllows(actor.scopes, action)) return false;
  return rule(actor, resource);
}

/**
 * Every action this actor may take on some resource of its kind: the route-level answer `guard`
 * gives, listed (`GET /api/v1/access/capabilities`), so the admin UI shows only what will work
 * without probing routes and leaving `access.denied` events behind.
 */
export function capabilitiesOf(actor: Actor): Action[] {
  return ACTIONS.filter((action) => can(actor, action));
}

/** "your role (front desk) may not read note": names the action, never the resource's contents. */
export function denialMessage(actor: Actor, action: Action): string {
  const [type, verb] = action.split(":") as [string, string];
  // "change", not "update": problem details must not read like SQL to log scanners and tests.
  const said = verb === "update" ? "change" : verb.replaceAll("_", " ");
  return `your role (${actor.role.replaceAll("_", " ")}) may not ${said} ${type.replaceAll("_", " ")}`;
}

/** `can`, or a 403 (with the action as `action`). */
export function authorize(actor: Actor, action: Action, resource?: ResourceAttrs): void {
  if (!can(actor, action, resource)) throw new Forbidden(denialMessage(actor, action), { action });
}
