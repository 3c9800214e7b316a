import { z } from "zod";
import { ROLES } from "../kernel/actor.js";

/**
 * Response schemas of the access routes (capabilities, tenants, security settings, users,
 * support requests, break-glass, care teams, notifications) and their requests. Leaf module
 * (zod and the kernel only): the admin UI imports the inferred types, so it cannot read a field
 * these routes do not send.
 */

/** `GET /api/v1/access/capabilities`: policy actions allowed at route level, and which ask for step-up. */
export const capabilitiesResponse = z.object({
  /** Every policy action (`resource:verb`) the caller may take on some resource of its kind. */
  actions: z.array(z.string()),
  /** Those of them that need a fresh second factor (step-up). */
  stepUp: z.array(z.string()),
});

export const tenantView = z.object({
  /** Tenant id. */
  id: z.string(),
  /** Display name. */
  name: z.string(),
  /** Short unique handle. */
  slug: z.string(),
  /** active, or suspended (nobody of it can sign in). */
  status: z.string(),
  /** When it was created. */
  createdAt: z.string(),
});

/** `POST /api/v1/tenants`: the tenant, and its owner's invite when an owner email was given. */
export const createdTenant = tenantView.extend({
  /** The first owner's invite; its token is shown only in this answer. Null when no owner email was given. */
  ownerInvite: z
    .object({
      /** Invite id. */
      id: z.string(),
      /** Who is invited (as owner). */
      email: z.string(),
      /** The one-time token; the link is `/#/invite/<token>` on the appliance. */
      token: z.string(),
      /** When the link stops working. */
      expiresAt: z.string(),
    })
    .nullable(),
});

/** `GET|PUT /api/v1/settings/security`: effective values, and whether each is the appliance default. */
const TENANT_ROLES = ["owner", "admin", "practitioner", "front_desk", "auditor"] as const;

export const securitySettingsView = z.object({
  /** Every user of the tenant must use an authenticator app. */
  mfaRequired: z.boolean(),
  /** The roles that must use an authenticator app (every tenant role when mfaRequired). */
  mfaRequiredRoles: z.array(z.enum(TENANT_ROLES)),
  /** Shortest password accepted (12 to 128; at invite acceptance and password change). */
  passwordMinLength: z.number(),
  /** Passwords on the bundled list of the 10,000 most common or breached ones are refused (always on). */
  commonPasswordsRefused: z.literal(true),
  /** Failed sign-ins (or MFA codes) on one account, within the lockout window, before it is locked. */
  lockoutMaxFailures: z.number(),
  /** How long a locked account refuses sign-in. */
  lockoutMinutes: z.number(),
  /** The window in which failures are counted (appliance setting). */
  lockoutWindowMinutes: z.number(),
  /** TOTP codes accepted this many 30-second steps before or after the current one (0 to 2). */
  totpWindowSteps: z.number(),
  /** Automatic logoff after this many idle minutes. */
  idleTimeoutMinutes: z.number(),
  /** The idle timeout is the appliance default (not set for the tenant). */
  idleTimeoutIsDefault: z.boolean(),
  /** Accounts unused this many days are deactivated. */
  inactiveUserDays: z.number(),
  /** The inactivity period is the appliance default. */
  inactiveUserDaysIsDefault: z.boolean(),
  /** A session ends this many hours after sign-in, however active (appliance setting). */
  absoluteLifetimeHours: z.number(),
  /** Who may sign in with a local password: everyone, or only the break-glass accounts (the rest through the identity provider). */
  localSignIn: z.enum(["everyone", "break_glass_only"]),
  /** How many active break-glass accounts the tenant has. */
  breakGlassAccounts: z.number().int(),
});

