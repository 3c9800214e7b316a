import { z } from "zod";
import { ROLES, type Role } from "../kernel/actor.js";
import { ACTIONS } from "../kernel/policy.js";

/**
 * Identity: sign-in, MFA, sessions, invites, API tokens and first-run setup. Request and response
 * schemas of the identity routes. Leaf module (zod and the kernel only): the admin UI imports the inferred
 * types, so it cannot read a field these routes do not send.
 */

const role = z.enum(ROLES);
const isoTime = z.string().describe("ISO 8601 instant");
export const idParams = z.object({ /** The resource's id. */ id: z.uuid() }).strict();

// ---- sign-in and the session ------------------------------------------------------------------

export const loginRequest = z
  .object({
    /** Work email of the account. */
    email: z.string().trim().toLowerCase().max(254),
    /** The account's password. */
    password: z.string().min(1).max(256),
  })
  .strict();

export const loginResponse = z.object({
  /** The session waits for a TOTP or recovery code (POST /auth/mfa). */
  mfaRequired: z.boolean(),
  /** The session waits for authenticator enrollment (POST /auth/mfa/enroll). */
  mfaEnrollmentRequired: z.boolean(),
  /** Send as X-CSRF-Token with every cookie-authenticated change. */
  csrfToken: z.string(),
  /** The session's absolute end. */
  expiresAt: isoTime,
});

const sessionStage = z.enum(["mfa_required", "mfa_enrollment_required", "active"]);

export const supportAccessView = z.object({
  /** The approved support request. */
  requestId: z.uuid(),
  /** The support user acting inside the tenant. */
  supportUserId: z.uuid(),
  /** The tenant admin who approved it. */
  approvedBy: z.uuid(),
  /** That admin's display name (or email). */
  approvedByName: z.string(),
  /** When support access ends by itself. */
  expiresAt: isoTime,
});

export const sessionInfo = z.object({
  /** How the caller authenticated. */
  via: z.enum(["session", "api-token"]),
  /** Whether sign-in is finished or waits for a second factor. */
  stage: sessionStage,
  /** The signed-in account. */
  user: z.object({
    /** Account id. */
    id: z.uuid(),
    /** Work email; null for API tokens' service accounts. */
    email: z.string().nullable(),
    /** The account's role. */
    role,
    /** The account's tenant; null for appliance staff. */
    tenantId: z.uuid().nullable(),
  }),
  /** Scopes of an API token (API tokens only). */
  scopes: z.array(z.string()).optional(),
  /** Send as X-CSRF-Token with every cookie-authenticated change (sessions only). */
  csrfToken: z.string().optional(),
  /** Minutes without activity after which the session ends. */
  idleTimeoutMinutes: z.number().int().optional(),
  /** When the session ends without further activity. */
  idleExpiresAt: isoTime.optional(),
  /** The session's absolute end. */
  expiresAt: isoTime.optional(),
  /** Whether the account has an authenticator. */
  mfaEnabled: z.boolean().optional(),
  /** When the session last proved a second factor (step-up). */
  mfaVerifiedAt: isoTime.nullable().optional(),
  /** Set while support staff act inside a tenant under an approved request (the UI shows a banner). */
  supportAccess: supportAccessView.nullable().optional(),
  /** The appliance's clock when it answered: the UI corrects its countdowns for a skewed workstation clock. */
  serverTime: isoTime,
});

// ---- MFA ----------------------------------------------------------------------------------------

export const codeRequest = z
  .object({
    /** Six digits from the authenticator app. */
    code: z
      .string()
      .regex(/^\d{6}$/, "six digits")
      .optional(),
    /** One of the recovery codes shown at enrollment (single use). */
    recoveryCode: z.string().min(16).max(32).optional(),
  })
  .strict()
  .refine((b) => (b.code === undefined) !== (b.recoveryCode === undefined), { message: "send either code or recoveryCode" });

export const mfaVerified = z.object({
  /** Always active after a correct code. */
  stage: z.literal("active"),
  /** When the second factor was proved. */
  mfaVerifiedAt: isoTime,
  /** Recovery codes still unused (when a recovery code was used). */
  recoveryCodesLeft: z.number().int().optional(),
});

export const mfaEnrollment = z.object({
  /** The TOTP secret, base32 (for manual entry). */
  secret: z.string(),
  /** otpauth:// URI for authenticator apps. */
  otpauthUrl: z.string(),
  /** The same URI as a QR code (PNG data URI). */
  qrCodeDataUrl: z.string(),
});

export const activateRequest = z.object({ /** Six digits from the authenticator app. */ code: z.string().regex(/^\d{6}$/, "six digits") }).strict();

export const mfaActivated = z.object({
  /** Single-use recovery codes, shown once. */
  recoveryCodes: z.array(z.string()),
  /** The session's CSRF token (unchanged; the session is now active). */
  csrfToken: z.string(),
});

