import { z } from "zod";

/**
 * Request and response schemas of the sign-in providers routes (docs/sso.md). Leaf module (zod
 * only): the admin UI imports the inferred types. A provider's `config` is validated by its kind's
 * own schema (registerProviderKind); here it is an object.
 */

/** Tenant roles an IdP rule may grant (appliance staff never sign in through a tenant's IdP). */
export const SSO_ROLES = ["owner", "admin", "practitioner", "front_desk", "auditor"] as const;
export type SsoRole = (typeof SSO_ROLES)[number];
/** Roles whose rules wait for a second admin's approval before they take effect. */
export const PRIVILEGED_SSO_ROLES: readonly SsoRole[] = ["owner", "admin", "auditor"];

export const providerIdParams = z.object({
  /** Identity provider id. */
  id: z.uuid(),
});

export const providerView = z.object({
  /** Provider id. */
  id: z.string(),
  /** oidc, saml or ldap. */
  kind: z.string(),
  /** Name shown on the sign-in button. */
  name: z.string(),
  /** The kind's settings (never a secret). */
  config: z.record(z.string(), z.unknown()),
  /** Whether a client secret or bind password is stored (its value is never sent back). */
  hasSecrets: z.boolean(),
  /** Whether the sign-in button shows and sign-ins are accepted. */
  enabled: z.boolean(),
  /** acr values (SAML AuthnContextClassRef) this IdP sends only after a second factor. */
  mfaAcrValues: z.array(z.string()),
  /** A first sign-in links to an existing account of the tenant with the same email. */
  linkByEmail: z.boolean(),
  /** Where the IdP sends the browser back (register it at the IdP), when the kind has one. */
  redirectUri: z.string().nullable(),
  /** Linked accounts. */
  linkedUsers: z.number().int(),
  /** When someone last signed in through it; null: nobody yet. */
  lastSignInAt: z.string().nullable(),
  /** When it was created. */
  createdAt: z.string(),
  /** When it last changed. */
  updatedAt: z.string(),
});
export type ProviderView = z.infer<typeof providerView>;
export const providerList = z.object({ providers: z.array(providerView) });
export type ProviderListRes = z.infer<typeof providerList>;

export const createProviderRequest = z.strictObject({
  /** oidc (saml and ldap where installed). */
  kind: z.string().regex(/^[a-z][a-z0-9_-]{1,20}$/),
  /** Name shown on the sign-in button, unique in the tenant. */
  name: z.string().trim().min(1).max(100),
  /** The kind's settings (for oidc: issuer, clientId, scopes, claim names). */
  config: z.record(z.string(), z.unknown()),
  /** The kind's secrets (for oidc: clientSecret); stored sealed, never sent back. */
  secrets: z.record(z.string(), z.string().max(4096)).optional(),
  /** acr values this IdP sends only after a second factor. */
  mfaAcrValues: z.array(z.string().min(1).max(200)).max(20).optional(),
  /** Link a first sign-in to an existing account of the tenant with the same email. */
  linkByEmail: z.boolean().optional(),
});
export type CreateProviderReq = z.infer<typeof createProviderRequest>;

export const updateProviderRequest = z.strictObject({
  /** New name. */
  name: z.string().trim().min(1).max(100).optional(),
  /** Replaces the kind's settings. */
  config: z.record(z.string(), z.unknown()).optional(),
  /** Replaces the stored secrets. */
  secrets: z.record(z.string(), z.string().max(4096)).optional(),
  /** Replaces the MFA acr values. */
  mfaAcrValues: z.array(z.string().min(1).max(200)).max(20).optional(),
  /** Link first sign-ins by email. */
  linkByEmail: z.boolean().optional(),
  /** Turn sign-in through this provider on or off. */
  enabled: z.boolean().optional(),
});
export type UpdateProviderReq = z.infer<typeof updateProviderRequest>;

/** One rule of the ordered table. */
export const ruleInput = z.strictObject({
  /** Only sign-ins through this provider; absent: any provider of the tenant. */
  providerId: z.uuid().nullable().optional(),
  /** Match one of the groups the IdP sent, or a claim. */
  source: z.enum(["group", "claim"]),
  /** The claim's name (source claim only), e.g. `department`. */
  claim: z.string().min(1).max(100).nullable().optional(),
  /** How the value is compared (case-sensitive; regex anchored at both ends). */
  match: z.enum(["equals", "prefix", "suffix", "regex"]),
  /** The group name/DN, or the claim value. */
  value: z.string().min(1).max(500),
  /** The role granted when this is the first rule that matches. */
  role: z.enum(SSO_ROLES),
});
export type RuleInput = z.infer<typeof ruleInput>;