export const userView = z.object({
  /** Account id. */
  id: z.string(),
  /** The account's tenant; null for appliance staff. */
  tenantId: z.string().nullable(),
  /** Work email; null for service accounts. */
  email: z.string().nullable(),
  /** How colleagues see the person. */
  displayName: z.string().nullable(),
  /** One of super_admin, owner, admin, practitioner, front_desk, auditor, support. */
  role: z.string(),
  /** A person, or a service account behind an API token. */
  kind: z.enum(["human", "service"]),
  /** Deactivated accounts cannot sign in. */
  status: z.enum(["active", "deactivated"]),
  /** Has an authenticator. */
  mfaEnabled: z.boolean(),
  /** Last successful sign-in. */
  lastLoginAt: z.string().nullable(),
  /** When the account was made. */
  createdAt: z.string(),
  /** When it was deactivated. */
  deactivatedAt: z.string().nullable(),
  /** Keeps password + TOTP sign-in when local sign-in is for break-glass accounts only; each use raises an alert. */
  breakGlassAccount: z.boolean(),
  /** Where the account came from: local (invite, setup), scim (the directory), idp (first sign-in through a provider). */
  source: z.enum(["local", "scim", "idp"]),
});

export const supportRequestView = z.object({
  /** Request id. */
  id: z.string(),
  /** The tenant support asks to act in. */
  tenantId: z.string(),
  /** The support user asking. */
  requestedBy: z.string(),
  /** The helpdesk ticket. */
  ticketRef: z.string(),
  /** What support needs to look at. */
  reason: z.string(),
  /** Where the request stands. */
  status: z.enum(["pending", "approved", "denied", "ended", "expired"]),
  /** When it was filed. */
  createdAt: z.string(),
  /** The tenant admin who decided it. */
  decidedBy: z.string().nullable(),
  /** When it was decided. */
  decidedAt: z.string().nullable(),
  /** When approved access ends by itself. */
  expiresAt: z.string().nullable(),
});

export type CapabilitiesRes = z.infer<typeof capabilitiesResponse>;
export type TenantRes = z.infer<typeof tenantView>;
export type CreatedTenantRes = z.infer<typeof createdTenant>;
export type SecuritySettingsRes = z.infer<typeof securitySettingsView>;
export type UserRes = z.infer<typeof userView>;
export type SupportRequestRes = z.infer<typeof supportRequestView>;

// ---- requests, and the responses the admin UI does not read yet --------------------------------

const isoTime = z.string().describe("ISO 8601 instant");
export const idParams = z.object({ /** The resource's id. */ id: z.uuid() }).strict();
export const patientUserParams = z.object({ /** The patient. */ id: z.uuid(), /** The practitioner. */ userId: z.uuid() }).strict();

export const createTenantRequest = z
  .object({
    /** Display name, e.g. "St. Mary's Cardiology". */
    name: z.string().trim().min(1).max(200),
    /** Short unique handle: lowercase letters, digits and dashes; left out, it is made from the name. */
    slug: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{1,62}$/, "lowercase letters, digits and dashes, 2 to 63 long")
      .optional(),
    /** Work email of the tenant's first owner: an owner invite is created with the tenant (its link is in the answer, once). */
    ownerEmail: z.string().trim().toLowerCase().pipe(z.email()).pipe(z.string().max(254)).optional(),
    /** Every account of the tenant must use an authenticator app; on unless turned off here (the security settings change it later, per role). */
    mfaRequired: z.boolean().default(true),
  })
  .strict();

export const updateTenantRequest = z
  .object({
    /** New display name. */
    name: z.string().trim().min(1).max(200).optional(),
    /** A suspended tenant's users cannot sign in and its sessions and tokens stop working. */
    status: z.enum(["active", "suspended"]).optional(),
  })
  .strict();