export const recoveryCodes = z.object({ /** New single-use recovery codes, shown once; the old ones stop working. */ recoveryCodes: z.array(z.string()) });

// ---- own account and sessions ------------------------------------------------------------------

export const changePasswordRequest = z
  .object({
    /** The password in use now. */
    currentPassword: z.string().min(1).max(256),
    /** At least 12 characters, not a common or breached one. */
    newPassword: z.string().min(1).max(256),
  })
  .strict();

export const sessionsQuery = z
  .object({
    /** Another account's sessions (admins); omitted: your own. */
    userId: z.uuid().optional(),
    /** "true": every live session of the tenant, or of appliance staff for super-admins (admins). */
    all: z.enum(["true", "false"]).optional(),
  })
  .strict();

export const sessionView = z.object({
  /** Session id. */
  id: z.uuid(),
  /** The account it belongs to. */
  userId: z.uuid(),
  /** That account's email (who it is, for the tenant-wide list). */
  userEmail: z.string().nullable(),
  /** The session making this request. */
  current: z.boolean(),
  /** Whether sign-in finished or waits for a second factor. */
  stage: z.string(),
  /** When it started. */
  createdAt: isoTime,
  /** Its last request. */
  lastSeenAt: isoTime,
  /** When it ends without further activity. */
  idleExpiresAt: isoTime,
  /** Its absolute end. */
  expiresAt: isoTime,
  /** When it last proved a second factor. */
  mfaVerifiedAt: isoTime.nullable(),
  /** Address it signed in from. */
  sourceIp: z.string().nullable(),
  /** Browser or client it signed in with. */
  userAgent: z.string().nullable(),
  /** That client in a few words ("Chrome on Linux"), for recognising a device. */
  device: z.string(),
  /** Support staff acting under an approved request. */
  supportAccess: z.boolean(),
});
export const sessionList = z.array(sessionView);

export const revokeAllRequest = z
  .object({
    /** Another account (admins); omitted: your own. */
    userId: z.uuid().optional(),
    /** Also end the session making this request (own sessions only). */
    includeCurrent: z.boolean().optional(),
    /** Sign out everyone of the tenant (or every appliance staff member) but the caller's own session (admins; needs a reason). */
    everyone: z.literal(true).optional(),
    /** Why (audited), e.g. "suspected phishing, ticket INC-2231"; required with everyone. */
    reason: z.string().trim().min(1).max(300).optional(),
  })
  .strict()
  .refine((b) => !b.everyone || (b.reason !== undefined && b.userId === undefined), { message: "signing out everyone needs a reason and no userId", path: ["reason"] });

export const revokedCount = z.object({ /** Sessions ended. */ revoked: z.number().int() });

// ---- invites ------------------------------------------------------------------------------------

export const createInviteRequest = z
  .object({
    /** Work email of the person invited. */
    email: z.string().trim().toLowerCase().pipe(z.email()).pipe(z.string().max(254)),
    /** The role the account will have. */
    role,
    /** Tenant to invite into; only super-admins name one (tenant admins invite into their own). */
    tenantId: z.uuid().optional(),
  })
  .strict();

export const acceptInviteRequest = z
  .object({
    /** The token from the invite link. */
    token: z.string().min(1).max(300),
    /** The new account's password: at least 12 characters, not a common one. */
    password: z.string().min(1).max(256),
    /** How colleagues see the person in the admin UI. */
    displayName: z.string().trim().min(1).max(200).optional(),
  })
  .strict();

export const inviteView = z.object({
  /** Invite id. */
  id: z.uuid(),
  /** Tenant the account will belong to; null for appliance staff. */
  tenantId: z.uuid().nullable(),
  /** Email invited. */
  email: z.string(),
  /** Role the account will have. */
  role,
  /** When it was sent. */
  createdAt: isoTime,
  /** When the link stops working. */
  expiresAt: isoTime,
  /** Where it stands. */
  status: z.enum(["pending", "accepted", "expired", "revoked"]),
});
export const inviteList = z.array(inviteView);
export const createdInvite = z.object({
  /** The invite. */
  invite: inviteView,
  /** The link token, shown once (only its hash is kept). */
  token: z.string(),
});

export const acceptedInvite = z.object({
  /** The new account. */
  userId: z.uuid(),
  /** Its role. */
  role,
  /** Its tenant; null for appliance staff. */
  tenantId: z.uuid().nullable(),
  /** Sign-in continues with authenticator enrollment. */
  mfaEnrollmentRequired: z.boolean(),
  /** Send as X-CSRF-Token with every cookie-authenticated change. */
  csrfToken: z.string(),
});

// ---- API tokens -------------------------------------------------------------------------------