export const saveRulesRequest = z.strictObject({
  /** The whole ordered table; first match wins. */
  rules: z.array(ruleInput).max(200),
});
export type SaveRulesReq = z.infer<typeof saveRulesRequest>;

export const ruleView = ruleInput.extend({
  /** Rule id. */
  id: z.string(),
  /** Position in the table (0 first). */
  position: z.number().int(),
  /** The provider (null: any). */
  providerId: z.string().nullable(),
  /** The claim name (null for group rules). */
  claim: z.string().nullable(),
  /** active, or pending a second admin's approval (privileged roles). */
  status: z.enum(["active", "pending"]),
  /** Who saved it. */
  createdBy: z.string().nullable(),
  /** Who approved it (privileged roles). */
  approvedBy: z.string().nullable(),
});
export type RuleView = z.infer<typeof ruleView>;
export const ruleList = z.object({ rules: z.array(ruleView) });
export type RuleListRes = z.infer<typeof ruleList>;
/** `PUT /identity-providers/rules`: the saved table, and what re-applying it did to the accounts it governs. */
export const savedRules = ruleList.extend({
  reapplied: z.object({
    /** Linked and SCIM accounts whose role changed (their sessions ended). */
    roleChanges: z.number().int(),
    /** Linked accounts no rule admits any more: their sessions ended. */
    accessEnded: z.number().int(),
  }),
});
export type SavedRulesRes = z.infer<typeof savedRules>;

export const dryRunResult = z.object({
  /** One line per account the rules decide (linked, or provisioned by SCIM), with what the proposed rules would make of it. */
  users: z.array(
    z.object({
      /** Account id. */
      userId: z.string(),
      /** Email of the account. */
      email: z.string().nullable(),
      /** Provider it signs in through. */
      providerName: z.string(),
      /** Its role now. */
      currentRole: z.string(),
      /** Its role under the proposed rules; null: no rule matches (no access). */
      proposedRole: z.string().nullable(),
      /** unchanged, role_change, loses_access, or pending_approval (a privileged rule would need approval first). */
      change: z.enum(["unchanged", "role_change", "loses_access", "pending_approval"]),
    }),
  ),
});
export type DryRunRes = z.infer<typeof dryRunResult>;

export const ruleIdParams = z.object({
  /** Rule id. */
  id: z.uuid(),
});

export const MFA_MODES = ["idp", "local"] as const;
export type MfaMode = (typeof MFA_MODES)[number];
export const mfaPolicyView = z.object({
  /** Per role, at sign-in: `idp` accepts the IdP's amr/acr (SAML AuthnContextClassRef) as the second factor; `local` asks for local TOTP as well. */
  roles: z.record(z.enum(SSO_ROLES), z.enum(MFA_MODES)),
  /** Per role, for sensitive actions: `idp` may confirm by signing in again at the IdP (OpenID Connect, SAML ForceAuthn); `local` only with the local authenticator code. */
  stepUp: z.record(z.enum(SSO_ROLES), z.enum(MFA_MODES)),
});
export type MfaPolicyRes = z.infer<typeof mfaPolicyView>;
export const mfaPolicyRequest = z.strictObject({
  /** Sign-in mode of the roles to set (others keep theirs); a role set here without `stepUp` steps up the same way. */
  roles: z.partialRecord(z.enum(SSO_ROLES), z.enum(MFA_MODES)).optional(),
  /** Step-up mode of the roles to set; `idp` is refused for a role whose sign-in mode is `local`. */
  stepUp: z.partialRecord(z.enum(SSO_ROLES), z.enum(MFA_MODES)).optional(),
});
export type MfaPolicyReq = z.infer<typeof mfaPolicyRequest>;

/** `GET /api/v1/sso/providers?tenant=slug`: the sign-in buttons of a tenant (public). */
export const publicProvidersQuery = z.object({
  /** Tenant slug, as in /login?tenant=slug. */
  tenant: z.string().regex(/^[a-z0-9][a-z0-9-]{1,62}$/),
});
export const publicProviderList = z.object({
  providers: z.array(
    z.object({
      /** Provider id. */
      id: z.string(),
      /** Button label. */
      name: z.string(),
      /** oidc, saml or ldap. */
      kind: z.string(),
      /** redirect: the browser goes to `path`; password: POST username and password to `path`. */
      flow: z.enum(["redirect", "password"]),
      /** Where the button leads. */
      path: z.string(),
    }),
  ),
});
export type PublicProviderListRes = z.infer<typeof publicProviderList>;

/**
 * `POST /api/v1/identity-providers/{id}/test`: OpenID Connect and SAML send no body (the admin signs
 * in at the IdP); LDAP takes the test user's directory name and password, which go to the directory
 * only and are never stored or logged.
 */