export const securitySettingsRequest = z
  .object({
    /** Every user of the tenant must use an authenticator app (TOTP). */
    mfaRequired: z.boolean().optional(),
    /** Exactly these roles must use an authenticator app (replaces mfaRequired; every role = mfaRequired). */
    mfaRequiredRoles: z.array(z.enum(TENANT_ROLES)).max(5).optional(),
    /** Shortest password accepted, 12 to 128; null = the appliance's 12. */
    passwordMinLength: z.number().int().min(12).max(128).nullable().optional(),
    /** Failed sign-ins before an account locks, 3 to 50; null = appliance default. */
    lockoutMaxFailures: z.number().int().min(3).max(50).nullable().optional(),
    /** Minutes a locked account stays locked, 1 to 1440; null = appliance default. */
    lockoutMinutes: z.number().int().min(1).max(1440).nullable().optional(),
    /** TOTP drift window in 30-second steps either side, 0 to 2; null = appliance default (1). */
    totpWindowSteps: z.number().int().min(0).max(2).nullable().optional(),
    /** Automatic logoff after this many idle minutes, 5 to 240 (45 CFR 164.312(a)(2)(iii)); null = appliance default. */
    idleTimeoutMinutes: z.number().int().min(5).max(240).nullable().optional(),
    /** Deactivate accounts unused this many days, 7 to 3650; null = appliance default. */
    inactiveUserDays: z.number().int().min(7).max(3650).nullable().optional(),
    /** break_glass_only: local password sign-in only for break-glass accounts (needs an enabled identity provider and one such account). */
    localSignIn: z.enum(["everyone", "break_glass_only"]).optional(),
  })
  .strict()
  .refine((b) => b.mfaRequired === undefined || b.mfaRequiredRoles === undefined, { message: "give mfaRequired or mfaRequiredRoles, not both", path: ["mfaRequiredRoles"] });

export const updateUserRequest = z
  .object({
    /** New role; needs a fresh second factor (step-up). */
    role: z.enum(ROLES).optional(),
    /** Deactivating ends the account's sessions at once. */
    status: z.enum(["active", "deactivated"]).optional(),
    /** How colleagues see the person; null removes it. */
    displayName: z.string().trim().min(1).max(200).nullable().optional(),
    /** Flag the account as a break-glass account (it must have an authenticator; at most 3 per tenant). */
    breakGlassAccount: z.boolean().optional(),
  })
  .strict();

export const accessReviewEntry = userView.extend({
  /** Open sessions of the account. */
  activeSessions: z.number().int(),
  /** Days since the last sign-in; null if never. */
  daysSinceLastLogin: z.number().int().nullable(),
});