const SERVICE_ROLES = ["practitioner", "front_desk", "auditor"] as const satisfies readonly Role[];
const resourceTypes = [...new Set(ACTIONS.map((a) => a.split(":")[0]!))];
const scopeSchema = z.string().refine((s) => s === "*" || (/^[a-z_]+:(read|write)$/.test(s) && resourceTypes.includes(s.split(":")[0]!)), {
  message: "a scope is `*` or `<resource>:read|write` with a resource from the policy table",
});

export const createApiTokenRequest = z
  .object({
    /** What the clinical application is, e.g. "EHR interface". */
    name: z.string().trim().min(1).max(100),
    /** Role of the service account: practitioner, front_desk or auditor (never administrative). */
    role: z.enum(SERVICE_ROLES),
    /** e.g. ["patient:read", "note:write"]; `*` means everything the role allows. */
    scopes: z.array(scopeSchema).min(1).max(50),
    /** Days until the token stops working (1 to 365). */
    expiresInDays: z.number().int().min(1).max(365).default(90),
  })
  .strict();

export const apiTokenView = z.object({
  /** Token id. */
  id: z.uuid(),
  /** What the clinical application is. */
  name: z.string(),
  /** The service account the token acts as. */
  serviceAccountId: z.uuid(),
  /** The service account's role. */
  role,
  /** What the token may do within the role. */
  scopes: z.array(z.string()),
  /** The token's first characters, to recognise it. */
  prefix: z.string(),
  /** When it was made. */
  createdAt: isoTime,
  /** When it stops working. */
  expiresAt: isoTime,
  /** Its last use. */
  lastUsedAt: isoTime.nullable(),
  /** When it was revoked. */
  revokedAt: isoTime.nullable(),
});
export const apiTokenList = z.array(apiTokenView);
export const createdApiToken = z.object({
  /** The bearer secret, shown once (only its hash is kept). */
  token: z.string(),
  /** The token's record. */
  apiToken: apiTokenView,
});

// ---- first-run setup ---------------------------------------------------------------------------

export const superAdminInput = z
  .object({
    /** Work email of the appliance administrator. */
    email: z.string().trim().toLowerCase().pipe(z.email()).pipe(z.string().max(254)),
    /** At least 12 characters. */
    password: z.string().min(1).max(256),
  })
  .strict();

export const setupRequest = superAdminInput.extend({ /** Token printed at first start. */ token: z.string().min(1).max(200) }).strict();

export const setupStatus = z.object({ /** No super-admin exists yet: the setup page is open. */ setupRequired: z.boolean() });

export const createdSuperAdmin = z.object({
  /** The new super-admin's account id. */
  id: z.uuid(),
  /** Its email. */
  email: z.string(),
});

export type LoginReq = z.infer<typeof loginRequest>;
export type LoginRes = z.infer<typeof loginResponse>;
export type SessionInfoRes = z.infer<typeof sessionInfo>;
export type CodeReq = z.infer<typeof codeRequest>;
export type MfaVerifiedRes = z.infer<typeof mfaVerified>;
export type MfaEnrollmentRes = z.infer<typeof mfaEnrollment>;
export type ActivateReq = z.infer<typeof activateRequest>;
export type MfaActivatedRes = z.infer<typeof mfaActivated>;
export type RecoveryCodesRes = z.infer<typeof recoveryCodes>;
export type ChangePasswordReq = z.infer<typeof changePasswordRequest>;
export type SessionRes = z.infer<typeof sessionView>;
export type RevokeAllReq = z.infer<typeof revokeAllRequest>;
export type RevokedCountRes = z.infer<typeof revokedCount>;
export type CreateInviteReq = z.infer<typeof createInviteRequest>;
export type AcceptInviteReq = z.infer<typeof acceptInviteRequest>;
export type InviteRes = z.infer<typeof inviteView>;
export type CreatedInviteRes = z.infer<typeof createdInvite>;
export type AcceptedInviteRes = z.infer<typeof acceptedInvite>;
export type CreateApiTokenReq = z.input<typeof createApiTokenRequest>;
export type ApiTokenRes = z.infer<typeof apiTokenView>;
export type CreatedApiTokenRes = z.infer<typeof createdApiToken>;
export type SetupReq = z.infer<typeof setupRequest>;
export type SetupStatusRes = z.infer<typeof setupStatus>;
export type CreatedSuperAdminRes = z.infer<typeof createdSuperAdmin>;

// Names the admin UI's client uses.
export type SupportAccessRes = z.infer<typeof supportAccessView>;
export type MfaVerifyRes = MfaVerifiedRes;
export type MfaEnrollRes = MfaEnrollmentRes;
export type MfaActivateRes = MfaActivatedRes;
export type RevokeAllRes = RevokedCountRes;
export type InviteCreatedRes = CreatedInviteRes;
export type InviteAcceptRes = AcceptedInviteRes;
export type SetupCreatedRes = CreatedSuperAdminRes;