export const testSignInRequest = z.strictObject({
  /** LDAP: the test user's directory name (sAMAccountName or uid). */
  username: z.string().trim().min(1).max(256).optional(),
  /** LDAP: the test user's directory password. */
  password: z.string().min(1).max(1024).optional(),
});
export type TestSignInReq = z.infer<typeof testSignInRequest>;

/** Where to send the admin's browser (OIDC, SAML), or null when the test is already done (LDAP). */
export const testStarted = z.object({
  /** Test id (read what arrived with GET .../tests/{testId}, once the IdP sent the browser back). */
  testId: z.string(),
  /** Open this in the browser to sign in at the IdP; null: nothing to open, the result is ready. */
  url: z.string().nullable(),
});
export type TestStartedRes = z.infer<typeof testStarted>;
export const testParams = z.object({
  /** Provider id. */
  id: z.uuid(),
  /** Test id. */
  testId: z.uuid(),
});
export const testResult = z.object({
  /** waiting (not back from the IdP yet), received, or failed. */
  status: z.enum(["waiting", "received", "failed"]),
  /** The precise reason when failed (shown to the admin only). */
  error: z.string().nullable(),
  /** What the IdP sent, normalised. */
  identity: z
    .object({
      /** Stable id at the IdP. */
      subject: z.string(),
      /** Username. */
      username: z.string(),
      /** Email. */
      email: z.string().nullable(),
      /** Display name. */
      displayName: z.string().nullable(),
      /** Groups. */
      groups: z.array(z.string()),
      /** amr values. */
      amr: z.array(z.string()),
      /** acr value. */
      acr: z.string().nullable(),
      /** Every claim received (SAML: the assertion's attributes, issuer and NameID format). */
      claims: z.record(z.string(), z.unknown()),
      /** LDAP: the directory entry's attributes as the service account reads them (passwords and binary values left out); rules match its groups, not these. Null for other kinds. */
      attributes: z.record(z.string(), z.array(z.string())).nullable(),
      /** The role the current rules give (null: no access). */
      role: z.string().nullable(),
    })
    .nullable(),
});
export type TestResultRes = z.infer<typeof testResult>;

// ---- LDAP / Active Directory and SAML sign-in (daemon/sso/ldap, daemon/sso/saml) ----
/** `POST /api/v1/sso/ldap/{id}/login`: the directory user name and password. */
export const ldapLoginRequest = z.strictObject({
  /** The directory user name (sAMAccountName or uid), as people type it at work. */
  username: z.string().trim().min(1).max(256),
  /** The directory password; sent to the directory only, over TLS, never stored. */
  password: z.string().max(1024),
});
export type LdapLoginReq = z.infer<typeof ldapLoginRequest>;

/** What a sign-in through an IdP answers: the same stages as a password sign-in. */
export const ssoLoginResponse = z.object({
  /** The session waits for a TOTP or recovery code (POST /auth/mfa). */
  mfaRequired: z.boolean(),
  /** The session waits for authenticator enrollment (POST /auth/mfa/enroll). */
  mfaEnrollmentRequired: z.boolean(),
  /** Send as X-CSRF-Token with every cookie-authenticated change. */
  csrfToken: z.string(),
  /** The session's absolute end. */
  expiresAt: z.string().describe("ISO 8601 instant"),
});
export type SsoLoginRes = z.infer<typeof ssoLoginResponse>;

export const ssoProviderParams = z.object({
  /** Identity provider id. */
  id: z.uuid(),
});

/** `POST /api/v1/sso/logout`: the session has ended; where the browser goes next. */
export const ssoLogoutResponse = z.object({
  /** Where to send the browser so the identity provider signs out too (OIDC RP-initiated logout, SAML single logout); null: nothing more to do. */
  redirectUrl: z.string().nullable(),
});
export type SsoLogoutRes = z.infer<typeof ssoLogoutResponse>;

/** `POST /api/v1/sso/step-up`: confirm a sensitive action by signing in again at the identity provider. */
export const stepUpRequest = z
  .object({
    /** The console path to come back to afterwards (`/backups`); the home page when absent. */
    returnTo: z
      .string()
      .regex(/^\/[A-Za-z0-9/_-]{0,200}$/, "a console path such as /backups")
      .optional(),
  })
  .strict();
export type StepUpReq = z.infer<typeof stepUpRequest>;

export const stepUpStarted = z.object({
  /** Send the browser here: the IdP asks the person to sign in again (OIDC prompt=login, max_age=0; SAML ForceAuthn), then sends them back to the console. */
  url: z.string(),
});
export type StepUpStartedRes = z.infer<typeof stepUpStarted>;