export const supportRequestInput = z
  .object({
    /** The tenant support needs to act in. */
    tenantId: z.uuid(),
    /** The helpdesk ticket this work belongs to, e.g. "INC-20931". */
    ticketRef: z.string().regex(/^[A-Za-z0-9._:#/-]{1,64}$/, "letters, digits and . _ : # / -, up to 64"),
    /** What support needs to look at (shown to the approving admin). */
    reason: z.string().trim().min(1).max(500),
  })
  .strict();

export const breakGlassRequest = z
  .object({
    /** Why the record must be opened now (10 to 1000 characters); auditors and admins read it. */
    reason: z.string().trim().min(10).max(1000),
  })
  .strict();

export const breakGlassQuery = z
  .object({
    /** Only grants for this patient. */
    patientId: z.uuid().optional(),
    /** "true": only grants still open. */
    active: z.enum(["true", "false"]).optional(),
  })
  .strict();

export const breakGlassGrant = z.object({
  /** Grant id. */
  id: z.uuid(),
  /** The practitioner who opened the record. */
  userId: z.uuid(),
  /** The patient opened. */
  patientId: z.uuid(),
  /** The reason given. */
  reason: z.string(),
  /** When it was opened. */
  createdAt: isoTime,
  /** When it lapses. */
  expiresAt: isoTime,
  /** Still open now. */
  active: z.boolean(),
});

export const careTeamAssign = z.object({ /** A practitioner of the tenant. */ userId: z.uuid() }).strict();

export const careTeamMember = z.object({
  /** The practitioner. */
  userId: z.uuid(),
  /** Their work email. */
  email: z.string().nullable(),
  /** Their display name. */
  displayName: z.string().nullable(),
  /** When they joined the care team. */
  assignedAt: isoTime,
  /** Who assigned them. */
  assignedBy: z.uuid(),
});

export const notificationsQuery = z.object({ /** "true": only notifications nobody acknowledged yet. */ unacknowledged: z.enum(["true", "false"]).optional() }).strict();

export const adminNotification = z.object({
  /** Notification id. */
  id: z.uuid(),
  /** What happened. */
  kind: z.enum(["break_glass", "support_request"]),
  /** Who did it. */
  actorUserId: z.uuid().nullable(),
  /** The grant or request it is about. */
  subjectId: z.uuid().nullable(),
  /** The patient concerned (break-glass). */
  patientId: z.uuid().nullable(),
  /** When it was raised. */
  createdAt: isoTime,
  /** When an admin acknowledged it. */
  acknowledgedAt: isoTime.nullable(),
  /** Who acknowledged it. */
  acknowledgedBy: z.uuid().nullable(),
});

export type CreateTenantReq = z.infer<typeof createTenantRequest>;
export type UpdateTenantReq = z.infer<typeof updateTenantRequest>;
export type SecuritySettingsReq = z.infer<typeof securitySettingsRequest>;
export type UpdateUserReq = z.infer<typeof updateUserRequest>;
export type AccessReviewEntryRes = z.infer<typeof accessReviewEntry>;
export type SupportRequestReq = z.infer<typeof supportRequestInput>;
export type BreakGlassReq = z.infer<typeof breakGlassRequest>;
export type BreakGlassGrantRes = z.infer<typeof breakGlassGrant>;
export type CareTeamAssignReq = z.infer<typeof careTeamAssign>;
export type CareTeamMemberRes = z.infer<typeof careTeamMember>;
export type AdminNotificationRes = z.infer<typeof adminNotification>;

// ---- just-in-time privileged access ------------------------------------------------------------

/** Roles a person may hold for a bounded time after a second admin's approval. */
export const PRIVILEGED_ROLES = ["admin", "auditor"] as const;

export const privilegedAccessRequest = z
  .object({
    /** The privileged role asked for. */
    role: z.enum(PRIVILEGED_ROLES),
    /** For how long, in minutes (5 up to access.privilegedAccessMaxMinutes). */
    minutes: z.number().int().min(5).max(1440),
    /** Why (shown to the approving admin, kept in the audit trail): 10 to 500 characters. */
    reason: z.string().trim().min(10).max(500),
  })
  .strict();

export const privilegedAccessView = z.object({
  /** Grant id. */
  id: z.string(),
  /** The person asking. */
  userId: z.string(),
  /** Their email, for the approver. */
  userEmail: z.string().nullable(),
  /** The role they hold without the grant. */
  baseRole: z.string(),
  /** The privileged role asked for. */
  role: z.enum(PRIVILEGED_ROLES),
  /** Minutes asked for. */
  minutes: z.number().int(),
  /** Why. */
  reason: z.string(),
  /** pending, approved (active until expiresAt), denied or ended. */
  status: z.enum(["pending", "approved", "denied", "ended"]),
  /** When it was asked for. */
  requestedAt: z.string(),
  /** The admin who approved or denied it. */
  decidedBy: z.string().nullable(),
  /** When. */
  decidedAt: z.string().nullable(),
  /** When an approved grant ends by itself. */
  expiresAt: z.string().nullable(),
  /** When it ended. */
  endedAt: z.string().nullable(),
  /** expired, ended-early or account-deactivated. */
  endReason: z.string().nullable(),
  /** True while the grant is in force (approved and not past expiresAt). */
  active: z.boolean(),
});

export type PrivilegedAccessReq = z.infer<typeof privilegedAccessRequest>;
export type PrivilegedAccessRes = z.infer<typeof privilegedAccessView>;

// ---- access review campaigns (docs/access-reviews.md) ------------------------------------------

export const startCampaignRequest = z
  .object({
    /** Days the reviewers have; at the deadline, accounts nobody reviewed are deactivated. 1 to 90; left out: access.reviewDeadlineDays. */
    deadlineDays: z.number().int().min(1).max(90).optional(),
  })
  .strict();

export const campaignEntryParams = z.object({ /** The campaign. */ id: z.uuid(), /** The account reviewed. */ userId: z.uuid() }).strict();

export const reviewDecisionRequest = z
  .object({
    /** keep: the account still needs its access; remove: deactivate it now (sessions and API tokens end at once). */
    decision: z.enum(["keep", "remove"]),
    /** Why, for the evidence (1 to 1000 characters); never patient data. */
    comment: z.string().trim().min(1).max(1000),
  })
  .strict();

export const REVIEW_OUTCOMES = ["kept", "removed", "deactivated-unreviewed", "already-inactive", "kept-last-owner"] as const;

export const reviewEntryView = z.object({
  /** The account. */
  userId: z.string(),
  /** Its email when the campaign started. */
  email: z.string().nullable(),
  /** Its display name when the campaign started. */
  displayName: z.string().nullable(),
  /** Its role when the campaign started. */
  role: z.string(),
  /** Where the account comes from: local (invite), scim (the directory provisions it) or idp (made at a first sign-in through an identity provider). */
  source: z.enum(["local", "scim", "idp"]),
  /** A break-glass account (local password + TOTP when every IdP is down). */
  breakGlassAccount: z.boolean(),
  /** It had an authenticator app. */
  mfaEnabled: z.boolean(),
  /** Last sign-in before the campaign started; null if never. */
  lastLoginAt: isoTime.nullable(),
  /** Days from the last sign-in (or creation) to the campaign's start. */
  daysUnused: z.number().int(),
  /** Unused for longer than the tenant's inactivity limit when the campaign started. */
  unused: z.boolean(),
  /** Its SCIM groups when the campaign started. */
  groups: z.array(z.string()),
  /** keep, remove, or null while undecided. */
  decision: z.enum(["keep", "remove"]).nullable(),
  /** The reviewer's comment. */
  comment: z.string().nullable(),
  /** The reviewer (an account id, or the host operator's all-zero id). */
  decidedBy: z.string().nullable(),
  /** When. */
  decidedAt: isoTime.nullable(),
  /** What happened to the account; null while the campaign is open and the entry undecided. */
  outcome: z.enum(REVIEW_OUTCOMES).nullable(),
});

export const campaignSummary = z.object({
  /** Campaign id. */
  id: z.string(),
  /** open until every account is decided or the deadline passes, then closed. */
  status: z.enum(["open", "closed"]),
  /** schedule (the access-review-campaigns job) or manual. */
  trigger: z.enum(["schedule", "manual"]),
  /** Who started it (null: the schedule). */
  startedBy: z.string().nullable(),
  /** When it started (the snapshot's time). */
  startedAt: isoTime,
  /** When undecided accounts are deactivated. */
  deadlineAt: isoTime,
  /** The tenant's inactivity limit in days when it started. */
  unusedDays: z.number().int(),
  /** When it closed. */
  closedAt: isoTime.nullable(),
  /** all-decided or deadline. */
  closedReason: z.enum(["all-decided", "deadline"]).nullable(),
  /** Accounts in the snapshot. */
  total: z.number().int(),
  /** Accounts decided so far. */
  decided: z.number().int(),
  /** Accounts removed by a reviewer. */
  removed: z.number().int(),
  /** Accounts deactivated at the deadline for want of a review. */
  deactivatedUnreviewed: z.number().int(),
});

export const campaignView = campaignSummary.extend({
  /** Every account of the snapshot, by role then email. */
  entries: z.array(reviewEntryView),
});

export const campaignEvidence = z.object({
  /** Canonical JSON (fixed key order, format wardkeep-access-review/1): the campaign, every entry, and the SHA-256 of `csv`. */
  evidence: z.string(),
  /** The same entries as CSV (RFC 4180), for spreadsheets; covered by the signature through `csvSha256` in `evidence`. */
  csv: z.string(),
  /** Ed25519 signature over the UTF-8 bytes of `evidence`, base64. */
  signature: z.string(),
  /** The signing key (the audit signing key, as for evidence packs and disposition certificates), DER SubjectPublicKeyInfo, base64. */
  publicKeySpki: z.string(),
  /** The key's id. */
  keyId: z.string(),
  /** SHA-256 of the raw public key, 64 hex digits: compare with `wardkeep audit fingerprint` or the Audit page. */
  fingerprint: z.string(),
});

export type StartCampaignReq = z.infer<typeof startCampaignRequest>;
export type ReviewDecisionReq = z.infer<typeof reviewDecisionRequest>;
export type ReviewEntryRes = z.infer<typeof reviewEntryView>;
export type CampaignSummaryRes = z.infer<typeof campaignSummary>;
export type CampaignRes = z.infer<typeof campaignView>;
export type CampaignEvidenceRes = z.infer<typeof campaignEvidence>;
